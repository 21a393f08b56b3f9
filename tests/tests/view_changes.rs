//! View changes on real kvnode processes: `kvctl add-node` / `remove-node` through the client
//! library, the planner's target reached, slots moved with their data, every acknowledged key
//! readable through every node afterwards, versions never going backwards across a move, and
//! refusals that change nothing.
//!
//! Tests run one at a time (each cluster wants both cores). Every wait is a condition with a
//! deadline. Random choices print their seed; `KVORUM_TEST_SEED=<seed>` replays them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use kvorum_client::{ClientError, TaskState};
use kvorum_tests::workload::{assert_readable, assert_readable_through, write_all};
use kvorum_tests::{
    brief, direct_client, kvnode_bin, node_state, seed, spread_keys, status_group, Cluster,
    ClusterOptions, ExtraNode, ONE_AT_A_TIME,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Longest a whole view change of these small clusters may take.
const CHANGE_WITHIN: Duration = Duration::from_secs(120);

/// Adds `j` with `kvctl add-node`'s call and waits until the change is done.
async fn add(c: &Cluster, j: &ExtraNode) -> kvorum_client::TaskProgress {
    let what = format!("add {}", j.addr);
    run_change(c, &what, c.client().add_node(&j.addr.to_string()).await).await
}

/// Reads every key through each of `extra` (new nodes), linearizably.
async fn assert_readable_via(extra: &[ExtraNode], keys: &[String]) {
    for j in extra {
        let client = direct_client(j.addr, Duration::from_secs(10), Duration::from_secs(20));
        assert_readable_through(&client, keys, false).await;
    }
}

/// Runs `start` (an add or remove), waits for its task to end, and asserts it is `done`.
async fn run_change(
    c: &Cluster,
    what: &str,
    started: Result<kvorum_client::TaskProgress, ClientError>,
) -> kvorum_client::TaskProgress {
    let p = started.unwrap_or_else(|e| panic!("{what}: refused: {e}"));
    let client = c.client();
    let mut seen = Vec::new();
    let done = tokio::time::timeout(
        CHANGE_WITHIN,
        client.wait_task(p.id, Duration::from_millis(200), |p| {
            seen.push((p.step, p.slots_moved))
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: task {} not final within {CHANGE_WITHIN:?}", p.id))
    .unwrap_or_else(|e| panic!("{what}: waiting for task {}: {e}", p.id));
    assert_eq!(
        done.state,
        TaskState::Done,
        "{what}: task ended {:?}: {:?}; logs in {}",
        done.state,
        done.error,
        c.path().display()
    );
    assert!(
        seen.windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1),
        "{what}: progress went backwards: {seen:?}"
    );
    assert_eq!(done.slots_moved, done.slots_total, "{what}: {done:?}");
    done
}

// 6 nodes K=2 (3 groups): removing a replica with no spare dissolves the smallest group (its
// slots move to the two others: 2048 each), its other member becomes the spare, the removed node
// stops; every key written before reads back through every remaining node, and a key that moved
// gets a higher version on its next write than it had before the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_replica_without_a_spare_dissolves_a_group() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("removing_a_replica_without_a_spare_dissolves_a_group");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 6, 2)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let map = c.initial_map();
    let keys = spread_keys(&map, "vc-remove-", 600);
    write_all(&c, &keys, &mut rng).await;
    let client = c.client();
    // Versions before the move of some keys of group 3 (the group that dissolves).
    let mut before: BTreeMap<String, u64> = BTreeMap::new();
    for k in keys
        .iter()
        .filter(|k| kvorum_tests::group_of_key(&map, k) == 3)
        .take(20)
    {
        before.insert(k.clone(), client.get(k, false).await.unwrap().version);
    }

    let done = run_change(&c, "remove node 6", client.remove_node(6).await).await;
    assert_eq!(done.slots_total, 1365, "{done:?}");

    let s = c
        .wait_for_status(Duration::from_secs(20), "2 groups and spare 5", |s| {
            s.groups.len() == 2 && s.spares == vec![5] && node_state(s, 6) == "removed"
        })
        .await;
    for g in [1, 2] {
        let gs = status_group(&s, g).unwrap_or_else(|| panic!("group {g}: {}", brief(Some(&s))));
        assert_eq!(gs.slot_count, 2048, "{}", brief(Some(&s)));
    }
    assert!(
        c.wait_for_exit(5, Duration::from_secs(15)).await.is_some(),
        "the removed node 6 kept running"
    );
    assert_readable(&c, &keys, &[0, 1, 2, 3, 4], seed).await;
    for (k, v) in &before {
        let now = client.put(k, "after the move", None).await.unwrap();
        assert!(
            now > *v,
            "key {k}: version {now} after the move, {v} before"
        );
    }
    let moved: Vec<String> = before.keys().cloned().collect();
    let rest: Vec<String> = keys
        .iter()
        .filter(|k| !before.contains_key(*k))
        .cloned()
        .collect();

    // Node 6 comes back as a new node (new data directory, same address): with spare 5 it forms
    // a third group again, which gets a third of the slots.
    let ip6 = c.nodes[5].addr.ip().to_string();
    let j = c.start_joiner(&ip6).await;
    let done = add(&c, &j).await;
    assert_eq!(done.node, Some(7), "{done:?}");
    assert_eq!(done.slots_total, 1365, "{done:?}");
    let s = c
        .wait_for_status(Duration::from_secs(20), "3 groups, no spare", |s| {
            s.groups.len() == 3 && s.spares.is_empty()
        })
        .await;
    let mut counts: Vec<usize> = s.groups.iter().map(|g| g.slot_count).collect();
    counts.sort();
    assert_eq!(counts, vec![1365, 1365, 1366], "{}", brief(Some(&s)));
    assert_readable(&c, &rest, &[0, 1, 2, 3, 4], seed).await;
    assert_readable_via(std::slice::from_ref(&j), &rest).await;
    for k in &moved {
        assert_eq!(client.get(k, false).await.unwrap().value, "after the move");
    }
}

// The seed's growth scenario: 6 nodes K=3 (2 groups). Adding node 7 makes it a spare and moves
// nothing; adding 8 and 9 forms group 3 of {7, 8, 9}, and slots move until the groups own
// 1365/1365/1366; the keys spread over the three groups within ±5%, and every key reads back
// through every node, the new ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adding_three_nodes_forms_a_third_group() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("adding_three_nodes_forms_a_third_group");
    let mut rng = StdRng::seed_from_u64(seed);
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 6, 3)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let keys = spread_keys(&c.initial_map(), "vc-add-", 3000);
    write_all(&c, &keys, &mut rng).await;
    let start_epoch = c.status().await.expect("status").epoch;

    let j7 = c.start_joiner("127.0.0.7").await;
    let done = add(&c, &j7).await;
    assert_eq!((done.node, done.slots_total), (Some(7), 0), "{done:?}");
    let s = c
        .wait_for_status(Duration::from_secs(20), "spare 7", |s| s.spares == vec![7])
        .await;
    assert_eq!(s.groups.len(), 2, "{}", brief(Some(&s)));
    assert!(s.epoch > start_epoch);

    let j8 = c.start_joiner("127.0.0.8").await;
    let done = add(&c, &j8).await;
    assert_eq!((done.node, done.slots_total), (Some(8), 0), "{done:?}");
    let j9 = c.start_joiner("127.0.0.9").await;
    let done = add(&c, &j9).await;
    assert_eq!(done.node, Some(9), "{done:?}");
    assert_eq!(done.slots_total, 1365, "{done:?}");
    assert!(done.keys_moved > 0 && done.bytes_moved > 0, "{done:?}");

    let total = keys.len() as u64;
    // Key counts come from the groups' leaders with their heartbeats: wait until each group's
    // count is that of the keys in its slots (a sum alone can match while a source still counts
    // the keys of a batch its destination has not reported yet).
    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            "3 groups, each counting the keys of its slots",
            |s| {
                s.groups.len() == 3
                    && s.spares.is_empty()
                    && s.groups
                        .iter()
                        .all(|g| g.keys == Some(keys_in_slots(&keys, &g.slots)))
            },
        )
        .await;
    assert_eq!(
        s.groups.iter().map(|g| g.keys.unwrap_or(0)).sum::<u64>(),
        total,
        "{}",
        brief(Some(&s))
    );
    let mut counts: Vec<usize> = s.groups.iter().map(|g| g.slot_count).collect();
    counts.sort();
    assert_eq!(counts, vec![1365, 1365, 1366], "{}", brief(Some(&s)));
    let g3 = s.groups.iter().find(|g| g.id.0 == 3).expect("group 3");
    assert_eq!(g3.members, vec![7, 8, 9], "{}", brief(Some(&s)));
    for g in &s.groups {
        let share = g.keys.unwrap_or(0) as f64 / total as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.05 / 3.0,
            "group {} holds {share:.3} of the keys, want 1/3 ± 5%: {}",
            g.id.0,
            brief(Some(&s))
        );
    }
    assert_readable(&c, &keys, &[0, 1, 2, 3, 4, 5], seed).await;
    assert_readable_via(&[j7, j8, j9], &keys).await;
}

