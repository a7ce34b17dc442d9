//! Ending a wait that was abandoned on a server that cannot notice it by itself.
//!
//! When the future waiting for a lock on a connection pglock owns is dropped, pglock closes the
//! connection. From Postgres 14 on, `client_connection_check_interval` (which the wait turns on)
//! makes the waiting backend notice the closed socket and give up. Postgres 13 has no such
//! setting: the backend would keep waiting, get the lock when its holder lets go, and only then
//! find out that nobody is listening (and release it as it exits).
//!
//! So on those servers the wait's statement carries a comment with a tag unique to this wait, and dropping the wait sends, from a short-lived connection of its own, a
//! `pg_cancel_backend` to whichever backend runs a statement with that tag. Cancelling ends the
//! wait; the backend then finds the socket closed and exits. This costs nothing while nobody
//! drops a wait: the comment is a few bytes of the one message the wait sends anyway.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};

/// How often, and how many times, the canceller looks for the abandoned statement. It may not
/// have reached the server yet when the wait is dropped; after this long it never will (the
/// socket it was sent on is closed).
const LOOK_EVERY: Duration = Duration::from_millis(50);
const LOOKS: u32 = 40;

/// The comment that marks a tagged statement.
pub(super) fn comment(tag: u64) -> String {
    format!("/* pglock wait {tag:016x} */")
}

/// Cancels its wait's statement on the server if dropped while armed.
pub(super) struct CancelOnDrop {
    armed: Option<PgPool>,
    tag: u64,
}

impl CancelOnDrop {
    /// Arm a canceller for a wait on a connection of `pool`, with a fresh tag.
    pub(super) fn arm(pool: PgPool) -> Self {
        CancelOnDrop {
            armed: Some(pool),
            tag: fresh_tag(),
        }
    }

    pub(super) fn tag(&self) -> u64 {
        self.tag
    }

    /// The wait ended by itself: there is nothing to cancel.
    pub(super) fn disarm(mut self) {
        self.armed = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(pool) = self.armed.take() else {
            return;
        };
        let tag = self.tag;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(cancel(pool, tag));
            }
            Err(_) => tracing::warn!(
                "pglock: a lock wait was dropped outside a tokio runtime on a server without \
                 client_connection_check_interval; its backend waits until the lock is free"
            ),
        }
    }
}

/// A tag no other wait has, in this process or (with overwhelming likelihood) any other:
/// std's `RandomState` is seeded from the OS once per thread, and the counter tells apart the
/// waits of one thread.
fn fresh_tag() -> u64 {
    static WAITS: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(WAITS.fetch_add(1, Ordering::Relaxed))
}

async fn cancel(pool: PgPool, tag: u64) {
    if let Err(error) = try_cancel(&pool, tag).await {
        tracing::warn!(%error, "pglock: could not cancel an abandoned lock wait; its backend waits until the lock is free");
    }
}

async fn try_cancel(pool: &PgPool, tag: u64) -> Result<(), sqlx::Error> {
    // Not a pool connection: the pool may be full, and this must not wait behind its users.
    let mut conn = PgConnection::connect_with(&pool.connect_options()).await?;
    // A plain-text statement, not a prepared one: through a transaction pooler (PgBouncer
    // before 1.21) prepared statements fail, and this must work there too. The tag is our own
    // hex digits, so it is safe to write out.
    let look = format!(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
         WHERE pid <> pg_backend_pid() AND strpos(query, '{}') > 0",
        comment(tag)
    );
    for _ in 0..LOOKS {
        let rows = sqlx::raw_sql(AssertSqlSafe(look.as_str()))
            .fetch_all(&mut conn)
            .await?;
        let cancelled = rows.iter().any(|row| row.try_get(0).unwrap_or(false));
        if cancelled {
            break;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
    conn.close().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_differ() {
        let tags: std::collections::HashSet<u64> = (0..1000).map(|_| fresh_tag()).collect();
        assert_eq!(tags.len(), 1000);
        assert_eq!(comment(0xab), "/* pglock wait 00000000000000ab */");
    }
}
