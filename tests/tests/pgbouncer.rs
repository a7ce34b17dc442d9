//! pglock behind a real PgBouncer in transaction pooling mode, where a client connection is lent
//! a server session for one transaction at a time.
//!
//! What works there: transaction-level advisory locks, lock timeouts and table locks, all inside
//! a transaction. What cannot: session-level advisory locks, shown concretely below. Locks are
//! observed in `pg_locks` from a direct connection to the server, never through the bouncer.
//!
//! Needs the `pgbouncer` program (scripts/test installs Debian's). Statements sent through the
//! bouncer outside a transaction use the simple protocol (`raw_sql`): before PgBouncer 1.21,
//! sqlx's prepared statements only work inside a transaction (see
//! [`PgBouncer::tracks_prepared_statements`]).

mod common;

use std::time::Duration;

use common::{eventually, free_for, locks_on};
use pglock::{Error, LockMode, advisory, lock_table};
use pglock_tests::TestDb;
use pglock_tests::pgbouncer::PgBouncer;
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool, Row as _};

/// Short enough to keep the tests quick, long enough to be a real wait.
const SHORT: Duration = Duration::from_millis(100);

/// Long enough for any state change the server makes by itself.
const SETTLE: Duration = Duration::from_secs(5);

/// The server session (backend pid) and `lock_timeout` a client is on right now. One simple-query
/// message: it never spans two server sessions, inside a transaction or out of one.
async fn session_of(conn: &mut PgConnection) -> (i32, String) {
    let row = sqlx::raw_sql("SELECT pg_backend_pid(), current_setting('lock_timeout')")
        .fetch_one(&mut *conn)
        .await
        .expect("asking the server session for its pid and lock_timeout");
    (row.get(0), row.get(1))
}

/// The port the server itself listens on, as the session it runs on sees it.
async fn server_port(conn: &mut PgConnection) -> u16 {
    let row = sqlx::raw_sql("SELECT inet_server_port()")
        .fetch_one(&mut *conn)
        .await
        .expect("inet_server_port()");
    u16::try_from(row.get::<i32, _>(0)).expect("a port")
}

/// Starts a transaction with the simple protocol, returns the server session it runs on.
async fn begin_raw(conn: &mut PgConnection) -> i32 {
    sqlx::raw_sql("BEGIN")
        .execute(&mut *conn)
        .await
        .expect("BEGIN");
    session_of(conn).await.0
}

