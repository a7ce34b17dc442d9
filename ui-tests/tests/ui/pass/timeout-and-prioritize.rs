//! `#[pglock::timeout]` and `#[pglock::prioritize]`, alone and stacked.
use pglock::Error;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

#[pglock::timeout(1)]
async fn seconds(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

#[pglock::timeout("1.5s")]
async fn text(conn: &mut PoolConnection<Postgres>) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut **conn).await?;
    Ok(())
}

#[pglock::timeout(None, db = tx)]
async fn no_limit(pool: &PgPool, tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut **tx).await?;
    Ok(())
}

// The background task connects with the pool argument's settings.
#[pglock::prioritize]
async fn protect(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

// Every key; the default pool for the background task.
#[pglock::prioritize(
    interval = "100ms",
    periodic = false,
    timeout = "5s",
    side_effect = Cancel,
    older_than = "30s",
    db = conn
)]
async fn every_key(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

#[pglock::prioritize(watcher = pool, side_effect = Terminate)]
async fn named_watcher(conn: &mut PgConnection, pool: PgPool) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

// Stacked: the attribute nearest the function runs outermost.
#[pglock::prioritize(interval = "100ms")]
#[pglock::timeout("5s")]
async fn migrate(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

#[pglock::advisory("migrations")]
#[pglock::timeout(5)]
async fn locked_migration(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

fn main() {
    let _ = (seconds, text, no_limit, protect, every_key, named_watcher, migrate, locked_migration);
}
