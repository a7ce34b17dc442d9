//! `pglock`: list Postgres locks with what their backends are doing, find who blocks whom, and
//! end them. The port of django-pglock's `manage.py pglock`; see `pglock --help`.

mod args;
mod attributes;
mod config;
mod connect;
mod duration;
mod filters;
mod kill;
mod live;
mod query;
mod render;
mod tree;
mod verbose;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;
use std::time::SystemTime;

use clap::{CommandFactory as _, Parser as _};
use sqlx::PgConnection;

use crate::attributes::{Row, Value};
use crate::config::Settings;
use crate::render::Style;

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
    if let Some(args::Command::Completions { shell }) = cli.command {
        let mut command = args::Cli::command();
        clap_complete::generate(shell, &mut command, "pglock", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    verbose::init(cli.verbose);
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
            // Whatever the message came from, no password it could hold is shown.
            let message = connect::scrub(&message);
            eprintln!("pglock: {}", message.replace(['\n', '\r'], " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(settings: &Settings, top: Option<Duration>) -> Result<ExitCode, Failure> {
    let target = connect::resolve(settings.database_url.as_deref())?;
    let mut conn = connect::connect(&target).await?;
    check_pids(&mut conn, &settings.pids).await?;
    if let Some(interval) = top {
        return live::run(conn, settings, interval).await;
    }
    if let Some(signal) = settings.signal {
        return kill::run(&mut conn, settings, signal).await;
    }
    let style = Style {
        colour: colour_on_stdout(),
        ..Style::for_stdout()
    };
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

/// Whether stdout gets colour, as clap decides for `--help` (anstream): never with `NO_COLOR`;
/// always with `CLICOLOR_FORCE`; else not with `CLICOLOR=0`, and only on a terminal whose `TERM`
/// is not `dumb`.
fn colour_on_stdout() -> bool {
    !matches!(
        anstream::AutoStream::choice(&std::io::stdout()),
        anstream::ColorChoice::Never
    )
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
        let forest = tree::fetch(conn, settings).await?;
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
