//! The set-up of the deposed-metadata-leader scenario: keys preloaded into the moved slots, and
//! the metadata leader cut off from the other config voters while it holds a batch.

use super::*;

/// Writes [`PRELOAD_KEYS`] keys into the first batch (of `batch_slots`) of every move the add
/// will make out of a group without a config voter; returns them with their values.
pub(crate) async fn preload(ctx: &Ctx, batch_slots: u16) -> Vec<(String, String)> {
    let map = ctx.map().await.expect("a map");
    let change = ViewChange::AddNode {
        addr: "127.0.0.250:1".into(),
    };
    let plan = kvorum_router::plan(&map, &change).expect("adding a node is planned");
    let first: Vec<u16> = plan
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::MoveSlots { from, ranges, .. } => Some((from, ranges)),
            _ => None,
        })
        .filter(|(from, _)| {
            map.members_of(**from)
                .is_some_and(|m| m.iter().all(|n| !map.config_voters.contains(n)))
        })
        .flat_map(|(_, ranges)| {
            let slots: Vec<u16> = ranges.iter().flat_map(|(a, b)| *a..=*b).collect();
            slots[..usize::from(batch_slots).min(slots.len())].to_vec()
        })
        .collect();
    let keys = keys_in_slots("bulk-", PRELOAD_KEYS, |s| first.contains(&s));
    let client = ctx.members.admin();
    let mut out = Vec::new();
    for (i, k) in keys.into_iter().enumerate() {
        let v = format!("{i:08}{}", "x".repeat(PRELOAD_VALUE_BYTES - 8));
        client.put(&k, &v, None).await.expect("preload put");
        out.push((k, v));
    }
    ctx.log(&format!(
        "fault test: preloaded {} keys of {PRELOAD_VALUE_BYTES} bytes into the first batches \
         of the moves out of groups without a config voter",
        out.len()
    ));
    out
}

/// The metadata leader (node `held_by`, holding `batch` at `point`) is cut off from the other
/// config voters; once another node holds the batch in turn (after its own copy), the leaders of
/// the batch's source and destination are killed and restarted (their successors never heard
/// from the new metadata leader), and the cut heals after [`ISOLATED_CUT_FOR`].
pub(crate) async fn isolate_metadata_leader(
    ctx: &Ctx,
    map: &ClusterMap,
    batch: &kvorum_router::MoveBatch,
    held_by: usize,
    point: &str,
) {
    let started = Instant::now();
    let before = holds(ctx, point).await;
    let nodes: Vec<(u64, IpAddr)> = map
        .nodes
        .iter()
        .filter(|(id, _)| map.is_active(**id))
        .filter_map(|(id, n)| Some((*id, n.addr.parse::<std::net::SocketAddr>().ok()?.ip())))
        .collect();
    let leader_addr = ctx.cluster.lock().await.nodes[held_by].addr;
    let x = nodes
        .iter()
        .position(|(_, ip)| *ip == leader_addr.ip())
        .expect("the metadata leader is in the map");
    let side: Vec<bool> = nodes
        .iter()
        .map(|(id, _)| map.config_voters.contains(id) && *id != nodes[x].0)
        .collect();
    let ips: Vec<IpAddr> = nodes.iter().map(|(_, ip)| *ip).collect();
    let p = Partitioner::new().expect("partitions (checked by the test)");
    ctx.log(&format!(
        "fault test: cut metadata leader {} off from config voters {:?}",
        nodes[x].0, map.config_voters
    ));
    p.cut(&ips, |a, b| {
        kvorum_tests::nemesis::connected(
            kvorum_tests::nemesis::PartitionShape::Sever(x),
            ips.len(),
            &side,
            a,
            b,
        )
    })
    .expect("nft");
    // A new metadata leader resumes the batch, copies it and is held in turn, unless the cut
    // leaves it no way to the batch's groups; then the groups' leaders are not killed, and the
    // new leader resumes after the heal.
    let deadline = Instant::now() + Duration::from_millis(2 * ISOLATED_HOLD_MS);
    let second = loop {
        let now = holds(ctx, point).await;
        if let Some(i) = (0..now.len()).find(|i| *i != held_by && now[*i] > before[*i]) {
            break Some(i);
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    match second {
        Some(i) => ctx.log(&format!(
            "fault test: node {} resumed the batch, copied it and is held",
            i + 1
        )),
        None => ctx.log(
            "fault test: no other node held the batch while the metadata leader was cut off \
             (a batch group without quorum under the cut); the group leaders are not killed",
        ),
    }
    // Kill the leaders of both groups (known from the status, asked of any node).
    let mut victims = Vec::new();
    let groups = if second.is_some() {
        vec![batch.from, batch.to]
    } else {
        Vec::new()
    };
    for group in groups {
        // The status may come from the deposed leader, whose reports age: ask for longer, and
        // kill what is known.
        let leader = group_leader(ctx, group, Duration::from_secs(5)).await;
        if leader.is_none() {
            ctx.log(&format!(
                "fault test: no leader of group {group} known; not killed"
            ));
        }
        if let Some(a) = leader.and_then(|l| map.addr(l)).map(str::to_string) {
            if !victims.contains(&a) {
                victims.push(a);
            }
        }
    }
    for a in &victims {
        ctx.log(&format!("fault test: kill group leader {a}"));
        ctx.kill_addr(a).await;
    }
    tokio::time::sleep(FAULT_FOR).await;
    for a in &victims {
        ctx.log(&format!("fault test: restart {a}"));
        ctx.restart_addr(a).await;
    }
    // Heal only after the new leader's hold ended: the deposed leader's late steps meet the
    // groups' new leaders while it still believes it leads.
    if let Some(rest) = ISOLATED_CUT_FOR.checked_sub(started.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    p.heal().expect("nft heal");
    ctx.log("fault test: healed");
}
