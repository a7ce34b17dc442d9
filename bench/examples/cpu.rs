//! The client's own work per lock, counted exactly: one operation run in a loop, for
//! `valgrind --tool=callgrind` to count the instructions of that loop alone, the client's CPU
//! time per lock, and the sizes of the futures involved (every `.await` that moves a future
//! copies all of it).
//!
//! ```sh
//! cargo build -p pglock-bench --release --example cpu
//! target/release/examples/cpu sizes
//! valgrind --tool=callgrind --toggle-collect='*cpu::Measured*' \
//!     target/release/examples/cpu attribute-xact 1000   # instructions ÷ 1000 = per lock
//! target/release/examples/cpu cputime 4000               # the client's CPU time per lock
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
//! Instructions are not the whole cost. Each lock waits for the server, whose backend runs in
//! between and leaves the client's caches cold, so what the client runs after the reply costs
//! what it touches (code and data) more than what it executes: 800 instructions more cost the
//! attribute over 1 µs. `cputime` measures that: the CPU time of the client's thread per lock
//! (`CLOCK_THREAD_CPUTIME_ID`), which the server's scheduling, most of a loaded machine's
//! noise, does not blur, so that a difference of a few hundred nanoseconds shows in one run.
//! Its forms include an A/A control, and the attribute's work written with the runtime API
//! (`xact by hand`): the cost the attribute is held to.
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

