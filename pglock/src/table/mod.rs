//! Table locks: `LOCK TABLE` on one or more tables, held until the transaction ends
//! (django-pglock's `pglock.model`).

mod ident;
mod name;
mod sql;
mod tables;

use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};

pub use name::{ParseTableNameError, TableName};
use tables::Entry;
pub use tables::IntoTables;

use crate::error::{LOCK_NOT_AVAILABLE, sqlstate};
use crate::handle::Handle;
use crate::{Db, Error, LockMode, LockTarget, Wait};

/// `in_failed_sql_transaction`: the caller's transaction was already aborted, so the savepoint
/// that starts the acquisition was refused and there is nothing to roll back to.
const IN_FAILED_SQL_TRANSACTION: &str = "25P02";

/// Start building a `LOCK TABLE` on `tables`: one name or a list of them (see [`IntoTables`]).
///
/// By default the lock is `ACCESS EXCLUSIVE` (as in `LOCK TABLE` and django-pglock) and waits as
/// long as the server's `lock_timeout` allows. See [`TableLock`] for the options.
///
/// ```no_run
/// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// use std::time::Duration;
/// use pglock::LockMode;
///
/// let mut tx = pool.begin().await?;
/// // Block writers (but not readers) of both tables until the transaction ends,
/// // waiting at most 2 seconds for the lock.
/// pglock::lock_table(["orders", "billing.invoices"])
///     .mode(LockMode::Share)
///     .timeout(Duration::from_secs(2))
///     .acquire(&mut tx)
///     .await?;
/// let total: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
///     .fetch_one(&mut *tx)
///     .await?;
/// tx.commit().await?; // releases the lock
/// # Ok(()) }
/// ```
///
/// # django-pglock
/// This is `pglock.model(...)`:
///
/// | django-pglock | pglock |
/// |---|---|
/// | `pglock.model("app.Model", ...)` | `lock_table("app_model")`: the table (`db_table`), not the model |
/// | `mode=pglock.SHARE` | [`.mode(LockMode::Share)`](TableLock::mode) (default `ACCESS EXCLUSIVE`) |
/// | `timeout=None` / `0` / `>0` / unset | [`wait_forever`](TableLock::wait_forever) / [`nowait`](TableLock::nowait) / [`timeout`](TableLock::timeout) / the server's `lock_timeout` |
/// | `side_effect=pglock.Return` (the default): `False` | [`try_acquire`](TableLock::try_acquire) → `Ok(false)` |
/// | `side_effect=pglock.Raise` | [`acquire`](TableLock::acquire) → [`Error::Busy`] / [`Error::LockTimeout`] |
///
/// Where it differs: names are quoted correctly (schema-qualified names and quotes inside names
/// work, where django-pglock pastes `"<db_table>"` as is), the mode is an enum rather than pasted
/// text, a call outside a transaction is [`Error::NotInTransaction`] before any SQL is sent, and a
/// lock that is not acquired leaves the caller's transaction usable with `acquire` too
/// (django-pglock's `Raise` leaves it aborted).
pub fn lock_table(tables: impl IntoTables) -> TableLock {
    TableLock {
        tables: tables.into_entries(),
        mode: LockMode::AccessExclusive,
        wait: Wait::ServerDefault,
    }
}

/// A `LOCK TABLE` to take: the tables, the [`LockMode`] and how long to wait.
/// Built by [`lock_table`].
///
/// The lock lives until the transaction it was taken in ends (commit or rollback, or the rollback
/// to a savepoint taken before it); there is no guard and no unlock. So it must be taken inside a
/// transaction: pass a sqlx `&mut Transaction`, or a connection inside one begun through sqlx.
///
/// `LOCK TABLE` is sent without `ONLY`: a table's inheritance children and partitions are locked
/// too, as Postgres does by default. Views can be named as well (Postgres locks the tables they
/// read). Several tables are locked in one statement, in the order given, all or none: when one
/// of them is not acquired, the locks already taken on the others are given back. Naming a table
/// twice is allowed.
///
/// Two ways to take it, mirroring django-pglock's side effects:
/// * [`acquire`](TableLock::acquire) returns an error when the lock is not acquired (`Raise`);
/// * [`try_acquire`](TableLock::try_acquire) returns `Ok(false)` instead (`Return`).
///
/// Each consumes the builder; clone a `TableLock` to take the same lock again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableLock {
    tables: Vec<Entry>,
    mode: LockMode,
    wait: Wait,
}

