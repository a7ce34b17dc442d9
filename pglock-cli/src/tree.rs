//! The blocking tree: who blocks whom, root blockers (blocking, not waiting) first, each with
//! how many sessions it holds up, directly or through others.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pglock_cli::top::{Edge, TreeRow, tree_rows};

use pglock::{Activity, AdvisoryKey, BlockedPgLock, PgLock};
use sqlx::PgConnection;

use crate::config::Settings;
use crate::render::{Style, one_line};
use crate::{attributes, filters, query};

/// The forest the settings ask for: every (waiting lock, blocker) pair the filters keep, so
/// that each tree is whole, and of those trees the ones the pids (positional or
/// `activity_id` filters) are in.
///
/// # Errors
/// As [`pglock::BlockedLockQuery::fetch`].
pub async fn fetch(conn: &mut PgConnection, settings: &Settings) -> Result<Forest, pglock::Error> {
    let mut all = settings.clone();
    let mut only = std::mem::take(&mut all.pids);
    all.filters.retain(|filter| match filter {
        filters::Filter::Pids(pids) => {
            only.extend(pids);
            false
        }
        _ => true,
    });
    let pairs = query::blocked(&all, None, false).fetch(conn).await?;
    Ok(Forest::new(pairs, &only))
}

/// A backend in the tree.
#[derive(Default)]
struct Node {
    activity: Option<Activity>,
    /// The lock it waits for, if it waits.
    waits_for: Option<PgLock>,
    /// The backends waiting on it, sorted.
    blocked: BTreeSet<i32>,
}

/// The forest of blocking relations among the pairs listed, drawn as `pglock top` draws it:
/// each session once, under one of its blockers (see [`tree_rows`]). Blocking is a graph:
/// sessions queued on one lock are each blocked by the holder and by everyone queued before
/// them, and drawing every path would repeat a queue of n waiters about 2^n times.
pub struct Forest {
    nodes: BTreeMap<i32, Node>,
    /// The trees kept, in drawing order: each root (most sessions blocked first), then what it
    /// blocks, depth first.
    rows: Vec<TreeRow>,
}

