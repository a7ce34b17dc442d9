//! A real PgBouncer in front of a [`TestDb`], in transaction pooling mode.

use std::fmt::Write as _;
use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::TestDb;
use crate::user::{RunAs, run_as, untraversable};

/// The environment variable naming the `pgbouncer` program to use instead of searching.
const PROGRAM_VAR: &str = "PGLOCK_PGBOUNCER";

/// Where Debian installs it (not on a normal user's `PATH`).
const DEBIAN_PROGRAM: &str = "/usr/sbin/pgbouncer";

/// The first version that tracks protocol-level prepared statements in transaction pooling
/// (`max_prepared_statements`).
const PREPARED_STATEMENTS_SINCE: (u32, u32, u32) = (1, 21, 0);

/// How long a starting PgBouncer may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How many ports to try when the one picked was taken in the meantime.
const START_ATTEMPTS: u32 = 5;

/// Stops the PgBouncer `$2` and removes its directory `$3` once the test process `$1` is gone,
/// in case it died without running [`PgBouncer`]'s `Drop` (killed by a signal or a test
/// timeout). Checks that `$2` is still a pgbouncer, so a reused pid is left alone. Exits at once
/// when the bouncer goes first (dropped: `Drop` removed the directory).
const WATCHDOG_SCRIPT: &str = r#"
test=$1 bouncer=$2 dir=$3
while kill -0 "$test" 2>/dev/null && kill -0 "$bouncer" 2>/dev/null; do sleep 0.5; done
kill -0 "$test" 2>/dev/null && exit 0
if grep -q pgbouncer "/proc/$bouncer/cmdline" 2>/dev/null; then kill -9 "$bouncer" 2>/dev/null; fi
rm -rf "$dir"
"#;

/// A PgBouncer of its own, in `pool_mode = transaction`, in front of one [`TestDb`] database: the
/// setup where a client connection is lent a server session for one transaction at a time.
///
/// It runs as the same unprivileged user as the test cluster (when the tests run as root), on a
/// free port of 127.0.0.1, with its own configuration, user list and log in a temporary
/// directory. Dropping it (at the end of the test, or while a panic unwinds) kills it and
/// removes the directory; a watchdog process kills it if the test process dies without dropping
/// it.
///
/// The bouncer lists the test database under its own name, so [`PgBouncer::options`] only
/// differ from [`TestDb::options`] in the port (and in the statement cache, see
/// [`PgBouncer::tracks_prepared_statements`]).
#[derive(Debug)]
pub struct PgBouncer {
    child: Child,
    dir: PathBuf,
    port: u16,
    version: (u32, u32, u32),
    options: PgConnectOptions,
}

/// How to configure a [`PgBouncer`] (see [`PgBouncer::builder`]).
#[derive(Debug, Clone)]
pub struct PgBouncerBuilder {
    pool_size: u32,
    reset_prepared_statements: bool,
    settings: Vec<(String, String)>,
}

impl PgBouncerBuilder {
    /// Server connections per database and user (`default_pool_size`). Default 2. With 1, every
    /// client's transactions run on the same server session, one after another.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }

    /// Whether to make sqlx usable inside transactions on a PgBouncer that does not track
    /// prepared statements (before 1.21): `DEALLOCATE ALL` after every transaction, and a client
    /// statement cache of 0. Default true. Turn it off to see PgBouncer's own defaults. Has no
    /// effect on versions that track prepared statements (`max_prepared_statements` is set
    /// instead).
    pub fn reset_prepared_statements(mut self, reset: bool) -> Self {
        self.reset_prepared_statements = reset;
        self
    }

    /// One more `[pgbouncer]` setting, written last (so it wins over the defaults).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the PgBouncer in front of `db` and waits until it listens.
    ///
    /// # Panics
    ///
    /// When `pgbouncer` is not installed (saying how to install it), or it does not start (with
    /// its log).
    pub async fn start(self, db: &TestDb) -> PgBouncer {
        let options = db.options();
        let database = db.name().to_owned();
        let url = db.url().to_owned();
        match tokio::task::spawn_blocking(move || start(&self, &url, &database, options)).await {
            Ok(bouncer) => bouncer,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("pglock-tests: starting pgbouncer failed: {error}"),
            },
        }
    }
}

impl PgBouncer {
    /// A PgBouncer with two server connections, in transaction pooling mode; see
    /// [`PgBouncerBuilder`] for the rest.
    pub fn builder() -> PgBouncerBuilder {
        PgBouncerBuilder {
            pool_size: 2,
            reset_prepared_statements: true,
            settings: Vec::new(),
        }
    }

