//! The metadata role, active on the config group's leader: collects heartbeats, derives node
//! health, repairs groups from spares as resumable tasks recorded in the cluster map, and answers
//! the cluster status.
//!
//! Steps of a tick (every 500 ms, only while this node leads the config group): (1) a read-index
//! round on the config group, so the local map is everything committed; (2) on a new term, give
//! every node a fresh grace period (heartbeats are soft state, not in the log); (3) start a driver
//! for every task that has none; (4) plan repairs for the groups without a task. The tick never
//! waits for a repair step: each task runs in its own driver, which stops when this node loses
//! the term it was started in.
//!
//! A repair replaces a replica on a dead (or removed) node: AddLearner (the replacement joins the
//! group as a learner and catches up by snapshot and log), then Swap: one membership change
//! (openraft's joint consensus from the old voters to the new ones, in one call) replaces the dead
//! voter by the learner, so the group never has more than K voters; the map then lists the
//! replacement and marks the dead node removed. Before the swap, the group's leader confirms the
//! dead replica no longer acknowledges its log (a node cut off from the metadata leader only is
//! not dead). At most one task per group; tasks of different groups run in parallel. A task not
//! swapped within `TASK_TIME_LIMIT` of its start, whose replacement died, or whose dead node is
//! heard from again is abandoned (its learner removed). Each step checks the group's real
//! membership first, so a new leader can redo any step. Membership requests carry the task id and
//! the map epoch; the group's leader refuses those its newest map makes stale, and a new metadata
//! leader claims each task (a map change) before its first request, so a deposed leader's late
//! step is refused.
//!
//! Who replaces what: a data replica on a dead node is replaced by an alive spare. A config voter
//! on a dead node is replaced by an alive spare; once the node is removed (replaced elsewhere) any
//! alive non-voter may take its seat. With no candidate the group keeps running without it, and
//! the node may come back (it rejoins with its data). A node an operator drained (`drain`: the
//! map's `drain_until_ms`) is not replaced until its drain ends, however long it is silent.
//!
//! The map is changed only here, by a compare-and-set on its record version in the config group,
//! so two leaders of different terms can never both apply a change computed from the same map.
//!
//! Files, from the bottom up (none imports a file above it): `state` (the role's soft state),
//! `messages` (the heartbeat messages), `lease` (leading and acting), `record` (the map's one
//! writer), `driver` (what task drivers share), `leader_call` (calls to a group's leader); then
//! one file per operation (`health`, `tasks`, `membership` and `admin` — the driver side of
//! a group leader's steps, which `crate::group` runs —, `view_change`, `moves`, `progress`,
//! `consistency`, `drain`); and `tick`, the loop on top. No file here imports axum: the routes are in
//! `crate::http`.

mod admin;
mod consistency;
mod copy;
mod drain;
mod driver;
mod health;
mod leader_call;
mod lease;
mod membership;
mod messages;
mod moves;
mod progress;
mod record;
pub mod state;
mod tasks;
mod tick;
mod view_change;

pub(crate) use consistency::check_now;
pub(crate) use consistency::comparisons;
pub use drain::set_drain;
pub(crate) use driver::now_ms;
pub(crate) use health::best_reports;
pub use health::{receive_heartbeat, voter_sets, Health, Refused};
pub use lease::{config_leader_hint, is_metadata_leader};
pub use messages::{Heartbeat, HeartbeatReply, ReplicaReport};
pub use moves::{next_batch, MOVE_BATCH_SLOTS};
pub use progress::{describe, progress};
pub use record::{update_map, MapUpdateError};
pub use state::Meta;
pub use tick::run;
pub use view_change::{cancel_change, check_change, start_change};
