//! A holder always knows: while a session lock is held on a connection pglock owns, the heartbeat
//! checks the holding session, and when it is gone the body is dropped (its next `.await` never
//! resumes) and the call returns `Error::Lost`. The heartbeat also keeps the session from
//! counting as idle.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{backend_exists, free_for, server_version};
use pglock::Error;
use pglock_tests::TestDb;
use pglock_tests::proxy::Proxy;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// The backend pid holding `id` in this test's database, once it is held (the server is shared
/// with tests running at the same time, which may use the same lock names).
async fn holder_of(observer: &PgPool, id: &str) -> i32 {
    let key: pglock::LockId = id.into();
    let (classid, objid) = key.key().to_pg_locks_id();
    let started = Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND classid = $1::int8::oid AND objid = $2::int8::oid \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .bind(i64::from(classid))
        .bind(i64::from(objid))
        .fetch_optional(observer)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the lock {id} was never taken"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Terminate the backend holding `id`, and return its pid.
async fn terminate_holder(observer: &PgPool, id: &str) -> i32 {
    let holder = holder_of(observer, id).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(observer)
        .await
        .unwrap();
    holder
}

#[pglock::advisory("terminated-job", heartbeat = "200ms")]
async fn long_job(
    pool: &PgPool,
    after_await: Arc<AtomicBool>,
    started: tokio::sync::oneshot::Sender<()>,
) -> Result<(), Error> {
    let _ = (pool, started.send(()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    after_await.store(true, Ordering::SeqCst);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_holder_is_stopped_within_a_heartbeat_and_returns_lost() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let after_await = Arc::new(AtomicBool::new(false));
    let flag = after_await.clone();
    let (started, body_started) = tokio::sync::oneshot::channel();
    let call = tokio::spawn(async move { long_job(&pool, flag, started).await });
    // Terminate once the client holds the lock (its body runs), not merely once the server
    // granted it.
    body_started.await.unwrap();
    let holder = holder_of(db.pool(), "terminated-job").await;

    let terminated = Instant::now();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(db.pool())
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call ended long before the body's 30 s")
        .unwrap()
        .unwrap_err();
    let took = terminated.elapsed();
    assert!(
        matches!(&error, Error::Lost { lock, .. } if lock.name() == "terminated-job"),
        "{error:?}"
    );
    // One heartbeat (200 ms) plus generous slack for a loaded machine; the figure itself is
    // measured in the benchmark.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        !after_await.load(Ordering::SeqCst),
        "the body never resumed"
    );
    assert!(!backend_exists(db.pool(), holder).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtime_run_form_is_watched_too() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let after_await = Arc::new(AtomicBool::new(false));
    let flag = after_await.clone();
    let (started, body_started) = tokio::sync::oneshot::channel();
    let call = tokio::spawn(async move {
        pglock::advisory("terminated-run")
            .heartbeat(Duration::from_millis(100))
            .run(&pool, async move {
                let _ = started.send(());
                tokio::time::sleep(Duration::from_secs(30)).await;
                flag.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await
    });
    body_started.await.unwrap();
    terminate_holder(db.pool(), "terminated-run").await;
    let error = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("stopped")
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::Lost { .. }), "{error:?}");
    assert!(!after_await.load(Ordering::SeqCst));
}

#[pglock::advisory("cut-job", heartbeat = "200ms")]
async fn cut_job(
    pool: &PgPool,
    dropped: Arc<std::sync::Mutex<Option<Instant>>>,
    started: tokio::sync::oneshot::Sender<()>,
) -> Result<(), Error> {
    let _ = (pool, started.send(()));
    struct OnDrop(Arc<std::sync::Mutex<Option<Instant>>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            *self.0.lock().unwrap() = Some(Instant::now());
        }
    }
    let _on_drop = OnDrop(dropped);
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(())
}

/// A network cut: the client stops hearing from the server. The server frees the lock only when
/// it notices (here: the proxy closes its side `KEEPALIVE_NOTICE` after the cut, as a server's
/// keepalives would); the holder's body must be gone before anyone else can take the lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_network_stops_the_body_before_the_server_frees_the_lock() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(db.url()).await;
    let through = PgPoolOptions::new()
        .max_connections(2)
        .connect(&proxy.url())
        .await
        .unwrap();
    let dropped = Arc::new(std::sync::Mutex::new(None));
    let (started, body_started) = tokio::sync::oneshot::channel();
    let call = tokio::spawn({
        let (through, dropped) = (through.clone(), dropped.clone());
        async move { cut_job(&through, dropped, started).await }
    });
    // The body runs, so the client knows it holds the lock (the server's grant alone could still
    // be on its way through the proxy when the cut comes).
    body_started.await.unwrap();
    holder_of(db.pool(), "cut-job").await;

    let cut = Instant::now();
    proxy.cut_and_close_after(pglock_tests::KEEPALIVE_NOTICE);
    // Another session, on the server directly, waits for the lock.
    let mut other = db.connect().await;
    let taken_by_other = {
        pglock::advisory("cut-job")
            .wait_forever()
            .acquire(&mut other)
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        Instant::now()
    };
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::Lost { .. }), "{error:?}");
    let dropped = dropped.lock().unwrap().expect("the body was dropped");
    assert!(
        dropped < taken_by_other,
        "the body was dropped {:?} after the cut, the other session got the lock {:?} after it",
        dropped - cut,
        taken_by_other - cut
    );
}

