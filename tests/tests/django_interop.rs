//! Interop with Django: django-pglock, run in real Python processes on the same database, and
//! pglock see and exclude each other's advisory locks.
//!
//! The Python side is `tests/interop/` in the virtual environment that `scripts/python-env`
//! makes (pinned Django, django-pglock and psycopg from PyPI; the first run downloads them).
//! `agent.py` is one Django session taking and releasing a lock on command, one line at a
//! time, so each step is ordered by its reply rather than by sleeping.

mod common;

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{eventually, until_someone_waits};
use pglock::{AdvisoryKey, Error, LockId, advisory};
use pglock_tests::TestDb;
use sqlx::Connection as _;
use tokio::sync::mpsc;

/// How long a Python process may take to answer one command. Generous: Django starts in well
/// under a second, but the machine may be busy; only a hang should reach it.
const REPLY_LIMIT: Duration = Duration::from_secs(60);

/// The workspace root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
}

/// The virtual environment's python, made (or found ready) by `scripts/python-env`.
///
/// # Panics
///
/// When it cannot be made (no python3 3.10+, no venv module, PyPI unreachable), with the
/// script's explanation of what to install or set.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let script = root().join("scripts/python-env");
        let mut command = Command::new(&script);
        // Django 5.2 needs Postgres 14; Django 4.2 LTS still supports 13.
        if server_version_num() < 140_000 {
            command.arg("django42");
        }
        let output = command.stdin(Stdio::null()).output().unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}\nThe Django interop tests need bash and that script.",
                script.display()
            )
        });
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "{} failed ({}), so the Django interop tests cannot run:\n{stderr}\n\
             Fix what it says (it needs python3 >= 3.10 with venv, and PyPI), then run it by hand \
             to check: it prints the venv's python when ready.",
            script.display(),
            output.status
        );
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        assert!(
            path.is_file(),
            "{} printed {:?}, which is not a file; its stderr:\n{stderr}",
            script.display(),
            path
        );
        path
    })
}

/// The test server's `server_version_num`, read on a thread of its own (this runs inside tests'
/// runtimes, which must not block).
fn server_version_num() -> u32 {
    std::thread::spawn(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let url = pglock_tests::server_url();
            let mut conn = sqlx::PgConnection::connect(&url)
                .await
                .expect("connecting to the test server");
            let version: i32 =
                sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
                    .fetch_one(&mut conn)
                    .await
                    .expect("reading server_version_num");
            u32::try_from(version).expect("a positive version")
        })
    })
    .join()
    .expect("reading the server version")
}

/// A script of `tests/interop/`.
fn interop_script(name: &str) -> PathBuf {
    root().join("tests/interop").join(name)
}

/// `s` as a JSON string.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => write!(out, "\\u{:04x}", u32::from(c)).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A lock id as both libraries take it: a name, or a `bigint`.
#[derive(Clone, Debug)]
enum Id {
    Name(String),
    Int(i64),
}

impl Id {
    fn name(name: &str) -> Id {
        Id::Name(name.to_owned())
    }

    /// As Python reads it from JSON: a str or an int.
    fn json(&self) -> String {
        match self {
            Id::Name(name) => json_string(name),
            Id::Int(key) => key.to_string(),
        }
    }

    fn lock_id(&self) -> LockId {
        match self {
            Id::Name(name) => LockId::from(name.as_str()),
            Id::Int(key) => LockId::from(*key),
        }
    }

    /// How django-pglock names the lock in its "Could not acquire lock" message.
    fn display(&self) -> String {
        match self {
            Id::Name(name) => name.clone(),
            Id::Int(key) => key.to_string(),
        }
    }
}

/// The ids the live tests lock: a name with quotes and non-ASCII text, a negative integer, and
/// the largest `bigint`.
fn live_ids() -> Vec<Id> {
    vec![
        Id::name("nightly \"report\" — it's ロック"),
        Id::Int(-7),
        Id::Int(i64::MAX),
    ]
}

/// A running `tests/interop/agent.py`: one Django session, driven a line at a time.
struct Agent {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Option<JoinHandle<String>>,
    /// Its backend's pid.
    pid: i32,
    id: Id,
}

