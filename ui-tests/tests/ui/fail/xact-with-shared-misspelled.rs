#[pglock::advisory("job", xact, sharde)]
async fn job(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock::Error> {
    let _ = tx;
    Ok(())
}

fn main() {}
