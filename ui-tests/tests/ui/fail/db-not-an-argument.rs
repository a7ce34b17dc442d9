#[pglock::advisory("job", db = connection)]
async fn job(conn: &mut sqlx::PgConnection, n: u32) -> Result<u32, pglock::Error> {
    let _ = conn;
    Ok(n)
}

fn main() {}
