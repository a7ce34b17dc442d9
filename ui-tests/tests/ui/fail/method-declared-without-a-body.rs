trait Job {
    #[pglock::advisory("job")]
    async fn run(&self, pool: &sqlx::PgPool) -> Result<(), pglock::Error>;
}

fn main() {}
