//! A timed wait that is reported as not acquired has not acquired the lock.
//!
//! Postgres arms a timer for `lock_timeout` when a backend starts to wait. If the lock is granted
//! just as the timer fires, the backend gets the lock *and* a pending cancel, which it raises
//! ("canceling statement due to lock timeout", SQLSTATE 55P03) at the statement's next interrupt
//! check. A transaction-level lock goes away with the failed statement's (sub)transaction; a
//! session-level lock does not. These tests release a held lock at about the moment a timed
//! waiter gives up, many times over, and check after every "not acquired" that the waiter's
//! session holds nothing.

mod common;

use std::time::Duration;

use common::{advisory_locks, pid};
use pglock::{Error, advisory};
use pglock_tests::TestDb;
use sqlx::{Connection as _, PgConnection, PgPool};

/// The waiters' lock timeout, in milliseconds.
const TIMEOUT_MS: u64 = 5;

/// Attempts per handle kind; `PGLOCK_RELIABILITY_RACE_ROUNDS` overrides it.
fn rounds() -> u64 {
    std::env::var("PGLOCK_RELIABILITY_RACE_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(300)
}

/// The advisory locks the backend `pid` holds, as `pg_locks` rows.
async fn held_by(observer: &PgPool, pid: i32) -> Vec<common::LockRow> {
    advisory_locks(observer)
        .await
        .into_iter()
        .filter(|row| row.pid == pid && row.granted)
        .collect()
}

/// One attempt: `holder` holds `name` and lets go after `delay_us`, while the waiter (through
/// `attempt`) waits at most [`TIMEOUT_MS`]. Returns whether the waiter was told "not acquired".
async fn race(
    holder: &mut PgConnection,
    name: &str,
    delay_us: u64,
    attempt: impl Future<Output = Result<bool, Error>>,
) -> bool {
    let held = advisory(name).acquire(&mut *holder).await.unwrap();
    let release = async {
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        held.release().await.unwrap();
    };
    let (acquired, ()) = tokio::join!(attempt, release);
    !acquired.unwrap()
}

/// A spread of delays around the timeout, deterministic per round.
fn delay_us(round: u64) -> u64 {
    // 0.6x to 1.6x the timeout, in 97 steps.
    let ms = TIMEOUT_MS * 1000;
    ms * 6 / 10 + (round * 7919 % 97) * ms / 97
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_session_wait_on_a_borrowed_connection_holds_nothing() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let (mut timed_out, mut leaked) = (0, Vec::new());
    for round in 0..rounds() {
        for shared in [false, true] {
            let lock = advisory("race").timeout(Duration::from_millis(TIMEOUT_MS));
            let lock = if shared { lock.shared() } else { lock };
            let attempt = async {
                match lock.try_acquire(&mut waiter).await? {
                    Some(guard) => guard.release().await.map(|()| true),
                    None => Ok(false),
                }
            };
            if race(&mut holder, "race", delay_us(round), attempt).await {
                timed_out += 1;
                let held = held_by(db.pool(), waiter_pid).await;
                if !held.is_empty() {
                    leaked.push((round, shared, held));
                    // Clean up so that the next round starts from nothing.
                    sqlx::query("SELECT pg_advisory_unlock_all()")
                        .execute(&mut waiter)
                        .await
                        .unwrap();
                }
            }
        }
    }
    eprintln!("timed out {timed_out} times, leaked {} times", leaked.len());
    assert!(
        leaked.is_empty(),
        "a wait reported as timed out left its session holding the lock, {} of {timed_out} \
         times: {leaked:?}",
        leaked.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_session_wait_in_a_transaction_holds_nothing() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let (mut timed_out, mut leaked) = (0, 0);
    for round in 0..rounds() {
        let mut tx = waiter.begin().await.unwrap();
        let attempt = async {
            let lock = advisory("race").timeout(Duration::from_millis(TIMEOUT_MS));
            match lock.try_acquire(&mut tx).await? {
                Some(guard) => guard.release().await.map(|()| true),
                None => Ok(false),
            }
        };
        let not_acquired = race(&mut holder, "race", delay_us(round), attempt).await;
        tx.commit().await.unwrap();
        if not_acquired {
            timed_out += 1;
            if !held_by(db.pool(), waiter_pid).await.is_empty() {
                leaked += 1;
                sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut waiter)
                    .await
                    .unwrap();
            }
        }
    }
    eprintln!("timed out {timed_out} times, leaked {leaked} times");
    assert_eq!(
        leaked, 0,
        "a wait reported as timed out left its session holding the lock, {leaked} of \
         {timed_out} times"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_session_wait_on_a_pool_returns_a_connection_that_holds_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool_with(1).await;
    let mut holder = db.connect().await;
    let waiter_pid = pid(&mut pool.acquire().await.unwrap()).await;
    let (mut timed_out, mut leaked) = (0, 0);
    for round in 0..rounds() {
        let attempt = async {
            let lock = advisory("race").timeout(Duration::from_millis(TIMEOUT_MS));
            match lock.try_acquire(&pool).await? {
                Some(guard) => guard.release().await.map(|()| true),
                None => Ok(false),
            }
        };
        if race(&mut holder, "race", delay_us(round), attempt).await {
            timed_out += 1;
            // The pool's one connection, back in the pool: it must hold nothing.
            let mut conn = pool.acquire().await.unwrap();
            let conn_pid = pid(&mut conn).await;
            if !held_by(db.pool(), conn_pid).await.is_empty() {
                leaked += 1;
                sqlx::query("SELECT pg_advisory_unlock_all()")
                    .execute(&mut *conn)
                    .await
                    .unwrap();
            }
        }
    }
    let _ = waiter_pid;
    eprintln!("timed out {timed_out} times, leaked {leaked} times");
    assert_eq!(
        leaked, 0,
        "a pooled connection came back holding a lock its wait reported as timed out, \
         {leaked} of {timed_out} times"
    );
}
