//! The two query builders and their listings.

use std::time::Duration;

use sqlx::PgConnection;

use super::filters::{Bound, Filters, seconds};
use super::rows::{BlockedPgLock, Columns, PgLock};
use super::sql::{self, Statement};
use crate::table::IntoTables;
use crate::{Db, Error, FilterValue, LockId, LockMode};

/// Locks of the current database, filtered. Built by [`locks`](crate::locks).
///
/// Filters of different kinds all apply; calling one that takes a list again adds to its list
/// (a lock matching any entry passes). An empty list matches nothing, so that an empty list of
/// pids never means every backend.
///
/// The builder methods consume and return the query; [`fetch`](LockQuery::fetch),
/// [`terminate`](LockQuery::terminate) and [`cancel`](LockQuery::cancel) borrow it, so one query
/// can be listed and then acted on.
#[derive(Clone, Debug, Default)]
#[must_use = "a query does nothing until it is fetched or acted on"]
pub struct LockQuery {
    pub(super) filters: Filters,
}

/// Locks waited for in the current database, each with a backend that blocks it. Built by
/// [`blocked_locks`](crate::blocked_locks).
///
/// The lock filters ([`pids`](BlockedLockQuery::pids), [`on`](BlockedLockQuery::on),
/// [`advisory`](BlockedLockQuery::advisory), [`mode`](BlockedLockQuery::mode),
/// [`min_wait`](BlockedLockQuery::min_wait), [`min_duration`](BlockedLockQuery::min_duration))
/// select the waiting side; [`blocking_pids`](BlockedLockQuery::blocking_pids) and
/// [`min_blocking_duration`](BlockedLockQuery::min_blocking_duration) the blocking side. They
/// combine as [`LockQuery`]'s do.
#[derive(Clone, Debug, Default)]
#[must_use = "a query does nothing until it is fetched or acted on"]
pub struct BlockedLockQuery {
    pub(super) filters: Filters,
    blocking_pids: Option<Vec<i32>>,
    min_blocking_duration: Option<Duration>,
}

