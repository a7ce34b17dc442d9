//! The markdown tables, each figure next to its DESIGN target.

use std::fmt::Write as _;

use crate::contention::{Cell, Driver, Keys};
use crate::django::{self, Django};
use crate::latency::{self, Latencies, Op, Target};
use crate::stats::Samples;
use crate::{inspect, loss, migration, prioritize};

/// Misses collected while printing, listed at the end.
#[derive(Default)]
pub struct Report {
    pub text: String,
    pub misses: Vec<String>,
}

/// "within 1.1x of two floors" etc.: the slack DESIGN allows.
const SLACK: f64 = 1.1;
/// "the attribute costs nothing measurable": taken as within 3 % of the runtime form, or within
/// [`SAME_SLACK_US`] when that is more: medians of µs-scale round trips on a loaded machine move
/// by a microsecond or two between identical operations.
const SAME_SLACK: f64 = 1.03;
const SAME_SLACK_US: f64 = 2.0;
/// "well under a second": taken as at most 250 ms.
const LISTING_LIMIT_MS: f64 = 250.0;
/// Hand-offs per second within 1.2x of pgbench.
const PGBENCH_SLACK: f64 = 1.2;

fn yes(met: bool) -> &'static str {
    if met { "yes" } else { "**NO**" }
}

impl Report {
    fn line(&mut self, line: impl AsRef<str>) {
        self.text.push_str(line.as_ref());
        self.text.push('\n');
    }

    pub fn line_pub(&mut self, line: &str) {
        self.line(line);
        self.line("");
    }

    pub fn header(&mut self, lines: &[String]) {
        for line in lines {
            self.line(line);
            self.line("");
        }
    }

