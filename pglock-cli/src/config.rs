//! `pglock.toml`: named configs (django-pglock's `PGLOCK_CONFIGS`) and defaults
//! (`PGLOCK_ATTRIBUTES`, `PGLOCK_BLOCKING_ATTRIBUTES`, `PGLOCK_LIMIT`), and how they combine
//! with the command line into the [`Settings`] of one run.
//!
//! Precedence, as in django-pglock: the command line, then the named config, then the file's
//! defaults, then the built-in ones. A list given on the command line replaces the config's
//! (django-pglock's rule); a flag can only be turned on from the command line. Unlike
//! django-pglock, the file's contents are never changed by a run, and `limit` is a number.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pglock::{AdvisoryKey, Signal};
use serde::Deserialize;

use crate::args::Options;
use crate::filters::{self, Filter};
use crate::{attributes, duration};

/// The file looked for in the working directory.
pub const FILE_NAME: &str = "pglock.toml";

/// The default limit (django-pglock's `PGLOCK_LIMIT`).
const DEFAULT_LIMIT: usize = 25;

/// A `pglock.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The default limit; 0 for none.
    limit: Option<usize>,
    /// The default columns.
    attributes: Option<Vec<String>>,
    /// The default columns with `--blocking`.
    blocking_attributes: Option<Vec<String>>,
    /// Every database of the cluster by default (`--all-databases`).
    all_databases: Option<bool>,
    /// Named configs, `[configs.<name>]`.
    #[serde(default)]
    configs: BTreeMap<String, Config>,
}

/// One named config: any option, by its long name (`filter` as `filters`, `attribute` as
/// `attributes`, `advisory-key` as `advisory_keys`).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    database_url: Option<String>,
    pids: Option<Vec<i32>>,
    filters: Option<Vec<String>>,
    on: Option<Vec<String>>,
    attributes: Option<Vec<String>>,
    blocking: Option<bool>,
    limit: Option<usize>,
    expanded: Option<bool>,
    yes: Option<bool>,
    cancel: Option<bool>,
    terminate: Option<bool>,
    advisory: Option<Vec<String>>,
    advisory_keys: Option<Vec<String>>,
    tree: Option<bool>,
    json: Option<bool>,
    watch: Option<String>,
    roots: Option<bool>,
    all_databases: Option<bool>,
    transaction_locks: Option<bool>,
}

/// Everything one run does, resolved and checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// A URL, conninfo string or database name; `None`: the `PG*` variables alone.
    pub database_url: Option<String>,
    pub pids: Vec<i32>,
    pub filters: Vec<Filter>,
    pub on: Vec<String>,
    pub attributes: Vec<String>,
    pub blocking: bool,
    /// `None`: no limit.
    pub limit: Option<usize>,
    pub expanded: bool,
    pub yes: bool,
    pub signal: Option<Signal>,
    pub advisory: Vec<String>,
    pub advisory_keys: Vec<AdvisoryKey>,
    pub tree: bool,
    pub json: bool,
    pub watch: Option<Duration>,
    /// Signal only the root blockers (`--roots`, and `tree`'s kill).
    pub roots: bool,
    /// Every database of the cluster (`--all-databases`).
    pub all_databases: bool,
    /// List the locks transactions hold on their own ids (`--transaction-locks`).
    pub transaction_locks: bool,
}

/// Parse the text of a `pglock.toml`; `path` is for messages.
///
/// # Errors
/// One line: the file, the line, and what is wrong (unknown keys included).
pub fn parse_file(text: &str, path: &Path) -> Result<File, String> {
    toml::from_str(text).map_err(|error| {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = error.message().replace('\n', " ");
        match line {
            Some(line) => format!("{}, line {line}: {message}", path.display()),
            None => format!("{}: {message}", path.display()),
        }
    })
}

/// Read the config file: `explicit` (which must exist), else `./pglock.toml` if there is one.
///
/// # Errors
/// A file that cannot be read or parsed.
pub fn load(explicit: Option<&Path>) -> Result<Option<(PathBuf, File)>, String> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None => {
            let path = PathBuf::from(FILE_NAME);
            if !path.exists() {
                return Ok(None);
            }
            path
        }
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(Some((path.clone(), parse_file(&text, &path)?)))
}

