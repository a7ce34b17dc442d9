//! The rows inspection returns, and how they are read from the statements of `sql.rs`.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgRow;
use sqlx::{Decode, Postgres, Row, Type};

use super::{context, labels};
use crate::{AdvisoryKey, LockId, LockMode};

/// One row of `pg_locks`: a lock held or waited for by a backend of the current database, with
/// what that backend is doing. Listed by [`locks`](crate::locks).
///
/// django-pglock's `PGLock`, with every kind of lock rather than relation locks only:
/// advisory locks carry their decoded key ([`advisory`](PgLock::advisory)), and transaction-id,
/// virtual-transaction-id and other locks that name no relation appear with
/// [`relation`](PgLock::relation) `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PgLock {
    /// The backend holding or awaiting the lock; 0 for a prepared transaction (which has no
    /// backend, and is how `pg_blocking_pids` names one).
    pub pid: i32,
    /// `pg_locks.locktype` in capitals, as django-pglock shows it: `RELATION`, `ADVISORY`,
    /// `TRANSACTIONID`, `VIRTUALXID`, `TUPLE`, `PAGE`, `OBJECT`...
    pub lock_type: String,
    /// The lock's mode, when it is one of the eight table-lock modes. Advisory and
    /// transaction-id locks are `Exclusive` or `Share` (their `pg_locks` names are those modes'
    /// names). `None` for `SIReadLock`, the predicate locks of serializable transactions, which
    /// block nothing.
    pub mode: Option<LockMode>,
    /// The mode as `pg_locks` spells it: `AccessExclusiveLock`, `SIReadLock`.
    pub mode_name: String,
    /// Whether the lock is held (`true`) or waited for (`false`).
    pub granted: bool,
    /// When the backend started waiting for the lock; `None` once it is granted, and always
    /// `None` before Postgres 14, which does not record it. May also be `None` for a very
    /// short time after a wait begins.
    pub wait_start: Option<SystemTime>,
    /// How long the backend has been waiting, as of the listing (`wait_start` to then).
    pub wait_duration: Option<Duration>,
    /// The relation locked, for relation locks and the page and tuple locks inside one.
    /// `None` for other locks, and for a relation not visible in the catalog (created or
    /// dropped by a transaction that has not committed): see [`relation_oid`](PgLock::relation_oid).
    pub relation: Option<Relation>,
    /// The locked relation's oid, whether or not the catalog shows the relation.
    pub relation_oid: Option<u32>,
    /// For a `TRANSACTIONID` lock, the transaction id. A row lock is waited for this way: the
    /// waiter waits for the lock of the transaction that holds the row.
    pub transaction_id: Option<u32>,
    /// For an `ADVISORY` lock, its key, decoded from `classid`, `objid` and `objsubid` (which
    /// django-pglock does not list). A string id hashes to a `BigInt` key
    /// ([`AdvisoryKey::from_name`]); [`PgLock::is_advisory_lock`] compares with an id.
    pub advisory: Option<AdvisoryKey>,
    /// What the backend is doing. `None` for a prepared transaction (`pid` 0), or in the rare
    /// case that the backend ended between reading the locks and reading the activity.
    pub activity: Option<Activity>,
}

impl PgLock {
    /// Whether this is the advisory lock `id` (a string, an integer, a pair, or a key).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let locks = pglock::locks().fetch(pool).await?;
    /// let holders: Vec<i32> = locks
    ///     .iter()
    ///     .filter(|lock| lock.granted && lock.is_advisory_lock("nightly-report"))
    ///     .map(|lock| lock.pid)
    ///     .collect();
    /// println!("{holders:?}");
    /// # Ok(()) }
    /// ```
    pub fn is_advisory_lock(&self, id: impl Into<LockId>) -> bool {
        self.advisory == Some(id.into().key())
    }
}

/// A relation (table, index, sequence...) a lock is on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Relation {
    /// Its oid.
    pub oid: u32,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Its kind, by django-pglock's names: `TABLE`, `INDEX`, `SEQUENCE`, `TOAST`, `VIEW`,
    /// `MATERIALIZED_VIEW`, `COMPOSITE_TYPE`, `FOREIGN_TABLE`, `PARTITIONED_TABLE`,
    /// `PARTITIONED_INDEX`, or `pg_class.relkind`'s letter for a kind without a name.
    pub kind: String,
}

