//! Signalling the backends a query finds: django-pglock's `terminate_activity`,
//! `cancel_activity` and their `_blocking_` forms.

use sqlx::{PgConnection, Row};

use super::filters::{Bound, Filters};
use super::query::{BlockedLockQuery, LockQuery};
use super::sql::{self, Statement};
use crate::{Db, Error, Signal};

impl LockQuery {
    /// End the sessions of the backends holding or waiting for the matching locks
    /// (`pg_terminate_backend`): their transactions roll back, their locks go, and their
    /// clients see SQLSTATE 57P01. Returns the pids signalled, distinct and sorted.
    ///
    /// The backends are the ones [`fetch`](LockQuery::fetch) would list (the limit included),
    /// found and signalled in one statement. Never signalled: the session running the
    /// statement (on a pool, the connection it ran on; your other sessions are not special),
    /// prepared transactions (pid 0, which have no backend), and backends outside the current
    /// database. A backend that exits before its signal arrives is not in the result.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// // End whoever holds the nightly job's lock.
    /// let ended = pglock::locks().advisory(["nightly-report"]).terminate(pool).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// * [`Error::PermissionDenied`] when the current role may not signal one of the backends:
    ///   signalling needs the backend's role (or membership in it), or `pg_signal_backend`, and
    ///   a superuser's backend only a superuser may signal. The whole call fails, and normally
    ///   no backend has been signalled: the signals Postgres is expected to refuse are sent first,
    ///   and the first refusal ends the statement.
    /// * As [`fetch`](LockQuery::fetch) otherwise.
    ///
    /// # Cancel safety
    /// Once the statement has been sent, dropping the future does not stop it: the signals may
    /// or may not have gone out.
    pub async fn terminate<'c>(&self, db: impl Db<'c>) -> Result<Vec<i32>, Error> {
        self.signal(db, Signal::Terminate).await
    }

    /// Cancel the current statements of the backends holding or waiting for the matching locks
    /// (`pg_cancel_backend`; their clients see SQLSTATE 57014). A backend waiting for a lock
    /// stops waiting; one that holds locks keeps those of its transaction unless the
    /// cancelled statement ends it (an idle transaction is not affected at all). Returns the pids
    /// signalled, distinct and sorted.
    ///
    /// # Errors
    /// As [`terminate`](LockQuery::terminate).
    ///
    /// # Cancel safety
    /// As [`terminate`](LockQuery::terminate).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// // Cancel the statements of sessions waiting over a minute on orders.
    /// let pids = pglock::locks().on("orders").granted(false).min_wait(Duration::from_secs(60)).cancel(pool).await?;
    /// println!("cancelled {pids:?}");
    /// # Ok(()) }
    /// ```
    pub async fn cancel<'c>(&self, db: impl Db<'c>) -> Result<Vec<i32>, Error> {
        self.signal(db, Signal::Cancel).await
    }

    async fn signal<'c>(&self, db: impl Db<'c>, signal: Signal) -> Result<Vec<i32>, Error> {
        super::run(db, async |conn| {
            run_signal(
                conn,
                Statement::SignalLocks(signal),
                &self.filters,
                |q, w| self.filters.bind(q, w),
            )
            .await
        })
        .await
    }
}

impl BlockedLockQuery {
    /// End the sessions of the backends blocking the matching locks (`pg_terminate_backend`),
    /// as django-pglock's `terminate_blocking_activity` does. Returns the pids signalled,
    /// distinct and sorted.
    ///
    /// The blocking backends are those of the rows [`fetch`](BlockedLockQuery::fetch) would
    /// list (the limit included). Never signalled: the session running the statement,
    /// prepared transactions (pid 0), and blocking backends outside the current database. A
    /// blocker that was itself waiting in the queue (a soft blocker) is ended too: it stood
    /// in the way as much as the holder did.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool, migration_pid: i32) -> Result<(), pglock::Error> {
    /// use std::time::Duration;
    ///
    /// // End whatever has blocked the migration's backend for more than 5 seconds.
    /// pglock::blocked_locks()
    ///     .pids([migration_pid])
    ///     .min_wait(Duration::from_secs(5))
    ///     .terminate_blocking(pool)
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`LockQuery::terminate`].
    ///
    /// # Cancel safety
    /// As [`LockQuery::terminate`].
    pub async fn terminate_blocking<'c>(&self, db: impl Db<'c>) -> Result<Vec<i32>, Error> {
        self.signal_blocking(db, Signal::Terminate).await
    }

    /// Cancel the current statements of the backends blocking the matching locks
    /// (`pg_cancel_backend`), as django-pglock's `cancel_blocking_activity` does. This frees a
    /// lock only if the cancelled statement's transaction ends with it: a blocker idle in its
    /// transaction keeps its locks. Returns the pids signalled, distinct and sorted.
    ///
    /// # Errors
    /// As [`LockQuery::terminate`].
    ///
    /// # Cancel safety
    /// As [`LockQuery::terminate`].
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let pids = pglock::blocked_locks().on("orders").cancel_blocking(pool).await?;
    /// println!("cancelled {pids:?}");
    /// # Ok(()) }
    /// ```
    pub async fn cancel_blocking<'c>(&self, db: impl Db<'c>) -> Result<Vec<i32>, Error> {
        self.signal_blocking(db, Signal::Cancel).await
    }

    async fn signal_blocking<'c>(
        &self,
        db: impl Db<'c>,
        signal: Signal,
    ) -> Result<Vec<i32>, Error> {
        super::run(db, async |conn| {
            run_signal(
                conn,
                Statement::SignalBlocking(signal),
                &self.filters,
                |q, w| self.bind(q, w),
            )
            .await
        })
        .await
    }
}

/// Run a signalling statement and return the pids it signalled, sorted.
async fn run_signal(
    conn: &mut PgConnection,
    statement: Statement,
    filters: &Filters,
    bind: impl FnOnce(Bound<'static>, bool) -> Result<Bound<'static>, Error>,
) -> Result<Vec<i32>, Error> {
    let query = sql::prepare(conn, statement, filters, bind).await?;
    let rows = query.fetch_all(conn).await?;
    let mut signalled = Vec::with_capacity(rows.len());
    for row in rows {
        // `false`: the backend was gone when its signal was sent.
        if row.try_get::<bool, _>(1)? {
            signalled.push(row.try_get::<i32, _>(0)?);
        }
    }
    // Distinct already (the targets are); sorted here, as the statement sends the signals in
    // the order that makes a refusal come first.
    signalled.sort_unstable();
    Ok(signalled)
}
