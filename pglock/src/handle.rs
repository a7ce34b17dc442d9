//! The database handles a lock can be taken through, and the connection a lock lives on.

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// A database handle pglock can take a lock through: `&PgPool`, `&mut PgConnection`,
/// `&mut PoolConnection<Postgres>`, `&mut Transaction<'_, Postgres>`, or `&mut` a guard
/// pglock handed out (to take more locks on the same session).
///
/// Through a pool, pglock checks out one connection and keeps it for the guard's whole life,
/// so the lock and the unlock never travel on two different sessions. What each handle allows
/// when a future is dropped is in the `# Cancel safety` section of
/// [`Advisory::acquire`](crate::Advisory::acquire).
///
/// This trait is sealed: it is implemented for those handles only.
pub trait Db<'c>: sealed::IntoHandle<'c> {}

impl<'c, T: sealed::IntoHandle<'c>> Db<'c> for T {}

/// A handle on exactly one database session: what [`Db`] accepts, except a pool.
///
/// Lock timeouts and [`prioritize`](fn@crate::prioritize) act on one backend, so they take one of
/// these: `&mut PgConnection`, `&mut PoolConnection<Postgres>`, `&mut Transaction<'_, Postgres>`,
/// or `&mut` a guard pglock handed out. A pool is rejected at compile time: which of its
/// connections would the setting apply to?
///
/// ```compile_fail
/// # async fn f(pool: &sqlx::PgPool) -> Result<(), pglock::Error> {
/// pglock::timeout(std::time::Duration::from_secs(1))
///     .scope(pool, async |_| Ok::<_, pglock::Error>(()))
///     .await
/// # }
/// ```
pub trait Session<'c>: Db<'c> + sealed::OneSession {}

impl<'c, T: Db<'c> + sealed::OneSession> Session<'c> for T {}

pub(crate) use sealed::Handle;

/// A connection checked out of `pool`.
///
/// sqlx's checkout future is some 14 KB (the whole connect path lives inside it), and a future
/// that awaits it holds it inline, whatever branch it takes: every lock future would be that
/// large even on a borrowed connection, and every `.await` up the call chain moves (copies) it.
/// Boxed, it costs one allocation on the pool path, and the futures around it stay a few
/// hundred bytes. (Measured on the attribute's path: some 1,400 instructions of `memcpy` per
/// call, about as much as the rest of pglock's own work.)
pub(crate) async fn checkout(pool: &PgPool) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    Box::pin(pool.acquire()).await
}

mod sealed {
    use super::*;

    /// A handle, sorted by what pglock may do with its connection.
    pub enum Handle<'c> {
        /// pglock checks a connection out of the pool and owns it. Held by value (a pool is a
        /// reference-counted handle) so that a pool's guard borrows nothing.
        Pool(PgPool),
        /// A connection that may be returned to its pool; pglock can mark it to be closed.
        PoolConnection(&'c mut PoolConnection<Postgres>),
        /// Any other borrowed connection.
        Connection(&'c mut PgConnection),
    }

    pub trait IntoHandle<'c> {
        fn into_handle(self) -> Handle<'c>;
    }

    /// Marks the handles that are one session (every handle but a pool).
    pub trait OneSession {}

    impl OneSession for &mut PgConnection {}
    impl OneSession for &mut PoolConnection<Postgres> {}
    impl OneSession for &mut Transaction<'_, Postgres> {}
    impl OneSession for &mut crate::AdvisoryGuard<'_> {}

    /// A guard taken through a pool owns its connection, so it is `AdvisoryGuard<'static>`:
    /// it can outlive the borrow of the pool and move into a spawned task.
    impl IntoHandle<'static> for &PgPool {
        fn into_handle(self) -> Handle<'static> {
            Handle::Pool(self.clone())
        }
    }

    impl<'c> IntoHandle<'c> for &'c mut PgConnection {
        fn into_handle(self) -> Handle<'c> {
            Handle::Connection(self)
        }
    }

    impl<'c> IntoHandle<'c> for &'c mut PoolConnection<Postgres> {
        fn into_handle(self) -> Handle<'c> {
            Handle::PoolConnection(self)
        }
    }

    impl<'c> IntoHandle<'c> for &'c mut Transaction<'_, Postgres> {
        fn into_handle(self) -> Handle<'c> {
            Handle::Connection(self)
        }
    }

    impl<'c> IntoHandle<'c> for &'c mut crate::AdvisoryGuard<'_> {
        fn into_handle(self) -> Handle<'c> {
            Handle::Connection(self)
        }
    }
}

