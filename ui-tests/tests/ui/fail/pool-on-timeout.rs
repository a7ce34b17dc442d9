#[pglock::timeout("5s")]
async fn timed(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    let _ = pool;
    Ok(())
}

#[pglock::prioritize]
async fn no_connection() -> Result<(), pglock::Error> {
    Ok(())
}

fn main() {}
