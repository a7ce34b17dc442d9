//! An advisory lock as the state of a scope entered on a handle (see `crate::scope`): what the
//! attributes hold while the function's body runs.

use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use sqlx::{AssertSqlSafe, PgPool};
use tokio::time::Instant;

use super::guard::{AdvisoryGuard, Forgotten};
use super::linger::{self, Lingering};
use super::session::{beat, end_transaction};
use crate::handle::{CloseUnlessKept, Conn, checkout};
use crate::race::{Either::*, race};
use crate::scope::{self, Held, Kind, Running, Scope, Site};
use crate::unwind::catch_panic;
use crate::{Advisory, Db, Error};

impl<H: Site> Kind<H> for Advisory {
    type Held = AdvisoryHeld;

    /// Take the lock on the site's session, or on a connection of the site's pool that pglock
    /// checks out and owns for as long as the lock is held.
    async fn enter(self, site: &mut H) -> Result<AdvisoryHeld, Error> {
        if let Some(conn) = site.session() {
            let lock = self.take(conn).await?.forget();
            return Ok(AdvisoryHeld::new(&self, On::Lent(lock)));
        }
        let pool = site.pool().expect("a site is either a session or a pool")?;
        // Boxed: the pool's path (a checkout, maybe a transaction) would otherwise make this
        // future, and every scope's around it, several times larger on the session's path too,
        // to be copied at each `.await` that moves it.
        Box::pin(self.enter_on_pool(pool)).await
    }

