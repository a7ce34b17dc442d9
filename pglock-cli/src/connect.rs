//! Where to connect, found as psql finds it, and connecting there.
//!
//! The database comes from `-d`, a config's `database_url` or `DATABASE_URL` (in that order), as
//! a URL (`postgres://user@host/db?sslmode=require`), a libpq conninfo string
//! (`host=db.example.com user=ops sslmode=require`) or a bare database name; with none of them,
//! from the `PG*` environment variables alone. Whatever the string leaves out comes from the
//! `PG*` variables, then libpq's defaults; a missing password from `PGPASSWORD`, then
//! `PGPASSFILE` or `~/.pgpass`. TLS is rustls: `sslmode`, `sslrootcert`, `sslcert` and `sslkey`
//! mean what they mean to libpq.
//!
//! sqlx's [`PgConnectOptions`] already reads `PGHOST`, `PGHOSTADDR`, `PGPORT`, `PGUSER`,
//! `PGPASSWORD`, `PGDATABASE`, `PGSSLCERT`, `PGSSLKEY`, `PGOPTIONS` and the password file, so
//! this module hands it a URL of the explicit parameters and leaves those to it. It decides
//! itself what sqlx does differently from libpq: `sslmode` and `sslrootcert` (with
//! `PGSSLMODE`/`PGSSLROOTCERT`, `sslrootcert=system`, `~/.postgresql/root.crt`, and `require`
//! verifying against a root certificate when there is one), `connect_timeout`/
//! `PGCONNECT_TIMEOUT`, `application_name`/`PGAPPNAME` (else `pglock`), and the database
//! defaulting to the user's name before the password file is searched.
//!
//! No message shows a password: targets are described from their parsed parts without it, and
//! every password the run could know (from the string, `PGPASSWORD` or a password file) is
//! scrubbed from any message before it is printed ([`scrub`]), sqlx's included.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Mutex;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use sqlx::postgres::{PgConnectOptions, PgSslMode};
use sqlx::{Connection as _, PgConnection};

/// How long connecting may take unless `connect_timeout` or `PGCONNECT_TIMEOUT` says.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The connection parameters pglock understands, by libpq's names.
const KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "fallback_application_name",
    "options",
    "connect_timeout",
];

/// libpq parameters pglock does not implement: refused by name rather than ignored, since
/// ignoring one (`target_session_attrs`, `require_auth`, ...) could connect somewhere or
/// somehow the user ruled out.
const UNSUPPORTED: &[&str] = &[
    "passfile",
    "service",
    "target_session_attrs",
    "load_balance_hosts",
    "require_auth",
    "channel_binding",
    "client_encoding",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslnegotiation",
    "sslcompression",
    "sslpassword",
    "sslcertmode",
    "sslcrl",
    "sslcrldir",
    "sslsni",
    "requirepeer",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "gssencmode",
    "krbsrvname",
    "gsslib",
    "gssdelegation",
    "replication",
];

/// The environment variables that name a server (any one of them is enough to go on without a
/// URL).
const SERVER_VARIABLES: &[&str] = &["PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER"];

/// What connecting needs: the options, how to describe them, and how long to try. Not `Debug`:
/// the options' `Debug` shows the password.
pub struct Target {
    pub options: PgConnectOptions,
    /// The target for messages, without a password: `postgres://user@host:port/db`.
    pub shown: String,
    /// `None`: wait as long as it takes.
    pub timeout: Option<Duration>,
}

/// Parameters by libpq name.
type Params = BTreeMap<&'static str, String>;

/// Every password this run could know, to scrub from messages.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `message` with every known password replaced by `***`.
pub fn scrub(message: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|poison| poison.into_inner());
    let mut message = message.to_owned();
    for secret in secrets.iter() {
        message = message.replace(secret.as_str(), "***");
    }
    message
}