impl LockQuery {
    /// Only the locks of these backends.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().pids([4242, 4243]).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn pids(mut self, pids: impl IntoIterator<Item = i32>) -> Self {
        self.filters.pids(pids);
        self
    }

    /// Only locks on these relations (and the page and tuple locks inside them): one name or a
    /// list (see [`IntoTables`]), `table` or `schema.table`, matched as written (case-sensitive,
    /// as `pg_class` stores them). An unqualified name matches a relation of that name in any
    /// schema, as django-pglock's `on` does. A name that does not parse makes the query fail
    /// with [`Error::InvalidArgument`].
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().on("public.orders").fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn on(mut self, tables: impl IntoTables) -> Self {
        self.filters.on(tables);
        self
    }

    /// Only these advisory locks: strings, integers, pairs or [`AdvisoryKey`](crate::AdvisoryKey)s,
    /// matched on the `classid`, `objid` and `objsubid` that [`advisory_id`](crate::advisory_id)
    /// computes.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().advisory(["nightly-report"]).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn advisory<I>(mut self, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<LockId>,
    {
        self.filters.advisory(ids);
        self
    }

    /// Only locks held (`true`) or only locks waited for (`false`).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().granted(false).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn granted(mut self, granted: bool) -> Self {
        self.filters.granted(granted);
        self
    }

    /// Only locks in this mode (call again to allow more modes). Matched by `pg_locks`' name,
    /// so [`LockMode::Exclusive`] and [`LockMode::Share`] also match exclusive and shared
    /// advisory locks, and transaction-id locks.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().mode(pglock::LockMode::AccessExclusive).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn mode(mut self, mode: LockMode) -> Self {
        self.filters.mode(mode);
        self
    }

    /// Only locks waited for at least this long. Postgres records when a wait began from
    /// version 14 on; on 13 the query fails with [`Error::InvalidArgument`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().min_wait(Duration::from_secs(5)).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn min_wait(mut self, wait: Duration) -> Self {
        self.filters.min_wait(wait);
        self
    }

    /// Only locks of backends whose current query (or last one, if idle) started at least this
    /// long ago: django-pgactivity's `duration`.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().min_duration(Duration::from_secs(60)).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn min_duration(mut self, duration: Duration) -> Self {
        self.filters.min_duration(duration);
        self
    }

    /// At most this many rows, the first in the listing's order. Applies to
    /// [`terminate`](LockQuery::terminate) and [`cancel`](LockQuery::cancel) too: they act on
    /// the backends of the rows [`fetch`](LockQuery::fetch) would return.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().limit(100).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn limit(mut self, limit: usize) -> Self {
        self.filters.limit(limit);
        self
    }

    /// Only locks whose field `key` passes a django lookup with `value`: any column of the
    /// `pglock` command's listing, the lock's or its backend's (`activity__...`). See
    /// [`FilterKey`](crate::FilterKey) for the fields and lookups. The value is bound, never
    /// written into the statement. A key that does not parse, or a value that does not suit
    /// it, makes the query fail with [`Error::InvalidArgument`].
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// use std::time::Duration;
    ///
    /// // Locks of sessions idle in a transaction for over a minute, from the web app.
    /// let locks = pglock::locks()
    ///     .filter("activity__state", "IDLE_IN_TRANSACTION")
    ///     .filter("activity__xact_duration__gt", Duration::from_secs(60))
    ///     .filter("activity__application_name__startswith", "web")
    ///     .fetch(pool)
    ///     .await?;
    /// // Whoever runs a query on `orders`, in any case.
    /// let orders = pglock::locks().filter("activity__query__icontains", "orders");
    /// // Sessions of two users, and those not connected over TCP.
    /// let users = pglock::locks().filter("activity__user__in", ["app", "batch"]);
    /// let local = pglock::locks().filter("activity__client_addr__isnull", true);
    /// # Ok(()) }
    /// ```
    pub fn filter(mut self, key: &str, value: impl Into<FilterValue>) -> Self {
        self.filters.filter(key, value.into());
        self
    }

    /// Whether to list the locks each transaction holds on its own transaction id and virtual
    /// transaction id (`TRANSACTIONID` and `VIRTUALXID`, granted), which only repeat that the
    /// backend is in a transaction. `true` by default; with `false` such a lock is still listed
    /// when someone waits for it (a row lock's wait, `CREATE INDEX CONCURRENTLY`'s).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().own_transaction_locks(true).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn own_transaction_locks(mut self, shown: bool) -> Self {
        self.filters.own_transaction_locks(shown);
        self
    }

    /// List (and act on) the locks of every database of the cluster, not only the current
    /// one's; [`Activity::database`](crate::Activity::database) says whose each backend is.
    /// Relations of other databases are not in this database's catalog: their locks have a
    /// [`relation_oid`](crate::PgLock::relation_oid) and no [`relation`](crate::PgLock::relation),
    /// and [`on`](LockQuery::on) matches only relations of the current database.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::locks().all_databases(true).fetch(pool).await?;
    /// println!("{} locks", found.len());
    /// # Ok(()) }
    /// ```
    pub fn all_databases(mut self, all: bool) -> Self {
        self.filters.all_databases(all);
        self
    }

    /// List the matching locks: locks waited for first, then the longest waits, then the
    /// locks of the longest-running queries (django-pglock's order).
    ///
    /// The inspecting session's own locks are left out (they would be the catalog locks the
    /// listing itself takes); inspect a session from another one, as a pool does.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// use std::time::Duration;
    ///
    /// for lock in pglock::locks()
    ///     .on("orders")
    ///     .granted(false)
    ///     .min_wait(Duration::from_secs(5))
    ///     .fetch(pool)
    ///     .await?
    /// {
    ///     let query = lock.activity.as_ref().map_or("", |a| a.query.as_str());
    ///     println!("{} waits {:?} for {}: {query}", lock.pid, lock.wait_duration, lock.mode_name);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// * [`Error::InvalidArgument`] for a table name that does not parse, or a minimum wait
    ///   before Postgres 14;
    /// * [`Error::Database`] when the statement or the connection fails (through a transaction,
    ///   a failed statement aborts it, as any does).
    ///
    /// # Cancel safety
    /// Dropping the future is harmless: the listing only reads.
    pub async fn fetch<'c>(&self, db: impl Db<'c>) -> Result<Vec<PgLock>, Error> {
        super::run(db, async |conn| {
            let rows = run_listing(conn, Statement::Locks, &self.filters, |q, w| {
                self.filters.bind(q, w)
            })
            .await?;
            rows.iter()
                .map(|row| {
                    let mut columns = Columns::new(row);
                    let now = columns.now()?;
                    columns.lock(now)
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(Error::from)
        })
        .await
    }
}

impl BlockedLockQuery {
    /// Only the locks these backends wait for.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().pids([4242]).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn pids(mut self, pids: impl IntoIterator<Item = i32>) -> Self {
        self.filters.pids(pids);
        self
    }

    /// Only waits for locks on these relations (see [`LockQuery::on`]), including waits for
    /// a row of one: a row lock is waited for on the holder's transaction id (a `TRANSACTIONID`
    /// lock, with no relation), and the waiter holds the row's tuple lock meanwhile, which
    /// names the table.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().on("orders").fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn on(mut self, tables: impl IntoTables) -> Self {
        self.filters.on(tables);
        self
    }

    /// Only waits for these advisory locks (see [`LockQuery::advisory`]).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().advisory(["nightly-report"]).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn advisory<I>(mut self, ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<LockId>,
    {
        self.filters.advisory(ids);
        self
    }

    /// Only waits for a lock in this mode (see [`LockQuery::mode`]).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().mode(pglock::LockMode::AccessExclusive).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn mode(mut self, mode: LockMode) -> Self {
        self.filters.mode(mode);
        self
    }

    /// Only waits at least this long (see [`LockQuery::min_wait`]; Postgres 14 and later).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().min_wait(Duration::from_secs(5)).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn min_wait(mut self, wait: Duration) -> Self {
        self.filters.min_wait(wait);
        self
    }

    /// Only waits of backends whose current query started at least this long ago.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().min_duration(Duration::from_secs(60)).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn min_duration(mut self, duration: Duration) -> Self {
        self.filters.min_duration(duration);
        self
    }

    /// Only blocking backends among these.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().blocking_pids([4242]).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn blocking_pids(mut self, pids: impl IntoIterator<Item = i32>) -> Self {
        self.blocking_pids.get_or_insert_default().extend(pids);
        self
    }

    /// Only blocking backends whose current query (or last one, if idle) started at least
    /// this long ago: django-pglock's `blocking_activity__duration`. A blocker idle in its
    /// transaction counts from its last query's start; a prepared transaction never matches.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().min_blocking_duration(Duration::from_secs(60)).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn min_blocking_duration(mut self, duration: Duration) -> Self {
        self.min_blocking_duration = Some(duration);
        self
    }

    /// Only waits whose field `key` passes a django lookup with `value` (see
    /// [`LockQuery::filter`]): the waiting lock's fields, its backend's (`activity__...`) and
    /// the blocking backend's (`blocking_activity_id`, `blocking_activity__...`).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// // Waits of the migration, blocked by a session idle in its transaction.
    /// let pairs = pglock::blocked_locks()
    ///     .filter("activity__query__istartswith", "alter table")
    ///     .filter("blocking_activity__state", "IDLE_IN_TRANSACTION")
    ///     .fetch(pool)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn filter(mut self, key: &str, value: impl Into<FilterValue>) -> Self {
        self.filters.filter(key, value.into());
        self
    }

    /// Waits in every database of the cluster (see [`LockQuery::all_databases`]).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().all_databases(true).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn all_databases(mut self, all: bool) -> Self {
        self.filters.all_databases(all);
        self
    }

    /// At most this many rows (see [`LockQuery::limit`]).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let found = pglock::blocked_locks().limit(100).fetch(pool).await?;
    /// println!("{} blocked", found.len());
    /// # Ok(()) }
    /// ```
    pub fn limit(mut self, limit: usize) -> Self {
        self.filters.limit(limit);
        self
    }

    /// List the blocked locks, one row per (lock waited for, blocking backend): the longest
    /// waits first, then those of the longest-running queries.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// for pair in pglock::blocked_locks().fetch(pool).await? {
    ///     println!("{} waits for {}", pair.lock.pid, pair.blocking_pid);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`LockQuery::fetch`].
    ///
    /// # Cancel safety
    /// Dropping the future is harmless: the listing only reads.
    pub async fn fetch<'c>(&self, db: impl Db<'c>) -> Result<Vec<BlockedPgLock>, Error> {
        super::run(db, async |conn| {
            let rows = run_listing(conn, Statement::Blocked, &self.filters, |q, w| {
                self.bind(q, w)
            })
            .await?;
            rows.iter()
                .map(|row| {
                    let mut columns = Columns::new(row);
                    let now = columns.now()?;
                    let lock = columns.lock(now)?;
                    let (blocking_pid, blocking) = columns.blocking(now)?;
                    Ok(BlockedPgLock {
                        lock,
                        blocking_pid,
                        blocking,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(Error::from)
        })
        .await
    }

    /// Bind `$1`..`$13`.
    pub(super) fn bind<'q>(&self, query: Bound<'q>, waitstart: bool) -> Result<Bound<'q>, Error> {
        Ok(self
            .filters
            .bind(query, waitstart)?
            .bind(self.blocking_pids.clone())
            .bind(seconds(self.min_blocking_duration)))
    }
}

/// Run a listing statement with its fixed parameters bound by `bind`, then `filters`' field
/// lookups.
async fn run_listing(
    conn: &mut PgConnection,
    statement: Statement,
    filters: &Filters,
    bind: impl FnOnce(Bound<'static>, bool) -> Result<Bound<'static>, Error>,
) -> Result<Vec<sqlx::postgres::PgRow>, Error> {
    let query = sql::prepare(conn, statement, filters, bind).await?;
    Ok(query.fetch_all(conn).await?)
}
