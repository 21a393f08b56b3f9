//! Repairs on clusters of real kvnode processes. The stories: a spare replacing a dead replica
//! under load, failover of the metadata leader with repairs continuing (also when it dies in the
//! middle of one), and a brief restart that rejoins without a repair. The safety rules: a group
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

// With 7 nodes K=3 (groups 1–3 and 4–6, spare 7) and every repair step held 2 s, node 5 is
// killed: spare 7 replaces it, and no membership of group 2 seen meanwhile (every voter set,
// both halves of a joint change) has more than 3 voters, so one more failure during the repair
// costs no more than it would have without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_never_has_more_than_k_voters() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(options(7, 2000)).await;
    c.kill(c.index_of(5));
    let killed_at = Instant::now();
    let mut seen: Vec<Vec<Vec<u64>>> = Vec::new();
    let s = c
        .wait_for_status(
            Duration::from_secs(60),
            "spare 7 to replace node 5 in group 2",
            |s| {
                assert_at_most_k_voters(s, 2, 3);
                let sets = voter_sets(s, 2);
                if !sets.is_empty() && seen.last() != Some(&sets) {
                    seen.push(sets.clone());
                }
                status_group(s, 2).is_some_and(|g| g.members == vec![4, 6, 7])
                    && node_state(s, 5) == "removed"
                    && tasks(s).is_empty()
                    && sets == vec![vec![4, 6, 7]]
            },
        )
        .await;
    eprintln!(
        "repair_never_has_more_than_k_voters: repaired {:?} after the kill; group 2 voter sets \
         seen: {seen:?}; {:?}",
        killed_at.elapsed(),
        status_group(&s, 2).unwrap()
    );
}

// With 8 nodes K=3 (groups 1–3 and 4–6, spares 7 and 8; config voters 1–3) and every repair step
// held 6 s, node 5 is killed, and once its repair is listed, a member of group 1 that is not the
// metadata leader: the status lists a repair of group 1 and one of group 2 at the same time, both
// finish (each group has 3 alive members, none of them dead), the config group replaces the dead
// voter, and no group ever has more than 3 voters.
//
// The deaths are ordered on purpose: a dead config voter also needs a spare (a node that is only
// dead may come back, so only a spare may take its seat), so had group 1's member been seen dead
// first, its two repairs would take both spares and group 2's would wait for the first to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repairs_of_two_groups_run_in_parallel() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(options(8, 6000)).await;
    c.kill(c.index_of(5));
    let killed_at = Instant::now();
    let s = c
        .wait_for_status(
            Duration::from_secs(40),
            "the repair of group 2 listed",
            |s| tasks(s).iter().any(|t| t.0 == 2 && t.1 == 5),
        )
        .await;
    let meta = s.metadata_leader;
    let victim = [1, 2, 3]
        .into_iter()
        .find(|id| Some(*id) != meta)
        .expect("group 1 has a member that is not the metadata leader");
    c.kill(c.index_of(victim));
    let s = c
        .wait_for_status(
            Duration::from_secs(40),
            "repairs of groups 1 and 2 listed at the same time",
            |s| {
                assert_at_most_k_voters(s, 1, 3);
                assert_at_most_k_voters(s, 2, 3);
                let t = tasks(s);
                t.iter().any(|t| t.0 == 1 && t.1 == victim)
                    && t.iter().any(|t| t.0 == 2 && t.1 == 5)
            },
        )
        .await;
    eprintln!(
        "repairs_of_two_groups_run_in_parallel: {:?} after the first kill (node {victim} second), \
         tasks {:?}",
        killed_at.elapsed(),
        tasks(&s)
    );
    let s = c
        .wait_for_status(
            Duration::from_secs(90),
            "groups 1 and 2 and the config group repaired",
            |s| {
                assert_at_most_k_voters(s, 1, 3);
                assert_at_most_k_voters(s, 2, 3);
                let repaired = |g: u64, dead: u64| {
                    status_group(s, g).is_some_and(|g| {
                        let m = g.members.clone();
                        m.len() == 3
                            && !m.contains(&dead)
                            && m.iter().all(|id| node_state(s, *id) == "alive")
                    })
                };
                let voters = s.config.voters.clone();
                s.health_known
                    && repaired(1, victim)
                    && repaired(2, 5)
                    && voters.len() == 3
                    && !voters.contains(&victim)
                    && node_state(s, victim) == "removed"
                    && node_state(s, 5) == "removed"
                    && tasks(s).is_empty()
            },
        )
        .await;
    eprintln!(
        "repairs_of_two_groups_run_in_parallel: all repaired {:?} after the first kill: group 1 {:?}, \
         group 2 {:?}, config {:?}",
        killed_at.elapsed(),
        status_group(&s, 1).unwrap().members,
        status_group(&s, 2).unwrap().members,
        s.config.voters
    );
}

