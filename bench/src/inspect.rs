//! Section 6: listing locks while one session holds 10,000 advisory locks (and two sessions wait
//! on two of them, so that `blocked_locks()` has something to find).

use std::time::Instant;

use sqlx::{Connection as _, PgConnection, PgPool};

use crate::Res;
use crate::stats::Samples;

pub const HELD: i64 = 10_000;
/// The held keys are `KEY_BASE + 1 ..= KEY_BASE + HELD`.
const KEY_BASE: i64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    LocksAll,
    LocksLimit25,
    BlockedLocks,
    RawPgLocks,
}

pub const QUERIES: &[Query] = &[
    Query::LocksAll,
    Query::LocksLimit25,
    Query::BlockedLocks,
    Query::RawPgLocks,
];

impl Query {
    pub fn name(self) -> &'static str {
        match self {
            Query::LocksAll => "`pglock::locks().fetch(..)`, all rows",
            Query::LocksLimit25 => "`pglock::locks().limit(25).fetch(..)`",
            Query::BlockedLocks => "`pglock::blocked_locks().fetch(..)`",
            Query::RawPgLocks => "reference: `SELECT * FROM pg_locks` (sqlx, untyped)",
        }
    }
}

pub struct Outcome {
    pub samples: Vec<Samples>,
    pub rows: Vec<usize>,
}

/// The sessions that hold and wait; dropped (closed) at the end.
pub struct Holders {
    holder: PgConnection,
    waiters: Vec<tokio::task::JoinHandle<Res<()>>>,
}

/// One session takes the locks; two more wait for two of them.
///
/// # Errors
/// When the server's lock table is too small, with the setting needed.
pub async fn hold(url: &str) -> Res<Holders> {
    let mut holder = PgConnection::connect(url).await?;
    let taken = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_lock({KEY_BASE} + g) FROM generate_series(1, {HELD}) g"
    )))
    .execute(&mut holder)
    .await;
    if let Err(error) = taken {
        let settings: (String, String) = sqlx::query_as(
            "SELECT current_setting('max_locks_per_transaction'), current_setting('max_connections')",
        )
        .fetch_one(&mut PgConnection::connect(url).await?)
        .await?;
        return Err(format!(
            "one session could not take {HELD} advisory locks ({error}); the server has \
             max_locks_per_transaction={} and max_connections={} (the shared lock table holds \
             about max_locks_per_transaction x (max_connections + background processes) locks). \
             Raise max_locks_per_transaction (e.g. to 128), or point DATABASE_URL at a server \
             that allows it",
            settings.0, settings.1
        )
        .into());
    }
    let mut waiters = Vec::new();
    for key in [KEY_BASE + 1, KEY_BASE + 2] {
        let mut conn = PgConnection::connect(url).await?;
        waiters.push(tokio::spawn(async move {
            let guard = pglock::advisory(key)
                .wait_forever()
                .acquire(&mut conn)
                .await?;
            guard.release().await?;
            conn.close().await?;
            Ok(())
        }));
    }
    Ok(Holders { holder, waiters })
}

impl Holders {
    pub async fn release(mut self) -> Res<()> {
        sqlx::query("SELECT pg_advisory_unlock_all()")
            .execute(&mut self.holder)
            .await?;
        for waiter in self.waiters {
            waiter.await??;
        }
        self.holder.close().await?;
        Ok(())
    }
}

async fn once(query: Query, pool: &PgPool) -> Res<usize> {
    Ok(match query {
        Query::LocksAll => pglock::locks().fetch(pool).await?.len(),
        Query::LocksLimit25 => pglock::locks().limit(25).fetch(pool).await?.len(),
        Query::BlockedLocks => pglock::blocked_locks().fetch(pool).await?.len(),
        Query::RawPgLocks => sqlx::query("SELECT * FROM pg_locks")
            .fetch_all(pool)
            .await?
            .len(),
    })
}

