#[pglock::advisory("job", timeout = -1)]
async fn job() -> Result<(), pglock::Error> {
    Ok(())
}

#[pglock::timeout("-2s")]
async fn negative_text(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

fn main() {}
