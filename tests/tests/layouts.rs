//! The initial layouts of partitioned clusters of real kvnode processes, and keys spread over
//! the groups by the slot hash.
//!
//! Tests run one at a time (each cluster wants both cores). Every wait is a condition with a
//! deadline, mostly on `GET /v1/cluster/status`. Random choices print their seed;
//! `KVORUM_TEST_SEED=<seed>` replays them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kvorum_router::SLOT_COUNT;
use kvorum_tests::workload::{node_clients, put_checked, read_checked, run_all, write_all};
use kvorum_tests::{
    assert_map_is, brief, group_of_key, keys_by_group, kvnode_bin, node_state, seed, status_group,
    status_node, Cluster, ClusterOptions, ONE_AT_A_TIME,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Asserts each group's share of `total` keys is 1/P ± 5% (relative).
fn assert_even_shares(what: &str, counts: &BTreeMap<u64, u64>, total: u64) {
    let ideal = 1.0 / counts.len() as f64;
    for (g, n) in counts {
        let share = *n as f64 / total as f64;
        assert!(
            (share - ideal).abs() <= ideal * 0.05,
            "{what}: group {g} holds {n} of {total} keys ({:.2}%), want {:.2}% ± 5%",
            share * 100.0,
            ideal * 100.0
        );
    }
}

// The initial map: 6 nodes K=3 make 2 groups of 3 with 2048 slots each and no spare; 7 nodes
// K=2 make 3 groups and spare 7; 5 nodes K=2 make 2 groups and spare 5. Every node's status and
// the map endpoint agree with the deterministic initial map, and a key of each group written
// through the last node reads back through every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn layouts() {
    let _one = ONE_AT_A_TIME.lock().await;
    for (nodes, k, groups, spares) in [(6, 3, 2, vec![]), (7, 2, 3, vec![7]), (5, 2, 2, vec![5])] {
        let started = Instant::now();
        let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), nodes, k)).await;
        eprintln!(
            "layouts: {nodes} nodes K={k} ready after {:?}",
            started.elapsed()
        );
        check_layout(&c, groups, &spares).await;
    }
}

async fn check_layout(c: &Cluster, groups: usize, spares: &[u64]) {
    let map = c.initial_map();
    let n = c.nodes.len() as u64;
    let k = c.k();
    assert_eq!(map.groups.len(), groups, "initial map of {n} nodes K={k}");
    assert_eq!(map.spares(), spares, "initial map of {n} nodes K={k}");
    c.wait_for_status(Duration::from_secs(15), "every node alive", |s| {
        (1..=n).all(|id| node_state(s, id) == "alive")
    })
    .await;

    let mut cluster_id: Option<String> = None;
    for i in 0..c.nodes.len() {
        let s = c
            .status_of(i)
            .await
            .unwrap_or_else(|e| panic!("status of node {}: {e}", i + 1));
        let ctx = format!(
            "{n} nodes K={k}, status of node {}: {}",
            i + 1,
            brief(Some(&s))
        );
        assert_eq!(s.answered_by, i as u64 + 1, "{ctx}");
        assert_eq!(s.k, k, "{ctx}");
        assert_eq!(s.slot_count, SLOT_COUNT, "{ctx}");
        assert_eq!(s.hash, "xxh3_64", "{ctx}");
        assert!(s.epoch >= 1, "{ctx}");
        let id = cluster_id.get_or_insert_with(|| s.cluster_id.clone());
        assert!(s.cluster_id == *id, "{ctx}");

        assert_eq!(s.groups.len(), groups, "{ctx}");
        let mut sizes = Vec::new();
        for (gid, info) in &map.groups {
            let g = status_group(&s, gid.0).unwrap_or_else(|| panic!("no group {gid}: {ctx}"));
            let members: Vec<u64> = info.members.iter().copied().collect();
            assert_eq!(members.len(), k, "{ctx}");
            assert_eq!(g.members, members, "group {gid}: {ctx}");
            let ranges = map.slot_ranges(*gid);
            assert_eq!(ranges.len(), 1, "contiguous slots");
            assert_eq!(
                g.slots,
                format!("{}-{}", ranges[0].0, ranges[0].1),
                "group {gid}: {ctx}"
            );
            let size = g.slot_count as u64;
            assert_eq!(size, map.slot_count_of(*gid) as u64, "group {gid}: {ctx}");
            sizes.push(size);
        }
        assert_eq!(sizes.iter().sum::<u64>(), u64::from(SLOT_COUNT), "{ctx}");
        let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(
            max - min <= 1,
            "group sizes {sizes:?} differ by more than one"
        );
        if groups == 2 {
            assert_eq!(sizes, vec![2048, 2048], "{ctx}");
        }
        assert_eq!(s.spares, spares, "{ctx}");
        let voters: Vec<u64> = (1..=n.min(3)).collect();
        assert_eq!(s.config.voters, voters, "{ctx}");
        assert_eq!(s.nodes.len(), n as usize, "{ctx}");
        for id in 1..=n {
            let node = status_node(&s, id).unwrap_or_else(|| panic!("no node {id}: {ctx}"));
            let role = if spares.contains(&id) {
                "spare"
            } else {
                "replica"
            };
            assert_eq!(node.role.as_str(), role, "node {id}: {ctx}");
            assert_eq!(node.config_voter, voters.contains(&id), "node {id}: {ctx}");
            let hosted: Vec<u64> = map.group_of_node(id).map(|g| g.0).into_iter().collect();
            let groups: Vec<u64> = node.groups.iter().map(|g| g.0).collect();
            assert_eq!(groups, hosted, "node {id}: {ctx}");
        }
    }

    // The map endpoint, from the first and the last node, is the initial map.
    for i in [0, c.nodes.len() - 1] {
        let m = c
            .get_json(i, "/v1/cluster/map")
            .await
            .unwrap_or_else(|e| panic!("map from node {}: {e}", i + 1));
        assert_map_is(&m, &map, &format!("map from node {}", i + 1));
    }

    // A key of each group written through the last node (the spare, if any) reads back through
    // every node.
    let keys: Vec<String> = keys_by_group(&map, "layout-", 1)
        .into_values()
        .flatten()
        .collect();
    let clients = node_clients(c, Duration::from_secs(10));
    let last = c.nodes.len() - 1;
    for key in &keys {
        put_checked(&clients, last, key)
            .await
            .unwrap_or_else(|e| panic!("write of {key}: {e}"));
        for (i, client) in clients.iter().enumerate() {
            read_checked(client, key, false)
                .await
                .unwrap_or_else(|e| panic!("read via node {}: {e}", i + 1));
        }
    }
}

