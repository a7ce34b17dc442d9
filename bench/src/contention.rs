//! Section 4: lock hand-offs per second under contention, from tasks of this process, from
//! separate processes (this binary re-executed as workers), and from pgbench running the same
//! two statements.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::{Connection as _, PgConnection};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::Res;

/// The hidden subcommand that makes this binary a contention worker.
pub const WORKER: &str = "__contend-worker";

/// Numbers of concurrent clients.
pub const CLIENTS: &[usize] = &[2, 8, 32];

/// Which keys the clients lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// Every client the same key: each acquisition is a hand-off.
    One,
    /// Each client its own key: no waiting at all.
    Own,
    /// Client `i` locks key `i % 4`.
    Four,
}

pub const KEYS: &[Keys] = &[Keys::One, Keys::Four, Keys::Own];

impl Keys {
    pub fn name(self) -> &'static str {
        match self {
            Keys::One => "one key",
            Keys::Four => "4 keys",
            Keys::Own => "a key per client",
        }
    }

    /// The key client `i` (from 0) locks; pgbench's scripts compute the same from `:client_id`.
    fn key(self, i: usize) -> i64 {
        match self {
            Keys::One => 42,
            Keys::Own => 100 + i as i64,
            Keys::Four => 200 + (i % 4) as i64,
        }
    }

    fn pgbench_script(self) -> &'static str {
        match self {
            Keys::One => "SELECT pg_advisory_lock(42);\nSELECT pg_advisory_unlock(42);\n",
            Keys::Own => {
                "\\set k 100 + :client_id\nSELECT pg_advisory_lock(:k);\nSELECT pg_advisory_unlock(:k);\n"
            }
            Keys::Four => {
                "\\set k 200 + :client_id % 4\nSELECT pg_advisory_lock(:k);\nSELECT pg_advisory_unlock(:k);\n"
            }
        }
    }
}

/// Who takes the locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// Tokio tasks of this process, each on its own connection, through pglock's runtime API.
    PglockTasks,
    /// The same tasks sending `pg_advisory_lock` / `pg_advisory_unlock` through plain sqlx.
    SqlxTasks,
    /// Separate processes, one connection each, through pglock.
    PglockProcesses,
    /// `pgbench -n -f <script> -c N -j 2 -T <secs>`.
    Pgbench,
}

pub const DRIVERS: &[Driver] = &[
    Driver::PglockTasks,
    Driver::SqlxTasks,
    Driver::PglockProcesses,
    Driver::Pgbench,
];

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::PglockTasks => "pglock, N tasks",
            Driver::SqlxTasks => "raw sqlx, N tasks",
            Driver::PglockProcesses => "pglock, N processes",
            Driver::Pgbench => "pgbench -c N -j 2",
        }
    }
}

/// The rates (hand-offs per second, one per round) of each driver for one keys layout and
/// number of clients.
pub struct Cell {
    pub keys: Keys,
    pub clients: usize,
    pub rates: Vec<(Driver, Vec<f64>)>,
}

/// One lock + unlock through pglock (default wait: `SELECT pg_advisory_lock($1)`, then unlock).
async fn pglock_cycle(conn: &mut PgConnection, key: i64) -> Res<()> {
    let guard = pglock::advisory(key).acquire(&mut *conn).await?;
    guard.release().await?;
    Ok(())
}

async fn sqlx_cycle(conn: &mut PgConnection, key: i64) -> Res<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Cycles until `deadline`; returns how many.
async fn cycles(conn: &mut PgConnection, key: i64, deadline: Instant, raw: bool) -> Res<u64> {
    let mut count = 0;
    while Instant::now() < deadline {
        if raw {
            sqlx_cycle(conn, key).await?;
        } else {
            pglock_cycle(conn, key).await?;
        }
        count += 1;
    }
    Ok(count)
}