// With 7 nodes K=3 and every repair step held 4 s, node 5 is paused until the metadata leader
// plans its replacement, then resumed: it is alive again before the swap, so the repair is
// abandoned; node 5 is never removed and group 2 keeps members 4, 5, 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_node_back_before_swap_abandons_repair() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(options(7, 4000)).await;
    let i5 = c.index_of(5);
    c.pause(i5, true);
    let paused_at = Instant::now();
    c.wait_for_status(Duration::from_secs(30), "a repair of node 5", |s| {
        tasks(s).iter().any(|t| t.1 == 5)
    })
    .await;
    c.pause(i5, false);
    eprintln!(
        "dead_node_back_before_swap_abandons_repair: repair planned {:?} after the pause; node 5 \
         resumed",
        paused_at.elapsed()
    );
    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            "the repair of node 5 abandoned, node 5 alive in group 2",
            |s| {
                assert_ne!(node_state(s, 5), "removed", "node 5 was removed: {s:?}");
                status_group(s, 2).is_some_and(|g| g.members == vec![4, 5, 6])
                    && node_state(s, 5) == "alive"
                    && tasks(s).is_empty()
                    && voter_sets(s, 2) == vec![vec![4, 5, 6]]
            },
        )
        .await;
    assert_eq!(s.spares, vec![7], "{s:?}");
    assert!(
        some_log_says(&c, "repair abandoned"),
        "no node logged the abandoned repair; logs in {}",
        c.path().display()
    );
}

// With 7 nodes K=3, a follower of group 2 stops sending heartbeats (test-only fault) but its
// replica keeps replicating: the metadata leader sees it dead and starts a repair, but the
// group's leader sees it still acknowledging its log and refuses the swap; for as long as we
// watch (until that refusal, and 10 s more) it is never removed and group 2 keeps members 4, 5, 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_cut_off_from_metadata_leader_is_not_removed() {
    let _one = ONE_AT_A_TIME.lock().await;
    let fault_dir = tempfile::tempdir().unwrap();
    let muted_file = fault_dir.path().join("muted");
    let c = Cluster::start(
        options(7, 0).with_env("KVORUM_FAULT_NO_HEARTBEATS", muted_file.to_str().unwrap()),
    )
    .await;
    let leader = c.group_leader(2).await.expect("group 2 has a leader");
    let cut = [4, 5, 6].into_iter().rev().find(|n| *n != leader).unwrap();
    std::fs::write(&muted_file, cut.to_string()).unwrap();
    eprintln!(
        "replica_cut_off_from_metadata_leader_is_not_removed: node {cut} (group 2 leader: \
         {leader}) sends no more heartbeats"
    );
    let keep = |s: &ClusterStatus| {
        assert_ne!(
            node_state(s, cut),
            "removed",
            "node {cut} was removed: {s:?}"
        );
        if let Some(g) = status_group(s, 2) {
            assert_eq!(g.members, vec![4, 5, 6], "group 2 changed: {s:?}");
        }
    };
    c.wait_for_status(
        Duration::from_secs(30),
        &format!("node {cut} seen dead"),
        |s| {
            keep(s);
            s.health_known && node_state(s, cut) == "dead"
        },
    )
    .await;
    let dead_at = Instant::now();
    c.wait_for_status(
        Duration::from_secs(40),
        &format!("the group leader to refuse removing node {cut}"),
        |s| {
            keep(s);
            some_log_says(&c, "still replicating")
        },
    )
    .await;
    eprintln!(
        "replica_cut_off_from_metadata_leader_is_not_removed: swap refused {:?} after node {cut} \
         was seen dead",
        dead_at.elapsed()
    );
    let watch_until = Instant::now() + Duration::from_secs(10);
    c.wait_for_status(
        Duration::from_secs(30),
        &format!("10 s more without removing node {cut}, and no task left"),
        |s| {
            keep(s);
            Instant::now() >= watch_until && tasks(s).is_empty()
        },
    )
    .await;
}