/// What `attribute_xact` does, written with the runtime API in a function of its own (the
/// body's panic caught, the lock released after it): the cost the attribute is held to.
async fn xact_by_hand(tx: &mut Transaction<'_, Postgres>) -> Result<(), Error> {
    let guard = pglock::advisory(KEY + 50)
        .xact()
        .function("cpu::xact_by_hand")
        .acquire(&mut **tx)
        .await?;
    let out = pglock::__private::catch_panic(async { Ok::<(), Error>(()) }).await;
    guard.release().await?;
    match out {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// A body that keeps 1,000 bytes across an `.await`: what the attribute adds to a body's size.
#[pglock::advisory(KEY)]
async fn attribute_big_body(conn: &mut PgConnection) -> Result<(), Error> {
    let bytes = [7u8; 1000];
    tokio::task::yield_now().await;
    std::hint::black_box((&bytes, conn));
    Ok(())
}

const OPERATIONS: [&str; 6] = [
    "hand-xact",
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
    if !["sizes", "interleaved", "cputime"].contains(&operation.as_str())
        && !OPERATIONS.contains(&operation.as_str())
    {
        eprintln!(
            "usage: cpu sizes | cpu interleaved [rounds] | cpu cputime [rounds] | cpu <{}> [rounds]",
            OPERATIONS.join("|")
        );
        std::process::exit(2);
    }
    let runtime = if std::env::var_os("CPU_MULTI").is_some() {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    }
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
        if operation == "cputime" {
            cputime(rounds, &mut conn).await;
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
                "hand-xact" => {
                    let mut tx = conn.begin().await?;
                    xact_by_hand(&mut tx).await?;
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

/// Shuffle `order` anew (Fisher-Yates, with a xorshift generator kept in `seed`): each round
/// runs the forms in another order, so that none always follows the same one.
fn shuffle(order: &mut [usize], seed: &mut u64) {
    for i in (1..order.len()).rev() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        order.swap(i, (*seed % (i as u64 + 1)) as usize);
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
        shuffle(&mut order, &mut seed);
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
                        let mut scope = private::Layer::new(policy, &kind, &mut tx);
                        {
                            let (site, span) = scope.entering();
                            let held = private::await_in!(span, private::Kind::enter(kind, site));
                            if scope.entered(held).is_err() {
                                panic!("an uncontended lock")
                            }
                        }
                        let running = Instant::now();
                        let out = {
                            let (lent, held, span) = scope.split();
                            let body = std::pin::pin!(async move {
                                let _ = lent;
                                Ok(())
                            });
                            private::await_in!(span, private::Held::run(held, body))
                        };
                        let exiting = Instant::now();
                        let ended = {
                            let (held, site, span, failed) = scope.ending(&out);
                            private::await_in!(span, private::Held::end(held, site, failed))
                        };
                        scope.exit(out, ended)?;
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

/// The CPU time of this (the only) thread, in ns: what the client spent, syscalls included,
/// without the wait for the server, whose scheduling is most of a loaded machine's noise.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for the call to write.
    let done = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(done, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// The client's CPU time per lock, form by form, in shuffled rounds: the session try and the
/// transaction-level wait, each through the runtime API (twice: the second is the A/A control),
/// and through the attribute. Only the lock is timed (not BEGIN and COMMIT).
async fn cputime(rounds: u32, conn: &mut PgConnection) {
    const FORMS: [&str; 7] = [
        "runtime try",
        "runtime try again",
        "attribute try",
        "runtime xact",
        "runtime xact again",
        "attribute xact",
        "xact by hand",
    ];
    let mut cpu: Vec<Vec<u64>> = vec![Vec::new(); FORMS.len()];
    let mut order: Vec<usize> = (0..FORMS.len()).collect();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        shuffle(&mut order, &mut seed);
        for &form in &order {
            let key = KEY + form as i64;
            let done: Result<(), Error> = if form < 3 {
                let started = thread_cpu_ns();
                let done = async {
                    if form == 2 {
                        attribute_try(conn).await
                    } else {
                        let lock = pglock::advisory(key).timeout(Duration::ZERO);
                        lock.acquire(&mut *conn).await?.release().await
                    }
                }
                .await;
                cpu[form].push(thread_cpu_ns() - started);
                done
            } else {
                let mut tx = conn.begin().await.expect("a transaction");
                let started = thread_cpu_ns();
                let done = async {
                    if form == 6 {
                        xact_by_hand(&mut tx).await
                    } else if form == 5 {
                        attribute_xact(&mut tx).await
                    } else {
                        let guard = pglock::advisory(key).xact().acquire(&mut tx).await?;
                        guard.release().await
                    }
                }
                .await;
                cpu[form].push(thread_cpu_ns() - started);
                tx.commit().await.expect("committed");
                done
            };
            done.expect("an uncontended lock");
        }
    }
    for (form, mut times) in cpu.into_iter().enumerate() {
        times.sort_unstable();
        let mean = times.iter().sum::<u64>() as f64 / times.len() as f64;
        println!(
            "{:>20}: client CPU median {:.2} µs, mean {:.2} µs",
            FORMS[form],
            times[times.len() / 2] as f64 / 1000.0,
            mean / 1000.0
        );
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
        let kind = kind();
        let mut scope = p::Layer::new(policy, &kind, &mut *conn);
        size("Layer (the scope the expansion keeps)", size_of_val(&scope));
        {
            let (site, _) = scope.entering();
            let enter = p::Kind::enter(kind, site);
            size("Kind::enter(..) of a lock", size_of_val(&enter));
            let held = enter.await;
            assert!(scope.entered(held).is_ok(), "entered");
        }
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
        let (_, held, _) = scope.split();
        size(
            "Held::run(that body, pinned as the expansion does)",
            size_of_val(&p::Held::run(held, std::pin::pin!(big()))),
        );
        let run = p::Held::run(held, async { Ok(()) });
        size("Held::run(empty body)", size_of_val(&run));
        let out = run.await;
        let (held, site, _, failed) = scope.ending(&out);
        let end = p::Held::end(held, site, failed);
        size("Held::end(..) of a lock", size_of_val(&end));
        let ended = end.await;
        scope.exit(out, ended).expect("released");
    }
    size(
        "sqlx: query(..).fetch_one(&mut conn)",
        size_of_val(&sqlx::query("SELECT 1").fetch_one(&mut *conn)),
    );
}
