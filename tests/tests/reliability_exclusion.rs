//! Mutual exclusion under load: many tasks in several processes hammer a few keys through every
//! form of taking a lock (pool, connection and transaction handles; guards, scopes and
//! attributes; session and transaction-level; waiting, timed and try-again), and nothing ever
//! overlaps that must not.
//!
//! Each test is its own worker: it starts copies of this test binary running just that test
//! (`--exact <name>`, with [`WORKER_URL`] set to the database to work in), works alongside them,
//! then checks what they all left behind. Re-running the test binary itself, rather than a
//! separate example binary, needs no extra build step or binary path: `current_exe()` is always
//! the binary that holds the worker, under `cargo test` and `cargo nextest` alike.
//!
//! Exclusion is checked two ways: an in-process atomic "holder" per key (catches overlaps between
//! tasks of one process at once), and a row per key in the database that each holder claims,
//! reads, and writes back incremented after a deliberate pause (catches overlaps across
//! processes, and shows up in the final count as a lost update). The bookkeeping statements run
//! on a separate autocommit connection per task, so they record real time order whatever the
//! lock's own session is doing.
//!
//! Sizes come from environment variables (see [`Sizes`]); `scripts/soak` runs these tests with
//! bigger ones.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use pglock::{Advisory, Error, advisory};
use pglock_tests::TestDb;
use sqlx::{Connection as _, PgConnection, PgPool, Postgres, Transaction};

/// Set in a worker process: the URL of the database to work in.
const WORKER_URL: &str = "PGLOCK_RELIABILITY_WORKER_URL";
/// Set in a worker process: its index (the parent is 0), for unique holder tokens.
const WORKER_INDEX: &str = "PGLOCK_RELIABILITY_WORKER_INDEX";
/// The line a worker prints when it finished, followed by its counts.
const DONE: &str = "pglock-reliability-worker-done";

/// How much load: read from the environment, with defaults that keep the suite quick.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    /// `PGLOCK_RELIABILITY_PROCESSES`: processes, the test's own included (default 3).
    processes: u64,
    /// `PGLOCK_RELIABILITY_TASKS`: tasks per process (default 6).
    tasks: u64,
    /// `PGLOCK_RELIABILITY_ITERATIONS`: lock acquisitions per task (default 100).
    iterations: u64,
    /// `PGLOCK_RELIABILITY_KEYS`: distinct locks the tasks contend for (default 3).
    keys: u64,
}

impl Sizes {
    fn from_env() -> Sizes {
        let read = |name: &str, default: u64| match std::env::var(name) {
            Ok(value) => value
                .parse()
                .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
            Err(_) => default,
        };
        Sizes {
            processes: read("PGLOCK_RELIABILITY_PROCESSES", 3).max(1),
            tasks: read("PGLOCK_RELIABILITY_TASKS", 6).max(1),
            iterations: read("PGLOCK_RELIABILITY_ITERATIONS", 100),
            keys: read("PGLOCK_RELIABILITY_KEYS", 3).max(1),
        }
    }
}

/// What one process's tasks did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    /// Critical sections completed.
    done: u64,
    /// Overlaps seen: each one a broken promise.
    violations: u64,
    /// The most shared holders seen inside one critical section at once.
    max_readers: u64,
}

impl Counts {
    fn line(self) -> String {
        format!(
            "{DONE} done={} violations={} max_readers={}",
            self.done, self.violations, self.max_readers
        )
    }

    fn parse(output: &str) -> Option<Counts> {
        // libtest may have written "test <name> ... " on the same line first.
        let line = output
            .lines()
            .find_map(|line| line.find(DONE).map(|at| &line[at..]))?;
        let field = |name: &str| -> Option<u64> {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))?
                .parse()
                .ok()
        };
        Some(Counts {
            done: field("done")?,
            violations: field("violations")?,
            max_readers: field("max_readers")?,
        })
    }

    fn add(self, other: Counts) -> Counts {
        Counts {
            done: self.done + other.done,
            violations: self.violations + other.violations,
            max_readers: self.max_readers.max(other.max_readers),
        }
    }
}

