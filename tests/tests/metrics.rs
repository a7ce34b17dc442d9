//! pglock's metrics (the `metrics` feature), read back through `metrics-util`'s debugging
//! recorder against a real server: every counter, histogram and the gauge, with their labels.
//!
//! The recorder is process-wide, so the whole story is one test.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::{exec, until_leading};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use pglock::telemetry::names;
use pglock::{Error, advisory};
use pglock_tests::TestDb;
use sqlx::{Connection as _, PgPool};

/// One metric as recorded: kind, name, labels (sorted) and value.
#[derive(Debug)]
struct Metric {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

/// What the recorder recorded since the test began. The debugging recorder's snapshots reset
/// what they read (a gauge included: it reads the net change since the last snapshot), so each
/// read adds the new snapshot to the totals.
struct Recorded {
    snapshotter: Snapshotter,
    totals: Mutex<Vec<Metric>>,
}

impl Recorded {
    fn read(&self) -> Vec<Metric> {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let mut labels: Vec<_> = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            labels.sort();
            let name = key.name().to_owned();
            let total = totals.iter_mut().find(|metric| {
                metric.kind == kind && metric.name == name && metric.labels == labels
            });
            match (total, value) {
                (None, value) => totals.push(Metric {
                    kind,
                    name,
                    labels,
                    value,
                }),
                (Some(total), DebugValue::Counter(more)) => {
                    if let DebugValue::Counter(sum) = &mut total.value {
                        *sum += more;
                    }
                }
                (Some(total), DebugValue::Gauge(delta)) => {
                    if let DebugValue::Gauge(sum) = &mut total.value {
                        *sum = (sum.into_inner() + delta.into_inner()).into();
                    }
                }
                (Some(total), DebugValue::Histogram(more)) => {
                    if let DebugValue::Histogram(values) = &mut total.value {
                        values.extend(more);
                    }
                }
            }
        }
        totals
            .iter()
            .map(|metric| Metric {
                kind: metric.kind,
                name: metric.name.clone(),
                labels: metric.labels.clone(),
                value: match &metric.value {
                    DebugValue::Counter(value) => DebugValue::Counter(*value),
                    DebugValue::Gauge(value) => DebugValue::Gauge(*value),
                    DebugValue::Histogram(values) => DebugValue::Histogram(values.clone()),
                },
            })
            .collect()
    }
}

/// The metric named `name` whose labels include every one of `labels`.
fn find<'m>(metrics: &'m [Metric], name: &str, labels: &[(&str, &str)]) -> &'m Metric {
    let found: Vec<_> = metrics
        .iter()
        .filter(|metric| {
            metric.name == name
                && labels
                    .iter()
                    .all(|(k, v)| metric.labels.iter().any(|(mk, mv)| mk == k && mv == v))
        })
        .collect();
    assert_eq!(found.len(), 1, "one {name} {labels:?} in {metrics:#?}");
    found[0]
}

