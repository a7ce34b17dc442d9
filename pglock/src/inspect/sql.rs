//! The statements of lock inspection. This is the one place they are written.
//!
//! Every statement is one round trip and reads `pg_locks` exactly once (materialized, so every
//! later step sees the same snapshot of the lock table), joins it to `pg_stat_activity` and
//! `pg_class` by hash or index, and calls `pg_blocking_pids` only for the backends that wait,
//! never once per lock. Listing 10,000 locks costs one scan of each view and a sort.
//!
//! No caller-supplied value reaches the text: every filter is a bound parameter, and a filter
//! that is not set is bound as `NULL`, which its clause reads as "no filter". The text depends
//! on the kind of statement, on whether the server has `pg_locks.waitstart` (Postgres 14 and
//! later), and on which field lookups (`lookup.rs`) are used: their expressions and operators
//! come from a fixed table, their values are parameters after the fixed ones. sqlx prepares
//! each distinct text once per connection.
//!
//! Parameters, the same in every statement:
//!
//! | | type | filter |
//! |---|---|---|
//! | `$1` | `int4[]` | pids |
//! | `$2`, `$3` | `text[]`, `text[]` | tables: schemas (`NULL` element: any schema) and names |
//! | `$4`, `$5`, `$6` | `int8[]`, `int8[]`, `int2[]` | advisory keys: classid, objid, objsubid |
//! | `$7` | `bool` | granted |
//! | `$8` | `text[]` | modes, as `pg_locks` spells them |
//! | `$9` | `float8` | minimum wait, seconds |
//! | `$10` | `float8` | minimum query duration, seconds |
//! | `$11` | `int8` | limit |
//! | `$12` | `bool` | leave out the locks transactions hold on their own ids that nobody waits for |
//! | `$13` | `bool` | every database, not only the current one |
//!
//! Statements about blocked locks add `$14` (`int4[]`, blocking pids) and `$15` (`float8`,
//! minimum query duration of the blocking backend, seconds). The field lookups' values follow:
//! from `$14` ([`FIRST_LOOKUP`]) or `$16` ([`FIRST_BLOCKED_LOOKUP`]).
//!
//! Each row is read by position (see `rows.rs`): the lock's columns in [`LOCK`] order, the
//! activity's in [`ACTIVITY`] order, then for blocked locks the blocking pid and the blocking
//! activity, and last the statement's time.

use sqlx::{AssertSqlSafe, PgConnection};

use super::filters::{Bound, Filters};
use super::lookup::Conditions;
use crate::{Error, Signal};

/// The first parameter of the field lookups in statements about locks.
pub(super) const FIRST_LOOKUP: usize = 14;

/// The first parameter of the field lookups in statements about blocked locks.
pub(super) const FIRST_BLOCKED_LOOKUP: usize = 16;

/// The lock columns of a row, in the order `rows.rs` reads them.
pub(super) const LOCK: &[&str] = &[
    "pid",
    "locktype",
    "mode",
    "granted",
    "wait_start",
    "relation",
    "relkind",
    "nspname",
    "relname",
    "transactionid",
    "classid",
    "objid",
    "objsubid",
];

/// The activity columns of a row, in the order `rows.rs` reads them. `pid` is `NULL` when the
/// lock's backend has no activity row in this database (a prepared transaction's locks).
pub(super) const ACTIVITY: &[&str] = &[
    "pid",
    "leader_pid",
    "usename",
    "application_name",
    "client_addr",
    "client_hostname",
    "client_port",
    "backend_type",
    "backend_start",
    "xact_start",
    "query_start",
    "state_change",
    "state",
    "wait_event_type",
    "wait_event",
    "query",
    "datname",
];

/// What a statement does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Statement {
    /// List locks.
    Locks,
    /// List (blocked lock, blocking backend) pairs.
    Blocked,
    /// Signal the backends of the locks listed.
    SignalLocks(Signal),
    /// Signal the blocking backends of the pairs listed.
    SignalBlocking(Signal),
}

