//! Prioritizing a session by ending whatever blocks it (django-pglock's `pglock.prioritize`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{ConnectOptions, PgConnection, PgPool};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::scope::{Held, Kind, OneSession, Site};
use crate::timeout::TimeoutHeld;
use crate::{Error, LockTimeout, Session};

/// How [`prioritize`](fn@prioritize) ends a blocking session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// End the blocking backend's session (`pg_terminate_backend`): its locks go at once, its
    /// transaction rolls back, and its client sees SQLSTATE 57P01. The default.
    #[default]
    Terminate,
    /// Cancel the blocking backend's current statement (`pg_cancel_backend`, SQLSTATE 57014 for
    /// its client). Frees the lock only if that statement's transaction ends with it (an
    /// implicit one, or a client that rolls back): a session idle in a transaction is not freed.
    Cancel,
}

/// Start building a prioritize scope: run some code, and end the sessions that block it.
///
/// While the scope runs, a background task on a second connection looks up the backends
/// blocking the protected session (`pg_blocking_pids`) every interval and terminates (or
/// cancels) them. Use it for code that must not queue behind others, such as a migration that
/// needs an `ACCESS EXCLUSIVE` lock on a busy table.
///
/// ```no_run
/// use std::time::Duration;
///
/// # async fn migrate(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// let mut conn = pool.acquire().await?;
/// pglock::prioritize()
///     .interval(Duration::from_millis(100))
///     .older_than(Duration::from_secs(5)) // leave blockers younger than 5 s alone
///     .timeout(Duration::from_secs(10))   // and never wait more than 10 s for one lock
///     .watcher(pool)
///     .scope(&mut conn, async |conn| {
///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
///         Ok::<_, pglock::Error>(())
///     })
///     .await
/// # }
/// ```
pub fn prioritize() -> Prioritize {
    Prioritize {
        interval: Duration::from_secs(1),
        periodic: true,
        signal: Signal::Terminate,
        older_than: None,
        timeout: None,
        watcher: None,
        dry_run: false,
        cancel_first: None,
        roots_only: false,
        report: None,
    }
}

/// A prioritize scope to run. Built by [`prioritize`](fn@prioritize).
#[derive(Clone, Debug)]
pub struct Prioritize {
    interval: Duration,
    periodic: bool,
    signal: Signal,
    older_than: Option<Duration>,
    timeout: Option<LockTimeout>,
    watcher: Option<PgPool>,
    dry_run: bool,
    cancel_first: Option<Duration>,
    roots_only: bool,
    report: Option<PrioritizeReport>,
}

impl Prioritize {
    /// The shortest interval accepted: shorter ones would mostly load the lock manager
    /// (`pg_blocking_pids` takes it exclusively for a moment).
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

    /// How often to look for blockers, the first time one interval after the scope starts.
    /// Default 1 s, at least [`Prioritize::MIN_INTERVAL`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .interval(Duration::from_millis(100))
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Whether to keep looking every interval (the default) or only once, one interval in.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .periodic(false)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn periodic(mut self, periodic: bool) -> Self {
        self.periodic = periodic;
        self
    }

    /// How to end a blocker: [`Signal::Terminate`] (the default) or [`Signal::Cancel`].
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .signal(pglock::Signal::Cancel)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn signal(mut self, signal: Signal) -> Self {
        self.signal = signal;
        self
    }

    /// Cancel blockers' statements instead of terminating their sessions.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .cancel()
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cancel(self) -> Self {
        self.signal(Signal::Cancel)
    }

