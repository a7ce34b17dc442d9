//! Advisory locks exclude other sessions, show in `pg_locks` as Postgres records them, and are
//! taken through every kind of handle.

mod common;

use common::{advisory_locks, free_for, locks_on, pid, until_someone_waits};
use pglock::{AdvisoryKey, Error, LockId, LockTarget, advisory, advisory_id};
use pglock_tests::TestDb;
use sqlx::Connection;

#[tokio::test(flavor = "multi_thread")]
async fn exclusive_lock_excludes_another_session_and_shows_in_pg_locks() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let mut other = db.connect().await;
    let holder_pid = pid(&mut holder).await;

    let guard = advisory("report").acquire(&mut holder).await.unwrap();

    let rows = advisory_locks(db.pool()).await;
    let (classid, objid) = advisory_id("report");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].pid, holder_pid);
    assert_eq!(rows[0].mode, "ExclusiveLock");
    assert!(rows[0].granted);
    assert_eq!(
        (rows[0].classid, rows[0].objid),
        (classid.into(), objid.into())
    );
    assert_eq!(rows[0].objsubid, 1);

    assert!(!free_for(&mut other, "report").await);
    let busy = advisory("report")
        .nowait()
        .acquire(&mut other)
        .await
        .unwrap_err();
    assert!(
        matches!(busy, Error::Busy { target: LockTarget::Advisory(ref lock) } if lock.name() == "report"),
        "{busy:?}"
    );
    assert!(busy.is_not_acquired());

    guard.release().await.unwrap();
    assert!(advisory_locks(db.pool()).await.is_empty());
    let other_guard = advisory("report")
        .nowait()
        .acquire(&mut other)
        .await
        .unwrap();
    other_guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_locks_admit_each_other_and_exclude_exclusive_ones() {
    let db = TestDb::new().await;
    let (mut a, mut b, mut c) = (db.connect().await, db.connect().await, db.connect().await);

    let reader_a = advisory("catalog")
        .shared()
        .nowait()
        .acquire(&mut a)
        .await
        .unwrap();
    let reader_b = advisory("catalog")
        .shared()
        .nowait()
        .acquire(&mut b)
        .await
        .unwrap();
    assert!(!free_for(&mut c, "catalog").await);

    let rows = locks_on(db.pool(), "catalog").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(
        rows.iter()
            .all(|row| row.mode == "ShareLock" && row.granted)
    );

    reader_a.release().await.unwrap();
    assert!(!free_for(&mut c, "catalog").await);
    reader_b.release().await.unwrap();
    let writer = advisory("catalog").nowait().acquire(&mut c).await.unwrap();
    assert!(
        advisory("catalog")
            .shared()
            .nowait()
            .try_acquire(&mut a)
            .await
            .unwrap()
            .is_none()
    );
    writer.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn integer_and_pair_keys_show_as_postgres_records_them() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut other = db.connect().await;

    let ids: [LockId; 5] = [
        (i32::MIN, -1).into(),
        (7, 8).into(),
        i64::MIN.into(),
        (-1_i64).into(),
        "my_lock_id".into(), // hashes to a negative key: classid above 2^31
    ];
    for id in &ids {
        let guard = advisory(id.clone())
            .nowait()
            .acquire(&mut conn)
            .await
            .unwrap();
        let rows = locks_on(db.pool(), id.clone()).await;
        assert_eq!(rows.len(), 1, "{id}: {rows:?}");
        let expected_subid = match id.key() {
            AdvisoryKey::Pair(..) => 2,
            _ => 1,
        };
        assert_eq!(rows[0].objsubid, expected_subid);
        assert!(!free_for(&mut other, id.clone()).await);
        guard.release().await.unwrap();
    }
    let (classid, _) = advisory_id("my_lock_id");
    assert_eq!(classid, 3472809032);
    // The pair key space and the bigint key space never collide.
    let pair = advisory((0, 5)).nowait().acquire(&mut conn).await.unwrap();
    let bigint = advisory(5_i64).nowait().acquire(&mut other).await.unwrap();
    pair.release().await.unwrap();
    bigint.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_handle_type_holds_the_lock_on_its_own_session() {
    let db = TestDb::new().await;
    let mut other = db.connect().await;
    let observer = db.pool();

    // &PgPool: the guard keeps one connection checked out and the lock lives on it.
    let pool = db.pool_with(2).await;
    let mut guard = advisory("handles").acquire(&pool).await.unwrap();
    let guard_pid = pid(&mut guard).await;
    assert_eq!(locks_on(observer, "handles").await[0].pid, guard_pid);
    assert!(!free_for(&mut other, "handles").await);
    guard.release().await.unwrap();
    assert!(locks_on(observer, "handles").await.is_empty());

    // &mut PoolConnection<Postgres>
    let mut pooled = pool.acquire().await.unwrap();
    let pooled_pid = pid(&mut pooled).await;
    let guard = advisory("handles").acquire(&mut pooled).await.unwrap();
    assert_eq!(locks_on(observer, "handles").await[0].pid, pooled_pid);
    assert!(!free_for(&mut other, "handles").await);
    guard.release().await.unwrap();

    // &mut Transaction<'_, Postgres>: a session lock survives the transaction.
    let mut tx = pooled.begin().await.unwrap();
    let guard = advisory("handles").acquire(&mut tx).await.unwrap();
    assert!(!free_for(&mut other, "handles").await);
    guard.release().await.unwrap();
    tx.commit().await.unwrap();

    // &mut PgConnection
    let mut conn = db.connect().await;
    let guard = advisory("handles").acquire(&mut conn).await.unwrap();
    assert!(!free_for(&mut other, "handles").await);
    guard.release().await.unwrap();
    assert!(advisory_locks(observer).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_lock_pins_one_connection_and_returns_it_unlocked() {
    let db = TestDb::new().await;
    let pool = db.pool_with(1).await;

    let mut guard = advisory("pinned").acquire(&pool).await.unwrap();
    // The only connection is the guard's: the pool has none to lend meanwhile.
    assert!(pool.try_acquire().is_none());
    let guard_pid = pid(&mut guard).await;
    guard.release().await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(
        pid(&mut conn).await,
        guard_pid,
        "the same connection came back to the pool"
    );
    assert!(advisory_locks(db.pool()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn locks_are_reentrant_and_each_acquisition_needs_its_release() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut other = db.connect().await;

    let mut on_guard = advisory(11_i64).acquire(&mut conn).await.unwrap();
    // Taken again through the guard itself: same session, granted at once.
    let inner = advisory(11_i64)
        .nowait()
        .acquire(&mut on_guard)
        .await
        .unwrap();
    inner.release().await.unwrap();
    assert_eq!(
        locks_on(db.pool(), 11_i64).await.len(),
        1,
        "still held once"
    );
    assert!(!free_for(&mut other, 11_i64).await);
    on_guard.release().await.unwrap();
    assert!(locks_on(db.pool(), 11_i64).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_acquire_gets_the_lock_when_the_holder_releases() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let guard = advisory("queue").acquire(&mut holder).await.unwrap();

    let pool = db.pool_with(1).await;
    let waiter = tokio::spawn(async move {
        let mut guard = advisory("queue").acquire(&pool).await.unwrap();
        let waiter_pid = pid(&mut guard).await;
        (guard, waiter_pid)
    });
    until_someone_waits(db.pool(), "queue").await;
    guard.release().await.unwrap();
    let (guard, waiter_pid) = waiter.await.unwrap();
    let rows = locks_on(db.pool(), "queue").await;
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].pid, rows[0].granted), (waiter_pid, true));
    guard.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unusual_ids_lock_by_their_hash() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut other = db.connect().await;
    let long = "long-".repeat(200_000);
    for name in [
        "",
        "it's a \"quote\"",
        "nul\0byte",
        "ロック",
        "'); DROP TABLE x; --",
        &long,
    ] {
        let guard = advisory(name).nowait().acquire(&mut conn).await.unwrap();
        let rows = locks_on(db.pool(), name).await;
        assert_eq!(rows.len(), 1, "lock {name:.20?} shows under its hash");
        assert!(!free_for(&mut other, name).await);
        guard.release().await.unwrap();
    }
    assert!(advisory_locks(db.pool()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn releasing_a_lock_the_session_lost_reports_it() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut guard = advisory("lost").acquire(&mut conn).await.unwrap();
    sqlx::query("SELECT pg_advisory_unlock_all()")
        .execute(&mut *guard)
        .await
        .unwrap();
    let error = guard.release().await.unwrap_err();
    assert!(
        matches!(error, Error::NotHeld { ref lock } if lock.name() == "lost"),
        "{error:?}"
    );
}
