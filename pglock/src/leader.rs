//! Leader election on a session-level advisory lock: one replica leads and runs a task, the
//! others wait on the lock, and the server grants it to the next one the moment the leader's
//! session ends.

use std::time::Duration;

use std::sync::{Arc, Mutex, PoisonError};

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::advisory::{beat, bind_key, session_lock_statements};
use crate::race::{Either::*, race};
use crate::telemetry::{self, Elected};
use crate::{AdvisoryKey, Error, LockId};

/// Start building a leader election on `id` (a string, hashed as django-pglock hashes it, an
/// integer or a pair, as for [`advisory`](fn@crate::advisory)).
///
/// ```no_run
/// # async fn relay_outbox(pool: sqlx::PgPool) {}
/// # async fn example(pool: sqlx::PgPool) {
/// // Every replica campaigns; one relays the outbox, and another takes over when it goes.
/// let leadership = pglock::leader("outbox-relay").run(&pool, {
///     let pool = pool.clone();
///     move || relay_outbox(pool.clone())
/// });
/// // ... on shutdown: hand over at once, cleanly.
/// leadership.step_down().await;
/// # }
/// ```
pub fn leader(id: impl Into<LockId>) -> Leader {
    Leader {
        id: id.into(),
        heartbeat: DEFAULT_HEARTBEAT,
        grace: None,
    }
}

/// How often a leader checks its session, unless [`Leader::heartbeat`] says otherwise.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// A leader election to campaign in. Built by [`leader`].
///
/// # How it works
/// Each candidate waits for a session-level advisory lock on a connection of its own (opened
/// with the pool's settings, outside the pool's count). The server grants it to one; that one
/// leads, and runs the task given to [`run`](Leader::run) until it loses the lock or steps down.
/// The others keep waiting on the server, without polling, and the next one is granted the lock
/// the moment the leader's session ends.
///
/// # Leaders never overlap
/// A leader checks its session every [heartbeat](Leader::heartbeat), and drops its task as soon
/// as a check fails or goes unanswered for one interval, so its task is gone at most two
/// heartbeats after its session ended. When the server ends a leader's session (terminated,
/// crashed, a cut network noticed), the next candidate is granted the lock at once, so it waits
/// a [grace period](Leader::grace) (two heartbeats, plus a little) before starting its task.
///
/// A leader that [steps down](Leadership::step_down) drops its task, then says so (a `NOTIFY`
/// to the candidates), then unlocks: the candidate granted the lock reads that it was a clean
/// hand-over and starts at once, with no grace period. Use the same heartbeat (or grace) on
/// every replica.
#[derive(Clone, Debug)]
pub struct Leader {
    id: LockId,
    heartbeat: Duration,
    grace: Option<Duration>,
}

/// Where a campaign stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// Waiting for the lock (or connecting to wait for it).
    Campaigning,
    /// Holding the lock, waiting out the grace period before the task starts (the previous
    /// leader did not hand over cleanly, so its task may still be running).
    Waiting,
    /// Leading: the task runs. `clean` says whether the previous leader handed over cleanly
    /// (so no grace period was waited).
    Leading {
        /// Whether the previous leader stepped down and said so.
        clean: bool,
    },
    /// Stepped down, or stopped: no longer campaigning.
    Stopped,
}