/// Remember `password` (and its percent-encoded form, as a URL would hold it) for [`scrub`].
fn keep_secret(password: &str) {
    // One or two characters would turn every message into asterisks; such a password protects
    // nothing anyway.
    if password.chars().count() < 3 {
        return;
    }
    let mut secrets = SECRETS.lock().unwrap_or_else(|poison| poison.into_inner());
    let encoded =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    for secret in [password.to_owned(), encoded] {
        if !secrets.contains(&secret) {
            secrets.push(secret);
        }
    }
    // Longest first, so that a password containing another is scrubbed whole.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
}

/// An environment variable, if set and not empty.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

/// Where to connect: `given` (a URL, conninfo string or database name, from `-d`, the config
/// or `DATABASE_URL`), completed from the environment.
///
/// # Errors
/// Nothing to connect to, a malformed string, an unknown or unsupported parameter, a bad
/// `sslmode` or timeout, or a certificate file that is missing; one line, without passwords.
pub fn resolve(given: Option<&str>) -> Result<Target, String> {
    let mut params = match given {
        Some(text) => parse(text)?,
        None if SERVER_VARIABLES.iter().any(|name| env(name).is_some()) => Params::new(),
        None => {
            return Err(
                "no database to inspect: give -d/--database-url, or set DATABASE_URL, \
                        or PGHOST, PGDATABASE and friends as for psql"
                    .to_owned(),
            );
        }
    };
    collect_secrets(&params);

    for (key, variable) in [
        ("sslmode", "PGSSLMODE"),
        ("sslrootcert", "PGSSLROOTCERT"),
        ("sslcert", "PGSSLCERT"),
        ("sslkey", "PGSSLKEY"),
        ("connect_timeout", "PGCONNECT_TIMEOUT"),
        ("application_name", "PGAPPNAME"),
    ] {
        if !params.contains_key(key)
            && let Some(value) = env(variable)
        {
            params.insert(key, value);
        }
    }
    let timeout = connect_timeout(params.get("connect_timeout").map(String::as_str))?;
    let tls = Tls::new(&params)?;
    let application_name = params
        .get("application_name")
        .or(params.get("fallback_application_name"))
        .cloned()
        .unwrap_or_else(|| "pglock".to_owned());

    let mut options = sqlx_options(&params)?;
    if options.get_database().is_none() {
        // libpq's default database is the user's name, and the password file is searched for
        // it; sqlx searches for an empty name, which only `*` matches.
        params.insert("dbname", options.get_username().to_owned());
        options = sqlx_options(&params)?;
    }
    let mut options = tls.apply(options).application_name(&application_name);
    if options.get_socket().is_some() || options.get_host().starts_with('/') {
        // libpq ignores sslmode on a Unix socket, where Postgres offers no TLS.
        options = options.ssl_mode(PgSslMode::Disable);
    }
    Ok(Target {
        shown: describe(&options),
        options,
        timeout,
    })
}

/// The string given: a URL, a conninfo string, or a database name (as psql reads `-d`).
fn parse(text: &str) -> Result<Params, String> {
    let text = text.trim();
    if let Some((scheme, _)) = text.split_once("://")
        && !scheme.contains(char::is_whitespace)
        && !scheme.contains('=')
    {
        return parse_url(text, scheme);
    }
    if text.contains('=') {
        return parse_conninfo(text);
    }
    if text.is_empty() {
        return Ok(Params::new());
    }
    Ok(Params::from([("dbname", text.to_owned())]))
}

