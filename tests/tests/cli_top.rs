//! `pglock top` against real blocked sessions: its frames rendered to ratatui's test backend
//! (the tree, a selection, the confirmation, a cancel and a kill, checked in
//! `pg_stat_activity`), and one run of the real command in a real terminal (tmux).

#[path = "common/binary.rs"]
mod command;
mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{PATIENCE, Running, backend_exists, eventually, exec, pid, start, until_waiting};
use pglock::Signal;
use pglock_cli::top::{self, App, Mode, Source, Theme};
use pglock_tests::TestDb;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};
use sqlx::PgConnection;

/// A holder idle in its transaction with a lock on `orders`; an `ALTER TABLE` waiting for it;
/// an `UPDATE` queued behind the `ALTER`. Apart, one session holding advisory lock 7 and one
/// waiting for it.
struct Chain {
    db: TestDb,
    holder: PgConnection,
    holder_pid: i32,
    alter: Running,
    alter_pid: i32,
    update: Running,
    update_pid: i32,
    other: PgConnection,
    other_pid: i32,
    other_waiter_pid: i32,
    _other_waiter: Running,
}

async fn chain() -> Chain {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE orders (id int)").await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "BEGIN; LOCK TABLE orders IN ACCESS SHARE MODE").await;
    let mut alter = db.connect().await;
    let alter_pid = pid(&mut alter).await;
    let alter = start(alter, "ALTER TABLE orders ADD COLUMN note text");
    until_waiting(db.pool(), alter_pid).await;
    let mut update = db.connect().await;
    let update_pid = pid(&mut update).await;
    let update = start(update, "UPDATE orders SET id = id + 1");
    until_waiting(db.pool(), update_pid).await;
    let mut other = db.connect().await;
    let other_pid = pid(&mut other).await;
    exec(&mut other, "SELECT pg_advisory_lock(7)").await;
    let mut other_waiter = db.connect().await;
    let other_waiter_pid = pid(&mut other_waiter).await;
    let other_waiter = start(other_waiter, "SELECT pg_advisory_lock(7)");
    until_waiting(db.pool(), other_waiter_pid).await;
    Chain {
        db,
        holder,
        holder_pid,
        alter,
        alter_pid,
        update,
        update_pid,
        other,
        other_pid,
        other_waiter_pid,
        _other_waiter: other_waiter,
    }
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

/// The view on a test backend of 120 x 40.
struct Screen {
    terminal: Terminal<TestBackend>,
    theme: Theme,
}

impl Screen {
    fn new(theme: Theme) -> Screen {
        Screen {
            terminal: Terminal::new(TestBackend::new(120, 40)).unwrap(),
            theme,
        }
    }

    /// Draw `app`, and return the screen's lines.
    fn draw(&mut self, app: &App) -> Vec<String> {
        self.terminal
            .draw(|frame| top::draw(frame, app, self.theme))
            .unwrap();
        let buffer = self.terminal.backend().buffer();
        (0..buffer.area.height)
            .map(|y| {
                (0..buffer.area.width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect()
    }

    /// The style of the first cell of `text` on the screen.
    fn style_of(&self, text: &str) -> ratatui::style::Style {
        let buffer = self.terminal.backend().buffer();
        for y in 0..buffer.area.height {
            let line: String = (0..buffer.area.width)
                .map(|x| buffer[(x, y)].symbol())
                .collect();
            if let Some(at) = line.find(text) {
                let x = line[..at].chars().count() as u16;
                return buffer[(x, y)].style();
            }
        }
        panic!("{text:?} is not on the screen");
    }
}

/// The line holding `needle`, and the one after it.
fn line_with<'a>(screen: &'a [String], needle: &str) -> (usize, &'a str) {
    screen
        .iter()
        .enumerate()
        .find(|(_, line)| line.contains(needle))
        .map(|(i, line)| (i, line.as_str()))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{}", screen.join("\n")))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_shows_the_tree_selects_confirms_and_kills_real_sessions() {
    let mut chain = chain().await;
    let mut conn = chain.db.connect().await;
    let own_pid = pid(&mut conn).await;
    let source = Source::new(pglock::locks(), pglock::blocked_locks());
    let mut app = App::new(own_pid, Duration::from_secs(2));
    top::refresh(&mut conn, &source, &mut app).await;
    let mut screen = Screen::new(Theme { colour: true });
    let shown = screen.draw(&app);
    let all = shown.join("\n");

    // The tree: the holder first, the ALTER under it, the UPDATE under that; then the pair.
    let (row, holder) = line_with(&shown, &format!("{} blocks 2", chain.holder_pid));
    assert!(holder.contains("IDLE_IN_TRANSACTION"), "{all}");
    assert!(holder.contains("LOCK TABLE orders"), "{all}");
    let alter = &shown[row + 1];
    assert!(
        alter.contains(&format!("└─ {} blocks 1", chain.alter_pid))
            && alter.contains("for ACCESS_EXCLUSIVE on public.orders")
            && alter.contains("· ALTER TAB"),
        "{all}"
    );
    let update = &shown[row + 2];
    assert!(
        update.contains(&format!("   └─ {} · waits", chain.update_pid))
            && update.contains("UPDATE orders"),
        "{all}"
    );
    let (pair, _) = line_with(&shown, &format!("{} blocks 1", chain.other_pid));
    assert!(
        shown[pair + 1].contains(&format!("└─ {} · waits", chain.other_waiter_pid))
            && shown[pair + 1].contains("EXCLUSIVE on advisory 7"),
        "{all}"
    );
    assert!(
        !all.contains(&format!(" {own_pid} ")),
        "the view's own session is listed: {all}"
    );
    // Root blockers stand out; the cursor starts on the first; waiters are plain.
    let root = screen.style_of(&format!("{} blocks 2", chain.holder_pid));
    assert_eq!(root.fg, Some(Color::Red), "{all}");
    assert!(
        root.add_modifier
            .contains(Modifier::BOLD | Modifier::REVERSED)
    );
    let other_root = screen.style_of(&format!("{} blocks 1", chain.other_pid));
    assert_eq!(other_root.fg, Some(Color::Red));
    assert_ne!(
        screen.style_of(&chain.alter_pid.to_string()).fg,
        Some(Color::Red)
    );
    assert!(all.contains("Locks ("), "{all}");
    // Under the lists, the session under the cursor, its query whole.
    app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    let shown = screen.draw(&app);
    let (details, _) = line_with(&shown, &format!("pid {} · ACTIVE", chain.alter_pid));
    assert!(
        shown[details + 1].contains("ALTER TABLE orders ADD COLUMN note text"),
        "{}",
        shown.join("\n")
    );
    app.on_key(KeyEvent::new(KeyCode::Up, KeyModifiers::NONE));
    assert!(shown[0].contains("3 waiting · 2 root blockers"), "{all}");

    // Cancel the UPDATE: down twice, C, and the confirmation names it.
    app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    app.on_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
    assert_eq!(app.on_key(key('C')), None);
    let shown = screen.draw(&app);
    let (_, title) = line_with(&shown, "Cancel the queries of 1 session?");
    assert!(title.contains('┌'), "{}", shown.join("\n"));
    let (_, listed) = line_with(&shown, &format!("pid {} ·", chain.update_pid));
    assert!(
        listed.contains("ACTIVE")
            && listed.contains("query since")
            && listed.contains("UPDATE orders"),
        "{listed}"
    );
    let command = app.on_key(key('y')).expect("y confirms");
    assert!(top::execute(&mut conn, &source, &mut app, command).await);
    let (result, _update_session) = tokio::time::timeout(PATIENCE, &mut chain.update)
        .await
        .expect("the UPDATE is cancelled")
        .unwrap();
    let error = result.expect_err("a cancelled UPDATE fails");
    assert!(error.to_string().contains("cancel"), "{error}");
    assert!(
        backend_exists(chain.db.pool(), chain.update_pid).await,
        "cancel ends no session"
    );

    // Tag the holder, K: the confirmation lists it, with what it does.
    app.on_key(KeyEvent::new(KeyCode::Home, KeyModifiers::NONE));
    assert_eq!(app.pid_at(top::Pane::Tree), Some(chain.holder_pid));
    app.on_key(key(' '));
    let shown = screen.draw(&app);
    line_with(&shown, &format!("* {} blocks", chain.holder_pid));
    line_with(&shown, "1 tagged");
    assert_eq!(
        screen
            .style_of(&format!("* {} blocks", chain.holder_pid))
            .fg,
        Some(Color::Cyan)
    );
    app.on_key(key('K'));
    assert!(matches!(
        app.mode(),
        Mode::Confirm {
            signal: Signal::Terminate,
            ..
        }
    ));
    let shown = screen.draw(&app);
    line_with(&shown, "Terminate 1 session?");
    let (_, listed) = line_with(&shown, &format!("pid {} ·", chain.holder_pid));
    assert!(
        listed.contains("IDLE_IN_TRANSACTION") && listed.contains("LOCK TABLE orders"),
        "{listed}"
    );
    line_with(&shown, "y: yes, signal them");
    let command = app.on_key(key('y')).expect("y confirms");
    assert!(top::execute(&mut conn, &source, &mut app, command).await);
    assert_eq!(
        app.message(),
        Some(format!("Terminated {}", chain.holder_pid).as_str())
    );

    // The holder's session is gone, the ALTER gets through, the other pair is untouched.
    eventually(PATIENCE, "the holder's backend ends", || async {
        !backend_exists(chain.db.pool(), chain.holder_pid).await
    })
    .await;
    let (altered, _alter_session) = tokio::time::timeout(PATIENCE, &mut chain.alter)
        .await
        .expect("the ALTER TABLE completes")
        .unwrap();
    altered.expect("the ALTER TABLE succeeds");
    assert!(backend_exists(chain.db.pool(), chain.alter_pid).await);
    assert!(backend_exists(chain.db.pool(), chain.other_pid).await);
    let started = Instant::now();
    loop {
        top::refresh(&mut conn, &source, &mut app).await;
        let shown = screen.draw(&app);
        let all = shown.join("\n");
        if !all.contains(&format!("{} blocks", chain.holder_pid)) {
            line_with(&shown, &format!("{} blocks 1", chain.other_pid));
            break;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the holder stays in the view: {all}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(chain.holder);
    drop(chain.other);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_colour_roots_are_bold_and_tags_are_marked() {
    let chain = chain().await;
    let mut conn = chain.db.connect().await;
    let own_pid = pid(&mut conn).await;
    let source = Source::new(pglock::locks(), pglock::blocked_locks());
    let mut app = App::new(own_pid, Duration::from_secs(2));
    top::refresh(&mut conn, &source, &mut app).await;
    app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
    let mut screen = Screen::new(Theme { colour: false });
    let shown = screen.draw(&app);
    let root = screen.style_of(&format!("{} blocks 2", chain.holder_pid));
    assert!(matches!(root.fg, None | Some(Color::Reset)), "{root:?}");
    assert!(root.add_modifier.contains(Modifier::BOLD));
    // The lock list has the focus: its first row (a wait) under the cursor, no colour anywhere.
    let (_, header) = line_with(&shown, "pid");
    assert!(
        header.contains("mode") && header.contains("query"),
        "{header}"
    );
    let buffer = screen.terminal.backend().buffer();
    assert!(
        buffer
            .content()
            .iter()
            .all(|cell| cell.fg == Color::Reset && cell.bg == Color::Reset),
        "a colour with NO_COLOR"
    );
    app.on_key(key(' '));
    let shown = screen.draw(&app);
    let waiting = app
        .snapshot()
        .locks
        .iter()
        .find(|l| !l.granted)
        .unwrap()
        .pid;
    line_with(&shown, &format!("*{waiting}"));
}

/// Runs tmux on a server of its own (its own socket), killed when this is dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(width: u16, height: u16) -> Tmux {
        // One server per test, also when `cargo test` runs them as threads of one process.
        static STARTED: AtomicU32 = AtomicU32::new(0);
        let socket = format!(
            "pglock-top-test-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        );
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.as_ref().is_ok_and(|out| out.status.success()),
            "this test needs tmux, to run pglock top in a real terminal: install it \
             (Debian/Ubuntu: apt-get install -y tmux; scripts/test does it when run as root) \
             ({version:?})"
        );
        let tmux = Tmux { socket };
        tmux.run(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-x",
            &width.to_string(),
            "-y",
            &height.to_string(),
            "-s",
            "top",
            "env PS1='$ ' sh",
        ]);
        tmux
    }

    /// Wait for the shell's first prompt, so that nothing typed races its start.
    async fn ready(self) -> Tmux {
        self.until("the shell's prompt", |screen| screen.starts_with('$'))
            .await;
        self
    }

    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .env_remove("TMUX")
            .output()
            .unwrap_or_else(|e| panic!("running tmux {args:?}: {e}"));
        assert!(output.status.success(), "tmux {args:?}: {output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Type `keys` (tmux key names: `Enter`, `Space`, or literal text).
    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "top"];
        args.extend(keys);
        self.run(&args);
    }

    /// Type `text` literally.
    fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "top", "-l", text]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }

    fn alternate_screen(&self) -> bool {
        self.run(&["display-message", "-p", "-t", "top", "#{alternate_on}"])
            .trim()
            == "1"
    }

    /// Check, with the shell's own `stty`, that the terminal is usable again: back in canonical
    /// mode, with echo. The screen is cleared first, so that only this answer is read.
    async fn assert_usable(&self, after: &str) {
        self.type_text(
            "clear; stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e echo; echo stty-done",
        );
        self.keys(&["Enter"]);
        let screen = self
            .until("stty's answer", |screen| {
                screen.lines().any(|line| line == "stty-done")
            })
            .await;
        let lines: Vec<&str> = screen.lines().collect();
        assert!(
            lines.contains(&"icanon") && lines.contains(&"echo"),
            "not usable {after}:\n{screen}"
        );
    }

    /// Wait until the screen satisfies `check`; returns it.
    async fn until(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if check(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "never on the screen within {PATIENCE:?}: {what}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn in_a_real_terminal_it_shows_the_tree_takes_keys_and_gives_the_terminal_back() {
    let chain = chain().await;
    let binary = command::binary().to_owned();
    let tmux = Tmux::start(120, 40).ready().await;
    tmux.type_text("echo before-top");
    tmux.keys(&["Enter"]);
    tmux.until("the shell's output", |screen| {
        screen.lines().any(|line| line == "before-top")
    })
    .await;

    let holder = format!("{} blocks 2", chain.holder_pid);
    tmux.type_text(&format!(
        "'{}' top -d '{}' --interval 500ms; echo top-exit=$?",
        binary.display(),
        chain.db.url()
    ));
    tmux.keys(&["Enter"]);
    let screen = tmux
        .until("the tree", |screen| screen.contains(&holder))
        .await;
    assert!(tmux.alternate_screen(), "{screen}");
    assert!(
        !screen.contains("before-top"),
        "not on the alternate screen:\n{screen}"
    );
    assert!(
        screen.contains("Blocking tree") && screen.contains("Locks ("),
        "{screen}"
    );
    assert!(screen.contains("ALTER TABLE orders"), "{screen}");

    tmux.type_text("?");
    tmux.until("the help", |screen| {
        screen.contains("Any key closes this help")
    })
    .await;
    tmux.type_text("x");
    tmux.until("the help closed", |screen| {
        !screen.contains("Any key closes this help")
    })
    .await;
    tmux.keys(&["Space"]);
    tmux.until("one tagged", |screen| screen.contains("1 tagged"))
        .await;
    tmux.type_text("K");
    let screen = tmux
        .until("the confirmation", |screen| {
            screen.contains("Terminate 1 session?")
        })
        .await;
    assert!(
        screen.contains(&format!("pid {} ·", chain.holder_pid)),
        "{screen}"
    );
    tmux.type_text("n");
    tmux.until("nothing signalled", |screen| {
        screen.contains("Nothing signalled.")
    })
    .await;

    tmux.type_text("q");
    let screen = tmux
        .until("the shell back", |screen| {
            screen.lines().any(|line| line.starts_with("top-exit="))
        })
        .await;
    assert!(screen.lines().any(|line| line == "top-exit=0"), "{screen}");
    assert!(screen.lines().any(|line| line == "before-top"), "{screen}");
    assert!(!tmux.alternate_screen(), "{screen}");
    assert!(!screen.contains("Blocking tree"), "{screen}");
    tmux.assert_usable("after q").await;
    // Nothing was signalled.
    assert!(backend_exists(chain.db.pool(), chain.holder_pid).await);
    assert!(backend_exists(chain.db.pool(), chain.alter_pid).await);
}

/// Whether `screen` (captured with its escape sequences) sets a foreground colour: an SGR
/// sequence with a parameter 30-38 or 90-97.
fn coloured(screen: &str) -> bool {
    screen.split("\x1b[").skip(1).any(|sequence| {
        sequence.split_once('m').is_some_and(|(params, _)| {
            params.split(';').any(|param| {
                param
                    .parse::<u32>()
                    .is_ok_and(|code| (30..=38).contains(&code) || (90..=97).contains(&code))
            })
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn no_color_a_shrinking_terminal_and_ctrl_c_are_handled() {
    let chain = chain().await;
    let binary = command::binary().to_owned();
    let tmux = Tmux::start(120, 40).ready().await;
    // The same view in colour first, to show the check below can fail.
    tmux.type_text(&format!(
        "'{}' top -d '{}'",
        binary.display(),
        chain.db.url()
    ));
    tmux.keys(&["Enter"]);
    let holder = format!("{} blocks 2", chain.holder_pid);
    tmux.until("the tree", |screen| screen.contains(&holder))
        .await;
    let screen = tmux.run(&["capture-pane", "-p", "-e", "-t", "top"]);
    assert!(coloured(&screen), "no colour without NO_COLOR:\n{screen}");
    tmux.type_text("q");
    tmux.until("the shell back", |screen| !screen.contains(&holder))
        .await;

    tmux.type_text(&format!(
        "NO_COLOR=1 '{}' top -d '{}'; echo exit=$?",
        binary.display(),
        chain.db.url()
    ));
    tmux.keys(&["Enter"]);
    tmux.until("the tree", |screen| screen.contains(&holder))
        .await;
    let screen = tmux.run(&["capture-pane", "-p", "-e", "-t", "top"]);
    assert!(!coloured(&screen), "colour with NO_COLOR:\n{screen}");
    // Shrunk below the minimum: a message, and the view back when it grows again.
    tmux.run(&["resize-window", "-t", "top", "-x", "40", "-y", "10"]);
    tmux.until("the size message", |screen| {
        screen.contains("pglock top needs")
    })
    .await;
    tmux.run(&["resize-window", "-t", "top", "-x", "120", "-y", "40"]);
    tmux.until("the tree again", |screen| screen.contains(&holder))
        .await;
    tmux.keys(&["C-c"]);
    let screen = tmux
        .until("the exit", |screen| {
            screen.lines().any(|line| line.starts_with("exit="))
        })
        .await;
    assert!(screen.lines().any(|line| line == "exit=0"), "{screen}");
    assert!(!tmux.alternate_screen(), "{screen}");
    assert!(backend_exists(chain.db.pool(), chain.holder_pid).await);
    drop(chain.holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_terminal_it_says_what_to_use_instead() {
    let db = TestDb::new().await;
    let output = Command::new(command::binary())
        .args(["top", "-d", db.url()])
        .env_remove("DATABASE_URL")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "pglock: pglock top needs a terminal; for output to a pipe or a file, use pglock --watch\n"
    );
    let output = Command::new(command::binary())
        .args(["top", "--json", "--terminate", "-d", db.url()])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "pglock: pglock top is interactive: --json, --cancel/--terminate (press K or C in the \
         view) do not apply\n"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panic_gives_the_terminal_back_before_its_message() {
    let chain = chain().await;
    let binary = command::binary().to_owned();
    let tmux = Tmux::start(120, 40).ready().await;
    tmux.type_text("echo before-top");
    tmux.keys(&["Enter"]);
    // A debug build panics on the first key when asked to.
    tmux.type_text(&format!(
        "RUST_BACKTRACE=0 PGLOCK_TOP_TEST_PANIC=1 '{}' top -d '{}'; echo top-exit=$?",
        binary.display(),
        chain.db.url()
    ));
    tmux.keys(&["Enter"]);
    let holder = format!("{} blocks 2", chain.holder_pid);
    tmux.until("the tree", |screen| screen.contains(&holder))
        .await;
    tmux.type_text("j");
    let screen = tmux
        .until("the exit", |screen| {
            screen.lines().any(|line| line.starts_with("top-exit="))
        })
        .await;
    assert!(!tmux.alternate_screen(), "{screen}");
    assert!(
        screen.lines().any(|line| line == "top-exit=101"),
        "{screen}"
    );
    assert!(screen.contains("PGLOCK_TOP_TEST_PANIC is set"), "{screen}");
    assert!(screen.lines().any(|line| line == "before-top"), "{screen}");
    assert!(!screen.contains("Blocking tree"), "{screen}");
    // The message starts at the left edge (raw mode would leave it staircased), and the
    // terminal is back in canonical mode with echo.
    assert!(
        screen.lines().any(|line| line.starts_with("thread 'main'")),
        "{screen}"
    );
    tmux.assert_usable("after a panic").await;
    assert!(backend_exists(chain.db.pool(), chain.holder_pid).await);
}

/// The pids of `parent`'s children, read from `/proc`.
fn children(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // `pid (comm) state ppid ...`: the command name may hold spaces, so read after its `)`.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signal_to_stop_gives_the_terminal_back_and_exits_as_the_signal_would() {
    let chain = chain().await;
    let binary = command::binary().to_owned();
    let tmux = Tmux::start(120, 40).ready().await;
    let shell: u32 = tmux
        .run(&["display-message", "-p", "-t", "top", "#{pane_pid}"])
        .trim()
        .parse()
        .expect("the shell's pid");
    tmux.type_text("echo before-top");
    tmux.keys(&["Enter"]);
    let holder = format!("{} blocks 2", chain.holder_pid);
    for (signal, number) in [("TERM", 15), ("HUP", 1), ("INT", 2)] {
        tmux.type_text(&format!(
            "'{}' top -d '{}'; echo top-exit=$?",
            binary.display(),
            chain.db.url()
        ));
        tmux.keys(&["Enter"]);
        tmux.until("the tree", |screen| screen.contains(&holder))
            .await;
        assert!(tmux.alternate_screen());
        let top = children(shell);
        assert_eq!(top.len(), 1, "the shell runs one command: {top:?}");
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &top[0].to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let exit = format!("top-exit={}", 128 + number);
        let screen = tmux
            .until("the shell back", |screen| {
                screen.lines().any(|line| {
                    line.strip_prefix("top-exit=")
                        .is_some_and(|code| code.parse::<u8>().is_ok())
                })
            })
            .await;
        assert!(
            screen.lines().any(|line| line == exit),
            "{signal}:\n{screen}"
        );
        assert!(!tmux.alternate_screen(), "{signal}:\n{screen}");
        assert!(
            screen.lines().any(|line| line == "before-top"),
            "{signal}:\n{screen}"
        );
        tmux.assert_usable(&format!("after SIG{signal}")).await;
        tmux.type_text("clear; echo before-top");
        tmux.keys(&["Enter"]);
        tmux.until("the screen cleared", |screen| {
            !screen.contains("stty-done") && screen.lines().any(|line| line == "before-top")
        })
        .await;
    }
    // Nothing was signalled by the view.
    assert!(backend_exists(chain.db.pool(), chain.holder_pid).await);
}
