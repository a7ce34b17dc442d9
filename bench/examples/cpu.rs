//! The client's own work per lock, counted exactly: one operation run in a loop, for
//! `valgrind --tool=callgrind` to count the instructions of that loop alone, and the sizes of
//! the futures involved (every `.await` that moves a future copies all of it).
//!
//! ```sh
//! cargo build -p pglock-bench --release --example cpu
//! target/release/examples/cpu sizes
//! valgrind --tool=callgrind --toggle-collect='*cpu::Measured*' \
//!     target/release/examples/cpu attribute-xact 1000   # instructions ÷ 1000 = per lock
//! target/release/examples/cpu interleaved 3000           # the xact forms on the wall clock
//! ```
//!
//! Wall-clock timing is the benchmark's job (`pglock-bench --only latency`); this is what to
//! look at when a row moves: instruction counts do not depend on the machine's load, and
//! `callgrind_annotate` says where they go. It found the statement text formatted on every
//! lock, and the 14 KB pool checkout carried inside every lock future. `interleaved` times the
//! attribute's phases, which is how the exit of a transaction-level scope was found to cost
//! four times a runtime release that does the same.
//!
//! Two more tools that told where the attribute's bytes go: rustc's type-size report
//! (`RUSTC_BOOTSTRAP=1 cargo rustc -p pglock-bench --example cpu --release -- -Zprint-type-sizes`
//! lists every future's fields per suspension point), and a `memcpy` interposed with
//! `LD_PRELOAD` that counts copies by size.

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

/// A body that keeps 1,000 bytes across an `.await`: what the attribute adds to a body's size.
#[pglock::advisory(KEY)]
async fn attribute_big_body(conn: &mut PgConnection) -> Result<(), Error> {
    let bytes = [7u8; 1000];
    tokio::task::yield_now().await;
    std::hint::black_box((&bytes, conn));
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
    if !["sizes", "interleaved"].contains(&operation.as_str())
        && !OPERATIONS.contains(&operation.as_str())
    {
        eprintln!(
            "usage: cpu sizes | cpu interleaved [rounds] | cpu <{}> [rounds]",
            OPERATIONS.join("|")
        );
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
        if operation == "interleaved" {
            interleaved(rounds, &mut conn).await;
            return;
        }
        let started = Instant::now();
        Measured(Box::pin(measured(&operation, rounds, &mut conn))).await;
        eprintln!("{operation}: {:?} per lock", started.elapsed() / rounds);
    });
}

/// The loop's future, polled through a function of its own that the compiler cannot inline,
/// so that callgrind counts (`--toggle-collect='*cpu::Measured*'`) its polls and nothing else.
struct Measured<F>(std::pin::Pin<Box<F>>);

impl<F: Future> Future for Measured<F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// The loop callgrind counts.
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

/// The transaction-level forms on the wall clock, in rounds that run each once in a shuffled
/// order (the lock statement alone is timed, as in the benchmark): a quick look at what the
/// benchmark's rows say, with only these forms' code competing for the caches. The attribute's
/// expansion is also run by hand, to time its phases (enter, body, exit) against the runtime
/// form's release.
async fn interleaved(rounds: u32, conn: &mut PgConnection) {
    const FORMS: [&str; 6] = [
        "raw SQL",
        "runtime",
        "runtime again",
        "runtime scope",
        "attribute",
        "attribute by hand",
    ];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); FORMS.len()];
    let mut releases: Vec<Duration> = Vec::new();
    let mut phases: [Vec<Duration>; 3] = Default::default();
    let mut order: Vec<usize> = (0..FORMS.len()).collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        for &form in &order {
            let mut tx = conn.begin().await.expect("a transaction");
            let started = Instant::now();
            let done: Result<(), Error> = async {
                match form {
                    0 => {
                        sqlx::query("SELECT pg_advisory_xact_lock($1)")
                            .bind(KEY)
                            .execute(&mut *tx)
                            .await?;
                    }
                    1 | 2 => {
                        let guard = pglock::advisory(KEY).xact().acquire(&mut tx).await?;
                        let releasing = Instant::now();
                        guard.release().await?;
                        releases.push(releasing.elapsed());
                    }
                    3 => {
                        let lock = pglock::advisory(KEY).xact();
                        lock.scope(&mut *tx, async |_| Ok::<_, Error>(())).await?;
                    }
                    4 => attribute_xact(&mut tx).await?,
                    _ => {
                        // What `#[pglock::advisory(KEY, xact)]` expands to, with clocks.
                        use pglock::__private as private;
                        let policy = private::raise::<Result<(), Error>>();
                        let kind = private::advisory(private::lock_id(&KEY)).xact();
                        let entering = Instant::now();
                        let Ok(mut entered) = private::enter(policy, kind, &mut tx).await else {
                            panic!("an uncontended lock")
                        };
                        let running = Instant::now();
                        let (lent, runner) = entered.split();
                        let out = {
                            let body = std::pin::pin!(async move {
                                let _ = lent;
                                Ok(())
                            });
                            runner.run(body).await
                        };
                        let exiting = Instant::now();
                        entered.exit(out).await?;
                        phases[0].push(running - entering);
                        phases[1].push(exiting - running);
                        phases[2].push(exiting.elapsed());
                    }
                }
                Ok(())
            }
            .await;
            samples[form].push(started.elapsed());
            done.expect("an uncontended lock");
            tx.commit().await.expect("committed");
        }
    }
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    for (form, times) in samples.into_iter().enumerate() {
        println!("{:>18}: median {:?}", FORMS[form], median(times));
    }
    println!("runtime release: median {:?}", median(releases));
    let [enter, body, exit] = phases;
    println!(
        "attribute's phases: enter {:?}, body {:?}, exit {:?} (medians)",
        median(enter),
        median(body),
        median(exit)
    );
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
        "#[advisory] on a body holding 1000 bytes",
        size_of_val(&attribute_big_body(&mut *conn)),
    );
    {
        use pglock::__private as p;
        let kind = || pglock::advisory(KEY).timeout(Duration::ZERO);
        size("Advisory builder", size_of_val(&kind()));
        size(
            "attribute_try(&mut conn)",
            size_of_val(&attribute_try(&mut *conn)),
        );
        let policy = p::raise::<Result<(), Error>>();
        size(
            "__private::enter(..)",
            size_of_val(&p::enter(policy, kind(), &mut *conn)),
        );
        let Ok(mut entered) = p::enter(policy, kind(), &mut *conn).await else {
            panic!("entered")
        };
        size("Entered", size_of_val(&entered));
        let big = || async {
            let bytes = [7u8; 1000];
            tokio::task::yield_now().await;
            std::hint::black_box(&bytes);
            Ok::<_, Error>(())
        };
        size("a body holding 1000 bytes", size_of_val(&big()));

        size(
            "catch_panic(that body)",
            size_of_val(&p::catch_panic(big())),
        );
        size(
            "Runner::run(that body, pinned as the expansion does)",
            size_of_val(&entered.split().1.run(std::pin::pin!(big()))),
        );
        let (_, runner) = entered.split();
        let run = runner.run(async { Ok(()) });
        size("Runner::run(empty body)", size_of_val(&run));
        let out = run.await;
        let exit = entered.exit(out);
        size("Entered::exit(..)", size_of_val(&exit));
        exit.await.expect("released");
    }
    size(
        "sqlx: query(..).fetch_one(&mut conn)",
        size_of_val(&sqlx::query("SELECT 1").fetch_one(&mut *conn)),
    );
}
