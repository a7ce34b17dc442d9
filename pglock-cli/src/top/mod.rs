//! `pglock top`: a live view of the blocking tree and the lock list, refreshed every few
//! seconds, from which sessions can be selected and terminated or cancelled.
//!
//! Three parts that know nothing of each other's machinery:
//! - [`App`] is the state, and what each key does to it (no terminal, no database);
//! - [`draw`] turns the state into a frame (any ratatui backend: the terminal, or a test one);
//! - [`refresh`] and [`execute`] talk to the database: read a [`Snapshot`], signal sessions.
//!
//! [`run`] ties them to the real terminal.
//!
//! ```no_run
//! # async fn example(mut conn: sqlx::PgConnection) -> Result<(), pglock_cli::top::Error> {
//! use std::time::Duration;
//! use pglock_cli::top::{App, Source};
//!
//! let source = Source::new(pglock::locks(), pglock::blocked_locks());
//! let mut app = App::new(0, Duration::from_secs(2));
//! pglock_cli::top::refresh(&mut conn, &source, &mut app).await;
//! println!("{} root blockers", app.snapshot().root_blockers().len());
//! # Ok(()) }
//! ```

mod app;
mod snapshot;
mod terminal;
mod view;

use std::fmt;
use std::time::SystemTime;

use pglock::{BlockedLockQuery, LockQuery, Signal};
use sqlx::PgConnection;

pub use app::{App, Command, Mode, Pane, Sort};
// `tree_rows` and `Edge` also draw `pglock tree`, so that both show each session once.
pub use snapshot::{Edge, LockRow, Session, Snapshot, TreeRow, tree_rows};
pub use terminal::{Ended, Options, run};
pub use view::{MIN_HEIGHT, MIN_WIDTH, Theme, draw};

/// What the view lists: the command's filters, as the inspection API's queries.
#[derive(Clone, Debug)]
pub struct Source {
    locks: LockQuery,
    blocked: BlockedLockQuery,
}

impl Source {
    /// `locks` fills the lock list, `blocked` the blocking tree.
    pub fn new(locks: LockQuery, blocked: BlockedLockQuery) -> Source {
        Source { locks, blocked }
    }

    /// Read both, and build the snapshot the view shows.
    ///
    /// # Errors
    /// When a query fails.
    ///
    /// # Cancel safety
    /// Cancel-safe: it only reads.
    pub async fn snapshot(&self, conn: &mut PgConnection) -> Result<Snapshot, pglock::Error> {
        let pairs = self.blocked.fetch(&mut *conn).await?;
        let locks = self.locks.fetch(&mut *conn).await?;
        Ok(Snapshot::new(pairs, locks, SystemTime::now()))
    }
}

/// Read a new snapshot into `app`; a failure is shown in its status line, and the last
/// snapshot stays.
///
/// # Cancel safety
/// Cancel-safe: it only reads.
pub async fn refresh(conn: &mut PgConnection, source: &Source, app: &mut App) {
    match source.snapshot(conn).await {
        Ok(snapshot) => app.update(snapshot),
        Err(error) => app.say(format!("Refresh failed: {error}")),
    }
}

/// Carry out what a key asked for. Returns `false` on [`Command::Quit`].
///
/// A signal goes to the backends asked for that still hold or wait for a lock of this
/// database, in one statement, never to the view's own session (the inspection API's
/// guarantee); a refresh follows.
///
/// # Cancel safety
/// Not cancel-safe once signalling: a cancelled call may have signalled without reporting it.
pub async fn execute(
    conn: &mut PgConnection,
    source: &Source,
    app: &mut App,
    command: Command,
) -> bool {
    match command {
        Command::Quit => return false,
        Command::Refresh => {}
        Command::Signal { signal, pids } => {
            let query = pglock::locks().pids(pids.iter().copied());
            let done = match signal {
                Signal::Cancel => query.cancel(&mut *conn).await,
                _ => query.terminate(&mut *conn).await,
            };
            match done {
                Ok(done) => app.signalled(signal, &pids, &done),
                Err(error) => app.say(format!("Nothing signalled: {error}")),
            }
        }
    }
    refresh(conn, source, app).await;
    true
}

/// Why the live view stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Standard output is not a terminal.
    NotATerminal,
    /// The terminal could not be set up, read or drawn on.
    Terminal(std::io::Error),
    /// The database failed before the view started.
    Database(pglock::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotATerminal => f.write_str(
                "pglock top needs a terminal; for output to a pipe or a file, use pglock --watch",
            ),
            Error::Terminal(error) => write!(f, "the terminal failed: {error}"),
            Error::Database(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Error::Terminal(error)
    }
}

impl From<pglock::Error> for Error {
    fn from(error: pglock::Error) -> Self {
        Error::Database(error)
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Error::Database(error.into())
    }
}
