//! The blocking tree: who blocks whom, root blockers (blocking, not waiting) first, each with
//! how many sessions it holds up, directly or through others.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// The forest of blocking relations among the pairs listed.
pub struct Forest {
    nodes: BTreeMap<i32, Node>,
    /// The root of each tree, most sessions blocked first.
    roots: Vec<i32>,
}

impl Forest {
    /// Build from (lock waited for, blocking backend) pairs. `only`: keep the trees that
    /// contain one of these pids (all trees when empty).
    pub fn new(pairs: Vec<BlockedPgLock>, only: &[i32]) -> Forest {
        let mut nodes: BTreeMap<i32, Node> = BTreeMap::new();
        for pair in pairs {
            let waiter = pair.lock.pid;
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
        // Roots: blockers that wait for nothing. A cycle (a deadlock, for the moment before
        // Postgres breaks it) has none: its smallest pid stands in.
        let mut roots: Vec<i32> = nodes
            .iter()
            .filter(|(_, node)| node.waits_for.is_none())
            .map(|(&pid, _)| pid)
            .collect();
        let mut reached: BTreeSet<i32> = BTreeSet::new();
        for &root in &roots {
            reach(&nodes, root, &mut reached);
        }
        while let Some(&pid) = nodes.keys().find(|pid| !reached.contains(pid)) {
            roots.push(pid);
            reach(&nodes, pid, &mut reached);
        }
        let mut forest = Forest { nodes, roots };
        let counts: HashMap<i32, usize> = forest
            .roots
            .iter()
            .map(|&root| (root, forest.blocks(root)))
            .collect();
        forest
            .roots
            .sort_by_key(|root| (std::cmp::Reverse(counts[root]), *root));
        if !only.is_empty() {
            let keep: Vec<i32> = forest
                .roots
                .iter()
                .copied()
                .filter(|&root| {
                    let mut members = BTreeSet::new();
                    reach(&forest.nodes, root, &mut members);
                    only.iter().any(|pid| members.contains(pid))
                })
                .collect();
            forest.roots = keep;
        }
        forest
    }

    /// The root blockers of the trees kept: sessions that block others and wait for nothing,
    /// with what they are doing, most sessions blocked first. Never a prepared transaction
    /// (pid 0), nor a backend the listing could not see (another database's), which cannot be
    /// signalled; nor the stand-in root of a deadlock's cycle, which waits.
    pub fn root_blockers(&self) -> Vec<(i32, &Activity)> {
        self.roots
            .iter()
            .filter_map(|&pid| {
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
        if self.roots.is_empty() {
            return "No blocked sessions.\n".to_owned();
        }
        let mut out = String::new();
        for &root in &self.roots {
            let line = style.cut(&self.describe(root, names));
            out.push_str(&style.alert(&line));
            out.push('\n');
            let mut path = vec![root];
            self.text_children(root, "", names, style, &mut path, &mut out);
        }
        out
    }

    fn text_children(
        &self,
        pid: i32,
        indent: &str,
        names: &HashMap<AdvisoryKey, String>,
        style: Style,
        path: &mut Vec<i32>,
        out: &mut String,
    ) {
        let children: Vec<i32> = self.nodes[&pid].blocked.iter().copied().collect();
        for (i, &child) in children.iter().enumerate() {
            let last = i + 1 == children.len();
            let branch = if last { "└─ " } else { "├─ " };
            let cycle = path.contains(&child);
            let mut line = format!("{indent}{branch}{}", self.describe(child, names));
            if cycle {
                line.push_str(" (deadlock: already above)");
            }
            out.push_str(&style.cut(&line));
            out.push('\n');
            if !cycle {
                path.push(child);
                let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
                self.text_children(child, &deeper, names, style, path, out);
                path.pop();
            }
        }
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

    /// As JSON: the trees as nested objects.
    pub fn json(&self, names: &HashMap<AdvisoryKey, String>) -> serde_json::Value {
        self.roots
            .iter()
            .map(|&root| self.json_node(root, names, &mut vec![]))
            .collect::<Vec<_>>()
            .into()
    }

    fn json_node(
        &self,
        pid: i32,
        names: &HashMap<AdvisoryKey, String>,
        path: &mut Vec<i32>,
    ) -> serde_json::Value {
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
        path.push(pid);
        let mut blocked: Vec<serde_json::Value> = Vec::new();
        for &child in &node.blocked {
            if !path.contains(&child) {
                blocked.push(self.json_node(child, names, path));
            }
        }
        path.pop();
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
