//! What pglock tells a `tracing` subscriber: an event for every lock outcome, at its level, with
//! its fields (lock id, waited and held durations, pids), inside the span of its scope; against
//! a real server, captured by a test layer.
//!
//! Each test runs on a current-thread runtime with its subscriber set as the thread's default,
//! so that the tasks pglock spawns (prioritize's watcher) report to it too.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{advisory_locks, eventually, exec, holder_of, until_leading};
use pglock::{Error, advisory};
use pglock_tests::{PrivateCluster, TestDb};
use sqlx::{Connection as _, PgConnection, PgPool};
use tracing::Level;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

/// One event as captured: its level, target, message and fields, and the spans it was in
/// (innermost first), each with its fields.
#[derive(Clone, Debug)]
struct Captured {
    level: Level,
    target: String,
    message: String,
    fields: BTreeMap<String, String>,
    spans: Vec<(String, BTreeMap<String, String>)>,
}

impl Captured {
    fn field(&self, name: &str) -> &str {
        self.fields
            .get(name)
            .unwrap_or_else(|| panic!("no field {name} in {self:?}"))
    }

    fn number(&self, name: &str) -> f64 {
        self.field(name)
            .parse()
            .unwrap_or_else(|_| panic!("field {name} is not a number: {self:?}"))
    }
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

/// A layer that keeps every event, with the fields of the spans around it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

impl<S> tracing_subscriber::Layer<S> for Capture
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ctx.span(id)
            .expect("a new span")
            .extensions_mut()
            .insert(fields);
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut fields = fields.0;
        let message = fields.remove("message").unwrap_or_default();
        let spans = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .map(|span| {
                        let fields = span
                            .extensions()
                            .get::<Fields>()
                            .map(|fields| fields.0.clone())
                            .unwrap_or_default();
                        (span.name().to_owned(), fields)
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(Captured {
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            message,
            fields,
            spans,
        });
    }
}

impl Capture {
    /// Capture this thread's events until the guard is dropped.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::set_default(subscriber)
    }

    /// The events whose message contains `text`.
    fn events(&self, text: &str) -> Vec<Captured> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|event| event.message.contains(text))
            .cloned()
            .collect()
    }

    /// The one event whose message contains `text`, for lock `lock` (if given).
    fn one(&self, text: &str, lock: &str) -> Captured {
        let matching: Vec<_> = self
            .events(text)
            .into_iter()
            .filter(|event| event.fields.get("lock").is_none_or(|name| name == lock))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "one {text:?} event for {lock}, got {matching:#?}\nall: {:#?}",
            self.0.lock().unwrap()
        );
        let event = matching.into_iter().next().unwrap();
        assert_eq!(event.target, "pglock", "{event:?}");
        event
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The pid of a session.
async fn pid_of(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[test]
fn acquired_and_released_report_the_pid_and_the_time_waited_and_held() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let mut conn = db.connect().await;
        let pid = pid_of(&mut conn).await;

        let guard = advisory("report")
            .function("jobs::report")
            .acquire(&mut conn)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        guard.release().await.unwrap();

        let acquired = capture.one("lock acquired", "report");
        assert_eq!(acquired.level, Level::DEBUG);
        assert_eq!(acquired.field("pid"), pid.to_string());
        assert_eq!(acquired.field("function"), "jobs::report");
        assert_eq!(acquired.field("shared"), "false");
        assert_eq!(acquired.field("xact"), "false");
        assert!(acquired.number("waited_ms") >= 0.0);

        let released = capture.one("lock released", "report");
        assert_eq!(released.level, Level::DEBUG);
        assert!(released.number("held_ms") >= 50.0, "{released:?}");
    });
}