// 10,000 keys written through random nodes of 7 nodes with K=3 (2 groups and a spare) all read
// back, linearizably, through every node including the spare; each group holds half of them ±5%,
// by the slot hash and by the key counts in the status once they converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_keys() {
    const KEYS: usize = 10_000;
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("ten_thousand_keys");
    let mut rng = StdRng::seed_from_u64(seed);
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 7, 3)).await;
    let map = c.initial_map();
    assert_eq!((map.groups.len(), map.spares()), (2, vec![7]));
    let keys: Vec<String> = (0..KEYS).map(|i| format!("key-{i:05}")).collect();

    let mut by_hash: BTreeMap<u64, u64> = map.groups.keys().map(|g| (g.0, 0)).collect();
    for key in &keys {
        *by_hash.get_mut(&group_of_key(&map, key)).unwrap() += 1;
    }
    eprintln!("ten_thousand_keys: keys per group by the slot hash {by_hash:?}");
    assert_even_shares("by the slot hash", &by_hash, KEYS as u64);

    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(300), write_all(&c, &keys, &mut rng))
        .await
        .expect("10,000 writes within 300 s");
    let took = started.elapsed();
    eprintln!(
        "ten_thousand_keys: {KEYS} writes in {took:?} ({:.0}/s)",
        KEYS as f64 / took.as_secs_f64()
    );

    // Every key through every node: item (node, key), spread so all nodes are read at once.
    let started = Instant::now();
    let clients = node_clients(&c, Duration::from_secs(10));
    let n = c.nodes.len();
    let items: Vec<(usize, String)> = (0..KEYS * n)
        .map(|j| (j % n, keys[j / n].clone()))
        .collect();
    let failed = tokio::time::timeout(
        Duration::from_secs(400),
        run_all(items, 32, move |(node, key)| {
            let clients = clients.clone();
            async move {
                read_checked(&clients[node], &key, false)
                    .await
                    .map_err(|e| format!("via node {}: {e}", node + 1))
            }
        }),
    )
    .await
    .expect("70,000 reads within 400 s");
    let took = started.elapsed();
    eprintln!(
        "ten_thousand_keys: {} linearizable reads in {took:?} ({:.0}/s)",
        KEYS * n,
        (KEYS * n) as f64 / took.as_secs_f64()
    );
    let mut failed_per_node = vec![0usize; n];
    for ((node, _), _) in &failed {
        failed_per_node[*node] += 1;
    }
    assert!(
        failed.is_empty(),
        "reads failed per node {failed_per_node:?}, e.g. {:?}; logs in {}",
        &failed[..failed.len().min(5)],
        c.path().display()
    );

    // The status counts come from the leaders' heartbeats: wait for them to catch up.
    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            "status key counts equal to the slot-hash split",
            |s| {
                by_hash
                    .iter()
                    .all(|(g, count)| status_group(s, *g).and_then(|x| x.keys) == Some(*count))
            },
        )
        .await;
    let by_status: BTreeMap<u64, u64> = by_hash
        .keys()
        .map(|g| (*g, status_group(&s, *g).unwrap().keys.unwrap()))
        .collect();
    eprintln!("ten_thousand_keys: keys per group in the status {by_status:?}");
    assert_even_shares("by the status", &by_status, KEYS as u64);
}
