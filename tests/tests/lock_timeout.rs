//! `pglock::timeout` scopes: they set `lock_timeout` on one session, nest, restore what they
//! found however they end, and turn statements that wait too long into `Error::LockTimeout`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{backend_exists, eventually, lock_timeout, pid};
use pglock::{Error, LockTarget, timeout};
use pglock_tests::TestDb;
use sqlx::{Connection, PgConnection};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[tokio::test(flavor = "multi_thread")]
async fn nested_scopes_restore_the_value_they_found() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    sqlx::query("CREATE TABLE once (id int PRIMARY KEY)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO once VALUES (1)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("SET lock_timeout = '9s'")
        .execute(&mut conn)
        .await
        .unwrap();

    timeout(secs(1))
        .scope(&mut conn, async |conn| {
            assert_eq!(lock_timeout(conn).await, "1s");
            timeout(secs(2))
                .scope(&mut *conn, async |conn| {
                    assert_eq!(lock_timeout(conn).await, "2s");
                    Ok::<_, Error>(())
                })
                .await?;
            assert_eq!(lock_timeout(conn).await, "1s");

            // Inside a transaction the value is transaction-local.
            let mut tx = conn.begin().await?;
            timeout(secs(3))
                .scope(&mut tx, async |tx| {
                    assert_eq!(lock_timeout(tx).await, "3s");
                    // A failing savepoint inside: its scope cannot restore (the transaction has
                    // failed), and rolling back to the savepoint undoes its value instead.
                    let mut savepoint = tx.begin().await?;
                    let failed: Result<(), Error> = timeout(secs(5))
                        .scope(&mut savepoint, async |sp| {
                            sqlx::query("INSERT INTO once VALUES (1)")
                                .execute(&mut *sp)
                                .await?;
                            Ok(())
                        })
                        .await;
                    assert!(matches!(failed, Err(Error::Database(_))), "{failed:?}");
                    savepoint.rollback().await?;
                    assert_eq!(lock_timeout(tx).await, "3s");
                    timeout(None)
                        .scope(&mut *tx, async |tx| {
                            assert_eq!(lock_timeout(tx).await, "0");
                            Ok::<_, Error>(())
                        })
                        .await?;
                    assert_eq!(lock_timeout(tx).await, "3s");
                    Ok::<_, Error>(())
                })
                .await?;
            assert_eq!(lock_timeout(&mut tx).await, "1s");
            tx.commit().await?;
            assert_eq!(lock_timeout(conn).await, "1s");
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert_eq!(
        lock_timeout(&mut conn).await,
        "9s",
        "the session's own value is back"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_waiting_past_the_limit_fails_with_lock_timeout() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE busy (n int)")
        .execute(db.pool())
        .await
        .unwrap();
    let mut holder = db.connect().await;
    let mut hold = holder.begin().await.unwrap();
    sqlx::query("LOCK TABLE busy IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();

    let mut conn = db.connect().await;
    let error = timeout(Duration::from_millis(100))
        .scope(&mut conn, async |conn| {
            sqlx::query("SELECT count(*) FROM busy")
                .execute(&mut *conn)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    match &error {
        Error::LockTimeout { target, source } => {
            assert_eq!(target, &LockTarget::Statement);
            assert_eq!(
                source.as_database_error().unwrap().code().as_deref(),
                Some("55P03")
            );
        }
        other => panic!("expected a lock timeout, got {other:?}"),
    }
    assert!(error.is_not_acquired());
    assert_eq!(
        lock_timeout(&mut conn).await,
        "0",
        "restored after the error"
    );
    hold.rollback().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_or_panicking_body_still_restores() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let failed: Result<(), Error> = timeout(secs(4))
        .scope(&mut conn, async |_| {
            Err(Error::InvalidArgument("body failed".into()))
        })
        .await;
    assert!(matches!(failed, Err(Error::InvalidArgument(_))));
    assert_eq!(lock_timeout(&mut conn).await, "0");

    let shared = Arc::new(tokio::sync::Mutex::new(conn));
    let in_task = shared.clone();
    let task = tokio::spawn(async move {
        let mut conn = in_task.lock().await;
        timeout(secs(4))
            .scope(&mut *conn, async |_| -> Result<(), Error> {
                panic!("the body panicked")
            })
            .await
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(lock_timeout(&mut *shared.lock().await).await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_scope_never_lends_its_value_to_the_pool() {
    let db = TestDb::new().await;
    let pool = db.pool_with(1).await;
    let mut pooled = pool.acquire().await.unwrap();
    let pooled_pid = pid(&mut pooled).await;

    let scope = timeout(secs(6)).scope(&mut pooled, async |_| {
        std::future::pending::<()>().await;
        Ok::<_, Error>(())
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(100), scope)
            .await
            .is_err()
    );
    // As documented: the connection you still hold keeps the value...
    assert_eq!(lock_timeout(&mut pooled).await, "6s");
    drop(pooled);
    // ...and the pool closes it rather than lending it out again.
    eventually(secs(5), "the marked connection is closed", || async {
        !backend_exists(db.pool(), pooled_pid).await
    })
    .await;
    let mut next = pool.acquire().await.unwrap();
    assert_eq!(lock_timeout(&mut next).await, "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_postgres_cannot_take_are_refused_before_any_sql() {
    let db = TestDb::new().await;
    let mut conn: PgConnection = db.connect().await;
    for limit in [
        Duration::ZERO,
        Duration::from_micros(999),
        Duration::from_secs(30 * 86_400),
    ] {
        let result = timeout(limit)
            .scope(&mut conn, async |_| Ok::<_, Error>(()))
            .await;
        assert!(
            matches!(result, Err(Error::InvalidArgument(_))),
            "{limit:?}: {result:?}"
        );
    }
    assert_eq!(lock_timeout(&mut conn).await, "0");
    assert_eq!(timeout(secs(1)).limit(), Some(secs(1)));
    assert_eq!(timeout(None).limit(), None);
}