    fn span(&self) -> Option<tracing::Span> {
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
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// let sent = pglock::advisory("nightly-digest")
    ///     .nowait()
    ///     .try_run(pool, async { /* send it */ Ok::<_, pglock::Error>(()) })
    ///     .await?;
    /// println!("{}", if sent.is_some() { "sent" } else { "skipped" });
    /// # Ok(()) }
    /// ```
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

    /// Like [`run`](Advisory::run), but a body that must finish a step cleanly is told of the
    /// loss instead of being dropped: it gets a [`LossSignal`] to check (`is_lost()`) or await
    /// (`lost().await`), runs to its end, and then the call returns [`Error::Lost`] (or the
    /// body's own error, if it failed). Without a heartbeat (a borrowed connection, or
    /// `heartbeat(None)`), the signal never fires.
    ///
    /// ```no_run
    /// # async fn relay_batch() -> Result<bool, pglock::Error> { Ok(false) }
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// pglock::advisory("outbox-relay")
    ///     .run_notified(pool, |lost| async move {
    ///         // Finish the batch in hand, and stop between batches once the lock is gone.
    ///         while !lost.is_lost() && relay_batch().await? {}
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`run`](Advisory::run).
    ///
    /// # Cancel safety
    /// As [`scope`](Advisory::scope).
    pub async fn run_notified<'c, T, E, F>(
        self,
        db: impl Db<'c>,
        body: impl FnOnce(LossSignal) -> F,
    ) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
        E: From<Error>,
    {
        let (signal, watching) = tokio::sync::watch::channel(false);
        let run = self.enter_and_run(db, Some(signal), |_| body(LossSignal(watching)), false);
        match run.await {
            Ok(Some(out)) => out,
            Ok(None) => unreachable!("only skips when asked to"),
            Err(error) => Err(error.into()),
        }
    }

    async fn run_core<'c, T, E>(
        self,
        db: impl Db<'c>,
        body: impl Future<Output = Result<T, E>>,
        skip: bool,
    ) -> Result<Option<Result<T, E>>, Error> {
        self.enter_and_run(db, None, |_| body, skip).await
    }

    async fn enter_and_run<'c, T, E, F: Future<Output = Result<T, E>>>(
        self,
        db: impl Db<'c>,
        notify: Option<tokio::sync::watch::Sender<bool>>,
        body: impl FnOnce(()) -> F,
        skip: bool,
    ) -> Result<Option<Result<T, E>>, Error> {
        let mut scope = Scope::new(&self, db.into_handle());
        let (site, span) = scope.entering();
        match crate::scope::await_in!(span, self.enter(site)) {
            Ok(held) => scope.entered(held),
            Err(error) if skip && error.is_not_acquired() => {
                crate::scope::within(scope.span(), || crate::telemetry::skipped(&error));
                return Ok(None);
            }
            Err(error) => return Err(error),
        }
        let (_, held, span) = scope.parts();
        if let Some(signal) = notify {
            held.notify = Some(Box::new((signal, None)));
        }
        let outcome = crate::scope::await_in!(span, held.run(body(())));
        scope.exit(outcome, Result::is_err).await.map(Some)
    }

    /// Take the lock on a connection checked out of `pool`, which pglock owns for as long as
    /// the lock is held.
    async fn enter_on_pool(self, pool: PgPool) -> Result<AdvisoryHeld, Error> {
        let conn = checkout(&pool).await?;
        if self.is_xact() {
            return self
                .enter_owned_transaction(CloseUnlessKept::new(conn), pool)
                .await;
        }
        let guard = self.take(Conn::Owned(conn, pool)).await?;
        Ok(AdvisoryHeld::new(&self, On::Owned(Box::new(guard))))
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
            Ok(lock) => Ok(AdvisoryHeld::new(
                self,
                On::OwnedTransaction(Box::new((owned, lock))),
            )),
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

/// Tells a body run with [`Advisory::run_notified`] that its lock was lost.
#[derive(Clone, Debug)]
pub struct LossSignal(tokio::sync::watch::Receiver<bool>);

impl LossSignal {
    /// Whether the heartbeat has found the lock's session gone.
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// # async fn relay_batch() -> Result<bool, pglock::Error> { Ok(false) }
    /// pglock::advisory("outbox-relay")
    ///     .run_notified(pool, |lost| async move {
    ///         while !lost.is_lost() && relay_batch().await? {}
    ///         Ok::<_, pglock::Error>(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn is_lost(&self) -> bool {
        *self.0.borrow()
    }

    /// Wait until the heartbeat finds the lock's session gone (forever, if it never does).
    ///
    /// ```no_run
    /// # async fn example(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
    /// # async fn relay_forever() -> Result<(), pglock::Error> { Ok(()) }
    /// pglock::advisory("outbox-relay")
    ///     .run_notified(pool, |mut lost| async move {
    ///         tokio::select! {
    ///             result = relay_forever() => result,
    ///             () = lost.lost() => Ok(()), // stop: another replica may take over now
    ///         }
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn lost(&mut self) {
        if self.0.wait_for(|lost| *lost).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// An advisory lock held by a scope.
pub struct AdvisoryHeld {
    on: On,
    /// `min_hold`, and when the lock was taken (the clock is read only for a lock with one).
    min_hold: Option<(Duration, Instant)>,
    heartbeat: Option<Duration>,
    /// Whether the heartbeat found the session gone (or left a check unanswered).
    lost: bool,
    /// Set for a body told of the loss rather than stopped: the signal, and the loss once seen
    /// (the scope's result when the body ends).
    /// Boxed: only `run_notified` sets it, and inline it would double the size of this state,
    /// which every scope's future carries and moves.
    notify: Option<Box<(tokio::sync::watch::Sender<bool>, Option<Error>)>>,
}

/// Where the lock lives. The connections pglock owns are boxed: their checkout costs far more
/// than the allocation, and inline they would make the state of every scope, lent ones too,
/// twice the size, to be moved at each step.
enum On {
    /// On a connection of a pool that pglock checked out and owns, which nothing else uses: it
    /// can be watched.
    Owned(Box<AdvisoryGuard<'static>>),
    /// Transaction-level, inside a transaction pglock opened on a connection it owns.
    OwnedTransaction(Box<(CloseUnlessKept, Forgotten)>),
    /// On the site's own session, which the scope lends to its body: the lock without it.
    Lent(Forgotten),
}

impl AdvisoryHeld {
    #[inline]
    fn new(lock: &Advisory, on: On) -> Self {
        AdvisoryHeld {
            on,
            min_hold: lock.min_hold.map(|hold| (hold, Instant::now())),
            heartbeat: lock.heartbeat,
            lost: false,
            notify: None,
        }
    }

    /// The body of a session lock on a connection pglock owns, raced against the heartbeat.
    async fn run_watched<F: Future>(&mut self, body: F) -> scope::Outcome<F::Output> {
        let (On::Owned(guard), Some(every)) = (&mut self.on, self.heartbeat) else {
            unreachable!("only a lock with a heartbeat is watched");
        };
        let mut body = pin!(catch_panic(body));
        let mut watch = pin!(Self::watch(guard, every));
        let Some((signal, seen)) = self.notify.as_deref_mut() else {
            return match race(body, watch).await {
                First(out) => Ok(out),
                Second(lost) => {
                    self.lost = true;
                    Err(lost)
                }
            };
        };
        // The body is told, and runs to its end: the loss is the result after it.
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = body.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            if seen.is_none()
                && let Poll::Ready(lost) = watch.as_mut().poll(cx)
            {
                signal.send_replace(true);
                *seen = Some(lost);
            }
            Poll::Pending
        })
        .await;
        Ok(out)
    }

    /// Check the holding session every `every` until a check fails or goes unanswered for
    /// `every`; then the lock is lost (or may be: no reply means pglock can no longer know,
    /// and the connection is closed, which frees it if the server still had it).
    async fn watch(guard: &mut AdvisoryGuard<'static>, every: Duration) -> Error {
        let mut beats = tokio::time::interval_at(Instant::now() + every, every);
        beats.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beats.tick().await;
            if let Err(source) = beat(&mut **guard, every).await {
                guard.report_lost(every, &source);
                return Error::Lost {
                    lock: guard.id().clone(),
                    source,
                };
            }
        }
    }

    /// How the scope closes, decided before the future that closes it exists.
    #[inline]
    fn close(self, body_failed: bool) -> Close {
        let left = self.left_to_hold();
        if self.lost {
            // Its session is gone, or its connection was left mid-statement: close it
            // (dropping the guard, with `self`, does). The loss was the scope's result already.
            return Close::Decided(Ok(()));
        }
        if let Some((_, Some(lost))) = self.notify.map(|notify| *notify) {
            // The body was told of the loss and ran to its end: the loss is the result now.
            return Close::Decided(Err(lost));
        }
        match (self.on, left) {
            // A transaction-level lock in the caller's transaction ends with it: there is
            // nothing to send, only the end to report.
            (On::Lent(lock), None) if lock.mode.xact => Close::Ended(lock),
            (on, left) => Close::Release(
                on,
                Ending {
                    left,
                    heartbeat: self.heartbeat,
                    body_failed,
                },
            ),
        }
    }

    /// How long the lock was held, and what is left of its `min_hold`, if any is.
    #[inline]
    fn left_to_hold(&self) -> Option<Lingers> {
        let (hold, since) = self.min_hold?;
        let held = since.elapsed();
        let left = hold.checked_sub(held).filter(|left| !left.is_zero())?;
        Some(Lingers { held, left })
    }
}