    /// Only end blockers whose transaction (or, outside one, current statement) started at least
    /// `age` ago; younger ones are left alone.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .older_than(Duration::from_secs(10))
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }

    /// Also run the scope under a lock timeout (see [`timeout`](fn@crate::timeout)): the protected
    /// code never waits longer than this for any one lock. Make it longer than the interval, or
    /// the code gives up before the blockers are ended.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .timeout(Duration::from_secs(30))
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.timeout = Some(crate::timeout(limit));
        self
    }

    /// Rehearse: look for blockers as a real run would, and report (in `tracing`, target
    /// `pglock`, and to a [`report`](Prioritize::report)) the sessions it would have signalled
    /// and how, without signalling any. With [`cancel_first`](Prioritize::cancel_first), a
    /// blocker still there after the grace period is reported as one it would have terminated.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .dry_run(true)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Cancel a blocker's statement first, and terminate its session only if it still blocks
    /// `grace` after the cancel (a session idle in a transaction is not freed by a cancel; a
    /// long query usually is, and its session survives).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .cancel_first(Duration::from_secs(2))
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn cancel_first(mut self, grace: Duration) -> Self {
        self.cancel_first = Some(grace);
        self
    }

    /// Signal only the blockers that are not waiting for a lock themselves (the roots of the
    /// queue). A session that waits is usually another migration or the application's own
    /// queue behind the real culprit; it goes on once the root is gone.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .roots_only(true)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn roots_only(mut self, roots_only: bool) -> Self {
        self.roots_only = roots_only;
        self
    }

    /// Record every session the scope signals (or, in a [`dry_run`](Prioritize::dry_run), would
    /// signal) in `report`, which the caller keeps a clone of.
    ///
    /// ```no_run
    /// # async fn rehearse(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let report = pglock::PrioritizeReport::new();
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .dry_run(true)
    ///     .report(&report)
    ///     .timeout(std::time::Duration::from_secs(3))
    ///     .watcher(pool)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await
    ///     .ok();
    /// println!("would have signalled {:?}", report.pids());
    /// # Ok(()) }
    /// ```
    pub fn report(mut self, report: &PrioritizeReport) -> Self {
        self.report = Some(report.clone());
        self
    }

    /// Whether a watcher pool was given.
    pub(crate) fn has_watcher(&self) -> bool {
        self.watcher.is_some()
    }

    /// The pool whose connection settings the background task connects with. It opens one
    /// connection of its own for the scope's duration (named `pglock prioritize` in
    /// `pg_stat_activity`), outside the pool's count, so a full pool cannot starve it, and
    /// closes it when the scope ends.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .watcher(pool)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn watcher(mut self, pool: &PgPool) -> Self {
        self.watcher = Some(pool.clone());
        self
    }

    /// Run `body` on `db`'s session while ending the sessions that block it.
    ///
    /// The background task stops when the scope ends, however it ends: `body` returning,
    /// panicking, or this future being dropped. Its connection closes with it.
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] before anything runs: no [`watcher`](Prioritize::watcher)
    ///   pool, an interval under [`Prioritize::MIN_INTERVAL`], or a bad lock timeout;
    /// * [`Error::Prioritize`] when the background task failed (it could not connect, or was not
    ///   allowed to signal a blocker: that needs the blocker's role, `pg_signal_backend`, or a
    ///   superuser) and `body` succeeded; when `body` failed too, its error is returned and the
    ///   task's is logged;
    /// * `body`'s error, or a database error reading the session's backend pid.
    ///
    /// # Cancel safety
    /// Dropping this future stops the background task (it is aborted) and closes its connection.
    /// What it leaves on `db`'s session is what `body` (and, with [`timeout`](Prioritize::timeout),
    /// a lock timeout scope) leaves: see [`LockTimeout::scope`].
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn scope<'c, T, E>(
        self,
        db: impl Session<'c>,
        body: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        crate::scope::on_session(self, db, body).await
    }
}

impl<H: OneSession> Kind<H> for Prioritize {
    type Held = PrioritizeHeld;

    /// Check the settings, start the background task, and set the lock timeout if there is one.
    async fn enter(self, site: &mut H) -> Result<PrioritizeHeld, Error> {
        let Some(pool) = self.watcher.clone() else {
            return Err(Error::InvalidArgument(
                "prioritize needs a pool for its background connection: call .watcher(&pool)"
                    .into(),
            ));
        };
        if self.interval < Prioritize::MIN_INTERVAL {
            return Err(Error::InvalidArgument(format!(
                "a prioritize interval of {:?} is under the minimum of {:?}",
                self.interval,
                Prioritize::MIN_INTERVAL
            )));
        }
        // Checked before anything starts: a bad limit is a mistake, not a server's answer.
        let setting = self.timeout.map(|limit| limit.setting()).transpose()?;
        let Some(mut conn) = site.session() else {
            return Err(Error::InvalidArgument(
                "prioritize protects one session, and a pool has many: pass a connection".into(),
            ));
        };
        let protected: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await?;
        let watcher = Watcher::start(self, pool, protected);
        // Should this fail, `watcher` is dropped, which aborts the task.
        let timeout = match setting {
            Some(setting) => Some(TimeoutHeld::set(&setting, conn).await?),
            None => None,
        };
        Ok(PrioritizeHeld { watcher, timeout })
    }

    fn span(&self) -> Option<tracing::Span> {
        crate::telemetry::prioritize_span(self.interval, self.signal)
    }
}

/// A protected session: the background task, and the lock timeout set with it. Abandoned, the
/// task is aborted.
pub struct PrioritizeHeld {
    watcher: Watcher,
    timeout: Option<TimeoutHeld>,
}

