//! What pglock tells a `tracing` subscriber and a `metrics` recorder: every span, event and
//! metric it emits is written here, so their names live in one place (and in the table of the
//! crate docs' [Observing pglock](crate#observing-pglock)).
//!
//! Nothing here costs anything measurable when nobody listens: each event is a `tracing` macro
//! whose fields are evaluated only once a subscriber has said it wants the event (a load of the
//! callsite's cached interest otherwise); field values are references formatted lazily (`%`),
//! never `format!`ed up front, and no event sends a statement. The only work done regardless is
//! reading the clock around an acquisition, a hold and a leader's campaign and term, which the
//! `*_ms` fields (and the histograms) need.
//!
//! Metrics go through the [`metrics`](https://docs.rs/metrics) facade, behind the `metrics`
//! feature: with it off, none of this module's metric code is compiled.

use std::fmt;
use std::time::{Duration, Instant};

use tracing::Span;

use crate::advisory::Mode;
use crate::{Error, LockId, LockTarget, Wait};

/// The `tracing` target of every span and event pglock emits: filter with `pglock=debug`
/// (`RUST_LOG=pglock=debug`), or turn pglock off with `pglock=off`.
pub const TARGET: &str = "pglock";

/// The names of the metrics pglock records with the `metrics` feature (see
/// [Observing pglock](crate#observing-pglock) for their labels).
pub mod names {
    /// Counter: acquisitions of advisory locks, labelled by `outcome` (`acquired`, `busy`,
    /// `timed_out`, `deadlock`, `standby`, `error`), `kind` and `function`.
    pub const ACQUISITIONS: &str = "pglock_acquisitions_total";
    /// Counter: locks found lost (by the heartbeat, or when released), labelled by `kind`
    /// and `function`.
    pub const LOST: &str = "pglock_lost_total";
    /// Counter: sessions prioritize signalled, labelled by `signal` (`terminate`, `cancel`).
    pub const PRIORITIZE_SIGNALS: &str = "pglock_prioritize_signals_total";
    /// Histogram, in seconds: how long acquisitions waited, labelled as
    /// [`ACQUISITIONS`].
    pub const WAIT_SECONDS: &str = "pglock_wait_seconds";
    /// Histogram, in seconds: how long locks were held, labelled by `kind` and `function`.
    pub const HOLD_SECONDS: &str = "pglock_hold_seconds";
    /// Gauge: advisory locks this process holds now, labelled by `kind` and `function`. A lock
    /// kept past its body for `min_hold` counts until it is really released.
    pub const LOCKS_HELD: &str = "pglock_locks_held";
    /// Counter: leader elections this process won, labelled by `clean` (`true` when the
    /// previous leader stepped down and said so, `false` after a grace period).
    pub const LEADER_ELECTIONS: &str = "pglock_leader_elections_total";
    /// Counter: leaderships this process lost with their session (while leading, or during
    /// the grace period before it).
    pub const LEADER_LOST: &str = "pglock_leader_lost_total";
    /// Gauge: leaderships this process holds now with their task running (`1` on the leader
    /// of one election, `0` elsewhere).
    pub const LEADING: &str = "pglock_leading";
}