#[test]
fn busy_and_timed_out_report_the_lock_and_the_time_waited() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let mut holder = db.connect().await;
        let held = advisory("contended").acquire(&mut holder).await.unwrap();

        let mut conn = db.connect().await;
        let busy = advisory("contended").nowait().acquire(&mut conn).await;
        assert!(matches!(busy, Err(Error::Busy { .. })), "{busy:?}");
        let event = capture.one("lock busy", "contended");
        assert_eq!(event.level, Level::DEBUG);

        let timed_out = advisory("contended")
            .timeout(Duration::from_millis(200))
            .acquire(db.pool())
            .await;
        assert!(
            matches!(timed_out, Err(Error::LockTimeout { .. })),
            "{timed_out:?}"
        );
        let event = capture.one("lock timed out", "contended");
        assert_eq!(event.level, Level::INFO);
        // The server waits at least the lock timeout before it gives up.
        assert!(event.number("waited_ms") >= 190.0, "{event:?}");
        assert!(
            capture.events("lock acquired").len() == 1,
            "only the holder's"
        );
        held.release().await.unwrap();
    });
}

#[pglock::advisory("nightly", timeout = "0s", side_effect = Skip)]
async fn nightly(pool: &PgPool) -> Option<()> {
    let _ = pool;
    tracing::info!("the body ran");
    Some(())
}

#[test]
fn an_attribute_runs_its_body_in_a_span_and_reports_a_skip() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;

        assert_eq!(nightly(db.pool()).await, Some(()));
        let inside = capture.events("the body ran");
        assert_eq!(inside.len(), 1);
        let (name, fields) = &inside[0].spans[0];
        assert_eq!(name, "pglock::advisory", "{inside:?}");
        assert_eq!(fields["lock"], "nightly");
        assert_eq!(fields["function"], "observability::nightly");
        assert_eq!(fields["wait"], "nowait");
        assert_eq!(fields["xact"], "false");
        assert_eq!(fields["shared"], "false");
        // Acquired and released inside the span too.
        let acquired = capture.one("lock acquired", "nightly");
        assert_eq!(acquired.spans[0].0, "pglock::advisory");
        assert_eq!(
            capture.one("lock released", "nightly").spans[0].0,
            "pglock::advisory"
        );

        let mut holder = db.connect().await;
        let held = advisory("nightly").acquire(&mut holder).await.unwrap();
        assert_eq!(nightly(db.pool()).await, None);
        let skipped = capture.one("skipped", "nightly");
        assert_eq!(skipped.level, Level::INFO);
        assert_eq!(skipped.spans[0].1["function"], "observability::nightly");
        held.release().await.unwrap();

        // The runtime's try_scope reports its skip the same way, in its span.
        let mut holder = db.connect().await;
        let held = advisory("weekly").acquire(&mut holder).await.unwrap();
        let out = advisory("weekly")
            .nowait()
            .try_scope(db.pool(), async |_| Ok::<_, Error>(()))
            .await
            .unwrap();
        assert_eq!(out, None);
        let skipped = capture.one("skipped", "weekly");
        assert_eq!(skipped.spans[0].1["lock"], "weekly");
        held.release().await.unwrap();
    });
}

#[pglock::advisory("ledger", xact)]
async fn ledger(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> Result<(), Error> {
    let _ = tx;
    Ok(())
}

#[test]
fn an_xact_attribute_reports_its_end_and_leaves_the_lock_to_its_transaction() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let mut conn = db.connect().await;
        let mut tx = conn.begin().await.unwrap();

        ledger(&mut tx).await.unwrap();
        // Nothing is sent to end it (it ends with the transaction), but its end is reported
        // once, in the attribute's span, as a runtime guard's release reports it.
        let released = capture.one("lock released", "ledger");
        assert_eq!(released.field("xact"), "true");
        assert!(released.number("held_ms") >= 0.0);
        assert_eq!(released.spans[0].0, "pglock::advisory");
        assert_eq!(released.spans[0].1["function"], "observability::ledger");

        // The transaction still holds it, until it ends.
        let mut other = db.connect().await;
        let busy = advisory("ledger").nowait().acquire(&mut other).await.err();
        assert!(matches!(busy, Some(Error::Busy { .. })), "{busy:?}");
        tx.commit().await.unwrap();
        let free = advisory("ledger")
            .nowait()
            .acquire(&mut other)
            .await
            .unwrap();
        free.release().await.unwrap();
    });
}

