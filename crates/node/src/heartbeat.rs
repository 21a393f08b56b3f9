//! The node's side of failure detection and map distribution: every `node_heartbeat` (or at
//! once when a request saw a newer epoch) it reports its replicas to the metadata leader and
//! takes the newer map and the leader hints from the reply.
//!
//! The metadata leader is found by trying, in order: the one that answered last, the config
//! leader this node's own config replica knows, then the config voters of the map. A reply
//! "not the leader" names the leader when known. A reply "removed" stops this node for good; a
//! reply "replaced" (a repair took all its replicas while it was away) stops it too, and the
//! server drops its stale replicas and rejoins as a new node (`server.rs`).

use std::sync::Arc;
use std::time::Duration;

use kvorum_raftstore::NodeId;
use kvorum_wire::ErrorBody;
use reqwest::StatusCode;

use crate::courier::{self, Attempt, Undelivered};
use crate::meta::{self, Heartbeat, HeartbeatReply, Meta, Refused, ReplicaReport};
use crate::node::Node;

/// Shortest wait for a heartbeat's answer, whatever the heartbeat interval: the metadata leader
/// answers from memory, but on a busy machine its answer can take a few hundred ms, and a beat
/// given up too early looks like a dead leader.
const MIN_ANSWER_WAIT: Duration = Duration::from_millis(500);

/// Runs the heartbeat loop for the node's lifetime; a beat to this node itself goes straight to
/// its metadata role `meta`.
pub async fn run(state: Arc<Node>, meta: Arc<Meta>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(state.cfg.node_heartbeat) => {}
            _ = state.refresh.notified() => {}
        }
        // The test suite's no-heartbeats fault (never in `kvnode`).
        if state.faults.heartbeats_muted(state.id()) {
            continue;
        }
        if let Err(e) = beat(&state, &meta).await {
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
            hash: state.store.state_hash(group),
        });
    }
    Heartbeat {
        node: state.id(),
        epoch: state.map().epoch,
        replicas,
        incarnation: Some(state.identity.incarnation.clone()),
    }
}

/// One heartbeat, to whichever candidate is the metadata leader (delivered by the leader
/// courier).
async fn beat(state: &Node, meta: &Meta) -> anyhow::Result<()> {
    let hb = report(state);
    let map = state.map();
    let mut candidates: Vec<NodeId> = Vec::new();
    candidates.extend(state.known_metadata_leader());
    candidates.extend(meta::config_leader_hint(state));
    candidates.extend(map.config_voters.iter().copied());
    let (hb, map) = (&hb, &map);
    let answer = courier::deliver(candidates, |target: NodeId| async move {
        let reply = if target == state.id() {
            meta::receive_heartbeat(meta, hb.clone())
        } else {
            let Some(addr) = map.addr(target) else {
                return Attempt::Next(format!("node {target} has no address in the map"));
            };
            match send(state, addr, hb).await {
                Ok(r) => r,
                Err(e) => return Attempt::Next(format!("node {target}: {e}")),
            }
        };
        match reply {
            Ok(r) => Attempt::Done(r),
            Err(Refused::NotLeader(hint)) => Attempt::NotLeader {
                hint,
                why: format!("node {target} is not the metadata leader"),
            },
            Err(Refused::Removed(reason)) => Attempt::Fail((false, reason)),
            Err(Refused::Replaced(reason)) => Attempt::Fail((true, reason)),
        }
    })
    .await;
    match answer {
        Ok(r) => {
            state.set_known_metadata_leader(Some(r.metadata_leader));
            state.set_leaders(&r.leaders);
            if let Some(m) = r.map {
                state.install_map(m).await?;
            }
            Ok(())
        }
        Err(Undelivered::Failed((true, reason))) => {
            tracing::warn!("{reason}");
            state.stop_to_rejoin(reason);
            Ok(())
        }
        Err(Undelivered::Failed((false, reason))) => {
            tracing::error!("{reason}");
            state.fatal.send_replace(Some(reason));
            Ok(())
        }
        Err(Undelivered::Exhausted(last)) => {
            state.set_known_metadata_leader(None);
            anyhow::bail!("no metadata leader reachable: {last}")
        }
    }
}

