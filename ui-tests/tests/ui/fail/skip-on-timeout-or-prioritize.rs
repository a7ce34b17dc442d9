#[pglock::timeout(1, side_effect = Skip)]
async fn timed(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

#[pglock::prioritize(side_effect = Skip)]
async fn protected(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

fn main() {}
