//! pglock's metrics as Prometheus sees them: `cargo run -p pglock-tests --example metrics`.
//!
//! A service installs `metrics-exporter-prometheus` (here without its HTTP listener; a real
//! service calls `PrometheusBuilder::new().install()` and is scraped on port 9000), and pglock,
//! built with its `metrics` feature, records through the `metrics` facade. Uses `DATABASE_URL`
//! when set; otherwise starts a throwaway Postgres.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use pglock::Error;
use pglock_tests::TestDb;
use sqlx::PgPool;

/// Every replica runs it; one at a time does the work.
#[pglock::advisory("nightly-digest", timeout = "0s", side_effect = Skip)]
async fn send_daily_digest(pool: &PgPool) -> Option<()> {
    let _ = pool;
    tokio::time::sleep(Duration::from_millis(100)).await;
    Some(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .expect("the only recorder");
    let db = TestDb::new().await;

    // Three replicas fire at once: one runs, two skip (busy).
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let pool = db.pool_with(2).await;
        replicas.push(tokio::spawn(async move { send_daily_digest(&pool).await }));
    }
    for replica in replicas {
        replica.await.expect("replica");
    }
    // A wait that times out.
    let held = pglock::advisory("report").acquire(db.pool()).await?;
    let timed_out = pglock::advisory("report")
        .function("reports::monthly")
        .timeout(Duration::from_millis(50))
        .acquire(db.pool())
        .await;
    assert!(matches!(timed_out, Err(Error::LockTimeout { .. })));
    held.release().await?;

    print!("{}", prometheus.render());
    Ok(())
}
