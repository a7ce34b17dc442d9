//! `-f/--filter key=value`: django-pglock's filter lookups, each mapped to a filter of the
//! inspection API (so every value is a bound parameter, never SQL text).
//!
//! A few keys keep a meaning of their own: `activity_id` (pids lift the limit, as positional
//! pids do), `granted`, `mode` (checked lock-mode names), `rel_name` (`schema.table`),
//! `advisory` and `advisory_key`. Every other key is a field of the listing with a django lookup
//! (`activity__query__icontains`), handed to [`pglock::LockQuery::filter`], which knows the
//! fields; its value is read here by the field's kind.

use pglock::{AdvisoryKey, FilterKey, FilterValue, LockMode, Lookup, ValueKind};

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
    /// Any other field with a lookup: `activity__state__in=ACTIVE,IDLE`.
    Field(FilterKey, FilterValue),
}

/// The keys with a meaning of their own, for the tests.
#[cfg(test)]
pub const SPECIAL_KEYS: &[&str] = &[
    "activity_id",
    "activity_id__in",
    "granted",
    "mode",
    "mode__in",
    "rel_name",
    "rel_name__in",
    "advisory",
    "advisory_key",
];

impl Filter {
    /// Whether the filter is about the blocking side, which only `--blocking` lists.
    pub fn needs_blocking(&self) -> bool {
        matches!(self, Filter::Field(key, _) if key.is_about_blocking())
    }
}

/// Parse `key=value` (split at the first `=`; spaces around either side are ignored).
///
/// # Errors
/// A one-line message naming the filter: no `=`, an unknown key or lookup, or a value the key
/// does not accept.
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
    Ok(match key {
        "activity_id" => {
            let pids = pids(value)?;
            if pids.len() != 1 {
                return Err(bad("one pid (use activity_id__in=1,2 for several)"));
            }
            Filter::Pids(pids)
        }
        "activity_id__in" => Filter::Pids(pids(value)?),
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
        _ => {
            let parsed: FilterKey = key.parse().map_err(|error: pglock::ParseFilterKeyError| {
                let error = error.to_string();
                if error.starts_with("unknown lookup") {
                    format!("{error} (in filter {filter:?})")
                } else {
                    unknown_key(key, filter)
                }
            })?;
            let value = field_value(parsed, value).map_err(|e| bad(&e))?;
            parsed
                .check_value(&value)
                .map_err(|e| format!("bad value in filter {filter:?}: {e}"))?;
            Filter::Field(parsed, value)
        }
    })
}

/// The message for a key that names no field: the fields in short.
fn unknown_key(key: &str, filter: &str) -> String {
    let fields = FilterKey::fields();
    let lock: Vec<&str> = fields
        .iter()
        .map(String::as_str)
        .filter(|field| !field.contains("__") && *field != "blocking_activity_id")
        .collect();
    let activity: Vec<&str> = fields
        .iter()
        .filter_map(|field| field.strip_prefix("activity__"))
        .collect();
    format!(
        "unknown filter key {key:?} in {filter:?}: expected one of {}, advisory, advisory_key, \
         activity__FIELD or (with --blocking) blocking_activity__FIELD, where FIELD is one of \
         {}; each optionally followed by __LOOKUP: {}",
        lock.join(", "),
        activity.join(", "),
        FilterKey::lookups().join(", ")
    )
}

/// A field filter's value, read by the field's kind and the lookup.
fn field_value(key: FilterKey, value: &str) -> Result<FilterValue, String> {
    match key.lookup() {
        Lookup::IsNull => boolean(value)
            .map(FilterValue::Bool)
            .ok_or_else(|| "true or false".to_owned()),
        Lookup::In => Ok(FilterValue::List(
            list(value)
                .map(|item| one_value(key.value_kind(), item))
                .collect::<Result<_, _>>()?,
        )),
        _ => one_value(key.value_kind(), value),
    }
}

