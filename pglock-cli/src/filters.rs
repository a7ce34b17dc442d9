//! `-f/--filter key=value`: django-pglock's filter lookups, each mapped to a filter of the
//! inspection API (so every value is a bound parameter, never SQL text).

use std::time::Duration;

use pglock::{AdvisoryKey, LockMode};

use crate::duration;

/// One parsed filter.
#[derive(Clone, Debug, PartialEq)]
pub enum Filter {
    /// `activity_id`, `activity_id__in`: the backends whose locks are listed.
    Pids(Vec<i32>),
    /// `granted`.
    Granted(bool),
    /// `mode`, `mode__in`.
    Modes(Vec<LockMode>),
    /// `rel_name`, `rel_name__in`: `table` or `schema.table`.
    On(Vec<String>),
    /// `advisory`: a lock name, hashed as the library hashes string ids.
    Advisory(String),
    /// `advisory_key`: a raw key, `N` or `A,B`.
    AdvisoryKey(AdvisoryKey),
    /// `wait_duration__gt`, `wait_duration__gte`.
    MinWait(Duration),
    /// `activity__duration__gt`, `activity__duration__gte`.
    MinDuration(Duration),
    /// `blocking_activity_id`, `blocking_activity_id__in` (with `--blocking`).
    BlockingPids(Vec<i32>),
    /// `blocking_activity__duration__gt`, `__gte` (with `--blocking`).
    MinBlockingDuration(Duration),
}

/// The keys `-f` accepts, for messages and `--help`.
pub const KEYS: &[&str] = &[
    "activity_id",
    "activity_id__in",
    "granted",
    "mode",
    "mode__in",
    "rel_name",
    "rel_name__in",
    "advisory",
    "advisory_key",
    "wait_duration__gt",
    "wait_duration__gte",
    "activity__duration__gt",
    "activity__duration__gte",
    "blocking_activity_id",
    "blocking_activity_id__in",
    "blocking_activity__duration__gt",
    "blocking_activity__duration__gte",
];

impl Filter {
    /// Whether the filter is about the blocking side, which only `--blocking` lists.
    pub fn needs_blocking(&self) -> bool {
        matches!(
            self,
            Filter::BlockingPids(_) | Filter::MinBlockingDuration(_)
        )
    }
}

/// Parse `key=value` (split at the first `=`; spaces around either side are ignored).
///
/// # Errors
/// A one-line message naming the filter: no `=`, an unknown key (listing the known ones), or a
/// value the key does not accept.
pub fn parse(filter: &str) -> Result<Filter, String> {
    let Some((key, value)) = filter.split_once('=') else {
        return Err(format!(
            "malformed filter {filter:?}: expected key=value, e.g. granted=false"
        ));
    };
    let (key, value) = (key.trim(), value.trim());
    let bad = |expected: &str| format!("bad value in filter {filter:?}: expected {expected}");
    let pids = |value: &str| {
        list(value)
            .map(|pid| pid.parse::<i32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("a pid (an integer), or pids separated by commas for __in"))
    };
    let single = |items: Vec<i32>| {
        if items.len() == 1 {
            Ok(items)
        } else {
            Err(bad("one pid (use activity_id__in=1,2 for several)"))
        }
    };
    let min = |value: &str| duration::parse(value).map_err(|e| bad(&e.to_string()));
    Ok(match key {
        "activity_id" => Filter::Pids(single(pids(value)?)?),
        "activity_id__in" => Filter::Pids(pids(value)?),
        "blocking_activity_id" => Filter::BlockingPids(single(pids(value)?)?),
        "blocking_activity_id__in" => Filter::BlockingPids(pids(value)?),
        "granted" => Filter::Granted(boolean(value).ok_or_else(|| bad("true or false"))?),
        "mode" | "mode__in" => {
            let modes = list(value)
                .map(|mode| mode.parse::<LockMode>().map_err(|e| bad(&e.to_string())))
                .collect::<Result<Vec<_>, _>>()?;
            if key == "mode" && modes.len() != 1 {
                return Err(bad("one lock mode (use mode__in for several)"));
            }
            Filter::Modes(modes)
        }
        "rel_name" | "rel_name__in" => {
            let names: Vec<String> = if key == "rel_name" {
                vec![value.to_owned()]
            } else {
                list(value).map(str::to_owned).collect()
            };
            if names.iter().any(String::is_empty) {
                return Err(bad("a table name"));
            }
            Filter::On(names)
        }
        "advisory" => {
            if value.is_empty() {
                return Err(bad("an advisory lock's name"));
            }
            Filter::Advisory(value.to_owned())
        }
        "advisory_key" => Filter::AdvisoryKey(
            advisory_key(value)
                .ok_or_else(|| bad("a key: an integer, or two separated by a comma"))?,
        ),
        "wait_duration__gt" | "wait_duration__gte" => Filter::MinWait(min(value)?),
        "activity__duration__gt" | "activity__duration__gte" => Filter::MinDuration(min(value)?),
        "blocking_activity__duration__gt" | "blocking_activity__duration__gte" => {
            Filter::MinBlockingDuration(min(value)?)
        }
        _ => {
            return Err(format!(
                "unknown filter key {key:?} in {filter:?}: expected one of {}",
                KEYS.join(", ")
            ));
        }
    })
}

