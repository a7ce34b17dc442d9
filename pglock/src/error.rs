//! pglock's one error type.

use std::fmt;

use crate::LockId;

/// Everything that can go wrong taking, holding or releasing a lock.
///
/// A lock that was not acquired is [`Error::Busy`] (it was held and pglock was told not to wait)
/// or [`Error::LockTimeout`] (it stayed held for longer than the lock timeout);
/// [`Error::is_not_acquired`] covers both.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The lock is held by another session, and the acquisition was told not to wait
    /// (a timeout of zero).
    #[error("could not acquire {target}: another session holds it")]
    Busy {
        /// What was to be locked.
        target: LockTarget,
    },

    /// A lock was still held elsewhere when the lock timeout ran out
    /// (Postgres' `lock_timeout`, SQLSTATE 55P03). A statement of yours that times out inside a
    /// [`timeout`](fn@crate::timeout) scope converts to this too, with [`LockTarget::Statement`].
    #[error("could not acquire {target}: lock timeout")]
    LockTimeout {
        /// What was to be locked.
        target: LockTarget,
        /// The server's error.
        #[source]
        source: sqlx::Error,
    },

    /// Postgres ended the wait for a lock to break a deadlock (SQLSTATE 40P01): while this
    /// session waited for `target`, another session was waiting for a lock this session holds
    /// (directly, or through a chain of waiting sessions). Exactly one session of the cycle gets
    /// this error, after the server's `deadlock_timeout` (1 s by default); the others go on
    /// waiting and get their locks once this session's transaction or locks end. The lock was not
    /// acquired, and nothing this session held was released: a caller that retries should first
    /// give up what it holds (roll back, release its guards), or take its locks in one fixed
    /// order so the cycle cannot form again.
    ///
    /// A statement of yours that deadlocks converts to this too (through `From<sqlx::Error>`,
    /// with [`LockTarget::Statement`]), as a lock timeout does: a deadlock is an outcome of
    /// waiting for a lock whatever statement waited, and callers retry it as such. It is not
    /// [`is_not_acquired`](Error::is_not_acquired): a cycle of locks is a bug in the order locks
    /// are taken, and a skip must not hide it.
    ///
    /// On a session-level wait outside a transaction only the statement failed. Inside a
    /// transaction, a timed wait (and every [`lock_table`](crate::lock_table)) runs in a
    /// savepoint that pglock rolls back, so your transaction stays usable; other waits leave it
    /// aborted, as any failed statement does.
    #[error(
        "could not acquire {target}: deadlock: another session was waiting for a lock this \
         session holds, so the server ended this session's wait to break the cycle"
    )]
    Deadlock {
        /// What was to be locked.
        target: LockTarget,
        /// The server's error; its detail names the sessions of the cycle.
        #[source]
        source: sqlx::Error,
    },

    /// An advisory lock was asked for on a hot standby (a server in recovery), and refused:
    /// advisory locks live in one server's memory, so a lock taken on a standby excludes only
    /// other sessions on that same standby, never those on the primary or on other standbys.
    /// Nothing was locked. Connect to the primary, or, if the lock is meant to coordinate the
    /// standby's own sessions, opt in with [`Advisory::allow_standby`](crate::Advisory::allow_standby).
    #[error(
        "lock \"{lock}\" was not taken: the server is a hot standby (in recovery), where an \
         advisory lock excludes only sessions on that standby and nobody on the primary; connect \
         to the primary, or call .allow_standby() to lock on the standby on purpose"
    )]
    Standby {
        /// The lock that was refused.
        lock: LockId,
    },

    /// A lock that only lives inside a transaction was asked for on a connection that is not
    /// inside a transaction begun through sqlx (Postgres would release it, or refuse it, at once).
    #[error(
        "{target} needs a transaction: pass a sqlx Transaction{}",
        if matches!(target, LockTarget::Advisory(_)) {
            ", or use `scope` on a pool, which opens and ends one"
        } else {
            ""
        }
    )]
    NotInTransaction {
        /// What was to be locked.
        target: LockTarget,
    },

    /// A session-level lock was no longer held when it was released: the session lost it
    /// (for example, it was unlocked by hand with `pg_advisory_unlock_all()`).
    #[error("lock \"{lock}\" was not held when it was released")]
    NotHeld {
        /// The lock that was released.
        lock: LockId,
    },

    /// The session that held a lock ended before the lock was released: the server terminated
    /// it (`pg_terminate_backend`, a shutdown, a crash) or the connection was cut. The lock went
    /// with the session, possibly long before this was noticed, so whatever it protected may
    /// have run beside another holder since. `source` is what the release ran into.
    #[error("lock \"{lock}\" was lost with its session before it was released: {source}")]
    Lost {
        /// The lock that was held.
        lock: LockId,
        /// The error of the release statement.
        #[source]
        source: sqlx::Error,
    },

    /// A session-level lock was released through a connection that now runs on another server
    /// session than the one the lock was taken on, so it was not unlocked: a transaction pooler
    /// (PgBouncer with `pool_mode = transaction`, and the like) sits between pglock and
    /// Postgres, and session-level locks cannot work through it. The lock stays with the session
    /// it was taken on, until that session unlocks it or ends.
    #[error(
        "lock \"{lock}\" was taken on server session {locked_on}, but this connection now runs on \
         session {now_on}: a transaction pooler (such as PgBouncer with pool_mode = transaction) \
         sits between pglock and Postgres, where session-level locks cannot work; the lock was \
         not released. Use a transaction-level lock (.xact()) through a pooler"
    )]
    SessionMoved {
        /// The lock that was to be released.
        lock: LockId,
        /// The pid of the server session the lock was taken on, which still holds it.
        locked_on: i32,
        /// The pid of the server session the release ran on.
        now_on: i32,
    },

    /// No database handle to take a lock through: the function has no pool or connection
    /// argument, [`set_default_pool`](crate::set_default_pool) was not called, and
    /// `DATABASE_URL` is not set.
    #[error(
        "no database to lock in: pass a pool or connection argument (or name one with \
         `db = ...`), call pglock::set_default_pool, or set DATABASE_URL"
    )]
    NoDatabase,

    /// An argument is out of the range Postgres accepts; the message says which and why.
    #[error("{0}")]
    InvalidArgument(String),

    /// The database role lacks a privilege the operation needs (SQLSTATE 42501).
    #[error("permission denied: {source}")]
    PermissionDenied {
        /// The server's error.
        #[source]
        source: sqlx::Error,
    },

    /// The background task of a [`prioritize`](fn@crate::prioritize) scope failed; the scope's own
    /// result was replaced by this, so that the failure does not go unnoticed.
    #[error("prioritize could not act on the sessions blocking it: {source}")]
    Prioritize {
        /// What the background task ran into.
        #[source]
        source: Box<Error>,
    },

    /// A statement ran past the `statement_timeout` and the server cancelled it (SQLSTATE 57014
    /// with the server's "statement timeout" message; a cancellation by `pg_cancel_backend`, the
    /// same SQLSTATE, stays [`Error::Database`]). Converted from any statement's error, as a
    /// lock timeout is; see [`statement_timeout`](fn@crate::statement_timeout).
    #[error("a statement ran past the statement timeout and was cancelled")]
    StatementTimeout {
        /// The server's error.
        #[source]
        source: sqlx::Error,
    },

    /// The server is too old for what was asked (`transaction_timeout` needs Postgres 17):
    /// nothing was set.
    #[error(
        "{setting} needs Postgres {} or later, and this server is version {}: nothing was set \
         (use statement_timeout and idle_in_transaction_session_timeout instead)",
        since / 10000,
        version(*server)
    )]
    Unsupported {
        /// The setting asked for.
        setting: &'static str,
        /// The first server version that has it, as `server_version_num` counts (`170000`).
        since: u32,
        /// The server's `server_version_num`.
        server: u32,
    },

    /// Any other error from the database or the connection to it.
    #[error(transparent)]
    Database(sqlx::Error),
}