/// Wait for `other` on the session that holds `held` (after `after` ms), then let go of both.
async fn cross(
    mut held: pglock::AdvisoryGuard<'_>,
    other: &'static str,
    after: u64,
) -> Result<(), Error> {
    tokio::time::sleep(Duration::from_millis(after)).await;
    let waited = match advisory(other).wait_forever().acquire(&mut held).await {
        Ok(guard) => guard.release().await,
        Err(error) => Err(error),
    };
    held.release().await.unwrap();
    waited
}

#[test]
fn a_deadlock_is_a_warning_naming_the_lock_waited_for() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let (mut first, mut second) = (db.connect().await, db.connect().await);
        for conn in [&mut first, &mut second] {
            exec(conn, "SET deadlock_timeout = '100ms'").await;
        }
        let a = advisory("a").acquire(&mut first).await.unwrap();
        let b = advisory("b").acquire(&mut second).await.unwrap();
        // Each session waits for the other's lock, then lets go of both; both waits run on
        // one thread, the second starting while the first is in flight.
        let (a_then_b, b_then_a) = tokio::join!(cross(a, "b", 0), cross(b, "a", 200));
        let deadlocked = match (a_then_b, b_then_a) {
            (Ok(()), Err(error)) => ("b", error),
            (Err(error), Ok(())) => ("a", error),
            other => panic!("expected exactly one deadlock: {other:?}"),
        };
        assert!(
            matches!(deadlocked.1, Error::Deadlock { .. }),
            "{deadlocked:?}"
        );
        let waited_for = if deadlocked.0 == "a" { "b" } else { "a" };
        let event = capture.one("deadlock", waited_for);
        assert_eq!(event.level, Level::WARN);
        assert!(event.number("waited_ms") > 0.0);
        assert!(event.field("error").contains("deadlock"), "{event:?}");
    });
}

#[test]
fn a_lock_on_a_standby_is_refused_with_a_warning() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let primary = PrivateCluster::new().await;
        let standby = primary.standby().await;
        let mut conn = PgConnection::connect(standby.url()).await.unwrap();
        let refused = advisory("on-standby").acquire(&mut conn).await;
        assert!(matches!(refused, Err(Error::Standby { .. })), "{refused:?}");
        let event = capture.one("hot standby", "on-standby");
        assert_eq!(event.level, Level::WARN);
    });
}

#[test]
fn a_lost_lock_is_an_error_after_a_failed_heartbeat() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let pool = db.pool_with(2).await;
        let job = advisory("watched")
            .heartbeat(Duration::from_millis(100))
            .run(&pool, async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok::<_, Error>(())
            });
        let terminate = async {
            let holder = holder_of(db.pool(), "watched").await;
            exec_pid(db.pool(), "pg_terminate_backend", holder).await;
        };
        let (lost, ()) = tokio::join!(job, terminate);
        assert!(matches!(lost, Err(Error::Lost { .. })), "{lost:?}");

        let heartbeat = capture.one("heartbeat failed", "watched");
        assert_eq!(heartbeat.level, Level::WARN);
        assert_eq!(heartbeat.number("heartbeat_ms"), 100.0);
        let lost = capture.one("lock lost", "watched");
        assert_eq!(lost.level, Level::ERROR);
        assert!(lost.number("held_ms") > 0.0);
        assert_eq!(lost.spans[0].0, "pglock::advisory");
        assert!(capture.events("lock released").is_empty());
    });
}

#[test]
fn a_lock_found_gone_at_release_is_an_error() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let guard = advisory("released-late").acquire(db.pool()).await.unwrap();
        let holder = holder_of(db.pool(), "released-late").await;
        exec_pid(db.pool(), "pg_terminate_backend", holder).await;
        let released = guard.release().await;
        assert!(matches!(released, Err(Error::Lost { .. })), "{released:?}");
        let lost = capture.one("lock lost", "released-late");
        assert_eq!(lost.level, Level::ERROR);
        assert!(lost.number("held_ms") > 0.0);
    });
}