/// Combine the command line, the file and the environment's `DATABASE_URL` into settings.
///
/// # Errors
/// An unknown config, a bad filter, attribute, key or duration, or contradicting options, each
/// as one line.
pub fn resolve(
    cli: Options,
    file: Option<(PathBuf, File)>,
    env_database_url: Option<String>,
) -> Result<Settings, String> {
    let (path, file) = match file {
        Some((path, file)) => (Some(path), file),
        None => (None, File::default()),
    };
    let config = match &cli.config {
        None => Config::default(),
        Some(name) => match (&path, file.configs.get(name)) {
            (_, Some(config)) => config.clone(),
            (Some(path), None) => {
                let known: Vec<&str> = file.configs.keys().map(String::as_str).collect();
                return Err(format!(
                    "{name:?} is not a config in {}{}",
                    path.display(),
                    if known.is_empty() {
                        " (it has none)".to_owned()
                    } else {
                        format!(" (configs: {})", known.join(", "))
                    }
                ));
            }
            (None, None) => {
                return Err(format!(
                    "{name:?} is not a config: there is no {FILE_NAME} in the working \
                     directory (name another file with --config-file)"
                ));
            }
        },
    };

    fn list<T>(cli: Vec<T>, config: Option<Vec<T>>) -> Vec<T> {
        if cli.is_empty() {
            config.unwrap_or_default()
        } else {
            cli
        }
    }
    let flag = |cli: bool, config: Option<bool>| cli || config.unwrap_or(false);

    let blocking = flag(cli.blocking, config.blocking);
    let database_url = cli
        .database_url
        .or(config.database_url)
        .or(env_database_url.filter(|url| !url.is_empty()));

    let mut filters = Vec::new();
    for text in list(cli.filters, config.filters) {
        let filter = filters::parse(&text)?;
        if !blocking && filter.needs_blocking() {
            return Err(format!("filter {text:?} needs --blocking"));
        }
        filters.push(filter);
    }
    if blocking && filters.contains(&Filter::Granted(true)) {
        return Err(
            "filter granted=true matches nothing with --blocking, which lists locks waited for"
                .to_owned(),
        );
    }

    let attributes = list(cli.attributes, config.attributes).into_iter();
    let attributes: Vec<String> = match attributes.len() {
        0 => {
            let from_file = if blocking {
                file.blocking_attributes
            } else {
                file.attributes
            };
            from_file.unwrap_or_else(|| {
                let default = if blocking {
                    attributes::DEFAULT_BLOCKING
                } else {
                    attributes::DEFAULT
                };
                default.iter().map(|&name| name.to_owned()).collect()
            })
        }
        _ => attributes.collect(),
    };
    attributes::check(&attributes, blocking)?;

    let limit = cli
        .limit
        .or(config.limit)
        .or(file.limit)
        .unwrap_or(DEFAULT_LIMIT);

    let signal = if cli.cancel {
        Some(Signal::Cancel)
    } else if cli.terminate {
        Some(Signal::Terminate)
    } else {
        match (
            config.cancel.unwrap_or(false),
            config.terminate.unwrap_or(false),
        ) {
            (true, true) => {
                return Err(format!(
                    "config {:?} sets both cancel and terminate: choose one",
                    cli.config.unwrap_or_default()
                ));
            }
            (true, false) => Some(Signal::Cancel),
            (false, true) => Some(Signal::Terminate),
            (false, false) => None,
        }
    };

    let advisory_keys = list(cli.advisory_key, config.advisory_keys)
        .iter()
        .map(|key| {
            filters::advisory_key(key).ok_or_else(|| {
                format!(
                    "bad advisory key {key:?}: expected an integer, or two separated by a comma"
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let watch = match cli.watch.or(config.watch) {
        None => None,
        Some(text) => {
            let every = duration::parse(&text).map_err(|e| format!("--watch: {e}"))?;
            if every.is_zero() {
                return Err("--watch: the interval must be more than 0".to_owned());
            }
            Some(every)
        }
    };
    let tree = flag(cli.tree, config.tree);
    // The tree's kill ends the root blockers: what the tree shows first.
    let roots = flag(cli.roots, config.roots) || (tree && signal.is_some());
    if let Some(signal) = signal {
        let option = match signal {
            Signal::Cancel => "--cancel",
            _ => "--terminate",
        };
        if watch.is_some() {
            return Err(format!("{option} cannot be combined with --watch"));
        }
    } else if roots {
        return Err(
            "--roots chooses whom --cancel or --terminate signals: give one of them".to_owned(),
        );
    }
    if roots && blocking {
        return Err(
            "--roots and --blocking choose differently whom to signal: --roots the root \
             blockers only, --blocking every blocking backend; give one"
                .to_owned(),
        );
    }
    let all_databases =
        cli.all_databases || config.all_databases.or(file.all_databases) == Some(true);
    // Across databases, say whose each row is.
    let mut attributes = attributes;
    if all_databases && !attributes.iter().any(|name| name == "activity__database") {
        let at = usize::from(attributes.first().is_some_and(|name| name == "activity_id"));
        attributes.insert(at, "activity__database".to_owned());
    }

    Ok(Settings {
        database_url,
        pids: list(cli.pids, config.pids),
        filters,
        on: list(cli.on, config.on),
        attributes,
        blocking,
        limit: (limit > 0).then_some(limit),
        expanded: flag(cli.expanded, config.expanded),
        yes: flag(cli.yes, config.yes),
        signal,
        advisory: list(cli.advisory, config.advisory),
        advisory_keys,
        tree,
        json: flag(cli.json, config.json),
        watch,
        roots,
        all_databases,
        transaction_locks: flag(cli.transaction_locks, config.transaction_locks),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use proptest::prelude::*;

    fn options(args: &[&str]) -> Options {
        crate::args::Cli::try_parse_from(std::iter::once("pglock").chain(args.iter().copied()))
            .unwrap()
            .into_options()
    }

    const FILE: &str = r#"
limit = 7
attributes = ["activity_id", "mode"]

[configs.kill-long-blocking]
filters = ["blocking_activity__duration__gt=1 minute"]
yes = true
blocking = true
terminate = true

[configs.bad-pid]
filters = ["activity_id=-1"]
limit = 3
"#;

    fn file() -> Option<(PathBuf, File)> {
        let path = PathBuf::from("pglock.toml");
        Some((path.clone(), parse_file(FILE, &path).unwrap()))
    }

    fn url() -> Option<String> {
        Some("postgres://env/db".to_owned())
    }

    #[test]
    fn command_line_over_config_over_file_over_defaults() {
        let plain = resolve(options(&[]), None, url()).unwrap();
        assert_eq!(plain.limit, Some(25));
        assert_eq!(plain.attributes, attributes::DEFAULT);
        assert_eq!(plain.database_url.as_deref(), Some("postgres://env/db"));

        let from_file = resolve(options(&[]), file(), url()).unwrap();
        assert_eq!((from_file.limit, from_file.attributes.len()), (Some(7), 2));

        let config = resolve(options(&["-c", "bad-pid"]), file(), url()).unwrap();
        assert_eq!(config.limit, Some(3));
        assert_eq!(config.filters, [Filter::Pids(vec![-1])]);

        let overridden = resolve(
            options(&[
                "-c",
                "bad-pid",
                "-l",
                "0",
                "-f",
                "granted=true",
                "-d",
                "postgres://x/y",
            ]),
            file(),
            url(),
        )
        .unwrap();
        assert_eq!(overridden.limit, None);
        assert_eq!(overridden.filters, [Filter::Granted(true)]);
        assert_eq!(overridden.database_url.as_deref(), Some("postgres://x/y"));

        let kill = resolve(options(&["-c", "kill-long-blocking"]), file(), url()).unwrap();
        assert!(kill.blocking && kill.yes);
        assert!(matches!(kill.signal, Some(Signal::Terminate)));
        // The command line's signal wins over the config's.
        let cancel = resolve(
            options(&["-c", "kill-long-blocking", "--cancel"]),
            file(),
            url(),
        )
        .unwrap();
        assert!(matches!(cancel.signal, Some(Signal::Cancel)));
        // Attributes default by mode: the file has none for --blocking.
        assert_eq!(kill.attributes, attributes::DEFAULT_BLOCKING);
    }

    #[test]
    fn the_tree_kills_root_blockers_and_every_database_shows_the_database() {
        let tree = resolve(options(&["tree", "--terminate"]), None, url()).unwrap();
        assert!(tree.roots && tree.tree);
        let plain = resolve(options(&["--terminate"]), None, url()).unwrap();
        assert!(!plain.roots);
        let all = resolve(
            options(&["--all-databases", "-a", "activity_id"]),
            None,
            url(),
        )
        .unwrap();
        assert_eq!(all.attributes, ["activity_id", "activity__database"]);
        let path = PathBuf::from("pglock.toml");
        let file = parse_file("all_databases = true\n", &path).unwrap();
        let from_file = resolve(options(&[]), Some((path, file)), url()).unwrap();
        assert!(from_file.all_databases);
    }

    #[test]
    fn tree_takes_the_same_options_before_and_after_it() {
        let before = options(&["-d", "postgres://a/b", "tree", "12"]);
        let after = options(&["tree", "-d", "postgres://a/b", "12"]);
        for parsed in [before, after] {
            assert!(parsed.tree);
            assert_eq!(parsed.pids, [12]);
            assert_eq!(parsed.database_url.as_deref(), Some("postgres://a/b"));
        }
        assert_eq!(options(&["-1", "5"]).pids, [-1, 5]);
    }

    #[test]
    fn mistakes_are_one_line_errors() {
        let error = |args: &[&str], file: Option<(PathBuf, File)>| {
            let error = resolve(options(args), file, url()).unwrap_err();
            assert!(!error.contains('\n'), "{error}");
            error
        };
        assert_eq!(
            error(&["-c", "nope"], file()),
            "\"nope\" is not a config in pglock.toml (configs: bad-pid, kill-long-blocking)"
        );
        assert!(error(&["-c", "nope"], None).contains("there is no pglock.toml"));
        assert!(error(&["-a", "nope"], None).starts_with("unknown attribute \"nope\""));
        assert!(error(&["-f", "nope"], None).starts_with("malformed filter"));
        assert!(error(&["-f", "blocking_activity_id=1"], None).contains("needs --blocking"));
        assert!(error(&["--watch", "x"], None).contains("bad duration"));
        assert!(error(&["--roots"], None).contains("give one of them"));
        assert!(error(&["--roots", "--blocking", "--terminate"], None).contains("give one"));
        assert!(error(&["--advisory-key", "1,x"], None).contains("bad advisory key"));
        // No URL is no error here: the PG* variables may say where (connect.rs decides).
        assert_eq!(
            resolve(options(&[]), None, None).unwrap().database_url,
            None
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        let path = Path::new("pglock.toml");
        let error = parse_file("limit = 5\n[configs.x]\nfilterz = []\n", path).unwrap_err();
        assert!(
            error.starts_with("pglock.toml, line 3: unknown field `filterz`"),
            "{error}"
        );
        let error = parse_file("limit = \"25\"\n", path).unwrap_err();
        assert!(error.starts_with("pglock.toml, line 1:"), "{error}");
        assert!(!error.contains('\n'));
    }

    proptest! {
        #[test]
        fn any_file_text_parses_or_gives_a_one_line_error(text in "\\PC{0,80}") {
            if let Err(error) = parse_file(&text, Path::new("pglock.toml")) {
                prop_assert!(!error.contains('\n'), "{}", error);
                prop_assert!(error.starts_with("pglock.toml"));
            }
        }

        #[test]
        fn tomlish_text_parses_or_gives_a_one_line_error(
            lines in proptest::collection::vec(
                "(limit|attributes|\\[configs\\.[a-z]{1,3}\\]|filters|yes|watch|pids) ?= ?(\"[a-z =]{0,8}\"|[0-9-]{1,4}|true|\\[\\]|\\[\"[a-z_=]{0,10}\"\\])",
                0..6,
            )
        ) {
            let text = lines.join("\n");
            if let Err(error) = parse_file(&text, Path::new("pglock.toml")) {
                prop_assert!(!error.contains('\n'), "{}", error);
            }
        }
    }
}
