//! The guard that holds an advisory lock.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use sqlx::{PgConnection, Row};

use super::sql::{self, Mode};
use crate::handle::Conn;
use crate::telemetry::Holding;
use crate::{Error, LockId};

/// Where a guard's lock stands, which decides what dropping the guard must do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum State {
    /// The acquiring statement may be in flight.
    Waiting,
    /// The lock is held.
    Held,
    /// Nothing is held or in flight: released, or never acquired.
    Done,
}

/// Holds an advisory lock until [`release`](AdvisoryGuard::release)d or dropped.
///
/// It derefs to the connection the lock lives on, so the holder can run statements on the
/// locked session (`&mut *guard` is a `&mut PgConnection`), and `&mut guard` is itself a
/// [`Db`](crate::Db) handle for taking more locks on the same session.
///
/// Prefer `release().await`: it unlocks now and reports the outcome. Dropping the guard releases
/// the lock too where pglock owns the connection (it closes the connection, which ends the session
/// and its locks at once). On a borrowed connection a destructor cannot run a statement, so a
/// dropped session-level guard leaves the lock held; see [`Advisory::acquire`](crate::Advisory::acquire)'s
/// `# Cancel safety`. Transaction-level locks are released when their transaction ends.
#[must_use = "the lock is released when the guard is released or dropped"]
pub struct AdvisoryGuard<'c> {
    /// `None` only once the guard has been released or dropped.
    conn: Option<Conn<'c>>,
    id: LockId,
    mode: Mode,
    state: State,
    /// The pid of the server session the lock was taken on, once held.
    session: i32,
    /// Since when the lock is held, for its events and metrics.
    holding: Option<Holding>,
}

/// A held lock without its connection: see [`AdvisoryGuard::forget`].
pub struct Forgotten {
    pub(crate) id: LockId,
    pub(crate) mode: Mode,
    session: i32,
    holding: Option<Holding>,
}

impl Forgotten {
    /// The lock ended with `ended` without a guard (pglock's own transaction ended): report it.
    #[inline]
    pub(crate) fn ended(mut self, ended: &Result<(), Error>) {
        if let Some(holding) = self.holding.take() {
            holding.ended(&self.id, ended);
        }
    }

    /// Take over reporting the lock's end (see [`AdvisoryGuard::take_holding`]).
    pub(super) fn take_holding(&mut self) -> Option<Holding> {
        self.holding.take()
    }
}

impl<'c> AdvisoryGuard<'c> {
    pub(super) fn waiting(conn: Conn<'c>, id: LockId, mode: Mode) -> Self {
        AdvisoryGuard {
            conn: Some(conn),
            id,
            mode,
            state: State::Waiting,
            session: 0,
            holding: None,
        }
    }

    /// A guard for a lock that is already held on `conn`; see [`forget`](Self::forget).
    #[inline]
    pub(crate) fn held(conn: Conn<'c>, lock: Forgotten) -> Self {
        AdvisoryGuard {
            conn: Some(conn),
            id: lock.id,
            mode: lock.mode,
            state: State::Held,
            session: lock.session,
            holding: lock.holding,
        }
    }

    /// Let go of the connection while the lock stays held, so that the connection can be lent
    /// elsewhere; [`held`](Self::held) makes a guard again to release it.
    #[inline]
    pub(crate) fn forget(mut self) -> Forgotten {
        self.state = State::Done;
        Forgotten {
            id: std::mem::replace(&mut self.id, LockId::stand_in()),
            mode: self.mode,
            session: self.session,
            holding: self.holding.take(),
        }
    }

    /// The lock is held, on the server session with this pid.
    pub(super) fn set_held(&mut self, session: i32, holding: Option<Holding>) {
        self.state = State::Held;
        self.session = session;
        self.holding = holding;
    }

    /// The heartbeat (checking every `every`) found the session gone: report the loss once.
    pub(super) fn report_lost(&mut self, every: std::time::Duration, source: &sqlx::Error) {
        if let Some(holding) = self.holding.take() {
            holding.lost_by_heartbeat(&self.id, every, source);
        }
    }

