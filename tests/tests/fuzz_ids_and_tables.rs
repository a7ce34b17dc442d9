//! Arbitrary user input against a real server: any string is a lock id that hashes as
//! django-pglock's rule says and locks and unlocks through every statement pglock sends (the
//! plain-text ones that carry the id in a comment included); any table name is either refused
//! with `Error::InvalidArgument` or quoted so that Postgres sees exactly that name. Never a
//! syntax error, never a different object.

mod common;

use std::time::Duration;

use pglock::{AdvisoryKey, Error, LockId, TableName, advisory};
use pglock_tests::TestDb;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRunner};
use sqlx::{Connection as _, PgConnection};

/// Any string, weighted towards what breaks SQL: quotes, backslashes, comment markers, NUL,
/// non-ASCII, and length.
fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\"'\\\\*/\\-;$\\x00 a-zA-Z\u{e9}\u{1F512}]{0,40}",
        ("[a-z*/]{1,4}", 1usize..3000).prop_map(|(piece, n)| piece.repeat(n)),
    ]
}

/// The key of `name` as the server computes django-pglock's rule: the first 8 bytes of the
/// SHA-256 of the UTF-8 bytes, read little-endian as a signed 64-bit integer.
async fn server_key(conn: &mut PgConnection, name: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT ('x' || string_agg(lpad(to_hex(get_byte(d, i)), 2, '0'), '' ORDER BY i DESC)) \
                ::bit(64)::bigint \
         FROM (SELECT sha256($1::bytea) AS d) s, generate_series(0, 7) AS i",
    )
    .bind(name.as_bytes())
    .fetch_one(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn any_string_id_hashes_by_the_rule_and_locks_through_every_statement() {
    let db = TestDb::new().await;
    let pool = db.pool_with(2).await;
    let mut conn = db.connect().await;
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    let strategy = nasty_string();
    for _ in 0..64 {
        let name = strategy.new_tree(&mut runner).unwrap().current();
        let id = LockId::from(name.as_str());
        assert_eq!(
            id.key(),
            AdvisoryKey::BigInt(server_key(&mut conn, &name).await),
            "{name:?}"
        );
        // A bound statement, a plain-text wait on a pool, a plain-text timed wait in a
        // transaction, and a transaction-level scope: each takes exactly this key.
        let guard = advisory(name.as_str())
            .nowait()
            .acquire(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        assert_eq!(common::locks_on(db.pool(), id.clone()).await.len(), 1);
        guard.release().await.unwrap();
        let guard = advisory(name.as_str())
            .acquire(&pool)
            .await
            .unwrap_or_else(|e| panic!("pool, {name:?}: {e:?}"));
        assert_eq!(common::locks_on(db.pool(), id.clone()).await.len(), 1);
        guard.release().await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        let guard = advisory(name.as_str())
            .timeout(Duration::from_secs(5))
            .acquire(&mut tx)
            .await
            .unwrap_or_else(|e| panic!("transaction, {name:?}: {e:?}"));
        guard.release().await.unwrap();
        tx.commit().await.unwrap();
        advisory(name.as_str())
            .xact()
            .scope(&pool, async |_| Ok::<_, Error>(()))
            .await
            .unwrap_or_else(|e| panic!("xact scope, {name:?}: {e:?}"));
        assert!(
            common::advisory_locks(db.pool()).await.is_empty(),
            "{name:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn any_table_name_is_refused_clearly_or_locks_exactly_that_table() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    let mut runner = TestRunner::new(Config::default());
    let strategy = prop_oneof![nasty_string(), "[a-zA-Z_.\"]{1,12}"];
    let (mut locked, mut refused) = (0, 0);
    for case in 0..96 {
        let name = strategy.new_tree(&mut runner).unwrap().current();
        // As one verbatim name, and as `[schema.]table` text to parse.
        for verbatim in [true, false] {
            let mut tx = conn.begin().await.unwrap();
            let result = if verbatim {
                pglock::lock_table(TableName::unqualified(name.as_str()))
                    .nowait()
                    .acquire(&mut tx)
                    .await
            } else {
                pglock::lock_table(name.as_str())
                    .nowait()
                    .acquire(&mut tx)
                    .await
            };
            match result {
                Err(Error::InvalidArgument(message)) => {
                    assert!(message.starts_with("invalid table name"), "{message}");
                    refused += 1;
                }
                // No such table: the server looked up exactly the name (42P01, or 3F000 for a
                // schema), and did not find a syntax error (42601).
                Err(Error::Database(sqlx::Error::Database(e))) => {
                    let code = e.code().unwrap_or_default().into_owned();
                    assert!(
                        code == "42P01" || code == "3F000",
                        "case {case}, {name:?} (verbatim {verbatim}): {code} {}",
                        e.message()
                    );
                }
                other => panic!("case {case}, {name:?} (verbatim {verbatim}): {other:?}"),
            }
            tx.rollback().await.unwrap();
        }
        // Create a table with exactly that name (quoted by the server itself), then lock it.
        if name.is_empty() || name.contains('\0') || name.len() > 63 {
            continue;
        }
        let create: String =
            sqlx::query_scalar("SELECT format('CREATE TABLE %I (x int)', $1::text)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        pglock::lock_table(TableName::unqualified(name.as_str()))
            .nowait()
            .acquire(&mut tx)
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        let on: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE l.pid = pg_backend_pid() AND l.mode = 'AccessExclusiveLock' \
               AND c.relkind = 'r'",
        )
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(on, vec![name.clone()], "locked exactly the table named");
        tx.rollback().await.unwrap();
        let drop_it: String = sqlx::query_scalar("SELECT format('DROP TABLE %I', $1::text)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop_it))
            .execute(&mut conn)
            .await
            .unwrap();
        locked += 1;
    }
    eprintln!("locked {locked} created tables; refused {refused} names");
}
