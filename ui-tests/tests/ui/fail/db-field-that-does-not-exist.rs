use sqlx::PgPool;

struct Worker {
    pool: PgPool,
}

impl Worker {
    #[pglock::advisory("job", db = self.nofield)]
    async fn run(&self) -> Result<(), pglock::Error> {
        let _ = &self.pool;
        Ok(())
    }
}

fn main() {}
