//! Statements pglock runs on a connection it owns while it holds a lock there: the heartbeat's
//! check, and the end of the transaction it opened.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Executor, Postgres};

use crate::Error;
use crate::handle::CloseUnlessKept;

/// One heartbeat: a `SELECT 1` on the holding connection, answered within `limit`.
pub(crate) async fn beat<'c>(
    conn: impl Executor<'c, Database = Postgres>,
    limit: Duration,
) -> Result<(), sqlx::Error> {
    match tokio::time::timeout(limit, sqlx::query("SELECT 1").execute(conn)).await {
        Ok(done) => done.map(drop),
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the heartbeat got no reply within {limit:?}"),
        ))),
    }
}

/// Commit (or roll back) the transaction pglock opened on a connection it owns.
pub(super) async fn end_transaction(
    owned: &mut CloseUnlessKept,
    commit: bool,
) -> Result<(), Error> {
    let statement = if commit { "COMMIT" } else { "ROLLBACK" };
    sqlx::raw_sql(AssertSqlSafe(statement))
        .execute(owned.conn())
        .await?;
    Ok(())
}
