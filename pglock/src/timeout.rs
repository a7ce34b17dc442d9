//! Scopes that set one of Postgres' timeouts on one session: `lock_timeout` (django-pglock's
//! `pglock.timeout`), `statement_timeout`, `idle_in_transaction_session_timeout` and
//! `transaction_timeout`. One setting type, [`Timeout`], parameterised by the setting it sets.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use sqlx::PgConnection;

use crate::error::sqlstate;
use crate::handle::{AbandonUnlessKept, Conn};
use crate::scope::{Held, Kind, OneSession, Site};
use crate::wait::MAX_LOCK_TIMEOUT_MS;
use crate::{Error, Session};

/// A Postgres setting a [`Timeout`] scope sets: [`Lock`], [`Statement`],
/// [`IdleInTransaction`] or [`Transaction`]. Sealed: those four only.
pub trait Setting: sealed::Sealed + Copy + fmt::Debug + Eq + Send + Sync + 'static {
    /// The setting's name in Postgres.
    const NAME: &'static str;
    /// The first server version that has it (`server_version_num`), when not every supported
    /// one does.
    const SINCE: Option<u32> = None;
}

mod sealed {
    pub trait Sealed {}
}

/// `lock_timeout`: how long any one statement may wait for any lock (tables, rows, advisory
/// locks...). Past it the statement fails with SQLSTATE 55P03, [`Error::LockTimeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lock;

/// `statement_timeout`: how long any one statement may run, waiting included. Past it the
/// statement is cancelled with SQLSTATE 57014, [`Error::StatementTimeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Statement;

/// `idle_in_transaction_session_timeout`: how long the session may sit idle inside an open
/// transaction. Past it the server **ends the session** (SQLSTATE 25P03 on its next use).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IdleInTransaction;

/// `transaction_timeout` (Postgres 17 and later): how long any one transaction (or, outside one,
/// statement) may last. Past it the server **ends the session** (SQLSTATE 25P04). On an older
/// server the scope fails with [`Error::Unsupported`] before anything is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transaction;

impl sealed::Sealed for Lock {}
impl sealed::Sealed for Statement {}
impl sealed::Sealed for IdleInTransaction {}
impl sealed::Sealed for Transaction {}

impl Setting for Lock {
    const NAME: &'static str = "lock_timeout";
}

impl Setting for Statement {
    const NAME: &'static str = "statement_timeout";
}

impl Setting for IdleInTransaction {
    const NAME: &'static str = "idle_in_transaction_session_timeout";
}

impl Setting for Transaction {
    const NAME: &'static str = "transaction_timeout";
    const SINCE: Option<u32> = Some(170000);
}

/// A `lock_timeout` to apply for a scope. Built by [`timeout`](fn@timeout).
pub type LockTimeout = Timeout<Lock>;
/// A `statement_timeout` to apply for a scope. Built by [`statement_timeout`].
pub type StatementTimeout = Timeout<Statement>;
/// An `idle_in_transaction_session_timeout` to apply for a scope. Built by
/// [`idle_in_transaction_session_timeout`].
pub type IdleInTransactionTimeout = Timeout<IdleInTransaction>;
/// A `transaction_timeout` to apply for a scope. Built by [`transaction_timeout`].
pub type TransactionTimeout = Timeout<Transaction>;

/// A `lock_timeout` for every statement of a scope: how long any one of them may wait for any
/// lock (tables, rows, advisory locks...) before failing with [`Error::LockTimeout`].
///
/// `Some(limit)` (or a bare `Duration`) sets the limit, at least one millisecond; `None` sets no
/// limit (`lock_timeout = 0`), overriding one the session, role or database sets. Run the scope
/// with [`Timeout::scope`].
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
    Timeout::new(limit)
}

/// A `statement_timeout` for every statement of a scope: how long any one of them may run
/// (waiting for locks included) before the server cancels it with SQLSTATE 57014, which
/// converts into [`Error::StatementTimeout`]. `None` sets no limit. Nests, restores and stays
/// transaction-local inside a transaction as [`timeout`](fn@timeout) does.
///
/// ```no_run
/// use std::time::Duration;
///
/// # async fn backfill(conn: &mut sqlx::PgConnection) -> Result<(), pglock::Error> {
/// pglock::statement_timeout(Duration::from_secs(30))
///     .scope(conn, async |conn| {
///         sqlx::query("UPDATE orders SET note = '' WHERE note IS NULL").execute(&mut *conn).await?;
///         Ok::<_, pglock::Error>(())
///     })
///     .await
/// # }
/// ```
pub fn statement_timeout(limit: impl Into<Option<Duration>>) -> StatementTimeout {
    Timeout::new(limit)
}