impl Leader {
    /// How often the leader checks its session (default 1 s). Each check is a `SELECT 1` that
    /// must be answered within one interval; it also keeps the session from looking idle to
    /// `idle_session_timeout` and reapers.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let leadership = pglock::leader("outbox-relay")
    ///     .heartbeat(Duration::from_millis(500))
    ///     .run(pool, || async { /* relay */ });
    /// leadership.step_down().await;
    /// # Ok(()) }
    /// ```
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval.max(crate::MIN_HEARTBEAT);
        self
    }

    /// How long a new leader waits before starting its task when the previous leader did not
    /// hand over cleanly. Default: twice the heartbeat plus 100 ms, the longest the previous
    /// leader's task can outlive its session if it used the same heartbeat.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let leadership = pglock::leader("outbox-relay")
    ///     .grace(Duration::from_secs(2))
    ///     .run(pool, || async { /* relay */ });
    /// leadership.step_down().await;
    /// # Ok(()) }
    /// ```
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }

    fn grace_period(&self) -> Duration {
        self.grace
            .unwrap_or(2 * self.heartbeat + Duration::from_millis(100))
    }

    /// Campaign, with a connection made from `pool`'s settings, and run `task()` whenever this
    /// process leads: started when leadership is won, dropped (at its pending `.await`) when
    /// it is lost, started again on re-election. A task that returns by itself leaves the
    /// leadership held until it is lost or stepped down.
    ///
    /// Campaigning goes on in a task spawned on the current tokio runtime until
    /// [`step_down`](Leadership::step_down) or the [`Leadership`] is dropped. Connection
    /// failures are retried every heartbeat, and logged.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let leadership = pglock::leader("outbox-relay").run(pool, || async {
    ///     // Runs while this replica leads; dropped when it stops leading.
    ///     std::future::pending::<()>().await
    /// });
    /// // ... on shutdown:
    /// leadership.step_down().await;
    /// # Ok(()) }
    /// ```
    pub fn run<F, Fut>(self, pool: &PgPool, task: F) -> Leadership
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (status, watching) = watch::channel(Status::Campaigning);
        let (stop, stopped) = oneshot::channel();
        let waiting = Waiting::new(self.id.clone());
        let campaign = tokio::spawn(campaign(
            self,
            pool.clone(),
            task,
            status,
            stopped,
            waiting.clone(),
        ));
        Leadership {
            status: watching,
            stop: Some(stop),
            campaign: Some(campaign),
            waiting,
        }
    }
}

/// A campaign in a leader election: whether this process leads, and the way to step down.
/// Dropping it stops campaigning too, but abruptly (the task is dropped and the connection
/// closed, so the next leader waits out the grace period): prefer
/// [`step_down`](Leadership::step_down).
pub struct Leadership {
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    campaign: Option<JoinHandle<()>>,
    waiting: Waiting,
}

/// The campaign's connection while it waits for the lock: its own one-connection pool, and the
/// waiting backend's pid. A campaign stopped mid-wait must end that wait on the server, or the
/// lock would be granted to a connection nobody uses (sqlx returns a listener's connection to
/// its pool after `UNLISTEN`, which runs once the wait ends).
#[derive(Clone)]
struct Waiting {
    /// The lock waited for, to report a wait that could not be ended.
    lock: LockId,
    on: Arc<Mutex<Option<(PgPool, i32)>>>,
}

impl Waiting {
    fn new(lock: LockId) -> Self {
        Waiting {
            lock,
            on: Arc::default(),
        }
    }

    fn set(&self, pool: &PgPool, pid: i32) {
        *self.on.lock().unwrap_or_else(PoisonError::into_inner) = Some((pool.clone(), pid));
    }

    fn clear(&self) {
        self.on
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// End the wait, if one is under way: cancel its statement from a connection of its own,
    /// and close its pool (which closes the connection once sqlx has done with it).
    async fn abandon(&self) {
        let Some((pool, pid)) = self
            .on
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let cancelled = match PgConnection::connect_with(&pool.connect_options()).await {
            Ok(mut conn) => {
                let cancelled = sqlx::query("SELECT pg_cancel_backend($1)")
                    .bind(pid)
                    .execute(&mut conn)
                    .await;
                let _ = conn.close().await;
                cancelled.map(drop)
            }
            Err(error) => Err(error),
        };
        if let Err(error) = cancelled {
            telemetry::wait_not_cancelled(&self.lock, pid, &error);
        }
        pool.close().await;
    }
}

impl Leadership {
    /// Whether this process leads now (its task runs).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let leadership = pglock::leader("outbox-relay").run(pool, || async {});
    /// println!("leading: {}", leadership.is_leader());
    /// # Ok(()) }
    /// ```
    pub fn is_leader(&self) -> bool {
        matches!(*self.status.borrow(), Status::Leading { .. })
    }

    /// Where the campaign stands now.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let leadership = pglock::leader("outbox-relay").run(pool, || async {});
    /// println!("{:?}", leadership.status());
    /// # Ok(()) }
    /// ```
    pub fn status(&self) -> Status {
        *self.status.borrow()
    }