/// A small deterministic generator (xorshift64*), seeded per task: jitter needs no crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// A pause between reading and writing back, so that an overlap, if one could happen, would.
async fn pause(rng: &mut Rng) {
    match rng.below(4) {
        0 => {}
        1 => tokio::task::yield_now().await,
        _ => tokio::time::sleep(Duration::from_micros(200 + rng.below(800))).await,
    }
}

/// The lock of key `key`.
fn lock_name(key: i32) -> String {
    format!("reliability-{key}")
}

/// What every task shares within one process.
struct Shared {
    /// Per key: the token of the exclusive holder in this process, 0 when none.
    holder: Vec<AtomicI64>,
    /// Per key: how many shared holders of this process are in.
    readers: Vec<AtomicU64>,
    violations: AtomicU64,
    max_readers: AtomicU64,
}

impl Shared {
    fn new(keys: u64) -> Shared {
        Shared {
            holder: (0..keys).map(|_| AtomicI64::new(0)).collect(),
            readers: (0..keys).map(|_| AtomicU64::new(0)).collect(),
            violations: AtomicU64::new(0),
            max_readers: AtomicU64::new(0),
        }
    }

    fn violation(&self, what: &str) {
        eprintln!("VIOLATION: {what}");
        self.violations.fetch_add(1, Ordering::SeqCst);
    }
}

/// One task's view: its token, its bookkeeping connection, the process's shared state.
struct Task {
    token: i64,
    ledger: PgConnection,
    shared: Arc<Shared>,
    rng: Rng,
}

impl Task {
    /// The exclusive critical section on `key`: claim the key in process and in the database,
    /// read its count, pause, write it back incremented, let go.
    async fn exclusive(&mut self, key: i32) -> Result<(), Error> {
        let slot = &self.shared.holder[key as usize];
        if let Err(other) = slot.compare_exchange(0, self.token, Ordering::SeqCst, Ordering::SeqCst)
        {
            self.shared.violation(&format!(
                "key {key}: in-process holder {other} while {} entered",
                self.token
            ));
        }
        if self.shared.readers[key as usize].load(Ordering::SeqCst) != 0 {
            self.shared
                .violation(&format!("key {key}: a writer entered among readers"));
        }
        let claimed: Option<(i64,)> = sqlx::query_as(
            "UPDATE slots SET holder = $2 WHERE key = $1 AND holder IS NULL AND readers = 0 \
             RETURNING value",
        )
        .bind(key)
        .bind(self.token)
        .fetch_optional(&mut self.ledger)
        .await?;
        let value = match claimed {
            Some((value,)) => value,
            None => {
                self.shared
                    .violation(&format!("key {key}: the database row was held by another"));
                sqlx::query_scalar("SELECT value FROM slots WHERE key = $1")
                    .bind(key)
                    .fetch_one(&mut self.ledger)
                    .await?
            }
        };
        pause(&mut self.rng).await;
        let written = sqlx::query(
            "UPDATE slots SET value = $2, holder = NULL WHERE key = $1 AND holder = $3",
        )
        .bind(key)
        .bind(value + 1)
        .bind(self.token)
        .execute(&mut self.ledger)
        .await?
        .rows_affected();
        if written != 1 {
            self.shared.violation(&format!(
                "key {key}: the claim was taken over before the write"
            ));
        }
        if slot
            .compare_exchange(self.token, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            self.shared
                .violation(&format!("key {key}: the in-process claim changed hands"));
        }
        Ok(())
    }

