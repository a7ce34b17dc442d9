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

/// Await `$future` with `$span` (an `Option<&Span>`) entered at each of its polls, as
/// [`Instrument`](tracing::Instrument) does, but in place: the future is pinned where it is
/// made, in the state of the `async` code that awaits it, and never moved, and the span is
/// borrowed, not cloned. Wrapped in `Instrumented` instead, the whole future (a lock's
/// statements, some hundreds of bytes) is copied into the wrapper, and the wrapper into the
/// caller's state. With no span (nobody could see it), the future is awaited as it is. The
/// attributes' generated code uses it too (as `__private::await_in`).
#[doc(hidden)]
#[macro_export]
macro_rules! __await_in {
    ($span:expr, $future:expr) => {{
        let span: ::core::option::Option<&$crate::__private::Span> = $span;
        let mut future = ::core::pin::pin!($future);
        match span {
            ::core::option::Option::None => future.await,
            ::core::option::Option::Some(span) => {
                ::core::future::poll_fn(|cx| {
                    let _entered = span.enter();
                    ::core::future::Future::poll(future.as_mut(), cx)
                })
                .await
            }
        }
    }};
}
pub(crate) use crate::__await_in as await_in;

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
    #[inline]
    fn as_pg_connection(&mut self) -> &mut PgConnection {
        self
    }
}

impl Lend for PoolConnection<Postgres> {
    #[inline]
    fn as_pg_connection(&mut self) -> &mut PgConnection {
        self
    }

    #[inline]
    fn as_pool_connection(&mut self) -> Option<&mut PoolConnection<Postgres>> {
        Some(self)
    }
}

impl Lend for Transaction<'_, Postgres> {
    #[inline]
    fn as_pg_connection(&mut self) -> &mut PgConnection {
        self
    }
}

/// The connection behind a lent handle, sorted by what pglock may do with it.
#[inline]
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
    #[inline]
    fn session(&mut self) -> Option<Conn<'_>> {
        Some(lent(&mut **self))
    }

    #[inline]
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

    /// The `tracing` span the scope runs in, body included (see [`crate::telemetry`]), if
    /// anything could see it.
    #[doc(hidden)]
    fn span(&self) -> Option<Span> {
        None
    }
}

/// A kind that could not be configured (prioritize without a pool for its watcher): entering
/// it fails with that error.
impl<H: Site, K: Kind<H>> Kind<H> for Result<K, Error> {
    type Held = K::Held;

    async fn enter(self, site: &mut H) -> Result<K::Held, Error> {
        self?.enter(site).await
    }

