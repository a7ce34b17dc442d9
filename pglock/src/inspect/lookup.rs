//! Filters on any column a listing shows, written as django lookups:
//! `activity__query__icontains`, `activity__state__in`, `wait_duration__gt`.
//!
//! A key names a field from a fixed table and a lookup from a fixed list; each becomes a SQL
//! expression and an operator taken from that table, never from the key's text, and the value
//! is always a bound parameter.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Postgres;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;

use crate::Error;

/// A statement with its parameters bound so far.
pub(super) type Bound<'q> = Query<'q, Postgres, PgArguments>;

/// What kind of value a field holds, and so what a filter on it takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValueKind {
    /// An integer: pids, ports, transaction ids.
    Int,
    /// Text, compared as the listing shows it (`IDLE_IN_TRANSACTION`, `CLIENT_READ`, `TABLE`).
    Text,
    /// `true` or `false`.
    Bool,
    /// A length of time: [`FilterValue::Duration`].
    Duration,
    /// A point in time: [`FilterValue::Time`], or text the server reads as a `timestamptz`
    /// (`2026-12-03 08:00:00+00`).
    Time,
}

/// A django lookup: what a filter does with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Lookup {
    /// No suffix: equal.
    Exact,
    /// `__in`: equal to one of a list.
    In,
    /// `__gt`: greater than the value.
    Gt,
    /// `__gte`: greater than or equal to the value.
    Gte,
    /// `__lt`: less than the value.
    Lt,
    /// `__lte`: less than or equal to the value.
    Lte,
    /// `__contains`: text containing the value, case-sensitively.
    Contains,
    /// `__icontains`: text containing the value, ignoring case.
    IContains,
    /// `__startswith`: text starting with the value.
    StartsWith,
    /// `__istartswith`: text starting with the value, ignoring case.
    IStartsWith,
    /// `__isnull`: `true` for fields with no value, `false` for fields with one.
    IsNull,
}

/// The lookups by their suffixes.
const LOOKUPS: &[(&str, Lookup)] = &[
    ("in", Lookup::In),
    ("gt", Lookup::Gt),
    ("gte", Lookup::Gte),
    ("lt", Lookup::Lt),
    ("lte", Lookup::Lte),
    ("contains", Lookup::Contains),
    ("icontains", Lookup::IContains),
    ("startswith", Lookup::StartsWith),
    ("istartswith", Lookup::IStartsWith),
    ("isnull", Lookup::IsNull),
];

/// Whose field it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// The lock's own, or its backend's: filtered in `base`.
    Lock,
    /// The blocking backend's: filtered in `blocked`, so only for blocked locks.
    Blocking,
}

/// One field a filter may name: its name after the side's prefix, its kind, and its SQL
/// expression, where `{a}` stands for the alias of the activity (`a` or `ba`).
struct Field {
    name: &'static str,
    kind: ValueKind,
    sql: &'static str,
}

/// The lock's fields, by the attribute names of the command's listing.
const LOCK_FIELDS: &[Field] = &[
    Field {
        name: "activity_id",
        kind: ValueKind::Int,
        sql: "lk.pid",
    },
    Field {
        name: "type",
        kind: ValueKind::Text,
        sql: "upper(lk.locktype)",
    },
    Field {
        name: "mode",
        kind: ValueKind::Text,
        sql: MODE,
    },
    Field {
        name: "lock",
        kind: ValueKind::Text,
        sql: LOCK,
    },
    Field {
        name: "granted",
        kind: ValueKind::Bool,
        sql: "lk.granted",
    },
    Field {
        name: "wait_start",
        kind: ValueKind::Time,
        sql: "date_part('epoch', lk.waitstart)",
    },
    Field {
        name: "wait_duration",
        kind: ValueKind::Duration,
        sql: "date_part('epoch', statement_timestamp() - lk.waitstart)",
    },
    Field {
        name: "rel_kind",
        kind: ValueKind::Text,
        sql: "CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'i' THEN 'INDEX' \
              WHEN 'S' THEN 'SEQUENCE' WHEN 't' THEN 'TOAST' WHEN 'v' THEN 'VIEW' \
              WHEN 'm' THEN 'MATERIALIZED_VIEW' WHEN 'c' THEN 'COMPOSITE_TYPE' \
              WHEN 'f' THEN 'FOREIGN_TABLE' WHEN 'p' THEN 'PARTITIONED_TABLE' \
              WHEN 'I' THEN 'PARTITIONED_INDEX' ELSE c.relkind::text END",
    },
    Field {
        name: "rel_name",
        kind: ValueKind::Text,
        sql: "c.relname::text",
    },
    Field {
        name: "relation",
        kind: ValueKind::Text,
        sql: "(n.nspname || '.' || c.relname)",
    },
    Field {
        name: "transaction_id",
        kind: ValueKind::Int,
        sql: "lk.transactionid::text::int8",
    },
    Field {
        name: "advisory_key",
        kind: ValueKind::Text,
        sql: ADVISORY_KEY,
    },
    Field {
        name: "target",
        kind: ValueKind::Text,
        sql: TARGET,
    },
];

