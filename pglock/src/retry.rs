//! Lock-timeout retries: run a migration step in a transaction with a short `lock_timeout`, and
//! when it times out roll back, wait, and try again on an escalating schedule, so that the
//! application's queries never queue behind the step for longer than one short timeout.
//!
//! The shape is GitLab's `WithLockRetries` and strong_migrations' `lock_timeout_retries`: see
//! [`DEFAULT_SCHEDULE`] for the numbers and where they come from.

use std::hash::{BuildHasher, Hasher};
use std::ops::ControlFlow;
use std::panic::resume_unwind;
use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use tokio::time::Instant;

use crate::prioritize::PrioritizeHeld;
use crate::scope::{Held, Kind};
use crate::timeout::milliseconds;
use crate::unwind::catch_panic;
use crate::{Db, Error, Prioritize};

/// One attempt of a [`retry_locks`] schedule: the `lock_timeout` the attempt runs under, and how
/// long to wait before the next attempt if this one times out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Step {
    /// The attempt's `lock_timeout` (at least 1 ms).
    pub lock_timeout: Duration,
    /// The pause after the attempt timed out, before the next one (jittered, see
    /// [`RetryLocks::jitter`]).
    pub delay: Duration,
}

impl Step {
    /// An attempt under `lock_timeout`, followed on a timeout by a pause of `delay`.
    pub const fn new(lock_timeout: Duration, delay: Duration) -> Self {
        Step {
            lock_timeout,
            delay,
        }
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The schedule [`retry_locks`] uses unless told otherwise: ten attempts, about 6 s of waiting
/// for locks and 20 s of pauses at most.
///
/// | attempt | 1 | 2 | 3 | 4 | 5 | 6 | 7 | 8 | 9 | 10 |
/// |---|---|---|---|---|---|---|---|---|---|---|
/// | `lock_timeout` | 100 ms | 100 ms | 200 ms | 300 ms | 400 ms | 500 ms | 500 ms | 1 s | 1 s | 2 s |
/// | pause after | 50 ms | 50 ms | 100 ms | 200 ms | 500 ms | 1 s | 2 s | 3 s | 5 s | 8 s |
///
/// Where it comes from: GitLab's `Gitlab::Database::WithLockRetries` starts at a 100 ms
/// `lock_timeout` with 50 ms pauses, because the application's queries queue behind a waiting
/// `ALTER TABLE` for as long as it waits, and 100 ms of queueing is invisible to users; its
/// timeouts grow slowly while its pauses grow fast, so that a long blocker is waited out mostly
/// *between* attempts, when nothing queues. GitLab's own default runs about 40 attempts over
/// some 40 minutes, sized for its background migrations; strong_migrations retries a handful of
/// times (`lock_timeout_retries`, a fixed `lock_timeout_retry_delay`) and fails, so that a
/// deploy does not hang. This default keeps GitLab's first steps and its growth, cut to about
/// half a minute in all, as strong_migrations' is: longer waits are the caller's choice of
/// [`RetryLocks::schedule`], [`RetryLocks::deadline`] and [`Finally`].
pub const DEFAULT_SCHEDULE: [Step; 10] = [
    Step::new(ms(100), ms(50)),
    Step::new(ms(100), ms(50)),
    Step::new(ms(200), ms(100)),
    Step::new(ms(300), ms(200)),
    Step::new(ms(400), ms(500)),
    Step::new(ms(500), ms(1000)),
    Step::new(ms(500), ms(2000)),
    Step::new(ms(1000), ms(3000)),
    Step::new(ms(1000), ms(5000)),
    Step::new(ms(2000), ms(8000)),
];

/// What [`retry_locks`] does once every step of its schedule timed out.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Finally {
    /// Return the last attempt's lock timeout error. The default.
    #[default]
    Fail,
    /// One more attempt with no `lock_timeout` (`0`): wait as long as it takes (bounded by the
    /// [`deadline`](RetryLocks::deadline), if there is one). The application queues behind it
    /// for as long.
    Wait,
    /// One more attempt with no `lock_timeout`, under this [`prioritize`](fn@crate::prioritize)
    /// scope, which ends the sessions blocking it. Without a
    /// [`watcher`](Prioritize::watcher) pool, it uses the pool the retries were given, if any.
    Prioritize(Prioritize),
}

/// An error that can say it is a lock timeout (SQLSTATE 55P03): what [`retry_locks`] retries on.
///
/// Implemented for [`pglock::Error`](crate::Error) and [`sqlx::Error`]; implement it for your own
/// error type by asking the error it wraps.
#[diagnostic::on_unimplemented(
    message = "pglock cannot tell whether `{Self}` is a lock timeout",
    label = "retry_locks retries on lock timeouts only",
    note = "implement `pglock::LockTimeoutError` for it (ask the `pglock::Error` or \
            `sqlx::Error` it wraps), or return `pglock::Error`"
)]
pub trait LockTimeoutError {
    /// Whether this is a lock timeout.
    fn is_lock_timeout(&self) -> bool;
}

