//! Deadlocks: when two sessions each wait for a lock the other holds, Postgres ends one wait
//! (SQLSTATE 40P01) and pglock returns `Error::Deadlock` naming the lock that session waited
//! for; the other session gets its lock. Advisory locks (session- and transaction-level, in each
//! way of waiting) and table locks.
//!
//! Each session sets `deadlock_timeout` to 100 ms (the tests run as a superuser), so the server
//! looks for the cycle soon after both wait.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::exec;
use pglock::{Error, LockId, LockTarget, advisory, lock_table};
use pglock_tests::TestDb;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection};
use tokio::sync::Barrier;

/// Far longer than a deadlock takes to be found: reaching it means a hang.
const BOUND: Duration = Duration::from_secs(60);

/// A session of its own that looks for deadlocks 100 ms after it starts to wait.
async fn session(db: &TestDb) -> PgConnection {
    let mut conn = db.connect().await;
    exec(&mut conn, "SET deadlock_timeout = '100ms'").await;
    conn
}

/// Run two sessions' crossing steps at once, each on its own task, and return their results.
async fn both<F>(first: F, second: F) -> [Result<(), Error>; 2]
where
    F: Future<Output = Result<(), Error>> + Send + 'static,
{
    let (first, second) = (tokio::spawn(first), tokio::spawn(second));
    let joined = tokio::time::timeout(BOUND, async { (first.await, second.await) }).await;
    let (first, second) = joined.unwrap_or_else(|_| panic!("hung: no deadlock found in {BOUND:?}"));
    [first.expect("first task"), second.expect("second task")]
}

/// Exactly one of the two results is `Error::Deadlock`, the other is `Ok`. Returns the
/// deadlock's target and the index of the session that got it.
fn exactly_one_deadlock(results: [Result<(), Error>; 2]) -> (LockTarget, usize) {
    let mut deadlocks = Vec::new();
    for (index, result) in results.into_iter().enumerate() {
        match result {
            Ok(()) => {}
            Err(Error::Deadlock { target, source }) => {
                let code = match &source {
                    sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
                    _ => None,
                };
                assert_eq!(code.as_deref(), Some("40P01"), "{source}");
                deadlocks.push((target, index));
            }
            Err(other) => panic!("session {index}: expected Ok or Deadlock, got {other:?}"),
        }
    }
    assert_eq!(deadlocks.len(), 1, "exactly one deadlock: {deadlocks:?}");
    deadlocks.pop().expect("one")
}

/// Session-level locks on plain connections: each session holds its first lock and waits for
/// the other's. The loser's error names the lock it waited for and says what happened; it still
/// holds its first lock (a deadlock releases nothing), and releases it so the winner proceeds.
#[tokio::test(flavor = "multi_thread")]
async fn crossing_session_locks_end_in_exactly_one_deadlock() {
    let db = TestDb::new().await;
    let ready = Arc::new(Barrier::new(2));
    let cross = |mut conn: PgConnection, first: &'static str, second: &'static str, timed| {
        let ready = ready.clone();
        async move {
            let mut held = advisory(first).acquire(&mut conn).await.unwrap();
            ready.wait().await;
            // One side waits with a timeout (a try first, then a bound timed statement), the
            // other as long as the server lets it (a bound statement).
            let second = advisory(second);
            let second = if timed {
                second.timeout(Duration::from_secs(30))
            } else {
                second
            };
            let result = match second.acquire(&mut held).await {
                Ok(guard) => guard.release().await,
                Err(error) => Err(error),
            };
            if result.is_err() {
                let still: bool = sqlx::query_scalar(
                    "SELECT count(*) = 1 FROM pg_locks \
                     WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted",
                )
                .fetch_one(&mut *held)
                .await
                .unwrap();
                assert!(still, "the loser still holds its first lock");
            }
            held.release().await.unwrap();
            result
        }
    };
    let (a, b) = (session(&db).await, session(&db).await);
    let results = both(cross(a, "x", "y", true), cross(b, "y", "x", false)).await;
    let (target, loser) = exactly_one_deadlock(results);
    let waited_for = if loser == 0 { "y" } else { "x" };
    assert_eq!(target, LockTarget::Advisory(LockId::from(waited_for)));

    let message = Error::Deadlock {
        target,
        source: sqlx::Error::RowNotFound,
    }
    .to_string();
    assert!(
        message.contains(&format!("lock \"{waited_for}\""))
            && message.contains("another session was waiting for a lock this session holds"),
        "{message}"
    );
}

