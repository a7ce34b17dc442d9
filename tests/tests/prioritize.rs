//! `pglock::prioritize`: the protected scope gets its locks because the sessions blocking it are
//! ended, and only those; the background task stops with the scope and reports its failures.

mod common;

use std::time::Duration;

use common::{backend_exists, eventually, pid};
use pglock::{Error, prioritize};
use pglock_tests::TestDb;
use sqlx::{Connection, PgConnection, PgPool, Transaction};

const TICK: Duration = Duration::from_millis(50);

/// A session holding an ACCESS EXCLUSIVE lock on `table`, idle in its transaction.
async fn blocker(db: &TestDb, table: &str) -> (Transaction<'static, sqlx::Postgres>, i32) {
    let mut tx = db.pool().begin().await.unwrap();
    let blocker_pid = pid(&mut tx).await;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    (tx, blocker_pid)
}

async fn table(db: &TestDb, name: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE TABLE {name} (n int)")))
        .execute(db.pool())
        .await
        .unwrap();
}

/// Backends named as prioritize names its connection.
async fn watchers(observer: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pglock prioritize' AND datname = current_database()")
        .fetch_one(observer)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blocker_is_terminated_and_unrelated_sessions_are_left_alone() {
    let db = TestDb::new().await;
    table(&db, "orders").await;
    table(&db, "other").await;
    let (mut blocking, blocker_pid) = blocker(&db, "orders").await;
    // An unrelated session, also idle in a transaction holding a lock, on another table.
    let (_bystander, bystander_pid) = blocker(&db, "other").await;

    let mut conn = db.connect().await;
    let rows: i64 = prioritize()
        .interval(TICK)
        .watcher(db.pool())
        .scope(&mut conn, async |conn| {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
                .fetch_one(&mut *conn)
                .await?;
            Ok::<_, Error>(n)
        })
        .await
        .unwrap();
    assert_eq!(rows, 0);
    // A terminated backend lets go of its locks before it leaves pg_stat_activity.
    eventually(
        Duration::from_secs(5),
        "the blocker was terminated",
        || async { !backend_exists(db.pool(), blocker_pid).await },
    )
    .await;
    assert!(
        backend_exists(db.pool(), bystander_pid).await,
        "the bystander was not"
    );
    let error = sqlx::query("SELECT 1")
        .execute(&mut *blocking)
        .await
        .unwrap_err();
    let code = error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert!(
        code.as_deref() == Some("57P01") || error.as_database_error().is_none(),
        "{error:?}"
    );
    eventually(
        Duration::from_secs(5),
        "the watcher's connection is closed",
        || async { watchers(db.pool()).await == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_ends_the_blocking_statement_but_not_its_session() {
    let db = TestDb::new().await;
    table(&db, "reports").await;
    let mut blocking = db.connect().await;
    let blocker_pid = pid(&mut blocking).await;
    // One implicit transaction: the lock goes when the statement is cancelled.
    let running = tokio::spawn(async move {
        let result =
            sqlx::raw_sql("LOCK TABLE reports IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60)")
                .execute(&mut blocking)
                .await;
        (result, blocking)
    });
    eventually(Duration::from_secs(5), "the blocker holds the lock", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND mode = 'AccessExclusiveLock' AND granted)",
        )
        .bind(blocker_pid)
        .fetch_one(db.pool())
        .await
        .unwrap()
    })
    .await;

    let mut conn = db.connect().await;
    prioritize()
        .interval(TICK)
        .cancel()
        .watcher(db.pool())
        .scope(&mut conn, async |conn| {
            sqlx::query("SELECT count(*) FROM reports")
                .execute(&mut *conn)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    let (result, mut blocking) = running.await.unwrap();
    let code = result
        .unwrap_err()
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(
        code.as_deref(),
        Some("57014"),
        "the blocker's statement was cancelled"
    );
    assert_eq!(
        pid(&mut blocking).await,
        blocker_pid,
        "its session lives on"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blockers_younger_than_the_filter_are_spared() {
    let db = TestDb::new().await;
    table(&db, "young").await;
    let (_blocking, blocker_pid) = blocker(&db, "young").await;
    let mut conn = db.connect().await;

    let result = prioritize()
        .interval(TICK)
        .older_than(Duration::from_secs(3600))
        .timeout(Duration::from_millis(400))
        .watcher(db.pool())
        .scope(&mut conn, async |conn| {
            sqlx::query("SELECT count(*) FROM young")
                .execute(&mut *conn)
                .await?;
            Ok::<_, Error>(())
        })
        .await;
    assert!(
        matches!(result, Err(Error::LockTimeout { .. })),
        "{result:?}"
    );
    assert!(backend_exists(db.pool(), blocker_pid).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_watcher_acts_once() {
    let db = TestDb::new().await;
    table(&db, "late").await;
    let mut conn = db.connect().await;
    let db_ref = &db;
    let result = prioritize()
        .interval(TICK)
        .periodic(false)
        .timeout(Duration::from_millis(500))
        .watcher(db.pool())
        .scope(&mut conn, async |conn| {
            // The one look happens before anyone blocks.
            tokio::time::sleep(TICK * 4).await;
            let (_blocking, blocker_pid) = blocker(db_ref, "late").await;
            let waited = sqlx::query("SELECT count(*) FROM late")
                .execute(&mut *conn)
                .await;
            Ok::<_, Error>((waited.map(drop).map_err(Error::from), blocker_pid))
        })
        .await
        .unwrap();
    let (waited, blocker_pid) = result;
    assert!(
        matches!(waited, Err(Error::LockTimeout { .. })),
        "{waited:?}"
    );
    assert!(
        backend_exists(db.pool(), blocker_pid).await,
        "nothing was ended after the one look"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watcher_that_may_not_signal_reports_it() {
    let db = TestDb::new().await;
    table(&db, "guarded").await;
    // A role that may neither signal a superuser's backend nor is one.
    let role = format!("{}_weak", db.name());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE ROLE {role} LOGIN")))
        .execute(db.pool())
        .await
        .unwrap();
    let weak = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options().username(&role))
        .await
        .unwrap();
    let (_blocking, blocker_pid) = blocker(&db, "guarded").await; // a superuser's session

    let mut conn = db.connect().await;
    let result = prioritize()
        .interval(TICK)
        .watcher(&weak)
        .scope(&mut conn, async |conn| {
            // The body copes with its own timeout; the watcher's failure must still surface.
            let waited = pglock::timeout(Duration::from_millis(300))
                .scope(&mut *conn, async |conn| {
                    sqlx::query("SELECT count(*) FROM guarded")
                        .execute(&mut *conn)
                        .await?;
                    Ok::<_, Error>(())
                })
                .await;
            Ok::<_, Error>(waited.is_err())
        })
        .await;
    match result {
        Err(Error::Prioritize { source }) => {
            assert!(
                matches!(*source, Error::PermissionDenied { .. }),
                "{source:?}"
            );
        }
        other => panic!("expected the watcher's error, got {other:?}"),
    }
    assert!(backend_exists(db.pool(), blocker_pid).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_scope_stops_the_watcher_and_closes_its_connection() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let scope = prioritize()
        .interval(TICK)
        .watcher(db.pool())
        .scope(&mut conn, async |_| {
            std::future::pending::<()>().await;
            Ok::<_, Error>(())
        });
    assert!(tokio::time::timeout(TICK * 6, scope).await.is_err());
    eventually(
        Duration::from_secs(5),
        "the watcher's connection is closed",
        || async { watchers(db.pool()).await == 0 },
    )
    .await;
    sqlx::query("SELECT 1").execute(&mut conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_are_refused_before_anything_runs() {
    let db = TestDb::new().await;
    let mut conn: PgConnection = db.connect().await;
    let no_pool = prioritize()
        .scope(&mut conn, async |_| Ok::<_, Error>(()))
        .await;
    assert!(matches!(no_pool, Err(Error::InvalidArgument(ref m)) if m.contains("watcher")));
    let too_fast = prioritize()
        .interval(Duration::from_millis(5))
        .watcher(db.pool())
        .scope(&mut conn, async |_| Ok::<_, Error>(()))
        .await;
    assert!(matches!(too_fast, Err(Error::InvalidArgument(ref m)) if m.contains("interval")));
    assert_eq!(watchers(db.pool()).await, 0);
    let _ = conn.ping().await;
}