/// Each query once unrecorded, then `reps` interleaved rounds.
pub async fn run(pool: &PgPool, reps: usize) -> Res<Outcome> {
    let mut outcome = Outcome {
        samples: vec![Samples::default(); QUERIES.len()],
        rows: vec![0; QUERIES.len()],
    };
    // Wait until both waiters are queued.
    let start = Instant::now();
    while once(Query::BlockedLocks, pool).await? < 2 {
        if start.elapsed().as_secs() > 10 {
            return Err("the two waiting sessions never showed up as blocked".into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for query in QUERIES {
        once(*query, pool).await?;
    }
    for _ in 0..reps {
        for (i, query) in QUERIES.iter().enumerate() {
            let start = Instant::now();
            outcome.rows[i] = once(*query, pool).await?;
            outcome.samples[i].push(start.elapsed());
        }
    }
    Ok(outcome)
}

/// The command's scenario: this many sessions...
pub const SESSIONS: usize = 200;
/// ...each holding this many advisory locks (10,000 in all).
const PER_SESSION: i64 = 50;
/// Their keys are `SPREAD_BASE + 1 ..= SPREAD_BASE + SESSIONS * PER_SESSION`.
const SPREAD_BASE: i64 = 2_000_000;

/// The `pglock` command's default listing, process start to exit, with 10,000 locks held
/// across [`SESSIONS`] sessions (one of them blocked, so the listing has a wait to put first).
pub struct CliOutcome {
    pub samples: Samples,
    /// Lines printed by the last run (header included).
    pub lines: usize,
    /// Locks on the server while measuring, as `pg_locks` counts them.
    pub locks: i64,
}

/// Build the `pglock` binary as this bench is built (release), and return its path.
fn cli_binary() -> Res<std::path::PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace")?;
    let mut command = std::process::Command::new(&cargo);
    command
        .args(["build", "-p", "pglock-cli", "--bin", "pglock"])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(workspace)
        .stderr(std::process::Stdio::inherit());
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command.output()?;
    if !output.status.success() {
        return Err(format!("building the pglock command failed ({})", output.status).into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|line| {
            line.contains(r#""reason":"compiler-artifact""#)
                && line.contains(r#""name":"pglock""#)
                && line.contains(r#""kind":["bin"]"#)
        })
        .find_map(|line| {
            let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
            let end = start + line[start..].find('"')?;
            Some(std::path::PathBuf::from(&line[start..end]))
        })
        .ok_or_else(|| "cargo named no pglock executable".into())
}

/// Open [`SESSIONS`] sessions holding [`PER_SESSION`] advisory locks each, and one more that
/// waits for the first session's first lock; time `reps` runs of `pglock -d url` (default
/// listing, `COLUMNS=120`, output piped and read whole), after one unrecorded run.
///
/// # Errors
/// A session that cannot connect (the server's `max_connections`), or the command failing.
pub async fn cli(url: &str, reps: usize) -> Res<CliOutcome> {
    let binary = tokio::task::spawn_blocking(cli_binary).await??;
    let mut sessions = Vec::with_capacity(SESSIONS);
    for i in 0..SESSIONS as i64 {
        let mut conn = PgConnection::connect(url).await?;
        let first = SPREAD_BASE + i * PER_SESSION + 1;
        sqlx::query("SELECT pg_advisory_lock(k) FROM generate_series($1::int8, $2::int8) k")
            .bind(first)
            .bind(first + PER_SESSION - 1)
            .execute(&mut conn)
            .await?;
        sessions.push(conn);
    }
    let mut waiter_conn = PgConnection::connect(url).await?;
    let waiter = tokio::spawn(async move {
        let _ = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SPREAD_BASE + 1)
            .execute(&mut waiter_conn)
            .await;
        waiter_conn
    });
    let locks: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_locks")
        .fetch_one(&mut sessions[0])
        .await?;
    let run_once = |binary: std::path::PathBuf, url: String| async move {
        tokio::task::spawn_blocking(move || -> Res<(std::time::Duration, usize)> {
            let start = Instant::now();
            let output = std::process::Command::new(&binary)
                .args(["-d", &url])
                .env("COLUMNS", "120")
                .env_remove("DATABASE_URL")
                .stdin(std::process::Stdio::null())
                .output()?;
            let elapsed = start.elapsed();
            if !output.status.success() {
                return Err(
                    format!("pglock failed: {}", String::from_utf8_lossy(&output.stderr)).into(),
                );
            }
            Ok((elapsed, output.stdout.split(|&b| b == b'\n').count() - 1))
        })
        .await?
    };
    let mut outcome = CliOutcome {
        samples: Samples::default(),
        lines: 0,
        locks,
    };
    run_once(binary.clone(), url.to_owned()).await?;
    for _ in 0..reps {
        let (elapsed, lines) = run_once(binary.clone(), url.to_owned()).await?;
        outcome.samples.push(elapsed);
        outcome.lines = lines;
    }
    // Free the waiter first (its lock is the first session's), then close everyone.
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut sessions[0])
        .await?;
    let waiter_conn = waiter.await?;
    waiter_conn.close().await?;
    for conn in sessions {
        conn.close().await?;
    }
    Ok(outcome)
}
