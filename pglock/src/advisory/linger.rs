//! Locks that outlive their body for `min_hold`: held in the background, checked every
//! heartbeat, released when the hold is over (or at once, by [`drain`]).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::guard::AdvisoryGuard;
use super::session::{beat, end_transaction};
use crate::Error;
use crate::handle::CloseUnlessKept;
use crate::race::{Either::*, race};

/// A lock kept past its body.
pub(super) enum Lingering {
    /// A session-level lock on a connection pglock owns.
    Session(AdvisoryGuard<'static>),
    /// A transaction-level lock in pglock's own transaction, to end with `commit`.
    Transaction { conn: CloseUnlessKept, commit: bool },
}

impl Lingering {
    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Lingering::Session(guard) => guard,
            Lingering::Transaction { conn, .. } => conn.conn(),
        }
    }

    async fn end(self) -> Result<(), Error> {
        match self {
            Lingering::Session(guard) => guard.release().await,
            Lingering::Transaction { mut conn, commit } => {
                end_transaction(&mut conn, commit).await?;
                conn.keep();
                Ok(())
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

/// Keep `lock` for `left`, checking its session every `heartbeat`, then release it.
pub(super) fn linger(what: String, lock: Lingering, left: Duration, heartbeat: Option<Duration>) {
    let mut registry = LINGERING.lock().unwrap_or_else(PoisonError::into_inner);
    let registry = registry.get_or_insert_with(|| Registry {
        drain: watch::channel(0).0,
        tasks: Vec::new(),
    });
    registry.tasks.retain(|task| !task.is_finished());
    let drained = registry.drain.subscribe();
    registry
        .tasks
        .push(tokio::spawn(hold(what, lock, left, heartbeat, drained)));
}

async fn hold(
    what: String,
    mut lock: Lingering,
    left: Duration,
    heartbeat: Option<Duration>,
    mut drained: watch::Receiver<u64>,
) {
    let until = Instant::now() + left;
    let every = heartbeat.unwrap_or(left);
    loop {
        let next = (Instant::now() + every).min(until);
        match race(tokio::time::sleep_until(next), drained.changed()).await {
            // Drained (or the registry is gone): release now.
            Second(_) => break,
            First(()) if Instant::now() >= until => break,
            First(()) => {
                if let Err(error) = beat(lock.conn(), every).await {
                    tracing::warn!(scope = %what, %error, "pglock: a lock held for min_hold was lost with its session before the hold was over");
                    return;
                }
            }
        }
    }
    if let Err(error) = lock.end().await {
        tracing::warn!(scope = %what, %error, "pglock: releasing a lock at the end of its min_hold failed");
    }
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