/// Label each metric with the lock's name too (a `lock` label), or stop doing so; off by
/// default.
///
/// Every distinct set of labels is a time series of its own in Prometheus (and most other
/// backends), kept in memory by the exporter for as long as the process lives. The default
/// labels are bounded by the code: one `function` per attributed function, two `kind`s, six
/// `outcome`s. A lock's name is not: `format!("tenant-{id}")` makes one series per tenant, and
/// a process that locks per tenant, per order or per user grows its exporter's memory, and its
/// backend's bill, without bound. Turn this on only where lock names come from a small fixed
/// set.
///
/// ```
/// pglock::telemetry::set_lock_labels(true);
/// # pglock::telemetry::set_lock_labels(false);
/// ```
#[cfg(feature = "metrics")]
pub fn set_lock_labels(on: bool) {
    metered::LOCK_LABELS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `span`, or, when no subscriber wants it, no span at all.
///
/// A span nobody listens to still keeps its metadata so that, with `tracing`'s `log` feature on
/// (sqlx turns it on), entering and leaving it can be written to the `log` crate: a check of
/// `log`'s level at each poll of each scope's future. Without a `tracing` subscriber that is the
/// whole cost of pglock's spans, so they are dropped (the events inside still reach `log`).
fn wanted(span: Span) -> Option<Span> {
    (!span.is_disabled()).then_some(span)
}

/// Whether a span at `level` could be seen at all: by a `tracing` subscriber (the global level
/// filter, the first check `tracing`'s span macros make), or by a `log` logger (a disabled span
/// is written to `log` when it is made, through `tracing`'s `log` feature, if `log`'s level
/// allows). When neither could, the span macro would only build its fields to find that out:
/// some 200 instructions per scope, on the path the attributes must keep as cheap as the
/// runtime calls.
#[inline]
fn could_see(level: tracing::Level) -> bool {
    let to_log = match level {
        tracing::Level::ERROR => log::Level::Error,
        tracing::Level::WARN => log::Level::Warn,
        tracing::Level::INFO => log::Level::Info,
        tracing::Level::DEBUG => log::Level::Debug,
        tracing::Level::TRACE => log::Level::Trace,
    };
    (level <= tracing::level_filters::STATIC_MAX_LEVEL
        && level <= tracing::level_filters::LevelFilter::current())
        || to_log <= log::max_level()
}

/// The span around an advisory lock's scope (an attribute's call, `scope`, `run`).
#[inline]
pub(crate) fn advisory_span(
    id: &LockId,
    function: Option<&str>,
    mode: Mode,
    wait: Wait,
) -> Option<Span> {
    if !could_see(tracing::Level::INFO) {
        return None;
    }
    advisory_span_seen(id, function, mode, wait)
}

/// [`advisory_span`] for a listener: out of line, off the path of a process nobody watches.
#[cold]
#[inline(never)]
fn advisory_span_seen(id: &LockId, function: Option<&str>, mode: Mode, wait: Wait) -> Option<Span> {
    wanted(tracing::info_span!(
        target: "pglock",
        "pglock::advisory",
        lock = %id,
        function,
        shared = mode.shared,
        xact = mode.xact,
        wait = %WaitField(wait),
    ))
}

/// The span around a lock timeout's scope.
pub(crate) fn timeout_span(limit: Option<Duration>) -> Option<Span> {
    if !could_see(tracing::Level::DEBUG) {
        return None;
    }
    wanted(tracing::debug_span!(
        target: "pglock",
        "pglock::timeout",
        lock_timeout_ms = limit.map_or(0.0, ms),
    ))
}

/// The span around a prioritize scope.
pub(crate) fn prioritize_span(interval: Duration, signal: crate::Signal) -> Option<Span> {
    if !could_see(tracing::Level::INFO) {
        return None;
    }
    wanted(tracing::info_span!(
        target: "pglock",
        "pglock::prioritize",
        interval_ms = ms(interval),
        signal = ?signal,
    ))
}

/// Milliseconds, with the microseconds as a fraction: what `*_ms` fields hold.
fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A wait as a field: `server_default`, `forever`, `nowait`, or a limit such as `5s`.
struct WaitField(Wait);

impl fmt::Display for WaitField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Wait::ServerDefault => f.write_str("server_default"),
            Wait::Forever => f.write_str("forever"),
            Wait::NoWait => f.write_str("nowait"),
            Wait::Limit(limit) => write!(f, "{limit:?}"),
        }
    }
}

/// An advisory lock being acquired: what the events and metrics of its outcome say about it.
pub(crate) struct Acquiring<'a> {
    id: &'a LockId,
    function: Option<&'a str>,
    mode: Mode,
    started: Instant,
}

