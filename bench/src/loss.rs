//! Section 7: lock loss. How soon a holder's body is dropped once its session is gone (the
//! heartbeat of `Advisory::run` on a pool), and, for a cut network, that it is dropped before the
//! server frees the lock for someone else. (The heartbeat's cost on short holds is measured with
//! the latency rows, in the same rounds: `latency::Op::PoolRun`.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pglock_tests::TestDb;
use pglock_tests::proxy::Proxy;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::oneshot;

use crate::Res;
use crate::stats::Samples;

/// The heartbeats whose detection latency is measured.
pub const HEARTBEATS_MS: &[u64] = &[50, 200, 1000];

/// The heartbeats the cut timeline is shown for: two that drop the body within two intervals
/// of the cut, well before the harness's stand-in for the server's keepalives closes the
/// connection, and the default.
pub const CUT_HEARTBEATS_MS: &[u64] = &[200, 1000, 2000];

/// Keys of this section (no other measurement uses them).
const KEY_TERMINATED: i64 = 7001;
const KEY_CUT: i64 = 7002;

/// Records when it is dropped: put in the body, it tells when the body's future was dropped.
struct OnDrop(Arc<Mutex<Option<Instant>>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        *self.0.lock().expect("not poisoned") = Some(Instant::now());
    }
}

/// A body that holds the lock for a minute unless dropped: it says when it started and records
/// when it is dropped.
async fn long_body(
    started: oneshot::Sender<Instant>,
    dropped: Arc<Mutex<Option<Instant>>>,
) -> Result<(), pglock::Error> {
    let _on_drop = OnDrop(dropped);
    let _ = started.send(Instant::now());
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(())
}

/// Detection latencies of one heartbeat, in µs.
pub struct Detection {
    pub heartbeat: Duration,
    /// From sending `pg_terminate_backend` to the body being dropped.
    pub dropped: Samples,
    /// From sending `pg_terminate_backend` to `run` returning `Error::Lost`.
    pub returned: Samples,
    /// From the first heartbeat due after the terminate (the body's start + a whole number of
    /// intervals) to the body being dropped: what the check itself takes once it is sent.
    pub after_check: Samples,
}

/// Terminates the holder of a lock held through `run` on a pool, `reps` times per heartbeat, at
/// phases of the heartbeat spread evenly over one interval (the `i`-th at `(i + ½) / reps` of
/// an interval after the body started), as a termination at a random moment would fall.
pub async fn detection(db: &TestDb, reps: usize) -> Res<Vec<Detection>> {
    // One connection: the one the lock is taken on, whose pid is read before each repetition.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options())
        .await?;
    let admin = db.pool();
    let mut out = Vec::new();
    for &ms in HEARTBEATS_MS {
        let heartbeat = Duration::from_millis(ms);
        let mut row = Detection {
            heartbeat,
            dropped: Samples::default(),
            returned: Samples::default(),
            after_check: Samples::default(),
        };
        for i in 0..reps {
            let phase = heartbeat.mul_f64((i as f64 + 0.5) / reps as f64);
            let (started, dropped_at, returned_at, terminated) =
                terminate_once(&pool, admin, heartbeat, phase).await?;
            row.dropped.push(dropped_at - terminated);
            row.returned.push(returned_at - terminated);
            let beats = (terminated - started).as_secs_f64() / heartbeat.as_secs_f64();
            let check = started + heartbeat.mul_f64(beats.floor() + 1.0);
            row.after_check.push_us(
                (dropped_at.duration_since(check).as_secs_f64()
                    - check.duration_since(dropped_at).as_secs_f64())
                    * 1e6,
            );
        }
        out.push(row);
    }
    pool.close().await;
    Ok(out)
}

