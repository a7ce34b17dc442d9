//! A small job runner: three replicas of one service, each with its own scheduler and its own
//! pool, run the same jobs. Their clocks fire a little apart (staggered by up to 300 ms), as
//! real replicas' do. Each job runs once per tick across all of them:
//!
//! - `timeout = "0s", side_effect = Skip`: a replica that finds the lock taken skips the job
//!   (the function returns `None`) instead of waiting and running it a second time;
//! - `min_hold = "1s"`: the job takes 50 ms, but its lock is held on for a second after it
//!   started, so a replica whose clock fires 300 ms late still finds it taken.
//!
//! `cargo run -p pglock-tests --example job_runner`: uses `DATABASE_URL` when set, else starts
//! a throwaway Postgres (removed when it exits).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pglock_tests::TestDb;
use sqlx::PgPool;

/// The job: every replica's scheduler calls it each tick; one of them runs it.
#[pglock::advisory("send-reminders", timeout = "0s", side_effect = Skip, min_hold = "1s")]
async fn send_reminders(pool: &PgPool, replica: u32) -> Option<u32> {
    sqlx::query("SELECT pg_sleep(0.05)")
        .execute(pool)
        .await
        .ok()?;
    Some(replica)
}

#[tokio::main]
async fn main() {
    let db = TestDb::new().await;
    println!(
        "job runner on database {}: 3 replicas, 3 ticks of 2 s\n",
        db.name()
    );
    let runs = Arc::new(AtomicU32::new(0));
    let start = tokio::time::Instant::now();
    let mut replicas = Vec::new();
    for replica in 1..=3_u32 {
        let pool = db.pool_with(2).await;
        let runs = runs.clone();
        // Each replica's clock is a little off: 0, 150 and 300 ms late.
        let offset = Duration::from_millis(150 * u64::from(replica - 1));
        replicas.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(start + offset, Duration::from_secs(2));
            for tick in 1..=3 {
                ticks.tick().await;
                match send_reminders(&pool, replica).await {
                    Some(_) => {
                        runs.fetch_add(1, Ordering::SeqCst);
                        println!("tick {tick}: replica {replica} sent the reminders");
                    }
                    None => println!("tick {tick}: replica {replica} skipped (already done)"),
                }
            }
        }));
    }
    for replica in replicas {
        replica.await.expect("replica task");
    }
    pglock::drain().await;
    let runs = runs.load(Ordering::SeqCst);
    println!("\n{runs} runs in 3 ticks");
    assert_eq!(runs, 3, "each tick's job ran exactly once");
}