    pub fn latency(
        &mut self,
        lat: &Latencies,
        round_trips: &[(u64, u64)],
        django: Option<&Django>,
        warm: bool,
    ) {
        let floor = lat.floor();
        self.line("| operation | median µs | p90 µs | × floor | × raw SQL (²) | round trips (parses) | target | met |");
        self.line("|---|--:|--:|--:|--:|--:|---|---|");
        let mut section = "";
        for (i, op) in latency::ALL.iter().enumerate() {
            if op.section() != section {
                section = op.section();
                self.line(format!("| **{section}** | | | | | | | |"));
            }
            let s = &lat.samples[i];
            let median = s.median();
            let (rt, parses) = round_trips.get(i).copied().unwrap_or((0, 0));
            let (target, met) = match op.target() {
                Target::Floor => ("floor".to_owned(), None),
                Target::Floors(n) => {
                    let limit = SLACK * n * floor;
                    let met = median <= limit;
                    if !met {
                        self.misses.push(format!(
                            "{}: {median:.0} µs = {:.2}× floor, target ≤ {SLACK} × {n} floors = {limit:.0} µs",
                            op.name(),
                            median / floor
                        ));
                    }
                    (format!("≤ {SLACK} × {n} floor = {limit:.0}"), Some(met))
                }
                Target::SameAs(other) => {
                    let base = lat.of(other).median();
                    let base_name = match other {
                        Op::PoolRun { heartbeat: false } => "heartbeat off",
                        Op::PoolRun { heartbeat: true } => "runtime `run`",
                        _ => "runtime",
                    };
                    let limit = (SAME_SLACK * base).max(base + SAME_SLACK_US);
                    let met = median <= limit;
                    let above = s.median_above(lat.of(other));
                    if !met {
                        self.misses.push(format!(
                            "{}: {median:.0} µs vs {base:.0} µs for the {base_name} form ({:+.1} %), target ≤ +{:.0} % or +{SAME_SLACK_US} µs",
                            op.name(),
                            (median / base - 1.0) * 100.0,
                            (SAME_SLACK - 1.0) * 100.0
                        ));
                    }
                    (
                        format!(
                            "≤ {base_name} ({base:.0}) + max(3 %, {SAME_SLACK_US} µs); Δ {:+.1} [{:+.1}, {:+.1}]{}",
                            above.point,
                            above.low,
                            above.high,
                            if above.holds_zero() { " = noise" } else { "" }
                        ),
                        Some(met),
                    )
                }
                Target::Calibrates(other) => {
                    let base = lat.of(other).median();
                    let above = s.median_above(lat.of(other));
                    (
                        format!(
                            "— (runtime {base:.0} + {} µs of work); Δ {:+.1} [{:+.1}, {:+.1}]{}",
                            latency::CALIBRATION.as_micros(),
                            above.point,
                            above.low,
                            above.high,
                            if above.holds_zero() { " = noise" } else { "" }
                        ),
                        None,
                    )
                }
                Target::Info => ("—".to_owned(), None),
            };
            let vs_raw = op.raw_peer().map_or(String::new(), |raw| {
                format!("{:.2}", median / lat.of(raw).median())
            });
            self.line(format!(
                "| {} | {median:.0} | {:.0} | {:.2} | {vs_raw} | {rt} ({parses}) | {target} | {} |",
                op.name(),
                s.p90(),
                median / floor,
                met.map_or("", yes)
            ));
            if *op == Op::SelectPrepared {
                self.line(format!(
                    "| 2 × floor | {:.0} | | 2.00 | | | | |",
                    2.0 * floor
                ));
            }
        }
        self.line("");
        self.line(format!(
            "Samples per operation: {}, {}. (¹) transaction-level: only the lock statement (and pglock's \
             no-op release) is timed; the BEGIN before and the COMMIT after are not. Round trips are \
             counted by a proxy that reads the client's protocol messages (each simple `Query` and \
             each `Sync` is one), in a separate pass after warm-up, over the timed part only; a \
             pool's check-in ping runs in a background task after the call returns, and is counted \
             with the call. Parses: statements prepared during the call (0: sqlx's cache served). \
             (²) the median over that of the same statements sent by hand through sqlx: \
             `pg_advisory_lock($1)` + `pg_advisory_unlock($1)` for session locks, \
             `pg_advisory_xact_lock($1)` for transaction-level ones; what is above 1 is pglock's \
             own cost (or, for timed and pool rows, the price of their extra SQL and checkout). \
             Δ: how far the median is above that of the row it is held to, in µs, with a 95 % \
             interval from resampling the rounds (each round's two samples kept together); \
             \"= noise\" when the interval holds 0, that is when this run cannot tell the two \
             apart (the A/A control rows show how often identical operations do; the \
             calibration row, what a known 2 µs of client work looks like).",
            lat.samples[0].len(),
            if warm {
                "each timed right after an untimed run of the same operation (its code warm)"
            } else {
                "each timed cold (`--cold`: no untimed run of its own first)"
            }
        ));
        self.line("");
        if let Some(dj) = django {
            self.django(dj, lat);
        }
    }

    fn django(&mut self, dj: &Django, lat: &Latencies) {
        if dj.runs == 0 {
            return;
        }
        let floor = lat.floor();
        let own = dj.floor.median();
        self.line(format!(
            "django-pglock ({} runs of `tests/interop/bench_django.py`, interleaved with the rounds \
             above; each figure is the median of the runs' per-operation medians). Its own floor \
             (`SELECT 1` through Django's cursor): {own:.0} µs = {:.2}× ours. Its xact mode times \
             `transaction.atomic()` + the lock, so BEGIN and COMMIT are in it: compare with pglock's \
             row of the same shape.",
            dj.runs,
            own / floor
        ));
        self.line("");
        self.line(
            "| django-pglock mode | µs | × its floor | × our floor | pglock, same mode, µs |",
        );
        self.line("|---|--:|--:|--:|--:|");
        for (i, (key, name)) in django::MODES.iter().enumerate() {
            let us = dj.modes[i].median();
            let ours = django::pglock_counterpart(key).map_or(f64::NAN, |op| lat.of(op).median());
            self.line(format!(
                "| {name} | {us:.0} | {:.2} | {:.2} | {ours:.0} |",
                us / own,
                us / floor
            ));
        }
        self.line("");
    }