/// A `postgres://` URL's parameters.
fn parse_url(text: &str, scheme: &str) -> Result<Params, String> {
    let bad = |what: &str| format!("bad database URL ({scheme}://…): {what}");
    if !matches!(scheme, "postgres" | "postgresql") {
        return Err(bad(
            "expected postgres://[user[:password]@]host[:port]/database[?param=value&...], or a \
             conninfo string such as \"host=... dbname=...\"",
        ));
    }
    let url = url::Url::parse(text).map_err(|error| bad(&error.to_string()))?;
    let decode = |part: &str, what: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| bad(&format!("the {what} is not UTF-8 once decoded")))
    };
    let mut params = Params::new();
    if let Some(password) = url.password() {
        // First, so that a later error cannot show it.
        keep_secret(&decode(password, "password")?);
        keep_secret(password);
        params.insert("password", decode(password, "password")?);
    }
    if !url.username().is_empty() {
        params.insert("user", decode(url.username(), "user")?);
    }
    if let Some(host) = url.host_str().filter(|host| !host.is_empty()) {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        params.insert("host", decode(host, "host")?);
    }
    if let Some(port) = url.port() {
        params.insert("port", port.to_string());
    }
    let database = url.path().trim_start_matches('/');
    if !database.is_empty() {
        params.insert("dbname", decode(database, "database")?);
    }
    // libpq decodes query values by percent-encoding alone (a `+` stays a `+`).
    for pair in url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key, "parameter name")?;
        let key = match key.as_str() {
            // sqlx's spellings, for URLs shared with sqlx programs.
            "ssl-mode" => "sslmode",
            "ssl-root-cert" | "ssl-ca" => "sslrootcert",
            "ssl-cert" => "sslcert",
            "ssl-key" => "sslkey",
            other => known(other, "in the database URL")?,
        };
        let value = decode(value, "parameter value")?;
        if key == "password" {
            keep_secret(&value);
        }
        params.insert(key, value);
    }
    Ok(params)
}

/// A libpq conninfo string's parameters: `key=value` pairs separated by spaces, a value in
/// single quotes when it has spaces (or is empty), with `\'` and `\\` inside; unknown keys are
/// errors. Messages name keys, never values.
pub fn parse_conninfo(text: &str) -> Result<Params, String> {
    let mut params = Params::new();
    let mut chars = text.chars().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_spaces(&mut chars);
        if chars.peek().is_none() {
            return Ok(params);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|&c| !c.is_whitespace() && c != '=') {
            key.push(c);
        }
        skip_spaces(&mut chars);
        if chars.next() != Some('=') {
            return Err(format!(
                "bad connection string: missing \"=\" after {key:?} (expected key=value ...)"
            ));
        }
        if key.is_empty() {
            return Err("bad connection string: a value without a key before it".to_owned());
        }
        skip_spaces(&mut chars);
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') if chars.peek().is_some() => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => {
                        return Err(format!(
                            "bad connection string: the quoted value of {key:?} has no closing \
                             quote"
                        ));
                    }
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        let key = known(&key, "in the connection string")?;
        if key == "password" {
            keep_secret(&value);
        }
        params.insert(key, value);
    }
}

/// `key` as one of [`KEYS`], or why not.
fn known(key: &str, place: &str) -> Result<&'static str, String> {
    if let Some(known) = KEYS.iter().find(|known| **known == key) {
        return Ok(known);
    }
    if UNSUPPORTED.contains(&key) {
        return Err(format!(
            "the connection parameter {key:?} {place} is not supported by pglock (it knows {})",
            KEYS.join(", ")
        ));
    }
    Err(format!(
        "unknown connection parameter {key:?} {place}: expected one of {}",
        KEYS.join(", ")
    ))
}

/// Remember every password this run could send: given, `PGPASSWORD`, or in a password file.
fn collect_secrets(params: &Params) {
    if let Some(password) = params.get("password") {
        keep_secret(password);
    }
    if let Some(password) = env("PGPASSWORD") {
        keep_secret(&password);
    }
    let files = [
        std::env::var_os("PGPASSFILE").map(PathBuf::from),
        home().map(|home| home.join(".pgpass")),
    ];
    for file in files.into_iter().flatten() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            if let Some(password) = pgpass_password(line) {
                keep_secret(&password);
            }
        }
    }
}

/// The password field of a password file's line (`host:port:db:user:password`, with `\:` and
/// `\\` escaped), if it has one.
fn pgpass_password(line: &str) -> Option<String> {
    if line.trim_start().starts_with('#') {
        return None;
    }
    let mut fields = 0;
    let mut chars = line.chars();
    while fields < 4 {
        match chars.next()? {
            '\\' => {
                chars.next();
            }
            ':' => fields += 1,
            _ => {}
        }
    }
    let mut password = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => password.extend(chars.next()),
            c => password.push(c),
        }
    }
    Some(password)
}

/// The home directory, as libpq finds it.
fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

