//! What a group's leader does for the metadata leader's task drivers: the admin steps of a view
//! change (slot commands, scans, fences: `admin`), membership steps of a repair or a view change
//! (`membership`, with the liveness probe before a swap: `probe`), and the state hash of the
//! consistency check (`hash`); `steps` holds the epoch and locks these steps share. The senders
//! are in `meta`; the routes in `http`.

pub(crate) mod admin;
pub(crate) mod handoff;
pub(crate) mod hash;
pub(crate) mod membership;
pub(crate) mod probe;
pub(crate) mod steps;

pub use admin::{serve_admin, AdminOp, AdminReply, AdminRequest};
pub use membership::{serve_membership, MembershipOp, MembershipRequest};
pub use steps::GroupSteps;
