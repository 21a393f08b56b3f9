//! What a group's leader keeps about the steps drivers send it: the newest map epoch it accepted
//! (older steps come from a deposed metadata leader) and one lock per group for the steps.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvorum_raftstore::GroupId;

/// Longest wait of a group's leader to learn the newer map an admin or membership request
/// names (a heartbeat round to the metadata leader, with room for a slow one).
pub(crate) const MAP_LEARN_WAIT: Duration = Duration::from_secs(2);

/// The step state of this node as a group's leader (every node may lead a group).
#[derive(Default)]
pub struct GroupSteps {
    /// The newest epoch of an admin or membership request accepted; older ones are refused.
    accepted: AtomicU64,
    /// One lock per group, held while a driver's step is proposed and, for a membership step,
    /// from its fence to its membership change (see [`GroupSteps::step_lock`]).
    locks: Mutex<HashMap<GroupId, Arc<tokio::sync::Mutex<()>>>>,
}

impl GroupSteps {
    /// The newest epoch of a request this node accepted.
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Records that a request at `epoch` was accepted: older ones are refused from now on.
    pub(crate) fn accept(&self, epoch: u64) {
        self.accepted.fetch_max(epoch, Ordering::SeqCst);
    }

    /// The lock of `group`'s driver steps on this node. A membership step holds it from its
    /// [`kvorum_raftstore::Command::Fence`] to its membership change, and every other step while
    /// it is proposed, so a newer driver's fence can never fall between a deposed driver's fence
    /// check and its membership change on this leader (on another leader the change fails: it
    /// no longer leads).
    pub(crate) fn step_lock(&self, group: GroupId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(group).or_default().clone()
    }
}
