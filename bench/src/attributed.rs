//! The attribute forms measured: each wraps an empty body, so what is timed is the lock and the
//! code the attribute generates around it. The runtime forms they are compared with are in
//! `latency.rs`.

use pglock::Error;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Keys of the attribute forms (no other measurement uses them).
pub const KEY_DEFAULT: i64 = 2001;
pub const KEY_FOREVER: i64 = 2002;
pub const KEY_TRY: i64 = 2003;
pub const KEY_TIMED: i64 = 2004;
pub const KEY_SHARED: i64 = 2005;
pub const KEY_XACT: i64 = 2006;
pub const KEY_POOL: i64 = 2007;

#[pglock::advisory(KEY_DEFAULT)]
pub async fn wait_default(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

#[pglock::advisory(KEY_FOREVER, timeout = None)]
pub async fn wait_forever(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

#[pglock::advisory(KEY_TRY, timeout = "0s")]
pub async fn try_once(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

#[pglock::advisory(KEY_TIMED, timeout = "5s")]
pub async fn timed(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

#[pglock::advisory(KEY_SHARED, shared)]
pub async fn shared(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

#[pglock::advisory(KEY_XACT, xact)]
pub async fn xact(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory(KEY_POOL)]
pub async fn on_pool(pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    Ok(())
}