/// Runs one simple-protocol statement.
async fn run(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The pids holding (granted) the advisory lock `id`, from the direct observer.
async fn holders(observer: &PgPool, id: &str) -> Vec<i32> {
    locks_on(observer, id)
        .await
        .into_iter()
        .filter(|row| row.granted)
        .map(|row| row.pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn xact_locks_through_the_bouncer_exclude_other_clients_until_commit() {
    let db = TestDb::new().await;
    let bouncer = PgBouncer::builder().pool_size(3).start(&db).await;
    let observer = db.pool();
    let mut a = bouncer.connect().await;
    let mut b = bouncer.connect().await;

    let locks = [
        advisory("batch").xact(),
        advisory("batch").xact().timeout(Duration::from_secs(2)),
        advisory("batch").xact().nowait(),
        advisory("batch").xact().wait_forever(),
    ];
    for lock in locks {
        let what = format!("{lock:?}");
        let mut tx = a.begin().await.unwrap();
        let guard = lock.acquire(&mut tx).await.unwrap();
        assert!(guard.is_xact());
        drop(guard);
        let (a_pid, _) = session_of(&mut tx).await;
        assert_eq!(holders(observer, "batch").await, vec![a_pid], "{what}");

        // Another client of the bouncer is on another server session, and is kept out.
        let mut other = b.begin().await.unwrap();
        let (b_pid, _) = session_of(&mut other).await;
        assert_ne!(a_pid, b_pid, "two open transactions share a server session");
        let tried = advisory("batch")
            .xact()
            .nowait()
            .try_acquire(&mut other)
            .await
            .unwrap();
        assert!(tried.is_none(), "{what}: the other client got the lock");
        drop(tried);
        let timed = advisory("batch")
            .xact()
            .timeout(SHORT)
            .acquire(&mut other)
            .await
            .map(drop);
        assert!(
            matches!(timed, Err(Error::LockTimeout { .. })),
            "{what}: {timed:?}"
        );
        // The failed wait left the other client's transaction usable.
        assert_eq!(session_of(&mut other).await.0, b_pid);
        other.rollback().await.unwrap();

        tx.commit().await.unwrap();
        assert!(
            locks_on(observer, "batch").await.is_empty(),
            "{what}: the lock outlived its transaction"
        );
        let mut direct = db.connect().await;
        assert!(free_for(&mut direct, "batch").await);
    }
}

/// The attribute's form of the xact lock, through a pool of bouncer clients.
#[pglock::advisory("nightly", xact, timeout = "0s", side_effect = Skip, db = pool)]
async fn nightly(pool: &PgPool, observer: &PgPool) -> Result<Option<Vec<i32>>, Error> {
    let _ = pool;
    Ok(Some(holders(observer, "nightly").await))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_xact_scope_and_attribute_work_on_a_pool_of_bouncer_clients() {
    let db = TestDb::new().await;
    let bouncer = PgBouncer::builder().pool_size(3).start(&db).await;
    let observer = db.pool();
    let pool = bouncer.pool(2).await;
    let mut contender = bouncer.connect().await;

    let seen = advisory("report")
        .xact()
        .timeout(Duration::from_secs(2))
        .scope(&pool, async |conn| {
            let (pid, _) = session_of(conn).await;
            let holders = holders(observer, "report").await;
            // Another bouncer client, in a transaction of its own, is kept out.
            let mut tx = contender.begin().await?;
            let tried = advisory("report")
                .xact()
                .nowait()
                .try_acquire(&mut tx)
                .await?;
            let kept_out = tried.is_none();
            drop(tried);
            tx.rollback().await?;
            Ok::<_, Error>((pid, holders, kept_out))
        })
        .await
        .unwrap();
    let (pid, holders_inside, kept_out) = seen;
    assert_eq!(holders_inside, vec![pid]);
    assert!(kept_out, "another client took the lock inside the scope");
    assert!(locks_on(observer, "report").await.is_empty());

    // The attribute: runs when the lock is free, and it is gone afterwards.
    let inside = nightly(&pool, observer).await.unwrap();
    let inside = inside.expect("the lock was free, so the body ran");
    assert_eq!(inside.len(), 1, "one session held the lock: {inside:?}");
    assert!(locks_on(observer, "nightly").await.is_empty());

    // While another bouncer client holds it in a transaction, the attribute skips the body.
    let mut tx = contender.begin().await.unwrap();
    drop(advisory("nightly").xact().acquire(&mut tx).await.unwrap());
    assert_eq!(nightly(&pool, observer).await.unwrap(), None);
    tx.commit().await.unwrap();
    assert!(nightly(&pool, observer).await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn lock_timeouts_through_the_bouncer_leave_no_lock_timeout_on_the_server_session() {
    let db = TestDb::new().await;
    // Every server session starts with this, so "restored" means back to it, not to 0.
    run(
        &mut db.connect().await,
        &format!("ALTER DATABASE {} SET lock_timeout = '4s'", db.name()),
    )
    .await;
    run(&mut db.connect().await, "CREATE TABLE orders (id int)").await;
    // One server session: whatever a client leaves behind, the next one finds.
    let bouncer = PgBouncer::builder().pool_size(1).start(&db).await;
    let pool = bouncer.pool(1).await;
    let mut client = bouncer.connect().await;
    let (server, setting) = session_of(&mut client).await;
    assert_eq!(setting, "4s");

    // Held by a direct session, so every wait below runs out.
    let mut holder = db.connect().await;
    let held = advisory("busy").acquire(&mut holder).await.unwrap();
    let mut table_holder = db.connect().await;
    run(
        &mut table_holder,
        "BEGIN; LOCK TABLE orders IN EXCLUSIVE MODE",
    )
    .await;

    // A timeout scope inside a transaction: the statement in it times out.
    let mut tx = client.begin().await.unwrap();
    let result = pglock::timeout(SHORT)
        .scope(&mut tx, async |conn| {
            assert_eq!(session_of(conn).await.1, "100ms");
            sqlx::query("SELECT 1 FROM orders FOR UPDATE")
                .execute(&mut *conn)
                .await?;
            Ok::<_, Error>(())
        })
        .await;
    assert!(
        matches!(result, Err(Error::LockTimeout { .. })),
        "{result:?}"
    );
    tx.rollback().await.unwrap();
    assert_eq!(session_of(&mut client).await, (server, "4s".to_owned()));

    // A timeout scope that succeeds, then commits.
    let mut tx = client.begin().await.unwrap();
    pglock::timeout(Duration::from_secs(30))
        .scope(&mut tx, async |conn| {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    assert_eq!(
        session_of(&mut tx).await.1,
        "4s",
        "restored inside the transaction"
    );
    tx.commit().await.unwrap();
    assert_eq!(session_of(&mut client).await, (server, "4s".to_owned()));

    // Timed and try-once advisory waits in a caller's transaction, which stays usable.
    let mut tx = client.begin().await.unwrap();
    let timed = advisory("busy")
        .xact()
        .timeout(SHORT)
        .acquire(&mut tx)
        .await
        .map(drop);
    assert!(matches!(timed, Err(Error::LockTimeout { .. })), "{timed:?}");
    let tried = advisory("busy")
        .xact()
        .nowait()
        .try_acquire(&mut tx)
        .await
        .map(|guard| guard.is_some());
    assert!(matches!(tried, Ok(false)), "{tried:?}");
    assert_eq!(session_of(&mut tx).await, (server, "4s".to_owned()));
    tx.commit().await.unwrap();

    // A timed wait in the transaction pglock opens on a pool of bouncer clients.
    let scoped = advisory("busy")
        .xact()
        .timeout(SHORT)
        .scope(&pool, async |_| Ok::<_, Error>(()))
        .await;
    assert!(
        matches!(scoped, Err(Error::LockTimeout { .. })),
        "{scoped:?}"
    );
    let tried = advisory("busy")
        .xact()
        .nowait()
        .try_scope(&pool, async |_| Ok::<_, Error>(()))
        .await
        .unwrap();
    assert_eq!(tried, None);

    // A table lock with a timeout, in a transaction.
    let mut tx = client.begin().await.unwrap();
    let table = lock_table("orders")
        .mode(LockMode::Share)
        .timeout(SHORT)
        .acquire(&mut tx)
        .await;
    assert!(matches!(table, Err(Error::LockTimeout { .. })), "{table:?}");
    assert_eq!(session_of(&mut tx).await, (server, "4s".to_owned()));
    tx.rollback().await.unwrap();

    // Nothing waits or holds anything but the direct holders, and the one server session the
    // bouncer has still starts every client at the database's setting.
    assert_eq!(holders(db.pool(), "busy").await.len(), 1);
    assert_eq!(session_of(&mut client).await, (server, "4s".to_owned()));
    let mut fresh = bouncer.connect().await;
    assert_eq!(session_of(&mut fresh).await, (server, "4s".to_owned()));
    held.release().await.unwrap();
    run(&mut table_holder, "COMMIT").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn table_locks_in_a_transaction_through_the_bouncer() {
    let db = TestDb::new().await;
    run(&mut db.connect().await, "CREATE TABLE orders (id int)").await;
    let bouncer = PgBouncer::builder().pool_size(2).start(&db).await;
    let mut a = bouncer.connect().await;
    let mut b = bouncer.connect().await;

    let relation_holders = async || -> Vec<(i32, String)> {
        sqlx::query_as(
            "SELECT pid, mode FROM pg_locks \
             WHERE locktype = 'relation' AND relation = 'orders'::regclass AND granted \
             ORDER BY pid",
        )
        .fetch_all(db.pool())
        .await
        .unwrap()
    };

    let mut tx = a.begin().await.unwrap();
    lock_table("orders")
        .mode(LockMode::Exclusive)
        .acquire(&mut tx)
        .await
        .unwrap();
    let (a_pid, _) = session_of(&mut tx).await;
    assert_eq!(
        relation_holders().await,
        vec![(a_pid, "ExclusiveLock".to_owned())]
    );

    let mut other = b.begin().await.unwrap();
    let took = lock_table("orders")
        .mode(LockMode::RowExclusive)
        .nowait()
        .try_acquire(&mut other)
        .await
        .unwrap();
    assert!(
        !took,
        "a conflicting table lock was granted to another client"
    );
    let timed = lock_table("orders")
        .mode(LockMode::RowExclusive)
        .timeout(SHORT)
        .acquire(&mut other)
        .await;
    assert!(matches!(timed, Err(Error::LockTimeout { .. })), "{timed:?}");
    other.rollback().await.unwrap();

    tx.commit().await.unwrap();
    assert!(
        relation_holders().await.is_empty(),
        "the lock outlived its transaction"
    );
    let mut other = b.begin().await.unwrap();
    assert!(
        lock_table("orders")
            .mode(LockMode::RowExclusive)
            .nowait()
            .try_acquire(&mut other)
            .await
            .unwrap()
    );
    other.commit().await.unwrap();
}

/// Session-level locks cannot work through transaction pooling: the lock stays on the server
/// session it was taken on, which the bouncer then lends to other clients, while the unlock runs
/// wherever the bouncer sends it. This test asserts the failure, step by step, and that pglock
/// reports it (`Error::SessionMoved`) instead of unlocking on a session that never took the lock.
#[tokio::test(flavor = "multi_thread")]
async fn session_locks_through_transaction_pooling_go_to_the_wrong_client_and_never_unlock() {
    let db = TestDb::new().await;
    let observer = db.pool();
    // PgBouncer's own defaults (no reset between clients), two server sessions.
    let bouncer = PgBouncer::builder()
        .pool_size(2)
        .reset_prepared_statements(false)
        .start(&db)
        .await;
    let app = bouncer.pool(1).await;

    // 1. The app takes a session lock through a pool of bouncer clients. pglock keeps that
    //    client connection checked out, but the bouncer gives the server session back to its
    //    pool as soon as the statement ends.
    let guard = advisory("nightly").acquire(&app).await.unwrap();
    let taken_on = holders(observer, "nightly").await;
    assert_eq!(taken_on.len(), 1, "{taken_on:?}");
    let taken_on = taken_on[0];

    // 2. Another client (another replica of the app, say) gets that very server session for its
    //    next transaction: it is the only one the bouncer has opened. Advisory locks are
    //    re-entrant per session, so the "exclusive" lock is granted to it too.
    let mut other = bouncer.connect().await;
    let other_on = begin_raw(&mut other).await;
    assert_eq!(
        other_on, taken_on,
        "the bouncer lent the other client a new server session"
    );
    let key = common::bigint_key("nightly");
    let row = sqlx::raw_sql(AssertSqlSafe(format!("SELECT pg_try_advisory_lock({key})")))
        .fetch_one(&mut other)
        .await
        .unwrap();
    let granted_to_other: bool = row.get(0);
    assert!(
        granted_to_other,
        "a second client was refused the lock the first client holds"
    );

    // 3. The app releases its lock while that session is busy: the release runs on another
    //    server session. pglock sees that it is not the session the lock was taken on, unlocks
    //    nothing there, and says why; the lock stays where it was.
    let released = guard.release().await;
    match &released {
        Err(Error::SessionMoved {
            locked_on, now_on, ..
        }) => {
            assert_eq!(*locked_on, taken_on);
            assert_ne!(*now_on, taken_on);
        }
        other => panic!("the release should have run on another server session: {other:?}"),
    }
    let message = released.unwrap_err().to_string();
    assert!(
        message.contains("transaction pooler") && message.contains(".xact()"),
        "{message}"
    );
    run(&mut other, "COMMIT").await;
    assert_eq!(holders(observer, "nightly").await, vec![taken_on]);

    // 4. Nobody holds it any more, yet no session outside the bouncer can take it: it lives as
    //    long as that server session (server_lifetime, an hour by default).
    let mut direct = db.connect().await;
    assert!(!free_for(&mut direct, "nightly").await);

    // 5. Dropping a guard cannot help either: pglock closes the client connection, which ends
    //    nothing on the server.
    let dropped_on = {
        let guard = advisory("dropped").acquire(&app).await.unwrap();
        let on = holders(observer, "dropped").await;
        drop(guard);
        on
    };
    assert_eq!(dropped_on.len(), 1);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            holders(observer, "dropped").await,
            dropped_on,
            "the bouncer's server session let the lock go"
        );
    }
}

/// What a client can tell about the connection it is on: its server session changes between
/// two transactions when another client used the first one in between. That is how
/// transaction pooling shows, and only when it happens.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_the_bouncer_is_moved_between_server_sessions() {
    let db = TestDb::new().await;
    let bouncer = PgBouncer::builder().pool_size(2).start(&db).await;
    let mut a = bouncer.connect().await;
    let mut b = bouncer.connect().await;

    let first = session_of(&mut a).await.0;
    // b takes that server session for a transaction; a's next statement goes elsewhere.
    let b_on = begin_raw(&mut b).await;
    assert_eq!(
        b_on, first,
        "the bouncer should reuse its only server session"
    );
    let second = session_of(&mut a).await.0;
    assert_ne!(
        first, second,
        "a stayed on a session another client was using"
    );
    run(&mut b, "COMMIT").await;

    // Directly to the server, a connection keeps its session.
    let mut direct = db.connect().await;
    let one = session_of(&mut direct).await.0;
    let mut busy = db.connect().await;
    run(&mut busy, "BEGIN").await;
    assert_eq!(session_of(&mut direct).await.0, one);
    run(&mut busy, "COMMIT").await;

    // What a client can always see, but which does not tell the pooling mode: the server's own
    // port differs from the one the client connected to (so does any proxy's or port mapping's).
    assert_ne!(server_port(&mut a).await, bouncer.port());
    assert_eq!(
        server_port(&mut direct).await,
        db.options().get_port(),
        "a direct connection reaches the port it asked for"
    );
}

/// A dropped wait through the bouncer: pglock closes its client connection, and the bouncer
/// closes the server session that was waiting, so nothing waits on and takes the lock.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_xact_wait_through_the_bouncer_leaves_no_server_session_waiting() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let bouncer = PgBouncer::builder().pool_size(2).start(&db).await;
    let pool = bouncer.pool(1).await;
    let mut holder = db.connect().await;
    let held = advisory("contended").acquire(&mut holder).await.unwrap();

    let waiting = tokio::spawn(async move {
        let scope = advisory("contended")
            .xact()
            .wait_forever()
            .scope(&pool, async |_| Ok::<_, Error>(()));
        tokio::time::timeout(Duration::from_millis(500), scope)
            .await
            .is_err()
    });
    common::until_someone_waits(observer, "contended").await;
    let waiter = locks_on(observer, "contended")
        .await
        .into_iter()
        .find(|row| !row.granted)
        .expect("a waiter")
        .pid;
    assert!(waiting.await.unwrap(), "the wait ended by itself");
    eventually(SETTLE, "the abandoned server session is gone", || async {
        !common::backend_exists(observer, waiter).await
    })
    .await;
    held.release().await.unwrap();
    for _ in 0..20 {
        assert!(
            locks_on(observer, "contended").await.is_empty(),
            "an abandoned wait took the lock"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(bouncer);
}

/// The SQLSTATE of a failed query, or `None` if it succeeded.
fn sqlstate<T>(result: &Result<T, sqlx::Error>) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(sqlx::Error::Database(error)) => error.code().map(|code| code.into_owned()),
        Err(other) => Some(format!("not a database error: {other}")),
    }
}

/// sqlx prepares every statement with bound parameters (Parse, then Bind in a second
/// request/response cycle), and caches it per client connection under names like `sqlx_s_1`.
/// PgBouncer 1.21 and later track those (`max_prepared_statements`, which the harness sets).
/// Before that, through transaction pooling they only work inside a transaction: this test
/// records what breaks, so that the README's advice stays true.
#[tokio::test(flavor = "multi_thread")]
async fn sqlx_prepared_statements_through_transaction_pooling() {
    let db = TestDb::new().await;
    let select = |sql: &'static str| sqlx::query_scalar::<_, i32>(sql).bind(1);

    // PgBouncer's defaults: no reset between clients, sqlx's statement cache on.
    let bouncer = PgBouncer::builder()
        .pool_size(2)
        .reset_prepared_statements(false)
        .start(&db)
        .await;
    let mut a = bouncer.connect().await;
    let mut b = bouncer.connect().await;
    let a1 = select("SELECT $1::int").fetch_one(&mut a).await;
    // b is lent the same server session, where a's `sqlx_s_1` already exists.
    let b1 = select("SELECT $1::int + 1").fetch_one(&mut b).await;
    // While b holds that session in a transaction, a is lent another one, which lacks a's
    // cached `sqlx_s_1`.
    let b_on = begin_raw(&mut b).await;
    let a2 = select("SELECT $1::int").fetch_one(&mut a).await;
    let a_on = session_of(&mut a).await.0;
    run(&mut b, "COMMIT").await;
    if bouncer.tracks_prepared_statements() {
        assert_eq!((a1.ok(), b1.ok(), a2.ok()), (Some(1), Some(2), Some(1)));
    } else {
        assert_eq!(a1.ok(), Some(1));
        assert_eq!(sqlstate(&b1).as_deref(), Some("42P05"), "{b1:?}"); // already exists
        assert_ne!(a_on, b_on);
        assert_eq!(sqlstate(&a2).as_deref(), Some("26000"), "{a2:?}"); // does not exist
    }
    drop(bouncer);

    // The harness's default: before 1.21, DEALLOCATE ALL between clients and no statement cache.
    let bouncer = PgBouncer::builder().pool_size(2).start(&db).await;
    let mut a = bouncer.connect().await;
    let outside = select("SELECT $1::int").fetch_one(&mut a).await;
    let mut tx = a.begin().await.unwrap();
    let inside = select("SELECT $1::int").fetch_one(&mut *tx).await;
    tx.commit().await.unwrap();
    assert_eq!(inside.ok(), Some(1), "inside a transaction it always works");
    if bouncer.tracks_prepared_statements() {
        assert_eq!(outside.ok(), Some(1));
    } else {
        // Parse and Bind are two cycles; the session is reset in between.
        assert_eq!(sqlstate(&outside).as_deref(), Some("26000"), "{outside:?}");
    }
}