impl<'a> Acquiring<'a> {
    /// The acquisition starts now.
    pub(crate) fn start(id: &'a LockId, function: Option<&'a str>, mode: Mode) -> Self {
        Acquiring {
            id,
            function,
            mode,
            started: Instant::now(),
        }
    }

    /// Report the outcome of the acquiring statements: `Ok(pid)` of the session that took the
    /// lock, or why it was not taken. Returns what a held lock reports its end with.
    pub(crate) fn finish(self, outcome: &Result<i32, Error>) -> Option<Holding> {
        let waited = self.started.elapsed();
        let (lock, function) = (self.id, self.function);
        let (shared, xact) = (self.mode.shared, self.mode.xact);
        let waited_ms = ms(waited);
        let outcome_name = match outcome {
            Ok(pid) => {
                tracing::debug!(target: "pglock", %lock, function, shared, xact, pid, waited_ms, "lock acquired");
                "acquired"
            }
            Err(Error::Busy { .. }) => {
                tracing::debug!(target: "pglock", %lock, function, shared, xact, "lock busy: another session holds it");
                "busy"
            }
            Err(Error::LockTimeout { .. }) => {
                tracing::info!(target: "pglock", %lock, function, shared, xact, waited_ms, "lock timed out: still held elsewhere when the wait ran out");
                "timed_out"
            }
            Err(error @ Error::Deadlock { .. }) => {
                tracing::warn!(target: "pglock", %lock, function, shared, xact, waited_ms, %error, "lock wait ended by the server to break a deadlock");
                "deadlock"
            }
            Err(Error::Standby { .. }) => {
                tracing::warn!(target: "pglock", %lock, function, shared, xact, "lock refused: the server is a hot standby");
                "standby"
            }
            Err(error) => {
                tracing::debug!(target: "pglock", %lock, function, shared, xact, waited_ms, %error, "acquiring a lock failed");
                "error"
            }
        };
        #[cfg(feature = "metrics")]
        let labels = metered::labels(lock, function, xact);
        #[cfg(feature = "metrics")]
        metered::acquisition(&labels, outcome_name, waited);
        #[cfg(not(feature = "metrics"))]
        let _ = outcome_name;
        outcome.as_ref().ok().map(|_| {
            #[cfg(feature = "metrics")]
            metered::held(&labels, 1.0);
            Holding {
                since: Instant::now(),
                xact,
                #[cfg(feature = "metrics")]
                labels,
            }
        })
    }
}

/// A lock held: when it was taken, to report how long it was held when it ends. Dropped, it
/// takes the lock out of the `pglock_locks_held` gauge.
#[derive(Debug)]
pub(crate) struct Holding {
    since: Instant,
    xact: bool,
    #[cfg(feature = "metrics")]
    labels: Vec<metrics::Label>,
}

impl Holding {
    /// The lock's guard ended with `ended` (its release, or the end of pglock's transaction).
    pub(crate) fn ended(self, lock: &LockId, ended: &Result<(), Error>) {
        let held_ms = ms(self.since.elapsed());
        let xact = self.xact;
        match ended {
            Ok(()) => {
                tracing::debug!(target: "pglock", %lock, xact, held_ms, "lock released");
            }
            Err(Error::Lost { source, .. }) => {
                tracing::error!(target: "pglock", %lock, xact, held_ms, error = %source, "lock lost: its session was gone when it was released");
                self.count_lost();
            }
            Err(Error::NotHeld { .. }) => {
                tracing::warn!(target: "pglock", %lock, xact, held_ms, "lock not held when released: something else unlocked it");
                self.count_lost();
            }
            Err(Error::SessionMoved {
                locked_on, now_on, ..
            }) => {
                tracing::warn!(target: "pglock", %lock, xact, held_ms, pid = locked_on, now_on, "lock not released: its connection now runs on another server session (a transaction pooler)");
            }
            Err(error) => {
                tracing::warn!(target: "pglock", %lock, xact, held_ms, %error, "releasing a lock failed");
            }
        }
        self.record_hold();
    }

