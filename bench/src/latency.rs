//! Sections 1-3: the floor, uncontended acquire + release in every mode and through every form
//! (runtime, attribute, pool), and the Rust peers, all measured in interleaved rounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgAdvisoryLock, PgAdvisoryLockKey};
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::Res;
use crate::attributed as attr;
use crate::roundtrips::Counts;
use crate::stats::Samples;

/// What a measurement is held to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// It is the floor, or a variant of it.
    Floor,
    /// Within `1.1 ×` this many floors.
    Floors(f64),
    /// No more than `1.03 ×` the named runtime form: "costs nothing measurable".
    SameAs(Op),
    /// No target: a known cost over the named form, to show how far this run can tell it.
    Calibrates(Op),
    /// Reported for comparison, with no target.
    Info,
}

/// The client work the calibration row adds between acquire and release.
pub const CALIBRATION: Duration = Duration::from_micros(2);

/// The waiting modes of a session lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The server's `lock_timeout` (the builder's default).
    Default,
    /// `wait_forever()` / `timeout = None`.
    Forever,
    /// `nowait()` / `timeout = "0s"`.
    Try,
    /// `timeout(5 s)`.
    Timed,
    /// `shared()`, waiting as the server's `lock_timeout` allows.
    Shared,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Default => "wait (server lock_timeout)",
            Mode::Forever => "wait forever (timeout None)",
            Mode::Try => "timeout 0 (try)",
            Mode::Timed => "timeout 5s",
            Mode::Shared => "shared",
        }
    }

    fn lock(self, key: i64) -> pglock::Advisory {
        let lock = pglock::advisory(key);
        match self {
            Mode::Default => lock,
            Mode::Forever => lock.wait_forever(),
            Mode::Try => lock.nowait(),
            Mode::Timed => lock.timeout(Duration::from_secs(5)),
            Mode::Shared => lock.shared(),
        }
    }
}

/// Transaction-level modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XactMode {
    Default,
    Try,
    Timed,
}

impl XactMode {
    fn name(self) -> &'static str {
        match self {
            XactMode::Default => "xact, wait",
            XactMode::Try => "xact, timeout 0",
            XactMode::Timed => "xact, timeout 5s",
        }
    }

    fn lock(self, key: i64) -> pglock::Advisory {
        let lock = pglock::advisory(key).xact();
        match self {
            XactMode::Default => lock,
            XactMode::Try => lock.nowait(),
            XactMode::Timed => lock.timeout(Duration::from_secs(5)),
        }
    }
}

/// One measured operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    SelectPrepared,
    SelectSimple,
    Runtime(Mode),
    RuntimeXact(XactMode),
    /// `Runtime(Mode::Default)` again, under a key of its own: two identical operations in one
    /// run, whose difference is the run's noise (an A/A control for the attribute rows).
    RuntimeAgain,
    /// `RuntimeXact(XactMode::Default)` again: the control for the transaction-level rows.
    RuntimeXactAgain,
    /// `scope` on the connection with an empty body, waiting: the runtime call that does what
    /// the attribute does (runs a body, catches its panic, settles its outcome with the release).
    RuntimeScope,
    /// `Runtime(Mode::Default)` with 2 µs of client work (a busy wait) between acquire and
    /// release: a known cost, to show what this run can tell from noise.
    Calibration,
    Attr(Mode),
    AttrXact,
    Pool(Mode),
    PoolXactScope,
    AttrPool,
    /// `run` on the pool with an empty body, with the heartbeat (the default, 2 s) or without.
    PoolRun {
        heartbeat: bool,
    },
    SqlxLock,
    RawLock,
    NaiveTimed,
    RawXact,
    /// pglock's own statement for `RuntimeXact(Default)` (the standby gate and the backend pid
    /// around `pg_advisory_xact_lock`), sent by hand: what of pglock's cost over `RawXact` is
    /// the server's.
    RawGatedXact,
    /// `RuntimeXact(Default)` with its BEGIN and COMMIT timed too, as django-pglock's xact is.
    RuntimeXactWhole,
}

