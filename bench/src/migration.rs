//! Section 7: the migration outage, reproduced.
//!
//! An application load runs: [`CLIENTS`] tasks, each running short read transactions (pgbench
//! `-S` style: one indexed `SELECT` on a 1000-row table) back to back. A long transaction then
//! takes a `SHARE` lock on the table and holds it for [`BLOCKER_HOLDS`] (the application's reads
//! go on beside it: `SHARE` does not conflict with them). [`MIGRATION_AFTER`] in, a migration
//! runs `ALTER TABLE … ADD COLUMN`, which needs `ACCESS EXCLUSIVE`: it waits for the long
//! transaction, and every read queues behind it. Three ways to run the migration:
//! * plain: no timeout;
//! * `pglock::retry_locks()` with its default schedule;
//! * `pglock::prioritize()` (100 ms interval), which terminates the long transaction.
//!
//! Reported: the application's p99 and max latency over the transactions that overlap the
//! migration (from its start to its end), the migration's attempts and total time, and the
//! sessions prioritize killed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::Mutex;

use crate::Res;
use crate::stats::Samples;

/// Application clients.
pub const CLIENTS: usize = 8;
/// How long the long transaction holds its `SHARE` lock.
pub const BLOCKER_HOLDS: Duration = Duration::from_secs(3);
/// When the migration starts, after the long transaction took its lock.
pub const MIGRATION_AFTER: Duration = Duration::from_millis(500);
/// Load before the long transaction starts, and after the migration ends.
const SETTLE: Duration = Duration::from_millis(500);

/// How the migration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    Plain,
    Retries,
    Prioritize,
}

impl Way {
    pub const ALL: [Way; 3] = [Way::Plain, Way::Retries, Way::Prioritize];

    pub fn label(self) -> &'static str {
        match self {
            Way::Plain => "plain `ALTER TABLE` (no timeout)",
            Way::Retries => "`retry_locks()`, default schedule",
            Way::Prioritize => "`prioritize()`, 100 ms interval",
        }
    }
}

/// One run of one way.
pub struct Outcome {
    pub way: Way,
    /// Latencies of the application's transactions that overlap the migration.
    pub during: Samples,
    pub attempts: usize,
    pub total: Duration,
    pub killed: usize,
    /// Whether the migration succeeded.
    pub migrated: bool,
}

pub async fn setup(pool: &PgPool) -> Res<()> {
    sqlx::raw_sql(
        "DROP TABLE IF EXISTS pglock_bench_migration;
         CREATE TABLE pglock_bench_migration (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO pglock_bench_migration SELECT i, 0 FROM generate_series(1, 1000) i;
         ANALYZE pglock_bench_migration",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// The application: `CLIENTS` tasks reading until `stop`, each transaction recorded as
/// (start, end) instants.
async fn load(pool: PgPool, stop: Arc<AtomicBool>) -> Res<Vec<(Instant, Instant)>> {
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (pool, stop) = (pool.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let mut spans = Vec::new();
            let mut id = client as i32;
            while !stop.load(Ordering::Relaxed) {
                id = (id * 7919 + 13) % 1000 + 1;
                let start = Instant::now();
                let _: i32 =
                    sqlx::query_scalar("SELECT n FROM pglock_bench_migration WHERE id = $1")
                        .bind(id)
                        .fetch_one(&mut *conn)
                        .await?;
                spans.push((start, Instant::now()));
            }
            Ok::<_, sqlx::Error>(spans)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// Run the migration `way` on `conn`: (attempts, sessions killed, succeeded).
async fn migrate(way: Way, conn: &mut PgConnection, pool: &PgPool) -> (usize, usize, bool) {
    let alter = "ALTER TABLE pglock_bench_migration ADD COLUMN note text";
    match way {
        Way::Plain => {
            let done = sqlx::query(alter).execute(&mut *conn).await;
            (1, 0, done.is_ok())
        }
        Way::Retries => {
            let attempts = AtomicUsize::new(0);
            let done = pglock::retry_locks()
                .scope(&mut *conn, async |tx| {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    sqlx::query(alter).execute(&mut *tx).await?;
                    Ok::<_, pglock::Error>(())
                })
                .await;
            (attempts.into_inner(), 0, done.is_ok())
        }
        Way::Prioritize => {
            let report = pglock::PrioritizeReport::new();
            let done = pglock::prioritize()
                .interval(Duration::from_millis(100))
                .report(&report)
                .watcher(pool)
                .scope(&mut *conn, async |conn| {
                    sqlx::query(alter).execute(&mut *conn).await?;
                    Ok::<_, pglock::Error>(())
                })
                .await;
            (1, report.pids().len(), done.is_ok())
        }
    }
}

/// One run of `way`, on a fresh table.
pub async fn run(url: &str, pool: &PgPool, way: Way) -> Res<Outcome> {
    setup(pool).await?;
    let app = sqlx::postgres::PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(url)
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let loading = tokio::spawn(load(app.clone(), stop.clone()));
    tokio::time::sleep(SETTLE).await;

    // The long transaction.
    let blocker = Arc::new(Mutex::new(PgConnection::connect(url).await?));
    sqlx::raw_sql("BEGIN; LOCK TABLE pglock_bench_migration IN SHARE MODE")
        .execute(&mut *blocker.lock().await)
        .await?;
    let holding = tokio::spawn({
        let blocker = blocker.clone();
        async move {
            tokio::time::sleep(BLOCKER_HOLDS).await;
            // Fails when prioritize terminated the session: its transaction is gone anyway.
            let _ = sqlx::query("COMMIT")
                .execute(&mut *blocker.lock().await)
                .await;
        }
    });
    tokio::time::sleep(MIGRATION_AFTER).await;

    let mut conn = PgConnection::connect(url).await?;
    let started = Instant::now();
    let (attempts, killed, migrated) = migrate(way, &mut conn, pool).await;
    let ended = Instant::now();

    holding.await?;
    tokio::time::sleep(SETTLE).await;
    stop.store(true, Ordering::Relaxed);
    let spans = loading.await??;
    app.close().await;
    let _ = conn.close().await;

    let mut during = Samples::default();
    for (start, end) in spans {
        if end >= started && start <= ended {
            during.push(end - start);
        }
    }
    Ok(Outcome {
        way,
        during,
        attempts,
        total: ended - started,
        killed,
        migrated,
    })
}
