//! The floor every scope stands on: an advisory lock held, a lock timeout set, a session
//! protected by prioritize. Each is entered on a handle, holds some state while a body runs,
//! and ends on the same handle, however the body ended. The runtime `scope` methods and the
//! attributes both use what is here; nothing here knows either of them.

use std::fmt;
use std::panic::resume_unwind;
use std::pin::Pin;
use std::task::{Context, Poll};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tracing::{Instrument as _, Span};

use crate::Error;
use crate::handle::Conn;
use crate::unwind::{CatchPanic, catch_panic};

/// Await `$future` with `$span` (a `&Span`) entered at each of its polls, as
/// [`Instrument`](tracing::Instrument) does, but in place: the future is pinned where it is
/// made, in the state of the `async` code that awaits it, and never moved, and the span is
/// borrowed, not cloned. Wrapped in `Instrumented` instead, the whole future (a lock's
/// statements, some hundreds of bytes) is copied into the wrapper, and the wrapper into the
/// caller's state.
macro_rules! await_in {
    ($span:expr, $future:expr) => {{
        let span: &::tracing::Span = $span;
        let mut future = ::std::pin::pin!($future);
        ::std::future::poll_fn(|cx| {
            let _entered = span.enter();
            future.as_mut().poll(cx)
        })
        .await
    }};
}
pub(crate) use await_in;

/// A connection a scope can act on and lend to a body under its own type.
pub trait Lend {
    /// The session, as a connection.
    fn as_pg_connection(&mut self) -> &mut PgConnection;

    /// The connection as a pool connection, when it is one (pglock can then keep it from going
    /// back to its pool with a lock or setting it could not undo).
    fn as_pool_connection(&mut self) -> Option<&mut PoolConnection<Postgres>> {
        None
    }
}

impl Lend for PgConnection {
    fn as_pg_connection(&mut self) -> &mut PgConnection {
        self
    }
}

impl Lend for PoolConnection<Postgres> {
    fn as_pg_connection(&mut self) -> &mut PgConnection {
        self
    }

    fn as_pool_connection(&mut self) -> Option<&mut PoolConnection<Postgres>> {
        Some(self)
    }
}

impl Lend for Transaction<'_, Postgres> {
    fn as_pg_connection(&mut self) -> &mut PgConnection {
        self
    }
}

/// The connection behind a lent handle, sorted by what pglock may do with it.
pub(crate) fn lent<H: Lend + ?Sized>(handle: &mut H) -> Conn<'_> {
    if handle.as_pool_connection().is_some() {
        Conn::PoolConnection(handle.as_pool_connection().expect("checked just above"))
    } else {
        Conn::Connection(handle.as_pg_connection())
    }
}

/// What a scope is entered on: one session, or a pool (only advisory locks take those: the lock
/// then lives on a connection pglock checks out and owns).
pub trait Site {
    /// The session, when this is one.
    #[doc(hidden)]
    fn session(&mut self) -> Option<Conn<'_>>;

    /// The pool, when this is one, or why there is none (the default pool may be missing).
    #[doc(hidden)]
    fn pool(&self) -> Option<Result<PgPool, Error>>;
}

impl<H: Lend + ?Sized> Site for &mut H {
    fn session(&mut self) -> Option<Conn<'_>> {
        Some(lent(&mut **self))
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        None
    }
}

/// A runtime handle ([`Db`](crate::Db)), as a site.
impl Site for crate::handle::Handle<'_> {
    fn session(&mut self) -> Option<Conn<'_>> {
        use crate::handle::Handle;
        match self {
            Handle::Pool(_) => None,
            Handle::PoolConnection(conn) => Some(Conn::PoolConnection(conn)),
            Handle::Connection(conn) => Some(Conn::Connection(conn)),
        }
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        match self {
            crate::handle::Handle::Pool(pool) => Some(Ok(pool.clone())),
            _ => None,
        }
    }
}

/// A site that is one session: what lock timeouts and prioritize act on.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not one database session",
    label = "a lock timeout or prioritize needs one session here",
    note = "#[pglock::timeout] and #[pglock::prioritize] act on one session: use \
            `&mut PgConnection`, `&mut PoolConnection<Postgres>` or \
            `&mut Transaction<'_, Postgres>` (a pool has many sessions; a connection is \
            taken as `&mut`)"
)]
pub trait OneSession: Site {}

impl<H: Lend + ?Sized> OneSession for &mut H {}

/// A kind of scope (the builder the caller configured) entered on a site of type `H`.
pub trait Kind<H: Site> {
    /// What the scope holds while its body runs.
    #[doc(hidden)]
    type Held: Held;

    /// Take the lock, set the timeout, start the watcher... on `site`.
    #[doc(hidden)]
    #[allow(async_fn_in_trait)] // crate-internal: only pglock's own futures implement it
    async fn enter(self, site: &mut H) -> Result<Self::Held, Error>;

