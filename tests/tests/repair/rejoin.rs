//! Restarts and blips that cost no node (a 15 s restart, a 60 s partition from the metadata
//! leader), and a replaced config voter that rejoins by itself.

use super::*;

/// Waits (30 s at most) until `victim` is alive again in group 1 of nodes 1–3 and no task runs;
/// returns that status.
async fn back_in_group_1(c: &Cluster, victim: u64) -> ClusterStatus {
    c.wait_for_status(
        Duration::from_secs(30),
        &format!("node {victim} alive again in group 1"),
        |s| {
            s.health_known
                && node_state(s, victim) == "alive"
                && status_group(s, 1).is_some_and(|g| g.members == vec![1, 2, 3])
                && s.tasks.is_empty()
        },
    )
    .await
}

/// Cuts nodes `a` and `b` (indexes) from each other (nftables) for `length` while writing keys
/// `{prefix}{n}` one at a time through node `through` (from its address, without smart
/// routing), then heals; returns the keys acknowledged and the number of writes tried.
async fn writes_through_a_cut(
    c: &Cluster,
    through: usize,
    (a, b): (usize, usize),
    length: Duration,
    prefix: &str,
) -> (Vec<String>, u64) {
    let client = kvorum_client::Client::new(
        vec![c.nodes[through].addr.to_string()],
        kvorum_client::ClientOptions {
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(20),
            local_address: Some(c.nodes[through].addr.ip()),
        },
    )
    .expect("client")
    .with_smart_routing(false);
    let ips: Vec<std::net::IpAddr> = c.nodes.iter().map(|n| n.addr.ip()).collect();
    let p = kvorum_tests::nemesis::Partitioner::new().expect("partitions (checked by the caller)");
    p.cut(&ips, |x, y| !((x == a && y == b) || (x == b && y == a)))
        .expect("nft");
    let cut_at = Instant::now();
    let mut acked = Vec::new();
    let mut n = 0u64;
    while cut_at.elapsed() < length {
        let key = format!("{prefix}{n}");
        n += 1;
        if client
            .put(&key, &kvorum_tests::workload::value_of(&key), None)
            .await
            .is_ok()
        {
            acked.push(key);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    p.heal().expect("nft");
    (acked, n)
}

// A routine restart costs no node: with 4 nodes K=3 (group 1 of nodes 1–3, spare 4) and the
// default dead timeout (5 min), a member of group 1 stopped with SIGTERM while its group takes
// writes and started again 15 s later comes back as an alive member under its own id; no repair
// ran (spare 4 is still the spare, no "repair finished" in any log) and every acknowledged write
// reads back. Before, with the 10 s default, the spare replaced it and it exited at its restart
// ("node N was removed from the cluster; wipe its data directory and join it as a new node").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_of_15_s_keeps_the_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("restart_of_15_s_keeps_the_node");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 4, 3)).await;
    let map = c.initial_map();
    assert_eq!(map.spares(), vec![4]);
    let victim = rng.gen_range(1..=3u64);
    let vi = c.index_of(victim);
    eprintln!("restart_of_15_s_keeps_the_node: stopping node {victim} for 15 s");
    c.wait_ready(Duration::from_secs(30)).await;

    let before = keys_by_group(&map, "before-", 50);
    let all_before: Vec<String> = before.values().flatten().cloned().collect();
    write_all(&c, &all_before, &mut rng).await;

    let others: Vec<usize> = c.running().into_iter().filter(|i| *i != vi).collect();
    let load = Load::start(&c, &map, &[1], 4, others, seed, "down-");
    let stopped_at = Instant::now();
    c.stop(vi);
    // The fault itself: the node stays down for 15 s (not a wait for a condition).
    tokio::time::sleep(Duration::from_secs(15).saturating_sub(stopped_at.elapsed())).await;
    c.restart(vi);
    let restarted_at = Instant::now();
    wait_acked(
        &c,
        &load,
        1,
        restarted_at,
        50,
        "50 acked writes after the restart",
    )
    .await;
    let acks = load.finish().await;

    let s = back_in_group_1(&c, victim).await;
    eprintln!(
        "restart_of_15_s_keeps_the_node: node {victim} alive in group 1 {:?} after its restart, \
         {} writes acked",
        restarted_at.elapsed(),
        acks.len()
    );
    assert_eq!(s.spares, vec![4], "spare 4 is still the spare: {s:?}");
    assert!(
        c.wait_for_exit(vi, Duration::ZERO).await.is_none(),
        "node {victim} exited after its restart; logs in {}",
        c.path().display()
    );
    assert!(
        !some_log_says(&c, "repair finished"),
        "a repair ran; logs in {}",
        c.path().display()
    );
    let mut keys = all_before;
    keys.extend(acks.iter().map(|a| a.key.clone()));
    assert_readable(&c, &keys, &c.running(), seed).await;
}

// A network blip costs no node: with 4 nodes K=3 (group 1 of nodes 1–3, spare 4) and the default
// dead timeout (5 min), a member of group 1 is cut from the metadata leader for 60 s while it
// still reaches the other two nodes (nftables; the test talks through the node at neither end
// of the cut, from its address). Writes through that node go on; after the heal the member is
// alive in group 1 under its own id, never exited, no repair ran, and every acknowledged write
// reads back. Before, it was declared dead after 10 s, replaced by the spare, and exited when
// the cut healed ("node N was removed from the cluster; wipe its data directory and join it as
// a new node").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partition_of_60_s_from_the_metadata_leader_keeps_the_node() {
    const TEST: &str = "partition_of_60_s_from_the_metadata_leader_keeps_the_node";
    if !kvorum_tests::nemesis::partitions_available(TEST) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed(TEST);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 4, 3)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let m = c.metadata_leader().await.expect("a metadata leader");
    let members: Vec<u64> = (1..=3).filter(|id| *id != m).collect();
    let cut = members[rng.gen_range(0..members.len())];
    let (mi, ci) = (c.index_of(m), c.index_of(cut));
    let third = (0..c.nodes.len()).find(|i| *i != mi && *i != ci).unwrap();
    eprintln!(
        "{TEST}: cutting node {cut} from metadata leader {m} for 60 s; the test talks through \
         node {}",
        c.nodes[third].id
    );
    // The fault lasts 60 s; writes run through it.
    let (acked, n) =
        writes_through_a_cut(&c, third, (mi, ci), Duration::from_secs(60), "cut-").await;
    let healed_at = Instant::now();
    eprintln!(
        "{TEST}: healed; {} of {n} writes acked during the cut",
        acked.len()
    );

    let s = c
        .wait_for_status(
            Duration::from_secs(30),
            &format!("node {cut} alive in group 1 after the heal"),
            |s| {
                s.health_known
                    && node_state(s, cut) == "alive"
                    && status_group(s, 1).is_some_and(|g| g.members == vec![1, 2, 3])
                    && s.tasks.is_empty()
            },
        )
        .await;
    eprintln!(
        "{TEST}: node {cut} alive in group 1 {:?} after the heal",
        healed_at.elapsed()
    );
    assert_eq!(s.spares, vec![4], "spare 4 is still the spare: {s:?}");
    for i in 0..c.nodes.len() {
        assert!(
            c.wait_for_exit(i, Duration::ZERO).await.is_none(),
            "node {} exited; logs in {}",
            c.nodes[i].id,
            c.path().display()
        );
    }
    assert!(
        !some_log_says(&c, "repair finished"),
        "a repair ran; logs in {}",
        c.path().display()
    );
    assert!(!acked.is_empty(), "no write acked during the cut");
    assert_readable(&c, &acked, &c.running(), seed).await;
}