/// A mode as the listing shows it: `AccessExclusiveLock` → `ACCESS_EXCLUSIVE`; `SIReadLock`,
/// which has no table-lock mode, as it is.
const MODE: &str = "CASE lk.mode WHEN 'SIReadLock' THEN lk.mode ELSE \
     upper(regexp_replace(regexp_replace(lk.mode, 'Lock$', ''), '([a-z])([A-Z])', '\\1_\\2', \
     'g')) END";

/// `holds MODE` or `waits MODE`.
const LOCK: &str = "(CASE WHEN lk.granted THEN 'holds ' ELSE 'waits ' END || CASE lk.mode \
     WHEN 'SIReadLock' THEN lk.mode ELSE upper(regexp_replace(regexp_replace(lk.mode, 'Lock$', \
     ''), '([a-z])([A-Z])', '\\1_\\2', 'g')) END)";

/// An advisory key as `pg_advisory_lock` takes it (`42`, `(1, -2)`), decoded as `rows.rs` does:
/// a `bigint` key is `classid` (high half) and `objid` (low half) with `objsubid` 1, a pair of
/// `int`s is stored as is, as unsigned oids, with `objsubid` 2.
const ADVISORY_KEY: &str = "CASE WHEN lk.locktype = 'advisory' THEN CASE lk.objsubid \
     WHEN 1 THEN ((lk.classid::int8 << 32) | lk.objid::int8)::text \
     WHEN 2 THEN '(' || (lk.classid::int8 - CASE WHEN lk.classid::int8 > 2147483647 \
     THEN 4294967296 ELSE 0 END) || ', ' || (lk.objid::int8 - CASE WHEN lk.objid::int8 > \
     2147483647 THEN 4294967296 ELSE 0 END) || ')' END END";

/// What a lock is on, as the listing's `target` shows it without a lock's name: the relation,
/// `advisory KEY`, `transactionid XID`, `relation OID` (a relation not in this catalog), or the
/// lock type.
const TARGET: &str = "CASE WHEN c.oid IS NOT NULL THEN n.nspname || '.' || c.relname \
     WHEN lk.locktype = 'advisory' AND lk.objsubid IN (1, 2) THEN 'advisory ' || \
     CASE lk.objsubid WHEN 1 THEN ((lk.classid::int8 << 32) | lk.objid::int8)::text \
     ELSE '(' || (lk.classid::int8 - CASE WHEN lk.classid::int8 > 2147483647 THEN 4294967296 \
     ELSE 0 END) || ', ' || (lk.objid::int8 - CASE WHEN lk.objid::int8 > 2147483647 \
     THEN 4294967296 ELSE 0 END) || ')' END \
     WHEN lk.transactionid IS NOT NULL THEN 'transactionid ' || lk.transactionid \
     WHEN lk.relation IS NOT NULL THEN 'relation ' || lk.relation \
     ELSE lower(lk.locktype) END";

