//! The arguments of each attribute: parsed, checked, and turned into one struct per attribute.
//! Every problem found is reported, each spanned at the tokens at fault.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprPath, Ident, Lit, Token};

use crate::duration::{self, Dur};

/// The largest `lock_timeout` Postgres accepts, in milliseconds.
const MAX_LOCK_TIMEOUT_MS: u128 = i32::MAX as u128;

/// One argument as written: `key = value`, or a bare expression (a lock id, a limit, a flag).
enum Arg {
    KeyValue { key: Ident, value: Expr },
    Bare(Expr),
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(Ident) && input.peek2(Token![=]) && !input.peek2(Token![==]) {
            let key = input.parse()?;
            input.parse::<Token![=]>()?;
            Ok(Arg::KeyValue {
                key,
                value: input.parse()?,
            })
        } else {
            input.parse().map(Arg::Bare)
        }
    }
}

fn parse_args(tokens: TokenStream) -> syn::Result<Vec<Arg>> {
    Punctuated::<Arg, Token![,]>::parse_terminated
        .parse2(tokens)
        .map(|args| args.into_iter().collect())
}

/// Collects errors so that all of them are reported at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(error) => Err(error),
            None => Ok(value),
        }
    }
}

/// A setting that may be given once.
struct Once<T> {
    value: Option<T>,
}

impl<T> Once<T> {
    fn new() -> Self {
        Once { value: None }
    }

    fn set(&mut self, key: &Ident, value: syn::Result<T>, errors: &mut Errors) {
        if self.value.is_some() {
            errors.push(syn::Error::new_spanned(
                key,
                format!("duplicate `{key}` argument"),
            ));
            return;
        }
        match value {
            Ok(value) => self.value = Some(value),
            Err(error) => errors.push(error),
        }
    }
}

/// The bare identifier an expression is, if it is one (`shared`, `None`, `conn`).
fn bare_ident(expr: &Expr) -> Option<&Ident> {
    match expr {
        Expr::Path(ExprPath {
            qself: None, path, ..
        }) => path.get_ident(),
        _ => None,
    }
}

fn unknown(what: &dyn quote::ToTokens, name: &str, attr: &str, keys: &[&str]) -> syn::Error {
    syn::Error::new_spanned(
        what,
        format!(
            "unknown argument `{name}` for #[pglock::{attr}]; expected one of: {}",
            keys.join(", ")
        ),
    )
}

/// A database handle, for `db = ...`: any expression (the type system checks what it is).
fn handle_expr(value: &Expr) -> syn::Result<Expr> {
    Ok(value.clone())
}

/// `true` or `false`; a bare flag means `true`.
fn boolean(value: &Expr) -> syn::Result<bool> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Bool(b), ..
        }) => Ok(b.value),
        _ => Err(syn::Error::new_spanned(value, "expected `true` or `false`")),
    }
}

/// The last segment of a path, for values like `Skip` or `pglock::Skip`.
fn variant(value: &Expr) -> Option<(String, Span)> {
    match value {
        Expr::Path(ExprPath { path, .. }) => path
            .segments
            .last()
            .map(|segment| (segment.ident.to_string(), segment.ident.span())),
        _ => None,
    }
}

/// A lock timeout as written: a duration, or `None` for no limit.
#[derive(Clone, Copy, Debug)]
pub enum Limit {
    NoLimit,
    At(Dur),
}

fn limit(value: &Expr) -> syn::Result<Limit> {
    if bare_ident(value).is_some_and(|ident| ident == "None") {
        return Ok(Limit::NoLimit);
    }
    let dur = duration::parse(value)?;
    if dur.as_millis() > MAX_LOCK_TIMEOUT_MS {
        return Err(syn::Error::new_spanned(
            value,
            "longer than Postgres' lock_timeout accepts (2147483647 ms, about 24.8 days); \
             use None for no limit",
        ));
    }
    Ok(Limit::At(dur))
}

/// A limit for `lock_timeout` itself, which has no "don't wait" value: at least 1 ms.
fn session_limit(value: &Expr) -> syn::Result<Limit> {
    let parsed = limit(value)?;
    if let Limit::At(dur) = parsed
        && dur.as_millis() == 0
    {
        return Err(syn::Error::new_spanned(
            value,
            "a lock timeout must be at least 1 ms (or None for no limit)",
        ));
    }
    Ok(parsed)
}