/// Transaction-level locks in the callers' transactions, waiting with a timeout: the wait runs
/// in a savepoint, so the loser's transaction is still usable after the deadlock, and it keeps
/// its first lock until it ends.
#[tokio::test(flavor = "multi_thread")]
async fn crossing_xact_locks_leave_the_losers_transaction_usable() {
    let db = TestDb::new().await;
    let ready = Arc::new(Barrier::new(2));
    let cross = |mut conn: PgConnection, first: i64, second: i64| {
        let ready = ready.clone();
        async move {
            let mut tx = conn.begin().await.unwrap();
            advisory(first)
                .xact()
                .acquire(&mut tx)
                .await
                .map(drop)
                .unwrap();
            ready.wait().await;
            let result = advisory(second)
                .xact()
                .timeout(Duration::from_secs(30))
                .acquire(&mut tx)
                .await
                .map(drop);
            let one: i32 = sqlx::query_scalar("SELECT 1")
                .fetch_one(&mut *tx)
                .await
                .expect("the transaction is usable after the failed wait");
            assert_eq!(one, 1);
            tx.commit().await.unwrap();
            result
        }
    };
    let (a, b) = (session(&db).await, session(&db).await);
    let (target, loser) = exactly_one_deadlock(both(cross(a, 1, 2), cross(b, 2, 1)).await);
    let waited_for = if loser == 0 { 2 } else { 1 };
    assert_eq!(target, LockTarget::Advisory(LockId::from(waited_for)));
}

/// Inside transaction-level scopes on a pool: each scope holds its lock and waits (as long as
/// the server lets it) for the other's; the losing scope returns the deadlock and rolls back,
/// which lets the other one through. (A wait on a connection pglock owns holds nothing else
/// while it waits, so it can only be the other end of a cycle, never a link in one.)
#[tokio::test(flavor = "multi_thread")]
async fn crossing_xact_scopes_on_a_pool_end_in_exactly_one_deadlock() {
    let db = TestDb::new().await;
    exec(
        &mut db.connect().await,
        &format!(
            "ALTER DATABASE {} SET deadlock_timeout = '100ms'",
            db.name()
        ),
    )
    .await;
    let pool = db.pool_with(4).await;
    let ready = Arc::new(Barrier::new(2));
    let cross = |first: &'static str, second: &'static str| {
        let (ready, pool) = (ready.clone(), pool.clone());
        async move {
            advisory(first)
                .xact()
                .scope(&pool, async |conn| {
                    ready.wait().await;
                    advisory(second).xact().acquire(&mut *conn).await.map(drop)
                })
                .await
        }
    };
    let (target, loser) = exactly_one_deadlock(both(cross("p", "q"), cross("q", "p")).await);
    let waited_for = if loser == 0 { "q" } else { "p" };
    assert_eq!(target, LockTarget::Advisory(LockId::from(waited_for)));
}

/// `LOCK TABLE` in two transactions, each holding one table and asking for the other's: one
/// `Error::Deadlock` naming the table it waited for, and its transaction is still usable (the
/// lock ran in a savepoint).
#[tokio::test(flavor = "multi_thread")]
async fn crossing_table_locks_end_in_exactly_one_deadlock() {
    let db = TestDb::new().await;
    exec(
        &mut db.connect().await,
        "CREATE TABLE left_t (id int); CREATE TABLE right_t (id int)",
    )
    .await;
    let ready = Arc::new(Barrier::new(2));
    let cross = |mut conn: PgConnection, first: &'static str, second: &'static str| {
        let ready = ready.clone();
        async move {
            let mut tx = conn.begin().await.unwrap();
            lock_table(first).acquire(&mut tx).await.unwrap();
            ready.wait().await;
            let result = lock_table(second).acquire(&mut tx).await;
            let count: i64 =
                sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {first}")))
                    .fetch_one(&mut *tx)
                    .await
                    .expect("the transaction is usable after the failed lock");
            assert_eq!(count, 0);
            tx.rollback().await.unwrap();
            result
        }
    };
    let (a, b) = (session(&db).await, session(&db).await);
    let results = both(cross(a, "left_t", "right_t"), cross(b, "right_t", "left_t")).await;
    let (target, loser) = exactly_one_deadlock(results);
    let waited_for = if loser == 0 { "right_t" } else { "left_t" };
    assert_eq!(
        target,
        LockTarget::Tables(vec![format!("\"{waited_for}\"")])
    );
}

/// A statement of the caller's own that deadlocks converts, through `From<sqlx::Error>`, to a
/// deadlock on [`LockTarget::Statement`], as a statement's lock timeout does.
#[tokio::test(flavor = "multi_thread")]
async fn a_statement_that_deadlocks_converts_to_a_deadlock_on_a_statement() {
    let db = TestDb::new().await;
    let ready = Arc::new(Barrier::new(2));
    let cross = |mut conn: PgConnection, first: i64, second: i64| {
        let ready = ready.clone();
        async move {
            exec(&mut conn, &format!("SELECT pg_advisory_lock({first})")).await;
            ready.wait().await;
            let result = sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(second)
                .execute(&mut conn)
                .await
                .map(drop)
                .map_err(Error::from);
            exec(&mut conn, "SELECT pg_advisory_unlock_all()").await;
            result
        }
    };
    let (a, b) = (session(&db).await, session(&db).await);
    let (target, _) = exactly_one_deadlock(both(cross(a, 10, 20), cross(b, 20, 10)).await);
    assert_eq!(target, LockTarget::Statement);
}
