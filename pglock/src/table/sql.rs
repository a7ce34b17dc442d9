//! The statements pglock sends for table locks. This is the one place they are written.
//!
//! `LOCK TABLE` is a utility statement: it takes no parameters and cannot sit in a CTE, so each
//! acquisition is one simple-query message of several statements, one round trip. No caller text
//! reaches it unquoted: table names are written by [`TableName`]'s `Display` (every part quoted,
//! quotes doubled, names checked for NUL and length), the mode is one of eight fixed keywords, and
//! a lock timeout is integer milliseconds written by Rust.
//!
//! The message always runs in a savepoint, so that a lock that is not acquired (or any other
//! failure) can be undone by [`recover`] without aborting the caller's transaction. A timed wait
//! sets `lock_timeout` transaction-locally just before `LOCK TABLE` and sets back the value it
//! found just after; the value is carried between the two statements in a custom setting,
//! [`SAVED_LOCK_TIMEOUT`], since nothing else survives from one statement to the next. When the
//! lock fails, the restore never runs, and rolling back to the savepoint undoes the change instead.

use std::fmt::Write as _;

use super::name::TableName;
use crate::LockMode;

/// The savepoint each acquisition runs in.
const SAVEPOINT: &str = "pglock_lock_table";

/// The custom setting that holds the caller's `lock_timeout` while a timed wait runs. Set
/// transaction-locally, so it reverts (to an empty string) when the transaction ends.
pub(crate) const SAVED_LOCK_TIMEOUT: &str = "pglock.saved_lock_timeout";

/// `LOCK TABLE "a", "b" IN <mode> MODE [NOWAIT]`, without `ONLY`: inheritance children and
/// partitions are locked too, as Postgres does by default.
fn lock(tables: &[TableName], mode: LockMode, nowait: bool) -> String {
    let mut statement = String::from("LOCK TABLE ");
    for (i, table) in tables.iter().enumerate() {
        if i > 0 {
            statement.push_str(", ");
        }
        write!(statement, "{table}").expect("writing to a String");
    }
    write!(statement, " IN {} MODE", mode.as_sql()).expect("writing to a String");
    if nowait {
        statement.push_str(" NOWAIT");
    }
    statement
}

/// The whole acquisition, as one simple-query message.
///
/// `nowait` adds `NOWAIT`; `timeout_ms` (0 meaning no limit) sets `lock_timeout` for the
/// `LOCK TABLE` statement only; with neither, the server's `lock_timeout` applies.
pub(crate) fn acquire(
    tables: &[TableName],
    mode: LockMode,
    nowait: bool,
    timeout_ms: Option<u32>,
) -> String {
    let lock = lock(tables, mode, nowait);
    let body = match timeout_ms {
        None => lock,
        // Two statements rather than two calls in one select list: SQL does not promise the
        // order a select list is evaluated in, and the old value must be read first.
        Some(ms) => format!(
            "SELECT set_config('{SAVED_LOCK_TIMEOUT}', current_setting('lock_timeout'), true); \
             SELECT set_config('lock_timeout', '{ms}', true); \
             {lock}; \
             SELECT set_config('lock_timeout', current_setting('{SAVED_LOCK_TIMEOUT}'), true)"
        ),
    };
    format!("SAVEPOINT {SAVEPOINT}; {body}; RELEASE SAVEPOINT {SAVEPOINT}")
}

/// Undo a failed [`acquire`]: the locks it took on earlier tables of the list and its
/// `lock_timeout` change go, and the caller's transaction is usable again.
pub(crate) fn recover() -> String {
    format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<TableName> {
        names.iter().map(|name| name.parse().unwrap()).collect()
    }

    #[test]
    fn server_default_and_nowait() {
        let orders = names(&["orders"]);
        assert_eq!(
            acquire(&orders, LockMode::AccessExclusive, false, None),
            "SAVEPOINT pglock_lock_table; \
             LOCK TABLE \"orders\" IN ACCESS EXCLUSIVE MODE; \
             RELEASE SAVEPOINT pglock_lock_table"
        );
        assert_eq!(
            acquire(&orders, LockMode::RowShare, true, None),
            "SAVEPOINT pglock_lock_table; \
             LOCK TABLE \"orders\" IN ROW SHARE MODE NOWAIT; \
             RELEASE SAVEPOINT pglock_lock_table"
        );
    }

    #[test]
    fn a_timed_wait_sets_and_restores_lock_timeout_around_the_lock() {
        let statement = acquire(
            &names(&["billing.invoices", "\"Odd \"\"name\"\"\""]),
            LockMode::Share,
            false,
            Some(250),
        );
        assert_eq!(
            statement,
            "SAVEPOINT pglock_lock_table; \
             SELECT set_config('pglock.saved_lock_timeout', current_setting('lock_timeout'), true); \
             SELECT set_config('lock_timeout', '250', true); \
             LOCK TABLE \"billing\".\"invoices\", \"Odd \"\"name\"\"\" IN SHARE MODE; \
             SELECT set_config('lock_timeout', current_setting('pglock.saved_lock_timeout'), true); \
             RELEASE SAVEPOINT pglock_lock_table"
        );
        assert!(acquire(&names(&["t"]), LockMode::Share, false, Some(0)).contains("'0'"));
    }

    #[test]
    fn every_mode_is_spelled_as_lock_table_takes_it() {
        for mode in LockMode::ALL {
            let statement = lock(&names(&["t"]), mode, false);
            assert_eq!(
                statement,
                format!("LOCK TABLE \"t\" IN {} MODE", mode.as_sql())
            );
        }
    }

    #[test]
    fn recovery_rolls_back_to_the_same_savepoint() {
        assert_eq!(
            recover(),
            "ROLLBACK TO SAVEPOINT pglock_lock_table; RELEASE SAVEPOINT pglock_lock_table"
        );
    }
}
