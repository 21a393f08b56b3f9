//! End-to-end tests of a replicated group with real kvnode processes on loopback addresses.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_client::ClientError;
use kvorum_tests::workload::{assert_readable_through, value_of, Load};
use kvorum_tests::{kvnode_bin, status_node, Cluster, ClusterOptions};

// Writes through a follower succeed; after SIGKILL of the leader under load a new leader takes
// over and every acknowledged write reads back; after all nodes are killed and restarted, every
// acknowledged write is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_leader_kill_and_full_restart() {
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    let leader = c.wait_for_leader(Duration::from_secs(30)).await;
    let follower = c.nodes.iter().position(|n| n.id != leader).unwrap();
    let fc = c.client_of(&[follower]);
    let follower_keys: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    for key in &follower_keys {
        let v = fc.put(key, &value_of(key), None).await.unwrap();
        assert!(v > 0);
    }
    assert_readable_through(&fc, &follower_keys, false).await;

    // Writers of `w{t}-{n}` through one client failing over between all nodes.
    let client = Arc::new(c.client());
    let started = Instant::now();
    let load = Load::through(client.clone(), &c.initial_map(), &[1], 4, "");
    let count = || load.acked(1, started);
    c.wait_until(Duration::from_secs(30), "100 acked writes", || async {
        count() >= 100
    })
    .await;

    let li = c.index_of(leader);
    c.kill(li);
    let before = count();
    let new_leader = c.wait_for_leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, leader, "the killed node cannot lead");
    c.wait_until(
        Duration::from_secs(30),
        "writes accepted after failover",
        || async { count() >= before + 100 },
    )
    .await;
    let keys: Vec<String> = load.finish().await.into_iter().map(|a| a.key).collect();
    eprintln!("{} acknowledged writes; checking them", keys.len());
    assert_readable_through(&client, &keys, false).await;

    c.restart(li);
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.restart(i);
    }
    c.wait_for_leader(Duration::from_secs(30)).await;
    assert_readable_through(&client, &keys, false).await;
    assert_readable_through(&client, &follower_keys, false).await;
}

// A node SIGKILLed in the middle of a write burst restarts cleanly, catches up, and then holds
// every acknowledged write in its own state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_killed_mid_burst_restarts_and_catches_up() {
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    let leader = c.wait_for_leader(Duration::from_secs(30)).await;
    let victim = c.nodes.iter().position(|n| n.id != leader).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let client = Arc::new(c.client_of(&others));
    let started = Instant::now();
    let load = Load::through(client, &c.initial_map(), &[1], 16, "");
    let count = || load.acked(1, started);
    c.wait_until(Duration::from_secs(30), "200 acked writes", || async {
        count() >= 200
    })
    .await;
    c.kill(victim);
    let before = count();
    c.wait_until(
        Duration::from_secs(30),
        "writes while the node is down",
        || async { count() >= before + 300 },
    )
    .await;
    c.restart(victim);
    c.wait_until(
        Duration::from_secs(30),
        "writes after the restart",
        || async { count() >= before + 600 },
    )
    .await;
    let keys: Vec<String> = load.finish().await.into_iter().map(|a| a.key).collect();
    // Catch-up: the restarted node's own state (a stale read there) holds every acked write.
    let local = c.client_of(&[victim]);
    let last = keys.last().unwrap().clone();
    c.wait_until(
        Duration::from_secs(30),
        "the restarted node to apply the last write",
        || {
            let local = &local;
            let last = last.clone();
            async move { local.get(&last, true).await.is_ok() }
        },
    )
    .await;
    assert_readable_through(&local, &keys, true).await;
}

// A spare (a node beyond the group's K members) serves reads and writes by forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spare_serves_by_forwarding() {
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 4, 3)).await;
    let spare = c.client_of(&[3]);
    let status = spare.status().await.unwrap();
    assert_eq!(status.answered_by, 4, "{status:?}");
    assert_eq!(
        status_node(&status, 4).unwrap().role.as_str(),
        "spare",
        "{status:?}"
    );
    assert_eq!(status.spares, vec![4], "{status:?}");
    spare.put("via-spare", "v", None).await.unwrap();
    assert_eq!(spare.get("via-spare", false).await.unwrap().value, "v");
    // A stale read through the spare is served by some member's local state: eventually "v".
    c.wait_until(
        Duration::from_secs(10),
        "a stale read to see the write",
        || async {
            spare
                .get("via-spare", true)
                .await
                .is_ok_and(|v| v.value == "v")
        },
    )
    .await;
    assert!(matches!(
        spare.get("absent", false).await,
        Err(ClientError::NotFound)
    ));
}
