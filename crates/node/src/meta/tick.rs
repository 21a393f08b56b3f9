//! The metadata loop: every [`TICK`] on every node, acting only while this node leads the config
//! group (see the steps in the module `meta`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_raftstore::NodeId;
use kvorum_router::{ClusterMap, NodeLifecycle, CONFIG_GROUP};

use super::state::Meta;

use super::consistency;
use super::lease::lease;
use super::record::{current_map, is_map_conflict, update_map};
use super::state::TICK;
use super::tasks::{plan, start_drivers};
use super::Health;

/// Interval of the one-line health summary in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// Runs the metadata loop for the node's lifetime; it acts only while the node leads the
/// config group.
pub async fn run(meta: Arc<Meta>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = meta_tick(&meta).await {
            if is_map_conflict(&e) {
                tracing::info!(error = %format!("{e:#}"), "metadata leader: lost a map race; retrying");
            } else {
                tracing::warn!(error = %format!("{e:#}"), "metadata leader: step failed; retrying");
            }
        }
        meta.tick_done();
    }
}

async fn meta_tick(meta: &Arc<Meta>) -> anyhow::Result<()> {
    let Some(raft) = meta.node.group(CONFIG_GROUP) else {
        return Ok(());
    };
    let term = {
        let m = raft.metrics();
        let m = m.borrow();
        // A leader handing the config group off (a drain) acts no more: a confirmation round
        // would renew the other voters' leader lease and keep them from electing its successor.
        if m.current_leader != Some(meta.node.id())
            || !m.state.is_leader()
            || meta.node.handing_off(CONFIG_GROUP)
        {
            meta.not_leading();
            return Ok(());
        }
        m.current_term
    };
    // Confirm the leadership with a quorum before acting on it (openraft 0.9 has no
    // check-quorum: a leader cut off from its config peers still believes it leads). A leader
    // that cannot confirm gives the role up at once.
    let started = Instant::now();
    let confirmed = tokio::time::timeout(lease(&meta.node), raft.ensure_linearizable()).await;
    match confirmed {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            meta.not_leading();
            return Err(anyhow::Error::from(e).context("read index on the config group"));
        }
        Err(_) => {
            meta.not_leading();
            anyhow::bail!("read index on the config group timed out: leadership not confirmed");
        }
    }
    let (map, _) = current_map(meta)?;
    meta.node.install_map(map.clone()).await?;
    meta.node.set_known_metadata_leader(Some(meta.node.id()));
    if meta.leading(term, &map) {
        tracing::info!(term, map = %map.summary(), "this node is the metadata leader");
    }
    // Only now (the stored map installed): heartbeats are answered and drivers act.
    meta.confirmed(term, started);
    meta.tick(meta.node.cfg.suspect_after);
    let health = meta.health(
        &map,
        meta.node.id(),
        meta.node.cfg.suspect_after,
        meta.node.cfg.dead_after,
    );
    log_summary(meta, &map, &health);
    consistency::tick(meta, &map);
    let unrecorded = meta.unrecorded_incarnations(&map);
    if !unrecorded.is_empty() {
        // Recorded once, never changed: from now on a wiped node is refused under its old id.
        update_map(meta, "record node incarnations", |m| {
            for (id, inc) in unrecorded {
                if let Some(n) = m.nodes.get_mut(&id) {
                    n.incarnation.get_or_insert(inc);
                }
            }
        })
        .await?;
        return Ok(());
    }
    start_drivers(meta, &map, term);
    plan(meta, &map, &health, term).await
}

fn log_summary(meta: &Meta, map: &ClusterMap, health: &BTreeMap<NodeId, Health>) {
    {
        let mut inner = meta.lock();
        if inner
            .last_summary
            .is_some_and(|t| t.elapsed() < SUMMARY_EVERY)
        {
            return;
        }
        inner.last_summary = Some(Instant::now());
    }
    let of = |h: Health| -> Vec<NodeId> {
        health
            .iter()
            .filter(|(_, x)| **x == h)
            .map(|(id, _)| *id)
            .collect()
    };
    let removed: Vec<NodeId> = map
        .nodes
        .iter()
        .filter(|(_, n)| n.state == NodeLifecycle::Removed)
        .map(|(id, _)| *id)
        .collect();
    tracing::info!(
        "health: epoch {} alive {:?} suspect {:?} dead {:?} removed {:?} spares {:?} tasks {}",
        map.epoch,
        of(Health::Alive),
        of(Health::Suspect),
        of(Health::Dead),
        removed,
        map.spares(),
        map.tasks.len()
    );
}