    /// The heartbeat found the lock's session gone (or unanswering) every `every`.
    pub(crate) fn lost_by_heartbeat(self, lock: &LockId, every: Duration, source: &sqlx::Error) {
        let held_ms = ms(self.since.elapsed());
        let heartbeat_ms = ms(every);
        tracing::warn!(target: "pglock", %lock, heartbeat_ms, error = %source, "heartbeat failed");
        tracing::error!(target: "pglock", %lock, xact = self.xact, held_ms, error = %source, "lock lost: the heartbeat found its session gone; the body is dropped");
        self.count_lost();
        self.record_hold();
    }

    /// The guard was dropped while holding: the connection it lived on is closed (or, borrowed,
    /// keeps the lock; the guard warns about that itself).
    pub(crate) fn dropped(self, lock: &LockId) {
        let held_ms = ms(self.since.elapsed());
        tracing::debug!(target: "pglock", %lock, xact = self.xact, held_ms, "lock guard dropped while holding");
        self.record_hold();
    }

    fn count_lost(&self) {
        #[cfg(feature = "metrics")]
        metrics::counter!(names::LOST, self.labels.iter()).increment(1);
    }

    fn record_hold(&self) {
        #[cfg(feature = "metrics")]
        metrics::histogram!(names::HOLD_SECONDS, self.labels.iter())
            .record(self.since.elapsed().as_secs_f64());
    }
}

#[cfg(feature = "metrics")]
impl Drop for Holding {
    fn drop(&mut self) {
        metered::held(&self.labels, -1.0);
    }
}

/// A lock kept past its scope's body for `min_hold` by a background task: what its events and
/// metrics say about it. It carries the lock's [`Holding`], so the lock stays in the
/// `pglock_locks_held` gauge, and its hold is timed, until it is really released.
pub(crate) struct Lingering {
    /// `None` only for a lock whose hold was reported already (never, while it lingers).
    holding: Option<Holding>,
    xact: bool,
    /// How long the lock was held before it began to linger: its body's run.
    before: Duration,
    /// When it began to linger.
    since: Instant,
}

impl Lingering {
    /// The lock, held for `held` so far, is kept in the background for `left` more.
    pub(crate) fn start(
        lock: &LockId,
        xact: bool,
        holding: Option<Holding>,
        held: Duration,
        left: Duration,
    ) -> Self {
        let (held_ms, left_ms, min_hold_ms) = (ms(held), ms(left), ms(held + left));
        tracing::debug!(target: "pglock", %lock, xact, held_ms, left_ms, min_hold_ms, "lock held past its body for min_hold, in the background");
        Lingering {
            holding,
            xact,
            before: held,
            since: Instant::now(),
        }
    }

    /// The lock was released with `ended`: at the end of the hold, or before it if `drained`.
    pub(crate) fn ended(self, lock: &LockId, drained: bool, ended: &Result<(), Error>) {
        let lingered = self.since.elapsed();
        let (held_ms, lingered_ms) = (ms(self.before + lingered), ms(lingered));
        let xact = self.xact;
        match ended {
            Ok(()) if drained => {
                tracing::info!(target: "pglock", %lock, xact, held_ms, lingered_ms, "lock released before the end of its min_hold: pglock::drain() was called");
            }
            Ok(()) => {
                tracing::debug!(target: "pglock", %lock, xact, held_ms, lingered_ms, "lock released at the end of its min_hold");
            }
            Err(Error::Lost { source, .. }) => {
                tracing::error!(target: "pglock", %lock, xact, held_ms, lingered_ms, error = %source, "lock lost: its session was gone when its min_hold ended");
                self.count_lost();
            }
            Err(Error::NotHeld { .. }) => {
                tracing::warn!(target: "pglock", %lock, xact, held_ms, lingered_ms, "lock not held at the end of its min_hold: something else unlocked it");
                self.count_lost();
            }
            Err(error) => {
                tracing::warn!(target: "pglock", %lock, xact, held_ms, lingered_ms, %error, "releasing a lock at the end of its min_hold failed");
            }
        }
        self.record_hold();
    }

