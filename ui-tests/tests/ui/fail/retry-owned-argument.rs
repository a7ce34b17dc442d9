use sqlx::PgConnection;

// The body runs again on each attempt: an owned `String` would be gone after the first.
#[pglock::retry_locks]
async fn rename(conn: &mut PgConnection, new_name: String) -> Result<(), pglock::Error> {
    let _ = (conn, new_name);
    Ok(())
}

fn main() {}