// With 7 nodes K=3 and every repair step held 3 s, node 5 is killed and spare 7 paused as soon
// as its repair is planned, so the learner can never catch up (the add-learner step would wait up
// to a minute): the metadata leader still sees spare 7 die and abandons the repair within 20 s,
// its loop never stalls; once node 7 is resumed the repair is planned again and finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn long_repair_step_does_not_block_the_metadata_loop() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(options(7, 3000)).await;
    c.kill(c.index_of(5));
    c.wait_for_status(Duration::from_secs(30), "a repair of node 5 by 7", |s| {
        tasks(s).iter().any(|t| t.1 == 5 && t.2 == 7)
    })
    .await;
    let i7 = c.index_of(7);
    c.pause(i7, true);
    let paused_at = Instant::now();
    c.wait_for_status(
        Duration::from_secs(20),
        "the repair abandoned once spare 7 is dead",
        |s| s.health_known && node_state(s, 7) == "dead" && tasks(s).is_empty(),
    )
    .await;
    eprintln!(
        "long_repair_step_does_not_block_the_metadata_loop: abandoned {:?} after pausing 7",
        paused_at.elapsed()
    );
    assert!(
        !some_log_says(&c, "metadata loop stalled"),
        "the metadata loop reported a stall; logs in {}",
        c.path().display()
    );
    c.pause(i7, false);
    c.wait_for_status(
        Duration::from_secs(60),
        "spare 7 to replace node 5 after its resume",
        |s| {
            status_group(s, 2).is_some_and(|g| g.members == vec![4, 6, 7])
                && node_state(s, 5) == "removed"
                && tasks(s).is_empty()
        },
    )
    .await;
}

// A membership request whose task id is not in the group leader's map, or whose epoch is older
// than that map's, is refused with 409 `stale_task` and changes nothing; one whose epoch the
// leader cannot learn is refused as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_membership_requests_are_refused() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    let s = c.wait_ready(Duration::from_secs(30)).await;
    let leader = c.group_leader(1).await.expect("group 1 has a leader");
    let epoch = s.epoch;
    let cluster = s.cluster_id.clone();
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/internal/v1/groups/1/membership",
        c.nodes[c.index_of(leader)].addr
    );
    let post = |body: Value| {
        http.post(&url)
            .header(SECRET_HEADER, "test-secret")
            .header(CLUSTER_HEADER, &cluster)
            .timeout(Duration::from_secs(10))
            .json(&body)
            .send()
    };
    for (what, body, want_status, want_code) in [
        (
            "an unknown task",
            json!({ "task": 999, "epoch": epoch, "op": "remove_learner", "node": 42 }),
            409,
            "stale_task",
        ),
        (
            "an old epoch",
            json!({ "task": 999, "epoch": 0, "op": "remove_learner", "node": 42 }),
            409,
            "stale_task",
        ),
        (
            "an epoch the leader cannot learn",
            json!({ "task": 999, "epoch": epoch + 100, "op": "remove_learner", "node": 42 }),
            503,
            "unavailable",
        ),
    ] {
        let resp = post(body).await.expect("the group leader answers");
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or_default();
        eprintln!("stale_membership_requests_are_refused: {what}: {status} {body}");
        assert_eq!(
            (status, body["code"].as_str().unwrap_or("")),
            (want_status, want_code),
            "{what}: {body}"
        );
    }
    let s = c.status_of(c.index_of(leader)).await.expect("a status");
    assert_eq!(voter_sets(&s, 1), vec![vec![1, 2, 3]], "{s:?}");
}

