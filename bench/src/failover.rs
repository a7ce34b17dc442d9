//! Section 7: leader failover timelines, and `min_hold`'s return latency.
//!
//! Failover: two candidates of `pglock::leader` on separate pools (two replicas), a short
//! heartbeat; once the first leads and the second waits on the lock, the leader steps down,
//! has its backend terminated, or (a child process of this binary leading) is killed with
//! `SIGKILL`. Timed from that event to the old leader's task being dropped and to the new
//! leader's task starting (its first poll), each repetition on a lock of its own, the three
//! kinds interleaved round by round.
//!
//! `min_hold`: the same short call on a pool with and without `min_hold`, interleaved.

use std::process::Stdio;
use std::time::{Duration, Instant};

use pglock::{Leadership, Status};
use sqlx::{Connection as _, PgConnection, PgPool};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::Res;
use crate::stats::Samples;

/// The child process mode: `pglock-bench __failover-candidate URL LOCK HEARTBEAT_MS`.
pub const CANDIDATE: &str = "__failover-candidate";

/// The heartbeat of every candidate; the grace period is pglock's default for it.
pub const HEARTBEAT: Duration = Duration::from_millis(100);

/// pglock's default grace period for [`HEARTBEAT`]: two heartbeats plus 100 ms.
pub fn grace() -> Duration {
    2 * HEARTBEAT + Duration::from_millis(100)
}

/// How a leader goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `Leadership::step_down().await`.
    StepDown,
    /// `pg_terminate_backend` of the leader's session, from a third session.
    Terminate,
    /// `SIGKILL` of the child process that leads.
    Kill,
}

pub const KINDS: &[Kind] = &[Kind::StepDown, Kind::Terminate, Kind::Kill];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::StepDown => "clean step-down (`step_down().await`)",
            Kind::Terminate => "backend terminated (`pg_terminate_backend`)",
            Kind::Kill => "process killed (`SIGKILL` of a child process)",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Kind::StepDown => "step-down",
            Kind::Terminate => "terminate",
            Kind::Kill => "SIGKILL",
        }
    }

    /// Whether the old leader's task lives in this process (so its drop is timed).
    pub fn in_process(self) -> bool {
        self != Kind::Kill
    }
}

/// One repetition, every time in µs after the event.
#[derive(Clone, Debug, Default)]
pub struct Rep {
    /// The old leader's task dropped (in-process kinds).
    pub old_dropped: Option<f64>,
    /// The event's own call returned (`step_down().await`, `pg_terminate_backend`, the kill).
    pub event_done: f64,
    /// The new leader was granted the lock and read how the old one left (its status left
    /// `Campaigning`: `Waiting`, or `Leading` after a clean hand-over).
    pub won: f64,
    /// Its task started (first poll).
    pub started: f64,
    /// `Leading { clean }`.
    pub clean: bool,
}

pub struct Outcome {
    pub kind: Kind,
    pub reps: Vec<Rep>,
}

impl Outcome {
    pub fn samples(&self, of: impl Fn(&Rep) -> Option<f64>) -> Samples {
        let mut samples = Samples::default();
        for rep in &self.reps {
            if let Some(us) = of(rep) {
                samples.push_us(us);
            }
        }
        samples
    }

    /// Repetitions where the new task started before the old one was dropped.
    pub fn overlaps(&self) -> usize {
        self.reps
            .iter()
            .filter(|rep| rep.old_dropped.is_some_and(|dropped| dropped > rep.started))
            .count()
    }
}

/// What a candidate's task and status did, and when.
#[derive(Debug)]
enum Mark {
    Started,
    Dropped,
    Status(Status),
}

/// A candidate's marks, as they arrive (the status watcher and the task run apart, so they may
/// arrive out of order).
struct Marks {
    incoming: UnboundedReceiver<(Mark, Instant)>,
    seen: Vec<(Mark, Instant)>,
}

struct DropMark(UnboundedSender<(Mark, Instant)>);

impl Drop for DropMark {
    fn drop(&mut self) {
        let _ = self.0.send((Mark::Dropped, Instant::now()));
    }
}

/// A candidate in this process whose task and status changes are timestamped.
fn candidate(pool: &PgPool, lock: i64) -> (Leadership, Marks) {
    let (marks, read) = unbounded_channel();
    let task_marks = marks.clone();
    let leadership = pglock::leader(lock)
        .heartbeat(HEARTBEAT)
        .run(pool, move || {
            let marks = task_marks.clone();
            async move {
                let _ = marks.send((Mark::Started, Instant::now()));
                let _dropped = DropMark(marks);
                std::future::pending::<()>().await;
            }
        });
    let mut status = leadership.watch();
    tokio::spawn(async move {
        while status.changed().await.is_ok() {
            let now = Instant::now();
            let seen = *status.borrow_and_update();
            if marks.send((Mark::Status(seen), now)).is_err() {
                break;
            }
        }
    });
    (
        leadership,
        Marks {
            incoming: read,
            seen: Vec::new(),
        },
    )
}

