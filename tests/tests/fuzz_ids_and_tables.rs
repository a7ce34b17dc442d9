//! Arbitrary user input against a real server: any string is a lock id that hashes as
//! django-pglock's rule says and locks and unlocks through every statement pglock sends (the
//! plain-text ones that carry the id in a comment included); any table name, given to
//! `lock_table` or to the inspector's `on`, is either refused with `Error::InvalidArgument` or
//! reaches Postgres as exactly that name. Never a syntax error, never a different object.

mod common;

use std::time::Duration;

use pglock::{AdvisoryKey, Error, LockId, TableName, advisory};
use pglock_tests::TestDb;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
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

/// A runner with a fixed seed, so that a failure shows up on every run until it is fixed;
/// `PGLOCK_FUZZ_SEED` (a number) explores other inputs, as `scripts/soak` does.
fn runner() -> TestRunner {
    let seed: u64 = std::env::var("PGLOCK_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(0x7067_6c6f_636b);
    eprintln!("PGLOCK_FUZZ_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &bytes),
    )
}

/// How many generated inputs per test: `PGLOCK_FUZZ_CASES`, else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PGLOCK_FUZZ_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(default)
}

/// Inputs every run tries first: the edges of what Postgres accepts as a name.
fn edge_cases() -> Vec<String> {
    [
        "",
        "\0",
        "a\0b",
        "\"",
        "\"\"",
        "'",
        "\\",
        "a.b",
        "\"a.b\"",
        "A",
        " ",
        "select",
        "--",
        "/*",
        "*/",
        "$1",
        "pg_class",
        "\u{1F512}",
    ]
    .into_iter()
    .map(str::to_owned)
    .chain([
        "x".repeat(63),
        "x".repeat(64),
        "\u{e9}".repeat(31),
        "\u{e9}".repeat(32),
    ])
    .collect()
}

/// Whether `table` names an existing relation, as the server itself quotes and looks it up.
async fn exists(conn: &mut PgConnection, table: &TableName) -> bool {
    sqlx::query_scalar(
        "SELECT to_regclass(CASE WHEN $1::text IS NULL THEN format('%I', $2::text) \
                                 ELSE format('%I.%I', $1::text, $2::text) END) IS NOT NULL",
    )
    .bind(table.schema())
    .bind(table.name())
    .fetch_one(conn)
    .await
    .unwrap()
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
    let mut runner = runner();
    let strategy = nasty_string();
    let generated = (0..cases(64)).map(|_| strategy.new_tree(&mut runner).unwrap().current());
    for name in edge_cases().into_iter().chain(generated) {
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
    let mut runner = runner();
    let strategy = prop_oneof![nasty_string(), "[a-zA-Z_.\"]{1,12}"];
    let (mut locked, mut refused) = (0, 0);
    let generated = (0..cases(96)).map(|_| strategy.new_tree(&mut runner).unwrap().current());
    for (case, name) in edge_cases().into_iter().chain(generated).enumerate() {
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
                // Only a name that already names a relation (`pg_class`, found on the
                // search_path) may lock.
                Ok(()) => {
                    let table = if verbatim {
                        TableName::unqualified(name.as_str())
                    } else {
                        name.parse().unwrap()
                    };
                    assert!(
                        exists(&mut tx, &table).await,
                        "case {case}, {name:?} (verbatim {verbatim}) locked, but names no relation"
                    );
                }
                other => panic!("case {case}, {name:?} (verbatim {verbatim}): {other:?}"),
            }
            tx.rollback().await.unwrap();
            // The inspector's table filter: the same names, refused the same way or bound as
            // values (nothing of this name exists yet, so nothing matches).
            let listed = if verbatim {
                pglock::locks()
                    .on(TableName::unqualified(name.as_str()))
                    .fetch(db.pool())
                    .await
            } else {
                pglock::locks().on(name.as_str()).fetch(db.pool()).await
            };
            match listed {
                Ok(rows) => assert!(rows.is_empty(), "{name:?}: {rows:?}"),
                Err(Error::InvalidArgument(message)) => {
                    assert!(message.starts_with("invalid table name"), "{message}")
                }
                Err(other) => panic!("inspect, case {case}, {name:?}: {other:?}"),
            }
        }
        // Create a table with exactly that name in `public` (quoted by the server itself), then
        // lock it by schema and name: exactly that table is locked. (Schema-qualified: an
        // unqualified `pg_class` would be found in pg_catalog first, as Postgres resolves names.)
        if name.is_empty() || name.contains('\0') || name.len() > 63 {
            continue;
        }
        let create: String =
            sqlx::query_scalar("SELECT format('CREATE TABLE public.%I (x int)', $1::text)")
                .bind(&name)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .unwrap();
        let table = TableName::new("public", name.as_str());
        let mut tx = conn.begin().await.unwrap();
        pglock::lock_table(&table)
            .nowait()
            .acquire(&mut tx)
            .await
            .unwrap_or_else(|e| panic!("{name:?}: {e:?}"));
        let on: Vec<(String, String)> = sqlx::query_as(
            "SELECT n.nspname::text, c.relname::text FROM pg_locks l \
             JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE l.pid = pg_backend_pid() AND l.mode = 'AccessExclusiveLock' \
               AND c.relkind = 'r'",
        )
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        assert_eq!(
            on,
            vec![("public".to_owned(), name.clone())],
            "locked exactly the table named"
        );
        // Seen from another session, the inspector finds that lock under that name.
        let rows = pglock::locks()
            .on(&table)
            .fetch(db.pool())
            .await
            .unwrap_or_else(|e| panic!("inspect {name:?}: {e:?}"));
        assert!(!rows.is_empty(), "{name:?}: the held lock is listed");
        assert!(
            rows.iter().all(|row| row
                .relation
                .as_ref()
                .is_some_and(|r| r.schema == "public" && r.name == name)),
            "{name:?}: only that table's locks: {rows:?}"
        );
        tx.rollback().await.unwrap();
        let drop_it: String = sqlx::query_scalar("SELECT format('DROP TABLE public.%I', $1::text)")
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
