//! `cargo run -p pglock-bench --release [-- --quick] [-- --only <section>] [-- --cold]`
//!
//! Measures pglock against DESIGN.md's performance targets in one run, on a fresh database of
//! the test harness's server (`DATABASE_URL`, or the throwaway cluster), and prints markdown
//! tables with each figure, its ratio to the floor measured in the same run, its target and
//! whether it is met. Sections: `latency` (floor, every mode and form, peers, django-pglock),
//! `contention`, `prioritize`, `inspect`, `migration`, `loss`, `failover` (leader failover
//! timelines and `min_hold`'s return latency).

mod attributed;
mod contention;
mod django;
mod failover;
mod inspect;
mod latency;
mod loss;
mod migration;
mod observe;
mod prioritize;
mod report;
mod roundtrips;
mod stats;

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _};

use report::Report;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const SECTIONS: &[&str] = &[
    "latency",
    "contention",
    "prioritize",
    "inspect",
    "migration",
    "loss",
    "failover",
];

/// How much of everything to do.
struct Plan {
    quick: bool,
    only: Option<String>,
    latency_rounds: usize,
    latency_batch: usize,
    /// Whether each latency operation runs once untimed before it is timed (`--cold`: not).
    latency_warm: bool,
    django_runs: usize,
    django_n: usize,
    contention_rounds: usize,
    contention_window: Duration,
    contention_clients: Vec<usize>,
    contention_keys: Vec<contention::Keys>,
    prioritize_reps: usize,
    inspect_reps: usize,
    /// Terminations per heartbeat, and network cuts per heartbeat.
    loss_reps: usize,
    cut_reps: usize,
    failover_reps: usize,
    min_hold_rounds: usize,
}

impl Plan {
    fn new(quick: bool, only: Option<String>) -> Plan {
        if quick {
            Plan {
                quick,
                only,
                latency_rounds: 400,
                latency_batch: 1,
                latency_warm: true,
                django_runs: 1,
                django_n: 200,
                contention_rounds: 1,
                contention_window: Duration::from_secs(1),
                contention_clients: vec![2, 32],
                contention_keys: vec![contention::Keys::One, contention::Keys::Own],
                prioritize_reps: 2,
                inspect_reps: 3,
                loss_reps: 6,
                cut_reps: 2,
                failover_reps: 4,
                min_hold_rounds: 150,
            }
        } else {
            Plan {
                quick,
                only,
                latency_rounds: 2000,
                latency_batch: 1,
                latency_warm: true,
                django_runs: 3,
                django_n: 1000,
                contention_rounds: 3,
                contention_window: Duration::from_secs(1),
                contention_clients: contention::CLIENTS.to_vec(),
                contention_keys: contention::KEYS.to_vec(),
                prioritize_reps: 5,
                inspect_reps: 10,
                loss_reps: 20,
                cut_reps: 5,
                failover_reps: 15,
                min_hold_rounds: 600,
            }
        }
    }

    fn runs(&self, section: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == section)
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: pglock-bench [--quick] [--only <{}>] [--cold] [--subscriber-without-pglock]",
        SECTIONS.join("|")
    );
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(failover::CANDIDATE) {
        failover::candidate_main(&args[1..]);
    }
    if args.first().map(String::as_str) == Some(contention::WORKER) {
        let url = args.get(1).unwrap_or_else(|| usage()).clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        if let Err(error) = runtime.block_on(contention::worker(&url)) {
            eprintln!("pglock-bench worker: {error}");
            std::process::exit(1);
        }
        return;
    }
    let mut quick = false;
    let mut only = None;
    let mut cold = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            // Latency rows timed without a warm-up call of their own (see `latency::rounds`).
            "--cold" => cold = true,
            // Observability's cost when nobody listens to pglock: a subscriber that shows
            // other crates' events but filters pglock out (compare with no subscriber, and
            // with `--features metrics`, which installs a no-op recorder).
            "--subscriber-without-pglock" => observe::subscriber_without_pglock(),
            "--only" => match args.next() {
                Some(section) if SECTIONS.contains(&section.as_str()) => only = Some(section),
                _ => usage(),
            },
            _ => usage(),
        }
    }
    observe::recorder();
    let mut plan = Plan::new(quick, only);
    plan.latency_warm = !cold;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match runtime.block_on(bench(plan)) {
        Ok(report) => print!("{}", report.text),
        Err(error) => {
            eprintln!("pglock-bench: {error}");
            std::process::exit(1);
        }
    }
}

fn progress(what: &str) {
    eprintln!("pglock-bench: {what}");
}