    pub fn django_missing(&mut self, why: &str) {
        self.line(why);
        self.line("");
    }

    pub fn contention(&mut self, results: &[Cell]) {
        self.line("Hand-offs (lock + unlock pairs) per second, median of the rounds (min–max).");
        self.line("");
        let mut head = "| keys | N |".to_owned();
        let mut rule = "|---|--:|".to_owned();
        for driver in crate::contention::DRIVERS {
            let _ = write!(head, " {} |", driver.name());
            rule.push_str("--:|");
        }
        head.push_str(
            " pglock tasks ÷ pgbench | pglock processes ÷ pgbench | target (one key) | met |",
        );
        rule.push_str("--:|--:|---|---|");
        self.line(head);
        self.line(rule);
        for Cell {
            keys,
            clients: n,
            rates: by_driver,
        } in results
        {
            let median = |d: Driver| {
                by_driver
                    .iter()
                    .find(|(x, _)| *x == d)
                    .map(|(_, v)| crate::median_of(v))
                    .unwrap_or(f64::NAN)
            };
            let mut row = format!("| {} | {n} |", keys.name());
            for (_, rates) in by_driver {
                let lo = rates.iter().copied().fold(f64::NAN, f64::min);
                let hi = rates.iter().copied().fold(f64::NAN, f64::max);
                let _ = write!(row, " {:.0} ({lo:.0}–{hi:.0}) |", crate::median_of(rates));
            }
            let pgbench = median(Driver::Pgbench);
            let tasks = median(Driver::PglockTasks) / pgbench;
            let procs = median(Driver::PglockProcesses) / pgbench;
            let (target, met) = if *keys == Keys::One {
                let met = tasks >= 1.0 / PGBENCH_SLACK;
                if !met {
                    self.misses.push(format!(
                        "contention, one key, N = {n}: pglock tasks reach {:.0} hand-offs/s = {tasks:.2}× pgbench's {pgbench:.0}, target ≥ 1/{PGBENCH_SLACK} = {:.2}×",
                        median(Driver::PglockTasks),
                        1.0 / PGBENCH_SLACK
                    ));
                }
                (format!("≥ pgbench / {PGBENCH_SLACK}"), yes(met))
            } else {
                ("—".to_owned(), "")
            };
            let _ = write!(row, " {tasks:.2} | {procs:.2} | {target} | {met} |");
            self.line(row);
        }
        self.line("");
    }