impl fmt::Display for Relation {
    /// `schema.name`, as written (not quoted).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A backend of the current database (or of any, with [`all_databases`](crate::LockQuery::all_databases)),
/// from `pg_stat_activity`, as django-pgactivity shows it.
///
/// Without superuser or `pg_read_all_stats`, another role's backend shows only its pid, user,
/// application name and backend type: the rest is `None`, and `query` is
/// `<insufficient privilege>`.
///
/// Read inside a transaction, `pg_stat_activity` is the one Postgres cached at the
/// transaction's first read of it; inspect through a pool, or outside a transaction, for a
/// live view.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Activity {
    /// The backend's process id.
    pub pid: i32,
    /// The database it is connected to; `None` for background processes that have none.
    pub database: Option<String>,
    /// For a parallel worker, its leader's pid.
    pub leader_pid: Option<i32>,
    /// The role it is logged in as.
    pub user: Option<String>,
    /// Its `application_name` (empty when none was set).
    pub application_name: String,
    /// The client's address; `None` for a Unix socket (and for background processes).
    pub client_addr: Option<IpAddr>,
    /// The client's host name, when the server looks names up (`log_hostname`).
    pub client_hostname: Option<String>,
    /// The client's port; -1 for a Unix socket.
    pub client_port: Option<i32>,
    /// What kind of backend it is, upper-snaked: `CLIENT_BACKEND`, `AUTOVACUUM_WORKER`,
    /// `PARALLEL_WORKER`...
    pub backend_type: String,
    /// When the backend started.
    pub backend_start: Option<SystemTime>,
    /// When its current transaction started; `None` outside a transaction.
    pub xact_start: Option<SystemTime>,
    /// When its current query started, or its last one if it is idle.
    pub query_start: Option<SystemTime>,
    /// When its `state` last changed.
    pub state_change: Option<SystemTime>,
    /// Its state as django-pgactivity shows it (`UPPER(REPLACE(state, ' ', '_'))`): `ACTIVE`,
    /// `IDLE`, `IDLE_IN_TRANSACTION`, `IDLE_IN_TRANSACTION_(ABORTED)`, `FASTPATH_FUNCTION_CALL`,
    /// `DISABLED`.
    pub state: Option<String>,
    /// The kind of thing it waits for, in upper snake case: `LOCK`, `CLIENT`, `IO`...
    pub wait_event_type: Option<String>,
    /// What it waits for, in upper snake case: `ADVISORY`, `RELATION`, `TRANSACTIONID`,
    /// `CLIENT_READ`, `WAL_WRITE`... (django-pgactivity would show `W_A_L_WRITE`).
    pub wait_event: Option<String>,
    /// Its current (or last) query, without a leading context comment. Postgres keeps only the
    /// first `track_activity_query_size` bytes (1 kB by default).
    pub query: String,
    /// The JSON text of a leading `/*pga_context={...}*/` comment on the query, as
    /// django-pgactivity's `pgactivity.context(...)` writes it (and reads it back into its
    /// `context` column), unparsed: `{"url": "/orders", "method": "POST"}`.
    pub context: Option<String>,
    /// How long its current query has run (or its last one ran until the listing, if it is
    /// idle), as of the listing: django-pgactivity's `duration`.
    pub duration: Option<Duration>,
    /// How long its current transaction has run, as of the listing.
    pub xact_duration: Option<Duration>,
}

/// A lock a backend waits for, with one backend that blocks it. Listed by
/// [`blocked_locks`](crate::blocked_locks).
///
/// A lock blocked by several backends gives one row per blocking backend. The blocking
/// backends are the ones `pg_blocking_pids` names: those holding a conflicting lock, and those
/// ahead in the queue for it with a conflicting request (which wait themselves).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockedPgLock {
    /// The lock waited for (never granted), and the waiting backend's activity.
    pub lock: PgLock,
    /// The blocking backend's pid; 0 for a prepared transaction.
    pub blocking_pid: i32,
    /// What the blocking backend is doing. `None` for a prepared transaction, and for a
    /// blocking backend connected to another database (possible only on shared catalogs): those
    /// are never signalled by [`terminate_blocking`](crate::BlockedLockQuery::terminate_blocking).
    pub blocking: Option<Activity>,
}

