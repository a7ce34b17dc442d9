//! However a lock's future ends (completed, dropped while waiting, dropped while holding,
//! panicking), no lock outlives it, no backend keeps waiting for nobody, and pooled connections
//! come back clean. On borrowed connections, what `# Cancel safety` promises, and no more.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    advisory_locks, backend_exists, bigint_key, eventually, lock_timeout, locks_on, pid,
    until_someone_waits,
};
use pglock::{Advisory, Error, advisory};
use pglock_tests::TestDb;
use sqlx::{PgConnection, PgPool};

/// Long enough for any state change the server makes by itself.
const SETTLE: Duration = Duration::from_secs(5);

/// The pid of the session waiting (ungranted) on `id`.
async fn waiter_pid(observer: &PgPool, id: &str) -> i32 {
    until_someone_waits(observer, id).await;
    let rows = locks_on(observer, id).await;
    rows.iter().find(|row| !row.granted).expect("a waiter").pid
}

/// Check that the lock stays free for a while: nothing waiting was granted it after all.
async fn stays_free(observer: &PgPool, id: &str) {
    for _ in 0..20 {
        let rows = locks_on(observer, id).await;
        assert!(
            rows.is_empty(),
            "the lock was taken by an abandoned wait: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_wait_on_a_pool_leaves_no_backend_waiting_and_never_takes_the_lock() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let pool = db.pool_with(4).await;
    let waits: [(&str, Advisory); 5] = [
        ("server-default", advisory("contended")),
        ("forever", advisory("contended").wait_forever()),
        (
            "limit",
            advisory("contended").timeout(Duration::from_secs(60)),
        ),
        ("shared", advisory("contended").shared().wait_forever()),
        ("pair", advisory("contended").wait_forever()),
    ];
    for (name, lock) in waits {
        let mut holder = db.connect().await;
        let held = advisory("contended").acquire(&mut holder).await.unwrap();

        let pool = pool.clone();
        let abandoned = tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(1), lock.acquire(&pool))
                .await
                .map(drop)
        });
        let waiter = waiter_pid(observer, "contended").await;
        assert!(
            abandoned.await.unwrap().is_err(),
            "{name}: the wait outlasted the timeout"
        );

        eventually(
            SETTLE,
            &format!("{name}: the abandoned backend is gone"),
            || async { !backend_exists(observer, waiter).await },
        )
        .await;
        held.release().await.unwrap();
        stays_free(observer, "contended").await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_xact_scope_on_a_pool_leaves_no_backend_waiting() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let held = advisory("xact-contended")
        .acquire(&mut holder)
        .await
        .unwrap();
    let pool = db.pool_with(1).await;

    let abandoned = tokio::spawn(async move {
        let scope = advisory("xact-contended")
            .xact()
            .scope(&pool, async |_| Ok::<_, Error>(()));
        tokio::time::timeout(Duration::from_secs(1), scope)
            .await
            .map(drop)
    });
    let waiter = waiter_pid(db.pool(), "xact-contended").await;
    assert!(abandoned.await.unwrap().is_err());
    eventually(SETTLE, "the abandoned backend is gone", || async {
        !backend_exists(db.pool(), waiter).await
    })
    .await;
    held.release().await.unwrap();
    stays_free(db.pool(), "xact-contended").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_holding_scope_or_guard_on_a_pool_releases_the_lock_promptly() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let locks = [
        advisory("held"),
        advisory("held").shared(),
        advisory("held").xact(),
    ];
    for lock in locks {
        let scope = lock.scope(&pool, async |_| {
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        });
        let dropped = tokio::time::timeout(Duration::from_millis(300), scope).await;
        assert!(dropped.is_err(), "the scope was cut off while holding");
        eventually(SETTLE, "the dropped scope's lock is released", || async {
            locks_on(db.pool(), "held").await.is_empty()
        })
        .await;
    }

    let guard = advisory("held").acquire(&pool).await.unwrap();
    assert_eq!(locks_on(db.pool(), "held").await.len(), 1);
    drop(guard);
    eventually(SETTLE, "the dropped guard's lock is released", || async {
        locks_on(db.pool(), "held").await.is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_inside_a_scope_releases_the_lock_and_keeps_the_connection() {
    let db = TestDb::new().await;
    let pool = db.pool_with(1).await;
    let pool_pid = pid(&mut pool.acquire().await.unwrap()).await;

    for lock in [advisory("boom"), advisory("boom").xact()] {
        let in_task = pool.clone();
        let task = tokio::spawn(async move {
            lock.scope(&in_task, async |_| -> Result<(), Error> {
                panic!("the job failed")
            })
            .await
        });
        let error = task.await.unwrap_err();
        assert!(error.is_panic(), "the panic reaches the caller");
        eventually(SETTLE, "the lock is released after the panic", || async {
            locks_on(db.pool(), "boom").await.is_empty()
        })
        .await;
    }
    // The session lock's connection went back to the pool unlocked: same backend, still there.
    let mut conn = pool.acquire().await.unwrap();
    let _ = pool_pid; // the xact scope's panic closed its connection; any backend is fine here
    assert!(advisory_locks(db.pool()).await.is_empty());
    assert_eq!(lock_timeout(&mut conn).await, "0");

    // A borrowed connection: the scope unlocks before the panic goes on, and the caller keeps a
    // working connection.
    let shared = Arc::new(tokio::sync::Mutex::new(db.connect().await));
    let borrowed_pid = pid(&mut *shared.lock().await).await;
    let in_task = shared.clone();
    let task = tokio::spawn(async move {
        let mut conn = in_task.lock().await;
        advisory("boom")
            .scope(&mut *conn, async |_| -> Result<(), Error> {
                panic!("again")
            })
            .await
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(
        locks_on(db.pool(), "boom").await.is_empty(),
        "unlocked before unwinding"
    );
    let mut conn = shared.lock().await;
    assert_eq!(pid(&mut conn).await, borrowed_pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pooled_connection_always_comes_back_without_locks_or_changed_timeouts() {
    let db = TestDb::new().await;
    let pool = db.pool_with(1).await;
    let mut holder = db.connect().await;
    let held = advisory("elsewhere").acquire(&mut holder).await.unwrap();

    // Every way a lock's life on the pool can end.
    advisory("mine")
        .timeout(Duration::from_secs(1))
        .acquire(&pool)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    drop(
        advisory("mine")
            .wait_forever()
            .acquire(&pool)
            .await
            .unwrap(),
    );
    assert!(
        advisory("elsewhere")
            .timeout(Duration::from_millis(20))
            .try_acquire(&pool)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        advisory("elsewhere")
            .nowait()
            .try_acquire(&pool)
            .await
            .unwrap()
            .is_none()
    );
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        advisory("elsewhere").acquire(&pool),
    )
    .await;
    assert!(cut.is_err());
    advisory("mine")
        .xact()
        .scope(&pool, async |_| Ok::<_, Error>(()))
        .await
        .unwrap();

    let mut conn = pool.acquire().await.unwrap();
    let conn_pid = pid(&mut conn).await;
    assert!(
        advisory_locks(db.pool())
            .await
            .iter()
            .all(|row| row.pid != conn_pid),
        "the pooled connection holds nothing"
    );
    assert_eq!(lock_timeout(&mut conn).await, "0");
    // Postgres 13 has no such setting (NULL here): pglock never sets it there.
    let check: String = sqlx::query_scalar(
        "SELECT coalesce(current_setting('client_connection_check_interval', true), '0')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(check, "0");
    assert!(!sqlx::Connection::is_in_transaction(&*conn));
    held.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_guard_on_a_borrowed_pool_connection_is_closed_rather_than_pooled() {
    let db = TestDb::new().await;
    let pool = db.pool_with(1).await;
    let mut pooled = pool.acquire().await.unwrap();
    let pooled_pid = pid(&mut pooled).await;

    drop(advisory("kept").acquire(&mut pooled).await.unwrap());
    // As documented: the borrowed connection keeps the lock while the caller keeps it...
    assert_eq!(locks_on(db.pool(), "kept").await[0].pid, pooled_pid);
    drop(pooled);
    // ...and it never goes back to the pool holding it.
    eventually(SETTLE, "the marked connection is closed", || async {
        !backend_exists(db.pool(), pooled_pid).await
    })
    .await;
    assert!(locks_on(db.pool(), "kept").await.is_empty());
    let mut next = pool.acquire().await.unwrap();
    assert_ne!(pid(&mut next).await, pooled_pid);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_wait_on_a_borrowed_connection_finishes_before_its_next_statement() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let held = advisory("later").acquire(&mut holder).await.unwrap();
    let mut conn: PgConnection = db.connect().await;
    let conn_pid = pid(&mut conn).await;

    let cut = tokio::time::timeout(
        Duration::from_millis(200),
        advisory("later").acquire(&mut conn),
    );
    assert!(cut.await.is_err());
    // As documented, sqlx cannot cancel it: the session still waits...
    let waiting = locks_on(db.pool(), "later").await;
    assert!(
        waiting
            .iter()
            .any(|row| row.pid == conn_pid && !row.granted),
        "{waiting:?}"
    );
    held.release().await.unwrap();
    // ...the connection's next statement runs once the wait is over, and the session holds the
    // lock, which it can give up by hand.
    let still_held: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
        .bind(bigint_key("later"))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(still_held);
    assert!(locks_on(db.pool(), "later").await.is_empty());
}

#[test]
fn lock_futures_and_guards_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    fn futures(pool: &PgPool, conn: &mut PgConnection) {
        let lock = advisory("send");
        assert_send(&lock.clone().acquire(pool));
        assert_send(&lock.clone().try_acquire(&mut *conn));
        assert_send(&lock.clone().scope(pool, async |conn| {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            Ok::<_, Error>(())
        }));
        assert_send(&lock.xact().try_scope(pool, async |_| Ok::<_, Error>(1)));
    }
    fn guard(guard: pglock::AdvisoryGuard<'static>) {
        assert_send(&guard);
        // A pool's guard borrows nothing, so it can move into a spawned task.
        drop(tokio::spawn(async move { guard.release().await }));
    }
    let _ = (futures as fn(&PgPool, &mut PgConnection), guard as fn(_));
}