    /// A receiver that sees every change of [`Status`] (`changed().await`).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let leadership = pglock::leader("outbox-relay").run(pool, || async {});
    /// let mut status = leadership.watch();
    /// while status.changed().await.is_ok() {
    ///     println!("now {:?}", *status.borrow());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Step down at once and cleanly, and stop campaigning: the task is dropped, the other
    /// candidates are told, and the lock is released, so the next leader starts without a
    /// grace period. Returns once all that is done.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let leadership = pglock::leader("outbox-relay").run(pool, || async {});
    /// leadership.step_down().await; // releases the lock at once, for another replica to lead
    /// # Ok(()) }
    /// ```
    pub async fn step_down(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(campaign) = self.campaign.take() {
            let _ = campaign.await;
        }
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(campaign) = self.campaign.take() {
            campaign.abort();
            let waiting = self.waiting.clone();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move { waiting.abandon().await });
            }
        }
    }
}

/// The channel candidates for `key` listen on.
fn channel(key: AdvisoryKey) -> String {
    let (classid, objid) = key.to_pg_locks_id();
    format!(
        "pglock_leader_{classid}_{objid}_{}",
        key.pg_locks_objsubid()
    )
}

async fn campaign<F, Fut>(
    leader: Leader,
    pool: PgPool,
    mut task: F,
    status: watch::Sender<Status>,
    mut stop: oneshot::Receiver<()>,
    waiting: Waiting,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Since when this process campaigns: since it began, or since its last term ended.
    let mut campaigning = Instant::now();
    loop {
        status.send_replace(Status::Campaigning);
        let term = match race(elect(&leader, &pool, &waiting, campaigning), &mut stop).await {
            First(term) => term,
            Second(_) => {
                waiting.abandon().await;
                break;
            }
        };
        let mut term = match term {
            Ok(term) => term,
            Err(error) => {
                telemetry::campaign_failed(&leader.id, &error, leader.heartbeat);
                match race(tokio::time::sleep(leader.heartbeat), &mut stop).await {
                    First(()) => continue,
                    Second(_) => break,
                }
            }
        };
        if !term.clean {
            status.send_replace(Status::Waiting);
            let grace = leader.grace_period();
            term.elected.waits_out(&term.id, grace);
            let waited = match race(term.watch(leader.heartbeat, grace), &mut stop).await {
                First(watched) => Some(watched),
                Second(_) => None,
            };
            match waited {
                Some(Ok(())) => {}
                Some(Err(error)) => {
                    term.elected.lost(&term.id, &error);
                    campaigning = Instant::now();
                    continue;
                }
                None => {
                    term.step_down().await;
                    break;
                }
            }
        }
        term.elected.leads(&term.id);
        status.send_replace(Status::Leading { clean: term.clean });
        let mut running = Running(tokio::spawn(task()));
        let ended = match race(term.lost(leader.heartbeat), &mut stop).await {
            First(lost) => Err(lost),
            Second(_) => Ok(()),
        };
        // The task goes first, whatever happened: no leader's task outlives its leadership.
        running.0.abort();
        let _ = (&mut running.0).await;
        match ended {
            Ok(()) => {
                term.step_down().await;
                break;
            }
            Err(lost) => {
                term.elected.lost(&term.id, &lost);
                campaigning = Instant::now();
            }
        }
    }
    status.send_replace(Status::Stopped);
}