/// Reads a row's columns in order.
pub(super) struct Columns<'r> {
    row: &'r PgRow,
    next: usize,
}

impl<'r> Columns<'r> {
    pub(super) fn new(row: &'r PgRow) -> Self {
        Columns { row, next: 0 }
    }

    fn take<T>(&mut self) -> Result<T, sqlx::Error>
    where
        T: Decode<'r, Postgres> + Type<Postgres>,
    {
        let value = self.row.try_get(self.next);
        self.next += 1;
        value
    }

    /// The statement's time, the row's last column, which durations are measured to.
    pub(super) fn now(&self) -> Result<f64, sqlx::Error> {
        self.row.try_get(self.row.len() - 1)
    }

    /// The lock columns (`sql::LOCK`), then the activity columns (`sql::ACTIVITY`).
    pub(super) fn lock(&mut self, now: f64) -> Result<PgLock, sqlx::Error> {
        let pid: i32 = self.take()?;
        let locktype: String = self.take()?;
        let mode_name: String = self.take()?;
        let granted: bool = self.take()?;
        let wait_start: Option<f64> = self.take()?;
        let relation_oid: Option<i64> = self.take()?;
        let relkind: Option<String> = self.take()?;
        let schema: Option<String> = self.take()?;
        let name: Option<String> = self.take()?;
        let transaction_id: Option<i64> = self.take()?;
        let classid: Option<i64> = self.take()?;
        let objid: Option<i64> = self.take()?;
        let objsubid: Option<i16> = self.take()?;
        let activity = self.activity(now)?;

        let relation_oid = relation_oid.map(|oid| oid as u32);
        let relation = match (relation_oid, schema, name, relkind) {
            (Some(oid), Some(schema), Some(name), Some(kind)) => Some(Relation {
                oid,
                schema,
                name,
                kind: labels::relkind(&kind),
            }),
            _ => None,
        };
        let advisory = if locktype == "advisory" {
            advisory_key(classid, objid, objsubid)
        } else {
            None
        };
        Ok(PgLock {
            pid,
            lock_type: locktype.to_uppercase(),
            mode: mode_name.parse().ok(),
            mode_name,
            granted,
            wait_start: wait_start.and_then(time),
            wait_duration: wait_start.and_then(|start| elapsed(start, now)),
            relation,
            relation_oid,
            transaction_id: transaction_id.map(|xid| xid as u32),
            advisory,
            activity,
        })
    }

    /// The blocking pid and the blocking backend's activity columns.
    pub(super) fn blocking(&mut self, now: f64) -> Result<(i32, Option<Activity>), sqlx::Error> {
        let pid: i32 = self.take()?;
        Ok((pid, self.activity(now)?))
    }