    /// Take over reporting the lock's end: the guard's release and drop no longer report it.
    pub(super) fn take_holding(&mut self) -> Option<Holding> {
        self.holding.take()
    }

    pub(super) fn set_state(&mut self, state: State) {
        self.state = state;
    }

    pub(super) fn conn_mut(&mut self) -> &mut Conn<'c> {
        self.conn
            .as_mut()
            .expect("the connection is only taken on release or drop")
    }

    /// The id of the lock held.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let guard = pglock::advisory("reindex").acquire(pool).await?;
    /// println!("holding {:?}", guard.id());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &LockId {
        &self.id
    }

    /// Whether the lock held is shared.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let guard = pglock::advisory("catalog").shared().acquire(pool).await?;
    /// assert!(guard.is_shared());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn is_shared(&self) -> bool {
        self.mode.shared
    }

    /// Whether the lock held is transaction-level (released when the transaction ends).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// let guard = pglock::advisory("invoice-42").xact().acquire(&mut *tx).await?;
    /// assert!(guard.is_xact());
    /// drop(guard);
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn is_xact(&self) -> bool {
        self.mode.xact
    }

    /// Watch the lock's session: check it every `heartbeat` (a `SELECT 1` that must be answered
    /// within one interval) until a check fails, and return the loss. A guard lends its
    /// connection through `Deref` at any moment, so pglock cannot watch it on its own; this is
    /// the same heartbeat as [`Advisory::run`](crate::Advisory::run)'s, for code that holds a
    /// guard and races its work against the loss:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn relay() {}
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut guard = pglock::advisory("outbox-relay").acquire(pool).await?;
    /// let outcome = {
    ///     let mut work = std::pin::pin!(relay());
    ///     let mut lost = std::pin::pin!(guard.lost(Duration::from_millis(500)));
    ///     // Whichever comes first: the work's end, or the loss (then the work is dropped).
    ///     std::future::poll_fn(|cx| {
    ///         use std::task::Poll;
    ///         if let Poll::Ready(()) = work.as_mut().poll(cx) {
    ///             return Poll::Ready(Ok(()));
    ///         }
    ///         lost.as_mut().poll(cx).map(Err)
    ///     })
    ///     .await
    /// };
    /// match outcome {
    ///     Ok(()) => guard.release().await?,
    ///     Err(lost) => return Err(lost),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// While it runs, the watch has the connection: use it from the guard between watches only.
    /// Intervals under [`MIN_HEARTBEAT`](crate::MIN_HEARTBEAT) are raised to it.
    ///
    /// # Errors
    /// It returns (never `Ok`) [`Error::Lost`] once a check fails or goes unanswered; the
    /// session is then gone, or the connection is left mid-statement and should be dropped
    /// (which closes it, on a pool).
    ///
    /// # Cancel safety
    /// Dropping the future mid-check leaves that `SELECT 1` to finish before the connection's
    /// next statement; nothing else changes.
    pub async fn lost(&mut self, heartbeat: Duration) -> Error {
        let every = heartbeat.max(crate::MIN_HEARTBEAT);
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beats.tick().await;
            if let Err(source) = super::beat(&mut **self.conn_mut(), every).await {
                return Error::Lost {
                    lock: self.id.clone(),
                    source,
                };
            }
        }
    }

    /// Release the lock now.
    ///
    /// A session-level lock is unlocked (once: advisory locks are re-entrant, and each
    /// acquisition has its own guard), and a connection pglock checked out of a pool goes back to
    /// it. A transaction-level lock has no unlock: it is released when its transaction ends, and
    /// this only ends the guard.
    ///
    /// # Errors
    /// * [`Error::NotHeld`] when the session no longer held the lock;
    /// * [`Error::Lost`] when the session is gone (terminated, the server restarted, the
    ///   connection was cut): the lock went with it;
    /// * [`Error::SessionMoved`] when the connection now runs on another server session than
    ///   the one the lock was taken on (a transaction pooler such as PgBouncer sits in between):
    ///   nothing is unlocked;
    /// * [`Error::Database`] when the unlock statement fails otherwise, for example because the
    ///   transaction the connection is in has failed (roll it back first; the lock stays held
    ///   meanwhile).
    ///
    /// # Cancel safety
    /// If this future is dropped before it completes, the guard's drop runs as if `release` had
    /// not been called (see the type's docs); the unlock statement, if already sent, still runs.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let guard = pglock::advisory("reindex").acquire(pool).await?;
    /// // ... the work ...
    /// guard.release().await?; // errors (a lost session, say) are reported here, not swallowed
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<(), Error> {
        let released = self.unlock().await;
        if let Some(holding) = self.holding.take() {
            holding.ended(&self.id, &released);
        }
        released
    }

    /// Unlock, as [`release`](Self::release) does, without reporting it; dropping the guard
    /// then gives its connection back (or, if the unlock failed, closes it where pglock owns it).
    pub(super) async fn unlock(&mut self) -> Result<(), Error> {
        if self.mode.xact {
            self.state = State::Done;
            return Ok(());
        }
        let key = self.id.key();
        let statement = sql::unlock(self.mode, key);
        let session = self.session;
        let conn = self.conn_mut();
        let row = match super::bind_key(sqlx::query(statement), key)
            .bind(session)
            .fetch_one(&mut **conn)
            .await
        {
            Ok(row) => row,
            Err(source) if crate::error::session_gone(&source) => {
                return Err(Error::Lost {
                    lock: self.id.clone(),
                    source,
                });
            }
            Err(source) => return Err(source.into()),
        };
        let (was_held, now_on): (Option<bool>, i32) = (row.try_get(0)?, row.try_get(1)?);
        self.state = State::Done;
        match was_held {
            Some(true) => Ok(()),
            Some(false) => Err(Error::NotHeld {
                lock: self.id.clone(),
            }),
            None => Err(Error::SessionMoved {
                lock: self.id.clone(),
                locked_on: self.session,
                now_on,
            }),
        }
    }
}

