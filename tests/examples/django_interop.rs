//! Rust and Django taking the same locks: pglock computes the lock ids django-pglock computes
//! for the same names, so `pglock::advisory("sync-invoices")` in Rust and
//! `pglock.advisory("sync-invoices")` in Django exclude each other.
//!
//! This prints the ids for a few names, then holds one lock from Rust and shows it in
//! `pg_locks`, where the Python side would find it. The Python snippet to try against the same
//! database (with django-pglock installed and Django configured):
//!
//! ```python
//! import pglock
//! with pglock.advisory("sync-invoices", timeout=0) as acquired:
//!     print("acquired" if acquired else "held elsewhere (by the Rust side)")
//! print(pglock.advisory("sync-invoices").int_lock_id)  # the key printed below
//! ```
//!
//! `cargo run -p pglock-tests --example django_interop`: uses `DATABASE_URL` when set, else
//! starts a throwaway Postgres (removed when it exits). Set `HOLD_SECONDS` to keep the lock that
//! long, to run the Python snippet meanwhile.

use std::time::Duration;

use pglock::{AdvisoryKey, Error, LockId, advisory, advisory_id};
use pglock_tests::TestDb;

#[tokio::main]
async fn main() -> Result<(), Error> {
    println!("{:<16} {:>20}  (classid, objid)", "name", "key");
    for name in ["sync-invoices", "nightly-digest", "hello"] {
        // The bigint django-pglock passes to pg_advisory_lock: string ids are one bigint key.
        let AdvisoryKey::BigInt(key) = LockId::from(name).key() else {
            unreachable!("a string id is one bigint key")
        };
        let (classid, objid) = advisory_id(name);
        println!("{name:<16} {key:>20}  ({classid}, {objid})");
    }

    let db = TestDb::new().await;
    println!("\non database {} (url {}):", db.name(), db.url());
    let mut conn = db.connect().await;
    let guard = advisory("sync-invoices").acquire(&mut conn).await?;
    let (classid, objid) = advisory_id("sync-invoices");
    let row: (i64, i64, String) = sqlx::query_as(
        "SELECT classid::int8, objid::int8, mode FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND classid = $1::int8::oid AND objid = $2::int8::oid",
    )
    .bind(i64::from(classid))
    .bind(i64::from(objid))
    .fetch_one(db.pool())
    .await?;
    println!(
        "Rust holds sync-invoices: pg_locks shows (classid {}, objid {}) {}",
        row.0, row.1, row.2
    );
    if let Some(seconds) = std::env::var("HOLD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        println!("holding it {seconds} s: run the Python snippet now");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
    }
    guard.release().await?;
    println!("released");
    Ok(())
}
