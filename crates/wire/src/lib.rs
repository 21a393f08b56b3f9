//! The HTTP wire contract of kvorum, defined once and used by both ends: the node (`kvnode`,
//! which serves it) and the client library (`kvorum_client`, `kvctl`, the tests). What crosses
//! the wire is a type here; neither side builds or reads untyped JSON for it.
//!
//! Modules:
//! - [`status`]: [`ClusterStatus`], `GET /v1/cluster/status`, the cluster status the metadata
//!   leader assembles.
//! - [`headers`]: the `x-kvorum-*` header names.
//! - [`route`]: [`RouteHeader`], the `x-kvorum-route` value `<slot>:<epoch>:<group>`.
//! - [`keys`]: the key API's bodies, queries and replies, and [`Versioned`] and [`Condition`],
//!   which the Raft log shares (their serde shape is a persistent format; defined in
//!   kvorum-record, re-exported here).
//! - [`error`]: [`ErrorBody`], the body of every error answer.
//! - [`map`]: [`MapReply`], `GET /v1/cluster/map`.
//! - [`join`]: [`JoinState`], `GET /v1/join` (a node waiting to be added, or a member).
//! - [`cluster`]: view changes (add and remove nodes) and their tasks' [`TaskProgress`].

#![warn(missing_docs)]

pub mod status;

pub mod cluster;
pub mod drain;
pub mod error;
pub mod headers;
pub mod join;
pub mod keys;
pub mod map;
pub mod route;

pub use cluster::{AddNodeBody, TaskProgress, TaskState};
pub use drain::{DrainBody, DrainReply, HandedOff, Leaderships};
pub use error::ErrorBody;
pub use join::{JoinPhase, JoinState};
pub use keys::{
    AppendBody, Condition, ConditionConflict, DeleteQuery, DeleteReply, GetQuery, KeyReply,
    PutBody, Versioned, WriteReply,
};
pub use map::MapReply;
pub use route::{RouteHeader, RouteParseError};
pub use status::{
    ClusterStatus, ConfigStatus, ConsistencyReport, GroupConsistency, GroupStatus, NodeRole,
    NodeState, NodeStatus, TaskStatus, REPLACE_REPLICA, VIEW_CHANGE,
};
