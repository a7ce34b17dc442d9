//! The statements pglock sends for advisory locks. This is the one place they are written.
//!
//! No caller-supplied text ever reaches these strings: keys are integers (bound as parameters, or
//! written out by Rust's integer formatting on the simple-query path) and lock timeouts are
//! integer milliseconds. Each statement costs one round trip:
//!
//! * Bound statements (the extended protocol, prepared once per connection by sqlx) serve
//!   borrowed connections and every `NoWait` attempt.
//! * A simple-query message of several statements serves waits on connections pglock owns. Its
//!   first statement turns on `client_connection_check_interval` for the rest of the message, so
//!   that when the future is dropped and pglock closes the connection, the server notices within
//!   [`CLIENT_CHECK_MS`] and abandons the wait instead of taking the lock for nobody. The setting
//!   only takes effect for statements that *start* after it is set, hence the separate statement.
//! * A timed wait sets `lock_timeout` with `set_config(..., true)` inside the statement that
//!   waits, and sets it back in the same statement, so no `lock_timeout` is left behind, inside a
//!   transaction or out of one.
//! * On a borrowed connection a timed wait is preceded by a bound `try_lock`, which takes a free
//!   lock at the cost of the bare lock function: the timed statement (and, inside the caller's
//!   transaction, its savepoint and the planning of its plain text) is only paid for a lock that
//!   is held.
//!
//! # What an acquiring statement returns
//!
//! Every statement that takes a lock (try, bound wait, simple-query wait) ends its last row with
//! two columns: `taken` (`boolean`) and `pg_backend_pid()`, the server session the lock is on.
//! `taken` is true when the lock was taken, false when a try found it held, and NULL when the
//! server is a hot standby and the lock was refused (see [`OnStandby`]).
//!
//! # Hot standbys
//!
//! An advisory lock lives in one server's shared memory: taken on a standby it excludes the
//! standby's other sessions only, never the primary's, so by default pglock refuses it. The
//! check is `pg_is_in_recovery()` inside the acquiring statement itself, wrapped around the lock
//! call as `CASE WHEN pg_is_in_recovery() THEN NULL ELSE <lock call> END`, rather than a column
//! read after the lock was taken (and an unlock on a standby):
//! * no round trip is added anywhere, and on a standby the lock is never taken, not even for an
//!   instant: no unlock to send, no window in which the standby's sessions are excluded, and it
//!   works for a transaction-level lock in the caller's transaction, which has no unlock at all;
//! * on a primary it costs one call of `pg_is_in_recovery()`, which once recovery has ended reads
//!   a flag cached in the backend: nothing measurable next to the round trip;
//! * the outcome is read from the lock column alone, so it is right even if the standby is
//!   promoted while the statement runs (two separate `pg_is_in_recovery()` calls could disagree,
//!   and the lock would be held while pglock reports it refused, or the other way round).
//!
//! With [`OnStandby::Allow`] the call is not wrapped, and the statement is what it was before.

use std::sync::OnceLock;

use crate::AdvisoryKey;

/// How often, in milliseconds, a waiting backend on a pglock-owned connection checks that its
/// client is still there (`client_connection_check_interval`, Postgres 14 and later).
pub(crate) const CLIENT_CHECK_MS: u32 = 50;

/// The first server version with `client_connection_check_interval`.
const CLIENT_CHECK_SINCE: u32 = 140_000;

/// The savepoint that keeps a caller's transaction usable when a timed wait inside it fails.
const SAVEPOINT: &str = "pglock_acquire";

/// Which of the advisory-lock functions a lock uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Mode {
    pub(crate) shared: bool,
    pub(crate) xact: bool,
}

impl Mode {
    /// `pg_[try_]advisory_[xact_]lock[_shared]`.
    fn lock_fn(self, try_once: bool) -> &'static str {
        match (try_once, self.xact, self.shared) {
            (false, false, false) => "pg_advisory_lock",
            (false, false, true) => "pg_advisory_lock_shared",
            (false, true, false) => "pg_advisory_xact_lock",
            (false, true, true) => "pg_advisory_xact_lock_shared",
            (true, false, false) => "pg_try_advisory_lock",
            (true, false, true) => "pg_try_advisory_lock_shared",
            (true, true, false) => "pg_try_advisory_xact_lock",
            (true, true, true) => "pg_try_advisory_xact_lock_shared",
        }
    }

    fn unlock_fn(self) -> &'static str {
        if self.shared {
            "pg_advisory_unlock_shared"
        } else {
            "pg_advisory_unlock"
        }
    }
}

