//! A future that was `Send` stays `Send`, so attributed jobs can be spawned.
use pglock::Error;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

#[pglock::advisory("job", timeout = "0s", side_effect = Skip)]
async fn job(pool: &PgPool) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

#[pglock::advisory(xact)]
async fn with_tx(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut **tx).await?;
    Ok(())
}

#[pglock::prioritize(interval = "50ms")]
#[pglock::timeout("5s")]
async fn migrate(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let pool = PgPool::connect_lazy("postgres://nobody@localhost/none").unwrap();
        assert_send(&job(&pool));
        // Spawning needs a Send future; it is not run (there is no server).
        let spawned = tokio::spawn({
            let pool = pool.clone();
            async move { job(&pool).await }
        });
        drop(spawned);
    });
    let _ = (with_tx, migrate);
    fn _check(conn: &mut PgConnection, pool: &PgPool, tx: &mut Transaction<'_, Postgres>) {
        assert_send(&migrate(conn, pool));
        assert_send(&with_tx(tx));
    }
}
