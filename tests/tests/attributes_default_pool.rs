//! A function without a handle argument takes its lock through the default pool: the one
//! `set_default_pool` gave, else one built from `DATABASE_URL`, else an error saying so.
//!
//! This binary has one test, because it changes the process environment.

use pglock::Error;
use pglock_tests::TestDb;

/// The database the default pool is on, read while holding the lock.
#[pglock::advisory("defaulted")]
async fn uses_the_default_pool() -> Result<String, Error> {
    let pool = pglock::default_pool()?;
    let name: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&pool)
        .await?;
    Ok(name)
}

/// A skipping job whose return type cannot carry an error.
#[pglock::advisory("nightly", timeout = "0s", side_effect = Skip)]
async fn skipping_job() {}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_pool_comes_from_set_default_pool_or_database_url() {
    // Resolve the test server before changing DATABASE_URL.
    let (first, second) = (TestDb::new().await, TestDb::new().await);

    // SAFETY: this binary's only test, so no other thread reads the environment meanwhile.
    unsafe { std::env::remove_var("DATABASE_URL") };
    let error = uses_the_default_pool().await.unwrap_err();
    assert!(matches!(error, Error::NoDatabase), "{error:?}");
    assert!(error.to_string().contains("set_default_pool"), "{error}");
    // A misconfiguration is never a silent skip: a function that cannot return the error panics.
    let panicked = tokio::spawn(skipping_job()).await.unwrap_err();
    let message = panicked.into_panic();
    let message = message
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(message.contains("no database to lock in"), "{message}");
    assert!(
        message.contains("Result<(), E>"),
        "says what to do instead: {message}"
    );

    // SAFETY: as above.
    unsafe { std::env::set_var("DATABASE_URL", first.url()) };
    assert_eq!(uses_the_default_pool().await.unwrap(), first.name());

    pglock::set_default_pool(second.pool().clone());
    assert_eq!(
        uses_the_default_pool().await.unwrap(),
        second.name(),
        "replaced"
    );
}
