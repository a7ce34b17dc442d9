//! Advisory locks: the builder, acquisition, and the scoped form.

mod guard;
mod held;
mod linger;
mod orphan;
mod session;
pub(crate) use session::beat;
mod sql;

use std::borrow::Cow;
use std::panic::resume_unwind;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Postgres, Row};

pub use guard::AdvisoryGuard;
pub use held::LossSignal;
pub use linger::drain;

use guard::State;
pub(crate) use sql::Mode;
use sql::{OnStandby, WaitOn};

use crate::handle::{CloseUnlessKept, Conn, Handle, checkout};
use crate::scope::settle;
use crate::unwind::catch_panic;
use crate::{AdvisoryKey, Db, Error, LockId, Wait, telemetry};

/// Start building an advisory lock on `id`: a string (hashed as django-pglock hashes it),
/// an `i64`/`i32`, a pair `(i32, i32)`, or an [`AdvisoryKey`].
///
/// By default the lock is exclusive, session-level, and waits as long as the server's
/// `lock_timeout` allows. See [`Advisory`] for the options and the ways to take it.
///
/// ```no_run
/// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// use std::time::Duration;
///
/// // Wait at most 2 seconds; the guard keeps the lock's connection checked out.
/// let guard = pglock::advisory("nightly-report")
///     .timeout(Duration::from_secs(2))
///     .acquire(pool)
///     .await?;
/// // ... work while holding the lock ...
/// guard.release().await?;
/// # Ok(()) }
/// ```
pub fn advisory(id: impl Into<LockId>) -> Advisory {
    Advisory {
        id: id.into(),
        mode: Mode {
            shared: false,
            xact: false,
        },
        wait: Wait::ServerDefault,
        function: None,
        on_standby: OnStandby::Refuse,
        heartbeat: Some(DEFAULT_HEARTBEAT),
        min_hold: None,
    }
}