impl LockTimeoutError for Error {
    fn is_lock_timeout(&self) -> bool {
        matches!(self, Error::LockTimeout { .. })
    }
}

impl LockTimeoutError for sqlx::Error {
    fn is_lock_timeout(&self) -> bool {
        crate::error::sqlstate(self).as_deref() == Some(crate::error::LOCK_NOT_AVAILABLE)
    }
}

/// Start building lock-timeout retries with the [`DEFAULT_SCHEDULE`], failing at its end.
///
/// Each attempt runs the body in a transaction (a savepoint inside the caller's transaction)
/// with `SET LOCAL lock_timeout` to the attempt's limit. When the body fails with a lock timeout,
/// the transaction rolls back (so an attempt leaves nothing behind), pglock waits the step's
/// pause, and runs the body again under the next step. Any other outcome ends the retries: `Ok`
/// commits, another error rolls back and is returned. Each attempt is logged with `tracing`
/// (target `pglock`).
///
/// ```no_run
/// use std::time::Duration;
///
/// # async fn migrate(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// pglock::retry_locks()
///     .deadline(Duration::from_secs(60))
///     .finally(pglock::Finally::Prioritize(pglock::prioritize().interval(Duration::from_millis(200))))
///     .scope(pool, async |tx| {
///         // Runs once per attempt, inside that attempt's transaction.
///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *tx).await?;
///         Ok::<_, pglock::Error>(())
///     })
///     .await
/// # }
/// ```
pub fn retry_locks() -> RetryLocks {
    RetryLocks {
        steps: DEFAULT_SCHEDULE.to_vec(),
        deadline: None,
        finally: Finally::Fail,
        jitter: true,
    }
}

/// Lock-timeout retries to run. Built by [`retry_locks`].
#[derive(Clone, Debug)]
pub struct RetryLocks {
    steps: Vec<Step>,
    deadline: Option<Duration>,
    finally: Finally,
    jitter: bool,
}

