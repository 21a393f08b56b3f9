//! Elections with real kvnode processes: a node cut off from its group's leader, while the other
//! member still hears it, gets no pre-vote, raises no term, and deposes nobody when the cut heals.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use kvorum_tests::nemesis::{partitions_available, Partitioner};
use kvorum_tests::{kvnode_bin, Cluster, ClusterOptions};

/// How long the link is cut: ten election timeouts (1 s by default). openraft's own timer made
/// the cut node campaign every 2–5 s.
const CUT: Duration = Duration::from_secs(10);
/// When writes through the cut node start: once it has not heard its leader for twice the
/// election timeout.
const RELAY_AFTER: Duration = Duration::from_secs(2);
/// How long after the heal leaders and terms are watched.
const WATCH_AFTER_HEAL: Duration = Duration::from_secs(5);

/// The Raft term of each group of the node at `addr`, from its `/metrics`.
async fn terms(http: &reqwest::Client, addr: SocketAddr) -> BTreeMap<u64, u64> {
    let text = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("kvorum_raft_term{group=\""))
        .filter_map(|l| {
            let (group, rest) = l.split_once("\"} ")?;
            Some((group.parse().ok()?, rest.trim().parse().ok()?))
        })
        .collect()
}

// The link between the groups' leader and one follower is cut; the third node hears both. The
// cut follower asks for pre-votes and is refused (the third node still hears the leader), so it
// never campaigns: its terms do not rise, writes go on (those sent to the cut node are relayed by
// the third node, which reaches the leader), and when the cut
// heals neither group changes its leader or term.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_cut_from_its_leader_deposes_no_one_when_it_returns() {
    if !partitions_available("a_node_cut_from_its_leader_deposes_no_one_when_it_returns") {
        return;
    }
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 3, 3)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let leader = c.wait_for_leader(Duration::from_secs(30)).await;
    let config_leader = c.metadata_leader().await.unwrap();
    // The cut node leads nothing; with three nodes and two groups there is always one.
    let cut = c
        .nodes
        .iter()
        .map(|n| n.id)
        .find(|id| *id != leader && *id != config_leader)
        .unwrap();
    let (li, ci) = (c.index_of(leader), c.index_of(cut));
    // The test talks to the nodes from the third node's address, which the cut leaves connected
    // to both ends (its default, 127.0.0.1, may be either end of the cut). Writes go through the
    // third node, which forwards them to the leader.
    let third = (0..c.nodes.len()).find(|i| *i != li && *i != ci).unwrap();
    let client = c.client_of(&[third]);
    let http = reqwest::Client::builder()
        .local_address(c.nodes[third].addr.ip())
        .build()
        .unwrap();
    let addr = |id: u64| c.nodes[c.index_of(id)].addr;
    let mut before = BTreeMap::new();
    for n in &c.nodes {
        before.insert(n.id, terms(&http, n.addr).await);
    }
    println!(
        "data leader {leader}, config leader {config_leader}, cutting node {cut}; terms {before:?}"
    );
    let ips: Vec<IpAddr> = c.nodes.iter().map(|n| n.addr.ip()).collect();
    let p = Partitioner::new().expect("partitions (checked above)");
    p.cut(&ips, |a, b| !((a == li && b == ci) || (a == ci && b == li)))
        .expect("nft");
    let cut_at = Instant::now();
    let mut writes = 0u64;
    let mut relayed = Vec::new();
    while cut_at.elapsed() < CUT {
        client.put(&format!("w{writes}"), "v", None).await.unwrap();
        writes += 1;
        if writes % 10 == 0 && cut_at.elapsed() > RELAY_AFTER {
            // A write through the cut node: it has not heard the leader for an election timeout,
            // so it sends the write to a peer first, which relays it to the leader. (Sooner, it
            // may still try the leader on a kept-alive connection, and the write's outcome
            // would be unknown.)
            let key = format!("r{writes}");
            let started = Instant::now();
            let resp = http
                .put(format!("http://{}/v1/keys/{key}", addr(cut)))
                .json(&serde_json::json!({ "value": "v" }))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            assert!(
                status.is_success(),
                "a write through the cut node failed: {status} {}",
                resp.text().await.unwrap_or_default()
            );
            relayed.push(started.elapsed().as_millis());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("writes through the cut node, relayed by a peer, took {relayed:?} ms");
    let during = terms(&http, addr(cut)).await;
    assert_eq!(
        during, before[&cut],
        "node {cut} raised a term while cut off from leader {leader}: {:?} -> {during:?}",
        before[&cut]
    );
    let log = c.nodes[ci].log_text();
    assert!(
        log.contains("pre-vote found no majority"),
        "node {cut} never asked for pre-votes while cut off"
    );
    p.heal().expect("nft");

    let healed = Instant::now();
    while healed.elapsed() < WATCH_AFTER_HEAL {
        client.put(&format!("w{writes}"), "v", None).await.unwrap();
        writes += 1;
        assert_eq!(
            c.group_leader(1).await,
            Some(leader),
            "the data group's leader changed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &c.nodes {
        let now = terms(&http, n.addr).await;
        assert_eq!(
            now, before[&n.id],
            "node {}'s terms changed after the heal: {:?} -> {now:?}",
            n.id, before[&n.id]
        );
    }
    assert_eq!(c.metadata_leader().await, Some(config_leader));
    println!(
        "{writes} writes through node {}, all acknowledged; no term changed",
        c.nodes[third].id
    );
}
