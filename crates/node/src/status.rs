//! The cluster status (`GET /v1/cluster/status`, `GET /internal/v1/status`).
//!
//! Steps: (1) the map, and whether health is known (this node leads the metadata role in a
//! term); (2) for each group the best leader report: from heartbeats on the metadata leader,
//! else from this node's own replicas; (3) nodes, groups, the config group and tasks, assembled
//! into the reply.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kvorum_router::{NodeLifecycle, TaskKind, CONFIG_GROUP};
use serde_json::json;

use crate::meta::{best_reports, is_metadata_leader, voter_sets, ReplicaReport};
use crate::node::Node;
use crate::transport::check_internal;

/// The cluster status. Built by the metadata leader from heartbeats (`health_known`); a node
/// that cannot reach it builds one from its own map and replicas, with every node's state
/// "unknown".
pub fn status(state: &Node) -> serde_json::Value {
    let map = state.map();
    let leading = is_metadata_leader(state);
    let health_known = leading && state.meta.lock().led_term.is_some();
    let health = health_known.then(|| {
        state.meta.health(
            &map,
            state.id(),
            state.cfg.suspect_after,
            state.cfg.dead_after,
        )
    });
    let inner = state.meta.lock();
    let now = Instant::now();
    let best = if health_known {
        best_reports(&inner)
    } else {
        // Our own replicas are all we know.
        state
            .replicas()
            .into_iter()
            .filter_map(|(g, h)| {
                let m = h.raft.metrics().borrow().clone();
                let l = m.current_leader?;
                let r = ReplicaReport {
                    group: g,
                    is_leader: l == state.id(),
                    leader: Some(l),
                    term: m.current_term,
                    applied: m.last_applied.map(|x| x.index),
                    keys: None,
                    bytes: None,
                    voters: voter_sets(&m),
                };
                Some((g, (l, r)))
            })
            .collect()
    };
    let nodes: Vec<serde_json::Value> = map
        .nodes
        .iter()
        .map(|(id, n)| {
            let st = if n.state == NodeLifecycle::Removed {
                "removed"
            } else {
                health
                    .as_ref()
                    .and_then(|h| h.get(id))
                    .map_or("unknown", |h| h.as_str())
            };
            let group = map.group_of_node(*id);
            let beat = health_known
                .then(|| {
                    inner
                        .seen
                        .get(id)
                        .and_then(|s| s.beat.as_ref().map(|b| (s.at, b)))
                })
                .flatten();
            let last = beat.map(|(at, _)| now.duration_since(at).as_millis() as u64);
            // The node's data: the sum over the replicas it hosts.
            let data_bytes =
                beat.map(|(_, b)| b.replicas.iter().filter_map(|r| r.bytes).sum::<u64>());
            json!({
                "id": id,
                "addr": n.addr,
                "state": st,
                "role": if group.is_some() { "replica" } else { "spare" },
                "config_voter": map.config_voters.contains(id),
                "groups": group.map(|g| vec![g.0]).unwrap_or_default(),
                "last_heartbeat_ms": last,
                "data_bytes": data_bytes,
            })
        })
        .collect();
    let groups: Vec<serde_json::Value> = map
        .groups
        .iter()
        .map(|(gid, g)| {
            let r = best.get(gid).map(|(_, r)| r);
            let ranges: Vec<String> = map
                .slot_ranges(*gid)
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        a.to_string()
                    } else {
                        format!("{a}-{b}")
                    }
                })
                .collect();
            json!({
                "id": gid.0,
                "members": g.members,
                "leader": r.and_then(|r| r.leader),
                "term": r.map(|r| r.term),
                "slots": ranges.join(","),
                "slot_count": map.slot_count_of(*gid),
                "keys": r.and_then(|r| r.keys),
                "bytes": r.and_then(|r| r.bytes),
                "applied": r.and_then(|r| r.applied),
                "voters": r.map(|r| r.voters.clone()),
            })
        })
        .collect();
    let config = best.get(&CONFIG_GROUP).map(|(_, r)| r);
    let tasks: Vec<serde_json::Value> = map
        .tasks
        .iter()
        .map(|t| match &t.kind {
            TaskKind::ReplaceReplica {
                group,
                dead,
                replacement,
            } => json!({
                "id": t.id,
                "kind": "replace_replica",
                "group": group.0,
                "dead": dead,
                "replacement": replacement,
                "step": t.step.to_string(),
                "started_ms": t.started_ms,
            }),
            TaskKind::ViewChange(v) => json!({
                "id": t.id,
                "kind": "view_change",
                "change": v.change,
                "step": crate::meta::progress(&map, t.id).map(|p| p.step_name).unwrap_or_default(),
                "started_ms": t.started_ms,
                "slots_moved": v.slots_moved,
                "slots_total": v.slots_total,
            }),
        })
        .collect();
    json!({
        "cluster_id": state.identity.cluster_id,
        "epoch": map.epoch,
        "k": map.k,
        "slot_count": map.slot_count,
        "hash": map.hash,
        "answered_by": state.id(),
        "metadata_leader": if leading { Some(state.id()) } else { config.and_then(|r| r.leader).or(state.meta.known_leader()) },
        "health_known": health_known,
        "nodes": nodes,
        "groups": groups,
        "spares": map.spares(),
        "config": {
            "voters": map.config_voters,
            "leader": if leading { Some(state.id()) } else { config.and_then(|r| r.leader) },
            "term": config.map(|r| r.term),
        },
        "tasks": tasks,
    })
}

/// `GET /internal/v1/status`: the status as this node knows it (the metadata leader's is full).
pub async fn status_handler(State(state): State<Arc<Node>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_internal(&state, &headers) {
        return e.into_response();
    }
    Json(status(&state)).into_response()
}