impl Statement {
    /// Whether the statement takes the two parameters of blocked-lock filters.
    pub(super) fn is_about_blocked_locks(self) -> bool {
        matches!(self, Statement::Blocked | Statement::SignalBlocking(_))
    }

    /// The number of the first field lookup's parameter.
    pub(super) fn first_lookup(self) -> usize {
        if self.is_about_blocked_locks() {
            FIRST_BLOCKED_LOOKUP
        } else {
            FIRST_LOOKUP
        }
    }
}

/// The statement's text. `waitstart`: whether the server has `pg_locks.waitstart` (14+).
/// `conditions`: the field lookups', numbered from [`Statement::first_lookup`].
pub(super) fn text(statement: Statement, waitstart: bool, conditions: &Conditions) -> String {
    let ctes = ctes(
        if waitstart {
            "l.waitstart"
        } else {
            "NULL::timestamptz"
        },
        statement.is_about_blocked_locks(),
        &conditions.lock,
    );
    let blocked_cte = || blocked(&conditions.blocking);
    match statement {
        Statement::Locks => format!(
            "{ctes}\nSELECT {lock}, {activity}, {NOW}\nFROM base\nORDER BY {LOCK_ORDER}\nLIMIT $11",
            lock = columns(LOCK, ""),
            activity = columns(ACTIVITY, "a_"),
        ),
        Statement::Blocked => format!(
            "{ctes},\n{blocked}\nSELECT {lock}, {activity}, blocking_pid, {blocking}, {NOW}\n\
             FROM blocked\nORDER BY {BLOCKED_ORDER}\nLIMIT $11",
            lock = columns(LOCK, ""),
            activity = columns(ACTIVITY, "a_"),
            blocking = columns(ACTIVITY, "b_"),
            blocked = blocked_cte(),
        ),
        Statement::SignalLocks(signal) => format!(
            "{ctes},\nlisted AS (\n    SELECT pid AS target, a_usesysid AS target_role, \
             a_pid IS NOT NULL AS target_seen\n    FROM base ORDER BY {LOCK_ORDER} LIMIT $11\n),\n\
             {tail}",
            tail = signal_tail(signal),
        ),
        Statement::SignalBlocking(signal) => format!(
            "{ctes},\n{blocked},\nlisted AS (\n    SELECT blocking_pid AS target, b_usesysid AS \
             target_role, b_pid IS NOT NULL AS target_seen\n    FROM blocked ORDER BY \
             {BLOCKED_ORDER} LIMIT $11\n),\n{tail}",
            blocked = blocked_cte(),
            tail = signal_tail(signal),
        ),
    }
}

/// The statement for `filters`, with the fixed parameters bound by `bind` and the field
/// lookups' values after them.
///
/// # Errors
/// [`Error::InvalidArgument`] for a filter that is wrong (see `Filters::bind` and
/// `Lookups::conditions`); [`Error::Database`] if the server's version cannot be read.
pub(super) async fn prepare(
    conn: &mut PgConnection,
    statement: Statement,
    filters: &Filters,
    bind: impl FnOnce(Bound<'static>, bool) -> Result<Bound<'static>, Error>,
) -> Result<Bound<'static>, Error> {
    let conditions =
        filters.conditions(statement.first_lookup(), statement.is_about_blocked_locks())?;
    let waitstart = super::has_waitstart(conn).await?;
    let query = sqlx::query(AssertSqlSafe(text(statement, waitstart, &conditions)));
    Ok(filters.bind_lookups(bind(query, waitstart)?))
}

