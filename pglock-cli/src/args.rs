//! The command line, with django-pglock's option names.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub const EXAMPLES: &str = "\
Examples:
  pglock                                  who holds or waits for what, waits first
  pglock -d postgres://localhost/app -e   one block per lock, with full queries
  pglock 4242 4243                        the locks of two backends
  pglock -o orders -f granted=false       who waits for a lock on `orders`
  pglock -f activity__query__icontains=orders -f activity__state=IDLE_IN_TRANSACTION
  pglock --blocking                       each wait with the backend blocking it
  pglock tree                             the blocking tree, root blockers first
  pglock tree --terminate                 end the root blockers only (lists them, asks first)
  pglock --all-databases tree             the blocking trees of every database
  pglock top                              live tree and locks; select, terminate, cancel
  pglock --advisory nightly-report        who holds the advisory lock \"nightly-report\"
  pglock --blocking --terminate           end every blocking session, also those that wait
                                          themselves (django-pglock's meaning; asks first)
  pglock --roots --terminate -y           end the root blockers without asking
  pglock -f 'activity__duration__gt=5 minutes' --cancel -y
  pglock -c kill-long-blocking            run a config from ./pglock.toml
  pglock --json | jq '.[].activity_id'    for scripts
  pglock --watch 2                        refresh every 2 seconds
  pglock -d 'host=db.example.com user=ops sslmode=require'   a libpq conninfo string
  PGHOST=db.example.com PGUSER=ops pglock                    as psql: PG* and ~/.pgpass
  pglock completions bash > ~/.local/share/bash-completion/completions/pglock

Columns (default): pid, database, application, user, state, lock (holds or waits, and the
mode), target, duration, query (last, cut with … to fit the terminal). Each transaction's
locks on its own ids (VIRTUALXID, TRANSACTIONID) are hidden unless someone waits for them;
--transaction-locks shows them.

Filters (-f key=value, repeatable, all must match; lists are comma-separated):
  KEY is a field, optionally followed by a lookup: FIELD, FIELD__in, FIELD__gt, FIELD__gte,
  FIELD__lt, FIELD__lte, FIELD__contains, FIELD__icontains, FIELD__startswith,
  FIELD__istartswith, FIELD__isnull (true/false). Fields: every attribute below (target as
  shown without a lock's name); with --blocking also blocking_activity_id and
  blocking_activity__FIELD.
  Text compares as shown (activity__state=IDLE_IN_TRANSACTION, activity__wait_event=CLIENT_READ);
  durations read 30, 1.5s, 500ms, 1 minute, 2h 30m; times as Postgres reads them.
  Special: activity_id, activity_id__in (pids: no limit), granted, mode, mode__in (lock modes),
  rel_name, rel_name__in (table or schema.table), advisory (a lock name), advisory_key (N or A,B).
  pglock -f activity__application_name__startswith=web -f activity__user__in=app,batch
  pglock -f wait_duration__gt=30s -f activity__client_addr__isnull=false
  pglock --blocking -f blocking_activity__state=IDLE_IN_TRANSACTION

Attributes (-a, repeatable; replace the default columns):
  activity_id, type, mode, lock, granted, wait_start, wait_duration, rel_kind, rel_name,
  relation, advisory_key, transaction_id, target; activity__FIELD, and with --blocking
  blocking_activity_id and blocking_activity__FIELD, where FIELD is one of: id, database,
  duration, query, context, state, start, xact_start, xact_duration, backend_start,
  state_change, wait_event_type, wait_event, application_name, user, client_addr,
  client_hostname, client_port, backend_type, leader_pid.

Configs (pglock.toml in the working directory, or --config-file):
  limit = 50                                # defaults for every run
  all_databases = true
  attributes = [\"activity_id\", \"mode\", \"target\", \"activity__query\"]
  [configs.kill-long-blocking]              # pglock -c kill-long-blocking
  filters = [\"blocking_activity__duration__gt=1 minute\"]
  blocking = true
  terminate = true
  yes = true

Connecting (as psql): -d, else DATABASE_URL, is a URL (postgres://user@host:port/db?sslmode=
require), a conninfo string (host=... port=... dbname=... user=... sslmode=...) or a database
name; what it leaves out comes from PGHOST, PGPORT, PGUSER, PGDATABASE, PGSSLMODE, PGSSLROOTCERT
and the other PG* variables, a password from PGPASSWORD or ~/.pgpass (PGPASSFILE). TLS: sslmode
disable, allow, prefer (the default), require, verify-ca, verify-full; sslrootcert (a file, or
system), sslcert, sslkey. Passwords are never printed.

Exit status: 0 on success; 1 on an error, an aborted or empty kill; 2 on a usage error.
Colour only on a terminal, never with NO_COLOR set; CLICOLOR_FORCE=1 forces it.";

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

    /// Show what the command does on stderr: where it connects (never the password), the
    /// queries it sends, the sessions it signals. -vv adds pglock's and sqlx's debug events,
    /// -vvv everything. `RUST_LOG` (`target=level,...`), when set, decides instead.
    #[arg(global = true, short = 'v', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the blocking tree: root blockers first, each with the sessions it blocks.
    Tree {
        /// Only the trees these backends are in.
        #[arg(value_name = "PID", allow_negative_numbers = true)]
        pids: Vec<i32>,
    },
    /// Print a shell completion script: `pglock completions bash > <completions dir>/pglock`.
    Completions {
        /// The shell to complete in.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
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

    /// The database to inspect: a URL, a conninfo string or a database name [default:
    /// $DATABASE_URL, else the PG* variables, as psql].
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
    /// --terminate, act on every blocking backend, also those that wait themselves (as
    /// django-pglock does; --roots ends only the root blockers).
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

    /// With --cancel or --terminate: signal only the root blockers, the sessions that block
    /// others and wait for nothing (the default of `pglock tree --terminate`).
    #[arg(global = true, long)]
    pub roots: bool,

    /// Every database of the cluster, not only the one connected to (lists and kills; the
    /// database column is shown).
    #[arg(global = true, long)]
    pub all_databases: bool,

    /// Also list the locks each transaction holds on its own ids (VIRTUALXID, TRANSACTIONID),
    /// which only repeat that it is in a transaction; hidden unless someone waits for them.
    #[arg(global = true, long)]
    pub transaction_locks: bool,

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
            None | Some(Command::Completions { .. } | Command::Top { .. }) => self.options,
        }
    }
}
