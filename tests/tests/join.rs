//! Joining a running cluster (docs/architecture.md "Cluster formation"),
//! with real processes: a node started with `--join`, or with a VIEW of its own on an empty data
//! directory while another cluster runs at those addresses, never creates a cluster. It waits to
//! be added, serving only `/healthz` and `GET /v1/join` (503 `joining` everywhere else), and the
//! running cluster does not change: no new node in its status, the same epoch.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use kvorum_tests::{kvnode_bin, Cluster, ClusterOptions, ExtraNode, ONE_AT_A_TIME};
use reqwest::StatusCode;
use serde_json::Value;

/// Longest wait for a joining node to answer as waiting.
const WAIT: Duration = Duration::from_secs(20);

/// `method path` on `addr`: the status, the Retry-After header and the JSON body (Null if none).
async fn call(
    method: reqwest::Method,
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, String, Value) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let resp = http
        .request(method, format!("http://{addr}{path}"))
        .json(&serde_json::json!({"value": "v"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path} on {addr}: {e}"));
    let code = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp.json().await.unwrap_or(Value::Null);
    (code, retry, body)
}

/// A settled cluster of 3 nodes (K=3) and a node started with `--join` that waits to be added;
/// with the cluster's id and its settled epoch.
async fn three_and_a_joiner() -> (Cluster, ExtraNode, String, u64) {
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    let cluster = cluster_id(&c).await;
    let epoch = c.wait_settled(WAIT).await.epoch;
    let first = c.nodes[0].addr.to_string();
    let mut joiner = c.spawn_extra(Cluster::free_addr("127.0.0.4"), &["--join", &first], &[]);
    assert_waits(&c, &mut joiner, &cluster, epoch, "the --join node").await;
    (c, joiner, cluster, epoch)
}

/// Waits until the node at `addr` answers `GET /v1/join` as a member.
async fn wait_member(c: &Cluster, addr: SocketAddr) {
    c.wait_until(
        WAIT,
        "the joiner answering /v1/join as a member",
        || async move {
            let Ok(r) = reqwest::Client::new()
                .get(format!("http://{addr}/v1/join"))
                .send()
                .await
            else {
                return false;
            };
            r.json::<Value>()
                .await
                .is_ok_and(|v| v["state"] == "member")
        },
    )
    .await;
}

/// The cluster status as node 1 answers it, as JSON.
async fn status(c: &Cluster) -> Value {
    c.get_json(0, "/v1/cluster/status").await.unwrap()
}

/// The cluster id the cluster's nodes report.
async fn cluster_id(c: &Cluster) -> String {
    let (code, _, member) = call(reqwest::Method::GET, c.nodes[0].addr, "/v1/join").await;
    assert_eq!(code, StatusCode::OK, "{member}");
    assert_eq!(member["state"], "member", "{member}");
    assert_eq!(member["node"], 1, "{member}");
    assert_eq!(member["addr"], c.nodes[0].addr.to_string(), "{member}");
    member["cluster_id"].as_str().unwrap().to_string()
}

/// Checks that `joiner` waits to be added to the cluster whose id is `cluster`, serves nothing
/// else, and that the cluster does not list it and is still at `epoch`.
async fn assert_waits(c: &Cluster, joiner: &mut ExtraNode, cluster: &str, epoch: u64, what: &str) {
    let addr = joiner.addr;
    c.wait_joining(addr, WAIT, &format!("{what} to answer /v1/join waiting"))
        .await;
    let (code, _, state) = call(reqwest::Method::GET, addr, "/v1/join").await;
    assert_eq!(code, StatusCode::OK, "{what}: {state}");
    assert_eq!(state["addr"], addr.to_string(), "{what}: {state}");
    assert_eq!(state["node"], Value::Null, "{what}: {state}");
    assert_eq!(state["cluster_id"], cluster, "{what}: {state}");
    assert_eq!(
        state["incarnation"].as_str().map(str::len),
        Some(32),
        "{what}: {state}"
    );
    let (code, _, _) = call(reqwest::Method::GET, addr, "/healthz").await;
    assert_eq!(code, StatusCode::OK, "{what}: /healthz");
    for (method, path) in [
        (reqwest::Method::GET, "/v1/keys/k"),
        (reqwest::Method::PUT, "/v1/keys/k"),
        (reqwest::Method::GET, "/v1/cluster/status"),
        (reqwest::Method::GET, "/v1/cluster/map"),
        (reqwest::Method::POST, "/internal/v1/heartbeat"),
    ] {
        let (code, retry, body) = call(method.clone(), addr, path).await;
        assert_eq!(
            code,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {method} {path}: {body}"
        );
        assert_eq!(body["code"], "joining", "{what}: {method} {path}: {body}");
        assert_eq!(retry, "1", "{what}: {method} {path}");
    }
    let status = status(c).await;
    let nodes = status["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{what}: {status}");
    assert!(
        nodes.iter().all(|n| n["addr"] != addr.to_string()),
        "{what} is in the status: {status}"
    );
    assert_eq!(
        status["epoch"], epoch,
        "{what}: the epoch changed: {status}"
    );
    assert!(
        joiner.exited().is_none(),
        "{what} exited: {}",
        joiner.log_text()
    );
    let log = joiner.log_text();
    assert!(
        log.contains("waiting to be added") && log.contains(&format!("kvctl add-node {addr}")),
        "{what}: its log does not say it waits to be added:\n{log}"
    );
}

// A node started with --join, and a node started with a VIEW of 4 addresses on an empty data
// directory while a 3-node cluster runs at three of them, both wait to be added: neither creates
// a cluster, and the running cluster does not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_nodes_wait_to_be_added() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (c, mut joiner, cluster, epoch) = three_and_a_joiner().await;
    joiner.kill();

    let addr = Cluster::free_addr("127.0.0.4");
    let mut view = c.view();
    view.push(addr.to_string());
    let view = view.join(",");
    let mut viewed = c.spawn_extra(addr, &[], &[("VIEW", &view)]);
    assert_waits(
        &c,
        &mut viewed,
        &cluster,
        epoch,
        "the node with a VIEW of 4",
    )
    .await;
    assert!(
        viewed
            .log_text()
            .contains("another cluster runs at addresses of this node's view"),
        "{}",
        viewed.log_text()
    );
    // Its data directory holds no identity: it has not become a node of any cluster.
    assert!(!viewed.data_dir.join("kvorum-node.json").exists());
}