/// `connect_timeout` in seconds (libpq: 0 or less waits forever, and less than 2 means 2).
fn connect_timeout(value: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(value) = value else {
        return Ok(Some(DEFAULT_CONNECT_TIMEOUT));
    };
    let seconds: i64 = value.trim().parse().map_err(|_| {
        format!("bad connect_timeout {value:?}: expected a whole number of seconds")
    })?;
    Ok(match u64::try_from(seconds) {
        Ok(0) | Err(_) => None,
        Ok(seconds) => Some(Duration::from_secs(seconds.max(2))),
    })
}

/// The parameters sqlx is given through a URL: where, who and the password. Those left out it
/// takes from the environment and the password file, as libpq does.
fn sqlx_options(params: &Params) -> Result<PgConnectOptions, String> {
    let mut url = url::Url::parse("postgres://").expect("a constant URL");
    {
        let mut query = url.query_pairs_mut();
        for key in [
            "host", "hostaddr", "port", "dbname", "user", "password", "options",
        ] {
            if let Some(value) = params.get(key) {
                query.append_pair(key, value);
            }
        }
    }
    if let Some(port) = params.get("port")
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "bad port {port:?}: expected a number from 1 to 65535"
        ));
    }
    if let Some(address) = params.get("hostaddr")
        && address.parse::<std::net::IpAddr>().is_err()
    {
        return Err(format!("bad hostaddr {address:?}: expected an IP address"));
    }
    PgConnectOptions::from_str(url.as_str())
        .map_err(|error| scrub(&format!("bad connection parameters: {error}")))
}

/// What `sslmode` and the certificates ask for.
#[derive(Debug)]
struct Tls {
    mode: PgSslMode,
    root: Root,
    client: Option<(PathBuf, PathBuf)>,
}

/// Which certificates verify the server's.
#[derive(Debug)]
enum Root {
    /// The system's trust store alone (`sslrootcert=system`, or nothing given).
    System,
    /// This file's certificates, and the system's.
    File(PathBuf),
}

impl Tls {
    fn new(params: &Params) -> Result<Tls, String> {
        let given_mode = match params.get("sslmode").map(String::as_str) {
            None => None,
            // sqlx treats `allow` as `disable`: a server that insists on TLS would refuse a
            // connection psql makes. `prefer` tries TLS first, and never does less than `allow`.
            Some("allow") => Some(PgSslMode::Prefer),
            Some(mode) => Some(PgSslMode::from_str(mode).map_err(|_| {
                format!(
                    "bad sslmode {mode:?}: expected disable, allow, prefer, require, verify-ca \
                     or verify-full"
                )
            })?),
        };
        let default_dir = home().map(|home| home.join(".postgresql"));
        let root = match params.get("sslrootcert").map(String::as_str) {
            Some("system") => Root::System,
            Some(path) => Root::File(existing(path, "sslrootcert")?),
            None => match &default_dir {
                Some(dir) if dir.join("root.crt").is_file() => Root::File(dir.join("root.crt")),
                _ => Root::System,
            },
        };
        let mode = match (given_mode, &root, params.get("sslrootcert")) {
            // libpq: with sslrootcert=system, verify-full is the default and anything weaker
            // an error.
            (None, _, Some(system)) if system == "system" => PgSslMode::VerifyFull,
            (Some(mode), _, Some(system))
                if system == "system" && !matches!(mode, PgSslMode::VerifyFull) =>
            {
                return Err(format!(
                    "sslrootcert=system needs sslmode=verify-full (not {})",
                    mode_name(mode)
                ));
            }
            // libpq: `require` with a root certificate verifies the server's as `verify-ca`.
            (Some(PgSslMode::Require), Root::File(_), _) => PgSslMode::VerifyCa,
            (mode, _, _) => mode.unwrap_or_default(),
        };
        let client = match (params.get("sslcert"), params.get("sslkey")) {
            (Some(cert), Some(key)) => Some((existing(cert, "sslcert")?, existing(key, "sslkey")?)),
            (Some(_), None) | (None, Some(_)) => {
                return Err("sslcert and sslkey go together: give both or neither".to_owned());
            }
            (None, None) => default_dir.and_then(|dir| {
                let (cert, key) = (dir.join("postgresql.crt"), dir.join("postgresql.key"));
                (cert.is_file() && key.is_file()).then_some((cert, key))
            }),
        };
        Ok(Tls { mode, root, client })
    }