/// How many of `keys` are in the slots `ranges` (a status's `a-b,c` list) names.
fn keys_in_slots(keys: &[String], ranges: &str) -> u64 {
    let ranges: Vec<(u16, u16)> = ranges
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|r| {
            let (a, b) = r.split_once('-').unwrap_or((r, r));
            (a.parse().expect("a slot"), b.parse().expect("a slot"))
        })
        .collect();
    keys.iter()
        .filter(|k| {
            let slot = kvorum_router::slot_of(k.as_bytes()).0;
            ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
        })
        .count() as u64
}

// Refusals change nothing: removing an unknown node, the removal that would leave fewer than K
// nodes, a second change while one runs is not testable without a long change here, so it is
// covered by the unit tests of the planner and `start_change`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_changes_leave_the_map_alone() {
    let _one = ONE_AT_A_TIME.lock().await;
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    let s = c.wait_settled(Duration::from_secs(30)).await;
    let client = c.client();
    let code = |r: Result<kvorum_client::TaskProgress, ClientError>| match r {
        Err(ClientError::Api { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(code(client.remove_node(9).await), "unknown_node");
    assert_eq!(code(client.remove_node(2).await), "too_few_nodes");
    assert_eq!(code(client.add_node("127.0.0.1:1").await), "unreachable");
    assert_eq!(code(client.add_node("not an address").await), "bad_request");
    let after = c.status().await.expect("status");
    assert_eq!(after.epoch, s.epoch, "a refusal changed the map");
    assert!(after.tasks.is_empty(), "{}", brief(Some(&after)));
}

// 7 nodes K=2 (3 groups, spare 7): removing node 1 — a config voter, a member of group 1 and
// usually the metadata leader itself — puts spare 7 in its place in group 1, gives its config
// seat to another node, marks it removed (it stops), and moves nothing; the cluster keeps its
// data.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_the_metadata_leader_hands_over_its_roles() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("removing_the_metadata_leader_hands_over_its_roles");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 7, 2)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let keys = spread_keys(&c.initial_map(), "vc-meta-", 300);
    write_all(&c, &keys, &mut rng).await;
    let leader = c.metadata_leader().await;
    eprintln!("metadata leader before: {leader:?}");

    let client = c.client_of(&[1, 2, 3, 4, 5, 6]);
    let done = run_change(&c, "remove node 1", client.remove_node(1).await).await;
    assert_eq!(done.slots_total, 0, "{done:?}");
    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            "node 1 removed, 7 in group 1",
            |s| {
                node_state(s, 1) == "removed"
                    && status_group(s, 1).is_some_and(|g| g.members == vec![2, 7])
                    && !s.config.voters.contains(&1)
                    && s.config.voters.len() == 3
            },
        )
        .await;
    assert!(s.spares.is_empty(), "{}", brief(Some(&s)));
    assert!(
        c.wait_for_exit(0, Duration::from_secs(15)).await.is_some(),
        "the removed node 1 kept running"
    );
    assert_readable(&c, &keys, &[1, 2, 3, 4, 5, 6], seed).await;
}

