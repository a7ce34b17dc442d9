#[pglock::timeout("0.5ms")]
async fn too_short(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

#[pglock::advisory("job", timeout = "600h")]
async fn too_long() -> Result<(), pglock::Error> {
    Ok(())
}

#[pglock::timeout]
async fn missing(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

fn main() {}