    /// The heartbeat (checking every `every`) found the lock's session gone during the hold.
    pub(crate) fn lost(self, lock: &LockId, every: Duration, source: &sqlx::Error) {
        let lingered = self.since.elapsed();
        let (held_ms, lingered_ms, heartbeat_ms) =
            (ms(self.before + lingered), ms(lingered), ms(every));
        tracing::error!(target: "pglock", %lock, xact = self.xact, held_ms, lingered_ms, heartbeat_ms, error = %source, "lock lost during its min_hold: the heartbeat found its session gone");
        self.count_lost();
        self.record_hold();
    }

    fn count_lost(&self) {
        if let Some(holding) = &self.holding {
            holding.count_lost();
        }
    }

    fn record_hold(&self) {
        if let Some(holding) = &self.holding {
            holding.record_hold();
        }
    }
}

/// A scope's function returned its "skipped" value (or `try_scope`/`try_run` returned
/// `Ok(None)`): the lock was held elsewhere.
///
/// Who holds it is not reported: the acquiring statement learns only that the lock is taken,
/// and asking `pg_locks` would cost a round trip on every skip (and race the holder's release).
/// [`locks()`](crate::locks) or the `pglock` command tell who holds it.
pub(crate) fn skipped(error: &Error) {
    let target = match error {
        Error::Busy { target } | Error::LockTimeout { target, .. } => target,
        _ => return,
    };
    if let LockTarget::Advisory(lock) = target {
        tracing::info!(target: "pglock", %lock, "skipped: the lock is held by another session");
    }
}

/// A table lock's outcome (`LOCK TABLE`).
pub(crate) fn table_lock(
    target: &LockTarget,
    mode: crate::LockMode,
    started: Instant,
    outcome: &Result<(), Error>,
) {
    let tables = target;
    let waited_ms = ms(started.elapsed());
    match outcome {
        Ok(()) => {
            tracing::debug!(target: "pglock", %tables, mode = %mode, waited_ms, "tables locked");
        }
        Err(Error::Busy { .. }) => {
            tracing::debug!(target: "pglock", %tables, mode = %mode, "tables busy: another session holds a conflicting lock");
        }
        Err(Error::LockTimeout { .. }) => {
            tracing::info!(target: "pglock", %tables, mode = %mode, waited_ms, "table lock timed out");
        }
        Err(error @ Error::Deadlock { .. }) => {
            tracing::warn!(target: "pglock", %tables, mode = %mode, waited_ms, %error, "table lock wait ended by the server to break a deadlock");
        }
        Err(error) => {
            tracing::debug!(target: "pglock", %tables, mode = %mode, %error, "locking tables failed");
        }
    }
}

/// A lock timeout scope set `lock_timeout` (to `setting` ms, `0` for none), replacing `previous`.
pub(crate) fn timeout_set(setting: &str, previous: &str, local: bool) {
    tracing::debug!(target: "pglock", lock_timeout = setting, previous, local, "lock_timeout set");
}

/// A lock timeout scope put `lock_timeout` back to `restored`.
pub(crate) fn timeout_restored(restored: &str, outcome: &Result<(), Error>) {
    match outcome {
        Ok(()) => {
            tracing::debug!(target: "pglock", lock_timeout = restored, "lock_timeout restored");
        }
        Err(error) => {
            tracing::warn!(target: "pglock", lock_timeout = restored, %error, "restoring lock_timeout failed");
        }
    }
}

/// Prioritize signalled a session blocking the one it protects.
pub(crate) struct Victim<'a> {
    /// The signalled backend's pid.
    pub(crate) pid: i32,
    /// Its role.
    pub(crate) user: Option<&'a str>,
    /// Its `application_name`.
    pub(crate) application_name: Option<&'a str>,
    /// Its `state` (`active`, `idle in transaction`, ...).
    pub(crate) state: Option<&'a str>,
    /// How long its transaction (or, outside one, its statement) had run, in seconds.
    pub(crate) age_seconds: Option<f64>,
    /// The first 200 characters of its current (or last) query.
    pub(crate) query: Option<&'a str>,
}