// With 7 nodes K=3 (groups 1–3 and 4–6, spare 7), SIGKILL of group 2's leader under write
// load: within 30 s spare 7 replaces it (group 2 has 3 alive members, 7 among them, no task
// left) and the killed node is "removed"; writes to both groups are accepted throughout (longest
// gap between acks below 10 s), every acknowledged write reads back, and the killed node, when
// restarted, is refused and exits saying it was removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spare_replaces_dead_replica() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("spare_replaces_dead_replica");
    let mut c = Cluster::start(repair_options(7)).await;
    let map = c.initial_map();
    let group2: Vec<u64> = map
        .members_of(kvorum_router::GroupId(2))
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!((group2.clone(), map.spares()), (vec![4, 5, 6], vec![7]));
    // The leader: the hardest case, as group 2 must elect a new leader as well as repair.
    let victim = c.group_leader(2).await.expect("group 2 has a leader");
    assert!(group2.contains(&victim));
    let vi = c.index_of(victim);
    eprintln!("spare_replaces_dead_replica: killing node {victim}, leader of group 2");

    let start = Instant::now();
    let load = Load::start(&c, &map, &[1, 2], 4, c.running(), seed, "r-");
    for g in [1, 2] {
        wait_acked(&c, &load, g, start, 100, "100 acked writes per group").await;
    }

    load.avoid(vi);
    let killed_at = Instant::now();
    c.kill(vi);
    let repair_deadline = Duration::from_secs(30);
    let s = c
        .wait_for_status(
            repair_deadline.saturating_sub(killed_at.elapsed()),
            &format!("spare 7 to replace node {victim} in group 2"),
            |s| {
                let members = status_group(s, 2).map(|g| g.members.clone());
                s.health_known
                    && members.as_ref().is_some_and(|m| {
                        m.len() == 3
                            && m.contains(&7)
                            && !m.contains(&victim)
                            && m.iter().all(|id| node_state(s, *id) == "alive")
                    })
                    && node_state(s, victim) == "removed"
                    && s.tasks.is_empty()
            },
        )
        .await;
    let repaired_at = Instant::now();
    eprintln!(
        "spare_replaces_dead_replica: group 2 repaired {:?} after the kill: {:?}",
        repaired_at - killed_at,
        status_group(&s, 2).unwrap()
    );
    assert_eq!(s.spares, Vec::<u64>::new(), "no spare left: {s:?}");
    assert_eq!(
        status_node(&s, 7).unwrap().role.as_str(),
        "replica",
        "{s:?}"
    );
    let groups = &status_node(&s, 7).unwrap().groups;
    assert_eq!(groups, &vec![kvorum_router::GroupId(2)], "{s:?}");
    assert_eq!(
        status_group(&s, 1).unwrap().members,
        vec![1, 2, 3],
        "group 1 untouched: {s:?}"
    );

    // Writes go on after the repair, then the load stops.
    for g in [1, 2] {
        wait_acked(
            &c,
            &load,
            g,
            repaired_at,
            100,
            "100 acked writes per group after the repair",
        )
        .await;
    }
    let acks = load.finish().await;
    let gap_all = longest_gap(&acks, |_| true);
    let gap2 = longest_gap(&acks, |a| a.group == 2);
    let gap1 = longest_gap(&acks, |a| a.group == 1);
    let first2 = acks
        .iter()
        .filter(|a| a.group == 2 && a.at > killed_at)
        .map(|a| a.at - killed_at)
        .min();
    eprintln!(
        "spare_replaces_dead_replica: {} acked writes; longest write gap: overall {gap_all:?}, \
         group 2 {gap2:?}, group 1 {gap1:?}; first group-2 ack {first2:?} after the kill",
        acks.len()
    );
    assert!(
        gap_all < MAX_WRITE_GAP && gap2 < MAX_WRITE_GAP,
        "writes stalled: longest gap overall {gap_all:?}, group 2 {gap2:?} \
         (limit {MAX_WRITE_GAP:?})"
    );

    let keys: Vec<String> = acks.iter().map(|a| a.key.clone()).collect();
    assert_readable(&c, &keys, &c.running(), seed).await;

    // The removed node comes back: it is refused and exits by itself.
    let log_before = c.nodes[vi].log_text().len();
    c.restart(vi);
    let exit = c.wait_for_exit(vi, Duration::from_secs(30)).await;
    let log = c.nodes[vi].log_text();
    let said = log.get(log_before..).unwrap_or_default();
    let Some(exit) = exit else {
        panic!(
            "removed node {victim} was restarted and still runs after 30 s; logs in {}",
            c.path().display()
        );
    };
    eprintln!("spare_replaces_dead_replica: restarted node {victim} exited: {exit}");
    assert!(
        !exit.success(),
        "the refused node exited with success; its log:\n{said}"
    );
    assert!(
        said.to_lowercase().contains("removed"),
        "the refused node's log does not say it was removed:\n{said}"
    );
}