// A new node at an address the cluster knows as a member with another data directory refuses to
// start rather than wait; once that member was replaced and removed, a new node may come back at
// the address and is added under a new id (ids are never reused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_at_a_members_address_refuses_and_a_removed_address_comes_back_new() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Group 1 = nodes 1, 2, 3; node 4 is the spare that replaces node 3.
    let mut c = Cluster::start(
        ClusterOptions::new(kvnode_bin!(), 4, 3)
            .with_env("KVORUM_SUSPECT_AFTER_MS", "1500")
            .with_env("KVORUM_DEAD_AFTER_MS", "4000"),
    )
    .await;
    c.wait_settled(WAIT).await;
    let first = c.nodes[0].addr.to_string();
    let addr3 = c.nodes[2].addr;
    c.kill(2);

    let mut joiner = c.spawn_extra(addr3, &["--join", &first], &[]);
    let exit = joiner.wait_for_exit(WAIT).await;
    let log = joiner.log_text();
    assert!(exit.is_some_and(|s| !s.success()), "{exit:?}: {log}");
    assert!(log.contains("with another data directory"), "{log}");

    // The joiner asks node 1, so wait for node 1's own map (it learns maps from heartbeats).
    c.wait_until(
        Duration::from_secs(40),
        "node 1's map listing node 3 as removed",
        || async {
            c.get_json(0, "/v1/cluster/map")
                .await
                .is_ok_and(|v| v["map"]["nodes"]["3"]["state"] == "removed")
        },
    )
    .await;
    // Once node 3 is removed, a new node (a new data directory) may come back at its address:
    // it waits, and adding it gives it a new id.
    let joiner = c.spawn_extra(addr3, &["--join", &first], &[]);
    c.wait_joining(addr3, WAIT, "the new node at node 3's address waiting")
        .await;
    // The config voter on node 3 is repaired first (a change waits for no running task).
    c.wait_for_status(WAIT, "node 3 out of the config voters, no task", |s| {
        !s.config.voters.contains(&3) && s.tasks.is_empty()
    })
    .await;
    let p = c.client().add_node(&addr3.to_string()).await.expect("add");
    let done = c
        .client()
        .wait_task(p.id, Duration::from_millis(200), |_| {})
        .await
        .expect("wait");
    assert_eq!(done.state, kvorum_client::TaskState::Done, "{done:?}");
    assert_eq!(done.node, Some(5), "{done:?}");
    c.wait_for_status(WAIT, "node 5 alive at node 3's old address", |s| {
        s.nodes.iter().any(|n| {
            n.id == 5 && n.addr == addr3.to_string() && n.state == kvorum_wire::NodeState::Alive
        })
    })
    .await;
    drop(joiner);
}

