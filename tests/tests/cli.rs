//! The `pglock` command, run as a real process against a real Postgres with real blocked
//! sessions: listings, filters, the blocking tree, JSON, configs, killing with and without the
//! prompt, `--watch`, colour, and every kind of bad input.

#[path = "common/binary.rs"]
mod command;
mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use command::binary;
use common::{
    PATIENCE, Running, backend_exists, bigint_key, eventually, exec, pid, server_version, start,
    until_waiting,
};
use pglock_tests::TestDb;
use sqlx::{Connection as _, PgConnection, PgPool};

/// A directory of its own, to run the command in (no `pglock.toml` unless a test writes one).
fn empty_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pglock-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The command with a clean environment: no `DATABASE_URL`, `PG*` (libpq's `PGHOST`,
/// `PGPASSWORD`, `PGSSLMODE`...), `COLUMNS`, `NO_COLOR` or `CLICOLOR_FORCE` unless a test sets
/// them, run in an empty directory, so that a developer's environment cannot leak into a test.
fn pglock(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("COLUMNS")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("RUST_LOG")
        .current_dir(empty_dir("cwd"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
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

/// The cells of a compact listing, header first: each line split where the header's headings
/// start (headings have no spaces), by characters.
fn table(out: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines();
    let header: Vec<char> = lines.next().unwrap_or("").chars().collect();
    let starts: Vec<usize> = (0..header.len())
        .filter(|&i| header[i] != ' ' && (i == 0 || header[i - 1] == ' '))
        .collect();
    std::iter::once(out.lines().next().unwrap_or(""))
        .chain(lines)
        .map(|line| {
            let chars: Vec<char> = line.chars().collect();
            starts
                .iter()
                .enumerate()
                .map(|(k, &start)| {
                    let end = starts.get(k + 1).copied().unwrap_or(chars.len());
                    let (start, end) = (start.min(chars.len()), end.min(chars.len()));
                    chars[start..end]
                        .iter()
                        .collect::<String>()
                        .trim()
                        .to_owned()
                })
                .collect()
        })
        .collect()
}

/// The rows of a compact listing (without the header).
fn rows(out: &str) -> Vec<Vec<String>> {
    table(out).into_iter().skip(1).collect()
}

/// How many terminal columns a line takes (the tests' text is ASCII but for the ellipsis).
fn columns(line: &str) -> usize {
    line.chars().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_waits_first_then_holders_cut_to_the_width() {
    let s = blocked().await;
    let mut command = pglock(&["-d", &s.url]);
    command.env("COLUMNS", "200");
    let ran = run(command, None).await;
    let out = ran.ok();
    assert_eq!(ran.stderr, "");
    let cells = table(out);
    assert_eq!(
        cells[0],
        [
            "pid",
            "database",
            "application",
            "user",
            "state",
            "lock",
            "target",
            "duration",
            "query"
        ],
        "{out}"
    );
    // The wait first, then the holder's locks; no lock a transaction holds on its own id.
    let first = &cells[1];
    assert_eq!(first[0], s.waiter_pid.to_string(), "{out}");
    assert_eq!(first[1], s.db.name(), "{out}");
    assert_eq!(
        first[4..7],
        ["ACTIVE", "waits ACCESS_SHARE", "public.items"],
        "{out}"
    );
    assert_eq!(first[8], "SELECT count(*) FROM items", "{out}");
    assert!(
        cells[2..].iter().all(|row| row[5].starts_with("holds")),
        "{out}"
    );
    assert!(cells[1..].iter().all(|row| row[6] != "virtualxid"), "{out}");
    let holder = cells
        .iter()
        .find(|row| row[0] == s.holder_pid.to_string() && row[5] == "holds ACCESS_EXCLUSIVE")
        .unwrap_or_else(|| panic!("the holder's table lock is listed: {out}"));
    assert_eq!(
        holder[4..7],
        [
            "IDLE_IN_TRANSACTION",
            "holds ACCESS_EXCLUSIVE",
            "public.items"
        ]
    );
    assert!(
        !out.contains('\x1b'),
        "no colour when not on a terminal: {out:?}"
    );
    // --transaction-locks shows them.
    let mut command = pglock(&["-d", &s.url, "--transaction-locks"]);
    command.env("COLUMNS", "200");
    let all = run(command, None).await;
    assert!(
        rows(all.ok()).iter().any(|row| row[6] == "virtualxid"),
        "{all:#?}"
    );

    // The same rows in a narrower terminal: every line fits, the pids stay whole.
    let mut command = pglock(&["-d", &s.url]);
    command.env("COLUMNS", "40");
    let narrow = run(command, None).await;
    let narrow: Vec<&str> = narrow.ok().lines().collect();
    assert_eq!(narrow.len(), cells.len(), "{narrow:#?}");
    for (cut, whole) in narrow.iter().zip(&cells) {
        assert!(columns(cut) <= 40, "{cut}");
        assert!(cut.starts_with(&whole[0]), "{cut} / {whole:?}");
    }

    // Whole lines when there is no width to cut to; the database from DATABASE_URL.
    let mut command = pglock(&[]);
    command.env("DATABASE_URL", &s.url);
    let whole = run(command, None).await;
    assert!(
        whole.ok().contains("SELECT count(*) FROM items"),
        "{whole:#?}"
    );
    assert!(!whole.ok().contains('…'), "{whole:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_attributes_and_filters_narrow_the_listing() {
    let s = blocked().await;
    let ids = |ran: &Ran| -> Vec<String> {
        rows(ran.ok())
            .into_iter()
            .map(|row| row[0].clone())
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
        format!(
            "pid{} granted\n{} False\n",
            " ".repeat(s.waiter_pid.to_string().len() - 3),
            s.waiter_pid
        )
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
            "--transaction-locks",
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
    assert!(out.contains("lock: waits ACCESS_SHARE\n"), "{out}");
    assert!(
        out.contains(&format!("activity__database: {}\n", s.db.name())),
        "{out}"
    );
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
        table(out)[1],
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
        out.starts_with("pid ")
            && table(out)[0][..4] == ["pid", "database", "blocking_pid", "wait_duration"],
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
    // Each line: pid, how many it blocks, user@database, what it waits for, state, query.
    let at_db = format!("@{} · ", db.name());
    assert!(
        lines[0].starts_with(&format!("{holder_pid} blocks 2 · "))
            && lines[0].contains(&format!("{at_db}IDLE_IN_TRANSACTION")),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("└─ {second_pid} blocks 1 · "))
            && lines[1].contains(&format!("{at_db}waits "))
            && lines[1].contains(" for ACCESS_EXCLUSIVE on public.queue · ACTIVE "),
        "{out}"
    );
    assert!(
        lines[2].starts_with(&format!("   └─ {third_pid} · "))
            && lines[2].contains(&format!("{at_db}waits")),
        "{out}"
    );
    assert!(
        lines[3].starts_with(&format!("{other_pid} blocks 1 · ")),
        "{out}"
    );
    assert!(
        lines[4].starts_with(&format!("└─ {other_waiter_pid} · "))
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

/// Sessions queued on one lock are each blocked by the holder and by everyone queued before
/// them (`pg_blocking_pids`): a tree drawing every path would print a queue of n about 2^n
/// times. Each is drawn once, under the holder.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_queue_shows_each_session_once() {
    const QUEUED: usize = 12;
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "SELECT pg_advisory_lock(12)").await;
    let mut queued = Vec::new();
    let mut running = Vec::new();
    for _ in 0..QUEUED {
        let mut waiter = db.connect().await;
        let waiter_pid = pid(&mut waiter).await;
        // In order: each queues behind the ones before it.
        running.push(start(waiter, "SELECT pg_advisory_lock(12)"));
        until_waiting(db.pool(), waiter_pid).await;
        queued.push(waiter_pid);
    }

    let tree = run(pglock(&["-d", db.url(), "tree"]), None).await;
    let out = tree.ok();
    let pids: Vec<i32> = out
        .lines()
        .map(|line| {
            let line = line.trim_start_matches(['├', '└', '│', '─', ' ']);
            let first = line.split([' ', '·']).next().unwrap_or_default();
            first
                .parse()
                .unwrap_or_else(|e| panic!("no pid first ({e}): {line}\n{out}"))
        })
        .collect();
    assert_eq!(pids.len(), QUEUED + 1, "{out}");
    assert_eq!(pids[0], holder_pid, "{out}");
    for waiter in &queued {
        assert_eq!(
            pids.iter().filter(|pid| *pid == waiter).count(),
            1,
            "{waiter} once: {out}"
        );
    }
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("{holder_pid} blocks {QUEUED} · ")),
        "{out}"
    );
    // Under the holder, the only one of their blockers that waits for nothing.
    assert!(
        lines[1..]
            .iter()
            .all(|line| line.starts_with("├─ ") || line.starts_with("└─ ")),
        "{out}"
    );

    let json = run(pglock(&["-d", db.url(), "tree", "--json"]), None).await;
    let doc = json.ok();
    let in_json: Vec<i32> = sqlx::query_scalar(
        "SELECT (pid #>> '{}')::int FROM \
         jsonb_path_query($1::jsonb, 'strict $.** ? (@.type() == \"object\" && exists(@.pid)).pid') \
         AS pid ORDER BY 1",
    )
    .bind(doc)
    .fetch_all(db.pool())
    .await
    .unwrap_or_else(|e| panic!("not JSON ({e}): {doc}"));
    let mut expected: Vec<i32> = queued.iter().copied().chain([holder_pid]).collect();
    expected.sort_unstable();
    assert_eq!(in_json, expected, "{doc}");
    drop(holder);
    drop(running);
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

    // Keys in column order, the default columns' too (jsonb would sort them: read the text).
    let default = run(pglock(&["-d", &s.url, "--json", "-l", "1"]), None).await;
    let doc = default.ok();
    let keys = [
        "activity_id",
        "activity__database",
        "activity__application_name",
        "activity__user",
        "activity__state",
        "lock",
        "target",
        "activity__duration",
        "activity__query",
    ];
    let at: Vec<usize> = keys
        .iter()
        .map(|key| {
            doc.find(&format!("\"{key}\":"))
                .unwrap_or_else(|| panic!("{key} in {doc}"))
        })
        .collect();
    assert!(at.windows(2).all(|pair| pair[0] < pair[1]), "{doc}");
    assert_eq!(
        json_at(s.db.pool(), doc, "{0,lock}").await,
        Some("waits ACCESS_SHARE".into())
    );
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
        rows(by_name.ok()).first().cloned(),
        Some(vec![
            holder_pid.to_string(),
            format!("advisory \"nightly-report\" ({key})")
        ]),
        "{by_name:#?}"
    );
    assert_eq!(by_name.ok().lines().count(), 2, "{by_name:#?}");

    let listing = run(pglock(&["-d", db.url(), "-f", "kind=x"]), None).await;
    assert!(
        listing
            .one_line_error()
            .starts_with("unknown filter key \"kind\"")
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
    let mut found = rows(keys.ok());
    found.sort();
    assert_eq!(
        found,
        [
            ["(1, 2)", "advisory (1, 2)", "SHARE"],
            ["42", "advisory 42", "EXCLUSIVE"],
        ],
        "{keys:#?}"
    );

    // The key and the target as shown are fields too (the name-hashed key as its number).
    for (filter, expected) in [
        (
            "target=advisory (1, 2)".to_owned(),
            vec!["(1, 2)".to_owned()],
        ),
        ("advisory_key__in=42,7".to_owned(), vec!["42".to_owned()]),
        (format!("target=advisory {key}"), vec![key.to_string()]),
        (
            "target__startswith=advisory (".to_owned(),
            vec!["(1, 2)".to_owned()],
        ),
    ] {
        let ran = run(
            pglock(&["-d", db.url(), "-f", &filter, "-a", "advisory_key"]),
            None,
        )
        .await;
        let shown: Vec<String> = rows(ran.ok())
            .into_iter()
            .map(|row| row[0].clone())
            .collect();
        assert_eq!(shown, expected, "{filter}: {ran:#?}");
    }
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
        format!(
            "pid{} granted\n{} False\n",
            " ".repeat(s.waiter_pid.to_string().len() - 3),
            s.waiter_pid
        )
    );
    // The command line's attributes replace the config's.
    let overridden = run(in_dir(&["-d", &s.url, "-c", "waits", "-a", "mode"]), None).await;
    assert_eq!(overridden.ok(), "mode\nACCESS_SHARE\n");
    // The file's defaults apply without a config; a config can name the database and pids.
    let defaults = run(in_dir(&["-c", "here"]), None).await;
    let out = defaults.ok();
    assert_eq!(table(out)[0], ["pid", "mode"], "{out}");
    assert!(
        rows(out)
            .iter()
            .all(|row| row[0] == s.holder_pid.to_string()),
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

/// `-v` tells on stderr where the command connects (without the password it was given), the
/// queries it sends and the sessions it signals; stdout is what it is without `-v`.
#[tokio::test(flavor = "multi_thread")]
async fn verbose_shows_connects_queries_and_signals_on_stderr_without_the_password() {
    let s = blocked().await;
    let mut url = url::Url::parse(&s.url).unwrap();
    url.set_password(Some("hunter2-secret")).unwrap();
    let ran = run(
        pglock(&["-v", "-d", url.as_str(), "--blocking", "--terminate", "-y"]),
        None,
    )
    .await;
    assert_eq!(ran.ok(), "Terminated 1 blocking query\n");
    assert!(!ran.stderr.contains("hunter2-secret"), "{ran:#?}");
    let connecting = ran
        .stderr
        .lines()
        .find(|line| line.contains("connecting"))
        .unwrap_or_else(|| panic!("no connect event: {ran:#?}"));
    assert!(connecting.contains(s.db.name()), "{connecting}");
    assert!(
        ran.stderr.contains("sqlx::query") && ran.stderr.contains("pg_locks"),
        "the queries: {ran:#?}"
    );
    assert!(
        ran.stderr.contains("signalled") && ran.stderr.contains(&s.holder_pid.to_string()),
        "{ran:#?}"
    );
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
        // The sessions first, one line each, then the question.
        let (listed, question) = ran.stderr.rsplit_once('\n').unwrap_or_default();
        let (listed, _) = listed.rsplit_once('\n').unwrap_or_default();
        assert_eq!(
            ran.stderr.lines().last(),
            Some("Terminate 2 queries? (y/[n]) Aborting!"),
            "{answer:?}: {ran:#?}"
        );
        assert_eq!(question, "");
        let sessions = table(listed);
        assert_eq!(
            sessions[0],
            [
                "pid",
                "database",
                "application",
                "state",
                "duration",
                "start",
                "query"
            ],
            "{ran:#?}"
        );
        let mut pids: Vec<&str> = sessions[1..].iter().map(|row| row[0].as_str()).collect();
        pids.sort();
        let mut expected = [s.holder_pid.to_string(), s.waiter_pid.to_string()];
        expected.sort();
        assert_eq!(pids, expected, "{ran:#?}");
        assert!(
            sessions[1..].iter().all(|row| row[1] == s.db.name()),
            "{ran:#?}"
        );
        assert!(
            ran.stderr
                .contains("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
                && ran.stderr.contains("SELECT count(*) FROM items"),
            "{ran:#?}"
        );
    }
    let ran = run(
        pglock(&["-d", &s.url, "--blocking", "--cancel"]),
        Some("no\n"),
    )
    .await;
    assert!(
        ran.stderr
            .ends_with("\nCancel 1 blocking query? (y/[n]) Aborting!\n"),
        "{ran:#?}"
    );
    assert_eq!(
        rows(&ran.stderr)[0][0],
        s.holder_pid.to_string(),
        "{ran:#?}"
    );
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
    assert!(
        ran.stderr.ends_with("\nTerminate 1 query? (y/[n]) "),
        "{ran:#?}"
    );
    let listed = rows(&ran.stderr);
    assert_eq!(listed.len(), 2, "one session, then the question: {ran:#?}");
    assert_eq!(listed[0][0], s.waiter_pid.to_string(), "{ran:#?}");
    assert_eq!(listed[0][6], "SELECT count(*) FROM items", "{ran:#?}");
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
            "{{\"action\":\"cancel\",\"blocking\":false,\"roots\":false,\"pids\":[{}]}}\n",
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
        lines[0].starts_with(&format!("{low} blocks 1 · ")) && lines[0].contains(" · waits "),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("└─ {high} blocks 1 · ")) && lines[1].contains(" · waits "),
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

/// A blocked chain: `holder` (application `billing`) reads `orders` in a transaction and
/// idles; `alter` waits for it with an `ALTER TABLE`; `update` queues behind the `ALTER`.
struct Chain {
    db: TestDb,
    holder: PgConnection,
    holder_pid: i32,
    alter: Running,
    alter_pid: i32,
    update: Running,
    update_pid: i32,
}

const HOLDER_QUERY: &str = "BEGIN; SELECT count(*) FROM orders";
const ALTER_QUERY: &str = "ALTER TABLE orders ADD COLUMN note text DEFAULT 'none'";
const UPDATE_QUERY: &str = "UPDATE orders SET id = id + 1 WHERE id > 0";

async fn chain() -> Chain {
    let db = TestDb::new().await;
    exec(
        &mut db.connect().await,
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
    )
    .await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "SET application_name = 'billing'").await;
    exec(&mut holder, HOLDER_QUERY).await;
    let mut alter = db.connect().await;
    let alter_pid = pid(&mut alter).await;
    let alter = start(alter, ALTER_QUERY);
    until_waiting(db.pool(), alter_pid).await;
    let mut update = db.connect().await;
    let update_pid = pid(&mut update).await;
    let update = start(update, UPDATE_QUERY);
    until_waiting(db.pool(), update_pid).await;
    Chain {
        db,
        holder,
        holder_pid,
        alter,
        alter_pid,
        update,
        update_pid,
    }
}

impl Chain {
    /// Each session's pid and query.
    fn sessions(&self) -> [(i32, &'static str); 3] {
        [
            (self.holder_pid, HOLDER_QUERY),
            (self.alter_pid, ALTER_QUERY),
            (self.update_pid, UPDATE_QUERY),
        ]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocked_chain_fits_80_and_120_columns_with_every_query() {
    let c = chain().await;
    for width in ["80", "120"] {
        let mut command = pglock(&["-d", c.db.url()]);
        command.env("COLUMNS", width);
        let ran = run(command, None).await;
        let out = ran.ok();
        let width: usize = width.parse().unwrap();
        assert!(
            out.lines().all(|line| columns(line) <= width),
            "every line fits {width} columns:\n{out}"
        );
        let cells = table(out);
        assert_eq!(cells[0][0], "pid", "{out}");
        assert_eq!(cells[0].last().unwrap(), "query", "{out}");
        for (pid, query) in c.sessions() {
            let row = cells
                .iter()
                .find(|row| row[0] == pid.to_string())
                .unwrap_or_else(|| panic!("{pid} is listed at {width} columns:\n{out}"));
            // The query is there, cut with an ellipsis if it must be, never dropped.
            let shown = row.last().unwrap();
            let start = shown.trim_end_matches('…');
            assert!(
                start.len() >= 10 && query.starts_with(start),
                "{pid}'s query at {width} columns: {shown:?}\n{out}"
            );
            assert!(shown == query || shown.ends_with('…'), "{shown:?}");
        }
        // The holder is recognisable: its application and state.
        let holder = cells
            .iter()
            .find(|row| row[0] == c.holder_pid.to_string())
            .unwrap();
        assert!(
            holder
                .iter()
                .any(|cell| "billing".starts_with(cell.trim_end_matches('…')) && !cell.is_empty()),
            "{out}"
        );
    }
    drop(c.holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_root_only_kill_lists_the_holder_ends_it_and_the_alter_table_completes() {
    let mut c = chain().await;
    // The confirmation lists the one session to be signalled, then asks.
    let asked = run(
        pglock(&["-d", c.db.url(), "tree", "--terminate"]),
        Some("n\n"),
    )
    .await;
    assert_eq!(asked.code, Some(1), "{asked:#?}");
    let (listed, question) = asked.stderr.trim_end().rsplit_once('\n').unwrap();
    assert_eq!(question, "Terminate 1 root blocker? (y/[n]) Aborting!");
    let sessions = table(listed);
    assert_eq!(
        sessions[0],
        [
            "pid",
            "database",
            "application",
            "state",
            "duration",
            "start",
            "query"
        ]
    );
    assert_eq!(sessions.len(), 2, "{asked:#?}");
    // When its query started, to the second, in UTC.
    assert!(
        sessions[1][5].len() == "2026-12-03T08:00:00Z".len() && sessions[1][5].ends_with('Z'),
        "{asked:#?}"
    );
    assert_eq!(
        sessions[1][..4],
        [
            c.holder_pid.to_string(),
            c.db.name().to_owned(),
            "billing".to_owned(),
            "IDLE_IN_TRANSACTION".to_owned()
        ]
    );
    assert_eq!(sessions[1][6], HOLDER_QUERY);
    for (pid, _) in c.sessions() {
        assert!(backend_exists(c.db.pool(), pid).await, "{pid} was spared");
    }

    // --roots says the same without the tree; -y skips the question.
    let ran = run(
        pglock(&["-d", c.db.url(), "--roots", "--terminate", "-y"]),
        None,
    )
    .await;
    assert_eq!(ran.ok(), "Terminated 1 root blocker\n");
    until_gone(c.db.pool(), c.holder_pid).await;
    let (altered, _) = c.alter.await.unwrap();
    altered.expect("the ALTER TABLE completes once the holder is gone");
    let (updated, _) = c.update.await.unwrap();
    updated.expect("the UPDATE behind it completes too");
    assert!(
        exec_ok(&mut c.holder).await.is_err(),
        "the holder was ended"
    );
    let column: Option<String> = sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute \
         WHERE attrelid = 'orders'::regclass AND attname = 'note'",
    )
    .fetch_optional(c.db.pool())
    .await
    .unwrap();
    assert_eq!(column.as_deref(), Some("note"));
}

/// Run a trivial statement, for whether the session is still alive.
async fn exec_ok(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::raw_sql("SELECT 1").execute(conn).await.map(drop)
}

#[tokio::test(flavor = "multi_thread")]
async fn all_databases_lists_and_kills_the_chains_of_every_database() {
    let (a, b) = (chain().await, chain().await);
    let both = format!("activity__database__in={},{}", a.db.name(), b.db.name());
    // Connected to a, without --all-databases: only a's chain.
    let mut command = pglock(&["-d", a.db.url(), "-l", "0"]);
    command.env("COLUMNS", "200");
    let here = run(command, None).await;
    let pids: Vec<String> = rows(here.ok())
        .into_iter()
        .map(|row| row[0].clone())
        .collect();
    assert!(!pids.contains(&b.holder_pid.to_string()), "{here:#?}");

    let mut command = pglock(&["-d", a.db.url(), "--all-databases", "-l", "0", "-f", &both]);
    command.env("COLUMNS", "200");
    let all = run(command, None).await;
    let out = all.ok();
    let cells = table(out);
    assert_eq!(cells[0][1], "database", "{out}");
    for chain in [&a, &b] {
        for (pid, query) in chain.sessions() {
            let row = cells
                .iter()
                .find(|row| row[0] == pid.to_string())
                .unwrap_or_else(|| panic!("{pid} of {} is listed:\n{out}", chain.db.name()));
            assert_eq!(row[1], chain.db.name(), "{out}");
            assert_eq!(row.last().unwrap(), query, "{out}");
        }
    }
    // The tree shows both chains, each with its database.
    let tree = run(
        pglock(&["-d", a.db.url(), "--all-databases", "tree", "-f", &both]),
        None,
    )
    .await;
    let out = tree.ok();
    for chain in [&a, &b] {
        assert!(
            out.lines().any(
                |line| line.starts_with(&format!("{} blocks 2 · ", chain.holder_pid))
                    && line.contains(&format!("@{} · ", chain.db.name()))
            ),
            "{out}"
        );
    }
    // From a, end b's root blocker only.
    let only_b = format!("activity__database={}", b.db.name());
    let ran = run(
        pglock(&[
            "-d",
            a.db.url(),
            "--all-databases",
            "tree",
            "--terminate",
            "-y",
            "-f",
            &only_b,
        ]),
        None,
    )
    .await;
    assert_eq!(ran.ok(), "Terminated 1 root blocker\n");
    until_gone(b.db.pool(), b.holder_pid).await;
    let (altered, _) = b.alter.await.unwrap();
    altered.expect("b's ALTER TABLE completes");
    assert!(backend_exists(a.db.pool(), a.holder_pid).await);
    until_waiting(a.db.pool(), a.alter_pid).await;
    drop((a.holder, b.holder));
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_on_the_activity_lock_and_blocker_narrow_the_listing() {
    let c = chain().await;
    let pids = |args: &[&str]| {
        let mut all = vec!["-d", c.db.url(), "-l", "0", "-a", "activity_id"];
        all.extend(args);
        let command = pglock(&all);
        async move {
            let ran = run(command, None).await;
            let mut pids: Vec<i32> = rows(ran.ok())
                .iter()
                .filter_map(|row| row[0].parse().ok())
                .collect();
            pids.sort();
            pids.dedup();
            pids
        }
    };
    let sorted = |mut pids: Vec<i32>| {
        pids.sort();
        pids
    };
    let everyone = sorted(vec![c.holder_pid, c.alter_pid, c.update_pid]);
    let waiting = sorted(vec![c.alter_pid, c.update_pid]);
    let url = url::Url::parse(c.db.url()).unwrap();
    let user = url.username().to_owned();
    let name = c.db.name().to_owned();
    let cases: Vec<(Vec<String>, Vec<i32>)> = vec![
        (
            vec!["activity__query__icontains=alter table".into()],
            vec![c.alter_pid],
        ),
        (
            vec!["activity__query__contains=ALTER".into()],
            vec![c.alter_pid],
        ),
        (vec!["activity__query__contains=alter".into()], vec![]),
        (
            vec!["activity__query__startswith=UPDATE".into()],
            vec![c.update_pid],
        ),
        (
            vec!["activity__query__istartswith=update".into()],
            vec![c.update_pid],
        ),
        (
            vec!["activity__state=IDLE_IN_TRANSACTION".into()],
            vec![c.holder_pid],
        ),
        (vec!["activity__state__in=ACTIVE".into()], waiting.clone()),
        (vec![format!("activity__database={name}")], everyone.clone()),
        (vec!["activity__database=elsewhere".into()], vec![]),
        (
            vec!["activity__application_name=billing".into()],
            vec![c.holder_pid],
        ),
        (
            vec![format!("activity__user__in={user},nobody")],
            everyone.clone(),
        ),
        (
            vec!["activity__client_addr__isnull=false".into()],
            everyone.clone(),
        ),
        (vec!["activity__client_addr__isnull=true".into()], vec![]),
        (
            vec!["activity__wait_event=RELATION".into()],
            waiting.clone(),
        ),
        (
            vec!["activity__wait_event_type=LOCK".into()],
            waiting.clone(),
        ),
        (
            vec!["activity__duration__lt=1 day".into()],
            everyone.clone(),
        ),
        (vec!["activity__duration__gte=1 day".into()], vec![]),
        (vec!["activity__xact_duration__isnull=true".into()], vec![]),
        (
            vec![format!("activity_id__in={},{}", c.holder_pid, c.update_pid)],
            sorted(vec![c.holder_pid, c.update_pid]),
        ),
        (
            vec![format!(
                "activity__id__gt={}",
                c.holder_pid.max(c.alter_pid).max(c.update_pid)
            )],
            vec![],
        ),
        (
            vec!["granted=false".into(), "type=RELATION".into()],
            waiting.clone(),
        ),
        (vec!["mode=ACCESS_EXCLUSIVE".into()], vec![c.alter_pid]),
        (
            vec!["rel_name=orders".into(), "relation=public.orders".into()],
            everyone.clone(),
        ),
        (vec!["rel_kind=INDEX".into()], vec![]),
        (
            vec!["lock=waits ACCESS_EXCLUSIVE".into()],
            vec![c.alter_pid],
        ),
        (
            vec![
                "lock__startswith=holds".into(),
                "target=public.orders".into(),
            ],
            vec![c.holder_pid],
        ),
        (
            vec!["target__in=public.orders,advisory 1".into()],
            everyone.clone(),
        ),
        (vec!["mode__icontains=row".into()], vec![c.update_pid]),
        // A value is data: quotes and SQL in it match text, nothing else.
        (
            vec!["activity__query__icontains=' OR 1=1 --".into()],
            vec![],
        ),
    ];
    for (filters, expected) in cases {
        let mut args: Vec<&str> = Vec::new();
        for filter in &filters {
            args.extend(["-f", filter.as_str()]);
        }
        assert_eq!(pids(&args).await, expected, "{filters:?}");
    }

    // The blocking side, with --blocking: who waits for the holder, and for the ALTER.
    let blocked_by = |filter: String| {
        let command = pglock(&[
            "-d",
            c.db.url(),
            "--blocking",
            "-a",
            "activity_id",
            "-a",
            "blocking_activity_id",
            "-f",
            &filter,
        ]);
        async move { rows(run(command, None).await.ok()) }
    };
    assert_eq!(
        blocked_by("blocking_activity__query__icontains=count(*)".into()).await,
        [[c.alter_pid.to_string(), c.holder_pid.to_string()]]
    );
    assert_eq!(
        blocked_by(format!("blocking_activity_id__in={}", c.alter_pid)).await,
        [[c.update_pid.to_string(), c.alter_pid.to_string()]]
    );
    assert_eq!(
        blocked_by("blocking_activity__state=IDLE_IN_TRANSACTION".into()).await,
        [[c.alter_pid.to_string(), c.holder_pid.to_string()]]
    );

    // Mistakes are one clear line each.
    for (filter, expected) in [
        (
            "activity__query__like=x",
            "unknown lookup \"like\" in filter key",
        ),
        (
            "activity__colour=x",
            "unknown filter key \"activity__colour\"",
        ),
        ("activity__client_port__gt=high", "bad value in filter"),
        ("granted__gt=true", "has no order"),
        ("activity_id__icontains=1", "only text has this lookup"),
        ("activity__duration__gt=soon", "bad duration"),
    ] {
        let ran = run(pglock(&["-d", c.db.url(), "-f", filter]), None).await;
        let message = ran.one_line_error();
        assert!(message.contains(expected), "{filter}: {message}");
    }
    drop(c.holder);
}
