//! `pglock::retry_locks`: a migration step runs in a transaction per attempt under a short
//! `lock_timeout`; attempts that time out are rolled back and retried on a schedule, then the
//! final step chosen runs; the deadline bounds it all.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{backend_exists, eventually, exec, lock_timeout, pid};
use pglock::{Error, Finally, Step, prioritize, retry_locks};
use pglock_tests::TestDb;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `n` steps of a short timeout and pause, so that a test sees several attempts quickly.
fn steps(n: usize) -> Vec<Step> {
    vec![Step::new(ms(100), ms(100)); n]
}

/// `orders` to migrate, and `applied`, where each attempt writes its number before the `ALTER`.
async fn tables(db: &TestDb) {
    sqlx::raw_sql(
        "CREATE TABLE orders (id int); CREATE TABLE applied (attempt int NOT NULL UNIQUE)",
    )
    .execute(db.pool())
    .await
    .unwrap();
}

/// A session holding a SHARE lock on `orders` (what a long report or `CREATE INDEX` holds), idle
/// in its transaction: `ALTER TABLE` waits for it.
async fn blocker(pool: &PgPool) -> (Transaction<'static, Postgres>, i32) {
    let mut tx = pool.begin().await.unwrap();
    let blocker_pid = pid(&mut tx).await;
    exec(&mut tx, "LOCK TABLE orders IN SHARE MODE").await;
    (tx, blocker_pid)
}

/// The migration step: record the attempt, then the `ALTER` that waits for the blocker.
async fn migrate(
    conn: &mut PgConnection,
    attempts: &Mutex<Vec<(Instant, String)>>,
) -> Result<(), Error> {
    let setting = lock_timeout(conn).await;
    let number = {
        let mut attempts = attempts.lock().unwrap();
        attempts.push((Instant::now(), setting));
        attempts.len() as i32
    };
    sqlx::query("INSERT INTO applied VALUES ($1)")
        .bind(number)
        .execute(&mut *conn)
        .await?;
    sqlx::query("ALTER TABLE orders ADD COLUMN note text")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn applied(pool: &PgPool) -> Vec<i32> {
    sqlx::query_scalar("SELECT attempt FROM applied ORDER BY attempt")
        .fetch_all(pool)
        .await
        .unwrap()
}

async fn migrated(pool: &PgPool) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns \
         WHERE table_name = 'orders' AND column_name = 'note')",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_succeed_on_the_first_attempt_after_the_blocker_commits() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (blocking, _) = blocker(db.pool()).await;
    let committed = tokio::spawn(async move {
        tokio::time::sleep(ms(700)).await;
        blocking.commit().await.unwrap();
        Instant::now()
    });

    let mut conn = db.connect().await;
    exec(&mut conn, "SET lock_timeout = '9s'").await;
    let attempts = Mutex::new(Vec::new());
    retry_locks()
        .schedule(steps(20))
        .jitter(false)
        .scope(&mut conn, async |conn| migrate(conn, &attempts).await)
        .await
        .unwrap();
    let committed_at = committed.await.unwrap();

    let attempts = attempts.into_inner().unwrap();
    assert!(
        attempts.len() >= 2,
        "the blocker made attempts time out: {attempts:?}"
    );
    let after_commit = attempts.iter().filter(|(at, _)| *at > committed_at).count();
    assert!(
        after_commit <= 1,
        "no attempt after the commit was needed but the first: {attempts:?}"
    );
    assert!(
        attempts.iter().all(|(_, setting)| setting == "100ms"),
        "each attempt ran under its step's lock_timeout: {attempts:?}"
    );
    // Only the last attempt's row is there: the others were rolled back with their attempt.
    assert_eq!(applied(db.pool()).await, [attempts.len() as i32]);
    assert!(migrated(db.pool()).await);
    // The attempts' lock_timeout was transaction-local: the session's own value is back.
    assert_eq!(lock_timeout(&mut conn).await, "9s");
}

