//! Scopes that set Postgres' `lock_timeout` on one session (django-pglock's `pglock.timeout`).

use std::time::Duration;

use sqlx::PgConnection;

use crate::error::sqlstate;
use crate::handle::{AbandonUnlessKept, Conn};
use crate::scope::{Held, Kind, OneSession, Site};
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
    pub(crate) fn setting(&self) -> Result<String, Error> {
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
        crate::scope::on_session(self, db, body).await
    }
}

impl<H: OneSession> Kind<H> for LockTimeout {
    type Held = TimeoutHeld;

    /// Set the limit on the site's session, remembering the value it replaces.
    async fn enter(self, site: &mut H) -> Result<TimeoutHeld, Error> {
        let setting = self.setting()?;
        let conn = site.session().ok_or_else(|| {
            Error::InvalidArgument(
                "a lock timeout acts on one session, and a pool has many: pass a connection".into(),
            )
        })?;
        TimeoutHeld::set(&setting, conn).await
    }

    fn span(&self) -> tracing::Span {
        crate::telemetry::timeout_span(self.limit)
    }
}

/// A lock timeout set on a session: the value to restore, from entering the scope to ending it.
/// Abandoned (its scope's future was dropped), it makes sure the changed value does not reach
/// another user of the connection.
pub struct TimeoutHeld {
    /// The value to restore.
    previous: String,
    /// Whether the value was set transaction-locally (the transaction's end undoes it).
    local: bool,
}

impl TimeoutHeld {
    /// Set `lock_timeout` to `setting` on `conn`, reading the value it replaces.
    pub(crate) async fn set(setting: &str, conn: Conn<'_>) -> Result<Self, Error> {
        let local = conn.is_in_transaction();
        // Dropped before the value is read back (the statement may be in flight), a pool
        // connection is closed rather than returned with the value changed.
        let mut conn = AbandonUnlessKept::new(conn, !local);
        let (previous, _): (String, String) = sqlx::query_as(SET)
            .bind(setting)
            .bind(local)
            .fetch_one(&mut *conn)
            .await?;
        conn.keep();
        crate::telemetry::timeout_set(setting, &previous, local);
        Ok(TimeoutHeld { previous, local })
    }

    /// Set the value back on `conn`.
    pub(crate) async fn restore(&self, conn: &mut PgConnection) -> Result<(), Error> {
        let restored = sqlx::query(RESTORE)
            .bind(&self.previous)
            .bind(self.local)
            .execute(conn)
            .await;
        let restored = match restored {
            Ok(_) => Ok(()),
            // A transaction-local value is undone by the rollback this transaction needs anyway.
            Err(error)
                if self.local && sqlstate(&error).as_deref() == Some(IN_FAILED_TRANSACTION) =>
            {
                Ok(())
            }
            Err(error) => Err(error.into()),
        };
        crate::telemetry::timeout_restored(&self.previous, &restored);
        restored
    }

    /// The value could not be restored: keep it from reaching another user of the connection.
    pub(crate) fn abandon(self, conn: Option<Conn<'_>>) {
        if self.local {
            return;
        }
        match conn {
            // The pool closes it rather than lending the changed value to its next user.
            Some(Conn::PoolConnection(conn)) => conn.close_on_drop(),
            _ => tracing::warn!(
                "pglock: a lock timeout scope on a borrowed connection ended without restoring \
                 lock_timeout (its future was dropped, or restoring failed); the session keeps \
                 the changed value"
            ),
        }
    }
}

impl Held for TimeoutHeld {
    fn describe(&self) -> String {
        "lock_timeout".to_owned()
    }

    async fn end<H: Site>(self, site: &mut H, _body_failed: bool) -> Result<(), Error> {
        let Some(mut conn) = site.session() else {
            unreachable!("a lock timeout is only entered on a session")
        };
        let restored = self.restore(&mut conn).await;
        if restored.is_err() {
            self.abandon(Some(conn));
        }
        restored
    }

    fn abandon<H: Site>(self, site: &mut H) {
        self.abandon(site.session());
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
