//! What the attributes need from the functions they wrap.
//!
//! You never implement or call these: the compiler names them when a function does not fit an
//! attribute, and their docs say what to change. [`RaiseReturn`] and [`SkipReturn`] are the return
//! types `side_effect = Raise` (and `#[pglock::timeout]`, `#[pglock::prioritize]`) and
//! `side_effect = Skip` accept; [`Handle`] is what `db = ...` (or the detected argument) may be,
//! and [`OneSession`] what a lock timeout or prioritize acts on.
//!
//! The rest of this module is the attributes' runtime half, called only by the code they
//! generate (through `pglock::__private`), and may change at any time.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

use crate::handle::Conn;
use crate::retry::{Attempts, RetryPolicy, Retrying};
use crate::scope::{Held, Kind, Lend, Scope, Site};
use crate::{Error, Finally, LockId, LockTimeoutError, Prioritize, RetryLocks};

pub use crate::scope::OneSession;

/// A return type that can carry a [`pglock::Error`](crate::Error): what `side_effect = Raise`
/// (the default of `#[pglock::advisory]`) and the `timeout` and `prioritize` attributes need.
#[diagnostic::on_unimplemented(
    message = "a `#[pglock]` function must return `Result<T, E>` with `E: From<pglock::Error>` \
               to report what pglock could not do, not `{Self}`",
    label = "cannot carry a `pglock::Error`",
    note = "for `#[pglock::advisory]`, `side_effect = Skip` returns a \"skipped\" value instead \
            when the lock is held elsewhere: `()`, `Option<T>`, `Result<(), E>` or \
            `Result<Option<T>, E>`"
)]
pub trait RaiseReturn: Sized {
    /// The error as this type.
    fn from_error(error: Error) -> Self;
    /// Whether this value is a failure (a transaction pglock opened then rolls back).
    fn is_failure(&self) -> bool;
}

impl<T, E: From<Error>> RaiseReturn for Result<T, E> {
    fn from_error(error: Error) -> Self {
        Err(error.into())
    }

    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

/// A return type with a value meaning "skipped": what `side_effect = Skip` needs.
///
/// `Result<(), E>` and `Result<Option<T>, E>` return every error other than "held elsewhere" as
/// `Err`. `()` and `Option<T>` cannot carry an error, and a job that silently never runs is
/// worse than a loud one: on any error other than "held elsewhere" (no database configured, a
/// server that cannot be reached, a lock lost or not released...) such a function **panics**
/// with the error, rather than let it pass for a skip.
#[diagnostic::on_unimplemented(
    message = "`side_effect = Skip` needs a return type with a value meaning \"skipped\", \
               not `{Self}`",
    label = "no \"skipped\" value",
    note = "use `()`, `Option<T>`, `Result<(), E>` or `Result<Option<T>, E>` (with \
            `E: From<pglock::Error>`), or `side_effect = Raise` to return an error instead"
)]
pub trait SkipReturn: Sized {
    /// The value returned when the lock is held elsewhere and the body does not run.
    fn skipped() -> Self;
    /// Any other error, as this type (or a panic, for types that cannot carry it).
    fn from_error(error: Error) -> Self;
    /// Whether this value is a failure (a transaction pglock opened then rolls back).
    fn is_failure(&self) -> bool;
}

#[track_caller]
fn cannot_carry(error: Error) -> ! {
    panic!(
        "pglock: a `side_effect = Skip` function returning `()` or `Option` could not take its \
         lock, for a reason other than another session holding it: {error}. Such a function \
         cannot return the error, and pglock will not pass it off as a skip; return \
         `Result<(), E>` or `Result<Option<T>, E>` to handle it"
    )
}

impl SkipReturn for () {
    fn skipped() -> Self {}

    fn from_error(error: Error) -> Self {
        cannot_carry(error)
    }

    fn is_failure(&self) -> bool {
        false
    }
}

