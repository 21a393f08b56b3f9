//! View changes from the client's side: add or remove a node, follow or cancel the task; and
//! draining a node before a planned stop.
//!
//! Steps of a change as a client sees it (contract: `kvorum_wire::cluster`):
//! 1. [`Client::add_node`] / [`Client::remove_node`] ask any node to start the change; the answer
//!    (`202`) is the task's first [`TaskProgress`], or a refusal: [`ClientError::ChangeInProgress`]
//!    with the running task's id, or [`ClientError::Api`] with the stable code (`address_in_use`,
//!    `too_few_nodes`, ...);
//! 2. [`Client::wait_task`] polls `GET /v1/cluster/tasks/{id}` until the task's state is final,
//!    handing every answer to a callback. The task runs in the cluster, not in the client: a
//!    client that stops waiting (or dies) leaves it running, and any node answers about it.
//! 3. [`Client::cancel_task`] asks the task to stop safely (moves not past their release roll
//!    back); the task then ends `cancelled` (or `done` if it was too far along).
//!
//! These calls take the plain path (configured endpoints; any node forwards to the metadata
//! leader), so a failing node costs one retry at the next endpoint. Starting a change is not
//! idempotent: a start whose answer was lost surfaces as [`ClientError::OutcomeUnknown`]
//! (`kvctl status` shows whether a task runs). Reading and cancelling a task are retried freely.

use std::time::{Duration, Instant};

use kvorum_router::{NodeId, NodeLifecycle};
use kvorum_wire::{AddNodeBody, DrainBody, DrainReply, TaskProgress};
use reqwest::Method;

use crate::{bad_reply, Client, ClientError};

impl Client {
    /// Starts adding the node at `addr` (`ip:port`, running and waiting to join). Returns the
    /// task's first progress at once; follow it with [`Client::wait_task`].
    pub async fn add_node(&self, addr: &str) -> Result<TaskProgress, ClientError> {
        let body = AddNodeBody {
            addr: addr.to_string(),
        };
        let body = serde_json::to_value(body).map_err(bad_reply)?;
        let v = self
            .call(None, Method::POST, "/v1/cluster/nodes", Some(body), true)
            .await?;
        progress_of(v)
    }

    /// Starts removing `node` from the cluster for good. Returns the task's first progress at
    /// once; follow it with [`Client::wait_task`].
    pub async fn remove_node(&self, node: NodeId) -> Result<TaskProgress, ClientError> {
        let path = format!("/v1/cluster/nodes/{node}");
        let v = self.call(None, Method::DELETE, &path, None, true).await?;
        progress_of(v)
    }

    /// Drains `node` before a planned stop (`kvorum_wire::drain`): no repair replaces it for
    /// `minutes` (the cluster's default when `None`), and it hands the leadership of its groups
    /// to other voters. Asking twice is harmless (the mark is set again, a node that leads
    /// nothing hands off nothing), so a lost answer is retried.
    pub async fn drain(
        &self,
        node: NodeId,
        minutes: Option<u64>,
    ) -> Result<DrainReply, ClientError> {
        let path = format!("/v1/cluster/nodes/{node}/drain");
        let body = serde_json::to_value(DrainBody { minutes }).map_err(bad_reply)?;
        let v = self
            .call(None, Method::POST, &path, Some(body), false)
            .await?;
        serde_json::from_value(v).map_err(bad_reply)
    }

    /// Ends `node`'s drain: repairs treat it as any node again.
    pub async fn end_drain(&self, node: NodeId) -> Result<DrainReply, ClientError> {
        let path = format!("/v1/cluster/nodes/{node}/drain");
        let v = self.call(None, Method::DELETE, &path, None, false).await?;
        serde_json::from_value(v).map_err(bad_reply)
    }

    /// The progress of task `id` (`unknown_task` if the cluster has no such task).
    pub async fn task(&self, id: u64) -> Result<TaskProgress, ClientError> {
        let path = format!("/v1/cluster/tasks/{id}");
        let v = self.call(None, Method::GET, &path, None, false).await?;
        progress_of(v)
    }

    /// Asks task `id` to stop safely and returns its progress then (typically `cancelling`).
    /// Asking twice is harmless, so a lost answer is retried.
    pub async fn cancel_task(&self, id: u64) -> Result<TaskProgress, ClientError> {
        let path = format!("/v1/cluster/tasks/{id}/cancel");
        let v = self.call(None, Method::POST, &path, None, false).await?;
        progress_of(v)
    }

    /// Polls task `id` every `poll` until its state is final and returns that last progress.
    /// `on_progress` sees every answer, in order, the final one included. A node that fails is
    /// replaced by the next endpoint; only [`Client::patience`] without any answer gives up
    /// ([`ClientError::Unavailable`]). A refusal (e.g. `unknown_task`) ends the wait at once.
    /// Stopping the wait (dropping the future) leaves the task running.
    pub async fn wait_task(
        &self,
        id: u64,
        poll: Duration,
        mut on_progress: impl FnMut(&TaskProgress),
    ) -> Result<TaskProgress, ClientError> {
        let patience = self.patience();
        let mut answered = Instant::now();
        loop {
            match self.task(id).await {
                Ok(p) => {
                    answered = Instant::now();
                    on_progress(&p);
                    if p.state.is_final() {
                        return Ok(p);
                    }
                }
                Err(ClientError::Unavailable(m)) => {
                    if answered.elapsed() >= patience {
                        return Err(ClientError::Unavailable(format!(
                            "no node answered about task {id} for {} s: {m}",
                            patience.as_secs_f64()
                        )));
                    }
                }
                Err(e) => return Err(e),
            }
            tokio::time::sleep(poll).await;
        }
    }

    /// The node named by `node`: a node id as is, or an `ip:port` looked up among the cluster
    /// map's nodes that are still members (`unknown_node` if none has it, `node_removed` if only
    /// a removed node had it). Fails with the map's error if the map cannot be read.
    pub async fn resolve_node(&self, node: &str) -> Result<NodeId, ClientError> {
        let node = node.trim();
        if let Ok(id) = node.parse::<NodeId>() {
            return Ok(id);
        }
        let refuse = |code: &str, message: String| ClientError::Api {
            status: 0,
            code: code.into(),
            message,
        };
        if !node.contains(':') {
            return Err(refuse(
                "bad_node",
                format!("{node:?} is neither a node id nor an ip:port address"),
            ));
        }
        let (map, _) = self.map().await.map_err(|e| match e {
            ClientError::Api {
                status,
                code,
                message,
            } => ClientError::Api {
                status,
                code,
                message: format!("cannot read the cluster map to look up {node}: {message}"),
            },
            e => e,
        })?;
        let mut removed = None;
        for (id, info) in &map.nodes {
            if info.addr == node {
                match info.state {
                    NodeLifecycle::Active => return Ok(*id),
                    NodeLifecycle::Removed => removed = Some(*id),
                }
            }
        }
        Err(match removed {
            Some(id) => refuse(
                "node_removed",
                format!("node {id} at {node} was already removed from the cluster"),
            ),
            None => refuse(
                "unknown_node",
                format!(
                    "no node of the cluster map (epoch {}) has the address {node}; \
                     `kvctl status` lists the nodes",
                    map.epoch
                ),
            ),
        })
    }
}

/// A task's progress from a reply body.
fn progress_of(v: serde_json::Value) -> Result<TaskProgress, ClientError> {
    serde_json::from_value(v).map_err(bad_reply)
}
