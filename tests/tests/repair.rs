//! The safety rules of repairs, on clusters of real kvnode processes: a group never has more
//! than K voters while a replica is replaced; repairs of different groups run at once; a node
//! that comes back before the swap keeps its seat; a node cut off from the metadata leader but
//! still replicating with its group is not removed; a long repair step does not hold up the
//! metadata loop; a stale membership request is refused.
//!
//! Tests run one at a time (each cluster wants both cores). Every wait is a condition with a
//! deadline, mostly on `GET /v1/cluster/status`. Nothing here is random.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kvorum_node::transport::{CLUSTER_HEADER, SECRET_HEADER};
use kvorum_tests::{
    id_list, kvnode_bin, node_state, status_group, Cluster, ClusterOptions, ONE_AT_A_TIME,
};
use serde_json::{json, Value};

/// Heartbeat silence after which a node is suspect: 1.5 s (the heartbeat interval is 1 s).
const SUSPECT_AFTER_MS: &str = "1500";
/// Heartbeat silence after which a node is dead and repaired: 5 s, as in partitions.rs.
const DEAD_AFTER_MS: &str = "5000";
/// The test-only fault that holds every repair step this long before it runs.
const STEP_DELAY_ENV: &str = "KVORUM_FAULT_TASK_STEP_DELAY_MS";

/// `nodes` nodes, K=3, short failure-detection timeouts, every repair step held `step_delay_ms`.
fn options(nodes: usize, step_delay_ms: u64) -> ClusterOptions {
    ClusterOptions::new(kvnode_bin!(), nodes, 3)
        .with_env("KVORUM_SUSPECT_AFTER_MS", SUSPECT_AFTER_MS)
        .with_env("KVORUM_DEAD_AFTER_MS", DEAD_AFTER_MS)
        .with_env(STEP_DELAY_ENV, &step_delay_ms.to_string())
}

/// The voter sets of `group`'s membership as a replica reports it in `s` (two sets during a
/// joint change); empty when unknown.
fn voter_sets(s: &Value, group: u64) -> Vec<Vec<u64>> {
    status_group(s, group)
        .and_then(|g| g["voters"].as_array())
        .map(|sets| sets.iter().map(id_list).collect())
        .unwrap_or_default()
}

/// Panics if some voter set of `group` in `s` has more than `k` voters.
fn assert_at_most_k_voters(s: &Value, group: u64, k: usize) {
    for set in voter_sets(s, group) {
        assert!(
            set.len() <= k,
            "group {group} has {} voters {set:?} (K={k}): {}",
            set.len(),
            status_group(s, group).unwrap()
        );
    }
}

/// The tasks of a status, as (group, dead, replacement, step).
fn tasks(s: &Value) -> Vec<(u64, u64, u64, String)> {
    s["tasks"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["group"].as_u64().unwrap_or(u64::MAX),
                        t["dead"].as_u64().unwrap_or(0),
                        t["replacement"].as_u64().unwrap_or(0),
                        t["step"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
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
                status_group(s, 2).is_some_and(|g| id_list(&g["members"]) == vec![4, 6, 7])
                    && node_state(s, 5) == "removed"
                    && tasks(s).is_empty()
                    && sets == vec![vec![4, 6, 7]]
            },
        )
        .await;
    eprintln!(
        "repair_never_has_more_than_k_voters: repaired {:?} after the kill; group 2 voter sets \
         seen: {seen:?}; {}",
        killed_at.elapsed(),
        status_group(&s, 2).unwrap()
    );
}

// With 8 nodes K=3 (groups 1–3 and 4–6, spares 7 and 8) and every repair step held 2 s, nodes 3
// and 5 are killed together: the status lists a repair of group 1 and one of group 2 at the same
// time, both finish (each group has 3 alive members, none of them 3 or 5), the config group
// replaces voter 3, and no group ever has more than 3 voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repairs_of_two_groups_run_in_parallel() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(options(8, 2000)).await;
    c.kill(c.index_of(3));
    c.kill(c.index_of(5));
    let killed_at = Instant::now();
    let s = c
        .wait_for_status(
            Duration::from_secs(40),
            "repairs of groups 1 and 2 listed at the same time",
            |s| {
                assert_at_most_k_voters(s, 1, 3);
                assert_at_most_k_voters(s, 2, 3);
                let t = tasks(s);
                t.iter().any(|t| t.0 == 1 && t.1 == 3) && t.iter().any(|t| t.0 == 2 && t.1 == 5)
            },
        )
        .await;
    eprintln!(
        "repairs_of_two_groups_run_in_parallel: {:?} after the kills, tasks {:?}",
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
                        let m = id_list(&g["members"]);
                        m.len() == 3
                            && !m.contains(&dead)
                            && m.iter().all(|id| node_state(s, *id) == "alive")
                    })
                };
                let voters = id_list(&s["config"]["voters"]);
                s["health_known"] == true
                    && repaired(1, 3)
                    && repaired(2, 5)
                    && voters.len() == 3
                    && !voters.contains(&3)
                    && node_state(s, 3) == "removed"
                    && node_state(s, 5) == "removed"
                    && tasks(s).is_empty()
            },
        )
        .await;
    eprintln!(
        "repairs_of_two_groups_run_in_parallel: all repaired {:?} after the kills: group 1 {}, \
         group 2 {}, config {}",
        killed_at.elapsed(),
        status_group(&s, 1).unwrap()["members"],
        status_group(&s, 2).unwrap()["members"],
        s["config"]["voters"]
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
                assert_ne!(node_state(s, 5), "removed", "node 5 was removed: {s}");
                status_group(s, 2).is_some_and(|g| id_list(&g["members"]) == vec![4, 5, 6])
                    && node_state(s, 5) == "alive"
                    && tasks(s).is_empty()
                    && voter_sets(s, 2) == vec![vec![4, 5, 6]]
            },
        )
        .await;
    assert_eq!(id_list(&s["spares"]), vec![7], "{s}");
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
    let keep = |s: &Value| {
        assert_ne!(node_state(s, cut), "removed", "node {cut} was removed: {s}");
        if let Some(g) = status_group(s, 2) {
            assert_eq!(
                id_list(&g["members"]),
                vec![4, 5, 6],
                "group 2 changed: {s}"
            );
        }
    };
    c.wait_for_status(
        Duration::from_secs(30),
        &format!("node {cut} seen dead"),
        |s| {
            keep(s);
            s["health_known"] == true && node_state(s, cut) == "dead"
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
        |s| s["health_known"] == true && node_state(s, 7) == "dead" && tasks(s).is_empty(),
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
            status_group(s, 2).is_some_and(|g| id_list(&g["members"]) == vec![4, 6, 7])
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
    let epoch = s["epoch"].as_u64().expect("an epoch");
    let cluster = s["cluster_id"].as_str().expect("a cluster id").to_string();
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
    assert_eq!(voter_sets(&s, 1), vec![vec![1, 2, 3]], "{s}");
}