    pub fn prioritize(
        &mut self,
        outcomes: &[prioritize::Outcome],
        floor: f64,
        connect: &Samples,
        anatomy: &prioritize::Anatomy,
    ) {
        let connect_us = connect.median();
        self.line(format!(
            "From sending the protected `LOCK TABLE` (blocked by a session holding ACCESS EXCLUSIVE \
             in an open transaction) to the blocker's client seeing its session end, and to the \
             protected statement completing. Target: interval + one round trip ({floor:.0} µs); met \
             when the slowest repetition is within it. Opening a connection (the watcher opens one \
             per scope) takes {:.1} ms (median).",
            connect_us / 1000.0
        ));
        self.line("");
        self.line("| interval | reps | blocker gone: median ms (max) | protected done: median ms | p90 | max | target ms | met |");
        self.line("|--:|--:|--:|--:|--:|--:|--:|---|");
        for o in outcomes {
            let interval_ms = o.interval.as_secs_f64() * 1000.0;
            let target = interval_ms + floor / 1000.0;
            let max = o.protected_done.max() / 1000.0;
            let met = max <= target;
            if !met {
                self.misses.push(format!(
                    "prioritize, interval {interval_ms:.0} ms: protected statement done after {:.1} ms median, {max:.1} ms max; target {target:.2} ms",
                    o.protected_done.median() / 1000.0
                ));
            }
            self.line(format!(
                "| {interval_ms:.0} ms | {} | {:.1} ({:.1}) | {:.1} | {:.1} | {max:.1} | {target:.2} | {} |",
                o.protected_done.len(),
                o.blocker_gone.median() / 1000.0,
                o.blocker_gone.max() / 1000.0,
                o.protected_done.median() / 1000.0,
                o.protected_done.p90() / 1000.0,
                yes(met)
            ));
        }
        self.line("");
        let ms = |s: &Samples| {
            format!(
                "{:.2} ms (p90 {:.2})",
                s.median() / 1000.0,
                s.p90() / 1000.0
            )
        };
        self.line(format!(
            "Where the time beyond the interval goes, each step timed by hand from a third session \
             ({} reps, median): the watcher opens its connection before its first interval starts: \
             {}; the blockers lookup (prioritize's statement without the signal): {}; \
             `pg_terminate_backend` round trip: {}; from sending it to the blocker's client seeing \
             its session end: {}; to the protected `LOCK TABLE` (and COMMIT) completing: {}.",
            anatomy.lookup.len(),
            ms(connect),
            ms(&anatomy.lookup),
            ms(&anatomy.terminate),
            ms(&anatomy.to_gone),
            ms(&anatomy.to_done),
        ));
        self.line("");
    }

    pub fn inspect(&mut self, outcome: &inspect::Outcome) {
        self.line(format!(
            "One session holds {} advisory locks; two more wait on two of them.",
            inspect::HELD
        ));
        self.line("");
        self.line("| query | rows | median ms | p90 ms | target | met |");
        self.line("|---|--:|--:|--:|---|---|");
        for (i, query) in inspect::QUERIES.iter().enumerate() {
            let s = &outcome.samples[i];
            let median = s.median() / 1000.0;
            let (target, met) = if *query == inspect::Query::RawPgLocks {
                ("—".to_owned(), "")
            } else {
                let met = median <= LISTING_LIMIT_MS;
                if !met {
                    self.misses.push(format!(
                        "{}: {median:.0} ms with {} locks held; target well under 1 s (≤ {LISTING_LIMIT_MS} ms)",
                        query.name(),
                        inspect::HELD
                    ));
                }
                (
                    format!("well under 1 s (≤ {LISTING_LIMIT_MS:.0} ms)"),
                    yes(met),
                )
            };
            self.line(format!(
                "| {} | {} | {median:.1} | {:.1} | {target} | {met} |",
                query.name(),
                outcome.rows[i],
                s.p90() / 1000.0
            ));
        }
        self.line("");
    }

    /// The `pglock` command's default listing, process start to exit.
    pub fn inspect_cli(&mut self, outcome: &inspect::CliOutcome) {
        let median = outcome.samples.median() / 1000.0;
        let met = median <= LISTING_LIMIT_MS;
        if !met {
            self.misses.push(format!(
                "`pglock` default listing: {median:.0} ms with {} locks across {} sessions; \
                 target under {LISTING_LIMIT_MS:.0} ms",
                outcome.locks,
                inspect::SESSIONS
            ));
        }
        self.line(format!(
            "The `pglock` command (release build), process start to its default listing \
             printed, `COLUMNS=120`, {} sessions holding {} locks in all (`pg_locks` rows), \
             one of them waiting; {} runs after one unrecorded.",
            inspect::SESSIONS,
            outcome.locks,
            outcome.samples.len()
        ));
        self.line("");
        self.line("| run | lines | median ms | p90 ms | max ms | target | met |");
        self.line("|---|--:|--:|--:|--:|---|---|");
        self.line(format!(
            "| `pglock -d URL` | {} | {median:.1} | {:.1} | {:.1} | under {LISTING_LIMIT_MS:.0} ms | {} |",
            outcome.lines,
            outcome.samples.p90() / 1000.0,
            outcome.samples.max() / 1000.0,
            yes(met)
        ));
        self.line("");
    }

