//! The node's side of failure detection and map distribution: every `node_heartbeat` (or at
//! once when a request saw a newer epoch) it reports its replicas to the metadata leader and
//! takes the newer map and the leader hints from the reply.
//!
//! The metadata leader is found by trying, in order: the one that answered last, the config
//! leader this node's own config replica knows, then the config voters of the map. A reply
//! "not the leader" names the leader when known. A reply "removed" stops this node for good.

use std::sync::Arc;
use std::time::Duration;

use kvorum_raftstore::NodeId;
use reqwest::StatusCode;

use crate::meta::{self, Heartbeat, HeartbeatReply, Refused, ReplicaReport};
use crate::node::Node;

/// Most metadata-leader candidates tried per heartbeat.
const MAX_TRIES: usize = 4;

/// Test-only fault (feature `test-faults`): whether this node sends no heartbeat now, because the
/// file named by `KVORUM_FAULT_NO_HEARTBEATS` lists its id (ids separated by commas or white
/// space; read before every heartbeat, so a test can silence a node chosen at run time). Its
/// replicas keep running, so the metadata leader sees it dead while its groups still replicate to
/// it. Always false in production builds.
fn heartbeats_muted(me: NodeId) -> bool {
    if !cfg!(feature = "test-faults") {
        return false;
    }
    let Some(path) = std::env::var_os("KVORUM_FAULT_NO_HEARTBEATS") else {
        return false;
    };
    let listed = std::fs::read_to_string(path).unwrap_or_default();
    let muted = listed
        .split(|c: char| c == ',' || c.is_whitespace())
        .any(|id| id.parse::<NodeId>().is_ok_and(|id| id == me));
    if muted {
        tracing::error!(
            "FAULT INJECTED: this node sends no heartbeats (KVORUM_FAULT_NO_HEARTBEATS)"
        );
    }
    muted
}

/// Runs the heartbeat loop for the node's lifetime.
pub async fn run(state: Arc<Node>) {
    let muted = heartbeats_muted(state.id());
    if muted {
        tracing::error!(
            "FAULT INJECTED: this node sends no heartbeats (KVORUM_FAULT_NO_HEARTBEATS)"
        );
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.cfg.node_heartbeat) => {}
            _ = state.refresh.notified() => {}
        }
        if heartbeats_muted(state.id()) {
            continue;
        }
        if let Err(e) = beat(&state).await {
            tracing::debug!(error = %e, "heartbeat not delivered");
        }
    }
}

fn report(state: &Node) -> Heartbeat {
    let mut replicas = Vec::new();
    for (group, h) in state.replicas() {
        let m = h.raft.metrics().borrow().clone();
        let is_leader = m.current_leader == Some(state.id()) && m.state.is_leader();
        // Counts kept by the state machine: one read, no scan.
        let stats = state.store.group_stats(group).ok();
        let (keys, bytes) = (stats.map(|s| s.0), stats.map(|s| s.1));
        replicas.push(ReplicaReport {
            group,
            is_leader,
            leader: m.current_leader,
            term: m.current_term,
            applied: m.last_applied.map(|l| l.index),
            keys,
            bytes,
            voters: meta::voter_sets(&m),
        });
    }
    Heartbeat {
        node: state.id(),
        epoch: state.map().epoch,
        replicas,
        incarnation: Some(state.identity.incarnation.clone()),
    }
}

/// One heartbeat, to whichever candidate is the metadata leader.
async fn beat(state: &Node) -> anyhow::Result<()> {
    let hb = report(state);
    let map = state.map();
    let mut candidates: Vec<NodeId> = Vec::new();
    candidates.extend(state.meta.known_leader());
    candidates.extend(meta::config_leader_hint(state));
    candidates.extend(map.config_voters.iter().copied());
    let mut tried = Vec::new();
    let mut last = String::from("no config voter known");
    while let Some(target) = candidates.first().copied() {
        candidates.remove(0);
        if tried.contains(&target) {
            continue;
        }
        if tried.len() >= MAX_TRIES {
            break;
        }
        tried.push(target);
        let reply = if target == state.id() {
            meta::receive_heartbeat(state, hb.clone())
        } else {
            let Some(addr) = map.addr(target) else {
                continue;
            };
            match send(state, addr, &hb).await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("node {target}: {e}");
                    continue;
                }
            }
        };
        match reply {
            Ok(r) => {
                state.meta.set_known_leader(Some(r.metadata_leader));
                state.set_leaders(&r.leaders);
                if let Some(m) = r.map {
                    state.install_map(m).await?;
                }
                return Ok(());
            }
            Err(Refused::NotLeader(hint)) => {
                if let Some(l) = hint.filter(|l| !tried.contains(l)) {
                    candidates.insert(0, l);
                }
                last = format!("node {target} is not the metadata leader");
            }
            Err(Refused::Removed(reason)) => {
                tracing::error!("{reason}");
                state.fatal.send_replace(Some(reason));
                return Ok(());
            }
        }
    }
    state.meta.set_known_leader(None);
    anyhow::bail!("no metadata leader reachable: {last}")
}

/// Sends `hb` to `addr`; maps its refusals.
async fn send(
    state: &Node,
    addr: &str,
    hb: &Heartbeat,
) -> anyhow::Result<Result<HeartbeatReply, Refused>> {
    let resp = state
        .internal_request(reqwest::Method::POST, addr, "/internal/v1/heartbeat")
        .timeout(state.cfg.node_heartbeat.max(Duration::from_millis(500)))
        .json(hb)
        .send()
        .await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(Ok(resp.json().await?));
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    match status {
        StatusCode::MISDIRECTED_REQUEST => Ok(Err(Refused::NotLeader(body["leader"].as_u64()))),
        StatusCode::GONE => Ok(Err(Refused::Removed(
            body["message"]
                .as_str()
                .unwrap_or("this node was removed from the cluster")
                .to_string(),
        ))),
        other => anyhow::bail!("{other}: {body}"),
    }
}
