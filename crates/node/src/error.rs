//! Errors of the client API and their one mapping to HTTP. Each variant says what the client
//! should do; the `code` strings are stable and documented in README.md.

use axum::http::header;
/// The HTTP status an error maps to (see [`ApiError::status`]).
pub use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kvorum_router::{GroupId, NodeId, Slot};
use kvorum_wire::{ErrorBody, Versioned};

/// Errors of the node API.
#[derive(Debug, thiserror::Error)]
// The variant docs name and describe each field.
#[allow(missing_docs)]
pub enum ApiError {
    /// The request is malformed. Fix it; retrying as is will fail again.
    #[error("{0}")]
    BadRequest(String),
    /// The key is empty. Keys must have at least one byte.
    #[error("the key is empty; keys must be 1 to {max} bytes")]
    EmptyKey { max: usize },
    /// The key exceeds the configured limit.
    #[error("the key is {len} bytes; the limit is {max} bytes (max_key_bytes)")]
    KeyTooLarge { len: usize, max: usize },
    /// The value exceeds the configured limit.
    #[error("the value is {len} bytes; the limit is {max} bytes (max_value_bytes)")]
    ValueTooLarge { len: usize, max: usize },
    /// The request body exceeds what any valid request needs.
    #[error("the request body is larger than {max} bytes")]
    BodyTooLarge { max: usize },
    /// The body is not `application/json`.
    #[error("send the body as JSON with the header Content-Type: application/json")]
    UnsupportedMediaType,
    /// No such path or method.
    #[error("no route for {0}; see README.md for the API")]
    NoRoute(String),
    /// The method is not supported on this path.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// An internal route was called without the right cluster secret.
    #[error("missing or wrong cluster secret (x-kvorum-secret)")]
    Unauthorized,
    /// An internal route was called by a node of another cluster.
    #[error("this node belongs to another cluster")]
    WrongCluster,
    /// No cluster secret is configured (protected mode) and an internal route was called from
    /// an address that is neither a node of the cluster map nor loopback. Configure the same
    /// `KVORUM_CLUSTER_SECRET` on every node to accept internal calls from other addresses.
    #[error(
        "protected mode: no cluster secret is configured, so internal routes accept only the \
         cluster's nodes and loopback, and {peer} is neither; set KVORUM_CLUSTER_SECRET on every \
         node to call them from elsewhere"
    )]
    ProtectedMode { peer: String },
    /// A heartbeat's sender was removed from the cluster, is not in the map, or its incarnation
    /// is not the recorded one (its data directory was wiped). Same code as [`ApiError::NodeRemoved`]
    /// but 410 Gone: the sender's heartbeat loop (heartbeat.rs) stops on it.
    #[error("{0}")]
    NodeGone(String),
    /// A heartbeat's sender was removed by a repair (it was dead and a spare took all its
    /// replicas) and holds no seat any more: 410 Gone, code `node_replaced`. The sender drops
    /// its stale replicas and rejoins as a new node (server.rs).
    #[error("{0}")]
    NodeReplaced(String),
    /// A membership request's task or epoch is not in the newest map the group's leader knows:
    /// it comes from a deposed metadata leader or an outdated step. Re-read the map; do not retry
    /// as is.
    #[error("stale membership request: {0}")]
    StaleTask(String),
    /// The replica a membership step would remove still acknowledges the leader's log: it is not
    /// dead. Abandon the repair.
    #[error("node {node} is not dead: {detail}")]
    ReplicaAlive { node: NodeId, detail: String },
    /// The replacement of a swap is not a learner of the group. Add it as a learner first.
    #[error("node {0} is not a learner of the group; add it as a learner first")]
    NoLearner(NodeId),
    /// A node removed from the cluster called an internal route.
    #[error("node {0} was removed from the cluster; wipe it and join it as a new node")]
    NodeRemoved(NodeId),
    /// A node's incarnation is not the one the cluster map records: its data directory was wiped.
    /// The wiped node must join as a new node.
    #[error("{0}")]
    IncarnationMismatch(String),
    /// An internal request addressed to another node id reached this node (it took the address
    /// of a removed node the sender still knows). Refused; the sender should drop that node.
    #[error("{0}")]
    WrongNode(String),
    /// This node does not lead the group a leader-only internal call needs.
    #[error("this node is not the leader; the leader is {leader:?}")]
    NotLeader { leader: Option<NodeId> },
    /// The request named a (slot, epoch, group) route the answering node's map disagrees with.
    /// Definite: nothing was proposed. Refresh the map and retry.
    #[error("slot {slot} is served by group {group} at epoch {epoch}; refresh the cluster map and retry")]
    NotOwner {
        slot: Slot,
        group: GroupId,
        epoch: u64,
    },
    /// The key does not exist.
    #[error("key {0:?} does not exist")]
    KeyNotFound(String),
    /// A conditional write's condition did not hold; nothing was written. Definite.
    #[error("condition failed: the key holds {current:?}; nothing was written")]
    ConditionFailed { current: Option<Versioned> },
    /// No leader is known right now (election in progress or no quorum). Raised before
    /// proposing: definite. Retry after a moment.
    #[error("no leader for group {group} right now; retry shortly")]
    NoLeader { group: GroupId },
    /// The node could not reach the replica that would serve the request. Definite: nothing was
    /// proposed. Retry, possibly at another node.
    #[error("unavailable: {0}; retry shortly or at another node")]
    Unavailable(String),
    /// A call of the metadata leader's reached, already forwarded once, a node that is not the
    /// metadata leader (it is changing). Definite: nothing was done. Retry shortly.
    #[error("the metadata leader is changing; retry shortly")]
    MetadataLeaderChanging,
    /// The write may or may not have been applied (timeout, lost connection or leader change
    /// after proposing). Read the key before deciding to retry.
    #[error("outcome unknown: {0}; read the key to learn whether the write happened")]
    OutcomeUnknown(String),
    /// The key's slot is being moved to another group (frozen, or between its release and its
    /// activation) and the move did not finish within the request's wait. Definite: nothing
    /// was written. Retry shortly.
    #[error("slot {slot} is moving between groups: {detail}; nothing was written, retry shortly")]
    SlotMoving { slot: Slot, detail: String },
    /// A view change was refused by the planner (`code` is the planner's stable code); nothing
    /// changed.
    #[error("{message}")]
    ChangeRefused { code: &'static str, message: String },
    /// A view change is running; one at a time. Wait for task `task`.
    #[error("view change task {task} is in progress; wait for it (kvctl task {task} --wait) or cancel it")]
    ChangeInProgress { task: u64 },
    /// The new node's address does not answer as a node waiting to join.
    #[error("{0}")]
    Unreachable(String),
    /// No view-change task has this id (or it ended long ago).
    #[error("no view-change task {0} in the cluster map")]
    UnknownTask(u64),
    /// This node is waiting to be added to a cluster (started with `--join`) and serves only
    /// `/healthz` and `/v1/join`. Send the request to a member of the cluster.
    #[error(
        "this node ({addr}) is waiting to be added to the cluster and serves nothing yet; send \
         the request to a member, or add it with `kvctl add-node {addr}`"
    )]
    Joining { addr: String },
    /// The node holds as many client connections as it takes (`max_client_connections`, or
    /// what its open-file limit leaves) and refused this one before reading any request on it.
    /// Definite: nothing was done. Retry shortly, or at another node.
    #[error(
        "this node serves {limit} client connections at most and all are in use; nothing was \
         done: retry shortly or at another node"
    )]
    TooManyConnections { limit: usize },
    /// An internal error on this node; an operator should look at its log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::EmptyKey { .. } => "empty_key",
            ApiError::KeyTooLarge { .. } => "key_too_large",
            ApiError::ValueTooLarge { .. } => "value_too_large",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NoRoute(_) => "no_route",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Unauthorized => "unauthorized",
            ApiError::WrongCluster => "wrong_cluster",
            ApiError::ProtectedMode { .. } => "protected_mode",
            ApiError::NodeRemoved(_) | ApiError::NodeGone(_) => "node_removed",
            ApiError::NodeReplaced(_) => "node_replaced",
            ApiError::StaleTask(_) => "stale_task",
            ApiError::ReplicaAlive { .. } => "replica_alive",
            ApiError::NoLearner(_) => "no_learner",
            ApiError::IncarnationMismatch(_) => "incarnation_mismatch",
            ApiError::WrongNode(_) => "wrong_node",
            ApiError::NotLeader { .. } => "not_leader",
            ApiError::NotOwner { .. } => "not_owner",
            ApiError::KeyNotFound(_) => "key_not_found",
            ApiError::ConditionFailed { .. } => "condition_failed",
            ApiError::NoLeader { .. } => "no_leader",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::MetadataLeaderChanging => "metadata_leader_changing",
            ApiError::OutcomeUnknown(_) => "outcome_unknown",
            ApiError::SlotMoving { .. } => "slot_moving",
            ApiError::ChangeRefused { code, .. } => code,
            ApiError::ChangeInProgress { .. } => "change_in_progress",
            ApiError::Unreachable(_) => "unreachable",
            ApiError::UnknownTask(_) => "unknown_task",
            ApiError::Joining { .. } => "joining",
            ApiError::TooManyConnections { .. } => "too_many_connections",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::EmptyKey { .. } => StatusCode::BAD_REQUEST,
            ApiError::KeyTooLarge { .. }
            | ApiError::ValueTooLarge { .. }
            | ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NoRoute(_) | ApiError::KeyNotFound(_) | ApiError::UnknownTask(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::ChangeRefused { code, .. } => match *code {
                "unknown_node" => StatusCode::NOT_FOUND,
                "empty_address" => StatusCode::BAD_REQUEST,
                _ => StatusCode::CONFLICT,
            },
            ApiError::ChangeInProgress { .. } => StatusCode::CONFLICT,
            ApiError::Unreachable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::WrongCluster | ApiError::ProtectedMode { .. } | ApiError::NodeRemoved(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotLeader { .. } | ApiError::NotOwner { .. } => {
                StatusCode::MISDIRECTED_REQUEST
            }
            ApiError::NodeGone(_) | ApiError::NodeReplaced(_) => StatusCode::GONE,
            ApiError::ConditionFailed { .. }
            | ApiError::IncarnationMismatch(_)
            | ApiError::WrongNode(_)
            | ApiError::StaleTask(_)
            | ApiError::ReplicaAlive { .. }
            | ApiError::NoLearner(_) => StatusCode::CONFLICT,
            ApiError::NoLeader { .. }
            | ApiError::Unavailable(_)
            | ApiError::MetadataLeaderChanging
            | ApiError::SlotMoving { .. }
            | ApiError::Joining { .. }
            | ApiError::TooManyConnections { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OutcomeUnknown(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body of this error's answer: its code, its message and the fields its code adds.
    pub fn body(&self) -> ErrorBody {
        let mut body = ErrorBody::new(self.code(), self.to_string());
        match self {
            ApiError::ConditionFailed { current } => body.current = Some(current.clone()),
            ApiError::NotLeader { leader } => body.leader = Some(*leader),
            ApiError::NotOwner { slot, group, epoch } => {
                body.slot = Some(*slot);
                body.group = Some(*group);
                body.epoch = Some(*epoch);
            }
            ApiError::SlotMoving { slot, .. } => body.slot = Some(*slot),
            ApiError::ChangeInProgress { task } => body.task = Some(*task),
            _ => {}
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), axum::Json(self.body())).into_response();
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }
}