    /// The `tracing` span the scope runs in, body included (see [`crate::telemetry`]).
    #[doc(hidden)]
    fn span(&self) -> tracing::Span {
        tracing::Span::none()
    }
}

/// A kind that could not be configured (prioritize without a pool for its watcher): entering
/// it fails with that error.
impl<H: Site, K: Kind<H>> Kind<H> for Result<K, Error> {
    type Held = K::Held;

    async fn enter(self, site: &mut H) -> Result<K::Held, Error> {
        self?.enter(site).await
    }

    fn span(&self) -> tracing::Span {
        self.as_ref()
            .map_or_else(|_| tracing::Span::none(), K::span)
    }
}

/// The state of an entered scope, apart from the site it was entered on.
pub trait Held: Sized {
    /// What kind of scope it is, for logs (the errors name the lock themselves). Static, so
    /// that ending a scope allocates nothing for a log line nobody may read.
    #[doc(hidden)]
    fn describe(&self) -> &'static str;

    /// Run the scope's body while holding, catching its panic. A scope that watches what it
    /// holds may end the body early (it is dropped), reporting why as `Err` of the outer result.
    #[doc(hidden)]
    fn run<F: Future>(&mut self, body: F) -> impl Future<Output = Outcome<F::Output>> {
        Running::<F, std::future::Pending<_>>::alone(body)
    }

    /// End the scope on `site` (release, restore, stop). `body_failed` says whether the body
    /// failed or panicked (a transaction pglock opened then rolls back).
    #[doc(hidden)]
    #[allow(async_fn_in_trait)]
    async fn end<H: Site>(self, site: &mut H, body_failed: bool) -> Result<(), Error>;

    /// The scope was dropped before it ended (its future was dropped): make sure nothing it
    /// holds outlives it, as far as pglock can from a destructor. Never blocks.
    #[doc(hidden)]
    fn abandon<H: Site>(self, site: &mut H);
}

/// What a scope's body gives: its output (or its panic, caught), or why the scope stopped it.
pub type Outcome<T> = Result<std::thread::Result<T>, Error>;

pin_project_lite::pin_project! {
    /// A scope's body running: alone, its panic caught, or under a watch of the scope's (`W`,
    /// which runs the body itself and may stop it). Not an `async fn`, which would hold the body
    /// twice (its argument, and the copy it pins); this holds it once, in place.
    #[project = RunningNow]
    pub(crate) enum Running<F, W> {
        Alone { #[pin] body: CatchPanic<F> },
        Watched { #[pin] watched: W },
    }
}

impl<F: Future, W> Running<F, W> {
    /// The body alone.
    pub(crate) fn alone(body: F) -> Self {
        Running::Alone {
            body: catch_panic(body),
        }
    }
}

impl<F: Future, W: Future<Output = Outcome<F::Output>>> Future for Running<F, W> {
    type Output = Outcome<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RunningNow::Alone { body } => body.poll(cx).map(Ok),
            RunningNow::Watched { watched } => watched.poll(cx),
        }
    }
}

/// A scope entered on a handle it keeps, from [`enter`](Self::enter) to [`exit`](Self::exit).
/// Dropped in between (its future was dropped mid-body), it abandons what it holds.
pub(crate) struct Scope<H: Site, S: Held> {
    handle: H,
    /// `None` once ended or abandoned.
    held: Option<S>,
    /// The kind's span, entered while the scope enters, runs its body, and ends.
    span: Span,
}

impl<H: Site, S: Held> Scope<H, S> {
    pub(crate) async fn enter<K: Kind<H, Held = S>>(kind: K, handle: H) -> Result<Self, Error> {
        let span = kind.span();
        Scope::enter_in(kind, handle, span).await
    }

    /// Enter in `span` (the kind's, which a caller may need to report a failure in).
    pub(crate) async fn enter_in<K: Kind<H, Held = S>>(
        kind: K,
        mut handle: H,
        span: Span,
    ) -> Result<Self, Error> {
        let held = await_in!(&span, kind.enter(&mut handle))?;
        Ok(Scope {
            handle,
            held: Some(held),
            span,
        })
    }

    /// The handle (to lend to the body), the state (to run the body with) and the span (to run
    /// it in, with `await_in!`), borrowed apart.
    pub(crate) fn parts(&mut self) -> (&mut H, &mut S, &Span) {
        let held = self.held.as_mut().expect("borrowed before the scope ends");
        (&mut self.handle, held, &self.span)
    }

    /// End the scope and settle its outcome with the body's (see [`settle`]).
    pub(crate) fn exit<T>(
        self,
        outcome: Outcome<T>,
        failed: impl Fn(&T) -> bool,
    ) -> impl Future<Output = Result<T, Error>> {
        self.exit_then(outcome, failed, std::convert::identity)
    }