// A replaced config voter comes back as soon as it is marked removed: with 4 nodes K=3 (nodes
// 1–3 are group 1 and the config voters, spare 4) and a 5 s dead timeout, a member that is not
// the metadata leader is stopped; the spare takes its data replica (it is marked removed) and
// then its config seat. It is started again the moment it shows removed, possibly while it
// still holds its config seat and acknowledges the config leader: that seat still goes (a
// removed node's seat is swapped without the liveness probe), and the node rejoins by itself
// as an alive spare under a new id; every acknowledged write reads back. Before, it exited; with
// the probe still asked, a node back before its config seat was swapped held that seat for good
// (every swap refused `replica_alive`; whether a run hits that window depends on timing).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replaced_config_voter_back_early_rejoins() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("replaced_config_voter_back_early_rejoins");
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut c, keys) = start_with_keys(repair_options(4), seed, "early-").await;
    c.wait_ready(Duration::from_secs(30)).await;
    let m = c.metadata_leader().await.expect("a metadata leader");
    let members: Vec<u64> = (1..=3).filter(|id| *id != m).collect();
    let victim = members[rng.gen_range(0..members.len())];
    let vi = c.index_of(victim);
    let addr = c.nodes[vi].addr.to_string();
    eprintln!(
        "replaced_config_voter_back_early_rejoins: stopping node {victim} (metadata leader {m})"
    );
    c.stop(vi);
    c.wait_for_status(
        Duration::from_secs(30),
        &format!("node {victim} removed"),
        |s| node_state(s, victim) == "removed",
    )
    .await;
    c.restart(vi);
    let restarted_at = Instant::now();
    let s = c
        .wait_for_status(
            Duration::from_secs(60),
            &format!("node {victim}'s process back as an alive spare under a new id at {addr}"),
            |s| {
                s.health_known
                    && s.nodes
                        .iter()
                        .any(|n| n.addr == addr && n.id != victim && n.state.as_str() == "alive")
                    && !s.config.voters.contains(&victim)
                    && s.tasks.is_empty()
            },
        )
        .await;
    eprintln!(
        "replaced_config_voter_back_early_rejoins: back {:?} after its restart; config voters {:?}",
        restarted_at.elapsed(),
        s.config.voters
    );
    assert!(
        c.wait_for_exit(vi, Duration::ZERO).await.is_none(),
        "the replaced node {victim} exited after its restart; logs in {}",
        c.path().display()
    );
    assert_readable(&c, &keys, &c.running(), seed).await;
}

