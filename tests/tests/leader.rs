//! Leader election against a real server: exactly one leader's task runs at any moment among
//! several candidates (separate pools, as separate replicas would have); another takes over
//! after a clean step-down (at once), a terminated backend and a killed process (after the
//! grace period, never overlapping); a leader that lost its session is elected again later.

mod common;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pglock::{Leadership, Status};
use pglock_tests::TestDb;
use sqlx::PgPool;
use tokio::io::AsyncBufReadExt as _;

const HEARTBEAT: Duration = Duration::from_millis(100);

/// Tasks running now, and the most that ever ran at once.
#[derive(Clone, Default)]
struct Running {
    now: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    starts: Arc<AtomicUsize>,
}

struct Counted(Running);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Running {
    fn task(
        &self,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + 'static {
        let running = self.clone();
        move || {
            let running = running.clone();
            Box::pin(async move {
                let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
                running.most.fetch_max(now, Ordering::SeqCst);
                running.starts.fetch_add(1, Ordering::SeqCst);
                let _counted = Counted(running);
                std::future::pending::<()>().await;
            })
        }
    }
}

async fn candidate(db: &TestDb, lock: &str, running: &Running) -> Leadership {
    let pool = db.pool_with(1).await;
    pglock::leader(lock)
        .heartbeat(HEARTBEAT)
        .run(&pool, running.task())
}

/// Wait until exactly one of `candidates` leads, and return its index.
async fn one_leader(candidates: &[Option<Leadership>]) -> usize {
    let started = Instant::now();
    loop {
        let leading: Vec<usize> = candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.as_ref().is_some_and(Leadership::is_leader))
            .map(|(i, _)| i)
            .collect();
        assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
        if let [one] = leading.as_slice() {
            return *one;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no leader was elected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The backend holding `lock`.
async fn holder(observer: &PgPool, lock: &str) -> i32 {
    let locks = common::locks_on(observer, lock).await;
    locks
        .iter()
        .find(|row| row.granted)
        .map(|row| row.pid)
        .expect("someone holds the lock")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_through_step_downs_and_terminations() {
    let db = TestDb::new().await;
    let running = Running::default();
    let mut candidates = Vec::new();
    for _ in 0..3 {
        candidates.push(Some(candidate(&db, "singleton", &running).await));
    }
    let first = one_leader(&candidates).await;
    assert_eq!(running.now.load(Ordering::SeqCst), 1);

    // A clean step-down: the next leader starts without waiting out a grace period.
    candidates[first].take().unwrap().step_down().await;
    let second = one_leader(&candidates).await;
    assert_eq!(
        candidates[second].as_ref().unwrap().status(),
        Status::Leading { clean: true },
        "a clean hand-over: no grace period"
    );

    // The leader's backend is terminated: the next one waits out the grace period, so the two
    // tasks never overlap (`most` stays 1).
    let pid = holder(db.pool(), "singleton").await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(db.pool())
        .await
        .unwrap();
    let third = loop {
        let third = one_leader(&candidates).await;
        if third != second || running.starts.load(Ordering::SeqCst) >= 3 {
            break third;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let status = candidates[third].as_ref().unwrap().status();
    assert_eq!(
        status,
        Status::Leading { clean: false },
        "took over after a loss"
    );
    assert_eq!(
        running.most.load(Ordering::SeqCst),
        1,
        "never two tasks at once"
    );

    // The candidate that lost its session campaigns again, and leads when the others go.
    for (i, candidate) in candidates.iter_mut().enumerate() {
        if i != second
            && let Some(candidate) = candidate.take()
        {
            candidate.step_down().await;
        }
    }
    let last = one_leader(&candidates).await;
    assert_eq!(last, second, "re-elected after losing its session");
    candidates[last].take().unwrap().step_down().await;
    assert_eq!(
        running.now.load(Ordering::SeqCst),
        0,
        "every task was dropped"
    );
    assert_eq!(running.most.load(Ordering::SeqCst), 1);
    common::eventually(Duration::from_secs(5), "the lock is free", async || {
        common::locks_on(db.pool(), "singleton")
            .await
            .iter()
            .all(|row| !row.granted)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_leader_process_is_replaced_after_the_grace_period() {
    let db = TestDb::new().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pglock-tests-leader"))
        .args([
            db.url(),
            "killed-leader",
            &HEARTBEAT.as_millis().to_string(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let leading = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the child leads")
        .unwrap();
    assert_eq!(leading.as_deref(), Some("leading"));

    let running = Running::default();
    let standby = candidate(&db, "killed-leader", &running).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!standby.is_leader(), "the child leads");

    let killed = Instant::now();
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let mut status = standby.watch();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|status| matches!(status, Status::Leading { .. })),
    )
    .await
    .expect("took over")
    .unwrap();
    let took = killed.elapsed();
    assert_eq!(standby.status(), Status::Leading { clean: false });
    // It waited the grace period (two heartbeats) after the server freed the lock.
    assert!(took >= 2 * HEARTBEAT, "{took:?}");
    standby.step_down().await;
}

/// A candidate that stops while it waits leaves nothing behind: its wait ends on the server,
/// so the lock is not granted to an idle connection after the leader goes (while every pool
/// lives on), and campaigning takes no connection from the caller's pool.
#[tokio::test(flavor = "multi_thread")]
async fn a_candidate_stopped_while_waiting_is_never_granted_the_lock() {
    let db = TestDb::new().await;
    let running = Running::default();
    let (first_pool, second_pool) = (db.pool_with(1).await, db.pool_with(1).await);
    let first = pglock::leader("stopped-waiter")
        .heartbeat(HEARTBEAT)
        .run(&first_pool, running.task());
    let mut leads = first.watch();
    leads
        .wait_for(|status| matches!(status, Status::Leading { .. }))
        .await
        .unwrap();
    let second = pglock::leader("stopped-waiter")
        .heartbeat(HEARTBEAT)
        .run(&second_pool, running.task());
    common::until_someone_waits(db.pool(), "stopped-waiter").await;
    // The caller's pool of one still lends its connection: the campaign has its own.
    let lent = tokio::time::timeout(Duration::from_secs(5), second_pool.acquire())
        .await
        .expect("the campaign took no connection from the caller's pool")
        .unwrap();
    drop(lent);

    second.step_down().await;
    first.step_down().await;
    common::eventually(
        Duration::from_secs(5),
        "no session holds or waits",
        async || {
            common::locks_on(db.pool(), "stopped-waiter")
                .await
                .is_empty()
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        common::locks_on(db.pool(), "stopped-waiter")
            .await
            .is_empty(),
        "the abandoned wait was never granted"
    );
    drop((first_pool, second_pool));
}

/// Dropping a `Leadership` stops campaigning abruptly, and its task with it: a task that
/// outlived its leadership would run beside the next leader's once the grace period is over.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_leadership_drops_its_task() {
    let db = TestDb::new().await;
    let running = Running::default();
    let leadership = candidate(&db, "dropped-leadership", &running).await;
    common::eventually(Duration::from_secs(20), "the task runs", async || {
        running.now.load(Ordering::SeqCst) == 1
    })
    .await;
    assert!(leadership.is_leader());
    drop(leadership);
    common::eventually(Duration::from_secs(5), "the task is dropped", async || {
        running.now.load(Ordering::SeqCst) == 0
    })
    .await;
}
