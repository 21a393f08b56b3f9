//! The Raft network of one node: openraft's RPCs between replicas, addressed to a (group, node)
//! pair, as bincode over persistent HTTP/1.1 connections on routes separate from the client API
//! (`/internal/v1/raft/{group}/{append|vote|snapshot|prevote}`). The receiving side, and the guard of every
//! internal route, is `transport`.
//!
//! Outgoing connections bind to this node's own IP, so that tests can cut the network between
//! two loopback addresses with packet filters.

use std::sync::Arc;

use kvorum_raftstore::{GroupId, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};

use crate::election::{PreVoteReply, PreVoteRequest};
use crate::incarnation::{Incarnations, INCARNATION_HEADER, TO_INCARNATION_HEADER, TO_NODE_HEADER};

use kvorum_wire::headers::{CLUSTER_HEADER, FROM_HEADER, SECRET_HEADER};

/// Creates connections to peers for one group.
#[derive(Clone)]
pub struct Network {
    /// The node's HTTP client (bound to its own address).
    pub http: reqwest::Client,
    /// The group whose RPCs these connections carry.
    pub group: GroupId,
    /// This node's id, sent with every RPC.
    pub from: NodeId,
    /// The cluster secret, sent with every RPC.
    pub secret: Arc<str>,
    /// The cluster's id, sent with every RPC.
    pub cluster_id: Arc<str>,
    /// This node's incarnation, sent with every RPC.
    pub incarnation: Arc<str>,
    /// The incarnations the known map records: every RPC names the one it expects to reach.
    pub recorded: Incarnations,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            net: self.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Network {
    /// Asks `target` (at `addr`) for its pre-vote (see `election`), within `timeout`.
    pub async fn pre_vote(
        &self,
        target: NodeId,
        addr: &str,
        req: &PreVoteRequest,
        timeout: std::time::Duration,
    ) -> Result<PreVoteReply, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let conn = Connection {
            net: self.clone(),
            target,
            addr: addr.to_string(),
        };
        conn.call("prevote", req, &RPCOption::new(timeout)).await
    }
}

/// The connection to one peer replica. reqwest keeps the TCP connection alive between RPCs.
pub struct Connection {
    net: Network,
    target: NodeId,
    addr: String,
}

impl Connection {
    async fn call<Req: Serialize, Resp: DeserializeOwned, E>(
        &self,
        rpc: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let body = bincode::serialize(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let url = format!(
            "http://{}/internal/v1/raft/{}/{rpc}",
            self.addr, self.net.group
        );
        let req = self
            .net
            .http
            .post(url)
            .header(SECRET_HEADER, &*self.net.secret)
            .header(CLUSTER_HEADER, &*self.net.cluster_id)
            .header(FROM_HEADER, self.net.from.to_string())
            .header(INCARNATION_HEADER, &*self.net.incarnation)
            // A node at the address with another id refuses; only the addressed node stops when
            // it is not the incarnation we know.
            .header(TO_NODE_HEADER, self.target.to_string());
        // The receiver refuses (and stops) if it is not the incarnation we know: a wiped node
        // must not vote or be voted for under its old id.
        let req = match self.net.recorded.of(self.target) {
            Some(expected) => req.header(TO_INCARNATION_HEADER, expected),
            None => req,
        };
        let resp = req
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(option.hard_ttl())
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_connect() {
                    RPCError::Unreachable(Unreachable::new(&e))
                } else {
                    RPCError::Network(NetworkError::new(&e))
                }
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if !status.is_success() {
            let msg = String::from_utf8_lossy(&bytes).to_string();
            let err =
                std::io::Error::other(format!("peer {} answered {status}: {msg}", self.target));
            return Err(RPCError::Network(NetworkError::new(&err)));
        }
        let result: Result<Resp, RaftError<NodeId, E>> =
            bincode::deserialize(&bytes).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Most bytes of log entries sent in one append RPC (at least one entry is always sent).
/// openraft 0.9 gives an append RPC `heartbeat_interval` to complete, so an RPC must cross the
/// link in that time: 1 MiB in the default 250 ms needs about 35 Mbit/s per follower.
pub const MAX_APPEND_BYTES: u64 = 1 << 20;

/// How many of `entries`, from the first, fit in [`MAX_APPEND_BYTES`] (at least one).
fn entries_within_budget<T: Serialize>(entries: &[T], budget: u64) -> usize {
    let mut used = 0u64;
    for (i, e) in entries.iter().enumerate() {
        used += bincode::serialized_size(e).unwrap_or(u64::MAX);
        if used > budget && i > 0 {
            return i;
        }
    }
    entries.len()
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        mut req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        // openraft bounds an append by entry count only; large values could make one RPC too big
        // to cross the link before its timeout, and it would be retried (and time out) forever.
        // Send a prefix that fits the byte budget; a follower that accepts it has matched up to
        // its last entry, which openraft takes as a partial success and continues from there.
        let keep = entries_within_budget(&req.entries, MAX_APPEND_BYTES);
        if keep == req.entries.len() {
            return self.call("append", &req, &option).await;
        }
        req.entries.truncate(keep);
        let last = req.entries.last().map(|e| e.log_id);
        match self.call("append", &req, &option).await? {
            AppendEntriesResponse::Success => Ok(AppendEntriesResponse::PartialSuccess(last)),
            other => Ok(other),
        }
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &req, &option).await
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &req, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // An append carries entries up to the byte budget, and always at least one entry, so a
    // value larger than the budget still replicates.
    #[test]
    fn append_is_cut_at_the_byte_budget() {
        let kib = |n: usize| "x".repeat(n * 1024);
        let entries = vec![kib(400), kib(400), kib(400), kib(400)];
        assert_eq!(entries_within_budget(&entries, 1 << 20), 2);
        assert_eq!(entries_within_budget(&entries[..1], 1), 1);
        assert_eq!(entries_within_budget(&[kib(2048)], 1 << 20), 1);
        let small = vec![kib(1); 64];
        assert_eq!(entries_within_budget(&small, 1 << 20), 64);
        assert_eq!(entries_within_budget::<String>(&[], 1 << 20), 0);
    }
}
