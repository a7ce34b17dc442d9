//! The throwaway Postgres cluster shared by every test process of one test run.
//!
//! `cargo nextest` runs each test in its own process, and starting a cluster takes seconds, so
//! the processes share one: it is keyed by the test runner's pid (our parent: nextest, or cargo
//! under `cargo test`), which lives for the whole run. A lock file makes exactly one process
//! start it; the others wait for the lock and read the URL it wrote. A detached reaper process
//! stops the server and removes its directory once the runner has exited.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, chown};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binaries::Binaries;
use crate::probe::accepts_connections;
use crate::user::{RunAs, run_as, untraversable};

/// The RAM disk preferred for the cluster (see [`temp_base`]).
const RAM_DISK: &str = "/dev/shm";

/// The smallest RAM disk used for the cluster: 2 GiB, room for a couple of hundred test
/// databases (about 8 MB each) on top of the cluster itself.
const MIN_RAM_DISK_KIB: u64 = 2 * 1024 * 1024;

/// How long a starting server may take to accept connections.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How many ports to try when the one we picked was taken in the meantime.
const START_ATTEMPTS: u32 = 5;

/// Settings that make a disposable cluster fast, plus room for many parallel tests, and TLS
/// (with the certificates [`crate::tls`] puts in the data directory).
pub(crate) const SERVER_SETTINGS: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
    "ssl=on",
];

/// Waits for the test runner (`$1`) to exit, then stops the postmaster found in
/// `$2/data/postmaster.pid` (immediate shutdown) and removes `$2` and the lock file `$3`.
/// The postmaster pid is read only at the end, so one reaper covers every start attempt. A
/// postmaster that has exited but not been reaped yet (a zombie: its parent, the test process,
/// is gone and init may be slow) counts as stopped.
const REAPER_SCRIPT: &str = r#"
runner=$1 dir=$2 lock=$3
while kill -0 "$runner" 2>/dev/null; do sleep 0.5; done
pm=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
if [ -n "$pm" ] && { [ ! -d /proc/self ] || grep -q postgres "/proc/$pm/cmdline" 2>/dev/null; }; then
    kill -QUIT "$pm" 2>/dev/null
    i=0
    while kill -0 "$pm" 2>/dev/null && [ "$i" -lt 100 ] &&
        ! grep -q '^State:[[:space:]]*Z' "/proc/$pm/status" 2>/dev/null; do
        sleep 0.05
        i=$((i + 1))
    done
fi
rm -rf "$dir" "$lock"
"#;

/// The URL of this run's shared cluster, starting it if this is the first process to ask.
///
/// # Panics
///
/// When the cluster cannot be started, with the failing command and the server log's tail.
pub(crate) fn shared_url() -> String {
    let runner = runner();
    let user = run_as();
    let paths = Paths::new(runner, user.as_ref());

    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&paths.lock)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot open {}: {e}", paths.lock.display()));
    // Blocks while another test process of this run starts the cluster; released on return.
    lock.lock()
        .unwrap_or_else(|e| panic!("pglock-tests: cannot lock {}: {e}", paths.lock.display()));

    let identity = runner_identity(runner);
    if let Some(url) = running(&paths, &identity) {
        return url;
    }
    remove_stale(&paths);
    start(&paths, runner, &identity, user.as_ref())
}

/// The test runner the shared cluster belongs to.
fn runner() -> u32 {
    match std::os::unix::process::parent_id() {
        // Orphaned (the runner died, or there is none): a cluster of our own, reaped after us.
        1 => std::process::id(),
        parent => parent,
    }
}

/// The certificate authority's certificate of this run's shared cluster (which
/// [`shared_url`] starts).
pub(crate) fn shared_ca() -> PathBuf {
    crate::tls::ca_file(&Paths::new(runner(), run_as().as_ref()))
}

/// The files of one run's cluster.
pub(crate) struct Paths {
    /// `<tmp>/pglock-test-<runner pid>/`: everything below is removed by the reaper.
    pub(crate) dir: PathBuf,
    /// `<tmp>/pglock-test-<runner pid>.lock`, next to `dir`.
    pub(crate) lock: PathBuf,
    /// The data directory (`initdb -D`).
    pub(crate) data: PathBuf,
    /// The server's stderr.
    pub(crate) log: PathBuf,
    /// The URL, for the other test processes.
    pub(crate) url: PathBuf,
    /// Which runner process (pid and start time) the cluster belongs to.
    pub(crate) runner: PathBuf,
}

