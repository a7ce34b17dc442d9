//! The harness's cutting proxy does what its controls say, against a real server: `cut` makes a
//! silent partition (queries hang, nothing is closed, the server keeps the session), `resume`
//! delivers what was held, `close` ends both sides (an I/O error for the client, the session
//! gone on the server).

mod common;

use std::time::{Duration, Instant};

use common::{backend_exists, eventually};
use pglock_tests::proxy::Proxy;
use pglock_tests::{KEEPALIVE_NOTICE, PrivateCluster, SHORT_KEEPALIVES, TestDb};
use sqlx::{Connection as _, PgConnection, PgPool};

/// How long a test waits for the server to reach a state: generous, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// How long a query through a cut proxy is given to (wrongly) get an answer.
const HANG: Duration = Duration::from_millis(300);

async fn backend_pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("a query through the forwarding proxy")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_holds_queries_until_resumed_and_closes_nothing() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(db.url()).await;
    let mut conn = PgConnection::connect(&proxy.url()).await.unwrap();
    let pid = backend_pid(&mut conn).await;
    assert_eq!(proxy.open_connections(), 1);

    proxy.cut();
    let query = tokio::spawn(async move {
        let answer: i32 = sqlx::query_scalar("SELECT 41 + 1")
            .fetch_one(&mut conn)
            .await
            .expect("the held query, once resumed");
        (answer, conn)
    });
    tokio::time::sleep(HANG).await;
    assert!(
        !query.is_finished(),
        "a query through a cut proxy gets no answer"
    );
    assert!(backend_exists(db.pool(), pid).await);
    let idle: bool =
        sqlx::query_scalar("SELECT state = 'idle' FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert!(idle, "the server never got the held query");
    assert_eq!(proxy.open_connections(), 1, "nothing was closed");

    proxy.resume();
    let (answer, mut conn) = tokio::time::timeout(PATIENCE, query)
        .await
        .expect("the held query is delivered on resume")
        .unwrap();
    assert_eq!(answer, 42);
    assert_eq!(
        backend_pid(&mut conn).await,
        pid,
        "the same session throughout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_through_a_cut_proxy_hangs_until_the_clients_own_timeout() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(db.url()).await;
    let mut conn = PgConnection::connect(&proxy.url()).await.unwrap();
    backend_pid(&mut conn).await;
    proxy.cut();
    let query = sqlx::query("SELECT 1").execute(&mut conn);
    let timed_out = tokio::time::timeout(HANG, query).await;
    assert!(timed_out.is_err(), "{timed_out:?}");

    // New connections are accepted while cut, but their startup gets no answer either.
    let connecting = PgConnection::connect(&proxy.url());
    assert!(tokio::time::timeout(HANG, connecting).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn close_gives_the_client_an_io_error_and_ends_the_servers_session() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(db.url()).await;
    let mut conn = PgConnection::connect(&proxy.url()).await.unwrap();
    let pid = backend_pid(&mut conn).await;

    proxy.close();
    let failed = sqlx::query("SELECT 1").execute(&mut conn).await;
    assert!(
        matches!(failed, Err(sqlx::Error::Io(_))),
        "an I/O error after close: {failed:?}"
    );
    eventually(PATIENCE, "the server ends the closed session", || async {
        !backend_exists(db.pool(), pid).await
    })
    .await;
    eventually(PATIENCE, "the proxy drops the connection", || async {
        proxy.open_connections() == 0
    })
    .await;

    // The proxy serves new connections afterwards.
    let mut again = PgConnection::connect(&proxy.url()).await.unwrap();
    assert_ne!(backend_pid(&mut again).await, pid);
}

/// With short keepalives the server would end the session of a vanished host within
/// `KEEPALIVE_NOTICE`; through a cut proxy it does not, because the proxy's kernel answers the
/// probes: the session stays in `pg_stat_activity` until the proxy closes the connection.
#[tokio::test(flavor = "multi_thread")]
async fn the_server_keeps_a_cut_session_until_the_connection_is_closed() {
    let cluster = PrivateCluster::with_settings(SHORT_KEEPALIVES).await;
    let observer = PgPool::connect(cluster.url()).await.unwrap();
    let proxy = Proxy::start(cluster.url()).await;
    let mut conn = PgConnection::connect(&proxy.url()).await.unwrap();
    let pid = backend_pid(&mut conn).await;
    let idle: String = sqlx::query_scalar("SHOW tcp_keepalives_idle")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(idle, "1", "the setting applies to TCP sessions");

    proxy.cut();
    let cut_at = Instant::now();
    // Twice the keepalive bound, and a second more for the timers' slack.
    while cut_at.elapsed() < 2 * KEEPALIVE_NOTICE + Duration::from_secs(1) {
        assert!(
            backend_exists(&observer, pid).await,
            "the server ended the cut session after {:?}",
            cut_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    proxy.close();
    eventually(
        PATIENCE,
        "the server ends the session once closed",
        || async { !backend_exists(&observer, pid).await },
    )
    .await;
}

/// `cut_and_close_after` models a server that notices the partition after a while: the client
/// hangs meanwhile, then gets an I/O error, and the server has ended the session.
#[tokio::test(flavor = "multi_thread")]
async fn cut_and_close_after_cuts_first_and_closes_later() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(db.url()).await;
    let mut conn = PgConnection::connect(&proxy.url()).await.unwrap();
    let pid = backend_pid(&mut conn).await;
    let cut_at = Instant::now();
    proxy.cut_and_close_after(Duration::from_secs(1));
    let failed = tokio::time::timeout(PATIENCE, sqlx::query("SELECT 1").execute(&mut conn))
        .await
        .expect("the close ends the hang");
    assert!(matches!(failed, Err(sqlx::Error::Io(_))), "{failed:?}");
    assert!(
        cut_at.elapsed() >= Duration::from_secs(1),
        "closed no earlier than asked"
    );
    eventually(PATIENCE, "the server ends the closed session", || async {
        !backend_exists(db.pool(), pid).await
    })
    .await;

    // The partition outlasts the close (new connections hang) until resumed; resumed in time,
    // nothing is closed.
    proxy.resume();
    let mut conn = PgConnection::connect(&proxy.url()).await.unwrap();
    proxy.cut_and_close_after(Duration::from_millis(500));
    proxy.resume();
    tokio::time::sleep(Duration::from_secs(1)).await;
    backend_pid(&mut conn).await;
}