// A planned stop after `kvctl drain` (the client's `drain`): with 4 nodes K=3 (group 1 of nodes
// 1–3, spare 4) and a 5 s dead timeout, the leader of group 1 is drained for 2 minutes while
// writes run through the other nodes. It hands the group's leadership (and the config group's,
// if it led it) to another member and leads nothing; stopped, it is seen dead, yet for 10 s more
// no repair starts and spare 4 stays the spare; started again it is an alive member of group 1,
// and every acknowledged write reads back. Ending the drain clears the mark. Without the drain
// the same stop gets the node replaced (`stories::spare_replaces_dead_replica`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drained_node_is_not_replaced_while_down() {
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed("drained_node_is_not_replaced_while_down");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(repair_options(4)).await;
    let map = c.initial_map();
    assert_eq!(map.spares(), vec![4]);
    let s = c
        .wait_for_status(Duration::from_secs(30), "group 1 led", |s| {
            s.health_known && status_group(s, 1).is_some_and(|g| g.leader.is_some())
        })
        .await;
    let victim = status_group(&s, 1).and_then(|g| g.leader).unwrap();
    let vi = c.index_of(victim);
    eprintln!(
        "drained_node_is_not_replaced_while_down: draining node {victim}, the leader of group 1 \
         (metadata leader: {:?})",
        s.metadata_leader
    );
    let before = keys_by_group(&map, "before-", 50);
    let all_before: Vec<String> = before.values().flatten().cloned().collect();
    write_all(&c, &all_before, &mut rng).await;

    let others: Vec<usize> = c.running().into_iter().filter(|i| *i != vi).collect();
    let load = Load::start(&c, &map, &[1], 4, others.clone(), seed, "drain-");
    let admin = direct_client(
        c.nodes[others[0]].addr,
        Duration::from_secs(30),
        Duration::from_secs(30),
    );
    let reply = admin.drain(victim, Some(2)).await.unwrap();
    eprintln!("drained_node_is_not_replaced_while_down: {reply:?}");
    assert_eq!(reply.node, victim);
    assert!(reply.until_ms.is_some(), "{reply:?}");
    assert_eq!(reply.unreachable, None, "{reply:?}");
    let moved = reply.leaderships.clone().unwrap();
    assert!(moved.kept.is_empty(), "a leadership stayed: {reply:?}");
    assert!(
        moved.moved.iter().any(|h| h.group.0 == 1 && h.to != victim),
        "group 1's leadership was not handed off: {reply:?}"
    );
    c.wait_for_status(
        Duration::from_secs(15),
        &format!("node {victim} drained and leading nothing"),
        |s| {
            s.health_known
                && s.metadata_leader.is_some_and(|m| m != victim)
                && status_group(s, 1).is_some_and(|g| g.leader.is_some_and(|l| l != victim))
                && status_node(s, victim).is_some_and(|n| n.drain_until_ms.is_some())
        },
    )
    .await;

    c.stop(vi);
    let stopped_at = Instant::now();
    c.wait_for_status(
        Duration::from_secs(30),
        &format!("node {victim} seen dead"),
        |s| s.health_known && node_state(s, victim) == "dead",
    )
    .await;
    // Dead, and for 10 s more (twice the dead timeout) no repair starts: the drain holds it.
    let watch_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < watch_until {
        if let Some(s) = c.status().await {
            assert!(
                s.tasks.is_empty() && s.spares == vec![4],
                "a repair started for drained node {victim}: {s:?}; logs in {}",
                c.path().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!(
        "drained_node_is_not_replaced_while_down: node {victim} down {:?} without a repair",
        stopped_at.elapsed()
    );
    c.restart(vi);
    let restarted_at = Instant::now();
    back_in_group_1(&c, victim).await;
    wait_acked(
        &c,
        &load,
        1,
        restarted_at,
        50,
        "50 acked writes after the restart",
    )
    .await;
    let acks = load.finish().await;
    assert!(
        !some_log_says(&c, "repair finished"),
        "a repair ran; logs in {}",
        c.path().display()
    );

    let ended = admin.end_drain(victim).await.unwrap();
    assert_eq!(ended.until_ms, None, "{ended:?}");
    c.wait_for_status(Duration::from_secs(15), "the drain ended", |s| {
        status_node(s, victim).is_some_and(|n| n.drain_until_ms.is_none())
    })
    .await;
    let mut keys = all_before;
    keys.extend(acks.iter().map(|a| a.key.clone()));
    assert_readable(&c, &keys, &c.running(), seed).await;
}

/// Moves group 1's leadership until the metadata leader also leads group 1 (drain the group's
/// leader, which hands it to another member, then end that drain at once); returns that node.
async fn metadata_leader_leading_group_1(c: &Cluster, admin: &kvorum_client::Client) -> u64 {
    for _ in 0..10 {
        let s = c
            .wait_for_status(
                Duration::from_secs(30),
                "group 1 and the config group led",
                |s| {
                    s.health_known
                        && s.metadata_leader.is_some()
                        && status_group(s, 1).is_some_and(|g| g.leader.is_some())
                },
            )
            .await;
        let m = s.metadata_leader.unwrap();
        let l = status_group(&s, 1).and_then(|g| g.leader).unwrap();
        if m == l {
            return m;
        }
        admin.drain(l, Some(1)).await.expect("drain");
        admin.end_drain(l).await.expect("end the drain");
    }
    panic!(
        "the metadata leader never led group 1; logs in {}",
        c.path().display()
    );
}

// A partial partition is not a death: with 4 nodes K=3 (group 1 of nodes 1–3, spare 4) and a 5 s
// dead timeout, a member of group 1 is cut (nftables) from the node that leads both group 1 and
// the config group, for 25 s, while it still reaches the third member and the spare. It is dead
// by heartbeats after 5 s and a repair starts, but before the swap the leader asks the other
// member, which still reaches it: the repair is abandoned ("a member of its group, still
// reaches it"), and after the heal the node is an alive member of group 1, no repair finished,
// spare 4 still the spare, every write acknowledged through the third member reads back. Before
// (the leader's own probe only), the spare replaced it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_still_reached_by_its_group_is_not_replaced() {
    const TEST: &str = "member_still_reached_by_its_group_is_not_replaced";
    if !kvorum_tests::nemesis::partitions_available(TEST) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().await;
    let seed = seed(TEST);
    let mut rng = StdRng::seed_from_u64(seed);
    let c = Cluster::start(repair_options(4)).await;
    c.wait_ready(Duration::from_secs(30)).await;
    let admin = direct_client(
        c.nodes[3].addr,
        Duration::from_secs(30),
        Duration::from_secs(30),
    );
    let l = metadata_leader_leading_group_1(&c, &admin).await;
    let members: Vec<u64> = (1..=3).filter(|id| *id != l).collect();
    let cut = members[rng.gen_range(0..members.len())];
    let third = *members.iter().find(|id| **id != cut).unwrap();
    let (li, ci, ti) = (c.index_of(l), c.index_of(cut), c.index_of(third));
    eprintln!(
        "{TEST}: cutting node {cut} from node {l} (leader of group 1 and metadata leader) for 25 s"
    );
    // The fault lasts 25 s (five dead timeouts); writes run through it.
    let (acked, n) =
        writes_through_a_cut(&c, ti, (li, ci), Duration::from_secs(25), "partial-").await;
    eprintln!(
        "{TEST}: healed; {} of {n} writes acked during the cut",
        acked.len()
    );

    let s = back_in_group_1(&c, cut).await;
    assert_eq!(s.spares, vec![4], "spare 4 is still the spare: {s:?}");
    assert!(
        !some_log_says(&c, "repair finished"),
        "a repair ran; logs in {}",
        c.path().display()
    );
    assert!(
        some_log_says(&c, "a member of its group, still reaches it"),
        "no repair was refused for the member's reach (the cut did not make node {cut} dead?); \
         logs in {}",
        c.path().display()
    );
    assert!(!acked.is_empty(), "no write acked during the cut");
    assert_readable(&c, &acked, &c.running(), seed).await;
}
