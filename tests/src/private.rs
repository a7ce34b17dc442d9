//! A Postgres server of one test's own, which the test may stop and start again.

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::cluster::{self, Paths, Ready};
use crate::user::{RunAs, run_as};

/// Settings for [`PrivateCluster::with_settings`] that make the server probe an idle client
/// connection's TCP peer after 1 s of silence, then every 1 s, and drop the connection after 2
/// probes go unanswered: the server ends the session of a client that vanished at the TCP
/// level (a host gone, a real network partition) about [`KEEPALIVE_NOTICE`] after it last heard
/// from it, instead of after Linux's default of over two hours (7200 s + 9 × 75 s).
///
/// The probes are answered by the peer's kernel, not by its program: through
/// [`Proxy`](crate::proxy::Proxy), whose sockets stay open during a [`cut`](crate::proxy::Proxy::cut),
/// the proxy's kernel answers them, so the server never notices a cut by itself; a test decides
/// when it does with [`close`](crate::proxy::Proxy::close).
pub const SHORT_KEEPALIVES: &[&str] = &[
    "tcp_keepalives_idle=1",
    "tcp_keepalives_interval=1",
    "tcp_keepalives_count=2",
];

/// How long after a client's last packet a server with [`SHORT_KEEPALIVES`] ends its session if
/// the client's host stops answering: idle + interval × count = 1 s + 1 s × 2 (plus the
/// scheduling slack of the kernel's timers).
pub const KEEPALIVE_NOTICE: Duration = Duration::from_secs(3);

/// How long a fast or immediate shutdown may take before the test fails.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A throwaway Postgres cluster for one test alone, separate from the shared one of
/// [`server_url`](crate::server_url), so that the test can stop and restart it (to see what
/// clients do when their server goes away) without disturbing any other test.
///
/// It is always a local cluster, even when `DATABASE_URL` is set: the test needs to control the
/// server process. It is started from the same binaries as the shared cluster (see the crate
/// docs), in `pglock-private-<pid>-<n>/` next to where the shared one would go, listens on
/// 127.0.0.1 only, and keeps its port across restarts, so a pool built on [`url`](Self::url)
/// reconnects by itself once the server is back.
///
/// Dropping it stops the server (immediate shutdown) and removes its directory; a detached
/// reaper does the same if the test process dies first. Initialising a cluster takes a few
/// seconds, so use one only where the shared server will not do.
///
/// ```no_run
/// # #[tokio::main(flavor = "multi_thread")]
/// # async fn main() {
/// let cluster = pglock_tests::PrivateCluster::new().await;
/// let pool = sqlx::PgPool::connect(cluster.url()).await.unwrap();
/// cluster.stop().await; // fast shutdown: every session is terminated
/// assert!(sqlx::query("SELECT 1").execute(&pool).await.is_err());
/// cluster.start().await; // same port: the pool reconnects
/// sqlx::query("SELECT 1").execute(&pool).await.unwrap();
/// # }
/// ```
pub struct PrivateCluster {
    url: String,
    port: u16,
    server: Arc<Mutex<Server>>,
}

/// The server process and what it takes to start it again.
pub(crate) struct Server {
    pub(crate) binaries: Binaries,
    pub(crate) paths: Paths,
    pub(crate) user: Option<RunAs>,
    pub(crate) port: u16,
    /// The postmaster, while it runs.
    child: Option<Child>,
    /// `name=value` settings given on its command line after [`cluster::SERVER_SETTINGS`].
    settings: Vec<String>,
}

/// How to stop the server: Postgres' shutdown modes.
#[derive(Clone, Copy, Debug)]
enum Shutdown {
    /// SIGINT: terminate every session, then stop cleanly.
    Fast,
    /// SIGQUIT: stop at once, as a crash would, and recover on the next start.
    Immediate,
}

impl PrivateCluster {
    /// Initialises a new cluster and starts it. Takes a few seconds.
    ///
    /// # Panics
    ///
    /// When the cluster cannot be created or started, with the failing command and the server
    /// log's tail (and, as for the shared cluster, how to fix a missing installation).
    pub async fn new() -> PrivateCluster {
        PrivateCluster::with_settings(&[]).await
    }

    /// Like [`new`](Self::new), with server settings of the test's own (`"name=value"`, passed
    /// as `-c` options, so they hold across restarts), such as [`SHORT_KEEPALIVES`].
    ///
    /// # Panics
    ///
    /// As [`new`](Self::new); a setting the server rejects stops it from starting.
    pub async fn with_settings(settings: &[&str]) -> PrivateCluster {
        let settings: Vec<String> = settings.iter().map(|&setting| setting.to_owned()).collect();
        let started = tokio::task::spawn_blocking(move || Server::create(settings)).await;
        PrivateCluster::running(started)
    }

