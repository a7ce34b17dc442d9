#[pglock::advisory("job")]
async fn job(reader: &sqlx::PgPool, writer: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = (reader, writer);
    Ok(())
}

fn main() {}