    fn apply(self, options: PgConnectOptions) -> PgConnectOptions {
        let options = options.ssl_mode(self.mode);
        let options = match self.root {
            Root::File(path) => options.ssl_root_cert(path),
            // Overrides a `PGSSLROOTCERT` sqlx read itself (it would take `system` for a file
            // name): no certificates of its own, so the system's trust store alone.
            Root::System => options.ssl_root_cert_from_pem(Vec::new()),
        };
        match self.client {
            Some((cert, key)) => options.ssl_client_cert(cert).ssl_client_key(key),
            None => options,
        }
    }
}

/// `path` if it names a readable file, else an error naming the parameter.
fn existing(path: &str, what: &str) -> Result<PathBuf, String> {
    let path = Path::new(path);
    match std::fs::File::open(path) {
        Ok(_) => Ok(path.to_path_buf()),
        Err(error) => Err(format!("cannot read {what} {}: {error}", path.display())),
    }
}

fn mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

/// The characters a URL's part keeps as they are (RFC 3986's unreserved ones).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `postgres://user@host:port/db`, with `?host=<socket directory>` for a Unix socket, else
/// `sslmode=...` unless it is the default; never the password.
fn describe(options: &PgConnectOptions) -> String {
    let encode = |text: &str| percent_encoding::utf8_percent_encode(text, UNRESERVED).to_string();
    let host = options.get_host();
    let socket = options
        .get_socket()
        .map(|dir| dir.display().to_string())
        .or_else(|| host.starts_with('/').then(|| host.to_owned()));
    let host = match (&socket, host.contains(':')) {
        (Some(_), _) => String::new(),
        (None, true) => format!("[{host}]"),
        (None, false) => encode(host),
    };
    let mut shown = format!(
        "postgres://{}@{host}:{}",
        encode(options.get_username()),
        options.get_port()
    );
    if let Some(database) = options.get_database() {
        shown.push('/');
        shown.push_str(&encode(database));
    }
    let mut query = Vec::new();
    if let Some(socket) = &socket {
        const PATH: &percent_encoding::AsciiSet = &UNRESERVED.remove(b'/');
        let socket = percent_encoding::utf8_percent_encode(socket, PATH);
        query.push(format!("host={socket}"));
    }
    if socket.is_none() && !matches!(options.get_ssl_mode(), PgSslMode::Prefer) {
        query.push(format!("sslmode={}", mode_name(options.get_ssl_mode())));
    }
    if !query.is_empty() {
        shown.push('?');
        shown.push_str(&query.join("&"));
    }
    scrub(&shown)
}

