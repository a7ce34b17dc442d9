//! The filters both queries share, and how they are bound to the statements' parameters.

use std::time::Duration;

pub(super) use super::lookup::Bound;
use super::lookup::{Conditions, FilterValue, Lookups};
use crate::table::{IntoTables, ParseTableNameError, TableName};
use crate::{Error, LockId, LockMode};

/// The filters of `sql::ctes` (`$1`..`$13`, then the field lookups). `None`: no filter. A list that is `Some` but empty
/// matches nothing, so that an empty list of pids, say, never means "every backend".
#[derive(Clone, Debug, Default)]
pub(super) struct Filters {
    pids: Option<Vec<i32>>,
    tables: Option<Vec<Result<TableName, ParseTableNameError>>>,
    advisory: Option<Vec<LockId>>,
    granted: Option<bool>,
    modes: Option<Vec<LockMode>>,
    min_wait: Option<Duration>,
    min_duration: Option<Duration>,
    limit: Option<usize>,
    /// Leave out the locks a transaction holds on its own id that nobody waits for.
    hide_own_xact_locks: bool,
    all_databases: bool,
    lookups: Lookups,
}

impl Filters {
    pub(super) fn pids(&mut self, pids: impl IntoIterator<Item = i32>) {
        self.pids.get_or_insert_default().extend(pids);
    }

    pub(super) fn on(&mut self, tables: impl IntoTables) {
        self.tables
            .get_or_insert_default()
            .extend(tables.into_entries());
    }

    pub(super) fn advisory<I>(&mut self, ids: I)
    where
        I: IntoIterator,
        I::Item: Into<LockId>,
    {
        self.advisory
            .get_or_insert_default()
            .extend(ids.into_iter().map(Into::into));
    }

    pub(super) fn granted(&mut self, granted: bool) {
        self.granted = Some(granted);
    }

    pub(super) fn mode(&mut self, mode: LockMode) {
        self.modes.get_or_insert_default().push(mode);
    }

    pub(super) fn min_wait(&mut self, wait: Duration) {
        self.min_wait = Some(wait);
    }

    pub(super) fn min_duration(&mut self, duration: Duration) {
        self.min_duration = Some(duration);
    }

    pub(super) fn limit(&mut self, limit: usize) {
        self.limit = Some(limit);
    }

    pub(super) fn own_transaction_locks(&mut self, shown: bool) {
        self.hide_own_xact_locks = !shown;
    }

    pub(super) fn all_databases(&mut self, all: bool) {
        self.all_databases = all;
    }

    pub(super) fn filter(&mut self, key: &str, value: FilterValue) {
        self.lookups.push(key, value);
    }

    /// The field lookups' conditions, their parameters numbered from `first`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a bad key or value (see `Lookups::conditions`).
    pub(super) fn conditions(&self, first: usize, blocked: bool) -> Result<Conditions, Error> {
        self.lookups.conditions(first, blocked)
    }

    /// Bind the field lookups' values, after every other parameter.
    pub(super) fn bind_lookups<'q>(&self, query: Bound<'q>) -> Bound<'q> {
        self.lookups.bind(query)
    }

    /// Bind `$1`..`$13` in order.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a table name that does not parse, or a minimum wait on a
    /// server without `pg_locks.waitstart` (before Postgres 14), which cannot tell how long a
    /// lock has been waited for.
    pub(super) fn bind<'q>(&self, query: Bound<'q>, waitstart: bool) -> Result<Bound<'q>, Error> {
        if self.min_wait.is_some() && !waitstart {
            return Err(Error::InvalidArgument(
                "a minimum wait needs Postgres 14 or later, which records when a wait began \
                 (pg_locks.waitstart)"
                    .into(),
            ));
        }
        let (schemas, names) = match &self.tables {
            None => (None, None),
            Some(tables) => {
                let mut schemas = Vec::with_capacity(tables.len());
                let mut names = Vec::with_capacity(tables.len());
                for table in tables {
                    // Names built with `TableName::new` are checked here, as `lock_table`
                    // checks them: a NUL would otherwise reach the server as an encoding error.
                    let table = table
                        .clone()
                        .and_then(TableName::checked)
                        .map_err(|error| Error::InvalidArgument(error.to_string()))?;
                    schemas.push(table.schema().map(str::to_owned));
                    names.push(table.name().to_owned());
                }
                (Some(schemas), Some(names))
            }
        };
        let advisory = self.advisory.as_ref().map(|ids| {
            let mut classids = Vec::with_capacity(ids.len());
            let mut objids = Vec::with_capacity(ids.len());
            let mut objsubids = Vec::with_capacity(ids.len());
            for id in ids {
                let key = id.key();
                let (classid, objid) = key.to_pg_locks_id();
                classids.push(i64::from(classid));
                objids.push(i64::from(objid));
                objsubids.push(key.pg_locks_objsubid());
            }
            (classids, objids, objsubids)
        });
        let (classids, objids, objsubids) = match advisory {
            Some((c, o, s)) => (Some(c), Some(o), Some(s)),
            None => (None, None, None),
        };
        let modes = self.modes.as_ref().map(|modes| {
            modes
                .iter()
                .map(|mode| mode.pg_locks_name())
                .collect::<Vec<_>>()
        });
        Ok(query
            .bind(self.pids.clone())
            .bind(schemas)
            .bind(names)
            .bind(classids)
            .bind(objids)
            .bind(objsubids)
            .bind(self.granted)
            .bind(modes)
            .bind(seconds(self.min_wait))
            .bind(seconds(self.min_duration))
            .bind(self.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
            .bind(self.hide_own_xact_locks)
            .bind(self.all_databases))
    }
}

/// A duration as the seconds `sql.rs` compares with (float8: any duration fits).
pub(super) fn seconds(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| d.as_secs_f64())
}