impl Agent {
    /// Start an agent on `db` for lock `id`, and wait until it has connected.
    async fn start(db: &TestDb, id: &Id) -> Agent {
        let mut child = Command::new(python())
            .arg(interop_script("agent.py"))
            .arg(db.url())
            .arg(id.json())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", python().display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (send, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut agent = Agent {
            child,
            stdin,
            lines,
            stderr: Some(stderr),
            pid: 0,
            id: id.clone(),
        };
        let hello = agent.reply().await;
        agent.pid = hello
            .strip_prefix("pid ")
            .and_then(|pid| pid.parse().ok())
            .unwrap_or_else(|| panic!("agent for {id:?} said {hello:?}, not its pid"));
        agent
    }

    /// Send one command line, without waiting for its reply.
    fn send(&mut self, command: &str) {
        if let Err(e) = writeln!(self.stdin, "{command}").and_then(|()| self.stdin.flush()) {
            let death = self.death();
            panic!(
                "agent for {:?} no longer reads commands ({e}); {death}",
                self.id
            );
        }
    }

    /// The next line the agent prints.
    async fn reply(&mut self) -> String {
        match tokio::time::timeout(REPLY_LIMIT, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => {
                let death = self.death();
                panic!("agent for {:?} stopped; {death}", self.id)
            }
            Err(_) => panic!(
                "agent for {:?} did not answer within {REPLY_LIMIT:?}",
                self.id
            ),
        }
    }

    /// Send a command and return its reply.
    async fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.reply().await
    }

    /// The exit status and stderr of an agent that has stopped.
    fn death(&mut self) -> String {
        let status = self.child.wait();
        let stderr = self
            .stderr
            .take()
            .and_then(|thread| thread.join().ok())
            .unwrap_or_default();
        format!("exit: {status:?}; stderr:\n{stderr}")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The advisory locks on `id` in `db`, as `(pid, mode, granted)`, seen by pglock's inspector.
async fn holders(db: &TestDb, id: &Id) -> Vec<(i32, String, bool)> {
    let rows = pglock::locks()
        .advisory([id.lock_id()])
        .fetch(db.pool())
        .await
        .expect("listing locks");
    rows.into_iter()
        .map(|row| {
            assert!(row.is_advisory_lock(id.lock_id()));
            (row.pid, row.mode_name, row.granted)
        })
        .collect()
}

fn mode_name(shared: bool) -> &'static str {
    if shared { "ShareLock" } else { "ExclusiveLock" }
}

/// `hold`/`try` options for the agent.
fn options(shared: bool, xact: bool) -> String {
    let mut words = String::new();
    if shared {
        words.push_str(" shared");
    }
    if xact {
        words.push_str(" xact");
    }
    words
}

// ---------------------------------------------------------------------------------------------
// Hashing

/// A small deterministic generator (xorshift), so the ids are the same on every run.
struct Xorshift(u64);

impl Xorshift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A string of 0 to 40 characters from ASCII, Latin-1, Cyrillic, CJK, emoji and the
    /// control characters.
    fn string(&mut self) -> String {
        const RANGES: [(u32, u32); 6] = [
            (0x00, 0x20),
            (0x20, 0x7f),
            (0xa0, 0x100),
            (0x400, 0x500),
            (0x4e00, 0x9fff),
            (0x1f300, 0x1f6ff),
        ];
        let len = self.next() % 41;
        (0..len)
            .map(|_| {
                let (low, high) = RANGES[(self.next() % RANGES.len() as u64) as usize];
                let code = low + (self.next() % u64::from(high - low)) as u32;
                char::from_u32(code).expect("the ranges hold no surrogates")
            })
            .collect()
    }
}

/// The ids compared with django-pglock's hashing.
fn hashing_ids() -> Vec<Id> {
    let mut ids: Vec<Id> = [
        "",
        " ",
        "hello",
        "my_lock_id",
        "myapp.tasks.send_daily_digest",
        "5",
        "-1",
        "it's \"quoted\"",
        "back\\slash",
        "nul\0byte",
        "tab\tnew\nline\r",
        "naïve café",
        "日本語のロック",
        "🔒🦀",
        "e\u{301}", // e + combining acute: not normalised, so not "é"
        "é",
        "*/ DROP TABLE x; /*",
    ]
    .into_iter()
    .map(Id::name)
    .collect();
    ids.push(Id::Name("x".repeat(100_000)));
    ids.push(Id::Name("ロック".repeat(10_000)));
    ids.extend((0..500).map(|i| Id::Name(format!("job-{i}"))));
    let mut random = Xorshift(0x9e37_79b9_7f4a_7c15);
    ids.extend((0..500).map(|_| Id::Name(random.string())));

    ids.extend(
        [
            0,
            1,
            -1,
            5,
            42,
            i64::from(i32::MAX),
            i64::from(i32::MAX) + 1,
            i64::from(i32::MIN),
            i64::from(i32::MIN) - 1,
            i64::from(u32::MAX),
            1 << 32,
            -(1 << 32),
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ]
        .map(Id::Int),
    );
    ids.extend((0..200).map(|_| Id::Int(random.next() as i64)));
    ids
}

