//! Drawing the state: a header, the blocking tree, the lock list, a status line and the key
//! hints; the help and the confirmation over them. Reads the state, never changes it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Clear, List, ListItem, ListState, Paragraph, Row, Table, TableState, Wrap,
};

use super::app::{App, Mode, Pane};
use super::snapshot::Session;

/// The smallest screen the view is drawn on; smaller ones get a message instead.
pub const MIN_WIDTH: u16 = 60;
/// See [`MIN_WIDTH`].
pub const MIN_HEIGHT: u16 = 18;

/// Colours, or only bold and reverse video (`NO_COLOR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Theme {
    /// Whether to use colours.
    pub colour: bool,
}

impl Theme {
    /// Colour unless `NO_COLOR` is set to something (as no-color.org says).
    pub fn from_env() -> Theme {
        Theme {
            colour: std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty()),
        }
    }

    fn paint(self, colour: Color) -> Style {
        if self.colour {
            Style::new().fg(colour)
        } else {
            Style::new()
        }
    }

    /// Root blockers: what to end first.
    pub fn root(self) -> Style {
        self.paint(Color::Red).add_modifier(Modifier::BOLD)
    }

    /// Locks waited for.
    pub fn waiting(self) -> Style {
        self.paint(Color::Yellow)
    }

    /// Tagged sessions.
    pub fn tagged(self) -> Style {
        self.paint(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    /// The row under the cursor.
    pub fn cursor(self) -> Style {
        Style::new().add_modifier(Modifier::REVERSED)
    }

    fn title(self) -> Style {
        Style::new().add_modifier(Modifier::BOLD)
    }
}

/// Draw the whole screen.
pub fn draw(frame: &mut Frame, app: &App, theme: Theme) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let text = format!(
            "The terminal is {}x{}; pglock top needs at least {MIN_WIDTH}x{MIN_HEIGHT}. \
             Enlarge it, or press q to quit.",
            area.width, area.height
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [header, tree, locks, details, status, keys] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(45),
        Constraint::Fill(1),
        Constraint::Length(5),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(header_line(app)).style(theme.title()),
        header,
    );
    draw_tree(frame, app, theme, tree);
    draw_locks(frame, app, theme, locks);
    draw_details(frame, app, theme, details);
    frame.render_widget(Paragraph::new(status_line(app)), status);
    frame.render_widget(
        Paragraph::new(
            "↑↓ move  Tab pane  space tag  b tag roots  K terminate  C cancel  s sort  / filter  p pause  ? help  q quit",
        ),
        keys,
    );
    match app.mode() {
        Mode::Help => draw_help(frame, area),
        Mode::Confirm { signal, sessions } => {
            let verb = match signal {
                pglock::Signal::Cancel => "Cancel the queries of",
                _ => "Terminate",
            };
            draw_confirm(frame, area, verb, sessions, theme);
        }
        Mode::Browse | Mode::Filter => {}
    }
}

fn header_line(app: &App) -> String {
    let snapshot = app.snapshot();
    let roots = snapshot.root_blockers().len();
    let mut line = format!(
        "pglock top · every {}s · {} waiting · {roots} root blocker{} · {} locks",
        app.interval().as_secs_f64(),
        snapshot.waiting(),
        if roots == 1 { "" } else { "s" },
        snapshot.locks.len(),
    );
    if let Some(taken) = snapshot.taken {
        line.push_str(&format!(" · {} UTC", time_of_day(taken)));
    }
    if app.paused() {
        line.push_str(" · PAUSED (p resumes)");
    }
    line
}

fn status_line(app: &App) -> String {
    if *app.mode() == Mode::Filter {
        return format!("Filter: {}▏ (Enter keeps it, Esc clears it)", app.filter());
    }
    let mut parts = Vec::new();
    if !app.filter().is_empty() {
        parts.push(format!("filter \"{}\"", app.filter()));
    }
    if !app.tagged().is_empty() {
        parts.push(format!("{} tagged", app.tagged().len()));
    }
    if let Some(message) = app.message() {
        parts.push(message.to_owned());
    }
    parts.join(" · ")
}

