//! The activity context: a leading `/*pga_context={json}*/` comment on a query, as
//! django-pgactivity writes it (`pgactivity.context(...)`) and reads it back.

/// What opens a context comment.
const OPENING: &str = "/*pga_context=";

/// Split a query into its context (the JSON text of a leading context comment) and the query
/// without that comment.
///
/// The comment is recognised exactly as django-pgactivity's pattern `^/\*pga_context={[^*]*}\*/`
/// recognises it: at the very start, a JSON object with no `*` in it (django-pgactivity writes
/// `*` as `-`), closed by `*/`. The comment and one newline after it (django-pgactivity puts one
/// there) are removed from the query; django-pgactivity keeps a comment that no newline follows,
/// which only clutters the listing.
///
/// The JSON is not parsed: pglock has no JSON dependency, and the text is what a listing shows.
pub(super) fn split(query: &str) -> (Option<&str>, &str) {
    let Some(rest) = query.strip_prefix(OPENING) else {
        return (None, query);
    };
    let Some(star) = rest.find('*') else {
        return (None, query);
    };
    let json = &rest[..star];
    let Some(after) = rest[star..].strip_prefix("*/") else {
        return (None, query);
    };
    if !(json.starts_with('{') && json.ends_with('}')) {
        return (None, query);
    }
    (Some(json), after.strip_prefix('\n').unwrap_or(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leading_context_comment_is_split_off() {
        assert_eq!(
            split("/*pga_context={\"job\":\"x\"}*/\nSELECT 1"),
            (Some("{\"job\":\"x\"}"), "SELECT 1")
        );
        assert_eq!(
            split("/*pga_context={}*/SELECT 1"),
            (Some("{}"), "SELECT 1")
        );
        assert_eq!(
            split("/*pga_context={\"a\": {\"b\": 1}}*/\n\nSELECT 1"),
            (Some("{\"a\": {\"b\": 1}}"), "\nSELECT 1")
        );
    }

    #[test]
    fn anything_else_is_left_alone() {
        for query in [
            "SELECT 1",
            "",
            " /*pga_context={}*/\nSELECT 1",
            "/*pga_context=[1]*/\nSELECT 1",
            "/*pga_context={\"a\":\"*\"}*/\nSELECT 1",
            "/*pga_context={\"a\":1}",
            "/*pga_context={\"a\":1} */",
            "/* pga_context={} */ SELECT 1",
            "<insufficient privilege>",
        ] {
            assert_eq!(split(query), (None, query), "{query:?}");
        }
    }
}
