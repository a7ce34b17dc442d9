//! Postgres locks for sqlx and tokio: a port of Python's
//! [django-pglock](https://django-pglock.readthedocs.io).
//!
//! ```no_run
//! use pglock::Error;
//! use sqlx::{PgConnection, PgPool};
//!
//! // Every replica runs the nightly job; one sends the digest, the others skip.
//! #[pglock::advisory(timeout = "0s", side_effect = Skip)]
//! async fn send_daily_digest(pool: &PgPool) -> Result<(), Error> {
//!     sqlx::query("UPDATE digests SET sent_at = now()").execute(pool).await?;
//!     Ok(())
//! }
//!
//! // End whatever blocks the migration, and never wait more than 5 s for a lock.
//! #[pglock::prioritize]
//! #[pglock::timeout("5s")]
//! async fn migrate(conn: &mut PgConnection, pool: &PgPool) -> Result<(), Error> {
//!     let _ = pool; // prioritize's background connection uses this pool's settings
//!     sqlx::query("ALTER TABLE orders ADD COLUMN note text").execute(&mut *conn).await?;
//!     Ok(())
//! }
//! ```
//!
//! # Attributes
//! [`macro@advisory`], [`macro@timeout`], [`macro@prioritize`] and [`macro@retry_locks`] wrap an
//! `async fn`: the lock is
//! taken (the timeout set, the blockers watched) before its body runs and released after,
//! however the body ends. Misuse is a compile error that says what to do instead. Each attribute
//! is sugar for the runtime API below, which its docs show side by side.
//!
//! # Advisory locks
//! [`advisory`](fn@advisory) builds a lock on an id: a string (hashed exactly as django-pglock
//! hashes it, so Rust and Django services naming the same lock exclude each other), an `i64`, or
//! an `(i32, i32)` pair. Options: [`shared`](Advisory::shared), [`xact`](Advisory::xact)
//! (transaction-level), and how long to wait ([`timeout`](Advisory::timeout),
//! [`nowait`](Advisory::nowait), [`wait_forever`](Advisory::wait_forever), or by default the
//! server's `lock_timeout`). Taking a free lock costs one round trip in every mode, and a timed
//! wait leaves no `lock_timeout` behind on the connection.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
//! // Wait at most two seconds, then hold the lock until the guard is released.
//! let guard = pglock::advisory(42_i64)
//!     .timeout(Duration::from_secs(2))
//!     .acquire(pool)
//!     .await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! Take it through any [`Db`] handle: `&PgPool`, `&mut PgConnection`,
//! `&mut PoolConnection<Postgres>` or `&mut Transaction<'_, Postgres>`. Through a pool, the lock
//! keeps one connection checked out for as long as it is held.
//!
//! # Lock timeouts, table locks, prioritize
//! * [`timeout`](fn@timeout) runs code with Postgres' `lock_timeout` set on its session, nested
//!   scopes restoring what they found.
//! * [`lock_table`] runs `LOCK TABLE` in any of the eight [`LockMode`]s, with quoted names and the
//!   same waiting options, keeping the caller's transaction usable when the lock is not taken.
//! * [`statement_timeout`], [`idle_in_transaction_session_timeout`] and [`transaction_timeout`]
//!   are scopes on the same footing, one [`Timeout`] type parameterised by the setting.
//! * [`prioritize`](fn@prioritize) runs code while a background task ends the sessions that
//!   block it; it can rehearse ([`Prioritize::dry_run`]), cancel before terminating, and spare
//!   sessions that wait themselves.
//! * [`retry_locks`](fn@retry_locks) (and [`macro@retry_locks`]) runs a migration step in a
//!   transaction per attempt under a short `lock_timeout`, rolling back and retrying on an
//!   escalating schedule, so that the application never queues behind it for long.
//!
//! # Jobs, singletons, lock loss
//! * [`Advisory::run`] runs a future under the lock on a connection pglock owns, checked by a
//!   [heartbeat](Advisory::heartbeat): when the holding session is gone the future is dropped
//!   and the call returns [`Error::Lost`] (see [Lock loss](Advisory#lock-loss)).
//! * [`Advisory::min_hold`] keeps a lock past a short body, so replicas whose schedules fire a
//!   little apart run a job once per tick; [`drain`] releases such locks on shutdown.
//! * [`leader`] elects one replica to run a task, and hands over in milliseconds when it goes.
//!
//! # Inspecting locks
//! [`locks`] and [`blocked_locks`] list `pg_locks` joined to `pg_stat_activity` as typed rows
//! (advisory locks with their decoded key, and the `/*pga_context=...*/` comment that
//! django-pgactivity attaches to queries), filter them, and terminate or cancel the backends they
//! name.
//!
//! | django-pglock | pglock |
//! |---|---|
//! | `@pglock.advisory(...)` decorator | [`macro@advisory`] |
//! | `with advisory(id) as acquired:` (Return) | [`Advisory::try_acquire`] → `Option<guard>`, [`Advisory::try_scope`] |
//! | `advisory(id, side_effect=Raise)` | [`Advisory::acquire`] → guard or [`Error`], [`Advisory::scope`] |
//! | `timeout=None` / `0` / `>0` / unset | [`Wait::Forever`] / [`Wait::NoWait`] / [`Wait::Limit`] / [`Wait::ServerDefault`] |
//! | `advisory_id(id)` | [`advisory_id`] (unsigned halves, as `pg_locks` shows them) |
//! | `pglock.model(...)` | [`lock_table`] |
//! | `pglock.timeout(...)` | [`timeout`](fn@timeout), [`macro@timeout`] |
//! | `pglock.prioritize(...)` | [`prioritize`](fn@prioritize), [`macro@prioritize`] |
//! | `PGLock`, `BlockedPGLock` | [`locks`], [`blocked_locks`] → [`PgLock`], [`BlockedPgLock`] |
//!
//! # Observing pglock
//! pglock reports through [`tracing`](https://docs.rs/tracing) (target `pglock`) and, with the
//! `metrics` feature, through the [`metrics`](https://docs.rs/metrics) facade. One line shows
//! its events with `tracing-subscriber` (or, with its `env-filter` feature,
//! `fmt().with_env_filter("info,pglock=debug").init()`):
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//!
//! let filter: tracing_subscriber::filter::Targets = "info,pglock=debug".parse().unwrap();
//! tracing_subscriber::registry().with(tracing_subscriber::fmt::layer()).with(filter).init();
//! ```
//!
//! Every scope (an attribute's call, [`Advisory::scope`], [`Advisory::run`],
//! [`LockTimeout::scope`], [`Prioritize::scope`]) runs in a span, and the body's own events
//! nest inside it: `pglock::advisory` (fields `lock`, `function`, `shared`, `xact`, `wait`),
//! `pglock::timeout` (`lock_timeout_ms`, DEBUG) and `pglock::prioritize` (`interval_ms`,
//! `signal`). The events:
//!
//! | event (message) | level | fields |
//! |---|---|---|
//! | `lock acquired` | DEBUG | `lock`, `function`, `shared`, `xact`, `pid` (the session that holds it), `waited_ms` |
//! | `lock busy: another session holds it` (a no-wait try) | DEBUG | `lock`, `function`, `shared`, `xact` |
//! | `skipped: the lock is held by another session` (`Skip`, `try_scope`, `try_run`) | INFO | `lock` |
//! | `lock timed out` | INFO | `lock`, `function`, `shared`, `xact`, `waited_ms` |
//! | `lock wait ended by the server to break a deadlock` | WARN | `lock`, `function`, `shared`, `xact`, `waited_ms`, `error` |
//! | `lock refused: the server is a hot standby` | WARN | `lock`, `function`, `shared`, `xact` |
//! | `acquiring a lock failed` (any other error) | DEBUG | `lock`, `function`, `shared`, `xact`, `waited_ms`, `error` |
//! | `lock released` | DEBUG | `lock`, `xact`, `held_ms` |
//! | `lock guard dropped while holding` | DEBUG | `lock`, `xact`, `held_ms` |
//! | `heartbeat failed` | WARN | `lock`, `heartbeat_ms`, `error` |
//! | `lock lost: ...` (by the heartbeat, or found at release) | ERROR | `lock`, `xact`, `held_ms`, `error` |
//! | `lock not held when released` | WARN | `lock`, `xact`, `held_ms` |
//! | `lock not released: its connection now runs on another server session` | WARN | `lock`, `xact`, `held_ms`, `pid`, `now_on` |
//! | `releasing a lock failed` | WARN | `lock`, `xact`, `held_ms`, `error` |
//! | `lock held past its body for min_hold, in the background` | DEBUG | `lock`, `xact`, `held_ms` (the body's run), `left_ms` (the hold left), `min_hold_ms` |
//! | `lock released at the end of its min_hold` | DEBUG | `lock`, `xact`, `held_ms`, `lingered_ms` (held in the background) |
//! | `lock released before the end of its min_hold: pglock::drain() was called` | INFO | `lock`, `xact`, `held_ms`, `lingered_ms` |
//! | `lock lost during its min_hold: the heartbeat found its session gone` | ERROR | `lock`, `xact`, `held_ms`, `lingered_ms`, `heartbeat_ms`, `error` |
//! | `lock lost: its session was gone when its min_hold ended` / `lock not held at the end of its min_hold` / `releasing a lock at the end of its min_hold failed` | ERROR / WARN / WARN | `lock`, `xact`, `held_ms`, `lingered_ms`, `error` (not when not held) |
//! | `leadership won` | INFO | `lock`, `pid` (the session holding it), `clean` (the previous leader stepped down and said so), `campaigned_ms` (since campaigning began, or the last term ended) |
//! | `waiting out the grace period before leading` (after an unclean hand-over) | INFO | `lock`, `pid`, `grace_ms` |
//! | `leading: the task starts` | DEBUG | `lock`, `pid`, `clean` |
//! | `leadership lost: its session is gone; the task is dropped, campaigning again` | ERROR | `lock`, `pid`, `led_ms`, `error` |
//! | `leadership lost during the grace period, before the task started` | WARN | `lock`, `pid`, `error` |
//! | `stepped down: the next leader starts at once` | INFO | `lock`, `pid`, `led_ms` (`0` during the grace period), `notified` (the candidates were told) |
//! | `stepping down cleanly failed; the lock goes with the session` | WARN | `lock`, `pid`, `led_ms`, `notified`, `error` |
//! | `campaigning for leadership failed; retrying` | WARN | `lock`, `retry_ms`, `error` |
//! | `could not cancel the abandoned wait of a stopped campaign for leadership` | WARN | `lock`, `pid`, `error` |
//! | `tables locked` / `tables busy` / `table lock timed out` / `... deadlock` | DEBUG / DEBUG / INFO / WARN | `tables`, `mode`, `waited_ms` |
//! | `lock_timeout set` / `lock_timeout restored` | DEBUG | `lock_timeout` (ms, `0` = none), `previous`, `local` |
//! | `prioritize signalled a session blocking its scope` | INFO | `protected`, `signal` (`terminate`/`cancel`), `victim_pid`, `application_name`, `state`, `duration_ms` (its transaction's, else its statement's age), `query` (its first 200 characters) |
//!
//! `lock` is the lock's name (the string, or the integers written out), `function` the
//! attribute's function path (or [`Advisory::function`]), `wait` one of `server_default`,
//! `forever`, `nowait` or a limit such as `5s`; `*_ms` fields are milliseconds as `f64`.
//! A lock kept for [`min_hold`](Advisory::min_hold) reports its release (or loss) once, with
//! the min_hold events rather than `lock released`, in its scope's span. A leader's events come
//! from its campaign's task, outside any span; `pid` is the backend holding the election's lock.
//! A skip does not name the session holding the lock: the acquiring statement does not learn
//! it, and asking `pg_locks` would cost a round trip on every skip; [`locks()`] and the
//! `pglock` command tell who holds it. prioritize's `query` is the victim's SQL text as
//! `pg_stat_activity` shows it, which may hold literal values: filter `pglock` at WARN where
//! that matters.
//!
//! Nobody listening costs nothing measurable: fields are evaluated only for an enabled event,
//! nothing is formatted or allocated up front, and no event sends a statement (the benchmark's
//! latency rows are the same with no subscriber, with one filtering pglock out, and with the
//! metrics feature and a no-op recorder).
//!
//! With the `metrics` feature (names in [`telemetry::names`]):
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `pglock_acquisitions_total` | counter | `outcome` (`acquired`, `busy`, `timed_out`, `deadlock`, `standby`, `error`), `kind`, `function` |
//! | `pglock_wait_seconds` | histogram | as `pglock_acquisitions_total` |
//! | `pglock_hold_seconds` | histogram | `kind`, `function` |
//! | `pglock_locks_held` | gauge | `kind`, `function` |
//! | `pglock_lost_total` | counter | `kind`, `function` |
//! | `pglock_prioritize_signals_total` | counter | `signal` |
//! | `pglock_leader_elections_total` | counter | `clean` (`true`, `false`) |
//! | `pglock_leader_lost_total` | counter | none |
//! | `pglock_leading` | gauge (leaderships whose task runs here) | none |
//!
//! `kind` is `session` or `xact`; `function` is the attribute's function path (empty for
//! runtime calls without [`Advisory::function`]). A lock kept for `min_hold` stays in
//! `pglock_locks_held` until the background task has released it. The lock's own name is not a
//! label (of any metric, the leader's included) unless
//! `pglock::telemetry::set_lock_labels(true)` says so: names such as `tenant-{id}` would make
//! one time series per tenant, without bound. `tests/examples/metrics.rs` serves them to
//! Prometheus with `metrics-exporter-prometheus`.
//!
//! # Cancel safety
//! Locks taken through a pool are released however their scope ends, a dropped future included:
//! pglock owns that connection and closes it, which ends the server session at once. Borrowed
//! connections cannot be closed or sent a statement from a destructor through sqlx's API; what
//! that means for each handle is spelled out on [`Advisory::acquire`].
//!
//! # Installing, and Cargo features
//! `cargo add pglock`, with your own `sqlx` 0.9 built with `postgres`, `runtime-tokio` and the
//! TLS feature your servers need (pglock enables no TLS: that choice is yours). It enables only
//! sqlx's `postgres` and `runtime-tokio`, and tokio's `rt`, `time` and `sync`. Rust 1.94 or newer
//! (sqlx 0.9's minimum).
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `metrics` | off | lock outcomes recorded through the [`metrics`](https://docs.rs/metrics) facade (see [Observing pglock](#observing-pglock)); pulls in the `metrics` crate |

#![warn(missing_docs)]

mod advisory;
pub mod attribute;
mod default_pool;
mod error;
mod handle;
mod inspect;
mod key;
mod leader;
mod mode;
mod prioritize;
mod race;
mod retry;
mod scope;
mod table;
pub mod telemetry;
mod timeout;
mod unwind;
mod wait;

pub use advisory::{
    Advisory, AdvisoryGuard, DEFAULT_HEARTBEAT, LossSignal, MIN_HEARTBEAT, advisory, drain,
};
pub use default_pool::{default_pool, set_default_pool};
pub use error::{Error, LockTarget};
pub use handle::{Db, Session};
pub use inspect::{
    Activity, BlockedLockQuery, BlockedPgLock, FilterKey, FilterValue, LockQuery, Lookup,
    ParseFilterKeyError, PgLock, Relation, ValueKind, blocked_locks, locks,
};
pub use key::{AdvisoryKey, LockId, advisory_id};
pub use leader::{Leader, Leadership, Status, leader};
pub use mode::{LockMode, ParseLockModeError};
pub use prioritize::{Prioritize, PrioritizeReport, Signal, Signalled, prioritize};
pub use retry::{
    Attempts, DEFAULT_SCHEDULE, Finally, LockTimeoutError, RetryLocks, Step, retry_locks,
};
pub use table::{IntoTables, ParseTableNameError, TableLock, TableName, lock_table};
pub use timeout::{
    IdleInTransactionTimeout, LockTimeout, StatementTimeout, Timeout, TransactionTimeout,
    idle_in_transaction_session_timeout, statement_timeout, timeout, transaction_timeout,
};

/// The Postgres settings a [`Timeout`] scope can set, as types.
pub mod setting {
    pub use crate::timeout::{IdleInTransaction, Lock, Setting, Statement, Transaction};
}
pub use wait::Wait;

#[doc = include_str!("../docs/advisory.md")]
#[doc(inline)]
pub use pglock_macros::advisory;

#[doc = include_str!("../docs/timeout.md")]
#[doc(inline)]
pub use pglock_macros::timeout;

#[doc = include_str!("../docs/retry_locks.md")]
#[doc(inline)]
pub use pglock_macros::retry_locks;

#[doc = include_str!("../docs/prioritize.md")]
#[doc(inline)]
pub use pglock_macros::prioritize;

/// The one door the attributes' generated code goes through: not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::__await_in as await_in;
    pub use crate::attribute::{
        Again, AgainCopy, Caught, Check, DefaultPool, Layer, NotAHandle, Outcome, Policy,
        Unchecked, default_pool, duration, finally_prioritize, lock_id, method_id, probe, raise,
        retry, retry_policy, skip, watcher,
    };
    pub use crate::scope::{Held, Kind};
    pub use crate::unwind::catch_panic;
    pub use crate::{
        Finally, Signal, Step, Wait, advisory, idle_in_transaction_session_timeout, prioritize,
        retry_locks, statement_timeout, timeout, transaction_timeout,
    };
    pub use tracing::Span;
}

/// The workspace README's Rust examples, compiled as doc tests (`cargo test --doc`) so that
/// what users read first cannot drift from the API. Only in the workspace: a published package
/// has its README beside `src/`, and doc tests are never run from there.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct Readme;
