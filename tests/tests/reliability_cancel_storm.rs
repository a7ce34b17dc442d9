//! Cancellation storms: thousands of waits on held locks, dropped at random moments by
//! `tokio::time::timeout`, `select!` and `JoinHandle::abort`, through the pool forms and a
//! borrowed pool connection. Afterwards no backend is still waiting, no lock was taken for
//! nobody, and every pooled connection is as it was (its `lock_timeout` untouched, no
//! transaction open, no lock held).
//!
//! `PGLOCK_RELIABILITY_STORM_WAITS` sets the number of waits (default 2000); `scripts/soak` runs
//! it bigger.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{advisory_locks, eventually, pid};
use pglock::{Error, advisory};
use pglock_tests::TestDb;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Executor as _, PgConnection};

/// Keys the storm waits on: all held by one session throughout.
const KEYS: u64 = 4;
/// The pool's own `lock_timeout` (set by its `after_connect`), which no wait may leave changed.
const POOL_LOCK_TIMEOUT: &str = "7s";
/// Waits running at once.
const CONCURRENCY: usize = 12;
/// Long enough for the server to notice every closed connection.
const SETTLE: Duration = Duration::from_secs(20);

/// A small deterministic generator (xorshift64*): random moments need no crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn waits() -> u64 {
    std::env::var("PGLOCK_RELIABILITY_STORM_WAITS")
        .ok()
        .and_then(|waits| waits.parse().ok())
        .unwrap_or(2000)
}

/// One wait on `key` in form `form`, never to be granted (the key is held elsewhere).
async fn wait(pool: sqlx::PgPool, form: u64, key: u64) -> Result<(), Error> {
    let lock = advisory(format!("storm-{key}"));
    match form {
        0 => lock.acquire(&pool).await.map(drop),
        1 => lock.wait_forever().acquire(&pool).await.map(drop),
        2 => lock
            .timeout(Duration::from_secs(600))
            .acquire(&pool)
            .await
            .map(drop),
        3 => lock.shared().acquire(&pool).await.map(drop),
        4 => lock.xact().scope(&pool, async |_| Ok::<_, Error>(())).await,
        5 => lock
            .try_scope(&pool, async |_| Ok::<_, Error>(()))
            .await
            .map(drop),
        // A borrowed pool connection: dropped mid-wait, it is closed, not pooled.
        _ => {
            let mut conn = pool.acquire().await?;
            lock.acquire(&mut conn).await.map(drop)
        }
    }
}

const FORMS: u64 = 7;

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_dropped_waits_leave_no_waiter_no_lock_and_clean_connections() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(60))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(concat!("SET lock_timeout = '", "7s", "'"))
                    .await
                    .map(drop)
            })
        })
        .connect_with(db.options())
        .await
        .unwrap();

    let mut holder: PgConnection = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    // Held by hand on one session, so that one connection holds every key.
    for key in 0..KEYS {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(common::bigint_key(&format!("storm-{key}")))
            .execute(&mut holder)
            .await
            .unwrap();
    }

    let total = waits();
    let slots = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut storm = tokio::task::JoinSet::new();
    let mut completed = 0u64;
    for n in 0..total {
        let permit = slots.clone().acquire_owned().await.unwrap();
        let (form, key) = (n % FORMS, rng.below(KEYS));
        let after = Duration::from_micros(rng.below(20_000));
        let how = rng.below(3);
        let pool = pool.clone();
        storm.spawn(async move {
            let _permit = permit;
            let outcome = match how {
                0 => tokio::time::timeout(after, wait(pool, form, key))
                    .await
                    .ok(),
                1 => tokio::select! {
                    out = wait(pool, form, key) => Some(out),
                    () = tokio::time::sleep(after) => None,
                },
                _ => {
                    let task = tokio::spawn(wait(pool, form, key));
                    tokio::time::sleep(after).await;
                    task.abort();
                    match task.await {
                        Ok(out) => Some(out),
                        Err(error) if error.is_cancelled() => None,
                        Err(error) => std::panic::resume_unwind(error.into_panic()),
                    }
                }
            };
            // A wait that ended on its own can only have failed: the keys stay held.
            if let Some(out) = outcome {
                assert!(out.is_err(), "form {form}: a held key was granted: {out:?}");
                return true;
            }
            false
        });
        while let Some(done) = storm.try_join_next() {
            completed += u64::from(done.unwrap());
        }
    }
    while let Some(done) = storm.join_next().await {
        completed += u64::from(done.unwrap());
    }
    eprintln!("{total} waits, {completed} ended by themselves");

    // No backend still waits: every dropped wait's session has ended or given up.
    eventually(SETTLE, "no backend waits on an advisory lock", || async {
        advisory_locks(observer).await.iter().all(|row| row.granted)
    })
    .await;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(observer)
    .await
    .unwrap();
    assert_eq!(
        waiting, 0,
        "pg_stat_activity shows backends waiting on locks"
    );

    // Only the holder holds anything; once it lets go, nothing abandoned takes the locks.
    let rows = advisory_locks(observer).await;
    assert!(rows.iter().all(|row| row.pid == holder_pid), "{rows:?}");
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut holder)
        .await
        .unwrap();
    for _ in 0..20 {
        let rows = advisory_locks(observer).await;
        assert!(
            rows.is_empty(),
            "an abandoned wait took a lock for nobody: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // Every connection the pool hands out is as the pool made it.
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(pool.acquire().await.unwrap());
    }
    for conn in &mut conns {
        assert_eq!(common::lock_timeout(conn).await, POOL_LOCK_TIMEOUT);
        // NULL (no such setting) on Postgres 13, where pglock never sets it.
        let check: String = sqlx::query_scalar(
            "SELECT coalesce(current_setting('client_connection_check_interval', true), '0')",
        )
        .fetch_one(&mut **conn)
        .await
        .unwrap();
        assert_eq!(check, "0");
        assert!(!sqlx::Connection::is_in_transaction(&**conn));
        let conn_pid = pid(conn).await;
        assert!(
            advisory_locks(observer)
                .await
                .iter()
                .all(|row| row.pid != conn_pid)
        );
    }
    // And they still lock and unlock.
    drop(conns);
    let guard = advisory("storm-0").nowait().acquire(&pool).await.unwrap();
    guard.release().await.unwrap();
}
