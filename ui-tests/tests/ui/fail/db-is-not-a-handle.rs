use std::sync::Arc;

struct AppState {
    db: sqlx::PgPool,
}

#[pglock::advisory("job", db = state)]
async fn job(state: Arc<AppState>) -> Result<(), pglock::Error> {
    let _ = &state.db;
    Ok(())
}

fn main() {}