/// `prefixcol, ...` for `cols`: the output columns of a CTE.
fn columns(cols: &[&str], prefix: &str) -> String {
    cols.iter()
        .map(|col| format!("{prefix}{col}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `alias.col AS prefixcol, ...` for the activity columns of `act` under `alias`. The pid is
/// `NULL` for a backend outside the current database (unless `$13` asks for every database),
/// which reads as no activity.
fn activity_columns(alias: &str, prefix: &str) -> String {
    ACTIVITY
        .iter()
        .map(|&col| match col {
            "pid" => format!(
                "CASE WHEN $13::bool OR {alias}.datid = (SELECT oid FROM db) THEN {alias}.pid END \
                 AS {prefix}pid"
            ),
            col => format!("{alias}.{col} AS {prefix}{col}"),
        })
        .collect::<Vec<_>>()
        .join(",\n           ")
}

/// The statement's time, which durations are measured to: `statement_timestamp()` rather than
/// `now()`, so that inspecting from inside a long transaction does not measure to its start.
const NOW: &str = "date_part('epoch', statement_timestamp()) AS now";

/// django-pglock's listing order: locks waited for first, then the longest wait, then the
/// longest-running query; the rest only makes the order total.
///
/// The tie-breakers are numbers first: text compared under a libc collation costs a `strcoll`
/// per comparison, which made them a third of the statement's time with 10,000 locks of one
/// backend (which tie on everything up to the key).
const LOCK_ORDER: &str = "granted, waitstart ASC NULLS LAST, a_query_started_at ASC NULLS LAST, \
                          pid, relation, classid, objid, objsubid, transactionid, \
                          locktype COLLATE \"C\", mode COLLATE \"C\"";

/// The same for blocked locks (all of which are waited for).
const BLOCKED_ORDER: &str =
    "waitstart ASC NULLS LAST, a_query_started_at ASC NULLS LAST, pid, blocking_pid";

/// The CTEs every statement starts with, ending in `base`: the locks of the current database
/// with their relation and activity, filtered by `$1`..`$10`, `$12`, `$13` and the
/// field lookups' `conditions`.
///
/// * `db`: the current database, which locks and backends are limited to.
/// * `act`: `pg_stat_activity`, times as epoch seconds. Only backends connected to the current
///   database count, but that test (`datid`) is made after the join, never in it: the planner,
///   which cannot know how many backends match, would expect one and join the locks to the
///   backends in a nested loop, locks × backends (a 280-backend server doubled the time to list
///   10,000 locks). Joined on `pid` alone, it hashes.
/// * `lk`: `pg_locks`, read once. A prepared transaction's locks have no pid: they get 0, as
///   `pg_blocking_pids` reports them. The inspecting session's own locks are left out: they
///   would only be the catalog locks this statement takes.
/// * `on_rels`: the relations the table filter names, looked up once.
/// * `base`: a lock belongs to the current database when it says so (relation, advisory, page,
///   tuple... locks), or when it belongs to no database (transaction ids, virtual transaction ids,
///   shared catalogs) and its backend is connected to this one.
///
/// For blocked locks, the table filter also keeps the transaction-id wait of a row lock: the
/// waiter holds the row's tuple lock (on the table) while it waits for the holder's
/// transaction to end.
fn ctes(waitstart: &str, blocked: bool, conditions: &str) -> String {
    let row_lock_waits = if blocked {
        "\n           OR lk.pid IN (SELECT t.pid FROM lk t WHERE t.locktype = 'tuple' AND \
         t.granted AND t.relation IN (SELECT oid FROM on_rels))"
    } else {
        ""
    };
    let activity = activity_columns("a", "a_");
    format!(
        "WITH db AS MATERIALIZED (
    SELECT oid FROM pg_database WHERE datname = current_database()
),
act AS MATERIALIZED (
    SELECT a.pid, a.datid, a.leader_pid, a.usesysid, a.usename::text AS usename, a.application_name,
           host(a.client_addr) AS client_addr, a.client_hostname, a.client_port, a.backend_type,
           date_part('epoch', a.backend_start) AS backend_start,
           date_part('epoch', a.xact_start) AS xact_start,
           date_part('epoch', a.query_start) AS query_start,
           date_part('epoch', a.state_change) AS state_change,
           a.state, a.wait_event_type, a.wait_event, a.query, a.datname::text AS datname,
           a.query_start AS query_started_at
    FROM pg_stat_activity a
),
lk AS MATERIALIZED (
    SELECT coalesce(l.pid, 0) AS pid, l.locktype, l.database, l.relation, l.transactionid,
           l.virtualxid, l.classid, l.objid, l.objsubid, l.mode, l.granted, {waitstart} AS waitstart
    FROM pg_locks l
    WHERE l.pid IS DISTINCT FROM pg_backend_pid()
),
on_rels AS (
    SELECT c.oid
    FROM unnest($2::text[], $3::text[]) AS t(nspname, relname)
    JOIN pg_class c ON c.relname = t.relname
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.nspname IS NULL OR n.nspname = t.nspname
),
base AS (
    SELECT lk.pid, lk.locktype, lk.mode, lk.granted, lk.waitstart,
           date_part('epoch', lk.waitstart) AS wait_start, lk.relation::int8 AS relation,
           c.relkind::text AS relkind, n.nspname::text AS nspname, c.relname::text AS relname,
           lk.transactionid::text::int8 AS transactionid, lk.classid::int8 AS classid,
           lk.objid::int8 AS objid, lk.objsubid,
           {activity}, a.usesysid AS a_usesysid, a.query_started_at AS a_query_started_at
    FROM lk
    LEFT JOIN act a ON a.pid = lk.pid
    LEFT JOIN pg_class c ON c.oid = lk.relation
                            AND coalesce(lk.database, 0) IN (0, (SELECT oid FROM db))
    LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE ($13::bool
           OR lk.database = (SELECT oid FROM db)
           OR (coalesce(lk.database, 0) = 0 AND a.datid = (SELECT oid FROM db)))
      AND ($1::int4[] IS NULL OR lk.pid = ANY($1::int4[]))
      AND ($3::text[] IS NULL
           OR c.oid IN (SELECT oid FROM on_rels){row_lock_waits})
      AND ($4::int8[] IS NULL
           OR (lk.locktype = 'advisory'
               AND (lk.classid::int8, lk.objid::int8, lk.objsubid) IN (
                   SELECT * FROM unnest($4::int8[], $5::int8[], $6::int2[]))))
      AND ($7::bool IS NULL OR lk.granted = $7::bool)
      AND ($8::text[] IS NULL OR lk.mode = ANY($8::text[]))
      AND ($9::float8 IS NULL
           OR date_part('epoch', statement_timestamp() - lk.waitstart) >= $9::float8)
      AND ($10::float8 IS NULL
           OR date_part('epoch', statement_timestamp() - a.query_started_at) >= $10::float8)
      AND NOT ($12::bool AND lk.granted AND lk.locktype IN ('virtualxid', 'transactionid')
               AND coalesce(lk.transactionid::text, lk.virtualxid) NOT IN (
                   SELECT coalesce(w.transactionid::text, w.virtualxid)
                   FROM lk w
                   WHERE NOT w.granted AND w.locktype IN ('virtualxid', 'transactionid')
                     AND coalesce(w.transactionid::text, w.virtualxid) IS NOT NULL)){conditions}
)"
    )
}

/// `waiting`: the locks waited for (a backend waits for one lock at a time), and `blocked`:
/// each with every backend `pg_blocking_pids` names for its backend, hard blockers (holders of
/// a conflicting lock) and soft ones (earlier in the queue) alike. A parallel worker is named by
/// its leader, possibly more than once: hence the DISTINCT. `pg_blocking_pids` takes the lock
/// manager's partition locks, so it runs once per waiting backend only.
fn blocked(conditions: &str) -> String {
    let blocking = activity_columns("ba", "b_");
    format!(
        "waiting AS MATERIALIZED (
    SELECT * FROM base WHERE NOT granted
),
blocked AS (
    SELECT w.*, b.pid AS blocking_pid, {blocking}, ba.usesysid AS b_usesysid
    FROM waiting w
    CROSS JOIN LATERAL (SELECT DISTINCT unnest(pg_blocking_pids(w.pid)) AS pid) b
    LEFT JOIN act ba ON ba.pid = b.pid
    WHERE ($14::int4[] IS NULL OR b.pid = ANY($14::int4[]))
      AND ($15::float8 IS NULL
           OR date_part('epoch', statement_timestamp() - ba.query_started_at) >= $15::float8){conditions}
)"
    )
}

/// Signal the distinct `target`s of `listed`, returning `(pid, signalled)` for each.
///
/// Never the session running the statement, never pid 0 (a prepared transaction: no backend to
/// signal) and never a backend outside this database (`target_seen`). The targets are
/// materialized before any signal is sent, so every filter has applied first.
///
/// The backends Postgres is expected to refuse to signal come first: those of superusers (and of
/// no role), and those of roles whose privileges the current role lacks, unless it has
/// `pg_signal_backend`. A refusal is an error that ends the statement, so when it comes, no
/// other backend has been signalled yet.
fn signal_tail(signal: Signal) -> String {
    let function = match signal {
        Signal::Terminate => "pg_terminate_backend",
        Signal::Cancel => "pg_cancel_backend",
    };
    format!(
        "targets AS MATERIALIZED (
    SELECT t.pid
    FROM (SELECT DISTINCT target AS pid, target_role AS role
          FROM listed
          WHERE target_seen AND target <> 0 AND target <> pg_backend_pid()) t
    ORDER BY coalesce(t.role IS NULL
                      OR (SELECT r.rolsuper FROM pg_roles r WHERE r.oid = t.role)
                      OR NOT (pg_has_role(t.role, 'USAGE')
                              OR pg_has_role('pg_signal_backend', 'USAGE')),
                      true) DESC,
             t.pid
)
SELECT pid, {function}(pid) AS signalled FROM targets"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Statement; 6] = [
        Statement::Locks,
        Statement::Blocked,
        Statement::SignalLocks(Signal::Terminate),
        Statement::SignalLocks(Signal::Cancel),
        Statement::SignalBlocking(Signal::Terminate),
        Statement::SignalBlocking(Signal::Cancel),
    ];

    /// The highest `$n` in a statement.
    fn parameters(text: &str) -> usize {
        (1..=20)
            .filter(|n| text.contains(&format!("${n}")))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn statements_take_the_documented_parameters() {
        for statement in ALL {
            for waitstart in [false, true] {
                let text = text(statement, waitstart, &Conditions::default());
                let expected = if statement.is_about_blocked_locks() {
                    15
                } else {
                    13
                };
                assert_eq!(parameters(&text), expected, "{statement:?}:\n{text}");
            }
        }
    }

    #[test]
    fn waitstart_is_read_only_where_it_exists() {
        for statement in ALL {
            assert!(
                text(statement, true, &Conditions::default()).contains("l.waitstart AS waitstart")
            );
            assert!(!text(statement, false, &Conditions::default()).contains("l.waitstart"));
        }
    }

    #[test]
    fn signals_go_to_the_function_asked_for() {
        let cancel = text(
            Statement::SignalBlocking(Signal::Cancel),
            true,
            &Conditions::default(),
        );
        assert!(cancel.contains("pg_cancel_backend(pid)"), "{cancel}");
        assert!(!cancel.contains("pg_terminate_backend"), "{cancel}");
        let terminate = text(
            Statement::SignalLocks(Signal::Terminate),
            true,
            &Conditions::default(),
        );
        assert!(
            terminate.contains("pg_terminate_backend(pid)"),
            "{terminate}"
        );
        assert!(
            terminate.contains("target <> pg_backend_pid()"),
            "{terminate}"
        );
    }

    #[test]
    fn row_lock_waits_count_for_the_table_filter_of_blocked_locks_only() {
        assert!(
            text(Statement::Blocked, true, &Conditions::default()).contains("t.locktype = 'tuple'")
        );
        assert!(
            !text(Statement::Locks, true, &Conditions::default()).contains("t.locktype = 'tuple'")
        );
    }
}