/// A backend's fields, after `activity__` or `blocking_activity__`.
const ACTIVITY_FIELDS: &[Field] = &[
    Field {
        name: "id",
        kind: ValueKind::Int,
        sql: "{a}.pid",
    },
    Field {
        name: "database",
        kind: ValueKind::Text,
        sql: "{a}.datname",
    },
    Field {
        name: "application_name",
        kind: ValueKind::Text,
        sql: "{a}.application_name",
    },
    Field {
        name: "user",
        kind: ValueKind::Text,
        sql: "{a}.usename",
    },
    Field {
        name: "client_addr",
        kind: ValueKind::Text,
        sql: "{a}.client_addr",
    },
    Field {
        name: "client_hostname",
        kind: ValueKind::Text,
        sql: "{a}.client_hostname",
    },
    Field {
        name: "client_port",
        kind: ValueKind::Int,
        sql: "{a}.client_port::int8",
    },
    Field {
        name: "backend_type",
        kind: ValueKind::Text,
        sql: "upper(replace({a}.backend_type, ' ', '_'))",
    },
    Field {
        name: "state",
        kind: ValueKind::Text,
        sql: "upper(replace({a}.state, ' ', '_'))",
    },
    Field {
        name: "wait_event_type",
        kind: ValueKind::Text,
        sql: CAMEL_WAIT_EVENT_TYPE,
    },
    Field {
        name: "wait_event",
        kind: ValueKind::Text,
        sql: CAMEL_WAIT_EVENT,
    },
    Field {
        name: "query",
        kind: ValueKind::Text,
        sql: "regexp_replace({a}.query, '^/\\*pga_context=\\{[^*]*\\}\\*/\\n?', '')",
    },
    Field {
        name: "context",
        kind: ValueKind::Text,
        sql: "substring({a}.query from '^/\\*pga_context=(\\{[^*]*\\})\\*/')",
    },
    Field {
        name: "duration",
        kind: ValueKind::Duration,
        sql: "(date_part('epoch', statement_timestamp()) - {a}.query_start)",
    },
    Field {
        name: "xact_duration",
        kind: ValueKind::Duration,
        sql: "(date_part('epoch', statement_timestamp()) - {a}.xact_start)",
    },
    Field {
        name: "start",
        kind: ValueKind::Time,
        sql: "{a}.query_start",
    },
    Field {
        name: "xact_start",
        kind: ValueKind::Time,
        sql: "{a}.xact_start",
    },
    Field {
        name: "backend_start",
        kind: ValueKind::Time,
        sql: "{a}.backend_start",
    },
    Field {
        name: "state_change",
        kind: ValueKind::Time,
        sql: "{a}.state_change",
    },
    Field {
        name: "leader_pid",
        kind: ValueKind::Int,
        sql: "{a}.leader_pid::int8",
    },
];

/// `CamelCase` to `UPPER_SNAKE` as `labels::camel` does it: a break before a capital that
/// follows a lower-case letter or digit, and before the last capital of an acronym.
const CAMEL_WAIT_EVENT: &str = "upper(translate(regexp_replace(regexp_replace({a}.wait_event, \
     '([a-z0-9])([A-Z])', '\\1_\\2', 'g'), '([A-Z])([A-Z][a-z])', '\\1_\\2', 'g'), ' -', '__'))";
const CAMEL_WAIT_EVENT_TYPE: &str = "upper(translate(regexp_replace(regexp_replace(\
     {a}.wait_event_type, '([a-z0-9])([A-Z])', '\\1_\\2', 'g'), '([A-Z])([A-Z][a-z])', \
     '\\1_\\2', 'g'), ' -', '__'))";