/// django-pglock's own answers for `ids`: the key it locks (`advisory(id).int_lock_id`) and its
/// `advisory_id(id)`, from `tests/interop/hash_ids.py`.
fn django_pglock_hashes(ids: &[Id]) -> Vec<(i64, i64, i64)> {
    let input = format!(
        "[{}]",
        ids.iter().map(Id::json).collect::<Vec<_>>().join(", ")
    );
    let mut child = Command::new(python())
        .arg(interop_script("hash_ids.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python().display()));
    let mut stdin = child.stdin.take().expect("piped stdin");
    // hash_ids.py reads all its input before it writes, so writing first cannot deadlock.
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = child.wait_with_output().expect("waiting for hash_ids.py");
    writer
        .join()
        .expect("writer thread")
        .expect("writing to hash_ids.py");
    assert!(
        output.status.success(),
        "hash_ids.py failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("hash_ids.py prints UTF-8");
    stdout
        .lines()
        .map(|line| {
            let numbers: Vec<i64> = line
                .split(' ')
                .map(|n| n.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")))
                .collect();
            assert_eq!(numbers.len(), 3, "hash_ids.py printed {line:?}");
            (numbers[0], numbers[1], numbers[2])
        })
        .collect()
}

#[test]
fn ids_hash_to_the_keys_django_pglock_computes() {
    let ids = hashing_ids();
    let hashes = django_pglock_hashes(&ids);
    assert_eq!(hashes.len(), ids.len(), "one line per id");

    let mut negative_keys = 0;
    for (id, &(key, classid, objid)) in ids.iter().zip(&hashes) {
        let shown = format!("{id:?}").chars().take(60).collect::<String>();
        assert_eq!(
            id.lock_id().key(),
            AdvisoryKey::BigInt(key),
            "key of {shown}"
        );
        if let Id::Int(int) = id {
            assert_eq!(key, *int, "integer ids are used as they are");
        }
        // django-pglock's classid is `key >> 32`, negative for a negative key; pg_locks (and
        // pglock) show the same 32 bits unsigned. Its objid is `key & 0xFFFFFFFF` already.
        let expected = (
            u32::try_from(classid.rem_euclid(1 << 32)).unwrap(),
            u32::try_from(objid).expect("django-pglock's objid is unsigned"),
        );
        assert_eq!(
            pglock::advisory_id(id.lock_id()),
            expected,
            "advisory_id of {shown}"
        );
        if key < 0 {
            assert!(classid < 0, "django-pglock's quirk: a negative classid");
            negative_keys += 1;
        }
    }
    assert!(
        negative_keys > 100,
        "about half of the ids have negative keys, so the unsigned conversion is exercised \
         ({negative_keys} of {})",
        ids.len()
    );
}

// ---------------------------------------------------------------------------------------------
// django-pglock holds, pglock sees

/// django-pglock holds `id` (`with pglock.advisory(id, shared=..., xact=...)`); pglock lists the
/// lock under the Python session's pid and cannot take it where the modes conflict; once Python
/// releases, pglock takes it.
async fn django_holds_pglock_sees(shared: bool, xact: bool) {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    for id in live_ids() {
        let case = format!("{id:?} shared={shared} xact={xact}");
        let mut agent = Agent::start(&db, &id).await;
        assert_eq!(
            agent.ask(&format!("hold{}", options(shared, xact))).await,
            "held",
            "{case}"
        );

        assert_eq!(
            holders(&db, &id).await,
            [(agent.pid, mode_name(shared).to_owned(), true)],
            "{case}: pglock::locks() shows the Python session holding it"
        );

        // An exclusive lock conflicts with whatever Python holds, session or transaction level.
        let exclusive = advisory(id.lock_id()).nowait();
        assert!(
            exclusive
                .clone()
                .try_acquire(db.pool())
                .await
                .unwrap()
                .is_none(),
            "{case}"
        );
        match advisory(id.lock_id())
            .timeout(Duration::ZERO)
            .acquire(db.pool())
            .await
        {
            Err(Error::Busy { .. }) => {}
            other => panic!("{case}: expected Busy, got {other:?}"),
        }
        let mut tx = conn.begin().await.unwrap();
        assert!(
            exclusive
                .clone()
                .xact()
                .try_acquire(&mut tx)
                .await
                .unwrap()
                .is_none(),
            "{case}"
        );
        tx.rollback().await.unwrap();

        // A shared lock is compatible only with a shared one.
        let pglock_shared = advisory(id.lock_id()).shared().nowait();
        match pglock_shared.try_acquire(db.pool()).await.unwrap() {
            Some(guard) => {
                assert!(shared, "{case}: took a shared lock beside an exclusive one");
                guard.release().await.unwrap();
            }
            None => assert!(!shared, "{case}: shared locks excluded each other"),
        }

        assert_eq!(agent.ask("release").await, "released", "{case}");
        assert!(
            holders(&db, &id).await.is_empty(),
            "{case}: released by Python"
        );
        let guard = exclusive
            .acquire(db.pool())
            .await
            .unwrap_or_else(|e| panic!("{case}: free after Python released it, but {e}"));
        guard.release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pglock_sees_django_pglock_session_locks() {
    django_holds_pglock_sees(false, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pglock_sees_django_pglock_shared_session_locks() {
    django_holds_pglock_sees(true, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pglock_sees_django_pglock_xact_locks() {
    django_holds_pglock_sees(false, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pglock_sees_django_pglock_shared_xact_locks() {
    django_holds_pglock_sees(true, true).await;
}

// ---------------------------------------------------------------------------------------------
// pglock holds, django-pglock sees

/// pglock holds `id`; django-pglock's non-blocking acquire (`timeout=0`) returns False (side
/// effect Return) or raises `Could not acquire lock "<id>"` (Raise) where the modes conflict, in
/// session and xact form; once pglock releases, it gets the lock.
async fn pglock_holds_django_sees(shared: bool, xact: bool) {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    for id in live_ids() {
        let case = format!("{id:?} shared={shared} xact={xact}");
        let mut agent = Agent::start(&db, &id).await;
        let lock = advisory(id.lock_id());
        let lock = if shared { lock.shared() } else { lock };
        // Session level through the pool (the guard keeps its connection), or transaction level
        // in a transaction of our own.
        let mut tx = conn.begin().await.unwrap();
        let guard = if xact {
            drop(lock.xact().acquire(&mut tx).await.unwrap());
            None
        } else {
            Some(lock.acquire(db.pool()).await.unwrap())
        };
        let rows = holders(&db, &id).await;
        assert_eq!(rows.len(), 1, "{case}: {rows:?}");
        assert!(rows[0].0 != agent.pid && rows[0].2, "{case}: {rows:?}");

        for form in ["", " xact"] {
            assert_eq!(
                agent.ask(&format!("try{form}")).await,
                "not acquired",
                "{case}: django-pglock exclusive{form}, side effect Return"
            );
            // Raise only in session form: with xact=True django-pglock's context manager
            // leaves the transaction it opened behind when acquire() raises (`__exit__` never
            // runs), and the agent's session would stay inside it.
            if form.is_empty() {
                assert_eq!(
                    agent.ask("try raise").await,
                    format!("error: Could not acquire lock \"{}\"", id.display()),
                    "{case}: django-pglock exclusive, side effect Raise"
                );
            }
            let expected = if shared { "acquired" } else { "not acquired" };
            assert_eq!(
                agent.ask(&format!("try shared{form}")).await,
                expected,
                "{case}: django-pglock shared{form}"
            );
        }
        assert_eq!(
            holders(&db, &id).await.len(),
            1,
            "{case}: django-pglock left nothing behind"
        );

        match guard {
            Some(guard) => guard.release().await.unwrap(),
            None => tx.commit().await.unwrap(),
        }
        for form in ["", " xact", " shared", " raise"] {
            assert_eq!(
                agent.ask(&format!("try{form}")).await,
                "acquired",
                "{case}: django-pglock{form} after pglock released"
            );
        }
        assert!(holders(&db, &id).await.is_empty(), "{case}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn django_pglock_sees_pglock_session_locks() {
    pglock_holds_django_sees(false, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn django_pglock_sees_pglock_shared_session_locks() {
    pglock_holds_django_sees(true, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn django_pglock_sees_pglock_xact_locks() {
    pglock_holds_django_sees(false, true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn django_pglock_sees_pglock_shared_xact_locks() {
    pglock_holds_django_sees(true, true).await;
}

// ---------------------------------------------------------------------------------------------
// Waiting across the two

#[tokio::test(flavor = "multi_thread")]
async fn django_pglock_waits_for_pglock_and_gets_the_lock_on_release() {
    let db = TestDb::new().await;
    for id in live_ids() {
        let mut agent = Agent::start(&db, &id).await;
        let guard = advisory(id.lock_id()).acquire(db.pool()).await.unwrap();

        agent.send("hold"); // timeout unset: pg_advisory_lock waits
        eventually(
            Duration::from_secs(30),
            "the Python session waits for the lock",
            || async {
                holders(&db, &id)
                    .await
                    .contains(&(agent.pid, "ExclusiveLock".to_owned(), false))
            },
        )
        .await;

        guard.release().await.unwrap();
        assert_eq!(agent.reply().await, "held", "{id:?}");
        assert_eq!(
            holders(&db, &id).await,
            [(agent.pid, "ExclusiveLock".to_owned(), true)]
        );
        assert!(
            advisory(id.lock_id())
                .nowait()
                .try_acquire(db.pool())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(agent.ask("release").await, "released");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pglock_waits_for_django_pglock_and_gets_the_lock_on_release() {
    let db = TestDb::new().await;
    for id in live_ids() {
        let mut agent = Agent::start(&db, &id).await;
        assert_eq!(agent.ask("hold xact").await, "held", "{id:?}");

        let pool = db.pool().clone();
        let lock = advisory(id.lock_id());
        let waiter = tokio::spawn(async move {
            let guard = lock.acquire(&pool).await?;
            guard.release().await
        });
        until_someone_waits(db.pool(), id.lock_id()).await;
        assert!(!waiter.is_finished(), "{id:?}: pglock waits");

        assert_eq!(agent.ask("release").await, "released");
        waiter
            .await
            .expect("waiter task")
            .unwrap_or_else(|e| panic!("{id:?}: pglock got the lock once Python committed: {e}"));
        assert!(holders(&db, &id).await.is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn timed_waits_on_either_side_end_in_each_librarys_lock_timeout() {
    let db = TestDb::new().await;
    let id = Id::name("timed");
    let mut agent = Agent::start(&db, &id).await;

    // django-pglock holds: pglock's timed wait ends in LockTimeout (or None from try_acquire).
    assert_eq!(agent.ask("hold").await, "held");
    let timed = advisory(id.lock_id()).timeout(Duration::from_millis(100));
    match timed.clone().acquire(db.pool()).await {
        Err(Error::LockTimeout { .. }) => {}
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    assert!(timed.try_acquire(db.pool()).await.unwrap().is_none());
    assert_eq!(agent.ask("release").await, "released");

    // pglock holds: django-pglock's timed wait returns False (Return) or raises Postgres' lock
    // timeout (Raise).
    let guard = advisory(id.lock_id()).acquire(db.pool()).await.unwrap();
    assert_eq!(agent.ask("try timeout=0.1").await, "not acquired");
    assert_eq!(
        agent.ask("try timeout=0.1 raise").await,
        "error: canceling statement due to lock timeout"
    );
    assert_eq!(agent.ask("try timeout=0.1 xact").await, "not acquired");
    guard.release().await.unwrap();
    assert_eq!(agent.ask("try timeout=0.1").await, "acquired");
}

// ---------------------------------------------------------------------------------------------
// The benchmark script

/// A JSON value, parsed just far enough to check the benchmark's output.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut parser = JsonParser {
            text: text.as_bytes(),
            at: 0,
        };
        let value = parser.value()?;
        parser.space();
        if parser.at != parser.text.len() {
            return Err(format!("trailing text at byte {}", parser.at));
        }
        Ok(value)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

struct JsonParser<'a> {
    text: &'a [u8],
    at: usize,
}

impl JsonParser<'_> {
    fn space(&mut self) {
        while self.text.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), String> {
        self.space();
        if self.text.get(self.at) == Some(&byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at byte {}", byte as char, self.at))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.text[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(format!("bad literal at byte {}", self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.space();
        match self.text.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut members = Vec::new();
                self.space();
                if self.text.get(self.at) == Some(&b'}') {
                    self.at += 1;
                    return Ok(Json::Object(members));
                }
                loop {
                    self.space();
                    let key = self.string()?;
                    self.eat(b':')?;
                    members.push((key, self.value()?));
                    self.space();
                    match self.text.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b'}') => {
                            self.at += 1;
                            return Ok(Json::Object(members));
                        }
                        _ => return Err(format!("bad object at byte {}", self.at)),
                    }
                }
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                self.space();
                if self.text.get(self.at) == Some(&b']') {
                    self.at += 1;
                    return Ok(Json::Array(items));
                }
                loop {
                    items.push(self.value()?);
                    self.space();
                    match self.text.get(self.at) {
                        Some(b',') => self.at += 1,
                        Some(b']') => {
                            self.at += 1;
                            return Ok(Json::Array(items));
                        }
                        _ => return Err(format!("bad array at byte {}", self.at)),
                    }
                }
            }
            Some(b'"') => self.string().map(Json::String),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(_) => {
                let start = self.at;
                while self
                    .text
                    .get(self.at)
                    .is_some_and(|b| b"+-.eE0123456789".contains(b))
                {
                    self.at += 1;
                }
                let number = std::str::from_utf8(&self.text[start..self.at]).unwrap();
                number
                    .parse()
                    .map(Json::Number)
                    .map_err(|e| format!("bad number {number:?}: {e}"))
            }
            None => Err("unexpected end".to_owned()),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut bytes = Vec::new();
        loop {
            match self.text.get(self.at) {
                None => return Err("unterminated string".to_owned()),
                Some(b'"') => {
                    self.at += 1;
                    return String::from_utf8(bytes).map_err(|e| e.to_string());
                }
                Some(b'\\') => {
                    let escaped = *self.text.get(self.at + 1).ok_or("bad escape")?;
                    self.at += 2;
                    let c = match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.text.get(self.at..self.at + 4).ok_or("bad \\u")?;
                            self.at += 4;
                            let code = u32::from_str_radix(std::str::from_utf8(hex).unwrap(), 16)
                                .map_err(|e| e.to_string())?;
                            char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                        other => return Err(format!("bad escape \\{}", other as char)),
                    };
                    bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                }
                Some(&byte) => {
                    bytes.push(byte);
                    self.at += 1;
                }
            }
        }
    }
}

/// The modes `bench_django.py` measures.
const BENCH_MODES: [&str; 6] = [
    "wait",
    "timeout0",
    "timeout5s",
    "timeout_none",
    "shared",
    "xact",
];

#[tokio::test(flavor = "multi_thread")]
async fn the_django_benchmark_reports_every_mode() {
    let db = TestDb::new().await;
    let python = python();
    let url = db.url().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(interop_script("bench_django.py"))
            .arg(url)
            .arg("20")
            .stdin(Stdio::null())
            .output()
    })
    .await
    .expect("benchmark thread")
    .expect("running bench_django.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bench_django.py failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let json = Json::parse(stdout.trim())
        .unwrap_or_else(|e| panic!("bench_django.py printed no JSON ({e}):\n{stdout}"));

    let positive = |value: Option<&Json>, what: &str| match value {
        Some(Json::Number(n)) if *n > 0.0 && n.is_finite() => {}
        other => panic!("{what}: expected a positive number, got {other:?} in {stdout}"),
    };
    positive(json.get("floor_us"), "floor_us");
    let medians = json.get("medians").expect("medians");
    positive(medians.get("floor_us"), "medians.floor_us");
    let modes = json.get("modes").expect("modes");
    for mode in BENCH_MODES {
        positive(modes.get(mode), &format!("modes.{mode}"));
        positive(medians.get(mode), &format!("medians.{mode}"));
    }
    assert_eq!(json.get("iterations"), Some(&Json::Number(20.0)));
    assert!(
        holders(&db, &Id::name("pglock-bench-django"))
            .await
            .is_empty(),
        "the benchmark leaves no lock behind"
    );
}

#[test]
fn the_json_checker_parses_what_it_must() {
    let value = Json::parse(r#" {"a": [1, -2.5e3, true, null], "b\"\u00e9": {}} "#).unwrap();
    assert_eq!(
        value,
        Json::Object(vec![
            (
                "a".to_owned(),
                Json::Array(vec![
                    Json::Number(1.0),
                    Json::Number(-2500.0),
                    Json::Bool(true),
                    Json::Null
                ])
            ),
            ("b\"é".to_owned(), Json::Object(vec![])),
        ])
    );
    assert!(Json::parse("{\"a\": 1,}").is_err());
    assert!(Json::parse("{} x").is_err());
    assert_eq!(json_string("a\"\\\n\0é"), r#""a\"\\\u000a\u0000é""#);
}