impl Forest {
    /// Build from (lock waited for, blocking backend) pairs. `only`: keep the trees that
    /// contain one of these pids (all trees when empty).
    pub fn new(pairs: Vec<BlockedPgLock>, only: &[i32]) -> Forest {
        let mut nodes: BTreeMap<i32, Node> = BTreeMap::new();
        let mut edges = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let waiter = pair.lock.pid;
            edges.push(Edge {
                waiter,
                blocker: pair.blocking_pid,
                // Described from the node when drawn.
                waits_for: String::new(),
                waited: pair.lock.wait_duration,
            });
            let blocker = nodes.entry(pair.blocking_pid).or_default();
            blocker.blocked.insert(waiter);
            if blocker.activity.is_none() {
                blocker.activity = pair.blocking;
            }
            let node = nodes.entry(waiter).or_default();
            if node.activity.is_none() {
                node.activity = pair.lock.activity.clone();
            }
            node.waits_for = Some(pair.lock);
        }
        let mut rows = tree_rows(edges);
        if !only.is_empty() {
            // Keep a tree when one of the pids is in it: anywhere its root holds up, drawn
            // under it or under another root it also waits behind.
            let mut kept = Vec::with_capacity(rows.len());
            let mut keep = false;
            for row in rows {
                if row.depth == 0 {
                    let mut members = BTreeSet::new();
                    reach(&nodes, row.pid, &mut members);
                    keep = only.iter().any(|pid| members.contains(pid));
                }
                if keep {
                    kept.push(row);
                }
            }
            rows = kept;
        }
        Forest { nodes, rows }
    }

    /// The roots of the trees kept, in drawing order.
    fn roots(&self) -> impl Iterator<Item = i32> + '_ {
        self.rows
            .iter()
            .filter(|row| row.depth == 0)
            .map(|row| row.pid)
    }

    /// The root blockers of the trees kept: sessions that block others and wait for nothing,
    /// with what they are doing, most sessions blocked first. Never a prepared transaction
    /// (pid 0), nor a backend the listing could not see (another database's), which cannot be
    /// signalled; nor the stand-in root of a deadlock's cycle, which waits.
    pub fn root_blockers(&self) -> Vec<(i32, &Activity)> {
        self.roots()
            .filter_map(|pid| {
                let node = &self.nodes[&pid];
                let activity = node.activity.as_ref()?;
                (pid != 0 && node.waits_for.is_none() && !node.blocked.is_empty())
                    .then_some((pid, activity))
            })
            .collect()
    }

    /// How many distinct sessions `pid` holds up, directly or not.
    pub fn blocks(&self, pid: i32) -> usize {
        let mut seen = BTreeSet::new();
        reach(&self.nodes, pid, &mut seen);
        seen.len() - 1
    }

    /// As text: one line per backend, the blocked ones indented under their blockers.
    pub fn text(&self, names: &HashMap<AdvisoryKey, String>, style: Style) -> String {
        if self.rows.is_empty() {
            return "No blocked sessions.\n".to_owned();
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = format!("{}{}", row.prefix, self.describe(row.pid, names));
            if row.cycle {
                line.push_str(" (deadlock: already above)");
            }
            let line = style.cut(&line);
            if row.depth == 0 {
                out.push_str(&style.alert(&line));
            } else {
                out.push_str(&line);
            }
            out.push('\n');
        }
        out
    }

    /// `4242 blocks 2 · app@db · waits 0:00:05 for ACCESS_SHARE on public.t · ACTIVE 0:00:05 ·
    /// query` (the application, when it set one, before the user).
    fn describe(&self, pid: i32, names: &HashMap<AdvisoryKey, String>) -> String {
        let node = &self.nodes[&pid];
        let mut parts = vec![match self.blocks(pid) {
            0 => pid.to_string(),
            n => format!("{pid} blocks {n}"),
        }];
        if let Some(activity) = &node.activity {
            let who = format!(
                "{}@{}",
                activity.user.as_deref().unwrap_or("?"),
                activity.database.as_deref().unwrap_or("?")
            );
            parts.push(match activity.application_name.as_str() {
                "" => who,
                application => format!("{application} {who}"),
            });
        }
        if let Some(lock) = &node.waits_for {
            let waited = lock
                .wait_duration
                .map(|d| format!(" {}", crate::duration::format(d)))
                .unwrap_or_default();
            parts.push(format!(
                "waits{waited} for {} on {}",
                attributes::mode(lock),
                attributes::target(lock, names)
            ));
        }
        match &node.activity {
            Some(activity) => {
                let state = activity.state.as_deref().unwrap_or("None");
                let duration = activity
                    .duration
                    .map(|d| format!(" {}", crate::duration::format(d)))
                    .unwrap_or_default();
                parts.push(format!("{state}{duration}"));
                parts.push(one_line(&activity.query));
            }
            None if pid == 0 => parts.push("prepared transaction".to_owned()),
            None => parts.push("not in this database".to_owned()),
        }
        parts.join(" · ")
    }

    /// As JSON: the trees as nested objects, each session once (as in the text).
    pub fn json(&self, names: &HashMap<AdvisoryKey, String>) -> serde_json::Value {
        let mut trees = Vec::new();
        let mut next = 0;
        while next < self.rows.len() {
            trees.push(self.json_node(names, &mut next));
        }
        trees.into()
    }

    /// The row at `*next` and the rows under it, leaving `*next` past them. A row that comes
    /// back round a deadlock's cycle is left out: its session is above it already.
    fn json_node(
        &self,
        names: &HashMap<AdvisoryKey, String>,
        next: &mut usize,
    ) -> serde_json::Value {
        let row = &self.rows[*next];
        *next += 1;
        let mut blocked: Vec<serde_json::Value> = Vec::new();
        while let Some(child) = self.rows.get(*next).filter(|child| child.depth > row.depth) {
            if child.cycle {
                *next += 1;
            } else {
                blocked.push(self.json_node(names, next));
            }
        }
        let pid = row.pid;
        let node = &self.nodes[&pid];
        let activity = node.activity.as_ref();
        let field = |name: &str| {
            activity.map_or(serde_json::Value::Null, |a| {
                attributes::activity_value(a, name).to_json()
            })
        };
        let waits_for = node.waits_for.as_ref().map(|lock| {
            serde_json::json!({
                "mode": attributes::mode(lock),
                "type": lock.lock_type,
                "target": attributes::target(lock, names),
                "wait_duration": lock.wait_duration.map(|d| d.as_secs_f64()),
            })
        });
        serde_json::json!({
            "pid": pid,
            "database": field("database"),
            "application_name": field("application_name"),
            "user": field("user"),
            "blocks": self.blocks(pid),
            "state": field("state"),
            "duration": field("duration"),
            "context": field("context"),
            "query": field("query"),
            "waits_for": waits_for,
            "blocked": blocked,
        })
    }
}

/// Add `pid` and everything it blocks, directly or not, to `seen`.
fn reach(nodes: &BTreeMap<i32, Node>, pid: i32, seen: &mut BTreeSet<i32>) {
    let mut stack = vec![pid];
    while let Some(pid) = stack.pop() {
        if seen.insert(pid)
            && let Some(node) = nodes.get(&pid)
        {
            stack.extend(node.blocked.iter().copied());
        }
    }
}
