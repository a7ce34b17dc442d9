//! Lock inspection: `pglock::locks()` and `pglock::blocked_locks()` list what `pg_locks`,
//! `pg_stat_activity` and `pg_blocking_pids` show, their filters narrow as documented, and their
//! actions signal exactly the backends they find.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    PATIENCE, Running, backend_exists, bigint_key, eventually, exec, pid, server_version, start,
    until_waiting,
};
use pglock::{AdvisoryKey, Error, LockMode, PgLock, blocked_locks, locks};
use pglock_tests::TestDb;
use sqlx::{Connection, PgConnection, PgPool};

/// The SQLSTATE of a failed statement.
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .map(|code| code.into_owned())
}

/// A time as the epoch seconds Postgres shows, to the microsecond.
fn epoch(time: Option<SystemTime>) -> Option<f64> {
    let seconds = time?.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    Some((seconds * 1e6).round() / 1e6)
}

fn pids_of(rows: &[PgLock]) -> BTreeSet<i32> {
    rows.iter().map(|row| row.pid).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_match_pg_locks_and_pg_stat_activity() {
    let db = TestDb::new().await;
    exec(
        &mut db.connect().await,
        r#"CREATE SCHEMA app; CREATE TABLE app."Things" (id int PRIMARY KEY)"#,
    )
    .await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "SET application_name = 'inspect-holder'").await;
    exec(&mut holder, "BEGIN").await;
    exec(
        &mut holder,
        r#"LOCK TABLE app."Things" IN SHARE ROW EXCLUSIVE MODE"#,
    )
    .await;
    exec(&mut holder, "SELECT pg_advisory_lock(42)").await;
    exec(&mut holder, "SELECT pg_advisory_lock_shared(1, -2)").await;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(bigint_key("report"))
        .execute(&mut holder)
        .await
        .unwrap();
    // The holder's client has its answer a moment before the backend reports waiting for the
    // next statement (a busy machine showed the gap).
    eventually(PATIENCE, "the holder waits for its client", || async {
        sqlx::query_scalar("SELECT coalesce(wait_event = 'ClientRead', false) FROM pg_stat_activity WHERE pid = $1")
            .bind(holder_pid)
            .fetch_one(db.pool())
            .await
            .unwrap()
    })
    .await;

    let rows = locks().pids([holder_pid]).fetch(db.pool()).await.unwrap();

    // The same rows as pg_locks shows for that backend.
    let mut listed: Vec<(String, String, bool)> = rows
        .iter()
        .map(|row| {
            (
                row.lock_type.to_lowercase(),
                row.mode_name.clone(),
                row.granted,
            )
        })
        .collect();
    let mut expected: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT locktype, mode, granted FROM pg_locks WHERE pid = $1")
            .bind(holder_pid)
            .fetch_all(db.pool())
            .await
            .unwrap();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected);

    let table = rows
        .iter()
        .find(|row| row.lock_type == "RELATION")
        .expect("the table lock is listed");
    let relation = table.relation.as_ref().unwrap();
    assert_eq!(
        (relation.schema.as_str(), relation.name.as_str()),
        ("app", "Things")
    );
    assert_eq!(relation.kind, "TABLE");
    assert_eq!(relation.to_string(), "app.Things");
    assert_eq!(table.relation_oid, Some(relation.oid));
    assert_eq!(table.mode, Some(LockMode::ShareRowExclusive));
    assert_eq!(table.mode_name, "ShareRowExclusiveLock");
    assert!(table.granted);
    assert_eq!((table.wait_start, table.wait_duration), (None, None));
    assert_eq!(table.advisory, None);
    let oid: i64 = sqlx::query_scalar(r#"SELECT 'app."Things"'::regclass::oid::int8"#)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(i64::from(relation.oid), oid);

    let advisory: Vec<&PgLock> = rows
        .iter()
        .filter(|row| row.lock_type == "ADVISORY")
        .collect();
    assert_eq!(advisory.len(), 3, "{advisory:#?}");
    let find = |key: AdvisoryKey| {
        *advisory
            .iter()
            .find(|row| row.advisory == Some(key))
            .unwrap_or_else(|| panic!("{key:?} in {advisory:#?}"))
    };
    assert_eq!(
        find(AdvisoryKey::BigInt(42)).mode,
        Some(LockMode::Exclusive)
    );
    let pair = find(AdvisoryKey::Pair(1, -2));
    assert_eq!(pair.mode, Some(LockMode::Share));
    assert!(pair.is_advisory_lock((1, -2)));
    let named = find(pglock::LockId::from("report").key());
    assert!(named.is_advisory_lock("report"));
    assert!(!named.is_advisory_lock("other"));
    assert!(
        advisory
            .iter()
            .all(|row| row.relation.is_none() && row.granted)
    );

    // The transaction's own lock, which django-pglock does not list.
    let vxid = rows
        .iter()
        .find(|row| row.lock_type == "VIRTUALXID")
        .unwrap();
    assert_eq!(vxid.relation, None);
    assert_eq!(vxid.mode, Some(LockMode::Exclusive));

    // Every row carries the holder's activity, as pg_stat_activity shows it.
    let (user, query, backend_start, xact_start): (String, String, f64, f64) = sqlx::query_as(
        "SELECT usename::text, query, date_part('epoch', backend_start), \
         date_part('epoch', xact_start) FROM pg_stat_activity WHERE pid = $1",
    )
    .bind(holder_pid)
    .fetch_one(db.pool())
    .await
    .unwrap();
    for row in &rows {
        let activity = row.activity.as_ref().expect("activity");
        assert_eq!(row.pid, holder_pid);
        assert_eq!(activity.pid, holder_pid);
        assert_eq!(activity.state.as_deref(), Some("IDLE_IN_TRANSACTION"));
        assert_eq!(activity.application_name, "inspect-holder");
        assert_eq!(activity.user.as_deref(), Some(user.as_str()));
        assert_eq!(activity.query, query);
        assert_eq!(activity.query, "SELECT pg_advisory_xact_lock($1)");
        assert_eq!(activity.context, None);
        assert_eq!(activity.backend_type, "CLIENT_BACKEND");
        assert_eq!(activity.leader_pid, None);
        assert!(activity.xact_start.is_some() && activity.query_start.is_some());
        assert!(activity.xact_start <= activity.query_start);
        assert!(activity.duration.unwrap() <= activity.xact_duration.unwrap());
        assert_eq!(epoch(activity.backend_start), Some(backend_start));
        assert_eq!(epoch(activity.xact_start), Some(xact_start));
        assert_eq!(activity.wait_event_type.as_deref(), Some("CLIENT"));
        assert_eq!(activity.wait_event.as_deref(), Some("CLIENT_READ"));
    }
    exec(&mut holder, "ROLLBACK").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_context_comment_shows_as_context_and_leaves_the_query() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let conn_pid = pid(&mut conn).await;
    exec(
        &mut conn,
        "/*pga_context={\"job\":\"x\"}*/\nSELECT pg_advisory_lock(7)",
    )
    .await;

    let rows = locks().advisory([7i64]).fetch(db.pool()).await.unwrap();
    assert_eq!(pids_of(&rows), BTreeSet::from([conn_pid]));
    let activity = rows[0].activity.as_ref().unwrap();
    assert_eq!(activity.context.as_deref(), Some(r#"{"job":"x"}"#));
    assert_eq!(activity.query, "SELECT pg_advisory_lock(7)");
    assert_eq!(activity.state.as_deref(), Some("IDLE"));
}

#[tokio::test(flavor = "multi_thread")]
async fn blocked_locks_pair_each_wait_with_its_hard_and_soft_blockers() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE queue (n int)").await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "BEGIN; LOCK TABLE queue IN ACCESS SHARE MODE").await;

    // The second session waits for the holder; the third asks for a mode the holder's lock
    // would admit, but queues behind the second one's request, which it conflicts with.
    let mut second = db.connect().await;
    let second_pid = pid(&mut second).await;
    let second = start(second, "BEGIN; LOCK TABLE queue IN ACCESS EXCLUSIVE MODE");
    until_waiting(db.pool(), second_pid).await;
    let mut third = db.connect().await;
    let third_pid = pid(&mut third).await;
    let third = start(third, "BEGIN; LOCK TABLE queue IN ACCESS SHARE MODE");
    until_waiting(db.pool(), third_pid).await;

    let pairs = blocked_locks().fetch(db.pool()).await.unwrap();
    let edges: BTreeSet<(i32, i32)> = pairs
        .iter()
        .map(|pair| (pair.lock.pid, pair.blocking_pid))
        .collect();
    assert_eq!(
        edges,
        BTreeSet::from([(second_pid, holder_pid), (third_pid, second_pid)]),
        "{pairs:#?}"
    );
    // The same as pg_blocking_pids says.
    for waiter in [second_pid, third_pid] {
        let blockers: Vec<i32> = sqlx::query_scalar("SELECT unnest(pg_blocking_pids($1))")
            .bind(waiter)
            .fetch_all(db.pool())
            .await
            .unwrap();
        let listed: Vec<i32> = pairs
            .iter()
            .filter(|pair| pair.lock.pid == waiter)
            .map(|pair| pair.blocking_pid)
            .collect();
        assert_eq!(listed, blockers, "blockers of {waiter}");
    }
    // The second session waited first, so it is listed first.
    assert_eq!(pairs[0].lock.pid, second_pid);
    for pair in &pairs {
        let lock = &pair.lock;
        assert!(!lock.granted);
        assert_eq!(lock.relation.as_ref().unwrap().name, "queue");
        let waiting = lock.activity.as_ref().unwrap();
        assert_eq!(waiting.state.as_deref(), Some("ACTIVE"));
        assert_eq!(waiting.wait_event_type.as_deref(), Some("LOCK"));
        assert_eq!(waiting.wait_event.as_deref(), Some("RELATION"));
        assert_eq!(pair.blocking.as_ref().unwrap().pid, pair.blocking_pid);
    }
    let (to_holder, to_second) = (&pairs[0], &pairs[1]);
    assert_eq!(to_holder.lock.mode, Some(LockMode::AccessExclusive));
    assert_eq!(
        to_holder.blocking.as_ref().unwrap().state.as_deref(),
        Some("IDLE_IN_TRANSACTION")
    );
    assert_eq!(to_second.lock.mode, Some(LockMode::AccessShare));
    assert_eq!(
        to_second
            .blocking
            .as_ref()
            .unwrap()
            .wait_event_type
            .as_deref(),
        Some("LOCK"),
        "a soft blocker waits itself"
    );

    exec(&mut holder, "COMMIT").await;
    let (result, mut second) = second.await.unwrap();
    result.unwrap();
    exec(&mut second, "COMMIT").await;
    let (result, mut third) = third.await.unwrap();
    result.unwrap();
    exec(&mut third, "COMMIT").await;
    assert!(blocked_locks().fetch(db.pool()).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn row_lock_waits_show_as_transaction_id_waits_and_match_their_table() {
    let db = TestDb::new().await;
    exec(
        &mut db.connect().await,
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int); \
         INSERT INTO accounts VALUES (1, 0); CREATE TABLE other (n int)",
    )
    .await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(
        &mut holder,
        "BEGIN; UPDATE accounts SET balance = 1 WHERE id = 1",
    )
    .await;
    let xid: i64 = sqlx::query_scalar("SELECT txid_current()")
        .fetch_one(&mut holder)
        .await
        .unwrap();

    let mut second = db.connect().await;
    let second_pid = pid(&mut second).await;
    let second = start(second, "UPDATE accounts SET balance = 2 WHERE id = 1");
    until_waiting(db.pool(), second_pid).await;
    let mut third = db.connect().await;
    let third_pid = pid(&mut third).await;
    let third = start(third, "UPDATE accounts SET balance = 3 WHERE id = 1");
    until_waiting(db.pool(), third_pid).await;

    let pairs = blocked_locks()
        .on("accounts")
        .fetch(db.pool())
        .await
        .unwrap();
    let on_xid = pairs
        .iter()
        .find(|pair| pair.lock.pid == second_pid)
        .expect("the wait for the holder's transaction matches the table");
    assert_eq!(on_xid.blocking_pid, holder_pid);
    assert_eq!(on_xid.lock.lock_type, "TRANSACTIONID");
    assert_eq!(on_xid.lock.relation, None);
    assert_eq!(on_xid.lock.transaction_id, Some(xid as u32));
    assert_eq!(on_xid.lock.mode, Some(LockMode::Share));
    let on_tuple = pairs
        .iter()
        .find(|pair| pair.lock.pid == third_pid)
        .expect("the third session waits for the row's tuple lock");
    assert_eq!(on_tuple.lock.lock_type, "TUPLE");
    assert_eq!(on_tuple.lock.relation.as_ref().unwrap().name, "accounts");
    assert_eq!(on_tuple.blocking_pid, second_pid);
    assert_eq!(pairs.len(), 2, "{pairs:#?}");
    assert!(
        blocked_locks()
            .on("other")
            .fetch(db.pool())
            .await
            .unwrap()
            .is_empty()
    );

    // Plain listing: the holder's transaction-id lock, with no relation.
    let xid_locks = locks()
        .pids([holder_pid])
        .fetch(db.pool())
        .await
        .unwrap()
        .into_iter()
        .filter(|lock| lock.lock_type == "TRANSACTIONID")
        .collect::<Vec<_>>();
    assert_eq!(xid_locks.len(), 1);
    assert_eq!(xid_locks[0].transaction_id, Some(xid as u32));
    assert!(xid_locks[0].granted);

    exec(&mut holder, "COMMIT").await;
    second.await.unwrap().0.unwrap();
    third.await.unwrap().0.unwrap();
}

/// How long `a`'s last query is older than everything else in a [`Scene`].
const OLD: Duration = Duration::from_millis(1500);

/// Sessions for the filter tests: `a` holds advisory lock "x" and has been idle for a while;
/// `b` waits for "x"; `c` holds the shared pair (3, 4); `d` holds a `ROW EXCLUSIVE` lock on
/// `app.things` and a `SHARE` lock on `public.things`.
struct Scene {
    db: TestDb,
    a: (PgConnection, i32),
    b: (Running, i32),
    c: (PgConnection, i32),
    d: (PgConnection, i32),
}

impl Scene {
    async fn new() -> Scene {
        let db = TestDb::new().await;
        exec(
            &mut db.connect().await,
            "CREATE SCHEMA app; CREATE TABLE app.things (n int); CREATE TABLE things (n int)",
        )
        .await;
        let mut a = db.connect().await;
        let a_pid = pid(&mut a).await;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(bigint_key("x"))
            .execute(&mut a)
            .await
            .unwrap();
        // Everything after this started at least this much later than `a`'s last query.
        tokio::time::sleep(OLD).await;

        let mut b = db.connect().await;
        let b_pid = pid(&mut b).await;
        let key = bigint_key("x");
        let b = tokio::spawn(async move {
            let result = sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut b)
                .await
                .map(drop);
            (result, b)
        });
        until_waiting(db.pool(), b_pid).await;
        let mut c = db.connect().await;
        let c_pid = pid(&mut c).await;
        exec(&mut c, "SELECT pg_advisory_lock_shared(3, 4)").await;
        let mut d = db.connect().await;
        let d_pid = pid(&mut d).await;
        exec(
            &mut d,
            "BEGIN; LOCK TABLE app.things IN ROW EXCLUSIVE MODE; \
             LOCK TABLE public.things IN SHARE MODE",
        )
        .await;
        Scene {
            db,
            a: (a, a_pid),
            b: (b, b_pid),
            c: (c, c_pid),
            d: (d, d_pid),
        }
    }

    fn pool(&self) -> &PgPool {
        self.db.pool()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_listing() {
    let scene = Scene::new().await;
    let (a, b, c, d) = (scene.a.1, scene.b.1, scene.c.1, scene.d.1);
    let pool = scene.pool();
    let all = locks().fetch(pool).await.unwrap();
    assert_eq!(pids_of(&all), BTreeSet::from([a, b, c, d]));

    // min_duration, first: `a`'s last query started `OLD` before everyone else's, whose
    // queries must still be younger than `OLD` when this runs.
    let long = locks().min_duration(OLD).fetch(pool).await.unwrap();
    assert_eq!(pids_of(&long), BTreeSet::from([a]));
    for row in &long {
        assert!(row.activity.as_ref().unwrap().duration.unwrap() >= OLD);
    }
    assert_eq!(
        locks()
            .min_duration(Duration::ZERO)
            .fetch(pool)
            .await
            .unwrap()
            .len(),
        all.len()
    );
    assert!(
        locks()
            .min_duration(Duration::from_secs(3600))
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );

    // pids
    let of_a = locks().pids([a]).fetch(pool).await.unwrap();
    assert_eq!(of_a.len(), 1, "{of_a:#?}");
    assert!(of_a[0].is_advisory_lock("x"));
    let of_ac = locks().pids([a]).pids([c]).fetch(pool).await.unwrap();
    assert_eq!(pids_of(&of_ac), BTreeSet::from([a, c]));
    assert!(locks().pids([]).fetch(pool).await.unwrap().is_empty());

    // advisory
    let x = locks().advisory(["x"]).fetch(pool).await.unwrap();
    assert_eq!(pids_of(&x), BTreeSet::from([a, b]));
    assert!(x.iter().all(|row| row.is_advisory_lock("x")));
    let pair = locks().advisory([(3, 4)]).fetch(pool).await.unwrap();
    assert_eq!(pids_of(&pair), BTreeSet::from([c]));
    assert_eq!(pair[0].mode, Some(LockMode::Share));
    assert!(
        locks()
            .advisory([(4, 3)])
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        locks()
            .advisory(["y"])
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    let none: [&str; 0] = [];
    assert!(locks().advisory(none).fetch(pool).await.unwrap().is_empty());
    let both = locks()
        .advisory(["x"])
        .advisory([(3, 4)])
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids_of(&both), BTreeSet::from([a, b, c]));

    // on
    let relation_names = |rows: &[PgLock]| -> BTreeSet<String> {
        rows.iter()
            .map(|row| row.relation.as_ref().expect("a relation lock").to_string())
            .collect()
    };
    let things = locks().on("things").fetch(pool).await.unwrap();
    assert_eq!(
        relation_names(&things),
        BTreeSet::from(["app.things".to_owned(), "public.things".to_owned()])
    );
    assert_eq!(pids_of(&things), BTreeSet::from([d]));
    for qualified in ["app.things", r#""app"."things""#, r#"app."things""#] {
        let rows = locks().on(qualified).fetch(pool).await.unwrap();
        assert_eq!(
            relation_names(&rows),
            BTreeSet::from(["app.things".to_owned()]),
            "{qualified}"
        );
        assert_eq!(rows[0].mode, Some(LockMode::RowExclusive));
    }
    let both = locks()
        .on(["app.things", "public.things"])
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(both.len(), 2);
    assert!(
        locks().on("Things").fetch(pool).await.unwrap().is_empty(),
        "names are case-sensitive"
    );
    assert!(
        locks()
            .on("nosuch.things")
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        locks()
            .on(Vec::<&str>::new())
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    let bad = locks().on("a.b.c").fetch(pool).await.unwrap_err();
    assert!(matches!(bad, Error::InvalidArgument(_)), "{bad:?}");

    // granted
    let waiting = locks().granted(false).fetch(pool).await.unwrap();
    assert_eq!(pids_of(&waiting), BTreeSet::from([b]));
    assert_eq!(waiting.len(), 1);
    let held = locks().granted(true).fetch(pool).await.unwrap();
    assert!(held.iter().all(|row| row.granted));
    assert_eq!(held.len() + 1, all.len());

    // mode
    let share = locks().mode(LockMode::Share).fetch(pool).await.unwrap();
    assert_eq!(pids_of(&share), BTreeSet::from([c, d]));
    assert!(share.iter().all(|row| row.mode_name == "ShareLock"));
    let row_exclusive = locks()
        .mode(LockMode::RowExclusive)
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(
        relation_names(&row_exclusive),
        BTreeSet::from(["app.things".to_owned()])
    );
    let either = locks()
        .mode(LockMode::Share)
        .mode(LockMode::RowExclusive)
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(either.len(), share.len() + row_exclusive.len());
    let combined = locks()
        .mode(LockMode::Share)
        .on("things")
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(
        relation_names(&combined),
        BTreeSet::from(["public.things".to_owned()])
    );

    // min_wait: only locks waited for have a wait.
    if server_version(pool).await >= 140_000 {
        let waited = locks().min_wait(Duration::ZERO).fetch(pool).await.unwrap();
        assert_eq!(pids_of(&waited), BTreeSet::from([b]));
        assert!(waited[0].wait_start.is_some() && waited[0].wait_duration.is_some());
        assert!(
            locks()
                .min_wait(Duration::from_secs(3600))
                .fetch(pool)
                .await
                .unwrap()
                .is_empty()
        );
    } else {
        let error = locks()
            .min_wait(Duration::ZERO)
            .fetch(pool)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    }

    // limit: the first rows of the listing.
    let first = locks().limit(2).fetch(pool).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].pid, b, "the lock waited for comes first");
    assert_eq!(first[1].pid, a, "then the longest-running query's");
    assert!(locks().limit(0).fetch(pool).await.unwrap().is_empty());
    assert_eq!(
        locks().limit(usize::MAX).fetch(pool).await.unwrap().len(),
        all.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn filters_narrow_the_blocked_listing() {
    let scene = Scene::new().await;
    let (a, b, c) = (scene.a.1, scene.b.1, scene.c.1);
    let pool = scene.pool();
    let edges = |pairs: &[pglock::BlockedPgLock]| -> Vec<(i32, i32)> {
        pairs
            .iter()
            .map(|pair| (pair.lock.pid, pair.blocking_pid))
            .collect()
    };

    // First, while the waiter's query is younger than `OLD`.
    assert!(
        blocked_locks()
            .min_duration(OLD)
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(edges(&blocked_locks().fetch(pool).await.unwrap()), [(b, a)]);
    assert_eq!(
        edges(&blocked_locks().pids([b]).fetch(pool).await.unwrap()),
        [(b, a)]
    );
    assert!(
        blocked_locks()
            .pids([a, c])
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        edges(
            &blocked_locks()
                .blocking_pids([a])
                .fetch(pool)
                .await
                .unwrap()
        ),
        [(b, a)]
    );
    assert!(
        blocked_locks()
            .blocking_pids([c])
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        blocked_locks()
            .blocking_pids([])
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        edges(&blocked_locks().advisory(["x"]).fetch(pool).await.unwrap()),
        [(b, a)]
    );
    assert!(
        blocked_locks()
            .advisory([(3, 4)])
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        edges(
            &blocked_locks()
                .mode(LockMode::Exclusive)
                .fetch(pool)
                .await
                .unwrap()
        ),
        [(b, a)]
    );
    assert!(
        blocked_locks()
            .mode(LockMode::Share)
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        blocked_locks()
            .on("things")
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );

    // The blocker's last query started over `OLD` ago.
    let old_blocker = blocked_locks()
        .min_blocking_duration(OLD)
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(edges(&old_blocker), [(b, a)]);
    assert!(
        blocked_locks()
            .min_blocking_duration(Duration::from_secs(3600))
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        edges(
            &blocked_locks()
                .min_duration(Duration::ZERO)
                .fetch(pool)
                .await
                .unwrap()
        ),
        [(b, a)]
    );
    if server_version(pool).await >= 140_000 {
        assert_eq!(
            edges(
                &blocked_locks()
                    .min_wait(Duration::ZERO)
                    .fetch(pool)
                    .await
                    .unwrap()
            ),
            [(b, a)]
        );
        assert!(
            blocked_locks()
                .min_wait(Duration::from_secs(3600))
                .fetch(pool)
                .await
                .unwrap()
                .is_empty()
        );
    }
    assert!(
        blocked_locks()
            .limit(0)
            .fetch(pool)
            .await
            .unwrap()
            .is_empty()
    );

    let pair = &blocked_locks().fetch(pool).await.unwrap()[0];
    assert!(pair.lock.is_advisory_lock("x"));
    let blocking = pair.blocking.as_ref().unwrap();
    assert_eq!(blocking.state.as_deref(), Some("IDLE"));
    assert!(blocking.duration.unwrap() >= OLD);
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_puts_waits_first_then_the_longest_waits_then_the_longest_queries() {
    let db = TestDb::new().await;
    let mut old = db.connect().await;
    let old_pid = pid(&mut old).await;
    exec(&mut old, "SELECT pg_advisory_lock(2)").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "SELECT pg_advisory_lock(1)").await;
    let mut first = db.connect().await;
    let first_pid = pid(&mut first).await;
    let first = start(first, "SELECT pg_advisory_lock(1)");
    until_waiting(db.pool(), first_pid).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = db.connect().await;
    let second_pid = pid(&mut second).await;
    let second = start(second, "SELECT pg_advisory_lock(1)");
    until_waiting(db.pool(), second_pid).await;

    let rows = locks().fetch(db.pool()).await.unwrap();
    let order: Vec<(i32, &str)> = rows
        .iter()
        .map(|row| (row.pid, row.lock_type.as_str()))
        .collect();
    // The waiters' statements run in transactions of their own: each holds its virtual
    // transaction id, listed by the age of their queries after the older sessions' locks.
    assert_eq!(
        order,
        [
            (first_pid, "ADVISORY"),
            (second_pid, "ADVISORY"),
            (old_pid, "ADVISORY"),
            (holder_pid, "ADVISORY"),
            (first_pid, "VIRTUALXID"),
            (second_pid, "VIRTUALXID"),
        ],
        "{rows:#?}"
    );
    assert!(!rows[0].granted && !rows[1].granted);
    let durations: Vec<Duration> = rows[2..]
        .iter()
        .map(|row| row.activity.as_ref().unwrap().duration.unwrap())
        .collect();
    assert!(durations.windows(2).all(|w| w[0] >= w[1]), "{durations:?}");
    if server_version(db.pool()).await >= 140_000 {
        assert!(rows[0].wait_start < rows[1].wait_start);
        assert!(rows[0].wait_duration > rows[1].wait_duration);
    }
    let blocked = blocked_locks().fetch(db.pool()).await.unwrap();
    let order: Vec<(i32, i32)> = blocked
        .iter()
        .map(|pair| (pair.lock.pid, pair.blocking_pid))
        .collect();
    // The second waiter queues behind the first, which waits for the holder.
    assert_eq!(
        order,
        [
            (first_pid, holder_pid),
            (second_pid, holder_pid),
            (second_pid, first_pid)
        ]
    );

    drop(holder);
    first.await.unwrap().0.unwrap();
    drop(second);
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_ends_exactly_the_sessions_of_the_matching_locks() {
    let db = TestDb::new().await;
    let mut victim = db.connect().await;
    let victim_pid = pid(&mut victim).await;
    exec(&mut victim, "SELECT pg_advisory_lock(10)").await;
    let mut bystander = db.connect().await;
    let bystander_pid = pid(&mut bystander).await;
    exec(&mut bystander, "SELECT pg_advisory_lock(11)").await;

    assert_eq!(
        locks()
            .advisory([12i64])
            .terminate(db.pool())
            .await
            .unwrap(),
        []
    );
    let ended = locks()
        .advisory([10i64])
        .terminate(db.pool())
        .await
        .unwrap();
    assert_eq!(ended, [victim_pid]);

    let error = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .unwrap_err();
    assert!(
        sqlstate(&error).as_deref() == Some("57P01") || error.as_database_error().is_none(),
        "{error:?}"
    );
    eventually(PATIENCE, "the victim's backend is gone", || async {
        !backend_exists(db.pool(), victim_pid).await
    })
    .await;
    assert!(backend_exists(db.pool(), bystander_pid).await);
    exec(&mut bystander, "SELECT 1").await;
    assert!(
        locks()
            .advisory([10i64])
            .fetch(db.pool())
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        pids_of(&locks().advisory([11i64]).fetch(db.pool()).await.unwrap()),
        BTreeSet::from([bystander_pid])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_the_waiting_statement_and_keeps_the_session() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "SELECT pg_advisory_lock(20)").await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let waiting = start(waiter, "SELECT pg_advisory_lock(20)");
    until_waiting(db.pool(), waiter_pid).await;

    let cancelled = locks()
        .advisory([20i64])
        .granted(false)
        .cancel(db.pool())
        .await
        .unwrap();
    assert_eq!(cancelled, [waiter_pid]);
    let (result, mut waiter) = waiting.await.unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    exec(&mut waiter, "SELECT 1").await;
    assert_eq!(
        pids_of(&locks().advisory([20i64]).fetch(db.pool()).await.unwrap()),
        BTreeSet::from([holder_pid])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn terminate_blocking_ends_the_blockers_soft_ones_included() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE jobs (n int)").await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "BEGIN; LOCK TABLE jobs IN ACCESS SHARE MODE").await;
    let mut second = db.connect().await;
    let second_pid = pid(&mut second).await;
    let second = start(second, "BEGIN; LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE");
    until_waiting(db.pool(), second_pid).await;
    let mut third = db.connect().await;
    let third_pid = pid(&mut third).await;
    let third = start(third, "BEGIN; LOCK TABLE jobs IN ACCESS SHARE MODE");
    until_waiting(db.pool(), third_pid).await;

    // The third session is blocked only by the second one's queued request: ending it lets
    // the third in alongside the holder.
    let ended = blocked_locks()
        .pids([third_pid])
        .terminate_blocking(db.pool())
        .await
        .unwrap();
    assert_eq!(ended, [second_pid]);
    let (result, _) = second.await.unwrap();
    let error = result.unwrap_err();
    assert!(
        sqlstate(&error).as_deref() == Some("57P01") || error.as_database_error().is_none(),
        "{error:?}"
    );
    let (result, mut third) = third.await.unwrap();
    result.unwrap();
    exec(&mut third, "COMMIT").await;
    assert!(backend_exists(db.pool(), holder_pid).await);
    exec(&mut holder, "COMMIT").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_blocking_stops_the_blocking_statement() {
    let db = TestDb::new().await;
    let mut blocker = db.connect().await;
    let blocker_pid = pid(&mut blocker).await;
    // One implicit transaction: cancelling the sleep ends it, and the lock with it.
    let blocking = start(blocker, "SELECT pg_advisory_xact_lock(30), pg_sleep(60)");
    eventually(PATIENCE, "the blocker holds the lock", || async {
        !locks()
            .pids([blocker_pid])
            .advisory([30i64])
            .granted(true)
            .fetch(db.pool())
            .await
            .unwrap()
            .is_empty()
    })
    .await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let waiting = start(waiter, "SELECT pg_advisory_xact_lock(30)");
    until_waiting(db.pool(), waiter_pid).await;

    let cancelled = blocked_locks().cancel_blocking(db.pool()).await.unwrap();
    assert_eq!(cancelled, [blocker_pid]);
    let (result, mut blocker) = blocking.await.unwrap();
    assert_eq!(sqlstate(&result.unwrap_err()).as_deref(), Some("57014"));
    waiting.await.unwrap().0.unwrap();
    exec(&mut blocker, "SELECT 1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_inspecting_session_is_never_listed_or_signalled() {
    let db = TestDb::new().await;
    let mut me = db.connect().await;
    let my_pid = pid(&mut me).await;
    exec(&mut me, "SELECT pg_advisory_lock(40)").await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let waiting = start(waiter, "SELECT pg_advisory_lock(40)");
    until_waiting(db.pool(), waiter_pid).await;

    // Through its own connection, a session does not see or signal itself...
    let mine = locks().pids([my_pid]).fetch(&mut me).await.unwrap();
    assert!(mine.is_empty(), "{mine:#?}");
    assert_eq!(locks().pids([my_pid]).terminate(&mut me).await.unwrap(), []);
    let pairs = blocked_locks().fetch(&mut me).await.unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        (pairs[0].lock.pid, pairs[0].blocking_pid),
        (waiter_pid, my_pid)
    );
    assert_eq!(
        blocked_locks().terminate_blocking(&mut me).await.unwrap(),
        []
    );
    exec(&mut me, "SELECT 1").await;
    assert!(locks().pids([my_pid]).fetch(db.pool()).await.unwrap().len() == 1);

    // ...and through a transaction the same.
    let mut tx = me.begin().await.unwrap();
    assert_eq!(blocked_locks().cancel_blocking(&mut tx).await.unwrap(), []);
    tx.commit().await.unwrap();

    // Another session can.
    assert_eq!(
        blocked_locks().terminate_blocking(db.pool()).await.unwrap(),
        [my_pid]
    );
    waiting.await.unwrap().0.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_without_privilege_cannot_signal_a_superusers_backend() {
    let db = TestDb::new().await;
    let is_superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(
        is_superuser,
        "the test server's user must be a superuser for this test"
    );
    // Roles are server-wide: name it after the database, which is unique to this test.
    let role = format!("{}_weak", db.name());
    exec(
        &mut db.connect().await,
        &format!("CREATE ROLE {role} NOLOGIN; ALTER ROLE {role} LOGIN PASSWORD 'weak'"),
    )
    .await;
    let weak_options = db.options().username(&role).password("weak");
    let weak = async || PgConnection::connect_with(&weak_options).await.unwrap();

    let mut superuser = db.connect().await;
    let superuser_pid = pid(&mut superuser).await;
    exec(&mut superuser, "SELECT pg_advisory_lock_shared(50)").await;
    let mut peer = weak().await;
    let peer_pid = pid(&mut peer).await;
    exec(&mut peer, "SELECT pg_advisory_lock_shared(50)").await;
    let mut inspector = weak().await;

    // Both backends are listed (the superuser's with what a weak role may see)...
    let rows = locks()
        .advisory([50i64])
        .fetch(&mut inspector)
        .await
        .unwrap();
    assert_eq!(pids_of(&rows), BTreeSet::from([superuser_pid, peer_pid]));
    let hidden = rows.iter().find(|row| row.pid == superuser_pid).unwrap();
    assert_eq!(
        hidden.activity.as_ref().unwrap().query,
        "<insufficient privilege>"
    );

    // ...but signalling the superuser's is refused, and the whole call fails before the
    // backend of the weak role's own peer (which it may signal) is touched.
    let error = locks()
        .advisory([50i64])
        .terminate(&mut inspector)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PermissionDenied { .. }), "{error:?}");
    exec(&mut peer, "SELECT 1").await;
    exec(&mut superuser, "SELECT 1").await;
    let error = locks()
        .pids([superuser_pid])
        .cancel(&mut inspector)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::PermissionDenied { .. }), "{error:?}");

    // Its own role's backend it may end.
    let ended = locks()
        .advisory([50i64])
        .pids([peer_pid])
        .terminate(&mut inspector)
        .await
        .unwrap();
    assert_eq!(ended, [peer_pid]);
    assert!(backend_exists(db.pool(), superuser_pid).await);

    drop(peer);
    inspector.close().await.unwrap();
    eventually(PATIENCE, "the weak role's sessions are gone", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE usename = $1)",
        )
        .bind(&role)
        .fetch_one(db.pool())
        .await
        .unwrap()
    })
    .await;
    exec(&mut superuser, &format!("DROP ROLE {role}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_ten_thousand_locks_completes() {
    const N: usize = 10_000;
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(
        &mut holder,
        "SELECT pg_advisory_lock(g) FROM generate_series(1, 10000) g",
    )
    .await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let waiting = start(waiter, "SELECT pg_advisory_lock(5000)");
    until_waiting(db.pool(), waiter_pid).await;
    // Warm the pool's connection and its statement cache, as a monitoring loop would be.
    locks().limit(1).fetch(db.pool()).await.unwrap();

    let started = Instant::now();
    let rows = locks().fetch(db.pool()).await.unwrap();
    let all = started.elapsed();
    // Every lock, the wait, and the waiter's virtual transaction id.
    assert_eq!(rows.len(), N + 2);
    assert_eq!((rows[0].pid, rows[0].granted), (waiter_pid, false));
    assert!(
        rows[1..=N]
            .iter()
            .all(|row| row.pid == holder_pid && row.advisory.is_some())
    );
    assert_eq!(
        (rows[N + 1].pid, rows[N + 1].lock_type.as_str()),
        (waiter_pid, "VIRTUALXID")
    );
    let keys: HashSet<AdvisoryKey> = rows.iter().filter_map(|row| row.advisory).collect();
    assert_eq!(keys.len(), N);

    let started = Instant::now();
    let one = locks().advisory([5000i64]).fetch(db.pool()).await.unwrap();
    let filtered = started.elapsed();
    assert_eq!(pids_of(&one), BTreeSet::from([holder_pid, waiter_pid]));

    let started = Instant::now();
    let pairs = blocked_locks().fetch(db.pool()).await.unwrap();
    let blocked = started.elapsed();
    assert_eq!(pairs.len(), 1);
    assert_eq!(
        (pairs[0].lock.pid, pairs[0].blocking_pid),
        (waiter_pid, holder_pid)
    );

    let started = Instant::now();
    let limited = locks().limit(25).fetch(db.pool()).await.unwrap();
    let first_25 = started.elapsed();
    assert_eq!(limited.len(), 25);

    println!(
        "listing with {N} advisory locks held: all rows {all:?}, one key {filtered:?}, \
         blocked pairs {blocked:?}, first 25 {first_25:?}"
    );
    drop(holder);
    waiting.await.unwrap().0.unwrap();
}

/// A holder idle in its transaction on `orders`, with a row lock; an `UPDATE` of the row
/// waiting for its transaction id; and an `ALTER TABLE` waiting behind both.
struct RowChain {
    db: TestDb,
    holder: PgConnection,
    holder_pid: i32,
    updater_pid: i32,
    _updater: Running,
}

async fn row_chain() -> RowChain {
    let db = TestDb::new().await;
    exec(
        &mut db.connect().await,
        "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1)",
    )
    .await;
    let mut holder = db.connect().await;
    let holder_pid = pid(&mut holder).await;
    exec(&mut holder, "SET application_name = 'billing-app'").await;
    exec(&mut holder, "BEGIN; UPDATE orders SET id = 1 WHERE id = 1").await;
    let mut updater = db.connect().await;
    let updater_pid = pid(&mut updater).await;
    let updater = start(updater, "UPDATE orders SET id = 2 WHERE id = 1");
    until_waiting(db.pool(), updater_pid).await;
    RowChain {
        db,
        holder,
        holder_pid,
        updater_pid,
        _updater: updater,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn field_filters_narrow_both_listings_with_django_lookups() {
    let c = row_chain().await;
    let pool = c.db.pool();
    let pids = |rows: Vec<PgLock>| pids_of(&rows).into_iter().collect::<Vec<_>>();
    let both = {
        let mut both = vec![c.holder_pid, c.updater_pid];
        both.sort();
        both
    };

    let by_query = locks()
        .filter("activity__query__icontains", "set id = 2")
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(by_query), [c.updater_pid]);
    let by_state = locks()
        .filter(
            "activity__state__in",
            ["IDLE_IN_TRANSACTION", "IDLE_IN_TRANSACTION_(ABORTED)"],
        )
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(by_state), [c.holder_pid]);
    let by_application = locks()
        .filter("activity__application_name__startswith", "billing-a")
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(by_application), [c.holder_pid]);
    let by_wait = locks()
        .filter("activity__wait_event", "TRANSACTIONID")
        .filter("activity__duration__lt", Duration::from_secs(3600))
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(by_wait), [c.updater_pid]);
    let by_database = locks()
        .filter("activity__database", c.db.name())
        .filter("activity__client_port__isnull", false)
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(by_database), both);
    let by_start = locks()
        .filter("activity__backend_start__lt", SystemTime::now())
        .filter("activity__xact_start__gte", "2000-01-01 00:00:00+00")
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(by_start), both);
    for row in locks()
        .filter("activity__database", c.db.name())
        .fetch(pool)
        .await
        .unwrap()
    {
        let activity = row.activity.unwrap();
        assert_eq!(activity.database.as_deref(), Some(c.db.name()));
    }

    // What the listing shows as the lock and its target: the updater waits for the holder's
    // transaction id, whose lock the holder keeps (held).
    let xid: Vec<PgLock> = locks()
        .filter("target__startswith", "transactionid ")
        .filter("lock", "waits SHARE")
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(xid.clone()), [c.updater_pid]);
    let target = format!("transactionid {}", xid[0].transaction_id.unwrap());
    let holder_xid = locks()
        .filter("target", target.as_str())
        .filter("granted", true)
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pids(holder_xid), [c.holder_pid]);

    // The blocking side: the updater waits for the holder's transaction id.
    let pairs = blocked_locks()
        .filter("blocking_activity__application_name__icontains", "BILLING")
        .filter("blocking_activity_id__in", vec![c.holder_pid])
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pairs.len(), 1, "{pairs:#?}");
    assert_eq!(
        (pairs[0].lock.pid, pairs[0].blocking_pid),
        (c.updater_pid, c.holder_pid)
    );
    let none = blocked_locks()
        .filter("blocking_activity__state", "ACTIVE")
        .fetch(pool)
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:#?}");

    // Mistakes fail the query before it runs, saying what is wrong.
    for (query, expected) in [
        (
            locks().filter("activity__query__like", "x"),
            "unknown lookup",
        ),
        (
            locks().filter("activity__colour", "x"),
            "unknown filter key",
        ),
        (locks().filter("activity_id", "x"), "takes an integer"),
        (locks().filter("granted__gt", true), "no order"),
        (
            locks().filter("blocking_activity_id", 1),
            "use it with blocked_locks()",
        ),
    ] {
        match query.fetch(pool).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(expected), "{message}")
            }
            other => panic!("{expected}: {other:?}"),
        }
    }
    drop(c.holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn own_transaction_locks_hide_only_what_nobody_waits_for() {
    let c = row_chain().await;
    let pool = c.db.pool();
    let all = locks().pids([c.holder_pid]).fetch(pool).await.unwrap();
    let types = |rows: &[PgLock]| {
        rows.iter()
            .map(|row| row.lock_type.clone())
            .collect::<BTreeSet<_>>()
    };
    assert!(types(&all).contains("VIRTUALXID"), "{all:#?}");
    assert!(types(&all).contains("TRANSACTIONID"), "{all:#?}");
    let trimmed = locks()
        .pids([c.holder_pid])
        .own_transaction_locks(false)
        .fetch(pool)
        .await
        .unwrap();
    // The holder's virtualxid goes; its transaction id stays, as the updater waits for it.
    assert!(!types(&trimmed).contains("VIRTUALXID"), "{trimmed:#?}");
    assert!(types(&trimmed).contains("TRANSACTIONID"), "{trimmed:#?}");
    assert!(types(&trimmed).contains("RELATION"), "{trimmed:#?}");
    // The updater's own transaction id (it has one: it wrote nothing yet, but it locked the
    // tuple) is hidden; its wait is not.
    let updater = locks()
        .pids([c.updater_pid])
        .own_transaction_locks(false)
        .fetch(pool)
        .await
        .unwrap();
    assert!(
        updater.iter().all(|row| row.lock_type != "VIRTUALXID"
            && (row.lock_type != "TRANSACTIONID" || !row.granted)),
        "{updater:#?}"
    );
    assert!(updater.iter().any(|row| !row.granted), "{updater:#?}");
    drop(c.holder);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_databases_lists_and_signals_backends_of_other_databases() {
    let here = TestDb::new().await;
    let there = row_chain().await;
    let pool = here.pool();
    let theirs = locks()
        .filter("activity__database", there.db.name())
        .fetch(pool)
        .await
        .unwrap();
    assert!(
        theirs.is_empty(),
        "only this database by default: {theirs:#?}"
    );
    let theirs = locks()
        .all_databases(true)
        .filter("activity__database", there.db.name())
        .fetch(pool)
        .await
        .unwrap();
    let mut expected = vec![there.holder_pid, there.updater_pid];
    expected.sort();
    assert_eq!(pids_of(&theirs).into_iter().collect::<Vec<_>>(), expected);
    // Another database's relations are not in this catalog: an oid, no name.
    let table = theirs
        .iter()
        .find(|row| row.lock_type == "RELATION" && row.pid == there.holder_pid)
        .unwrap();
    assert!(
        table.relation.is_none() && table.relation_oid.is_some(),
        "{table:#?}"
    );
    let pairs = blocked_locks()
        .all_databases(true)
        .filter("activity__database", there.db.name())
        .fetch(pool)
        .await
        .unwrap();
    assert_eq!(pairs.len(), 1, "{pairs:#?}");
    assert_eq!(pairs[0].blocking_pid, there.holder_pid);
    // Signalled from here.
    let ended = blocked_locks()
        .all_databases(true)
        .filter("activity__database", there.db.name())
        .terminate_blocking(pool)
        .await
        .unwrap();
    assert_eq!(ended, [there.holder_pid]);
    eventually(PATIENCE, "the holder ends", || async {
        !backend_exists(there.db.pool(), there.holder_pid).await
    })
    .await;
    drop(there.holder);
}
