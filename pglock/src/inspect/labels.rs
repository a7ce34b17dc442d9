//! The names a listing shows for Postgres' codes, as django-pglock and django-pgactivity show
//! them: `ACCESS_EXCLUSIVE`, `IDLE_IN_TRANSACTION`, `PARTITIONED_TABLE`.

/// A `pg_stat_activity.state` or `backend_type`, upper-snaked as django-pgactivity does
/// (`UPPER(REPLACE(x, ' ', '_'))`): `idle in transaction` → `IDLE_IN_TRANSACTION`,
/// `autovacuum worker` → `AUTOVACUUM_WORKER`.
pub(super) fn spaced(text: &str) -> String {
    text.replace(' ', "_").to_uppercase()
}

/// A CamelCase wait event (or wait event type) in upper snake case: `ClientRead` →
/// `CLIENT_READ`, `Lock` → `LOCK`, `advisory` → `ADVISORY`.
///
/// An acronym stays one word (`WALWrite` → `WAL_WRITE`), where django-pgactivity's
/// underscore-before-every-capital splits it letter by letter (`W_A_L_WRITE`).
pub(super) fn camel(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let before = chars[i - 1];
            let after = chars.get(i + 1).copied();
            let starts_word = before.is_lowercase()
                || before.is_ascii_digit()
                || (before.is_uppercase() && after.is_some_and(char::is_lowercase));
            if starts_word {
                out.push('_');
            }
        }
        if c == ' ' || c == '-' {
            out.push('_');
        } else {
            out.extend(c.to_uppercase());
        }
    }
    out
}

/// A `pg_class.relkind` by django-pglock's names; an unknown kind as its letter.
pub(super) fn relkind(kind: &str) -> String {
    match kind {
        "r" => "TABLE",
        "i" => "INDEX",
        "S" => "SEQUENCE",
        "t" => "TOAST",
        "v" => "VIEW",
        "m" => "MATERIALIZED_VIEW",
        "c" => "COMPOSITE_TYPE",
        "f" => "FOREIGN_TABLE",
        "p" => "PARTITIONED_TABLE",
        "I" => "PARTITIONED_INDEX",
        other => other,
    }
    .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_backend_types_as_django_pgactivity_shows_them() {
        assert_eq!(spaced("idle in transaction"), "IDLE_IN_TRANSACTION");
        assert_eq!(spaced("active"), "ACTIVE");
        assert_eq!(spaced("client backend"), "CLIENT_BACKEND");
        assert_eq!(
            spaced("idle in transaction (aborted)"),
            "IDLE_IN_TRANSACTION_(ABORTED)"
        );
    }

    #[test]
    fn wait_events_in_upper_snake_case() {
        assert_eq!(camel("Lock"), "LOCK");
        assert_eq!(camel("advisory"), "ADVISORY");
        assert_eq!(camel("transactionid"), "TRANSACTIONID");
        assert_eq!(camel("ClientRead"), "CLIENT_READ");
        assert_eq!(camel("WALWrite"), "WAL_WRITE");
        assert_eq!(camel("DSMFillZeroWrite"), "DSM_FILL_ZERO_WRITE");
        assert_eq!(camel("BgWorkerShutdown"), "BG_WORKER_SHUTDOWN");
        assert_eq!(camel("SLRURead"), "SLRU_READ");
        assert_eq!(camel("Extension"), "EXTENSION");
        assert_eq!(camel(""), "");
    }

    #[test]
    fn relation_kinds_by_django_pglock_names() {
        assert_eq!(relkind("r"), "TABLE");
        assert_eq!(relkind("I"), "PARTITIONED_INDEX");
        assert_eq!(relkind("x"), "x");
    }
}