impl<T> SkipReturn for Option<T> {
    fn skipped() -> Self {
        None
    }

    fn from_error(error: Error) -> Self {
        cannot_carry(error)
    }

    fn is_failure(&self) -> bool {
        false
    }
}

impl<E: From<Error>> SkipReturn for Result<(), E> {
    fn skipped() -> Self {
        Ok(())
    }

    fn from_error(error: Error) -> Self {
        Err(error.into())
    }

    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

impl<T, E: From<Error>> SkipReturn for Result<Option<T>, E> {
    fn skipped() -> Self {
        Ok(None)
    }

    fn from_error(error: Error) -> Self {
        Err(error.into())
    }

    fn is_failure(&self) -> bool {
        self.is_err()
    }
}

/// A database handle an attribute can act on: `&PgPool`, `PgPool`, `Arc<PgPool>`, or a
/// connection as `&mut PgConnection`, `&mut PoolConnection<Postgres>` or
/// `&mut Transaction<'_, Postgres>`.
///
/// A connection holds the lock (or the setting) on its own session and is lent back to the body
/// under its own name and type; a pool's lock lives on a connection pglock checks out and owns.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a database handle pglock can act on",
    label = "not a pool or a connection",
    note = "use `&PgPool`, `PgPool`, `Arc<PgPool>`, or a connection as `&mut PgConnection`, \
            `&mut PoolConnection<Postgres>` or `&mut Transaction<'_, Postgres>` (a connection \
            is taken as `&mut`: pglock runs statements on it)"
)]
pub trait Handle: Site {
    /// What the body gets back under the handle's name: the same type.
    #[doc(hidden)]
    type Lent<'b>
    where
        Self: 'b;

    /// The handle, for the body.
    #[doc(hidden)]
    fn relend(&mut self) -> Self::Lent<'_>;
}

impl<L: Lend + ?Sized> Handle for &mut L {
    type Lent<'b>
        = &'b mut L
    where
        Self: 'b;

    #[inline]
    fn relend(&mut self) -> &mut L {
        self
    }
}

/// A handle that is a pool: what prioritize's watcher connects with.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a pool",
    label = "prioritize's watcher connects with a pool's settings",
    note = "use `&PgPool`, `PgPool` or `Arc<PgPool>`"
)]
pub trait PoolHandle: Handle {}

impl Site for PgPool {
    fn session(&mut self) -> Option<Conn<'_>> {
        None
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        Some(Ok(self.clone()))
    }
}

impl Handle for PgPool {
    type Lent<'b> = PgPool;

    fn relend(&mut self) -> PgPool {
        self.clone()
    }
}

impl PoolHandle for PgPool {}

impl Site for Arc<PgPool> {
    fn session(&mut self) -> Option<Conn<'_>> {
        None
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        Some(Ok(PgPool::clone(self)))
    }
}

impl Handle for Arc<PgPool> {
    type Lent<'b> = Arc<PgPool>;

    fn relend(&mut self) -> Arc<PgPool> {
        self.clone()
    }
}

impl PoolHandle for Arc<PgPool> {}

impl Site for &PgPool {
    fn session(&mut self) -> Option<Conn<'_>> {
        None
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        Some(Ok(PgPool::clone(self)))
    }
}

impl<'a> Handle for &'a PgPool {
    type Lent<'b>
        = &'a PgPool
    where
        Self: 'b;

    fn relend(&mut self) -> &'a PgPool {
        self
    }
}

impl PoolHandle for &PgPool {}

impl Site for &Arc<PgPool> {
    fn session(&mut self) -> Option<Conn<'_>> {
        None
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        Some(Ok(PgPool::clone(self)))
    }
}

impl<'a> Handle for &'a Arc<PgPool> {
    type Lent<'b>
        = &'a Arc<PgPool>
    where
        Self: 'b;

    fn relend(&mut self) -> &'a Arc<PgPool> {
        self
    }
}

impl PoolHandle for &Arc<PgPool> {}