    /// The activity columns (`sql::ACTIVITY`); `None` when its pid is `NULL`.
    fn activity(&mut self, now: f64) -> Result<Option<Activity>, sqlx::Error> {
        let pid: Option<i32> = self.take()?;
        let leader_pid: Option<i32> = self.take()?;
        let user: Option<String> = self.take()?;
        let application_name: Option<String> = self.take()?;
        let client_addr: Option<String> = self.take()?;
        let client_hostname: Option<String> = self.take()?;
        let client_port: Option<i32> = self.take()?;
        let backend_type: Option<String> = self.take()?;
        let backend_start: Option<f64> = self.take()?;
        let xact_start: Option<f64> = self.take()?;
        let query_start: Option<f64> = self.take()?;
        let state_change: Option<f64> = self.take()?;
        let state: Option<String> = self.take()?;
        let wait_event_type: Option<String> = self.take()?;
        let wait_event: Option<String> = self.take()?;
        let query: Option<String> = self.take()?;
        let database: Option<String> = self.take()?;
        let Some(pid) = pid else {
            return Ok(None);
        };
        let query = query.unwrap_or_default();
        let (context, query) = context::split(&query);
        Ok(Some(Activity {
            pid,
            database,
            leader_pid,
            user,
            application_name: application_name.unwrap_or_default(),
            client_addr: client_addr.and_then(|addr| addr.parse().ok()),
            client_hostname,
            client_port,
            backend_type: backend_type
                .as_deref()
                .map(labels::spaced)
                .unwrap_or_default(),
            backend_start: backend_start.and_then(time),
            xact_start: xact_start.and_then(time),
            query_start: query_start.and_then(time),
            state_change: state_change.and_then(time),
            state: state.as_deref().map(labels::spaced),
            wait_event_type: wait_event_type.as_deref().map(labels::camel),
            wait_event: wait_event.as_deref().map(labels::camel),
            context: context.map(str::to_owned),
            query: query.to_owned(),
            duration: query_start.and_then(|start| elapsed(start, now)),
            xact_duration: xact_start.and_then(|start| elapsed(start, now)),
        }))
    }
}

/// The key of an advisory lock from its `pg_locks` columns, undoing what Postgres' lockfuncs.c
/// does: a `bigint` key is split into its high half (`classid`) and low half (`objid`) with
/// `objsubid` 1; a pair of `int`s is stored as is, as unsigned `oid`s, with `objsubid` 2.
fn advisory_key(
    classid: Option<i64>,
    objid: Option<i64>,
    objsubid: Option<i16>,
) -> Option<AdvisoryKey> {
    let (high, low) = (classid? as u32, objid? as u32);
    match objsubid? {
        1 => Some(AdvisoryKey::BigInt(
            ((u64::from(high) << 32) | u64::from(low)) as i64,
        )),
        2 => Some(AdvisoryKey::Pair(high as i32, low as i32)),
        _ => None,
    }
}

/// A time sent as epoch seconds. `None` for the infinities Postgres allows in a timestamp.
fn time(epoch: f64) -> Option<SystemTime> {
    if !epoch.is_finite() {
        return None;
    }
    let offset = Duration::try_from_secs_f64(epoch.abs()).ok()?;
    if epoch >= 0.0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

/// The time from `start` to `now` (epoch seconds); zero if `start` is later, which the clock
/// readings of different backends can make it by a hair.
fn elapsed(start: f64, now: f64) -> Option<Duration> {
    Duration::try_from_secs_f64((now - start).max(0.0)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_keys_decode_as_pglock_encodes_them() {
        for key in [
            AdvisoryKey::BigInt(0),
            AdvisoryKey::BigInt(42),
            AdvisoryKey::BigInt(-1),
            AdvisoryKey::BigInt(i64::MIN),
            AdvisoryKey::BigInt(i64::MAX),
            LockId::from("my_lock_id").key(),
            AdvisoryKey::Pair(1, 2),
            AdvisoryKey::Pair(-1, i32::MIN),
        ] {
            let (classid, objid) = key.to_pg_locks_id();
            let decoded = advisory_key(
                Some(classid.into()),
                Some(objid.into()),
                Some(key.pg_locks_objsubid()),
            );
            assert_eq!(decoded, Some(key));
        }
        assert_eq!(advisory_key(Some(1), Some(2), Some(3)), None);
        assert_eq!(advisory_key(None, Some(2), Some(1)), None);
    }

    #[test]
    fn epoch_seconds_become_times_and_durations() {
        assert_eq!(time(0.0), Some(UNIX_EPOCH));
        assert_eq!(time(1.5), Some(UNIX_EPOCH + Duration::from_millis(1500)));
        assert_eq!(time(-2.0), UNIX_EPOCH.checked_sub(Duration::from_secs(2)));
        assert_eq!(time(f64::INFINITY), None);
        assert_eq!(time(f64::NAN), None);
        assert_eq!(elapsed(10.0, 12.5), Some(Duration::from_millis(2500)));
        assert_eq!(elapsed(12.5, 10.0), Some(Duration::ZERO));
    }
}