/// An advisory lock to take: its id, mode and how long to wait. Built by [`advisory`](fn@advisory).
///
/// Three ways to take it, mirroring django-pglock's side effects:
/// * [`acquire`](Advisory::acquire) returns a guard, or an error when the lock is not acquired
///   (django-pglock's `Raise`);
/// * [`try_acquire`](Advisory::try_acquire) returns `None` instead (`Return`);
/// * [`scope`](Advisory::scope) / [`try_scope`](Advisory::try_scope) run a closure under the lock
///   and release it after, however the closure ends.
///
/// Each consumes the builder, so the future it returns borrows only the database handle;
/// clone an `Advisory` to take the same lock again.
///
/// # PgBouncer
/// Behind a transaction pooler (PgBouncer with `pool_mode = transaction`, and the like), a
/// client connection is lent a server session for one transaction at a time, and advisory locks
/// belong to server sessions.
///
/// **Transaction-level locks work**: [`xact`](Advisory::xact) on a `&mut Transaction`,
/// `.xact().scope(&pool, ...)` and `#[pglock::advisory(xact)]` hold the lock on the session that
/// runs the transaction, and it is released at commit or rollback. Timeouts work too: pglock
/// sets `lock_timeout` transaction-locally.
///
/// **Session-level locks do not.** Another client lent the same server session is granted the
/// lock too (advisory locks are re-entrant per session), and the unlock runs wherever the pooler
/// sends it. pglock remembers the server session a lock was taken on, and a
/// [`release`](AdvisoryGuard::release) that lands on another one unlocks nothing and fails with
/// [`Error::SessionMoved`], which names the pooler; the lock stays with its session until the
/// pooler closes it (`server_lifetime`, an hour by default). Dropping a guard closes only the
/// client connection. Take session locks on a direct connection.
///
/// Before PgBouncer 1.21, prepared statements (which sqlx and pglock use) fail in transaction
/// mode (42P05 or 26000); use 1.21 or later with `max_prepared_statements` set.
///
/// # Lock loss
/// A session-level lock lasts as long as its session. The session can end while the lock is
/// held: `pg_terminate_backend` (another service's prioritize, an operator's
/// `pglock --terminate`), `idle_session_timeout`, an idle-connection reaper, a server restart,
/// a network cut. Postgres then frees the lock, and another replica may take it.
///
/// **Where pglock owns the holding connection and the body does not use it** (the attribute on
/// a pool or the default pool, and [`run`](Advisory::run) / [`try_run`](Advisory::try_run) on a
/// pool), a [heartbeat](Advisory::heartbeat) checks the session every interval (2 s by default)
/// with a `SELECT 1` that must be answered within one interval. When a check fails, or gets no
/// reply in time, the body is dropped at once (its pending `.await` never resumes), the
/// connection is closed, and the call returns [`Error::Lost`] naming the lock and what the check
/// saw. The check also keeps the session from looking idle to `idle_session_timeout` and to
/// idle reapers.
///
/// * **The server ends the session** (terminated, restarted, crashed): it frees the lock at
///   once, and the body learns of it at the next check, so it may overlap the next holder's
///   body for up to one heartbeat. Keep the interval short where that matters, and for
///   singletons that must never overlap use leader election, which waits out that window.
/// * **The network is cut** (the client hears nothing): the server frees the lock only when it
///   notices the dead client, through its TCP keepalives (`tcp_keepalives_idle` +
///   `tcp_keepalives_interval` × `tcp_keepalives_count`, about 2 h 11 min with Linux defaults),
///   or through a pooler or load balancer closing the connection. pglock gives up on an
///   unanswered check after one interval, so the body is dropped within two intervals of the
///   cut: before the server can have freed the lock whenever two intervals are shorter than the
///   server's (or the network's) own limit. That is what the default of 2 s is chosen for.
///
/// A body that must finish a step cleanly rather than stop mid-way can ask to be told instead:
/// [`run_notified`](Advisory::run_notified) gives it a [`LossSignal`](crate::LossSignal) and
/// returns the loss after the body ends.
///
/// **Where the body uses the holding connection** ([`scope`](Advisory::scope) and
/// [`acquire`](Advisory::acquire)'s guard, and every borrowed connection), no heartbeat can share
/// it: a check sent while the body's statement is in flight would read the body's answer. There
/// the body's own statements fail once the session is gone, and
/// [`release`](AdvisoryGuard::release) reports [`Error::Lost`]. Use [`run`](Advisory::run) (or
/// the attribute) for long bodies that must stop when the lock is lost. A guard is watched on
/// request instead: [`AdvisoryGuard::lost`] runs the same heartbeat on its connection (which
/// the watch then has to itself) and returns the loss, to race against the work.
///
/// # Hot standbys
/// An advisory lock lives in the memory of the server it is taken on. On a hot standby (a read
/// replica in recovery) it excludes only other sessions on that standby, never the primary's
/// or other standbys', so a job guarded by it could run on the primary and on every replica at
/// once. pglock refuses it with [`Error::Standby`] and takes nothing; the check rides in the
/// acquiring statement (no extra round trip). Opt in with [`allow_standby`](Advisory::allow_standby)
/// when the lock is meant to coordinate one standby's own sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advisory {
    id: LockId,
    mode: Mode,
    wait: Wait,
    function: Option<Cow<'static, str>>,
    on_standby: OnStandby,
    heartbeat: Option<Duration>,
    min_hold: Option<Duration>,
}

/// The shortest heartbeat interval: shorter ones would mostly load the server.
pub const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// How often a session lock held on a connection pglock owns is checked, unless
/// [`heartbeat`](Advisory::heartbeat) says otherwise.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(2);