/// One repetition: hold, terminate the holder `phase` after the body started, and return when
/// the body started, when it was dropped, when `run` returned and when the terminate was sent.
async fn terminate_once(
    pool: &PgPool,
    admin: &PgPool,
    heartbeat: Duration,
    phase: Duration,
) -> Res<(Instant, Instant, Instant, Instant)> {
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await?;
    let dropped = Arc::new(Mutex::new(None));
    let (started_tx, started_rx) = oneshot::channel();
    let call = tokio::spawn({
        let (pool, body) = (pool.clone(), long_body(started_tx, dropped.clone()));
        async move {
            let out = pglock::advisory(KEY_TERMINATED)
                .heartbeat(heartbeat)
                .run(&pool, body)
                .await;
            (out, Instant::now())
        }
    });
    let started = started_rx.await?;
    tokio::time::sleep_until((started + phase).into()).await;
    let terminated = Instant::now();
    let done: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(admin)
        .await?;
    if !done {
        return Err(format!("no backend {pid} to terminate").into());
    }
    let (out, returned) = tokio::time::timeout(Duration::from_secs(30), call).await??;
    match out {
        Err(pglock::Error::Lost { .. }) => {}
        other => return Err(format!("expected Error::Lost, got {other:?}").into()),
    }
    let dropped = dropped
        .lock()
        .expect("not poisoned")
        .ok_or("the body was never dropped")?;
    Ok((started, dropped, returned, terminated))
}

/// One cut: when the body was dropped and when another session was granted the lock, from the
/// cut.
pub struct Cut {
    pub heartbeat: Duration,
    pub body_dropped: Duration,
    pub other_granted: Duration,
}

/// Cuts the network under a holder (through the harness's proxy) `reps` times per heartbeat, at
/// phases spread over one interval; the proxy closes the connection `notice` after the cut, as
/// a server's keepalives would notice the dead client. Another session, on the server
/// directly, waits for the lock from the cut on.
pub async fn cut_timeline(db: &TestDb, reps: usize, notice: Duration) -> Res<Vec<Cut>> {
    let mut out = Vec::new();
    for &ms in CUT_HEARTBEATS_MS {
        let heartbeat = Duration::from_millis(ms);
        for i in 0..reps {
            let phase = heartbeat.mul_f64((i as f64 + 0.5) / reps as f64);
            out.push(cut_once(db, heartbeat, phase, notice).await?);
        }
    }
    Ok(out)
}

async fn cut_once(db: &TestDb, heartbeat: Duration, phase: Duration, notice: Duration) -> Res<Cut> {
    // A proxy of its own: a cut proxy stays cut for connections made after it.
    let proxy = Proxy::start(db.url()).await;
    let through = PgPoolOptions::new()
        .max_connections(1)
        .connect(&proxy.url())
        .await?;
    // Connected first: the cut's phase is timed from the body's start.
    let mut other = db.connect().await;
    let dropped = Arc::new(Mutex::new(None));
    let (started_tx, started_rx) = oneshot::channel();
    let call = tokio::spawn({
        let (through, body) = (through.clone(), long_body(started_tx, dropped.clone()));
        async move {
            pglock::advisory(KEY_CUT)
                .heartbeat(heartbeat)
                .run(&through, body)
                .await
        }
    });
    let started = started_rx.await?;
    tokio::time::sleep_until((started + phase).into()).await;
    let cut = Instant::now();
    proxy.cut_and_close_after(notice);
    let waiter = tokio::spawn(async move {
        let guard = pglock::advisory(KEY_CUT)
            .wait_forever()
            .acquire(&mut other)
            .await;
        let granted = Instant::now();
        let released = match guard {
            Ok(guard) => guard.release().await,
            Err(error) => Err(error),
        };
        released.map(|()| granted)
    });
    let out = tokio::time::timeout(Duration::from_secs(30), call).await??;
    match out {
        Err(pglock::Error::Lost { .. }) => {}
        other => return Err(format!("expected Error::Lost, got {other:?}").into()),
    }
    let granted = tokio::time::timeout(Duration::from_secs(30), waiter).await???;
    let dropped = dropped
        .lock()
        .expect("not poisoned")
        .ok_or("the body was never dropped")?;
    let _ = tokio::time::timeout(Duration::from_secs(5), through.close()).await;
    drop(proxy);
    Ok(Cut {
        heartbeat,
        body_dropped: dropped - cut,
        other_granted: granted - cut,
    })
}
