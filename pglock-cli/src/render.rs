//! Turning rows into text: the compact table cut to the terminal's width, the expanded blocks,
//! and JSON; colour only on a terminal and never with `NO_COLOR`.

use std::io::IsTerminal as _;

use crate::attributes::Value;

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
        let stdout = std::io::stdout();
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

    /// `line` cut to the width, if there is one, without trailing spaces.
    pub fn cut(&self, line: &str) -> String {
        let cut: String = match self.width {
            Some(width) => line.chars().take(width).collect(),
            None => line.to_owned(),
        };
        cut.trim_end().to_owned()
    }
}

/// `text` on one line: runs of whitespace become one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The compact listing: a header, then one line per row, columns aligned and separated by
/// ` | ` (django-pglock's separator), each line cut to the width. `waiting[i]` highlights row i.
pub fn table(attributes: &[String], rows: &[Vec<Value>], waiting: &[bool], style: Style) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|value| one_line(&value.to_text())).collect())
        .collect();
    let last = attributes.len().saturating_sub(1);
    let widths: Vec<usize> = (0..attributes.len())
        .map(|column| {
            let widest = cells
                .iter()
                .map(|row| row[column].chars().count())
                .chain([attributes[column].chars().count()])
                .max()
                .unwrap_or(0);
            if column == last {
                widest
            } else {
                widest.min(MAX_COLUMN)
            }
        })
        .collect();
    let line = |row: &[String]| {
        let fields: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| {
                if column == last {
                    return cell.clone();
                }
                let width = widths[column];
                let length = cell.chars().count();
                if length > width {
                    let mut cut: String = cell.chars().take(width.saturating_sub(1)).collect();
                    cut.push('…');
                    cut
                } else {
                    format!("{cell}{}", " ".repeat(width - length))
                }
            })
            .collect();
        style.cut(&fields.join(" | "))
    };
    let mut out = style.bold(&line(attributes));
    out.push('\n');
    for (row, &waits) in cells.iter().zip(waiting) {
        let text = line(row);
        out.push_str(&if waits { style.warn(&text) } else { text });
        out.push('\n');
    }
    out
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
            "activity_id    | activity__query\n\
             7              | SELECT 1\n\
             12345678901234 | None\n"
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
        assert!(
            narrow.lines().all(|line| line.chars().count() <= 10),
            "{narrow}"
        );
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
        let attributes = ["a".to_owned(), "b".to_owned()];
        let long = "x".repeat(100);
        let rows = [vec![Value::Text(long.clone()), Value::Text(long.clone())]];
        let text = table(&attributes, &rows, &[false], PLAIN);
        let line = text.lines().nth(1).unwrap();
        assert_eq!(line, format!("{}… | {long}", "x".repeat(MAX_COLUMN - 1)));
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