// A change that runs long (every batch held 1 s after its Freeze): a second change is refused
// with `change_in_progress` and the running task's id, the map unchanged by the refusal; a
// cancel stops the change safely — the batch in flight rolls back, what moved stays moved, the
// task ends `cancelled` — and every key still reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_change_refuses_another_and_cancels_safely() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("a_running_change_refuses_another_and_cancels_safely");
    let mut rng = StdRng::seed_from_u64(seed);
    let c = Cluster::start(
        ClusterOptions::new(kvnode_bin!(), 6, 2)
            .with_env("KVORUM_FAULT_MOVE_HOLD", "after_freeze:1000"),
    )
    .await;
    c.wait_ready(Duration::from_secs(30)).await;
    let keys = spread_keys(&c.initial_map(), "vc-cancel-", 600);
    write_all(&c, &keys, &mut rng).await;
    let client = c.client();
    let p = client.remove_node(6).await.expect("remove node 6");
    // Wait until some slots moved, so that the cancel leaves a partial move behind.
    c.wait_until(Duration::from_secs(60), "some slots moved", || async {
        client.task(p.id).await.is_ok_and(|t| t.slots_moved > 0)
    })
    .await;
    let epoch = c.status().await.expect("status").epoch;
    match client.remove_node(5).await {
        Err(ClientError::ChangeInProgress { task, .. }) => assert_eq!(task, p.id),
        other => panic!("expected change_in_progress, got {other:?}"),
    }
    let after = c.status().await.expect("status");
    assert!(
        after.epoch - epoch <= 2,
        "the refusal changed the map? epoch {epoch} -> {}",
        after.epoch
    );

    client.cancel_task(p.id).await.expect("cancel");
    let end = client
        .wait_task(p.id, Duration::from_millis(200), |_| {})
        .await
        .expect("wait");
    assert_eq!(end.state, TaskState::Cancelled, "{end:?}");
    assert!(end.slots_moved < end.slots_total, "{end:?}");
    let s = c
        .wait_for_status(Duration::from_secs(20), "no task", |s| s.tasks.is_empty())
        .await;
    assert_eq!(s.groups.len(), 3, "{}", brief(Some(&s)));
    assert_eq!(node_state(&s, 6), "alive", "{}", brief(Some(&s)));
    let owned: usize = s.groups.iter().map(|g| g.slot_count).sum();
    assert_eq!(owned, 4096, "{}", brief(Some(&s)));
    assert_readable(&c, &keys, &[0, 1, 2, 3, 4, 5], seed).await;
}

