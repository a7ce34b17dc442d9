//! An advisory lock as the state of a scope entered on a handle (see `crate::scope`): what the
//! attributes hold while the function's body runs.

use sqlx::{AssertSqlSafe, PgPool};

use super::guard::{AdvisoryGuard, Forgotten};
use crate::handle::{CloseUnlessKept, Conn};
use crate::scope::{Held, Kind, Site};
use crate::{Advisory, Error};

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
        Ok(AdvisoryHeld::Owned(
            self.take(Conn::Owned(conn, pool)).await?,
        ))
    }
}

impl Advisory {
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
            Ok(_) => Ok(AdvisoryHeld::OwnedTransaction(owned)),
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
    /// On a connection of a pool that pglock checked out and owns: the guard owns it.
    Owned(AdvisoryGuard<'static>),
    /// Transaction-level, inside a transaction pglock opened on a connection it owns.
    OwnedTransaction(CloseUnlessKept),
    /// On the site's own session, which the scope lends to its body: the lock without it.
    Lent(Forgotten),
}

impl Held for AdvisoryHeld {
    fn describe(&self) -> String {
        let id = match self {
            AdvisoryHeld::Owned(guard) => guard.id().to_string(),
            AdvisoryHeld::OwnedTransaction(_) => return "a transaction-level lock".into(),
            AdvisoryHeld::Lent(lock) => lock.id.to_string(),
        };
        format!("lock \"{id}\"")
    }

    async fn end<H: Site>(self, site: &mut H, body_failed: bool) -> Result<(), Error> {
        match self {
            AdvisoryHeld::Owned(guard) => guard.release().await,
            AdvisoryHeld::OwnedTransaction(mut owned) => {
                end_transaction(&mut owned, !body_failed).await?;
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
            AdvisoryHeld::Owned(guard) => drop(guard),
            AdvisoryHeld::OwnedTransaction(owned) => drop(owned),
            AdvisoryHeld::Lent(lock) => {
                if let Some(conn) = site.session() {
                    drop(AdvisoryGuard::held(conn, lock));
                }
            }
        }
    }
}