#[pglock::advisory("idle-job", heartbeat = "300ms")]
async fn idle_job(pool: &PgPool) -> Result<(), Error> {
    let _ = pool;
    // Does no database work at all for longer than the role's idle_session_timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

/// The heartbeat keeps the holding session from counting as idle: a 3 s body under a 1 s
/// `idle_session_timeout` completes, holding its lock throughout. (Postgres 13 has no
/// `idle_session_timeout`; there the body completes as well, which is all there is to see.)
#[tokio::test(flavor = "multi_thread")]
async fn a_held_lock_outlives_idle_session_timeout() {
    let db = TestDb::new().await;
    let idle_timeout = server_version(db.pool()).await >= 140_000;
    let options = if idle_timeout {
        db.options().options([("idle_session_timeout", "1s")])
    } else {
        db.options()
    };
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .unwrap();
    let job = tokio::spawn({
        let pool = pool.clone();
        async move { idle_job(&pool).await }
    });
    let holder = holder_of(db.pool(), "idle-job").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut observer = db.connect().await;
    assert!(
        !free_for(&mut observer, "idle-job").await,
        "still held after twice the idle timeout"
    );
    job.await.unwrap().unwrap();
    assert!(backend_exists(db.pool(), holder).await, "the session lived");
    assert!(
        free_for(&mut observer, "idle-job").await,
        "released at the end"
    );
}

/// A body that must finish a step cleanly is told of the loss instead of being dropped, and the
/// call then returns the loss.
#[tokio::test(flavor = "multi_thread")]
async fn a_notified_body_finishes_its_step_and_the_call_returns_lost() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let finished = Arc::new(AtomicBool::new(false));
    let (started, body_started) = tokio::sync::oneshot::channel();
    let call = tokio::spawn({
        let finished = finished.clone();
        async move {
            pglock::advisory("notified-run")
                .heartbeat(Duration::from_millis(100))
                .run_notified(&pool, |mut lost| async move {
                    let _ = started.send(());
                    assert!(!lost.is_lost());
                    lost.lost().await;
                    // The step in hand completes; the lock is gone by now.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    finished.store(true, Ordering::SeqCst);
                    Ok::<_, Error>(())
                })
                .await
        }
    });
    body_started.await.unwrap();
    terminate_holder(db.pool(), "notified-run").await;
    let error = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the body was told")
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::Lost { .. }), "{error:?}");
    assert!(finished.load(Ordering::SeqCst), "the body ran to its end");
}

/// A guard is watched on request: `lost()` checks its session and returns the loss.
#[tokio::test(flavor = "multi_thread")]
async fn a_guards_watch_reports_a_terminated_session() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let mut guard = pglock::advisory("watched-guard")
        .acquire(&pool)
        .await
        .unwrap();
    let holder = common::pid(&mut guard).await;
    // Healthy: the watch goes on checking.
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            guard.lost(Duration::from_millis(50))
        )
        .await
        .is_err(),
        "a healthy session is not reported lost"
    );
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .execute(db.pool())
        .await
        .unwrap();
    let lost = tokio::time::timeout(
        Duration::from_secs(10),
        guard.lost(Duration::from_millis(50)),
    )
    .await
    .expect("the loss is seen");
    assert!(
        matches!(&lost, Error::Lost { lock, .. } if lock.name() == "watched-guard"),
        "{lost:?}"
    );
    drop(guard);
}