/// A filter's key, `field` or `field__lookup`, parsed: which field of which side, and the
/// lookup. The fields are the columns of the `pglock` command's listing:
///
/// * the lock's: `activity_id`, `type`, `mode`, `lock` (`holds MODE`, `waits MODE`),
///   `granted`, `wait_start`, `wait_duration`, `rel_kind`, `rel_name`, `relation`
///   (`schema.name`), `transaction_id`, `advisory_key` (`42`, `(1, -2)`), `target` (as the
///   command's listing shows it, without an advisory lock's name: `public.orders`,
///   `advisory 42`, `transactionid 731`);
/// * its backend's, after `activity__`: `id`, `database`, `application_name`, `user`,
///   `client_addr`, `client_hostname`, `client_port`, `backend_type`, `state`,
///   `wait_event_type`, `wait_event`, `query`, `context`, `duration`, `xact_duration`, `start`,
///   `xact_start`, `backend_start`, `state_change`, `leader_pid`;
/// * for blocked locks only, the blocking backend's: `blocking_activity_id`, and the same
///   fields after `blocking_activity__`.
///
/// Text compares with what a listing shows: `activity__state=IDLE_IN_TRANSACTION`,
/// `activity__wait_event=CLIENT_READ`, `type=RELATION`, `mode=ACCESS_EXCLUSIVE`.
///
/// ```
/// use pglock::{FilterKey, Lookup, ValueKind};
///
/// let key: FilterKey = "activity__query__icontains".parse()?;
/// assert_eq!((key.lookup(), key.value_kind()), (Lookup::IContains, ValueKind::Text));
/// assert!("activity__colour".parse::<FilterKey>().is_err());
/// # Ok::<(), pglock::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FilterKey {
    side: Side,
    /// The field's name without its side's prefix, for messages.
    prefix: &'static str,
    field: &'static Field,
    lookup: Lookup,
}

impl PartialEq for Field {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Field {}

impl fmt::Debug for FilterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FilterKey({self})")
    }
}

impl fmt::Display for FilterKey {
    /// The key as written, with its lookup's suffix unless it is `Exact`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, self.field.name)?;
        match LOOKUPS.iter().find(|(_, lookup)| *lookup == self.lookup) {
            Some((suffix, _)) => write!(f, "__{suffix}"),
            None => Ok(()),
        }
    }
}

impl FilterKey {
    /// What the filter does with its value.
    ///
    /// ```
    /// let key: pglock::FilterKey = "activity__duration__gt".parse()?;
    /// assert_eq!(key.lookup(), pglock::Lookup::Gt);
    /// # Ok::<(), pglock::Error>(())
    /// ```
    pub fn lookup(&self) -> Lookup {
        self.lookup
    }

    /// The kind of value the field holds. With [`Lookup::In`] the filter takes a list of
    /// these; with [`Lookup::IsNull`], a `bool` whatever the field holds.
    ///
    /// ```
    /// let key: pglock::FilterKey = "activity__id".parse()?;
    /// assert_eq!(key.value_kind(), pglock::ValueKind::Int);
    /// # Ok::<(), pglock::Error>(())
    /// ```
    pub fn value_kind(&self) -> ValueKind {
        self.field.kind
    }

    /// Whether the key is about the blocking backend, which only
    /// [`blocked_locks`](crate::blocked_locks) has.
    ///
    /// ```
    /// let key: pglock::FilterKey = "blocking_activity__id".parse()?;
    /// assert!(key.is_about_blocking());
    /// # Ok::<(), pglock::Error>(())
    /// ```
    pub fn is_about_blocking(&self) -> bool {
        self.side == Side::Blocking
    }

    /// Every field name (without lookups), for messages: the lock's, then `activity__...`,
    /// then `blocking_activity_id` and `blocking_activity__...`.
    ///
    /// ```
    /// assert!(pglock::FilterKey::fields().iter().any(|field| field == "activity__id"));
    /// # Ok::<(), pglock::Error>(())
    /// ```
    pub fn fields() -> Vec<String> {
        let mut names: Vec<String> = LOCK_FIELDS.iter().map(|f| f.name.to_owned()).collect();
        names.extend(
            ACTIVITY_FIELDS
                .iter()
                .map(|f| format!("activity__{}", f.name)),
        );
        names.push("blocking_activity_id".to_owned());
        names.extend(
            ACTIVITY_FIELDS
                .iter()
                .map(|f| format!("blocking_activity__{}", f.name)),
        );
        names
    }

