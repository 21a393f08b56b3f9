//! Elections: when a replica campaigns, and the pre-vote round that keeps a replica that only
//! lost touch with its leader from deposing it.
//!
//! openraft 0.9's own election timer is switched off on every replica: a follower that knows a
//! leader waits its leader lease (`election_timeout_max`) *plus* a random election timeout before
//! it campaigns, which made a failover take 4–5 s, and it campaigns without asking anyone first,
//! so a node cut off from its leader raised its term again and again and deposed a healthy leader
//! when the cut healed (openraft 0.9 has neither PreVote nor CheckQuorum). Instead, each replica
//! runs [`run`]:
//!
//! - a follower that has not heard its leader (an append or snapshot RPC of the current term, as
//!   the transport records it in [`LeaderClock`]) for the election timeout plus a random
//!   fraction of it (redrawn at every attempt) asks the other voters first: a **pre-vote**
//!   ([`PreVoteRequest`]) that changes no state;
//! - a voter grants it only if it has not heard a leader for the election timeout itself, is not
//!   the leader, and the candidate's log is at least as new as its own ([`grants`]);
//! - with grants from a majority of every voter set (joint consensus included; its own counts),
//!   the replica starts a real election (`Raft::trigger().elect()`); otherwise it waits another
//!   timeout.
//!
//! Safety never rests on the pre-vote: the real vote is openraft's, with its own checks. openraft
//! still refuses a vote while its leader lease (its `election_timeout_max`, set to the election
//! timeout) has not run out since it heard the leader, which is what the metadata leader's lease
//! (`meta/lease.rs`) relies on; a pre-vote is granted only after the same time.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvorum_raftstore::{NodeId, Raft};
use openraft::LogId;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::network::Network;

/// When this replica last heard its leader.
#[derive(Debug)]
pub struct LeaderClock {
    heard: Mutex<Instant>,
}

impl LeaderClock {
    /// A clock that heard its leader just now: a starting replica gives the leader a full
    /// election timeout to show itself.
    pub fn new() -> LeaderClock {
        LeaderClock {
            heard: Mutex::new(Instant::now()),
        }
    }

