//! The attributes where real job and migration code lives, against a real Postgres: methods of
//! two types and two impls of one trait method lock different keys by default; handles kept in
//! `self`, bound inside patterns or named through an alias lock on that very handle; an
//! `#[async_trait]` job can be spawned; a foreign attribute below pglock's sees its outcome.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{advisory_locks, pid};
use pglock::Error;
use pglock_tests::TestDb;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool};

/// The default id of a method: `<module path>::<Type>::<method>`.
fn method_key(ty: &str, method: &str) -> pglock::LockId {
    format!("{}::{ty}::{method}", module_path!()).into()
}

/// Whether `id` is held right now, and by which backend.
async fn holders(observer: &PgPool, id: &pglock::LockId) -> Vec<i32> {
    advisory_locks(observer)
        .await
        .into_iter()
        .filter(|row| row.granted && row.is_for(id))
        .map(|row| row.pid)
        .collect()
}

struct Mailer;
struct Billing;

/// What each job saw of the locks while it ran: the holders of its own default key.
type Seen = Vec<(String, Vec<i32>)>;

impl Mailer {
    #[pglock::advisory(timeout = "0s", side_effect = Skip, db = pool)]
    async fn run(&self, pool: &PgPool, observer: &PgPool, seen: &Mutex<Seen>) -> Result<(), Error> {
        let _ = pool;
        let mine = holders(observer, &method_key("Mailer", "run")).await;
        seen.lock().unwrap().push(("Mailer".into(), mine));
        Ok(())
    }
}