/// The first mark `want` accepts (taken out of the marks), waiting ten seconds at most.
async fn next_mark(
    marks: &mut Marks,
    what: &str,
    want: impl Fn(&Mark) -> bool,
) -> Res<(Mark, Instant)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(i) = marks.seen.iter().position(|(mark, _)| want(mark)) {
            return Ok(marks.seen.remove(i));
        }
        match tokio::time::timeout_at(deadline, marks.incoming.recv()).await {
            Ok(Some(mark)) => marks.seen.push(mark),
            Ok(None) => return Err(format!("failover: {what}: the candidate's marks ended").into()),
            Err(_) => return Err(format!("failover: {what}: not within 10 s").into()),
        }
    }
}

const LOCKS: &str = "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' \
     AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";

/// Polls this database's advisory locks until `ok` accepts them (ten seconds at most).
async fn until_locks(
    admin: &mut PgConnection,
    what: &str,
    ok: impl Fn(&[(i32, bool)]) -> bool,
) -> Res<Vec<(i32, bool)>> {
    let started = Instant::now();
    loop {
        let rows: Vec<(i32, bool)> = sqlx::query_as(LOCKS).fetch_all(&mut *admin).await?;
        if ok(&rows) {
            return Ok(rows);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let pids: Vec<i32> = rows.iter().map(|(pid, _)| *pid).collect();
            let sessions: Vec<(i32, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT pid, state, query FROM pg_stat_activity WHERE pid = ANY($1)",
            )
            .bind(&pids)
            .fetch_all(&mut *admin)
            .await?;
            return Err(format!(
                "failover: waited 10 s for {what}; locks (pid, granted): {rows:?}; \
                 their sessions (pid, state, last statement): {sessions:?}"
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn us_since(event: Instant, at: Instant) -> f64 {
    // Signed: a mark before the event would be a bug worth seeing.
    if at >= event {
        (at - event).as_secs_f64() * 1e6
    } else {
        -((event - at).as_secs_f64() * 1e6)
    }
}

/// The new leader's marks after `event`: won, whether cleanly, started.
async fn new_leader_marks(marks: &mut Marks, event: Instant, rep: &mut Rep) -> Res<()> {
    let (won, won_at) = next_mark(marks, "the new leader wins", |m| {
        matches!(m, Mark::Status(Status::Waiting | Status::Leading { .. }))
    })
    .await?;
    rep.won = us_since(event, won_at);
    let leading = match won {
        Mark::Status(Status::Leading { .. }) => won,
        _ => {
            next_mark(marks, "the new leader leads", |m| {
                matches!(m, Mark::Status(Status::Leading { .. }))
            })
            .await?
            .0
        }
    };
    rep.clean = matches!(leading, Mark::Status(Status::Leading { clean: true }));
    let (_, started) =
        next_mark(marks, "the new task starts", |m| matches!(m, Mark::Started)).await?;
    rep.started = us_since(event, started);
    Ok(())
}

/// One in-process repetition of `kind` on `lock`.
async fn in_process(
    kind: Kind,
    lock: i64,
    pools: &[PgPool; 2],
    admin: &mut PgConnection,
) -> Res<Rep> {
    until_locks(admin, "no advisory locks", <[_]>::is_empty).await?;
    let (old, mut old_marks) = candidate(&pools[0], lock);
    next_mark(&mut old_marks, "the first leader's task starts", |m| {
        matches!(m, Mark::Started)
    })
    .await?;
    let (new, mut new_marks) = candidate(&pools[1], lock);
    let rows = until_locks(admin, "the standby waiting on the lock", |rows| {
        rows.iter().any(|(_, granted)| !granted)
    })
    .await?;
    let leader_pid = rows
        .iter()
        .find(|(_, granted)| *granted)
        .map(|(pid, _)| *pid)
        .ok_or("nobody holds the lock")?;
    let mut rep = Rep::default();
    let mut old = Some(old);
    let event = Instant::now();
    match kind {
        Kind::StepDown => old.take().expect("the old leader").step_down().await,
        Kind::Terminate => {
            let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                .bind(leader_pid)
                .fetch_one(&mut *admin)
                .await?;
        }
        Kind::Kill => unreachable!("not in process"),
    }
    rep.event_done = us_since(event, Instant::now());
    new_leader_marks(&mut new_marks, event, &mut rep).await?;
    let (_, dropped) = next_mark(&mut old_marks, "the old task is dropped", |m| {
        matches!(m, Mark::Dropped)
    })
    .await?;
    rep.old_dropped = Some(us_since(event, dropped));
    // The new leader first, then the old one (campaigning again after a terminated session)
    // once it leads: a candidate that stops while it waits for the lock leaves its wait behind
    // (sqlx's `PgListener` drop sends `UNLISTEN *`, which runs once the lock is granted, and
    // returns the connection to the pool with the lock held).
    new.step_down().await;
    if let Some(old) = old {
        next_mark(&mut old_marks, "the old leader leads again", |m| {
            matches!(m, Mark::Started)
        })
        .await?;
        old.step_down().await;
    }
    Ok(rep)
}

/// One repetition with a child process leading on `lock`, killed.
async fn killed(url: &str, lock: i64, pool: &PgPool, admin: &mut PgConnection) -> Res<Rep> {
    until_locks(admin, "no advisory locks", <[_]>::is_empty).await?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args([
            CANDIDATE,
            url,
            &lock.to_string(),
            &HEARTBEAT.as_millis().to_string(),
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    let said = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .map_err(|_| "the failover child did not lead within 20 s")??;
    if said.as_deref() != Some("leading") {
        return Err(format!("the failover child said {said:?}").into());
    }
    let (new, mut new_marks) = candidate(pool, lock);
    until_locks(admin, "the standby waiting on the lock", |rows| {
        rows.iter().any(|(_, granted)| !granted)
    })
    .await?;
    let mut rep = Rep::default();
    let event = Instant::now();
    child.start_kill()?;
    rep.event_done = us_since(event, Instant::now());
    new_leader_marks(&mut new_marks, event, &mut rep).await?;
    child.wait().await?;
    new.step_down().await;
    Ok(rep)
}

/// `reps` rounds, each running every kind once.
pub async fn run(url: &str, pools: &[PgPool; 2], reps: usize) -> Res<Vec<Outcome>> {
    let mut admin = PgConnection::connect(url).await?;
    let mut outcomes: Vec<Outcome> = KINDS
        .iter()
        .map(|kind| Outcome {
            kind: *kind,
            reps: Vec::new(),
        })
        .collect();
    let mut lock = 0x0fa1_0000_i64;
    for _ in 0..reps {
        for outcome in &mut outcomes {
            lock += 1;
            let rep = match outcome.kind {
                Kind::Kill => killed(url, lock, &pools[1], &mut admin).await?,
                kind => in_process(kind, lock, pools, &mut admin).await?,
            };
            outcome.reps.push(rep);
        }
    }
    let _ = admin.close().await;
    Ok(outcomes)
}

/// The child process: a candidate that prints `leading` when its task starts, until killed.
pub fn candidate_main(args: &[String]) -> ! {
    let [url, lock, heartbeat] = args else {
        eprintln!("usage: pglock-bench {CANDIDATE} URL LOCK HEARTBEAT_MS");
        std::process::exit(2);
    };
    let lock: i64 = lock.parse().expect("LOCK, an integer");
    let heartbeat = Duration::from_millis(heartbeat.parse().expect("HEARTBEAT_MS"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let pool = sqlx::PgPool::connect_lazy(url).expect("a Postgres URL");
        let _leadership = pglock::leader(lock)
            .heartbeat(heartbeat)
            .run(&pool, || async {
                println!("leading");
                std::future::pending::<()>().await;
            });
        std::future::pending::<()>().await;
    });
    unreachable!("a candidate runs until killed")
}

/// `min_hold`'s return latency: the same call with and without it, and the call without it
/// again (its difference from the first is the noise).
pub struct MinHold {
    pub hold: Duration,
    pub plain: Samples,
    pub held: Samples,
    pub plain_again: Samples,
    /// Whether a lock taken with `min_hold` was still held right after its call returned
    /// (checked once, before the rounds).
    pub lingered: bool,
}

const MIN_HOLD: Duration = Duration::from_millis(5);

/// `rounds` rounds on `pool` (a few connections), each making the three calls in a rotating
/// order on locks of their own, then waiting out the hold, so every call finds the pool idle.
pub async fn min_hold(pool: &PgPool, admin_url: &str, rounds: usize) -> Res<MinHold> {
    let mut key = 0x0fa2_0000_i64;
    let mut call = async |held: bool| -> Res<Duration> {
        key += 1;
        let lock = pglock::advisory(key).nowait();
        let lock = if held { lock.min_hold(MIN_HOLD) } else { lock };
        let start = Instant::now();
        let ran = lock
            .try_run(pool, async { Ok::<_, pglock::Error>(()) })
            .await?;
        let elapsed = start.elapsed();
        ran.ok_or("a min_hold bench lock was not acquired")?;
        Ok(elapsed)
    };
    // Warm up, and check once that the lock outlives the call.
    let mut admin = PgConnection::connect(admin_url).await?;
    for _ in 0..50 {
        call(false).await?;
        call(true).await?;
        tokio::time::sleep(MIN_HOLD + Duration::from_millis(3)).await;
    }
    call(true).await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut admin)
    .await?;
    let _ = admin.close().await;
    let mut out = MinHold {
        hold: MIN_HOLD,
        plain: Samples::default(),
        held: Samples::default(),
        plain_again: Samples::default(),
        lingered: held == 1,
    };
    for round in 0..rounds {
        tokio::time::sleep(MIN_HOLD + Duration::from_millis(3)).await;
        for i in 0..3 {
            match (i + round) % 3 {
                0 => out.plain.push(call(false).await?),
                1 => out.held.push(call(true).await?),
                _ => out.plain_again.push(call(false).await?),
            }
        }
    }
    Ok(out)
}

/// Where a hand-over's time goes, each step done by hand on plain connections: a holder, a
/// waiter that listens and waits on the lock as a candidate does, and a third session.
#[derive(Default)]
pub struct Anatomy {
    /// Clean: the holder's `pg_notify` round trip (its step-down notice).
    pub notify: Samples,
    /// Clean: the holder's `pg_advisory_unlock` round trip.
    pub unlock: Samples,
    /// Clean: from sending the unlock to the waiter's `pg_advisory_lock` returning.
    pub unlock_to_granted: Samples,
    /// From sending `pg_terminate_backend(holder)` to the waiter's lock returning.
    pub terminate_to_granted: Samples,
    /// From dropping the holder's connection (its socket closed, as a killed process's is) to
    /// the waiter's lock returning.
    pub close_to_granted: Samples,
    /// After winning: the waiter's `SELECT 1` (to read the notices sent while it waited).
    pub select_1: Samples,
    /// After winning: its `pg_notify` (`won:`) round trip.
    pub won_notify: Samples,
}

#[derive(Clone, Copy)]
enum Handover {
    Clean,
    Terminate,
    Close,
}

pub async fn anatomy(url: &str, reps: usize) -> Res<Anatomy> {
    let mut admin = PgConnection::connect(url).await?;
    let mut out = Anatomy::default();
    let mut key = 0x0fa3_0000_i64;
    for _ in 0..reps {
        for how in [Handover::Clean, Handover::Terminate, Handover::Close] {
            key += 1;
            until_locks(&mut admin, "no advisory locks", <[_]>::is_empty).await?;
            let mut holder = PgConnection::connect(url).await?;
            let holder_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
                .fetch_one(&mut holder)
                .await?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut holder)
                .await?;
            let mut waiter = sqlx::postgres::PgListener::connect(url).await?;
            waiter.listen("pglock_bench_anatomy").await?;
            let waiting = tokio::spawn(async move {
                sqlx::query("SELECT pg_advisory_lock($1)")
                    .bind(key)
                    .execute(&mut waiter)
                    .await?;
                let granted = Instant::now();
                sqlx::query("SELECT 1").execute(&mut waiter).await?;
                let selected = Instant::now();
                sqlx::query("SELECT pg_notify('pglock_bench_anatomy', 'won')")
                    .execute(&mut waiter)
                    .await?;
                let notified = Instant::now();
                drop(waiter);
                Ok::<_, sqlx::Error>((granted, selected - granted, notified - selected))
            });
            until_locks(&mut admin, "the waiter waiting", |rows| {
                rows.iter().any(|(_, granted)| !granted)
            })
            .await?;
            let from = match how {
                Handover::Clean => {
                    let t0 = Instant::now();
                    sqlx::query("SELECT pg_notify('pglock_bench_anatomy', 'down')")
                        .execute(&mut holder)
                        .await?;
                    let t1 = Instant::now();
                    sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(key)
                        .execute(&mut holder)
                        .await?;
                    out.notify.push(t1 - t0);
                    out.unlock.push(t1.elapsed());
                    let _ = holder.close().await;
                    t1
                }
                Handover::Terminate => {
                    let t0 = Instant::now();
                    let _: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
                        .bind(holder_pid)
                        .fetch_one(&mut admin)
                        .await?;
                    drop(holder);
                    t0
                }
                Handover::Close => {
                    let t0 = Instant::now();
                    drop(holder);
                    t0
                }
            };
            let (granted, select_1, won_notify) = waiting.await??;
            let to_granted = granted.saturating_duration_since(from);
            match how {
                Handover::Clean => out.unlock_to_granted.push(to_granted),
                Handover::Terminate => out.terminate_to_granted.push(to_granted),
                Handover::Close => out.close_to_granted.push(to_granted),
            }
            out.select_1.push(select_1);
            out.won_notify.push(won_notify);
        }
    }
    let _ = admin.close().await;
    Ok(out)
}