impl Paths {
    fn new(runner: u32, user: Option<&RunAs>) -> Paths {
        let base = temp_base(user);
        let dir = base.join(format!("pglock-test-{runner}"));
        Paths {
            lock: base.join(format!("pglock-test-{runner}.lock")),
            data: dir.join("data"),
            log: dir.join("postgres.log"),
            url: dir.join("url"),
            runner: dir.join("runner"),
            dir,
        }
    }
}

/// Where the cluster's directory goes. Every test process of a run must get the same answer, so
/// this depends only on things that do not change during a run.
///
/// - `$TMPDIR` when it is set: the user chose.
/// - Otherwise `/dev/shm` when it is a RAM disk of at least [`MIN_RAM_DISK_KIB`]: `CREATE
///   DATABASE`, the main cost of each test's setup, takes 10-15 ms there against 150-300 ms on
///   the disk of a busy machine, even with fsync off. Smaller ones (Docker's default is 64 MiB)
///   could fill up with test databases.
/// - Otherwise the temporary directory, or `/tmp` if the server's user cannot get through it
///   (say `TMPDIR` is under root's home).
pub(crate) fn temp_base(user: Option<&RunAs>) -> PathBuf {
    let tmpdir_set = std::env::var_os("TMPDIR").is_some_and(|dir| !dir.is_empty());
    let shm = Path::new(RAM_DISK);
    if !tmpdir_set && untraversable(shm, user).is_none() && is_big_ram_disk(shm) {
        return shm.to_path_buf();
    }
    let tmp = std::env::temp_dir();
    let Some(blocked) = untraversable(&tmp, user) else {
        return tmp;
    };
    let fallback = PathBuf::from("/tmp");
    if untraversable(&fallback, user).is_none() {
        return fallback;
    }
    let name = user.map_or("the server user", |user| user.name.as_str());
    panic!(
        "pglock-tests: the test cluster runs as `{name}`, which cannot enter {} (on the way to \
         the temporary directory {}), nor /tmp. Fix: set TMPDIR to a directory everyone can \
         traverse, or set DATABASE_URL to an existing server.",
        blocked.display(),
        tmp.display()
    )
}

/// Whether `dir` is a world-writable directory on a file system of at least
/// [`MIN_RAM_DISK_KIB`] (its size, not its free space, which changes as tests run).
fn is_big_ram_disk(dir: &Path) -> bool {
    let writable =
        std::fs::metadata(dir).is_ok_and(|meta| meta.is_dir() && meta.mode() & 0o002 != 0);
    if !writable {
        return false;
    }
    let Ok(output) = Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .stderr(Stdio::null())
        .output()
    else {
        return false;
    };
    // POSIX format: a header, then "filesystem 1024-blocks used available capacity mounted-on".
    let size_kib = String::from_utf8_lossy(&output.stdout)
        .lines()
        .nth(1)
        .and_then(|line| line.split_whitespace().nth(1).map(str::to_owned))
        .and_then(|size| size.parse::<u64>().ok());
    output.status.success() && size_kib.is_some_and(|size| size >= MIN_RAM_DISK_KIB)
}

/// Identifies the runner process across pid reuse: its pid and start time.
fn runner_identity(runner: u32) -> String {
    let stat = std::fs::read_to_string(format!("/proc/{runner}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; the start time is field 22 overall.
    let start_time = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .unwrap_or("?");
    format!("{runner} {start_time}\n")
}

/// The URL of this run's cluster if it is already up and answering.
fn running(paths: &Paths, identity: &str) -> Option<String> {
    if std::fs::read_to_string(&paths.runner).ok()? != identity {
        return None; // Left by an earlier runner that had our pid.
    }
    let url = std::fs::read_to_string(&paths.url).ok()?;
    let port = url::Url::parse(&url).ok()?.port()?;
    accepts_connections(port).ok().map(|()| url)
}

/// Stops the server of a leftover directory (a crashed run, or an earlier runner with our pid
/// whose reaper died) and removes the directory.
fn remove_stale(paths: &Paths) {
    if !paths.dir.exists() {
        return;
    }
    if let Some(pid) = postmaster_pid(&paths.data) {
        let is_postgres = std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(8).any(|w| w == b"postgres"));
        if is_postgres && alive(pid) {
            let _ = Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    std::fs::remove_dir_all(&paths.dir).unwrap_or_else(|e| {
        panic!(
            "pglock-tests: cannot remove the stale test cluster directory {}: {e}. Fix: remove \
             it by hand.",
            paths.dir.display()
        )
    });
}

/// Whether process `pid` exists and has not exited; a zombie (exited, not yet reaped by its
/// parent) counts as gone.
pub(crate) fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        !status
            .lines()
            .any(|line| line.starts_with("State:") && line.contains('Z'))
    })
}

