//! `pglock`: list Postgres locks with what their backends are doing, find who blocks whom, and
//! end them. The port of django-pglock's `manage.py pglock`; see `pglock --help`.

mod args;
mod attributes;
mod config;
mod duration;
mod filters;
mod kill;
mod live;
mod query;
mod render;
mod tree;

use std::io::Write as _;
use std::process::ExitCode;
use std::str::FromStr as _;
use std::time::{Duration, SystemTime};

use clap::Parser as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use crate::attributes::{Row, Value};
use crate::config::Settings;
use crate::render::Style;

/// How long connecting may take before the command gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// What ends the command early.
#[derive(Debug)]
pub enum Failure {
    /// An error: printed as one line on stderr, exit status 1.
    Error(String),
    /// Whoever read the output left (`pglock | head`): nothing more to say, status 0.
    ReaderGone,
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Error(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Error(message.to_owned())
    }
}

impl From<pglock::Error> for Failure {
    fn from(error: pglock::Error) -> Self {
        Failure::Error(error.to_string())
    }
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Error(error.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(error: std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::BrokenPipe => Failure::ReaderGone,
            _ => Failure::Error(format!("cannot write the output: {error}")),
        }
    }
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    let top = cli.top();
    let options = cli.into_options();
    let outcome = config::load(options.config_file.as_deref())
        .and_then(|file| config::resolve(options, file, std::env::var("DATABASE_URL").ok()))
        .and_then(|settings| Ok((live::interval(top.as_deref(), &settings)?, settings)))
        .map_err(Failure::Error)
        .and_then(|(top, settings)| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|error| Failure::Error(format!("cannot start the runtime: {error}")))?
                .block_on(run(&settings, top))
        });
    match outcome {
        Ok(code) => code,
        Err(Failure::ReaderGone) => ExitCode::SUCCESS,
        Err(Failure::Error(message)) => {
            eprintln!("pglock: {}", message.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings, top: Option<Duration>) -> Result<ExitCode, Failure> {
    let mut conn = connect(&settings.database_url).await?;
    check_pids(&mut conn, &settings.pids).await?;
    if let Some(interval) = top {
        return live::run(conn, settings, interval).await;
    }
    if let Some(signal) = settings.signal {
        return kill::run(&mut conn, settings, signal).await;
    }
    let style = Style::for_stdout();
    let Some(every) = settings.watch else {
        let frame = frame(&mut conn, settings, style).await?;
        write_out(&frame)?;
        return Ok(ExitCode::SUCCESS);
    };
    loop {
        let frame = frame(&mut conn, settings, style).await?;
        let mut screen = String::new();
        if !settings.json {
            if style.terminal {
                screen.push_str("\x1b[H\x1b[2J");
            }
            let header = format!(
                "Every {}s: pglock at {}",
                every.as_secs_f64(),
                attributes::iso_time(SystemTime::now())
            );
            screen.push_str(&style.bold(&style.cut(&header)));
            screen.push_str("\n\n");
        }
        screen.push_str(&frame);
        write_out(&screen)?;
        tokio::time::sleep(every).await;
    }
}

/// Write to stdout and flush (a watched frame must show at once).
fn write_out(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Connect, naming the session `pglock` in `pg_stat_activity`.
async fn connect(url: &str) -> Result<PgConnection, Failure> {
    let shown = redact(url);
    // sqlx reads any scheme as Postgres; a MySQL URL would fail later, and less clearly.
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("postgres" | "postgresql")) {
        return Err(format!(
            "bad database URL {shown}: expected postgres://[user[:password]@]host[:port]/database"
        )
        .into());
    }
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| format!("bad database URL {shown}: {error}"))?
        .application_name("pglock");
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(format!("cannot connect to {shown}: {error}").into()),
        Err(_) => Err(format!(
            "cannot connect to {shown}: no answer within {}s",
            CONNECT_TIMEOUT.as_secs()
        )
        .into()),
    }
}

/// `url` without its password (in the user info, or a `password` parameter).
fn redact(url: &str) -> String {
    let url = match url.split_once('?') {
        Some((base, params)) => {
            let params: Vec<String> = params
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => param.to_owned(),
                })
                .collect();
            format!("{base}?{}", params.join("&"))
        }
        None => url.to_owned(),
    };
    let url = url.as_str();
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Fail on a pid no backend has (0 stands for prepared transactions and is allowed).
async fn check_pids(conn: &mut PgConnection, pids: &[i32]) -> Result<(), Failure> {
    if pids.is_empty() {
        return Ok(());
    }
    let missing: Vec<i32> = sqlx::query_scalar(
        "SELECT p FROM unnest($1::int4[]) AS p \
         WHERE p <> 0 AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p) \
         ORDER BY p",
    )
    .bind(pids)
    .fetch_all(conn)
    .await?;
    match missing.as_slice() {
        [] => Ok(()),
        [pid] => Err(format!("no backend has pid {pid}").into()),
        pids => {
            let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
            Err(format!("no backends have pids {}", pids.join(", ")).into())
        }
    }
}

/// One listing (or tree), as text or JSON.
async fn frame(
    conn: &mut PgConnection,
    settings: &Settings,
    style: Style,
) -> Result<String, Failure> {
    let names = query::advisory_names(settings);
    if settings.tree {
        // Every pair, so that each tree is whole: the pids choose trees, not pairs.
        let mut all = settings.clone();
        let mut only = std::mem::take(&mut all.pids);
        all.filters.retain(|filter| match filter {
            filters::Filter::Pids(pids) => {
                only.extend(pids);
                false
            }
            _ => true,
        });
        let pairs = query::blocked(&all, None, false).fetch(&mut *conn).await?;
        let forest = tree::Forest::new(pairs, &only);
        return Ok(if settings.json {
            format!("{}\n", json_text(&forest.json(&names), style))
        } else {
            forest.text(&names, style)
        });
    }
    // Listings are cut to the limit (query.rs drops it when pids were given).
    let limited = true;
    let (rows, waiting): (Vec<Vec<Value>>, Vec<bool>) = if settings.blocking {
        let pairs = query::blocked(settings, None, limited)
            .fetch(&mut *conn)
            .await?;
        pairs
            .iter()
            .map(|pair| (values(settings, &Row::of_blocked(pair), &names), true))
            .unzip()
    } else {
        let locks = query::locks(settings, None, limited)
            .fetch(&mut *conn)
            .await?;
        locks
            .iter()
            .map(|lock| (values(settings, &Row::of_lock(lock), &names), !lock.granted))
            .unzip()
    };
    Ok(if settings.json {
        format!(
            "{}\n",
            json_text(&render::json(&settings.attributes, &rows), style)
        )
    } else if rows.is_empty() {
        if settings.blocking {
            "No blocked locks.\n".to_owned()
        } else {
            "No locks.\n".to_owned()
        }
    } else if settings.expanded {
        render::expanded(&settings.attributes, &rows, style)
    } else {
        render::table(&settings.attributes, &rows, &waiting, style)
    })
}

fn values(
    settings: &Settings,
    row: &Row<'_>,
    names: &std::collections::HashMap<pglock::AdvisoryKey, String>,
) -> Vec<Value> {
    settings
        .attributes
        .iter()
        .map(|attribute| row.value(attribute, names))
        .collect()
}

/// JSON pretty on a terminal, one line otherwise (one document per line under `--watch`).
fn json_text(value: &serde_json::Value, style: Style) -> String {
    if style.terminal {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://u:secret@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?sslmode=a&password=x"),
            "postgres://h/db?sslmode=a&password=***"
        );
        assert_eq!(redact("not a url"), "not a url");
    }
}
