//! Scopes that set Postgres' `lock_timeout` on one session (django-pglock's `pglock.timeout`).

use std::panic::resume_unwind;
use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::attr::{Lend, SessionScope, lent};
use crate::error::sqlstate;
use crate::unwind::catch_panic;
use crate::wait::MAX_LOCK_TIMEOUT_MS;
use crate::{Error, Session};

/// A `lock_timeout` for every statement of a scope: how long any one of them may wait for any
/// lock (tables, rows, advisory locks...) before failing with [`Error::LockTimeout`].
///
/// `Some(limit)` (or a bare `Duration`) sets the limit, at least one millisecond; `None` sets no
/// limit (`lock_timeout = 0`), overriding one the session, role or database sets. Run the scope
/// with [`LockTimeout::scope`].
///
/// ```no_run
/// use std::time::Duration;
///
/// # async fn migrate(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
/// pglock::timeout(Duration::from_secs(5))
///     .scope(conn, async |conn| {
///         // Fails with pglock::Error::LockTimeout rather than queueing behind a long transaction
///         // (and making everything queue behind it).
///         sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
///         Ok::<_, pglock::Error>(())
///     })
///     .await
/// # }
/// ```
pub fn timeout(limit: impl Into<Option<Duration>>) -> LockTimeout {
    LockTimeout {
        limit: limit.into(),
    }
}

/// A lock timeout to apply for a scope. Built by [`timeout`](fn@timeout).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockTimeout {
    limit: Option<Duration>,
}

impl LockTimeout {
    /// The limit, or `None` for no limit.
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// The value `lock_timeout` takes: whole milliseconds, `0` for no limit.
    fn setting(&self) -> Result<String, Error> {
        let Some(limit) = self.limit else {
            return Ok("0".to_owned());
        };
        let ms = limit.as_millis();
        if ms == 0 {
            return Err(Error::InvalidArgument(format!(
                "a lock timeout of {limit:?} is under a millisecond; give at least 1 ms, \
                 or None for no limit"
            )));
        }
        if ms > MAX_LOCK_TIMEOUT_MS {
            return Err(Error::InvalidArgument(format!(
                "a lock timeout of {limit:?} is longer than Postgres accepts \
                 ({MAX_LOCK_TIMEOUT_MS} ms, about 24.8 days); use None for no limit"
            )));
        }
        Ok(ms.to_string())
    }

    /// Run `body` with `lock_timeout` set on `db`'s session, and set it back to what it was when
    /// `body` ends, whether it returns `Ok`, returns `Err` or panics.
    ///
    /// Scopes nest: each restores the value it found. Inside a transaction the setting is
    /// transaction-local (`set_config(..., true)`), so a rollback also undoes it; outside one it
    /// is set for the session and restored when the scope ends.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a limit under a millisecond or over Postgres' maximum,
    /// before anything is sent; a database error setting or restoring the value; or `body`'s own
    /// error. A statement in `body` that waits past the limit fails with SQLSTATE 55P03, which
    /// converts into [`Error::LockTimeout`] (with [`LockTarget::Statement`](crate::LockTarget)).
    ///
    /// # Cancel safety
    /// If this future is dropped while `body` runs, pglock cannot send the restoring statement
    /// (no statement can be run from a destructor through sqlx's API). Inside a transaction that
    /// is harmless: the transaction's end undoes the setting. Outside one, a
    /// `&mut PoolConnection` is marked to be closed instead of returned to its pool, so no other
    /// user gets the changed `lock_timeout`; a `&mut PgConnection` keeps it (a warning is logged).
    pub async fn scope<'c, T, E>(
        self,
        db: impl Session<'c>,
        body: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        crate::attr::on_session(self, db, body).await
    }
}

impl SessionScope for LockTimeout {
    /// The scope on any lendable handle, with `body` getting the handle back under its own type.
    /// `failed` says whether `body`'s output is a failure, whose error then beats pglock's.
    async fn scope_on<H: Lend + ?Sized, T>(
        self,
        handle: &mut H,
        body: impl AsyncFnOnce(&mut H) -> T,
        failed: fn(&T) -> bool,
    ) -> Result<T, Error> {
        let mut scope = TimeoutScope::enter(self, handle).await?;
        let outcome = catch_panic(body(scope.lend())).await;
        scope.exit(outcome, failed).await
    }
}