/// Everything the contention runs need, opened once: connections for the tasks, worker
/// processes, pgbench's scripts.
pub struct Rig {
    url: String,
    conns: Vec<PgConnection>,
    workers: Vec<Worker>,
    scripts: std::path::PathBuf,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Rig {
    pub async fn open(url: &str) -> Res<Rig> {
        let max = *CLIENTS.iter().max().expect("some");
        let mut conns = Vec::with_capacity(max);
        for _ in 0..max {
            conns.push(PgConnection::connect(url).await?);
        }
        let exe = std::env::current_exe()?;
        let mut workers = Vec::with_capacity(max);
        for _ in 0..max {
            let mut child = Command::new(&exe)
                .arg(WORKER)
                .arg(url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take().expect("piped");
            let stdout = BufReader::new(child.stdout.take().expect("piped"));
            workers.push(Worker {
                child,
                stdin,
                stdout,
            });
        }
        for worker in &mut workers {
            let line = read_line(&mut worker.stdout).await?;
            if line != "ready" {
                return Err(format!("contention worker said {line:?} instead of ready").into());
            }
        }
        let scripts = std::env::temp_dir().join(format!("pglock-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scripts)?;
        for keys in KEYS {
            std::fs::write(scripts.join(script_name(*keys)), keys.pgbench_script())?;
        }
        Ok(Rig {
            url: url.to_owned(),
            conns,
            workers,
            scripts,
        })
    }

    /// Hand-offs (lock + unlock pairs) per second of `n` clients driven by `driver` for `window`.
    pub async fn run(
        &mut self,
        driver: Driver,
        keys: Keys,
        n: usize,
        window: Duration,
    ) -> Res<f64> {
        match driver {
            Driver::PglockTasks | Driver::SqlxTasks => {
                self.tasks(keys, n, window, driver == Driver::SqlxTasks)
                    .await
            }
            Driver::PglockProcesses => self.processes(keys, n, window).await,
            Driver::Pgbench => self.pgbench(keys, n, window).await,
        }
    }

    async fn tasks(&mut self, keys: Keys, n: usize, window: Duration, raw: bool) -> Res<f64> {
        let start = Instant::now();
        let deadline = start + window;
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let mut conn = self.conns.pop().expect("enough connections");
            handles.push(tokio::spawn(async move {
                let counted = cycles(&mut conn, keys.key(i), deadline, raw).await;
                (conn, counted)
            }));
        }
        let mut total = 0;
        let mut failure = None;
        for handle in handles {
            let (conn, counted) = handle.await?;
            self.conns.push(conn);
            match counted {
                Ok(count) => total += count,
                Err(error) => failure = Some(error),
            }
        }
        let elapsed = start.elapsed();
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(total as f64 / elapsed.as_secs_f64())
    }

    async fn processes(&mut self, keys: Keys, n: usize, window: Duration) -> Res<f64> {
        for (i, worker) in self.workers[..n].iter_mut().enumerate() {
            let command = format!("run {} {}\n", keys.key(i), window.as_micros());
            worker.stdin.write_all(command.as_bytes()).await?;
            worker.stdin.flush().await?;
        }
        let mut total = 0.0;
        let mut elapsed_sum = 0.0;
        for worker in &mut self.workers[..n] {
            let line = read_line(&mut worker.stdout).await?;
            let (count, micros) = line
                .split_once(' ')
                .and_then(|(c, m)| Some((c.parse::<f64>().ok()?, m.parse::<f64>().ok()?)))
                .ok_or_else(|| format!("contention worker said {line:?}"))?;
            total += count;
            elapsed_sum += micros;
        }
        let mean_elapsed = elapsed_sum / n as f64 / 1e6;
        Ok(total / mean_elapsed)
    }

    async fn pgbench(&mut self, keys: Keys, n: usize, window: Duration) -> Res<f64> {
        let secs = window.as_secs().max(1);
        let output = Command::new("pgbench")
            .arg("-n")
            .arg("-f")
            .arg(self.scripts.join(script_name(keys)))
            .args(["-c", &n.to_string(), "-j", "2", "-T", &secs.to_string()])
            .arg(&self.url)
            .output()
            .await
            .map_err(|e| format!("cannot run pgbench (install postgresql-client): {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "pgbench failed ({}): {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        stdout
            .lines()
            .find_map(|line| {
                line.strip_prefix("tps = ")?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .ok_or_else(|| format!("no tps in pgbench's output: {stdout}").into())
    }

    pub async fn close(mut self) {
        for mut worker in self.workers.drain(..) {
            let _ = worker.stdin.write_all(b"exit\n").await;
            let _ = worker.child.wait().await;
        }
        for conn in self.conns.drain(..) {
            let _ = conn.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.scripts);
    }
}

pub async fn pgbench_version() -> String {
    match Command::new("pgbench").arg("--version").output().await {
        Ok(output) => String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        Err(error) => format!("pgbench not runnable: {error}"),
    }
}

fn script_name(keys: Keys) -> String {
    format!("{keys:?}.sql").to_lowercase()
}

async fn read_line(reader: &mut BufReader<ChildStdout>) -> Res<String> {
    let mut line = String::new();
    if reader.read_line(&mut line).await? == 0 {
        return Err("a contention worker exited early (see its stderr above)".into());
    }
    Ok(line.trim().to_owned())
}

/// The worker's side: connect, say `ready`, then for each `run <key> <micros>` line cycle the
/// lock for that long and answer `<count> <elapsed micros>`; stop at `exit` or end of input.
pub async fn worker(url: &str) -> Res<()> {
    use std::io::{BufRead as _, Write as _};
    let mut conn = PgConnection::connect(url).await?;
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    for line in stdin.lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("run"), Some(key), Some(micros)) => {
                let key: i64 = key.parse()?;
                let window = Duration::from_micros(micros.parse()?);
                let start = Instant::now();
                let count = cycles(&mut conn, key, start + window, false).await?;
                writeln!(stdout, "{count} {}", start.elapsed().as_micros())?;
                stdout.flush()?;
            }
            _ => break,
        }
    }
    conn.close().await?;
    Ok(())
}
