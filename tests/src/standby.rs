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
///
/// `pg_basebackup` comes from the primary's build if it has one, else from `PATH` or Debian's
/// `/usr/lib/postgresql/<version>/bin`, as long as it is of the server's major version or newer
/// (it refuses newer servers). The relocatable builds of `scripts/pg-matrix` have none, and the
/// machine's may be older than the server: then the standby is made the way `pg_basebackup`
/// stands in for, from a copy of the primary's data directory taken while the primary is
/// stopped (cleanly: fast shutdown, then started again on the same port), with the same
/// `standby.signal` and `primary_conninfo` that `-R` writes. Sessions open on the primary are
/// ended then, so make the standby before connecting.
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
        let (binaries, primary_port, data) = (self.binaries(), self.port(), self.data_dir());
        let started = match pg_basebackup(&binaries, server_major(&data)) {
            Some(program) => {
                tokio::task::spawn_blocking(move || {
                    let (paths, user) = Server::directory("standby");
                    base_backup(&program, &binaries, &paths, user.as_ref(), primary_port);
                    let mut server = Server::stopped(binaries, paths, user, Vec::new());
                    server.start_on_a_free_port();
                    server
                })
                .await
            }
            None => {
                self.stop().await;
                let copied = tokio::task::spawn_blocking(move || {
                    let (paths, user) = Server::directory("standby");
                    cold_copy(&data, &paths, user.as_ref(), primary_port);
                    (paths, user)
                })
                .await;
                self.start().await;
                let (paths, user) = copied.expect("copying the primary's data directory");
                tokio::task::spawn_blocking(move || {
                    let mut server = Server::stopped(binaries, paths, user, Vec::new());
                    server.start_on_a_free_port();
                    server
                })
                .await
            }
        };
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
fn base_backup(
    program: &Path,
    binaries: &Binaries,
    paths: &Paths,
    user: Option<&RunAs>,
    port: u16,
) {
    let mut command = as_server_user(Command::new(program), paths, user);
    command
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
    run(command, user);
}

/// What `pg_basebackup -R` does, for a primary that is stopped: copy its data directory (a clean
/// shutdown leaves it consistent), then ask the copy to start as a standby streaming from the
/// primary on `port`.
fn cold_copy(primary_data: &Path, paths: &Paths, user: Option<&RunAs>, port: u16) {
    let mut copy = as_server_user(Command::new("cp"), paths, user);
    copy.arg("-a").arg(primary_data).arg(&paths.data);
    run(copy, user);
    let conninfo = format!("host=127.0.0.1 port={port} user=postgres");
    let auto_conf = paths.data.join("postgresql.auto.conf");
    let mut settings = std::fs::read_to_string(&auto_conf).unwrap_or_default();
    settings.push_str(&format!("primary_conninfo = '{conninfo}'\n"));
    for (file, contents) in [
        (auto_conf, settings),
        (paths.data.join("standby.signal"), String::new()),
    ] {
        std::fs::write(&file, contents)
            .unwrap_or_else(|e| panic!("pglock-tests: cannot write {}: {e}", file.display()));
        if let Some(user) = user {
            std::os::unix::fs::chown(&file, Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("pglock-tests: cannot chown {}: {e}", file.display()));
        }
    }
}

/// `command`, run as the server user in the standby's directory.
fn as_server_user(mut command: Command, paths: &Paths, user: Option<&RunAs>) -> Command {
    command.current_dir(&paths.dir).stdin(Stdio::null());
    if let Some(user) = user {
        std::os::unix::process::CommandExt::uid(&mut command, user.uid);
        std::os::unix::process::CommandExt::gid(&mut command, user.gid);
        command.env("HOME", &paths.dir);
    }
    command
}

/// Run `command` to completion, or panic with its output.
fn run(mut command: Command, user: Option<&RunAs>) {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "pglock-tests: cannot run {}: {e}",
            cluster::show(&command, user)
        )
    });
    if !output.status.success() {
        panic!(
            "pglock-tests: making the standby failed ({}): {}\n--- stderr ---\n{}",
            output.status,
            cluster::show(&command, user),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

/// The major version of the cluster in `data` (its `PG_VERSION` file: `13`, `17`).
fn server_major(data: &Path) -> u32 {
    let text = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    text.trim().parse().unwrap_or(u32::MAX)
}

/// A `pg_basebackup` that can back up a server of major version `major`: the build's own, else
/// the first of `PATH`'s and Debian's (newest first) whose version is `major` or newer.
fn pg_basebackup(binaries: &Binaries, major: u32) -> Option<PathBuf> {
    let own = binaries.program("pg_basebackup");
    if own.is_file() {
        return Some(own);
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pg_basebackup"))
            .find(|program| program.is_file())
    });
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|entry| Some(entry.ok()?.path().join("bin/pg_basebackup")))
                .filter(|program| program.is_file())
                .collect()
        })
        .unwrap_or_default();
    debian.sort_by_key(|program| std::cmp::Reverse(client_major(program)));
    on_path
        .into_iter()
        .chain(debian)
        .find(|program| client_major(program).is_some_and(|client| client >= major))
}

/// The major version a client program reports: `pg_basebackup (PostgreSQL) 15.13 (Debian ...)`
/// is 15.
fn client_major(program: &Path) -> Option<u32> {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split(") ").nth(1)?;
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