// A group with a dead member cannot take part in a change: removing its other member is refused
// with `below_quorum`, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_group_below_quorum_refuses_a_change() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(
        ClusterOptions::new(kvnode_bin!(), 6, 2)
            .with_env("KVORUM_SUSPECT_AFTER_MS", "1500")
            .with_env("KVORUM_DEAD_AFTER_MS", "3000"),
    )
    .await;
    c.wait_ready(Duration::from_secs(30)).await;
    c.kill(4);
    let s = c
        .wait_for_status(Duration::from_secs(20), "node 5 dead", |s| {
            node_state(s, 5) == "dead"
        })
        .await;
    let client = c.client_of(&[0, 1, 2, 3, 5]);
    match client.remove_node(6).await {
        Err(ClientError::Api { code, .. }) => assert_eq!(code, "below_quorum"),
        other => panic!("expected below_quorum, got {other:?}"),
    }
    let after = c.status().await.expect("status");
    assert_eq!(after.epoch, s.epoch, "a refusal changed the map");
}

// `--config-voters 5`: the config group grows from the initial 3 voters to 5 as nodes arrive,
// and then survives the loss of two of them, the metadata leader included: the remaining three
// elect a new metadata leader, which answers the status and keeps the cluster serving (with 3
// voters, two lost would have stopped the metadata leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_config_voters_survive_two_lost() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(
        ClusterOptions::new(kvnode_bin!(), 6, 3).with_env("KVORUM_CONFIG_VOTERS", "5"),
    )
    .await;
    c.wait_ready(Duration::from_secs(30)).await;
    let s = c.status().await.expect("status");
    assert_eq!(s.config.voters.len(), 3, "{}", brief(Some(&s)));

    let j = c.start_joiner("127.0.0.7").await;
    let done = add(&c, &j).await;
    assert_eq!(done.node, Some(7), "{done:?}");
    let s = c
        .wait_for_status(Duration::from_secs(20), "5 config voters", |s| {
            s.config.voters.len() == 5 && s.config.leader.is_some()
        })
        .await;
    let voters = s.config.voters.clone();
    let leader = s.config.leader.unwrap();
    // The leader and another voter, not both in one data group (each group keeps its quorum).
    let group_of = |n: u64| {
        s.groups
            .iter()
            .find(|g| g.members.contains(&n))
            .map(|g| g.id)
    };
    let other = *voters
        .iter()
        .find(|v| **v != leader && **v <= 6 && group_of(**v) != group_of(leader))
        .unwrap_or_else(|| panic!("no second voter to stop: {}", brief(Some(&s))));
    for n in [leader, other] {
        c.kill(usize::try_from(n).unwrap() - 1);
    }
    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            "a new metadata leader among the three voters left",
            |s| {
                s.health_known
                    && s.config
                        .leader
                        .is_some_and(|l| l != leader && l != other && voters.contains(&l))
            },
        )
        .await;
    assert_eq!(s.config.voters.len(), 5, "{}", brief(Some(&s)));
    let client = c.client();
    let v = client
        .put("after-two-voters-lost", "x", None)
        .await
        .unwrap();
    assert_eq!(
        client
            .get("after-two-voters-lost", false)
            .await
            .unwrap()
            .version,
        v
    );
    drop(j);
}