    /// The shared critical section on `key`: count in as a reader (no writer may be in), pause,
    /// count out.
    async fn shared(&mut self, key: i32) -> Result<(), Error> {
        let readers = self.shared.readers[key as usize].fetch_add(1, Ordering::SeqCst) + 1;
        if self.shared.holder[key as usize].load(Ordering::SeqCst) != 0 {
            self.shared
                .violation(&format!("key {key}: a reader entered while a writer held"));
        }
        let (db_readers, writer): (i32, Option<i64>) = sqlx::query_as(
            "UPDATE slots SET readers = readers + 1 WHERE key = $1 RETURNING readers, holder",
        )
        .bind(key)
        .fetch_one(&mut self.ledger)
        .await?;
        if let Some(writer) = writer {
            self.shared.violation(&format!(
                "key {key}: writer {writer} in the database while reading"
            ));
        }
        let seen = readers.max(u64::try_from(db_readers).unwrap_or(0));
        self.shared.max_readers.fetch_max(seen, Ordering::SeqCst);
        pause(&mut self.rng).await;
        // Readers overlap only if they stay a while: longer than the writers' pause.
        tokio::time::sleep(Duration::from_millis(1)).await;
        sqlx::query("UPDATE slots SET readers = readers - 1, value = value + 1 WHERE key = $1")
            .bind(key)
            .execute(&mut self.ledger)
            .await?;
        self.shared.readers[key as usize].fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }

    /// The critical section of a lock: shared or exclusive.
    async fn critical(&mut self, lock: &Advisory, key: i32) -> Result<(), Error> {
        if lock.is_shared() {
            self.shared(key).await
        } else {
            self.exclusive(key).await
        }
    }
}

#[pglock::advisory(lock_name(key))]
async fn attribute_session(pool: &PgPool, task: &mut Task, key: i32) -> Result<(), Error> {
    let _ = pool;
    task.exclusive(key).await
}

#[pglock::advisory(lock_name(key), xact)]
async fn attribute_xact(
    tx: &mut Transaction<'_, Postgres>,
    task: &mut Task,
    key: i32,
) -> Result<(), Error> {
    let _ = tx;
    task.exclusive(key).await
}

#[pglock::advisory(lock_name(key), shared, db = conn)]
async fn attribute_shared(conn: &mut PgConnection, task: &mut Task, key: i32) -> Result<(), Error> {
    let _ = conn;
    task.shared(key).await
}

/// Longer than any one critical section, with all its waiting, can take: reaching it means a
/// lock was left held.
const STUCK: Duration = Duration::from_secs(30);

/// The ways a task takes a lock, one per iteration in turn.
const FORMS: u64 = 10;

/// The forms to use: all of them, or those listed (comma-separated numbers) in
/// `PGLOCK_RELIABILITY_FORMS`, to narrow down a failure.
fn forms() -> Vec<u64> {
    match std::env::var("PGLOCK_RELIABILITY_FORMS") {
        Ok(list) => list
            .split(',')
            .map(|form| {
                form.trim()
                    .parse()
                    .ok()
                    .filter(|form| *form < FORMS)
                    .unwrap_or_else(|| panic!("PGLOCK_RELIABILITY_FORMS: bad form {form:?}"))
            })
            .collect(),
        Err(_) => (0..FORMS).collect(),
    }
}

/// Take the lock of `key` in form `form` (shared or not as `shared` says where the form allows
/// both) and run the critical section under it.
async fn one(
    form: u64,
    shared: bool,
    key: i32,
    pool: &PgPool,
    conn: &mut PgConnection,
    task: &mut Task,
) -> Result<(), Error> {
    let lock = if shared {
        advisory(lock_name(key)).shared()
    } else {
        advisory(lock_name(key))
    };
    match form {
        // A guard through the pool.
        0 => {
            let guard = lock.clone().acquire(pool).await?;
            task.critical(&lock, key).await?;
            guard.release().await
        }
        // A session scope through the pool.
        1 => {
            lock.clone()
                .scope(pool, async |_| task.critical(&lock, key).await)
                .await
        }
        // A transaction-level scope through the pool (pglock's own transaction).
        2 => {
            lock.clone()
                .xact()
                .scope(pool, async |_| task.critical(&lock, key).await)
                .await
        }
        // A guard on the task's own connection.
        3 => {
            let guard = lock.clone().wait_forever().acquire(&mut *conn).await?;
            task.critical(&lock, key).await?;
            guard.release().await
        }
        // A transaction-level lock in the caller's transaction, held until commit.
        4 => {
            let mut tx = conn.begin().await?;
            let guard = lock.clone().xact().acquire(&mut tx).await?;
            task.critical(&lock, key).await?;
            guard.release().await?;
            tx.commit().await?;
            Ok(())
        }
        // Try without waiting until it is free, on the pool.
        5 => loop {
            if let Some(guard) = lock.clone().nowait().try_acquire(pool).await? {
                task.critical(&lock, key).await?;
                break guard.release().await;
            }
            tokio::task::yield_now().await;
        },
        // A short timed wait on the task's connection, again until it is acquired.
        6 => loop {
            let timed = lock.clone().timeout(Duration::from_millis(5));
            if let Some(guard) = timed.try_acquire(&mut *conn).await? {
                task.critical(&lock, key).await?;
                break guard.release().await;
            }
        },
        // The attributes: session on a pool, transaction-level on a transaction, shared on a
        // connection.
        7 if shared => attribute_shared(conn, task, key).await,
        7 => attribute_session(pool, task, key).await,
        8 if shared => attribute_shared(conn, task, key).await,
        8 => {
            let mut tx = conn.begin().await?;
            attribute_xact(&mut tx, task, key).await?;
            tx.commit().await?;
            Ok(())
        }
        // A scope on the caller's pool connection.
        _ => {
            let mut pooled = pool.acquire().await?;
            lock.clone()
                .scope(&mut pooled, async |_| task.critical(&lock, key).await)
                .await
        }
    }
}

