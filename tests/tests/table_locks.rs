//! `pglock::lock_table`: `LOCK TABLE` in each of the eight modes, conflicting exactly as Postgres
//! documents, waiting as told, quoting every name, leaving no `lock_timeout` behind and the
//! caller's transaction usable, and refusing to run outside a transaction.

mod common;

use std::time::Duration;

use common::{eventually, lock_timeout, pid};
use pglock::{Error, LockMode, LockTarget, TableName, Wait, lock_table};
use pglock_tests::TestDb;
use sqlx::{Connection, PgConnection, PgPool};

const SHORT: Duration = Duration::from_millis(100);

/// Run statements written by hand (setup), one simple-query message.
async fn run(conn: &mut PgConnection, statements: &'static str) {
    sqlx::raw_sql(statements)
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
}

/// The relation locks on table `schema.name`, as `(pid, mode, granted)`, seen from a session of
/// the observer's.
async fn table_locks(observer: &PgPool, schema: &str, name: &str) -> Vec<(i32, String, bool)> {
    sqlx::query_as(
        "SELECT l.pid, l.mode, l.granted FROM pg_locks l \
         JOIN pg_class c ON c.oid = l.relation \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE l.locktype = 'relation' \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND n.nspname = $1 AND c.relname = $2 \
         ORDER BY l.pid, l.mode",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(observer)
    .await
    .expect("reading pg_locks")
}

/// The relation locks on `public.<name>`.
async fn locks_on(observer: &PgPool, name: &str) -> Vec<(i32, String, bool)> {
    table_locks(observer, "public", name).await
}

/// Whether a query still works on the connection (its transaction is not aborted).
async fn usable(conn: &mut PgConnection) -> bool {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(conn)
        .await
        .is_ok()
}

fn tables(names: &[&str]) -> LockTarget {
    LockTarget::Tables(names.iter().map(|name| name.to_string()).collect())
}

/// Assert that `result` is `NotInTransaction` naming the one table `name` (its SQL form).
#[track_caller]
fn not_in_transaction<T: std::fmt::Debug>(result: Result<T, Error>, name: &str) {
    match result {
        Err(Error::NotInTransaction { target }) => assert_eq!(target, tables(&[name])),
        other => panic!("expected NotInTransaction, got {other:?}"),
    }
}

fn sqlstate(error: &Error) -> Option<String> {
    match error {
        Error::Database(source) | Error::LockTimeout { source, .. } => source
            .as_database_error()
            .and_then(|e| e.code())
            .map(|code| code.into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_mode_is_taken_and_conflicts_exactly_as_postgres_documents() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    let mut other = db.connect().await;
    run(&mut holder, "CREATE TABLE t (id int)").await;
    let holder_pid = pid(&mut holder).await;
    let other_pid = pid(&mut other).await;

    for held in LockMode::ALL {
        let mut tx = holder.begin().await.unwrap();
        lock_table("t").mode(held).acquire(&mut tx).await.unwrap();
        assert_eq!(
            locks_on(db.pool(), "t").await,
            [(holder_pid, held.pg_locks_name().to_owned(), true)],
            "{held}"
        );

        for asked in LockMode::ALL {
            let mut other_tx = other.begin().await.unwrap();
            let acquired = lock_table("t")
                .mode(asked)
                .nowait()
                .try_acquire(&mut other_tx)
                .await
                .unwrap();
            assert_eq!(
                acquired,
                !held.conflicts_with(asked),
                "{asked} while another session holds {held}"
            );
            let others: Vec<_> = locks_on(db.pool(), "t")
                .await
                .into_iter()
                .filter(|(pid, ..)| *pid == other_pid)
                .collect();
            if acquired {
                assert_eq!(
                    others,
                    [(other_pid, asked.pg_locks_name().to_owned(), true)]
                );
            } else {
                assert!(
                    others.is_empty(),
                    "a NOWAIT attempt leaves nothing: {others:?}"
                );
                assert!(usable(&mut other_tx).await);
            }
            other_tx.rollback().await.unwrap();
        }
        tx.rollback().await.unwrap();
    }
    assert!(locks_on(db.pool(), "t").await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn nowait_on_a_held_table_is_busy_and_the_transaction_stays_usable() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    run(&mut holder, "CREATE TABLE t (id int)").await;
    let mut held = holder.begin().await.unwrap();
    lock_table("t").acquire(&mut held).await.unwrap();

    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.unwrap();
    let error = lock_table("t").nowait().acquire(&mut tx).await.unwrap_err();
    match &error {
        Error::Busy { target } => assert_eq!(target, &tables(&["\"t\""])),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(error.is_not_acquired());
    assert_eq!(
        error.to_string(),
        "could not acquire table \"t\": another session holds it"
    );
    assert!(
        usable(&mut tx).await,
        "acquire leaves the transaction usable"
    );

    let zero = lock_table("t").timeout(Duration::ZERO);
    assert!(!zero.try_acquire(&mut tx).await.unwrap());
    assert!(
        usable(&mut tx).await,
        "try_acquire leaves the transaction usable"
    );
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_wait_times_out_with_lock_timeout_and_the_transaction_stays_usable() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    run(&mut holder, "CREATE TABLE t (id int)").await;
    let mut held = holder.begin().await.unwrap();
    lock_table("t")
        .mode(LockMode::Exclusive)
        .acquire(&mut held)
        .await
        .unwrap();

    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.unwrap();
    let error = lock_table("t")
        .mode(LockMode::RowShare)
        .timeout(SHORT)
        .acquire(&mut tx)
        .await
        .unwrap_err();
    match &error {
        Error::LockTimeout { target, .. } => assert_eq!(target, &tables(&["\"t\""])),
        other => panic!("expected LockTimeout, got {other:?}"),
    }
    assert_eq!(sqlstate(&error).as_deref(), Some("55P03"));
    assert!(
        usable(&mut tx).await,
        "acquire leaves the transaction usable"
    );

    assert!(
        !lock_table("t")
            .timeout(SHORT)
            .try_acquire(&mut tx)
            .await
            .unwrap()
    );
    assert!(
        usable(&mut tx).await,
        "try_acquire leaves the transaction usable"
    );

    // The server's own lock_timeout (Wait::ServerDefault) is a LockTimeout too.
    run(&mut tx, "SET LOCAL lock_timeout = '50ms'").await;
    let error = lock_table("t").acquire(&mut tx).await.unwrap_err();
    assert!(matches!(error, Error::LockTimeout { .. }), "{error:?}");
    assert!(!lock_table("t").try_acquire(&mut tx).await.unwrap());
    assert!(usable(&mut tx).await);
    tx.rollback().await.unwrap();

    let conn_pid = pid(&mut conn).await;
    assert!(
        locks_on(db.pool(), "t")
            .await
            .iter()
            .all(|(pid, ..)| *pid != conn_pid),
        "nothing is left waiting or held"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timed_waits_leave_no_lock_timeout_behind() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    run(
        &mut holder,
        "CREATE TABLE busy (id int); CREATE TABLE free (id int)",
    )
    .await;
    let mut held = holder.begin().await.unwrap();
    lock_table("busy").acquire(&mut held).await.unwrap();

    let mut conn = db.connect().await;
    let waits = [
        Wait::Limit(SHORT),
        Wait::Forever,
        Wait::NoWait,
        Wait::ServerDefault,
    ];

    // The server default, a session value, and a transaction-local value on top of a session one.
    for (session, local) in [(None, None), (Some("7s"), None), (Some("7s"), Some("3s"))] {
        match session {
            Some(value) => sqlx::query("SELECT set_config('lock_timeout', $1, false)")
                .bind(value)
                .execute(&mut conn)
                .await
                .map(drop)
                .unwrap(),
            None => run(&mut conn, "RESET lock_timeout").await,
        }
        let session_value = lock_timeout(&mut conn).await;
        for commit in [true, false] {
            let mut tx = conn.begin().await.unwrap();
            if let Some(value) = local {
                sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                    .bind(value)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let before = lock_timeout(&mut tx).await;
            for wait in waits {
                // Acquired, then not acquired (the busy table has no room for it under NoWait
                // and a limit; the server default and Forever would wait, so skip them).
                lock_table("free")
                    .wait(wait)
                    .acquire(&mut tx)
                    .await
                    .unwrap();
                assert_eq!(lock_timeout(&mut tx).await, before, "after {wait:?}");
                if matches!(wait, Wait::Limit(_) | Wait::NoWait) {
                    assert!(
                        !lock_table("busy")
                            .wait(wait)
                            .try_acquire(&mut tx)
                            .await
                            .unwrap()
                    );
                    assert_eq!(
                        lock_timeout(&mut tx).await,
                        before,
                        "after a failed {wait:?}"
                    );
                    let error = lock_table("busy").wait(wait).acquire(&mut tx).await;
                    assert!(error.unwrap_err().is_not_acquired());
                    assert_eq!(
                        lock_timeout(&mut tx).await,
                        before,
                        "after a failed {wait:?}"
                    );
                }
            }
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            assert_eq!(
                lock_timeout(&mut conn).await,
                session_value,
                "session {session:?}, local {local:?}, commit {commit}"
            );
        }
    }

    // The setting that carried the value between statements reverts with the transaction.
    let saved: Option<String> =
        sqlx::query_scalar("SELECT current_setting('pglock.saved_lock_timeout', true)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(saved.as_deref().unwrap_or(""), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_ends_when_the_holder_commits_and_forever_ignores_the_session_lock_timeout() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    run(&mut holder, "CREATE TABLE t (id int)").await;
    let mut held = holder.begin().await.unwrap();
    lock_table("t").acquire(&mut held).await.unwrap();

    for wait in [Wait::Forever, Wait::Limit(Duration::from_secs(30))] {
        let mut conn = db.connect().await;
        run(&mut conn, "SET lock_timeout = '50ms'").await;
        let waiter_pid = pid(&mut conn).await;
        let waiter = tokio::spawn(async move {
            let mut tx = conn.begin().await.unwrap();
            lock_table("t").wait(wait).acquire(&mut tx).await?;
            let after = lock_timeout(&mut tx).await;
            tx.commit().await.unwrap();
            Ok::<_, Error>(after)
        });
        eventually(Duration::from_secs(10), "the waiter waits", || async {
            locks_on(db.pool(), "t").await.contains(&(
                waiter_pid,
                "AccessExclusiveLock".to_owned(),
                false,
            ))
        })
        .await;
        // Well past the session's 50 ms: the statement's own lock_timeout is what counts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiter.is_finished(), "{wait:?} gave up early");

        held.commit().await.unwrap();
        let after = waiter.await.unwrap().unwrap();
        assert_eq!(after, "50ms", "the session's value is back after {wait:?}");
        held = holder.begin().await.unwrap();
        lock_table("t").acquire(&mut held).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn names_are_quoted_exactly_as_given() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    run(
        &mut conn,
        r#"CREATE TABLE plain (id int);
           CREATE SCHEMA billing;
           CREATE TABLE billing.invoices (id int);
           CREATE TABLE "MixedCase" (id int);
           CREATE TABLE "odd ""quoted"".name" (id int);
           CREATE TABLE y (id int);"#,
    )
    .await;
    let me = pid(&mut conn).await;
    let mut tx = conn.begin().await.unwrap();

    lock_table([
        "plain",
        "billing.invoices",
        "MixedCase",
        r#""odd ""quoted"".name""#,
    ])
    .mode(LockMode::Share)
    .acquire(&mut tx)
    .await
    .unwrap();
    let share = vec![(me, "ShareLock".to_owned(), true)];
    assert_eq!(locks_on(db.pool(), "plain").await, share);
    assert_eq!(table_locks(db.pool(), "billing", "invoices").await, share);
    assert_eq!(locks_on(db.pool(), "MixedCase").await, share);
    assert_eq!(locks_on(db.pool(), r#"odd "quoted".name"#).await, share);

    // The same tables, built from their parts, taken verbatim.
    lock_table(vec![
        TableName::new("billing", "invoices"),
        TableName::unqualified("MixedCase"),
        TableName::unqualified(r#"odd "quoted".name"#),
    ])
    .acquire(&mut tx)
    .await
    .unwrap();
    assert!(
        locks_on(db.pool(), r#"odd "quoted".name"#)
            .await
            .contains(&(me, "AccessExclusiveLock".to_owned(), true))
    );

    // No case folding: "mixedcase" is another (missing) table.
    let error = lock_table("mixedcase").acquire(&mut tx).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("42P01"), "{error:?}");
    assert!(usable(&mut tx).await);

    // Text that would be SQL is a name, and no such table exists.
    for injection in [
        TableName::unqualified("x; DROP TABLE y"),
        TableName::unqualified(r#"x"; DROP TABLE y; --"#),
        TableName::new("public", "y; DROP TABLE y"),
    ] {
        let error = lock_table(injection).acquire(&mut tx).await.unwrap_err();
        assert!(matches!(error, Error::Database(_)), "{error:?}");
        assert_eq!(sqlstate(&error).as_deref(), Some("42P01"), "{error:?}");
        assert!(usable(&mut tx).await);
    }
    let error = lock_table("x; DROP TABLE y")
        .acquire(&mut tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("42P01"), "{error:?}");
    // As text, a stray quote does not even parse.
    let error = lock_table(r#"x"; DROP TABLE y; --"#)
        .acquire(&mut tx)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    tx.commit().await.unwrap();

    let y: Option<String> = sqlx::query_scalar("SELECT to_regclass('public.y')::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(y.as_deref(), Some("y"), "table y is still there");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_names_are_refused_before_anything_is_sent() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut tx = conn.begin().await.unwrap();
    let long = "x".repeat(64);
    for (lock, expected) in [
        (lock_table(Vec::<&str>::new()), "at least one table"),
        (lock_table(""), "table name is empty"),
        (lock_table("public."), "table name is empty"),
        (lock_table(".t"), "schema name is empty"),
        (lock_table("a.b.c"), "more than one dot"),
        (lock_table("\"unbalanced"), "unbalanced double quote"),
        (lock_table("t\0"), "NUL"),
        (lock_table(long.as_str()), "64 bytes"),
        (lock_table(TableName::unqualified(long.clone())), "64 bytes"),
        (lock_table(["fine", "a.b.c"]), "more than one dot"),
    ] {
        match lock.acquire(&mut tx).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(expected), "{message}")
            }
            other => panic!("expected InvalidArgument({expected}), got {other:?}"),
        }
    }
    // Nothing was sent: the transaction never saw an error.
    assert!(usable(&mut tx).await);
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn several_tables_are_locked_all_or_none() {
    let db = TestDb::new().await;
    let mut holder = db.connect().await;
    run(
        &mut holder,
        "CREATE TABLE a (id int); CREATE TABLE b (id int)",
    )
    .await;
    let mut held = holder.begin().await.unwrap();
    lock_table("b").acquire(&mut held).await.unwrap();

    let mut conn = db.connect().await;
    let me = pid(&mut conn).await;
    let mut tx = conn.begin().await.unwrap();
    for wait in [Wait::NoWait, Wait::Limit(SHORT)] {
        let error = lock_table(["a", "b"])
            .wait(wait)
            .acquire(&mut tx)
            .await
            .unwrap_err();
        match &error {
            Error::Busy { target } | Error::LockTimeout { target, .. } => {
                assert_eq!(target, &tables(&["\"a\"", "\"b\""]));
                assert_eq!(
                    error.to_string().split(':').next(),
                    Some("could not acquire tables \"a\", \"b\"")
                );
            }
            other => panic!("expected Busy or LockTimeout, got {other:?}"),
        }
        assert!(
            locks_on(db.pool(), "a").await.is_empty(),
            "the lock on a is given back with {wait:?}"
        );
    }
    held.commit().await.unwrap();

    lock_table(["a", "b", "a"]).acquire(&mut tx).await.unwrap();
    for table in ["a", "b"] {
        assert_eq!(
            locks_on(db.pool(), table).await,
            [(me, "AccessExclusiveLock".to_owned(), true)]
        );
    }
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_lock_ends_with_the_transaction() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    run(&mut conn, "CREATE TABLE t (id int)").await;
    let me = pid(&mut conn).await;
    let held = vec![(me, "AccessExclusiveLock".to_owned(), true)];

    let mut tx = conn.begin().await.unwrap();
    lock_table("t").acquire(&mut tx).await.unwrap();
    assert_eq!(locks_on(db.pool(), "t").await, held);
    tx.commit().await.unwrap();
    assert!(locks_on(db.pool(), "t").await.is_empty(), "after commit");

    let mut tx = conn.begin().await.unwrap();
    assert!(lock_table("t").try_acquire(&mut tx).await.unwrap());
    assert_eq!(locks_on(db.pool(), "t").await, held);
    tx.rollback().await.unwrap();
    assert!(locks_on(db.pool(), "t").await.is_empty(), "after rollback");

    // Taken in a nested transaction (a savepoint), it ends when that one is rolled back.
    let mut tx = conn.begin().await.unwrap();
    let mut nested = tx.begin().await.unwrap();
    lock_table("t").acquire(&mut nested).await.unwrap();
    assert_eq!(locks_on(db.pool(), "t").await, held);
    nested.rollback().await.unwrap();
    assert!(
        locks_on(db.pool(), "t").await.is_empty(),
        "after the savepoint"
    );
    assert!(usable(&mut tx).await);
    tx.commit().await.unwrap();

    // Dropping an unfinished transaction rolls it back too.
    let mut tx = conn.begin().await.unwrap();
    lock_table("t").acquire(&mut tx).await.unwrap();
    drop(tx);
    assert!(usable(&mut conn).await);
    assert!(locks_on(db.pool(), "t").await.is_empty(), "after the drop");
}

#[tokio::test(flavor = "multi_thread")]
async fn outside_a_transaction_it_is_refused_and_nothing_is_sent() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    run(&mut conn, "CREATE TABLE t (id int)").await;
    let me = pid(&mut conn).await;
    // The last statement the backend ran, to prove no other reaches it.
    run(&mut conn, "SELECT 'marker'").await;

    // A table that does not exist: the answer is about the transaction, not a server error.
    not_in_transaction(
        lock_table("no_such_table").acquire(&mut conn).await,
        "\"no_such_table\"",
    );
    not_in_transaction(
        lock_table("no_such_table")
            .nowait()
            .try_acquire(&mut conn)
            .await,
        "\"no_such_table\"",
    );
    not_in_transaction(
        lock_table("t").timeout(SHORT).acquire(&mut conn).await,
        "\"t\"",
    );
    not_in_transaction(lock_table("t").acquire(db.pool()).await, "\"t\"");
    not_in_transaction(
        lock_table("no_such_table").try_acquire(db.pool()).await,
        "\"no_such_table\"",
    );
    let mut pooled = db.pool().acquire().await.unwrap();
    not_in_transaction(lock_table("t").acquire(&mut pooled).await, "\"t\"");
    drop(pooled);

    let last: String = sqlx::query_scalar("SELECT query FROM pg_stat_activity WHERE pid = $1")
        .bind(me)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(last, "SELECT 'marker'");
    assert!(locks_on(db.pool(), "t").await.is_empty());

    let error = lock_table("t").acquire(&mut conn).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "table \"t\" needs a transaction: pass a sqlx Transaction"
    );

    // A transaction begun by hand is not one sqlx knows of: refused the same way.
    run(&mut conn, "BEGIN").await;
    not_in_transaction(lock_table("t").acquire(&mut conn).await, "\"t\"");
    run(&mut conn, "ROLLBACK").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_transaction_is_reported_and_left_to_the_caller() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    run(&mut conn, "CREATE TABLE t (id int)").await;
    let mut tx = conn.begin().await.unwrap();
    assert!(sqlx::query("SELECT 1/0").execute(&mut *tx).await.is_err());
    let error = lock_table("t").acquire(&mut tx).await.unwrap_err();
    assert_eq!(sqlstate(&error).as_deref(), Some("25P02"), "{error:?}");
    tx.rollback().await.unwrap();
    assert!(usable(&mut conn).await);
}
