type Db = sqlx::PgPool;

#[pglock::timeout(1)]
async fn migrate(pool: &Db) -> Result<(), pglock::Error> {
    let _ = pool;
    Ok(())
}

fn main() {}