// The --join node is added (POST /v1/cluster/nodes): it takes the id the map gives it, answers
// /v1/join as a member, and shows in the status as an alive spare with its incarnation recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_joiner_becomes_a_spare() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (c, mut joiner, cluster, _) = three_and_a_joiner().await;
    let first = c.nodes[0].addr.to_string();
    let addr = joiner.addr;

    let http = reqwest::Client::new();
    let resp = http
        .post(format!("http://{first}/v1/cluster/nodes"))
        .json(&serde_json::json!({ "addr": addr.to_string() }))
        .send()
        .await
        .unwrap();
    let code = resp.status();
    let task: Value = resp.json().await.unwrap();
    assert!(code.is_success(), "{code}: {task}");
    let id = task["id"].as_u64().unwrap();
    c.wait_until(
        Duration::from_secs(60),
        "the add-node task done",
        || async {
            c.get_json(0, &format!("/v1/cluster/tasks/{id}"))
                .await
                .is_ok_and(|t| t["state"] == "done")
        },
    )
    .await;
    wait_member(&c, addr).await;
    let (_, _, state) = call(reqwest::Method::GET, addr, "/v1/join").await;
    assert_eq!(state["node"], 4, "{state}");
    assert_eq!(state["cluster_id"], cluster, "{state}");
    c.wait_until(
        WAIT,
        "node 4 an alive spare with its incarnation recorded",
        || async {
            let s = status(&c).await;
            let map = c.get_json(0, "/v1/cluster/map").await.unwrap();
            s["spares"] == serde_json::json!([4])
                && s["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|n| n["id"] == 4 && n["state"] == "alive" && n["role"] == "spare")
                && map["map"]["nodes"]["4"]["incarnation"] == state["incarnation"]
        },
    )
    .await;
    // It serves the client API now (forwarding to the group's leader).
    let (code, _, body) = call(reqwest::Method::PUT, addr, "/v1/keys/k").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert!(joiner.exited().is_none());
}

