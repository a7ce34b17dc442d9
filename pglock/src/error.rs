//! pglock's one error type.

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
    #[error("could not acquire lock \"{lock}\": another session holds it")]
    Busy {
        /// The lock that was asked for.
        lock: LockId,
    },

    /// The lock was still held elsewhere when the lock timeout ran out
    /// (Postgres' `lock_timeout`, SQLSTATE 55P03).
    #[error("could not acquire lock \"{lock}\": lock timeout")]
    LockTimeout {
        /// The lock that was asked for.
        lock: LockId,
        /// The server's error.
        #[source]
        source: sqlx::Error,
    },

    /// A transaction-level lock was asked for on a connection that is not inside a transaction
    /// begun through sqlx. Postgres would release such a lock as soon as the statement ended.
    #[error(
        "transaction-level lock \"{lock}\" needs a transaction: pass a sqlx Transaction, \
         or use `scope` on a pool, which opens and ends one"
    )]
    NotInTransaction {
        /// The lock that was asked for.
        lock: LockId,
    },

    /// A session-level lock was no longer held when it was released: the session lost it
    /// (for example, it was unlocked by hand with `pg_advisory_unlock_all()`).
    #[error("lock \"{lock}\" was not held when it was released")]
    NotHeld {
        /// The lock that was released.
        lock: LockId,
    },

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

    /// Any other error from the database or the connection to it.
    #[error(transparent)]
    Database(sqlx::Error),
}

impl Error {
    /// Whether this error means the lock was not acquired because another session held it:
    /// [`Error::Busy`] or [`Error::LockTimeout`].
    pub fn is_not_acquired(&self) -> bool {
        matches!(self, Error::Busy { .. } | Error::LockTimeout { .. })
    }

    /// Sort a database error raised while acquiring `lock` into the variant a caller matches on.
    pub(crate) fn acquiring(lock: &LockId, source: sqlx::Error) -> Self {
        match sqlstate(&source).as_deref() {
            Some(LOCK_NOT_AVAILABLE) => Error::LockTimeout {
                lock: lock.clone(),
                source,
            },
            _ => Error::from(source),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(source: sqlx::Error) -> Self {
        match sqlstate(&source).as_deref() {
            Some(INSUFFICIENT_PRIVILEGE) => Error::PermissionDenied { source },
            _ => Error::Database(source),
        }
    }
}

/// `lock_not_available`: a `lock_timeout` expired, or a `NOWAIT` lock was held.
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// `insufficient_privilege`.
const INSUFFICIENT_PRIVILEGE: &str = "42501";

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|code| code.into_owned()),
        _ => None,
    }
}
