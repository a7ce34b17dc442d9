type DbConn = sqlx::PgConnection;

// An aliased connection is never passed over for the default pool in silence.
#[pglock::advisory("job")]
async fn one(conn: &mut DbConn) -> Result<(), pglock::Error> {
    let _ = conn;
    Ok(())
}

// Two handles pglock cannot see: each is pointed at.
#[pglock::advisory("job")]
async fn two(reader: &mut DbConn, writer: &mut DbConn) -> Result<(), pglock::Error> {
    let _ = (reader, writer);
    Ok(())
}

// A handle inside a pattern.
struct State<T>(T);

#[pglock::advisory("job")]
async fn pattern(State(pool): State<sqlx::PgPool>) -> Result<(), pglock::Error> {
    let _ = pool;
    Ok(())
}

fn main() {}
