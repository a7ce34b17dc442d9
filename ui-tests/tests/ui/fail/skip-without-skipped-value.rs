#[pglock::advisory("job", side_effect = Skip)]
async fn job(pool: &sqlx::PgPool) -> u32 {
    let _ = pool;
    1
}

#[pglock::advisory("job", side_effect = Skip)]
async fn result_of_a_value(pool: &sqlx::PgPool) -> Result<u32, pglock::Error> {
    let _ = pool;
    Ok(1)
}

fn main() {}