/// Whether an acquiring statement may take its lock on a hot standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OnStandby {
    /// Take nothing on a standby: the `taken` column is NULL there.
    Refuse,
    /// Take the lock wherever the statement runs.
    Allow,
}

/// The `taken` column (see the module docs): the lock function called on `key`.
fn taken_column(mode: Mode, try_once: bool, key: &str, on: OnStandby) -> String {
    let call = format!("{}({key})", mode.lock_fn(try_once));
    // A wait's function returns `void`, and returns only once the lock is taken: `IS NOT NULL`
    // turns it into a `true` that sqlx can decode.
    let taken = if try_once {
        call
    } else {
        format!("{call} IS NOT NULL")
    };
    match on {
        OnStandby::Allow => taken,
        OnStandby::Refuse => format!("CASE WHEN pg_is_in_recovery() THEN NULL ELSE {taken} END"),
    }
}

/// The key as parameters `$first`, `$first + 1`.
fn key_params(key: AdvisoryKey, first: usize) -> String {
    match key {
        AdvisoryKey::BigInt(_) => format!("${first}"),
        AdvisoryKey::Pair(..) => format!("${first}, ${}", first + 1),
    }
}

/// The key written out as typed literals. Parenthesised so that `i32::MIN` and `i64::MIN`
/// (whose magnitudes overflow their own types) cast correctly.
fn key_literals(key: AdvisoryKey) -> String {
    match key {
        AdvisoryKey::BigInt(key) => format!("({key})::bigint"),
        AdvisoryKey::Pair(class, obj) => format!("({class})::int4, ({obj})::int4"),
    }
}

/// `SELECT pg_try_advisory_...($1), pg_backend_pid()` (the lock call gated on a standby, see the
/// module docs): whether the lock was taken, and on which server session. Binds the key.
pub(crate) fn try_lock(mode: Mode, key: AdvisoryKey, on: OnStandby) -> &'static str {
    written_once(Bound::Try, mode, key, on, || {
        format!(
            "SELECT {}, pg_backend_pid()",
            taken_column(mode, true, &key_params(key, 1), on)
        )
    })
}

/// Unlock, on the server session the lock was taken on only: returns whether the lock was held
/// (`NULL` when the statement runs on another session, which a transaction pooler such as
/// PgBouncer does), and the session it ran on. Binds the key, then that session's pid.
pub(crate) fn unlock(mode: Mode, key: AdvisoryKey) -> &'static str {
    let session = match key {
        AdvisoryKey::BigInt(_) => 2,
        AdvisoryKey::Pair(..) => 3,
    };
    // An unlock has no standby rule: one text for both.
    written_once(Bound::Unlock, mode, key, OnStandby::Allow, || {
        format!(
            "SELECT CASE WHEN pg_backend_pid() = ${session} THEN {}({}) END, pg_backend_pid()",
            mode.unlock_fn(),
            key_params(key, 1)
        )
    })
}

/// A wait with the given `lock_timeout` (milliseconds, 0 for none) for this statement only,
/// or the server's own `lock_timeout` when `timeout_ms` is `None`. Its last columns are `taken`
/// and the backend pid (see the module docs).
fn wait_statement(mode: Mode, timeout_ms: Option<&str>, key: &str, on: OnStandby) -> String {
    let taken = taken_column(mode, false, key, on);
    match timeout_ms {
        None => format!("SELECT {taken}, pg_backend_pid()"),
        // The CTEs order the three steps by data dependency: set, wait, restore. `MATERIALIZED`
        // keeps the planner from inlining them.
        Some(ms) => format!(
            "WITH s AS MATERIALIZED (SELECT current_setting('lock_timeout') AS old, \
             set_config('lock_timeout', {ms}, true)), \
             l AS MATERIALIZED (SELECT {taken} AS taken FROM s) \
             SELECT set_config('lock_timeout', s.old, true), l.taken, pg_backend_pid() FROM s, l"
        ),
    }
}

