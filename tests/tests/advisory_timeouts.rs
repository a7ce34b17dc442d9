//! The four ways of waiting (server default, forever, no wait, a limit), the errors they give,
//! and the `lock_timeout` they leave behind: none.

mod common;

use std::time::Duration;

use common::{advisory_locks, bigint_key, lock_timeout, locks_on, pid, until_someone_waits};
use pglock::{Error, LockTarget, Wait, advisory};
use pglock_tests::TestDb;
use sqlx::{Connection, PgConnection};

const SHORT: Duration = Duration::from_millis(100);

/// Hold `id` on a session of its own until the returned connection's guard is released.
async fn hold(db: &TestDb, id: &'static str) -> PgConnection {
    let mut conn = db.connect().await;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(bigint_key(id))
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread")]
async fn a_limit_times_out_with_the_lock_timeout_error() {
    let db = TestDb::new().await;
    let _holder = hold(&db, "slow").await;
    let mut conn = db.connect().await;

    let error = advisory("slow")
        .timeout(SHORT)
        .acquire(&mut conn)
        .await
        .unwrap_err();
    match &error {
        Error::LockTimeout { target, source } => {
            assert_eq!(target, &LockTarget::Advisory("slow".into()));
            let db_error = source.as_database_error().expect("a server error");
            assert_eq!(db_error.code().as_deref(), Some("55P03"));
        }
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    assert!(error.is_not_acquired());
    assert!(
        advisory("slow")
            .timeout(SHORT)
            .try_acquire(&mut conn)
            .await
            .unwrap()
            .is_none()
    );

    let pool = db.pool_with(1).await;
    let error = advisory("slow")
        .timeout(SHORT)
        .acquire(&pool)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::LockTimeout { .. }), "{error:?}");
    assert_eq!(
        locks_on(db.pool(), "slow").await.len(),
        1,
        "only the holder's row remains"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timed_waits_leave_no_lock_timeout_behind() {
    let db = TestDb::new().await;
    let mut holder = hold(&db, "busy").await;

    // A borrowed connection whose session has its own lock_timeout.
    let mut conn = db.connect().await;
    sqlx::query("SET lock_timeout = '7s'")
        .execute(&mut conn)
        .await
        .unwrap();
    for wait in [Wait::Limit(SHORT), Wait::NoWait, Wait::ServerDefault] {
        let _ = advisory("busy")
            .wait(wait)
            .timeout(SHORT)
            .try_acquire(&mut conn)
            .await
            .unwrap();
    }
    let g = advisory("free")
        .timeout(SHORT)
        .acquire(&mut conn)
        .await
        .unwrap();
    g.release().await.unwrap();
    let g = advisory("free")
        .wait_forever()
        .acquire(&mut conn)
        .await
        .unwrap();
    g.release().await.unwrap();
    assert_eq!(lock_timeout(&mut conn).await, "7s");

    // A pool's connection, after a timed success and a timed failure.
    let pool = db.pool_with(1).await;
    let mut guard = advisory("free")
        .timeout(SHORT)
        .acquire(&pool)
        .await
        .unwrap();
    assert_eq!(
        lock_timeout(&mut guard).await,
        "0",
        "not even while the lock is held"
    );
    guard.release().await.unwrap();
    assert!(
        advisory("busy")
            .timeout(SHORT)
            .try_acquire(&pool)
            .await
            .unwrap()
            .is_none()
    );
    let g = advisory("free")
        .wait_forever()
        .acquire(&pool)
        .await
        .unwrap();
    g.release().await.unwrap();
    let mut pooled = pool.acquire().await.unwrap();
    assert_eq!(lock_timeout(&mut pooled).await, "0");
    assert_eq!(
        // NULL (no such setting) on Postgres 13, where pglock never sets it.
        sqlx::query_scalar::<_, String>(
            "SELECT coalesce(current_setting('client_connection_check_interval', true), '0')"
        )
        .fetch_one(&mut *pooled)
        .await
        .unwrap(),
        "0",
        "the cancel-safety check is set for the waiting statement only"
    );
    drop(pooled);

    // Inside a transaction with a local lock_timeout of its own.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let mut g = advisory("free")
        .timeout(SHORT)
        .acquire(&mut tx)
        .await
        .unwrap();
    assert_eq!(lock_timeout(&mut g).await, "5s");
    g.release().await.unwrap();
    let mut g = advisory("free-x")
        .xact()
        .wait_forever()
        .acquire(&mut tx)
        .await
        .unwrap();
    assert_eq!(lock_timeout(&mut g).await, "5s");
    drop(g);
    tx.commit().await.unwrap();
    assert_eq!(lock_timeout(&mut conn).await, "7s");
    sqlx::query("SELECT 1").execute(&mut holder).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_wait_inside_a_transaction_leaves_it_usable() {
    let db = TestDb::new().await;
    let _holder = hold(&db, "row-owner").await;
    let mut conn = db.connect().await;
    sqlx::query("CREATE TABLE work (n int)")
        .execute(&mut conn)
        .await
        .unwrap();

    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO work VALUES (1)")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await
        .unwrap();
    for lock in [
        advisory("row-owner"),
        advisory("row-owner").xact(),
        advisory("row-owner").shared(),
    ] {
        let error = lock.timeout(SHORT).acquire(&mut tx).await.unwrap_err();
        assert!(matches!(error, Error::LockTimeout { .. }), "{error:?}");
    }
    assert_eq!(lock_timeout(&mut tx).await, "5s");
    sqlx::query("INSERT INTO work VALUES (2)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT sum(n) FROM work")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(total, 3, "both inserts committed");
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_forever_ignores_the_sessions_lock_timeout() {
    let db = TestDb::new().await;
    let mut holder = hold(&db, "patient").await;
    let pool = db.pool_with(1).await;
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '50ms'")
        .execute(&mut *conn)
        .await
        .unwrap();

    let waiter = tokio::spawn(async move {
        let result = advisory("patient")
            .wait_forever()
            .acquire(&mut conn)
            .await
            .map(drop);
        (result, conn)
    });
    until_someone_waits(db.pool(), "patient").await;
    // Several times the session's lock_timeout, and the wait goes on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the session's lock_timeout did not end the wait"
    );
    assert!(
        locks_on(db.pool(), "patient")
            .await
            .iter()
            .any(|row| !row.granted)
    );

    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    let (result, mut conn) = waiter.await.unwrap();
    // The guard was dropped on a borrowed connection, so the lock is still the session's.
    result.unwrap();
    assert_eq!(lock_timeout(&mut conn).await, "50ms");
    assert_eq!(
        locks_on(db.pool(), "patient").await[0].pid,
        pid(&mut conn).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_default_wait_obeys_the_sessions_lock_timeout() {
    let db = TestDb::new().await;
    let _holder = hold(&db, "strict").await;
    let mut conn = db.connect().await;
    sqlx::query("SET lock_timeout = '50ms'")
        .execute(&mut conn)
        .await
        .unwrap();
    let error = advisory("strict").acquire(&mut conn).await.unwrap_err();
    assert!(matches!(error, Error::LockTimeout { .. }), "{error:?}");
    assert_eq!(lock_timeout(&mut conn).await, "50ms");
}

#[tokio::test(flavor = "multi_thread")]
async fn zero_and_sub_millisecond_timeouts_try_once() {
    let db = TestDb::new().await;
    let _holder = hold(&db, "taken").await;
    let mut conn = db.connect().await;
    for limit in [Duration::ZERO, Duration::from_micros(999)] {
        let error = advisory("taken")
            .timeout(limit)
            .acquire(&mut conn)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Busy { .. }), "{limit:?}: {error:?}");
    }
    assert_eq!(
        advisory("x").timeout(Duration::from_micros(10)).wait_mode(),
        Wait::NoWait
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_postgres_cannot_take_are_refused_before_any_sql() {
    let db = TestDb::new().await;
    let pool = db.pool_with(1).await;
    let mut conn = db.connect().await;
    let too_long = Duration::from_millis(i32::MAX as u64 + 1);
    for lock in [
        advisory("far").timeout(too_long),
        advisory("far").timeout(Duration::MAX),
    ] {
        let error = lock.clone().acquire(&mut conn).await.unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
        assert!(
            error.to_string().contains("longer than Postgres accepts"),
            "{error}"
        );
        assert!(matches!(
            lock.acquire(&pool).await,
            Err(Error::InvalidArgument(_))
        ));
    }
    let error = advisory("far")
        .wait(Wait::Limit(Duration::from_nanos(5)))
        .acquire(&mut conn)
        .await
        .map(drop);
    assert!(matches!(error, Err(Error::InvalidArgument(_))));
    assert!(advisory_locks(db.pool()).await.is_empty());
    // The longest accepted timeout works.
    let g = advisory("far")
        .timeout(Duration::from_millis(i32::MAX as u64))
        .acquire(&mut conn)
        .await
        .unwrap();
    g.release().await.unwrap();
}