    fn span(&self) -> Option<Span> {
        self.as_ref().ok().and_then(K::span)
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

/// A scope on a handle it keeps: made, then entered (it holds `S`), then ended, each step a call
/// of its own so that the code running it (a runtime `scope` method, or a function an attribute
/// rewrote) awaits the kind's own futures in its own state, with no layer of ours around them.
/// Dropped while it holds (its future was dropped mid-body), it abandons what it holds.
pub(crate) struct Scope<H: Site, S: Held> {
    handle: H,
    /// `Some` from entering to ending.
    held: Option<S>,
    /// What the scope is, for logs (set when entered).
    what: &'static str,
    /// The kind's span, entered while the scope enters, runs its body, and ends; none when
    /// nothing could see it, so that a scope nobody watches runs no `tracing` code at all.
    span: Option<Span>,
}

impl<H: Site, S: Held> Scope<H, S> {
    /// A scope of `kind` on `handle`, in the kind's span, not entered yet.
    #[inline]
    pub(crate) fn new<K: Kind<H, Held = S>>(kind: &K, handle: H) -> Self {
        Scope {
            handle,
            held: None,
            what: "",
            span: kind.span(),
        }
    }

    /// The site to enter on (with [`Kind::enter`], awaited with `await_in!` in the span).
    #[inline]
    pub(crate) fn entering(&mut self) -> (&mut H, Option<&Span>) {
        (&mut self.handle, self.span.as_ref())
    }

    /// Entered: the scope holds `held` until it ends.
    #[inline]
    pub(crate) fn entered(&mut self, held: S) {
        self.what = held.describe();
        self.held = Some(held);
    }

    /// Make the scope and enter it.
    pub(crate) async fn enter<K: Kind<H, Held = S>>(kind: K, handle: H) -> Result<Self, Error> {
        let mut scope = Scope::new(&kind, handle);
        let (site, span) = scope.entering();
        let held = await_in!(span, kind.enter(site))?;
        scope.entered(held);
        Ok(scope)
    }

    /// The span the scope runs in.
    #[inline]
    pub(crate) fn span(&self) -> Option<&Span> {
        self.span.as_ref()
    }

    /// The handle (to lend to the body), the state (to run the body with, `Held::run`) and the
    /// span (to run it in, with `await_in!`), borrowed apart.
    #[inline]
    pub(crate) fn parts(&mut self) -> (&mut H, &mut S, Option<&Span>) {
        let held = self.held.as_mut().expect("entered before its body runs");
        (&mut self.handle, held, self.span.as_ref())
    }

    /// Begin to end, after the body's `outcome` (`failed` says which values are failures):
    /// what the scope holds, to end (with `Held::end`, awaited in the span) on the site, and
    /// whether the body failed. From here the end's future owns what the scope held: dropped,
    /// that future ends it as far as a destructor can, and the scope has nothing left to abandon.
    #[inline]
    pub(crate) fn ending<T>(
        &mut self,
        outcome: &Outcome<T>,
        failed: impl Fn(&T) -> bool,
    ) -> (S, &mut H, Option<&Span>, bool) {
        let body_failed = !matches!(outcome, Ok(Ok(out)) if !failed(out));
        let held = self.held.take().expect("ended once");
        (held, &mut self.handle, self.span.as_ref(), body_failed)
    }

    /// Settle the body's outcome with the end's (see [`settle`]), in the scope's span.
    #[inline]
    pub(crate) fn settle<T>(
        &self,
        outcome: Outcome<T>,
        ended: Result<(), Error>,
        failed: impl Fn(&T) -> bool,
    ) -> Result<T, Error> {
        let what = self.what;
        match outcome {
            // The common case, decided without entering the span.
            Ok(Ok(out)) if ended.is_ok() => Ok(out),
            Ok(outcome) => within(self.span(), || settle(&what, outcome, ended, failed)),
            // The scope stopped the body: its reason is the result; the end's failure is news
            // only for the log.
            Err(stopped) => {
                if let Err(error) = ended {
                    within(self.span(), || ended_after(&what, "was stopped", &error));
                }
                Err(stopped)
            }
        }
    }

    /// End the scope (with the body's `outcome`, `failed` saying which values are failures)
    /// and settle the outcome.
    pub(crate) async fn exit<T>(
        mut self,
        outcome: Outcome<T>,
        failed: impl Fn(&T) -> bool,
    ) -> Result<T, Error> {
        let (held, site, span, body_failed) = self.ending(&outcome, &failed);
        let ended = await_in!(span, held.end(site, body_failed));
        self.settle(outcome, ended, failed)
    }
}

impl<H: Site, S: Held> Drop for Scope<H, S> {
    #[inline]
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            abandon(held, &mut self.handle, self.span.as_ref());
        }
    }
}

/// A scope dropped while it held: out of line, off the path of every scope that ends.
#[cold]
#[inline(never)]
fn abandon<H: Site, S: Held>(held: S, site: &mut H, span: Option<&Span>) {
    within(span, || held.abandon(site));
}

/// Run `f` in `span`, if there is one.
#[inline]
pub(crate) fn within<T>(span: Option<&Span>, f: impl FnOnce() -> T) -> T {
    match span {
        Some(span) => span.in_scope(f),
        None => f(),
    }
}

/// Run `future` in `span` (no span, when nobody could see one, costs a check per poll).
pub(crate) fn in_span<F: Future>(
    span: Option<Span>,
    future: F,
) -> tracing::instrument::Instrumented<F> {
    // One future type either way: an async fn choosing between `future.await` and
    // `future.instrument(span).await` would hold both in its state, doubling the size of every
    // layer of a stack of scopes. Entering a disabled span is a check and nothing more.
    future.instrument(span.unwrap_or_else(Span::none))
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
            ended_after(what, "failed", &error);
            Ok(out)
        }
        (Err(panic), ended) => {
            if let Err(error) = ended {
                ended_after(what, "panicked", &error);
            }
            resume_unwind(panic)
        }
    }
}

/// The log line of an end that failed after the body had already failed (`how`): out of line,
/// so that the generic code settling every scope's outcome stays small.
#[cold]
#[inline(never)]
fn ended_after(what: &dyn fmt::Display, how: &str, error: &Error) {
    tracing::warn!(scope = %what, %error, "pglock: ending a scope after its body {how} failed too");
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
