//! Locks that outlive their body for `min_hold`: held in the background, checked every
//! heartbeat, released when the hold is over (or at once, by [`drain`]).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::guard::{AdvisoryGuard, Forgotten};
use super::session::{beat, end_transaction};
use crate::LockId;
use crate::handle::CloseUnlessKept;
use crate::race::{Either::*, race};
use crate::telemetry::{self, Holding};

/// A lock kept past its body.
pub(super) enum Lingering {
    /// A session-level lock on a connection pglock owns.
    Session(AdvisoryGuard<'static>),
    /// A transaction-level lock in pglock's own transaction, to end with `commit`.
    Transaction {
        conn: CloseUnlessKept,
        lock: Forgotten,
        commit: bool,
    },
}

impl Lingering {
    fn id(&self) -> &LockId {
        match self {
            Lingering::Session(guard) => guard.id(),
            Lingering::Transaction { lock, .. } => &lock.id,
        }
    }

    /// Its hold, which the lingering task reports from now on.
    fn take_holding(&mut self) -> Option<Holding> {
        match self {
            Lingering::Session(guard) => guard.take_holding(),
            Lingering::Transaction { lock, .. } => lock.take_holding(),
        }
    }

    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Lingering::Session(guard) => guard,
            Lingering::Transaction { conn, .. } => conn.conn(),
        }
    }

    /// Release the lock (`drained`: before the hold is over), and report it.
    async fn end(self, told: telemetry::Lingering, drained: bool) {
        match self {
            Lingering::Session(mut guard) => {
                let ended = guard.unlock().await;
                told.ended(guard.id(), drained, &ended);
            }
            Lingering::Transaction {
                mut conn,
                lock,
                commit,
            } => {
                let ended = end_transaction(&mut conn, commit).await;
                told.ended(&lock.id, drained, &ended);
                if ended.is_ok() {
                    conn.keep();
                }
            }
        }
    }
}

/// The locks lingering now, and the signal that releases them at once.
struct Registry {
    drain: watch::Sender<u64>,
    tasks: Vec<JoinHandle<()>>,
}

static LINGERING: Mutex<Option<Registry>> = Mutex::new(None);

/// Keep `lock`, held for `held` so far, for `left` more, checking its session every
/// `heartbeat`, then release it. The task reports in the current span (the lock's scope's).
pub(super) fn linger(
    mut lock: Lingering,
    held: Duration,
    left: Duration,
    heartbeat: Option<Duration>,
) {
    let holding = lock.take_holding();
    let xact = matches!(lock, Lingering::Transaction { .. });
    let told = telemetry::Lingering::start(lock.id(), xact, holding, held, left);
    let span = tracing::Span::current();
    let mut registry = LINGERING.lock().unwrap_or_else(PoisonError::into_inner);
    let registry = registry.get_or_insert_with(|| Registry {
        drain: watch::channel(0).0,
        tasks: Vec::new(),
    });
    registry.tasks.retain(|task| !task.is_finished());
    let drained = registry.drain.subscribe();
    let held_on = hold(lock, told, left, heartbeat, drained);
    registry
        .tasks
        .push(tokio::spawn(crate::scope::in_span(Some(span), held_on)));
}

async fn hold(
    mut lock: Lingering,
    told: telemetry::Lingering,
    left: Duration,
    heartbeat: Option<Duration>,
    mut drained: watch::Receiver<u64>,
) {
    let until = Instant::now() + left;
    let every = heartbeat.unwrap_or(left);
    let drained = loop {
        let next = (Instant::now() + every).min(until);
        match race(tokio::time::sleep_until(next), drained.changed()).await {
            // Drained (or the registry is gone): release now.
            Second(_) => break true,
            First(()) if Instant::now() >= until => break false,
            First(()) => {
                if let Err(source) = beat(lock.conn(), every).await {
                    // Dropping the lock closes its connection.
                    told.lost(lock.id(), every, &source);
                    return;
                }
            }
        }
    };
    lock.end(told, drained).await;
}

/// Release every lock that is being held past its body for `min_hold` (see
/// [`Advisory::min_hold`](crate::Advisory::min_hold)) now, and return once they are released.
/// Call it on graceful shutdown: a process that exits while holding them loses them with its
/// sessions anyway, but only when the server notices, and without saying so.
///
/// ```no_run
/// # async fn shutdown() {
/// pglock::drain().await;
/// # }
/// ```
pub async fn drain() {
    let tasks = {
        let mut registry = LINGERING.lock().unwrap_or_else(PoisonError::into_inner);
        match registry.as_mut() {
            Some(registry) => {
                registry.drain.send_modify(|generation| *generation += 1);
                std::mem::take(&mut registry.tasks)
            }
            None => Vec::new(),
        }
    };
    for task in tasks {
        let _ = task.await;
    }
}