/// The postmaster's pid: the first line of `postmaster.pid` in the data directory.
pub(crate) fn postmaster_pid(data: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Creates the directory, runs initdb, starts the server, and returns its URL.
fn start(paths: &Paths, runner: u32, identity: &str, user: Option<&RunAs>) -> String {
    std::fs::create_dir(&paths.dir).unwrap_or_else(|e| {
        panic!("pglock-tests: cannot create {}: {e}", paths.dir.display());
    });
    // From here on, the directory and the lock file go away with the runner whatever happens.
    spawn_reaper(runner, paths);
    let binaries = Binaries::find();
    if let Some(user) = user {
        chown(&paths.dir, Some(user.uid), Some(user.gid)).unwrap_or_else(|e| {
            panic!(
                "pglock-tests: cannot chown {} to {}: {e}",
                paths.dir.display(),
                user.name
            );
        });
    }

    initdb(&binaries, paths, user);
    let port = start_server(&binaries, paths, user);

    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    write_file(&paths.runner, identity);
    write_file(&paths.url, &url);
    url
}

/// Starts the detached reaper (own process group, no stdio, so the runner neither waits for it
/// nor kills it with the tests).
#[expect(
    clippy::zombie_processes,
    reason = "the reaper outlives this test process by design; init reaps it"
)]
pub(crate) fn spawn_reaper(runner: u32, paths: &Paths) {
    Command::new("sh")
        .arg("-c")
        .arg(REAPER_SCRIPT)
        .arg("pglock-test-reaper")
        .arg(runner.to_string())
        .arg(&paths.dir)
        .arg(&paths.lock)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("pglock-tests: cannot start the cleanup process (sh): {e}"));
}

/// A command for one of the server programs, as the server user, in the cluster directory.
pub(crate) fn server_command(
    binaries: &Binaries,
    program: &str,
    paths: &Paths,
    user: Option<&RunAs>,
) -> Command {
    let mut command = Command::new(binaries.program(program));
    command.current_dir(&paths.dir).stdin(Stdio::null());
    if let Some(lib) = &binaries.libdir {
        let mut path = lib.clone().into_os_string();
        if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|old| !old.is_empty()) {
            path.push(":");
            path.push(old);
        }
        command.env("LD_LIBRARY_PATH", path);
    }
    if let Some(user) = user {
        command.uid(user.uid).gid(user.gid).env("HOME", &paths.dir);
    }
    command
}

/// The role whose members must give their password: everyone else is trusted. Tests of a wrong
/// password put a role of theirs in it.
pub const PASSWORD_REQUIRED_ROLE: &str = "pglock_password_required";

/// `initdb` with trust auth (except for members of [`PASSWORD_REQUIRED_ROLE`] and
/// [`crate::TLS_REQUIRED_ROLE`]) and no fsync, and TLS certificates.
pub(crate) fn initdb(binaries: &Binaries, paths: &Paths, user: Option<&RunAs>) {
    let mut command = server_command(binaries, "initdb", paths, user);
    command.arg("-D").arg(&paths.data).args([
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-locale",
        "-N",
    ]);
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "pglock-tests: cannot run {}: {e}{}",
            show(&command, user),
            hint(binaries, user)
        )
    });
    if !output.status.success() {
        panic!(
            "pglock-tests: initdb failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}{}",
            output.status,
            show(&command, user),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            hint(binaries, user),
        );
    }
    require_passwords(&paths.data.join("pg_hba.conf"));
    crate::tls::require_tls(&paths.data.join("pg_hba.conf"));
    crate::tls::install_certificates(paths, user);
}

/// Put lines first in `pg_hba.conf` that ask members of [`PASSWORD_REQUIRED_ROLE`] for a
/// password (the role need not exist yet: membership is checked when a client connects).
fn require_passwords(hba: &Path) {
    let trusted = std::fs::read_to_string(hba)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot read {}: {e}", hba.display()));
    let role = PASSWORD_REQUIRED_ROLE;
    let lines = format!(
        "# pglock-tests: members of {role} give their password (tests of a wrong one).\n\
         local all +{role} scram-sha-256\n\
         host all +{role} 127.0.0.1/32 scram-sha-256\n\
         host all +{role} ::1/128 scram-sha-256\n"
    );
    std::fs::write(hba, lines + &trusted)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot write {}: {e}", hba.display()));
}