/// The process-wide default pool ([`set_default_pool`](crate::set_default_pool), else
/// `DATABASE_URL`), read when the scope is entered: the handle of a function that has none of
/// its own.
pub struct DefaultPool;

impl Site for DefaultPool {
    fn session(&mut self) -> Option<Conn<'_>> {
        None
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        Some(crate::default_pool())
    }
}

impl Handle for DefaultPool {
    type Lent<'b> = ();

    fn relend(&mut self) {}
}

impl PoolHandle for DefaultPool {}

/// The default pool, as a handle.
#[doc(hidden)]
pub fn default_pool() -> DefaultPool {
    DefaultPool
}

/// The handle an attribute was given, to check once, where it is written, that it is one the
/// scope can act on: [`Check::handle`] (any handle) or [`Check::session`] (one session). A value
/// that does not fit is reported by the [`Unchecked`] fallback, once, and then stands in as an
/// [`Invalid`] handle so that nothing after it is reported again.
#[doc(hidden)]
pub struct Check<H>(pub H);

impl<H: Handle> Check<H> {
    pub fn handle(self) -> H {
        self.0
    }
}

impl<H: OneSession + Handle> Check<H> {
    pub fn session(self) -> H {
        self.0
    }
}

impl<H: Attempts> Check<H> {
    pub fn attempts(self) -> H {
        self.0
    }
}

/// What [`Check`] falls back on for a value that is not a handle: an error at it.
#[doc(hidden)]
pub trait Unchecked<H> {
    fn handle(self) -> Invalid<H>
    where
        H: Handle;

    fn session(self) -> Invalid<H>
    where
        H: OneSession;

    fn attempts(self) -> Invalid<H>
    where
        H: Attempts;
}

impl<H> Unchecked<H> for Check<H> {
    fn handle(self) -> Invalid<H>
    where
        H: Handle,
    {
        Invalid(Some(self.0))
    }

    fn session(self) -> Invalid<H>
    where
        H: OneSession,
    {
        Invalid(Some(self.0))
    }

    fn attempts(self) -> Invalid<H>
    where
        H: Attempts,
    {
        Invalid(Some(self.0))
    }
}

/// A value that failed its [`Check`]: only ever in code that does not compile.
#[doc(hidden)]
pub struct Invalid<H>(Option<H>);

impl<H> Site for Invalid<H> {
    fn session(&mut self) -> Option<Conn<'_>> {
        unreachable!("code with an invalid handle does not compile")
    }

    fn pool(&self) -> Option<Result<PgPool, Error>> {
        unreachable!("code with an invalid handle does not compile")
    }
}

impl<H> Handle for Invalid<H> {
    type Lent<'b>
        = H
    where
        Self: 'b;

    fn relend(&mut self) -> H {
        self.0.take().expect("lent once")
    }
}

impl<H> OneSession for Invalid<H> {}

impl<H> Attempts for Invalid<H> {
    type Lent<'b, 't>
        = H
    where
        't: 'b;

    fn connection(&mut self) -> &mut sqlx::PgConnection {
        unreachable!("code with an invalid handle does not compile")
    }

    fn lend<'b, 't>(_: &'b mut sqlx::Transaction<'t, sqlx::Postgres>) -> H {
        unreachable!("code with an invalid handle does not compile")
    }
}

/// What an attribute does when its scope cannot be entered or ended: return an error
/// (`Raise`), or a "skipped" value when the lock is held elsewhere (`Skip`). The return type's
/// functions, taken where the return type is checked, once: a type that does not fit is
/// reported there, and nowhere after.
#[doc(hidden)]
pub struct Policy<R> {
    skip: bool,
    error: fn(Error) -> R,
    skipped: fn() -> R,
    failed: fn(&R) -> bool,
}

impl<R> Clone for Policy<R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R> Copy for Policy<R> {}

