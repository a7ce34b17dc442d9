//! `#[pglock::retry_locks]` on the handles it takes, with arguments it can give to each attempt
//! again, and its futures `Send` as the function's would be.
use std::time::Duration;

use pglock::Error;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

#[pglock::retry_locks]
async fn plain(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

#[pglock::retry_locks(
    schedule = [("100ms", "50ms"), ("1s", "5s")],
    deadline = "1m",
    finally = Wait,
    jitter = false,
)]
#[pglock::timeout(statement = "30s")]
async fn with_arguments(
    mut conn: &mut PgConnection,
    table: &str,
    rows: &mut Vec<i64>,
    batch: u32,
    mut seen: usize,
) -> Result<(), Error> {
    seen += 1;
    let _ = (table, batch, seen, &mut conn);
    rows.push(sqlx::query_scalar("SELECT 1::int8").fetch_one(&mut *conn).await?);
    Ok(())
}

#[pglock::retry_locks(finally = Prioritize)]
async fn in_a_transaction(
    tx: &mut Transaction<'_, Postgres>,
    pool: &PgPool,
) -> Result<(), Error> {
    let _ = pool;
    sqlx::query("SELECT 1").execute(&mut **tx).await?;
    Ok(())
}

struct Migrations {
    table: String,
}

impl Migrations {
    #[pglock::retry_locks(finally = Prioritize, watcher = pool)]
    async fn run(&self, conn: &mut PgConnection, pool: &PgPool) -> Result<usize, Error> {
        let _ = pool;
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(self.table.len())
    }
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    fn _check(conn: &mut PgConnection, pool: &PgPool, tx: &mut Transaction<'_, Postgres>) {
        assert_send(&plain(conn));
        let mut rows = Vec::new();
        assert_send(&with_arguments(conn, "orders", &mut rows, 10, 0));
        assert_send(&in_a_transaction(tx, pool));
        let migrations = Migrations { table: "t".into() };
        assert_send(&migrations.run(conn, pool));
        assert_send(&pglock::retry_locks().deadline(Duration::from_secs(1)).scope(
            pool,
            async |conn| {
                sqlx::query("SELECT 1").execute(&mut *conn).await?;
                Ok::<_, Error>(())
            },
        ));
    }
}