impl Billing {
    #[pglock::advisory(timeout = "0s", side_effect = Skip, db = pool)]
    async fn run(&self, pool: &PgPool, observer: &PgPool, seen: &Mutex<Seen>) -> Result<(), Error> {
        let _ = pool;
        let mine = holders(observer, &method_key("Billing", "run")).await;
        seen.lock().unwrap().push(("Billing".into(), mine));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_types_methods_of_one_name_lock_different_keys() {
    let db = TestDb::new().await;
    let seen = Mutex::new(Seen::new());
    // Mailer holds its lock while Billing runs: were the keys the same, Billing would skip.
    let mailer = db.pool_with(2).await;
    let mut mailer_key_holder = mailer.acquire().await.unwrap();
    let mailer_pid = pid(&mut mailer_key_holder).await;
    let held = pglock::advisory(method_key("Mailer", "run"))
        .acquire(&mut mailer_key_holder)
        .await
        .unwrap();
    Billing
        .run(&db.pool_with(2).await, db.pool(), &seen)
        .await
        .unwrap();
    Mailer.run(&mailer, db.pool(), &seen).await.unwrap();
    held.release().await.unwrap();

    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen.len(),
        1,
        "Mailer skipped (its key is held), Billing ran: {seen:?}"
    );
    assert_eq!(seen[0].0, "Billing");
    assert_eq!(seen[0].1.len(), 1, "Billing held its own key while it ran");
    assert_ne!(seen[0].1[0], mailer_pid);
    assert!(
        advisory_locks(db.pool()).await.is_empty(),
        "nothing left held"
    );
}

trait Job {
    async fn run(&self, pool: &PgPool, observer: &PgPool) -> Result<Vec<i32>, Error>;
}

struct Digest;
struct Cleanup;

impl Job for Digest {
    #[pglock::advisory(db = pool)]
    async fn run(&self, pool: &PgPool, observer: &PgPool) -> Result<Vec<i32>, Error> {
        let _ = pool;
        Ok(holders(observer, &method_key("Digest", "run")).await)
    }
}

impl Job for Cleanup {
    #[pglock::advisory(db = pool)]
    async fn run(&self, pool: &PgPool, observer: &PgPool) -> Result<Vec<i32>, Error> {
        let _ = pool;
        Ok(holders(observer, &method_key("Cleanup", "run")).await)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_impls_of_one_trait_method_lock_different_keys() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let digest = Digest.run(&pool, db.pool()).await.unwrap();
    let cleanup = Cleanup.run(&pool, db.pool()).await.unwrap();
    assert_eq!(digest.len(), 1, "Digest held its own key");
    assert_eq!(cleanup.len(), 1, "Cleanup held its own key");
    // And while Digest's key is held elsewhere, Cleanup still runs.
    let mut other = db.connect().await;
    let held = pglock::advisory(method_key("Digest", "run"))
        .acquire(&mut other)
        .await
        .unwrap();
    let cleanup = tokio::time::timeout(Duration::from_secs(5), Cleanup.run(&pool, db.pool()))
        .await
        .expect("Cleanup does not wait for Digest's lock")
        .unwrap();
    assert_eq!(cleanup.len(), 1);
    held.release().await.unwrap();
}

/// The application name of the backend that holds `id`.
async fn holder_application(observer: &PgPool, id: &pglock::LockId) -> Vec<String> {
    let pids = holders(observer, id).await;
    let mut names = Vec::new();
    for pid in pids {
        let name: String =
            sqlx::query_scalar("SELECT application_name FROM pg_stat_activity WHERE pid = $1")
                .bind(pid)
                .fetch_one(observer)
                .await
                .unwrap();
        names.push(name);
    }
    names
}

async fn named_pool(db: &TestDb, name: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(db.options().application_name(name))
        .await
        .unwrap()
}

struct Worker {
    pool: PgPool,
    observer: PgPool,
}

impl Worker {
    #[pglock::advisory("worker-job", db = self.pool)]
    async fn run(&self, decoy: &PgPool) -> Result<Vec<String>, Error> {
        let _ = decoy;
        Ok(holder_application(&self.observer, &"worker-job".into()).await)
    }
}

struct State<T>(T);

#[pglock::advisory("handler-job", db = pool)]
async fn handler(State(pool): State<PgPool>, observer: &PgPool) -> Result<Vec<String>, Error> {
    let _: PgPool = pool;
    Ok(holder_application(observer, &"handler-job".into()).await)
}

type DbConn = PgConnection;

#[pglock::advisory("aliased-job", db = conn)]
async fn aliased(conn: &mut DbConn) -> Result<i32, Error> {
    // The body has its connection back, and holds the lock on it.
    Ok(pid(conn).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn handles_in_self_in_patterns_and_behind_aliases_are_the_ones_locked_on() {
    let db = TestDb::new().await;
    let worker = Worker {
        pool: named_pool(&db, "worker-pool").await,
        observer: db.pool().clone(),
    };
    // `decoy` is a pool argument too: `db = self.pool` says which one, and it is that one.
    let decoy = named_pool(&db, "decoy-pool").await;
    assert_eq!(worker.run(&decoy).await.unwrap(), ["worker-pool"]);

    let state = State(named_pool(&db, "state-pool").await);
    assert_eq!(handler(state, db.pool()).await.unwrap(), ["state-pool"]);

    let mut conn = db.connect().await;
    let own = pid(&mut conn).await;
    let mut observer = db.connect().await;
    let during = aliased(&mut conn).await.unwrap();
    assert_eq!(
        during, own,
        "the lock's session is the aliased connection's"
    );
    assert!(
        common::free_for(&mut observer, "aliased-job").await,
        "and it was released"
    );
}

#[async_trait::async_trait]
trait DynJob: Send + Sync {
    async fn run(&self, pool: &PgPool, observer: &PgPool) -> Result<Option<Vec<i32>>, Error>;
}

struct Outbox;

#[async_trait::async_trait]
impl DynJob for Outbox {
    #[pglock::advisory(timeout = "0s", side_effect = Skip, db = pool)]
    async fn run(&self, pool: &PgPool, observer: &PgPool) -> Result<Option<Vec<i32>>, Error> {
        let _ = pool;
        Ok(Some(holders(observer, &method_key("Outbox", "run")).await))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_async_trait_job_locks_and_its_future_can_be_spawned() {
    let db = TestDb::new().await;
    let jobs: Vec<Arc<dyn DynJob>> = vec![Arc::new(Outbox)];
    let (pool, observer) = (db.pool_with(2).await, db.pool().clone());
    let job = jobs[0].clone();
    // `tokio::spawn` needs a `Send` future.
    let held = tokio::spawn(async move { job.run(&pool, &observer).await })
        .await
        .unwrap()
        .unwrap()
        .expect("ran");
    assert_eq!(held.len(), 1, "the job held its default key");

    // Skipped while another session holds it.
    let mut other = db.connect().await;
    let guard = pglock::advisory(method_key("Outbox", "run"))
        .acquire(&mut other)
        .await
        .unwrap();
    let skipped = jobs[0]
        .run(&db.pool_with(1).await, db.pool())
        .await
        .unwrap();
    assert_eq!(skipped, None, "skipped: the body did not run");
    guard.release().await.unwrap();
}

/// Events a foreign attribute records, captured by a test subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

// pglock's attributes expand first and wrap the body; a foreign attribute below them expands
// after, so it wraps pglock's layer and sees its outcome (here, `Busy`).
#[pglock::advisory("instrumented", timeout = "0s")]
#[tracing::instrument(err, skip_all)]
async fn instrumented(pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_attribute_below_pglocks_sees_its_outcome() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let db = TestDb::new().await;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut other = db.connect().await;
    let held = pglock::advisory("instrumented")
        .acquire(&mut other)
        .await
        .unwrap();
    let error = instrumented(db.pool()).await.unwrap_err();
    assert!(matches!(error, Error::Busy { .. }), "{error:?}");
    held.release().await.unwrap();

    let events = captured.0.lock().unwrap().clone();
    assert!(
        events
            .iter()
            .any(|event| event.contains("instrumented")
                && event.contains("another session holds it")),
        "#[instrument(err)] recorded pglock's Busy: {events:?}"
    );
}