/// An `idle_in_transaction_session_timeout` for a scope: a session left idle inside a
/// transaction for longer is ended by the server, which releases every lock the transaction
/// holds. `None` sets no limit. See [`Timeout::scope`].
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// let mut conn = pool.acquire().await?;
/// pglock::idle_in_transaction_session_timeout(Duration::from_secs(30))
///     .scope(&mut conn, async |conn| {
///         sqlx::query("SELECT 1").execute(&mut *conn).await?;
///         Ok::<_, pglock::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub fn idle_in_transaction_session_timeout(
    limit: impl Into<Option<Duration>>,
) -> IdleInTransactionTimeout {
    Timeout::new(limit)
}

/// A `transaction_timeout` for a scope (Postgres 17 and later): a transaction (or a statement
/// outside one) that lasts longer ends the session. `None` sets no limit. On Postgres 16 and
/// older the scope fails with [`Error::Unsupported`]. See [`Timeout::scope`].
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// // Postgres 17 and newer.
/// let mut conn = pool.acquire().await?;
/// pglock::transaction_timeout(Duration::from_secs(60))
///     .scope(&mut conn, async |conn| {
///         sqlx::query("SELECT 1").execute(&mut *conn).await?;
///         Ok::<_, pglock::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub fn transaction_timeout(limit: impl Into<Option<Duration>>) -> TransactionTimeout {
    Timeout::new(limit)
}

/// One of Postgres' timeouts (the [`Setting`] `S`), to set for a scope: [`LockTimeout`],
/// [`StatementTimeout`], [`IdleInTransactionTimeout`] or [`TransactionTimeout`].
pub struct Timeout<S: Setting> {
    limit: Option<Duration>,
    setting: PhantomData<S>,
}

impl<S: Setting> Clone for Timeout<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S: Setting> Copy for Timeout<S> {}

impl<S: Setting> PartialEq for Timeout<S> {
    fn eq(&self, other: &Self) -> bool {
        self.limit == other.limit
    }
}

impl<S: Setting> Eq for Timeout<S> {}

impl<S: Setting> fmt::Debug for Timeout<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("setting", &S::NAME)
            .field("limit", &self.limit)
            .finish()
    }
}

impl<S: Setting> Timeout<S> {
    fn new(limit: impl Into<Option<Duration>>) -> Self {
        Timeout {
            limit: limit.into(),
            setting: PhantomData,
        }
    }

    /// The limit, or `None` for no limit.
    ///
    /// ```
    /// # use std::time::Duration;
    /// assert_eq!(pglock::statement_timeout(Duration::from_secs(5)).limit(), Some(Duration::from_secs(5)));
    /// assert_eq!(pglock::statement_timeout(None).limit(), None);
    /// ```
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// The name of the Postgres setting this sets.
    ///
    /// ```
    /// assert_eq!(pglock::statement_timeout(None).name(), "statement_timeout");
    /// ```
    pub fn name(&self) -> &'static str {
        S::NAME
    }

    /// The value the setting takes: whole milliseconds, `0` for no limit.
    pub(crate) fn setting(&self) -> Result<String, Error> {
        milliseconds(S::NAME, self.limit)
    }

    /// Run `body` with the setting set on `db`'s session, and set it back to what it was when
    /// `body` ends, whether it returns `Ok`, returns `Err` or panics.
    ///
    /// Scopes nest: each restores the value it found. Inside a transaction the setting is
    /// transaction-local (`set_config(..., true)`), so a rollback also undoes it; outside one it
    /// is set for the session and restored when the scope ends.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a limit under a millisecond or over Postgres' maximum,
    /// before anything is sent; [`Error::Unsupported`] for `transaction_timeout` on a server older
    /// than Postgres 17, before anything is set; a database error setting or restoring the
    /// value; or `body`'s own error. A statement in `body` that waits for a lock past a
    /// `lock_timeout` fails with SQLSTATE 55P03, which converts into [`Error::LockTimeout`]
    /// (with [`LockTarget::Statement`](crate::LockTarget)); one that runs past a
    /// `statement_timeout` fails with 57014, which converts into [`Error::StatementTimeout`].
    ///
    /// # Cancel safety
    /// If this future is dropped while `body` runs, pglock cannot send the restoring statement
    /// (no statement can be run from a destructor through sqlx's API). Inside a transaction that
    /// is harmless: the transaction's end undoes the setting. Outside one, a
    /// `&mut PoolConnection` is marked to be closed instead of returned to its pool, so no other
    /// user gets the changed setting; a `&mut PgConnection` keeps it (a warning is logged).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut conn = pool.acquire().await?;
    /// pglock::timeout(Duration::from_secs(5))
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