/// `side_effect` of `#[pglock::advisory]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SideEffect {
    Raise,
    Skip,
}

fn advisory_side_effect(value: &Expr) -> syn::Result<SideEffect> {
    match variant(value) {
        Some((name, _)) if name == "Raise" => Ok(SideEffect::Raise),
        Some((name, _)) if name == "Skip" => Ok(SideEffect::Skip),
        Some((name, span)) if name == "Return" => Err(syn::Error::new(
            span,
            "side_effect = Return is not available on an attribute: the function would run \
             without the lock and nothing would tell it. Take the lock inside the function \
             instead: `pglock::advisory(id).try_acquire(db)` (or `.try_scope(db, body)`) \
             returns None when another session holds it",
        )),
        _ => Err(syn::Error::new_spanned(
            value,
            "expected `Raise` (the default: return an error when the lock is held elsewhere) \
             or `Skip` (return without running the function)",
        )),
    }
}

/// The arguments of `#[pglock::advisory]`.
pub struct AdvisoryArgs {
    /// The lock id expression; `None` for the default (module path and function name).
    pub id: Option<Expr>,
    pub timeout: Option<Limit>,
    pub side_effect: SideEffect,
    pub shared: bool,
    pub xact: bool,
    pub allow_standby: bool,
    /// `heartbeat = "200ms"`, or `None` to turn it off.
    pub heartbeat: Option<Limit>,
    /// `min_hold = "30s"`.
    pub min_hold: Option<Dur>,
    pub db: Option<Expr>,
}

const ADVISORY_KEYS: &[&str] = &[
    "id",
    "timeout",
    "side_effect",
    "shared",
    "xact",
    "allow_standby",
    "heartbeat",
    "min_hold",
    "db",
    "crate",
];

/// The shortest heartbeat (pglock::MIN_HEARTBEAT), in milliseconds.
const MIN_HEARTBEAT_MS: u128 = 10;

fn heartbeat(value: &Expr) -> syn::Result<Limit> {
    if bare_ident(value).is_some_and(|ident| ident == "None") {
        return Ok(Limit::NoLimit);
    }
    let dur = duration::parse(value)?;
    if dur.as_millis() < MIN_HEARTBEAT_MS {
        return Err(syn::Error::new_spanned(
            value,
            "a heartbeat must be at least 10ms (or None to turn it off)",
        ));
    }
    Ok(Limit::At(dur))
}

impl AdvisoryArgs {
    pub fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let (mut id, mut timeout, mut side_effect) = (Once::new(), Once::new(), Once::new());
        let (mut shared, mut xact, mut db) = (Once::new(), Once::new(), Once::new());
        let (mut allow_standby, mut heartbeat_) = (Once::new(), Once::new());
        let mut min_hold = Once::new();
        for (position, arg) in parse_args(tokens)?.into_iter().enumerate() {
            match arg {
                Arg::KeyValue { key, value } => match key.to_string().as_str() {
                    "id" => id.set(&key, Ok(value), &mut errors),
                    "timeout" => timeout.set(&key, limit(&value), &mut errors),
                    "side_effect" => {
                        side_effect.set(&key, advisory_side_effect(&value), &mut errors)
                    }
                    "shared" => shared.set(&key, boolean(&value), &mut errors),
                    "xact" => xact.set(&key, boolean(&value), &mut errors),
                    "allow_standby" => allow_standby.set(&key, boolean(&value), &mut errors),
                    "heartbeat" => heartbeat_.set(&key, heartbeat(&value), &mut errors),
                    "min_hold" => min_hold.set(&key, duration::parse(&value), &mut errors),
                    "db" => db.set(&key, handle_expr(&value), &mut errors),
                    name => errors.push(unknown(&key, name, "advisory", ADVISORY_KEYS)),
                },
                Arg::Bare(expr) => match bare_ident(&expr).map(Ident::to_string).as_deref() {
                    Some("shared") => {
                        let key = bare_ident(&expr).expect("matched").clone();
                        shared.set(&key, Ok(true), &mut errors);
                    }
                    Some("xact") => {
                        let key = bare_ident(&expr).expect("matched").clone();
                        xact.set(&key, Ok(true), &mut errors);
                    }
                    Some("allow_standby") => {
                        let key = bare_ident(&expr).expect("matched").clone();
                        allow_standby.set(&key, Ok(true), &mut errors);
                    }
                    _ if position == 0 => {
                        id.set(&Ident::new("id", Span::call_site()), Ok(expr), &mut errors)
                    }
                    Some(name) => errors.push(unknown(&expr, name, "advisory", ADVISORY_KEYS)),
                    None => errors.push(syn::Error::new_spanned(
                        &expr,
                        "the lock id must be the first argument (or write it as `id = ...`)",
                    )),
                },
            }
        }
        errors.finish(AdvisoryArgs {
            id: id.value,
            timeout: timeout.value,
            side_effect: side_effect.value.unwrap_or(SideEffect::Raise),
            shared: shared.value.unwrap_or(false),
            xact: xact.value.unwrap_or(false),
            allow_standby: allow_standby.value.unwrap_or(false),
            heartbeat: heartbeat_.value,
            min_hold: min_hold.value,
            db: db.value,
        })
    }
}