#[tokio::test(flavor = "multi_thread")]
async fn finally_fail_returns_the_last_lock_timeout_after_the_schedule() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (_blocking, blocker_pid) = blocker(db.pool()).await;
    let attempts = Mutex::new(Vec::new());
    let result = retry_locks()
        .schedule(steps(3))
        .scope(db.pool(), async |conn| migrate(conn, &attempts).await)
        .await;
    assert!(
        matches!(result, Err(Error::LockTimeout { .. })),
        "{result:?}"
    );
    assert_eq!(attempts.lock().unwrap().len(), 3, "one run per step");
    assert_eq!(
        applied(db.pool()).await,
        [0; 0],
        "every attempt rolled back"
    );
    assert!(!migrated(db.pool()).await);
    assert!(
        backend_exists(db.pool(), blocker_pid).await,
        "nobody was ended"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn finally_wait_makes_one_last_attempt_without_a_timeout() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (blocking, _) = blocker(db.pool()).await;
    let committing = tokio::spawn(async move {
        tokio::time::sleep(ms(1000)).await;
        blocking.commit().await.unwrap();
    });
    let attempts = Mutex::new(Vec::new());
    retry_locks()
        .schedule(steps(2))
        .finally(Finally::Wait)
        .scope(db.pool(), async |conn| migrate(conn, &attempts).await)
        .await
        .unwrap();
    committing.await.unwrap();
    let settings: Vec<String> = attempts
        .lock()
        .unwrap()
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    assert_eq!(settings, ["100ms", "100ms", "0"]);
    assert_eq!(applied(db.pool()).await, [3]);
    assert!(migrated(db.pool()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn finally_prioritize_ends_the_blocker_on_the_last_attempt_only() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (_blocking, blocker_pid) = blocker(db.pool()).await;
    let attempts = Mutex::new(Vec::new());
    let alive_during_retries = Arc::new(Mutex::new(Vec::new()));
    let pool = db.pool().clone();
    let seen = alive_during_retries.clone();
    retry_locks()
        .schedule(steps(2))
        // No watcher: it comes from the pool the retries run on.
        .finally(Finally::Prioritize(prioritize().interval(ms(50))))
        .scope(db.pool(), async |conn| {
            let alive = backend_exists(&pool, blocker_pid).await;
            seen.lock().unwrap().push(alive);
            migrate(conn, &attempts).await
        })
        .await
        .unwrap();
    assert_eq!(
        *alive_during_retries.lock().unwrap(),
        [true, true, true],
        "the blocker lived until the final attempt"
    );
    assert_eq!(attempts.lock().unwrap().len(), 3);
    assert_eq!(applied(db.pool()).await, [3]);
    assert!(migrated(db.pool()).await);
    eventually(ms(5000), "the blocker was terminated", || async {
        !backend_exists(db.pool(), blocker_pid).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_bounds_the_retries_and_the_final_wait() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (_blocking, _) = blocker(db.pool()).await;
    let attempts = Mutex::new(Vec::new());
    let started = Instant::now();
    // The default schedule alone would take about half a minute, and Finally::Wait forever.
    let result = retry_locks()
        .deadline(ms(800))
        .finally(Finally::Wait)
        .scope(db.pool(), async |conn| migrate(conn, &attempts).await)
        .await;
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(Error::LockTimeout { .. })),
        "{result:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "gave up at the deadline, not the schedule's end: {elapsed:?}"
    );
    assert!(
        elapsed >= ms(400),
        "tried for a while before giving up: {elapsed:?}"
    );
    let attempts = attempts.into_inner().unwrap();
    assert!(
        attempts.iter().all(|(_, setting)| setting != "0"),
        "no attempt waited without a limit: {attempts:?}"
    );
    assert_eq!(applied(db.pool()).await, [0; 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn other_errors_end_the_retries_at_once_and_roll_back() {
    let db = TestDb::new().await;
    tables(&db).await;
    exec(&mut db.connect().await, "INSERT INTO applied VALUES (2)").await;
    let mut runs = 0;
    let result: Result<(), Error> = retry_locks()
        .scope(db.pool(), async |conn| {
            runs += 1;
            sqlx::query("INSERT INTO applied VALUES (1), (2)")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await;
    assert!(matches!(result, Err(Error::Database(_))), "{result:?}");
    assert_eq!(runs, 1);
    assert_eq!(applied(db.pool()).await, [2]);
}

#[tokio::test(flavor = "multi_thread")]
async fn inside_a_transaction_each_attempt_is_a_savepoint() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (blocking, _) = blocker(db.pool()).await;
    let committing = tokio::spawn(async move {
        tokio::time::sleep(ms(400)).await;
        blocking.commit().await.unwrap();
    });
    let mut tx = db.pool().begin().await.unwrap();
    exec(&mut tx, "INSERT INTO applied VALUES (100)").await;
    let attempts = Mutex::new(Vec::new());
    retry_locks()
        .schedule(steps(20))
        .scope(&mut *tx, async |conn| migrate(conn, &attempts).await)
        .await
        .unwrap();
    committing.await.unwrap();
    let n = attempts.lock().unwrap().len() as i32;
    assert!(n >= 2);
    tx.commit().await.unwrap();
    // The caller's own row survived the rolled-back attempts.
    assert_eq!(applied(db.pool()).await, [n, 100]);
}

/// The attribute form: the body runs once per attempt, in the attempt's transaction, with the
/// other arguments given to each attempt again; a timeout stacked below applies per attempt.
#[pglock::retry_locks(
    schedule = [("100ms", "100ms"), ("100ms", "100ms"), ("100ms", "100ms"), ("100ms", "100ms"),
                ("100ms", "100ms"), ("100ms", "100ms"), ("100ms", "100ms"), ("100ms", "100ms")],
    jitter = false,
)]
#[pglock::timeout(statement = "20s")]
async fn add_note(
    conn: &mut PgConnection,
    attempts: &Mutex<Vec<(Instant, String)>>,
    statement_timeouts: &mut Vec<String>,
    label: &str,
) -> Result<(), Error> {
    statement_timeouts.push(
        sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&mut *conn)
            .await?,
    );
    assert_eq!(label, "note");
    migrate(conn, attempts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attribute_runs_the_body_once_per_attempt() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (blocking, _) = blocker(db.pool()).await;
    let committing = tokio::spawn(async move {
        tokio::time::sleep(ms(450)).await;
        blocking.commit().await.unwrap();
    });
    let mut conn = db.connect().await;
    let attempts = Mutex::new(Vec::new());
    let mut statement_timeouts = Vec::new();
    let label = String::from("note");
    add_note(&mut conn, &attempts, &mut statement_timeouts, &label)
        .await
        .unwrap();
    committing.await.unwrap();
    let n = attempts.lock().unwrap().len();
    assert!(n >= 2, "{n} attempts");
    assert_eq!(statement_timeouts, vec!["20s".to_owned(); n]);
    assert_eq!(applied(db.pool()).await, [n as i32]);
    assert!(migrated(db.pool()).await);
    assert_eq!(common::lock_timeout(&mut conn).await, "0");
}

/// In a caller's transaction, each attempt is lent as a savepoint under the same name and type.
#[pglock::retry_locks(schedule = [("50ms", "10ms")], finally = Prioritize)]
async fn add_note_or_end_the_blocker(
    pool: &PgPool,
    tx: &mut Transaction<'_, Postgres>,
    attempts: &Mutex<Vec<(Instant, String)>>,
) -> Result<(), Error> {
    let _ = pool; // the final prioritize's watcher connects with it
    migrate(tx, attempts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attribute_prioritizes_the_last_attempt_with_the_pool_argument() {
    let db = TestDb::new().await;
    tables(&db).await;
    let (_blocking, blocker_pid) = blocker(db.pool()).await;
    let mut tx = db.pool().begin().await.unwrap();
    let attempts = Mutex::new(Vec::new());
    add_note_or_end_the_blocker(db.pool(), &mut tx, &attempts)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(attempts.lock().unwrap().len(), 2);
    assert_eq!(applied(db.pool()).await, [2]);
    eventually(
        Duration::from_secs(5),
        "the blocker was terminated",
        || async { !backend_exists(db.pool(), blocker_pid).await },
    )
    .await;
}

/// Events of target `pglock`, as "message field=value ..." lines.
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
        if event.metadata().target() != "pglock" {
            return;
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(fields.0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn each_attempt_is_visible_in_tracing() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let captured = Captured::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(captured.clone()));
    let db = TestDb::new().await;
    tables(&db).await;
    let (_blocking, _) = blocker(db.pool()).await;
    let attempts = Mutex::new(Vec::new());
    let result = retry_locks()
        .schedule(steps(3))
        .scope(db.pool(), async |conn| migrate(conn, &attempts).await)
        .await;
    assert!(result.is_err());
    let events = captured.0.lock().unwrap().clone();
    for n in 1..=3 {
        assert!(
            events
                .iter()
                .any(|e| e.contains(&format!("retry_locks attempt attempt={n} "))),
            "attempt {n} began: {events:#?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.contains("timed out") && e.contains(&format!("attempt={n} "))),
            "attempt {n} timed out: {events:#?}"
        );
    }
    assert!(events.iter().any(|e| e.contains("gives up")), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_or_dropped_attempt_leaves_nothing_on_a_pooled_connection() {
    let db = TestDb::new().await;
    tables(&db).await;
    let pool = db.pool_with(1).await;

    let panicked = tokio::spawn({
        let pool = pool.clone();
        async move {
            retry_locks()
                .scope(&pool, async |conn| {
                    exec(conn, "INSERT INTO applied VALUES (1)").await;
                    panic!("the body panics");
                    #[allow(unreachable_code)]
                    Ok::<_, Error>(())
                })
                .await
        }
    })
    .await;
    assert!(panicked.unwrap_err().is_panic());

    // Dropped while its ALTER waits behind a blocker: the connection pglock checked out is
    // closed, and (Postgres 14+, which checks for a gone client) the wait ends on the server
    // too, instead of queueing everyone else behind it until its lock_timeout.
    let (_blocking, _) = blocker(db.pool()).await;
    let dropped = tokio::time::timeout(
        ms(500),
        retry_locks()
            .schedule([Step::new(Duration::from_secs(20), ms(0))])
            .scope(&pool, async |conn| {
                exec(conn, "INSERT INTO applied VALUES (2)").await;
                exec(conn, "ALTER TABLE orders ADD COLUMN note text").await;
                Ok::<_, Error>(())
            }),
    )
    .await;
    assert!(dropped.is_err(), "the scope was dropped mid-attempt");
    if common::server_version(db.pool()).await >= 140000 {
        eventually(Duration::from_secs(5), "nobody waits on orders", || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE relation = 'orders'::regclass AND NOT granted",
            )
            .fetch_one(db.pool())
            .await
            .unwrap();
            waiting == 0
        })
        .await;
    }

    // The one connection of the pool comes back outside any transaction, with the session's
    // own lock_timeout, and neither attempt's row was committed.
    let mut conn = pool.acquire().await.unwrap();
    let in_transaction: bool = sqlx::query_scalar("SELECT txid_current_if_assigned() IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert!(!in_transaction);
    assert_eq!(lock_timeout(&mut conn).await, "0");
    drop(conn);
    assert_eq!(applied(db.pool()).await, [0; 0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_step_is_refused_before_any_attempt_runs() {
    let db = TestDb::new().await;
    let mut runs = 0;
    let result = retry_locks()
        .schedule([
            Step::new(ms(100), ms(10)),
            Step::new(Duration::ZERO, ms(10)),
        ])
        .scope(db.pool(), async |_| {
            runs += 1;
            Ok::<_, Error>(())
        })
        .await;
    assert!(
        matches!(&result, Err(Error::InvalidArgument(m)) if m.contains("under a millisecond")),
        "{result:?}"
    );
    assert_eq!(runs, 0);
    let result = retry_locks()
        .schedule([])
        .scope(db.pool(), async |_| Ok::<_, Error>(()))
        .await;
    assert!(
        matches!(result, Err(Error::InvalidArgument(_))),
        "{result:?}"
    );
    // An empty schedule with a final step runs that step alone.
    let mut runs = 0;
    retry_locks()
        .schedule([])
        .finally(Finally::Wait)
        .scope(db.pool(), async |conn| {
            runs += 1;
            assert_eq!(lock_timeout(conn).await, "0");
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert_eq!(runs, 1);
}
