//! Routing a key request: key → slot → owning group in this node's map, the route a request
//! carries checked against it, and the replica that serves it (local, or forwarded).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use kvorum_raftstore::{GroupId, NodeId, Raft};
use kvorum_router::{slot_of, ClusterMap, Slot};
use kvorum_wire::RouteHeader;

use crate::courier::{self, Attempt, Undelivered};
use crate::error::ApiError;
use crate::node::{Node, Replica};

use kvorum_wire::headers::{HOPS_HEADER, ROUTE_HEADER};

use super::request::Incoming;

/// Longest wait for a newer map that a request's route announced.
const MAP_REFRESH_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// A request forwarded this many times is refused: the cluster disagrees on its leader.
const MAX_HOPS: u32 = 3;

/// Where a request is served.
pub(crate) enum Target {
    Local(Replica),
    /// Forward to the first reachable of these addresses.
    Forward(Vec<String>),
}

/// The address of `node` in `raft`'s current membership.
pub(crate) fn node_addr(raft: &Raft, node: NodeId) -> Option<String> {
    let m = raft.metrics().borrow().membership_config.clone();
    m.membership().get_node(&node).map(|n| n.addr.clone())
}

/// Waits (briefly) until this node knows a map of at least `epoch`, asking for one at once.
pub(crate) async fn await_epoch(state: &Node, epoch: u64) {
    state.learn_epoch(epoch, MAP_REFRESH_WAIT).await;
}

/// What a request's route says against this node's map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Routed {
    /// The route agrees with the map: serve the request for this group.
    Serve(GroupId),
    /// The route names a newer epoch than the map: wait (briefly) for a map of this epoch, then
    /// check again.
    AwaitEpoch(u64),
}

/// Checks `route`, the route a request for a key in `slot` carries, against `map`. A newer
/// epoch is awaited once (`waited` false); after that the map decides as it is. Pure: the
/// waiting is the caller's.
pub(crate) fn check_route(
    map: &ClusterMap,
    slot: Slot,
    route: &RouteHeader,
    waited: bool,
) -> Result<Routed, ApiError> {
    if route.slot != slot {
        return Err(ApiError::BadRequest(format!(
            "{ROUTE_HEADER} names slot {}, but the key is in slot {slot}",
            route.slot
        )));
    }
    if !waited && map.epoch < route.epoch {
        return Ok(Routed::AwaitEpoch(route.epoch));
    }
    let owner = map
        .group_of(slot)
        .ok_or_else(|| ApiError::Internal(format!("slot {slot} has no owner")))?;
    if owner != route.group {
        return Err(ApiError::NotOwner {
            slot,
            group: owner,
            epoch: map.epoch,
        });
    }
    Ok(Routed::Serve(owner))
}

/// The slot and owning group of `key`, after checking the route the request carries, if any,
/// and the epoch of the map that names that group the owner (the route a proposal carries,
/// [`Command::Routed`], and a read is checked under).
pub(crate) async fn resolve(
    state: &Node,
    inc: &Incoming,
    key: &str,
) -> Result<(Slot, GroupId, u64), ApiError> {
    let slot = slot_of(key.as_bytes());
    if let Some(h) = inc.headers.get(ROUTE_HEADER) {
        let route: RouteHeader = h
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                ApiError::BadRequest(format!("{ROUTE_HEADER} must be slot:epoch:group"))
            })?;
        let mut waited = false;
        loop {
            let map = state.map();
            let checked = check_route(&map, slot, &route, waited)?;
            match checked {
                Routed::Serve(owner) => return Ok((slot, owner, map.epoch)),
                Routed::AwaitEpoch(epoch) => {
                    await_epoch(state, epoch).await;
                    waited = true;
                }
            }
        }
    }
    let map = state.map();
    let owner = map
        .group_of(slot)
        .ok_or_else(|| ApiError::Internal(format!("slot {slot} has no owner")))?;
    Ok((slot, owner, map.epoch))
}