/// Which critical sections a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Exclusive locks only.
    Exclusive,
    /// Mostly shared locks, with an exclusive one every few iterations.
    ReadersAndWriters,
}

/// Run this process's share of the workload against `url`.
async fn work(url: &str, index: u64, sizes: Sizes, workload: Workload) -> Counts {
    let pool = sqlx::postgres::PgPoolOptions::new()
        // One per task and then some, so that a task holding a pool connection while its body
        // checks out another (form 7) can always get one.
        .max_connections(
            u32::try_from(sizes.tasks)
                .unwrap_or(u32::MAX)
                .saturating_add(2),
        )
        .acquire_timeout(Duration::from_secs(120))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("worker {index}: connecting: {e}"));
    let shared = Arc::new(Shared::new(sizes.keys));
    let forms = Arc::new(forms());
    let mut tasks = Vec::new();
    for t in 0..sizes.tasks {
        let pool = pool.clone();
        let shared = shared.clone();
        let url = url.to_owned();
        let forms = forms.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = PgConnection::connect(&url).await.expect("connecting");
            let ledger = PgConnection::connect(&url).await.expect("connecting");
            let token = i64::try_from(index * 1_000_000 + t + 1).expect("small");
            let mut task = Task {
                token,
                ledger,
                shared,
                rng: Rng::new(token.unsigned_abs() + u64::from(std::process::id())),
            };
            for i in 0..sizes.iterations {
                let key = i32::try_from(task.rng.below(sizes.keys)).expect("few keys");
                // Start each task at a different form so that all forms run at once.
                let form = forms[usize::try_from(i + t).expect("small") % forms.len()];
                let shared_lock = workload == Workload::ReadersAndWriters && task.rng.below(5) != 0;
                let attempt = one(form, shared_lock, key, &pool, &mut conn, &mut task);
                match tokio::time::timeout(STUCK, attempt).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => panic!("task {t}, iteration {i}, form {form}: {e:?}"),
                    Err(_) => panic!(
                        "task {t}, iteration {i}, form {form}: no progress on key {key} for \
                         {STUCK:?}: some session holds its lock and never lets go (a lock leaked \
                         by an earlier iteration?)"
                    ),
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("a task panicked");
    }
    pool.close().await;
    Counts {
        done: sizes.tasks * sizes.iterations,
        violations: shared.violations.load(Ordering::SeqCst),
        max_readers: shared.max_readers.load(Ordering::SeqCst),
    }
}

/// A row of `slots`: key, value (critical sections completed), readers in, exclusive holder.
type Slot = (i32, i64, i32, Option<i64>);

/// Start worker `index`: this binary, running just `test` against `url`.
fn spawn_worker(test: &str, url: &str, index: u64) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(WORKER_URL, url)
        .env(WORKER_INDEX, index.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting a worker process (this test binary)")
}