/// Which Postgres timeout a `#[pglock::timeout]` argument sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setting {
    Lock,
    Statement,
    IdleInTransaction,
    Transaction,
}

impl Setting {
    fn from_key(key: &str) -> Option<Self> {
        match key {
            "lock" => Some(Setting::Lock),
            "statement" => Some(Setting::Statement),
            "idle_in_transaction" => Some(Setting::IdleInTransaction),
            "transaction" => Some(Setting::Transaction),
            _ => None,
        }
    }

    /// The setting's name in Postgres.
    pub fn guc(self) -> &'static str {
        match self {
            Setting::Lock => "lock_timeout",
            Setting::Statement => "statement_timeout",
            Setting::IdleInTransaction => "idle_in_transaction_session_timeout",
            Setting::Transaction => "transaction_timeout",
        }
    }

    /// The runtime constructor of the setting's scope.
    pub fn constructor(self) -> &'static str {
        match self {
            Setting::Lock => "timeout",
            Setting::Statement => "statement_timeout",
            Setting::IdleInTransaction => "idle_in_transaction_session_timeout",
            Setting::Transaction => "transaction_timeout",
        }
    }
}

/// The arguments of `#[pglock::timeout]`: one scope per setting given, in the order written.
pub struct TimeoutArgs {
    pub setting: Setting,
    pub limit: Limit,
    pub db: Option<Expr>,
}

const TIMEOUT_KEYS: &[&str] = &[
    "lock",
    "statement",
    "idle_in_transaction",
    "transaction",
    "db",
    "crate",
];

const TIMEOUT_FORMS: &str = "#[pglock::timeout(5)] (lock_timeout), #[pglock::timeout(\"1.5s\")], \
     #[pglock::timeout(None)], or by setting: #[pglock::timeout(lock = \"1s\", statement = \"30s\")]";

