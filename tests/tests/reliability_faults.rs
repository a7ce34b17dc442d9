//! Faults from outside pglock: the holder's backend is terminated, the server restarts while
//! locks are held and waited for, the pool runs out of connections. Each ends in a clear error
//! or a granted lock, never a hang, and the same pool works again afterwards.
//!
//! Every await that could hang is bounded by a generous [`BOUND`]; the tests assert that it did
//! not run out (they never assert how fast anything was).

mod common;

use std::future::Future;
use std::time::Duration;

use common::{eventually, locks_on, pid, until_someone_waits};
use pglock::{Error, advisory};
use pglock_tests::{PrivateCluster, TestDb};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgPool};

/// Far longer than anything here should take: reaching it means a hang.
const BOUND: Duration = Duration::from_secs(60);

/// `future`'s output, failing the test if it has not finished within [`BOUND`].
async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(BOUND, future).await {
        Ok(output) => output,
        Err(_) => panic!("hung: {what} did not finish within {BOUND:?}"),
    }
}

/// Terminate backend `pid` from the observer's session, and wait until it is gone.
async fn terminate(observer: &PgPool, pid: i32) {
    let signalled: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(observer)
        .await
        .unwrap();
    assert!(signalled, "backend {pid} was there to terminate");
    eventually(BOUND, "the terminated backend is gone", || async {
        !common::backend_exists(observer, pid).await
    })
    .await;
}

/// Whether `error` is the database error of a session that the server ended: its FATAL
/// message (SQLSTATE class 57, operator intervention) or the connection closing under it.
fn is_lost_session(error: &Error) -> bool {
    let (Error::Database(source) | Error::Lost { source, .. }) = error else {
        return false;
    };
    match source {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| code.starts_with("57")),
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_holder_hands_the_lock_to_a_waiter_and_its_guard_reports_the_loss() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let pool = db.pool_with(2).await;

    // The holder on a connection pglock owns (the pool's) and on a borrowed one.
    for on_pool in [true, false] {
        let mut borrowed = db.connect().await;
        let guard = if on_pool {
            advisory("victim").acquire(&pool).await.unwrap()
        } else {
            advisory("victim").acquire(&mut borrowed).await.unwrap()
        };
        let mut guard = guard;
        let holder = pid(&mut guard).await;

        let mut waiter_conn = db.connect().await;
        let waiter = tokio::spawn(async move {
            let mut guard = advisory("victim")
                .wait_forever()
                .acquire(&mut waiter_conn)
                .await?;
            let waiter = pid(&mut guard).await;
            guard.release().await?;
            Ok::<_, Error>(waiter)
        });
        until_someone_waits(observer, "victim").await;

        terminate(observer, holder).await;
        let waiter_pid = bounded("the waiter", waiter).await.unwrap().unwrap();
        assert_ne!(waiter_pid, holder);
        assert!(
            locks_on(observer, "victim").await.is_empty(),
            "the waiter released what it got, and the terminated holder holds nothing"
        );

        let lost = bounded("releasing the lost lock", guard.release()).await;
        let error = lost.expect_err("release must not report success for a lock the session lost");
        assert!(
            matches!(&error, Error::Lost { lock, .. } if lock.name() == "victim")
                && is_lost_session(&error),
            "on_pool={on_pool}: expected Error::Lost for the ended session, got {error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with("lock \"victim\" was lost with its session"),
            "{error}"
        );
        assert!(!error.is_not_acquired(), "{error:?}");
    }

    // The pool's dead connection is not handed out again: the pool still works.
    let again = bounded(
        "locking through the pool again",
        advisory("victim").acquire(&pool),
    )
    .await
    .unwrap();
    again.release().await.unwrap();
}

