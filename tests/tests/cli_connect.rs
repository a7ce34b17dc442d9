//! The `pglock` command connects as psql does, run as a real process against the harness's
//! server with TLS on: a role that may only connect over TLS (`pglock_tls_required`) gets in
//! with a `sslmode=require` URL, a conninfo string, the `PG*` variables alone and a password
//! file; a wrong password, given any of those ways, never shows in the output; `sslmode=disable`
//! is turned away with a message that says why. Also: `pglock completions`, colour decisions
//! (`CLICOLOR_FORCE`, `NO_COLOR`), and `cargo install` of the command's package.

#[path = "common/binary.rs"]
mod command;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use command::{binary, without_crate_variables, workspace};
use common::{exec, pid, until_waiting};
use pglock_tests::{PrivateCluster, TLS_REQUIRED_ROLE, TestDb};
use sqlx::{Connection as _, PgConnection};

/// A new empty directory of this test's own.
fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pglock-cli-connect-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The command with nothing from this process's environment that could say where to connect
/// or how to look: no `DATABASE_URL`, no `PG*` variable, no colour settings, and a `HOME` of
/// its own with no `.pgpass` or `.postgresql/`.
fn pglock(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("PG")
            || [
                "DATABASE_URL",
                "COLUMNS",
                "NO_COLOR",
                "CLICOLOR",
                "CLICOLOR_FORCE",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command
        .env("HOME", temp_dir("home"))
        .current_dir(temp_dir("cwd"))
        .stdin(Stdio::null());
    command
}

/// What a run printed, and how it ended.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:#?}");
        &self.stdout
    }

    /// Failed with one line on stderr, `pglock: <message>`; returns the message.
    fn error(&self) -> &str {
        assert_eq!(self.code, Some(1), "{self:#?}");
        assert_eq!(self.stdout, "", "{self:#?}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{self:#?}");
        lines[0].strip_prefix("pglock: ").unwrap()
    }

    /// Neither stdout nor stderr shows `secret`, raw or as a URL would encode it.
    fn never_shows(&self, secret: &str) {
        for shown in [secret.to_owned(), encode(secret)] {
            assert!(
                !self.stdout.contains(&shown) && !self.stderr.contains(&shown),
                "{shown:?} was printed: {self:#?}"
            );
        }
    }
}