    /// Notes an append or snapshot RPC from a leader of `term` when this replica's term is
    /// `current`: only the leader of the current term (or a newer one) counts.
    pub fn heard(&self, term: u64, current: u64) {
        if term >= current {
            *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }

    /// Notes that this replica leads: when it steps down, its silence counts from its last act
    /// as leader, not from an append of long before.
    pub fn leading(&self) {
        *self.heard.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// How long since this replica last heard its leader.
    pub fn silence(&self) -> Duration {
        self.heard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

impl Default for LeaderClock {
    fn default() -> Self {
        LeaderClock::new()
    }
}

/// A replica's question before it campaigns: would you vote for me now?
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// The replica asking.
    pub candidate: NodeId,
    /// Its last log id: a voter grants only a candidate whose log is at least as new as its own.
    pub last_log: Option<LogId<NodeId>>,
}

/// The answer to a [`PreVoteRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteReply {
    /// Whether this voter would vote for the candidate now.
    pub granted: bool,
    /// Why not, when it would not (for the log).
    pub refused: Option<String>,
}

/// What a voter knows when it answers a pre-vote.
#[derive(Debug, Clone)]
pub struct VoterView {
    /// Whether it leads the group.
    pub leading: bool,
    /// How long since it heard its leader.
    pub silence: Duration,
    /// Its last log id.
    pub last_log: Option<LogId<NodeId>>,
}

/// Whether a voter in `view` grants `req`, with `timeout` the election timeout. Pure.
pub fn grants(req: &PreVoteRequest, view: &VoterView, timeout: Duration) -> Result<(), String> {
    if view.leading {
        return Err("this replica leads the group".into());
    }
    if view.silence < timeout {
        return Err(format!(
            "this replica heard its leader {} ms ago",
            view.silence.as_millis()
        ));
    }
    if req.last_log < view.last_log {
        return Err(format!(
            "the candidate's log ({:?}) is behind this replica's ({:?})",
            req.last_log, view.last_log
        ));
    }
    Ok(())
}

/// Answers a pre-vote on `raft`, whose leader was last heard on `clock`.
pub fn answer(
    raft: &Raft,
    clock: &LeaderClock,
    timeout: Duration,
    req: &PreVoteRequest,
) -> PreVoteReply {
    let view = VoterView {
        leading: raft.metrics().borrow().state.is_leader(),
        silence: clock.silence(),
        last_log: raft.data_metrics().borrow().last_log,
    };
    match grants(req, &view, timeout) {
        Ok(()) => PreVoteReply {
            granted: true,
            refused: None,
        },
        Err(why) => PreVoteReply {
            granted: false,
            refused: Some(why),
        },
    }
}

/// Whether `granted` holds a majority of every voter set in `configs` (one set, or two during a
/// joint membership change). Pure.
pub fn quorum(configs: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !configs.is_empty()
        && configs
            .iter()
            .all(|voters| voters.iter().filter(|v| granted.contains(v)).count() * 2 > voters.len())
}

/// How often [`run`] looks at its replica, as a fraction of the election timeout.
const CHECKS_PER_TIMEOUT: u32 = 20;

/// The time a follower waits without hearing its leader before it asks for pre-votes: the
/// election timeout plus a random part of up to half of it, so that the followers of a dead
/// leader rarely ask at the same moment.
fn patience(timeout: Duration) -> Duration {
    timeout + timeout.mul_f64(rand::thread_rng().gen_range(0.0..0.5))
}

/// Drives the elections of one replica for its lifetime (see the module). `network` reaches the
/// group's other replicas; `timeout` is the election timeout.
pub async fn run(
    raft: Raft,
    clock: std::sync::Arc<LeaderClock>,
    network: Network,
    timeout: Duration,
) {
    let me = network.from;
    let mut wait = patience(timeout);
    let mut last_try: Option<Instant> = None;
    loop {
        tokio::time::sleep(timeout / CHECKS_PER_TIMEOUT).await;
        let m = raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let membership = m.membership_config.membership().clone();
        if m.state.is_leader() {
            clock.leading();
            continue;
        }
        if !membership.voter_ids().any(|v| v == me) {
            continue;
        }
        let quiet = clock
            .silence()
            .min(last_try.map_or(Duration::MAX, |t| t.elapsed()));
        if quiet < wait {
            continue;
        }
        last_try = Some(Instant::now());
        wait = patience(timeout);
        let req = PreVoteRequest {
            candidate: me,
            last_log: raft.data_metrics().borrow().last_log,
        };
        let peers: Vec<(NodeId, String)> = membership
            .nodes()
            .filter(|(id, _)| **id != me && membership.voter_ids().any(|v| v == **id))
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let asks = peers.iter().map(|(id, addr)| {
            let (network, req) = (&network, &req);
            async move { (*id, network.pre_vote(*id, addr, req, timeout / 2).await) }
        });
        let mut granted = BTreeSet::from([me]);
        let mut refusals = Vec::new();
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Ok(PreVoteReply { granted: true, .. }) => {
                    granted.insert(id);
                }
                Ok(PreVoteReply { refused, .. }) => {
                    refusals.push(format!("{id}: {}", refused.unwrap_or_default()))
                }
                Err(e) => refusals.push(format!("{id}: {e}")),
            }
        }
        if clock.silence() < timeout {
            // A leader was heard while the pre-votes were out: it is alive, no campaign.
            continue;
        }
        if !quorum(membership.get_joint_config(), &granted) {
            tracing::info!(
                group = %network.group,
                term = m.current_term,
                refusals = ?refusals,
                "no leader heard for {} ms, but the pre-vote found no majority: not campaigning",
                clock.silence().as_millis()
            );
            continue;
        }
        tracing::info!(
            group = %network.group,
            term = m.current_term,
            granted = ?granted,
            "no leader heard for {} ms; pre-vote granted by a majority: campaigning",
            clock.silence().as_millis()
        );
        if let Err(e) = raft.trigger().elect().await {
            tracing::debug!(group = %network.group, error = %e, "replica stopped; elections end");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    fn view(leading: bool, silence_ms: u64, last_log: Option<LogId<NodeId>>) -> VoterView {
        VoterView {
            leading,
            silence: Duration::from_millis(silence_ms),
            last_log,
        }
    }

    // A voter grants a pre-vote only when it is not the leader, has not heard its leader for the
    // election timeout, and the candidate's log is at least as new as its own.
    #[test]
    fn a_pre_vote_is_granted_only_after_silence_to_an_up_to_date_candidate() {
        let timeout = Duration::from_millis(1000);
        let req = |last_log| PreVoteRequest {
            candidate: 2,
            last_log,
        };
        // Silent long enough, same log: granted.
        assert!(grants(&req(log(3, 10)), &view(false, 1000, log(3, 10)), timeout).is_ok());
        // A newer log (higher term, or same term and longer): granted.
        assert!(grants(&req(log(4, 2)), &view(false, 1500, log(3, 10)), timeout).is_ok());
        assert!(grants(&req(log(3, 11)), &view(false, 1500, log(3, 10)), timeout).is_ok());
        // The voter heard its leader recently: refused, whatever the log.
        let e = grants(&req(log(9, 99)), &view(false, 999, log(3, 10)), timeout)
            .expect_err("a voter that heard its leader refuses");
        assert!(e.contains("heard its leader 999 ms ago"), "{e}");
        // The voter is the leader: refused.
        assert!(grants(&req(log(9, 99)), &view(true, 5000, log(3, 10)), timeout).is_err());
        // The candidate's log is behind (shorter, or an older term): refused.
        assert!(grants(&req(log(3, 9)), &view(false, 5000, log(3, 10)), timeout).is_err());
        assert!(grants(&req(log(2, 50)), &view(false, 5000, log(3, 10)), timeout).is_err());
        assert!(grants(&req(None), &view(false, 5000, log(1, 1)), timeout).is_err());
        // A pristine voter grants a pristine candidate.
        assert!(grants(&req(None), &view(false, 5000, None), timeout).is_ok());
    }

    // A majority of every voter set is needed: one set, or both during a joint change.
    #[test]
    fn quorum_needs_a_majority_of_every_voter_set() {
        let set = |ids: &[NodeId]| ids.iter().copied().collect::<BTreeSet<_>>();
        let one = vec![set(&[1, 2, 3])];
        assert!(quorum(&one, &set(&[1, 2])));
        assert!(!quorum(&one, &set(&[1])));
        assert!(!quorum(&one, &set(&[1, 4, 5])));
        let single = vec![set(&[1])];
        assert!(quorum(&single, &set(&[1])));
        let joint = vec![set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert!(!quorum(&joint, &set(&[1, 2])));
        assert!(quorum(&joint, &set(&[1, 3, 4])));
        assert!(!quorum(&[], &set(&[1])));
        // Four voters need three.
        assert!(!quorum(&[set(&[1, 2, 3, 4])], &set(&[1, 2])));
        assert!(quorum(&[set(&[1, 2, 3, 4])], &set(&[1, 2, 3])));
    }

    // The wait before a campaign is the timeout plus at most half of it.
    #[test]
    fn patience_is_between_one_and_one_and_a_half_timeouts() {
        let t = Duration::from_millis(1000);
        for _ in 0..1000 {
            let p = patience(t);
            assert!(p >= t && p < t + t / 2, "{p:?}");
        }
    }
}
