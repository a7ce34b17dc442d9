//! The `pglock` command, run as a real process against a real Postgres with real blocked
//! sessions: listings, filters, the blocking tree, JSON, configs, killing with and without the
//! prompt, `--watch`, colour, and every kind of bad input.

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    PATIENCE, Running, backend_exists, bigint_key, eventually, exec, pid, server_version, start,
    until_waiting,
};
use pglock_tests::TestDb;
use sqlx::{Connection as _, PgConnection, PgPool};

/// The `pglock` executable (package `pglock-cli`), built once per test process.
///
/// `CARGO_BIN_EXE_pglock` only exists for the tests of the package that has the binary, so
/// this asks cargo, which builds it if it is missing or stale and names the file in its JSON
/// messages. It selects what `cargo test --workspace` (and nextest) builds, the workspace's
/// test targets, plus the binary: features then unify as in that build, so the binary links
/// against the dependencies already built (about 10 s the first time in a run, then nothing)
/// instead of rebuilding tokio and sqlx under other features (about 45 s).
fn binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = without_crate_variables(Command::new(&cargo))
            .args(["build", "--workspace", "--tests", "--bin", "pglock"])
            .arg("--message-format=json-render-diagnostics")
            .current_dir(workspace)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {cargo:?} to build the pglock command: {e}"));
        assert!(
            output.status.success(),
            "building the pglock command failed ({}); run `cargo build -p pglock-cli` \
             to see why",
            output.status
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        stdout
            .lines()
            .filter(|line| line.contains(r#""reason":"compiler-artifact""#))
            // The binary itself, not its unit-test harness (also a "bin" named pglock).
            .filter(|line| {
                line.contains(r#""name":"pglock""#)
                    && line.contains(r#""kind":["bin"]"#)
                    && line.contains(r#""test":false"#)
            })
            .find_map(|line| {
                let start = line.find(r#""executable":""#)? + r#""executable":""#.len();
                let end = start + line[start..].find('"')?;
                Some(PathBuf::from(&line[start..end]))
            })
            .unwrap_or_else(|| panic!("cargo named no pglock executable in:\n{stdout}"))
    })
}

/// `command` without the variables cargo sets for the crate under test (`CARGO_MANIFEST_DIR`,
/// `CARGO_PKG_NAME`, ...). Some build scripts (ring's) rerun when those change, so a cargo run
/// from a test would otherwise rebuild ring and everything above it (minutes) on every run, and
/// again for the next build from a shell.
fn without_crate_variables(mut command: Command) -> Command {
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_crate = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_MANIFEST_LINKS",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
            "OUT_DIR",
        ]
        .contains(&name.as_ref())
            || name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_EXE_");
        if per_crate {
            command.env_remove(name.as_ref());
        }
    }
    command
}

/// A directory of its own, to run the command in (no `pglock.toml` unless a test writes one).
fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pglock-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The command with a clean environment: no `DATABASE_URL`, `COLUMNS` or `NO_COLOR` unless a
/// test sets them, run in an empty directory.
fn pglock(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .current_dir(empty_dir("cwd"));
    command
}

/// What a run printed, and how it ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    /// The run failed with exactly one line on stderr, `pglock: <message>`, and printed nothing
    /// else; returns the message.
    fn one_line_error(&self) -> &str {
        assert_ne!(self.code, Some(0), "{self:#?}");
        assert!(self.code.is_some(), "killed by a signal: {self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{self:#?}");
        lines[0]
            .strip_prefix("pglock: ")
            .unwrap_or_else(|| panic!("not a pglock error: {self:#?}"))
    }

    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }
}