impl Drop for AdvisoryGuard<'_> {
    /// Released, forgotten, or transaction-level and held: nothing to do, decided inline (every
    /// lock's guard is dropped so, once); anything else out of line.
    #[inline]
    fn drop(&mut self) {
        let nothing_to_do = match self.state {
            State::Done => true,
            State::Held => self.mode.xact,
            State::Waiting => false,
        };
        if !(nothing_to_do && self.holding.is_none()) {
            self.dropped_unreleased();
        }
    }
}

impl AdvisoryGuard<'_> {
    #[cold]
    #[inline(never)]
    fn dropped_unreleased(&mut self) {
        if let Some(holding) = self.holding.take() {
            holding.dropped(&self.id);
        }
        let Some(conn) = self.conn.take() else {
            return;
        };
        let unreleased = match self.state {
            State::Done => return,
            // Ends with its transaction; pglock's own transaction is closed by its owner.
            State::Held if self.mode.xact => return,
            State::Held => "was dropped without release",
            State::Waiting => "was dropped while waiting",
        };
        if matches!(conn, Conn::Connection(_) | Conn::PoolConnection(_)) {
            tracing::warn!(
                lock = %self.id,
                "pglock: the guard of a lock on a borrowed connection {unreleased}; the session \
                 keeps (or will get) the lock until the connection closes. Release guards with \
                 `release().await`, and bound waits with `timeout`."
            );
        }
        conn.abandon();
    }
}

impl Deref for AdvisoryGuard<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn
            .as_ref()
            .expect("the connection is only taken on release or drop")
    }
}

impl DerefMut for AdvisoryGuard<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn_mut()
    }
}

impl fmt::Debug for AdvisoryGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdvisoryGuard")
            .field("id", &self.id)
            .field("shared", &self.mode.shared)
            .field("xact", &self.mode.xact)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}