impl Held for PrioritizeHeld {
    fn describe(&self) -> &'static str {
        "prioritize"
    }

    /// Restore the lock timeout, then stop the background task: the task's failure is
    /// reported as [`Error::Prioritize`].
    async fn end<H: Site>(self, site: &mut H, body_failed: bool) -> Result<(), Error> {
        let PrioritizeHeld { watcher, timeout } = self;
        let restored = match timeout {
            Some(timeout) => timeout.end(site, body_failed).await,
            None => Ok(()),
        };
        let stopped = watcher.stop().await.map_err(|source| Error::Prioritize {
            source: Box::new(source),
        });
        match (restored, stopped) {
            (Ok(()), stopped) => stopped,
            (Err(error), Ok(())) => Err(error),
            (Err(error), Err(stopped)) => {
                tracing::error!(error = %stopped, "pglock: prioritize's background task failed");
                Err(error)
            }
        }
    }

    fn abandon<H: Site>(self, site: &mut H) {
        drop(self.watcher);
        if let Some(timeout) = self.timeout {
            Held::abandon(timeout, site);
        }
    }
}

/// How long stopping waits for a check in flight before aborting it.
const STOP_PATIENCE: Duration = Duration::from_secs(5);

/// The background task; aborted if dropped before [`Watcher::stop`].
struct Watcher(Option<(Task, oneshot::Sender<()>)>);

/// The task itself, which returns its error if it failed.
type Task = JoinHandle<Result<(), Error>>;

impl Watcher {
    fn start(settings: Prioritize, pool: PgPool, protected: i32) -> Self {
        let (stop, stopped) = oneshot::channel();
        // In the scope's span (entering runs in it), so its events say whom it protects.
        let watch = tracing::Instrument::in_current_span(watch(settings, pool, protected, stopped));
        let task = tokio::spawn(watch);
        Watcher(Some((task, stop)))
    }

    /// Stop the task and wait until it is gone (with its connection), returning its error if it
    /// failed. A check in flight is finished first, so that every signal sent is reported.
    async fn stop(mut self) -> Result<(), Error> {
        let (mut task, stop) = self.0.take().expect("stopped once");
        drop(stop);
        // A check that does not come back (a connection that stalled) is not waited for long.
        let ended = match tokio::time::timeout(STOP_PATIENCE, &mut task).await {
            Ok(ended) => ended,
            Err(_) => {
                task.abort();
                task.await
            }
        };
        match ended {
            Ok(result) => result,
            Err(join) if join.is_cancelled() => Ok(()),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some((task, _)) = self.0.take() {
            task.abort();
        }
    }
}

/// What prioritize did, or in a dry run would have done, to the sessions blocking its scope: a
/// shared record (clones share it) to give to [`Prioritize::report`] and read after the scope.
#[derive(Clone, Debug, Default)]
pub struct PrioritizeReport(Arc<Mutex<Vec<Signalled>>>);

impl PrioritizeReport {
    /// An empty report.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let report = pglock::PrioritizeReport::new();
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .dry_run(true)
    ///     .report(&report)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// println!("would have signalled {:?}", report.pids());
    /// # Ok(()) }
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Every signal, in the order they were sent (or would have been).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let report = pglock::PrioritizeReport::new();
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .dry_run(true)
    ///     .report(&report)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// for signal in report.signals() {
    ///     println!("{signal:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn signals(&self) -> Vec<Signalled> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The pids signalled (or that would have been), each once, in ascending order.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let report = pglock::PrioritizeReport::new();
    /// let mut conn = pool.acquire().await?;
    /// pglock::prioritize()
    ///     .dry_run(true)
    ///     .report(&report)
    ///     .scope(&mut conn, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// println!("would have signalled {:?}", report.pids());
    /// # Ok(()) }
    /// ```
    pub fn pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self.signals().iter().map(|s| s.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    fn push(&self, signalled: Signalled) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(signalled);
    }
}

/// One blocking session prioritize signalled, or in a dry run would have, with what
/// `pg_stat_activity` said of it just before.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Signalled {
    /// The blocker's backend pid.
    pub pid: i32,
    /// How it was (or would have been) ended.
    pub signal: Signal,
    /// Whether this was a rehearsal: nothing was sent.
    pub dry_run: bool,
    /// Its role.
    pub user: Option<String>,
    /// Its `application_name`.
    pub application_name: Option<String>,
    /// Its current (or last) statement, cut to 200 characters.
    pub query: Option<String>,
}

/// A blocker signalled, with what `pg_stat_activity` said of it.
type Victim = (
    i32,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<f64>,
);

