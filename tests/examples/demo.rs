//! A short tour of pglock against a real Postgres: `cargo run -p pglock-tests --example demo`.
//!
//! Uses `DATABASE_URL` when set; otherwise starts a throwaway Postgres (removed when cargo exits).

use std::time::{Duration, Instant};

use pglock::{Error, advisory, advisory_id};
use pglock_tests::TestDb;
use sqlx::PgPool;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = TestDb::new().await;
    println!("pglock demo on database {}\n", db.name());

    nightly_job_runs_once(&db).await?;
    waiting_with_a_timeout(&db).await?;
    ids_django_agrees_with(&db).await?;
    a_transaction_level_lock(&db).await?;
    a_dropped_wait_leaves_nothing_behind(&db).await?;
    Ok(())
}

/// Three replicas start the nightly job at once; the lock lets one run it and the others skip.
async fn nightly_job_runs_once(db: &TestDb) -> Result<(), Error> {
    println!("1. Three replicas start the nightly job at the same moment:");
    let mut replicas = Vec::new();
    for replica in 1..=3 {
        let pool = db.pool_with(2).await;
        replicas.push(tokio::spawn(async move {
            let ran = advisory("nightly-digest")
                .nowait()
                .try_scope(&pool, async |conn| {
                    sqlx::query("SELECT pg_sleep(0.3)")
                        .execute(&mut *conn)
                        .await?;
                    Ok::<_, Error>(())
                })
                .await?;
            Ok::<_, Error>((replica, ran.is_some()))
        }));
    }
    for replica in replicas {
        let (replica, ran) = replica.await.expect("replica task")?;
        let what = if ran {
            "ran the job"
        } else {
            "skipped: another replica holds the lock"
        };
        println!("   replica {replica}: {what}");
    }
    println!();
    Ok(())
}

/// A migration waits at most 200 ms for a lock someone else holds, and says so.
async fn waiting_with_a_timeout(db: &TestDb) -> Result<(), Error> {
    println!("2. A migration waits at most 200 ms for a lock held elsewhere:");
    let mut holder = db.connect().await;
    let held = advisory("schema").acquire(&mut holder).await?;
    let started = Instant::now();
    match advisory("schema")
        .timeout(Duration::from_millis(200))
        .acquire(db.pool())
        .await
    {
        Err(error @ Error::LockTimeout { .. }) => {
            println!("   after {} ms: {error}", started.elapsed().as_millis());
        }
        other => println!("   unexpected: {other:?}"),
    }
    let timeout: String = sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(db.pool())
        .await?;
    println!("   the pool's lock_timeout afterwards: {timeout:?} (nothing left behind)");
    held.release().await?;
    println!();
    Ok(())
}

/// String ids hash as django-pglock's do, so Django and Rust services exclude each other.
async fn ids_django_agrees_with(db: &TestDb) -> Result<(), Error> {
    println!("3. Lock ids as Postgres shows them (the same as django-pglock's):");
    let guard = advisory("hello").acquire(db.pool()).await?;
    let (classid, objid): (i64, i64) = sqlx::query_as(
        "SELECT classid::int8, objid::int8 FROM pg_locks \
         WHERE locktype = 'advisory' AND granted LIMIT 1",
    )
    .fetch_one(db.pool())
    .await?;
    println!("   advisory_id(\"hello\") = {:?}", advisory_id("hello"));
    println!("   pg_locks shows           ({classid}, {objid})");
    guard.release().await?;
    println!();
    Ok(())
}

/// A transaction-level lock on a pool: pglock opens the transaction and ends it.
async fn a_transaction_level_lock(db: &TestDb) -> Result<(), Error> {
    println!("4. A transaction-level lock: committed when the body returns Ok:");
    sqlx::query("CREATE TABLE IF NOT EXISTS invoices (n int)")
        .execute(db.pool())
        .await?;
    let pool: &PgPool = db.pool();
    let n = advisory("invoice-numbers")
        .xact()
        .scope(pool, async |conn| {
            let next: i32 = sqlx::query_scalar("SELECT coalesce(max(n), 0) + 1 FROM invoices")
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query("INSERT INTO invoices VALUES ($1)")
                .bind(next)
                .execute(&mut *conn)
                .await?;
            Ok::<_, Error>(next)
        })
        .await?;
    println!("   issued invoice {n}; the lock ended with the transaction\n");
    Ok(())
}

/// Cutting off a wait with `tokio::time::timeout` leaves no backend waiting for nobody.
async fn a_dropped_wait_leaves_nothing_behind(db: &TestDb) -> Result<(), Error> {
    println!("5. A wait cut off by tokio::time::timeout:");
    let mut holder = db.connect().await;
    let held = advisory("report").acquire(&mut holder).await?;
    let cut = tokio::time::timeout(
        Duration::from_millis(100),
        advisory("report").acquire(db.pool()),
    );
    assert!(cut.await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
    )
    .fetch_one(db.pool())
    .await?;
    println!("   sessions still waiting on the server: {waiting}");
    held.release().await?;
    Ok(())
}
