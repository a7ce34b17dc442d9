//! Scheduled jobs run once per tick: with `min_hold`, a lock outlives a short body until the
//! hold is over, so replicas whose schedules fire a little apart run the job once; after the
//! hold it runs again. Nothing is left behind, and `drain` releases held locks at once.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{advisory_locks, eventually, lock_timeout};
use pglock::Error;
use pglock_tests::TestDb;
use sqlx::{PgConnection, PgPool};

#[pglock::advisory("digest", timeout = "0s", side_effect = Skip, min_hold = "1s")]
async fn digest(pool: &PgPool, sent: &AtomicUsize) -> Result<(), Error> {
    let _ = pool;
    sent.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn staggered_firings_within_min_hold_run_the_job_once() {
    let db = TestDb::new().await;
    let sent = Arc::new(AtomicUsize::new(0));
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(db.pool_with(2).await);
    }
    // The replicas' schedulers fire 300 ms apart; the body takes no time at all.
    let first = Instant::now();
    for replica in &replicas {
        let called = Instant::now();
        digest(replica, &sent).await.unwrap();
        assert!(
            called.elapsed() < Duration::from_millis(900),
            "the call returns when the body ends, not when the hold does"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(sent.load(Ordering::SeqCst), 1, "one digest for one tick");

    // The next tick, after the hold: it runs again.
    tokio::time::sleep(Duration::from_millis(1200).saturating_sub(first.elapsed())).await;
    eventually(Duration::from_secs(5), "the hold ended", async || {
        advisory_locks(db.pool()).await.is_empty()
    })
    .await;
    digest(&replicas[1], &sent).await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 2);

    // Nothing is left behind: no lock once the holds are over, and the pools' connections are
    // clean.
    eventually(Duration::from_secs(5), "every hold ended", async || {
        advisory_locks(db.pool()).await.is_empty()
    })
    .await;
    for replica in &replicas {
        let mut conn = replica.acquire().await.unwrap();
        assert_eq!(lock_timeout(&mut conn).await, "0");
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(held, 0);
    }
}

#[pglock::advisory("nightly", min_hold = "60s")]
async fn nightly(pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn drain_releases_held_locks_at_once() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    nightly(&pool).await.unwrap();
    assert_eq!(
        advisory_locks(db.pool()).await.len(),
        1,
        "held in the background after the call returned"
    );
    pglock::drain().await;
    assert!(
        advisory_locks(db.pool()).await.is_empty(),
        "released by the time drain returns"
    );
}

#[pglock::advisory("borrowed", min_hold = "500ms")]
async fn on_a_borrowed_connection(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn on_a_borrowed_connection_min_hold_delays_the_return() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let called = Instant::now();
    on_a_borrowed_connection(&mut conn).await.unwrap();
    assert!(called.elapsed() >= Duration::from_millis(500));
    assert!(
        advisory_locks(db.pool()).await.is_empty(),
        "and released before returning"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_form_holds_too_and_a_long_body_releases_at_its_end() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let ran = pglock::advisory("runtime-hold")
        .nowait()
        .min_hold(Duration::from_millis(300))
        .try_run(&pool, async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert_eq!(ran, Some(()));
    // The body outlived the hold: released at its end, not later.
    assert!(advisory_locks(db.pool()).await.is_empty());
}