/// This node's replica of `group` if it is a voter of it: in the map, or already in the group's
/// Raft membership (a replacement promoted a moment before the map lists it).
pub(crate) fn member_replica(state: &Node, group: GroupId) -> Option<Replica> {
    let replica = state.replica(group)?;
    if state.is_member(group) {
        return Some(replica);
    }
    let voter = replica
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .any(|v| v == state.id());
    voter.then_some(replica)
}

/// Where the leader-served requests of `group` go: waits briefly for a leader to be known.
pub(crate) async fn leader_target(state: &Node, group: GroupId) -> Result<Target, ApiError> {
    let Some(replica) = member_replica(state, group) else {
        return Ok(Target::Forward(state.group_addrs(group)));
    };
    let raft = &replica.raft;
    let wait = state.cfg.request_timeout / 2;
    let leader = match raft
        .wait(Some(wait))
        .metrics(|m| m.current_leader.is_some(), "a leader is known")
        .await
    {
        Ok(m) => m.current_leader,
        Err(_) => None,
    };
    match leader {
        Some(id) if id == state.id() && state.handing_off(group) => {
            Err(ApiError::Unavailable(format!(
                "this node is handing the leadership of group {group} to another replica (a drain)"
            )))
        }
        Some(id) if id == state.id() => Ok(Target::Local(replica.clone())),
        Some(id) => match node_addr(raft, id) {
            Some(addr) => {
                // The leader first, and the group's other members after it: they relay to the
                // leader they reach when this node cannot connect to it. When this replica has
                // not heard the leader for an election timeout, the link to it is likely cut
                // (a request on a kept-alive connection would hang until its outcome is unknown):
                // the other members are tried first.
                let mut addrs = state.group_addrs(group);
                addrs.retain(|a| *a != addr);
                addrs.insert(0, addr);
                if replica.clock.silence() >= state.cfg.election_timeout {
                    addrs.rotate_left(1);
                }
                Ok(Target::Forward(addrs))
            }
            None => Err(ApiError::NoLeader { group }),
        },
        None => Err(ApiError::NoLeader { group }),
    }
}