fn one_value(kind: ValueKind, value: &str) -> Result<FilterValue, String> {
    match kind {
        ValueKind::Int => value
            .parse::<i64>()
            .map(FilterValue::Int)
            .map_err(|_| "an integer".to_owned()),
        ValueKind::Bool => boolean(value)
            .map(FilterValue::Bool)
            .ok_or_else(|| "true or false".to_owned()),
        ValueKind::Duration => duration::parse(value)
            .map(FilterValue::Duration)
            .map_err(|e| e.to_string()),
        // The server reads times (as a timestamptz): it knows every format Postgres does.
        ValueKind::Time if value.is_empty() => Err("a time, e.g. 2026-12-03 08:00Z".to_owned()),
        ValueKind::Text | ValueKind::Time => Ok(FilterValue::Text(value.to_owned())),
        _ => Err("a value this version does not know how to read".to_owned()),
    }
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
    use std::time::Duration;

    fn field(text: &str) -> (String, FilterValue) {
        match parse(text) {
            Ok(Filter::Field(key, value)) => (key.to_string(), value),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn django_pglock_lookups_map_to_filters() {
        assert_eq!(parse("activity_id=42"), Ok(Filter::Pids(vec![42])));
        assert_eq!(parse("activity_id__in=1, 2"), Ok(Filter::Pids(vec![1, 2])));
        assert_eq!(parse(" granted = FALSE "), Ok(Filter::Granted(false)));
        assert_eq!(
            parse("mode__in=ACCESS_SHARE,exclusive"),
            Ok(Filter::Modes(vec![
                LockMode::AccessShare,
                LockMode::Exclusive
            ]))
        );
        assert_eq!(
            parse("rel_name__in=a, s.b"),
            Ok(Filter::On(vec!["a".into(), "s.b".into()]))
        );
        assert_eq!(
            field("activity__duration__gt=1 minute"),
            (
                "activity__duration__gt".to_owned(),
                FilterValue::Duration(Duration::from_secs(60))
            )
        );
        assert_eq!(
            field("wait_duration__gte=500ms"),
            (
                "wait_duration__gte".to_owned(),
                FilterValue::Duration(Duration::from_millis(500))
            )
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
        assert!(!parse("activity__state=ACTIVE").unwrap().needs_blocking());
    }

    #[test]
    fn every_field_family_takes_its_lookups() {
        assert_eq!(
            field("activity__query__icontains=orders").1,
            FilterValue::Text("orders".into())
        );
        assert_eq!(
            field("activity__state__in=ACTIVE, IDLE").1,
            FilterValue::List(vec![
                FilterValue::Text("ACTIVE".into()),
                FilterValue::Text("IDLE".into())
            ])
        );
        assert_eq!(
            field("blocking_activity_id__in=1,2").1,
            FilterValue::List(vec![FilterValue::Int(1), FilterValue::Int(2)])
        );
        assert_eq!(
            field("activity__client_addr__isnull=true").1,
            FilterValue::Bool(true)
        );
        assert_eq!(
            field("activity__client_port__gte=5432").1,
            FilterValue::Int(5432)
        );
        assert_eq!(
            field("activity__start__lt=2026-12-03 08:00Z").1,
            FilterValue::Text("2026-12-03 08:00Z".into())
        );
        assert_eq!(
            field("blocking_activity__application_name__startswith=web").0,
            "blocking_activity__application_name__startswith"
        );
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let error = |text: &str| parse(text).unwrap_err();
        assert!(error("granted").starts_with("malformed filter \"granted\""));
        assert!(error("nope=1").starts_with("unknown filter key \"nope\" in \"nope=1\""));
        assert!(error("nope=1").contains("activity__FIELD") && error("nope=1").contains(" query,"));
        assert!(error("activity__query__like=x").starts_with("unknown lookup \"like\""));
        assert!(error("granted=maybe").contains("expected true or false"));
        assert!(error("activity_id=x").contains("a pid"));
        assert!(error("activity_id=1,2").contains("activity_id__in"));
        assert!(error("mode=big").contains("unknown lock mode"));
        assert!(error("activity__duration__gt=soon").contains("bad duration"));
        assert!(error("activity__client_port=x").contains("an integer"));
        assert!(error("activity__query__isnull=maybe").contains("true or false"));
        assert!(error("advisory_key=1,2,3").contains("a key"));
        assert!(error("rel_name=").contains("a table name"));
    }

    #[test]
    fn help_names_every_key_family_and_lookup() {
        let help = crate::args::EXAMPLES;
        for key in SPECIAL_KEYS {
            assert!(help.contains(key), "{key}");
        }
        for lookup in FilterKey::lookups() {
            assert!(help.contains(&format!("__{lookup}")), "{lookup}");
        }
    }

    /// Every key a filter may have: the special ones, and each field with each lookup.
    fn keys() -> Vec<String> {
        let mut keys: Vec<String> = SPECIAL_KEYS.iter().map(|&k| k.to_owned()).collect();
        for field in FilterKey::fields() {
            keys.push(field.clone());
            for lookup in FilterKey::lookups() {
                keys.push(format!("{field}__{lookup}"));
            }
        }
        keys
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
        fn any_key_with_any_value_parses_or_says_which_value_is_bad(
            key in proptest::sample::select(keys()),
            value in "[ -~]{0,30}",
        ) {
            let text = format!("{key}={value}");
            if let Err(error) = parse(&text) {
                prop_assert!(error.starts_with("bad value in filter"), "{}", error);
            }
        }

        #[test]
        fn a_known_field_with_an_unknown_lookup_names_the_lookup(
            field in proptest::sample::select(FilterKey::fields()),
            lookup in "[a-z]{1,12}",
        ) {
            prop_assume!(!FilterKey::lookups().contains(&lookup.as_str()));
            let text = format!("{field}__{lookup}=1");
            let error = parse(&text).unwrap_err();
            prop_assert!(
                error.starts_with(&format!("unknown lookup {lookup:?}")),
                "{}", error
            );
        }

        #[test]
        fn a_list_keeps_every_item(items in proptest::collection::vec("[a-z_]{1,8}", 1..6)) {
            let (_, value) = field(&format!("activity__user__in={}", items.join(",")));
            let expected: Vec<FilterValue> =
                items.iter().map(|item| FilterValue::Text(item.clone())).collect();
            prop_assert_eq!(value, FilterValue::List(expected));
        }
    }
}
