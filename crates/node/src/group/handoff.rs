//! Handing a group's leadership to another voter before a planned stop (a drain, `kvctl
//! drain`).
//!
//! openraft 0.9 has no leadership transfer, and a voter refuses every vote while its leader
//! lease runs (an election timeout from the leader's last append; see `election`). So the
//! leader makes itself silent instead, and the group's own elections pick its successor:
//! 1. it marks the group handed off ([`Node::set_handing_off`]): client requests for the group
//!    are refused here with a retryable `unavailable`, internal steps with `not_leader`, and a
//!    config-group leader stops acting as the metadata leader, so nothing new is proposed and
//!    no read-index round renews the other voters' lease;
//! 2. it waits until what it already proposed has applied;
//! 3. it stops openraft's heartbeats; the other voters hear nothing for an election timeout,
//!    grant each other's pre-vote and elect one of themselves (after one to one and a half
//!    election timeouts);
//! 4. once another voter leads (or after [`HANDOFF_LIMIT`]) heartbeats and requests resume:
//!    as a follower the node forwards them to the new leader; if no one else was elected it
//!    goes on leading.
//!
//! The pause a group's clients see is about that of a failover, but nothing fails: refused
//! requests are retried and no write's outcome is left unknown.

use std::time::{Duration, Instant};

use kvorum_raftstore::GroupId;
use kvorum_router::CONFIG_GROUP;
use kvorum_wire::{HandedOff, Leaderships};

use crate::node::Node;

/// Longest a hand-off may take before the node gives up and leads on.
pub(crate) const HANDOFF_LIMIT: Duration = Duration::from_secs(10);
/// Longest wait for the entries the leader proposed before the hand-off to apply.
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Clears the hand-off mark and turns heartbeats back on however the hand-off ends (also when
/// the request that started it is dropped).
struct Marked<'a> {
    node: &'a Node,
    group: GroupId,
    raft: kvorum_raftstore::Raft,
}

impl Drop for Marked<'_> {
    fn drop(&mut self) {
        self.raft.runtime_config().heartbeat(true);
        self.node.set_handing_off(self.group, false);
    }
}

/// Hands this node's leadership of `group` to another voter (see the module). `Ok(None)`: the
/// node does not lead the group, nothing to do; `Ok(Some(h))`: another voter leads now; `Err`:
/// the node still leads, with why.
pub(crate) async fn hand_off(node: &Node, group: GroupId) -> Result<Option<HandedOff>, String> {
    let Some(raft) = node.group(group) else {
        return Ok(None);
    };
    let me = node.id();
    let (term, last_log) = {
        let m = raft.metrics();
        let m = m.borrow();
        if m.current_leader != Some(me) || !m.state.is_leader() {
            return Ok(None);
        }
        if !m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v != me)
        {
            return Err(format!("group {group} has no other voter to lead it"));
        }
        (m.current_term, m.last_log_index)
    };
    let started = Instant::now();
    node.set_handing_off(group, true);
    let _marked = Marked {
        node,
        group,
        raft: raft.clone(),
    };
    if let Some(last) = last_log {
        raft.wait(Some(APPLY_WAIT))
            .applied_index_at_least(Some(last), "proposed entries applied")
            .await
            .map_err(|e| format!("group {group}: its last entries did not apply: {e}"))?;
    }
    raft.runtime_config().heartbeat(false);
    tracing::info!(%group, term, "draining: handing the leadership to another voter");
    let elected = raft
        .wait(Some(HANDOFF_LIMIT))
        .metrics(
            |m| m.current_term > term && m.current_leader.is_some_and(|l| l != me),
            "another voter leads",
        )
        .await;
    match elected {
        Ok(m) => {
            let to = m.current_leader.unwrap_or_default();
            let took_ms = started.elapsed().as_millis() as u64;
            tracing::info!(%group, to, took_ms, term = m.current_term, "draining: leadership handed off");
            Ok(Some(HandedOff { group, to, took_ms }))
        }
        Err(_) => Err(format!(
            "group {group}: no other voter was elected within {} s; this node leads on",
            HANDOFF_LIMIT.as_secs()
        )),
    }
}

/// Hands off every group this node leads, data groups first and the config group last (so the
/// metadata role, which answers the drain, is given up after everything else).
pub(crate) async fn hand_off_all(node: &Node) -> Leaderships {
    let mut groups: Vec<GroupId> = node.replicas().into_keys().collect();
    groups.sort_by_key(|g| (*g == CONFIG_GROUP, *g));
    let mut out = Leaderships::default();
    for group in groups {
        match hand_off(node, group).await {
            Ok(Some(h)) => out.moved.push(h),
            Ok(None) => {}
            Err(why) => out.kept.push((group, why)),
        }
    }
    out
}