/// The value of a timeout setting: whole milliseconds, `0` for no limit.
pub(crate) fn milliseconds(name: &str, limit: Option<Duration>) -> Result<String, Error> {
    let Some(limit) = limit else {
        return Ok("0".to_owned());
    };
    let ms = limit.as_millis();
    let what = name.replace('_', " ");
    if ms == 0 {
        return Err(Error::InvalidArgument(format!(
            "a {what} of {limit:?} is under a millisecond; give at least 1 ms, \
             or None for no limit"
        )));
    }
    if ms > MAX_LOCK_TIMEOUT_MS {
        return Err(Error::InvalidArgument(format!(
            "a {what} of {limit:?} is longer than Postgres accepts \
             ({MAX_LOCK_TIMEOUT_MS} ms, about 24.8 days); use None for no limit"
        )));
    }
    Ok(ms.to_string())
}

/// Fail with [`Error::Unsupported`] if the server of `conn` is older than `S` needs. The version
/// comes from the `server_version` the server reported at startup, so this costs no round trip
/// (a server that did not report it is asked).
async fn check_version<S: Setting>(conn: &mut PgConnection) -> Result<(), Error> {
    let Some(since) = S::SINCE else {
        return Ok(());
    };
    let server = match conn.server_version_num() {
        Some(version) => version,
        None => {
            let version: String =
                sqlx::query_scalar("SELECT current_setting('server_version_num')")
                    .fetch_one(&mut *conn)
                    .await?;
            version.parse().unwrap_or(0)
        }
    };
    if server < since {
        return Err(Error::Unsupported {
            setting: S::NAME,
            since,
            server,
        });
    }
    Ok(())
}

impl<S: Setting, H: OneSession> Kind<H> for Timeout<S> {
    type Held = TimeoutHeld;

    /// Set the limit on the site's session, remembering the value it replaces.
    async fn enter(self, site: &mut H) -> Result<TimeoutHeld, Error> {
        let setting = self.setting()?;
        let mut conn = site.session().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "a {} acts on one session, and a pool has many: pass a connection",
                S::NAME.replace('_', " ")
            ))
        })?;
        check_version::<S>(&mut conn).await?;
        TimeoutHeld::set_named(S::NAME, &setting, conn).await
    }

    fn span(&self) -> Option<tracing::Span> {
        crate::telemetry::timeout_span(self.limit)
    }
}

/// A timeout set on a session: the value to restore, from entering the scope to ending it.
/// Abandoned (its scope's future was dropped), it makes sure the changed value does not reach
/// another user of the connection.
pub struct TimeoutHeld {
    /// The setting's name.
    name: &'static str,
    /// The value to restore.
    previous: String,
    /// Whether the value was set transaction-locally (the transaction's end undoes it).
    local: bool,
}

impl TimeoutHeld {
    /// Set `lock_timeout` to `setting` on `conn`, reading the value it replaces.
    pub(crate) async fn set(setting: &str, conn: Conn<'_>) -> Result<Self, Error> {
        Self::set_named(Lock::NAME, setting, conn).await
    }

    /// Set the timeout `name` to `setting` on `conn`, reading the value it replaces.
    async fn set_named(name: &'static str, setting: &str, conn: Conn<'_>) -> Result<Self, Error> {
        let local = conn.is_in_transaction();
        // Dropped before the value is read back (the statement may be in flight), a pool
        // connection is closed rather than returned with the value changed.
        let mut conn = AbandonUnlessKept::new(conn, !local);
        let (previous, _): (String, String) = sqlx::query_as(SET)
            .bind(setting)
            .bind(local)
            .bind(name)
            .fetch_one(&mut *conn)
            .await?;
        conn.keep();
        crate::telemetry::timeout_set(setting, &previous, local);
        Ok(TimeoutHeld {
            name,
            previous,
            local,
        })
    }

    /// Set the value back on `conn`.
    pub(crate) async fn restore(&self, conn: &mut PgConnection) -> Result<(), Error> {
        let restored = sqlx::query(RESTORE)
            .bind(&self.previous)
            .bind(self.local)
            .bind(self.name)
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
                setting = self.name,
                "pglock: a timeout scope on a borrowed connection ended without restoring its \
                 setting (its future was dropped, or restoring failed); the session keeps the \
                 changed value"
            ),
        }
    }
}

impl Held for TimeoutHeld {
    fn describe(&self) -> &'static str {
        self.name
    }

    async fn end<H: Site>(self, site: &mut H, _body_failed: bool) -> Result<(), Error> {
        let Some(mut conn) = site.session() else {
            unreachable!("a timeout is only entered on a session")
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

/// Read the current value of setting `$3` and set the new one, in one round trip. The CTE is
/// materialized before the outer projection runs, so the value read is the one from before the
/// change. (`$3` is one of the four names above; it is bound like any value.)
const SET: &str = "WITH s AS MATERIALIZED (SELECT current_setting($3) AS previous) \
                   SELECT s.previous, set_config($3, $1, $2) FROM s";

/// Set the value back.
const RESTORE: &str = "SELECT set_config($3, $1, $2)";

/// `in_failed_sql_transaction`: the transaction has failed and runs nothing until rolled back.
const IN_FAILED_TRANSACTION: &str = "25P02";
