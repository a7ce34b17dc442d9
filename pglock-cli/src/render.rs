//! Turning rows into text: the compact table fitted to the terminal's width, the expanded blocks,
//! and JSON; colour only on a terminal and never with `NO_COLOR`.

use std::io::IsTerminal;

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

use crate::attributes::{self, Value};

/// The widest a column other than the last may be, in characters.
const MAX_COLUMN: usize = 40;

/// The rule's width in expanded mode when the width is unknown.
const DEFAULT_RULE: usize = 80;

/// How output looks: where it goes decides.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    /// Whether to use ANSI colours and bold.
    pub colour: bool,
    /// The width to cut lines to; `None` to leave them whole.
    pub width: Option<usize>,
    /// Whether stdout is a terminal.
    pub terminal: bool,
}

impl Style {
    /// For stdout: colour on a terminal unless `NO_COLOR` is set (to anything but nothing, as
    /// no-color.org says); width from `COLUMNS`, else the terminal's, else none (piped output is
    /// left whole, for grep).
    pub fn for_stdout() -> Style {
        Style::for_stream(std::io::stdout())
    }

    /// For stderr (the kill's confirmation), as [`for_stdout`](Style::for_stdout) decides.
    pub fn for_stderr() -> Style {
        Style::for_stream(std::io::stderr())
    }

    fn for_stream<S: IsTerminal + std::os::fd::AsFd>(stdout: S) -> Style {
        let terminal = stdout.is_terminal();
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|columns| columns.trim().parse::<usize>().ok())
            .filter(|&columns| columns > 0)
            .or_else(|| {
                terminal
                    .then(|| terminal_size::terminal_size_of(&stdout))
                    .flatten()
                    .map(|(width, _)| usize::from(width.0))
                    .filter(|&columns| columns > 0)
            });
        Style {
            colour: terminal && !no_colour,
            width,
            terminal,
        }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// For locks waited for.
    pub fn warn(&self, text: &str) -> String {
        self.paint("33", text)
    }

    /// For root blockers.
    pub fn alert(&self, text: &str) -> String {
        self.paint("1;31", text)
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// `line` cut to the width, if there is one (with an ellipsis, by display width), without
    /// trailing spaces.
    pub fn cut(&self, line: &str) -> String {
        let line = line.trim_end();
        match self.width {
            Some(columns) => fit(line, columns),
            None => line.to_owned(),
        }
    }
}

/// `text` on one line: runs of whitespace become one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// How many terminal columns `text` takes (a CJK character takes two).
pub fn width(text: &str) -> usize {
    UnicodeWidthStr::width(text)
}

/// `text` in at most `max` columns: whole if it fits, else cut with an ellipsis.
pub fn fit(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `text` padded with spaces to `columns`, by display width.
fn pad(text: &str, columns: usize) -> String {
    let mut out = text.to_owned();
    out.extend(std::iter::repeat_n(
        ' ',
        columns.saturating_sub(width(text)),
    ));
    out
}

/// The compact listing: a header of short headings, then one line per row, columns aligned
/// (by display width) and separated by a space. `waiting[i]` highlights row i.
///
/// The widths come from the content and the terminal: each column as wide as its widest cell
/// (at most [`MAX_COLUMN`] but for the last), and when that is wider than the terminal, the
/// last column (the query) keeps at least [`MIN_LAST`] columns (or a quarter of the line) by
/// narrowing the widest columns, those that say who first. Numbers, durations and booleans are never cut;
/// text is cut with an ellipsis, never dropped.
pub fn table(attributes: &[String], rows: &[Vec<Value>], waiting: &[bool], style: Style) -> String {
    let headings: Vec<String> = attributes
        .iter()
        .map(|name| attributes::heading(name))
        .collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|value| one_line(&value.to_text())).collect())
        .collect();
    // A column of numbers, durations or booleans is never narrowed: a cut pid is a wrong pid.
    let whole: Vec<bool> = (0..attributes.len())
        .map(|column| {
            rows.iter().all(|row| {
                matches!(
                    row[column],
                    Value::Int(_) | Value::Duration(_) | Value::Bool(_) | Value::Null
                )
            })
        })
        .collect();
    let who: Vec<bool> = attributes
        .iter()
        .map(|name| {
            let field = name
                .strip_prefix("blocking_activity__")
                .or_else(|| name.strip_prefix("activity__"));
            field.is_some_and(|field| WHO.contains(&field))
        })
        .collect();
    let widths = widths(&headings, &cells, &whole, &who, style.width);
    let last = attributes.len().saturating_sub(1);
    let line = |row: &[String]| {
        let fields: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                let cut = fit(cell, widths[column]);
                if column == last {
                    cut
                } else {
                    pad(&cut, widths[column])
                }
            })
            .collect();
        style.cut(&fields.join(SEPARATOR))
    };
    let mut out = style.bold(&line(&headings));
    out.push('\n');
    for (row, &waits) in cells.iter().zip(waiting) {
        let text = line(row);
        out.push_str(&if waits { style.warn(&text) } else { text });
        out.push('\n');
    }
    out
}