// With 7 nodes K=3, SIGKILL of the metadata leader: another config voter becomes metadata
// leader, the cluster map stays readable from every live node, and the repairs run: within 45 s
// the killed node's data replica is replaced by spare 7, its config-voter seat by another node
// (3 alive voters), the killed node is "removed", and keys written before read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_leader_failover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("metadata_leader_failover");
    let (mut c, keys) = start_with_keys(repair_options(7), seed, "before-").await;
    let map = c.initial_map();

    let leader = c.metadata_leader().await.expect("a metadata leader");
    let before = c.status().await.expect("a status");
    let voters = before.config.voters.clone();
    assert_eq!(voters, vec![1, 2, 3], "{before:?}");
    assert!(voters.contains(&leader), "{before:?}");
    let group = map
        .group_of_node(leader)
        .expect("voters 1-3 are replicas")
        .0;
    eprintln!("metadata_leader_failover: killing metadata leader {leader} (group {group})");
    let li = c.index_of(leader);
    let killed_at = Instant::now();
    c.kill(li);
    let deadline = Duration::from_secs(45);

    // Nodes keep their copy of the map: it is readable while the metadata leader is gone.
    for i in c.running() {
        let m = c
            .get_json(i, "/v1/cluster/map")
            .await
            .unwrap_or_else(|e| panic!("map from node {} during failover: {e}", i + 1));
        assert_map_is(
            &m,
            &map,
            &format!("map from node {} during failover", i + 1),
        );
    }

    let s = c
        .wait_for_status(
            deadline.saturating_sub(killed_at.elapsed()),
            "another config voter to become metadata leader",
            |s| {
                s.health_known
                    && s.metadata_leader
                        .is_some_and(|l| l != leader && s.config.voters.contains(&l))
            },
        )
        .await;
    eprintln!(
        "metadata_leader_failover: node {:?} leads the config group {:?} after the kill",
        s.metadata_leader,
        killed_at.elapsed()
    );

    let s = c
        .wait_for_status(
            deadline.saturating_sub(killed_at.elapsed()),
            &format!("node {leader} replaced in group {group} and in the config group"),
            |s| {
                let members = status_group(s, group)
                    .map(|g| g.members.clone())
                    .unwrap_or_default();
                let voters = s.config.voters.clone();
                s.health_known
                    && members.len() == 3
                    && members.contains(&7)
                    && !members.contains(&leader)
                    && voters.len() == 3
                    && !voters.contains(&leader)
                    && members
                        .iter()
                        .chain(&voters)
                        .all(|id| node_state(s, *id) == "alive")
                    && node_state(s, leader) == "removed"
                    && s.tasks.is_empty()
            },
        )
        .await;
    eprintln!(
        "metadata_leader_failover: repaired {:?} after the kill: group {group} {:?}, config {:?}",
        killed_at.elapsed(),
        status_group(&s, group).unwrap().members,
        s.config
    );

    for i in c.running() {
        c.get_json(i, "/v1/cluster/map")
            .await
            .unwrap_or_else(|e| panic!("map from node {} after the repair: {e}", i + 1));
    }
    assert_readable(&c, &keys, &c.running(), seed).await;
}