/// Run to the end, feeding `stdin` (or nothing: stdin closed).
async fn run(mut command: Command, stdin: Option<&str>) -> Ran {
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting pglock");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let output = child.wait_with_output().expect("waiting for pglock");
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

/// Wait until backend `pid` is gone.
async fn until_gone(observer: &PgPool, pid: i32) {
    eventually(PATIENCE, &format!("backend {pid} ends"), || async {
        !backend_exists(observer, pid).await
    })
    .await;
}

/// Read a JSON document with Postgres (`jsonb`), so the test needs no JSON crate: the value at
/// `path` (a `#>>` text path such as `{0,pid}`), as text.
async fn json_at(observer: &PgPool, document: &str, path: &str) -> Option<String> {
    sqlx::query_scalar("SELECT $1::jsonb #>> $2::text[]")
        .bind(document)
        .bind(path)
        .fetch_one(observer)
        .await
        .unwrap_or_else(|e| panic!("not JSON ({e}): {document}"))
}

/// A table `items` that one session holds in ACCESS EXCLUSIVE mode, idle in its transaction,
/// while a second session waits to read it.
struct Blocked {
    db: TestDb,
    url: String,
    holder: PgConnection,
    holder_pid: i32,
    waiter: Running,
    waiter_pid: i32,
}

const WAITER_QUERY: &str = "SELECT count(*)\n     FROM items";

async fn blocked() -> Blocked {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE items (id int)").await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(
        &mut holder,
        "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let waiter = start(waiter, WAITER_QUERY);
    until_waiting(db.pool(), waiter_pid).await;
    Blocked {
        url: db.url().to_owned(),
        db,
        holder,
        holder_pid,
        waiter,
        waiter_pid,
    }
}

/// The cells of a compact listing's line.
fn cells(line: &str) -> Vec<&str> {
    line.split(" | ").map(str::trim).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_waits_first_then_holders_cut_to_the_width() {
    let s = blocked().await;
    let mut command = pglock(&["-d", &s.url]);
    command.env("COLUMNS", "200");
    let ran = run(command, None).await;
    let out = ran.ok();
    assert_eq!(ran.stderr, "");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        cells(lines[0])[..6],
        [
            "activity_id",
            "activity__duration",
            "granted",
            "mode",
            "type",
            "target"
        ],
        "{out}"
    );
    // The wait first, then the holder's locks.
    let first = cells(lines[1]);
    assert_eq!(first[0], s.waiter_pid.to_string(), "{out}");
    assert_eq!(
        &first[2..6],
        ["False", "ACCESS_SHARE", "RELATION", "public.items"]
    );
    assert!(
        lines[2..].iter().all(|line| !line.contains("| False |")),
        "{out}"
    );
    let holder = lines
        .iter()
        .map(|line| cells(line))
        .find(|cells| cells[0] == s.holder_pid.to_string() && cells[3] == "ACCESS_EXCLUSIVE")
        .unwrap_or_else(|| panic!("the holder's table lock is listed: {out}"));
    assert_eq!(
        &holder[2..6],
        ["True", "ACCESS_EXCLUSIVE", "RELATION", "public.items"]
    );
    assert!(
        !out.contains('\x1b'),
        "no colour when not on a terminal: {out:?}"
    );

    // The same lines, cut to a narrower terminal.
    let mut command = pglock(&["-d", &s.url]);
    command.env("COLUMNS", "40");
    let narrow = run(command, None).await;
    let narrow: Vec<&str> = narrow.ok().lines().collect();
    assert_eq!(narrow.len(), lines.len(), "{narrow:#?}");
    for (cut, whole) in narrow.iter().zip(&lines) {
        assert!(cut.chars().count() <= 40, "{cut}");
        assert!(whole.starts_with(cut.trim_end()), "{cut} / {whole}");
    }

    // Whole lines when there is no width to cut to; the database from DATABASE_URL.
    let mut command = pglock(&[]);
    command.env("DATABASE_URL", &s.url);
    let whole = run(command, None).await;
    assert!(
        whole.ok().contains("SELECT count(*) FROM items"),
        "{whole:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_attributes_and_filters_narrow_the_listing() {
    let s = blocked().await;
    let ids = |ran: &Ran| -> Vec<String> {
        ran.ok()
            .lines()
            .skip(1)
            .map(|line| cells(line)[0].to_owned())
            .collect()
    };
    let limited = run(
        pglock(&[
            "-d",
            &s.url,
            "-l",
            "1",
            "-a",
            "activity_id",
            "-a",
            "granted",
        ]),
        None,
    )
    .await;
    assert_eq!(
        limited.ok(),
        format!("activity_id | granted\n{:<11} | False\n", s.waiter_pid)
    );

    let waits = run(
        pglock(&["-d", &s.url, "-f", "granted=false", "-a", "activity_id"]),
        None,
    )
    .await;
    assert_eq!(ids(&waits), [s.waiter_pid.to_string()]);

    let exclusive = run(
        pglock(&[
            "-d",
            &s.url,
            "-f",
            "mode=ACCESS_EXCLUSIVE",
            "-o",
            "items",
            "-a",
            "activity_id",
        ]),
        None,
    )
    .await;
    assert_eq!(ids(&exclusive), [s.holder_pid.to_string()]);

    let holder_only = run(
        pglock(&[
            "-d",
            &s.url,
            &s.holder_pid.to_string(),
            "-a",
            "activity_id",
            "-l",
            "1",
        ]),
        None,
    )
    .await;
    let holder_rows = ids(&holder_only);
    assert!(
        holder_rows.len() > 1,
        "no limit with pids: {holder_only:#?}"
    );
    assert!(holder_rows.iter().all(|id| *id == s.holder_pid.to_string()));

    let old = run(
        pglock(&["-d", &s.url, "-f", "activity__duration__gt=1 day"]),
        None,
    )
    .await;
    assert_eq!(old.ok(), "No locks.\n");
    let elsewhere = run(pglock(&["-d", &s.url, "-o", "public.nothing"]), None).await;
    assert_eq!(elsewhere.ok(), "No locks.\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn expanded_shows_one_block_per_lock_with_whole_queries() {
    let s = blocked().await;
    let mut command = pglock(&["-d", &s.url, "-e", "-f", "granted=false"]);
    command.env("COLUMNS", "30");
    let ran = run(command, None).await;
    let out = ran.ok();
    let rule = "─".repeat(30);
    assert!(
        out.starts_with(&format!("{rule}\nactivity_id: {}\n", s.waiter_pid)),
        "{out}"
    );
    assert_eq!(out.matches(&rule).count(), 1, "{out}");
    assert!(out.contains("granted: False\n"), "{out}");
    assert!(out.contains("target: public.items\n"), "{out}");
    // The query whole, on its own lines (dedented as Python's textwrap.dedent does: its first
    // line is not indented, so no line is).
    assert!(
        out.ends_with(&format!("activity__query: {WAITER_QUERY}\n")),
        "{out}"
    );
    assert_eq!(WAITER_QUERY.lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn blocking_pairs_each_wait_with_its_blocker() {
    let s = blocked().await;
    let ran = run(
        pglock(&[
            "-d",
            &s.url,
            "--blocking",
            "-a",
            "activity_id",
            "-a",
            "blocking_activity_id",
            "-a",
            "mode",
        ]),
        None,
    )
    .await;
    let out = ran.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        cells(lines[1]),
        [
            s.waiter_pid.to_string(),
            s.holder_pid.to_string(),
            "ACCESS_SHARE".to_owned()
        ]
    );
    // The default columns name both sides' queries.
    let default = run(pglock(&["-d", &s.url, "--blocking"]), None).await;
    let out = default.ok();
    assert!(
        out.starts_with("activity_id | blocking_activity_id | wait_duration"),
        "{out}"
    );
    assert!(
        out.contains("LOCK TABLE items IN ACCESS EXCLUSIVE MODE"),
        "{out}"
    );
    // A filter on the blocking side.
    let none = run(
        pglock(&[
            "-d",
            &s.url,
            "--blocking",
            "-f",
            "blocking_activity__duration__gte=1 day",
        ]),
        None,
    )
    .await;
    assert_eq!(none.ok(), "No blocked locks.\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tree_puts_root_blockers_first_with_how_many_they_block() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE queue (n int)").await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "BEGIN; LOCK TABLE queue IN ACCESS SHARE MODE").await;
    // The second waits for the holder; the third queues behind the second.
    let mut second = db.connect().await;
    let second_pid = pid(&mut second).await;
    let _second = start(second, "BEGIN; LOCK TABLE queue IN ACCESS EXCLUSIVE MODE");
    until_waiting(db.pool(), second_pid).await;
    let mut third = db.connect().await;
    let third_pid = pid(&mut third).await;
    let _third = start(third, "BEGIN; LOCK TABLE queue IN ACCESS SHARE MODE");
    until_waiting(db.pool(), third_pid).await;
    // A separate pair on an advisory lock, blocking one session only.
    let mut other = db.connect().await;
    let other_pid = pid(&mut other).await;
    exec(&mut other, "SELECT pg_advisory_lock(7)").await;
    let mut other_waiter = db.connect().await;
    let other_waiter_pid = pid(&mut other_waiter).await;
    let _other_waiter = start(other_waiter, "SELECT pg_advisory_lock(7)");
    until_waiting(db.pool(), other_waiter_pid).await;

    let tree = run(pglock(&["-d", db.url(), "tree"]), None).await;
    let out = tree.ok();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(
        lines[0].starts_with(&format!("{holder_pid} blocks 2 · IDLE_IN_TRANSACTION")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("└─ {second_pid} blocks 1 · waits "))
            && lines[1].contains(" for ACCESS_EXCLUSIVE on public.queue · ACTIVE "),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("   └─ {third_pid} · waits")),
        "{out}"
    );
    assert!(
        lines[3].starts_with(&format!("{other_pid} blocks 1 · ")),
        "{out}"
    );
    assert!(
        lines[4].starts_with(&format!("└─ {other_waiter_pid} · waits"))
            && lines[4].contains("for EXCLUSIVE on advisory 7 · ACTIVE"),
        "{out}"
    );
    // --tree is the same; a pid picks the trees it is in.
    let flag = run(pglock(&["-d", db.url(), "--tree"]), None).await;
    assert_eq!(flag.ok().lines().count(), 5);
    let picked = run(
        pglock(&["-d", db.url(), "tree", &third_pid.to_string()]),
        None,
    )
    .await;
    assert_eq!(picked.ok().lines().count(), 3, "{picked:#?}");

    let json = run(pglock(&["-d", db.url(), "tree", "--json"]), None).await;
    let doc = json.ok();
    let at = |path: &'static str| json_at(db.pool(), doc, path);
    assert_eq!(at("{0,pid}").await, Some(holder_pid.to_string()));
    assert_eq!(at("{0,blocks}").await, Some("2".into()));
    assert_eq!(at("{0,waits_for}").await, None);
    assert_eq!(at("{0,blocked,0,pid}").await, Some(second_pid.to_string()));
    assert_eq!(
        at("{0,blocked,0,waits_for,mode}").await,
        Some("ACCESS_EXCLUSIVE".into())
    );
    assert_eq!(
        at("{0,blocked,0,blocked,0,pid}").await,
        Some(third_pid.to_string())
    );
    assert_eq!(
        at("{1,blocked,0,waits_for,target}").await,
        Some("advisory 7".into())
    );
    drop(holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lists_the_chosen_attributes_typed() {
    let s = blocked().await;
    let ran = run(
        pglock(&[
            "-d",
            &s.url,
            "--json",
            "-a",
            "activity_id",
            "-a",
            "granted",
            "-a",
            "wait_duration",
            "-a",
            "activity__query",
        ]),
        None,
    )
    .await;
    let doc = ran.ok();
    assert_eq!(doc.lines().count(), 1, "one line when piped: {doc}");
    let at = |path: &'static str| json_at(s.db.pool(), doc, path);
    assert_eq!(at("{0,activity_id}").await, Some(s.waiter_pid.to_string()));
    assert_eq!(at("{0,granted}").await, Some("false".into()));
    assert_eq!(at("{0,activity__query}").await, Some(WAITER_QUERY.into()));
    if server_version(s.db.pool()).await >= 140_000 {
        let wait: f64 = at("{0,wait_duration}").await.unwrap().parse().unwrap();
        assert!(wait >= 0.0);
    } else {
        // Postgres 13 does not record when a wait began (no pg_locks.waitstart).
        assert_eq!(at("{0,wait_duration}").await, None);
    }
    assert_eq!(
        at("{1,wait_duration}").await,
        None,
        "a held lock has no wait"
    );
    let types: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT jsonb_typeof(e -> 'activity_id') FROM jsonb_array_elements($1::jsonb) e",
    )
    .bind(doc)
    .fetch_all(s.db.pool())
    .await
    .unwrap();
    assert_eq!(types, ["number"]);

    let empty = run(pglock(&["-d", &s.url, "--json", "-o", "nothing"]), None).await;
    assert_eq!(empty.ok(), "[]\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn advisory_locks_show_their_key_and_are_found_by_name() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    let _guard = pglock::advisory("nightly-report")
        .acquire(&mut holder)
        .await
        .unwrap();
    let mut other = db.connect().await;
    exec(
        &mut other,
        "SELECT pg_advisory_lock(42), pg_advisory_lock_shared(1, 2)",
    )
    .await;
    let key = bigint_key("nightly-report");

    let by_name = run(
        pglock(&[
            "-d",
            db.url(),
            "--advisory",
            "nightly-report",
            "-a",
            "activity_id",
            "-a",
            "target",
        ]),
        None,
    )
    .await;
    assert_eq!(
        by_name.ok().lines().nth(1).map(cells),
        Some(vec![
            holder_pid.to_string().as_str(),
            &format!("advisory \"nightly-report\" ({key})")
        ]),
        "{by_name:#?}"
    );
    assert_eq!(by_name.ok().lines().count(), 2, "{by_name:#?}");

    let listing = run(pglock(&["-d", db.url(), "-f", "type=x"]), None).await;
    assert!(
        listing
            .one_line_error()
            .starts_with("unknown filter key \"type\"")
    );

    let keys = run(
        pglock(&[
            "-d",
            db.url(),
            "-f",
            "advisory_key=42",
            "--advisory-key",
            "1,2",
            "-a",
            "advisory_key",
            "-a",
            "target",
            "-a",
            "mode",
        ]),
        None,
    )
    .await;
    let mut rows: Vec<Vec<String>> = keys
        .ok()
        .lines()
        .skip(1)
        .map(|line| cells(line).into_iter().map(str::to_owned).collect())
        .collect();
    rows.sort();
    assert_eq!(
        rows,
        [
            ["(1, 2)", "advisory (1, 2)", "SHARE"],
            ["42", "advisory 42", "EXCLUSIVE"],
        ],
        "{keys:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn configs_come_from_pglock_toml_and_the_command_line_overrides_them() {
    let s = blocked().await;
    let dir = empty_dir("configs");
    std::fs::write(
        dir.join("pglock.toml"),
        format!(
            "attributes = [\"activity_id\", \"mode\"]\n\
             [configs.waits]\n\
             filters = [\"granted=false\"]\n\
             attributes = [\"activity_id\", \"granted\"]\n\
             [configs.here]\n\
             database_url = \"{}\"\n\
             pids = [{}]\n",
            s.url, s.holder_pid
        ),
    )
    .unwrap();
    let in_dir = |args: &[&str]| {
        let mut command = pglock(args);
        command.current_dir(&dir);
        command
    };
    let waits = run(in_dir(&["-d", &s.url, "-c", "waits"]), None).await;
    assert_eq!(
        waits.ok(),
        format!("activity_id | granted\n{:<11} | False\n", s.waiter_pid)
    );
    // The command line's attributes replace the config's.
    let overridden = run(in_dir(&["-d", &s.url, "-c", "waits", "-a", "mode"]), None).await;
    assert_eq!(overridden.ok(), "mode\nACCESS_SHARE\n");
    // The file's defaults apply without a config; a config can name the database and pids.
    let defaults = run(in_dir(&["-c", "here"]), None).await;
    let out = defaults.ok();
    assert!(out.starts_with("activity_id | mode\n"), "{out}");
    assert!(
        out.lines()
            .skip(1)
            .all(|l| cells(l)[0] == s.holder_pid.to_string()),
        "{out}"
    );
    // --config-file from anywhere.
    let file = dir.join("pglock.toml");
    let elsewhere = run(
        pglock(&[
            "-d",
            &s.url,
            "--config-file",
            file.to_str().unwrap(),
            "-c",
            "waits",
        ]),
        None,
    )
    .await;
    assert_eq!(elsewhere.ok(), waits.stdout);

    let unknown = run(in_dir(&["-d", &s.url, "-c", "nope"]), None).await;
    assert_eq!(
        unknown.one_line_error(),
        "\"nope\" is not a config in pglock.toml (configs: here, waits)"
    );
    std::fs::write(dir.join("pglock.toml"), "[configs.x]\nfilterz = []\n").unwrap();
    let bad = run(in_dir(&["-d", &s.url, "-c", "x"]), None).await;
    assert!(
        bad.one_line_error()
            .starts_with("pglock.toml, line 2: unknown field `filterz`"),
        "{bad:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_with_yes_ends_the_blocker_and_frees_the_waiter() {
    let s = blocked().await;
    let ran = run(
        pglock(&["-d", &s.url, "--blocking", "--terminate", "-y"]),
        None,
    )
    .await;
    assert_eq!(ran.ok(), "Terminated 1 blocking query\n");
    assert_eq!(ran.stderr, "");
    until_gone(s.db.pool(), s.holder_pid).await;
    let (result, _) = s.waiter.await.unwrap();
    result.expect("the waiter's query ran once the blocker was gone");
    drop(s.holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prompt_answered_n_aborts_and_kills_nothing() {
    let s = blocked().await;
    for answer in ["n\n", "\n", "yess\n", ""] {
        let ran = run(
            pglock(&["-d", &s.url, "-o", "items", "--terminate"]),
            Some(answer),
        )
        .await;
        assert_eq!(ran.code, Some(1), "{ran:#?}");
        assert_eq!(ran.stdout, "");
        assert_eq!(
            ran.stderr, "Terminate 2 queries? (y/[n]) Aborting!\n",
            "{answer:?}"
        );
    }
    let ran = run(
        pglock(&["-d", &s.url, "--blocking", "--cancel"]),
        Some("no\n"),
    )
    .await;
    assert_eq!(ran.stderr, "Cancel 1 blocking query? (y/[n]) Aborting!\n");
    assert!(backend_exists(s.db.pool(), s.holder_pid).await);
    assert!(backend_exists(s.db.pool(), s.waiter_pid).await);
    until_waiting(s.db.pool(), s.waiter_pid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prompt_answered_y_terminates_the_backends_counted() {
    let mut s = blocked().await;
    let ran = run(
        pglock(&["-d", &s.url, "-f", "granted=false", "--terminate"]),
        Some("y\n"),
    )
    .await;
    assert_eq!(ran.stderr, "Terminate 1 query? (y/[n]) ");
    assert_eq!(ran.ok(), "Terminated 1 query\n");
    until_gone(s.db.pool(), s.waiter_pid).await;
    let (result, _) = s.waiter.await.unwrap();
    assert!(result.is_err(), "the waiter's session was ended");
    exec(&mut s.holder, "SELECT 1").await;

    let nothing = run(
        pglock(&["-d", &s.url, "-f", "granted=false", "--cancel", "-y"]),
        None,
    )
    .await;
    assert_eq!(nothing.code, Some(1));
    assert_eq!(nothing.stderr, "No queries to cancel.\n");
    let json = run(
        pglock(&["-d", &s.url, "-o", "items", "--cancel", "-y", "--json"]),
        None,
    )
    .await;
    assert_eq!(
        json.ok(),
        format!(
            "{{\"action\":\"cancel\",\"blocking\":false,\"pids\":[{}]}}\n",
            s.holder_pid
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_refreshes_until_stopped() {
    let s = blocked().await;
    let mut command = pglock(&["-d", &s.url, "--watch", "0.2", "-a", "activity_id"]);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let frames = tokio::task::spawn_blocking(move || {
        let mut frames = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if line.starts_with("Every 0.2s: pglock at ") {
                frames.push(String::new());
            } else if let Some(frame) = frames.last_mut() {
                frame.push_str(&line);
                frame.push('\n');
            }
            if frames.len() == 3 {
                break;
            }
        }
        frames
    });
    let frames = tokio::time::timeout(Duration::from_secs(60), frames)
        .await
        .expect("three frames within a minute")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(frames.len(), 3);
    for frame in &frames[..2] {
        assert!(frame.contains(&format!("\n{}\n", s.waiter_pid)), "{frame}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn colour_on_a_terminal_only_and_never_with_no_color() {
    let s = blocked().await;
    // `script` runs the command on a pseudo-terminal.
    let on_terminal = |no_color: Option<&str>| {
        let mut command = Command::new("script");
        command
            .args(["-qec"])
            .arg(format!(
                "{} -d '{}' -f granted=false",
                binary().display(),
                s.url
            ))
            .arg("/dev/null")
            .env_remove("COLUMNS")
            .env_remove("NO_COLOR")
            .env("TERM", "xterm");
        if let Some(value) = no_color {
            command.env("NO_COLOR", value);
        }
        command
    };
    let coloured = run(on_terminal(None), None).await;
    assert!(
        coloured.code == Some(0),
        "`script` (util-linux) is needed to run pglock on a terminal: {coloured:#?}"
    );
    assert!(
        coloured
            .stdout
            .contains(&format!("\x1b[33m{}", s.waiter_pid)),
        "{coloured:#?}"
    );
    let plain = run(on_terminal(Some("1")), None).await;
    assert!(
        plain.stdout.contains(&s.waiter_pid.to_string()),
        "{plain:#?}"
    );
    assert!(!plain.stdout.contains('\x1b'), "{plain:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn help_shows_the_options_and_examples() {
    let ran = run(pglock(&["--help"]), None).await;
    let out = ran.ok();
    for text in [
        "--database-url",
        "--filter",
        "--blocking",
        "--terminate",
        "Examples:",
        "pglock tree",
        "NO_COLOR",
    ] {
        assert!(out.contains(text), "{text}: {out}");
    }
    let usage = run(pglock(&["--cancel", "--terminate"]), None).await;
    assert_eq!(usage.code, Some(2), "{usage:#?}");
    assert!(usage.stderr.contains("cannot be used with"), "{usage:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_a_one_line_error_and_kills_nothing() {
    let s = blocked().await;
    let server = url::Url::parse(&s.url).unwrap();
    let with = |change: &dyn Fn(&mut url::Url)| {
        let mut url = server.clone();
        change(&mut url);
        url.to_string()
    };
    let closed_port = with(&|url| url.set_port(Some(1)).unwrap());
    let no_role = with(&|url| url.set_username("no_such_role").unwrap());
    let no_database = with(&|url| url.set_path("/no_such_database"));
    let dir = empty_dir("bad");
    std::fs::write(dir.join("pglock.toml"), "[configs.real]\nblocking = true\n").unwrap();
    let victim = s.holder_pid.to_string();

    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["-d", &closed_port], "cannot connect to"),
        (vec!["-d", &no_role], "role \"no_such_role\" does not exist"),
        (
            vec!["-d", &no_database],
            "database \"no_such_database\" does not exist",
        ),
        (vec!["-d", "mysql://x"], "bad database URL"),
        (
            vec![],
            "no database to inspect: give -d/--database-url, or set DATABASE_URL",
        ),
        (
            vec!["-d", &s.url, "-c", "unknown"],
            "\"unknown\" is not a config in pglock.toml (configs: real)",
        ),
        (
            vec!["-d", &s.url, "-a", "colour"],
            "unknown attribute \"colour\": expected one of activity_id,",
        ),
        (
            vec!["-d", &s.url, "-f", "colour=red"],
            "unknown filter key \"colour\" in \"colour=red\"",
        ),
        (
            vec!["-d", &s.url, "-f", "granted"],
            "malformed filter \"granted\": expected key=value",
        ),
        (
            vec!["-d", &s.url, "-f", "granted=maybe"],
            "bad value in filter \"granted=maybe\"",
        ),
        (
            vec!["-d", &s.url, "2147483647"],
            "no backend has pid 2147483647",
        ),
        (
            vec!["-d", &s.url, "-f", "blocking_activity_id=1"],
            "filter \"blocking_activity_id=1\" needs --blocking",
        ),
    ];
    for (args, expected) in cases {
        // Each would terminate the victim if it got that far.
        let mut args = args;
        args.extend(["-o", "items", "--terminate", "-y"]);
        let mut command = pglock(&args);
        command.current_dir(&dir);
        let ran = run(command, None).await;
        let message = ran.one_line_error();
        assert!(
            message.contains(expected),
            "{args:?}: {message:?} lacks {expected:?}"
        );
        assert!(!message.contains("secret"), "{message}");
    }
    let listing = run(pglock(&["-d", &s.url, &victim, "-l", "x"]), None).await;
    assert_eq!(listing.code, Some(2), "a usage error: {listing:#?}");
    assert!(backend_exists(s.db.pool(), s.holder_pid).await);
    assert!(backend_exists(s.db.pool(), s.waiter_pid).await);
    until_waiting(s.db.pool(), s.waiter_pid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_a_one_line_error_and_kills_nothing() {
    let s = blocked().await;
    // The test cluster trusts everyone but members of this role (see pglock-tests).
    let group = pglock_tests::PASSWORD_REQUIRED_ROLE;
    let role = format!("{}_pw", s.db.name());
    let mut admin = s.db.connect().await;
    exec(
        &mut admin,
        &format!(
            "DO $$ BEGIN CREATE ROLE {group} NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ),
    )
    .await;
    exec(&mut admin, "SET password_encryption = 'scram-sha-256'").await;
    exec(
        &mut admin,
        &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'right' IN ROLE {group}"),
    )
    .await;
    let mut url = url::Url::parse(&s.url).unwrap();
    url.set_username(&role).unwrap();

    url.set_password(Some("wrong")).unwrap();
    let ran = run(pglock(&["-d", url.as_str(), "--terminate", "-y"]), None).await;
    let message = ran.one_line_error();
    assert!(
        message.contains(&format!(
            "password authentication failed for user \"{role}\""
        )),
        "{message:?} (if the server trusts every role, it never asks for a password: the \
         harness's cluster asks members of {group})"
    );
    assert!(
        !message.contains("wrong"),
        "the password is not shown: {message}"
    );
    assert!(backend_exists(s.db.pool(), s.holder_pid).await);
    assert!(backend_exists(s.db.pool(), s.waiter_pid).await);

    // The same role with its right password gets in: it was the password that was refused.
    url.set_password(Some("right")).unwrap();
    let listed = run(pglock(&["-d", url.as_str(), "-o", "items"]), None).await;
    assert!(listed.ok().contains("items"), "{listed:#?}");
    exec(&mut admin, &format!("DROP ROLE {role}")).await;
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_without_privilege_to_signal_gets_an_error_and_kills_nothing() {
    let s = blocked().await;
    let is_superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(s.db.pool())
            .await
            .unwrap();
    assert!(
        is_superuser,
        "the test server's user must be a superuser for this test"
    );
    let role = format!("{}_weak", s.db.name());
    exec(
        &mut s.db.connect().await,
        &format!("CREATE ROLE {role} LOGIN PASSWORD 'secret'"),
    )
    .await;
    let mut weak_url = url::Url::parse(&s.url).unwrap();
    weak_url.set_username(&role).unwrap();
    weak_url.set_password(Some("secret")).unwrap();

    for args in [
        vec!["--blocking", "--terminate", "-y"],
        vec!["-o", "items", "--cancel", "-y"],
    ] {
        let mut args = args;
        args.extend(["-d", weak_url.as_str()]);
        let ran = run(pglock(&args), None).await;
        let message = ran.one_line_error();
        assert!(message.starts_with("permission denied"), "{message}");
        assert!(!message.contains("secret"), "{message}");
    }
    assert!(backend_exists(s.db.pool(), s.holder_pid).await);
    assert!(backend_exists(s.db.pool(), s.waiter_pid).await);
    until_waiting(s.db.pool(), s.waiter_pid).await;

    let mut admin = s.db.connect().await;
    eventually(PATIENCE, "the weak role's sessions are gone", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = $1)",
        )
        .bind(&role)
        .fetch_one(s.db.pool())
        .await
        .unwrap()
    })
    .await;
    exec(&mut admin, &format!("DROP ROLE {role}")).await;
    admin.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn terminating_everything_spares_the_command_itself() {
    let s = blocked().await;
    // No filter: every backend with a lock in the database, which the command's own session
    // also has while it lists. Signalling itself would fail the statement.
    let ran = run(pglock(&["-d", &s.url, "--terminate", "-y"]), None).await;
    assert_eq!(ran.ok(), "Terminated 2 queries\n", "{ran:#?}");
    until_gone(s.db.pool(), s.holder_pid).await;
    until_gone(s.db.pool(), s.waiter_pid).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deadlock_shows_as_a_cycle_in_the_tree() {
    let db = TestDb::new().await;
    exec(
        &mut db.connect().await,
        "CREATE TABLE a (n int); CREATE TABLE b (n int)",
    )
    .await;
    // Postgres breaks a deadlock once a waiter has waited deadlock_timeout: make that long
    // enough to look at the cycle.
    let mut first = db.connect().await;
    let first_pid = pid(&mut first).await;
    exec(
        &mut first,
        "SET deadlock_timeout = '10min'; BEGIN; LOCK TABLE a",
    )
    .await;
    let mut second = db.connect().await;
    let second_pid = pid(&mut second).await;
    exec(
        &mut second,
        "SET deadlock_timeout = '10min'; BEGIN; LOCK TABLE b",
    )
    .await;
    let _first = start(first, "LOCK TABLE b");
    until_waiting(db.pool(), first_pid).await;
    let _second = start(second, "LOCK TABLE a");
    until_waiting(db.pool(), second_pid).await;

    let tree = run(pglock(&["-d", db.url(), "tree"]), None).await;
    let out = tree.ok();
    let lines: Vec<&str> = out.lines().collect();
    let (low, high) = (first_pid.min(second_pid), first_pid.max(second_pid));
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with(&format!("{low} blocks 1 · waits ")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("└─ {high} blocks 1 · waits ")),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("   └─ {low} blocks 1 · ")),
        "{out}"
    );
    assert!(lines[2].ends_with(" (deadlock: already above)"), "{out}");

    let json = run(pglock(&["-d", db.url(), "tree", "--json"]), None).await;
    let doc = json.ok();
    assert_eq!(
        json_at(db.pool(), doc, "{0,blocked,0,pid}").await,
        Some(high.to_string())
    );
    assert_eq!(
        json_at(db.pool(), doc, "{0,blocked,0,blocked}").await,
        Some("[]".into())
    );
    // End it: terminating either side frees the other.
    let ended = run(
        pglock(&["-d", db.url(), &low.to_string(), "--terminate", "-y"]),
        None,
    )
    .await;
    assert_eq!(ended.ok(), "Terminated 1 query\n");
}
