//! What one refresh sees, as plain data: the sessions, the blocking tree flattened into the rows
//! it is drawn as, and the lock list. Built from the inspection API's rows; the state machine
//! and the view read only this, so they can be tested on made-up snapshots.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use pglock::{Activity, AdvisoryKey, BlockedPgLock, PgLock};

/// A backend, as the view shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// Its backend's pid.
    pub pid: i32,
    /// Its `application_name`.
    pub application: String,
    /// The role it is logged in as (`None` when not allowed to see it).
    pub user: Option<String>,
    /// `ACTIVE`, `IDLE_IN_TRANSACTION`...
    pub state: Option<String>,
    /// How long its current (or last) query has run.
    pub duration: Option<Duration>,
    /// When its current (or last) query started.
    pub query_start: Option<SystemTime>,
    /// The query, on one line.
    pub query: String,
}

impl Session {
    fn of(activity: &Activity) -> Session {
        Session {
            pid: activity.pid,
            application: activity.application_name.clone(),
            user: activity.user.clone(),
            state: activity.state.clone(),
            duration: activity.duration,
            query_start: activity.query_start,
            query: one_line(&activity.query),
        }
    }
}

/// One line of the blocking tree, in drawing order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRow {
    /// The session's pid (0 for a prepared transaction).
    pub pid: i32,
    /// 0 for a root.
    pub depth: usize,
    /// The branch drawing before the pid: `├─ `, `│  └─ `.
    pub prefix: String,
    /// How many sessions it holds up, directly or not.
    pub blocks: usize,
    /// Blocks others and waits for nothing (or stands in for a deadlock's cycle).
    pub root: bool,
    /// Already drawn above it on its own branch: a deadlock.
    pub cycle: bool,
    /// `ACCESS_EXCLUSIVE on public.orders`, when it waits.
    pub waits_for: Option<String>,
    /// How long it has waited.
    pub waited: Option<Duration>,
}

/// One lock held or awaited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockRow {
    /// The backend holding or awaiting it.
    pub pid: i32,
    /// `RELATION`, `ADVISORY`...
    pub lock_type: String,
    /// `ACCESS_EXCLUSIVE`, or `pg_locks`' name for a mode without one.
    pub mode: String,
    /// Held (`true`) or awaited.
    pub granted: bool,
    /// What it is on: `public.orders`, `advisory 42`, `transaction 1234`.
    pub target: String,
    /// How long it has been awaited.
    pub waited: Option<Duration>,
}

impl LockRow {
    /// Whether the row only repeats what the backend's other rows say: the lock every
    /// transaction holds on its own virtual transaction id, or on its transaction id. A wait for
    /// another transaction's id (a row lock's) is not one of them.
    pub fn repeats(&self) -> bool {
        self.granted && matches!(self.lock_type.as_str(), "VIRTUALXID" | "TRANSACTIONID")
    }
}

/// Everything one refresh read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// When it was read (`None` before the first refresh).
    pub taken: Option<SystemTime>,
    /// Every backend seen in a lock or a blocking pair, by pid.
    pub sessions: BTreeMap<i32, Session>,
    /// The blocking tree, in drawing order.
    pub tree: Vec<TreeRow>,
    /// The locks, in the listing's order.
    pub locks: Vec<LockRow>,
}

impl Snapshot {
    /// From the blocked pairs (for the tree) and the locks (for the list).
    pub fn new(pairs: Vec<BlockedPgLock>, locks: Vec<PgLock>, taken: SystemTime) -> Snapshot {
        let mut sessions = BTreeMap::new();
        let mut remember = |activity: &Option<Activity>| {
            if let Some(activity) = activity {
                sessions
                    .entry(activity.pid)
                    .or_insert_with(|| Session::of(activity));
            }
        };
        for lock in &locks {
            remember(&lock.activity);
        }
        for pair in &pairs {
            remember(&pair.lock.activity);
            remember(&pair.blocking);
        }
        let locks = locks
            .iter()
            .map(|lock| LockRow {
                pid: lock.pid,
                lock_type: lock.lock_type.clone(),
                mode: mode(lock),
                granted: lock.granted,
                target: target(lock),
                waited: lock.wait_duration,
            })
            .collect();
        let edges = pairs
            .iter()
            .map(|pair| Edge {
                waiter: pair.lock.pid,
                blocker: pair.blocking_pid,
                waits_for: format!("{} on {}", mode(&pair.lock), target(&pair.lock)),
                waited: pair.lock.wait_duration,
            })
            .collect();
        Snapshot {
            taken: Some(taken),
            sessions,
            tree: tree_rows(edges),
            locks,
        }
    }