// A metadata leader killed as a joiner becomes a member: the next metadata leader may not have
// installed the epoch that added it when its first heartbeats arrive. It must not answer them
// `node_removed` (the joiner would exit for good): the joiner is still running 10 s later, and an
// alive spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_survives_the_metadata_leader_killed_as_it_is_added() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (mut c, mut joiner, _, _) = three_and_a_joiner().await;
    let first = c.nodes[0].addr.to_string();
    let addr = joiner.addr;
    let leader = status(&c).await["metadata_leader"].as_u64().unwrap();
    let resp = reqwest::Client::new()
        .post(format!("http://{first}/v1/cluster/nodes"))
        .json(&serde_json::json!({ "addr": addr.to_string() }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    // The moment the joiner learns it is a member, its metadata leader dies.
    wait_member(&c, addr).await;
    c.kill(leader as usize - 1);
    stays_up(&mut joiner, "after the metadata leader died").await;
    let other = if leader == 1 { 1 } else { 0 };
    wait_alive_spare(&c, other).await;
    assert!(joiner.exited().is_none());
}

/// Asserts that `joiner` keeps running for 10 s (`when` completes the failure message).
async fn stays_up(joiner: &mut ExtraNode, when: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < until {
        assert!(
            joiner.exited().is_none(),
            "the joiner exited {when}:\n{}",
            joiner.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until node `via`'s status shows node 4 (the joiner) alive.
async fn wait_alive_spare(c: &Cluster, via: usize) {
    c.wait_until(WAIT, "node 4 an alive spare", || async {
        c.get_json(via, "/v1/cluster/status").await.is_ok_and(|s| {
            s["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["id"] == 4 && n["state"] == "alive"))
        })
    })
    .await;
}

/// How long a re-added node must stay up while the group that listed the old node's learner
/// keeps replicating (its leader sends an append or heartbeat every 250 ms).
const STAYS_UP_FOR: Duration = Duration::from_secs(5);

// A change that fails after its AddLearner step, then the spare it tried to add removed, wiped
// and its address added again: the failed change's learner is removed from the group, and a
// Raft RPC still addressed to the old id would be refused, not obeyed, by the new node. So the
// new node stays up (before, every append of the group's leader for the old id stopped it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readded_address_of_a_failed_changes_learner_stays_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    // Groups {1,2} and {3,4}, spare 5; config voters 1, 2, 3. A learner that never catches up
    // fails its step within seconds.
    let mut c = Cluster::start(
        ClusterOptions::new(kvnode_bin!(), 5, 2)
            .with_env("KVORUM_FAULT_CATCH_UP_WAIT_MS", "1500")
            .with_env("KVORUM_FAULT_STEP_FAIL_LIMIT_MS", "2000"),
    )
    .await;
    c.wait_settled(WAIT).await;
    let client = c.client();
    let addr5 = c.nodes[4].addr;

    // Removing node 4 replaces it by spare 5: AddLearner(group 2, 5), then the swap. With node 5
    // paused, the learner never catches up and the change fails after adding it.
    c.pause(4, true);
    let p = client.remove_node(4).await.expect("remove accepted");
    let done = client
        .wait_task(p.id, Duration::from_millis(200), |_| {})
        .await
        .expect("wait");
    assert_eq!(done.state, kvorum_client::TaskState::Failed, "{done:?}");
    c.pause(4, false);

    // The spare leaves, learns it was removed and exits.
    let p = client.remove_node(5).await.expect("remove of the spare");
    let done = client
        .wait_task(p.id, Duration::from_millis(200), |_| {})
        .await
        .expect("wait");
    assert_eq!(done.state, kvorum_client::TaskState::Done, "{done:?}");
    let exit = c.wait_for_exit(4, WAIT).await;
    assert!(exit.is_some(), "node 5 did not exit once removed");

    // A new node (a new data directory) at node 5's address is added under id 6.
    let first = c.nodes[0].addr.to_string();
    let mut joiner = c.spawn_extra(addr5, &["--join", &first], &[]);
    c.wait_joining(addr5, WAIT, "the new node at node 5's address waiting")
        .await;
    let p = client.add_node(&addr5.to_string()).await.expect("add");
    let done = client
        .wait_task(p.id, Duration::from_millis(200), |_| {})
        .await
        .expect("wait");
    assert_eq!(done.state, kvorum_client::TaskState::Done, "{done:?}");
    assert_eq!(done.node, Some(6), "{done:?}");
    c.wait_for_status(WAIT, "node 6 alive at node 5's old address", |s| {
        s.nodes.iter().any(|n| {
            n.id == 6 && n.addr == addr5.to_string() && n.state == kvorum_wire::NodeState::Alive
        })
    })
    .await;
    let until = std::time::Instant::now() + STAYS_UP_FOR;
    while std::time::Instant::now() < until {
        assert!(
            joiner.exited().is_none(),
            "node 6 stopped: {}",
            joiner.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !joiner.log_text().contains("not the incarnation"),
        "{}",
        joiner.log_text()
    );
}

// A metadata leader cut off from the other config voters (but not from the other nodes) still
// leads in its own eyes (openraft 0.9 has no check-quorum), with a map that stops at the cut. A
// joiner that the new metadata leader adds, and that then loses its way to the new leader, sends
// its heartbeats to the others, the old leader included: it must not be told `node_removed` by a
// map older than the one that added it (before, the old leader answered `node_removed` and the
// joiner exited for good). It is still running 10 s later, and an alive spare after the heal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiner_is_not_removed_by_a_deposed_metadata_leader() {
    if !kvorum_tests::nemesis::partitions_available(
        "joiner_is_not_removed_by_a_deposed_metadata_leader",
    ) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let (c, mut joiner, _, _) = three_and_a_joiner().await;
    let addr = joiner.addr;
    let old = status(&c).await["metadata_leader"].as_u64().unwrap() as usize - 1;
    let ips: Vec<std::net::IpAddr> = c
        .nodes
        .iter()
        .map(|n| n.addr.ip())
        .chain([addr.ip()])
        .collect();
    let j = ips.len() - 1;
    let pair = |a: usize, b: usize, x: usize, y: usize| (a == x && b == y) || (a == y && b == x);
    let p = kvorum_tests::nemesis::Partitioner::new().expect("partitions (checked above)");
    // The old leader loses the other config voters (nodes 0..3 are all voters).
    let cut_old = move |a: usize, b: usize| !(a < 3 && b < 3 && a != b && (a == old || b == old));
    p.cut(&ips, cut_old).expect("nft");
    let other = (0..3).find(|i| *i != old).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    let new = loop {
        let s = c.get_json(other, "/v1/cluster/status").await;
        let l = s.ok().and_then(|s| s["metadata_leader"].as_u64());
        if let Some(l) = l.map(|l| l as usize - 1).filter(|l| *l != old) {
            break l;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no new metadata leader on the majority side within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/cluster/nodes", c.nodes[new].addr))
        .json(&serde_json::json!({ "addr": addr.to_string() }))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    wait_member(&c, addr).await;
    // Now the joiner loses the new leader too: its heartbeats go to the other nodes.
    p.cut(&ips, |a, b| cut_old(a, b) && !pair(a, b, j, new))
        .expect("nft");
    let when = format!(
        "while the deposed metadata leader {} was reachable",
        old + 1
    );
    stays_up(&mut joiner, &when).await;
    p.heal().expect("nft heal");
    wait_alive_spare(&c, other).await;
    assert!(joiner.exited().is_none());
}
