//! The client's own work per lock, counted exactly: one operation run in a loop, for
//! `valgrind --tool=callgrind` to count the instructions of that loop alone, and the sizes of
//! the futures involved (every `.await` that moves a future copies all of it).
//!
//! ```sh
//! cargo build -p pglock-bench --release --example cpu
//! target/release/examples/cpu sizes
//! valgrind --tool=callgrind --toggle-collect='cpu::measured::*' \
//!     target/release/examples/cpu attribute-xact 1000   # instructions ÷ 1000 = per lock
//! ```
//!
//! Wall-clock timing is the benchmark's job (`pglock-bench --only latency`); this is what to
//! look at when a row moves: instruction counts do not depend on the machine's load, and
//! `callgrind_annotate` says where they go. It found the statement text formatted on every
//! lock, and the 14 KB pool checkout carried inside every lock future.

use std::time::{Duration, Instant};

use pglock::Error;
use pglock_tests::TestDb;
use sqlx::{Connection as _, PgConnection, Postgres, Transaction};

const KEY: i64 = 77;

#[pglock::advisory(KEY, xact)]
async fn attribute_xact(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    let _ = tx;
    Ok(())
}

#[pglock::advisory(KEY, timeout = "0s")]
async fn attribute_try(conn: &mut PgConnection) -> Result<(), Error> {
    let _ = conn;
    Ok(())
}

const OPERATIONS: [&str; 5] = [
    "raw-xact",
    "runtime-xact",
    "attribute-xact",
    "runtime-try",
    "attribute-try",
];

fn main() {
    let mut args = std::env::args().skip(1);
    let operation = args.next().unwrap_or_default();
    let rounds: u32 = args
        .next()
        .map_or(1000, |n| n.parse().expect("a number of rounds"));
    if operation != "sizes" && !OPERATIONS.contains(&operation.as_str()) {
        eprintln!("usage: cpu sizes | cpu <{}> [rounds]", OPERATIONS.join("|"));
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let db = TestDb::new().await;
        let mut conn = db.connect().await;
        if operation == "sizes" {
            sizes(&db, &mut conn).await;
            return;
        }
        let started = Instant::now();
        measured(&operation, rounds, &mut conn).await;
        eprintln!("{operation}: {:?} per lock", started.elapsed() / rounds);
    });
}

/// The loop callgrind counts (`--toggle-collect='cpu::measured::*'`): only its polls.
#[inline(never)]
async fn measured(operation: &str, rounds: u32, conn: &mut PgConnection) {
    for _ in 0..rounds {
        let done: Result<(), Error> = async {
            match operation {
                "raw-xact" => {
                    let mut tx = conn.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(KEY)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                }
                "runtime-xact" => {
                    let mut tx = conn.begin().await?;
                    let guard = pglock::advisory(KEY).xact().acquire(&mut tx).await?;
                    guard.release().await?;
                    tx.commit().await?;
                }
                "attribute-xact" => {
                    let mut tx = conn.begin().await?;
                    attribute_xact(&mut tx).await?;
                    tx.commit().await?;
                }
                "runtime-try" => {
                    let lock = pglock::advisory(KEY).timeout(Duration::ZERO);
                    lock.acquire(&mut *conn).await?.release().await?;
                }
                _ => attribute_try(conn).await?,
            }
            Ok(())
        }
        .await;
        done.expect("an uncontended lock");
    }
}

async fn sizes(db: &TestDb, conn: &mut PgConnection) {
    let pool = db.pool_with(1).await;
    let mut tx = conn.begin().await.expect("a transaction");
    let size = |what: &str, bytes: usize| println!("{bytes:>6} bytes  {what}");
    size(
        "#[advisory(xact)] call",
        size_of_val(&attribute_xact(&mut tx)),
    );
    size(
        "advisory(..).xact().acquire(&mut tx)",
        size_of_val(&pglock::advisory(KEY).xact().acquire(&mut tx)),
    );
    drop(tx);
    size(
        "advisory(..).acquire(&mut conn)",
        size_of_val(&pglock::advisory(KEY).acquire(&mut *conn)),
    );
    size(
        "advisory(..).acquire(&pool)",
        size_of_val(&pglock::advisory(KEY).acquire(&pool)),
    );
    size("sqlx: pool.acquire()", size_of_val(&pool.acquire()));
    size(
        "sqlx: query(..).fetch_one(&mut conn)",
        size_of_val(&sqlx::query("SELECT 1").fetch_one(&mut *conn)),
    );
}