/// `side_effect = Raise`: checks, once and at the return type, that it can carry an error.
#[doc(hidden)]
pub fn raise<R: RaiseReturn>() -> Policy<R> {
    Policy {
        skip: false,
        error: R::from_error,
        skipped: || unreachable!("a Raise scope never skips"),
        failed: R::is_failure,
    }
}

/// `side_effect = Skip`: checks, once and at the return type, that it has a "skipped" value.
#[doc(hidden)]
pub fn skip<R: SkipReturn>() -> Policy<R> {
    Policy {
        skip: true,
        error: R::from_error,
        skipped: R::skipped,
        failed: R::is_failure,
    }
}

/// What the body's run gives: its outcome (a panic caught), or why the scope stopped it.
#[doc(hidden)]
pub use crate::scope::Outcome;

/// One attribute's scope around the code inside it. The generated code makes it, enters it
/// (awaiting [`Kind::enter`] on [`entering`](Self::entering)'s site itself), lends the handle to
/// the code inside and runs that code ([`Held::run`], on [`split`](Self::split)'s parts), and
/// ends it ([`Held::end`], on [`ending`](Self::ending)'s parts), then [`exit`](Self::exit)s
/// with the function's return value. Each future is awaited in the function's own state, as
/// the runtime API's are in its caller's: no layer of pglock's wraps them. If the function's
/// future is dropped in between, dropping this does what the runtime API does when its future
/// is dropped.
#[doc(hidden)]
pub struct Layer<H: Handle, S: Held, R> {
    scope: Scope<H, S>,
    policy: Policy<R>,
}

impl<H: Handle, S: Held, R> Layer<H, S, R> {
    /// A layer of `kind` on `handle`, not entered yet.
    #[inline]
    pub fn new<K: Kind<H, Held = S>>(policy: Policy<R>, kind: &K, handle: H) -> Self {
        Layer {
            scope: Scope::new(kind, handle),
            policy,
        }
    }

    /// The site to enter on, and the span to enter in.
    #[inline]
    pub fn entering(&mut self) -> (&mut H, Option<&tracing::Span>) {
        self.scope.entering()
    }

    /// Entered, or the function's return value when the scope could not be entered.
    #[inline]
    pub fn entered(&mut self, entered: Result<S, Error>) -> Result<(), R> {
        match entered {
            Ok(held) => {
                self.scope.entered(held);
                Ok(())
            }
            Err(error) => Err(self.refused(error)),
        }
    }

    /// The return value of a function whose scope could not be entered.
    #[cold]
    #[inline(never)]
    fn refused(&self, error: Error) -> R {
        if self.policy.skip && error.is_not_acquired() {
            crate::scope::within(self.scope.span(), || crate::telemetry::skipped(&error));
            (self.policy.skipped)()
        } else {
            (self.policy.error)(error)
        }
    }

    /// The handle for the body, what the scope holds (to run the body with) and the span (to
    /// run it in).
    #[inline]
    pub fn split(&mut self) -> (H::Lent<'_>, &mut S, Option<&tracing::Span>) {
        let (handle, held, span) = self.scope.parts();
        (handle.relend(), held, span)
    }

    /// What the scope holds, to end on the site in the span, and whether the body failed.
    #[inline]
    pub fn ending(&mut self, outcome: &Outcome<R>) -> (S, &mut H, Option<&tracing::Span>, bool) {
        self.scope.ending(outcome, self.policy.failed)
    }

    /// The function's return value, from the body's outcome and the end's.
    #[inline]
    pub fn exit(self, outcome: Outcome<R>, ended: Result<(), Error>) -> R {
        match self.scope.settle(outcome, ended, self.policy.failed) {
            Ok(out) => out,
            Err(error) => (self.policy.error)(error),
        }
    }
}

/// The watcher pool of `#[pglock::prioritize]`.
#[doc(hidden)]
pub fn watcher<P: PoolHandle + ?Sized>(
    settings: Prioritize,
    pool: &P,
) -> Result<Prioritize, Error> {
    Ok(settings.watcher(&pool.pool().expect("a pool handle is a pool")?))
}

