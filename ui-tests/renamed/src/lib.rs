//! pglock under another name (`pglock2 = { package = "pglock", .. }`, and no `pglock`): every
//! attribute takes `crate = ...`, and stacked attributes are recognised under the new name. It
//! passes if it compiles (`cargo build --workspace --all-targets`, `cargo test`): any path the
//! expansion wrote as `::pglock` would not resolve here. (A package of its own, since Cargo
//! refuses one package twice under two names, and the UI tests need `pglock`.)
#![allow(dead_code)]
use pglock2::Error;
use sqlx::{PgConnection, PgPool};

#[pglock2::advisory("renamed", timeout = "0s", side_effect = Skip, crate = pglock2)]
async fn job(pool: &PgPool) -> Option<u32> {
    let _ = pool;
    Some(1)
}

// `crate` first, then the lock id by key; stacked under the renamed path, the top attribute's
// `crate` covers the ones below it.
#[pglock2::prioritize(crate = ::pglock2)]
#[pglock2::timeout(lock = "5s")]
#[pglock2::advisory(id = "migrate", db = conn, crate = pglock2)]
async fn migrate(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

#[pglock2::retry_locks(schedule = [("1s", "0s")], crate = pglock2)]
async fn step(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

// The default pool, reached through the renamed path too.
#[pglock2::advisory(crate = pglock2)]
async fn default_pool() -> Result<(), Error> {
    Ok(())
}

/// The futures are what users would spawn: they stay `Send`.
pub fn spawnable(pool: PgPool) {
    fn send<T: Send>(_: T) {}
    send(async move { job(&pool).await });
}
