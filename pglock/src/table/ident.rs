//! SQL identifiers: the one quoting helper every table name goes through, and the limits
//! Postgres puts on a name.

use std::fmt;

/// The longest identifier Postgres keeps, in bytes (`NAMEDATALEN - 1` in a default build).
/// Postgres truncates a longer one with only a NOTICE, so locking `<64 bytes>` would lock the
/// table named by its first 63 bytes: a different table, or none.
pub(crate) const MAX_IDENT_BYTES: usize = 63;

/// An identifier written as a quoted SQL identifier: `"`, the name with each `"` doubled, `"`.
///
/// Quoting always (never only "when needed") keeps the name's case and makes every name, keyword
/// or not, mean exactly that table. A doubled quote is the only escape inside a quoted
/// identifier, so no text can end the identifier early.
pub(crate) struct Quoted<'a>(pub(crate) &'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for (i, piece) in self.0.split('"').enumerate() {
            if i > 0 {
                f.write_str("\"\"")?;
            }
            f.write_str(piece)?;
        }
        f.write_str("\"")
    }
}

/// Why `ident` cannot name a Postgres object exactly, if it cannot. `what` names the part
/// ("table name", "schema name") for the message.
pub(crate) fn problem(ident: &str, what: &str) -> Option<String> {
    if ident.is_empty() {
        return Some(format!("the {what} is empty"));
    }
    if ident.contains('\0') {
        // Postgres has no NUL in names, and the protocol would cut the statement at it.
        return Some(format!("the {what} contains a NUL character"));
    }
    if ident.len() > MAX_IDENT_BYTES {
        return Some(format!(
            "the {what} is {} bytes long; Postgres keeps only the first {MAX_IDENT_BYTES} bytes \
             of a name, so it would lock a different table",
            ident.len()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(ident: &str) -> String {
        Quoted(ident).to_string()
    }

    #[test]
    fn quotes_are_doubled_and_nothing_else_changes() {
        assert_eq!(quoted("orders"), r#""orders""#);
        assert_eq!(quoted("MixedCase"), r#""MixedCase""#);
        assert_eq!(quoted(r#"a"b"#), r#""a""b""#);
        assert_eq!(quoted(r#"""#), r#""""""#);
        assert_eq!(
            quoted(r#"x"; DROP TABLE y; --"#),
            r#""x""; DROP TABLE y; --""#
        );
        assert_eq!(quoted("my.table"), r#""my.table""#);
        assert_eq!(quoted("ünïcödé"), "\"ünïcödé\"");
    }

    #[test]
    fn problems_are_empty_nul_and_too_long() {
        assert_eq!(problem("orders", "table name"), None);
        assert_eq!(
            problem("", "schema name").as_deref(),
            Some("the schema name is empty")
        );
        assert!(problem("a\0b", "table name").unwrap().contains("NUL"));
        assert_eq!(problem(&"x".repeat(63), "table name"), None);
        let long = problem(&"x".repeat(64), "table name").unwrap();
        assert!(long.contains("64 bytes"), "{long}");
        // Bytes, not characters: 32 two-byte characters are 64 bytes.
        assert!(problem(&"é".repeat(32), "table name").is_some());
        assert_eq!(problem(&"é".repeat(31), "table name"), None);
    }
}
