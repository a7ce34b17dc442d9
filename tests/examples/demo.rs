//! A short tour of pglock against a real Postgres: `cargo run -p pglock-tests --example demo`.
//!
//! With `RUST_LOG=pglock=debug`, pglock's events show on stderr. Uses `DATABASE_URL` when set; otherwise starts a throwaway Postgres (removed when cargo exits).

use std::time::{Duration, Instant};

use pglock::{Error, advisory, advisory_id};
use pglock_tests::TestDb;
use sqlx::{PgConnection, PgPool};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // `RUST_LOG=pglock=debug` shows pglock's spans and events on stderr as the demo runs.
    if let Some(filter) = std::env::var("RUST_LOG").ok().and_then(|directives| {
        directives
            .parse::<tracing_subscriber::filter::Targets>()
            .ok()
    }) {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(filter)
            .init();
    }
    let db = TestDb::new().await;
    println!("pglock demo on database {}\n", db.name());

    nightly_job_runs_once(&db).await?;
    a_migration_gets_its_lock(&db).await?;
    waiting_with_a_timeout(&db).await?;
    ids_django_agrees_with(&db).await?;
    a_transaction_level_lock(&db).await?;
    a_dropped_wait_leaves_nothing_behind(&db).await?;
    a_staggered_schedule_runs_once(&db).await?;
    a_leader_killed_and_replaced(&db).await?;
    Ok(())
}

/// The nightly job: every replica runs it; the lock lets exactly one send the digest.
#[pglock::advisory("nightly-digest", timeout = "0s", side_effect = Skip)]
async fn send_daily_digest(pool: &PgPool, replica: u32) -> Option<u32> {
    sqlx::query("SELECT pg_sleep(0.3)")
        .execute(pool)
        .await
        .ok()?;
    Some(replica)
}

async fn nightly_job_runs_once(db: &TestDb) -> Result<(), Error> {
    println!("1. Three replicas start the nightly job at the same moment:");
    let mut replicas = Vec::new();
    for replica in 1..=3 {
        // A pool each: separate sessions, as separate processes would have.
        let pool = db.pool_with(2).await;
        replicas.push(tokio::spawn(async move {
            (replica, send_daily_digest(&pool, replica).await)
        }));
    }
    for replica in replicas {
        let (replica, sent) = replica.await.expect("replica task");
        let what = if sent.is_some() {
            "sent the digest"
        } else {
            "skipped: another replica holds the lock"
        };
        println!("   replica {replica}: {what}");
    }
    println!();
    Ok(())
}

/// The migration: never wait more than 5 s for a lock, and end whatever holds one it needs.
#[pglock::prioritize(interval = "100ms")]
#[pglock::timeout("5s")]
async fn migrate(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
    let _ = pool; // prioritize's background task connects with this pool's settings
    sqlx::query("ALTER TABLE orders ADD COLUMN note text")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn a_migration_gets_its_lock(db: &TestDb) -> Result<(), Error> {
    println!("2. A migration needs a table that a long transaction holds:");
    sqlx::query("CREATE TABLE orders (id int)")
        .execute(db.pool())
        .await?;
    let mut report = db.pool().begin().await?;
    sqlx::query("SELECT count(*) FROM orders")
        .execute(&mut *report)
        .await?;
    println!("   a report read `orders` and sits idle in its transaction");
    let mut conn = db.connect().await;
    let started = Instant::now();
    migrate(&mut conn, db.pool()).await?;
    println!(
        "   the migration ran after {} ms: prioritize ended the report's session",
        started.elapsed().as_millis()
    );
    let lost = sqlx::query("SELECT 1").execute(&mut *report).await.is_err();
    println!("   the report's next statement fails: {lost}\n");
    Ok(())
}

/// A job waits at most 200 ms for a lock someone else holds, and says so.
async fn waiting_with_a_timeout(db: &TestDb) -> Result<(), Error> {
    println!("3. A job waits at most 200 ms for a lock held elsewhere:");
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
    println!("4. Lock ids as Postgres shows them (the same as django-pglock's):");
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
    println!("5. A transaction-level lock: committed when the body returns Ok:");
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
    println!("6. A wait cut off by tokio::time::timeout:");
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

/// A short job whose replicas' schedulers fire a little apart: `min_hold` keeps the lock past
/// the body, so the late replica skips instead of running the job again.
#[pglock::advisory("hourly-report", timeout = "0s", side_effect = Skip, min_hold = "2s")]
async fn hourly_report(pool: &PgPool) -> Option<()> {
    let _ = pool;
    Some(())
}

async fn a_staggered_schedule_runs_once(db: &TestDb) -> Result<(), Error> {
    println!("\n7. A 1 ms job; the second replica's scheduler fires 300 ms after the first:");
    let (first, second) = (db.pool_with(2).await, db.pool_with(2).await);
    let started = Instant::now();
    let ran = hourly_report(&first).await.is_some();
    println!(
        "   replica 1: {} (returned after {} ms; the lock is held on for min_hold)",
        if ran { "ran the job" } else { "skipped" },
        started.elapsed().as_millis()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran = hourly_report(&second).await.is_some();
    println!(
        "   replica 2: {}",
        if ran {
            "ran the job again"
        } else {
            "skipped: the job already ran this tick"
        }
    );
    pglock::drain().await;
    Ok(())
}

/// A singleton: three replicas campaign, one leads; its session is killed, another takes over.
async fn a_leader_killed_and_replaced(db: &TestDb) -> Result<(), Error> {
    println!("\n8. Three replicas campaign to run the outbox relay:");
    let mut replicas = Vec::new();
    for replica in 1..=3 {
        let pool = db.pool_with(1).await;
        let leadership = pglock::leader("outbox-relay")
            .heartbeat(Duration::from_millis(200))
            .run(&pool, move || async move {
                println!("   replica {replica}: leads; relaying the outbox");
                std::future::pending::<()>().await;
            });
        replicas.push(leadership);
    }
    let leader = loop {
        if let Some(i) = replicas.iter().position(|r| r.is_leader()) {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let pid: i32 = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND objid = $1::int8::oid",
    )
    .bind(i64::from(advisory_id("outbox-relay").1))
    .fetch_one(db.pool())
    .await?;
    let killed = Instant::now();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(db.pool())
        .await?;
    println!("   replica {}'s session is terminated", leader + 1);
    let next = loop {
        if let Some(i) = replicas.iter().position(|r| r.is_leader())
            && i != leader
        {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!(
        "   replica {} took over {} ms later (after a grace period of two heartbeats, so the \
         two relays never overlapped)",
        next + 1,
        killed.elapsed().as_millis()
    );
    let stepped = Instant::now();
    replicas.remove(next).step_down().await;
    let after = loop {
        if let Some(i) = replicas.iter().position(|r| r.is_leader()) {
            break i;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    println!(
        "   it steps down cleanly; another took over {} ms later",
        stepped.elapsed().as_millis()
    );
    let _ = after;
    for replica in replicas {
        replica.step_down().await;
    }
    Ok(())
}
