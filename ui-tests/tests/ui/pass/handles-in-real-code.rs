//! Where real job and migration code keeps its handles: pools in `self` and in shared state,
//! bindings inside patterns, `Arc<PgPool>`, aliases named with `db = ...`, trait impls (native
//! and `#[async_trait]`), default trait methods, and ids made of owned arguments.
use std::sync::Arc;

use pglock::Error;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

struct AppState {
    db: PgPool,
}

struct State<T>(T);

struct Worker {
    pool: PgPool,
    shared: Arc<PgPool>,
    state: AppState,
}

impl Worker {
    #[pglock::advisory(timeout = "0s", side_effect = Skip, db = self.pool)]
    async fn run(&self) -> Result<(), Error> {
        Ok(())
    }

    #[pglock::advisory("nested", db = &self.state.db)]
    async fn nested(&self) -> Result<usize, Error> {
        Ok(self.state.db.size() as usize)
    }

    #[pglock::advisory("arc", db = self.shared)]
    async fn shared(&self) -> Result<(), Error> {
        Ok(())
    }

    #[pglock::advisory("cloned", db = self.pool.clone())]
    async fn cloned(&self) -> Result<(), Error> {
        Ok(())
    }

    // An associated function without a receiver: its default id is `<module>::<fn>`.
    #[pglock::advisory]
    async fn associated(pool: &PgPool) -> Result<(), Error> {
        let _ = pool;
        Ok(())
    }
}

#[pglock::advisory("pattern", db = pool)]
async fn handler(State(pool): State<PgPool>) -> Result<(), Error> {
    let _: PgPool = pool;
    Ok(())
}

#[pglock::advisory("arc-arg")]
async fn arc_arg(pool: Arc<PgPool>) -> Result<(), Error> {
    let _: Arc<PgPool> = pool;
    Ok(())
}

type DbConn = PgConnection;

#[pglock::advisory("aliased", db = conn)]
async fn aliased(conn: &mut DbConn) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(())
}

// The id is taken by reference: `name` is still the caller's afterwards.
#[pglock::advisory(name)]
async fn owned_id(pool: &PgPool, name: String) -> Result<String, Error> {
    let _ = pool;
    Ok(name)
}

#[pglock::advisory(format!("tenant-{tenant}"))]
async fn formatted(pool: &PgPool, tenant: String) -> Result<String, Error> {
    let _ = pool;
    Ok(tenant)
}

trait Job {
    async fn run(&self, pool: &PgPool) -> Result<(), Error>;

    // A default method: its default id names the implementing type.
    #[pglock::advisory(side_effect = Skip)]
    async fn once(&self, pool: &PgPool) -> Result<(), Error> {
        self.run(pool).await
    }
}

impl Job for Worker {
    #[pglock::advisory]
    async fn run(&self, pool: &PgPool) -> Result<(), Error> {
        let _ = pool;
        Ok(())
    }
}

#[async_trait::async_trait]
trait DynJob: Send + Sync {
    async fn run(&self, pool: &PgPool) -> Result<(), Error>;

    #[pglock::advisory("dyn-default", side_effect = Skip)]
    async fn once(&self, pool: &PgPool) -> Result<(), Error> {
        self.run(pool).await
    }
}

#[async_trait::async_trait]
impl DynJob for Worker {
    #[pglock::advisory(timeout = "0s", side_effect = Skip, db = self.pool)]
    async fn run(&self, pool: &PgPool) -> Result<(), Error> {
        let _ = (pool, &self.shared);
        Ok(())
    }
}

struct Migration;

#[async_trait::async_trait]
impl DynJob for Migration {
    #[pglock::advisory]
    async fn run(&self, pool: &PgPool) -> Result<(), Error> {
        let _ = pool;
        Ok(())
    }
}

// Stacked in reading order on a transaction.
#[pglock::timeout(1)]
#[pglock::advisory("stacked", xact)]
async fn stacked(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(&mut **tx).await?;
    Ok(())
}

fn assert_send<T: Send>(_: T) {}

// The futures stay `Send`, so they can be spawned.
#[allow(dead_code)]
fn futures_are_send(pool: PgPool, worker: Worker, mut conn: PgConnection) {
    assert_send(handler(State(pool.clone())));
    assert_send(Worker::associated(&pool));
    assert_send(aliased(&mut conn));
    assert_send(async move { DynJob::run(&worker, &pool).await });
}

fn main() {
    let _ = (handler, arc_arg, aliased, owned_id, formatted, stacked);
    let _ = (Worker::run, Worker::nested, Worker::shared, Worker::cloned, Worker::associated);
    let _ = <Worker as Job>::once;
    let jobs: Vec<Box<dyn DynJob>> = vec![Box::new(Migration)];
    let _ = jobs;
}