/// Starts `postgres` on a free port of 127.0.0.1 and waits until it accepts connections.
/// Returns the port.
fn start_server(binaries: &Binaries, paths: &Paths, user: Option<&RunAs>) -> u16 {
    let socket_dir = if paths.dir.as_os_str().len() < 90 {
        paths.dir.to_string_lossy().into_owned()
    } else {
        String::new() // Too long for a socket path: TCP only.
    };
    for attempt in 1..=START_ATTEMPTS {
        let port = free_port();
        let log = log_file(paths, user);
        let log_start = log.metadata().map_or(0, |meta| meta.len());
        let mut command = server_command(binaries, "postgres", paths, user);
        command
            .arg("-D")
            .arg(&paths.data)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={socket_dir}"));
        for setting in SERVER_SETTINGS {
            command.args(["-c", setting]);
        }
        let stderr = log.try_clone().expect("duplicate the log file handle");
        command.stdout(log).stderr(stderr).process_group(0);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "pglock-tests: cannot run {}: {e}{}",
                show(&command, user),
                hint(binaries, user)
            )
        });
        match wait_ready(&mut child, port) {
            Ready::Yes => return port,
            Ready::Exited(status) => {
                let tail = log_tail(&paths.log, log_start);
                let port_taken = tail.contains("already in use")
                    || tail.contains("could not create any TCP/IP sockets");
                if !(port_taken && attempt < START_ATTEMPTS) {
                    panic!(
                        "pglock-tests: the test server exited ({status}) while starting: {}\n--- {} ---\n{tail}{}",
                        show(&command, user),
                        paths.log.display(),
                        hint(binaries, user),
                    );
                }
            }
            Ready::TimedOut(last_error) => {
                let _ = Command::new("kill")
                    .args(["-QUIT", &child.id().to_string()])
                    .status();
                panic!(
                    "pglock-tests: the test server did not accept connections within {START_TIMEOUT:?} \
                     (last attempt: {last_error}): {}\n--- {} ---\n{}",
                    show(&command, user),
                    paths.log.display(),
                    log_tail(&paths.log, log_start),
                );
            }
        }
    }
    unreachable!("the last attempt panics")
}

/// How a start attempt ended.
pub(crate) enum Ready {
    Yes,
    Exited(ExitStatus),
    TimedOut(String),
}

/// Polls the new server until it accepts connections, exits, or [`START_TIMEOUT`] passes.
pub(crate) fn wait_ready(child: &mut Child, port: u16) -> Ready {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Ready::Exited(status);
        }
        match accepts_connections(port) {
            Ok(()) => return Ready::Yes,
            Err(error) if Instant::now() >= deadline => return Ready::TimedOut(error),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("pglock-tests: cannot bind a TCP port on 127.0.0.1: {e}"))
}

/// The server log, opened for appending and owned by the server user.
pub(crate) fn log_file(paths: &Paths, user: Option<&RunAs>) -> File {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&paths.log)
        .unwrap_or_else(|e| panic!("pglock-tests: cannot open {}: {e}", paths.log.display()));
    if let Some(user) = user {
        let _ = chown(&paths.log, Some(user.uid), Some(user.gid));
    }
    file
}

/// The last lines of the log written since byte `from`.
pub(crate) fn log_tail(log: &Path, from: u64) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = text
        .get(usize::try_from(from).unwrap_or(0)..)
        .unwrap_or(&text);
    let text = String::from_utf8_lossy(text);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Writes `path` whole: to a temporary name first, then renamed into place.
fn write_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    File::create(&tmp)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .unwrap_or_else(|e| panic!("pglock-tests: cannot write {}: {e}", path.display()));
}

/// The command line, for messages, saying which user it ran as.
pub(crate) fn show(command: &Command, user: Option<&RunAs>) -> String {
    let mut line = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    match user {
        Some(user) => format!("`{line}` (as user {})", user.name),
        None => format!("`{line}`"),
    }
}

/// A hint when the server user may not be able to reach the binaries.
pub(crate) fn hint(binaries: &Binaries, user: Option<&RunAs>) -> String {
    match untraversable(&binaries.bindir, user) {
        Some(blocked) => format!(
            "\nnote: user {} cannot enter {}, so it cannot run the binaries in {}; install \
             Postgres somewhere readable by everyone, or set DATABASE_URL.",
            user.map_or("?", |user| user.name.as_str()),
            blocked.display(),
            binaries.bindir.display()
        ),
        None => String::new(),
    }
}
