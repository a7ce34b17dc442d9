#[pglock::advisory("job")]
async fn job(conn: &sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

fn main() {}
