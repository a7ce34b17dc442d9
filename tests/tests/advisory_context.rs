//! A session waiting for an advisory lock says which lock and which function it is: its
//! statement starts with a `/*pga_context=...*/` comment that the inspector reads back.

mod common;

use std::time::Duration;

use common::until_someone_waits;
use pglock::{Activity, Error, advisory};
use pglock_tests::TestDb;
use sqlx::PgPool;

/// The activity of the session waiting (ungranted) for `id`, once one waits.
async fn waiting_activity(observer: &PgPool, id: &str) -> Activity {
    until_someone_waits(observer, id).await;
    let rows = pglock::locks()
        .advisory([id])
        .granted(false)
        .fetch(observer)
        .await
        .unwrap();
    let [row] = rows.as_slice() else {
        panic!("one waiter expected: {rows:?}");
    };
    row.activity.clone().expect("the waiter's activity")
}

/// What Postgres' own JSON parser reads out of a context: the lock id and the function.
async fn parsed(observer: &PgPool, context: &str) -> (String, Option<String>) {
    sqlx::query_as("SELECT $1::json ->> 'lock', $1::json ->> 'fn'")
        .bind(context)
        .fetch_one(observer)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wait_on_a_pool_names_its_lock_and_function() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let mut holder = db.connect().await;
    let held = advisory("digest").acquire(&mut holder).await.unwrap();

    let pool = db.pool_with(2).await;
    let waiting = tokio::spawn(async move {
        advisory("digest")
            .function("app::jobs::send_digest")
            .timeout(Duration::from_secs(30))
            .acquire(&pool)
            .await?
            .release()
            .await
    });
    let activity = waiting_activity(observer, "digest").await;
    assert_eq!(
        activity.context.as_deref(),
        Some(r#"{"lock":"digest","fn":"app::jobs::send_digest"}"#)
    );
    assert!(
        !activity.query.contains("pga_context"),
        "the comment is split off: {}",
        activity.query
    );
    held.release().await.unwrap();
    waiting.await.unwrap().unwrap();
}

#[pglock::advisory("nightly")]
async fn nightly(pool: &PgPool) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_attribute_names_the_function_it_wraps() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let mut holder = db.connect().await;
    let held = advisory("nightly").acquire(&mut holder).await.unwrap();

    let pool = db.pool_with(2).await;
    let job = tokio::spawn(async move { nightly(&pool).await });
    let activity = waiting_activity(observer, "nightly").await;
    let context = activity.context.expect("a context");
    assert_eq!(
        parsed(observer, &context).await,
        (
            "nightly".to_owned(),
            Some("advisory_context::nightly".to_owned())
        )
    );
    held.release().await.unwrap();
    job.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_id_that_looks_like_sql_or_a_comment_end_stays_inside_the_comment() {
    let db = TestDb::new().await;
    let observer = db.pool();
    let id = "*/ SELECT pg_terminate_backend(pg_backend_pid()); /* \"q\" \\ 'x'\n é";
    let mut holder = db.connect().await;
    let held = advisory(id).acquire(&mut holder).await.unwrap();

    // In the caller's transaction: a timed wait goes out as text, in a savepoint.
    let mut waiter = db.connect().await;
    let waiting = tokio::spawn(async move {
        let mut tx = sqlx::Connection::begin(&mut waiter).await.unwrap();
        advisory(id)
            .xact()
            .timeout(Duration::from_secs(30))
            .acquire(&mut tx)
            .await
            .map(drop)?;
        let still_usable: i32 = sqlx::query_scalar("SELECT 7").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok::<_, Error>(still_usable)
    });
    let activity = waiting_activity(observer, id).await;
    let context = activity.context.expect("a context");
    assert!(!context.contains('*'), "{context}");
    assert_eq!(parsed(observer, &context).await, (id.to_owned(), None));
    held.release().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 7);
}