    /// Starts one with the defaults of [`PgBouncer::builder`].
    ///
    /// # Panics
    ///
    /// See [`PgBouncerBuilder::start`].
    pub async fn start(db: &TestDb) -> PgBouncer {
        Self::builder().start(db).await
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its version, from `pgbouncer --version`.
    pub fn version(&self) -> (u32, u32, u32) {
        self.version
    }

    /// Whether this version tracks protocol-level prepared statements in transaction pooling
    /// (1.21 and later, with `max_prepared_statements`, which is then set).
    ///
    /// When it does not, sqlx's prepared statements (every query with bound parameters) only
    /// work inside a transaction, and only with the reset this builder configures by default:
    /// outside a transaction, sqlx parses a statement and binds it in two separate
    /// request/response cycles, which PgBouncer may send to different server sessions.
    pub fn tracks_prepared_statements(&self) -> bool {
        self.version >= PREPARED_STATEMENTS_SINCE
    }

    /// Connect options for the test database through this bouncer.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A new client connection through the bouncer (not a server session of its own).
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "pglock-tests: cannot connect through pgbouncer on port {}: {e}{}",
                    self.port,
                    self.log_tail()
                )
            })
    }

    /// A pool of up to `max_connections` client connections through the bouncer.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn pool(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.options())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "pglock-tests: cannot connect through pgbouncer on port {}: {e}{}",
                    self.port,
                    self.log_tail()
                )
            })
    }

    /// The end of PgBouncer's log, for messages.
    pub fn log_tail(&self) -> String {
        let log = self.dir.join("pgbouncer.log");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "\n--- {} ---\n{}",
            log.display(),
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts it (blocking): configuration files, process, watchdog, wait until it listens.
fn start(
    builder: &PgBouncerBuilder,
    db_url: &str,
    database: &str,
    db_options: PgConnectOptions,
) -> PgBouncer {
    let program = program();
    let version = version(&program);
    let user = run_as();
    let dir = work_dir(user.as_ref());
    let server =
        url::Url::parse(db_url).unwrap_or_else(|e| panic!("pglock-tests: bad database URL: {e}"));
    let tracks = version >= PREPARED_STATEMENTS_SINCE;

    let username = if server.username().is_empty() {
        "postgres".to_owned()
    } else {
        server.username().to_owned()
    };
    let mut userlist = format!("\"{}\" \"\"\n", username.replace('"', "\"\""));
    if let Some(password) = server.password() {
        // The client-side password, in case clients send one; the server side is in [databases].
        userlist = format!(
            "\"{}\" \"{}\"\n",
            username.replace('"', "\"\""),
            password.replace('"', "\"\"")
        );
    }
    write(&dir.join("userlist.txt"), &userlist, user.as_ref());

    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        let config = config(builder, &server, database, &username, port, &dir, tracks);
        let ini = dir.join("pgbouncer.ini");
        write(&ini, &config, user.as_ref());
        let log_start = std::fs::metadata(dir.join("pgbouncer.log")).map_or(0, |meta| meta.len());

        let mut command = Command::new(&program);
        command
            .arg(&ini)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        if let Some(user) = &user {
            command.uid(user.uid).gid(user.gid).env("HOME", &dir);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "pglock-tests: cannot run {} {} as {}: {e}",
                program.display(),
                ini.display(),
                user.as_ref().map_or("ourselves", |user| user.name.as_str())
            )
        });
        spawn_watchdog(child.id(), &dir);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = log_since(&dir.join("pgbouncer.log"), log_start);
                if tail.contains("Address already in use") && attempt < START_ATTEMPTS {
                    break;
                }
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "pglock-tests: pgbouncer exited ({status}) while starting with this \
                     configuration:\n{config}\n--- pgbouncer.log ---\n{tail}"
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let mut options = db_options.port(port);
                if !tracks && builder.reset_prepared_statements {
                    options = options.statement_cache_capacity(0);
                }
                return PgBouncer {
                    child,
                    dir,
                    port,
                    version,
                    options,
                };
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let tail = log_since(&dir.join("pgbouncer.log"), log_start);
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "pglock-tests: pgbouncer did not listen on port {port} within \
                     {START_TIMEOUT:?}\n--- pgbouncer.log ---\n{tail}"
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }
    unreachable!("the last attempt panics")
}

/// The `pgbouncer.ini` text.
fn config(
    builder: &PgBouncerBuilder,
    server: &url::Url,
    database: &str,
    username: &str,
    port: u16,
    dir: &Path,
    tracks_prepared_statements: bool,
) -> String {
    let host = server.host_str().unwrap_or("127.0.0.1");
    let server_port = server.port().unwrap_or(5432);
    let mut connstr = format!(
        "host={} port={server_port} dbname={} user={}",
        quote(host),
        quote(database),
        quote(username)
    );
    if let Some(password) = server.password() {
        let _ = write!(connstr, " password={}", quote(password));
    }
    let mut text = format!(
        "[databases]\n\
         {database} = {connstr}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = 200\n\
         auth_type = trust\n\
         auth_file = {auth}\n\
         admin_users = {username}\n\
         stats_users = {username}\n\
         logfile = {log}\n\
         ; sqlx sends extra_float_digits at startup, which PgBouncer does not track.\n\
         ignore_startup_parameters = extra_float_digits\n",
        pool_size = builder.pool_size,
        auth = dir.join("userlist.txt").display(),
        log = dir.join("pgbouncer.log").display(),
    );
    if tracks_prepared_statements {
        text.push_str("max_prepared_statements = 200\n");
    } else if builder.reset_prepared_statements {
        // Forget every prepared statement when a server session goes back to the pool, so the
        // next client's `sqlx_s_1` does not collide with this one's (42P05). Unlike DISCARD ALL
        // it keeps settings and advisory locks, so what the tests observe is PgBouncer's own
        // behaviour.
        text.push_str("server_reset_query = DEALLOCATE ALL\nserver_reset_query_always = 1\n");
    }
    for (name, value) in &builder.settings {
        let _ = writeln!(text, "{name} = {value}");
    }
    text
}