/// A lock id from the attribute's expression, taken by reference so that the function's
/// arguments it names are not moved.
#[doc(hidden)]
#[inline]
pub fn lock_id<T: ToLockId + ?Sized>(id: &T) -> LockId {
    id.to_lock_id()
}

/// A value an attribute's lock id can be made of.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an advisory lock id",
    label = "not a lock id",
    note = "a lock id is a string, an `i64` or `i32`, an `(i32, i32)` pair, or a \
            `pglock::LockId`/`pglock::AdvisoryKey`"
)]
pub trait ToLockId {
    /// The id.
    #[doc(hidden)]
    fn to_lock_id(&self) -> LockId;
}

impl ToLockId for String {
    fn to_lock_id(&self) -> LockId {
        LockId::from(self.clone())
    }
}

impl ToLockId for std::borrow::Cow<'static, str> {
    fn to_lock_id(&self) -> LockId {
        LockId::from(self.clone())
    }
}

impl ToLockId for i64 {
    #[inline]
    fn to_lock_id(&self) -> LockId {
        LockId::from(*self)
    }
}

impl ToLockId for i32 {
    #[inline]
    fn to_lock_id(&self) -> LockId {
        LockId::from(*self)
    }
}

impl ToLockId for (i32, i32) {
    fn to_lock_id(&self) -> LockId {
        LockId::from(*self)
    }
}

impl ToLockId for LockId {
    fn to_lock_id(&self) -> LockId {
        self.clone()
    }
}

impl ToLockId for crate::AdvisoryKey {
    fn to_lock_id(&self) -> LockId {
        LockId::from(*self)
    }
}

impl ToLockId for str {
    fn to_lock_id(&self) -> LockId {
        self.into()
    }
}

impl<T: ToLockId + ?Sized> ToLockId for &T {
    #[inline]
    fn to_lock_id(&self) -> LockId {
        (**self).to_lock_id()
    }
}

/// The default lock id of a method: `<module path>::<Type>::<method>`, where `<Type>` is the
/// last segment of the implementing type's name without its generic arguments.
#[doc(hidden)]
pub fn method_id(module: &str, type_name: &str, method: &str) -> String {
    let base = type_name.split('<').next().unwrap_or(type_name);
    let name = base.rsplit("::").next().unwrap_or(base);
    format!("{module}::{name}::{method}")
}

/// A duration written in an attribute, checked by the macro: `Duration::new(secs, nanos)`.
#[doc(hidden)]
pub const fn duration(secs: u64, nanos: u32) -> Duration {
    Duration::new(secs, nanos)
}

/// A compile-time look at an argument pglock could not recognise from its written type (an
/// alias, a pattern, a path): [`Probe::check`] compiles only when the argument is not a
/// database handle, so that pglock never passes a handle over for the default pool in silence.
#[doc(hidden)]
pub struct Probe<T: ?Sized>(PhantomData<fn(&T)>);

#[doc(hidden)]
pub fn probe<T: ?Sized>(_: &T) -> Probe<T> {
    Probe(PhantomData)
}

impl<T: Handle> Probe<T> {
    /// Chosen over [`NotAHandle::check`] when the argument is a handle, and then fails to
    /// compile with the message of [`NameTheHandle`].
    pub fn check(&self)
    where
        T: NameTheHandle,
    {
    }
}

/// The probe of an argument that is not a database handle: nothing to say.
#[doc(hidden)]
pub trait NotAHandle {
    fn check(&self) {}
}

impl<T: ?Sized> NotAHandle for Probe<T> {}