impl Advisory {
    /// Take a shared lock: shared holders do not exclude each other, only exclusive ones.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let guard = pglock::advisory("catalog-read").shared().acquire(pool).await?;
    /// assert!(guard.is_shared());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn shared(mut self) -> Self {
        self.mode.shared = true;
        self
    }

    /// Take a transaction-level lock, released when the transaction ends
    /// (`pg_advisory_xact_lock`). It has no unlock of its own.
    ///
    /// Pass a transaction (or a connection inside one begun through sqlx) to `acquire`, or use
    /// [`scope`](Advisory::scope) on a pool, which opens the transaction, commits it when the
    /// closure returns `Ok` and rolls it back otherwise. Transaction-level locks are the ones
    /// that work through PgBouncer's transaction pooling.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// pglock::advisory("invoice-42").xact().acquire(&mut *tx).await?;
    /// // ... the work; the lock ends with the transaction.
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn xact(mut self) -> Self {
        self.mode.xact = true;
        self
    }

    /// Wait at most `limit` for the lock. Under one millisecond (including zero) means try once
    /// and do not wait, as django-pglock's `timeout=0` does. The limit is enforced by the server
    /// (`lock_timeout`, for the acquiring statement only), in whole milliseconds, and is checked
    /// against Postgres' maximum (about 24.8 days) when the lock is taken.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// match pglock::advisory("reindex").timeout(Duration::from_secs(2)).acquire(pool).await {
    ///     Ok(guard) => guard.release().await?,
    ///     Err(pglock::Error::LockTimeout { .. }) => println!("busy, try later"),
    ///     Err(error) => return Err(error),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn timeout(self, limit: Duration) -> Self {
        self.wait(Wait::at_most(limit))
    }

    /// Try once and do not wait (`pg_try_advisory_*`): the same as `timeout(Duration::ZERO)`.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// if let Some(guard) = pglock::advisory("cleanup").nowait().try_acquire(pool).await? {
    ///     guard.release().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn nowait(self) -> Self {
        self.wait(Wait::NoWait)
    }

    /// Wait as long as it takes, even if the server or role sets a `lock_timeout`
    /// (django-pglock's `timeout=None`).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let guard = pglock::advisory("schema").wait_forever().acquire(pool).await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn wait_forever(self) -> Self {
        self.wait(Wait::Forever)
    }

    /// Set how long to wait: a [`Wait`], a [`Duration`] (see [`timeout`](Advisory::timeout)),
    /// or an `Option<Duration>` whose `None` waits forever.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// // `None` waits forever, `Some(limit)` at most `limit`.
    /// let limit: Option<Duration> = Some(Duration::from_millis(500));
    /// let guard = pglock::advisory("report").wait(limit).acquire(pool).await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn wait(mut self, wait: impl Into<Wait>) -> Self {
        self.wait = wait.into();
        self
    }

    /// Name the code that takes the lock, for listings: a statement that waits for the lock
    /// starts with a `/*pga_context={"lock":..,"fn":..}*/` comment naming the lock and this,
    /// which [`locks()`](crate::locks) shows as [`Activity::context`](crate::Activity::context)
    /// (as django-pgactivity's listings do). The attribute sets it to the function's path.
    ///
    /// Only statements that pglock sends as plain text carry the comment: waits on a pool, and
    /// timed waits inside your transaction. Waits on a borrowed connection and `NoWait`
    /// attempts are prepared statements with a fixed text (a comment naming each lock would
    /// prepare a statement per lock, costing a round trip), so they carry none.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let guard = pglock::advisory("sync")
    ///     .function("billing::sync_invoices")
    ///     .acquire(pool)
    ///     .await?;
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn function(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.function = Some(name.into());
        self
    }

    /// Take the lock on a hot standby too, where it excludes only other sessions on that same
    /// standby (see [Hot standbys](Advisory#hot-standbys)). Without it, a lock asked for on a
    /// server in recovery is refused with [`Error::Standby`]. On a primary it changes nothing.
    ///
    /// ```no_run
    /// # async fn example(replica: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// // One refresh of the replica's cache at a time, among the replica's own sessions.
    /// pglock::advisory("replica-cache-refresh")
    ///     .allow_standby()
    ///     .scope(replica, async |_conn| Ok::<_, pglock::Error>(()))
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn allow_standby(mut self) -> Self {
        self.on_standby = OnStandby::Allow;
        self
    }

    /// How often to check, while a session-level lock is held on a connection pglock checked out
    /// of a pool, that the session holding it is still there ([`DEFAULT_HEARTBEAT`], 2 s, unless
    /// set; `None` turns it off). See [Lock loss](Advisory#lock-loss) for what a failed check
    /// does, and which forms have a heartbeat.
    ///
    /// Each check is one `SELECT 1` on the holding connection, which must answer within one
    /// interval. It also keeps the session from counting as idle, so `idle_session_timeout`
    /// and idle-connection reapers leave a held lock alone (make the interval shorter than
    /// theirs). Intervals under [`MIN_HEARTBEAT`](crate::MIN_HEARTBEAT) are raised to it.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// pglock::advisory("outbox-relay")
    ///     .heartbeat(Duration::from_millis(500))
    ///     .run(pool, async { /* relay messages */ Ok::<_, pglock::Error>(()) })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn heartbeat(mut self, interval: impl Into<Option<Duration>>) -> Self {
        self.heartbeat = interval.into().map(|every| every.max(MIN_HEARTBEAT));
        self
    }

    /// Keep the lock until `hold` has passed since it was taken, even if the body ends sooner
    /// (ShedLock's `lockAtLeastFor`): replicas whose schedules fire a little apart then run a
    /// short job once, not once each.
    ///
    /// Where the lock lives on a connection pglock owns ([`run`](Advisory::run) /
    /// [`try_run`](Advisory::try_run) and the attribute on a pool), the call returns as soon as
    /// the body ends, and the connection keeps the lock in the background, checked every
    /// [heartbeat](Advisory::heartbeat), until the hold is over; then it goes back to the pool
    /// clean. On a connection you lent (which comes back to you with the call), the call itself
    /// waits out the rest of the hold. A body that runs longer than `hold` releases at its end,
    /// as usual. [`scope`](Advisory::scope) and [`acquire`](Advisory::acquire) do not use it.
    ///
    /// The guarantee lasts only while the process lives: a process that exits during the hold
    /// loses the lock with its sessions. Call [`drain`](crate::drain) on graceful shutdown to
    /// release the held locks at once, and explicitly.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn send_digest() -> Result<(), pglock::Error> { Ok(()) }
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// // Each replica's scheduler fires at about 03:00; the digest goes out once.
    /// pglock::advisory("daily-digest")
    ///     .nowait()
    ///     .min_hold(Duration::from_secs(30))
    ///     .try_run(pool, send_digest())
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn min_hold(mut self, hold: Duration) -> Self {
        self.min_hold = (!hold.is_zero()).then_some(hold);
        self
    }

    /// The heartbeat interval, if any (see [`heartbeat`](Advisory::heartbeat)).
    ///
    /// ```
    /// assert_eq!(pglock::advisory("job").heartbeat_interval(), Some(pglock::DEFAULT_HEARTBEAT));
    /// assert_eq!(pglock::advisory("job").heartbeat(None).heartbeat_interval(), None);
    /// ```
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat
    }

    /// Whether the lock may be taken on a hot standby ([`allow_standby`](Advisory::allow_standby)).
    ///
    /// ```
    /// assert!(pglock::advisory("job").allow_standby().allows_standby());
    /// ```
    pub fn allows_standby(&self) -> bool {
        self.on_standby == OnStandby::Allow
    }

    /// The lock's id.
    ///
    /// ```
    /// let lock = pglock::advisory("nightly-digest");
    /// assert_eq!(lock.id(), &pglock::LockId::from("nightly-digest"));
    /// ```
    pub fn id(&self) -> &LockId {
        &self.id
    }

    /// How long taking the lock waits.
    ///
    /// ```
    /// assert_eq!(pglock::advisory("job").nowait().wait_mode(), pglock::Wait::NoWait);
    /// ```
    pub fn wait_mode(&self) -> Wait {
        self.wait
    }

    /// Whether the lock is shared.
    ///
    /// ```
    /// assert!(pglock::advisory("job").shared().is_shared());
    /// ```
    pub fn is_shared(&self) -> bool {
        self.mode.shared
    }

    /// Whether the lock is transaction-level.
    ///
    /// ```
    /// assert!(pglock::advisory("job").xact().is_xact());
    /// ```
    pub fn is_xact(&self) -> bool {
        self.mode.xact
    }

    /// Take the lock, waiting as configured, and return a guard that holds it.
    ///
    /// Advisory locks are re-entrant per session: a session that holds a lock gets it again at
    /// once, and each session-level acquisition needs its own release.
    ///
    /// # Errors
    /// * [`Error::Busy`] when another session holds the lock and the wait is [`Wait::NoWait`];
    /// * [`Error::LockTimeout`] when it is still held when the lock timeout runs out;
    /// * [`Error::NotInTransaction`] for a transaction-level lock on a connection outside a
    ///   transaction, or on a pool (use [`scope`](Advisory::scope) there);
    /// * [`Error::Deadlock`] when the server ended the wait to break a deadlock: another session
    ///   was waiting for a lock this session holds;
    /// * [`Error::Standby`] when the server is a hot standby and
    ///   [`allow_standby`](Advisory::allow_standby) was not called (nothing is taken);
    /// * [`Error::InvalidArgument`] for a timeout Postgres does not accept;
    /// * [`Error::Database`] (or [`Error::PermissionDenied`]) when the server or connection fails.
    ///
    /// A timed wait that fails inside your transaction leaves that transaction usable (it runs
    /// in a savepoint); a wait bound only by the server's own `lock_timeout` does not.
    ///
    /// A lock reported as timed out is not held: when Postgres grants a session-level lock
    /// just as `lock_timeout` fires, it still reports the timeout, and pglock then unlocks it
    /// (one more round trip, on that failure only). The one case it cannot: a wait bound by the
    /// server's own `lock_timeout` inside your transaction, which the failure aborts; roll back
    /// and check with [`locks()`](crate::locks) if you rely on that.
    ///
    /// # Cancel safety
    /// What happens when this future is dropped before it completes (for example by
    /// `tokio::time::timeout` or `select!`) depends on the handle:
    /// * **`&PgPool`**: fully cancel-safe. pglock owns the connection it checked out and closes it;
    ///   the server notices within 50 ms and abandons the wait, so no backend keeps waiting and
    ///   the lock is never granted to nobody. (Postgres 13 lacks
    ///   `client_connection_check_interval`: there, dropping the wait cancels its statement from a
    ///   short-lived connection of its own, in a task spawned on the current tokio runtime.)
    /// * **Borrowed handles** (`&mut PgConnection`, `&mut PoolConnection`, `&mut Transaction`):
    ///   sqlx offers no way to cancel a statement or run one from a destructor on a connection it
    ///   does not own, so the wait goes on. sqlx finishes it before the connection's next
    ///   statement, and that connection then holds the lock. A `&mut PoolConnection` is marked to
    ///   be closed rather than returned to its pool, so the lock ends with it. Bound waits on
    ///   borrowed connections with [`timeout`](Advisory::timeout), not by dropping the future.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let guard = pglock::advisory("reindex").acquire(pool).await?;
    /// // ... the work, under the lock.
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub async fn acquire<'c>(self, db: impl Db<'c>) -> Result<AdvisoryGuard<'c>, Error> {
        let conn = self.checkout(db.into_handle()).await?;
        self.take(conn).await
    }

    /// Take the lock like [`acquire`](Advisory::acquire), but return `Ok(None)` when it is not
    /// acquired (held elsewhere and `NoWait`, or still held when the lock timeout ran out).
    ///
    /// # Errors
    /// As [`acquire`](Advisory::acquire), except [`Error::Busy`] and [`Error::LockTimeout`],
    /// which become `Ok(None)`.
    ///
    /// # Cancel safety
    /// As [`acquire`](Advisory::acquire).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// match pglock::advisory("reindex").nowait().try_acquire(pool).await? {
    ///     Some(guard) => guard.release().await?,
    ///     None => println!("someone else is reindexing"),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire<'c>(
        self,
        db: impl Db<'c>,
    ) -> Result<Option<AdvisoryGuard<'c>>, Error> {
        not_acquired_is_none(self.acquire(db).await)
    }

    /// Run `body` while holding the lock, and release the lock after it, whether it returns
    /// `Ok`, returns `Err` or panics. The closure gets the connection the lock lives on.
    ///
    /// On a pool, a transaction-level lock gets a transaction that pglock opens: `body` runs in
    /// it, and it commits when `body` returns `Ok` and rolls back otherwise.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let rows = pglock::advisory("reindex")
    ///     .xact()
    ///     .scope(pool, async |conn| {
    ///         let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_class")
    ///             .fetch_one(&mut *conn)
    ///             .await?;
    ///         Ok::<_, pglock::Error>(n)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `body`'s error, or any error of [`acquire`](Advisory::acquire) converted into `E`, or the
    /// error of releasing the lock (or of committing) when `body` succeeded: a session lock
    /// whose unlock fails may have been lost while `body` ran, so its result is not returned.
    ///
    /// # Cancel safety
    /// On a pool, dropping this future at any point releases the lock promptly: pglock closes
    /// the connection it owns, which ends the session and everything it holds or waits for
    /// (an open transaction rolls back). On borrowed handles the lock cannot be released from a
    /// destructor; see [`acquire`](Advisory::acquire).
    pub async fn scope<'c, T, E>(
        self,
        db: impl Db<'c>,
        body: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        match self.scope_core(db, body, Result::is_err, false).await {
            Ok(Some(out)) => out,
            Ok(None) => unreachable!("scope_core only skips when asked to"),
            Err(error) => Err(error.into()),
        }
    }

    /// Like [`scope`](Advisory::scope), but return `Ok(None)` without running `body` when the
    /// lock is not acquired (django-pglock's `Skip`).
    ///
    /// # Errors
    /// As [`scope`](Advisory::scope), except that a lock that is not acquired is `Ok(None)`.
    ///
    /// # Cancel safety
    /// As [`scope`](Advisory::scope).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let ran = pglock::advisory("nightly-digest")
    ///     .nowait()
    ///     .try_scope(pool, async |conn| {
    ///         sqlx::query("SELECT 1").execute(&mut *conn).await?;
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// if ran.is_none() {
    ///     println!("another replica sent it");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn try_scope<'c, T, E>(
        self,
        db: impl Db<'c>,
        body: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<Option<T>, E>
    where
        E: From<Error>,
    {
        match self.scope_core(db, body, Result::is_err, true).await {
            Ok(Some(out)) => out.map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Every scoped form comes down to this: lock, run `body`, release. `failed` says whether
    /// `body`'s output is a failure (a transaction-level scope on a pool then rolls back).
    ///
    /// Returns `Ok(None)` when the lock is not acquired and `skip` is set, `body`'s output as is
    /// otherwise, and pglock's own errors as `Err`: not acquiring the lock, and failing to
    /// release it (or commit) after `body` succeeded. A release that fails after `body` failed
    /// is logged, and `body`'s output returned. A panic in `body` is resumed after releasing.
    pub(crate) async fn scope_core<'c, T>(
        self,
        db: impl Db<'c>,
        body: impl AsyncFnOnce(&mut PgConnection) -> T,
        failed: impl Fn(&T) -> bool,
        skip: bool,
    ) -> Result<Option<T>, Error> {
        let span = self.span();
        crate::scope::in_span(span, self.scope_in_span(db, body, failed, skip)).await
    }

    /// The span of this lock's scopes (see [`telemetry`]).
    #[inline]
    pub(crate) fn span(&self) -> Option<tracing::Span> {
        telemetry::advisory_span(&self.id, self.function.as_deref(), self.mode, self.wait)
    }

    async fn scope_in_span<'c, T>(
        self,
        db: impl Db<'c>,
        body: impl AsyncFnOnce(&mut PgConnection) -> T,
        failed: impl Fn(&T) -> bool,
        skip: bool,
    ) -> Result<Option<T>, Error> {
        let acquired = match db.into_handle() {
            Handle::Pool(pool) if self.mode.xact => {
                let conn = checkout(&pool).await?;
                return match self.xact_scope_on_pool(conn, pool, body, failed).await {
                    Ok(out) => Ok(Some(out)),
                    Err(error) if skip && error.is_not_acquired() => {
                        telemetry::skipped(&error);
                        Ok(None)
                    }
                    Err(error) => Err(error),
                };
            }
            handle => match self.checkout(handle).await {
                Ok(conn) => self.take(conn).await,
                Err(error) => Err(error),
            },
        };
        let mut guard = match acquired {
            Ok(guard) => guard,
            Err(error) if skip && error.is_not_acquired() => {
                telemetry::skipped(&error);
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let outcome = catch_panic(body(&mut guard)).await;
        let released = guard.release().await;
        settle(&self.id, outcome, released, failed).map(Some)
    }

    /// A transaction-level lock on a pool: open a transaction on a connection pglock owns, lock,
    /// run `body`, and commit (or roll back, when `failed` says so).
    async fn xact_scope_on_pool<T>(
        &self,
        conn: PoolConnection<Postgres>,
        pool: PgPool,
        body: impl AsyncFnOnce(&mut PgConnection) -> T,
        failed: impl Fn(&T) -> bool,
    ) -> Result<T, Error> {
        // Dropped with this future, it closes the connection rather than returning it with a
        // statement in flight: the wait ends and the transaction rolls back on the server.
        let mut owned = CloseUnlessKept::new(conn);
        let mut tx = owned.conn().begin().await?;
        // The guard has nothing to do: the transaction's end releases the lock.
        let taken = self
            .take(Conn::InOwnedTransaction(&mut tx, pool))
            .await
            .map(AdvisoryGuard::forget);
        let held = match taken {
            Ok(held) => held,
            Err(error) => {
                tx.rollback().await?;
                owned.keep();
                return Err(error);
            }
        };
        // Unwinding from a panic drops `tx` and `owned`: the connection closes and the server
        // rolls back.
        let out = match catch_panic(body(&mut tx)).await {
            Ok(out) => out,
            Err(panic) => resume_unwind(panic),
        };
        let ended = if failed(&out) {
            tx.rollback().await
        } else {
            tx.commit().await
        }
        .map_err(Error::from);
        held.ended(&ended);
        owned.keep();
        settle(&self.id, Ok(out), ended, failed)
    }

    /// The connection to lock on: the caller's, or one checked out of the caller's pool.
    async fn checkout<'c>(&self, handle: Handle<'c>) -> Result<Conn<'c>, Error> {
        Ok(match handle {
            Handle::Pool(_) if self.mode.xact => {
                return Err(Error::NotInTransaction {
                    target: self.id.clone().into(),
                });
            }
            Handle::Pool(pool) => Conn::Owned(checkout(&pool).await?, pool),
            Handle::PoolConnection(conn) => Conn::PoolConnection(conn),
            Handle::Connection(conn) => Conn::Connection(conn),
        })
    }

    /// Lock on `conn`. The guard exists before the first statement is sent, so that dropping
    /// this future mid-wait runs the guard's teardown.
    pub(crate) async fn take<'c>(&self, conn: Conn<'c>) -> Result<AdvisoryGuard<'c>, Error> {
        let timeout_ms = self.wait.lock_timeout_ms()?;
        if self.mode.xact && !conn.is_in_transaction() {
            return Err(Error::NotInTransaction {
                target: self.id.clone().into(),
            });
        }
        let mut guard = AdvisoryGuard::waiting(conn, self.id.clone(), self.mode);
        let acquiring = telemetry::Acquiring::start(&self.id, self.function.as_deref(), self.mode);
        let sent = self.send(&mut guard, timeout_ms).await;
        let holding = acquiring.finish(&sent);
        match sent {
            Ok(session) => {
                guard.set_held(session, holding);
                Ok(guard)
            }
            Err(error) => {
                guard.set_state(State::Done);
                Err(error)
            }
        }
    }

    /// The context comment of the statements that wait for this lock.
    fn context(&self) -> String {
        sql::context_comment(self.id.name(), self.function.as_deref())
    }

    async fn send(
        &self,
        guard: &mut AdvisoryGuard<'_>,
        timeout_ms: Option<u32>,
    ) -> Result<i32, Error> {
        let key = self.id.key();
        let conn = guard.conn_mut();
        // Whether statements can still run on the connection if the wait fails: not inside a
        // transaction the failure aborted.
        let mut usable_after_failure = !conn.is_in_transaction();
        // A timed wait on a borrowed connection costs more than the bare lock function: its
        // statement sets and restores `lock_timeout` around the lock, and inside the caller's
        // transaction it is plain text in a savepoint, which the server plans on every call.
        // So try first with the prepared statement: a lock nobody holds is taken in one cheap
        // round trip, and only a lock that is held pays for the wait. A try never jumps the
        // queue: Postgres refuses it when it conflicts with a waiting request too. (Waits on a
        // connection pglock owns keep their one message, which carries the cancel-safety
        // setting and the context comment.)
        if timeout_ms.is_some() && !conn.closes_on_drop() {
            match try_once(self.mode, key, self.on_standby, conn).await? {
                Outcome::Busy => {}
                outcome => return self.held(outcome),
            }
        }
        let result = match self.wait {
            Wait::NoWait => {
                return self.held(try_once(self.mode, key, self.on_standby, conn).await?);
            }
            _ if conn.closes_on_drop() => {
                let server_version = conn.server_version_num();
                let canceller = match conn.owner_pool() {
                    Some(pool) if !sql::has_client_check(server_version) => {
                        Some(orphan::CancelOnDrop::arm(pool.clone()))
                    }
                    _ => None,
                };
                let on = WaitOn::Owned {
                    server_version,
                    tag: canceller.as_ref().map(orphan::CancelOnDrop::tag),
                };
                let statement = self.wait_simple(timeout_ms, on);
                let result = sqlx::raw_sql(AssertSqlSafe(statement))
                    .fetch_all(&mut **conn)
                    .await
                    .and_then(|rows| Outcome::of_last(&rows));
                if let Some(canceller) = canceller {
                    canceller.disarm();
                }
                result
            }
            Wait::Limit(_) if conn.is_in_transaction() => {
                usable_after_failure = true;
                let on = WaitOn::CallerTransaction;
                let statement = self.wait_simple(timeout_ms, on);
                let result = sqlx::raw_sql(AssertSqlSafe(statement))
                    .fetch_all(&mut **conn)
                    .await
                    .and_then(|rows| Outcome::of_last(&rows));
                if result.is_err() {
                    // The wait's error is the one to report. If even the rollback to the
                    // savepoint fails, the connection is broken and says so on its next use.
                    let recovered = sqlx::raw_sql(AssertSqlSafe(sql::recover_caller_transaction()))
                        .execute(&mut **conn)
                        .await;
                    if let Err(error) = recovered {
                        tracing::warn!(lock = %self.id, %error, "pglock: could not roll back to the savepoint after a failed wait");
                        usable_after_failure = false;
                    }
                }
                result
            }
            _ => {
                let statement =
                    sql::wait_bound(self.mode, key, timeout_ms.is_some(), self.on_standby);
                let query = sqlx::query(statement);
                let query = match timeout_ms {
                    Some(ms) => query.bind(ms.to_string()),
                    None => query,
                };
                bind_key(query, key)
                    .fetch_one(&mut **conn)
                    .await
                    .and_then(|row| Outcome::of(&row))
            }
        };
        let result = result.map_err(|e| Error::acquiring(self.id.clone(), e));
        if matches!(result, Err(Error::LockTimeout { .. })) && !self.mode.xact {
            if usable_after_failure {
                self.undo_late_grant(conn).await;
            } else {
                tracing::warn!(lock = %self.id, "pglock: a session-level wait timed out in a transaction it aborted; if the lock was granted as the timeout fired, the session holds it until it ends or unlocks it");
            }
        }
        self.held(result?)
    }

    /// A wait as one simple-query message, with this lock's context comment.
    fn wait_simple(&self, timeout_ms: Option<u32>, on: WaitOn) -> String {
        let key = self.id.key();
        sql::wait_simple(
            self.mode,
            key,
            timeout_ms,
            on,
            self.on_standby,
            &self.context(),
        )
    }

    /// The server session the lock was taken on, or the error that says why it was not.
    fn held(&self, outcome: Outcome) -> Result<i32, Error> {
        match outcome {
            Outcome::Taken(session) => Ok(session),
            Outcome::Busy => Err(Error::Busy {
                target: self.id.clone().into(),
            }),
            Outcome::Standby => Err(Error::Standby {
                lock: self.id.clone(),
            }),
        }
    }

    /// Postgres arms `lock_timeout` when a backend starts to wait. If the lock is granted just
    /// as the timer fires, the backend holds the lock *and* raises the timeout at its next
    /// interrupt check. A transaction-level lock goes with the failed (sub)transaction; a
    /// session-level one stays. So after a timed-out session-level wait, unlock it if the session
    /// holds it (it did not before: a session that holds a lock gets it again without waiting).
    /// Only the failure path pays this round trip.
    async fn undo_late_grant(&self, conn: &mut PgConnection) {
        let statement = sql::unlock_if_held(self.mode, self.id.key());
        match sqlx::raw_sql(AssertSqlSafe(statement)).execute(conn).await {
            Ok(done) if done.rows_affected() > 0 => {
                tracing::debug!(lock = %self.id, "pglock: a lock granted as its wait timed out was released");
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(lock = %self.id, %error, "pglock: could not check for a lock granted as its wait timed out; the session may hold it");
            }
        }
    }
}

