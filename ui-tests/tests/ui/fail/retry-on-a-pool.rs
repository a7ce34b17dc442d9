use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};

// Each attempt is a transaction on one session: a pool has many.
#[pglock::retry_locks]
async fn on_a_pool(pool: &PgPool) -> Result<(), pglock::Error> {
    let _ = pool;
    Ok(())
}

// A pool connection could not be lent back under its own type inside a transaction.
#[pglock::retry_locks(db = conn)]
async fn on_a_pool_connection(conn: &mut PoolConnection<Postgres>) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

fn main() {}
