use sqlx::PgConnection;

#[pglock::retry_locks(schedule = ["100ms"], finally = Later, watcher = pool)]
async fn migrate(conn: &mut PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

#[pglock::retry_locks(schedule = [("100ms", "1s")], schedule = [("1s", "1s")], attempts = 3)]
async fn twice(conn: &mut PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

#[pglock::timeout(lock = "1s", statement = "0s", lock = "2s")]
async fn timeouts(conn: &mut PgConnection) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

fn main() {}