impl TimeoutArgs {
    pub fn parse(tokens: TokenStream) -> syn::Result<Vec<Self>> {
        let mut errors = Errors::default();
        let mut db = Once::new();
        // One `Once` per setting, and the order they were written in.
        let mut limits: Vec<(Setting, Once<Limit>)> = [
            Setting::Lock,
            Setting::Statement,
            Setting::IdleInTransaction,
            Setting::Transaction,
        ]
        .into_iter()
        .map(|setting| (setting, Once::new()))
        .collect();
        let mut order = Vec::new();
        let mut set =
            |setting: Setting, key: &Ident, value: syn::Result<Limit>, errors: &mut Errors| {
                let (_, once) = limits
                    .iter_mut()
                    .find(|(s, _)| *s == setting)
                    .expect("every setting has a slot");
                if once.value.is_none() && !order.contains(&setting) {
                    order.push(setting);
                }
                once.set(key, value, errors);
            };
        for (position, arg) in parse_args(tokens)?.into_iter().enumerate() {
            match arg {
                Arg::KeyValue { key, value } => match key.to_string().as_str() {
                    "db" => db.set(&key, handle_expr(&value), &mut errors),
                    "side_effect" => errors.push(syn::Error::new_spanned(
                        &key,
                        "#[pglock::timeout] has no side_effect: a statement that waits too long \
                         fails with pglock::Error::LockTimeout, which the function returns",
                    )),
                    name => match Setting::from_key(name) {
                        Some(setting) => set(setting, &key, session_limit(&value), &mut errors),
                        None => errors.push(unknown(&key, name, "timeout", TIMEOUT_KEYS)),
                    },
                },
                Arg::Bare(expr) if position == 0 => set(
                    Setting::Lock,
                    &Ident::new("lock", Span::call_site()),
                    session_limit(&expr),
                    &mut errors,
                ),
                Arg::Bare(expr) => errors.push(syn::Error::new_spanned(
                    &expr,
                    format!("#[pglock::timeout] takes one bare limit, first: {TIMEOUT_FORMS}"),
                )),
            }
        }
        if order.is_empty() {
            if errors.0.is_none() {
                errors.push(syn::Error::new(
                    Span::call_site(),
                    format!("#[pglock::timeout] needs a limit: {TIMEOUT_FORMS}"),
                ));
            }
            return Err(errors.0.expect("an error was pushed above"));
        }
        let db = db.value;
        let scopes = order
            .into_iter()
            .filter_map(|setting| {
                let (_, once) = limits.iter_mut().find(|(s, _)| *s == setting)?;
                Some(TimeoutArgs {
                    setting,
                    limit: once.value.take()?,
                    db: db.clone(),
                })
            })
            .collect();
        errors.finish(scopes)
    }
}

/// What `#[pglock::retry_locks]` does once its schedule ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finally {
    Fail,
    Wait,
    Prioritize,
}

fn finally(value: &Expr) -> syn::Result<Finally> {
    match variant(value) {
        Some((name, _)) if name == "Fail" => Ok(Finally::Fail),
        Some((name, _)) if name == "Wait" => Ok(Finally::Wait),
        Some((name, _)) if name == "Prioritize" => Ok(Finally::Prioritize),
        _ => Err(syn::Error::new_spanned(
            value,
            "expected `Fail` (the default: return the last lock timeout), `Wait` (one last \
             attempt without a lock timeout) or `Prioritize` (one last attempt ending the \
             sessions that block it)",
        )),
    }
}

/// One step of a schedule: `("100ms", "50ms")`, a lock timeout and the pause after it.
fn schedule(value: &Expr) -> syn::Result<Vec<(Dur, Dur)>> {
    let shape = "a schedule is a list of (lock timeout, pause) pairs: \
                 schedule = [(\"100ms\", \"50ms\"), (\"500ms\", \"2s\")]";
    let Expr::Array(array) = value else {
        return Err(syn::Error::new_spanned(value, shape));
    };
    let mut steps = Vec::new();
    for elem in &array.elems {
        let Expr::Tuple(pair) = elem else {
            return Err(syn::Error::new_spanned(elem, shape));
        };
        let [timeout, pause] = [pair.elems.first(), pair.elems.get(1)];
        let (Some(timeout), Some(pause), 2) = (timeout, pause, pair.elems.len()) else {
            return Err(syn::Error::new_spanned(elem, shape));
        };
        let timeout = match session_limit(timeout)? {
            Limit::At(dur) => dur,
            Limit::NoLimit => {
                return Err(syn::Error::new_spanned(
                    timeout,
                    "each attempt has a lock timeout; for a last attempt without one, use \
                     `finally = Wait`",
                ));
            }
        };
        steps.push((timeout, duration::parse(pause)?));
    }
    if steps.is_empty() {
        return Err(syn::Error::new_spanned(value, shape));
    }
    Ok(steps)
}

/// The arguments of `#[pglock::retry_locks]`.
pub struct RetryArgs {
    pub schedule: Option<Vec<(Dur, Dur)>>,
    pub deadline: Option<Dur>,
    pub finally: Finally,
    pub jitter: Option<bool>,
    pub db: Option<Expr>,
    pub watcher: Option<Expr>,
}

const RETRY_KEYS: &[&str] = &[
    "schedule", "deadline", "finally", "jitter", "db", "watcher", "crate",
];