/// `160004` → `16.4`.
fn version(num: u32) -> String {
    format!("{}.{}", num / 10000, num % 10000)
}

/// What a lock was to be taken on, for error messages and matching.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockTarget {
    /// An advisory lock.
    Advisory(LockId),
    /// Tables locked with `LOCK TABLE`, as they were named.
    Tables(Vec<String>),
    /// A lock one of your statements waited for (a statement that timed out or deadlocked in a
    /// [`timeout`](fn@crate::timeout) scope, for example).
    Statement,
}

impl fmt::Display for LockTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockTarget::Advisory(lock) => write!(f, "lock \"{lock}\""),
            LockTarget::Tables(tables) if tables.len() == 1 => write!(f, "table {}", tables[0]),
            LockTarget::Tables(tables) => write!(f, "tables {}", tables.join(", ")),
            LockTarget::Statement => f.write_str("a lock"),
        }
    }
}

impl From<LockId> for LockTarget {
    fn from(lock: LockId) -> Self {
        LockTarget::Advisory(lock)
    }
}

impl Error {
    /// Whether this error means the lock was not acquired because another session held it:
    /// [`Error::Busy`] or [`Error::LockTimeout`].
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::LockTimeout { .. })
    }

    /// Sort a database error raised while locking `target` into the variant a caller matches on.
    pub(crate) fn acquiring(target: impl Into<LockTarget>, source: sqlx::Error) -> Self {
        match sqlstate(&source).as_deref() {
            Some(LOCK_NOT_AVAILABLE) => Error::LockTimeout {
                target: target.into(),
                source,
            },
            Some(DEADLOCK_DETECTED) => Error::Deadlock {
                target: target.into(),
                source,
            },
            _ => Error::from(source),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        match sqlstate(&source).as_deref() {
            Some(LOCK_NOT_AVAILABLE) => Error::LockTimeout {
                target: LockTarget::Statement,
                source,
            },
            Some(DEADLOCK_DETECTED) => Error::Deadlock {
                target: LockTarget::Statement,
                source,
            },
            Some(INSUFFICIENT_PRIVILEGE) => Error::PermissionDenied { source },
            Some(QUERY_CANCELED) if is_statement_timeout(&source) => {
                Error::StatementTimeout { source }
            }
            _ => Error::Database(source),
        }
    }
}