/// Try to take the lock without waiting (one prepared statement). [`Outcome::Busy`] when another
/// session holds it or waits for it in a conflicting mode.
async fn try_once(
    mode: Mode,
    key: AdvisoryKey,
    on: OnStandby,
    conn: &mut PgConnection,
) -> Result<Outcome, Error> {
    let statement = sql::try_lock(mode, key, on);
    let row = bind_key(sqlx::query(statement), key)
        .fetch_one(conn)
        .await?;
    Ok(Outcome::of(&row)?)
}

/// What an acquiring statement says (its last row's `taken` and pid columns; see `sql`).
enum Outcome {
    /// The lock was taken, on the server session with this pid.
    Taken(i32),
    /// A try found the lock held.
    Busy,
    /// The server is a hot standby, and nothing was taken.
    Standby,
}

impl Outcome {
    fn of(row: &PgRow) -> Result<Outcome, sqlx::Error> {
        let columns = row.len();
        Ok(match row.try_get::<Option<bool>, _>(columns - 2)? {
            Some(true) => Outcome::Taken(row.try_get(columns - 1)?),
            Some(false) => Outcome::Busy,
            None => Outcome::Standby,
        })
    }

    /// The outcome of a simple-query message: its last row is the acquiring statement's.
    fn of_last(rows: &[PgRow]) -> Result<Outcome, sqlx::Error> {
        Outcome::of(rows.last().ok_or(sqlx::Error::RowNotFound)?)
    }
}

/// The statements of an exclusive session-level lock that waits as long as it takes, with no
/// standby gate (the leader election's, which checks for a standby itself): the wait (binds the
/// key) and the unlock (binds the key, then the pid of the session that holds it).
pub(crate) fn session_lock_statements(key: AdvisoryKey) -> (&'static str, &'static str) {
    let session = Mode {
        shared: false,
        xact: false,
    };
    (
        sql::wait_bound(session, key, false, OnStandby::Allow),
        sql::unlock(session, key),
    )
}

/// Bind an advisory key's one or two parameters to a statement.
pub(crate) fn bind_key<'q>(
    query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    key: AdvisoryKey,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    match key {
        AdvisoryKey::BigInt(k) => query.bind(k),
        AdvisoryKey::Pair(a, b) => query.bind(a).bind(b),
    }
}

/// `Busy` and `LockTimeout` become `Ok(None)`; other errors stay errors.
fn not_acquired_is_none<T>(result: Result<T, Error>) -> Result<Option<T>, Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(error) if error.is_not_acquired() => Ok(None),
        Err(error) => Err(error),
    }
}