    /// The pids of the sessions that block others and wait for nothing.
    pub fn root_blockers(&self) -> Vec<i32> {
        self.tree
            .iter()
            .filter(|row| row.root && row.blocks > 0)
            .map(|row| row.pid)
            .collect()
    }

    /// How many sessions wait for a lock.
    pub fn waiting(&self) -> usize {
        self.tree
            .iter()
            .filter(|row| row.waits_for.is_some())
            .map(|row| row.pid)
            .collect::<BTreeSet<_>>()
            .len()
    }
}

/// A backend waiting for a lock another one blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The waiting backend.
    pub waiter: i32,
    /// A backend it waits behind (`pg_blocking_pids`): a holder, or one queued before it.
    pub blocker: i32,
    /// What it waits for, as drawn: `ACCESS_EXCLUSIVE on public.orders`.
    pub waits_for: String,
    /// How long it has waited.
    pub waited: Option<Duration>,
}

/// The blocking forest as drawn, each session once: each root (a blocker that waits for
/// nothing, most sessions held up first), then what it blocks, depth first.
///
/// Blocking is a graph, not a tree: sessions queued for one lock are each blocked by the holder
/// and by every one queued before them. Drawing every path would repeat a queue of n waiters
/// 2^n times, so each waiter is drawn once, under one of its blockers: one that waits for
/// nothing if it has one (the holder), else the smallest pid. `blocks` still counts everything
/// a session holds up, directly or not. A cycle (a deadlock before Postgres breaks it) has no
/// root: its smallest pid stands in, and the branch stops where it comes back.
pub fn tree_rows(edges: Vec<Edge>) -> Vec<TreeRow> {
    let mut blocked: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    let mut blockers: BTreeMap<i32, BTreeSet<i32>> = BTreeMap::new();
    let mut waits: HashMap<i32, &Edge> = HashMap::new();
    for edge in &edges {
        blocked.entry(edge.blocker).or_default().insert(edge.waiter);
        blocked.entry(edge.waiter).or_default();
        blockers
            .entry(edge.waiter)
            .or_default()
            .insert(edge.blocker);
        waits.entry(edge.waiter).or_insert(edge);
    }
    let reach = |pid: i32| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![pid];
        while let Some(pid) = stack.pop() {
            if seen.insert(pid) {
                stack.extend(blocked.get(&pid).into_iter().flatten().copied());
            }
        }
        seen
    };
    let counts: HashMap<i32, usize> = blocked
        .keys()
        .map(|&pid| (pid, reach(pid).len() - 1))
        .collect();
    // Where each waiter is drawn.
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (&waiter, of) in &blockers {
        let parent = of
            .iter()
            .copied()
            .find(|blocker| !waits.contains_key(blocker))
            .or_else(|| of.first().copied());
        if let Some(parent) = parent {
            children.entry(parent).or_default().push(waiter);
        }
    }
    let mut roots: Vec<i32> = blocked
        .keys()
        .copied()
        .filter(|pid| !waits.contains_key(pid))
        .collect();
    roots.sort_by_key(|root| (std::cmp::Reverse(counts[root]), *root));

    let mut walk = Walk {
        children: &children,
        waits: &waits,
        counts: &counts,
        drawn: BTreeSet::new(),
        rows: Vec::new(),
    };
    for root in roots {
        walk.visit(root, 0, "");
    }
    // What no root reaches is in a cycle: its smallest pid stands in.
    while let Some(&pid) = blocked.keys().find(|pid| !walk.drawn.contains(pid)) {
        walk.visit(pid, 0, "");
    }
    let mut rows = walk.rows;
    for row in &mut rows {
        row.root = row.depth == 0;
    }
    rows
}

/// Drawing the forest depth first.
struct Walk<'a> {
    children: &'a BTreeMap<i32, Vec<i32>>,
    waits: &'a HashMap<i32, &'a Edge>,
    counts: &'a HashMap<i32, usize>,
    drawn: BTreeSet<i32>,
    rows: Vec<TreeRow>,
}

