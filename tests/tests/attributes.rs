//! The attributes against a real Postgres: exclusion between separate sessions, skip and raise,
//! per-argument lock ids, handles lent back to the body, lock timeouts, prioritize, stacking.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{advisory_locks, backend_exists, eventually, free_for, lock_timeout, locks_on, pid};
use pglock::{Error, LockId, LockTarget};
use pglock_tests::TestDb;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

#[pglock::advisory("nightly-digest", timeout = "0s", side_effect = Skip)]
async fn nightly_digest(pool: &PgPool) -> Option<i32> {
    // Hold the lock long enough for every replica to try.
    sqlx::query("SELECT pg_sleep(0.3)")
        .execute(pool)
        .await
        .ok()?;
    Some(1)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_one_replica_runs_a_skipping_job() {
    let db = TestDb::new().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(4));
    let mut replicas = Vec::new();
    for _ in 0..4 {
        // A pool each: separate sessions, as separate processes would have.
        let pool = db.pool_with(2).await;
        let barrier = barrier.clone();
        replicas.push(tokio::spawn(async move {
            barrier.wait().await;
            nightly_digest(&pool).await
        }));
    }
    let mut ran = 0;
    for replica in replicas {
        ran += replica.await.unwrap().unwrap_or(0);
    }
    assert_eq!(ran, 1, "exactly one replica ran the job");
    assert!(
        advisory_locks(db.pool()).await.is_empty(),
        "and nothing is left locked"
    );
}