    /// The lookup suffixes, for messages: `in`, `gt`, ...
    ///
    /// ```
    /// assert!(pglock::FilterKey::lookups().contains(&"in"));
    /// # Ok::<(), pglock::Error>(())
    /// ```
    pub fn lookups() -> Vec<&'static str> {
        LOOKUPS.iter().map(|(suffix, _)| *suffix).collect()
    }

    /// The SQL condition, the value bound as `$n` (the text holds no caller input).
    fn condition(&self, n: usize, value: &FilterValue) -> String {
        let alias = match self.side {
            Side::Lock => "a",
            Side::Blocking => "ba",
        };
        let expr = self.field.sql.replace("{a}", alias);
        if self.lookup == Lookup::IsNull {
            return format!("(({expr}) IS NULL) = ${n}::bool");
        }
        let element = |value: &FilterValue| match (self.field.kind, value) {
            (ValueKind::Time, FilterValue::Text(_)) => "time-text",
            (ValueKind::Int, _) => "int8",
            (ValueKind::Bool, _) => "bool",
            (ValueKind::Duration | ValueKind::Time, _) => "float8",
            (ValueKind::Text, _) => "text",
        };
        if self.lookup == Lookup::In {
            let first = match value {
                FilterValue::List(items) => items.first(),
                _ => None,
            };
            return match first.map(element) {
                Some("time-text") => format!(
                    "({expr}) IN (SELECT date_part('epoch', t) \
                     FROM unnest(${n}::text[]::timestamptz[]) AS t)"
                ),
                Some(ty) => format!("({expr}) = ANY(${n}::{ty}[])"),
                // An empty list matches nothing.
                None => format!("(${n}::text[] IS NULL AND false)"),
            };
        }
        let param = match element(value) {
            "time-text" => format!("date_part('epoch', ${n}::text::timestamptz)"),
            ty => format!("${n}::{ty}"),
        };
        match self.lookup {
            Lookup::Gt => format!("({expr}) > {param}"),
            Lookup::Gte => format!("({expr}) >= {param}"),
            Lookup::Lt => format!("({expr}) < {param}"),
            Lookup::Lte => format!("({expr}) <= {param}"),
            // strpos and starts_with, not LIKE: no wildcard in the value means anything.
            Lookup::Contains => format!("strpos({expr}, {param}) > 0"),
            Lookup::IContains => format!("strpos(lower({expr}), lower({param})) > 0"),
            Lookup::StartsWith => format!("starts_with({expr}, {param})"),
            Lookup::IStartsWith => format!("starts_with(lower({expr}), lower({param}))"),
            Lookup::Exact | Lookup::In | Lookup::IsNull => format!("({expr}) = {param}"),
        }
    }

    /// Check that `value` suits the key, as a query does before it runs.
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// use pglock::{FilterKey, FilterValue};
    ///
    /// let older: FilterKey = "activity__duration__gt".parse()?;
    /// assert!(older.check_value(&Duration::from_secs(60).into()).is_ok());
    /// assert!(older.check_value(&FilterValue::from("a minute")).is_err());
    ///
    /// let pids: FilterKey = "activity_id__in".parse()?;
    /// assert!(pids.check_value(&vec![4101, 4102].into()).is_ok());
    /// # Ok::<(), pglock::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidArgument`], saying what the key takes.
    pub fn check_value(&self, value: &FilterValue) -> Result<(), Error> {
        self.check(value).map_err(Error::InvalidArgument)
    }

    fn check(&self, value: &FilterValue) -> Result<(), String> {
        let kind = self.field.kind;
        let fits = |value: &FilterValue| {
            matches!(
                (kind, value),
                (ValueKind::Int, FilterValue::Int(_))
                    | (ValueKind::Text, FilterValue::Text(_))
                    | (ValueKind::Bool, FilterValue::Bool(_))
                    | (ValueKind::Duration, FilterValue::Duration(_))
                    | (ValueKind::Time, FilterValue::Time(_) | FilterValue::Text(_))
            )
        };
        let ok = match self.lookup {
            Lookup::IsNull => matches!(value, FilterValue::Bool(_)),
            Lookup::In => match value {
                FilterValue::List(items) => {
                    items.iter().all(fits)
                        && items
                            .windows(2)
                            .all(|w| std::mem::discriminant(&w[0]) == std::mem::discriminant(&w[1]))
                }
                _ => false,
            },
            Lookup::Contains | Lookup::IContains | Lookup::StartsWith | Lookup::IStartsWith => {
                kind == ValueKind::Text && fits(value)
            }
            Lookup::Gt | Lookup::Gte | Lookup::Lt | Lookup::Lte => {
                kind != ValueKind::Bool && fits(value)
            }
            Lookup::Exact => fits(value),
        };
        if ok {
            return Ok(());
        }
        let wanted = match self.lookup {
            Lookup::IsNull => "true or false".to_owned(),
            Lookup::In => format!("a list of {}", kind_name(kind)),
            Lookup::Contains | Lookup::IContains | Lookup::StartsWith | Lookup::IStartsWith
                if kind != ValueKind::Text =>
            {
                return Err(format!(
                    "filter {self}: {} holds {}, and only text has this lookup",
                    self.field.name,
                    kind_name(kind)
                ));
            }
            Lookup::Gt | Lookup::Gte | Lookup::Lt | Lookup::Lte if kind == ValueKind::Bool => {
                return Err(format!(
                    "filter {self}: {} is true or false, which has no order",
                    self.field.name
                ));
            }
            _ => kind_name(kind).to_owned(),
        };
        Err(format!("filter {self} takes {wanted}, not {value:?}"))
    }
}

fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Int => "an integer",
        ValueKind::Text => "text",
        ValueKind::Bool => "true or false",
        ValueKind::Duration => "a duration",
        ValueKind::Time => "a time",
    }
}

/// The error for a key that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseFilterKeyError(String);

impl fmt::Display for ParseFilterKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseFilterKeyError {}

impl From<ParseFilterKeyError> for Error {
    fn from(error: ParseFilterKeyError) -> Self {
        Error::InvalidArgument(error.0)
    }
}

impl FromStr for FilterKey {
    type Err = ParseFilterKeyError;

    /// `field` or `field__lookup`; see [`FilterKey`] for the fields.
    fn from_str(key: &str) -> Result<Self, Self::Err> {
        let (path, lookup) = match key.rsplit_once("__") {
            Some((path, suffix)) => match LOOKUPS.iter().find(|(s, _)| *s == suffix) {
                Some((_, lookup)) => (path, *lookup),
                None => (key, Lookup::Exact),
            },
            None => (key, Lookup::Exact),
        };
        if let Some((side, prefix, field)) = field(path) {
            return Ok(FilterKey {
                side,
                prefix,
                field,
                lookup,
            });
        }
        // A known field with a suffix that is no lookup: say so, not "unknown field".
        if let Some((path, suffix)) = key.rsplit_once("__")
            && field(path).is_some()
        {
            return Err(ParseFilterKeyError(format!(
                "unknown lookup {suffix:?} in filter key {key:?}: expected {path} or \
                 {path}__LOOKUP, where LOOKUP is one of {}",
                FilterKey::lookups().join(", ")
            )));
        }
        Err(ParseFilterKeyError(format!(
            "unknown filter key {key:?}: expected a field, optionally followed by __LOOKUP; \
             fields: {}",
            FilterKey::fields().join(", ")
        )))
    }
}

/// The field `path` names, with its side and that side's prefix.
fn field(path: &str) -> Option<(Side, &'static str, &'static Field)> {
    let find = |fields: &'static [Field], name: &str| fields.iter().find(|f| f.name == name);
    if path == "blocking_activity_id" {
        find(ACTIVITY_FIELDS, "id").map(|field| (Side::Blocking, "blocking_activity__", field))
    } else if let Some(name) = path.strip_prefix("blocking_activity__") {
        find(ACTIVITY_FIELDS, name).map(|field| (Side::Blocking, "blocking_activity__", field))
    } else if let Some(name) = path.strip_prefix("activity__") {
        find(ACTIVITY_FIELDS, name).map(|field| (Side::Lock, "activity__", field))
    } else {
        find(LOCK_FIELDS, path).map(|field| (Side::Lock, "", field))
    }
}