/// Never implemented: the message of an argument that is a handle pglock could not see.
#[diagnostic::on_unimplemented(
    message = "this argument is a database handle (`{Self}`), but pglock cannot tell from how \
               it is written",
    label = "a pool or connection behind an alias, a pattern or a path",
    note = "name the handle the attribute acts on with `db = ...` (e.g. `db = conn`), so that \
            pglock neither passes it over for the default pool nor guesses between two"
)]
pub trait NameTheHandle {}

/// A return type `#[pglock::retry_locks]` can retry on: `Result<T, E>` whose `E` carries a
/// [`pglock::Error`](crate::Error) and can say it is a lock timeout.
#[diagnostic::on_unimplemented(
    message = "a `#[pglock::retry_locks]` function must return `Result<T, E>` with \
               `E: From<pglock::Error> + pglock::LockTimeoutError`, not `{Self}`",
    label = "cannot tell a lock timeout, to retry on",
    note = "`pglock::Error` and `sqlx::Error` are both; for your own error type, implement \
            `pglock::LockTimeoutError` by asking the error it wraps"
)]
pub trait RetryReturn: Sized {
    /// How the retries read and make this type.
    #[doc(hidden)]
    fn policy() -> RetryPolicy<Self>;
}

impl<T, E: From<Error> + LockTimeoutError> RetryReturn for Result<T, E> {
    fn policy() -> RetryPolicy<Self> {
        RetryPolicy::result()
    }
}

/// `#[pglock::retry_locks]`'s rule: checks, once and at the return type, that it can retry.
#[doc(hidden)]
pub fn retry_policy<R: RetryReturn>() -> RetryPolicy<R> {
    R::policy()
}

/// Lock-timeout retries on `handle`, the attempts run by the generated loop.
#[doc(hidden)]
pub fn retry<R, H: Attempts>(
    policy: RetryPolicy<R>,
    settings: Result<RetryLocks, Error>,
    handle: H,
) -> Retrying<H, R> {
    Retrying::new(policy, settings, handle, None)
}

/// `finally = Prioritize`: a prioritize whose watcher connects with `pool`.
#[doc(hidden)]
pub fn finally_prioritize<P: PoolHandle + ?Sized>(
    settings: RetryLocks,
    pool: &P,
) -> Result<RetryLocks, Error> {
    let prioritize = watcher(crate::prioritize(), pool)?;
    Ok(settings.finally(Finally::Prioritize(prioritize)))
}

/// A body's outcome, its panic caught.
#[doc(hidden)]
pub type Caught<R> = std::thread::Result<R>;

/// An argument of a `#[pglock::retry_locks]` function, to give again to each attempt: a `&mut`
/// is reborrowed (this inherent `again`), anything else must be [`Reusable`] (copied, by
/// [`AgainCopy::again`]).
#[doc(hidden)]
pub struct Again<'a, T: ?Sized>(pub &'a mut T);

impl<'a, T: ?Sized> Again<'a, &mut T> {
    pub fn again(self) -> &'a mut T {
        self.0
    }
}

/// The `again` of an argument that is not a `&mut`: a copy, if it can be one.
#[doc(hidden)]
pub trait AgainCopy<T> {
    fn again(self) -> T
    where
        T: Reusable;
}

impl<T> AgainCopy<T> for Again<'_, T> {
    fn again(self) -> T
    where
        T: Reusable,
    {
        *self.0
    }
}

/// An argument `#[pglock::retry_locks]` can give to each attempt of the body: a reference, or a
/// `Copy` value. An owned value that is not `Copy` would be moved into the first attempt and
/// gone for the next.
#[diagnostic::on_unimplemented(
    message = "`#[pglock::retry_locks]` runs the function's body once per attempt, and this \
               argument (`{Self}`) cannot be given to it again: it is owned and not `Copy`",
    label = "moved into the first attempt, gone for the next",
    note = "take it by reference (`&{Self}`, or `&str` for a `String`), or clone what you need \
            from a reference inside the body: an attempt that times out is rolled back and the \
            body runs again from the start"
)]
pub trait Reusable: Copy {}

impl<T: Copy> Reusable for T {}