impl TableLock {
    /// Lock in `mode` instead of `ACCESS EXCLUSIVE`. [`LockMode::conflicts_with`] says which
    /// modes exclude each other.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// pglock::lock_table("orders").mode(pglock::LockMode::Share).acquire(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn mode(mut self, mode: LockMode) -> Self {
        self.mode = mode;
        self
    }

    /// Wait at most `limit` for the lock. Under one millisecond (including zero) means try once
    /// and do not wait (`NOWAIT`), as django-pglock's `timeout=0` does. The limit is enforced by
    /// the server (`lock_timeout`, for the `LOCK TABLE` statement only, so it applies to each
    /// table in turn), in whole milliseconds, and is checked against Postgres' maximum (about
    /// 24.8 days) when the lock is taken.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// pglock::lock_table("orders").timeout(Duration::from_secs(1)).acquire(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn timeout(self, limit: Duration) -> Self {
        self.wait(Wait::at_most(limit))
    }

    /// Try once and do not wait (`LOCK TABLE ... NOWAIT`): the same as
    /// `timeout(Duration::ZERO)`.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// let locked = pglock::lock_table("orders").nowait().try_acquire(&mut tx).await?;
    /// println!("locked: {locked}");
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn nowait(self) -> Self {
        self.wait(Wait::NoWait)
    }

    /// Wait as long as it takes, even if the server, role or session sets a `lock_timeout`
    /// (django-pglock's `timeout=None`).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// pglock::lock_table("orders").wait_forever().acquire(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn wait_forever(self) -> Self {
        self.wait(Wait::Forever)
    }

    /// Set how long to wait: a [`Wait`], a [`Duration`] (see [`timeout`](TableLock::timeout)),
    /// or an `Option<Duration>` whose `None` waits forever.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// pglock::lock_table("orders").wait(pglock::Wait::NoWait).acquire(&mut tx).await?;
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub fn wait(mut self, wait: impl Into<Wait>) -> Self {
        self.wait = wait.into();
        self
    }

    /// The mode the tables are locked in.
    ///
    /// ```
    /// assert_eq!(pglock::lock_table("orders").lock_mode(), pglock::LockMode::AccessExclusive);
    /// ```
    pub fn lock_mode(&self) -> LockMode {
        self.mode
    }

    /// How long taking the lock waits.
    ///
    /// ```
    /// assert_eq!(pglock::lock_table("orders").nowait().wait_mode(), pglock::Wait::NoWait);
    /// ```
    pub fn wait_mode(&self) -> Wait {
        self.wait
    }

    /// Lock the tables, waiting as configured. The lock is held until the transaction ends.
    ///
    /// Everything is checked before any SQL is sent: the names, the timeout, and that `db` is
    /// inside a transaction. The lock then costs one round trip (two when it is not acquired:
    /// one more to roll back to the savepoint it ran in).
    ///
    /// A failure, whether the lock was not acquired or the server refused (an unknown table, a
    /// missing privilege), leaves your transaction as it was and usable: the `LOCK TABLE` runs in
    /// a savepoint, which is rolled back, giving back locks taken on earlier tables of the list
    /// and undoing the timeout setting.
    ///
    /// ```no_run
    /// # async fn example(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), pglock::Error> {
    /// match pglock::lock_table("orders").nowait().acquire(&mut *tx).await {
    ///     Ok(()) => println!("locked until the transaction ends"),
    ///     Err(e) if e.is_not_acquired() => println!("busy; the transaction is still usable"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// * [`Error::Busy`] when another session holds a conflicting lock and the wait is
    ///   [`Wait::NoWait`];
    /// * [`Error::LockTimeout`] when one is still held when the lock timeout runs out (yours, or
    ///   the server's with [`Wait::ServerDefault`]);
    /// * [`Error::Deadlock`] when the server ended the wait to break a deadlock: another session
    ///   was waiting for a lock this transaction holds (your transaction stays usable, and keeps
    ///   the locks it held);
    /// * [`Error::NotInTransaction`] when `db` is not inside a transaction begun through sqlx,
    ///   and always for a `&PgPool` (a lock that ends with the transaction needs one you hold);
    /// * [`Error::InvalidArgument`] for no tables, a name that does not parse or cannot name a
    ///   table exactly (see [`TableName`]), or a timeout Postgres does not accept;
    /// * [`Error::PermissionDenied`] when the role may not lock a table in this mode;
    /// * [`Error::Database`] for an unknown table (SQLSTATE 42P01) and any other failure of the
    ///   server or connection.
    ///
    /// Errors name the tables in their quoted SQL form: `LockTarget::Tables(vec!["\"orders\"".into()])`.
    ///
    /// # Cancel safety
    /// Table locks are taken through borrowed connections only, and sqlx offers no way to cancel
    /// a statement or run one from a destructor on a connection it does not own. If this future is
    /// dropped while the lock is awaited (by `tokio::time::timeout` or `select!`), the wait goes
    /// on; sqlx finishes it before the connection's next statement. If the lock was then granted,
    /// your transaction holds it (and its `lock_timeout` is restored). If not, the savepoint was
    /// never rolled back and your transaction is aborted: roll it back. Bound waits with
    /// [`timeout`](TableLock::timeout), not by dropping the future.
    pub async fn acquire<'c>(self, db: impl Db<'c>) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let (tables, timeout_ms) = self.checked()?;
        let target = LockTarget::Tables(tables.iter().map(TableName::to_string).collect());
        let conn = match db.into_handle() {
            Handle::Pool(_) => None,
            Handle::PoolConnection(conn) => Some(&mut **conn),
            Handle::Connection(conn) => Some(conn),
        };
        let Some(conn) = conn.filter(|conn| conn.is_in_transaction()) else {
            return Err(Error::NotInTransaction { target });
        };
        let nowait = self.wait == Wait::NoWait;
        let statement = sql::acquire(&tables, self.mode, nowait, timeout_ms);
        let outcome = match sqlx::raw_sql(AssertSqlSafe(statement))
            .execute(&mut *conn)
            .await
        {
            Ok(_) => Ok(()),
            Err(error) => {
                recover(conn, &target, &error).await;
                Err(match sqlstate(&error).as_deref() {
                    Some(LOCK_NOT_AVAILABLE) if nowait => Error::Busy {
                        target: target.clone(),
                    },
                    _ => Error::acquiring(target.clone(), error),
                })
            }
        };
        crate::telemetry::table_lock(&target, self.mode, started, &outcome);
        outcome
    }

    /// Lock the tables like [`acquire`](TableLock::acquire), but return `Ok(false)` when the lock
    /// is not acquired (held elsewhere and `NoWait`, or still held when the lock timeout ran out),
    /// as django-pglock's `pglock.model()` returns `False`. Your transaction stays usable.
    ///
    /// # Errors
    /// As [`acquire`](TableLock::acquire), except [`Error::Busy`] and [`Error::LockTimeout`],
    /// which become `Ok(false)`.
    ///
    /// # Cancel safety
    /// As [`acquire`](TableLock::acquire).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let mut tx = pool.begin().await?;
    /// if !pglock::lock_table("orders").try_acquire(&mut tx).await? {
    ///     println!("orders is busy");
    /// }
    /// tx.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn try_acquire<'c>(self, db: impl Db<'c>) -> Result<bool, Error> {
        match self.acquire(db).await {
            Ok(()) => Ok(true),
            Err(error) if error.is_not_acquired() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// The tables and the `lock_timeout` to set, once every argument is known to be one Postgres
    /// takes exactly.
    fn checked(&self) -> Result<(Vec<TableName>, Option<u32>), Error> {
        if self.tables.is_empty() {
            return Err(Error::InvalidArgument(
                "lock_table needs at least one table to lock".to_owned(),
            ));
        }
        let tables = self
            .tables
            .iter()
            .map(|entry| entry.clone().and_then(TableName::checked))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Error::InvalidArgument(error.to_string()))?;
        Ok((tables, self.wait.lock_timeout_ms()?))
    }
}