/// Every operation, in report order.
pub const ALL: &[Op] = &[
    Op::SelectPrepared,
    Op::SelectSimple,
    Op::Runtime(Mode::Default),
    Op::Runtime(Mode::Forever),
    Op::Runtime(Mode::Try),
    Op::Runtime(Mode::Timed),
    Op::Runtime(Mode::Shared),
    Op::RuntimeXact(XactMode::Default),
    Op::RuntimeXact(XactMode::Try),
    Op::RuntimeXact(XactMode::Timed),
    Op::RuntimeAgain,
    Op::RuntimeXactAgain,
    Op::RuntimeScope,
    Op::Calibration,
    Op::Attr(Mode::Default),
    Op::Attr(Mode::Forever),
    Op::Attr(Mode::Try),
    Op::Attr(Mode::Timed),
    Op::Attr(Mode::Shared),
    Op::AttrXact,
    Op::Pool(Mode::Default),
    Op::Pool(Mode::Try),
    Op::Pool(Mode::Timed),
    Op::PoolXactScope,
    Op::PoolRun { heartbeat: false },
    Op::PoolRun { heartbeat: true },
    Op::AttrPool,
    Op::SqlxLock,
    Op::RawLock,
    Op::NaiveTimed,
    Op::RawXact,
    Op::RawGatedXact,
    Op::RuntimeXactWhole,
];

