//! Serving a key request, at the node that took it: routing it to its group and that group's
//! leader (`route`), the write path (`write`) and the read path (`read`, `read_index`).
//!
//! Steps of a request: (1) extract and validate the key, body and query (bad input is answered
//! here, at the first node), (2) route it: key → slot → owning group in this node's map; a
//! request carrying `x-kvorum-route: slot:epoch:group` is checked against the map (a newer epoch
//! first refreshes the map; a group that does not own the slot answers `not_owner`), (3) find
//! where it is served: locally when this node's replica leads the group (or for a stale read on
//! any replica of it), else at the group's leader (leader hint first, then its members; a spare
//! or a replica of another group always forwards), (4) serve it locally — writes through the
//! Raft log, linearizable reads through a batched read-index round — or forward the original
//! request with this node's route and pass the answer through.
//!
//! Definite vs unknown: a write fails definitely only before it is proposed (validation, no
//! leader, the forward target unreachable before sending). After proposing, a timeout, a lost
//! connection or a leader change answer `outcome_unknown`; no layer retries such a write.

pub mod read;
pub mod read_index;
pub mod request;
pub mod route;
pub mod write;

pub use request::Incoming;
