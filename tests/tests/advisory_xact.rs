//! Transaction-level locks: on a caller's transaction, and in the scope pglock opens on a pool.

mod common;

use common::{advisory_locks, free_for, locks_on, pid};
use pglock::{Error, LockTarget, advisory};
use pglock_tests::TestDb;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread")]
async fn an_xact_lock_lasts_until_commit_or_rollback() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut other = db.connect().await;

    for commit in [true, false] {
        let mut tx = conn.begin().await.unwrap();
        let guard = advisory("batch").xact().acquire(&mut tx).await.unwrap();
        assert!(guard.is_xact());
        guard.release().await.unwrap(); // ends the guard; the lock stays with the transaction
        let rows = locks_on(db.pool(), "batch").await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].mode, "ExclusiveLock");
        assert!(!free_for(&mut other, "batch").await);
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
        assert!(
            locks_on(db.pool(), "batch").await.is_empty(),
            "commit={commit}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_xact_locks_and_every_wait_mode_work_in_a_transaction() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.unwrap();
    let locks = [
        advisory("a").xact().shared(),
        advisory("b").xact().nowait(),
        advisory("c")
            .xact()
            .timeout(std::time::Duration::from_secs(1)),
        advisory("d").xact().wait_forever(),
        advisory((1, 2)).xact().shared().nowait(),
    ];
    let count = locks.len();
    for lock in locks {
        drop(lock.acquire(&mut tx).await.unwrap());
    }
    let rows = advisory_locks(db.pool()).await;
    assert_eq!(rows.len(), count);
    assert_eq!(rows.iter().filter(|row| row.mode == "ShareLock").count(), 2);
    tx.commit().await.unwrap();
    assert!(advisory_locks(db.pool()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xact_lock_outside_a_transaction_is_refused() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let error = advisory("loose")
        .xact()
        .acquire(&mut conn)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::NotInTransaction { target: LockTarget::Advisory(ref lock) } if lock.name() == "loose")
    );
    // On a pool, acquire has no transaction to put it in: the message points at scope.
    let error = advisory("loose")
        .xact()
        .acquire(db.pool())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("scope"), "{error}");
    let mut pooled = db.pool().acquire().await.unwrap();
    assert!(matches!(
        advisory("loose").xact().nowait().acquire(&mut pooled).await,
        Err(Error::NotInTransaction { .. })
    ));
    assert!(advisory_locks(db.pool()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xact_scope_on_a_pool_commits_on_ok_and_rolls_back_on_err() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE ledger (entry text)")
        .execute(db.pool())
        .await
        .unwrap();
    let pool = db.pool_with(2).await;
    let observer = db.pool().clone();

    let observed = observer.clone();
    let committed = advisory("ledger")
        .xact()
        .scope(&pool, async |conn| {
            sqlx::query("INSERT INTO ledger VALUES ('kept')")
                .execute(&mut *conn)
                .await?;
            // The body runs inside pglock's transaction, holding the lock.
            // The INSERT's transaction id is still assigned only if its transaction is open.
            let in_tx: bool = sqlx::query_scalar("SELECT txid_current_if_assigned() IS NOT NULL")
                .fetch_one(&mut *conn)
                .await?;
            let rows = locks_on(&observed, "ledger").await;
            Ok::<_, Error>((in_tx, rows, pid(conn).await))
        })
        .await
        .unwrap();
    let (in_tx, rows, body_pid) = committed;
    assert!(in_tx, "the body ran inside a transaction");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].pid, body_pid);

    let failed: Result<(), Error> = advisory("ledger")
        .xact()
        .scope(&pool, async |conn| {
            sqlx::query("INSERT INTO ledger VALUES ('dropped')")
                .execute(&mut *conn)
                .await?;
            Err(Error::InvalidArgument("the body failed".into()))
        })
        .await;
    assert!(matches!(failed, Err(Error::InvalidArgument(ref m)) if m == "the body failed"));

    let entries: Vec<String> = sqlx::query_scalar("SELECT entry FROM ledger")
        .fetch_all(&observer)
        .await
        .unwrap();
    assert_eq!(entries, ["kept"]);
    assert!(advisory_locks(&observer).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_xact_scope_on_a_pool_skips_or_fails_when_the_lock_is_held() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let held = advisory("nightly").acquire(&mut holder).await.unwrap();
    let pool = db.pool_with(1).await;

    let skipped = advisory("nightly")
        .xact()
        .nowait()
        .try_scope(&pool, async |_| -> Result<(), Error> {
            panic!("must not run")
        })
        .await
        .unwrap();
    assert!(skipped.is_none());
    let error = advisory("nightly")
        .xact()
        .timeout(std::time::Duration::from_millis(50))
        .scope(&pool, async |_| -> Result<(), Error> {
            panic!("must not run")
        })
        .await
        .unwrap_err();
    assert!(matches!(error, Error::LockTimeout { .. }), "{error:?}");

    // The pool's only connection came back usable, outside any transaction.
    let mut conn = pool.acquire().await.unwrap();
    assert!(!conn.is_in_transaction());
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    drop(conn);
    held.release().await.unwrap();
}