/// The leader's task, aborted when this is dropped: also when the campaign itself is dropped
/// (its `Leadership` was), since a dropped `JoinHandle` would let the task run on.
struct Running(JoinHandle<()>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One term of leadership: the connection holding the lock.
struct Term {
    listener: PgListener,
    /// The listener's pool, closed when the term ends.
    own: PgPool,
    key: AdvisoryKey,
    id: LockId,
    pid: i32,
    /// Whether the previous leader handed over cleanly.
    clean: bool,
    /// What the term's events and metrics say about it.
    elected: Elected,
}

/// Connect, listen for hand-overs, wait for the lock, and read how the previous leader left.
/// `campaigning` is when this process began campaigning for the term.
async fn elect(
    leader: &Leader,
    pool: &PgPool,
    waiting: &Waiting,
    campaigning: Instant,
) -> Result<Term, Error> {
    let key = leader.id.key();
    let channel = channel(key);
    // A pool of one connection of its own: outside the caller's pool's count, and closed with
    // the term.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(pool.connect_options().as_ref().clone());
    let mut listener = PgListener::connect_with(&own).await?;
    listener.ignore_pool_close_event(true);
    listener.listen(&channel).await?;
    // Wait as long as it takes, whatever the role's lock_timeout; and (Postgres 14+) let the
    // server notice within 50 ms if this process goes away while waiting.
    let (pid, standby): (i32, bool) = sqlx::query_as(
        "SELECT pg_backend_pid(), pg_is_in_recovery() FROM \
         (SELECT set_config('lock_timeout', '0', false)) AS s",
    )
    .fetch_one(&mut listener)
    .await?;
    if standby {
        return Err(Error::Standby {
            lock: leader.id.clone(),
        });
    }
    if let Ok(check) = sqlx::query("SET client_connection_check_interval = '50ms'")
        .execute(&mut listener)
        .await
    {
        let _ = check;
    }
    // The leader now, if any: the one whose hand-over would count.
    let mut previous = holder(&mut listener, key).await?;
    waiting.set(&own, pid);
    let (lock, _) = session_lock_statements(key);
    bind_key(sqlx::query(lock), key)
        .execute(&mut listener)
        .await?;
    waiting.clear();
    // The notifications sent while waiting reach this connection when it next goes idle:
    // one more round trip, and they are buffered.
    sqlx::query("SELECT 1").execute(&mut listener).await?;
    let mut clean = false;
    while let Ok(Ok(Some(notice))) = tokio::time::timeout(Duration::ZERO, listener.try_recv()).await
    {
        if notice.process_id() as i32 == pid {
            continue;
        }
        let (what, who) = notice.payload().split_once(':').unwrap_or(("", ""));
        let who: Option<i32> = who.parse().ok();
        match what {
            "won" => {
                previous = who;
                clean = false;
            }
            "down" if who.is_some() && who == previous => clean = true,
            _ => {}
        }
    }
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(&channel)
        .bind(format!("won:{pid}"))
        .execute(&mut listener)
        .await?;
    Ok(Term {
        listener,
        own,
        key,
        id: leader.id.clone(),
        pid,
        clean,
        elected: Elected::won(&leader.id, pid, clean, campaigning.elapsed()),
    })
}

/// The backend holding `key`, if any.
async fn holder(listener: &mut PgListener, key: AdvisoryKey) -> Result<Option<i32>, Error> {
    let (classid, objid) = key.to_pg_locks_id();
    Ok(sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = $1::int8::oid AND objid = $2::int8::oid AND objsubid = $3",
    )
    .bind(i64::from(classid))
    .bind(i64::from(objid))
    .bind(key.pg_locks_objsubid())
    .fetch_optional(listener)
    .await?)
}

impl Drop for Term {
    /// The term's connection goes with it: its pool is closed (once sqlx has run `UNLISTEN` on
    /// the connection, or found it broken), so no session of a past term lingers.
    fn drop(&mut self) {
        let own = self.own.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { own.close().await });
        }
    }
}

impl Term {
    /// Check the session every `every` for `for_at_most`: `Ok` when that time is up, the loss
    /// otherwise (then the connection is left to close).
    async fn watch(&mut self, every: Duration, for_at_most: Duration) -> Result<(), Error> {
        let until = Instant::now().checked_add(for_at_most);
        let mut beats = tokio::time::interval_at(Instant::now() + every, every);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next = beats.tick();
            match until {
                Some(until) => {
                    if let Second(()) = race(next, tokio::time::sleep_until(until)).await {
                        return Ok(());
                    }
                }
                None => {
                    next.await;
                }
            }
            if let Err(source) = beat(&mut self.listener, every).await {
                return Err(Error::Lost {
                    lock: self.id.clone(),
                    source,
                });
            }
        }
    }

    /// Check the session every `every` until a check fails: the loss.
    async fn lost(&mut self, every: Duration) -> Error {
        loop {
            // Without a deadline, the watch ends only with a loss.
            if let Err(lost) = self.watch(every, Duration::MAX).await {
                return lost;
            }
        }
    }

    /// Say this leader's task has stopped, then release the lock.
    async fn step_down(mut self) {
        let said = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel(self.key))
            .bind(format!("down:{}", self.pid))
            .execute(&mut self.listener)
            .await
            .map(drop);
        let (_, unlock) = session_lock_statements(self.key);
        let unlocked = bind_key(sqlx::query(unlock), self.key)
            .bind(self.pid)
            .execute(&mut self.listener)
            .await
            .map(drop);
        self.elected.stepped_down(&self.id, &said, &unlocked);
    }
}
