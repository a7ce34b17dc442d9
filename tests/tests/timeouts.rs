//! The timeouts beside `lock_timeout`: `statement_timeout`, `idle_in_transaction_session_timeout`
//! and `transaction_timeout` scopes set their setting on one session, nest, restore what they
//! found, stay transaction-local in a transaction, and leave nothing on a pooled connection.

mod common;

use std::time::Duration;

use common::{exec, pid, server_version};
use pglock::setting::Setting;
use pglock::{
    Error, Timeout, idle_in_transaction_session_timeout, statement_timeout, transaction_timeout,
};
use pglock_tests::TestDb;
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Postgres};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn show(conn: &mut PgConnection, name: &str) -> String {
    sqlx::query_scalar(AssertSqlSafe(format!("SHOW {name}")))
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Set, nest and restore, on a session and inside a transaction, for the setting of `make`.
async fn sets_nests_and_restores<S: Setting>(make: fn(Option<Duration>) -> Timeout<S>) {
    let db = TestDb::new().await;
    let name = S::NAME;
    let mut conn = db.connect().await;
    exec(&mut conn, &format!("SET {name} = '9s'")).await;

    make(Some(secs(1)))
        .scope(&mut conn, async |conn| {
            assert_eq!(show(conn, name).await, "1s");
            make(Some(secs(2)))
                .scope(&mut *conn, async |conn| {
                    assert_eq!(show(conn, name).await, "2s");
                    Ok::<_, Error>(())
                })
                .await?;
            assert_eq!(show(conn, name).await, "1s");
            let mut tx = conn.begin().await?;
            make(None)
                .scope(&mut tx, async |tx| {
                    assert_eq!(show(tx, name).await, "0");
                    Ok::<_, Error>(())
                })
                .await?;
            assert_eq!(show(&mut tx, name).await, "1s");
            // Transaction-local: a rollback undoes a scope that could not restore.
            make(Some(secs(3)))
                .scope(&mut tx, async |tx| {
                    assert_eq!(show(tx, name).await, "3s");
                    Ok::<_, Error>(())
                })
                .await?;
            tx.rollback().await?;
            assert_eq!(show(conn, name).await, "1s");
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert_eq!(show(&mut conn, name).await, "9s");

    // A failing body restores too.
    let failed: Result<(), Error> = make(Some(secs(4)))
        .scope(&mut conn, async |_| {
            Err(Error::InvalidArgument("body".into()))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(show(&mut conn, name).await, "9s");
}

/// On a pooled connection: restored before the connection goes back; and when the scope's
/// future is dropped mid-body, the connection is closed rather than reused with the value.
async fn leaves_nothing_on_a_pooled_connection<S: Setting>(
    make: fn(Option<Duration>) -> Timeout<S>,
) {
    let db = TestDb::new().await;
    let name = S::NAME;
    let pool = db.pool_with(1).await;
    let mut conn: PoolConnection<Postgres> = pool.acquire().await.unwrap();
    let default = show(&mut conn, name).await;
    let first_pid = pid(&mut conn).await;
    make(Some(secs(7)))
        .scope(&mut conn, async |conn| {
            assert_eq!(show(conn, name).await, "7s");
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    drop(conn);
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        pid(&mut conn).await,
        first_pid,
        "the same session came back"
    );
    assert_eq!(show(&mut conn, name).await, default);

    let dropped = tokio::time::timeout(
        Duration::from_millis(200),
        make(Some(secs(8))).scope(&mut conn, async |conn| {
            sqlx::query("SELECT pg_sleep(30)")
                .execute(&mut *conn)
                .await?;
            Ok::<_, Error>(())
        }),
    )
    .await;
    assert!(dropped.is_err(), "the scope was dropped mid-body");
    drop(conn);
    let mut conn = pool.acquire().await.unwrap();
    assert_ne!(pid(&mut conn).await, first_pid, "that session was closed");
    assert_eq!(show(&mut conn, name).await, default);
}

#[tokio::test(flavor = "multi_thread")]
async fn statement_timeout_sets_nests_and_restores() {
    sets_nests_and_restores(statement_timeout).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn statement_timeout_leaves_nothing_on_a_pooled_connection() {
    leaves_nothing_on_a_pooled_connection(statement_timeout).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_in_transaction_timeout_sets_nests_and_restores() {
    sets_nests_and_restores(idle_in_transaction_session_timeout).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_in_transaction_timeout_leaves_nothing_on_a_pooled_connection() {
    leaves_nothing_on_a_pooled_connection(idle_in_transaction_session_timeout).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_past_the_statement_timeout_is_a_statement_timeout_error() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let result: Result<(), Error> = statement_timeout(Duration::from_millis(100))
        .scope(&mut conn, async |conn| {
            sqlx::query("SELECT pg_sleep(10)")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
        .await;
    assert!(
        matches!(result, Err(Error::StatementTimeout { .. })),
        "{result:?}"
    );
    // A cancel from another session is the same SQLSTATE, and is not a statement timeout.
    let victim = pid(&mut conn).await;
    let pool = db.pool().clone();
    let cancel = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        sqlx::query("SELECT pg_cancel_backend($1)")
            .bind(victim)
            .execute(&pool)
            .await
            .unwrap();
    });
    let cancelled = sqlx::query("SELECT pg_sleep(10)").execute(&mut conn).await;
    cancel.await.unwrap();
    let cancelled = Error::from(cancelled.unwrap_err());
    assert!(matches!(cancelled, Error::Database(_)), "{cancelled:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn transaction_timeout_needs_postgres_17() {
    let db = TestDb::new().await;
    let version = server_version(db.pool()).await;
    if version >= 170000 {
        sets_nests_and_restores(transaction_timeout).await;
        leaves_nothing_on_a_pooled_connection(transaction_timeout).await;
        return;
    }
    let mut conn = db.connect().await;
    let mut ran = false;
    let result = transaction_timeout(secs(5))
        .scope(&mut conn, async |_| {
            ran = true;
            Ok::<_, Error>(())
        })
        .await;
    match result {
        Err(Error::Unsupported {
            setting: "transaction_timeout",
            since: 170000,
            server,
        }) => assert_eq!(server as i32, version),
        other => panic!("expected Error::Unsupported, got {other:?}"),
    }
    assert!(!ran, "the body did not run");
    let message = Error::Unsupported {
        setting: "transaction_timeout",
        since: 170000,
        server: version as u32,
    }
    .to_string();
    assert!(
        message.contains("Postgres 17") && message.contains(&format!("{}.", version / 10000)),
        "{message}"
    );
}

#[pglock::timeout(lock = "1s", statement = "30s", idle_in_transaction = "1min")]
async fn three_settings(conn: &mut PgConnection) -> Result<[String; 3], Error> {
    Ok([
        show(conn, "lock_timeout").await,
        show(conn, "statement_timeout").await,
        show(conn, "idle_in_transaction_session_timeout").await,
    ])
}

#[pglock::timeout(5)]
async fn bare_limit(conn: &mut PgConnection) -> Result<String, Error> {
    Ok(show(conn, "lock_timeout").await)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attribute_sets_each_setting_given_and_restores_them() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    assert_eq!(
        three_settings(&mut conn).await.unwrap(),
        ["1s", "30s", "1min"]
    );
    assert_eq!(bare_limit(&mut conn).await.unwrap(), "5s");
    for name in [
        "lock_timeout",
        "statement_timeout",
        "idle_in_transaction_session_timeout",
    ] {
        assert_eq!(show(&mut conn, name).await, "0", "{name} restored");
    }
}