/// The space between two columns.
const SEPARATOR: &str = " ";

/// The least the last column (the query) keeps when the line is too long.
pub const MIN_LAST: usize = 16;

/// The narrowest a text column is made, ellipsis included.
const MIN_TEXT: usize = 4;

/// The narrowest a column that says who is made before other columns are narrowed.
const MIN_WHO: usize = 8;

/// The columns that say who a session is, narrowed first.
const WHO: &[&str] = &[
    "database",
    "application_name",
    "user",
    "client_addr",
    "client_hostname",
    "backend_type",
    "context",
];

/// Each column's width: see [`table`].
fn widths(
    headings: &[String],
    cells: &[Vec<String>],
    whole: &[bool],
    who: &[bool],
    terminal: Option<usize>,
) -> Vec<usize> {
    let columns = headings.len();
    let last = columns.saturating_sub(1);
    let natural: Vec<usize> = (0..columns)
        .map(|column| {
            cells
                .iter()
                .map(|row| width(&row[column]))
                .chain([width(&headings[column])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut widths: Vec<usize> = natural
        .iter()
        .enumerate()
        .map(|(column, &w)| {
            if column == last || whole[column] {
                w
            } else {
                w.min(MAX_COLUMN)
            }
        })
        .collect();
    let Some(terminal) = terminal else {
        return widths;
    };
    let room = terminal.saturating_sub(SEPARATOR.len() * last);
    let keep_last = natural[last].min(MIN_LAST.max(terminal / 4));
    let floor = |column: usize, least: usize| {
        if whole[column] {
            natural[column]
        } else {
            natural[column].min(least)
        }
    };
    let over = |widths: &[usize]| widths[..last].iter().sum::<usize>() + keep_last > room;
    // Narrow the widest column by one until the last column has its share: first the columns
    // that say who (a database, application or user name stays recognisable in a few
    // letters), down to [`MIN_WHO`]; then any text column, down to [`MIN_TEXT`].
    for (least, only_who) in [(MIN_WHO, true), (MIN_TEXT, false)] {
        while over(&widths) {
            let widest = (0..last)
                .filter(|&column| !only_who || who[column])
                .filter(|&column| widths[column] > floor(column, least))
                .max_by_key(|&column| (widths[column], std::cmp::Reverse(column)));
            match widest {
                Some(column) => widths[column] -= 1,
                None => break,
            }
        }
    }
    widths[last] = room
        .saturating_sub(widths[..last].iter().sum::<usize>())
        .min(natural[last]);
    widths
}

/// The expanded listing: per row, a rule, then `attribute: value` lines with values whole
/// (multi-line queries dedented).
pub fn expanded(attributes: &[String], rows: &[Vec<Value>], style: Style) -> String {
    let rule = "─".repeat(style.width.unwrap_or(DEFAULT_RULE));
    let mut out = String::new();
    for row in rows {
        out.push_str(&style.bold(&rule));
        out.push('\n');
        for (attribute, value) in attributes.iter().zip(row) {
            let text = match value {
                Value::Text(text) => dedent(text),
                other => other.to_text(),
            };
            out.push_str(&format!("{}: {text}\n", style.bold(attribute)));
        }
    }
    out
}

/// JSON: an array of objects, one per row, keyed by attribute.
pub fn json(attributes: &[String], rows: &[Vec<Value>]) -> serde_json::Value {
    rows.iter()
        .map(|row| {
            attributes
                .iter()
                .zip(row)
                .map(|(attribute, value)| (attribute.clone(), value.to_json()))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .collect::<Vec<serde_json::Value>>()
        .into()
}

/// `text` without the indentation its non-blank lines share, and without blank lines around it.
pub fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|line| line.get(indent..).unwrap_or_else(|| line.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: Style = Style {
        colour: false,
        width: None,
        terminal: false,
    };

    #[test]
    fn the_table_aligns_columns_and_cuts_lines() {
        let attributes = ["activity_id".to_owned(), "activity__query".to_owned()];
        let rows = [
            vec![Value::Int(7), Value::Text("SELECT\n   1".into())],
            vec![Value::Int(12345678901234), Value::Null],
        ];
        let text = table(&attributes, &rows, &[false, true], PLAIN);
        assert_eq!(
            text,
            "pid            query\n\
             7              SELECT 1\n\
             12345678901234 None\n"
        );
        let narrow = table(
            &attributes,
            &rows,
            &[false, false],
            Style {
                width: Some(10),
                ..PLAIN
            },
        );
        assert!(narrow.lines().all(|line| width(line) <= 10), "{narrow}");
        let coloured = table(
            &attributes,
            &rows,
            &[false, true],
            Style {
                colour: true,
                ..PLAIN
            },
        );
        assert!(coloured.contains("\x1b[33m12345678901234"), "{coloured}");
    }

    #[test]
    fn long_cells_are_cut_with_an_ellipsis_except_the_last() {
        let attributes = ["target".to_owned(), "activity__query".to_owned()];
        let long = "x".repeat(100);
        let rows = [vec![Value::Text(long.clone()), Value::Text(long.clone())]];
        let text = table(&attributes, &rows, &[false], PLAIN);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line, format!("{}… {long}", "x".repeat(MAX_COLUMN - 1)));
    }

    /// Nine columns as the default listing has them, the query last.
    fn listing(query: &str, application: &str) -> (Vec<String>, Vec<Vec<Value>>) {
        let attributes: Vec<String> = crate::attributes::DEFAULT
            .iter()
            .map(|&name| name.to_owned())
            .collect();
        let row = vec![
            Value::Int(4_194_304),
            Value::Text("pglock_test_1234_orders".into()),
            Value::Text(application.into()),
            Value::Text("postgres".into()),
            Value::Text("IDLE_IN_TRANSACTION".into()),
            Value::Text("holds ACCESS_EXCLUSIVE".into()),
            Value::Text("public.orders_archive_2026".into()),
            Value::Duration(std::time::Duration::from_secs(3725)),
            Value::Text(query.into()),
        ];
        (attributes, vec![row])
    }

    #[test]
    fn at_80_and_120_columns_the_query_keeps_its_share_and_pids_stay_whole() {
        let query = "ALTER TABLE orders ADD COLUMN note text DEFAULT 'none' NOT NULL";
        let (attributes, rows) = listing(query, "billing-worker");
        for columns in [80, 120] {
            let style = Style {
                width: Some(columns),
                ..PLAIN
            };
            let text = table(&attributes, &rows, &[false], style);
            let line = text.lines().nth(1).unwrap();
            assert!(width(line) <= columns, "{line}");
            assert!(line.starts_with("4194304 "), "{line}");
            assert!(line.contains(" 1:02:05 "), "{line}");
            let shown = line.rsplit(" 1:02:05 ").next().unwrap().trim_start();
            assert!(width(shown) >= MIN_LAST, "{line}");
            assert!(query.starts_with(shown.trim_end_matches('…')), "{line}");
            assert!(shown.ends_with('…') || shown == query, "{line}");
        }
        // Wide enough for everything: nothing is cut.
        let wide = table(
            &attributes,
            &rows,
            &[false],
            Style {
                width: Some(300),
                ..PLAIN
            },
        );
        assert!(wide.contains(query) && !wide.contains('…'), "{wide}");
    }

    #[test]
    fn wide_characters_align_by_display_width() {
        let (attributes, mut rows) = listing("SELECT 1", "注文サービス");
        rows.push(listing("SELECT 2", "orders").1.remove(0));
        let text = table(
            &attributes,
            &rows,
            &[false, false],
            Style {
                width: Some(200),
                ..PLAIN
            },
        );
        let starts: Vec<usize> = text
            .lines()
            .skip(1)
            .map(|line| width(&line[..line.find("postgres").unwrap()]))
            .collect();
        assert_eq!(starts[0], starts[1], "{text}");
        let cut = table(
            &attributes,
            &rows,
            &[false, false],
            Style {
                width: Some(60),
                ..PLAIN
            },
        );
        assert!(cut.lines().all(|line| width(line) <= 60), "{cut}");
    }

    proptest::proptest! {
        #[test]
        fn every_line_fits_and_every_query_keeps_its_start(
            texts in proptest::collection::vec("[a-z注文 _]{0,30}", 1..6),
            query in "[A-Za-z注 ()*]{1,80}",
            columns in 30usize..160,
        ) {
            let (attributes, mut rows) = listing(&query, "app");
            for (i, text) in texts.iter().enumerate() {
                rows.push(listing(&query, text).1.remove(0));
                rows[i + 1][1] = Value::Text(text.clone());
            }
            let style = Style { width: Some(columns), ..PLAIN };
            let text = table(&attributes, &rows, &vec![false; rows.len()], style);
            for line in text.lines() {
                proptest::prop_assert!(width(line) <= columns, "{}", line);
            }
            // Wide enough for the whole columns and a query: each line keeps its pid whole and
            // the start of its query.
            if columns >= 60 {
                for line in text.lines().skip(1) {
                    proptest::prop_assert!(line.starts_with("4194304 "), "{}", line);
                    let shown = one_line(&query);
                    let first: String = shown.chars().take(3).collect();
                    proptest::prop_assert!(line.contains(first.trim()), "{}", line);
                }
            }
        }
    }

    #[test]
    fn fitting_counts_columns_not_characters() {
        assert_eq!(fit("abcdef", 6), "abcdef");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("注文注文", 5), "注文…");
        assert_eq!(fit("注文注文", 4), "注…");
        assert_eq!(fit("x", 0), "");
    }

    #[test]
    fn expanded_rows_keep_whole_dedented_values() {
        let attributes = ["activity__query".to_owned()];
        let rows = [vec![Value::Text("\n    SELECT *\n      FROM t\n".into())]];
        let text = expanded(
            &attributes,
            &rows,
            Style {
                width: Some(3),
                ..PLAIN
            },
        );
        assert_eq!(text, "───\nactivity__query: SELECT *\n  FROM t\n");
    }
}
