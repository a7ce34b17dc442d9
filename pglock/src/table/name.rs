//! Table names: an optional schema and a name, parsed from `[schema.]table` text.

use std::fmt;
use std::str::FromStr;

use super::ident::{self, Quoted};

/// The name of a table to lock: an optional schema and the table's name, both taken verbatim.
///
/// Names are case-sensitive and never folded: `TableName::unqualified("Orders")` is the table
/// created as `"Orders"`, as a Django model's `db_table` is. Without a schema, Postgres looks the
/// table up on the `search_path`.
///
/// Its [`Display`](fmt::Display) form is the SQL pglock sends: each part quoted, with any `"`
/// inside doubled (`"public"."Orders"`).
///
/// Build one from its parts with [`new`](TableName::new) or [`unqualified`](TableName::unqualified)
/// (a dot or quote in a part is then part of the name), or parse `[schema.]table` text with
/// [`str::parse`] (see [`FromStr`](TableName#impl-FromStr-for-TableName)). The parts are checked
/// when the table is locked: neither may be empty, contain a NUL character, or be longer than
/// the 63 bytes Postgres keeps of a name.
///
/// ```
/// use pglock::TableName;
///
/// let parsed: TableName = r#"billing."Invoice.2024""#.parse()?;
/// assert_eq!(parsed, TableName::new("billing", "Invoice.2024"));
/// assert_eq!(parsed.to_string(), r#""billing"."Invoice.2024""#);
/// # Ok::<(), pglock::ParseTableNameError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    /// The table `name` in `schema`, both verbatim.
    ///
    /// ```
    /// # fn example() -> Result<(), pglock::Error> {
    /// let table = pglock::TableName::new("billing", "invoices");
    /// assert_eq!(table.schema(), Some("billing"));
    /// # Ok(()) }
    /// ```
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName {
            schema: Some(schema.into()),
            name: name.into(),
        }
    }

    /// The table `name` (verbatim), looked up on the `search_path`.
    ///
    /// ```
    /// # fn example() -> Result<(), pglock::Error> {
    /// let table = pglock::TableName::unqualified("orders");
    /// assert_eq!(table.schema(), None);
    /// # Ok(()) }
    /// ```
    pub fn unqualified(name: impl Into<String>) -> Self {
        TableName {
            schema: None,
            name: name.into(),
        }
    }

    /// The schema, if the name is schema-qualified.
    ///
    /// ```
    /// # fn example() -> Result<(), pglock::Error> {
    /// assert_eq!(pglock::TableName::new("billing", "invoices").schema(), Some("billing"));
    /// # Ok(()) }
    /// ```
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The table's own name.
    ///
    /// ```
    /// # fn example() -> Result<(), pglock::Error> {
    /// assert_eq!(pglock::TableName::new("billing", "invoices").name(), "invoices");
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why this cannot name a table exactly, if it cannot.
    fn problem(&self) -> Option<String> {
        let schema = self.schema.as_deref();
        schema
            .and_then(|schema| ident::problem(schema, "schema name"))
            .or_else(|| ident::problem(&self.name, "table name"))
    }

    /// This name, if both parts can name a Postgres object exactly.
    pub(crate) fn checked(self) -> Result<TableName, ParseTableNameError> {
        match self.problem() {
            None => Ok(self),
            Some(problem) => Err(ParseTableNameError {
                input: format!("{self:?}"),
                problem,
            }),
        }
    }
}

impl fmt::Display for TableName {
    /// The quoted SQL form: `"schema"."name"`, or `"name"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(schema) = &self.schema {
            write!(f, "{}.", Quoted(schema))?;
        }
        write!(f, "{}", Quoted(&self.name))
    }
}

impl FromStr for TableName {
    type Err = ParseTableNameError;

    /// Parses `table` or `schema.table`, splitting on the first dot outside double quotes.
    ///
    /// Each part is taken verbatim (case kept). A part wrapped in double quotes has them removed
    /// and each `""` inside turned into `"`, so `"my.table"` (with the quotes) is one table named
    /// `my.table`, and `"say ""hi"""` is the table named `say "hi"`.
    ///
    /// # Errors
    /// When the text has more than one dot outside quotes, an unbalanced or stray double quote,
    /// text after a closing quote, an empty part, a NUL character, or a part longer than 63
    /// bytes (which Postgres would truncate, naming a different table).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |problem: String| ParseTableNameError {
            input: format!("{text:?}"),
            problem,
        };
        let (first, rest) = split_part(text).map_err(error)?;
        let name = match rest {
            None => TableName::unqualified(first),
            Some(rest) => match split_part(rest).map_err(error)? {
                (second, None) => TableName::new(first, second),
                (_, Some(_)) => {
                    return Err(error(
                        "more than one dot outside double quotes; a name that contains a dot \
                         must be quoted, as in \"schema\".\"my.table\""
                            .to_owned(),
                    ));
                }
            },
        };
        match name.problem() {
            None => Ok(name),
            Some(problem) => Err(error(problem)),
        }
    }
}

