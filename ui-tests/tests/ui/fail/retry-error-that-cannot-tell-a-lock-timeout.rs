use sqlx::PgConnection;

#[derive(Debug)]
struct MyError;

impl From<pglock::Error> for MyError {
    fn from(_: pglock::Error) -> Self {
        MyError
    }
}

#[pglock::retry_locks]
async fn migrate(conn: &mut PgConnection) -> Result<(), MyError> {
    let _ = conn;
    Ok(())
}

fn main() {}