    /// [`exit`](Self::exit), and give the settled result to `then`.
    ///
    /// Not an `async fn`, and neither is the caller's `exit` that passes its own last step as
    /// `then`: the arguments of an `async fn` are kept in its future, beside the futures it
    /// awaits, and a future returned by one `async fn` to another is copied whole into the
    /// caller's. This is one future, made once, with the scope and the end's future in it.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub(crate) fn exit_then<T, U>(
        mut self,
        outcome: Outcome<T>,
        failed: impl Fn(&T) -> bool,
        then: impl FnOnce(Result<T, Error>) -> U,
    ) -> impl Future<Output = U> {
        async move {
            // Taken here, not before the future exists: a future dropped unpolled drops the
            // scope with what it holds, which abandons it (in its span).
            let held = self.held.take().expect("exited once");
            let what = held.describe();
            let body_failed = !matches!(&outcome, Ok(Ok(out)) if !failed(out));
            let ended = await_in!(&self.span, held.end(&mut self.handle, body_failed));
            let settled = self.span.in_scope(|| match outcome {
                Ok(outcome) => settle(&what, outcome, ended, failed),
                // The scope stopped the body: its reason is the result; the end's failure is
                // news only for the log.
                Err(stopped) => {
                    if let Err(error) = ended {
                        tracing::warn!(scope = %what, %error, "pglock: ending a scope after its body was stopped failed too");
                    }
                    Err(stopped)
                }
            });
            then(settled)
        }
    }
}

impl<H: Site, S: Held> Drop for Scope<H, S> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            let _span = self.span.enter();
            held.abandon(&mut self.handle);
        }
    }
}

/// Run `future` in `span` (a disabled span, when nobody listens, costs a check per poll).
pub(crate) fn in_span<F: Future>(span: Span, future: F) -> tracing::instrument::Instrumented<F> {
    // One future type either way: an async fn choosing between `future.await` and
    // `future.instrument(span).await` would hold both in its state, doubling the size of every
    // layer of a stack of scopes. Entering a disabled span is a check and nothing more.
    future.instrument(span)
}

/// The one rule for a scope's outcome, given the body's (`outcome`) and that of ending the scope
/// (`ended`: releasing, restoring, stopping): a body's failure (`failed` says which values are
/// failures) beats pglock's, which is then only logged; pglock's failure beats a body's success
/// (a lock whose release fails may have been lost while the body ran, so its result is not
/// returned); a panic is resumed once the scope has ended.
pub(crate) fn settle<T>(
    what: &dyn fmt::Display,
    outcome: std::thread::Result<T>,
    ended: Result<(), Error>,
    failed: impl Fn(&T) -> bool,
) -> Result<T, Error> {
    match (outcome, ended) {
        (Ok(out), Ok(())) => Ok(out),
        (Ok(out), Err(error)) if !failed(&out) => Err(error),
        (Ok(out), Err(error)) => {
            tracing::warn!(scope = %what, %error, "pglock: ending a scope after its body failed failed too");
            Ok(out)
        }
        (Err(panic), ended) => {
            if let Err(error) = ended {
                tracing::warn!(scope = %what, %error, "pglock: ending a scope after its body panicked failed too");
            }
            resume_unwind(panic)
        }
    }
}

/// The runtime `scope` of a one-session kind (a lock timeout, prioritize): enter on `db`'s
/// session, run `body` with the session, end.
///
/// Each kind of handle is kept as itself, so that a pool connection can be kept from going back
/// to its pool; no closure has a lifetime in its argument type (which would make the future fail
/// `Send` checks in spawned tasks).
pub(crate) async fn on_session<'c, K, T, E>(
    kind: K,
    db: impl crate::Session<'c>,
    body: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    K: Kind<&'c mut PoolConnection<Postgres>> + Kind<&'c mut PgConnection>,
    E: From<Error>,
{
    use crate::handle::Handle;
    let scoped = match db.into_handle() {
        Handle::PoolConnection(conn) => run_on(kind, conn, body).await,
        Handle::Connection(conn) => run_on(kind, conn, body).await,
        Handle::Pool(_) => unreachable!("`Session` is not implemented for pools"),
    };
    scoped.unwrap_or_else(|error| Err(error.into()))
}

async fn run_on<'c, L, K, T, E>(
    kind: K,
    handle: &'c mut L,
    body: impl AsyncFnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<Result<T, E>, Error>
where
    L: Lend + ?Sized,
    K: Kind<&'c mut L>,
{
    let mut scope = Scope::enter(kind, handle).await?;
    let (handle, held, span) = scope.parts();
    let outcome = await_in!(span, held.run(body(handle.as_pg_connection())));
    scope.exit(outcome, Result::is_err).await
}
