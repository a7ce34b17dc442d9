#[pglock::advisory("job", heartbeat = "5ms")]
async fn too_frequent(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    let _ = pool;
    Ok(())
}

#[pglock::advisory("job", min_hold = "soon")]
async fn not_a_duration(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    let _ = pool;
    Ok(())
}

fn main() {}
