//! A candidate in a leader election, in a process of its own, for the test that kills a
//! leader's process (`tests/tests/leader.rs`): `pglock-tests-leader URL LOCK HEARTBEAT_MS`.
//! It prints `leading` when its task starts, and runs until killed.

use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, lock, heartbeat] = args.as_slice() else {
        eprintln!("usage: pglock-tests-leader URL LOCK HEARTBEAT_MS");
        std::process::exit(2);
    };
    let heartbeat = Duration::from_millis(heartbeat.parse().expect("HEARTBEAT_MS"));
    let pool = sqlx::PgPool::connect_lazy(url).expect("a Postgres URL");
    let leadership = pglock::leader(lock.as_str())
        .heartbeat(heartbeat)
        .run(&pool, || async {
            println!("leading");
            std::future::pending::<()>().await;
        });
    std::future::pending::<()>().await;
    drop(leadership);
}
