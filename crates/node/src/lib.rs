//! kvnode: one kvorum node. It hosts the replicas the cluster map gives it (a data group, the
//! config group when it is a voter), serves the client HTTP API on every node, routes each key
//! by slot to its group's leader (forwarding when it does not lead it), heartbeats to the
//! metadata leader, is the metadata leader while it leads the config group (`meta/`), and
//! carries the internal Raft transport on routes of its own.
//!
//! Invariants:
//! - a write is acknowledged only after it is committed and applied; a read is served from
//!   local state only after a read-index round (unless the client asked for a stale read);
//! - an error is definite only when raised before the write was proposed; otherwise the answer
//!   is `outcome_unknown` and no layer retries the write;
//! - no input panics the node: every request body, path and query is validated first;
//! - `kvnode` carries no planted fault: `faults` is empty without the `test-faults` feature,
//!   which only the test package's `kvnode-test` enables, and even there only `kvnode-test`'s
//!   `main` reads the faults' variables (once, at start).
//! - a node never serves from a store it found corrupt: the read that finds it marks the store
//!   (`Store::mark_corrupt`) and stops the node, which then refuses to start until it is wiped;
//!   the cluster replaces it like a dead node. Replicas' state hashes are compared by the
//!   metadata leader (`meta/consistency.rs`).
//! - no client can stop a node or starve its Raft traffic: the open-file limit is shared
//!   between RocksDB and connections (`http::budget`), client connections are capped, the
//!   cluster's nodes have a reserve of their own, and slow or idle connections are closed
//!   (`http::listener`).
//! - a node wipes its own data only when the map says a repair replaced it and no group or
//!   config seat lists it any more (every write it held is on its groups' remaining voters);
//!   it then rejoins as a new node by itself (`server.rs`). One an operator removed never
//!   rejoins by itself.
//!
//! Not implemented / caveats (see docs/architecture.md):
//! - repairs replace replicas on dead nodes from spares; groups are created and dissolved only
//!   by view changes (`kvctl add-node` / `remove-node`, `meta/view_change.rs`);
//! - no disk quota; no TLS on either API (run on a trusted network);
//! - no planned-restart drain (openraft 0.9 has no leadership transfer): a restart shorter than
//!   `dead_after` (5 minutes by default) needs none; the probe before a repair's swap asks only
//!   the group's leader, so a node cut from its leader alone is still replaced after
//!   `dead_after` (and then rejoins as a new node).

#![warn(missing_docs)]

pub mod config;
pub mod courier;
pub mod election;
pub mod error;
pub mod faults;
#[cfg(test)]
mod fixtures;
pub mod group;
pub mod heartbeat;
pub mod http;
pub mod identity;
pub mod incarnation;
pub mod join;
pub mod launch;
pub mod map_copies;
pub mod meta;
pub mod network;
pub mod node;
pub mod serve;
pub mod server;
pub mod status;

pub use config::Config;
pub use server::{run, run_with_faults};
