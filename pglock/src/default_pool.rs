//! The process-wide pool that attributes fall back on when a function has no handle argument.

use std::sync::{PoisonError, RwLock};

use sqlx::PgPool;

use crate::Error;

static DEFAULT: RwLock<Option<PgPool>> = RwLock::new(None);

/// Set the pool that `#[pglock::advisory]` uses for functions without a pool or connection
/// argument, and that `#[pglock::prioritize]` runs its background task with when the function has
/// no pool argument. Calling it again replaces the pool (pools already handed out live on).
///
/// ```no_run
/// # async fn setup() -> Result<(), sqlx::Error> {
/// let pool = sqlx::PgPool::connect("postgres://localhost/app").await?;
/// pglock::set_default_pool(pool);
/// # Ok(()) }
/// ```
pub fn set_default_pool(pool: PgPool) {
    *DEFAULT.write().unwrap_or_else(PoisonError::into_inner) = Some(pool);
}

/// The default pool: the one given to [`set_default_pool`], else one built (lazily: it connects
/// on first use) from the `DATABASE_URL` environment variable and kept for later calls.
///
/// A `PgPool` is a cheap, reference-counted handle; reading it takes a read lock held only
/// for that clone, so it never waits on anything but a concurrent `set_default_pool`.
///
/// # Errors
/// [`Error::NoDatabase`] when neither is available, or [`Error::Database`] when `DATABASE_URL`
/// is not a valid Postgres URL.
pub fn default_pool() -> Result<PgPool, Error> {
    if let Some(pool) = DEFAULT
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        return Ok(pool.clone());
    }
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .ok_or(Error::NoDatabase)?;
    let mut slot = DEFAULT.write().unwrap_or_else(PoisonError::into_inner);
    // Another caller may have set or built it meanwhile.
    if let Some(pool) = slot.as_ref() {
        return Ok(pool.clone());
    }
    let pool = PgPool::connect_lazy(&url)?;
    *slot = Some(pool.clone());
    Ok(pool)
}
