//! What every integration test does first, as a program of its own: take a [`TestDb`] and run
//! one statement on it. `tests/tests/harness.rs` runs it in environments with no usable server,
//! to prove that a test there fails with instructions rather than passing or skipping.

use pglock_tests::TestDb;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let db = TestDb::new().await;
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(db.pool())
        .await
        .expect("SELECT 1 on the test database");
    println!("connected: SELECT 1 = {one}");
}