impl Walk<'_> {
    fn visit(&mut self, pid: i32, depth: usize, prefix: &str) {
        // Each session has one place, so meeting it again means going round a cycle.
        let cycle = !self.drawn.insert(pid);
        let edge = self.waits.get(&pid);
        self.rows.push(TreeRow {
            pid,
            depth,
            prefix: prefix.to_owned(),
            blocks: self.counts.get(&pid).copied().unwrap_or(0),
            root: false,
            cycle,
            waits_for: edge.map(|edge| edge.waits_for.clone()),
            waited: edge.and_then(|edge| edge.waited),
        });
        if cycle {
            return;
        }
        let children = self.children.get(&pid).cloned().unwrap_or_default();
        // The prefix of this row's children continues this row's branch line.
        let inherited = prefix.replace("├─ ", "│  ").replace("└─ ", "   ");
        for (i, &child) in children.iter().enumerate() {
            let branch = if i + 1 == children.len() {
                "└─ "
            } else {
                "├─ "
            };
            self.visit(child, depth + 1, &format!("{inherited}{branch}"));
        }
    }
}

/// `ACCESS_EXCLUSIVE`, or `pg_locks`' name for a mode without one (`SIReadLock`).
fn mode(lock: &PgLock) -> String {
    match lock.mode {
        Some(mode) => mode.to_string(),
        None => lock.mode_name.clone(),
    }
}

/// What a lock is on: `public.orders`, `advisory 42`, `transaction 1234`.
fn target(lock: &PgLock) -> String {
    if let Some(relation) = &lock.relation {
        return relation.to_string();
    }
    if let Some(oid) = lock.relation_oid {
        return format!("relation {oid}");
    }
    if let Some(key) = lock.advisory {
        return match key {
            AdvisoryKey::BigInt(key) => format!("advisory {key}"),
            AdvisoryKey::Pair(a, b) => format!("advisory {a},{b}"),
            _ => "advisory".to_owned(),
        };
    }
    if let Some(xid) = lock.transaction_id {
        return format!("transaction {xid}");
    }
    lock.lock_type.to_lowercase()
}

/// `text` on one line: runs of whitespace become one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(waiter: i32, blocker: i32) -> Edge {
        Edge {
            waiter,
            blocker,
            waits_for: format!("X on t{blocker}"),
            waited: None,
        }
    }

    fn drawn(rows: &[TreeRow]) -> Vec<String> {
        rows.iter()
            .map(|row| format!("{}{}", row.prefix, row.pid))
            .collect()
    }

    #[test]
    fn roots_come_first_with_the_biggest_tree_first() {
        // 1 blocks 2, which blocks 3 and 4; 9 blocks 8.
        let rows = tree_rows(vec![edge(8, 9), edge(2, 1), edge(3, 2), edge(4, 2)]);
        assert_eq!(
            drawn(&rows),
            ["1", "└─ 2", "   ├─ 3", "   └─ 4", "9", "└─ 8"]
        );
        let roots: Vec<(i32, usize)> = rows
            .iter()
            .filter(|row| row.root)
            .map(|row| (row.pid, row.blocks))
            .collect();
        assert_eq!(roots, [(1, 3), (9, 1)]);
        assert_eq!(rows[1].waits_for.as_deref(), Some("X on t1"));
        assert_eq!(rows[0].waits_for, None);
    }

    #[test]
    fn branch_lines_continue_past_siblings() {
        // 1 blocks 2 and 3; 2 blocks 4.
        let rows = tree_rows(vec![edge(2, 1), edge(3, 1), edge(4, 2)]);
        assert_eq!(drawn(&rows), ["1", "├─ 2", "│  └─ 4", "└─ 3"]);
    }

    #[test]
    fn a_deadlock_stops_where_it_comes_back() {
        let rows = tree_rows(vec![edge(1, 2), edge(2, 1)]);
        assert_eq!(drawn(&rows), ["1", "└─ 2", "   └─ 1"]);
        assert!(rows[2].cycle);
        assert!(rows[0].root);
    }

    #[test]
    fn a_queue_is_drawn_once_under_its_holder() {
        // 1 holds; 2..=20 queue for the same lock, each blocked by 1 and by all before it.
        let mut edges = Vec::new();
        for waiter in 2..=20 {
            for blocker in 1..waiter {
                edges.push(edge(waiter, blocker));
            }
        }
        let rows = tree_rows(edges);
        assert_eq!(rows.len(), 20);
        assert_eq!((rows[0].pid, rows[0].blocks), (1, 19));
        assert!(rows[1..].iter().all(|row| row.depth == 1));
        // Queued first, it holds up the rest too.
        assert_eq!(rows[1].blocks, 18);
    }

    #[test]
    fn no_edges_no_rows() {
        assert!(tree_rows(Vec::new()).is_empty());
    }
}
