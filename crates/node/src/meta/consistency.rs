//! The consistency check of the replicas' applied meta, run by the metadata leader (etcd's
//! periodic corruption check, TiKV's consistency check): replicas that applied the same log hold
//! the same meta, so a replica whose hash differs at the same index holds data that changed
//! behind Raft's back (a damaged disk, a bug) and must be replaced.
//!
//! Steps: (1) every [`CHECK_EVERY`], and on demand (`POST /v1/cluster/consistency`, `kvctl
//! check-consistency`), the metadata leader asks each group's leader
//! (`POST /internal/v1/groups/{group}/hash`, [`hash_handler`]) to propose
//! `Command::ComputeHash`; every replica applies it, hashing its state at that entry's index,
//! and keeps the hash; (2) nodes report each replica's newest hash in their heartbeats; (3) the
//! metadata leader compares, per group, the members' hashes at one index ([`compare`], pure): a
//! member whose hash differs from the one most members have is *mismatched*, reported once per
//! group and index in the log (error), in the status (`consistency`) and the metrics
//! (`kvorum_consistency_mismatched_replicas`). An on-demand check waits up to [`CHECK_WAIT`] for
//! every member's hash at the index its request got, and answers the comparison.
//!
//! Not automatic: the repair. Which copy is right is only a majority's guess (with K=2, or two
//! damaged replicas, there is none), so the operator takes a mismatched node out (stops it: the
//! cluster replaces it like a dead node), wipes it and adds it back as a new one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_raftstore::{GroupId, NodeId, StateHash};
use kvorum_router::{ClusterMap, CONFIG_GROUP};
use kvorum_wire::{ConsistencyReport, GroupConsistency};

use crate::group::hash::HASH_TIMEOUT;

use super::state::Meta;

use super::leader_call::{call_leader, Answer, LeaderCall};
use super::state::MetaInner;

/// Interval of the scheduled consistency check.
pub const CHECK_EVERY: Duration = Duration::from_secs(600);
/// Longest an on-demand check waits for every member's hash.
const CHECK_WAIT: Duration = Duration::from_secs(5);
/// Interval at which an on-demand check looks at the heartbeats for the members' hashes.
const CHECK_POLL: Duration = Duration::from_millis(100);

/// Every group of `map` with its members: the config group (its voters) first, then the data
/// groups.
fn groups_of(map: &ClusterMap) -> Vec<(GroupId, Vec<NodeId>)> {
    let mut out = vec![(CONFIG_GROUP, map.config_voters.iter().copied().collect())];
    out.extend(
        map.groups
            .iter()
            .map(|(g, grp)| (*g, grp.members.iter().copied().collect())),
    );
    out
}

/// Compares the hashes `reports` (by member) of `group`'s `members` at log index `at` (`None`:
/// the newest index any member reported). `None` when no member reported a hash (at `at`). Pure.
///
/// The hash most members hold is taken as right (`agreeing`) and the others as `mismatched`;
/// when several hashes tie for the most holders, every member that reported one is mismatched:
/// the replicas disagree and which one is right is unknown.
pub fn compare(
    group: GroupId,
    members: &[NodeId],
    reports: &BTreeMap<NodeId, StateHash>,
    at: Option<u64>,
) -> Option<GroupConsistency> {
    let index = match at {
        Some(i) => i,
        None => members
            .iter()
            .filter_map(|m| reports.get(m).map(|h| h.index))
            .max()?,
    };
    let at_index: BTreeMap<NodeId, u64> = members
        .iter()
        .filter_map(|m| {
            let h = reports.get(m)?;
            (h.index == index).then_some((*m, h.hash))
        })
        .collect();
    if at_index.is_empty() {
        return None;
    }
    let mut holders: BTreeMap<u64, usize> = BTreeMap::new();
    for h in at_index.values() {
        *holders.entry(*h).or_default() += 1;
    }
    let most = holders.values().copied().max().unwrap_or(0);
    let winners: Vec<u64> = holders
        .iter()
        .filter(|(_, n)| **n == most)
        .map(|(h, _)| *h)
        .collect();
    let right = match winners.as_slice() {
        [one] => Some(*one),
        _ => None,
    };
    let (mut agreeing, mut mismatched) = (Vec::new(), Vec::new());
    for (m, h) in &at_index {
        if Some(*h) == right {
            agreeing.push(*m);
        } else {
            mismatched.push(*m);
        }
    }
    let missing = members
        .iter()
        .filter(|m| !at_index.contains_key(m))
        .copied()
        .collect();
    Some(GroupConsistency {
        agreeing,
        error: None,
        group,
        index,
        mismatched,
        missing,
    })
}

