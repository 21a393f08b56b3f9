//! kvnode: one kvorum node. It hosts its replica of the data group (when it is a member), serves
//! the client HTTP API on every node, forwards requests to the group's leader, and carries the
//! internal Raft transport on routes of its own.
//!
//! Invariants:
//! - a write is acknowledged only after it is committed and applied; a read is served from
//!   local state only after a read-index round (unless the client asked for a stale read);
//! - an error is definite only when raised before the write was proposed; otherwise the answer
//!   is `outcome_unknown` and no layer retries the write;
//! - no input panics the node: every request body, path and query is validated first.
//!
//! Not implemented / caveats (see docs/architecture.md):
//! - one data group; no config group, no partitions, no automatic repair, no view changes yet:
//!   a view with room for two or more groups is refused at startup;
//! - a node's membership is fixed by the view it was created with;
//! - no disk quota; no TLS on either API (run on a trusted network).

pub mod api;
pub mod cli;
pub mod config;
pub mod error;
pub mod identity;
pub mod reads;
pub mod server;
pub mod transport;

pub use config::Config;
pub use server::run;