fn block(title: String, focused: bool, theme: Theme) -> Block<'static> {
    let title = if focused {
        Span::styled(format!(" {title} "), theme.title())
    } else {
        Span::raw(format!(" {title} "))
    };
    Block::bordered().title(title)
}

fn draw_tree(frame: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let rows = app.tree_rows();
    let focused = app.pane() == Pane::Tree;
    let title = format!("Blocking tree ({} sessions)", rows.len());
    let sessions = &app.snapshot().sessions;
    let items: Vec<ListItem> = if rows.is_empty() {
        vec![ListItem::new("No blocked sessions.")]
    } else {
        rows.iter()
            .map(|row| {
                let tagged = app.tagged().contains(&row.pid);
                let mut text = format!("{}{}", row.prefix, row.pid);
                if row.blocks > 0 {
                    text.push_str(&format!(" blocks {}", row.blocks));
                }
                let mut rest = Vec::new();
                if row.cycle {
                    rest.push("deadlock: already above".to_owned());
                }
                if let Some(waits) = &row.waits_for {
                    let waited = row
                        .waited
                        .map(|d| format!(" {}", clock(d)))
                        .unwrap_or_default();
                    rest.push(format!("waits{waited} for {waits}"));
                }
                match sessions.get(&row.pid) {
                    Some(session) => rest.extend(describe(session)),
                    None if row.pid == 0 => rest.push("prepared transaction".to_owned()),
                    None => rest.push("not in this database".to_owned()),
                }
                let style = if tagged {
                    theme.tagged()
                } else if row.root && row.blocks > 0 {
                    theme.root()
                } else {
                    Style::new()
                };
                let mark = if tagged { "* " } else { "  " };
                ListItem::new(Line::from(vec![
                    Span::styled(format!("{mark}{text}"), style),
                    Span::raw(format!(" · {}", rest.join(" · "))),
                ]))
            })
            .collect()
    };
    let mut state = ListState::default();
    if focused && !rows.is_empty() {
        state.select(Some(app.cursor(Pane::Tree)));
    }
    let list = List::new(items)
        .block(block(title, focused, theme))
        .highlight_style(theme.cursor());
    frame.render_stateful_widget(list, area, &mut state);
}

/// `ACTIVE 0:00:05 · app psql · user bob · ALTER TABLE ...`
fn describe(session: &Session) -> Vec<String> {
    let mut parts = Vec::new();
    let state = session.state.as_deref().unwrap_or("-");
    match session.duration {
        Some(duration) => parts.push(format!("{state} {}", clock(duration))),
        None => parts.push(state.to_owned()),
    }
    if !session.application.is_empty() {
        parts.push(format!("app {}", session.application));
    }
    if let Some(user) = &session.user {
        parts.push(format!("user {user}"));
    }
    parts.push(session.query.clone());
    parts
}

fn draw_locks(frame: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let rows = app.lock_rows();
    let focused = app.pane() == Pane::Locks;
    let (sort, reverse) = app.sort();
    let title = format!(
        "Locks ({}) · sorted by {}{} · {}",
        rows.len(),
        sort.name(),
        if reverse { ", reversed" } else { "" },
        if app.all_locks() {
            "all (a hides own transaction ids)"
        } else {
            "own transaction ids hidden (a shows them)"
        }
    );
    let sessions = &app.snapshot().sessions;
    // Only the rows that fit are built (there may be tens of thousands): the window that ends
    // at the cursor once the cursor is past the first screenful.
    let fits = usize::from(area.height.saturating_sub(3)).max(1);
    let cursor = app.cursor(Pane::Locks);
    let first = cursor.saturating_sub(fits - 1);
    let lines: Vec<Row> = rows
        .iter()
        .skip(first)
        .take(fits)
        .map(|row| {
            let tagged = app.tagged().contains(&row.pid);
            let session = sessions.get(&row.pid);
            let state = if row.granted {
                "held".to_owned()
            } else {
                match row.waited {
                    Some(waited) => format!("waits {}", clock(waited)),
                    None => "waits".to_owned(),
                }
            };
            let style = if tagged {
                theme.tagged()
            } else if row.granted {
                Style::new()
            } else {
                theme.waiting()
            };
            Row::new(vec![
                Cell::from(format!("{}{}", if tagged { "*" } else { " " }, row.pid)),
                Cell::from(row.lock_type.clone()),
                Cell::from(row.mode.clone()),
                Cell::from(state),
                Cell::from(row.target.clone()),
                Cell::from(
                    session
                        .and_then(|s| s.duration)
                        .map(clock)
                        .unwrap_or_default(),
                ),
                Cell::from(session.map(|s| s.query.clone()).unwrap_or_default()),
            ])
            .style(style)
        })
        .collect();
    let header = Row::new([
        "pid", "type", "mode", "state", "target", "duration", "query",
    ])
    .style(theme.title());
    let widths = [
        Constraint::Length(8),
        Constraint::Length(13),
        Constraint::Length(22),
        Constraint::Length(13),
        Constraint::Length(22),
        Constraint::Length(8),
        Constraint::Fill(1),
    ];
    let table = Table::new(lines, widths)
        .header(header)
        .block(block(title, focused, theme))
        .row_highlight_style(theme.cursor());
    let mut state = TableState::default();
    if focused && !rows.is_empty() {
        state.select(Some(cursor - first));
    }
    frame.render_stateful_widget(table, area, &mut state);
}