/// The blockers of `$1` that pass the filters (`$2`: minimum age in seconds; `$3`: only those not
/// waiting themselves), each with whether it is to be terminated (`$5`: all of them; `$6`: these
/// pids) rather than cancelled; unless `$4` (a dry run), each is signalled so, and only those
/// actually signalled are returned. The candidates are materialized first, so no signal is sent
/// before every filter applied.
const SIGNAL_BLOCKERS: &str = "
    WITH blockers AS MATERIALIZED (
        SELECT DISTINCT ON (b.pid) b.pid, a.usename::text AS usename, a.application_name,
               a.state, left(a.query, 200) AS query,
               extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::float8 AS age
        FROM unnest(pg_blocking_pids($1)) AS b(pid)
        JOIN pg_stat_activity a ON a.pid = b.pid
        WHERE b.pid <> 0 AND b.pid <> $1 AND b.pid <> pg_backend_pid()
          AND ($2::float8 IS NULL
               OR extract(epoch FROM now() - coalesce(a.xact_start, a.query_start)) >= $2)
          AND (NOT $3 OR cardinality(pg_blocking_pids(b.pid)) = 0)),
    decided AS MATERIALIZED (
        SELECT *, ($5 OR pid = ANY($6::int4[])) AS terminate FROM blockers)
    SELECT pid, terminate, usename, application_name, state, query, age FROM decided
    WHERE CASE WHEN $4 THEN true
               WHEN terminate THEN pg_terminate_backend(pid)
               ELSE pg_cancel_backend(pid) END
    ORDER BY pid";

/// `work`'s output, or `None` if `stopped` resolves first (it is polled first). A two-way
/// `select!` by hand, so that the library needs no tokio `macros` feature.
async fn unless_stopped<F: Future>(
    work: F,
    stopped: &mut oneshot::Receiver<()>,
) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if std::pin::Pin::new(&mut *stopped).poll(cx).is_ready() {
            return std::task::Poll::Ready(None);
        }
        work.as_mut().poll(cx).map(Some)
    })
    .await
}

async fn watch(
    settings: Prioritize,
    pool: PgPool,
    protected: i32,
    mut stopped: oneshot::Receiver<()>,
) -> Result<(), Error> {
    // The first check is due one interval after the scope began, not after the connection is
    // made: connecting (a few ms) happens inside the first interval.
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + settings.interval,
        settings.interval,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let options = pool
        .connect_options()
        .as_ref()
        .clone()
        .application_name("pglock prioritize");
    let Some(conn) = unless_stopped(options.connect(), &mut stopped).await else {
        return Ok(());
    };
    let mut conn = conn?;
    let older_than = settings.older_than.map(|age| age.as_secs_f64());
    let terminate_all = settings.signal == Signal::Terminate && settings.cancel_first.is_none();
    let dry_run = settings.dry_run;
    let roots_only = settings.roots_only;
    let mut signal_blockers_of =
        async |pid: i32, terminate: &[i32]| -> Result<Vec<Victim>, Error> {
            Ok(sqlx::query_as(SIGNAL_BLOCKERS)
                .bind(pid)
                .bind(older_than)
                .bind(roots_only)
                .bind(dry_run)
                .bind(terminate_all)
                .bind(terminate)
                .fetch_all(&mut conn)
                .await?)
        };
    // Warm the new session up inside the first interval: the first run of the statement
    // prepares it and loads the catalogs it reads, which took longer than the check itself.
    // Blockers of pid 0 (no backend) are none, so this signals nobody.
    match unless_stopped(signal_blockers_of(0, &[]), &mut stopped).await {
        Some(warmed) => warmed?,
        None => return Ok(()),
    };
    // With `cancel_first`: when each blocker was (or in a dry run would have been) cancelled.
    let mut cancelled: HashMap<i32, tokio::time::Instant> = HashMap::new();
    loop {
        // Told to stop (the sender is dropped) between checks only: a check runs to its end.
        if unless_stopped(ticks.tick(), &mut stopped).await.is_none() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let overdue: Vec<i32> = match settings.cancel_first {
            Some(grace) => cancelled
                .iter()
                .filter(|(_, at)| now.duration_since(**at) >= grace)
                .map(|(pid, _)| *pid)
                .collect(),
            None => Vec::new(),
        };
        let signalled = signal_blockers_of(protected, &overdue).await?;
        if settings.cancel_first.is_some() {
            // Sessions no longer blocking are forgotten: a pid may come back as a new session.
            cancelled.retain(|pid, _| signalled.iter().any(|victim| victim.0 == *pid));
        }
        for (pid, terminate, user, application_name, state, query, age) in signalled {
            let signal = if terminate {
                Signal::Terminate
            } else {
                Signal::Cancel
            };
            if settings.cancel_first.is_some() && !terminate {
                cancelled.entry(pid).or_insert(now);
            }
            let victim = crate::telemetry::Victim {
                pid,
                user: user.as_deref(),
                application_name: application_name.as_deref(),
                state: state.as_deref(),
                age_seconds: age,
                query: query.as_deref(),
            };
            crate::telemetry::signalled(protected, signal, dry_run, &victim);
            if let Some(report) = &settings.report {
                report.push(Signalled {
                    pid,
                    signal,
                    dry_run,
                    user,
                    application_name,
                    query,
                });
            }
        }
        if !settings.periodic {
            return Ok(());
        }
    }
}
