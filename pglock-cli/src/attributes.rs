//! `-a/--attribute`: the columns a listing shows, by django-pglock's names, and their values.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pglock::{Activity, AdvisoryKey, BlockedPgLock, PgLock};

/// The columns that say who holds or waits for what: the session (pid, database, application,
/// user, state), the lock (held or waited for, in which mode, on what), how long its query has
/// run, and the query, last, taking the rest of the line. django-pglock's default
/// (`PGLOCK_ATTRIBUTES`) shows no database, application or user, and its query column was the
/// first to go off the edge of a terminal.
pub const DEFAULT: &[&str] = &[
    "activity_id",
    "activity__database",
    "activity__application_name",
    "activity__user",
    "activity__state",
    "lock",
    "target",
    "activity__duration",
    "activity__query",
];

/// django-pglock's `PGLOCK_BLOCKING_ATTRIBUTES`, plus the database, how long and for what the
/// lock is waited for, and what the blocker is doing.
pub const DEFAULT_BLOCKING: &[&str] = &[
    "activity_id",
    "activity__database",
    "blocking_activity_id",
    "wait_duration",
    "mode",
    "target",
    "blocking_activity__state",
    "activity__query",
    "blocking_activity__query",
];

/// The lock's own attributes.
const LOCK: &[&str] = &[
    "activity_id",
    "type",
    "mode",
    "lock",
    "granted",
    "wait_start",
    "wait_duration",
    "rel_kind",
    "rel_name",
    "relation",
    "advisory_key",
    "transaction_id",
    "target",
];

/// The attributes of a backend, after `activity__` or `blocking_activity__`.
const ACTIVITY: &[&str] = &[
    "id",
    "database",
    "duration",
    "query",
    "context",
    "state",
    "start",
    "xact_start",
    "xact_duration",
    "backend_start",
    "state_change",
    "wait_event_type",
    "wait_event",
    "application_name",
    "user",
    "client_addr",
    "client_hostname",
    "client_port",
    "backend_type",
    "leader_pid",
];

/// Every attribute name, for messages.
pub fn all(blocking: bool) -> Vec<String> {
    let mut names: Vec<String> = LOCK.iter().map(|&name| name.to_owned()).collect();
    names.extend(ACTIVITY.iter().map(|name| format!("activity__{name}")));
    if blocking {
        names.push("blocking_activity_id".to_owned());
        names.extend(
            ACTIVITY
                .iter()
                .map(|name| format!("blocking_activity__{name}")),
        );
    }
    names
}

/// Check the attribute names.
///
/// # Errors
/// The first unknown one, with the known ones; or a `blocking_` one without `--blocking`.
pub fn check(names: &[String], blocking: bool) -> Result<(), String> {
    if names.is_empty() {
        return Err("no attributes to show: give at least one with -a".to_owned());
    }
    let known = all(true);
    for name in names {
        if !known.contains(name) {
            return Err(format!(
                "unknown attribute {name:?}: expected one of {}",
                all(blocking).join(", ")
            ));
        }
        if !blocking && name.starts_with("blocking_") {
            return Err(format!("attribute {name:?} needs --blocking"));
        }
    }
    Ok(())
}

/// A column's heading in the compact listing: short, with no spaces, so that a narrow
/// terminal keeps room for the query. `activity_id` is `pid`, `activity__query` is `query`,
/// `blocking_activity__query` is `blocking_query`; JSON and the expanded listing keep the
/// attribute names.
pub fn heading(attribute: &str) -> String {
    let field = |field: &str| match field {
        "id" => "pid".to_owned(),
        "application_name" => "application".to_owned(),
        other => other.to_owned(),
    };
    if attribute == "activity_id" {
        "pid".to_owned()
    } else if attribute == "blocking_activity_id" {
        "blocking_pid".to_owned()
    } else if let Some(name) = attribute.strip_prefix("blocking_activity__") {
        format!("blocking_{}", field(name))
    } else if let Some(name) = attribute.strip_prefix("activity__") {
        field(name)
    } else {
        attribute.to_owned()
    }
}

/// One attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Bool(bool),
    Text(String),
    Duration(Duration),
    Time(SystemTime),
}

impl Value {
    /// As django-pglock prints it: `None`, `True`, durations as `0:00:05`.
    pub fn to_text(&self) -> String {
        match self {
            Value::Null => "None".to_owned(),
            Value::Int(n) => n.to_string(),
            Value::Bool(true) => "True".to_owned(),
            Value::Bool(false) => "False".to_owned(),
            Value::Text(text) => text.clone(),
            Value::Duration(d) => crate::duration::format(*d),
            Value::Time(t) => iso_time(*t),
        }
    }

    /// As JSON: durations in seconds, times as RFC 3339 text.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Int(n) => (*n).into(),
            Value::Bool(b) => (*b).into(),
            Value::Text(text) => text.clone().into(),
            Value::Duration(d) => d.as_secs_f64().into(),
            Value::Time(t) => iso_time(*t).into(),
        }
    }
}

