//! An advisory lock as the state of a scope entered on a handle (see `crate::scope`): what the
//! attributes hold while the function's body runs.

use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool};

use super::guard::{AdvisoryGuard, Forgotten};
use crate::handle::{CloseUnlessKept, Conn};
use crate::scope::{Held, Kind, Scope, Site};
use crate::unwind::catch_panic;
use crate::{Advisory, Db, Error};

impl<H: Site> Kind<H> for Advisory {
    type Held = AdvisoryHeld;

    /// Take the lock on the site's session, or on a connection of the site's pool that pglock
    /// checks out and owns for as long as the lock is held.
    async fn enter(self, site: &mut H) -> Result<AdvisoryHeld, Error> {
        if let Some(conn) = site.session() {
            return Ok(AdvisoryHeld::Lent(self.take(conn).await?.forget()));
        }
        let pool = site.pool().expect("a site is either a session or a pool")?;
        let conn = pool.acquire().await?;
        if self.is_xact() {
            return self
                .enter_owned_transaction(CloseUnlessKept::new(conn), pool)
                .await;
        }
        let guard = self.take(Conn::Owned(conn, pool)).await?;
        Ok(AdvisoryHeld::Owned(Owned {
            guard,
            heartbeat: self.heartbeat,
            lost: false,
        }))
    }

    fn span(&self) -> tracing::Span {
        Advisory::span(self)
    }
}

impl Advisory {
    /// Run `body` while holding the lock, and release the lock after it, however it ends. Unlike
    /// [`scope`](Advisory::scope), the body is not lent the lock's connection (use the pool, or
    /// a connection of your own), which leaves that connection free for the
    /// [heartbeat](Advisory::heartbeat): on a pool, a session-level lock's session is checked
    /// while the body runs, and if it is found gone the body is dropped and `run` returns
    /// [`Error::Lost`]. This is what the attribute does with a function's body.
    ///
    /// A transaction-level lock on a pool is held by a transaction pglock opens on a connection
    /// of its own for the body's duration, committed when the body returns `Ok`.
    ///
    /// ```no_run
    /// # async fn relay(pool: &sqlx::PgPool) -> Result<(), pglock::Error> { Ok(()) }
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// pglock::advisory("outbox-relay").run(pool, relay(pool)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`scope`](Advisory::scope), and [`Error::Lost`] when the heartbeat found the lock's
    /// session gone (or unanswering) while the body ran.
    ///
    /// # Cancel safety
    /// As [`scope`](Advisory::scope).
    pub async fn run<'c, T, E>(
        self,
        db: impl Db<'c>,
        body: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        match self.run_core(db, body, false).await {
            Ok(Some(out)) => out,
            Ok(None) => unreachable!("run_core only skips when asked to"),
            Err(error) => Err(error.into()),
        }
    }

    /// Like [`run`](Advisory::run), but return `Ok(None)` without running `body` when the lock is
    /// not acquired (django-pglock's `Skip`).
    ///
    /// # Errors
    /// As [`run`](Advisory::run), except that a lock that is not acquired is `Ok(None)`.
    ///
    /// # Cancel safety
    /// As [`scope`](Advisory::scope).
    pub async fn try_run<'c, T, E>(
        self,
        db: impl Db<'c>,
        body: impl Future<Output = Result<T, E>>,
    ) -> Result<Option<T>, E>
    where
        E: From<Error>,
    {
        match self.run_core(db, body, true).await {
            Ok(Some(out)) => out.map(Some),
            Ok(None) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    async fn run_core<'c, T, E>(
        self,
        db: impl Db<'c>,
        body: impl Future<Output = Result<T, E>>,
        skip: bool,
    ) -> Result<Option<Result<T, E>>, Error> {
        let span = self.span();
        let mut scope = match Scope::enter_in(self, db.into_handle(), span.clone()).await {
            Ok(scope) => scope,
            Err(error) if skip && error.is_not_acquired() => {
                span.in_scope(|| crate::telemetry::skipped(&error));
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let (_, held) = scope.split();
        let outcome = crate::scope::in_span(span, held.run(body)).await;
        scope.exit(outcome, Result::is_err).await.map(Some)
    }

    /// A transaction-level lock on a pool, for a body that does not see the connection: open a
    /// transaction on a connection pglock owns and lock inside it. The transaction is begun
    /// with a plain `BEGIN` rather than through sqlx, so that no borrow of the connection
    /// outlives this call: the scope keeps the connection itself, and closes it if dropped
    /// (the server then rolls back, ending the lock or the wait for it).
    async fn enter_owned_transaction(
        &self,
        mut owned: CloseUnlessKept,
        pool: PgPool,
    ) -> Result<AdvisoryHeld, Error> {
        sqlx::raw_sql(AssertSqlSafe("BEGIN"))
            .execute(owned.conn())
            .await?;
        // The guard has nothing to release: the transaction's end does.
        let taken = self
            .take(Conn::InOwnedTransaction(owned.conn(), pool))
            .await
            .map(AdvisoryGuard::forget);
        match taken {
            Ok(lock) => Ok(AdvisoryHeld::OwnedTransaction(owned, lock)),
            Err(error) => {
                // Back to the pool only once the transaction is over; if even the rollback
                // fails, dropping `owned` closes the connection.
                if end_transaction(&mut owned, false).await.is_ok() {
                    owned.keep();
                }
                Err(error)
            }
        }
    }
}

/// Commit (or roll back) the transaction pglock opened on a connection it owns.
async fn end_transaction(owned: &mut CloseUnlessKept, commit: bool) -> Result<(), Error> {
    let statement = if commit { "COMMIT" } else { "ROLLBACK" };
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(owned.conn())
        .await?;
    Ok(())
}

/// An advisory lock held by a scope.
pub enum AdvisoryHeld {
    /// On a connection of a pool that pglock checked out and owns, which nothing else uses: it
    /// can be watched.
    Owned(Owned),
    /// Transaction-level, inside a transaction pglock opened on a connection it owns.
    OwnedTransaction(CloseUnlessKept, Forgotten),
    /// On the site's own session, which the scope lends to its body: the lock without it.
    Lent(Forgotten),
}

/// A session lock on a connection pglock owns, and its heartbeat.
pub struct Owned {
    guard: AdvisoryGuard<'static>,
    heartbeat: Option<Duration>,
    /// Whether the heartbeat found the session gone (or left a check unanswered).
    lost: bool,
}

impl Owned {
    /// Check the holding session every `every` until a check fails or goes unanswered for
    /// `every`; then the lock is lost (or may be: no reply means pglock can no longer know,
    /// and the connection is closed, which frees it if the server still had it).
    async fn watch(&mut self, every: Duration) -> Error {
        let mut beats = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beats.tick().await;
            let beat = sqlx::query("SELECT 1").execute(&mut *self.guard);
            let source = match tokio::time::timeout(every, beat).await {
                Ok(Ok(_)) => continue,
                Ok(Err(source)) => source,
                Err(_) => sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the heartbeat got no reply within {every:?}"),
                )),
            };
            self.lost = true;
            self.guard.report_lost(every, &source);
            return Error::Lost {
                lock: self.guard.id().clone(),
                source,
            };
        }
    }
}