async fn exec_pid(pool: &PgPool, function: &str, pid: i32) {
    let statement = format!("SELECT {function}($1)");
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .bind(pid)
        .execute(pool)
        .await
        .unwrap();
}

#[test]
fn lock_timeout_scopes_report_what_they_set_and_restored_at_debug() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let mut conn = db.connect().await;
        pglock::timeout(Duration::from_millis(1500))
            .scope(&mut conn, async |_| Ok::<_, Error>(()))
            .await
            .unwrap();
        let set = capture.one("lock_timeout set", "");
        assert_eq!(set.level, Level::DEBUG);
        assert_eq!(set.field("lock_timeout"), "1500");
        assert_eq!(set.field("previous"), "0");
        assert_eq!(set.spans[0].0, "pglock::timeout");
        let restored = capture.one("lock_timeout restored", "");
        assert_eq!(restored.level, Level::DEBUG);
        assert_eq!(restored.field("lock_timeout"), "0");
    });
}

#[test]
fn prioritize_reports_each_session_it_signals() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        exec(&mut db.connect().await, "CREATE TABLE orders (id int)").await;

        let mut blocker = db.connect().await;
        exec(&mut blocker, "SET application_name = 'nightly report'").await;
        let blocker_pid = pid_of(&mut blocker).await;
        let mut report = blocker.begin().await.unwrap();
        exec(&mut report, "SELECT count(*) FROM orders /* the report */").await;

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

        let event = capture.one("prioritize signalled", "");
        assert_eq!(event.level, Level::INFO);
        assert_eq!(event.field("victim_pid"), blocker_pid.to_string());
        assert_eq!(event.field("application_name"), "nightly report");
        assert_eq!(event.field("state"), "idle in transaction");
        assert_eq!(event.field("signal"), "terminate");
        assert!(event.number("duration_ms") > 0.0, "{event:?}");
        assert!(event.field("query").contains("the report"), "{event:?}");
        assert_eq!(event.spans.last().unwrap().0, "pglock::prioritize");
        drop(report);
    });
}

/// Serializes the tests below that keep locks for `min_hold`: `pglock::drain()` releases every
/// lingering lock of the process, and `cargo test` runs a binary's tests as threads of one.
static LINGERING: Mutex<()> = Mutex::new(());

fn one_lingering_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    LINGERING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Wait for the one event whose message contains `text`, for lock `lock`.
async fn until_reported(capture: &Capture, text: &str, lock: &str) -> Captured {
    eventually(Duration::from_secs(20), text, async || {
        capture
            .events(text)
            .iter()
            .any(|event| event.fields.get("lock").is_some_and(|name| name == lock))
    })
    .await;
    capture.one(text, lock)
}

#[test]
fn min_hold_reports_the_lock_kept_in_the_background_and_its_release_at_the_end() {
    let _one = one_lingering_test_at_a_time();
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let pool = db.pool_with(2).await;
        for (lock, xact) in [("hold-session", false), ("hold-xact", true)] {
            let job = advisory(lock)
                .function("jobs::tick")
                .min_hold(Duration::from_millis(600));
            let job = if xact { job.xact() } else { job };
            job.run(&pool, async { Ok::<_, Error>(()) }).await.unwrap();
            let held = capture.one("lock held past its body for min_hold", lock);
            assert_eq!(held.level, Level::DEBUG);
            assert_eq!(held.field("xact"), xact.to_string());
            assert_eq!(held.number("min_hold_ms"), 600.0, "{held:?}");
            let left = held.number("left_ms");
            assert!(left > 0.0 && left <= 600.0, "{held:?}");
            assert!(
                (held.number("held_ms") + left - 600.0).abs() < 1e-6,
                "{held:?}"
            );
            assert_eq!(held.spans[0].0, "pglock::advisory");
            assert!(
                capture
                    .events("lock released at the end of its min_hold")
                    .iter()
                    .all(|event| event.field("lock") != lock),
                "not released when the call returns"
            );
            assert_eq!(advisory_locks(db.pool()).await.len(), 1, "still held");

            let released =
                until_reported(&capture, "lock released at the end of its min_hold", lock).await;
            assert_eq!(released.level, Level::DEBUG);
            assert_eq!(released.field("xact"), xact.to_string());
            assert!(released.number("held_ms") >= 600.0, "{released:?}");
            let lingered = released.number("lingered_ms");
            assert!(
                lingered > 0.0 && lingered <= released.number("held_ms"),
                "{released:?}"
            );
            // Reported in the lock's scope's span, which names the function.
            assert_eq!(released.spans[0].0, "pglock::advisory");
            assert_eq!(released.spans[0].1["function"], "jobs::tick");
            assert!(advisory_locks(db.pool()).await.is_empty());
            // One report of the release: the generic one is not sent too.
            assert!(
                capture
                    .events("lock released")
                    .iter()
                    .all(|event| event.field("lock") != lock || event.message.contains("min_hold")),
                "{:#?}",
                capture.events("lock released")
            );
        }
    });
}