/// A libpq connection-string value, quoted.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The `pgbouncer` program: `PGLOCK_PGBOUNCER`, else `PATH`, else Debian's `/usr/sbin`.
fn program() -> PathBuf {
    if let Some(program) = std::env::var_os(PROGRAM_VAR).filter(|p| !p.is_empty()) {
        let program = PathBuf::from(program);
        if !program.is_file() {
            panic!(
                "pglock-tests: {PROGRAM_VAR}={} is not a file. Fix: point it at the `pgbouncer` \
                 program, or unset it to use the one on PATH or at {DEBIAN_PROGRAM} (scripts/test \
                 installs it with apt-get when it can; else `apt-get install -y pgbouncer`).",
                program.display()
            );
        }
        return program;
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("pgbouncer"))
            .find(|program| program.is_file())
    });
    if let Some(program) = on_path {
        return program;
    }
    if Path::new(DEBIAN_PROGRAM).is_file() {
        return PathBuf::from(DEBIAN_PROGRAM);
    }
    panic!(
        "pglock-tests: the PgBouncer tests need `pgbouncer`, which is not installed (looked in \
         {PROGRAM_VAR}, on PATH and at {DEBIAN_PROGRAM}). Fix: run scripts/test, which installs \
         it with apt-get when it can; or `apt-get install -y pgbouncer` (Debian/Ubuntu; \
         elsewhere your system's package); or set {PROGRAM_VAR} to its path."
    )
}

/// `pgbouncer --version`'s "PgBouncer 1.18.0" as numbers.
fn version(program: &Path) -> (u32, u32, u32) {
    let output = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "pglock-tests: cannot run {} --version: {e}",
                program.display()
            )
        });
    let text = String::from_utf8_lossy(&output.stdout);
    parse_version(&text).unwrap_or_else(|| {
        panic!(
            "pglock-tests: cannot read a version from `{} --version`: {text:?}",
            program.display()
        )
    })
}

/// The first `x.y.z` after "PgBouncer " in `text`.
fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = text.split_once("PgBouncer ")?.1;
    let word = rest.split_whitespace().next()?;
    let mut parts = word.split('.').map(|part| {
        let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// A new directory for one bouncer, that the server user can enter and owns.
fn work_dir(user: Option<&RunAs>) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let tmp = std::env::temp_dir();
    let base = if untraversable(&tmp, user).is_none() {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    let dir = base.join(format!(
        "pglock-bouncer-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot create {}: {e}", dir.display()));
    if let Some(user) = user {
        chown(&dir, Some(user.uid), Some(user.gid))
            .unwrap_or_else(|e| panic!("pglock-tests: cannot chown {}: {e}", dir.display()));
    }
    dir
}

/// Writes a file the bouncer's user owns.
fn write(path: &Path, contents: &str, user: Option<&RunAs>) {
    std::fs::write(path, contents)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot write {}: {e}", path.display()));
    if let Some(user) = user {
        let _ = chown(path, Some(user.uid), Some(user.gid));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("pglock-tests: cannot bind a TCP port on 127.0.0.1: {e}"))
}

/// The log written since byte `from`.
fn log_since(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// Starts the detached watchdog (see [`WATCHDOG_SCRIPT`]). It is never waited for: it may
/// outlive this process by design, and init reaps it.
fn spawn_watchdog(bouncer: u32, dir: &Path) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg(WATCHDOG_SCRIPT)
        .arg("pglock-bouncer-watchdog")
        .arg(std::process::id().to_string())
        .arg(bouncer.to_string())
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_line() {
        let text = "PgBouncer 1.18.0\nlibevent 2.1.12-stable\n";
        assert_eq!(parse_version(text), Some((1, 18, 0)));
        assert_eq!(parse_version("PgBouncer 1.24.1"), Some((1, 24, 1)));
        assert_eq!(parse_version("nothing"), None);
        assert!(parse_version("PgBouncer 1.21.0").unwrap() >= PREPARED_STATEMENTS_SINCE);
    }

    #[test]
    fn quotes_connection_string_values() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote(r"it's\"), r"'it\'s\\'");
    }
}