/// Sends `inc` to the first reachable address with this node's route for `slot` and passes the
/// answer through.
pub(crate) async fn forward(
    state: &Node,
    addrs: &[String],
    inc: &Incoming,
    slot: Slot,
    write: bool,
) -> Result<Response, ApiError> {
    let hops = inc.hops();
    if hops >= MAX_HOPS {
        return Err(ApiError::Unavailable(
            "the request was forwarded too many times; the cluster is changing leaders".into(),
        ));
    }
    let map = state.map();
    let route = match map.group_of(slot) {
        Some(group) => RouteHeader {
            slot,
            epoch: map.epoch,
            group,
        }
        .to_string(),
        None => return Err(ApiError::Internal(format!("slot {slot} has no owner"))),
    };
    let path = inc.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let (map, route) = (&map, &route);
    let answer = courier::deliver(addrs.iter().cloned(), |addr: String| async move {
        let mut req = state
            .http
            .request(inc.method.clone(), format!("http://{addr}{path}"))
            .header(HOPS_HEADER, (hops + 1).to_string())
            .header(ROUTE_HEADER, route.as_str())
            .timeout(state.cfg.request_timeout)
            .body(inc.body.clone());
        if let Some(ct) = inc.headers.get(header::CONTENT_TYPE) {
            req = req.header(header::CONTENT_TYPE, ct.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            // Not connected: nothing was sent, so trying the next address is safe.
            Err(e) if e.is_connect() => {
                tracing::debug!(%addr, error = %e, "forward target unreachable");
                return Attempt::Next(format!("{addr}: {e}"));
            }
            Err(e) if write => {
                return Attempt::Fail(ApiError::OutcomeUnknown(format!(
                    "forwarding to {addr}: {e}"
                )))
            }
            Err(e) => {
                return Attempt::Fail(ApiError::Unavailable(format!("forwarding to {addr}: {e}")))
            }
        };
        let status = resp.status();
        if status == StatusCode::MISDIRECTED_REQUEST {
            // Our map is older than the target's (a slot moved): nothing was proposed. Learn the
            // new map and route again.
            state.refresh.notify_one();
            return Attempt::Fail(ApiError::SlotMoving {
                slot,
                detail: format!("the cluster map changed (epoch {} here)", map.epoch),
            });
        }
        let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
        let retry = resp.headers().get(header::RETRY_AFTER).cloned();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if write => {
                return Attempt::Fail(ApiError::OutcomeUnknown(format!(
                    "reply from {addr} lost: {e}"
                )))
            }
            Err(e) => {
                return Attempt::Fail(ApiError::Unavailable(format!(
                    "reply from {addr} lost: {e}"
                )))
            }
        };
        let mut out = (status, body).into_response();
        if let Some(ct) = ct {
            out.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        if let Some(r) = retry {
            out.headers_mut().insert(header::RETRY_AFTER, r);
        }
        Attempt::Done(out)
    })
    .await;
    match answer {
        Ok(out) => Ok(out),
        Err(Undelivered::Failed(e)) => Err(e),
        Err(Undelivered::Exhausted(last)) => Err(ApiError::Unavailable(format!(
            "no replica reachable among {addrs:?} ({last})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 7 nodes, K=3: groups {1,2,3} and {4,5,6}, spare 7.
    fn map3() -> ClusterMap {
        kvorum_router::testing::map(7, 3)
    }

    // A route that agrees with the map is served by the slot's owner, whatever its (older or
    // equal) epoch; a newer epoch is awaited once, then the map decides.
    #[test]
    fn agreeing_routes_are_served() {
        let map = map3();
        let slot = slot_of(b"k");
        let owner = map.group_of(slot).expect("owned");
        let route = |epoch| RouteHeader {
            slot,
            epoch,
            group: owner,
        };
        for epoch in [0, map.epoch] {
            let checked = check_route(&map, slot, &route(epoch), false).expect("served");
            assert_eq!(checked, Routed::Serve(owner));
        }
        let newer = route(map.epoch + 1);
        let checked = check_route(&map, slot, &newer, false).expect("awaits");
        assert_eq!(checked, Routed::AwaitEpoch(map.epoch + 1));
        let checked = check_route(&map, slot, &newer, true).expect("served after waiting");
        assert_eq!(checked, Routed::Serve(owner));
    }

    // A route naming another slot than the key's is a bad request; one naming another group
    // than the owner is not_owner with the owner and this map's epoch (after the wait, too).
    #[test]
    fn disagreeing_routes_are_refused() {
        let map = map3();
        let slot = slot_of(b"k");
        let owner = map.group_of(slot).expect("owned");
        let other = GroupId(owner.0 % 3 + 1);
        assert_ne!(other, owner);
        let wrong_slot = RouteHeader {
            slot: Slot((slot.0 + 1) % kvorum_router::SLOT_COUNT),
            epoch: map.epoch,
            group: owner,
        };
        let err = check_route(&map, slot, &wrong_slot, false).expect_err("wrong slot");
        assert_eq!(err.code(), "bad_request");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        for (epoch, waited) in [(map.epoch, false), (map.epoch + 1, true)] {
            let route = RouteHeader {
                slot,
                epoch,
                group: other,
            };
            let err = check_route(&map, slot, &route, waited).expect_err("other group");
            assert!(
                matches!(err, ApiError::NotOwner { slot: s, group, epoch: e }
                    if s == slot && group == owner && e == map.epoch),
                "{err:?}"
            );
            assert_eq!(err.status(), StatusCode::MISDIRECTED_REQUEST);
        }
    }
}