impl RetryLocks {
    /// The attempts to make, in order, instead of the [`DEFAULT_SCHEDULE`]. An empty schedule
    /// goes straight to the [`Finally`] step (with [`Finally::Fail`], nothing runs and the scope
    /// fails with [`Error::InvalidArgument`]).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let steps = [
    ///     pglock::Step::new(Duration::from_millis(100), Duration::from_millis(50)),
    ///     pglock::Step::new(Duration::from_secs(1), Duration::from_secs(5)),
    /// ];
    /// pglock::retry_locks()
    ///     .schedule(steps)
    ///     .scope(pool, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn schedule(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.steps = steps.into_iter().collect();
        self
    }

    /// A limit on the whole: no attempt waits for a lock, and no pause lasts, past `deadline`
    /// after the scope began (an attempt's `lock_timeout` is cut to what is left). Once it has
    /// passed, the scope returns the last attempt's lock timeout error, whatever
    /// [`Finally`] says.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// pglock::retry_locks()
    ///     .deadline(Duration::from_secs(60))
    ///     .scope(pool, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// What to do once every step timed out: [`Finally::Fail`] (the default),
    /// [`Finally::Wait`] or [`Finally::Prioritize`].
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// pglock::retry_locks()
    ///     .finally(pglock::Finally::Wait)
    ///     .scope(pool, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn finally(mut self, finally: Finally) -> Self {
        self.finally = finally;
        self
    }

    /// Whether to vary each pause randomly by up to a quarter either way (the default), so that
    /// several migrators retrying against the same blocker do not retry in lockstep.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// pglock::retry_locks()
    ///     .jitter(false)
    ///     .scope(pool, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn jitter(mut self, jitter: bool) -> Self {
        self.jitter = jitter;
        self
    }

    /// Run `body`, in a transaction per attempt, until an attempt does not time out waiting for
    /// a lock, or the schedule (or the deadline) runs out.
    ///
    /// `body` is called once per attempt, so it must be safe to run again: everything it does
    /// through the connection it is given is rolled back when the attempt times out, but what
    /// it does elsewhere (other connections, files, messages) is not. It must not commit or
    /// roll back the transaction itself. Through a pool, one connection is checked out for all
    /// attempts.
    ///
    /// # Errors
    /// * the last attempt's error (a lock timeout) when the schedule or the deadline ran out,
    ///   or the error of an attempt that failed otherwise;
    /// * [`Error::InvalidArgument`] before anything runs: a step's `lock_timeout` under 1 ms or
    ///   over Postgres' maximum, or nothing to run at all;
    /// * a database error beginning, committing or rolling back a transaction, or checking out
    ///   a connection;
    /// * with [`Finally::Prioritize`], what [`Prioritize::scope`] returns (no watcher pool, or
    ///   its background task failed: the last attempt then rolls back).
    ///
    /// # Cancel safety
    /// A `lock_timeout` is only ever set transaction-locally, so nothing is left on the session.
    /// Through a pool, dropping this future mid-attempt closes the connection pglock checked
    /// out: the server ends the attempt's transaction, and (Postgres 14+, where each attempt
    /// turns on `client_connection_check_interval`) stops a wait for a lock within 50 ms rather
    /// than keep the application queued behind it. On a borrowed connection, the attempt's
    /// transaction is dropped, and sqlx rolls it back on the connection's next use; a statement
    /// still waiting on the server waits at most the attempt's (short) `lock_timeout`.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// // Each attempt runs in its own transaction, under a short lock_timeout.
    /// pglock::retry_locks()
    ///     .scope(pool, async |conn| {
    ///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn scope<'c, T, E>(
        self,
        db: impl Db<'c>,
        mut body: impl AsyncFnMut(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error> + LockTimeoutError,
    {
        use crate::handle::{CloseUnlessKept, Handle, checkout};
        let policy = RetryPolicy::<Result<T, E>>::result();
        match db.into_handle() {
            Handle::Pool(pool) => {
                // Closed if this future is dropped mid-attempt: the server session ends, and
                // with it the attempt's transaction and its wait for a lock.
                let mut owned = CloseUnlessKept::new(checkout(&pool).await.map_err(Error::from)?);
                let retrying = Retrying::new(policy, Ok(self), owned.conn(), Some(pool));
                let done = run(retrying, &mut body).await;
                owned.keep();
                done
            }
            Handle::PoolConnection(conn) => {
                run(
                    Retrying::new(policy, Ok(self), &mut **conn, None),
                    &mut body,
                )
                .await
            }
            Handle::Connection(conn) => {
                run(Retrying::new(policy, Ok(self), conn, None), &mut body).await
            }
        }
    }
}

/// Run attempts of `body` until one ends the retries.
async fn run<T, E>(
    mut retrying: Retrying<&mut PgConnection, Result<T, E>>,
    body: &mut impl AsyncFnMut(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E> {
    loop {
        let mut attempt = match retrying.next().await {
            Ok(attempt) => attempt,
            Err(done) => return done,
        };
        let outcome = catch_panic(body(attempt.lend())).await;
        if let ControlFlow::Break(done) = attempt.exit(outcome).await {
            return done;
        }
    }
}

/// How the retries read and make the body's return value `R`.
#[doc(hidden)]
pub struct RetryPolicy<R> {
    pub(crate) error: fn(Error) -> R,
    pub(crate) failed: fn(&R) -> bool,
    pub(crate) lock_timeout: fn(&R) -> bool,
}

impl<R> Clone for RetryPolicy<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for RetryPolicy<R> {}

impl<T, E: From<Error> + LockTimeoutError> RetryPolicy<Result<T, E>> {
    pub(crate) fn result() -> Self {
        RetryPolicy {
            error: |error| Err(error.into()),
            failed: Result::is_err,
            lock_timeout: |out| out.as_ref().is_err_and(LockTimeoutError::is_lock_timeout),
        }
    }
}

/// A session lock-timeout retries can run attempts on, and the type its attempts lend the body:
/// `&mut PgConnection` (lent a `&mut PgConnection` inside each attempt's transaction) or
/// `&mut Transaction<'_, Postgres>` (lent each attempt's savepoint, a `&mut Transaction`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot run lock-timeout retries",
    label = "#[pglock::retry_locks] runs each attempt in a transaction on one connection",
    note = "take the connection as `&mut PgConnection` or `&mut Transaction<'_, Postgres>` \
            (for a `PoolConnection`, pass `&mut *conn`); the body gets each attempt's \
            transaction under the same name and type"
)]
pub trait Attempts {
    /// What the body gets for an attempt whose transaction is `Transaction<'t>`.
    #[doc(hidden)]
    type Lent<'b, 't>
    where
        't: 'b;