impl Op {
    pub fn section(self) -> &'static str {
        match self {
            Op::SelectPrepared | Op::SelectSimple => "1. Floor",
            Op::Runtime(_)
            | Op::RuntimeXact(_)
            | Op::RuntimeAgain
            | Op::RuntimeXactAgain
            | Op::RuntimeScope
            | Op::Calibration => "2a. Runtime API on a held `&mut PgConnection`",
            Op::Attr(_) | Op::AttrXact => "2b. Attribute on a held connection",
            Op::Pool(_) | Op::PoolXactScope | Op::AttrPool | Op::PoolRun { .. } => {
                "2c. Through `&PgPool` (pool checkout included)"
            }
            Op::SqlxLock
            | Op::RawLock
            | Op::NaiveTimed
            | Op::RawXact
            | Op::RawGatedXact
            | Op::RuntimeXactWhole => "3. Peers (same connection, same run)",
        }
    }

    pub fn name(self) -> String {
        match self {
            Op::SelectPrepared => "`SELECT 1`, prepared (extended protocol) = **floor**".into(),
            Op::SelectSimple => "`SELECT 1`, simple query protocol".into(),
            Op::Runtime(mode) => format!("acquire + release, {}", mode.name()),
            Op::RuntimeXact(mode) => format!("{}: acquire + release in a tx (¹)", mode.name()),
            Op::RuntimeAgain => format!(
                "{}, again (A/A control: the same operation)",
                Op::Runtime(Mode::Default).name()
            ),
            Op::RuntimeXactAgain => format!(
                "{}, again (A/A control: the same operation)",
                Op::RuntimeXact(XactMode::Default).name()
            ),
            Op::RuntimeScope => "`scope` on the connection, empty body, wait".into(),
            Op::Calibration => format!(
                "acquire, {} µs of client work, release (calibration: a known cost)",
                CALIBRATION.as_micros()
            ),
            Op::Attr(mode) => format!("`#[advisory]`, {}", mode.name()),
            Op::AttrXact => "`#[advisory(xact)]` on `&mut Transaction` (¹)".into(),
            Op::Pool(mode) => format!("pool: acquire + release, {}", mode.name()),
            Op::PoolXactScope => "pool: `xact().scope(pool, ..)` (BEGIN, lock, COMMIT)".into(),
            Op::AttrPool => "pool: `#[advisory]` on `&PgPool`, wait".into(),
            Op::PoolRun { heartbeat: false } => {
                "pool: `run`, empty body, `.heartbeat(None)`".into()
            }
            Op::PoolRun { heartbeat: true } => {
                "pool: `run`, empty body, heartbeat on (2 s default)".into()
            }
            Op::SqlxLock => "sqlx `PgAdvisoryLock`: acquire + `release_now`".into(),
            Op::RawLock => "raw SQL: `pg_advisory_lock($1)` + `pg_advisory_unlock($1)`".into(),
            Op::NaiveTimed => "raw SQL: naive timed lock (SET; lock; RESET; unlock)".into(),
            Op::RawXact => "raw SQL: `pg_advisory_xact_lock($1)` in a tx (¹)".into(),
            Op::RawGatedXact => {
                "raw SQL: pglock's xact statement (standby gate, backend pid) in a tx (¹)".into()
            }
            Op::RuntimeXactWhole => {
                "pglock xact, wait, with BEGIN + COMMIT timed (as django's xact)".into()
            }
        }
    }

    pub fn target(self) -> Target {
        match self {
            Op::SelectPrepared | Op::SelectSimple => Target::Floor,
            Op::Runtime(_) => Target::Floors(2.0),
            Op::RuntimeXact(_) => Target::Floors(1.0),
            // Held to what the attribute rows are held to: if a row cannot meet it against an
            // identical row, the threshold is tighter than the run's noise.
            Op::RuntimeAgain => Target::SameAs(Op::Runtime(Mode::Default)),
            Op::RuntimeXactAgain => Target::SameAs(Op::RuntimeXact(XactMode::Default)),
            Op::RuntimeScope => Target::SameAs(Op::Runtime(Mode::Default)),
            Op::Calibration => Target::Calibrates(Op::Runtime(Mode::Default)),
            Op::Attr(mode) => Target::SameAs(Op::Runtime(mode)),
            Op::AttrXact => Target::SameAs(Op::RuntimeXact(XactMode::Default)),
            // On a pool the attribute watches the lock's session while the body runs (the
            // heartbeat, on by default), as `run` does and acquire + release does not: the
            // runtime call that does the same work is `run`.
            Op::AttrPool => Target::SameAs(Op::PoolRun { heartbeat: true }),
            Op::PoolRun { heartbeat: true } => Target::SameAs(Op::PoolRun { heartbeat: false }),
            Op::PoolRun { heartbeat: false } => Target::Info,
            Op::Pool(_) | Op::PoolXactScope => Target::Info,
            Op::SqlxLock
            | Op::RawLock
            | Op::NaiveTimed
            | Op::RawXact
            | Op::RawGatedXact
            | Op::RuntimeXactWhole => Target::Info,
        }
    }

    /// The same lock by hand through sqlx, to tell pglock's cost from the server's.
    pub fn raw_peer(self) -> Option<Op> {
        match self {
            Op::Runtime(_)
            | Op::RuntimeAgain
            | Op::RuntimeScope
            | Op::Calibration
            | Op::Attr(_)
            | Op::Pool(_)
            | Op::AttrPool
            | Op::PoolRun { .. }
            | Op::SqlxLock => Some(Op::RawLock),
            Op::RuntimeXact(_) | Op::RuntimeXactAgain | Op::AttrXact | Op::RawGatedXact => {
                Some(Op::RawXact)
            }
            _ => None,
        }
    }

    /// A key of its own, so no two operations touch the same lock.
    fn key(self) -> i64 {
        let index = ALL.iter().position(|op| *op == self).expect("listed");
        1000 + index as i64
    }
}

/// The handles an operation runs on.
pub struct Cx {
    pub conn: PgConnection,
    pub pool: PgPool,
    /// When counting round trips: the proxy's counts, and where the last operation's timed part
    /// began and ended when that is not the whole operation (transaction-level locks).
    pub counts: Option<Arc<Counts>>,
    pub timed_part: Option<((u64, u64), (u64, u64))>,
}

impl Cx {
    pub fn new(conn: PgConnection, pool: PgPool) -> Cx {
        Cx {
            conn,
            pool,
            counts: None,
            timed_part: None,
        }
    }
}