/// Report a session that prioritize signalled (or, in a dry run, would have).
pub(crate) fn signalled(protected: i32, signal: crate::Signal, dry_run: bool, victim: &Victim<'_>) {
    let signal_name = match signal {
        crate::Signal::Terminate => "terminate",
        crate::Signal::Cancel => "cancel",
    };
    tracing::info!(
        target: "pglock",
        protected,
        signal = signal_name,
        dry_run,
        victim_pid = victim.pid,
        user = victim.user,
        application_name = victim.application_name,
        state = victim.state,
        duration_ms = victim.age_seconds.map(|seconds| seconds * 1000.0),
        query = victim.query,
        "prioritize signalled a session blocking its scope",
    );
    #[cfg(feature = "metrics")]
    if !dry_run {
        metrics::counter!(names::PRIORITIZE_SIGNALS, "signal" => signal_name).increment(1);
    }
}

/// A campaign in a leader election won the lock: what the events and metrics of its term say
/// about it. While its task runs, it counts in the `pglock_leading` gauge.
pub(crate) struct Elected {
    /// The session holding the lock.
    pid: i32,
    clean: bool,
    /// When the task started, once it has.
    leading: Option<Instant>,
    #[cfg(feature = "metrics")]
    labels: Vec<metrics::Label>,
}

impl Elected {
    /// The session `pid` was granted `lock` after campaigning for `campaigned`; `clean` says
    /// whether the previous leader handed over cleanly.
    pub(crate) fn won(lock: &LockId, pid: i32, clean: bool, campaigned: Duration) -> Self {
        let campaigned_ms = ms(campaigned);
        tracing::info!(target: "pglock", %lock, pid, clean, campaigned_ms, "leadership won");
        #[cfg(feature = "metrics")]
        let labels = metered::leader_labels(lock);
        #[cfg(feature = "metrics")]
        metered::elected(&labels, clean);
        Elected {
            pid,
            clean,
            leading: None,
            #[cfg(feature = "metrics")]
            labels,
        }
    }

    /// The previous leader did not hand over cleanly: its task may still run for `grace`.
    pub(crate) fn waits_out(&self, lock: &LockId, grace: Duration) {
        let grace_ms = ms(grace);
        tracing::info!(target: "pglock", %lock, pid = self.pid, grace_ms, "waiting out the grace period before leading: the previous leader did not hand over cleanly");
    }

    /// The leader's task starts.
    pub(crate) fn leads(&mut self, lock: &LockId) {
        tracing::debug!(target: "pglock", %lock, pid = self.pid, clean = self.clean, "leading: the task starts");
        self.leading = Some(Instant::now());
        #[cfg(feature = "metrics")]
        metrics::gauge!(names::LEADING, self.labels.iter()).increment(1.0);
    }

    /// The heartbeat found the session holding the lock gone: the task (if it ran) is dropped,
    /// and the campaign goes on.
    pub(crate) fn lost(&mut self, lock: &LockId, error: &Error) {
        let pid = self.pid;
        match self.stop_leading() {
            Some(led) => {
                let led_ms = ms(led);
                tracing::error!(target: "pglock", %lock, pid, led_ms, %error, "leadership lost: its session is gone; the task is dropped, campaigning again");
            }
            None => {
                tracing::warn!(target: "pglock", %lock, pid, %error, "leadership lost during the grace period, before the task started; campaigning again");
            }
        }
        #[cfg(feature = "metrics")]
        metrics::counter!(names::LEADER_LOST, self.labels.iter()).increment(1);
    }