    /// The cluster of a server started on a blocking thread.
    pub(crate) fn running(started: Result<Server, tokio::task::JoinError>) -> PrivateCluster {
        let server = started.unwrap_or_else(|error| match error.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(error) => panic!("pglock-tests: starting a private cluster failed: {error}"),
        });
        let port = server.port;
        PrivateCluster {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            port,
            server: Arc::new(Mutex::new(server)),
        }
    }

    /// The URL of the cluster's `postgres` database, as the superuser `postgres` (no password).
    /// It stays the same across [`stop`](Self::stop) and [`start`](Self::start).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The Postgres build the server runs.
    pub(crate) fn binaries(&self) -> Binaries {
        lock(&self.server).binaries.clone()
    }

    /// The cluster's data directory.
    pub(crate) fn data_dir(&self) -> std::path::PathBuf {
        lock(&self.server).paths.data.clone()
    }

    /// The certificate of the authority that signed the server's TLS certificate (for
    /// `sslrootcert`); TLS is on, as on the shared cluster (see the crate docs).
    pub fn ca_certificate(&self) -> std::path::PathBuf {
        crate::tls::ca_file(&lock(&self.server).paths)
    }

    /// Whether the server process is running (started and not stopped since).
    pub fn is_running(&self) -> bool {
        lock(&self.server).child.is_some()
    }

    /// Stops the server with a fast shutdown (as `pg_ctl stop -m fast`): every session is
    /// terminated, open transactions roll back, and the server exits cleanly. Returns once the
    /// server process has exited. Does nothing if it is not running.
    ///
    /// # Panics
    ///
    /// When the server does not exit within a minute.
    pub async fn stop(&self) {
        self.blocking(|server| server.stop(Shutdown::Fast)).await;
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`): sessions are cut
    /// off without a goodbye, and the next [`start`](Self::start) runs crash recovery. Returns
    /// once the server process has exited. Does nothing if it is not running.
    ///
    /// # Panics
    ///
    /// When the server does not exit within a minute.
    pub async fn crash(&self) {
        self.blocking(|server| server.stop(Shutdown::Immediate))
            .await;
    }

    /// Starts the server again on the same port and data, and returns once it accepts
    /// connections. Does nothing if it is running.
    ///
    /// # Panics
    ///
    /// When it does not come up, with the server log's tail.
    pub async fn start(&self) {
        self.blocking(Server::start).await;
    }

    /// Runs `work` on the server from a blocking thread, so that waiting for the server process
    /// does not stall the test's runtime.
    pub(crate) async fn blocking(&self, work: impl FnOnce(&mut Server) + Send + 'static) {
        let server = self.server.clone();
        let done = tokio::task::spawn_blocking(move || work(&mut lock(&server))).await;
        if let Err(error) = done {
            match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("pglock-tests: controlling a private cluster failed: {error}"),
            }
        }
    }
}

impl std::fmt::Debug for PrivateCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateCluster")
            .field("url", &self.url)
            .field("running", &self.is_running())
            .finish()
    }
}

impl Drop for PrivateCluster {
    /// Stops the server (immediate shutdown) and removes the cluster's directory. Failures are
    /// printed, not raised; the reaper removes whatever is left once the test process exits.
    fn drop(&mut self) {
        let mut server = lock(&self.server);
        if server.child.is_some()
            && let Err(error) = server.try_stop(Shutdown::Immediate)
        {
            eprintln!("pglock-tests: could not stop a private cluster: {error}");
        }
        if let Err(error) = std::fs::remove_dir_all(&server.paths.dir) {
            eprintln!(
                "pglock-tests: could not remove the private cluster directory {}: {error}",
                server.paths.dir.display()
            );
        }
    }
}

/// The server, even if a panic while it was locked poisoned the mutex (its state is still
/// accurate: every change to it is one assignment).
fn lock(server: &Mutex<Server>) -> MutexGuard<'_, Server> {
    server
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Server {
    /// A new directory, initdb, and a running server on a free port.
    fn create(settings: Vec<String>) -> Server {
        let (paths, user) = Server::directory("private");
        let binaries = Binaries::find();
        cluster::initdb(&binaries, &paths, user.as_ref());
        let mut server = Server {
            binaries,
            paths,
            user,
            port: 0,
            child: None,
            settings,
        };
        server.start_on_a_free_port();
        server
    }

    /// A new, empty directory `pglock-<kind>-<pid>-<n>` for a server of this process, owned by
    /// the server user, which the reaper removes when this process exits.
    pub(crate) fn directory(kind: &str) -> (Paths, Option<RunAs>) {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let user = run_as();
        let base = cluster::temp_base(user.as_ref());
        let dir = base.join(format!(
            "pglock-{kind}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let paths = Paths {
            lock: dir.join("unused.lock"),
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            url: dir.join("url"),
            runner: dir.join("runner"),
            dir,
        };
        if paths.dir.exists() {
            // Left by an earlier process with our pid whose reaper has not run yet.
            let _ = std::fs::remove_dir_all(&paths.dir);
        }
        std::fs::create_dir(&paths.dir).unwrap_or_else(|e| {
            panic!("pglock-tests: cannot create {}: {e}", paths.dir.display());
        });
        // Whatever happens from here on, the server and the directory go away with this process.
        cluster::spawn_reaper(std::process::id(), &paths);
        if let Some(user) = &user {
            std::os::unix::fs::chown(&paths.dir, Some(user.uid), Some(user.gid)).unwrap_or_else(
                |e| {
                    panic!(
                        "pglock-tests: cannot chown {} to {}: {e}",
                        paths.dir.display(),
                        user.name
                    )
                },
            );
        }
        (paths, user)
    }

    /// A server on the data directory of `paths`, not started yet.
    pub(crate) fn stopped(
        binaries: Binaries,
        paths: Paths,
        user: Option<RunAs>,
        settings: Vec<String>,
    ) -> Server {
        Server {
            binaries,
            paths,
            user,
            port: 0,
            child: None,
            settings,
        }
    }

    /// Start the server on a port that is free, and keep that port.
    pub(crate) fn start_on_a_free_port(&mut self) {
        for attempt in 1.. {
            self.port = cluster::free_port();
            match self.try_start() {
                Ok(()) => break,
                // Taken since we picked it: try another.
                Err((_, true)) if attempt < 5 => continue,
                Err((message, _)) => panic!("{message}"),
            }
        }
    }

    /// Start the server on its port, or panic saying why it did not come up.
    fn start(&mut self) {
        if let Err((message, _)) = self.try_start() {
            panic!("{message}");
        }
    }

    /// Start the server on its port. `Err` carries the message and whether the port was taken.
    fn try_start(&mut self) -> Result<(), (String, bool)> {
        if self.child.is_some() {
            return Ok(());
        }
        let user = self.user.as_ref();
        let log = cluster::log_file(&self.paths, user);
        let log_start = log.metadata().map_or(0, |meta| meta.len());
        let mut command = cluster::server_command(&self.binaries, "postgres", &self.paths, user);
        command
            .arg("-D")
            .arg(&self.paths.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            // TCP only: the socket directory's path could be too long for a Unix socket.
            .args(["-c", "unix_socket_directories="]);
        for setting in cluster::SERVER_SETTINGS {
            command.args(["-c", setting]);
        }
        for setting in &self.settings {
            command.args(["-c", setting]);
        }
        let stderr = log.try_clone().expect("duplicate the log file handle");
        std::os::unix::process::CommandExt::process_group(command.stdout(log).stderr(stderr), 0);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "pglock-tests: cannot run {}: {e}{}",
                cluster::show(&command, user),
                cluster::hint(&self.binaries, user)
            )
        });
        match cluster::wait_ready(&mut child, self.port) {
            Ready::Yes => {
                self.child = Some(child);
                Ok(())
            }
            Ready::Exited(status) => {
                let tail = cluster::log_tail(&self.paths.log, log_start);
                let port_taken = tail.contains("already in use")
                    || tail.contains("could not create any TCP/IP sockets");
                Err((
                    format!(
                        "pglock-tests: the private cluster's server exited ({status}) while \
                         starting: {}\n--- {} ---\n{tail}{}",
                        cluster::show(&command, user),
                        self.paths.log.display(),
                        cluster::hint(&self.binaries, user),
                    ),
                    port_taken,
                ))
            }
            Ready::TimedOut(last_error) => {
                signal(&child, "-QUIT");
                let _ = child.wait();
                Err((
                    format!(
                        "pglock-tests: the private cluster's server did not accept connections \
                         within {:?} (last attempt: {last_error})\n--- {} ---\n{}",
                        cluster::START_TIMEOUT,
                        self.paths.log.display(),
                        cluster::log_tail(&self.paths.log, log_start),
                    ),
                    false,
                ))
            }
        }
    }

    /// Stop the server, or panic saying why it did not stop.
    fn stop(&mut self, how: Shutdown) {
        if let Err(error) = self.try_stop(how) {
            panic!("pglock-tests: {error}");
        }
    }

    /// Signal the postmaster and wait for it to exit.
    fn try_stop(&mut self, how: Shutdown) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        signal(
            &child,
            match how {
                Shutdown::Fast => "-INT",
                Shutdown::Immediate => "-QUIT",
            },
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => {
                    signal(&child, "-KILL");
                    let _ = child.wait();
                    return Err(format!(
                        "the private cluster's server did not stop ({how:?} shutdown) within \
                         {STOP_TIMEOUT:?}; killed it"
                    ));
                }
                Err(error) => return Err(format!("waiting for the server to stop: {error}")),
            }
        }
    }
}

/// Send a signal to a process we started (by its pid, never by name).
fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
}