    /// `pglock top`: one refresh (both queries, the snapshot, one frame drawn).
    pub fn top_refresh(&mut self, outcome: &inspect::TopRefresh) {
        let s = &outcome.samples;
        self.line(format!(
            "`pglock top`, one refresh (both queries, the view's snapshot, one 120x40 frame \
             drawn): {} sessions hold {} advisory locks each, 20 of them waiting in one tree; \
             the view read {} locks and drew {} tree rows.",
            inspect::TOP_SESSIONS,
            inspect::TOP_LOCKS_EACH,
            outcome.locks,
            outcome.tree_rows
        ));
        self.line("");
        self.line("| refresh | runs | median ms | p90 ms | of which queries + snapshot, median ms | of which state + frame, median ms |");
        self.line("|---|--:|--:|--:|--:|--:|");
        self.line(format!(
            "| `pglock top` | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            s.len(),
            s.median() / 1000.0,
            s.p90() / 1000.0,
            outcome.read.median() / 1000.0,
            outcome.view.median() / 1000.0
        ));
        self.line("");
    }

    pub fn migration(&mut self, outcomes: &[migration::Outcome]) {
        self.line(format!(
            "{} clients run one-row `SELECT`s back to back; a transaction holds `SHARE` on the \
             table for {} s; {} ms in, `ALTER TABLE … ADD COLUMN` runs. Application latency over \
             the transactions overlapping the migration.",
            migration::CLIENTS,
            migration::BLOCKER_HOLDS.as_secs_f64(),
            migration::MIGRATION_AFTER.as_millis()
        ));
        self.line("");
        self.line("| migration | app p99 (ms) | app max (ms) | app transactions | attempts | migration total (s) | sessions killed | migrated |");
        self.line("|---|---|---|---|---|---|---|---|");
        for o in outcomes {
            self.line(format!(
                "| {} | {:.1} | {:.1} | {} | {} | {:.2} | {} | {} |",
                o.way.label(),
                o.during.quantile(0.99) / 1e3,
                o.during.max() / 1e3,
                o.during.len(),
                o.attempts,
                o.total.as_secs_f64(),
                o.killed,
                if o.migrated { "yes" } else { "**no**" }
            ));
        }
        self.line("");
    }