/// A row to take attributes from: a lock, and for `--blocking` the backend blocking it.
pub struct Row<'a> {
    pub lock: &'a PgLock,
    pub blocking: Option<(i32, Option<&'a Activity>)>,
}

impl<'a> Row<'a> {
    pub fn of_lock(lock: &'a PgLock) -> Self {
        Row {
            lock,
            blocking: None,
        }
    }

    pub fn of_blocked(blocked: &'a BlockedPgLock) -> Self {
        Row {
            lock: &blocked.lock,
            blocking: Some((blocked.blocking_pid, blocked.blocking.as_ref())),
        }
    }

    /// The value of a checked attribute name. `names` gives advisory keys the names they were
    /// asked for by.
    pub fn value(&self, attribute: &str, names: &HashMap<AdvisoryKey, String>) -> Value {
        if let Some(field) = attribute.strip_prefix("blocking_activity__") {
            let activity = self.blocking.and_then(|(_, activity)| activity);
            return activity.map_or(Value::Null, |a| activity_value(a, field));
        }
        if let Some(field) = attribute.strip_prefix("activity__") {
            return self
                .lock
                .activity
                .as_ref()
                .map_or(Value::Null, |a| activity_value(a, field));
        }
        let lock = self.lock;
        let text = |s: &str| Value::Text(s.to_owned());
        let opt_text = |s: Option<&str>| s.map_or(Value::Null, text);
        match attribute {
            "activity_id" => Value::Int(lock.pid.into()),
            "blocking_activity_id" => self
                .blocking
                .map_or(Value::Null, |(pid, _)| Value::Int(pid.into())),
            "type" => text(&lock.lock_type),
            "mode" => text(&mode(lock)),
            "lock" => Value::Text(format!(
                "{} {}",
                if lock.granted { "holds" } else { "waits" },
                mode(lock)
            )),
            "granted" => Value::Bool(lock.granted),
            "wait_start" => lock.wait_start.map_or(Value::Null, Value::Time),
            "wait_duration" => lock.wait_duration.map_or(Value::Null, Value::Duration),
            "rel_kind" => opt_text(lock.relation.as_ref().map(|r| r.kind.as_str())),
            "rel_name" => opt_text(lock.relation.as_ref().map(|r| r.name.as_str())),
            "relation" => lock
                .relation
                .as_ref()
                .map_or(Value::Null, |r| Value::Text(r.to_string())),
            "advisory_key" => lock
                .advisory
                .map_or(Value::Null, |key| Value::Text(key_text(key))),
            "transaction_id" => lock
                .transaction_id
                .map_or(Value::Null, |xid| Value::Int(xid.into())),
            "target" => Value::Text(target(lock, names)),
            _ => Value::Null,
        }
    }
}

/// The mode as django-pglock shows it (`ACCESS_EXCLUSIVE`), or as `pg_locks` does for the
/// predicate locks that have no table-lock mode.
pub fn mode(lock: &PgLock) -> String {
    lock.mode
        .map_or_else(|| lock.mode_name.clone(), |mode| mode.to_string())
}

/// What a lock is on, in a few words: `public.orders`, `advisory 42`, `advisory "job" (42)`,
/// `advisory (1, 2)`, `transactionid 731`, or the lock type.
pub fn target(lock: &PgLock, names: &HashMap<AdvisoryKey, String>) -> String {
    if let Some(relation) = &lock.relation {
        return relation.to_string();
    }
    if let Some(key) = lock.advisory {
        return match names.get(&key) {
            Some(name) => format!("advisory {name:?} ({})", key_text(key)),
            None => format!("advisory {}", key_text(key)),
        };
    }
    if let Some(xid) = lock.transaction_id {
        return format!("transactionid {xid}");
    }
    if let Some(oid) = lock.relation_oid {
        return format!("relation {oid}");
    }
    lock.lock_type.to_lowercase()
}

/// An advisory key as `pg_advisory_lock` takes it: `42` or `(1, 2)`.
pub fn key_text(key: AdvisoryKey) -> String {
    match key {
        AdvisoryKey::BigInt(key) => key.to_string(),
        AdvisoryKey::Pair(a, b) => format!("({a}, {b})"),
        _ => format!("{key:?}"),
    }
}