impl Held for AdvisoryHeld {
    /// Run the body; for a session lock on a connection pglock owns, race it against the
    /// heartbeat, which drops the body (it never resumes from its pending `.await`) as soon as
    /// the holding session is found gone.
    async fn run<F: Future>(&mut self, body: F) -> Result<std::thread::Result<F::Output>, Error> {
        let body = catch_panic(body);
        let (owned, every) = match self {
            AdvisoryHeld::Owned(owned) => match owned.heartbeat {
                Some(every) => (owned, every),
                None => return Ok(body.await),
            },
            _ => return Ok(body.await),
        };
        let (mut body, mut watch) = (pin!(body), pin!(owned.watch(every)));
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = body.as_mut().poll(cx) {
                return Poll::Ready(Ok(out));
            }
            match watch.as_mut().poll(cx) {
                Poll::Ready(lost) => Poll::Ready(Err(lost)),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    fn describe(&self) -> String {
        let id = match self {
            AdvisoryHeld::Owned(owned) => owned.guard.id().to_string(),
            AdvisoryHeld::OwnedTransaction(..) => return "a transaction-level lock".into(),
            AdvisoryHeld::Lent(lock) => lock.id.to_string(),
        };
        format!("lock \"{id}\"")
    }

    async fn end<H: Site>(self, site: &mut H, body_failed: bool) -> Result<(), Error> {
        match self {
            // Its session is gone, or its connection was left mid-statement: close it (dropping
            // the guard does). The loss was the scope's result already.
            AdvisoryHeld::Owned(owned) if owned.lost => Ok(()),
            AdvisoryHeld::Owned(owned) => owned.guard.release().await,
            AdvisoryHeld::OwnedTransaction(mut owned, lock) => {
                let ended = end_transaction(&mut owned, !body_failed).await;
                lock.ended(&ended);
                ended?;
                owned.keep();
                Ok(())
            }
            AdvisoryHeld::Lent(lock) => {
                let conn = site
                    .session()
                    .expect("a lent lock lives on the site's session");
                AdvisoryGuard::held(conn, lock).release().await
            }
        }
    }

    fn abandon<H: Site>(self, site: &mut H) {
        match self {
            // Closing the connections pglock owns ends the session and its locks.
            AdvisoryHeld::Owned(owned) => drop(owned),
            AdvisoryHeld::OwnedTransaction(owned, _) => drop(owned),
            AdvisoryHeld::Lent(lock) => {
                if let Some(conn) = site.session() {
                    drop(AdvisoryGuard::held(conn, lock));
                }
            }
        }
    }
}