/// The connection a lock lives on.
pub enum Conn<'c> {
    /// Checked out of `pool` by pglock. Dropping it mid-statement closes it, which is what makes
    /// waits on a pool cancel-safe (see `sql::CLIENT_CHECK_MS`). The pool is kept for the
    /// servers where closing is not enough (see `advisory::orphan`).
    Owned(PoolConnection<Postgres>, PgPool),
    /// Inside a transaction pglock opened on a connection of `pool` that it owns and closes if
    /// the future that holds it is dropped (the transaction-level scope on a pool).
    InOwnedTransaction(&'c mut PgConnection, PgPool),
    /// The caller's pool connection: pglock can only ask the pool to close it rather than reuse it.
    PoolConnection(&'c mut PoolConnection<Postgres>),
    /// The caller's connection: pglock can do nothing to it outside an `async` call.
    Connection(&'c mut PgConnection),
}

impl<'c> Conn<'c> {
    /// Whether the connection is closed if the future using it is dropped, so that a wait on it
    /// can be made to end on the server.
    pub(crate) fn closes_on_drop(&self) -> bool {
        self.owner_pool().is_some()
    }

    /// The pool of a connection pglock owns.
    pub(crate) fn owner_pool(&self) -> Option<&PgPool> {
        match self {
            Conn::Owned(_, pool) | Conn::InOwnedTransaction(_, pool) => Some(pool),
            Conn::PoolConnection(_) | Conn::Connection(_) => None,
        }
    }

    /// Make sure the session ends soon, taking whatever it holds or waits for with it.
    /// Never blocks.
    pub(crate) fn abandon(self) {
        match self {
            // Closing the socket ends the server session: at once when it is idle, within
            // `CLIENT_CHECK_MS` when it is waiting on a lock.
            Conn::Owned(conn, _) => drop(conn.detach()),
            Conn::PoolConnection(conn) => conn.close_on_drop(),
            // Closed by its owner (`CloseUnlessKept`), or out of pglock's reach.
            Conn::InOwnedTransaction(..) | Conn::Connection(_) => {}
        }
    }
}

impl Deref for Conn<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        match self {
            Conn::Owned(conn, _) => conn,
            Conn::PoolConnection(conn) => conn,
            Conn::InOwnedTransaction(conn, _) | Conn::Connection(conn) => conn,
        }
    }
}

impl DerefMut for Conn<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        match self {
            Conn::Owned(conn, _) => conn,
            Conn::PoolConnection(conn) => conn,
            Conn::InOwnedTransaction(conn, _) | Conn::Connection(conn) => conn,
        }
    }
}

impl Conn<'_> {
    /// Whether the connection is inside a transaction: one begun through sqlx, or the one pglock
    /// opened itself on a connection it owns.
    pub(crate) fn is_in_transaction(&self) -> bool {
        match self {
            Conn::InOwnedTransaction(..) => true,
            conn => sqlx::Connection::is_in_transaction(&**conn),
        }
    }
}

/// A connection that is [abandoned](Conn::abandon) if dropped before [`keep`](Self::keep): for a
/// statement whose future may be dropped mid-flight, leaving the session in a state that must not
/// reach another user (a setting changed and not read back).
pub(crate) struct AbandonUnlessKept<'c> {
    conn: Option<Conn<'c>>,
    armed: bool,
}

impl<'c> AbandonUnlessKept<'c> {
    /// Guard `conn`, if `guard` says it needs it; otherwise this only lends it.
    pub(crate) fn new(conn: Conn<'c>, guard: bool) -> Self {
        AbandonUnlessKept {
            conn: Some(conn),
            armed: guard,
        }
    }

    /// The statement finished: nothing to abandon.
    pub(crate) fn keep(mut self) {
        self.conn = None;
    }
}

impl Drop for AbandonUnlessKept<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.armed
        {
            conn.abandon();
        }
    }
}

impl Deref for AbandonUnlessKept<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        self.conn.as_ref().expect("kept only by value")
    }
}

impl DerefMut for AbandonUnlessKept<'_> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        self.conn.as_mut().expect("kept only by value")
    }
}

/// A connection pglock owns that is closed when dropped, unless [`keep`](Self::keep) returns it
/// to its pool.
pub struct CloseUnlessKept(Option<PoolConnection<Postgres>>);

impl CloseUnlessKept {
    pub(crate) fn new(conn: PoolConnection<Postgres>) -> Self {
        CloseUnlessKept(Some(conn))
    }

    pub(crate) fn conn(&mut self) -> &mut PgConnection {
        self.0
            .as_mut()
            .expect("connection taken only by keep or drop")
    }

    pub(crate) fn keep(mut self) {
        drop(self.0.take());
    }
}

impl Drop for CloseUnlessKept {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            // Closing the socket ends the session on the server (see `Conn::abandon`).
            drop(conn.detach());
        }
    }
}
