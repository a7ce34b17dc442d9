//! Lock inspection: who holds or waits for which lock, who blocks whom, and ending them.
//!
//! django-pglock's `PGLock` and `BlockedPGLock` models as typed rows and query builders:
//!
//! | django-pglock | pglock |
//! |---|---|
//! | `PGLock.objects` | [`locks()`](locks) → [`LockQuery`] → [`PgLock`]s |
//! | `BlockedPGLock.objects` | [`blocked_locks()`](blocked_locks) → [`BlockedLockQuery`] → [`BlockedPgLock`]s |
//! | `.pid(*pids)`, `.on(*models)` | [`pids`](LockQuery::pids), [`on`](LockQuery::on) (table names) |
//! | `.filter(granted=, mode=, wait_duration__gte=, activity__duration__gte=)` | [`granted`](LockQuery::granted), [`mode`](LockQuery::mode), [`min_wait`](LockQuery::min_wait), [`min_duration`](LockQuery::min_duration) |
//! | `.filter(blocking_activity_id__in=, blocking_activity__duration__gte=)` | [`blocking_pids`](BlockedLockQuery::blocking_pids), [`min_blocking_duration`](BlockedLockQuery::min_blocking_duration) |
//! | `.filter(activity__query__icontains="orders")`, any field and lookup | [`filter("activity__query__icontains", "orders")`](LockQuery::filter) (see [`FilterKey`]) |
//! | `terminate_activity()`, `cancel_activity()` | [`terminate`](LockQuery::terminate), [`cancel`](LockQuery::cancel) |
//! | `terminate_blocking_activity()`, `cancel_blocking_activity()` | [`terminate_blocking`](BlockedLockQuery::terminate_blocking), [`cancel_blocking`](BlockedLockQuery::cancel_blocking) |
//! | `activity__context` | [`Activity::context`] |
//!
//! Where it differs:
//! * Every kind of lock is listed, not only locks on relations: advisory locks with their
//!   decoded key (filter them with [`advisory`](LockQuery::advisory)), and transaction-id and
//!   virtual-transaction-id locks with no relation.
//! * A blocked lock is the lock its backend waits for, one row per blocking backend.
//!   django-pglock repeats every lock the waiting backend holds, once per blocker.
//! * Every value is a bound parameter; the actions return the pids actually signalled, never
//!   signal the inspecting session or a prepared transaction, and fail as a whole with
//!   [`Error::PermissionDenied`] when a backend may not be signalled.
//!
//! What counts as the current database's ([`all_databases`](LockQuery::all_databases) lifts
//! the limit): locks that name it (relation, advisory, page,
//! tuple... locks), and locks that name no database (transaction ids, shared catalogs) held or
//! awaited by a backend connected to it. The backends listed are those connected to it.
//!
//! Inspection reads need no particular session: pass a pool, or any connection. The session
//! the statement runs on is left out of listings (its own locks would only be the catalog
//! locks the listing takes) and is never signalled.

mod actions;
mod context;
mod filters;
mod labels;
mod lookup;
mod query;
mod rows;
mod sql;

use sqlx::PgConnection;

pub use lookup::{FilterKey, FilterValue, Lookup, ParseFilterKeyError, ValueKind};
pub use query::{BlockedLockQuery, LockQuery};
pub use rows::{Activity, BlockedPgLock, PgLock, Relation};

use crate::handle::{Handle, checkout};
use crate::{Db, Error};

/// Start a query of the locks of the current database: `pg_locks` joined to
/// `pg_stat_activity`, as django-pglock's `PGLock`, advisory locks included.
///
/// ```no_run
/// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// // Who holds or waits for a lock on the orders table?
/// for lock in pglock::locks().on("orders").fetch(pool).await? {
///     println!("{} {} granted={}", lock.pid, lock.mode_name, lock.granted);
/// }
/// // Who holds the "nightly-report" advisory lock?
/// let holders = pglock::locks().advisory(["nightly-report"]).granted(true).fetch(pool).await?;
/// # Ok(()) }
/// ```
pub fn locks() -> LockQuery {
    LockQuery::default()
}

/// Start a query of the locks waited for in the current database, each paired with a backend
/// blocking it (from `pg_blocking_pids`), as django-pglock's `BlockedPGLock`.
///
/// ```no_run
/// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// use std::time::Duration;
///
/// // End the sessions that have blocked anything on the orders table for over a minute.
/// let ended = pglock::blocked_locks()
///     .on("orders")
///     .min_wait(Duration::from_secs(60))
///     .terminate_blocking(pool)
///     .await?;
/// # Ok(()) }
/// ```
pub fn blocked_locks() -> BlockedLockQuery {
    BlockedLockQuery::default()
}

/// Run `work` on `db`'s connection: one checked out of a pool for the call, or the caller's.
async fn run<'c, T>(
    db: impl Db<'c>,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, Error>,
) -> Result<T, Error> {
    match db.into_handle() {
        Handle::Pool(pool) => work(&mut *checkout(&pool).await?).await,
        Handle::PoolConnection(conn) => work(conn).await,
        Handle::Connection(conn) => work(conn).await,
    }
}

/// The first server version whose `pg_locks` has `waitstart`.
const WAITSTART_SINCE: u32 = 140_000;

/// Whether the server has `pg_locks.waitstart`. sqlx knows the server's version from the
/// connection's start; ask the server only if it does not.
async fn has_waitstart(conn: &mut PgConnection) -> Result<bool, Error> {
    let version = match conn.server_version_num() {
        Some(version) => version,
        None => {
            let version: i32 =
                sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
                    .fetch_one(&mut *conn)
                    .await?;
            u32::try_from(version).unwrap_or(0)
        }
    };
    Ok(version >= WAITSTART_SINCE)
}