impl RetryArgs {
    pub fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let (mut schedule_, mut deadline, mut finally_) = (Once::new(), Once::new(), Once::new());
        let (mut jitter, mut db, mut watcher) = (Once::new(), Once::new(), Once::new());
        for arg in parse_args(tokens)? {
            match arg {
                Arg::KeyValue { key, value } => match key.to_string().as_str() {
                    "schedule" => schedule_.set(&key, schedule(&value), &mut errors),
                    "deadline" => deadline.set(&key, duration::parse(&value), &mut errors),
                    "finally" => finally_.set(&key, finally(&value), &mut errors),
                    "jitter" => jitter.set(&key, boolean(&value), &mut errors),
                    "db" => db.set(&key, handle_expr(&value), &mut errors),
                    "watcher" => watcher.set(&key, handle_expr(&value), &mut errors),
                    name => errors.push(unknown(&key, name, "retry_locks", RETRY_KEYS)),
                },
                Arg::Bare(expr) => {
                    let name = bare_ident(&expr)
                        .map_or_else(|| quote::quote!(#expr).to_string(), Ident::to_string);
                    errors.push(unknown(&expr, &name, "retry_locks", RETRY_KEYS));
                }
            }
        }
        let finally = finally_.value.unwrap_or(Finally::Fail);
        if let (Some(expr), false) = (&watcher.value, finally == Finally::Prioritize) {
            errors.push(syn::Error::new_spanned(
                expr,
                "`watcher` is the pool of the final prioritize: it goes with `finally = Prioritize`",
            ));
        }
        errors.finish(RetryArgs {
            schedule: schedule_.value,
            deadline: deadline.value,
            finally,
            jitter: jitter.value,
            db: db.value,
            watcher: watcher.value,
        })
    }
}

/// How `#[pglock::prioritize]` ends a blocker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Terminate,
    Cancel,
}

fn prioritize_side_effect(value: &Expr) -> syn::Result<Signal> {
    match variant(value) {
        Some((name, _)) if name == "Terminate" => Ok(Signal::Terminate),
        Some((name, _)) if name == "Cancel" => Ok(Signal::Cancel),
        Some((name, span)) if name == "Skip" || name == "Raise" || name == "Return" => {
            Err(syn::Error::new(
                span,
                format!(
                    "side_effect = {name} is for #[pglock::advisory]; #[pglock::prioritize] \
                     ends the sessions blocking it with side_effect = Terminate (the default) \
                     or Cancel"
                ),
            ))
        }
        _ => Err(syn::Error::new_spanned(
            value,
            "expected `Terminate` (the default: end the blocking session) or `Cancel` (cancel \
             its statement)",
        )),
    }
}

/// The arguments of `#[pglock::prioritize]`.
pub struct PrioritizeArgs {
    pub interval: Option<Dur>,
    pub periodic: Option<bool>,
    pub timeout: Option<Limit>,
    pub signal: Option<Signal>,
    pub older_than: Option<Dur>,
    pub db: Option<Expr>,
    pub watcher: Option<Expr>,
    pub dry_run: bool,
    pub cancel_first: Option<Dur>,
    pub roots_only: bool,
    pub report: Option<Expr>,
}

const PRIORITIZE_KEYS: &[&str] = &[
    "interval",
    "periodic",
    "timeout",
    "side_effect",
    "older_than",
    "db",
    "watcher",
    "dry_run",
    "cancel_first",
    "roots_only",
    "report",
    "crate",
];

/// The shortest prioritize interval (pglock::Prioritize::MIN_INTERVAL), in milliseconds.
const MIN_INTERVAL_MS: u128 = 10;

fn interval(value: &Expr) -> syn::Result<Dur> {
    let dur = duration::parse(value)?;
    if dur.as_millis() < MIN_INTERVAL_MS {
        return Err(syn::Error::new_spanned(
            value,
            "the interval must be at least 10ms: shorter ones mostly load the lock manager",
        ));
    }
    Ok(dur)
}

