//! Tests of the test harness itself, against the real server.

use std::process::{Command, Output};

use pglock_tests::{TestDb, server_url};
use sqlx::{Connection as _, PgConnection};

async fn current_database(conn: &mut PgConnection) -> String {
    sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn server_is_reachable_and_is_postgres() {
    let url = tokio::task::spawn_blocking(server_url).await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(version.starts_with("PostgreSQL "), "{version}");
}

#[tokio::test(flavor = "multi_thread")]
async fn server_url_is_the_same_every_time() {
    let first = tokio::task::spawn_blocking(server_url).await.unwrap();
    let second = tokio::task::spawn_blocking(server_url).await.unwrap();
    assert_eq!(first, second);
}

#[tokio::test(flavor = "multi_thread")]
async fn test_db_is_named_and_empty() {
    let db = TestDb::new().await;
    assert!(db.name().starts_with("pglock_t_"), "{}", db.name());
    assert!(db.url().ends_with(db.name()), "{}", db.url());
    assert_eq!(db.options().get_database(), Some(db.name()));

    let mut conn = db.connect().await;
    assert_eq!(current_database(&mut conn).await, db.name());
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_test_db_is_a_separate_database() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    assert_ne!(a.name(), b.name());
    let name_a: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(a.pool())
        .await
        .unwrap();
    let name_b: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(b.pool())
        .await
        .unwrap();
    assert_eq!(name_a, a.name());
    assert_eq!(name_b, b.name());
}

#[tokio::test(flavor = "multi_thread")]
async fn advisory_locks_do_not_cross_test_dbs() {
    let a = TestDb::new().await;
    let b = TestDb::new().await;
    let mut holder = a.connect().await;
    let mut same_db = a.connect().await;
    let mut other_db = b.connect().await;

    sqlx::query("SELECT pg_advisory_lock(42)")
        .execute(&mut holder)
        .await
        .unwrap();
    let got_same: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(42)")
        .fetch_one(&mut same_db)
        .await
        .unwrap();
    let got_other: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(42)")
        .fetch_one(&mut other_db)
        .await
        .unwrap();
    assert!(!got_same, "the lock is held in this database");
    assert!(got_other, "another test's database must not see the lock");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_gives_a_separate_backend() {
    let db = TestDb::new().await;
    let mut one = db.connect().await;
    let mut two = db.connect().await;
    assert_ne!(backend_pid(&mut one).await, backend_pid(&mut two).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn pools_have_the_requested_size_and_are_separate() {
    let db = TestDb::new().await;
    assert_eq!(db.pool().options().get_max_connections(), 10);

    let pool = db.pool_with(2).await;
    assert_eq!(pool.options().get_max_connections(), 2);
    let mut first = pool.acquire().await.unwrap();
    let mut second = pool.acquire().await.unwrap();
    assert_ne!(
        backend_pid(&mut first).await,
        backend_pid(&mut second).await
    );
    // Both of its connections are taken; the shared pool is unaffected.
    assert!(pool.try_acquire().is_none());
    let mut shared = db.pool().acquire().await.unwrap();
    assert_eq!(current_database(&mut shared).await, db.name());
}

#[tokio::test(flavor = "current_thread")]
async fn works_on_a_current_thread_runtime() {
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    assert_eq!(current_database(&mut conn).await, db.name());
}

/// With `DATABASE_URL`, dropping a `TestDb` drops its database; on the throwaway cluster the
/// database stays until the cluster is removed.
#[tokio::test(flavor = "multi_thread")]
async fn dropping_a_test_db_drops_its_database_only_on_an_external_server() {
    let external = std::env::var("DATABASE_URL").is_ok_and(|url| !url.is_empty());
    let db = TestDb::new().await;
    let name = db.name().to_owned();
    // A session still open on it must not stop the drop.
    let _open = db.connect().await;
    drop(db);

    let url = tokio::task::spawn_blocking(server_url).await.unwrap();
    let mut admin = PgConnection::connect(&url).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    assert_eq!(exists, !external, "database {name} exists: {exists}");
}

/// Run the harness's probe program (it takes a `TestDb`, as every test does) with `configure`
/// applied to its environment.
fn take_db_in(configure: impl FnOnce(&mut Command)) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pglock-tests-take-db"));
    command
        .env_remove("DATABASE_URL")
        .env_remove("PGLOCK_PG_BINDIR");
    configure(&mut command);
    command.output().expect("running the probe program")
}

/// What a probe run printed, for the assertion messages.
fn said(output: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn with_a_server_the_probe_connects() {
    let url = server_url();
    let output = take_db_in(|command| {
        command.env("DATABASE_URL", &url);
    });
    assert!(output.status.success(), "{}", said(&output));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("connected: SELECT 1 = 1"),
        "{}",
        said(&output)
    );
}

#[test]
fn without_server_binaries_a_test_fails_and_says_how_to_fix_it() {
    // No DATABASE_URL, and PGLOCK_PG_BINDIR naming a directory with no Postgres in it: the
    // harness cannot start a cluster, and must fail rather than pass or skip.
    let empty = std::env::temp_dir().join(format!("pglock-no-postgres-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let output = take_db_in(|command| {
        command.env("PGLOCK_PG_BINDIR", &empty);
    });
    std::fs::remove_dir_all(&empty).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", said(&output));
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("connected"),
        "{}",
        said(&output)
    );
    assert!(
        stderr.contains("does not contain both `initdb` and `postgres`")
            && stderr.contains("set DATABASE_URL"),
        "{}",
        said(&output)
    );
}

#[test]
fn with_an_unreachable_database_url_a_test_fails_and_names_it() {
    let output = take_db_in(|command| {
        command.env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/postgres");
    });
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", said(&output));
    assert!(
        stderr.contains("cannot connect to the test server postgres://postgres@127.0.0.1:1"),
        "{}",
        said(&output)
    );
}
