//! Test harness for pglock: a real Postgres server for the whole test run, and a fresh database
//! per test.
//!
//! Advisory locks are scoped to a database, so giving every test its own database (see
//! [`TestDb`]) keeps tests from seeing each other's locks even though they run in parallel on one
//! server.
//!
//! # Which server
//!
//! [`server_url`] decides, once per process:
//!
//! - If `DATABASE_URL` is set (and not empty), that server is used. Each [`TestDb`] creates a
//!   database there and drops it again when the `TestDb` is dropped.
//! - Otherwise a throwaway cluster is started on first use and shared by every test process of
//!   the run (`cargo nextest` runs each test in its own process). It is keyed by the test
//!   runner's pid and lives in `pglock-test-<runner pid>/` under `$TMPDIR` if that is set, else
//!   under `/dev/shm` if that is a RAM disk of 2 GiB or more (databases are created an order of
//!   magnitude faster there), else under `/tmp`. A detached reaper process stops the server and
//!   removes the directory once the runner exits, even if tests panicked or aborted. (Run a test
//!   binary straight from a shell and the shell is the runner: the cluster stays until the shell
//!   exits, and later runs from that shell reuse it.)
//!
//! The Postgres binaries (`initdb` and `postgres`) are looked up in `PGLOCK_PG_BINDIR` if set,
//! else on `PATH`, else in Debian's `/usr/lib/postgresql/<version>/bin` (highest version).
//! When running as root, the cluster runs as the `postgres` user (or `nobody`), because `initdb`
//! refuses to run as root. It trusts every role except members of [`PASSWORD_REQUIRED_ROLE`],
//! who must give their password (so that a test can try a wrong one), and members of
//! [`TLS_REQUIRED_ROLE`], who must give it over TLS. TLS is on (`ssl = on`), with a server
//! certificate for `127.0.0.1`, `::1` and `localhost` signed by a throwaway authority whose
//! certificate [`server_ca_certificate`] names.
//!
//! # A server of a test's own
//!
//! A test that must stop or crash its server (to see what clients do when it goes away) takes a
//! [`PrivateCluster`] instead: a cluster of its own, on a port that survives restarts, removed
//! when it is dropped. It never touches the shared cluster or `DATABASE_URL`'s server.
//! [`PrivateCluster::with_settings`] starts one with settings of the test's own (such as
//! [`SHORT_KEEPALIVES`]), and [`PrivateCluster::standby`] gives it a streaming replica, a hot
//! standby in recovery ([`Standby`]).
//!
//! # A network that fails
//!
//! [`proxy::Proxy`] sits between a test's clients and any of these servers and can cut its
//! connections silently, close them, and resume.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let db = pglock_tests::TestDb::new().await;
//! let name: String = sqlx::query_scalar("SELECT current_database()::text")
//!     .fetch_one(db.pool())
//!     .await
//!     .unwrap();
//! assert_eq!(name, db.name());
//! # }
//! ```

#![warn(missing_docs)]

mod binaries;
mod cluster;
mod db;
pub mod pgbouncer;
mod private;
mod probe;
pub mod proxy;
mod standby;
mod tls;
mod user;

use std::sync::OnceLock;

pub use cluster::PASSWORD_REQUIRED_ROLE;
pub use db::TestDb;
pub use private::{KEEPALIVE_NOTICE, PrivateCluster, SHORT_KEEPALIVES};
pub use standby::Standby;
pub use tls::TLS_REQUIRED_ROLE;

/// The environment variable naming an existing server to test against instead of a throwaway
/// cluster.
const DATABASE_URL: &str = "DATABASE_URL";

/// The URL of the Postgres server for this whole test run.
///
/// This is `DATABASE_URL` if it is set and not empty; otherwise the URL of a throwaway cluster
/// that is started on first use and shared by every test process of this run (see the crate
/// docs). The answer is computed once per process.
///
/// This blocks (for a few seconds while the cluster starts), so call it from async code through
/// [`tokio::task::spawn_blocking`], as [`TestDb::new`] does.
///
/// # Panics
///
/// When no server can be had, with a message that says how to fix it (install Postgres, set
/// `PGLOCK_PG_BINDIR`, or set `DATABASE_URL`): the test calling it fails. There is no path on
/// which a test without a server passes (`tests/tests/harness.rs` checks this by running a
/// program that takes a [`TestDb`] with no usable server).
pub fn server_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| external_url().unwrap_or_else(cluster::shared_url))
        .clone()
}

/// The certificate of the authority that signed the throwaway cluster's server certificate, to
/// verify the server with (`sslrootcert`); starts the cluster if needed. `None` when the tests
/// run against `DATABASE_URL`'s server, whose TLS is its own business (a test that needs TLS
/// then takes a [`PrivateCluster`], see [`PrivateCluster::ca_certificate`]).
///
/// This blocks while the cluster starts, as [`server_url`] does.
pub fn server_ca_certificate() -> Option<std::path::PathBuf> {
    if external_url().is_some() {
        return None;
    }
    server_url();
    Some(cluster::shared_ca())
}

/// `DATABASE_URL`, if it is set and not empty.
fn external_url() -> Option<String> {
    std::env::var(DATABASE_URL)
        .ok()
        .filter(|url| !url.is_empty())
}