/// `lock_not_available`: a `lock_timeout` expired, or a `NOWAIT` lock was held.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `deadlock_detected`: the server ended this session's lock wait to break a cycle of waits.
pub(crate) const DEADLOCK_DETECTED: &str = "40P01";
/// `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `query_canceled`: by `statement_timeout`, or by `pg_cancel_backend`.
const QUERY_CANCELED: &str = "57014";

/// Whether a 57014 came from `statement_timeout` rather than `pg_cancel_backend`: the server
/// tells them apart only by message ("canceling statement due to statement timeout"), which
/// `lc_messages` may translate (a translated one stays [`Error::Database`]).
fn is_statement_timeout(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.message().contains("statement timeout"),
        _ => false,
    }
}

/// Whether `error` says the session is gone: cut off (I/O, protocol), or ended by the server
/// (SQLSTATE class 57, operator intervention: 57P01 terminated, 57P02 crash, ...; class 08,
/// connection exception). Not 57014 (`query_canceled`): a cancelled statement or a
/// `statement_timeout` ends the statement, and the session lives on.
pub(crate) fn session_gone(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            (code.starts_with("57") && code != QUERY_CANCELED) || code.starts_with("08")
        }),
        _ => false,
    }
}

/// The SQLSTATE of a database error, if it is one.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}