    /// The connection to begin each attempt's transaction on.
    #[doc(hidden)]
    fn connection(&mut self) -> &mut PgConnection;

    /// The attempt's transaction, for the body.
    #[doc(hidden)]
    fn lend<'b, 't>(tx: &'b mut Transaction<'t, Postgres>) -> Self::Lent<'b, 't>;
}

impl Attempts for &mut PgConnection {
    type Lent<'b, 't>
        = &'b mut PgConnection
    where
        't: 'b;

    fn connection(&mut self) -> &mut PgConnection {
        self
    }

    fn lend<'b, 't>(tx: &'b mut Transaction<'t, Postgres>) -> &'b mut PgConnection {
        tx
    }
}

impl Attempts for &mut Transaction<'_, Postgres> {
    type Lent<'b, 't>
        = &'b mut Transaction<'t, Postgres>
    where
        't: 'b;

    fn connection(&mut self) -> &mut PgConnection {
        self
    }

    fn lend<'b, 't>(tx: &'b mut Transaction<'t, Postgres>) -> &'b mut Transaction<'t, Postgres> {
        tx
    }
}

/// Retries in progress on the session of `H`, for a body returning `R`.
#[doc(hidden)]
pub struct Retrying<H, R> {
    policy: RetryPolicy<R>,
    settings: RetryLocks,
    /// Why no attempt can run (settings that could not be made), returned by the first `next`.
    refused: Option<Error>,
    handle: H,
    /// The pool the retries were given, for a final prioritize without a watcher.
    pool: Option<PgPool>,
    started: Instant,
    /// Attempts begun so far.
    begun: usize,
    /// The last attempt's output, once it timed out, and the pause it asks for.
    timed_out: Option<(R, Duration)>,
}

/// What the next attempt is.
enum Plan {
    /// A step of the schedule, under this `lock_timeout`.
    Timed(Duration),
    /// The final attempt: no `lock_timeout` (or what is left of the deadline), maybe prioritized.
    Final(Option<Duration>, Option<Prioritize>),
}

impl<H: Attempts, R> Retrying<H, R> {
    pub(crate) fn new(
        policy: RetryPolicy<R>,
        settings: Result<RetryLocks, Error>,
        handle: H,
        pool: Option<PgPool>,
    ) -> Self {
        let (settings, refused) = match settings {
            Ok(settings) => (settings, None),
            Err(error) => (retry_locks(), Some(error)),
        };
        Retrying {
            policy,
            settings,
            refused,
            handle,
            pool,
            started: Instant::now(),
            begun: 0,
            timed_out: None,
        }
    }

    /// What is left of the deadline, if there is one.
    fn remaining(&self) -> Option<Duration> {
        self.settings
            .deadline
            .map(|deadline| deadline.saturating_sub(self.started.elapsed()))
    }