/// The whole test: as a worker, work and print the counts; otherwise set up the database, start
/// the other processes, work alongside them, and return every process's counts and the rows.
async fn run(test: &str, workload: Workload) -> Option<(Counts, Vec<Slot>, Sizes)> {
    let sizes = Sizes::from_env();
    if let Ok(url) = std::env::var(WORKER_URL) {
        let index = std::env::var(WORKER_INDEX)
            .ok()
            .and_then(|index| index.parse().ok())
            .expect("a worker index");
        let counts = work(&url, index, sizes, workload).await;
        println!("{}", counts.line());
        assert_eq!(counts.violations, 0, "worker {index} saw overlaps");
        return None;
    }

    let db = TestDb::new().await;
    sqlx::query(
        "CREATE TABLE slots (key int PRIMARY KEY, value bigint NOT NULL DEFAULT 0, \
         readers int NOT NULL DEFAULT 0, holder bigint)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    sqlx::query("INSERT INTO slots (key) SELECT generate_series(0, $1 - 1)")
        .bind(i32::try_from(sizes.keys).expect("few keys"))
        .execute(db.pool())
        .await
        .unwrap();

    let started = std::time::Instant::now();
    let children: Vec<Child> = (1..sizes.processes)
        .map(|index| spawn_worker(test, db.url(), index))
        .collect();
    let mine = work(db.url(), 0, sizes, workload).await;
    let mut total = mine;
    for (i, child) in children.into_iter().enumerate() {
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .expect("waiting for a worker");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "worker {} failed ({}):\n{stdout}\n{stderr}",
            i + 1,
            output.status
        );
        let counts = Counts::parse(&stdout).unwrap_or_else(|| {
            panic!(
                "worker {} did not run the test (no {DONE:?} line):\n{stdout}\n{stderr}",
                i + 1
            )
        });
        total = total.add(counts);
    }

    // For the record, never asserted: how much happened, and how fast.
    eprintln!("{test}: {sizes:?}: {total:?} in {:?}", started.elapsed());
    let rows: Vec<Slot> =
        sqlx::query_as("SELECT key, value, readers, holder FROM slots ORDER BY key")
            .fetch_all(db.pool())
            .await
            .unwrap();
    assert!(
        common::advisory_locks(db.pool()).await.is_empty(),
        "no lock is left held"
    );
    Some((total, rows, sizes))
}

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_locks_never_overlap_across_tasks_and_processes() {
    let Some((total, rows, sizes)) = run(
        "exclusive_locks_never_overlap_across_tasks_and_processes",
        Workload::Exclusive,
    )
    .await
    else {
        return;
    };
    let expected = sizes.processes * sizes.tasks * sizes.iterations;
    assert_eq!(total.done, expected);
    assert_eq!(total.violations, 0, "overlapping holders were seen");
    let counted: i64 = rows.iter().map(|row| row.1).sum();
    assert_eq!(
        u64::try_from(counted).unwrap(),
        expected,
        "every increment survived (a lost one means two holders at once): {rows:?}"
    );
    assert!(
        rows.iter().all(|row| row.2 == 0 && row.3.is_none()),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_locks_admit_readers_together_and_exclude_writers() {
    let Some((total, rows, sizes)) = run(
        "shared_locks_admit_readers_together_and_exclude_writers",
        Workload::ReadersAndWriters,
    )
    .await
    else {
        return;
    };
    let expected = sizes.processes * sizes.tasks * sizes.iterations;
    assert_eq!(total.done, expected);
    assert_eq!(
        total.violations, 0,
        "a writer overlapped a reader or a writer"
    );
    let counted: i64 = rows.iter().map(|row| row.1).sum();
    assert_eq!(u64::try_from(counted).unwrap(), expected, "{rows:?}");
    assert!(
        rows.iter().all(|row| row.2 == 0 && row.3.is_none()),
        "{rows:?}"
    );
    assert!(
        total.max_readers > 1,
        "shared holders never overlapped (max {}), so the test proved nothing about them",
        total.max_readers
    );
}
