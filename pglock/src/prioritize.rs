//! Prioritizing a session by ending whatever blocks it (django-pglock's `pglock.prioritize`).

use std::time::Duration;

use sqlx::{ConnectOptions, PgConnection, PgPool};
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
}

impl Prioritize {
    /// The shortest interval accepted: shorter ones would mostly load the lock manager
    /// (`pg_blocking_pids` takes it exclusively for a moment).
    pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

    /// How often to look for blockers, the first time one interval after the scope starts.
    /// Default 1 s, at least [`Prioritize::MIN_INTERVAL`].
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Whether to keep looking every interval (the default) or only once, one interval in.
    pub fn periodic(mut self, periodic: bool) -> Self {
        self.periodic = periodic;
        self
    }

    /// How to end a blocker: [`Signal::Terminate`] (the default) or [`Signal::Cancel`].
    pub fn signal(mut self, signal: Signal) -> Self {
        self.signal = signal;
        self
    }

    /// Cancel blockers' statements instead of terminating their sessions.
    pub fn cancel(self) -> Self {
        self.signal(Signal::Cancel)
    }

    /// Only end blockers whose transaction (or, outside one, current statement) started at least
    /// `age` ago; younger ones are left alone.
    pub fn older_than(mut self, age: Duration) -> Self {
        self.older_than = Some(age);
        self
    }

    /// Also run the scope under a lock timeout (see [`timeout`](fn@crate::timeout)): the protected
    /// code never waits longer than this for any one lock. Make it longer than the interval, or
    /// the code gives up before the blockers are ended.
    pub fn timeout(mut self, limit: impl Into<Option<Duration>>) -> Self {
        self.timeout = Some(crate::timeout(limit));
        self
    }

    /// The pool whose connection settings the background task connects with. It opens one
    /// connection of its own for the scope's duration (named `pglock prioritize` in
    /// `pg_stat_activity`), outside the pool's count, so a full pool cannot starve it, and
    /// closes it when the scope ends.
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

    fn span(&self) -> tracing::Span {
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
    fn describe(&self) -> String {
        "prioritize".to_owned()
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

/// The background task; aborted if dropped before [`Watcher::stop`].
struct Watcher(Option<JoinHandle<Result<(), Error>>>);

impl Watcher {
    fn start(settings: Prioritize, pool: PgPool, protected: i32) -> Self {
        // In the scope's span (entering runs in it), so its events say whom it protects.
        let watch = tracing::Instrument::in_current_span(watch(settings, pool, protected));
        Watcher(Some(tokio::spawn(watch)))
    }

    /// Stop the task and wait until it is gone (with its connection), returning its error if it
    /// failed.
    async fn stop(mut self) -> Result<(), Error> {
        let task = self.0.take().expect("stopped once");
        task.abort();
        match task.await {
            Ok(result) => result,
            Err(join) if join.is_cancelled() => Ok(()),
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// End blockers of `$1` that pass the filters, with `$signal`, and return those actually
/// signalled, with what they were doing (for the event that reports each: the first `$3`
/// characters of the query). The candidates are materialized first, so no signal is sent
/// before every filter applied, and what is reported is what they were doing before it.
macro_rules! signal_blockers {
    ($signal:literal) => {
        concat!(
            "WITH blockers AS MATERIALIZED (
                SELECT DISTINCT ON (b.pid) b.pid, a.application_name, a.state,
                       extract(epoch FROM now() - coalesce(a.xact_start, a.query_start))::float8
                           AS age,
                       left(a.query, $3) AS query
                FROM unnest(pg_blocking_pids($1)) AS b(pid)
                JOIN pg_stat_activity a ON a.pid = b.pid
                WHERE b.pid <> 0 AND b.pid <> $1 AND b.pid <> pg_backend_pid()
                  AND ($2::float8 IS NULL
                       OR extract(epoch FROM now() - coalesce(a.xact_start, a.query_start)) >= $2))
            SELECT pid, application_name, state, age, query FROM blockers WHERE ",
            $signal,
            "(pid) ORDER BY pid"
        )
    };
}

/// A signalled blocker: pid, `application_name`, state, age in seconds, start of its query.
type Signalled = (
    i32,
    Option<String>,
    Option<String>,
    Option<f64>,
    Option<String>,
);

fn signal_sql(signal: Signal) -> &'static str {
    match signal {
        Signal::Terminate => signal_blockers!("pg_terminate_backend"),
        Signal::Cancel => signal_blockers!("pg_cancel_backend"),
    }
}

async fn watch(settings: Prioritize, pool: PgPool, protected: i32) -> Result<(), Error> {
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
    let mut conn = options.connect().await?;
    let older_than = settings.older_than.map(|age| age.as_secs_f64());
    let mut signal_blockers_of = async |pid: i32| -> Result<Vec<Signalled>, Error> {
        Ok(sqlx::query_as(signal_sql(settings.signal))
            .bind(pid)
            .bind(older_than)
            .bind(crate::telemetry::QUERY_CHARS)
            .fetch_all(&mut conn)
            .await?)
    };
    // Warm the new session up inside the first interval: the first run of the statement
    // prepares it and loads the catalogs it reads, which took longer than the check itself.
    // Blockers of pid 0 (no backend) are none, so this signals nobody.
    signal_blockers_of(0).await?;
    loop {
        ticks.tick().await;
        for (pid, application_name, state, age_seconds, query) in
            signal_blockers_of(protected).await?
        {
            let victim = crate::telemetry::Victim {
                pid,
                application_name: application_name.as_deref(),
                state: state.as_deref(),
                age_seconds,
                query: query.as_deref(),
            };
            crate::telemetry::signalled(protected, settings.signal, &victim);
        }
        if !settings.periodic {
            return Ok(());
        }
    }
}