fn counter(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> u64 {
    let metric = find(metrics, name, labels);
    assert_eq!(metric.kind, MetricKind::Counter);
    match metric.value {
        DebugValue::Counter(value) => value,
        _ => unreachable!(),
    }
}

fn gauge(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> f64 {
    let metric = find(metrics, name, labels);
    assert_eq!(metric.kind, MetricKind::Gauge);
    match metric.value {
        DebugValue::Gauge(value) => value.into_inner(),
        _ => unreachable!(),
    }
}

fn histogram(metrics: &[Metric], name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    let metric = find(metrics, name, labels);
    assert_eq!(metric.kind, MetricKind::Histogram);
    match &metric.value {
        DebugValue::Histogram(values) => values.iter().map(|value| value.into_inner()).collect(),
        _ => unreachable!(),
    }
}

const JOB: &str = "metrics::job";

#[pglock::advisory("job", timeout = "0s", side_effect = Skip)]
async fn job(pool: &PgPool, recorded: &Recorded) -> Option<f64> {
    let _ = pool;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // While the body runs, the gauge counts the lock.
    Some(gauge(
        &recorded.read(),
        names::LOCKS_HELD,
        &[("function", JOB), ("kind", "session")],
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_outcome_is_counted_and_timed_with_bounded_labels() {
    let recorder = DebuggingRecorder::new();
    let recorded = Recorded {
        snapshotter: recorder.snapshotter(),
        totals: Mutex::default(),
    };
    recorder
        .install()
        .expect("the only recorder of this process");
    let db = TestDb::new().await;

    // Acquired, held, released: the attribute's function is the label, not the lock id.
    let held_inside = job(db.pool(), &recorded).await.expect("ran");
    assert_eq!(held_inside, 1.0, "the gauge counted the lock while held");
    let metrics = recorded.read();
    let acquired = [
        ("function", JOB),
        ("kind", "session"),
        ("outcome", "acquired"),
    ];
    assert_eq!(counter(&metrics, names::ACQUISITIONS, &acquired), 1);
    assert_eq!(histogram(&metrics, names::WAIT_SECONDS, &acquired).len(), 1);
    let holds = histogram(
        &metrics,
        names::HOLD_SECONDS,
        &[("function", JOB), ("kind", "session")],
    );
    assert!(holds.len() == 1 && holds[0] >= 0.05, "{holds:?}");
    let labels = &[("function", JOB), ("kind", "session")];
    assert_eq!(gauge(&metrics, names::LOCKS_HELD, labels), 0.0);
    assert!(
        find(&metrics, names::ACQUISITIONS, &acquired)
            .labels
            .iter()
            .all(|(key, _)| key != "lock"),
        "no per-lock label by default"
    );

    // Busy (the attribute's skip), and timed out, with the time waited.
    let mut holder = db.connect().await;
    let held = advisory("job").acquire(&mut holder).await.unwrap();
    assert_eq!(job(db.pool(), &recorded).await, None);
    let timed_out = advisory("job")
        .function("metrics::timed")
        .timeout(Duration::from_millis(100))
        .acquire(db.pool())
        .await;
    assert!(matches!(timed_out, Err(Error::LockTimeout { .. })));
    held.release().await.unwrap();
    let metrics = recorded.read();
    let busy = [("function", JOB), ("outcome", "busy")];
    assert_eq!(counter(&metrics, names::ACQUISITIONS, &busy), 1);
    let timed = [("function", "metrics::timed"), ("outcome", "timed_out")];
    assert_eq!(counter(&metrics, names::ACQUISITIONS, &timed), 1);
    let waited = histogram(&metrics, names::WAIT_SECONDS, &timed);
    assert!(waited.len() == 1 && waited[0] >= 0.09, "{waited:?}");

    // Transaction-level locks are their own kind.
    advisory("job")
        .xact()
        .function("metrics::xact")
        .scope(db.pool(), async |_| Ok::<_, Error>(()))
        .await
        .unwrap();
    let metrics = recorded.read();
    let xact = [("function", "metrics::xact"), ("kind", "xact")];
    assert_eq!(
        counter(
            &metrics,
            names::ACQUISITIONS,
            &[xact[0], xact[1], ("outcome", "acquired")]
        ),
        1
    );
    assert_eq!(histogram(&metrics, names::HOLD_SECONDS, &xact).len(), 1);
    assert_eq!(gauge(&metrics, names::LOCKS_HELD, &xact), 0.0);

    // Lost: the heartbeat finds the session gone.
    let pool = db.pool_with(2).await;
    let run = advisory("lost")
        .function("metrics::lost")
        .heartbeat(Duration::from_millis(100))
        .run(&pool, async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok::<_, Error>(())
        });
    let terminate = async {
        let (classid, objid) = pglock::advisory_id("lost");
        loop {
            let terminated: Option<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' \
                 AND granted AND classid = $1::int8::oid AND objid = $2::int8::oid \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .bind(i64::from(classid))
            .bind(i64::from(objid))
            .fetch_optional(db.pool())
            .await
            .unwrap();
            if terminated.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (lost, ()) = tokio::join!(run, terminate);
    assert!(matches!(lost, Err(Error::Lost { .. })), "{lost:?}");
    let metrics = recorded.read();
    let lost = [("function", "metrics::lost"), ("kind", "session")];
    assert_eq!(counter(&metrics, names::LOST, &lost), 1);
    assert_eq!(gauge(&metrics, names::LOCKS_HELD, &lost), 0.0);

    // Prioritize's signals, by signal.
    let mut blocker = db.connect().await;
    exec(&mut blocker, "CREATE TABLE orders (id int)").await;
    let mut report = blocker.begin().await.unwrap();
    exec(&mut report, "SELECT count(*) FROM orders").await;
    let mut conn = db.connect().await;
    pglock::prioritize()
        .interval(Duration::from_millis(50))
        .watcher(db.pool())
        .scope(&mut conn, async |conn| {
            exec(conn, "ALTER TABLE orders ADD COLUMN note text").await;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    drop(report);
    let metrics = recorded.read();
    let signals = [("signal", "terminate")];
    assert_eq!(counter(&metrics, names::PRIORITIZE_SIGNALS, &signals), 1);

    // min_hold: a lock kept past its body counts as held, and its hold is timed, until it is
    // really released by the background task; the gauge comes back to 0 only then.
    let pool = db.pool_with(2).await;
    for (kind, function) in [
        ("session", "metrics::linger"),
        ("xact", "metrics::linger_xact"),
    ] {
        let job = advisory("lingering")
            .function(function)
            .min_hold(Duration::from_millis(600));
        let job = if kind == "xact" { job.xact() } else { job };
        let started = std::time::Instant::now();
        job.run(&pool, async { Ok::<_, Error>(()) }).await.unwrap();
        let labels = [("function", function), ("kind", kind)];
        let metrics = recorded.read();
        assert_eq!(
            gauge(&metrics, names::LOCKS_HELD, &labels),
            1.0,
            "{kind}: held in the background after the call returned"
        );
        assert!(
            metrics
                .iter()
                .all(|metric| !(metric.name == names::HOLD_SECONDS
                    && metric
                        .labels
                        .contains(&("function".into(), function.into())))),
            "{kind}: no hold timed before the release"
        );
        assert_eq!(common::locks_on(db.pool(), "lingering").await.len(), 1);
        common::eventually(
            Duration::from_secs(10),
            "the gauge comes back to 0",
            async || gauge(&recorded.read(), names::LOCKS_HELD, &labels) == 0.0,
        )
        .await;
        assert!(
            common::locks_on(db.pool(), "lingering").await.is_empty(),
            "{kind}: out of the gauge only once released"
        );
        assert!(started.elapsed() >= Duration::from_millis(600));
        let holds = histogram(&recorded.read(), names::HOLD_SECONDS, &labels);
        assert!(holds.len() == 1 && holds[0] >= 0.6, "{kind}: {holds:?}");
    }

    // Leader elections: won (clean or not), leading, lost.
    let (first_pool, second_pool) = (db.pool_with(1).await, db.pool_with(1).await);
    let first = pglock::leader("metrics-leader")
        .heartbeat(Duration::from_millis(100))
        .run(&first_pool, std::future::pending);
    until_leading(&first).await;
    let metrics = recorded.read();
    assert_eq!(gauge(&metrics, names::LEADING, &[]), 1.0);
    let unclean = [("clean", "false")];
    assert_eq!(counter(&metrics, names::LEADER_ELECTIONS, &unclean), 1);
    let election = find(&metrics, names::LEADER_ELECTIONS, &unclean);
    assert_eq!(election.labels.len(), 1, "no per-lock label by default");

    let second = pglock::leader("metrics-leader")
        .heartbeat(Duration::from_millis(100))
        .run(&second_pool, std::future::pending);
    common::until_someone_waits(db.pool(), "metrics-leader").await;
    first.step_down().await;
    until_leading(&second).await;
    let metrics = recorded.read();
    assert_eq!(
        counter(&metrics, names::LEADER_ELECTIONS, &[("clean", "true")]),
        1
    );
    assert_eq!(
        gauge(&metrics, names::LEADING, &[]),
        1.0,
        "one leader at a time"
    );

    let leader = common::holder_of(db.pool(), "metrics-leader").await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(leader)
        .execute(db.pool())
        .await
        .unwrap();
    common::eventually(Duration::from_secs(10), "the loss is counted", async || {
        recorded
            .read()
            .iter()
            .any(|metric| metric.name == names::LEADER_LOST)
    })
    .await;
    let metrics = recorded.read();
    assert_eq!(counter(&metrics, names::LEADER_LOST, &[]), 1);
    assert_eq!(
        gauge(&metrics, names::LEADING, &[]),
        0.0,
        "lost, so not leading"
    );
    // Alone, it is elected again, and leads after the grace period.
    common::eventually(Duration::from_secs(10), "elected again", async || {
        counter(&recorded.read(), names::LEADER_ELECTIONS, &unclean) == 2
    })
    .await;
    until_leading(&second).await;
    assert_eq!(gauge(&recorded.read(), names::LEADING, &[]), 1.0);
    second.step_down().await;
    assert_eq!(gauge(&recorded.read(), names::LEADING, &[]), 0.0);

    // Per-lock labels, once opted into.
    pglock::telemetry::set_lock_labels(true);
    advisory("tenant-42")
        .acquire(db.pool())
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    pglock::telemetry::set_lock_labels(false);
    let metrics = recorded.read();
    let tenant = [("lock", "tenant-42"), ("outcome", "acquired")];
    assert_eq!(counter(&metrics, names::ACQUISITIONS, &tenant), 1);
}
