//! A fresh database per test.

use std::hash::{BuildHasher as _, Hasher as _};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection as _, PgConnection, PgPool};

/// Connections in [`TestDb::pool`].
const POOL_SIZE: u32 = 10;

/// Prefix of every test database's name.
const NAME_PREFIX: &str = "pglock_t_";

/// A fresh, empty database for one test, on the server of [`crate::server_url`].
///
/// Advisory locks are per database, so tests that each use their own `TestDb` cannot see each
/// other's locks, even when they run at the same time on the same server.
///
/// With `DATABASE_URL` set, the database is dropped (with `WITH (FORCE)`, ending its sessions)
/// when the `TestDb` is dropped; on the throwaway cluster it is left for the cluster's removal at
/// the end of the run.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    options: PgConnectOptions,
    pool: PgPool,
    /// The server URL to drop the database from when this is dropped, if it should be.
    drop_from: Option<String>,
}

impl TestDb {
    /// Creates a new database (`pglock_t_<random>`) and a pool of up to 10 connections to it.
    ///
    /// The first call in a test run may take a few seconds while the throwaway cluster starts.
    ///
    /// # Panics
    ///
    /// When there is no server, or the database cannot be created or connected to, with a
    /// message saying what failed.
    pub async fn new() -> TestDb {
        let server = match tokio::task::spawn_blocking(crate::server_url).await {
            Ok(server) => server,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(error) => panic!("pglock-tests: finding the server failed: {error}"),
            },
        };
        let name = unique_name();

        let mut admin = PgConnection::connect(&server).await.unwrap_or_else(|e| {
            panic!(
                "pglock-tests: cannot connect to the test server {}: {e}{}",
                redact(&server),
                server_hint()
            )
        });
        // Copying the template's files is about twice as fast as WAL-logging them (the default
        // since Postgres 15; the only way, and no STRATEGY option, before).
        let version: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
            .fetch_one(&mut admin)
            .await
            .unwrap_or(0);
        let strategy = if version >= 150_000 {
            " STRATEGY = FILE_COPY"
        } else {
            ""
        };
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}{strategy}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "pglock-tests: cannot create database {name} on {}: {e}{}",
                    redact(&server),
                    server_hint()
                )
            });
        let _ = admin.close().await;

        let url = with_database(&server, &name);
        let options = PgConnectOptions::from_str(&url)
            .unwrap_or_else(|e| panic!("pglock-tests: bad database URL {}: {e}", redact(&url)));
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options.clone())
            .await
            .unwrap_or_else(|e| panic!("pglock-tests: cannot connect to {}: {e}", redact(&url)));
        let drop_from = crate::external_url().is_some().then_some(server);
        TestDb {
            name,
            url,
            options,
            pool,
            drop_from,
        }
    }

    /// The database's name (`pglock_t_<random>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connect options for this database.
    pub fn options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// A pool of up to 10 connections to this database, shared by every caller.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Another pool on this database, separate from [`TestDb::pool`] and from other calls.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn pool_with(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .connect_with(self.options())
            .await
            .unwrap_or_else(|e| {
                panic!("pglock-tests: cannot connect to {}: {e}", redact(&self.url))
            })
    }

    /// A new connection of its own: a separate session, served by a separate backend process.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .unwrap_or_else(|e| {
                panic!("pglock-tests: cannot connect to {}: {e}", redact(&self.url))
            })
    }
}

impl Drop for TestDb {
    /// Drops the database when it lives on a `DATABASE_URL` server (best effort: failures are
    /// printed, not raised). Runs on a thread of its own with its own runtime, and waits for it,
    /// so that it also works from async tests and finishes before the test process exits.
    fn drop(&mut self) {
        let Some(server) = self.drop_from.take() else {
            return;
        };
        let name = self.name.clone();
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                // WITH (FORCE) (Postgres 13+) ends the sessions still open, our pool's included:
                // closing the pool here could hang, as its connections belong to the test's
                // runtime, which is blocked on us.
                let mut admin = PgConnection::connect(&server)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .map_err(|e| e.to_string())?;
                let _ = admin.close().await;
                Ok::<(), String>(())
            })
        });
        match dropper.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                eprintln!(
                    "pglock-tests: could not drop test database {}: {error}",
                    self.name
                );
            }
            Err(_) => eprintln!(
                "pglock-tests: dropping test database {} panicked",
                self.name
            ),
        }
    }
}

/// A database name no other test process is using: prefix, then 16 random hex digits.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{NAME_PREFIX}{:016x}", hasher.finish())
}

/// `server` with its database replaced by `name` (query parameters kept).
fn with_database(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).unwrap_or_else(|e| {
        panic!(
            "pglock-tests: the server URL {} is not a URL: {e}{}",
            redact(server),
            server_hint()
        )
    });
    url.set_path(&format!("/{name}"));
    url.into()
}

/// `url` without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("****"));
            parsed.into()
        }
        _ => url.to_owned(),
    }
}

/// What to do when the server misbehaves, depending on where it came from.
fn server_hint() -> &'static str {
    if crate::external_url().is_some() {
        "\nhint: this server comes from DATABASE_URL; check that it is running and that its user \
         may CREATE DATABASE, or unset DATABASE_URL to use a throwaway cluster."
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid_identifiers() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert!(a.starts_with(NAME_PREFIX));
        assert!(a.len() < 64, "Postgres truncates identifiers at 63 bytes");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u:p@h:5433/postgres?sslmode=disable", "x"),
            "postgres://u:p@h:5433/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:1", "x"),
            "postgres://postgres@127.0.0.1:1/x"
        );
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:****@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
