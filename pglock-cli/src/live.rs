//! `pglock top`: the command's settings turned into the live view's (see `pglock_cli::top`).

use std::process::ExitCode;
use std::time::Duration;

use pglock_cli::top::{self, Options, Source, Theme};
use sqlx::PgConnection;

use crate::config::Settings;
use crate::{Failure, duration, query};

/// The refresh interval, when the command is `top`; what does not apply to it is refused.
pub fn interval(top: Option<&str>, settings: &Settings) -> Result<Option<Duration>, String> {
    let Some(text) = top else {
        return Ok(None);
    };
    let interval = duration::parse(text).map_err(|e| format!("--interval: {e}"))?;
    if interval.is_zero() {
        return Err("--interval: the interval must be more than 0".to_owned());
    }
    let mut refused = Vec::new();
    if settings.json {
        refused.push("--json");
    }
    if settings.watch.is_some() {
        refused.push("--watch");
    }
    if settings.signal.is_some() {
        refused.push("--cancel/--terminate (press K or C in the view)");
    }
    if !refused.is_empty() {
        let verb = if refused.len() == 1 { "does" } else { "do" };
        return Err(format!(
            "pglock top is interactive: {} {verb} not apply",
            refused.join(", ")
        ));
    }
    Ok(Some(interval))
}

/// Run the view on the command's connection, listing what its filters select (all of it: the
/// view scrolls, so no limit).
pub async fn run(
    conn: PgConnection,
    settings: &Settings,
    interval: Duration,
) -> Result<ExitCode, Failure> {
    let source = Source::new(
        query::locks(settings, None, false),
        query::blocked(settings, None, false),
    );
    let options = Options {
        interval,
        theme: Theme::from_env(),
    };
    let ended = top::run(conn, source, options)
        .await
        .map_err(|error| Failure::Error(error.to_string()))?;
    Ok(match ended {
        top::Ended::Quit => ExitCode::SUCCESS,
        // As a shell reports a process the signal killed.
        top::Ended::Signal(number) => ExitCode::from(128 + number as u8),
    })
}