    /// Wait the pause the last attempt asks for, then begin the next attempt; or, when there is
    /// none left, give the function's return value (the last attempt's).
    pub async fn next(&mut self) -> Result<Attempt<'_, H, R>, R> {
        if let Some(error) = self.refused.take() {
            return Err((self.policy.error)(error));
        }
        if self.begun == 0 {
            // Every step checked before the first attempt: a bad limit is a mistake, found
            // before anything runs rather than after some attempts did.
            let checked: Result<Vec<String>, Error> = self
                .settings
                .steps
                .iter()
                .map(|step| milliseconds("lock_timeout", Some(step.lock_timeout)))
                .collect();
            if let Err(error) = checked {
                return Err((self.policy.error)(error));
            }
        }
        if let Some((_, delay)) = &self.timed_out {
            let delay = match self.remaining() {
                Some(left) if left <= *delay => return Err(self.give_up("the deadline passed")),
                _ => *delay,
            };
            tokio::time::sleep(delay).await;
        }
        let plan = match self.plan() {
            Ok(Some(plan)) => plan,
            Ok(None) if self.remaining() == Some(Duration::ZERO) => {
                return Err(self.give_up("the deadline passed"));
            }
            Ok(None) => return Err(self.give_up("the schedule ran out")),
            Err(error) => return Err((self.policy.error)(error)),
        };
        self.begun += 1;
        let number = self.begun;
        let (limit, prioritize) = match plan {
            Plan::Timed(limit) => (Some(limit), None),
            Plan::Final(limit, prioritize) => (limit, prioritize),
        };
        // The last attempt's output is not needed any more: this one's will be returned.
        self.timed_out = None;
        let error = self.policy.error;
        self.begin(number, limit, prioritize).await.map_err(error)
    }

    /// The next attempt, `None` when there is none; an error when nothing can run at all.
    fn plan(&mut self) -> Result<Option<Plan>, Error> {
        let remaining = self.remaining();
        if remaining == Some(Duration::ZERO) {
            return Ok(None);
        }
        let cut = |limit: Duration| remaining.map_or(limit, |left| limit.min(left));
        let steps = self.settings.steps.len();
        if let Some(step) = self.settings.steps.get(self.begun) {
            return Ok(Some(Plan::Timed(cut(step.lock_timeout).max(ms(1)))));
        }
        if self.begun > steps {
            return Ok(None);
        }
        let limit = remaining.map(|left| left.max(ms(1)));
        match &self.settings.finally {
            Finally::Fail if steps == 0 => Err(Error::InvalidArgument(
                "retry_locks has an empty schedule and Finally::Fail: nothing would run".into(),
            )),
            Finally::Fail => Ok(None),
            Finally::Wait => Ok(Some(Plan::Final(limit, None))),
            Finally::Prioritize(prioritize) => {
                let mut prioritize = prioritize.clone();
                if let (false, Some(pool)) = (prioritize.has_watcher(), &self.pool) {
                    prioritize = prioritize.watcher(pool);
                }
                Ok(Some(Plan::Final(limit, Some(prioritize))))
            }
        }
    }

    /// The last attempt's output, now that there will be no other.
    fn give_up(&mut self, why: &str) -> R {
        let Some((out, _)) = self.timed_out.take() else {
            return (self.policy.error)(Error::InvalidArgument(format!(
                "retry_locks ran no attempt: {why} before the first"
            )));
        };
        tracing::warn!(
            target: "pglock",
            attempts = self.begun,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "pglock: retry_locks gives up: {why}"
        );
        out
    }

    async fn begin(
        &mut self,
        number: usize,
        limit: Option<Duration>,
        prioritize: Option<Prioritize>,
    ) -> Result<Attempt<'_, H, R>, Error> {
        let last = prioritize.is_some() || number > self.settings.steps.len();
        let setting = milliseconds("lock_timeout", limit)?;
        tracing::info!(
            target: "pglock",
            attempt = number,
            lock_timeout_ms = limit.map(|limit| limit.as_millis() as u64),
            last,
            prioritize = prioritize.is_some(),
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "pglock: retry_locks attempt"
        );
        let delay = self
            .settings
            .steps
            .get(number - 1)
            .map(|step| jittered(step.delay, self.settings.jitter, number));
        let owned = self.pool.is_some();
        let Retrying {
            handle,
            policy,
            timed_out,
            ..
        } = self;
        let mut tx = handle.connection().begin().await?;
        // On a connection pglock owns (it closes it if this future is dropped), the server
        // checks that the client is still there while the attempt waits (Postgres 14+), so that
        // a dropped attempt stops waiting for its lock, and stops queueing others behind it.
        let check = owned && tx.server_version_num().is_some_and(|v| v >= 140000);
        sqlx::query(if check { SET_LOCAL_CHECKED } else { SET_LOCAL })
            .bind(&setting)
            .execute(&mut *tx)
            .await?;
        let prioritized = match prioritize {
            Some(prioritize) => {
                let mut site: &mut PgConnection = &mut tx;
                Some(prioritize.enter(&mut site).await?)
            }
            None => None,
        };
        Ok(Attempt {
            tx,
            prioritized,
            number,
            delay,
            policy: *policy,
            timed_out,
            lent: std::marker::PhantomData,
        })
    }
}

