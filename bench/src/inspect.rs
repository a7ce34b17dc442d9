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
