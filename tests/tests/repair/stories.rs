//! The stories: a spare replacing a dead replica under load, failover of the metadata leader with
//! repairs continuing (also in the middle of one), a brief restart that rejoins without a repair,
//! and a replica that dies during a view change.

use super::*;

// With 7 nodes K=3 (groups 1–3 and 4–6, spare 7), SIGKILL of group 2's leader under write
// load: within 30 s spare 7 replaces it (group 2 has 3 alive members, 7 among them, no task
// left) and the killed node is "removed"; writes to both groups are accepted throughout (longest
// gap between acks below 10 s), every acknowledged write reads back, and the killed node, when
// restarted, does not exit: it says it was replaced and rejoins by itself as the new spare.
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

    // The replaced node comes back: it does not exit, but drops its stale replicas and rejoins
    // by itself, under a new id at its address, as an alive spare (no operator). Before, it
    // exited at once ("node N was removed from the cluster; wipe its data directory and join it
    // as a new node").
    let log_before = c.nodes[vi].log_text().len();
    let addr = c.nodes[vi].addr.to_string();
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
                    && s.tasks.is_empty()
            },
        )
        .await;
    let back = s
        .nodes
        .iter()
        .find(|n| n.addr == addr && n.id != victim)
        .unwrap();
    eprintln!(
        "spare_replaces_dead_replica: node {victim} rejoined as node {} ({}) {:?} after its \
         restart",
        back.id,
        back.role.as_str(),
        restarted_at.elapsed()
    );
    assert!(
        c.wait_for_exit(vi, Duration::ZERO).await.is_none(),
        "the replaced node {victim} exited after its restart; logs in {}",
        c.path().display()
    );
    assert_eq!(node_state(&s, victim), "removed", "{s:?}");
    assert_eq!(
        s.spares,
        vec![back.id],
        "the rejoined node is the spare: {s:?}"
    );
    let log = c.nodes[vi].log_text();
    let said = log.get(log_before..).unwrap_or_default();
    assert!(
        said.contains(&format!("node {victim} was replaced while it was away"))
            && said.contains("rejoining as a new node"),
        "the rejoined node's log does not say it was replaced and rejoins:\n{said}"
    );
    assert_readable(&c, &keys, &c.running(), seed).await;
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

// With 6 nodes K=3 (no spare) and the default dead timeout (5 min), a replica SIGKILLed for about
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
    // after the kill (well inside the dead timeout) even without one: an election can take
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
