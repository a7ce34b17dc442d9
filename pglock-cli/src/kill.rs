//! `--cancel` / `--terminate`: find the backends, list them and ask, signal, say how many were
//! signalled.

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use pglock::{Activity, Signal};
use sqlx::PgConnection;

use crate::attributes::{self, Value};
use crate::config::Settings;
use crate::render::{self, Style};
use crate::{Failure, query, tree};

/// `Terminate`, `Cancel`.
fn verb(signal: Signal) -> &'static str {
    match signal {
        Signal::Cancel => "Cancel",
        _ => "Terminate",
    }
}

/// `3 blocking queries`, `1 query`.
fn queries(n: usize, blocking: bool) -> String {
    let blocking = if blocking { "blocking " } else { "" };
    let noun = if n == 1 { "query" } else { "queries" };
    format!("{n} {blocking}{noun}")
}

/// Whether an answer to the prompt is yes: `y` or `yes`, any case (django-pglock's
/// `^(y)(es)?$`).
pub fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Signal the backends the settings find, after listing them and asking, unless `yes`.
///
/// The backends are found by a listing with no limit (as django-pglock counts them): the
/// backends of the locks listed; with `--blocking`, the backends blocking the waits listed
/// (django-pglock's meaning: every blocker, also one that waits itself); with `--roots` (and
/// `pglock tree`'s kill), the root blockers only. The signal then goes to those of them that
/// still match, in one statement, and the number reported is the number actually signalled.
/// The command's own session, prepared transactions and backends the listing cannot see are
/// never counted or signalled.
pub async fn run(
    conn: &mut PgConnection,
    settings: &Settings,
    signal: Signal,
) -> Result<ExitCode, Failure> {
    let targets: BTreeMap<i32, Activity> = if settings.roots {
        tree::fetch(conn, settings)
            .await?
            .root_blockers()
            .into_iter()
            .map(|(pid, activity)| (pid, activity.clone()))
            .collect()
    } else if settings.blocking {
        query::blocked(settings, None, false)
            .fetch(&mut *conn)
            .await?
            .into_iter()
            .filter(|pair| pair.blocking_pid != 0)
            .filter_map(|pair| Some((pair.blocking_pid, pair.blocking?)))
            .collect()
    } else {
        query::locks(settings, None, false)
            .fetch(&mut *conn)
            .await?
            .into_iter()
            .filter(|lock| lock.pid != 0)
            .filter_map(|lock| Some((lock.pid, lock.activity?)))
            .collect()
    };
    let verb = verb(signal);
    let blocking = settings.blocking || settings.roots;
    let noun = |n: usize| {
        if settings.roots {
            roots(n)
        } else {
            queries(n, blocking)
        }
    };
    if targets.is_empty() {
        eprintln!(
            "No {} to {}.",
            if settings.roots {
                "root blockers"
            } else if blocking {
                "blocking queries"
            } else {
                "queries"
            },
            verb.to_lowercase()
        );
        return Ok(ExitCode::FAILURE);
    }
    if !settings.yes {
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(sessions(&targets, Style::for_stderr()).as_bytes())?;
        write!(stderr, "{verb} {}? (y/[n]) ", noun(targets.len()))?;
        stderr.flush()?;
        drop(stderr);
        let mut answer = String::new();
        // End of input, or unreadable input, is not a yes.
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !is_yes(&answer) {
            eprintln!("Aborting!");
            return Ok(ExitCode::FAILURE);
        }
    }
    let targets: Vec<i32> = targets.into_keys().collect();
    tracing::info!(target: "pglock_cli", action = verb, pids = ?targets, "signalling");
    let signalled = if settings.roots {
        // Exactly the sessions listed, still holding a lock (a root blocker holds one).
        let query = pglock::locks()
            .pids(targets)
            .all_databases(settings.all_databases);
        match signal {
            Signal::Cancel => query.cancel(&mut *conn).await?,
            _ => query.terminate(&mut *conn).await?,
        }
    } else if settings.blocking {
        let query = query::blocked(settings, Some(targets), false);
        match signal {
            Signal::Cancel => query.cancel_blocking(&mut *conn).await?,
            _ => query.terminate_blocking(&mut *conn).await?,
        }
    } else {
        let query = query::locks(settings, Some(targets), false);
        match signal {
            Signal::Cancel => query.cancel(&mut *conn).await?,
            _ => query.terminate(&mut *conn).await?,
        }
    };
    tracing::info!(target: "pglock_cli", action = verb, pids = ?signalled, "signalled");
    let past = match signal {
        Signal::Cancel => "Canceled",
        _ => "Terminated",
    };
    if settings.json {
        let report = serde_json::json!({
            "action": verb.to_lowercase(),
            "blocking": settings.blocking,
            "roots": settings.roots,
            "pids": signalled,
        });
        println!("{report}");
    } else {
        println!("{past} {}", noun(signalled.len()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The columns of the confirmation: who each session is, what it is doing, and since when.
const SESSION_COLUMNS: &[&str] = &[
    "activity__id",
    "activity__database",
    "activity__application_name",
    "activity__state",
    "activity__duration",
    "activity__start",
    "activity__query",
];

/// The sessions about to be signalled, one line each, fitted to the terminal.
fn sessions(targets: &BTreeMap<i32, Activity>, style: Style) -> String {
    let columns: Vec<String> = SESSION_COLUMNS.iter().map(|&c| c.to_owned()).collect();
    let rows: Vec<Vec<Value>> = targets
        .values()
        .map(|activity| {
            SESSION_COLUMNS
                .iter()
                .map(|column| {
                    let field = column.trim_start_matches("activity__");
                    match attributes::activity_value(activity, field) {
                        // To the second: the duration next to it says the rest.
                        Value::Time(time) => Value::Text(attributes::iso_second(time)),
                        value => value,
                    }
                })
                .collect()
        })
        .collect();
    render::table(&columns, &rows, &vec![false; rows.len()], style)
}

/// `1 root blocker`, `2 root blockers`.
fn roots(n: usize) -> String {
    format!("{n} root blocker{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_and_yes_are_yes() {
        for yes in ["y", "Y", "yes", "YES", " yes\n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["", "n", "no", "ye", "yess", "y es", "sure", "\n"] {
            assert!(!is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn counts_read_as_django_pglock_writes_them() {
        assert_eq!(queries(1, false), "1 query");
        assert_eq!(queries(3, true), "3 blocking queries");
        assert_eq!(verb(Signal::Cancel), "Cancel");
        assert_eq!(roots(1), "1 root blocker");
        assert_eq!(roots(2), "2 root blockers");
    }
}
