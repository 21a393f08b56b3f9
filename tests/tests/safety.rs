//! Safety rules with real kvnode processes: a replica that stops on a storage failure stops its
//! node (and the node is then repaired like a dead one), and a node's identity survives only with
//! its data directory (a wiped node never rejoins under its old id).
//!
//! Tests run one at a time (each cluster wants both cores). Every wait is a condition with a
//! deadline.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kvorum_tests::{kvnode_bin, node_state, status_group, Cluster, ClusterOptions, ONE_AT_A_TIME};

/// Short failure detection, so a repair fits in the test's deadlines.
fn options(nodes: usize, k: usize) -> ClusterOptions {
    ClusterOptions::new(kvnode_bin!(), nodes, k)
        .with_env("KVORUM_SUSPECT_AFTER_MS", "1500")
        .with_env("KVORUM_DEAD_AFTER_MS", "4000")
}

// A storage failure stops a replica for good (openraft never restarts it). The node must not
// go on looking healthy with a dead replica: it exits with the reason, and the metadata leader
// replaces it from the spare like any dead node; the write that triggered it is not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replica_stopped_by_storage_fault_stops_node_and_is_replaced() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Group 1 = nodes 1, 2, 3; node 4 is the spare.
    let mut c = Cluster::start(options(4, 3)).await;
    c.stop(1);
    c.restart_with_env(1, &[("KVORUM_FAULT_APPLY_FAIL_KEY", "boom")]);
    c.wait_for_status(Duration::from_secs(30), "node 2 alive again", |s| {
        node_state(s, 2) == "alive"
    })
    .await;
    let client = c.client();
    client.put("before", "1", None).await.unwrap();
    // Nodes 1 and 3 apply it; node 2's apply fails and its replica of group 1 stops. When node 2
    // led the group the client may see an error; the write still commits on the majority.
    let _ = client.put("boom", "x", None).await;
    let exit = c.wait_for_exit(1, Duration::from_secs(20)).await;
    let log = c.nodes[1].log_text();
    assert!(
        exit.is_some_and(|s| !s.success()),
        "node 2 kept running (exit: {exit:?}) after its replica stopped on a storage error; \
         logs in {}",
        c.path().display()
    );
    assert!(
        log.contains("stopped on a fatal error"),
        "node 2's log does not say why it stopped; logs in {}",
        c.path().display()
    );
    c.wait_for_status(
        Duration::from_secs(60),
        "the spare (node 4) replacing node 2 in group 1",
        |s| status_group(s, 1).is_some_and(|g| g.members == vec![1, 3, 4]),
    )
    .await;
    let client = c.client_of(&[0, 2, 3]);
    assert_eq!(client.get("boom", false).await.unwrap().value, "x");
    assert_eq!(client.get("before", false).await.unwrap().value, "1");
}

/// Whether node `i`'s map records an incarnation for every node of a `n`-node cluster.
async fn records_incarnations(c: &Cluster, i: usize, n: u64) -> bool {
    let Ok(v) = c.get_json(i, "/v1/cluster/map").await else {
        return false;
    };
    (1..=n).all(|id| v["map"]["nodes"][id.to_string()]["incarnation"].is_string())
}

// Raft amnesia: group {1,2,3}; a write W is acknowledged by nodes 1 and 2 while node 3 is cut
// off; node 2's disk is wiped. Were node 2 to come back under its old id with no log and no vote,
// node 3 (without W) could win an election with node 2's vote once node 1 is gone, and W would
// be lost. A wiped node must refuse to start while a peer knows it (checked at startup), and a
// wiped node that started anyway because its peers were unreachable must be refused by them and
// stop (checked on every Raft RPC and heartbeat). W survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_node_never_rejoins_under_its_old_id() {
    let _one = ONE_AT_A_TIME.lock().await;
    let mut c = Cluster::start(options(3, 3)).await;
    for i in 0..3 {
        c.wait_until(
            Duration::from_secs(30),
            "every node's map recording every incarnation",
            || records_incarnations(&c, i, 3),
        )
        .await;
    }
    // Roles by index: `leader` leads group 1, `cut` is cut off while W is written, `wiped` acks
    // W and then loses its disk.
    let leader = c.index_of(c.group_leader(1).await.unwrap());
    let (cut, wiped) = match leader {
        0 => (2, 1),
        1 => (2, 0),
        _ => (1, 0),
    };
    c.pause(cut, true);
    c.client_of(&[leader])
        .put("w", "acked", None)
        .await
        .unwrap();
    c.kill(wiped);
    std::fs::remove_dir_all(&c.nodes[wiped].data_dir).unwrap();

    // The leader answers the wiped node's startup probe: it refuses to start.
    c.restart(wiped);
    let exit = c.wait_for_exit(wiped, Duration::from_secs(20)).await;
    assert!(
        exit.is_some_and(|s| !s.success()),
        "a wiped node started under its old id while its peer knew it (exit: {exit:?}); \
         logs in {}",
        c.path().display()
    );
    assert!(c.nodes[wiped].log_text().contains("refusing to start"));

    // With every peer unreachable, the probe cannot tell, so the wiped node starts; once its
    // peers are back they refuse it and it stops.
    // (The refused start created nothing, but make sure.)
    let _ = std::fs::remove_dir_all(&c.nodes[wiped].data_dir);
    c.pause(leader, true);
    c.restart(wiped);
    c.wait_until(
        Duration::from_secs(20),
        "the wiped node serving",
        || async { c.get_json(wiped, "/healthz").await.is_ok() },
    )
    .await;
    c.pause(leader, false);
    c.pause(cut, false);
    let exit = c.wait_for_exit(wiped, Duration::from_secs(30)).await;
    assert!(
        exit.is_some_and(|s| !s.success()),
        "a wiped node kept running under its old id after its peers came back (exit: \
         {exit:?}); logs in {}",
        c.path().display()
    );
    assert!(c.nodes[wiped].log_text().contains("wiped or replaced"));

    // The two intact nodes still hold W.
    let w = c.client_of(&[leader, cut]).get("w", false).await;
    assert_eq!(
        w.map(|v| v.value).map_err(|e| e.to_string()),
        Ok("acked".to_string()),
        "logs in {}",
        c.path().display()
    );
}
