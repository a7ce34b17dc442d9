#[pglock::advisory("job")]
async fn job(pool: &sqlx::PgPool) -> u32 {
    let _ = pool;
    1
}

#[pglock::advisory("job")]
async fn no_return_type(pool: &sqlx::PgPool) {
    let _ = pool;
}

fn main() {}
