//! The safety rules of a repair: never more than K voters, repairs of different groups at once, a
//! node back before the swap keeps its seat, a node cut off from the metadata leader but
//! replicating is not removed, a long step does not hold up the loop, a stale membership request is
//! refused.

use super::*;

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
