//! Repairs on clusters of real kvnode processes. The stories: a spare replacing a dead replica
//! under load (and the replaced node, restarted, rejoining by itself as a new spare), failover
//! of the metadata leader with repairs continuing (also when it dies in the middle of one), a
//! brief restart that rejoins without a repair, and a 15 s restart with the default dead timeout
//! that keeps the node and uses no spare. The safety rules: a group
//! never has more than K voters while a replica is replaced; repairs of different groups run at
//! once; a node that comes back before the swap keeps its seat; a node cut off from the metadata
//! leader but still replicating with its group is not removed; a long repair step does not hold
//! up the metadata loop; a stale membership request is refused; a replica that dies during a
//! view change is repaired before the change ends.
//!
//! Tests run one at a time (each cluster wants both cores). Every wait is a condition with a
//! deadline, mostly on `GET /v1/cluster/status`. Random choices print their seed;
//! `KVORUM_TEST_SEED=<seed>` replays them.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_tests::workload::{
    assert_readable, longest_gap, read_checked, run_all, wait_acked, write_all, Load,
};
use kvorum_tests::{
    assert_map_is, direct_client, keys_by_group, kvnode_bin, node_state, seed, status_group,
    status_node, Cluster, ClusterOptions, ClusterStatus, ONE_AT_A_TIME,
};
use kvorum_wire::headers::{CLUSTER_HEADER, SECRET_HEADER};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Heartbeat silence after which a node is suspect in the repair tests: 1.5 s, one and a half
/// of the default 1 s node heartbeat interval.
const SUSPECT_AFTER_MS: &str = "1500";
/// Heartbeat silence after which a node is dead and repaired in the repair tests: 5 s, so that
/// detection, learner catch-up, promotion and removal fit well inside the 30 s (45 s with a
/// metadata failover) the tests allow, while a late heartbeat from a live node on a busy 2-core
/// machine does not get it removed.
const DEAD_AFTER_MS: &str = "5000";
/// The test-only fault that holds every repair step this long before it runs.
const STEP_DELAY_ENV: &str = "KVORUM_FAULT_TASK_STEP_DELAY_MS";

/// Longest tolerated time between successive acknowledged writes while a replica is replaced.
const MAX_WRITE_GAP: Duration = Duration::from_secs(10);

/// Options of the repair tests: `nodes` nodes, K=3 (with 7: groups 1–3 and 4–6, spare 7), short
/// failure-detection timeouts.
fn repair_options(nodes: usize) -> ClusterOptions {
    ClusterOptions::new(kvnode_bin!(), nodes, 3)
        .with_env("KVORUM_SUSPECT_AFTER_MS", SUSPECT_AFTER_MS)
        .with_env("KVORUM_DEAD_AFTER_MS", DEAD_AFTER_MS)
}

/// [`repair_options`] with every repair step held `step_delay_ms`.
fn options(nodes: usize, step_delay_ms: u64) -> ClusterOptions {
    repair_options(nodes).with_env(STEP_DELAY_ENV, &step_delay_ms.to_string())
}

/// Keys of each data group a test writes before its fault and reads back after it.
const KEYS_BEFORE: usize = 20;

/// Starts a cluster with `opts` and writes [`KEYS_BEFORE`] keys `{prefix}{n}` of each data group
/// through random nodes (chosen with `seed`); returns the cluster and the keys written.
async fn start_with_keys(opts: ClusterOptions, seed: u64, prefix: &str) -> (Cluster, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let c = Cluster::start(opts).await;
    let keys: Vec<String> = keys_by_group(&c.initial_map(), prefix, KEYS_BEFORE)
        .into_values()
        .flatten()
        .collect();
    write_all(&c, &keys, &mut rng).await;
    (c, keys)
}

/// The voter sets of `group`'s membership as a replica reports it in `s` (two sets during a
/// joint change); empty when unknown.
fn voter_sets(s: &ClusterStatus, group: u64) -> Vec<Vec<u64>> {
    status_group(s, group)
        .and_then(|g| g.voters.clone())
        .map(|sets| sets.into_iter().map(|set| sorted(&set)).collect())
        .unwrap_or_default()
}

/// Panics if some voter set of `group` in `s` has more than `k` voters.
fn assert_at_most_k_voters(s: &ClusterStatus, group: u64, k: usize) {
    for set in voter_sets(s, group) {
        assert!(
            set.len() <= k,
            "group {group} has {} voters {set:?} (K={k}): {:?}",
            set.len(),
            status_group(s, group).unwrap()
        );
    }
}

/// The tasks of a status, as (group, dead, replacement, step).
fn tasks(s: &ClusterStatus) -> Vec<(u64, u64, u64, String)> {
    s.tasks
        .iter()
        .map(|t| {
            (
                t.group.map_or(u64::MAX, |g| g.0),
                t.dead.unwrap_or(0),
                t.replacement.unwrap_or(0),
                t.step.clone(),
            )
        })
        .collect()
}

/// Node ids, sorted.
fn sorted(ids: &[u64]) -> Vec<u64> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids
}

/// Whether some running node's log contains `text`.
fn some_log_says(c: &Cluster, text: &str) -> bool {
    c.running()
        .into_iter()
        .any(|i| c.nodes[i].log_text().contains(text))
}

mod rejoin;
mod rules;
mod stories;