impl PrioritizeArgs {
    pub fn parse(tokens: TokenStream) -> syn::Result<Self> {
        let mut errors = Errors::default();
        let (mut interval_, mut periodic, mut timeout) = (Once::new(), Once::new(), Once::new());
        let (mut signal, mut older_than) = (Once::new(), Once::new());
        let (mut db, mut watcher) = (Once::new(), Once::new());
        let (mut dry_run, mut cancel_first, mut roots_only) =
            (Once::new(), Once::new(), Once::new());
        let mut report = Once::new();
        for arg in parse_args(tokens)? {
            match arg {
                Arg::KeyValue { key, value } => match key.to_string().as_str() {
                    "interval" => interval_.set(&key, interval(&value), &mut errors),
                    "periodic" => periodic.set(&key, boolean(&value), &mut errors),
                    "timeout" => timeout.set(&key, session_limit(&value), &mut errors),
                    "side_effect" => signal.set(&key, prioritize_side_effect(&value), &mut errors),
                    "older_than" => older_than.set(&key, duration::parse(&value), &mut errors),
                    "db" => db.set(&key, handle_expr(&value), &mut errors),
                    "watcher" => watcher.set(&key, handle_expr(&value), &mut errors),
                    "dry_run" => dry_run.set(&key, boolean(&value), &mut errors),
                    "cancel_first" => cancel_first.set(&key, duration::parse(&value), &mut errors),
                    "roots_only" => roots_only.set(&key, boolean(&value), &mut errors),
                    "report" => report.set(&key, handle_expr(&value), &mut errors),
                    name => errors.push(unknown(&key, name, "prioritize", PRIORITIZE_KEYS)),
                },
                Arg::Bare(expr) if bare_ident(&expr).is_some_and(|i| i == "dry_run") => {
                    let key = bare_ident(&expr).expect("matched").clone();
                    dry_run.set(&key, Ok(true), &mut errors);
                }
                Arg::Bare(expr) if bare_ident(&expr).is_some_and(|i| i == "roots_only") => {
                    let key = bare_ident(&expr).expect("matched").clone();
                    roots_only.set(&key, Ok(true), &mut errors);
                }
                Arg::Bare(expr) => {
                    let name = bare_ident(&expr)
                        .map_or_else(|| quote::quote!(#expr).to_string(), Ident::to_string);
                    errors.push(unknown(&expr, &name, "prioritize", PRIORITIZE_KEYS));
                }
            }
        }
        errors.finish(PrioritizeArgs {
            interval: interval_.value,
            periodic: periodic.value,
            timeout: timeout.value,
            signal: signal.value,
            older_than: older_than.value,
            db: db.value,
            watcher: watcher.value,
            dry_run: dry_run.value.unwrap_or(false),
            cancel_first: cancel_first.value,
            roots_only: roots_only.value.unwrap_or(false),
            report: report.value,
        })
    }
}

#[cfg(test)]
mod timeout_and_retry_tests {
    use quote::quote;

    use super::*;

    #[test]
    fn timeout_settings_make_one_scope_each_in_the_order_written() {
        let scopes = TimeoutArgs::parse(quote!(statement = "30s", lock = 1, db = conn)).unwrap();
        let settings: Vec<Setting> = scopes.iter().map(|s| s.setting).collect();
        assert_eq!(settings, [Setting::Statement, Setting::Lock]);
        assert!(scopes.iter().all(|s| s.db.is_some()));
        let bare = TimeoutArgs::parse(quote!(5)).unwrap();
        assert_eq!(bare.len(), 1);
        assert_eq!(bare[0].setting, Setting::Lock);
        let twice = TimeoutArgs::parse(quote!(5, lock = "2s")).err().unwrap();
        assert!(twice.to_string().contains("duplicate `lock`"), "{twice}");
        let none = TimeoutArgs::parse(quote!(db = conn)).err().unwrap();
        assert!(none.to_string().contains("needs a limit"), "{none}");
    }

    #[test]
    fn retry_schedules_are_pairs_of_durations() {
        let args = RetryArgs::parse(quote!(
            schedule = [("100ms", "50ms"), (1, "2s")],
            deadline = "1m",
            finally = Wait
        ))
        .unwrap();
        let steps = args.schedule.unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(steps[1].0.as_millis(), 1000);
        assert_eq!(args.finally, Finally::Wait);
        for bad in [
            quote!(schedule = []),
            quote!(schedule = [("0s", "1s")]),
            quote!(schedule = [(None, "1s")]),
            quote!(schedule = [("1s")]),
            quote!(watcher = pool),
        ] {
            assert!(RetryArgs::parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
