//! Postgres locks for sqlx and tokio: a port of Python's
//! [django-pglock](https://django-pglock.readthedocs.io).
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn nightly_digest(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
//! // Only one replica sends the digest: the others find the lock held and skip.
//! let sent = pglock::advisory("send-daily-digest")
//!     .nowait()
//!     .try_scope(pool, async |conn| {
//!         sqlx::query("UPDATE digests SET sent_at = now()").execute(&mut *conn).await?;
//!         Ok::<_, pglock::Error>(())
//!     })
//!     .await?;
//! if sent.is_none() {
//!     println!("another replica is sending it");
//! }
//!
//! // Wait at most two seconds, then hold the lock until the guard is released.
//! let guard = pglock::advisory(42_i64)
//!     .timeout(Duration::from_secs(2))
//!     .acquire(pool)
//!     .await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Advisory locks
//! [`advisory`](fn@advisory) builds a lock on an id: a string (hashed exactly as django-pglock hashes it, so
//! Rust and Django services naming the same lock exclude each other), an `i64`, or an
//! `(i32, i32)` pair. Options: [`shared`](Advisory::shared), [`xact`](Advisory::xact)
//! (transaction-level), and how long to wait ([`timeout`](Advisory::timeout),
//! [`nowait`](Advisory::nowait), [`wait_forever`](Advisory::wait_forever), or by default the
//! server's `lock_timeout`). A timed wait costs one round trip and leaves no `lock_timeout`
//! behind on the connection.
//!
//! Take it through any [`Db`] handle: `&PgPool`, `&mut PgConnection`,
//! `&mut PoolConnection<Postgres>` or `&mut Transaction<'_, Postgres>`. Through a pool, the lock
//! keeps one connection checked out for as long as it is held.
//!
//! | django-pglock | pglock |
//! |---|---|
//! | `with advisory(id) as acquired:` (Return) | [`Advisory::try_acquire`] → `Option<guard>`, [`Advisory::try_scope`] |
//! | `advisory(id, side_effect=Raise)` | [`Advisory::acquire`] → guard or [`Error`], [`Advisory::scope`] |
//! | decorator with `Skip` | [`Advisory::try_scope`] returning `Ok(None)` |
//! | `timeout=None` / `0` / `>0` / unset | [`Wait::Forever`] / [`Wait::NoWait`] / [`Wait::Limit`] / [`Wait::ServerDefault`] |
//! | `advisory_id(id)` | [`advisory_id`] (unsigned halves, as `pg_locks` shows them) |
//!
//! # Cancel safety
//! Locks taken through a pool are released however their scope ends, a dropped future included:
//! pglock owns that connection and closes it, which ends the server session at once. Borrowed
//! connections cannot be closed or sent a statement from a destructor through sqlx's API; what
//! that means for each handle is spelled out on [`Advisory::acquire`].

#![warn(missing_docs)]

mod advisory;
mod attr;
mod default_pool;
mod error;
mod handle;
mod inspect;
mod key;
mod mode;
mod prioritize;
mod table;
mod timeout;
mod unwind;
mod wait;

pub use advisory::{Advisory, AdvisoryGuard, advisory};
pub use default_pool::{default_pool, set_default_pool};
pub use error::{Error, LockTarget};
pub use handle::{Db, Session};
pub use inspect::{
    Activity, BlockedLockQuery, BlockedPgLock, LockQuery, PgLock, Relation, blocked_locks, locks,
};
pub use key::{AdvisoryKey, LockId, advisory_id};
pub use mode::{LockMode, ParseLockModeError};
pub use prioritize::{Prioritize, Signal, prioritize};
pub use table::{IntoTables, ParseTableNameError, TableLock, TableName, lock_table};
pub use timeout::{LockTimeout, timeout};
pub use wait::Wait;

#[doc = include_str!("../docs/advisory.md")]
#[doc(inline)]
pub use pglock_macros::advisory;

#[doc = include_str!("../docs/timeout.md")]
#[doc(inline)]
pub use pglock_macros::timeout;

#[doc = include_str!("../docs/prioritize.md")]
#[doc(inline)]
pub use pglock_macros::prioritize;

/// The runtime half of the attributes: not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::attr::*;
}
