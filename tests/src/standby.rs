//! A hot standby: a streaming replica of a [`PrivateCluster`], for tests of what locks do on a
//! server in recovery.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection};

use crate::PrivateCluster;
use crate::binaries::Binaries;
use crate::cluster::{self, Paths};
use crate::private::Server;
use crate::user::RunAs;

/// How long a new standby may take to replay up to its primary.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);

/// A hot standby of a [`PrivateCluster`]: a streaming replica made with `pg_basebackup -R`
/// from the primary, started on a port of its own, read-only and in recovery
/// (`pg_is_in_recovery()` is true), with sessions of its own that take locks of its own.
///
/// It runs as the same user and from the same build as its primary, listens on 127.0.0.1, and
/// streams over the primary's default `replication` lines of `pg_hba.conf` (initdb writes them,
/// trusting local replication connections), so the primary's configuration is not changed.
/// `pg_basebackup` comes from the primary's build if it has one, else from `PATH`, else from
/// Debian's newest `/usr/lib/postgresql/<version>/bin` (a newer `pg_basebackup` backs up older
/// servers: the relocatable builds of `scripts/pg-matrix` have none).
///
/// Dropping it stops the standby and removes its directory, as a [`PrivateCluster`] does; stop
/// the standby before its primary if the test cares about a clean log.
///
/// ```no_run
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() {
/// let primary = pglock_tests::PrivateCluster::new().await;
/// let standby = primary.standby().await;
/// let pool = sqlx::PgPool::connect(standby.url()).await.unwrap();
/// let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
///     .fetch_one(&pool)
///     .await
///     .unwrap();
/// assert!(recovering);
/// # }
/// ```
pub struct Standby {
    cluster: PrivateCluster,
    primary_url: String,
}

impl PrivateCluster {
    /// A new hot standby of this cluster, streaming from it; returns once the standby accepts
    /// connections, is in recovery, and has replayed everything the primary had written when
    /// this was called. Takes a few seconds.
    ///
    /// # Panics
    ///
    /// When `pg_basebackup` cannot be found or fails, or the standby does not start, with the
    /// failing command and its output or the standby's log.
    pub async fn standby(&self) -> Standby {
        let (binaries, primary_port) = (self.binaries(), self.port());
        let started = tokio::task::spawn_blocking(move || {
            let (paths, user) = Server::directory("standby");
            base_backup(&binaries, &paths, user.as_ref(), primary_port);
            let mut server = Server::stopped(binaries, paths, user, Vec::new());
            server.start_on_a_free_port();
            server
        })
        .await;
        let standby = Standby {
            cluster: PrivateCluster::running(started),
            primary_url: self.url().to_owned(),
        };
        let recovering: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&mut standby.connect().await)
            .await
            .expect("asking the standby whether it is in recovery");
        assert!(
            recovering,
            "pglock-tests: the standby on port {} is not in recovery",
            standby.port()
        );
        standby.catch_up().await;
        standby
    }
}

impl Standby {
    /// The URL of the standby's `postgres` database, as the superuser `postgres`.
    pub fn url(&self) -> &str {
        self.cluster.url()
    }

    /// The TCP port the standby listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// Waits until the standby has replayed everything its primary has written so far, so that
    /// what a test created on the primary (a database, a table) can be used on the standby.
    ///
    /// # Panics
    ///
    /// When either server cannot be reached, or the standby has not caught up within a minute.
    pub async fn catch_up(&self) {
        let mut primary = PgConnection::connect(&self.primary_url)
            .await
            .expect("connecting to the standby's primary");
        let target: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&mut primary)
            .await
            .expect("reading the primary's WAL position");
        let mut standby = self.connect().await;
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let replayed: bool = sqlx::query_scalar(
                "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false)",
            )
            .bind(&target)
            .fetch_one(&mut standby)
            .await
            .expect("reading the standby's replay position");
            if replayed {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "pglock-tests: the standby did not replay up to {target} within \
                 {CATCH_UP_TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn connect(&self) -> PgConnection {
        PgConnection::connect(self.url())
            .await
            .expect("connecting to the standby")
    }
}

impl std::fmt::Debug for Standby {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standby")
            .field("url", &self.url())
            .field("primary", &self.primary_url)
            .finish()
    }
}

/// `pg_basebackup -R` of the primary on `port` into `paths.data`, as the server user: a copy of
/// the cluster that starts as a standby streaming from it (`standby.signal` and
/// `primary_conninfo` are written by `-R`).
fn base_backup(binaries: &Binaries, paths: &Paths, user: Option<&RunAs>, port: u16) {
    let program = pg_basebackup(binaries);
    let mut command = Command::new(&program);
    command
        .current_dir(&paths.dir)
        .stdin(Stdio::null())
        .arg("-D")
        .arg(&paths.data)
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        // Write the standby's configuration; stream the WAL written meanwhile; do not wait for
        // a spread checkpoint; skip fsync (a throwaway copy).
        .args(["-R", "-X", "stream", "-c", "fast", "-N"]);
    if program.parent() == Some(binaries.bindir.as_path())
        && let Some(lib) = &binaries.libdir
    {
        command.env("LD_LIBRARY_PATH", lib);
    }
    if let Some(user) = user {
        std::os::unix::process::CommandExt::uid(&mut command, user.uid);
        std::os::unix::process::CommandExt::gid(&mut command, user.gid);
        command.env("HOME", &paths.dir);
    }
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "pglock-tests: cannot run {}: {e}",
            cluster::show(&command, user)
        )
    });
    if !output.status.success() {
        panic!(
            "pglock-tests: pg_basebackup failed ({}): {}\n--- stderr ---\n{}",
            output.status,
            cluster::show(&command, user),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// `pg_basebackup`: the build's own, else the first on `PATH`, else Debian's newest.
fn pg_basebackup(binaries: &Binaries) -> PathBuf {
    let own = binaries.program("pg_basebackup");
    if own.is_file() {
        return own;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pg_basebackup"))
            .find(|program| program.is_file())
    });
    let debian = || {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| Some(entry.ok()?.path().join("bin/pg_basebackup")))
            .filter(|program| program.is_file())
            .collect();
        found.sort_by_key(|program| major(program));
        found.pop()
    };
    on_path.or_else(debian).unwrap_or_else(|| {
        panic!(
            "pglock-tests: the standby tests need `pg_basebackup`, which is neither in {} nor on \
             PATH nor in /usr/lib/postgresql/*/bin. Fix: install the Postgres client programs \
             (`apt-get install -y postgresql-client`).",
            binaries.bindir.display()
        )
    })
}

/// The major version in `/usr/lib/postgresql/<major>/bin/...`, for sorting.
fn major(program: &Path) -> u32 {
    program
        .ancestors()
        .nth(2)
        .and_then(Path::file_name)
        .and_then(|name| name.to_str()?.parse().ok())
        .unwrap_or(0)
}