/// An attempt's `lock_timeout`, transaction-local.
const SET_LOCAL: &str = "SELECT set_config('lock_timeout', $1, true)";

/// The same, and the check that the client is still there while waiting (50 ms).
const SET_LOCAL_CHECKED: &str = "SELECT set_config('lock_timeout', $1, true), \
                                 set_config('client_connection_check_interval', '50', true)";

/// A pause, varied by up to a quarter either way when `jitter` is on.
fn jittered(delay: Duration, jitter: bool, salt: usize) -> Duration {
    if !jitter {
        return delay;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_usize(salt);
    // A uniform factor in [0.75, 1.25).
    let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    delay.mul_f64(0.75 + unit / 2.0)
}

/// One attempt: its transaction (with its `lock_timeout`), and for the final one, the prioritize
/// scope protecting it.
#[doc(hidden)]
pub struct Attempt<'a, H, R> {
    tx: Transaction<'a, Postgres>,
    prioritized: Option<PrioritizeHeld>,
    number: usize,
    /// The pause to take if it times out: `None` for the final attempt, which is not retried.
    delay: Option<Duration>,
    policy: RetryPolicy<R>,
    timed_out: &'a mut Option<(R, Duration)>,
    lent: std::marker::PhantomData<fn(H)>,
}

impl<'a, H: Attempts, R> Attempt<'a, H, R> {
    /// The attempt's transaction, for the body.
    pub fn lend(&mut self) -> H::Lent<'_, 'a> {
        H::lend(&mut self.tx)
    }

    /// End the attempt: commit after a success, roll back otherwise. `Break` with the
    /// function's return value, or `Continue` to run the next attempt (this one timed out).
    pub async fn exit(self, outcome: std::thread::Result<R>) -> ControlFlow<R> {
        let Attempt {
            mut tx,
            prioritized,
            number,
            delay,
            policy,
            timed_out,
            ..
        } = self;
        let failed = !matches!(&outcome, Ok(out) if !(policy.failed)(out));
        let stopped = match prioritized {
            Some(held) => {
                let mut site: &mut PgConnection = &mut tx;
                held.end(&mut site, failed).await
            }
            None => Ok(()),
        };
        let out = match outcome {
            Ok(out) => out,
            Err(panic) => {
                // Dropping the transaction rolls it back on the connection's next use.
                drop(tx);
                resume_unwind(panic)
            }
        };
        if !failed {
            if let Err(error) = stopped {
                return ControlFlow::Break(rolled_back(tx, policy.error, error).await);
            }
            return match tx.commit().await {
                Ok(()) => {
                    tracing::info!(target: "pglock", attempt = number, "pglock: retry_locks attempt succeeded");
                    ControlFlow::Break(out)
                }
                Err(error) => ControlFlow::Break((policy.error)(error.into())),
            };
        }
        if let Err(error) = &stopped {
            tracing::warn!(target: "pglock", %error, "pglock: prioritize failed too");
        }
        if let Err(error) = tx.rollback().await {
            tracing::warn!(target: "pglock", %error, "pglock: rolling back an attempt failed");
            return ControlFlow::Break((policy.error)(error.into()));
        }
        match delay {
            Some(delay) if (policy.lock_timeout)(&out) => {
                tracing::info!(
                    target: "pglock",
                    attempt = number,
                    pause_ms = delay.as_millis() as u64,
                    "pglock: retry_locks attempt timed out waiting for a lock; rolled back"
                );
                *timed_out = Some((out, delay));
                ControlFlow::Continue(())
            }
            _ => ControlFlow::Break(out),
        }
    }
}

async fn rolled_back<R>(
    tx: Transaction<'_, Postgres>,
    error_into: fn(Error) -> R,
    error: Error,
) -> R {
    if let Err(rollback) = tx.rollback().await {
        tracing::warn!(target: "pglock", error = %rollback, "pglock: rolling back an attempt failed");
    }
    error_into(error)
}