#[pglock::advisory("report", timeout = "0s")]
async fn report(pool: &PgPool, ran: &AtomicBool) -> Result<(), Error> {
    let _ = pool;
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[pglock::advisory("report", timeout = "100ms")]
async fn patient_report(pool: &PgPool, ran: &AtomicBool) -> Result<(), Error> {
    let _ = pool;
    ran.store(true, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn raise_returns_the_error_without_running_the_body() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let held = pglock::advisory("report")
        .acquire(&mut holder)
        .await
        .unwrap();
    let ran = AtomicBool::new(false);

    let busy = report(db.pool(), &ran).await.unwrap_err();
    assert!(
        matches!(busy, Error::Busy { target: LockTarget::Advisory(ref id) } if id.name() == "report")
    );
    let timed_out = patient_report(db.pool(), &ran).await.unwrap_err();
    assert!(
        matches!(timed_out, Error::LockTimeout { .. }),
        "{timed_out:?}"
    );
    assert!(!ran.load(Ordering::SeqCst), "the body never ran");

    held.release().await.unwrap();
    report(db.pool(), &ran).await.unwrap();
    assert!(ran.load(Ordering::SeqCst));
}

#[pglock::advisory(format!("tenant-{tenant}"), timeout = "0s", side_effect = Skip)]
async fn per_tenant(pool: &PgPool, tenant: &str) -> Result<Option<Vec<i64>>, Error> {
    // Which locks are held while the body runs, as pg_locks shows them.
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT (classid::int8 << 32) | objid::int8 FROM pg_locks \
         WHERE locktype = 'advisory' AND granted",
    )
    .fetch_all(pool)
    .await?;
    Ok(Some(held))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_id_can_come_from_the_arguments() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let held = pglock::advisory("tenant-a")
        .acquire(&mut holder)
        .await
        .unwrap();

    assert_eq!(
        per_tenant(db.pool(), "a").await.unwrap(),
        None,
        "tenant a is busy"
    );
    let seen = per_tenant(db.pool(), "b")
        .await
        .unwrap()
        .expect("tenant b runs");
    let key = |name: &str| match LockId::from(name).key() {
        pglock::AdvisoryKey::BigInt(key) => key,
        _ => unreachable!(),
    };
    assert!(
        seen.contains(&key("tenant-b")),
        "held tenant-b while running: {seen:?}"
    );
    held.release().await.unwrap();
}

#[pglock::advisory]
async fn default_id(pool: &PgPool) -> Result<Vec<common::LockRow>, Error> {
    Ok(advisory_locks(pool).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_id_is_the_module_path_and_function_name() {
    let db = TestDb::new().await;
    let rows = default_id(db.pool()).await.unwrap();
    let expected = LockId::from(concat!(module_path!(), "::default_id"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].is_for(&expected), "{rows:?} is for {expected}");
}

#[pglock::advisory("on-connection", db = conn)]
async fn on_connection(
    conn: &mut PgConnection,
    observer: &PgPool,
) -> Result<(i32, Vec<common::LockRow>), Error> {
    Ok((pid(conn).await, locks_on(observer, "on-connection").await))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_argument_holds_the_lock_and_is_lent_back() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let conn_pid = pid(&mut conn).await;
    let (body_pid, rows) = on_connection(&mut conn, db.pool()).await.unwrap();
    assert_eq!(body_pid, conn_pid, "the body got the same session");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].pid, conn_pid, "the lock lives on that session");
    assert!(
        locks_on(db.pool(), "on-connection").await.is_empty(),
        "released after"
    );
}

#[pglock::advisory("in-transaction", xact)]
async fn in_transaction(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    sqlx::query("INSERT INTO entries VALUES (1)")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xact_lock_on_a_transaction_argument_lasts_until_commit() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE entries (n int)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut other = db.connect().await;
    let mut tx = db.pool().begin().await.unwrap();
    in_transaction(&mut tx).await.unwrap();
    assert!(
        !free_for(&mut other, "in-transaction").await,
        "still held by the transaction"
    );
    tx.commit().await.unwrap();
    assert!(free_for(&mut other, "in-transaction").await);
}

#[pglock::timeout("1.5s")]
async fn timed(conn: &mut PgConnection) -> Result<String, Error> {
    Ok(lock_timeout(conn).await)
}

#[pglock::timeout("100ms")]
async fn read_busy_table(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT count(*) FROM busy")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_timeout_attribute_bounds_every_lock_wait_and_restores() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    assert_eq!(timed(&mut conn).await.unwrap(), "1500ms");
    assert_eq!(lock_timeout(&mut conn).await, "0");

    sqlx::query("CREATE TABLE busy (n int)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut holder = db.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE busy")
        .execute(&mut *holder)
        .await
        .unwrap();
    let error = read_busy_table(&mut conn).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::LockTimeout {
                target: LockTarget::Statement,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(lock_timeout(&mut conn).await, "0");
}

// Stacked attributes nest in reading order, the top one outermost (as Python decorators do):
// here the lock timeout is set first, so it bounds the advisory lock's own wait.
#[pglock::timeout("100ms")]
#[pglock::advisory("stacked")]
async fn stacked(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

// The other order: the lock is taken first, waiting as long as the server lets it, and only the
// body runs under the timeout.
#[pglock::advisory("stacked-lock-first")]
#[pglock::timeout("100ms")]
async fn lock_then_timeout(conn: &mut PgConnection) -> Result<String, Error> {
    Ok(sqlx::query_scalar("SELECT current_setting('lock_timeout')")
        .fetch_one(&mut *conn)
        .await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn stacked_attributes_take_the_lock_first_when_advisory_is_on_top() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let held = pglock::advisory("stacked-lock-first")
        .acquire(&mut holder)
        .await
        .unwrap();
    let mut conn = db.connect().await;
    let started = std::time::Instant::now();
    let call = tokio::spawn(async move {
        let setting = lock_then_timeout(&mut conn).await;
        (setting, lock_timeout(&mut conn).await)
    });
    // Far longer than the 100 ms timeout: a bounded wait would have failed by now.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !call.is_finished(),
        "the advisory wait is not bounded by the timeout below it"
    );
    held.release().await.unwrap();
    let (setting, after) = call.await.unwrap();
    assert_eq!(setting.unwrap(), "100ms", "the body ran under the timeout");
    assert_eq!(after, "0", "and the timeout was restored");
    assert!(started.elapsed() >= Duration::from_millis(600));
}

#[tokio::test(flavor = "multi_thread")]
async fn stacked_attributes_nest_in_reading_order() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let held = pglock::advisory("stacked")
        .acquire(&mut holder)
        .await
        .unwrap();
    let mut conn = db.connect().await;
    let error = tokio::time::timeout(Duration::from_secs(5), stacked(&mut conn))
        .await
        .expect("the lock timeout bounded the advisory wait")
        .unwrap_err();
    assert!(matches!(error, Error::LockTimeout { .. }), "{error:?}");
    assert_eq!(lock_timeout(&mut conn).await, "0");
    held.release().await.unwrap();
    stacked(&mut conn).await.unwrap();
}

#[pglock::prioritize(interval = "50ms")]
#[pglock::timeout("5s")]
async fn migrate(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("ALTER TABLE orders ADD COLUMN note text")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn prioritize_frees_a_migration_blocked_by_a_long_transaction() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE orders (n int)")
        .execute(db.pool())
        .await
        .unwrap();
    // A long-running transaction that read the table and went idle, holding its lock.
    let mut blocker = db.pool().begin().await.unwrap();
    let blocker_pid = pid(&mut blocker).await;
    sqlx::query("SELECT count(*) FROM orders")
        .execute(&mut *blocker)
        .await
        .unwrap();

    let mut conn = db.connect().await;
    migrate(&mut conn, db.pool()).await.unwrap();
    let has_note: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_name = 'orders' AND column_name = 'note')",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    assert!(has_note, "the migration ran");
    assert!(
        !backend_exists(db.pool(), blocker_pid).await,
        "its blocker was terminated"
    );
    assert_eq!(lock_timeout(&mut conn).await, "0");
}

#[pglock::advisory("boom")]
async fn panics(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    panic!("the job failed");
}

#[pglock::advisory("slow", timeout = "0s")]
async fn slow(pool: &PgPool) -> Result<(), Error> {
    sqlx::query("SELECT pg_sleep(60)").execute(pool).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn panics_and_dropped_calls_release_the_lock() {
    let db = TestDb::new().await;
    let shared = Arc::new(tokio::sync::Mutex::new(db.connect().await));
    let in_task = shared.clone();
    let task = tokio::spawn(async move { panics(&mut *in_task.lock().await).await });
    assert!(task.await.unwrap_err().is_panic());
    assert!(
        locks_on(db.pool(), "boom").await.is_empty(),
        "released before unwinding on"
    );
    sqlx::query("SELECT 1")
        .execute(&mut *shared.lock().await)
        .await
        .unwrap();

    let pool = db.pool_with(2).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), slow(&pool))
            .await
            .is_err()
    );
    eventually(
        Duration::from_secs(5),
        "the dropped call's lock is released",
        || async { locks_on(db.pool(), "slow").await.is_empty() },
    )
    .await;
}