async fn bench(plan: Plan) -> Res<Report> {
    let started = Instant::now();
    let db = pglock_tests::TestDb::new().await;
    let url = db.url().to_owned();
    let mut admin = db.connect().await;
    let version: String = sqlx::query_scalar("SELECT version()")
        .fetch_one(&mut admin)
        .await?;
    let mut report = Report::default();
    report.header(&[
        format!(
            "pglock-bench ({} mode), {} UTC, {} cores, {}",
            if plan.quick { "quick" } else { "full" },
            now_utc(),
            std::thread::available_parallelism().map_or(0, usize::from),
            version
        ),
        format!("pglock built from {}.", source_state()),
        format!(
            "Load average at the start (1, 5, 15 min): {}; other work shares this machine, hence the \
             interleaved rounds.",
            load_average()
        ),
        format!(
            "Server and client on one machine over TCP loopback; {}; database {} (the test harness's {}).",
            contention::pgbench_version().await,
            db.name(),
            if std::env::var_os("DATABASE_URL").is_some_and(|v| !v.is_empty()) {
                "DATABASE_URL server"
            } else {
                "throwaway cluster"
            }
        ),
    ]);

    let mut cx = latency::Cx::new(db.connect().await, db.pool_with(2).await);
    let mut lat = latency::Latencies::new();
    if plan.runs("latency") {
        progress("sections 1-3: latency (floor, modes, forms, peers)");
        latency::warm_up(&mut cx).await?;
        let round_trips = count_round_trips(&db.options()).await?;
        let mut dj = django::Django::new();
        let missing = django::missing();
        let blocks = plan.django_runs.max(1);
        for block in 0..blocks {
            let rounds =
                plan.latency_rounds / blocks + usize::from(block < plan.latency_rounds % blocks);
            latency::rounds(
                &mut cx,
                &mut lat,
                rounds,
                plan.latency_batch,
                plan.latency_warm,
            )
            .await?;
            if missing.is_none() {
                progress("django-pglock");
                dj.run(&url, plan.django_n).await?;
            }
        }
        report.line_pub("## 1-3. Uncontended acquire + release");
        report.latency(
            &lat,
            &round_trips,
            missing.is_none().then_some(&dj),
            plan.latency_warm,
        );
        if let Some(why) = missing {
            report.django_missing(&why);
        }
    } else {
        // A floor for the targets of later sections.
        latency::warm_up_floor(&mut cx).await?;
        latency::floor_only(&mut cx, &mut lat, 2000).await?;
    }

    if plan.runs("contention") {
        progress("section 4: contention");
        let mut rig = contention::Rig::open(&url).await?;
        let mut results = Vec::new();
        for keys in &plan.contention_keys {
            for n in &plan.contention_clients {
                results.push(contention::Cell {
                    keys: *keys,
                    clients: *n,
                    rates: contention::DRIVERS
                        .iter()
                        .map(|d| (*d, Vec::new()))
                        .collect(),
                });
            }
        }
        for round in 0..plan.contention_rounds {
            for cell in &mut results {
                // Rotate which driver goes first.
                let count = cell.rates.len();
                for i in 0..count {
                    let (driver, rates) = &mut cell.rates[(i + round) % count];
                    rates.push(
                        rig.run(*driver, cell.keys, cell.clients, plan.contention_window)
                            .await?,
                    );
                }
            }
        }
        rig.close().await;
        report.line_pub("## 4. Contention");
        report.contention(&results);
    }

    if plan.runs("prioritize") {
        progress("section 5: prioritize");
        prioritize::setup(db.pool()).await?;
        let connect = prioritize::connect_time(&url, 20).await?;
        let outcomes = prioritize::run(&url, db.pool(), plan.prioritize_reps).await?;
        let anatomy = prioritize::anatomy(&url, plan.prioritize_reps * 2).await?;
        report.line_pub("## 5. Prioritize");
        report.prioritize(&outcomes, lat.floor(), &connect, &anatomy);
    }

    if plan.runs("inspect") {
        progress("section 6: inspection");
        let holders = inspect::hold(&url).await?;
        let outcome = inspect::run(db.pool(), plan.inspect_reps).await;
        holders.release().await?;
        report.line_pub("## 6. Inspection");
        report.inspect(&outcome?);
        progress("section 6: the pglock command");
        let cli = inspect::cli(&url, plan.inspect_reps).await?;
        report.inspect_cli(&cli);
    }

    if plan.runs("inspect") {
        progress("section 6: one pglock top refresh");
        let spread = inspect::hold_across(&url).await?;
        let refresh = inspect::top_refresh(&url, plan.inspect_reps * 3).await;
        spread.release().await?;
        report.top_refresh(&refresh?);
    }

    if plan.runs("migration") {
        progress("section 7: the migration outage");
        let mut outcomes = Vec::new();
        for way in migration::Way::ALL {
            progress(way.label());
            outcomes.push(migration::run(&url, db.pool(), way).await?);
        }
        report.line_pub("## 7. Migrations under load");
        report.migration(&outcomes);
    }

    if plan.runs("loss") {
        progress("section 8: lock loss (detection after pg_terminate_backend)");
        let detection = loss::detection(&db, plan.loss_reps).await?;
        progress("section 8: lock loss (a network cut)");
        let notice = pglock_tests::KEEPALIVE_NOTICE;
        let cuts = loss::cut_timeline(&db, plan.cut_reps, notice).await?;
        report.line_pub("## 8. Lock loss");
        report.loss_detection(&detection, lat.floor());
        report.cut_timeline(&cuts, notice);
        report.line_pub(
            "The heartbeat's cost on short holds is in section 2c (`run`, heartbeat on vs off, \
             measured in the same rounds as every other row).",
        );
    }
    if plan.runs("failover") {
        failover_section(&plan, &db, &mut report, lat.floor()).await?;
    }

    report.misses_section();
    report.line_pub(&format!(
        "\nWhole run: {:.0} s. Load average at the end: {}.",
        started.elapsed().as_secs_f64(),
        load_average()
    ));
    let _ = cx.conn.close().await;
    let _ = admin.close().await;
    Ok(report)
}