#[test]
fn drain_reports_the_lingering_locks_it_released_early() {
    let _one = one_lingering_test_at_a_time();
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let pool = db.pool_with(2).await;
        advisory("drained")
            .min_hold(Duration::from_secs(60))
            .run(&pool, async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        pglock::drain().await;
        let released = capture.one("lock released before the end of its min_hold", "drained");
        assert_eq!(released.level, Level::INFO);
        assert!(released.message.contains("drain"), "{released:?}");
        let lingered = released.number("lingered_ms");
        assert!((50.0..60_000.0).contains(&lingered), "{released:?}");
        assert!(capture.events("at the end of its min_hold").is_empty());
        assert!(advisory_locks(db.pool()).await.is_empty());
    });
}

#[test]
fn a_lingering_lock_lost_with_its_session_is_an_error() {
    let _one = one_lingering_test_at_a_time();
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let pool = db.pool_with(2).await;
        advisory("lingering-lost")
            .min_hold(Duration::from_secs(60))
            .heartbeat(Duration::from_millis(100))
            .run(&pool, async { Ok::<_, Error>(()) })
            .await
            .unwrap();
        let holder = holder_of(db.pool(), "lingering-lost").await;
        exec_pid(db.pool(), "pg_terminate_backend", holder).await;

        let lost =
            until_reported(&capture, "lock lost during its min_hold", "lingering-lost").await;
        assert_eq!(lost.level, Level::ERROR);
        assert_eq!(lost.field("xact"), "false");
        assert_eq!(lost.number("heartbeat_ms"), 100.0);
        let lingered = lost.number("lingered_ms");
        assert!(lingered > 0.0 && lingered < 60_000.0, "{lost:?}");
        assert!(lost.number("held_ms") >= lingered, "{lost:?}");
        assert!(!lost.field("error").is_empty());
        // The task ended with the loss: nothing is left for drain to release or report.
        pglock::drain().await;
        assert!(
            capture.events("min_hold").len() == 2,
            "{:#?}",
            capture.events("min_hold")
        );
    });
}

const HEARTBEAT: Duration = Duration::from_millis(100);

/// A leader's task: runs until it is dropped.
fn lead() -> impl FnMut() -> std::future::Pending<()> + Send + 'static {
    std::future::pending
}

/// The one event whose message contains `text` about the session `pid`.
fn about(capture: &Capture, text: &str, pid: i32) -> Captured {
    let events: Vec<_> = capture
        .events(text)
        .into_iter()
        .filter(|event| event.fields.get("pid") == Some(&pid.to_string()))
        .collect();
    assert_eq!(events.len(), 1, "one {text:?} for {pid}: {events:#?}");
    assert_eq!(events[0].target, "pglock");
    events.into_iter().next().unwrap()
}

