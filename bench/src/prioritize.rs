//! Section 5: how long a protected statement stays blocked under `pglock::prioritize`.
//!
//! Each repetition: a blocker session runs `BEGIN; LOCK TABLE .. IN ACCESS EXCLUSIVE MODE` and
//! then sleeps inside that transaction; the protected scope then runs `LOCK TABLE` on the same
//! table. Timed from sending the protected statement to (a) the blocker's client seeing its
//! session end, and (b) the protected statement completing.

use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::sync::oneshot;

use crate::Res;
use crate::stats::Samples;

pub const INTERVALS_MS: &[u64] = &[10, 50, 100, 500];

const TABLE: &str = "pglock_bench_prioritize";

/// Per interval: blocked → blocker gone, blocked → protected statement done, the watcher's
/// connect time is measured separately.
pub struct Outcome {
    pub interval: Duration,
    pub blocker_gone: Samples,
    pub protected_done: Samples,
}

pub async fn setup(pool: &PgPool) -> Res<()> {
    sqlx::raw_sql("CREATE TABLE IF NOT EXISTS pglock_bench_prioritize (id int)")
        .execute(pool)
        .await?;
    Ok(())
}

/// One repetition at `interval`: (blocker gone, protected done) after the protected statement
/// was sent.
async fn once(
    url: &str,
    pool: &PgPool,
    protected: &mut PgConnection,
    interval: Duration,
) -> Res<(Duration, Duration)> {
    let mut blocker = PgConnection::connect(url).await?;
    let (locked_tx, locked_rx) = oneshot::channel();
    let blocker_task = tokio::spawn(async move {
        let locked = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE"
        )))
        .execute(&mut blocker)
        .await;
        let failed = locked.is_err();
        let _ = locked_tx.send(locked.map(drop));
        if failed {
            return None;
        }
        // Ends with an error when prioritize terminates this session.
        let slept = sqlx::query("SELECT pg_sleep(30)")
            .execute(&mut blocker)
            .await;
        let gone = Instant::now();
        slept.is_err().then_some(gone)
    });
    locked_rx.await??;

    let sent = pglock::prioritize()
        .interval(interval)
        .watcher(pool)
        .scope(&mut *protected, async |conn| {
            let sent = Instant::now();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE; COMMIT"
            )))
            .execute(&mut *conn)
            .await?;
            Ok::<_, pglock::Error>(sent)
        })
        .await?;
    let done = sent.elapsed();
    let gone = blocker_task
        .await?
        .ok_or("the blocker was not terminated: its sleep ended normally or it never locked")?;
    Ok((gone.saturating_duration_since(sent), done))
}

/// `reps` rounds, each running every interval once (rounds interleave the intervals).
pub async fn run(url: &str, pool: &PgPool, reps: usize) -> Res<Vec<Outcome>> {
    let mut protected = PgConnection::connect(url).await?;
    let mut outcomes: Vec<Outcome> = INTERVALS_MS
        .iter()
        .map(|ms| Outcome {
            interval: Duration::from_millis(*ms),
            blocker_gone: Samples::default(),
            protected_done: Samples::default(),
        })
        .collect();
    for _ in 0..reps {
        for outcome in &mut outcomes {
            let (gone, done) = once(url, pool, &mut protected, outcome.interval).await?;
            outcome.blocker_gone.push(gone);
            outcome.protected_done.push(done);
        }
    }
    let _ = protected.close().await;
    Ok(outcomes)
}

/// What opening a connection costs (prioritize's watcher opens one per scope before its first
/// interval starts), median over `n`.
pub async fn connect_time(url: &str, n: usize) -> Res<Samples> {
    let mut samples = Samples::default();
    for _ in 0..n {
        let start = Instant::now();
        let conn = PgConnection::connect(url).await?;
        samples.push(start.elapsed());
        conn.close().await?;
    }
    Ok(samples)
}

/// Where the time between the interval and the protected statement's completion goes, measured
/// by doing prioritize's steps by hand from a third session.
pub struct Anatomy {
    /// The blockers lookup prioritize runs each interval (without the signal).
    pub lookup: Samples,
    /// `SELECT pg_terminate_backend(blocker)` round trip.
    pub terminate: Samples,
    /// From sending the terminate to the blocker's client seeing its session end.
    pub to_gone: Samples,
    /// From sending the terminate to the protected statement completing.
    pub to_done: Samples,
}

const LOOKUP: &str = "SELECT DISTINCT b.pid FROM unnest(pg_blocking_pids($1)) AS b(pid) \
     JOIN pg_stat_activity a ON a.pid = b.pid \
     WHERE b.pid <> 0 AND b.pid <> $1 AND b.pid <> pg_backend_pid()";

pub async fn anatomy(url: &str, reps: usize) -> Res<Anatomy> {
    let mut observer = PgConnection::connect(url).await?;
    let mut out = Anatomy {
        lookup: Samples::default(),
        terminate: Samples::default(),
        to_gone: Samples::default(),
        to_done: Samples::default(),
    };
    for _ in 0..reps {
        let mut blocker = PgConnection::connect(url).await?;
        let blocker_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut blocker)
            .await?;
        let (locked_tx, locked_rx) = oneshot::channel();
        let blocker_task = tokio::spawn(async move {
            let locked = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE"
            )))
            .execute(&mut blocker)
            .await;
            let _ = locked_tx.send(locked.map(drop));
            let slept = sqlx::query("SELECT pg_sleep(30)")
                .execute(&mut blocker)
                .await;
            let gone = Instant::now();
            slept.is_err().then_some(gone)
        });
        locked_rx.await??;

        let mut protected = PgConnection::connect(url).await?;
        let protected_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut protected)
            .await?;
        let protected_task = tokio::spawn(async move {
            let done = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "BEGIN; LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE; COMMIT"
            )))
            .execute(&mut protected)
            .await
            .map(|_| Instant::now());
            let _ = protected.close().await;
            done
        });
        // Wait until it is blocked, then time the lookup once it finds the blocker.
        let started = Instant::now();
        loop {
            let begin = Instant::now();
            let found: Vec<i32> = sqlx::query_scalar(LOOKUP)
                .bind(protected_pid)
                .fetch_all(&mut observer)
                .await?;
            if found == [blocker_pid] {
                out.lookup.push(begin.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err("the protected session never showed up as blocked".into());
            }
        }
        let sent = Instant::now();
        let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(blocker_pid)
            .fetch_one(&mut observer)
            .await?;
        out.terminate.push(sent.elapsed());
        let gone = blocker_task
            .await?
            .ok_or("the blocker was not terminated")?;
        let done = protected_task.await??;
        out.to_gone.push(gone.saturating_duration_since(sent));
        out.to_done.push(done.saturating_duration_since(sent));
    }
    let _ = observer.close().await;
    Ok(out)
}