/// Section 9: leader failover timelines, and `min_hold`'s return latency.
async fn failover_section(
    plan: &Plan,
    db: &pglock_tests::TestDb,
    report: &mut Report,
    floor: f64,
) -> Res<()> {
    progress("section 9: leader failover");
    let pools = [db.pool_with(2).await, db.pool_with(2).await];
    let outcomes = failover::run(db.url(), &pools, plan.failover_reps).await?;
    let anatomy = failover::anatomy(db.url(), plan.failover_reps).await?;
    progress("section 7: min_hold's return latency");
    let pool = db.pool_with(4).await;
    let min_hold = failover::min_hold(&pool, db.url(), plan.min_hold_rounds).await?;
    pool.close().await;
    for pool in pools {
        pool.close().await;
    }
    report.line_pub("## 9. Leader failover and min_hold");
    report.failover(&outcomes, floor, &anatomy);
    report.min_hold(&min_hold);
    Ok(())
}

/// Round trips and statement preparations of each operation, through the counting proxy.
async fn count_round_trips(options: &PgConnectOptions) -> Res<Vec<(u64, u64)>> {
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let proxy = roundtrips::start(upstream).await?;
    let proxied = options
        .clone()
        .host("127.0.0.1")
        .port(proxy.port)
        .ssl_mode(PgSslMode::Disable);
    let mut cx = latency::Cx::new(
        proxied.connect().await?,
        PgPoolOptions::new()
            .max_connections(1)
            .connect_with(proxied)
            .await?,
    );
    cx.counts = Some(proxy.counts.clone());
    latency::warm_up(&mut cx).await?;
    let mut counts = Vec::with_capacity(latency::ALL.len());
    for op in latency::ALL {
        // Let a pool's background check-in of the previous call finish first.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (rt0, p0) = proxy.counts.snapshot();
        latency::once(*op, &mut cx).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let (rt1, p1) = proxy.counts.snapshot();
        counts.push(match cx.timed_part {
            Some(((rt0, p0), (rt1, p1))) => (rt1 - rt0, p1 - p0),
            None => (rt1 - rt0, p1 - p0),
        });
    }
    let _ = cx.conn.close().await;
    cx.pool.close().await;
    Ok(counts)
}

/// The median of a few figures.
pub fn median_of(values: &[f64]) -> f64 {
    let mut samples = stats::Samples::default();
    for v in values {
        samples.push_us(*v);
    }
    samples.median()
}

fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M"])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_else(|_| "date unknown".into())
}

/// The first three fields of `/proc/loadavg`.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".into())
}

/// The commit the run was built from, and whether pglock's sources differed from it.
fn source_state() -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "an unknown commit".into();
    };
    let library = [
        "pglock/src",
        ":(exclude)pglock/src/bin",
        "pglock-macros/src",
    ];
    match git(&[&["status", "--porcelain", "--"][..], &library[..]].concat()) {
        Some(changes) if changes.is_empty() => format!("commit {head}"),
        Some(_) => {
            format!("commit {head} plus uncommitted changes to the library or macros")
        }
        None => format!("commit {head}"),
    }
}