#[test]
fn a_leader_reports_its_election_and_a_clean_hand_over_on_stepping_down() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let (first_pool, second_pool) = (db.pool_with(1).await, db.pool_with(1).await);
        let first = pglock::leader("elected")
            .heartbeat(HEARTBEAT)
            .run(&first_pool, lead());
        until_leading(&first).await;
        let first_pid = holder_of(db.pool(), "elected").await;

        // The first leader cannot know how a previous one left: it waits out the grace period.
        let won = about(&capture, "leadership won", first_pid);
        assert_eq!(won.level, Level::INFO);
        assert_eq!(won.field("lock"), "elected");
        assert_eq!(won.field("clean"), "false");
        assert!(won.number("campaigned_ms") > 0.0, "{won:?}");
        let grace = about(&capture, "waiting out the grace period", first_pid);
        assert_eq!(grace.level, Level::INFO);
        assert_eq!(
            grace.number("grace_ms"),
            300.0,
            "twice the heartbeat plus 100 ms"
        );
        let leading = about(&capture, "leading: the task starts", first_pid);
        assert_eq!(leading.level, Level::DEBUG);
        assert_eq!(leading.field("clean"), "false");

        let second = pglock::leader("elected")
            .heartbeat(HEARTBEAT)
            .run(&second_pool, lead());
        common::until_someone_waits(db.pool(), "elected").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        first.step_down().await;
        let stepped = about(&capture, "stepped down", first_pid);
        assert_eq!(stepped.level, Level::INFO);
        assert_eq!(stepped.field("lock"), "elected");
        assert_eq!(stepped.field("notified"), "true");
        assert!(stepped.number("led_ms") >= 100.0, "{stepped:?}");

        until_leading(&second).await;
        let second_pid = holder_of(db.pool(), "elected").await;
        assert_ne!(second_pid, first_pid);
        let won = about(&capture, "leadership won", second_pid);
        assert_eq!(won.field("clean"), "true");
        assert!(won.number("campaigned_ms") >= 100.0, "it waited: {won:?}");
        assert!(
            capture
                .events("waiting out the grace period")
                .iter()
                .all(|event| event.field("pid") != second_pid.to_string()),
            "a clean hand-over has no grace period"
        );
        assert_eq!(
            about(&capture, "leading: the task starts", second_pid).field("clean"),
            "true"
        );
        second.step_down().await;
        assert!(capture.events("leadership lost").is_empty());
        assert!(
            capture.events("failed").is_empty(),
            "{:#?}",
            capture.events("failed")
        );
    });
}

#[test]
fn a_leader_whose_session_is_terminated_reports_the_loss_and_its_successor_the_grace_period() {
    runtime().block_on(async {
        let capture = Capture::default();
        let _guard = capture.install();
        let db = TestDb::new().await;
        let (first_pool, second_pool) = (db.pool_with(1).await, db.pool_with(1).await);
        let first = pglock::leader("deposed")
            .heartbeat(HEARTBEAT)
            .run(&first_pool, lead());
        until_leading(&first).await;
        let second = pglock::leader("deposed")
            .heartbeat(HEARTBEAT)
            .grace(Duration::from_millis(400))
            .run(&second_pool, lead());
        common::until_someone_waits(db.pool(), "deposed").await;
        tokio::time::sleep(Duration::from_millis(100)).await;

        let first_pid = holder_of(db.pool(), "deposed").await;
        exec_pid(db.pool(), "pg_terminate_backend", first_pid).await;
        let lost = until_reported(&capture, "leadership lost", "deposed").await;
        assert_eq!(lost.level, Level::ERROR);
        assert_eq!(lost.field("pid"), first_pid.to_string());
        assert!(lost.number("led_ms") >= 100.0, "{lost:?}");
        assert!(!lost.field("error").is_empty(), "{lost:?}");

        until_leading(&second).await;
        let second_pid = holder_of(db.pool(), "deposed").await;
        let won = about(&capture, "leadership won", second_pid);
        assert_eq!(
            won.field("clean"),
            "false",
            "the deposed leader never said so"
        );
        let grace = about(&capture, "waiting out the grace period", second_pid);
        assert_eq!(grace.level, Level::INFO);
        assert_eq!(grace.number("grace_ms"), 400.0);
        assert_eq!(
            about(&capture, "leading: the task starts", second_pid).field("clean"),
            "false"
        );

        second.step_down().await;
        first.step_down().await;
        assert_eq!(capture.events("leadership lost").len(), 1);
    });
}
