//! `--cancel` / `--terminate`: count the backends, ask, signal, say how many were signalled.

use std::collections::BTreeSet;
use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use pglock::Signal;
use sqlx::PgConnection;

use crate::config::Settings;
use crate::{Failure, query};

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

/// Signal the backends the settings find, after asking unless `yes`.
///
/// The backends are counted from a listing with no limit (as django-pglock counts them); the
/// signal is then sent to those of them that still match, in one statement, and the number
/// reported is the number actually signalled. The command's own session, prepared
/// transactions and backends of other databases are never counted or signalled.
pub async fn run(
    conn: &mut PgConnection,
    settings: &Settings,
    signal: Signal,
) -> Result<ExitCode, Failure> {
    let targets: BTreeSet<i32> = if settings.blocking {
        query::blocked(settings, None, false)
            .fetch(&mut *conn)
            .await?
            .into_iter()
            .filter(|pair| pair.blocking_pid != 0 && pair.blocking.is_some())
            .map(|pair| pair.blocking_pid)
            .collect()
    } else {
        query::locks(settings, None, false)
            .fetch(&mut *conn)
            .await?
            .into_iter()
            .filter(|lock| lock.pid != 0 && lock.activity.is_some())
            .map(|lock| lock.pid)
            .collect()
    };
    let verb = verb(signal);
    if targets.is_empty() {
        eprintln!(
            "No {}queries to {}.",
            if settings.blocking { "blocking " } else { "" },
            verb.to_lowercase()
        );
        return Ok(ExitCode::FAILURE);
    }
    if !settings.yes {
        eprint!(
            "{verb} {}? (y/[n]) ",
            queries(targets.len(), settings.blocking)
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        // End of input, or unreadable input, is not a yes.
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !is_yes(&answer) {
            eprintln!("Aborting!");
            return Ok(ExitCode::FAILURE);
        }
    }
    let targets: Vec<i32> = targets.into_iter().collect();
    let signalled = if settings.blocking {
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
    let past = match signal {
        Signal::Cancel => "Canceled",
        _ => "Terminated",
    };
    if settings.json {
        let report = serde_json::json!({
            "action": verb.to_lowercase(),
            "blocking": settings.blocking,
            "pids": signalled,
        });
        println!("{report}");
    } else {
        println!("{past} {}", queries(signalled.len(), settings.blocking));
    }
    Ok(ExitCode::SUCCESS)
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
    }
}