/// The hash each node last reported for `group`, from the heartbeats this leader received.
fn reported(inner: &MetaInner, group: GroupId) -> BTreeMap<NodeId, StateHash> {
    inner
        .seen
        .iter()
        .filter_map(|(id, seen)| {
            let r = seen
                .beat
                .as_ref()?
                .replicas
                .iter()
                .find(|r| r.group == group)?;
            Some((*id, r.hash?))
        })
        .collect()
}

/// The latest comparison of every group of `map` whose members reported a hash.
pub(crate) fn comparisons(inner: &MetaInner, map: &ClusterMap) -> Vec<GroupConsistency> {
    groups_of(map)
        .into_iter()
        .filter_map(|(g, members)| compare(g, &members, &reported(inner, g), None))
        .collect()
}

/// The consistency part of a metadata tick: reports new mismatches, and starts the scheduled
/// check when it is due (in its own task: the tick never waits for it).
pub(super) fn tick(meta: &Arc<Meta>, map: &ClusterMap) {
    let (due, fresh) = {
        let mut inner = meta.lock();
        let now = Instant::now();
        let due = match inner.check.last {
            Some(t) if now.duration_since(t) < CHECK_EVERY => false,
            Some(_) => true,
            None => {
                inner.check.last = Some(now);
                false
            }
        };
        if due {
            inner.check.last = Some(now);
        }
        let all = comparisons(&inner, map);
        let fresh: Vec<GroupConsistency> = all
            .into_iter()
            .filter(|c| c.is_mismatch())
            .filter(|c| inner.check.logged.insert((c.group, c.index)))
            .collect();
        (due, fresh)
    };
    for c in fresh {
        tracing::error!(
            group = %c.group,
            index = c.index,
            mismatched = ?c.mismatched,
            agreeing = ?c.agreeing,
            "CONSISTENCY CHECK FAILED: replicas hold different data at the same log index; \
             the mismatched replicas' data changed behind Raft's back. Stop each mismatched node \
             (the cluster replaces it like a dead node), wipe it and add it back as a new node"
        );
    }
    if due {
        let meta = meta.clone();
        tokio::spawn(async move {
            for (g, _) in groups_of(&meta.node.map()) {
                if let Err(e) = request_hash(&meta, g).await {
                    tracing::warn!(group = %g, error = %e, "scheduled consistency check: no hash");
                }
            }
        });
    }
}

/// Asks `group`'s leader to propose `ComputeHash`; returns the leader's hash and its index.
async fn request_hash(meta: &Meta, group: GroupId) -> Result<StateHash, String> {
    let mut addrs = meta.node.group_addrs(group);
    if let (true, Some(me)) = (meta.node.leads(group), meta.node.map().addr(meta.node.id())) {
        addrs.insert(0, me.to_string());
    }
    let call = LeaderCall {
        group,
        path: format!("/internal/v1/groups/{}/hash", group.0),
        content_type: "application/json",
        body: Vec::new(),
        timeout: HASH_TIMEOUT,
        final_codes: &[],
    };
    match call_leader(meta, addrs, call).await? {
        Answer::Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("bad hash reply from group {group}: {e}")),
        Answer::Refused(e) => Err(e.message),
    }
}

