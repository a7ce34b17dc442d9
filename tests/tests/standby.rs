//! Advisory locks on a hot standby, on a real streaming replica of a private cluster: refused
//! by default with `Error::Standby`, in every way of taking a lock and without leaving anything
//! held there; taken with `allow_standby()`, where they exclude the standby's sessions only.

mod common;

use std::time::Duration;

use common::{advisory_locks, free_for, pid};
use pglock::{Advisory, Error, LockId, advisory};
use pglock_tests::PrivateCluster;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};

async fn pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .expect("connecting")
}

/// `result` is the standby error for `lock`, and says how to opt in.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, Error>, lock: &str, how: &str) {
    match result {
        Err(Error::Standby { lock: refused }) => {
            assert_eq!(refused, LockId::from(lock), "{how}");
            let message = Error::Standby { lock: refused }.to_string();
            assert!(
                message.contains("hot standby") && message.contains(".allow_standby()"),
                "{message}"
            );
        }
        other => panic!("{how}: expected Error::Standby, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_on_a_standby_is_refused_and_nothing_is_held_there() {
    let primary = PrivateCluster::new().await;
    let standby = primary.standby().await;
    let replica = pool(standby.url()).await;
    let mut conn = PgConnection::connect(standby.url()).await.unwrap();
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    eprintln!("standby: {version}");
    let timed = || advisory("job").timeout(Duration::from_secs(1));

    // On a pool: a wait (one simple-query message on a connection pglock owns), a try, a
    // transaction-level scope.
    assert_refused(advisory("job").acquire(&replica).await, "job", "pool wait");
    assert_refused(
        advisory("job").nowait().acquire(&replica).await,
        "job",
        "pool try",
    );
    assert_refused(timed().acquire(&replica).await, "job", "pool timed wait");
    let ran = advisory("job")
        .xact()
        .scope(&replica, async |_conn| Ok::<_, Error>(()))
        .await;
    assert_refused(ran, "job", "xact scope on a pool");
    let skipped = advisory("job")
        .try_scope(&replica, async |_conn| Ok::<_, Error>(()))
        .await;
    assert_refused(skipped, "job", "try_scope: a standby is not a skip");

    // On a borrowed connection: a bound wait, a timed wait (a try first).
    assert_refused(
        advisory("job").acquire(&mut conn).await,
        "job",
        "bound wait",
    );
    assert_refused(
        timed().acquire(&mut conn).await,
        "job",
        "borrowed timed wait",
    );

    // In the caller's (read-only) transaction: a bound wait, and a timed wait in a savepoint.
    // The transaction stays usable: nothing failed on the server.
    let mut tx = conn.begin().await.unwrap();
    assert_refused(advisory("job").xact().acquire(&mut tx).await, "job", "xact");
    let timed_xact = timed().xact().acquire(&mut tx).await;
    assert_refused(timed_xact, "job", "timed xact in a savepoint");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(one, 1);
    assert!(advisory_locks(&replica).await.is_empty());
    tx.rollback().await.unwrap();

    assert!(
        advisory_locks(&replica).await.is_empty(),
        "nothing is held on the standby: {:?}",
        advisory_locks(&replica).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_allow_standby_the_lock_excludes_the_standbys_sessions_only() {
    let primary = PrivateCluster::new().await;
    let standby = primary.standby().await;
    let (replica, main) = (pool(standby.url()).await, pool(primary.url()).await);
    let on_standby = || advisory("job").allow_standby();
    assert!(on_standby().allows_standby() && !advisory("job").allows_standby());

    let mut guard = on_standby().acquire(&replica).await.unwrap();
    let holder = pid(&mut guard).await;
    let held = advisory_locks(&replica).await;
    assert!(
        held.len() == 1
            && held[0].pid == holder
            && held[0].granted
            && held[0].is_for(&"job".into()),
        "held on the standby by the guard's session: {held:?}"
    );

    // Another session of the standby is excluded, whether or not it opts in: a try is busy
    // (opting in), or refused before it looks (not opting in).
    let mut other = PgConnection::connect(standby.url()).await.unwrap();
    let busy = on_standby().nowait().acquire(&mut other).await.map(drop);
    assert!(matches!(busy, Err(Error::Busy { .. })), "{busy:?}");
    assert_refused(
        advisory("job").nowait().acquire(&mut other).await,
        "job",
        "no opt-in on the standby",
    );

    // The primary neither sees it nor is excluded by it.
    assert!(advisory_locks(&main).await.is_empty());
    assert!(free_for(&mut main.acquire().await.unwrap(), "job").await);

    guard.release().await.unwrap();
    assert!(advisory_locks(&replica).await.is_empty());

    // Transaction-level, in a scope on the standby's pool.
    let inside = on_standby()
        .xact()
        .scope(&replica, async |conn| {
            Ok::<_, Error>(
                sqlx::query_scalar::<_, i64>(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' \
                     AND pid = pg_backend_pid() AND granted",
                )
                .fetch_one(conn)
                .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(inside, 1);
}

#[pglock::advisory("attribute-job")]
async fn attribute_job(pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    Ok(())
}

#[pglock::advisory("attribute-job", allow_standby)]
async fn attribute_job_on_purpose(pool: &PgPool) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
            .fetch_one(pool)
            .await?,
    )
}

/// The attribute refuses a standby too, and `allow_standby` opts in.
#[tokio::test(flavor = "multi_thread")]
async fn the_attribute_refuses_a_standby_unless_told_allow_standby() {
    let primary = PrivateCluster::new().await;
    let standby = primary.standby().await;
    let replica = pool(standby.url()).await;
    assert_refused(
        attribute_job(&replica).await,
        "attribute-job",
        "the attribute",
    );
    assert_eq!(
        attribute_job_on_purpose(&replica).await.unwrap(),
        1,
        "held on the standby"
    );
    assert!(advisory_locks(&replica).await.is_empty());
}

/// On a primary, opting in changes nothing: the lock is taken as usual.
#[tokio::test(flavor = "multi_thread")]
async fn allow_standby_on_a_primary_takes_the_lock_as_usual() {
    let db = pglock_tests::TestDb::new().await;
    let lock: Advisory = advisory("job").allow_standby();
    let guard = lock.clone().acquire(db.pool()).await.unwrap();
    assert_eq!(advisory_locks(db.pool()).await.len(), 1);
    assert!(
        lock.nowait()
            .try_acquire(db.pool())
            .await
            .unwrap()
            .is_none()
    );
    guard.release().await.unwrap();
}