/// Connect to `target`.
///
/// # Errors
/// The server's or the network's refusal, as one line naming the target, without passwords.
pub async fn connect(target: &Target) -> Result<PgConnection, String> {
    let shown = &target.shown;
    // `shown` is scrubbed of passwords, from every source.
    tracing::info!(target: "pglock_cli", to = %shown, "connecting");
    let connecting = PgConnection::connect_with(&target.options);
    let result = match target.timeout {
        Some(limit) => match tokio::time::timeout(limit, connecting).await {
            Ok(result) => result,
            Err(_) => {
                return Err(format!(
                    "cannot connect to {shown}: no answer within {}s",
                    limit.as_secs()
                ));
            }
        },
        None => connecting.await,
    };
    result.map_err(|error| {
        let error = match error {
            // The server's own words, without sqlx's "error returned from database:" and the
            // line of the server's source it came from.
            sqlx::Error::Database(error) => error.message().to_owned(),
            error => error.to_string(),
        };
        let mut message = format!("cannot connect to {shown}: {error}");
        let mode = target.options.get_ssl_mode();
        // Postgres 14+ says "no encryption", Postgres 13 "SSL off".
        let refused_without_tls = message.contains("no encryption") || message.contains("SSL off");
        if refused_without_tls && matches!(mode, PgSslMode::Disable | PgSslMode::Allow) {
            message.push_str(
                " (the server accepts this connection only over TLS: use sslmode=require, \
                 verify-ca or verify-full)",
            );
        }
        scrub(&message)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn conninfo(text: &str) -> Vec<(&'static str, String)> {
        parse_conninfo(text).unwrap().into_iter().collect()
    }

    fn pairs(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        let mut list: Vec<_> = list.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        list.sort();
        list
    }

    #[test]
    fn conninfo_strings_parse_as_libpq_parses_them() {
        assert_eq!(
            conninfo("host=db.example.com port=5433 user=ops dbname=app sslmode=require"),
            pairs(&[
                ("dbname", "app"),
                ("host", "db.example.com"),
                ("port", "5433"),
                ("sslmode", "require"),
                ("user", "ops"),
            ])
        );
        assert_eq!(
            conninfo("  password = 'it s'\tuser=x "),
            pairs(&[("password", "it s"), ("user", "x")])
        );
        assert!(parse_conninfo("password='it''s'").is_err(), "as libpq");
        assert_eq!(
            conninfo(r"password='a b\'c\\d' user=x"),
            pairs(&[("password", r"a b'c\d"), ("user", "x")])
        );
        assert_eq!(conninfo("dbname=''"), pairs(&[("dbname", "")]));
        assert_eq!(conninfo(r"dbname=a\ b"), pairs(&[("dbname", "a b")]));
        assert_eq!(conninfo("dbname=a dbname=b"), pairs(&[("dbname", "b")]));
        assert_eq!(conninfo(""), pairs(&[]));
    }

    #[test]
    fn conninfo_mistakes_name_the_key_and_never_a_value() {
        let error = |text: &str| parse_conninfo(text).unwrap_err();
        let unknown = error("host=h pasword=hunter2");
        assert!(
            unknown.starts_with("unknown connection parameter \"pasword\""),
            "{unknown}"
        );
        assert!(!unknown.contains("hunter2"));
        assert!(error("host=h service=x").contains("not supported by pglock"));
        assert!(error("host").contains("missing \"=\" after \"host\""));
        let open = error("password='hunter2 user=x");
        assert!(open.contains("no closing quote"), "{open}");
        assert!(!open.contains("hunter2"));
        assert!(error("=x").contains("without a key"));
    }

    #[test]
    fn urls_give_the_same_parameters() {
        let params = parse("postgresql://u%40x:p%3Ass@[::1]:6000/my%20db?sslmode=verify-full&application_name=a+b&ssl-root-cert=/r").unwrap();
        assert_eq!(
            params.into_iter().collect::<Vec<_>>(),
            pairs(&[
                ("application_name", "a+b"),
                ("dbname", "my db"),
                ("host", "::1"),
                ("password", "p:ss"),
                ("port", "6000"),
                ("sslmode", "verify-full"),
                ("sslrootcert", "/r"),
                ("user", "u@x"),
            ])
        );
        assert_eq!(
            parse("app").unwrap().into_iter().collect::<Vec<_>>(),
            pairs(&[("dbname", "app")]),
            "a bare word is a database name, as for psql -d"
        );
    }

    #[test]
    fn bad_urls_show_only_their_scheme() {
        let error = parse("mysql://root:hunter2@h/db").unwrap_err();
        assert!(error.starts_with("bad database URL (mysql://…)"), "{error}");
        assert!(!error.contains("hunter2"));
        let error = parse("postgres://u:hunter2@h:99999/db").unwrap_err();
        assert!(error.contains("invalid port"), "{error}");
        assert!(!error.contains("hunter2"));
        let error = parse("postgres://u:hunter2@h/db?target_session_attrs=any").unwrap_err();
        assert!(error.contains("not supported"), "{error}");
        assert!(!error.contains("hunter2"));
    }

    #[test]
    fn secrets_are_scrubbed_from_messages() {
        keep_secret("s3cr:et");
        assert_eq!(scrub("a s3cr:et b s3cr%3Aet"), "a *** b ***");
        keep_secret("ab");
        assert_eq!(scrub("ab"), "ab", "too short to be worth scrubbing");
    }

    #[test]
    fn password_file_lines() {
        assert_eq!(pgpass_password("h:5432:db:u:pw").as_deref(), Some("pw"));
        assert_eq!(
            pgpass_password(r"h\:x:*:*:u:p\:w\\d:e").as_deref(),
            Some(r"p:w\d:e")
        );
        assert_eq!(pgpass_password("# h:5432:db:u:pw"), None);
        assert_eq!(pgpass_password("h:5432:db"), None);
    }

    #[test]
    fn timeouts_are_libpqs() {
        assert_eq!(connect_timeout(None), Ok(Some(DEFAULT_CONNECT_TIMEOUT)));
        assert_eq!(connect_timeout(Some("0")), Ok(None));
        assert_eq!(connect_timeout(Some("-3")), Ok(None));
        assert_eq!(connect_timeout(Some("1")), Ok(Some(Duration::from_secs(2))));
        assert_eq!(connect_timeout(Some("7")), Ok(Some(Duration::from_secs(7))));
        assert!(connect_timeout(Some("soon")).is_err());
    }

    #[test]
    fn sslmodes_as_libpq_reads_them() {
        let tls = |list: &[(&'static str, &str)]| {
            let params: Params = list.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            Tls::new(&params)
        };
        let root = std::env::temp_dir().join(format!("pglock-root-{}.crt", std::process::id()));
        std::fs::write(&root, "").unwrap();
        let root = root.to_str().unwrap();
        let mode = |list: &[(&'static str, &str)]| mode_name(tls(list).unwrap().mode);
        assert_eq!(mode(&[("sslmode", "require")]), "require");
        assert_eq!(
            mode(&[("sslmode", "require"), ("sslrootcert", root)]),
            "verify-ca"
        );
        assert_eq!(mode(&[("sslmode", "allow")]), "prefer");
        assert_eq!(mode(&[("sslrootcert", "system")]), "verify-full");
        assert!(
            tls(&[("sslmode", "require"), ("sslrootcert", "system")])
                .unwrap_err()
                .contains("needs sslmode=verify-full")
        );
        assert!(
            tls(&[("sslmode", "always")])
                .unwrap_err()
                .contains("bad sslmode")
        );
        assert!(
            tls(&[("sslrootcert", "/no/such/file")])
                .unwrap_err()
                .starts_with("cannot read sslrootcert /no/such/file")
        );
        assert!(
            tls(&[("sslcert", root)])
                .unwrap_err()
                .contains("go together")
        );
    }

    #[test]
    fn targets_are_described_without_passwords() {
        let options = PgConnectOptions::new_without_pgpass()
            .host("db.example.com")
            .port(5433)
            .username("ops")
            .password("hunter2")
            .database("app")
            .ssl_mode(PgSslMode::Require);
        assert_eq!(
            describe(&options),
            "postgres://ops@db.example.com:5433/app?sslmode=require"
        );
        // No sslmode for a socket: libpq ignores it there.
        let socket = options.socket("/run/postgresql");
        assert_eq!(
            describe(&socket),
            "postgres://ops@:5433/app?host=/run/postgresql"
        );
    }

    proptest! {
        #[test]
        fn conninfo_never_panics_nor_shows_a_value(
            key in "[a-z_]{1,12}",
            value in "[A-Za-z0-9]{6,12}",
            noise in "\\PC{0,30}",
        ) {
            let text = format!("{key}={value} {noise}");
            if let Err(error) = parse_conninfo(&text) {
                prop_assert!(!error.contains(&value), "{}", error);
                prop_assert!(!error.contains('\n'));
            }
        }

        #[test]
        fn quoted_values_round_trip(value in "\\PC{0,20}") {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            let parsed = parse_conninfo(&format!("password='{quoted}' user=x")).unwrap();
            prop_assert_eq!(parsed.get("password"), Some(&value));
            prop_assert_eq!(parsed.get("user").map(String::as_str), Some("x"));
        }
    }
}
