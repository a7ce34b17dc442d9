//! The command line, with django-pglock's option names.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXAMPLES: &str = "\
Examples:
  pglock                                  locks of $DATABASE_URL's database, waits first
  pglock -d postgres://localhost/app -e   one block per lock, with full queries
  pglock 4242 4243                        the locks of two backends
  pglock -o orders -f granted=false       who waits for a lock on `orders`
  pglock --blocking                       each wait with the backend blocking it
  pglock tree                             the blocking tree, root blockers first
  pglock top                              live tree and locks; select, terminate, cancel
  pglock --advisory nightly-report        who holds the advisory lock \"nightly-report\"
  pglock --blocking --terminate           end the blockers (asks first; -y does not)
  pglock -f 'activity__duration__gt=5 minutes' --cancel -y
  pglock -c kill-long-blocking            run a config from ./pglock.toml
  pglock --json | jq '.[].activity_id'    for scripts
  pglock --watch 2                        refresh every 2 seconds

Filters (-f key=value; lists are comma-separated):
  activity_id, activity_id__in, granted, mode, mode__in, rel_name, rel_name__in,
  advisory (a lock name), advisory_key (N or A,B), wait_duration__gt(e),
  activity__duration__gt(e), and with --blocking: blocking_activity_id(__in),
  blocking_activity__duration__gt(e). Durations: 30, 1.5s, 500ms, 1 minute, 2h 30m.

Attributes (-a; default: activity_id, activity__duration, granted, mode, type, target,
activity__context, activity__query):
  activity_id, type, mode, granted, wait_start, wait_duration, rel_kind, rel_name, relation,
  advisory_key, transaction_id, target; activity__FIELD, and with --blocking
  blocking_activity_id and blocking_activity__FIELD, where FIELD is one of: id, duration, query,
  context, state, start, xact_start, xact_duration, backend_start, state_change,
  wait_event_type, wait_event, application_name, user, client_addr, client_hostname,
  client_port, backend_type, leader_pid.

Configs (pglock.toml in the working directory, or --config-file):
  limit = 50                                # defaults for every run
  attributes = [\"activity_id\", \"mode\", \"target\", \"activity__query\"]
  [configs.kill-long-blocking]              # pglock -c kill-long-blocking
  filters = [\"blocking_activity__duration__gt=1 minute\"]
  blocking = true
  terminate = true
  yes = true

Exit status: 0 on success; 1 on an error, an aborted or empty kill; 2 on a usage error.
Colour only on a terminal, never with NO_COLOR set.";

/// List Postgres locks with what their backends are doing, find who blocks whom, and end them.
///
/// The port of django-pglock's `manage.py pglock`, with the same options.
#[derive(Debug, Parser)]
#[command(
    name = "pglock",
    version,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub options: Options,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the blocking tree: root blockers first, each with the sessions it blocks.
    Tree {
        /// Only the trees these backends are in.
        #[arg(value_name = "PID", allow_negative_numbers = true)]
        pids: Vec<i32>,
    },
    /// A live view of the blocking tree and the locks: select sessions, terminate or cancel
    /// them (press ? in it for the keys).
    Top {
        /// Refresh every SECONDS (30, 1.5s, 500ms...).
        #[arg(long, value_name = "SECONDS", default_value = "2")]
        interval: String,
    },
}

/// The options, shared by the listing and `tree`.
#[derive(Debug, Args)]
pub struct Options {
    /// Only the locks of these backends (no limit applies then).
    #[arg(value_name = "PID", allow_negative_numbers = true)]
    pub pids: Vec<i32>,

    /// The database to inspect [default: $DATABASE_URL].
    #[arg(global = true, short = 'd', long, value_name = "URL")]
    pub database_url: Option<String>,

    /// Filter locks: `key=value` (repeatable; see the list below).
    #[arg(global = true, short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,

    /// Only locks on this table, `table` or `schema.table` (repeatable).
    #[arg(global = true, short = 'o', long = "on", value_name = "TABLE")]
    pub on: Vec<String>,

    /// A column to show, e.g. activity__query (repeatable; replaces the default columns).
    #[arg(global = true, short = 'a', long = "attribute", value_name = "NAME")]
    pub attributes: Vec<String>,

    /// List the locks waited for, each with a backend blocking it; with --cancel or
    /// --terminate, act on the blocking backends.
    #[arg(global = true, long)]
    pub blocking: bool,

    /// Show at most this many locks; 0 for all [default: 25].
    #[arg(global = true, short = 'l', long, value_name = "N")]
    pub limit: Option<usize>,

    /// One block per lock, with full queries.
    #[arg(global = true, short = 'e', long)]
    pub expanded: bool,

    /// Use this named config from pglock.toml.
    #[arg(global = true, short = 'c', long, value_name = "NAME")]
    pub config: Option<String>,

    /// Read configs from this file instead of ./pglock.toml.
    #[arg(global = true, long, value_name = "PATH")]
    pub config_file: Option<PathBuf>,

    /// Do not ask before cancelling or terminating.
    #[arg(global = true, short = 'y', long)]
    pub yes: bool,

    /// Cancel the current queries of the backends found (pg_cancel_backend).
    #[arg(global = true, long, conflicts_with = "terminate")]
    pub cancel: bool,

    /// End the sessions of the backends found (pg_terminate_backend).
    #[arg(global = true, long)]
    pub terminate: bool,

    /// Only this advisory lock, by the name it was taken with (hashed as pglock and
    /// django-pglock hash names; repeatable).
    #[arg(global = true, long, value_name = "NAME")]
    pub advisory: Vec<String>,

    /// Only this advisory lock, by its raw key: N, or A,B for a pair (repeatable).
    #[arg(global = true, long, value_name = "KEY", allow_hyphen_values = true)]
    pub advisory_key: Vec<String>,

    /// Show the blocking tree (as `pglock tree`).
    #[arg(global = true, long)]
    pub tree: bool,

    /// Print JSON instead of text.
    #[arg(global = true, long)]
    pub json: bool,

    /// Refresh every SECONDS until interrupted.
    #[arg(global = true, long, value_name = "SECONDS", conflicts_with_all = ["cancel", "terminate"])]
    pub watch: Option<String>,
}

impl Cli {
    /// `pglock top`'s refresh interval, as typed, when that is the command.
    pub fn top(&self) -> Option<String> {
        match &self.command {
            Some(Command::Top { interval }) => Some(interval.clone()),
            _ => None,
        }
    }

    /// The options, with `tree` turned into `--tree`.
    pub fn into_options(self) -> Options {
        match self.command {
            Some(Command::Tree { pids }) => {
                let mut options = self.options;
                options.pids.extend(pids);
                options.tree = true;
                options
            }
            Some(Command::Top { .. }) | None => self.options,
        }
    }
}
