#[pglock::advisory("job")]
async fn job(pool: &sqlx::PgPool) -> Result<(), String> {
    let _ = pool;
    Ok(())
}

fn main() {}
