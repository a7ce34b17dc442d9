//! What listens while the benchmark runs: nothing by default; with
//! `--subscriber-without-pglock`, a subscriber that takes other crates' INFO events but filters
//! pglock out; with the `metrics` feature, pglock's metrics into a no-op recorder.

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Install a stderr subscriber for every target but pglock.
pub fn subscriber_without_pglock() {
    let filter = Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("pglock", LevelFilter::OFF);
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    eprintln!("pglock-bench: a subscriber is installed, filtering pglock out");
}

/// With the `metrics` feature, install the facade's no-op recorder explicitly.
pub fn recorder() {
    #[cfg(feature = "metrics")]
    {
        metrics::set_global_recorder(metrics::NoopRecorder).expect("the only recorder");
        eprintln!("pglock-bench: pglock's metrics on, into a no-op recorder");
    }
}