#[pglock::advisory("owned-pool", side_effect = Skip, timeout = "0s")]
async fn owned_pool(pool: PgPool) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&pool).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_by_value_works_and_skip_returns_database_errors_it_can_carry() {
    let db = TestDb::new().await;
    owned_pool(db.pool().clone()).await.unwrap();
    // A pool that cannot connect: Skip with Result<(), E> returns the error rather than
    // pretending the lock was held elsewhere.
    let unreachable = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy_with(db.options().port(1));
    let error = owned_pool(unreachable).await.unwrap_err();
    assert!(matches!(error, Error::Database(_)), "{error:?}");
}

#[pglock::advisory("catalog", shared, timeout = "0s", db = pool)]
async fn read_catalog(pool: &PgPool, others: &PgPool) -> Result<(bool, bool), Error> {
    let _ = pool;
    // While this shared holder runs: another shared holder gets in, an exclusive one does not.
    let mut conn = others.acquire().await?;
    let shared_got_in = match pglock::advisory("catalog")
        .shared()
        .nowait()
        .try_acquire(&mut *conn)
        .await?
    {
        Some(guard) => {
            guard.release().await?;
            true
        }
        None => false,
    };
    let exclusive_got_in = free_for(&mut conn, "catalog").await;
    Ok((shared_got_in, exclusive_got_in))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shared_attribute_admits_shared_holders_only() {
    let db = TestDb::new().await;
    let others = db.pool_with(2).await;
    let (shared, exclusive) = read_catalog(db.pool(), &others).await.unwrap();
    assert!(shared, "another shared holder got in");
    assert!(!exclusive, "an exclusive holder did not");
}

#[pglock::advisory("ledger", xact)]
async fn post_entry(pool: &PgPool, fail: bool) -> Result<usize, Error> {
    // The lock lives in pglock's own transaction, on a connection of its own.
    let held = locks_on(pool, "ledger").await.len();
    sqlx::query("INSERT INTO ledger VALUES (1)")
        .execute(pool)
        .await?;
    if fail {
        return Err(Error::InvalidArgument("the entry was refused".into()));
    }
    Ok(held)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xact_attribute_on_a_pool_holds_the_lock_in_a_transaction_of_its_own() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE ledger (n int)")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(
        post_entry(db.pool(), false).await.unwrap(),
        1,
        "held during the body"
    );
    assert!(
        locks_on(db.pool(), "ledger").await.is_empty(),
        "gone with the transaction"
    );
    assert!(post_entry(db.pool(), true).await.is_err());
    assert!(locks_on(db.pool(), "ledger").await.is_empty());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(db.pool())
        .await
        .unwrap();
    // The body's statements ran through the pool, outside pglock's transaction: both stayed.
    assert_eq!(rows, 2);
}