/// The session under the cursor, whole: the lists cut its query to their width.
fn draw_details(frame: &mut Frame, app: &App, theme: Theme, area: Rect) {
    let pid = app.pid_at(app.pane());
    let session = pid.and_then(|pid| app.snapshot().sessions.get(&pid));
    let lines = match session {
        Some(session) => {
            let mut facts = vec![format!("pid {}", session.pid)];
            let mut described = describe(session);
            described.pop(); // the query, below
            facts.extend(described);
            if let Some(started) = session.query_start {
                facts.push(format!("query since {} UTC", time_of_day(started)));
            }
            vec![
                Line::styled(facts.join(" · "), theme.title()),
                Line::from(session.query.clone()),
            ]
        }
        None => vec![Line::from(match pid {
            Some(0) => "A prepared transaction: no session to show or signal.",
            Some(_) => "A session of another database, or one that has ended.",
            None => "No session under the cursor.",
        })],
    };
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" Session ")),
        area,
    );
}

/// A box of `width` x `height` in the middle of `area`, no bigger than it.
fn centred(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

const HELP: &[(&str, &str)] = &[
    ("↑ ↓ j k", "move the cursor (PgUp PgDn Home End too)"),
    ("Tab", "switch between the tree and the lock list"),
    ("space", "tag or untag the session under the cursor"),
    (
        "b",
        "tag the root blockers (blocking others, waiting for nothing)",
    ),
    (
        "K",
        "terminate the tagged sessions (or the one under the cursor)",
    ),
    ("C", "cancel their current queries instead"),
    ("s / S", "sort the lock list by the next key / reverse it"),
    (
        "/",
        "filter: pid, application, user, state, query, mode, target",
    ),
    (
        "a",
        "show or hide each session's locks on its own transaction ids",
    ),
    ("p", "pause or resume the refresh"),
    ("r", "refresh now"),
    ("Esc", "clear the tags, the filter and the message"),
    ("q, Ctrl-C", "quit"),
];

fn draw_help(frame: &mut Frame, area: Rect) {
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| Line::from(format!("{keys:>10}  {what}")))
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(
        "Root blockers (blocking others, waiting for nothing) are in bold.",
    ));
    lines.push(Line::from("Any key closes this help."));
    let popup = centred(area, 78, lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Keys ")),
        popup,
    );
}

fn draw_confirm(frame: &mut Frame, area: Rect, verb: &str, sessions: &[Session], theme: Theme) {
    let noun = if sessions.len() == 1 {
        "session"
    } else {
        "sessions"
    };
    let mut lines: Vec<Line> = Vec::new();
    for session in sessions {
        let started = session
            .query_start
            .map(|t| format!("query since {} UTC", time_of_day(t)))
            .unwrap_or_else(|| "no query start".to_owned());
        let mut parts = vec![format!("pid {}", session.pid)];
        parts.extend(describe(session));
        parts.insert(parts.len() - 1, started);
        lines.push(Line::from(parts.join(" · ")));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "y: yes, signal them   n or Esc: no",
        theme.title(),
    ));
    let popup = centred(area, area.width.saturating_sub(4), lines.len() as u16 + 2);
    frame.render_widget(Clear, popup);
    let title = format!(" {verb} {} {noun}? ", sessions.len());
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(Span::styled(title, theme.root()))),
        popup,
    );
}