impl Held for AdvisoryHeld {
    /// Run the body; for a session lock on a connection pglock owns, race it against the
    /// heartbeat, which drops the body (it never resumes from its pending `.await`) as soon as
    /// the holding session is found gone.
    fn run<F: Future>(&mut self, body: F) -> impl Future<Output = scope::Outcome<F::Output>> {
        if let (On::Owned(_), Some(_)) = (&self.on, self.heartbeat) {
            // Boxed, with the body: only a lock on a connection pglock checked out has a
            // heartbeat, and the checkout costs far more than the allocation. A lent lock's
            // body runs in place, and its scope stays the body's size.
            Running::Watched {
                watched: Box::pin(self.run_watched(body)),
            }
        } else {
            Running::alone(body)
        }
    }

    fn describe(&self) -> &'static str {
        "advisory lock"
    }

    // Not an `async fn`: everything is decided before the future exists, so the future holds
    // the release alone, or for an end with nothing to send, nothing but the lock to report
    // (an `async fn` keeps its arguments for its whole life, copied at each move). Inlined, so
    // that the future is made where the scope's end awaits it.
    #[inline(always)]
    fn end<H: Site>(
        self,
        site: &mut H,
        body_failed: bool,
    ) -> impl Future<Output = Result<(), Error>> {
        match self.close(body_failed) {
            Close::Decided(result) => End::Decided {
                result: Some(result),
            },
            Close::Ended(lock) => End::Ended { lock: Some(lock) },
            // A lock on the caller's session with no hold left, the common case: release it
            // here, with the runtime API's own release. Every other way of ending is boxed, so
            // that this future (and every scope's around it) stays small.
            Close::Release(On::Lent(lock), Ending { left: None, .. }) => {
                let conn = site
                    .session()
                    .expect("a lent lock lives on the site's session");
                End::Release {
                    release: AdvisoryGuard::held(conn, lock).release(),
                }
            }
            // A lock on a connection pglock owns, released the same way.
            Close::Release(On::Owned(guard), Ending { left: None, .. }) => {
                let guard: AdvisoryGuard<'_> = *guard;
                End::Release {
                    release: guard.release(),
                }
            }
            Close::Release(on, ending) => End::Other {
                other: Box::pin(ending.end(on, site)),
            },
        }
    }

    fn abandon<H: Site>(self, site: &mut H) {
        match self.on {
            // Closing the connections pglock owns ends the session and its locks.
            On::Owned(guard) => drop(guard),
            On::OwnedTransaction(owned) => drop(owned),
            On::Lent(lock) => {
                if let Some(conn) = site.session() {
                    drop(AdvisoryGuard::held(conn, lock));
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The end of a held lock's scope, decided before it is polled: only a release awaits
    /// anything, and an end with nothing to send finishes at its first poll (in the scope's
    /// span, where the end of a transaction-level lock is reported).
    #[project = EndNow]
    enum End<R, O> {
        Decided { result: Option<Result<(), Error>> },
        Ended { lock: Option<Forgotten> },
        Release { #[pin] release: R },
        Other { #[pin] other: O },
    }
}

impl<R, O> Future for End<R, O>
where
    R: Future<Output = Result<(), Error>>,
    O: Future<Output = Result<(), Error>>,
{
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EndNow::Decided { result } => Poll::Ready(result.take().expect("polled once done")),
            EndNow::Ended { lock } => {
                lock.take().expect("polled once done").ended(&Ok(()));
                Poll::Ready(Ok(()))
            }
            EndNow::Release { release } => release.poll(cx),
            EndNow::Other { other } => other.poll(cx),
        }
    }
}

/// How a held lock's scope closes, decided before the future that closes it exists.
enum Close {
    /// Nothing to send: the outcome is known.
    Decided(Result<(), Error>),
    /// Nothing to send, and the lock's end to report (when the future runs, in the scope's
    /// span): a transaction-level lock in the caller's transaction.
    Ended(Forgotten),
    /// Release the lock (or hold it on for what is left of `min_hold`).
    Release(On, Ending),
}

/// A lock whose `min_hold` is not over when its body ends.
#[derive(Clone, Copy)]
struct Lingers {
    /// How long it was held.
    held: Duration,
    /// What is left of `min_hold`.
    left: Duration,
}

/// How a held lock ends, when it is not simply released on the caller's session.
struct Ending {
    /// What is left of `min_hold`, if any is.
    left: Option<Lingers>,
    heartbeat: Option<Duration>,
    body_failed: bool,
}

impl Ending {
    async fn end<H: Site>(self, on: On, site: &mut H) -> Result<(), Error> {
        let Ending {
            left,
            heartbeat,
            body_failed,
        } = self;
        match (on, left) {
            // min_hold: the lock outlives the body in the background, and the call returns.
            // The lingering task reports the lock's end, and keeps it counted until then.
            (On::Owned(guard), Some(Lingers { held, left })) => {
                linger::linger(Lingering::Session(*guard), held, left, heartbeat);
                Ok(())
            }
            (On::OwnedTransaction(owned), Some(Lingers { held, left })) => {
                let (conn, lock) = *owned;
                let commit = !body_failed;
                let lock = Lingering::Transaction { conn, lock, commit };
                linger::linger(lock, held, left, heartbeat);
                Ok(())
            }
            (On::Owned(guard), None) => guard.release().await,
            (On::OwnedTransaction(owned), None) => {
                let (mut owned, lock) = *owned;
                let ended = end_transaction(&mut owned, !body_failed).await;
                lock.ended(&ended);
                ended?;
                owned.keep();
                Ok(())
            }
            // The caller's connection comes back with the call: min_hold delays the return.
            (On::Lent(lock), left) => {
                if let Some(lingers) = left {
                    tokio::time::sleep(lingers.left).await;
                }
                let conn = site
                    .session()
                    .expect("a lent lock lives on the site's session");
                AdvisoryGuard::held(conn, lock).release().await
            }
        }
    }
}