async fn run(mut command: Command) -> Ran {
    tokio::task::spawn_blocking(move || {
        let output = command.output().expect("running pglock");
        Ran {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    })
    .await
    .unwrap()
}

/// Percent-encoded for a URL's user info or query.
fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// The right password: a space, a quote, a colon and a backslash, so that every way of giving
/// it has something to escape.
const PASSWORD: &str = r"it's right: horse\battery";

/// A wrong one, distinctive enough to search the output for.
const WRONG: &str = r"wr0ng pass:word\x'";

/// A server with TLS on, a database on it where a session holds a lock on `items`, and a role
/// of this test's own that may connect only over TLS, with [`PASSWORD`].
struct Tls {
    host: &'static str,
    port: u16,
    dbname: String,
    role: String,
    /// The certificate authority that signed the server's certificate.
    ca: PathBuf,
    /// Holds `items` in ACCESS EXCLUSIVE mode.
    _holder: PgConnection,
    _server: Server,
}

/// What keeps the server and database alive (held, never read).
#[allow(dead_code)]
enum Server {
    Shared(Box<TestDb>),
    Private(PrivateCluster),
}

impl Tls {
    /// On the shared cluster, or on a private one when the tests run on `DATABASE_URL`'s server
    /// (whose TLS and `pg_hba.conf` are not the harness's).
    async fn new() -> Tls {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let ca = tokio::task::spawn_blocking(pglock_tests::server_ca_certificate)
            .await
            .unwrap();
        let (url, ca, server) = match ca {
            Some(ca) => {
                let db = TestDb::new().await;
                (db.url().to_owned(), ca, Server::Shared(Box::new(db)))
            }
            None => {
                let cluster = PrivateCluster::new().await;
                let url = cluster.url().to_owned();
                (url, cluster.ca_certificate(), Server::Private(cluster))
            }
        };
        let url = url::Url::parse(&url).unwrap();
        let plain = |url: &url::Url| {
            let mut url = url.clone();
            url.query_pairs_mut().append_pair("sslmode", "disable");
            url.to_string()
        };
        let mut admin = PgConnection::connect(&plain(&url)).await.unwrap();
        let role = format!(
            "pglock_tls_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let group = TLS_REQUIRED_ROLE;
        exec(
            &mut admin,
            &format!(
                "DO $$ BEGIN CREATE ROLE {group} NOLOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
                 SET password_encryption = 'scram-sha-256'; \
                 CREATE ROLE {role} LOGIN PASSWORD '{}' IN ROLE {group}; \
                 GRANT pg_read_all_stats TO {role}; \
                 CREATE TABLE items (id int)",
                PASSWORD.replace('\'', "''")
            ),
        )
        .await;
        let mut holder = PgConnection::connect(&plain(&url)).await.unwrap();
        exec(
            &mut holder,
            "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE",
        )
        .await;
        Tls {
            host: "127.0.0.1",
            port: url.port().unwrap(),
            dbname: url.path().trim_start_matches('/').to_owned(),
            role,
            ca,
            _holder: holder,
            _server: server,
        }
    }

    /// `postgres://role:password@host:port/db?<query>`.
    fn url(&self, password: Option<&str>, query: &str) -> String {
        let auth = match password {
            Some(password) => format!("{}:{}", self.role, encode(password)),
            None => self.role.clone(),
        };
        format!(
            "postgres://{auth}@{}:{}/{}?{query}",
            self.host, self.port, self.dbname
        )
    }

    /// A conninfo string with `password`, quoted and escaped as libpq wants.
    fn conninfo(&self, password: &str, rest: &str) -> String {
        let quoted = password.replace('\\', r"\\").replace('\'', r"\'");
        format!(
            "host={} port={} dbname={} user={} password='{quoted}' {rest}",
            self.host, self.port, self.dbname, self.role
        )
    }

    /// The `PG*` variables for this role, without a password.
    fn env(&self, command: &mut Command, sslmode: &str) {
        command
            .env("PGHOST", self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGDATABASE", &self.dbname)
            .env("PGUSER", &self.role)
            .env("PGSSLMODE", sslmode);
    }

    /// A password file (mode 0600) in a new directory, with a line for this role.
    fn pgpass(&self, password: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir("pgpass");
        let file = dir.join(".pgpass");
        let escaped = password.replace('\\', r"\\").replace(':', r"\:");
        std::fs::write(
            &file,
            format!(
                "# host:port:database:user:password\n\
                 elsewhere:1:*:*:not-this-one\n\
                 {}:{}:{}:{}:{escaped}\n",
                self.host, self.port, self.dbname, self.role
            ),
        )
        .unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        file
    }

    /// The run listed the lock on `items`: it got in, to the right database.
    fn listed(&self, ran: &Ran) {
        assert!(ran.ok().contains("items"), "{ran:#?}");
        ran.never_shows(PASSWORD);
    }

    /// The run was refused for the password, and showed neither password.
    fn refused_password(&self, ran: &Ran) {
        let message = ran.error();
        assert!(
            message.contains(&format!(
                "password authentication failed for user \"{}\"",
                self.role
            )),
            "{message}"
        );
        ran.never_shows(WRONG);
        ran.never_shows(PASSWORD);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_with_sslmode_require_connects_over_tls() {
    let tls = Tls::new().await;
    let ran = run(pglock(&[
        "-d",
        &tls.url(Some(PASSWORD), "sslmode=require"),
        "-o",
        "items",
    ]))
    .await;
    tls.listed(&ran);

    // From DATABASE_URL, verifying the server against the harness's authority.
    let mut command = pglock(&["-o", "items"]);
    command.env(
        "DATABASE_URL",
        tls.url(
            Some(PASSWORD),
            &format!("sslmode=verify-full&sslrootcert={}", tls.ca.display()),
        ),
    );
    tls.listed(&run(command).await);

    // verify-full without the authority: the system's trust store does not know it.
    let ran = run(pglock(&[
        "-d",
        &tls.url(Some(PASSWORD), "sslmode=verify-full"),
    ]))
    .await;
    let message = ran.error();
    assert!(
        message.contains("certificate") || message.contains("UnknownIssuer"),
        "{message}"
    );
    assert!(message.contains("sslmode=verify-full"), "{message}");
    ran.never_shows(PASSWORD);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_conninfo_string_connects_over_tls() {
    let tls = Tls::new().await;
    let conninfo = tls.conninfo(PASSWORD, "sslmode=require");
    let ran = run(pglock(&["-d", &conninfo, "-o", "items"])).await;
    tls.listed(&ran);

    // Verified, and from DATABASE_URL.
    let mut command = pglock(&["-o", "items"]);
    command.env(
        "DATABASE_URL",
        tls.conninfo(
            PASSWORD,
            &format!("sslmode=verify-full sslrootcert='{}'", tls.ca.display()),
        ),
    );
    tls.listed(&run(command).await);

    // A misspelt key is named; its value (here the password) is not shown.
    let typo = format!(
        "host={} pasword='{}' sslmode=require",
        tls.host,
        PASSWORD.replace('\\', r"\\").replace('\'', r"\'")
    );
    let ran = run(pglock(&["-d", &typo])).await;
    assert!(
        ran.error()
            .starts_with("unknown connection parameter \"pasword\""),
        "{ran:#?}"
    );
    ran.never_shows(PASSWORD);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pg_variables_alone_connect_over_tls() {
    let tls = Tls::new().await;
    let mut command = pglock(&["-o", "items"]);
    tls.env(&mut command, "verify-full");
    command
        .env("PGPASSWORD", PASSWORD)
        .env("PGSSLROOTCERT", &tls.ca);
    tls.listed(&run(command).await);

    // -d with only a database name, the rest from PG*, as psql -d does.
    let mut command = pglock(&["-d", &tls.dbname, "-o", "items"]);
    tls.env(&mut command, "require");
    command.env_remove("PGDATABASE").env("PGPASSWORD", PASSWORD);
    tls.listed(&run(command).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_file_connects_over_tls() {
    let tls = Tls::new().await;
    // ~/.pgpass, with the PG* variables saying where.
    let file = tls.pgpass(PASSWORD);
    let mut command = pglock(&["-o", "items"]);
    tls.env(&mut command, "require");
    command.env("HOME", file.parent().unwrap());
    tls.listed(&run(command).await);

    // PGPASSFILE, with a URL that has no password.
    let mut command = pglock(&["-d", &tls.url(None, "sslmode=require"), "-o", "items"]);
    command.env("PGPASSFILE", &file);
    tls.listed(&run(command).await);

    // A password file others may read is ignored, as libpq ignores it: no password to give.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut command = pglock(&["-d", &tls.url(None, "sslmode=require")]);
    command.env("PGPASSFILE", &file);
    let ran = run(command).await;
    ran.error();
    ran.never_shows(PASSWORD);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_is_never_shown_however_it_is_given() {
    let tls = Tls::new().await;

    let ran = run(pglock(&["-d", &tls.url(Some(WRONG), "sslmode=require")])).await;
    tls.refused_password(&ran);

    let ran = run(pglock(&["-d", &tls.conninfo(WRONG, "sslmode=require")])).await;
    tls.refused_password(&ran);

    let mut command = pglock(&[]);
    command.env("DATABASE_URL", tls.conninfo(WRONG, "sslmode=require"));
    tls.refused_password(&run(command).await);

    let mut command = pglock(&[]);
    tls.env(&mut command, "require");
    command.env("PGPASSWORD", WRONG);
    tls.refused_password(&run(command).await);

    let file = tls.pgpass(WRONG);
    let mut command = pglock(&[]);
    tls.env(&mut command, "require");
    command.env("HOME", file.parent().unwrap());
    tls.refused_password(&run(command).await);

    let mut command = pglock(&[]);
    tls.env(&mut command, "require");
    command.env("PGPASSFILE", &file);
    tls.refused_password(&run(command).await);

    // Errors before any server is asked: a bad port, another scheme, a bad sslmode.
    for given in [
        format!(
            "postgres://{}:{}@{}:99999/db",
            tls.role,
            encode(WRONG),
            tls.host
        ),
        format!("mysql://{}:{}@{}/db", tls.role, encode(WRONG), tls.host),
        tls.url(Some(WRONG), "sslmode=sometimes"),
        tls.url(Some(WRONG), "sslmode=require&sslrootcert=/no/such/file"),
        tls.conninfo(WRONG, "sslmode=sometimes"),
        tls.conninfo(WRONG, "target_session_attrs=any"),
    ] {
        let ran = run(pglock(&["-d", &given])).await;
        let message = ran.error();
        assert!(
            message.starts_with("bad")
                || message.contains("not supported")
                || message.starts_with("cannot read"),
            "{message}"
        );
        ran.never_shows(WRONG);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_disable_is_turned_away_with_a_clear_message() {
    let tls = Tls::new().await;
    for given in [
        tls.url(Some(PASSWORD), "sslmode=disable"),
        tls.conninfo(PASSWORD, "sslmode=disable"),
    ] {
        let ran = run(pglock(&["-d", &given])).await;
        let message = ran.error();
        // The server's own words: "no encryption" (Postgres 14+), "SSL off" (13).
        assert!(
            message.contains("no encryption") || message.contains("SSL off"),
            "{message}"
        );
        assert!(
            message.contains("only over TLS: use sslmode=require"),
            "{message}"
        );
        assert!(message.contains("sslmode=disable"), "{message}");
        ran.never_shows(PASSWORD);
    }
    // The superuser, who may connect without TLS, still can: the refusal was the role's.
    let url = format!(
        "postgres://postgres@{}:{}/{}?sslmode=disable",
        tls.host, tls.port, tls.dbname
    );
    let ran = run(pglock(&["-d", &url, "-o", "items"])).await;
    assert!(ran.ok().contains("items"), "{ran:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_to_connect_to_is_an_error_that_says_what_to_give() {
    let ran = run(pglock(&[])).await;
    let message = ran.error();
    assert!(
        message.starts_with("no database to inspect: give -d/--database-url, or set DATABASE_URL"),
        "{message}"
    );
    assert!(message.contains("PGHOST"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn colour_follows_no_color_and_clicolor_force() {
    let db = TestDb::new().await;
    exec(&mut db.connect().await, "CREATE TABLE items (id int)").await;
    let mut holder = db.connect().await;
    exec(
        &mut holder,
        "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE",
    )
    .await;
    let mut waiter = db.connect().await;
    let waiter_pid = pid(&mut waiter).await;
    let _waiter = common::start(waiter, "SELECT count(*) FROM items");
    until_waiting(db.pool(), waiter_pid).await;

    let listing = |set: &[(&str, &str)]| {
        let mut command = pglock(&["-d", db.url(), "-o", "items"]);
        for (name, value) in set {
            command.env(name, value);
        }
        run(command)
    };
    // Piped: plain, unless forced.
    assert!(!listing(&[]).await.ok().contains('\x1b'));
    let forced = listing(&[("CLICOLOR_FORCE", "1")]).await;
    assert!(
        forced.ok().contains(&format!("\x1b[33m{waiter_pid}")),
        "{forced:#?}"
    );
    // NO_COLOR wins over everything.
    let both = listing(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]).await;
    assert!(!both.ok().contains('\x1b'), "{both:#?}");
    assert!(both.ok().contains(&waiter_pid.to_string()));
}

#[tokio::test(flavor = "multi_thread")]
async fn completions_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let ran = run(pglock(&["completions", shell])).await;
        let script = ran.ok();
        for word in [
            "tree",
            "completions",
            "database-url",
            "blocking",
            "terminate",
        ] {
            assert!(script.contains(word), "{shell}: {word} missing");
        }
        // The shell itself checks the syntax, where it is installed (bash always is).
        let check: &[&str] = match shell {
            "bash" => &["bash", "-n"],
            "zsh" => &["zsh", "-n"],
            _ => &["fish", "--no-execute"],
        };
        let file = temp_dir("completions").join(format!("pglock.{shell}"));
        std::fs::write(&file, script).unwrap();
        match Command::new(check[0]).args(&check[1..]).arg(&file).output() {
            Ok(output) => assert!(
                output.status.success(),
                "{shell} rejects the script: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(error) if shell == "bash" => panic!("bash is needed to check: {error}"),
            Err(_) => {}
        }
    }
    let bad = run(pglock(&["completions", "tcsh"])).await;
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert!(bad.stderr.contains("bash"), "{bad:#?}");
}

/// `cargo install --path pglock-cli`, with no feature flags, installs `pglock`. The other
/// flags choose where (`--root`), pin the workspace's lock file (`--locked`, `--offline`),
/// skip the release build (`--debug`), and build in this workspace's build directory
/// (`build.build-dir`), so the dependencies built for the tests are reused; only the units whose
/// features differ when pglock-cli is built alone are compiled (about a minute the first time
/// on 2 cores; nextest runs this test alone, see .config/nextest.toml). The binary lands in a
/// target directory of its own, so that the `pglock` the other tests run is never replaced
/// under them.
#[test]
fn cargo_install_of_the_package_installs_the_command() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = temp_dir("install");
    let build_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let started = Instant::now();
    let output = without_crate_variables(Command::new(&cargo))
        .args(["install", "--path", "pglock-cli"])
        .args(["--debug", "--locked", "--offline"])
        .arg("--root")
        .arg(&root)
        .arg("--target-dir")
        .arg(root.join("target"))
        .arg("--config")
        .arg(format!(
            "build.build-dir={:?}",
            build_dir.display().to_string()
        ))
        .current_dir(workspace())
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_BUILD_DIR")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "cargo install failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("cargo install took {:?}", started.elapsed());
    let installed = root.join("bin").join("pglock");
    let version = Command::new(&installed).arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&version.stdout);
    assert!(version.starts_with("pglock 0."), "{version}");
    std::fs::remove_dir_all(&root).unwrap();
}