// With 6 nodes K=3 (no spare) and the default 10 s dead timeout, a replica SIGKILLed for about
// 2 s while its group takes writes restarts, is alive again, still a member (not removed), and
// its own replica (stale reads asked of it directly) holds every acknowledged write of its group.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn brief_restart_rejoins() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("brief_restart_rejoins");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 6, 3)).await;
    let map = c.initial_map();
    let victim = rng.gen_range(1..=6u64);
    let vi = c.index_of(victim);
    let group = map.group_of_node(victim).expect("no spares").0;
    let members: Vec<u64> = map
        .members_of(kvorum_router::GroupId(group))
        .unwrap()
        .iter()
        .copied()
        .collect();
    eprintln!("brief_restart_rejoins: killing node {victim} of group {group}");

    let before = keys_by_group(&map, "before-", 100);
    let all_before: Vec<String> = before.values().flatten().cloned().collect();
    write_all(&c, &all_before, &mut rng).await;

    let others: Vec<usize> = c.running().into_iter().filter(|i| *i != vi).collect();
    let killed_at = Instant::now();
    c.kill(vi);
    let load = Load::start(&c, &map, &[group], 8, others, seed, "down-");
    // Restart 2 s after the kill, once writes of its group were acked while it was down; if none
    // were by then (its group is electing a new leader), at the first ack, at the latest 6 s
    // after the kill (well inside the 10 s dead timeout) even without one: an election can take
    // several timeouts when the machine is busy, and the restart must not wait for it.
    let restart_by = killed_at + Duration::from_secs(6);
    while Instant::now() < restart_by
        && (killed_at.elapsed() < Duration::from_secs(2) || load.acked(group, killed_at) == 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let acked_down = load.acked(group, killed_at);
    c.restart(vi);
    let restarted_at = Instant::now();
    eprintln!(
        "brief_restart_rejoins: node {victim} down for {:?}, {acked_down} writes to group {group} \
         acked meanwhile",
        restarted_at - killed_at
    );
    wait_acked(
        &c,
        &load,
        group,
        restarted_at,
        100,
        "100 acked writes after the restart",
    )
    .await;
    let acks = load.finish().await;

    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            &format!("node {victim} alive again in group {group}"),
            |s| {
                node_state(s, victim) == "alive"
                    && status_group(s, group).is_some_and(|g| g.members == members)
                    && s.tasks.is_empty()
            },
        )
        .await;
    assert_eq!(s.spares, Vec::<u64>::new(), "{s:?}");
    assert!(
        c.wait_for_exit(vi, Duration::ZERO).await.is_none(),
        "node {victim} exited after its restart; logs in {}",
        c.path().display()
    );

    // Its own replica catches up: stale reads asked of it directly are served from its state.
    let mut missing: Vec<String> = before[&group].clone();
    missing.extend(acks.iter().map(|a| a.key.clone()));
    let total = missing.len();
    let local = Arc::new(direct_client(
        c.nodes[vi].addr,
        Duration::from_secs(5),
        Duration::from_secs(1),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let local = local.clone();
        let failed = run_all(missing, 16, move |key: String| {
            let local = local.clone();
            async move { read_checked(&local, &key, true).await }
        })
        .await;
        let wrong: Vec<&String> = failed
            .iter()
            .map(|(_, e)| e)
            .filter(|e| e.starts_with("WRONG"))
            .collect();
        assert!(
            wrong.is_empty(),
            "node {victim} serves wrong values: {wrong:?}"
        );
        missing = failed.iter().map(|(k, _)| k.clone()).collect();
        if missing.is_empty() {
            break;
        }
        let seen: HashSet<&String> = failed.iter().map(|(_, e)| e).take(3).collect();
        assert!(
            Instant::now() < deadline,
            "node {victim} lacks {} of {total} acknowledged writes of group {group} 30 s after \
             the restart, e.g. {seen:?}; logs in {}",
            missing.len(),
            c.path().display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "brief_restart_rejoins: node {victim} holds all {total} acknowledged writes of group \
         {group} {:?} after its restart",
        restarted_at.elapsed()
    );
}

// A repair interrupted by the loss of the metadata leader is resumed by the next one: with every
// repair step held for 3 s (test-only fault), kill a group 2 replica, wait until its repair has
// committed a step, kill the metadata leader, and check the new leader finishes that same task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repair_resumes_after_metadata_failover() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("repair_resumes_after_metadata_failover");
    let (mut c, keys) = start_with_keys(options(7, 3000), seed, "resume-").await;

    // Node 5 is a replica of group 2 and no config voter, so its repair does not involve the
    // metadata leader's own replicas.
    let dead = 5;
    c.kill(c.index_of(dead));
    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            "the repair of node 5 to pass its first step",
            |s| {
                s.tasks.iter().any(|t| {
                    t.dead == Some(dead) && t.replacement == Some(7) && t.step != "add_learner"
                })
            },
        )
        .await;
    let task = s.tasks[0].clone();
    let leader = s.metadata_leader.expect("a metadata leader");
    eprintln!(
        "repair_resumes_after_metadata_failover: task {task:?}; killing metadata leader {leader}"
    );
    let killed_at = Instant::now();
    c.kill(c.index_of(leader));

    let s = c
        .wait_for_status(
            Duration::from_secs(45),
            "another metadata leader to finish the repair of node 5",
            |s| {
                let members = status_group(s, 2)
                    .map(|g| g.members.clone())
                    .unwrap_or_default();
                s.health_known
                    && s.metadata_leader.is_some_and(|l| l != leader)
                    && members == vec![4, 6, 7]
                    && node_state(s, dead) == "removed"
                    && s.tasks.iter().all(|t| t.id != task.id)
            },
        )
        .await;
    eprintln!(
        "repair_resumes_after_metadata_failover: node {:?} finished task {} {:?} after the kill",
        s.metadata_leader,
        task.id,
        killed_at.elapsed()
    );
    let live: Vec<usize> = c.running();
    assert_readable(&c, &keys, &live, seed).await;
}

