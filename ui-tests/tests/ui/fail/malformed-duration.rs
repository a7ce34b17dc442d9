#[pglock::advisory("job", timeout = "5 sec")]
async fn job() -> Result<(), pglock::Error> {
    Ok(())
}

#[pglock::timeout("5")]
async fn no_unit(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

#[pglock::prioritize(interval = true)]
async fn not_a_duration(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

fn main() {}
