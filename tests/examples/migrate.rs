//! A migration entrypoint that does not take the application down: a long transaction holds a
//! table the migration must alter, and the application keeps writing to it.
//!
//! 1. `retry_locks`: each attempt waits at most a short `lock_timeout` for the table, so the
//!    writers queued behind the `ALTER` wait at most that long; it rolls back, pauses, and tries
//!    again on an escalating schedule. Here the blocker never leaves, so it gives up and says so.
//! 2. `#[pglock::prioritize]` + `#[pglock::timeout]`: the entrypoint ends the sessions blocking
//!    it (the long transaction), and never waits more than 5 s for any lock.
//!
//! `cargo run -p pglock-tests --example migrate`: uses `DATABASE_URL` when set, else starts a
//! throwaway Postgres (removed when it exits).

use std::time::Instant;

use pglock::Error;
use pglock_tests::TestDb;
use sqlx::{PgConnection, PgPool};

/// One step, retried: at most 100 ms, then 200 ms, of waiting for the table's lock.
#[pglock::retry_locks(schedule = [("100ms", "50ms"), ("200ms", "100ms")])]
async fn add_note_politely(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("ALTER TABLE orders ADD COLUMN note text")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The entrypoint: end whatever blocks it, and never wait more than 5 s for any lock.
#[pglock::prioritize(interval = "100ms")]
#[pglock::timeout(lock = "5s")]
async fn migrate(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
    let _ = pool; // prioritize's background task connects with this pool's settings
    sqlx::query("ALTER TABLE orders ADD COLUMN note text")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let db = TestDb::new().await;
    println!("migration on database {}\n", db.name());
    sqlx::query("CREATE TABLE orders (id int)")
        .execute(db.pool())
        .await?;
    let mut report = db.pool().begin().await?;
    sqlx::query("SELECT count(*) FROM orders")
        .execute(&mut *report)
        .await?;
    println!("a report read `orders` and sits idle in its transaction\n");

    let mut conn = db.connect().await;
    let started = Instant::now();
    match add_note_politely(&mut conn).await {
        Err(error @ Error::LockTimeout { .. }) => println!(
            "retry_locks gave up after {} ms, never queueing writers for more than 200 ms:\n  {error}\n",
            started.elapsed().as_millis()
        ),
        other => println!("retry_locks: unexpected {other:?}\n"),
    }

    let started = Instant::now();
    migrate(&mut conn, db.pool()).await?;
    println!(
        "the prioritized migration ran after {} ms: it ended the report's session",
        started.elapsed().as_millis()
    );
    let lost = sqlx::query("SELECT 1").execute(&mut *report).await.is_err();
    println!("the report's next statement fails: {lost}");
    Ok(())
}