/// `1:02:03`, `0:00:05`.
pub fn clock(duration: Duration) -> String {
    let secs = duration.as_secs();
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `08:10:03`, in UTC.
fn time_of_day(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use super::*;
    use crate::top::snapshot::{Edge, Snapshot, tree_rows};

    fn app() -> App {
        let mut snapshot = Snapshot {
            tree: tree_rows(vec![Edge {
                waiter: 2,
                blocker: 1,
                waits_for: "ACCESS_EXCLUSIVE on public.t".to_owned(),
                waited: Some(Duration::from_secs(65)),
            }]),
            ..Snapshot::default()
        };
        for pid in [1, 2] {
            snapshot.sessions.insert(
                pid,
                Session {
                    pid,
                    query: format!("query of {pid}"),
                    ..Session::default()
                },
            );
        }
        let mut app = App::new(99, Duration::from_secs(2));
        app.update(snapshot);
        app
    }

    fn text(app: &App, theme: Theme, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|frame| draw(frame, app, theme)).unwrap();
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn a_small_terminal_gets_a_message_not_a_panic() {
        for (width, height) in [(59, 40), (120, 17), (1, 1), (0, 0)] {
            let screen = text(&app(), Theme { colour: true }, width, height);
            if width >= 20 {
                assert!(screen.contains("needs"), "{width}x{height}: {screen}");
            }
        }
        let screen = text(&app(), Theme { colour: true }, 60, 18);
        assert!(screen.contains("1 blocks 1"), "{screen}");
    }

    #[test]
    fn the_tree_shows_waits_and_the_help_opens_on_a_question_mark() {
        let mut app = app();
        let screen = text(&app, Theme { colour: false }, 100, 30);
        assert!(
            screen
                .contains("└─ 2 · waits 0:01:05 for ACCESS_EXCLUSIVE on public.t · - · query of 2"),
            "{screen}"
        );
        app.on_key(KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE));
        let screen = text(&app, Theme { colour: false }, 100, 30);
        assert!(screen.contains("Any key closes this help."), "{screen}");
    }

    #[test]
    fn a_long_lock_list_scrolls_with_the_cursor() {
        let mut app = app();
        let mut snapshot = app.snapshot().clone();
        snapshot.locks = (1000..1500)
            .map(|pid| crate::top::LockRow {
                pid,
                lock_type: "ADVISORY".to_owned(),
                mode: "EXCLUSIVE".to_owned(),
                granted: true,
                target: format!("advisory {pid}"),
                waited: None,
            })
            .collect();
        app.update(snapshot);
        let screen = text(&app, Theme { colour: false }, 100, 30);
        assert!(screen.contains("advisory 1000") && !screen.contains("advisory 1499"));
        app.on_key(KeyEvent::new(KeyCode::Tab, KeyModifiers::NONE));
        app.on_key(KeyEvent::new(KeyCode::End, KeyModifiers::NONE));
        let screen = text(&app, Theme { colour: false }, 100, 30);
        assert!(screen.contains("advisory 1499") && !screen.contains("advisory 1000"));
        let last = screen
            .lines()
            .rev()
            .find(|line| line.contains("advisory"))
            .unwrap();
        assert!(last.contains("advisory 1499"), "{screen}");
    }

    #[test]
    fn without_colour_only_modifiers_are_used() {
        let theme = Theme { colour: false };
        for style in [
            theme.root(),
            theme.waiting(),
            theme.tagged(),
            theme.cursor(),
        ] {
            assert_eq!(style.fg, None);
            assert_eq!(style.bg, None);
        }
        assert_eq!(Theme { colour: true }.root().fg, Some(Color::Red));
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