/// The first part of `text` with its quoting removed, and the text after the dot that ends it
/// (`None` when the part runs to the end).
fn split_part(text: &str) -> Result<(String, Option<&str>), String> {
    let Some(quoted) = text.strip_prefix('"') else {
        return match text.find(['.', '"']) {
            None => Ok((text.to_owned(), None)),
            Some(dot) if text[dot..].starts_with('.') => {
                Ok((text[..dot].to_owned(), Some(&text[dot + 1..])))
            }
            Some(_) => Err(
                "a double quote inside an unquoted name; quote the whole part and \
                            double the quotes inside it, as in \"say \"\"hi\"\"\""
                    .to_owned(),
            ),
        };
    };
    let mut part = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != '"' {
            part.push(c);
            continue;
        }
        let after = &quoted[i + 1..];
        if after.starts_with('"') {
            // `""` inside quotes is one literal quote.
            part.push('"');
            chars.next();
            continue;
        }
        return match after.strip_prefix('.') {
            _ if after.is_empty() => Ok((part, None)),
            Some(rest) => Ok((part, Some(rest))),
            None => Err(format!(
                "unexpected text {after:?} after a closing double quote; double a quote that is \
                 part of the name"
            )),
        };
    }
    Err("unbalanced double quote: a quoted part has no closing quote".to_owned())
}

/// The error of parsing a [`TableName`] from text, or of a name that cannot name a Postgres
/// table exactly. Locking such a name is [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid table name {input}: {problem}")]
pub struct ParseTableNameError {
    /// The text (or name) as given, already formatted for the message.
    input: String,
    /// What is wrong with it.
    problem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<TableName, String> {
        text.parse().map_err(|e: ParseTableNameError| e.to_string())
    }

    #[test]
    fn plain_and_qualified_names_are_taken_verbatim() {
        assert_eq!(parse("orders"), Ok(TableName::unqualified("orders")));
        assert_eq!(parse("Orders"), Ok(TableName::unqualified("Orders")));
        assert_eq!(
            parse("billing.Invoice"),
            Ok(TableName::new("billing", "Invoice"))
        );
        assert_eq!(
            parse("x; DROP TABLE y"),
            Ok(TableName::unqualified("x; DROP TABLE y"))
        );
        assert_eq!(parse(" spaced "), Ok(TableName::unqualified(" spaced ")));
    }

    #[test]
    fn quoted_parts_lose_their_quotes_and_keep_their_dots() {
        assert_eq!(
            parse(r#""my.table""#),
            Ok(TableName::unqualified("my.table"))
        );
        assert_eq!(
            parse(r#""my.schema"."my.table""#),
            Ok(TableName::new("my.schema", "my.table"))
        );
        assert_eq!(
            parse(r#"public."Mixed""#),
            Ok(TableName::new("public", "Mixed"))
        );
        assert_eq!(parse(r#""a.b".c"#), Ok(TableName::new("a.b", "c")));
        assert_eq!(
            parse(r#""say ""hi""""#),
            Ok(TableName::unqualified(r#"say "hi""#))
        );
        assert_eq!(parse(r#""""""#), Ok(TableName::unqualified(r#"""#)));
    }

    #[test]
    fn malformed_names_say_what_is_wrong() {
        let problem = |text: &str, expected: &str| {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
            assert!(error.starts_with("invalid table name "), "{error}");
        };
        problem("", "table name is empty");
        problem("\"\"", "table name is empty");
        problem("orders.", "table name is empty");
        problem(".orders", "schema name is empty");
        problem("\"\".orders", "schema name is empty");
        problem("a.b.c", "more than one dot");
        problem("a..b", "more than one dot");
        problem(r#""a.b"."c"."d""#, "more than one dot");
        problem(r#""orders"#, "unbalanced double quote");
        problem(r#"a."orders"#, "unbalanced double quote");
        problem(r#""a"""#, "unbalanced double quote");
        problem(r#"ord"ers"#, "double quote inside an unquoted name");
        problem(r#"orders""#, "double quote inside an unquoted name");
        problem(r#""a"b"#, "after a closing double quote");
        problem(r#""a" .b"#, "after a closing double quote");
        problem("ord\0ers", "NUL");
        problem(&"x".repeat(64), "64 bytes");
        problem(&format!("{}.t", "s".repeat(70)), "schema name is 70 bytes");
        assert!(parse(&"x".repeat(63)).is_ok());
        // Quotes do not count towards the length: they are not part of the name.
        assert!(parse(&format!("\"{}\"", "x".repeat(63))).is_ok());
    }

    #[test]
    fn display_is_the_quoted_sql_form() {
        assert_eq!(TableName::unqualified("orders").to_string(), r#""orders""#);
        assert_eq!(
            TableName::new("my.schema", r#"say "hi""#).to_string(),
            r#""my.schema"."say ""hi""""#
        );
    }

    #[test]
    fn parsing_the_display_form_gives_the_name_back() {
        for name in [
            TableName::unqualified("orders"),
            TableName::new("Billing", "Invoice"),
            TableName::new("a.b", r#"c"d.e"#),
            TableName::unqualified(r#"""#),
        ] {
            assert_eq!(parse(&name.to_string()), Ok(name));
        }
    }

    #[test]
    fn built_names_are_checked_too() {
        assert!(TableName::unqualified("orders").checked().is_ok());
        let error = TableName::new("", "orders").checked().unwrap_err();
        assert!(
            error.to_string().contains("schema name is empty"),
            "{error}"
        );
        assert!(TableName::unqualified("a\0").checked().is_err());
        assert!(TableName::unqualified("x".repeat(64)).checked().is_err());
        // Built names are verbatim: dots and quotes are part of the name.
        assert!(TableName::unqualified(r#"a."b"#).checked().is_ok());
    }
}