/// Runs `op` once and returns the time of the part that counts (for transaction-level locks, the
/// lock alone: BEGIN and COMMIT are not timed).
pub async fn once(op: Op, cx: &mut Cx) -> Res<Duration> {
    // A control row runs its twin's operation, under its own key.
    let key = op.key();
    let op = match op {
        Op::RuntimeAgain => Op::Runtime(Mode::Default),
        Op::RuntimeXactAgain => Op::RuntimeXact(XactMode::Default),
        op => op,
    };
    cx.timed_part = None;
    if let Op::RuntimeXact(_) | Op::AttrXact | Op::RawXact | Op::RawGatedXact = op {
        let counts = cx.counts.clone();
        let snapshot = || counts.as_ref().map_or((0, 0), |c| c.snapshot());
        let mut tx = cx.conn.begin().await?;
        let before = snapshot();
        let start = Instant::now();
        match op {
            Op::RuntimeXact(mode) => {
                let guard = mode.lock(key).acquire(&mut tx).await?;
                guard.release().await?;
            }
            Op::AttrXact => attr::xact(&mut tx).await?,
            Op::RawGatedXact => {
                let (taken, _pid): (Option<bool>, i32) = sqlx::query_as(
                    "SELECT CASE WHEN pg_is_in_recovery() THEN NULL \
                     ELSE pg_advisory_xact_lock($1) IS NOT NULL END, pg_backend_pid()",
                )
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
                if taken != Some(true) {
                    return Err("pglock's statement by hand: not taken".into());
                }
            }
            _ => {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let elapsed = start.elapsed();
        let after = snapshot();
        tx.commit().await?;
        cx.timed_part = Some((before, after));
        return Ok(elapsed);
    }
    let conn = &mut cx.conn;
    let start = Instant::now();
    match op {
        Op::SelectPrepared => {
            let _: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut *conn).await?;
        }
        Op::SelectSimple => {
            sqlx::raw_sql("SELECT 1").execute(&mut *conn).await?;
        }
        Op::Runtime(mode) => {
            let guard = mode.lock(key).acquire(&mut *conn).await?;
            guard.release().await?;
        }
        Op::RuntimeScope => {
            pglock::advisory(key)
                .scope(&mut *conn, async |_| Ok::<_, pglock::Error>(()))
                .await?;
        }
        Op::Calibration => {
            let guard = pglock::advisory(key).acquire(&mut *conn).await?;
            let until = Instant::now() + CALIBRATION;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            guard.release().await?;
        }
        Op::Attr(mode) => match mode {
            Mode::Default => attr::wait_default(conn).await?,
            Mode::Forever => attr::wait_forever(conn).await?,
            Mode::Try => attr::try_once(conn).await?,
            Mode::Timed => attr::timed(conn).await?,
            Mode::Shared => attr::shared(conn).await?,
        },
        Op::RuntimeXact(_) | Op::AttrXact | Op::RawXact | Op::RawGatedXact => {
            unreachable!("handled above")
        }
        Op::RuntimeAgain | Op::RuntimeXactAgain => {
            unreachable!("mapped to their twins above")
        }
        Op::RuntimeXactWhole => {
            let mut tx = conn.begin().await?;
            let guard = XactMode::Default.lock(key).acquire(&mut tx).await?;
            guard.release().await?;
            tx.commit().await?;
        }
        Op::Pool(mode) => {
            let guard = mode.lock(key).acquire(&cx.pool).await?;
            guard.release().await?;
        }
        Op::PoolXactScope => {
            pglock::advisory(key)
                .xact()
                .scope(&cx.pool, async |_conn| Ok::<_, pglock::Error>(()))
                .await?;
        }
        Op::AttrPool => attr::on_pool(&cx.pool).await?,
        Op::PoolRun { heartbeat } => {
            let lock = pglock::advisory(key);
            let lock = if heartbeat {
                lock
            } else {
                lock.heartbeat(None)
            };
            lock.run(&cx.pool, async { Ok::<_, pglock::Error>(()) })
                .await?;
        }
        Op::SqlxLock => {
            let lock = PgAdvisoryLock::with_key(PgAdvisoryLockKey::BigInt(key));
            let guard = lock.acquire(&mut *conn).await?;
            guard.release_now().await?;
        }
        Op::RawLock => {
            raw_lock(conn, key).await?;
            raw_unlock(conn, key).await?;
        }
        Op::NaiveTimed => {
            sqlx::query("SET lock_timeout = '5s'")
                .execute(&mut *conn)
                .await?;
            raw_lock(conn, key).await?;
            sqlx::query("RESET lock_timeout")
                .execute(&mut *conn)
                .await?;
            raw_unlock(conn, key).await?;
        }
    }
    Ok(start.elapsed())
}

async fn raw_lock(conn: &mut PgConnection, key: i64) -> Res<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn raw_unlock(conn: &mut PgConnection, key: i64) -> Res<()> {
    let held: bool = sqlx::query_scalar("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    if held {
        Ok(())
    } else {
        Err("pg_advisory_unlock found the lock not held".into())
    }
}

/// Samples of every operation, in `ALL`'s order.
pub struct Latencies {
    pub samples: Vec<Samples>,
}

impl Latencies {
    pub fn new() -> Self {
        Latencies {
            samples: vec![Samples::default(); ALL.len()],
        }
    }

    pub fn of(&self, op: Op) -> &Samples {
        &self.samples[ALL.iter().position(|o| *o == op).expect("listed")]
    }

    /// The median of the floor, in µs.
    pub fn floor(&self) -> f64 {
        self.of(Op::SelectPrepared).median()
    }
}

/// Runs `rounds` rounds; in each, every operation runs `batch` times, in an order shuffled anew
/// every round, so that no operation always follows the same one (an operation can leave work
/// behind for the next: a pool's background check-in, say). With `batch` 1 a round takes a few
/// milliseconds, so every operation sees the same mix of the machine's noise: on a loaded machine
/// round trips are bimodal (the server backend scheduled at once, or after another process), and
/// longer batches let one operation's median land in the slow mode and its neighbour's in the
/// fast one.
///
/// With `warm`, each operation first runs once untimed, right before its timed runs, so that
/// every operation is timed with its own code in the client's caches. Without it, how warm an
/// operation's code is depends on how many other operations run the same machine code: the
/// compiler gives each codegen unit of a crate its own copy of pglock's lock and release
/// futures, so the runtime rows (which share one call site's copy, run some ten times a round)
/// and an attribute or `scope` row (its own copy, run once or a few times a round) are not
/// timed alike. See BENCHMARKS.md, "Attribute vs runtime".
pub async fn rounds(
    cx: &mut Cx,
    out: &mut Latencies,
    rounds: usize,
    batch: usize,
    warm: bool,
) -> Res<()> {
    let mut order: Vec<usize> = (0..ALL.len()).collect();
    let mut rng = Shuffler(0x9E37_79B9_7F4A_7C15);
    for _ in 0..rounds {
        rng.shuffle(&mut order);
        for &index in &order {
            if warm {
                once(ALL[index], cx).await?;
            }
            for _ in 0..batch {
                let elapsed = once(ALL[index], cx).await?;
                out.samples[index].push(elapsed);
            }
        }
    }
    Ok(())
}

/// A xorshift generator: enough to vary the order of operations, reproducibly.
struct Shuffler(u64);

impl Shuffler {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fisher-Yates.
    fn shuffle(&mut self, items: &mut [usize]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Runs every operation a few times, unrecorded: connections open, statements get prepared.
pub async fn warm_up(cx: &mut Cx) -> Res<()> {
    for op in ALL {
        for _ in 0..20 {
            once(*op, cx).await?;
        }
    }
    Ok(())
}

/// Warm-up of the floor alone, for runs that skip the latency section.
pub async fn warm_up_floor(cx: &mut Cx) -> Res<()> {
    for _ in 0..50 {
        once(Op::SelectPrepared, cx).await?;
    }
    Ok(())
}

/// The floor alone, `n` times.
pub async fn floor_only(cx: &mut Cx, out: &mut Latencies, n: usize) -> Res<()> {
    for _ in 0..n {
        let elapsed = once(Op::SelectPrepared, cx).await?;
        out.samples[0].push(elapsed);
    }
    Ok(())
}
