//! The settings as inspection queries: every filter goes through the library's builders, so
//! every value is bound, never written into SQL.

use std::collections::HashMap;

use pglock::{AdvisoryKey, BlockedLockQuery, LockId, LockQuery};

use crate::config::Settings;
use crate::filters::Filter;

/// Apply the filters both kinds of query share. `pids`: replaces the settings' pids.
macro_rules! shared_filters {
    ($query:expr, $settings:expr, $pids:expr) => {{
        let settings: &Settings = $settings;
        let mut query = $query;
        let pids: Option<Vec<i32>> = $pids;
        let user_pids = user_pids(settings);
        if let Some(pids) = pids.or(user_pids) {
            query = query.pids(pids);
        }
        if !settings.on.is_empty() {
            query = query.on(settings.on.clone());
        }
        let ids = advisory_ids(settings);
        if !ids.is_empty() {
            query = query.advisory(ids);
        }
        for filter in &settings.filters {
            query = match filter {
                Filter::Granted(granted) => query.granted_filter(*granted),
                Filter::Modes(modes) => modes.iter().fold(query, |q, &mode| q.mode(mode)),
                Filter::On(tables) => query.on(tables.clone()),
                Filter::Field(key, value) => query.filter(&key.to_string(), value.clone()),
                Filter::Pids(_) | Filter::Advisory(_) | Filter::AdvisoryKey(_) => query,
            };
        }
        query.all_databases(settings.all_databases)
    }};
}

/// `granted` on both builders. Blocked locks are never granted: `granted=false` changes nothing,
/// and `granted=true` is refused with `--blocking` (see `config.rs`).
trait Granted: Sized {
    fn granted_filter(self, granted: bool) -> Self;
}

impl Granted for LockQuery {
    fn granted_filter(self, granted: bool) -> Self {
        self.granted(granted)
    }
}

impl Granted for BlockedLockQuery {
    fn granted_filter(self, _: bool) -> Self {
        self
    }
}

/// The pids the user asked for, positional and `activity_id` filters together; `None` for all.
fn user_pids(settings: &Settings) -> Option<Vec<i32>> {
    let mut pids = settings.pids.clone();
    let mut any = !pids.is_empty();
    for filter in &settings.filters {
        if let Filter::Pids(more) = filter {
            pids.extend(more);
            any = true;
        }
    }
    any.then_some(pids)
}

/// The advisory locks asked for, by name or key.
fn advisory_ids(settings: &Settings) -> Vec<LockId> {
    let mut ids: Vec<LockId> = settings.advisory.iter().map(LockId::from).collect();
    ids.extend(settings.advisory_keys.iter().map(|&key| LockId::from(key)));
    for filter in &settings.filters {
        match filter {
            Filter::Advisory(name) => ids.push(LockId::from(name)),
            Filter::AdvisoryKey(key) => ids.push(LockId::from(*key)),
            _ => {}
        }
    }
    ids
}

/// The names advisory keys were asked for by, to show next to the keys.
pub fn advisory_names(settings: &Settings) -> HashMap<AdvisoryKey, String> {
    let from_filters = settings.filters.iter().filter_map(|filter| match filter {
        Filter::Advisory(name) => Some(name),
        _ => None,
    });
    settings
        .advisory
        .iter()
        .chain(from_filters)
        .map(|name| (LockId::from(name).key(), name.clone()))
        .collect()
}

/// The limit of a listing: none when pids were given (as in django-pglock), nor when acting.
fn limit(settings: &Settings, limited: bool) -> Option<usize> {
    if limited && user_pids(settings).is_none() {
        settings.limit
    } else {
        None
    }
}

/// The locks query. `pids`: exactly these backends (to signal what was counted).
pub fn locks(settings: &Settings, pids: Option<Vec<i32>>, limited: bool) -> LockQuery {
    let query = shared_filters!(pglock::locks(), settings, pids)
        .own_transaction_locks(settings.transaction_locks);
    match limit(settings, limited) {
        Some(n) => query.limit(n),
        None => query,
    }
}

/// The blocked-locks query. `blocking`: exactly these blocking backends.
pub fn blocked(settings: &Settings, blocking: Option<Vec<i32>>, limited: bool) -> BlockedLockQuery {
    let mut query = shared_filters!(pglock::blocked_locks(), settings, None);
    if let Some(pids) = blocking {
        query = query.blocking_pids(pids);
    }
    match limit(settings, limited) {
        Some(n) => query.limit(n),
        None => query,
    }
}