// A replica that dies during a view change is repaired before the change ends, from a spare the
// change does not need. 8 nodes K=3 (groups 1–3 and 4–6, spares 7 and 8); node 6 is removed, so
// the change adds spare 7 to group 2 as a learner, swaps it for node 6 and marks node 6
// removed. Node 7 is paused first, which holds the change at its catch-up. Then a replica of
// group 1 (not the metadata leader) is killed: spare 8 replaces it while the change still
// waits (before, no repair ran during a change). Node 7 resumes, the change completes, and
// every key written before reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_dead_during_a_change_is_repaired_from_a_free_spare() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("replica_dead_during_a_change_is_repaired_from_a_free_spare");
    let (mut c, keys) = start_with_keys(repair_options(8), seed, "rc-").await;
    let map = c.initial_map();
    assert_eq!(map.spares(), vec![7, 8]);
    assert!(
        !map.config_voters.contains(&6),
        "node 6 is a config voter: {map:?}"
    );
    let leader = c
        .wait_for_status(Duration::from_secs(20), "a metadata leader", |s| {
            s.metadata_leader.is_some()
        })
        .await
        .metadata_leader
        .unwrap();
    let victim = [1u64, 2, 3].into_iter().find(|n| *n != leader).unwrap();

    // Asked of the metadata leader directly: no request waits on the paused node.
    let client = direct_client(
        c.nodes[c.index_of(leader)].addr,
        Duration::from_secs(10),
        Duration::from_secs(20),
    );
    c.pause(c.index_of(7), true);
    let task = client
        .remove_node(6)
        .await
        .unwrap_or_else(|e| panic!("remove node 6 refused: {e}"));
    c.kill(c.index_of(victim));
    eprintln!(
        "replica_dead_during_a_change_is_repaired_from_a_free_spare: node 7 paused, change {} \
         started, node {victim} of group 1 killed (metadata leader: {leader})",
        task.id
    );
    let s = c
        .wait_for_status(
            Duration::from_secs(45),
            &format!("spare 8 to replace node {victim} in group 1 during the change"),
            |s| {
                status_group(s, 1)
                    .is_some_and(|g| g.members.contains(&8) && !g.members.contains(&victim))
                    && node_state(s, victim) == "removed"
            },
        )
        .await;
    assert!(
        s.tasks.iter().any(|t| t.id == task.id),
        "the change ended before the repair: {:?}",
        s.tasks
    );
    assert_eq!(
        status_group(&s, 2).unwrap().members,
        vec![4, 5, 6],
        "group 2 is the change's: {s:?}"
    );

    c.pause(c.index_of(7), false);
    let done = tokio::time::timeout(
        Duration::from_secs(120),
        client.wait_task(task.id, Duration::from_millis(200), |_| {}),
    )
    .await
    .expect("the change ends within 120 s after node 7 resumes")
    .unwrap_or_else(|e| panic!("waiting for change {}: {e}", task.id));
    assert_eq!(
        done.state,
        kvorum_client::TaskState::Done,
        "change ended {:?}: {:?}; logs in {}",
        done.state,
        done.error,
        c.path().display()
    );
    let s = c
        .wait_for_status(
            Duration::from_secs(20),
            "groups {4,5,7} and node 6 removed",
            |s| {
                status_group(s, 2).is_some_and(|g| g.members == vec![4, 5, 7])
                    && node_state(s, 6) == "removed"
            },
        )
        .await;
    assert!(status_group(&s, 1).unwrap().members.contains(&8), "{s:?}");
    let i6 = c.index_of(6);
    assert!(
        c.wait_for_exit(i6, Duration::from_secs(15)).await.is_some(),
        "the removed node 6 kept running"
    );
    let via: Vec<usize> = c.running().into_iter().filter(|i| *i != i6).collect();
    assert_readable(&c, &keys, &via, seed).await;
}