/// Runs an on-demand check: every group hashes at a new index, then the members' hashes are
/// compared once all reported (or [`CHECK_WAIT`] passed). Mismatches are logged like the
/// scheduled check's.
pub async fn check_now(meta: &Arc<Meta>) -> ConsistencyReport {
    let map = meta.node.map();
    let mut targets: Vec<(GroupId, Vec<NodeId>, Result<u64, String>)> = Vec::new();
    for (g, members) in groups_of(&map) {
        let index = request_hash(meta, g).await.map(|h| h.index);
        targets.push((g, members, index));
    }
    let deadline = Instant::now() + CHECK_WAIT;
    loop {
        let all_in = {
            let inner = meta.lock();
            targets.iter().all(|(g, members, index)| {
                let Ok(index) = index else { return true };
                let r = reported(&inner, *g);
                members
                    .iter()
                    .all(|m| r.get(m).is_some_and(|h| h.index >= *index))
            })
        };
        if all_in || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(CHECK_POLL).await;
    }
    let groups = {
        let inner = meta.lock();
        targets
            .into_iter()
            .map(|(g, members, index)| match index {
                Ok(index) => compare(g, &members, &reported(&inner, g), Some(index))
                    .unwrap_or_else(|| GroupConsistency {
                        agreeing: vec![],
                        error: None,
                        group: g,
                        index,
                        mismatched: vec![],
                        missing: members.clone(),
                    }),
                Err(e) => GroupConsistency {
                    agreeing: vec![],
                    error: Some(e),
                    group: g,
                    index: 0,
                    mismatched: vec![],
                    missing: members.clone(),
                },
            })
            .collect()
    };
    tick(meta, &map);
    ConsistencyReport { groups }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(index: u64, hash: u64) -> StateHash {
        StateHash { index, hash }
    }

    // Same hash everywhere: all agree. One replica differs: it is the mismatched one. A member
    // that did not report at the index is missing. Two replicas that differ with no majority:
    // both are mismatched (which is right is unknown). No report: no comparison.
    #[test]
    fn the_odd_replica_is_mismatched() {
        let g = GroupId(1);
        let members = [1, 2, 3];
        let all = BTreeMap::from([(1, h(9, 7)), (2, h(9, 7)), (3, h(9, 7))]);
        let c = compare(g, &members, &all, None).expect("reported");
        assert_eq!((c.index, c.agreeing.clone()), (9, vec![1, 2, 3]));
        assert!(!c.is_mismatch());

        let odd = BTreeMap::from([(1, h(9, 7)), (2, h(9, 8)), (3, h(9, 7))]);
        let c = compare(g, &members, &odd, None).expect("reported");
        assert_eq!((c.agreeing, c.mismatched), (vec![1, 3], vec![2]));

        let lagging = BTreeMap::from([(1, h(9, 7)), (2, h(5, 1)), (3, h(9, 7))]);
        let c = compare(g, &members, &lagging, None).expect("reported");
        assert!(!c.is_mismatch());
        assert_eq!((c.agreeing, c.missing), (vec![1, 3], vec![2]));

        let split = BTreeMap::from([(1, h(9, 7)), (2, h(9, 8))]);
        let c = compare(g, &members, &split, None).expect("reported");
        assert_eq!((c.mismatched, c.missing), (vec![1, 2], vec![3]));

        assert!(compare(g, &members, &BTreeMap::new(), None).is_none());
        assert!(compare(g, &members, &all, Some(10)).is_none());
        // Reports of non-members are ignored.
        let stranger = BTreeMap::from([(1, h(9, 7)), (4, h(9, 8))]);
        let c = compare(g, &members, &stranger, None).expect("reported");
        assert_eq!((c.agreeing, c.mismatched), (vec![1], vec![]));
    }
}