/// The value of `activity__<field>` for `activity`.
pub fn activity_value(activity: &Activity, field: &str) -> Value {
    let text = |s: &str| Value::Text(s.to_owned());
    let opt_text = |s: Option<&str>| s.map_or(Value::Null, text);
    let time = |t: Option<SystemTime>| t.map_or(Value::Null, Value::Time);
    let int = |n: Option<i32>| n.map_or(Value::Null, |n| Value::Int(n.into()));
    match field {
        "id" => Value::Int(activity.pid.into()),
        "database" => opt_text(activity.database.as_deref()),
        "duration" => activity.duration.map_or(Value::Null, Value::Duration),
        "xact_duration" => activity.xact_duration.map_or(Value::Null, Value::Duration),
        "query" => text(&activity.query),
        "context" => opt_text(activity.context.as_deref()),
        "state" => opt_text(activity.state.as_deref()),
        "start" => time(activity.query_start),
        "xact_start" => time(activity.xact_start),
        "backend_start" => time(activity.backend_start),
        "state_change" => time(activity.state_change),
        "wait_event_type" => opt_text(activity.wait_event_type.as_deref()),
        "wait_event" => opt_text(activity.wait_event.as_deref()),
        "application_name" => text(&activity.application_name),
        "user" => opt_text(activity.user.as_deref()),
        "client_addr" => activity
            .client_addr
            .map_or(Value::Null, |addr| Value::Text(addr.to_string())),
        "client_hostname" => opt_text(activity.client_hostname.as_deref()),
        "client_port" => int(activity.client_port),
        "backend_type" => text(&activity.backend_type),
        "leader_pid" => int(activity.leader_pid),
        _ => Value::Null,
    }
}

/// A time in UTC, RFC 3339 to the microsecond: `2026-11-24T20:48:02.123456Z`.
pub fn iso_time(time: SystemTime) -> String {
    let (seconds, micros) = match time.duration_since(UNIX_EPOCH) {
        Ok(since) => (since.as_secs() as i64, since.subsec_micros()),
        Err(before) => {
            let before = before.duration();
            let micros = before.subsec_micros();
            let whole = before.as_secs() as i64 + i64::from(micros > 0);
            (-whole, if micros > 0 { 1_000_000 - micros } else { 0 })
        }
    };
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_date(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// A time in UTC, RFC 3339 to the second: `2026-11-24T20:48:02Z`.
pub fn iso_second(time: SystemTime) -> String {
    let full = iso_time(time);
    match full.split_once('.') {
        Some((seconds, _)) => format!("{seconds}Z"),
        None => full,
    }
}

/// The proleptic Gregorian date `days` after 1970-01-01: count whole 400-year eras (146,097
/// days each) from 0000-03-01, then years within the era, then months from March (so that
/// the leap day falls last).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let from_march_0000 = days + 719_468;
    let era = from_march_0000.div_euclid(146_097);
    let day_of_era = from_march_0000.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_rfc3339() {
        let at = |secs: u64| iso_time(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000000Z");
        assert_eq!(at(1_795_549_682), "2026-11-24T19:48:02.000000Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59.000000Z");
        assert_eq!(
            iso_time(UNIX_EPOCH + Duration::from_micros(1_500_001)),
            "1970-01-01T00:00:01.500001Z"
        );
        assert_eq!(
            iso_time(UNIX_EPOCH - Duration::from_micros(1)),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            iso_second(UNIX_EPOCH + Duration::from_micros(1_500_001)),
            "1970-01-01T00:00:01Z"
        );
    }

    #[test]
    fn help_names_every_attribute() {
        let help = crate::args::EXAMPLES.replace('\n', " ");
        for name in LOCK.iter().chain(ACTIVITY) {
            let listed = [" ", ", "].iter().any(|before| {
                [",", ";", "."]
                    .iter()
                    .any(|after| help.contains(&format!("{before}{name}{after}")))
            });
            assert!(listed, "{name} is not in --help");
        }
        for name in DEFAULT {
            assert!(help.contains(&heading(name)), "{name}");
        }
    }

    #[test]
    fn every_column_can_be_filtered_on() {
        for name in all(true) {
            assert!(name.parse::<pglock::FilterKey>().is_ok(), "{name}");
        }
    }

    #[test]
    fn headings_are_short_and_have_no_spaces() {
        let headings: Vec<String> = DEFAULT.iter().map(|name| heading(name)).collect();
        assert_eq!(
            headings,
            [
                "pid",
                "database",
                "application",
                "user",
                "state",
                "lock",
                "target",
                "duration",
                "query"
            ]
        );
        for name in all(true) {
            assert!(!heading(&name).contains(' '), "{name}");
        }
        assert_eq!(heading("blocking_activity__query"), "blocking_query");
    }

    #[test]
    fn unknown_and_blocking_attributes_are_refused_with_the_known_ones() {
        let names = |list: &[&str]| list.iter().map(|&s| s.to_owned()).collect::<Vec<_>>();
        assert_eq!(check(&names(DEFAULT), false), Ok(()));
        assert_eq!(check(&names(DEFAULT_BLOCKING), true), Ok(()));
        let error = check(&names(&["activity_id", "colour"]), false).unwrap_err();
        assert!(error.starts_with("unknown attribute \"colour\""), "{error}");
        assert!(error.contains("activity__query"), "{error}");
        let error = check(&names(DEFAULT_BLOCKING), false).unwrap_err();
        assert_eq!(error, "attribute \"blocking_activity_id\" needs --blocking");
    }
}
