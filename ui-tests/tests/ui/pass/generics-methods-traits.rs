//! The signature is kept as written: generics, where-clauses, receivers, trait impls, docs,
//! other attributes, `impl Trait` returns.
use std::fmt::Display;

use pglock::Error;
use sqlx::{PgConnection, PgPool};

/// Docs stay.
#[pglock::advisory(format!("generic-{id}"))]
#[allow(clippy::needless_lifetimes)]
pub(crate) async fn generic<'a, T>(pool: &'a PgPool, id: T) -> Result<T, Error>
where
    T: Display + Send + 'a,
{
    let _ = pool;
    Ok(id)
}

#[pglock::advisory("display", side_effect = Skip)]
async fn impl_trait(pool: &PgPool) -> Option<String> {
    let _ = pool;
    Some("x".to_owned())
}

#[pglock::advisory("returns-impl")]
async fn returns_impl(pool: &PgPool) -> Result<impl Display, Error> {
    let _ = pool;
    Ok(5)
}

struct Worker {
    pool: PgPool,
    name: String,
}

impl Worker {
    #[pglock::advisory(self.name.clone(), db = pool)]
    async fn run(&self, pool: &PgPool) -> Result<usize, Error> {
        let _ = pool;
        Ok(self.name.len() + self.pool.size() as usize)
    }

    #[pglock::timeout("2s")]
    async fn with_conn(&mut self, conn: &mut PgConnection) -> Result<(), Error> {
        self.name.push('!');
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }

    #[pglock::advisory("owned-self")]
    async fn consume(self) -> Result<String, Error> {
        Ok(self.name)
    }
}

trait Job {
    async fn run(&self, pool: &PgPool) -> Result<(), Error>;
}

impl Job for Worker {
    #[pglock::advisory("trait-job", side_effect = Skip)]
    async fn run(&self, pool: &PgPool) -> Result<(), Error> {
        let _ = (pool, &self.name);
        Ok(())
    }
}

fn main() {
    let _ = (generic::<u8>, impl_trait, returns_impl);
    let _ = Worker::run;
    let _ = Worker::with_conn;
    let _ = Worker::consume;
    let _ = <Worker as Job>::run;
}
