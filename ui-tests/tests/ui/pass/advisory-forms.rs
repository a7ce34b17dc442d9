//! Every form of `#[pglock::advisory]`, on every kind of handle.
use pglock::Error;
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

// The default id (module path and function name), the default pool, side_effect = Raise.
#[pglock::advisory]
async fn default_everything() -> Result<u32, Error> {
    Ok(1)
}

// A string id, no waiting, skipped when held elsewhere.
#[pglock::advisory("nightly-digest", timeout = "0s", side_effect = Skip)]
async fn nightly(pool: &PgPool) -> Option<u32> {
    let _ = pool;
    Some(2)
}

// An id computed from the arguments; shared; a float number of seconds.
#[pglock::advisory(format!("tenant-{tenant}"), shared, timeout = 1.5)]
async fn per_tenant(conn: &mut PgConnection, tenant: String) -> Result<String, Error> {
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(tenant)
}

// Transaction-level, waiting forever; the transaction is lent back as itself.
#[pglock::advisory(xact, timeout = None)]
async fn in_transaction(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut **tx).await?;
    Ok(())
}

// An integer id; Skip with Result<(), E>; a `mut` binding.
#[pglock::advisory(42_i64, side_effect = Skip, timeout = "250ms")]
async fn pooled(mut conn: &mut PoolConnection<Postgres>) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut **conn).await?;
    conn = conn;
    let _ = conn;
    Ok(())
}

// A pair id, an owned pool, keys written out, Skip with Result<Option<T>, E>.
#[pglock::advisory(id = (1, 2), shared = false, xact = false, side_effect = Skip, timeout = 2)]
async fn pair(pool: PgPool) -> Result<Option<usize>, Error> {
    Ok(Some(pool.size() as usize))
}

// Skip with (): nothing to return.
#[pglock::advisory("cleanup", side_effect = pglock::Skip, timeout = "2m")]
async fn cleanup() {}

// Two handles, one named.
#[pglock::advisory("named", db = conn)]
async fn named(pool: &PgPool, conn: &mut PgConnection) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

// `return` and `?` inside the body leave the body, not the lock.
#[pglock::advisory("early")]
async fn early(fail: bool) -> Result<&'static str, Error> {
    if fail {
        return Err(Error::NoDatabase);
    }
    let n: Result<u8, Error> = Ok(1);
    n?;
    Ok("done")
}

// An error type of the caller's own, with From<pglock::Error>.
#[derive(Debug)]
enum JobError {
    Lock(Error),
}

impl From<Error> for JobError {
    fn from(error: Error) -> Self {
        JobError::Lock(error)
    }
}

#[pglock::advisory("own-error")]
async fn own_error() -> Result<(), JobError> {
    Ok(())
}

fn main() {
    let _ = (default_everything, nightly, per_tenant, in_transaction, pooled, pair);
    let _ = (cleanup, named, early, own_error);
    let _ = JobError::Lock(Error::NoDatabase);
}