/// A lock timeout set on a session, from [`enter`](Self::enter) to [`exit`](Self::exit), with
/// the session lent out in between. Dropped before `exit` (its future was dropped), it makes sure
/// the changed value does not reach another user of the connection.
pub(crate) struct TimeoutScope<'a, H: Lend + ?Sized> {
    handle: &'a mut H,
    /// The value to restore.
    previous: String,
    /// Whether the value may have been changed and not yet restored.
    pending: bool,
    /// Whether the value was set transaction-locally.
    local: bool,
}

impl<'a, H: Lend + ?Sized> TimeoutScope<'a, H> {
    /// Set the limit on `handle`'s session, remembering the value it replaces.
    pub(crate) async fn enter(limit: LockTimeout, handle: &'a mut H) -> Result<Self, Error> {
        let setting = limit.setting()?;
        let local = lent(handle).is_in_transaction();
        let mut scope = TimeoutScope {
            handle,
            previous: String::new(),
            // From here until restored, dropping this future leaves a changed value behind.
            pending: true,
            local,
        };
        let (previous, _): (String, String) = sqlx::query_as(SET)
            .bind(&setting)
            .bind(local)
            .fetch_one(scope.handle.as_pg_connection())
            .await?;
        scope.previous = previous;
        Ok(scope)
    }

    /// The session, for the scope's body.
    pub(crate) fn lend(&mut self) -> &mut H {
        self.handle
    }

    /// Restore the value, and combine the body's outcome with that: a failed restore is the
    /// result only when the body succeeded (`failed` says whether it did); a panic is resumed.
    pub(crate) async fn exit<T>(
        mut self,
        outcome: std::thread::Result<T>,
        failed: fn(&T) -> bool,
    ) -> Result<T, Error> {
        let restored = self.restore().await;
        match (outcome, restored) {
            (Ok(out), Ok(())) => Ok(out),
            (Ok(out), Err(error)) if !failed(&out) => Err(error),
            (Ok(out), restored) => {
                warn_unrestored(restored);
                Ok(out)
            }
            (Err(panic), restored) => {
                warn_unrestored(restored);
                resume_unwind(panic)
            }
        }
    }

    async fn restore(&mut self) -> Result<(), Error> {
        let restored = sqlx::query(RESTORE)
            .bind(&self.previous)
            .bind(self.local)
            .execute(self.handle.as_pg_connection())
            .await;
        match restored {
            Ok(_) => {}
            // A transaction-local value is undone by the rollback this transaction needs anyway.
            Err(error)
                if self.local && sqlstate(&error).as_deref() == Some(IN_FAILED_TRANSACTION) => {}
            Err(error) => return Err(error.into()),
        }
        self.pending = false;
        Ok(())
    }
}

impl<H: Lend + ?Sized> Drop for TimeoutScope<'_, H> {
    fn drop(&mut self) {
        if !self.pending || self.local {
            return;
        }
        match self.handle.as_pool_connection() {
            // The pool closes it rather than lending the changed value to its next user.
            Some(conn) => conn.close_on_drop(),
            None => tracing::warn!(
                "pglock: a lock timeout scope on a borrowed connection ended without restoring \
                 lock_timeout (its future was dropped, or restoring failed); the session keeps \
                 the changed value"
            ),
        }
    }
}

/// Log a restore that failed after the scope's body already failed: the body's error (or panic)
/// is the one the caller sees.
fn warn_unrestored(restored: Result<(), Error>) {
    if let Err(error) = restored {
        tracing::warn!(%error, "pglock: restoring lock_timeout after a failed scope failed too");
    }
}

/// Read the current value and set the new one, in one round trip. The CTE is materialized before
/// the outer projection runs, so the value read is the one from before the change.
const SET: &str = "WITH s AS MATERIALIZED (SELECT current_setting('lock_timeout') AS previous) \
                   SELECT s.previous, set_config('lock_timeout', $1, $2) FROM s";

/// Set the value back.
const RESTORE: &str = "SELECT set_config('lock_timeout', $1, $2)";

/// `in_failed_sql_transaction`: the transaction has failed and runs nothing until rolled back.
const IN_FAILED_TRANSACTION: &str = "25P02";