/// A wait as one bound statement. Parameters: the timeout in milliseconds as text (when
/// `timeout_ms` is `Some`), then the key.
pub(crate) fn wait_bound(mode: Mode, key: AdvisoryKey, timed: bool, on: OnStandby) -> &'static str {
    if timed {
        written_once(Bound::TimedWait, mode, key, on, || {
            wait_statement(mode, Some("$1"), &key_params(key, 2), on)
        })
    } else {
        written_once(Bound::Wait, mode, key, on, || {
            wait_statement(mode, None, &key_params(key, 1), on)
        })
    }
}

/// The bound statements, each of which has one text per mode, key shape and standby rule.
#[derive(Clone, Copy)]
enum Bound {
    Try,
    Wait,
    TimedWait,
    Unlock,
}

/// The text of a bound statement, written by `write` the first time it is needed and kept for
/// the life of the process. Bound statements depend on nothing but what indexes them (four
/// statements, four modes, two key shapes, two standby rules: 64 texts at most, a few KB), so
/// taking a lock formats nothing: formatting them on every call was some 7,000 instructions
/// per lock, a sixth of the client's whole work for an uncontended lock and release.
fn written_once(
    bound: Bound,
    mode: Mode,
    key: AdvisoryKey,
    on: OnStandby,
    write: impl FnOnce() -> String,
) -> &'static str {
    static TEXTS: [OnceLock<Box<str>>; 64] = [const { OnceLock::new() }; 64];
    let index = (bound as usize) << 4
        | usize::from(mode.shared) << 3
        | usize::from(mode.xact) << 2
        | usize::from(matches!(key, AdvisoryKey::Pair(..))) << 1
        | usize::from(on == OnStandby::Allow);
    TEXTS[index].get_or_init(|| write().into_boxed_str())
}

/// Where a simple-query wait runs, which decides what is wrapped around it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitOn {
    /// A connection pglock closes if the future is dropped: turn on the client check first,
    /// where the server has it. Where it does not, `tag` marks the statement so that an
    /// abandoned wait can be found and cancelled (see `orphan`).
    Owned {
        server_version: Option<u32>,
        tag: Option<u64>,
    },
    /// The caller's transaction, which must stay usable if the wait times out.
    CallerTransaction,
}

/// A wait as one simple-query message (values written out; see the module docs).
pub(crate) fn wait_simple(
    mode: Mode,
    key: AdvisoryKey,
    timeout_ms: Option<u32>,
    on: WaitOn,
    standby: OnStandby,
    context: &str,
) -> String {
    let ms = timeout_ms.map(|ms| format!("'{ms}'"));
    let wait = wait_statement(mode, ms.as_deref(), &key_literals(key), standby);
    let message = match on {
        WaitOn::Owned {
            server_version,
            tag,
        } => {
            if has_client_check(server_version) {
                format!(
                    "SELECT set_config('client_connection_check_interval', '{CLIENT_CHECK_MS}', \
                     true); {wait}"
                )
            } else if let Some(tag) = tag {
                format!("{} {wait}", super::orphan::comment(tag))
            } else {
                wait
            }
        }
        WaitOn::CallerTransaction => {
            format!("SAVEPOINT {SAVEPOINT}; {wait}; RELEASE SAVEPOINT {SAVEPOINT}")
        }
    };
    format!("{context}{message}")
}

/// The django-pgactivity context comment that starts a wait's message:
/// `/*pga_context={"lock":"<id>","fn":"<function>"}*/` and a newline.
///
/// The id is the caller's text, so it is written as a JSON string in which no `*` appears (it
/// is escaped as `\u002a`, which JSON reads back as `*`): without a `*`, the text can neither
/// close the comment (`*/`) nor open a nested one (`/*`), and django-pgactivity's pattern
/// (which allows no `*` inside) still recognises it.
pub(crate) fn context_comment(lock: &str, function: Option<&str>) -> String {
    let mut out = String::from("/*pga_context={\"lock\":");
    json_string(&mut out, lock);
    if let Some(function) = function {
        out.push_str(",\"fn\":");
        json_string(&mut out, function);
    }
    out.push_str("}*/\n");
    out
}