/// A filter's value. Built with `From`: integers, `&str`/`String`, `bool`, [`Duration`],
/// [`SystemTime`], and arrays or `Vec`s of one of those for [`Lookup::In`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FilterValue {
    /// An integer.
    Int(i64),
    /// Text (also a time, which the server reads).
    Text(String),
    /// A boolean.
    Bool(bool),
    /// A length of time.
    Duration(Duration),
    /// A point in time.
    Time(SystemTime),
    /// A list, for `__in`.
    List(Vec<FilterValue>),
}

macro_rules! from_value {
    ($($ty:ty => $variant:ident($convert:expr)),* $(,)?) => {$(
        impl From<$ty> for FilterValue {
            fn from(value: $ty) -> Self {
                FilterValue::$variant($convert(value))
            }
        }
    )*};
}

from_value! {
    i16 => Int(i64::from),
    i32 => Int(i64::from),
    i64 => Int(std::convert::identity),
    u32 => Int(i64::from),
    &str => Text(str::to_owned),
    String => Text(std::convert::identity),
    &String => Text(String::clone),
    bool => Bool(std::convert::identity),
    Duration => Duration(std::convert::identity),
    SystemTime => Time(std::convert::identity),
}

impl<T: Into<FilterValue>> From<Vec<T>> for FilterValue {
    fn from(values: Vec<T>) -> Self {
        FilterValue::List(values.into_iter().map(Into::into).collect())
    }
}

impl<T: Into<FilterValue>, const N: usize> From<[T; N]> for FilterValue {
    fn from(values: [T; N]) -> Self {
        FilterValue::List(values.into_iter().map(Into::into).collect())
    }
}

impl FilterValue {
    /// Bind as the parameter `FilterKey::condition` wrote.
    fn bind<'q>(&self, query: Bound<'q>) -> Bound<'q> {
        match self {
            FilterValue::Int(n) => query.bind(*n),
            FilterValue::Text(text) => query.bind(text.clone()),
            FilterValue::Bool(b) => query.bind(*b),
            FilterValue::Duration(d) => query.bind(d.as_secs_f64()),
            FilterValue::Time(t) => query.bind(epoch(*t)),
            FilterValue::List(items) => match items.first() {
                Some(FilterValue::Int(_)) => query.bind(
                    items
                        .iter()
                        .filter_map(|v| match v {
                            FilterValue::Int(n) => Some(*n),
                            _ => None,
                        })
                        .collect::<Vec<i64>>(),
                ),
                Some(FilterValue::Bool(_)) => query.bind(
                    items
                        .iter()
                        .filter_map(|v| match v {
                            FilterValue::Bool(b) => Some(*b),
                            _ => None,
                        })
                        .collect::<Vec<bool>>(),
                ),
                Some(FilterValue::Duration(_) | FilterValue::Time(_)) => query.bind(
                    items
                        .iter()
                        .filter_map(|v| match v {
                            FilterValue::Duration(d) => Some(d.as_secs_f64()),
                            FilterValue::Time(t) => Some(epoch(*t)),
                            _ => None,
                        })
                        .collect::<Vec<f64>>(),
                ),
                Some(FilterValue::Text(_)) | None | Some(FilterValue::List(_)) => query.bind(
                    items
                        .iter()
                        .filter_map(|v| match v {
                            FilterValue::Text(text) => Some(text.clone()),
                            _ => None,
                        })
                        .collect::<Vec<String>>(),
                ),
            },
        }
    }
}

/// Seconds since the epoch (negative before it).
fn epoch(time: SystemTime) -> f64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// The field filters of one query, each a key (or the error parsing it) and a value.
#[derive(Clone, Debug, Default)]
pub(super) struct Lookups {
    entries: Vec<(Result<FilterKey, ParseFilterKeyError>, FilterValue)>,
}

/// The conditions of one statement: the lock side's (for `base`) and the blocking side's (for
/// `blocked`), each ` AND ...` lines, with parameters from a given number on.
#[derive(Default)]
pub(super) struct Conditions {
    pub(super) lock: String,
    pub(super) blocking: String,
}