/// Sends `hb` to `addr`; maps its refusals.
async fn send(
    state: &Node,
    addr: &str,
    hb: &Heartbeat,
) -> anyhow::Result<Result<HeartbeatReply, Refused>> {
    let resp = state
        .internal_request(reqwest::Method::POST, addr, "/internal/v1/heartbeat")
        .timeout(state.cfg.node_heartbeat.max(MIN_ANSWER_WAIT))
        .json(hb)
        .send()
        .await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(Ok(resp.json().await?));
    }
    let body: Option<ErrorBody> = resp.json().await.ok();
    Ok(Err(refusal(status, body)?))
}

/// The refusal an error answer to a heartbeat means: 421 "not the leader" (with the leader when
/// known), 410 "removed" (with the node's message); any other answer is an error. `body` is
/// `None` when the answer had no error body.
fn refusal(status: StatusCode, body: Option<ErrorBody>) -> anyhow::Result<Refused> {
    match status {
        StatusCode::MISDIRECTED_REQUEST => {
            Ok(Refused::NotLeader(body.and_then(|b| b.leader).flatten()))
        }
        StatusCode::GONE => match body {
            Some(b) if b.code == "node_replaced" => Ok(Refused::Replaced(b.message)),
            Some(b) => Ok(Refused::Removed(b.message)),
            None => Ok(Refused::Removed(
                "this node was removed from the cluster".to_string(),
            )),
        },
        other => {
            let body = body.and_then(|b| serde_json::to_string(&b).ok());
            anyhow::bail!("{other}: {}", body.as_deref().unwrap_or("null"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::IntoResponse;

    use crate::error::ApiError;

    /// The status and error body the metadata leader answers `refused` with, as the sender
    /// reads them.
    async fn answer(refused: Refused) -> (StatusCode, Option<ErrorBody>) {
        let resp = ApiError::from(refused).into_response();
        let status = StatusCode::from_u16(resp.status().as_u16()).expect("a status code");
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("a body");
        (status, serde_json::from_slice(&bytes).ok())
    }

    // A refusal reads back as the refusal the metadata leader sent: the leader hint (or none)
    // and the removal message survive the trip; a body that is not an error body still refuses.
    #[tokio::test]
    async fn refusals_read_back() {
        let (status, body) = answer(Refused::NotLeader(Some(3))).await;
        assert!(matches!(
            refusal(status, body),
            Ok(Refused::NotLeader(Some(3)))
        ));
        let (status, body) = answer(Refused::NotLeader(None)).await;
        assert!(matches!(
            refusal(status, body),
            Ok(Refused::NotLeader(None))
        ));
        let (status, body) = answer(Refused::Removed("node 4 was removed".into())).await;
        assert!(matches!(
            refusal(status, body),
            Ok(Refused::Removed(m)) if m == "node 4 was removed"
        ));
        let (status, body) = answer(Refused::Replaced("node 4 was replaced".into())).await;
        assert!(matches!(
            refusal(status, body),
            Ok(Refused::Replaced(m)) if m == "node 4 was replaced"
        ));
        assert!(matches!(
            refusal(StatusCode::GONE, None),
            Ok(Refused::Removed(m)) if m == "this node was removed from the cluster"
        ));
        assert!(matches!(
            refusal(StatusCode::MISDIRECTED_REQUEST, None),
            Ok(Refused::NotLeader(None))
        ));
        let other = refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            Some(ErrorBody::new("internal", "disk full")),
        );
        assert!(other.is_err_and(|e| e.to_string()
            == r#"500 Internal Server Error: {"code":"internal","message":"disk full"}"#));
    }
}
