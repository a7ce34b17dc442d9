//! Prioritize that can rehearse and temper: a dry run signals nobody and reports whom a real run
//! signals; `cancel_first` terminates only what a cancel did not free; `roots_only` leaves
//! sessions that wait themselves alone.

mod common;

use std::time::Duration;

use common::{backend_exists, eventually, exec, pid, start, until_waiting};
use pglock::{Error, PrioritizeReport, Signal, prioritize};
use pglock_tests::TestDb;
use sqlx::{Connection, PgConnection, Postgres, Transaction};

const TICK: Duration = Duration::from_millis(50);

async fn blocker(db: &TestDb) -> (Transaction<'static, Postgres>, i32) {
    let mut tx = db.pool().begin().await.unwrap();
    let blocker_pid = pid(&mut tx).await;
    exec(&mut tx, "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").await;
    (tx, blocker_pid)
}

async fn count(conn: &mut PgConnection) -> Result<i64, Error> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&mut *conn)
        .await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_signals_nobody_and_reports_whom_a_real_run_then_signals() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE orders (n int)").await;
    let (_blocking, blocker_pid) = blocker(&db).await;
    let mut conn = db.connect().await;

    let rehearsal = PrioritizeReport::new();
    let result = prioritize()
        .interval(TICK)
        .dry_run(true)
        .report(&rehearsal)
        .timeout(Duration::from_secs(2))
        .watcher(db.pool())
        .scope(&mut conn, async |conn| count(conn).await)
        .await;
    assert!(
        matches!(result, Err(Error::LockTimeout { .. })),
        "nobody was ended, so the lock timeout ran out: {result:?}"
    );
    assert!(backend_exists(db.pool(), blocker_pid).await);
    assert_eq!(rehearsal.pids(), [blocker_pid]);
    assert!(
        rehearsal
            .signals()
            .iter()
            .all(|s| s.dry_run && s.signal == Signal::Terminate)
    );
    // With the victim's details, to decide whether a real run may go ahead.
    let first = &rehearsal.signals()[0];
    assert!(
        first
            .query
            .as_deref()
            .is_some_and(|q| q.contains("LOCK TABLE orders")),
        "{first:?}"
    );

    let real = PrioritizeReport::new();
    prioritize()
        .interval(TICK)
        .report(&real)
        .watcher(db.pool())
        .scope(&mut conn, async |conn| count(conn).await)
        .await
        .unwrap();
    assert_eq!(real.pids(), rehearsal.pids());
    assert!(real.signals().iter().all(|s| !s.dry_run));
    eventually(
        Duration::from_secs(5),
        "the blocker was terminated",
        || async { !backend_exists(db.pool(), blocker_pid).await },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_first_terminates_only_what_a_cancel_did_not_free() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE orders (n int)").await;
    // Idle in its transaction: a cancel does nothing to it.
    let (_idle, idle_pid) = blocker(&db).await;
    let mut conn = db.connect().await;
    let report = PrioritizeReport::new();
    prioritize()
        .interval(TICK)
        .cancel_first(Duration::from_millis(300))
        .report(&report)
        .watcher(db.pool())
        .scope(&mut conn, async |conn| count(conn).await)
        .await
        .unwrap();
    let signals: Vec<Signal> = report.signals().iter().map(|s| s.signal).collect();
    assert_eq!(signals.first(), Some(&Signal::Cancel), "{signals:?}");
    assert_eq!(signals.last(), Some(&Signal::Terminate), "{signals:?}");
    assert!(report.pids() == [idle_pid]);
    eventually(
        Duration::from_secs(5),
        "the idle blocker was terminated",
        || async { !backend_exists(db.pool(), idle_pid).await },
    )
    .await;

    // A long statement in an implicit transaction: the cancel frees the lock, and the session
    // lives on.
    let mut busy = db.connect().await;
    let busy_pid = pid(&mut busy).await;
    let running = start(
        busy,
        "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60)",
    );
    eventually(Duration::from_secs(5), "the statement holds the lock", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND granted AND mode = 'AccessExclusiveLock')",
        )
        .bind(busy_pid)
        .fetch_one(db.pool())
        .await
        .unwrap()
    })
    .await;
    let report = PrioritizeReport::new();
    prioritize()
        .interval(TICK)
        .cancel_first(Duration::from_secs(30))
        .report(&report)
        .watcher(db.pool())
        .scope(&mut conn, async |conn| count(conn).await)
        .await
        .unwrap();
    let (result, mut busy) = running.await.unwrap();
    assert!(result.is_err(), "the statement was cancelled");
    assert_eq!(pid(&mut busy).await, busy_pid, "its session lives on");
    assert!(
        report
            .signals()
            .iter()
            .all(|s| s.pid == busy_pid && s.signal == Signal::Cancel),
        "{:?}",
        report.signals()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn roots_only_leaves_sessions_that_wait_themselves_alone() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE orders (n int)").await;
    let (_root, root_pid) = blocker(&db).await;
    // Another migration, queued behind the root: it waits itself.
    let mut queued = db.connect().await;
    let queued_pid = pid(&mut queued).await;
    let waiting = start(
        queued,
        "LOCK TABLE orders IN ACCESS EXCLUSIVE MODE; SELECT 1",
    );
    until_waiting(db.pool(), queued_pid).await;

    let mut conn = db.connect().await;
    let report = PrioritizeReport::new();
    let observer = db.pool().clone();
    prioritize()
        .interval(TICK)
        .roots_only(true)
        .report(&report)
        .watcher(db.pool())
        .scope(&mut conn, async |conn| {
            let mut tx = conn.begin().await?;
            let n = count(&mut tx).await?;
            tx.commit().await?;
            Ok::<_, Error>(n)
        })
        .await
        .unwrap();
    assert_eq!(report.pids(), [root_pid]);
    let (queued_result, _queued) = waiting.await.unwrap();
    assert!(
        queued_result.is_ok(),
        "the queued session got its lock in turn"
    );
    assert!(
        backend_exists(&observer, queued_pid).await,
        "it was not ended"
    );
    eventually(
        Duration::from_secs(5),
        "the root was terminated",
        || async { !backend_exists(&observer, root_pid).await },
    )
    .await;
}

/// The attribute form of a rehearsal: `dry_run` and a `report` the caller reads.
#[pglock::prioritize(dry_run, interval = "50ms", timeout = "2s", report = report)]
async fn rehearse(
    conn: &mut PgConnection,
    pool: &sqlx::PgPool,
    report: &PrioritizeReport,
) -> Result<i64, Error> {
    let _ = pool;
    count(conn).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attribute_rehearses_too() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE orders (n int)").await;
    let (_blocking, blocker_pid) = blocker(&db).await;
    let mut conn = db.connect().await;
    let report = PrioritizeReport::new();
    let result = rehearse(&mut conn, db.pool(), &report).await;
    assert!(
        matches!(result, Err(Error::LockTimeout { .. })),
        "{result:?}"
    );
    assert_eq!(report.pids(), [blocker_pid]);
    assert!(backend_exists(db.pool(), blocker_pid).await);
}