    /// Loss detection latency per heartbeat, against heartbeat + one round trip (the floor).
    pub fn loss_detection(&mut self, rows: &[loss::Detection], floor_us: f64) {
        self.line(
            "From sending `pg_terminate_backend` for the holder of a lock held through `run` on a \
             pool to the body's future being dropped (a guard's `Drop` in the body) and to `run` \
             returning `Error::Lost`; terminations spread evenly over one heartbeat's phase (the \
             `i`-th of n at (i + ½) / n of an interval after the body started), so the p90 is \
             about 0.9 heartbeat by design; the column after it is what the check itself took \
             once due.",
        );
        self.line("");
        self.line("| heartbeat | n | dropped: median ms | p90 ms | max ms | returned: median ms | p90 ms | dropped after the check was due: median ms | max ms | target: p90 ≤ heartbeat + 1 round trip | met |");
        self.line("|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
        for row in rows {
            let hb_ms = row.heartbeat.as_secs_f64() * 1e3;
            let limit_ms = hb_ms + floor_us / 1e3;
            let p90 = row.dropped.p90() / 1e3;
            let met = p90 <= limit_ms;
            if !met {
                self.misses.push(format!(
                    "loss detection, heartbeat {hb_ms:.0} ms: p90 {p90:.1} ms, target ≤ {limit_ms:.1} ms"
                ));
            }
            self.line(format!(
                "| {hb_ms:.0} ms | {} | {:.1} | {p90:.1} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | ≤ {limit_ms:.1} ms | {} |",
                row.dropped.len(),
                row.dropped.median() / 1e3,
                row.dropped.max() / 1e3,
                row.returned.median() / 1e3,
                row.returned.p90() / 1e3,
                row.after_check.median() / 1e3,
                row.after_check.max() / 1e3,
                yes(met)
            ));
        }
        self.line("");
    }

    /// The cut timeline: each repetition's body drop and other session's grant, from the cut.
    pub fn cut_timeline(&mut self, cuts: &[loss::Cut], notice: std::time::Duration) {
        self.line(format!(
            "A network cut through the harness's proxy at t0 (`cut_and_close_after({:.0} s)`: the \
             proxy closes both sides {:.0} s later, standing for the server's TCP keepalives); t1: \
             the holder's body dropped; t2: another session, on the server directly and waiting \
             from t0, granted the lock. Cuts spread evenly over one heartbeat's phase.",
            notice.as_secs_f64(),
            notice.as_secs_f64()
        ));
        self.line("");
        self.line("| heartbeat | t1 − t0 ms | t2 − t0 ms | t2 − t1 ms | t1 < t2 |");
        self.line("|--:|--:|--:|--:|---|");
        for cut in cuts {
            let hb_ms = cut.heartbeat.as_secs_f64() * 1e3;
            let t1 = cut.body_dropped.as_secs_f64() * 1e3;
            let t2 = cut.other_granted.as_secs_f64() * 1e3;
            let before = t1 < t2;
            // Promised (see `Advisory`'s docs) when two intervals are shorter than the notice.
            let promised = 2 * cut.heartbeat < notice;
            if promised && !before {
                self.misses.push(format!(
                    "network cut, heartbeat {hb_ms:.0} ms: body dropped {t1:.0} ms after the cut, \
                     another session granted the lock {t2:.0} ms after it"
                ));
            }
            self.line(format!(
                "| {hb_ms:.0} ms | {t1:.0} | {t2:.0} | {:.0} | {}{} |",
                t2 - t1,
                if promised {
                    yes(before)
                } else if before {
                    "yes"
                } else {
                    "no"
                },
                if promised { "" } else { " (³)" }
            ));
        }
        self.line("");
        if cuts.iter().any(|cut| 2 * cut.heartbeat >= notice) {
            self.line(format!(
                "(³) Not promised: two heartbeats are not shorter than the {:.0} s notice (the \
                 body is dropped within two intervals of a cut: one to the next check, one for its \
                 reply). Real servers' keepalives notice after about 2 h 11 min by default.",
                notice.as_secs_f64()
            ));
            self.line("");
        }
    }

    pub fn misses_section(&mut self) {
        if self.misses.is_empty() {
            self.line("All targets met.");
        } else {
            self.line("Missed targets:");
            for miss in self.misses.clone() {
                self.line(format!("- {miss}"));
            }
        }
    }
}

/// Section 7: leader failover and `min_hold`.
impl Report {
    pub fn failover(
        &mut self,
        outcomes: &[crate::failover::Outcome],
        floor: f64,
        anatomy: &crate::failover::Anatomy,
    ) {
        use crate::failover::{self, Kind};
        let heartbeat_ms = failover::HEARTBEAT.as_secs_f64() * 1000.0;
        let grace_ms = failover::grace().as_secs_f64() * 1000.0;
        let floor_ms = floor / 1000.0;
        let reps = outcomes.first().map_or(0, |o| o.reps.len());
        self.line(format!(
            "Two candidates of `pglock::leader` on separate pools (two replicas), heartbeat \
             {heartbeat_ms:.0} ms, so a grace period of {grace_ms:.0} ms (pglock's default: two \
             heartbeats + 100 ms). Once one leads and the other waits on the lock, the leader goes; \
             times are from that event (sending `step_down()`, `pg_terminate_backend`, the `SIGKILL`) \
             to the old leader's task being dropped and to the new leader's task starting (its first \
             poll). {reps} repetitions of each kind, interleaved, each on a lock of its own. Targets: \
             clean step-down ≤ 10 ms + one round trip ({floor:.0} µs), the others ≤ the grace \
             period + one round trip, and the old task always dropped before the new one starts; \
             met when the p90 is within the target and no repetition overlapped."
        ));
        self.line("");
        self.line("| how the leader went | reps | old task dropped: median ms (max) | new leader granted the lock: median ms | new task started: median ms | p90 | max | clean hand-overs | old dropped before new started | target ms | met |");
        self.line("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|");
        for o in outcomes {
            let started = o.samples(|r| Some(r.started));
            let dropped = o.samples(|r| r.old_dropped);
            let won = o.samples(|r| Some(r.won));
            let target = match o.kind {
                Kind::StepDown => 10.0 + floor_ms,
                Kind::Terminate | Kind::Kill => grace_ms + floor_ms,
            };
            let p90 = started.p90() / 1000.0;
            let overlaps = o.overlaps();
            let met = p90 <= target && overlaps == 0;
            if !met {
                self.misses.push(format!(
                    "failover, {}: new task started {:.1} ms median, {p90:.1} ms p90 after the event \
                     ({overlaps} overlaps); target {target:.2} ms",
                    o.kind.short(),
                    started.median() / 1000.0
                ));
            }
            let clean = o.reps.iter().filter(|r| r.clean).count();
            let (dropped_cell, order_cell) = if o.kind.in_process() {
                (
                    format!(
                        "{:.2} ({:.2})",
                        dropped.median() / 1000.0,
                        dropped.max() / 1000.0
                    ),
                    format!("{} of {}", o.reps.len() - overlaps, o.reps.len()),
                )
            } else {
                ("with the process".to_owned(), "with the process".to_owned())
            };
            self.line(format!(
                "| {} | {} | {dropped_cell} | {:.2} | {:.2} | {p90:.2} | {:.2} | {clean} of {} | {order_cell} | {target:.2} | {} |",
                o.kind.name(),
                o.reps.len(),
                won.median() / 1000.0,
                started.median() / 1000.0,
                started.max() / 1000.0,
                o.reps.len(),
                yes(met)
            ));
        }
        self.line("");
        let part = |o: &failover::Outcome, of: &dyn Fn(&failover::Rep) -> f64| {
            o.samples(|r| Some(of(r))).median() / 1000.0
        };
        let mut parts = Vec::new();
        for o in outcomes {
            parts.push(format!(
                "{}: the event's own call returned after {:.2} ms; the new leader had been granted \
                 the lock and read how the old one left at {:.2} ms (its status, as a watcher saw \
                 it); its task started {:.2} ms after that",
                o.kind.short(),
                part(o, &|r| r.event_done),
                part(o, &|r| r.won),
                part(o, &|r| r.started - r.won),
            ));
        }
        self.line(format!(
            "The parts (medians, ms after the event): {}.",
            parts.join("; ")
        ));
        self.line("");
        let ms = |s: &Samples| {
            format!(
                "{:.2} ms (p90 {:.2})",
                s.median() / 1000.0,
                s.p90() / 1000.0
            )
        };
        self.line(format!(
            "The same steps by hand on plain connections ({} reps each, median): a holder's \
             `pg_notify` round trip {}, its `pg_advisory_unlock` round trip {}; from sending the \
             unlock to a waiting `pg_advisory_lock` returning {}; from sending \
             `pg_terminate_backend(holder)` to it returning {}; from closing the holder's socket \
             (as a killed process's is) to it returning {}; then the winner's `SELECT 1` {} and \
             its `pg_notify` {}.",
            anatomy.notify.len(),
            ms(&anatomy.notify),
            ms(&anatomy.unlock),
            ms(&anatomy.unlock_to_granted),
            ms(&anatomy.terminate_to_granted),
            ms(&anatomy.close_to_granted),
            ms(&anatomy.select_1),
            ms(&anatomy.won_notify),
        ));
        self.line("");
        if let Some(clean) = outcomes.iter().find(|o| o.kind == Kind::StepDown) {
            let median_ms = clean.samples(|r| Some(r.started)).median() / 1000.0;
            self.line(format!(
                "For comparison: River's leader election takes over when the leader's lease row \
                 expires, up to its 15 s lease after a leader dies (elections every 5 s), and \
                 Oban's after its 30 s lease: {:.0}× and {:.0}× the unclean figures here, and \
                 {:.0}× and {:.0}× the clean step-down's median.",
                15_000.0 / (grace_ms + floor_ms),
                30_000.0 / (grace_ms + floor_ms),
                15_000.0 / median_ms,
                30_000.0 / median_ms,
            ));
            self.line("");
        }
        // Each repetition: the old task's drop beside the new task's start.
        self.line("Each repetition, ms after the event (old task dropped / new task started):");
        self.line("");
        let mut header = "| rep |".to_owned();
        let mut rule = "|--:|".to_owned();
        for o in outcomes {
            let _ = write!(header, " {} |", o.kind.short());
            rule.push_str("--:|");
        }
        self.line(header);
        self.line(rule);
        for i in 0..outcomes.iter().map(|o| o.reps.len()).max().unwrap_or(0) {
            let mut row = format!("| {} |", i + 1);
            for o in outcomes {
                match o.reps.get(i) {
                    Some(r) => match r.old_dropped {
                        Some(dropped) => {
                            let _ = write!(
                                row,
                                " {:.2} / {:.2} |",
                                dropped / 1000.0,
                                r.started / 1000.0
                            );
                        }
                        None => {
                            let _ = write!(row, " — / {:.2} |", r.started / 1000.0);
                        }
                    },
                    None => row.push_str(" |"),
                }
            }
            self.line(row);
        }
        self.line("");
    }

