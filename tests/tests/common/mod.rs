//! What the integration tests observe: rows of `pg_locks` and `pg_stat_activity`, read from a
//! session of their own.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::future::Future;
use std::time::{Duration, Instant};

use pglock::{AdvisoryKey, LockId, advisory};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

/// One advisory lock row of `pg_locks`, in the current database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRow {
    pub pid: i32,
    pub mode: String,
    pub granted: bool,
    pub classid: i64,
    pub objid: i64,
    pub objsubid: i16,
}

impl LockRow {
    /// Whether this row is for `id`.
    pub fn is_for(&self, id: &LockId) -> bool {
        let (classid, objid) = id.key().to_pg_locks_id();
        self.classid == i64::from(classid)
            && self.objid == i64::from(objid)
            && self.objsubid == id.key().pg_locks_objsubid()
    }
}

/// Every advisory lock held or awaited in the current database, from a pool's session.
pub async fn advisory_locks(observer: &PgPool) -> Vec<LockRow> {
    let rows: Vec<(i32, String, bool, i64, i64, i16)> = sqlx::query_as(
        "SELECT pid, mode, granted, classid::int8 AS classid, objid::int8 AS objid, objsubid \
         FROM pg_locks \
         WHERE locktype = 'advisory' \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY pid, mode",
    )
    .fetch_all(observer)
    .await
    .expect("reading pg_locks");
    rows.into_iter()
        .map(|(pid, mode, granted, classid, objid, objsubid)| LockRow {
            pid,
            mode,
            granted,
            classid,
            objid,
            objsubid,
        })
        .collect()
}

/// The rows of `pg_locks` for one lock id.
pub async fn locks_on(observer: &PgPool, id: impl Into<LockId>) -> Vec<LockRow> {
    let id = id.into();
    advisory_locks(observer)
        .await
        .into_iter()
        .filter(|row| row.is_for(&id))
        .collect()
}

/// The backend pid of a connection.
pub async fn pid(conn: &mut PgConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("reading pg_backend_pid()")
}

/// `SHOW lock_timeout` on a connection.
pub async fn lock_timeout(conn: &mut PgConnection) -> String {
    sqlx::query_scalar("SHOW lock_timeout")
        .fetch_one(conn)
        .await
        .expect("SHOW lock_timeout")
}

/// Whether a backend exists (in any state) on the server.
pub async fn backend_exists(observer: &PgPool, pid: i32) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $1)")
        .bind(pid)
        .fetch_one(observer)
        .await
        .expect("reading pg_stat_activity")
}

/// Poll `check` until it returns true, failing the test with `what` after `limit`.
/// Waiting for the server to reach a state is not a timing assertion: `limit` is generous.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "never happened within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until some session waits (ungranted) on `id`.
pub async fn until_someone_waits(observer: &PgPool, id: impl Into<LockId>) {
    let id = id.into();
    eventually(
        Duration::from_secs(10),
        "a session waits on the lock",
        || async {
            locks_on(observer, id.clone())
                .await
                .iter()
                .any(|row| !row.granted)
        },
    )
    .await;
}

/// The backend holding `id` in the current database, once a session holds it.
pub async fn holder_of(observer: &PgPool, id: impl Into<LockId>) -> i32 {
    let id = id.into();
    let start = Instant::now();
    loop {
        let locks = locks_on(observer, id.clone()).await;
        if let Some(row) = locks.iter().find(|row| row.granted) {
            return row.pid;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no session held {id} within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether a session can take `id` right now without waiting. If it can, it gives the lock back.
pub async fn free_for(conn: &mut PgConnection, id: impl Into<LockId>) -> bool {
    match advisory(id)
        .nowait()
        .try_acquire(conn)
        .await
        .expect("trying the lock")
    {
        Some(guard) => {
            guard.release().await.expect("releasing the lock");
            true
        }
        None => false,
    }
}

/// The `bigint` key of a string lock id, for statements written by hand.
pub fn bigint_key(name: &str) -> i64 {
    match LockId::from(name).key() {
        AdvisoryKey::BigInt(key) => key,
        other => unreachable!("string ids hash to bigint keys, not {other:?}"),
    }
}

/// How long the helpers below wait for another session to get somewhere.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Run `sql` (one or more statements, simple protocol) on `conn`.
pub async fn exec(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A statement running on its own session, handed back with its result when it ends.
pub type Running = tokio::task::JoinHandle<(Result<(), sqlx::Error>, PgConnection)>;

/// Start `sql` on `conn` in the background (typically one that waits for a lock).
pub fn start(mut conn: PgConnection, sql: &'static str) -> Running {
    tokio::spawn(async move {
        let result = sqlx::raw_sql(sql).execute(&mut conn).await.map(drop);
        (result, conn)
    })
}

/// Wait until backend `pid` waits for a lock (an ungranted row in `pg_locks`).
pub async fn until_waiting(observer: &PgPool, pid: i32) {
    eventually(
        PATIENCE,
        &format!("backend {pid} waits for a lock"),
        || async {
            sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)",
            )
            .bind(pid)
            .fetch_one(observer)
            .await
            .unwrap()
        },
    )
    .await;
}

/// The server's version number (`150004`).
pub async fn server_version(observer: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT current_setting('server_version_num')::int4")
        .fetch_one(observer)
        .await
        .unwrap()
}

/// Wait until `leadership` leads (20 s at most).
pub async fn until_leading(leadership: &pglock::Leadership) {
    let mut status = leadership.watch();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|status| matches!(status, pglock::Status::Leading { .. })),
    )
    .await
    .expect("elected within 20 s")
    .unwrap();
}