fn json_string(out: &mut String, text: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '*' => out.push_str("\\u002a"),
            c if c.is_control() => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    write!(out, "\\u{unit:04x}").expect("writing to a String");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Unlock a session-level lock if, and only if, this session holds it in this mode, without the
/// warning `pg_advisory_unlock` gives for a lock not held. Returns a row per lock released (0
/// or 1). Values written out: the key as typed literals, its `pg_locks` halves as `oid`s.
pub(crate) fn unlock_if_held(mode: Mode, key: AdvisoryKey) -> String {
    let (classid, objid) = key.to_pg_locks_id();
    let lock_mode = if mode.shared {
        "ShareLock"
    } else {
        "ExclusiveLock"
    };
    format!(
        "SELECT {}({}) FROM pg_locks \
         WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted \
         AND classid = '{classid}'::oid AND objid = '{objid}'::oid AND objsubid = {} \
         AND mode = '{lock_mode}'",
        mode.unlock_fn(),
        key_literals(key),
        key.pg_locks_objsubid(),
    )
}

/// Whether a server of this version (`server_version_num`) notices a client gone mid-wait.
pub(crate) fn has_client_check(server_version: Option<u32>) -> bool {
    server_version.is_some_and(|v| v >= CLIENT_CHECK_SINCE)
}

/// Undo a failed `WaitOn::CallerTransaction` wait, leaving the transaction as it was before.
pub(crate) fn recover_caller_transaction() -> String {
    format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Mode = Mode {
        shared: false,
        xact: false,
    };

    #[test]
    fn each_bound_statement_is_written_once_and_only_for_its_inputs() {
        let modes = [(false, false), (false, true), (true, false), (true, true)]
            .map(|(shared, xact)| Mode { shared, xact });
        let keys = [AdvisoryKey::BigInt(7), AdvisoryKey::Pair(7, 8)];
        let mut seen = std::collections::HashSet::new();
        for mode in modes {
            for key in keys {
                let pair = matches!(key, AdvisoryKey::Pair(..));
                for on in [OnStandby::Refuse, OnStandby::Allow] {
                    let texts = [
                        try_lock(mode, key, on),
                        wait_bound(mode, key, false, on),
                        wait_bound(mode, key, true, on),
                    ];
                    for (text, again) in texts.iter().zip([
                        try_lock(mode, key, on),
                        wait_bound(mode, key, false, on),
                        wait_bound(mode, key, true, on),
                    ]) {
                        assert!(std::ptr::eq(*text, again), "kept, not rewritten: {text}");
                        assert!(text.contains(mode.lock_fn(text.contains("pg_try"))));
                        assert_eq!(
                            text.contains(", $2") || text.contains(", $3"),
                            pair,
                            "{text}"
                        );
                        assert_eq!(text.contains("pg_is_in_recovery"), on == OnStandby::Refuse);
                        assert!(seen.insert(*text), "two inputs share a slot: {text}");
                    }
                }
                let unlock = super::unlock(mode, key);
                assert!(
                    unlock.contains(mode.unlock_fn())
                        && unlock.contains(if pair { "$3" } else { "$2" })
                );
            }
        }
    }

    #[test]
    fn all_eight_functions() {
        let mut seen = std::collections::HashSet::new();
        for try_once in [false, true] {
            for xact in [false, true] {
                for shared in [false, true] {
                    seen.insert(Mode { shared, xact }.lock_fn(try_once));
                }
            }
        }
        assert_eq!(seen.len(), 8);
        let shared = Mode {
            shared: true,
            xact: true,
        };
        assert_eq!(shared.lock_fn(true), "pg_try_advisory_xact_lock_shared");
        assert_eq!(shared.unlock_fn(), "pg_advisory_unlock_shared");
    }

    #[test]
    fn bound_statements_number_their_parameters() {
        assert_eq!(
            try_lock(SESSION, AdvisoryKey::Pair(1, 2), OnStandby::Allow),
            "SELECT pg_try_advisory_lock($1, $2), pg_backend_pid()"
        );
        let timed = wait_bound(SESSION, AdvisoryKey::BigInt(1), true, OnStandby::Refuse);
        assert!(
            timed.contains("set_config('lock_timeout', $1, true)"),
            "{timed}"
        );
        assert!(timed.contains("pg_advisory_lock($2)"), "{timed}");
    }

    #[test]
    fn every_acquiring_statement_refuses_a_standby_in_its_lock_column() {
        let gate = "CASE WHEN pg_is_in_recovery() THEN NULL ELSE";
        let key = AdvisoryKey::BigInt(7);
        let owned = WaitOn::Owned {
            server_version: Some(170_000),
            tag: None,
        };
        for mode in [
            SESSION,
            Mode {
                shared: true,
                xact: true,
            },
        ] {
            let statements = [
                try_lock(mode, key, OnStandby::Refuse).to_owned(),
                wait_bound(mode, key, false, OnStandby::Refuse).to_owned(),
                wait_bound(mode, key, true, OnStandby::Refuse).to_owned(),
                wait_simple(mode, key, None, owned, OnStandby::Refuse, ""),
                wait_simple(mode, key, Some(5), owned, OnStandby::Refuse, ""),
                wait_simple(
                    mode,
                    key,
                    Some(5),
                    WaitOn::CallerTransaction,
                    OnStandby::Refuse,
                    "",
                ),
            ];
            for statement in &statements {
                assert_eq!(statement.matches(gate).count(), 1, "{statement}");
                assert!(
                    statement.contains(", pg_backend_pid()"),
                    "the pid stays the last column: {statement}"
                );
            }
            for allowed in [
                try_lock(mode, key, OnStandby::Allow).to_owned(),
                wait_bound(mode, key, true, OnStandby::Allow).to_owned(),
                wait_simple(mode, key, None, owned, OnStandby::Allow, ""),
            ] {
                assert!(!allowed.contains("pg_is_in_recovery"), "{allowed}");
            }
        }
        assert_eq!(
            wait_bound(SESSION, key, false, OnStandby::Refuse),
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_advisory_lock($1) IS NOT NULL \
             END, pg_backend_pid()"
        );
    }

    #[test]
    fn extreme_keys_are_written_as_castable_literals() {
        assert_eq!(
            key_literals(AdvisoryKey::BigInt(i64::MIN)),
            "(-9223372036854775808)::bigint"
        );
        assert_eq!(
            key_literals(AdvisoryKey::Pair(i32::MIN, 0)),
            "(-2147483648)::int4, (0)::int4"
        );
    }

    #[test]
    fn client_check_only_where_the_server_has_it() {
        let key = AdvisoryKey::BigInt(7);
        let on = |v| WaitOn::Owned {
            server_version: Some(v),
            tag: Some(0xfeed),
        };
        let new = wait_simple(SESSION, key, None, on(140_000), OnStandby::Refuse, "");
        assert!(
            new.starts_with("SELECT set_config('client_connection"),
            "{new}"
        );
        let old = wait_simple(SESSION, key, None, on(130_012), OnStandby::Refuse, "");
        assert!(!old.contains("client_connection"), "{old}");
        assert!(
            old.starts_with("/* pglock wait 000000000000feed */ SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_advisory_lock("),
            "{old}"
        );
    }

    #[test]
    fn context_comments_cannot_be_closed_or_nested_by_the_id() {
        assert_eq!(
            context_comment("nightly", Some("app::jobs::run")),
            "/*pga_context={\"lock\":\"nightly\",\"fn\":\"app::jobs::run\"}*/\n"
        );
        let nasty = "*/ DROP TABLE x; /* \"q\" \\ \n\0\u{7f} é";
        let comment = context_comment(nasty, None);
        let inner = comment
            .strip_prefix("/*pga_context=")
            .and_then(|rest| rest.strip_suffix("*/\n"))
            .unwrap();
        assert!(!inner.contains('*'), "{inner}");
        assert_eq!(
            inner,
            "{\"lock\":\"\\u002a/ DROP TABLE x; /\\u002a \\\"q\\\" \\\\ \\u000a\\u0000\\u007f é\"}"
        );
        let message = wait_simple(
            SESSION,
            AdvisoryKey::BigInt(1),
            None,
            WaitOn::CallerTransaction,
            OnStandby::Refuse,
            &comment,
        );
        assert!(message.starts_with(&comment), "{message}");
    }

    #[test]
    fn unlock_if_held_names_the_pg_locks_row() {
        let shared = Mode {
            shared: true,
            xact: false,
        };
        let statement = unlock_if_held(shared, AdvisoryKey::BigInt(-1));
        assert!(
            statement.starts_with("SELECT pg_advisory_unlock_shared((-1)::bigint) FROM pg_locks"),
            "{statement}"
        );
        assert!(
            statement.contains(
                "classid = '4294967295'::oid AND objid = '4294967295'::oid AND objsubid = 1 \
                 AND mode = 'ShareLock'"
            ),
            "{statement}"
        );
    }
}
