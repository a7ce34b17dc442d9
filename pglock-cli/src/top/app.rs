//! The live view's state, and what each key does to it. No terminal and no database here: a key
//! changes the state and may ask the caller for a [`Command`] (refresh, signal, quit), which the
//! caller carries out and reports back.

use std::collections::BTreeSet;
use std::time::Duration;

use pglock::Signal;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::snapshot::{LockRow, Session, Snapshot, TreeRow};

/// Which list the cursor is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    /// The blocking tree.
    Tree,
    /// The lock list.
    Locks,
}

/// The lock list's order (`s` goes to the next).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    /// Waits first, then by pid: the listing's order.
    Waits,
    /// By pid.
    Pid,
    /// The session's query, longest running first.
    Duration,
    /// By mode's name.
    Mode,
    /// By what the lock is on.
    Target,
}

impl Sort {
    /// As the lock list's title says it.
    pub fn name(self) -> &'static str {
        match self {
            Sort::Waits => "waits first",
            Sort::Pid => "pid",
            Sort::Duration => "duration",
            Sort::Mode => "mode",
            Sort::Target => "target",
        }
    }

    fn next(self) -> Sort {
        match self {
            Sort::Waits => Sort::Pid,
            Sort::Pid => Sort::Duration,
            Sort::Duration => Sort::Mode,
            Sort::Mode => Sort::Target,
            Sort::Target => Sort::Waits,
        }
    }
}

/// What the screen shows over the lists, and what keys mean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The lists, with the cursor.
    Browse,
    /// Typing the filter (applied as it is typed).
    Filter,
    /// The keys, over the lists.
    Help,
    /// Asking before signalling these sessions.
    Confirm {
        /// Terminate or cancel.
        signal: Signal,
        /// As they were when asked about.
        sessions: Vec<Session>,
    },
}

/// What the caller must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Read a new snapshot now.
    Refresh,
    /// Signal these backends (confirmed), then report with [`App::signalled`].
    Signal {
        /// Terminate or cancel.
        signal: Signal,
        /// The backends confirmed.
        pids: Vec<i32>,
    },
    /// Leave the view.
    Quit,
}

/// The whole state of the view.
#[derive(Debug)]
pub struct App {
    snapshot: Snapshot,
    /// The view's own session: never tagged, never signalled.
    own_pid: i32,
    interval: Duration,
    pane: Pane,
    /// Row index of the cursor in each pane's visible rows.
    cursor: [usize; 2],
    tagged: BTreeSet<i32>,
    sort: Sort,
    reverse: bool,
    filter: String,
    mode: Mode,
    paused: bool,
    /// Show the locks that only repeat another row (see [`LockRow::repeats`]).
    all_locks: bool,
    message: Option<String>,
}

/// How far Page Up/Down move.
const PAGE: usize = 10;

impl App {
    /// An empty view for the session `own_pid`, refreshed every `interval`.
    pub fn new(own_pid: i32, interval: Duration) -> App {
        App {
            snapshot: Snapshot::default(),
            own_pid,
            interval,
            pane: Pane::Tree,
            cursor: [0, 0],
            tagged: BTreeSet::new(),
            sort: Sort::Waits,
            reverse: false,
            filter: String::new(),
            mode: Mode::Browse,
            paused: false,
            all_locks: false,
            message: None,
        }
    }

    /// What the last refresh read.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }
    /// Between two refreshes.
    pub fn interval(&self) -> Duration {
        self.interval
    }
    /// Where the cursor is.
    pub fn pane(&self) -> Pane {
        self.pane
    }
    /// What is over the lists, if anything.
    pub fn mode(&self) -> &Mode {
        &self.mode
    }
    /// Whether refreshing is paused (`p`).
    pub fn paused(&self) -> bool {
        self.paused
    }
    /// The lock list's order, and whether it is reversed.
    pub fn sort(&self) -> (Sort, bool) {
        (self.sort, self.reverse)
    }
    /// The text both lists are filtered on (empty for none).
    pub fn filter(&self) -> &str {
        &self.filter
    }
    /// The status line's message.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
    /// Whether locks that only repeat another row are shown (`a`).
    pub fn all_locks(&self) -> bool {
        self.all_locks
    }
    /// The sessions tagged (space, `b`), by pid.
    pub fn tagged(&self) -> &BTreeSet<i32> {
        &self.tagged
    }

