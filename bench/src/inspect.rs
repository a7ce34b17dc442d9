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

// `pglock top`: one refresh on a server with 10,000 locks across 200 sessions.

/// Sessions holding locks for the `pglock top` row.
pub const TOP_SESSIONS: i64 = 200;
/// Advisory locks each of them holds: 10,000 in all.
pub const TOP_LOCKS_EACH: i64 = 50;
/// The keys of session `i` are `TOP_KEY_BASE + i * TOP_LOCKS_EACH + 1 ..= + TOP_LOCKS_EACH`.
const TOP_KEY_BASE: i64 = 5_000_000;
/// Sessions 180..190 wait for session 0; from 190 on, each waits for the one before it: a tree
/// of 21 sessions, 20 of them waiting, ten deep.
const TOP_FIRST_WAITER: i64 = 180;

/// The 200 sessions; dropped (closed) at the end.
pub struct Spread {
    holders: Vec<PgConnection>,
    waiters: Vec<tokio::task::JoinHandle<Res<PgConnection>>>,
}

/// The first key session `i` holds.
fn top_key(i: i64) -> i64 {
    TOP_KEY_BASE + i * TOP_LOCKS_EACH + 1
}

/// 200 sessions take 50 advisory locks each; the last 20 then wait, as a tree.
///
/// # Errors
/// When a session cannot connect or take its locks.
pub async fn hold_across(url: &str) -> Res<Spread> {
    let mut spread = Spread {
        holders: Vec::new(),
        waiters: Vec::new(),
    };
    for i in 0..TOP_SESSIONS {
        let mut conn = PgConnection::connect(url).await?;
        sqlx::query("SELECT pg_advisory_lock(k) FROM generate_series($1::int8, $2::int8) k")
            .bind(top_key(i))
            .bind(top_key(i) + TOP_LOCKS_EACH - 1)
            .execute(&mut conn)
            .await?;
        if i < TOP_FIRST_WAITER {
            spread.holders.push(conn);
            continue;
        }
        let blocker = if i < TOP_FIRST_WAITER + 10 { 0 } else { i - 1 };
        spread.waiters.push(tokio::spawn(async move {
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(top_key(blocker))
                .execute(&mut conn)
                .await?;
            Ok(conn)
        }));
    }
    Ok(spread)
}

impl Spread {
    /// Free session 0's locks (the waiters then get theirs one after another), close all.
    pub async fn release(mut self) -> Res<()> {
        for conn in &mut self.holders {
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut *conn)
                .await?;
        }
        for waiter in self.waiters {
            let mut conn = waiter.await??;
            sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        for conn in self.holders {
            conn.close().await?;
        }
        Ok(())
    }
}

/// What the `pglock top` row measured.
pub struct TopRefresh {
    pub samples: Samples,
    /// Of each refresh: the two queries and the snapshot built from their rows.
    pub read: Samples,
    /// Of each refresh: the state updated and the frame drawn.
    pub view: Samples,
    /// Locks and tree rows in the last refresh.
    pub locks: usize,
    pub tree_rows: usize,
}

/// One `pglock top` refresh as the view does it: both queries, the snapshot, and a frame drawn
/// (to ratatui's test backend at 120x40, so no terminal is needed), once unrecorded, then
/// `reps` times.
pub async fn top_refresh(url: &str, reps: usize) -> Res<TopRefresh> {
    use pglock_cli::top::{self, App, Source, Theme};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    let mut conn = PgConnection::connect(url).await?;
    let source = Source::new(pglock::locks(), pglock::blocked_locks());
    let waiting = (TOP_SESSIONS - TOP_FIRST_WAITER) as usize;
    let start = Instant::now();
    while source.snapshot(&mut conn).await?.waiting() < waiting {
        if start.elapsed().as_secs() > 30 {
            return Err(format!("the {waiting} waiting sessions never showed up").into());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut terminal = Terminal::new(TestBackend::new(120, 40))?;
    let mut app = App::new(0, std::time::Duration::from_secs(2));
    let (mut samples, mut read, mut view) =
        (Samples::default(), Samples::default(), Samples::default());
    for rep in 0..=reps {
        let start = Instant::now();
        let snapshot = source.snapshot(&mut conn).await?;
        let drawing = Instant::now();
        app.update(snapshot);
        terminal.draw(|frame| top::draw(frame, &app, Theme { colour: true }))?;
        if rep > 0 {
            samples.push(start.elapsed());
            read.push(drawing - start);
            view.push(drawing.elapsed());
        }
    }
    conn.close().await?;
    Ok(TopRefresh {
        samples,
        read,
        view,
        locks: app.snapshot().locks.len(),
        tree_rows: app.snapshot().tree.len(),
    })
}
