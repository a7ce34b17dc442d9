//! `-v`/`--verbose` and `RUST_LOG`: what the command does, on stderr.
//!
//! Nothing is installed without either, so the command's output stays as it was. `RUST_LOG`,
//! when set, is read as comma-separated `target=level` directives (a bare level for every
//! target), as `tracing_subscriber`'s `Targets` parses them; otherwise `-v` shows where the
//! command connects, the queries it sends and the sessions it signals, `-vv` pglock's and
//! sqlx's debug events, and `-vvv` everything.
//!
//! No event carries a password: the command reports where it connects by the scrubbed form it
//! prints in errors, and sqlx's query events hold statements, whose values pglock always binds.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The filter for `verbose` `-v`s, or `RUST_LOG`'s.
fn filter(verbose: u8, rust_log: Option<&str>) -> Option<Targets> {
    if let Some(directives) = rust_log.filter(|directives| !directives.trim().is_empty()) {
        match directives.parse() {
            Ok(filter) => return Some(filter),
            Err(error) => eprintln!("pglock: ignoring RUST_LOG ({error})"),
        }
    }
    let filter = Targets::new();
    Some(match verbose {
        0 => return None,
        1 => filter
            .with_target("pglock_cli", LevelFilter::INFO)
            .with_target("pglock", LevelFilter::INFO)
            .with_target("sqlx::query", LevelFilter::DEBUG),
        2 => filter
            .with_target("pglock_cli", LevelFilter::DEBUG)
            .with_target("pglock", LevelFilter::DEBUG)
            .with_target("sqlx", LevelFilter::DEBUG),
        _ => filter.with_default(LevelFilter::TRACE),
    })
}

/// Install the stderr subscriber, if `-v` or `RUST_LOG` asks for one.
pub fn init(verbose: u8) {
    let Some(filter) = filter(verbose, std::env::var("RUST_LOG").ok().as_deref()) else {
        return;
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(true);
    // Another subscriber set first (none is) would keep its place.
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(filter)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_and_rust_log() {
        assert!(filter(0, None).is_none(), "quiet by default");
        let one = filter(1, None).unwrap();
        assert!(one.would_enable("pglock_cli", &tracing::Level::INFO));
        assert!(one.would_enable("sqlx::query", &tracing::Level::DEBUG));
        assert!(!one.would_enable("pglock", &tracing::Level::DEBUG));
        assert!(
            filter(2, None)
                .unwrap()
                .would_enable("pglock", &tracing::Level::DEBUG)
        );
        let env = filter(0, Some("pglock=trace")).unwrap();
        assert!(env.would_enable("pglock", &tracing::Level::TRACE));
        assert!(!env.would_enable("sqlx::query", &tracing::Level::ERROR));
    }
}