    /// The cursor's row in `pane`'s visible rows.
    pub fn cursor(&self, pane: Pane) -> usize {
        self.cursor[pane as usize]
    }

    /// Replace the snapshot, keeping the cursor on the same session where it still shows.
    /// Tags of sessions that are gone are dropped.
    pub fn update(&mut self, snapshot: Snapshot) {
        let before = [self.pid_at(Pane::Tree), self.pid_at(Pane::Locks)];
        self.snapshot = snapshot;
        self.tagged
            .retain(|pid| self.snapshot.sessions.contains_key(pid));
        for pane in [Pane::Tree, Pane::Locks] {
            let pids = self.visible_pids(pane);
            let at = before[pane as usize]
                .and_then(|pid| pids.iter().position(|&p| p == pid))
                .unwrap_or(self.cursor[pane as usize]);
            self.cursor[pane as usize] = at.min(pids.len().saturating_sub(1));
        }
    }

    /// Say something in the status line (a failed refresh, say).
    pub fn say(&mut self, message: impl Into<String>) {
        self.message = Some(message.into());
    }

    /// Report what a [`Command::Signal`] did: `done` are the pids actually signalled.
    pub fn signalled(&mut self, signal: Signal, asked: &[i32], done: &[i32]) {
        let list = |pids: &[i32]| {
            pids.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let verb = match signal {
            Signal::Cancel => "Cancelled the queries of",
            _ => "Terminated",
        };
        let missed: Vec<i32> = asked
            .iter()
            .copied()
            .filter(|pid| !done.contains(pid))
            .collect();
        let mut message = if done.is_empty() {
            "Signalled nobody".to_owned()
        } else {
            format!("{verb} {}", list(done))
        };
        if !missed.is_empty() {
            message.push_str(&format!(
                "; not signalled (no lock here any more): {}",
                list(&missed)
            ));
        }
        self.tagged.retain(|pid| !asked.contains(pid));
        self.message = Some(message);
    }

    /// The tree's rows the filter keeps: whole trees, where any of their rows matches.
    pub fn tree_rows(&self) -> Vec<&TreeRow> {
        let rows = &self.snapshot.tree;
        if self.filter.is_empty() {
            return rows.iter().collect();
        }
        let needle = self.filter.to_lowercase();
        let mut kept = Vec::new();
        let mut start = 0;
        while start < rows.len() {
            let end = rows[start + 1..]
                .iter()
                .position(|row| row.depth == 0)
                .map_or(rows.len(), |i| start + 1 + i);
            let tree = &rows[start..end];
            if tree.iter().any(|row| self.tree_row_matches(row, &needle)) {
                kept.extend(tree);
            }
            start = end;
        }
        kept
    }

    /// The lock list as shown: filtered, then sorted.
    pub fn lock_rows(&self) -> Vec<&LockRow> {
        let needle = self.filter.to_lowercase();
        let mut rows: Vec<&LockRow> = self
            .snapshot
            .locks
            .iter()
            .filter(|row| self.all_locks || !row.repeats())
            .filter(|row| needle.is_empty() || self.lock_row_matches(row, &needle))
            .collect();
        let duration = |row: &LockRow| {
            self.snapshot
                .sessions
                .get(&row.pid)
                .and_then(|session| session.duration)
        };
        match self.sort {
            Sort::Waits => rows.sort_by_key(|row| (row.granted, row.pid)),
            Sort::Pid => rows.sort_by_key(|row| row.pid),
            Sort::Duration => rows.sort_by_key(|row| (std::cmp::Reverse(duration(row)), row.pid)),
            Sort::Mode => rows.sort_by(|a, b| a.mode.cmp(&b.mode).then(a.pid.cmp(&b.pid))),
            Sort::Target => rows.sort_by(|a, b| a.target.cmp(&b.target).then(a.pid.cmp(&b.pid))),
        }
        if self.reverse {
            rows.reverse();
        }
        rows
    }

    fn session_matches(&self, pid: i32, needle: &str) -> bool {
        if pid.to_string().contains(needle) {
            return true;
        }
        self.snapshot.sessions.get(&pid).is_some_and(|session| {
            [
                Some(session.application.as_str()),
                session.user.as_deref(),
                session.state.as_deref(),
                Some(session.query.as_str()),
            ]
            .into_iter()
            .flatten()
            .any(|text| text.to_lowercase().contains(needle))
        })
    }

    fn tree_row_matches(&self, row: &TreeRow, needle: &str) -> bool {
        self.session_matches(row.pid, needle)
            || row
                .waits_for
                .as_deref()
                .is_some_and(|text| text.to_lowercase().contains(needle))
    }

    fn lock_row_matches(&self, row: &LockRow, needle: &str) -> bool {
        self.session_matches(row.pid, needle)
            || [&row.lock_type, &row.mode, &row.target]
                .iter()
                .any(|text| text.to_lowercase().contains(needle))
    }

    fn visible_pids(&self, pane: Pane) -> Vec<i32> {
        match pane {
            Pane::Tree => self.tree_rows().iter().map(|row| row.pid).collect(),
            Pane::Locks => self.lock_rows().iter().map(|row| row.pid).collect(),
        }
    }

    /// The pid under the cursor in `pane`.
    pub fn pid_at(&self, pane: Pane) -> Option<i32> {
        self.visible_pids(pane).get(self.cursor(pane)).copied()
    }

    /// Whether `pid` may be signalled: a backend of this database, other than the view's own.
    fn signallable(&self, pid: i32) -> bool {
        pid != self.own_pid && pid != 0 && self.snapshot.sessions.contains_key(&pid)
    }

    /// Handle one key.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Command> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Some(Command::Quit);
        }
        match self.mode.clone() {
            Mode::Browse => self.browse(key),
            Mode::Filter => {
                match key.code {
                    KeyCode::Enter => self.mode = Mode::Browse,
                    KeyCode::Esc => {
                        self.filter.clear();
                        self.mode = Mode::Browse;
                    }
                    KeyCode::Backspace => {
                        self.filter.pop();
                    }
                    KeyCode::Char(c) => self.filter.push(c),
                    _ => {}
                }
                self.clamp();
                None
            }
            Mode::Help => {
                self.mode = Mode::Browse;
                None
            }
            Mode::Confirm { signal, sessions } => match key.code {
                KeyCode::Char('y' | 'Y') => {
                    self.mode = Mode::Browse;
                    let pids = sessions.iter().map(|session| session.pid).collect();
                    Some(Command::Signal { signal, pids })
                }
                KeyCode::Char('n' | 'N' | 'q') | KeyCode::Esc => {
                    self.mode = Mode::Browse;
                    self.message = Some("Nothing signalled.".to_owned());
                    None
                }
                _ => None,
            },
        }
    }

    fn browse(&mut self, key: KeyEvent) -> Option<Command> {
        match key.code {
            KeyCode::Char('q') => return Some(Command::Quit),
            KeyCode::Char('?') | KeyCode::F(1) => self.mode = Mode::Help,
            KeyCode::Tab | KeyCode::BackTab => {
                self.pane = match self.pane {
                    Pane::Tree => Pane::Locks,
                    Pane::Locks => Pane::Tree,
                }
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-(PAGE as isize)),
            KeyCode::PageDown => self.move_by(PAGE as isize),
            KeyCode::Home | KeyCode::Char('g') => self.cursor[self.pane as usize] = 0,
            KeyCode::End | KeyCode::Char('G') => self.move_by(isize::MAX),
            KeyCode::Char(' ') => self.toggle_tag(),
            KeyCode::Char('b') => {
                let roots: Vec<i32> = (self.snapshot.root_blockers().into_iter())
                    .filter(|&pid| self.signallable(pid))
                    .collect();
                self.tagged.extend(roots);
            }
            KeyCode::Char('K') => self.ask(Signal::Terminate),
            KeyCode::Char('C') => self.ask(Signal::Cancel),
            KeyCode::Char('s') => {
                self.sort = self.sort.next();
                self.clamp();
            }
            KeyCode::Char('S') => {
                self.reverse = !self.reverse;
                self.clamp();
            }
            KeyCode::Char('/') => self.mode = Mode::Filter,
            KeyCode::Char('a') => {
                self.all_locks = !self.all_locks;
                self.clamp();
            }
            KeyCode::Char('p') => {
                self.paused = !self.paused;
                if !self.paused {
                    return Some(Command::Refresh);
                }
            }
            KeyCode::Char('r') => return Some(Command::Refresh),
            KeyCode::Esc => {
                self.tagged.clear();
                self.filter.clear();
                self.message = None;
                self.clamp();
            }
            _ => {}
        }
        None
    }

    fn move_by(&mut self, delta: isize) {
        let rows = self.visible_pids(self.pane).len();
        let cursor = &mut self.cursor[self.pane as usize];
        *cursor = cursor
            .saturating_add_signed(delta)
            .min(rows.saturating_sub(1));
    }

    fn clamp(&mut self) {
        self.move_by(0);
        let other = match self.pane {
            Pane::Tree => Pane::Locks,
            Pane::Locks => Pane::Tree,
        };
        let rows = self.visible_pids(other).len();
        let cursor = &mut self.cursor[other as usize];
        *cursor = (*cursor).min(rows.saturating_sub(1));
    }

    fn toggle_tag(&mut self) {
        let Some(pid) = self.pid_at(self.pane) else {
            return;
        };
        if !self.signallable(pid) {
            self.message = Some(format!("{pid} cannot be signalled from here."));
        } else if !self.tagged.remove(&pid) {
            self.tagged.insert(pid);
        }
        self.move_by(1);
    }

    /// Ask before signalling the tagged sessions, or else the one under the cursor.
    fn ask(&mut self, signal: Signal) {
        let pids: Vec<i32> = if self.tagged.is_empty() {
            self.pid_at(self.pane).into_iter().collect()
        } else {
            self.tagged.iter().copied().collect()
        };
        let sessions: Vec<Session> = pids
            .iter()
            .filter(|&&pid| self.signallable(pid))
            .filter_map(|pid| self.snapshot.sessions.get(pid).cloned())
            .collect();
        if sessions.is_empty() {
            self.message = Some(
                "No session to signal: move to one (space tags several), then K or C.".to_owned(),
            );
            return;
        }
        self.mode = Mode::Confirm { signal, sessions };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::snapshot::{Edge, tree_rows};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ch(c: char) -> KeyEvent {
        key(KeyCode::Char(c))
    }

    fn session(pid: i32, query: &str) -> Session {
        Session {
            pid,
            application: format!("app{pid}"),
            query: query.to_owned(),
            ..Session::default()
        }
    }

    /// 10 blocks 11, which blocks 12; 20 blocks 21. The view is session 99.
    fn app() -> App {
        let edge = |waiter, blocker| Edge {
            waiter,
            blocker,
            waits_for: "ACCESS_EXCLUSIVE on public.t".to_owned(),
            waited: None,
        };
        let mut snapshot = Snapshot {
            tree: tree_rows(vec![edge(11, 10), edge(12, 11), edge(21, 20)]),
            ..Snapshot::default()
        };
        for (pid, query) in [
            (10, "LOCK t"),
            (11, "ALTER TABLE t"),
            (12, "UPDATE t"),
            (20, "LOCK u"),
            (21, "SELECT u"),
        ] {
            snapshot.sessions.insert(pid, session(pid, query));
        }
        let mut app = App::new(99, Duration::from_secs(2));
        app.update(snapshot);
        app
    }

    #[test]
    fn space_tags_and_moves_on_then_k_asks_about_the_tagged() {
        let mut app = app();
        assert_eq!(app.pid_at(Pane::Tree), Some(10));
        assert_eq!(app.on_key(ch(' ')), None);
        assert_eq!(app.pid_at(Pane::Tree), Some(11));
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::Down));
        app.on_key(ch(' '));
        assert_eq!(app.tagged().iter().copied().collect::<Vec<_>>(), [10, 20]);
        assert_eq!(app.on_key(ch('K')), None);
        let Mode::Confirm { signal, sessions } = app.mode().clone() else {
            panic!("no confirmation: {:?}", app.mode());
        };
        assert_eq!(signal, Signal::Terminate);
        let pids: Vec<i32> = sessions.iter().map(|s| s.pid).collect();
        assert_eq!(pids, [10, 20]);
        assert_eq!(
            app.on_key(ch('y')),
            Some(Command::Signal {
                signal: Signal::Terminate,
                pids: vec![10, 20]
            })
        );
        assert_eq!(app.mode(), &Mode::Browse);
        app.signalled(Signal::Terminate, &[10, 20], &[10]);
        assert!(app.tagged().is_empty());
        assert_eq!(
            app.message(),
            Some("Terminated 10; not signalled (no lock here any more): 20")
        );
    }

    #[test]
    fn without_tags_c_asks_about_the_row_under_the_cursor_and_n_keeps_it() {
        let mut app = app();
        app.on_key(key(KeyCode::Down));
        app.on_key(ch('C'));
        assert!(
            matches!(app.mode(), Mode::Confirm { signal: Signal::Cancel, sessions } if sessions.len() == 1 && sessions[0].pid == 11)
        );
        assert_eq!(app.on_key(ch('n')), None);
        assert_eq!(app.mode(), &Mode::Browse);
        assert_eq!(app.message(), Some("Nothing signalled."));
    }

    #[test]
    fn the_own_session_and_unknown_backends_are_never_tagged_or_asked_about() {
        let mut app = app();
        let mut snapshot = app.snapshot().clone();
        snapshot.tree = tree_rows(vec![Edge {
            waiter: 99,
            blocker: 0,
            waits_for: String::new(),
            waited: None,
        }]);
        snapshot.sessions.insert(99, session(99, "pglock"));
        app.update(snapshot);
        assert_eq!(app.pid_at(Pane::Tree), Some(0));
        app.on_key(ch(' '));
        app.on_key(ch(' '));
        assert!(app.tagged().is_empty());
        app.on_key(ch('K'));
        assert_eq!(app.mode(), &Mode::Browse);
        app.on_key(key(KeyCode::Home));
        app.on_key(ch('K'));
        assert_eq!(
            app.mode(),
            &Mode::Browse,
            "prepared transactions have no session"
        );
    }

    #[test]
    fn the_filter_keeps_whole_trees_and_esc_clears_it() {
        let mut app = app();
        app.on_key(ch('/'));
        for c in "update".chars() {
            app.on_key(ch(c));
        }
        app.on_key(key(KeyCode::Enter));
        let pids: Vec<i32> = app.tree_rows().iter().map(|row| row.pid).collect();
        assert_eq!(pids, [10, 11, 12]);
        app.on_key(key(KeyCode::End));
        assert_eq!(app.pid_at(Pane::Tree), Some(12));
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.tree_rows().len(), 5);
    }

    #[test]
    fn the_cursor_follows_its_session_across_refreshes() {
        let mut app = app();
        app.on_key(key(KeyCode::End));
        assert_eq!(app.pid_at(Pane::Tree), Some(21));
        let mut snapshot = app.snapshot().clone();
        snapshot.tree.retain(|row| row.pid != 12);
        app.update(snapshot);
        assert_eq!(app.pid_at(Pane::Tree), Some(21));
    }

    #[test]
    fn own_transaction_id_locks_show_only_on_a() {
        let mut app = app();
        let mut snapshot = app.snapshot().clone();
        let lock = |pid, lock_type: &str, granted| LockRow {
            pid,
            lock_type: lock_type.to_owned(),
            mode: "EXCLUSIVE".to_owned(),
            granted,
            target: String::new(),
            waited: None,
        };
        snapshot.locks = vec![
            lock(10, "VIRTUALXID", true),
            lock(10, "TRANSACTIONID", true),
            lock(11, "TRANSACTIONID", false),
            lock(10, "RELATION", true),
        ];
        app.update(snapshot);
        let shown = |app: &App| {
            app.lock_rows()
                .iter()
                .map(|row| (row.pid, row.lock_type.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            shown(&app),
            [
                (11, "TRANSACTIONID".to_owned()),
                (10, "RELATION".to_owned())
            ]
        );
        app.on_key(ch('a'));
        assert_eq!(shown(&app).len(), 4);
    }

    #[test]
    fn b_tags_the_root_blockers() {
        let mut app = app();
        app.on_key(ch('b'));
        assert_eq!(app.tagged().iter().copied().collect::<Vec<_>>(), [10, 20]);
    }

    #[test]
    fn pause_help_sort_and_quit() {
        let mut app = app();
        assert_eq!(app.on_key(ch('p')), None);
        assert!(app.paused());
        assert_eq!(app.on_key(ch('p')), Some(Command::Refresh));
        app.on_key(ch('?'));
        assert_eq!(app.mode(), &Mode::Help);
        assert_eq!(app.on_key(ch('q')), None, "q closes the help first");
        app.on_key(ch('s'));
        assert_eq!(app.sort(), (Sort::Pid, false));
        assert_eq!(app.on_key(ch('q')), Some(Command::Quit));
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Command::Quit)
        );
    }
}