impl Lookups {
    pub(super) fn push(&mut self, key: &str, value: FilterValue) {
        self.entries.push((key.parse(), value));
    }

    /// The conditions, parameters numbered from `first`; checks every key and value.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown key, a value that does not suit its key, or
    /// a key about the blocking backend when `blocked` is false.
    pub(super) fn conditions(&self, first: usize, blocked: bool) -> Result<Conditions, Error> {
        let mut conditions = Conditions::default();
        for (i, (key, value)) in self.entries.iter().enumerate() {
            let key = key.clone()?;
            key.check(value).map_err(Error::InvalidArgument)?;
            let condition = format!("\n      AND {}", key.condition(first + i, value));
            match key.side {
                Side::Lock => conditions.lock.push_str(&condition),
                Side::Blocking if blocked => conditions.blocking.push_str(&condition),
                Side::Blocking => {
                    return Err(Error::InvalidArgument(format!(
                        "filter {key} is about the blocking backend: use it with \
                         blocked_locks()"
                    )));
                }
            }
        }
        Ok(conditions)
    }

    /// Bind the values, in the order of `conditions`.
    pub(super) fn bind<'q>(&self, mut query: Bound<'q>) -> Bound<'q> {
        for (_, value) in &self.entries {
            query = value.bind(query);
        }
        query
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_a_side_a_field_and_a_lookup() {
        let key: FilterKey = "activity__query__icontains".parse().unwrap();
        assert_eq!(key.lookup(), Lookup::IContains);
        assert_eq!(key.to_string(), "activity__query__icontains");
        let key: FilterKey = "blocking_activity_id__in".parse().unwrap();
        assert!(key.is_about_blocking());
        assert_eq!(key.value_kind(), ValueKind::Int);
        let key: FilterKey = "wait_duration__gte".parse().unwrap();
        assert_eq!(key.value_kind(), ValueKind::Duration);
        let key: FilterKey = "granted".parse().unwrap();
        assert_eq!(key.lookup(), Lookup::Exact);
        for bad in [
            "",
            "activity__",
            "activity__query__like",
            "nope",
            "activity_id__",
        ] {
            assert!(bad.parse::<FilterKey>().is_err(), "{bad}");
        }
        let error = "activity__query__like".parse::<FilterKey>().unwrap_err();
        assert!(
            error.to_string().starts_with("unknown lookup \"like\"")
                && error.to_string().contains("one of in, gt"),
            "{error}"
        );
    }

    #[test]
    fn values_must_suit_the_key() {
        let check = |key: &str, value: FilterValue| key.parse::<FilterKey>().unwrap().check(&value);
        assert!(check("activity__query__icontains", "x".into()).is_ok());
        assert!(check("activity__duration__gt", Duration::from_secs(1).into()).is_ok());
        assert!(check("activity__client_port__isnull", true.into()).is_ok());
        assert!(check("activity_id__in", vec![1, 2].into()).is_ok());
        assert!(check("activity__start__gt", "2026-01-01".into()).is_ok());
        assert!(check("activity_id__icontains", 1.into()).is_err());
        assert!(check("granted__gt", true.into()).is_err());
        assert!(check("activity_id", "1".into()).is_err());
        assert!(check("activity_id__in", 1.into()).is_err());
    }

    #[test]
    fn conditions_bind_values_and_never_write_them() {
        let mut lookups = Lookups::default();
        lookups.push("activity__query__icontains", "'; DROP TABLE x; --".into());
        lookups.push("blocking_activity__state__in", vec!["ACTIVE"].into());
        let conditions = lookups.conditions(14, true).unwrap();
        assert!(
            conditions.lock.contains("strpos(lower(") && conditions.lock.contains("$14::text"),
            "{}",
            conditions.lock
        );
        assert!(conditions.blocking.contains("ba.state"));
        assert!(conditions.blocking.contains("$15::text[]"));
        assert!(!conditions.lock.contains("DROP"));
        assert!(lookups.conditions(12, false).is_err());
    }
}