/// Roll back to the savepoint a failed acquisition ran in, so that the caller's transaction is
/// usable again. The acquisition's error is the one to report: if even this fails, the
/// connection is broken and says so on its next use.
async fn recover(conn: &mut PgConnection, target: &LockTarget, failed: &sqlx::Error) {
    if sqlstate(failed).as_deref() == Some(IN_FAILED_SQL_TRANSACTION) {
        return;
    }
    let recovered = sqlx::raw_sql(AssertSqlSafe(sql::recover()))
        .execute(conn)
        .await;
    if let Err(error) = recovered {
        tracing::warn!(%target, %error, "pglock: could not roll back to the savepoint after a failed LOCK TABLE");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_access_exclusive_and_the_server_lock_timeout() {
        let lock = lock_table("orders");
        assert_eq!(lock.lock_mode(), LockMode::AccessExclusive);
        assert_eq!(lock.wait_mode(), Wait::ServerDefault);
        assert_eq!(lock.clone().nowait().wait_mode(), Wait::NoWait);
        assert_eq!(
            lock.clone().timeout(Duration::from_micros(10)).wait_mode(),
            Wait::NoWait
        );
        assert_eq!(lock.clone().wait_forever().wait_mode(), Wait::Forever);
        assert_eq!(lock.mode(LockMode::Share).lock_mode(), LockMode::Share);
    }

    #[test]
    fn arguments_are_checked_before_anything_is_sent() {
        let invalid = |lock: TableLock, expected: &str| match lock.checked() {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(expected), "{message}")
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
        invalid(lock_table(Vec::<&str>::new()), "at least one table");
        invalid(lock_table(["orders", "a.b.c"]), "more than one dot");
        invalid(lock_table(TableName::new("s", "")), "table name is empty");
        invalid(
            lock_table("orders").wait(Wait::Limit(Duration::from_nanos(1))),
            "under a millisecond",
        );
        let (tables, timeout) = lock_table(["orders", "orders"])
            .timeout(Duration::from_millis(1500))
            .checked()
            .unwrap();
        assert_eq!(tables.len(), 2, "duplicates are allowed");
        assert_eq!(timeout, Some(1500));
    }
}
