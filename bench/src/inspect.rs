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