    pub fn min_hold(&mut self, m: &crate::failover::MinHold) {
        let plain = m.plain.median();
        let again = m.plain_again.median();
        let held = m.held.median();
        let noise = (again - plain)
            .abs()
            .max(plain * (SAME_SLACK - 1.0))
            .max(SAME_SLACK_US);
        let met = held <= plain + noise && m.lingered;
        if !met {
            self.misses.push(format!(
                "min_hold: the call returns after {held:.0} µs median with min_hold, {plain:.0} µs \
                 without (noise {noise:.0} µs){}",
                if m.lingered {
                    ""
                } else {
                    "; the lock was not held after the call"
                }
            ));
        }
        self.line(format!(
            "`min_hold`'s return latency: `advisory(key).nowait().try_run(&pool, body)` with a body \
             that returns at once, on a pool of 4 connections, uncontended (a lock of its own per \
             call), {} interleaved rounds, each waiting out the hold first so every call finds the \
             pool idle; with `min_hold({:?})` the lock was {} after the call returned. The call \
             without `min_hold` is measured twice: the gap between the two is the noise. Target: \
             with `min_hold` within noise of without (at most {noise:.0} µs slower: the larger of \
             that gap, 3 % and {SAME_SLACK_US} µs).",
            m.plain.len(),
            m.hold,
            if m.lingered {
                "still held"
            } else {
                "**not** held"
            }
        ));
        self.line("");
        self.line("| call | median µs | p90 µs | × without | met |");
        self.line("|---|--:|--:|--:|---|");
        self.line(format!(
            "| without `min_hold` | {plain:.0} | {:.0} | 1.00 | |",
            m.plain.p90()
        ));
        self.line(format!(
            "| with `min_hold` | {held:.0} | {:.0} | {:.2} | {} |",
            m.held.p90(),
            held / plain,
            yes(met)
        ));
        self.line(format!(
            "| without `min_hold`, again (noise) | {again:.0} | {:.0} | {:.2} | |",
            m.plain_again.p90(),
            again / plain
        ));
        self.line("");
    }
}