    /// The leader stepped down: the task was dropped, the other candidates told (if `told` is
    /// `Ok`) and the lock released (if `unlocked` is).
    pub(crate) fn stepped_down(
        &mut self,
        lock: &LockId,
        told: &Result<(), sqlx::Error>,
        unlocked: &Result<(), sqlx::Error>,
    ) {
        let (pid, notified) = (self.pid, told.is_ok());
        let led_ms = self.stop_leading().map_or(0.0, ms);
        match told.as_ref().and(unlocked.as_ref()) {
            Ok(_) => {
                tracing::info!(target: "pglock", %lock, pid, led_ms, notified, "stepped down: the next leader starts at once");
            }
            Err(error) => {
                tracing::warn!(target: "pglock", %lock, pid, led_ms, notified, %error, "stepping down cleanly failed; the lock goes with the session");
            }
        }
    }

    /// The task no longer runs: how long it ran, if it did.
    fn stop_leading(&mut self) -> Option<Duration> {
        let since = self.leading.take()?;
        #[cfg(feature = "metrics")]
        metrics::gauge!(names::LEADING, self.labels.iter()).decrement(1.0);
        Some(since.elapsed())
    }
}

impl Drop for Elected {
    /// A term dropped without an end reported (its campaign was aborted) stops leading too.
    fn drop(&mut self) {
        self.stop_leading();
    }
}

/// Campaigning for `lock` failed (connecting, listening, or waiting for the lock): the
/// campaign tries again in `retry`.
pub(crate) fn campaign_failed(lock: &LockId, error: &Error, retry: Duration) {
    let retry_ms = ms(retry);
    tracing::warn!(target: "pglock", %lock, retry_ms, %error, "campaigning for leadership failed; retrying");
}

/// A campaign stopped while its session `pid` waited for `lock`, and that wait could not be
/// cancelled: the lock may be granted to a session nobody uses until its pool closes it.
pub(crate) fn wait_not_cancelled(lock: &LockId, pid: i32, error: &sqlx::Error) {
    tracing::warn!(target: "pglock", %lock, pid, %error, "could not cancel the abandoned wait of a stopped campaign for leadership");
}

#[cfg(feature = "metrics")]
mod metered {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use metrics::Label;

    use super::names;
    use crate::LockId;

    /// Whether metrics carry a `lock` label (see [`set_lock_labels`](super::set_lock_labels)).
    pub(super) static LOCK_LABELS: AtomicBool = AtomicBool::new(false);

    /// The labels of a lock's metrics: bounded by the code unless lock labels are on.
    pub(super) fn labels(lock: &LockId, function: Option<&str>, xact: bool) -> Vec<Label> {
        let kind = if xact { "xact" } else { "session" };
        let mut labels = vec![
            Label::new("kind", kind),
            Label::new("function", function.unwrap_or("").to_owned()),
        ];
        if LOCK_LABELS.load(Ordering::Relaxed) {
            labels.push(Label::new("lock", lock.name().to_owned()));
        }
        labels
    }

    pub(super) fn acquisition(labels: &[Label], outcome: &'static str, waited: Duration) {
        let mut labels = labels.to_vec();
        labels.push(Label::new("outcome", outcome));
        metrics::counter!(names::ACQUISITIONS, labels.iter()).increment(1);
        metrics::histogram!(names::WAIT_SECONDS, labels).record(waited.as_secs_f64());
    }

    pub(super) fn held(labels: &[Label], delta: f64) {
        metrics::gauge!(names::LOCKS_HELD, labels.iter()).increment(delta);
    }

    /// The labels of a leader election's metrics: none, unless lock labels are on.
    pub(super) fn leader_labels(lock: &LockId) -> Vec<Label> {
        if LOCK_LABELS.load(Ordering::Relaxed) {
            vec![Label::new("lock", lock.name().to_owned())]
        } else {
            Vec::new()
        }
    }

    pub(super) fn elected(labels: &[Label], clean: bool) {
        let clean = if clean { "true" } else { "false" };
        let mut labels = labels.to_vec();
        labels.push(Label::new("clean", clean));
        metrics::counter!(names::LEADER_ELECTIONS, labels).increment(1);
    }
}