/// The comma-separated items of a list value, trimmed.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim)
}

/// A boolean as Django's `BooleanField` accepts one from text.
fn boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" => Some(true),
        "false" | "f" | "0" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// A raw advisory key: `N` (a `bigint` key) or `A,B` (a pair of `int` keys), as
/// `pg_advisory_lock(N)` and `pg_advisory_lock(A, B)` take them.
pub fn advisory_key(value: &str) -> Option<AdvisoryKey> {
    let value = value.trim();
    let value = value
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(value);
    match value.split_once(',') {
        None => value.trim().parse().ok().map(AdvisoryKey::BigInt),
        Some((a, b)) => Some(AdvisoryKey::Pair(
            a.trim().parse().ok()?,
            b.trim().parse().ok()?,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn django_pglock_lookups_map_to_filters() {
        assert_eq!(parse("activity_id=42"), Ok(Filter::Pids(vec![42])));
        assert_eq!(parse("activity_id__in=1, 2"), Ok(Filter::Pids(vec![1, 2])));
        assert_eq!(parse("granted=False"), Ok(Filter::Granted(false)));
        assert_eq!(parse("granted = t"), Ok(Filter::Granted(true)));
        assert_eq!(
            parse("mode=ACCESS_EXCLUSIVE"),
            Ok(Filter::Modes(vec![LockMode::AccessExclusive]))
        );
        assert_eq!(
            parse("mode__in=share,AccessShareLock"),
            Ok(Filter::Modes(vec![LockMode::Share, LockMode::AccessShare]))
        );
        assert_eq!(
            parse("rel_name=app.orders"),
            Ok(Filter::On(vec!["app.orders".into()]))
        );
        assert_eq!(
            parse("activity__duration__gt=1 minute"),
            Ok(Filter::MinDuration(Duration::from_secs(60)))
        );
        assert_eq!(
            parse("wait_duration__gte=500ms"),
            Ok(Filter::MinWait(Duration::from_millis(500)))
        );
        assert_eq!(parse("advisory=a=b"), Ok(Filter::Advisory("a=b".into())));
        assert_eq!(
            parse("advisory_key=-7"),
            Ok(Filter::AdvisoryKey(AdvisoryKey::BigInt(-7)))
        );
        assert_eq!(
            parse("advisory_key=(1, -2)"),
            Ok(Filter::AdvisoryKey(AdvisoryKey::Pair(1, -2)))
        );
        assert!(parse("blocking_activity_id=3").unwrap().needs_blocking());
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let error = |text: &str| parse(text).unwrap_err();
        assert!(error("granted").starts_with("malformed filter \"granted\""));
        assert!(error("nope=1").starts_with("unknown filter key \"nope\""));
        assert!(error("nope=1").contains("activity_id, activity_id__in"));
        assert!(error("granted=maybe").contains("expected true or false"));
        assert!(error("activity_id=x").contains("a pid"));
        assert!(error("activity_id=1,2").contains("activity_id__in"));
        assert!(error("mode=big").contains("unknown lock mode"));
        assert!(error("activity__duration__gt=soon").contains("bad duration"));
        assert!(error("advisory_key=1,2,3").contains("a key"));
        assert!(error("rel_name=").contains("a table name"));
    }

    proptest! {
        #[test]
        fn never_panics_and_errors_are_one_line_naming_the_filter(text in "\\PC{0,60}") {
            if let Err(error) = parse(&text) {
                prop_assert!(!error.contains('\n'));
                prop_assert!(error.contains(&format!("{text:?}")), "{}", error);
            }
        }

        #[test]
        fn any_known_key_with_any_value_parses_or_errors(
            key in proptest::sample::select(KEYS),
            value in "[ -~]{0,30}",
        ) {
            let text = format!("{key}={value}");
            if let Err(error) = parse(&text) {
                prop_assert!(error.starts_with("bad value in filter"), "{}", error);
            }
        }
    }
}