/// A pool on the private cluster that gives up on a connection after `acquire_timeout`.
async fn pool_on(cluster: &PrivateCluster, max: u32, acquire_timeout: Duration) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire_timeout)
        .connect(cluster.url())
        .await
        .unwrap_or_else(|e| panic!("connecting to the private cluster: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_restart_while_locks_are_held_and_awaited_ends_in_errors_and_the_pool_recovers() {
    let cluster = PrivateCluster::new().await;
    let pool = pool_on(&cluster, 6, Duration::from_secs(2)).await;
    let observer = pool_on(&cluster, 1, BOUND).await;

    // Fast shutdown (sessions told to go), then a crash (sessions cut off).
    for crash in [false, true] {
        let holder = advisory("restart").acquire(&pool).await.unwrap();
        let xact_holder = tokio::spawn({
            let pool = pool.clone();
            async move {
                advisory("restart-xact")
                    .xact()
                    // A body that works on its connection until the connection fails.
                    .scope(&pool, async |conn| -> Result<(), Error> {
                        loop {
                            sqlx::query("SELECT pg_sleep(0.05)")
                                .execute(&mut *conn)
                                .await?;
                        }
                    })
                    .await
            }
        });
        eventually(BOUND, "the xact scope holds its lock", || async {
            locks_on(&observer, "restart-xact").await.len() == 1
        })
        .await;
        let mut waiters = Vec::new();
        for lock in [
            advisory("restart").wait_forever(),
            advisory("restart").shared(),
            advisory("restart").timeout(Duration::from_secs(600)),
            advisory("restart-xact").xact(),
        ] {
            let pool = pool.clone();
            waiters.push(tokio::spawn(async move {
                if lock.is_xact() {
                    lock.scope(&pool, async |_| Ok::<_, Error>(())).await
                } else {
                    lock.acquire(&pool).await.map(drop)
                }
            }));
        }
        // A borrowed connection waiting too.
        let mut borrowed = sqlx::PgConnection::connect(cluster.url()).await.unwrap();
        let borrowed_waiter =
            tokio::spawn(async move { advisory("restart").acquire(&mut borrowed).await.map(drop) });
        eventually(BOUND, "all five waiters wait", || async {
            let rows = common::advisory_locks(&observer).await;
            rows.iter().filter(|row| !row.granted).count() == 5
        })
        .await;

        if crash {
            cluster.crash().await;
        } else {
            cluster.stop().await;
        }

        for (i, waiter) in waiters.into_iter().enumerate() {
            let error = bounded("a waiter on a stopped server", waiter)
                .await
                .unwrap()
                .expect_err("a wait cannot succeed on a stopped server");
            assert!(
                is_lost_session(&error),
                "crash={crash}, waiter {i}: expected a lost-session Error::Database, got {error:?}"
            );
        }
        let error = bounded("the borrowed connection's waiter", borrowed_waiter)
            .await
            .unwrap()
            .unwrap_err();
        assert!(is_lost_session(&error), "crash={crash}: {error:?}");
        let error = bounded("the xact scope holding", xact_holder)
            .await
            .unwrap()
            .unwrap_err();
        assert!(is_lost_session(&error), "crash={crash}: {error:?}");
        let error = bounded("releasing the held lock", holder.release())
            .await
            .unwrap_err();
        assert!(is_lost_session(&error), "crash={crash}: {error:?}");

        // While the server is down, taking a lock through the pool fails after the pool's
        // acquire_timeout instead of hanging.
        let error = bounded(
            "locking while the server is down",
            advisory("down").acquire(&pool),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, Error::Database(sqlx::Error::PoolTimedOut)),
            "crash={crash}: {error:?}"
        );

        cluster.start().await;
        // The same pool works again: it drops its dead connections and connects anew.
        let guard = bounded(
            "locking after the restart",
            advisory("restart").nowait().acquire(&pool),
        )
        .await
        .unwrap();
        guard.release().await.unwrap();
        advisory("restart-xact")
            .xact()
            .nowait()
            .scope(&pool, async |_| Ok::<_, Error>(()))
            .await
            .unwrap();
        assert!(common::advisory_locks(&observer).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_pool_times_out_clearly_without_deadlock_and_recovers() {
    let db = TestDb::new().await;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(500))
        .connect_with(db.options())
        .await
        .unwrap();

    let first = advisory("a").acquire(&pool).await.unwrap();
    let second = advisory("b").shared().acquire(&pool).await.unwrap();

    // Every pool form needs a connection the pool cannot give: each says so once the pool's
    // acquire_timeout has passed, and none is reported as a busy lock.
    let pool_timed_out =
        |error: &Error| matches!(error, Error::Database(sqlx::Error::PoolTimedOut));
    let error = bounded("acquire", advisory("c").acquire(&pool))
        .await
        .unwrap_err();
    assert!(pool_timed_out(&error), "{error:?}");
    assert!(!error.is_not_acquired());
    let error = bounded("try_acquire", advisory("c").nowait().try_acquire(&pool))
        .await
        .unwrap_err();
    assert!(pool_timed_out(&error), "try_acquire: {error:?}");
    let error = bounded(
        "an xact scope",
        advisory("c")
            .xact()
            .scope(&pool, async |_| Ok::<_, Error>(())),
    )
    .await
    .unwrap_err();
    assert!(pool_timed_out(&error), "xact scope: {error:?}");
    let error = bounded(
        "a session try_scope",
        advisory("c").try_scope(&pool, async |_| Ok::<_, Error>(())),
    )
    .await
    .unwrap_err();
    assert!(pool_timed_out(&error), "try_scope: {error:?}");

    // A holder that asks the exhausted pool for a second lock: a timeout, not a deadlock, and
    // it still holds (and can release) its first lock.
    let mut first = first;
    let nested = bounded(
        "a nested lock from the same pool",
        advisory("d").acquire(&pool),
    )
    .await;
    assert!(pool_timed_out(&nested.unwrap_err()));
    assert!(
        !common::free_for(&mut db.connect().await, "a").await,
        "the first lock is still held"
    );
    let _ = pid(&mut first).await;

    // A waiter for a connection gets one as soon as a guard gives its connection back.
    let patient = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(BOUND)
        .connect_with(db.options())
        .await
        .unwrap();
    let held = advisory("e").acquire(&patient).await.unwrap();
    let queued = tokio::spawn({
        let patient = patient.clone();
        async move { advisory("f").acquire(&patient).await?.release().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!queued.is_finished(), "the pool's only connection is taken");
    held.release().await.unwrap();
    bounded("the queued acquire", queued)
        .await
        .unwrap()
        .unwrap();

    first.release().await.unwrap();
    second.release().await.unwrap();
    let guard = bounded(
        "locking after the guards are gone",
        advisory("c").acquire(&pool),
    )
    .await
    .unwrap();
    guard.release().await.unwrap();
    assert!(common::advisory_locks(db.pool()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scope_whose_session_is_terminated_reports_the_loss_instead_of_the_body_result() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let pool = db.pool_with(2).await;
    let (entered_tx, entered) = tokio::sync::oneshot::channel::<i32>();
    let (go_on_tx, go_on) = tokio::sync::oneshot::channel::<()>();
    let scope = tokio::spawn({
        let pool = pool.clone();
        async move {
            advisory("scoped-victim")
                .scope(&pool, async |conn| {
                    entered_tx.send(pid(conn).await).unwrap();
                    go_on.await.unwrap();
                    // The body itself succeeds; its session is gone by now.
                    Ok::<_, Error>("the body's result")
                })
                .await
        }
    });
    let holder = bounded("the scope's body starts", entered).await.unwrap();
    terminate(observer, holder).await;
    go_on_tx.send(()).unwrap();
    let error = bounded("the scope", scope)
        .await
        .unwrap()
        .expect_err("a scope whose lock was lost must not return the body's result as if held");
    assert!(
        matches!(error, Error::Lost { .. }) && is_lost_session(&error),
        "{error:?}"
    );
    // Another session can take the lock, and the pool works.
    let guard = advisory("scoped-victim")
        .nowait()
        .acquire(&pool)
        .await
        .unwrap();
    guard.release().await.unwrap();
}
