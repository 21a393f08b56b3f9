//! Planted write faults for the test suite (feature `test-faults`, compiled out of production
//! builds): each breaks one promise of the write path, so that the Jepsen suite proves it can
//! catch it. Each is switched on by an environment variable and logged loudly at startup
//! (`FAULT INJECTED: ...`).
//!
//! - `KVORUM_FAULT_ACK_BEFORE_COMMIT=1`: the leader hands a write to Raft without waiting
//!   (`client_write_ff`) and answers at once what it predicts from its applied state (success,
//!   with the version the entry would get), before the entry is committed or applied. An
//!   acknowledged write can then be missed by a read that follows it, reordered with a
//!   concurrent write, refused at apply (a cas whose condition a pending write broke), or lost
//!   with the leader. A write the prediction refuses takes the honest path.
//! - `KVORUM_FAULT_FAIL_PROPOSED=1`: one write proposal in [`FAIL_PROPOSED_EVERY`] on each node
//!   is answered 503 `unavailable` — a definite failure, "nothing was written" — after
//!   `client_write` committed it.
//!
//! The process-wide settings are read once ([`faults`]), like the other test-only faults.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use kvorum_raftstore::{Command, CommandResult, Record};

/// Environment variable of the ack-before-commit fault (`1`: on).
pub const ACK_BEFORE_COMMIT_ENV: &str = "KVORUM_FAULT_ACK_BEFORE_COMMIT";
/// Environment variable of the fail-proposed fault (`1`: on).
pub const FAIL_PROPOSED_ENV: &str = "KVORUM_FAULT_FAIL_PROPOSED";
/// Under the fail-proposed fault, every this-many-th write proposal of a node (the 3rd, 6th, ...)
/// is answered `unavailable` although it was committed: often enough that a run of a few
/// seconds reads such a write's value, rarely enough that most writes still succeed.
pub const FAIL_PROPOSED_EVERY: u64 = 3;

/// The planted write faults of this process.
#[derive(Debug, Default)]
pub struct WriteFaults {
    /// Acknowledge writes before they commit.
    pub ack_before_commit: bool,
    /// Answer some committed writes as definite failures.
    pub fail_proposed: bool,
    /// Write proposals counted by [`WriteFaults::fail_this_proposal`].
    proposals: AtomicU64,
}

impl WriteFaults {
    /// The faults `var` switches on (`1`), if the build has the `test-faults` feature
    /// (`enabled`); none otherwise.
    pub fn from_vars(enabled: bool, var: impl Fn(&str) -> Option<String>) -> WriteFaults {
        let on = |name: &str| enabled && var(name).is_some_and(|v| v == "1");
        WriteFaults {
            ack_before_commit: on(ACK_BEFORE_COMMIT_ENV),
            fail_proposed: on(FAIL_PROPOSED_ENV),
            proposals: AtomicU64::new(0),
        }
    }

    /// The `FAULT INJECTED` lines to log at startup, one per fault that is on.
    pub fn announcements(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.ack_before_commit {
            lines.push(format!(
                "FAULT INJECTED: writes are acknowledged before they are committed \
                 ({ACK_BEFORE_COMMIT_ENV}=1); acknowledged writes may be lost or reordered"
            ));
        }
        if self.fail_proposed {
            lines.push(format!(
                "FAULT INJECTED: one write proposal in {FAIL_PROPOSED_EVERY} is answered 503 \
                 unavailable after it was proposed and committed ({FAIL_PROPOSED_ENV}=1)"
            ));
        }
        lines
    }

    /// Under the fail-proposed fault, whether the write being proposed now is to be answered
    /// `unavailable` (every [`FAIL_PROPOSED_EVERY`]-th proposal). Always false otherwise.
    pub fn fail_this_proposal(&self) -> bool {
        self.fail_proposed && fails(self.proposals.fetch_add(1, Ordering::Relaxed))
    }
}

/// Whether proposal number `n` (0-based) is answered `unavailable` under the fail-proposed fault.
pub fn fails(n: u64) -> bool {
    n % FAIL_PROPOSED_EVERY == FAIL_PROPOSED_EVERY - 1
}

/// The planted write faults of this process, read from the environment on first use.
pub fn faults() -> &'static WriteFaults {
    static FAULTS: OnceLock<WriteFaults> = OnceLock::new();
    FAULTS.get_or_init(|| {
        WriteFaults::from_vars(cfg!(feature = "test-faults"), |n| std::env::var(n).ok())
    })
}

/// Logs the planted write faults that are on; called once at startup.
pub fn announce() {
    for line in faults().announcements() {
        tracing::error!("{line}");
    }
}

/// Under the ack-before-commit fault: the answer the leader gives for key write `cmd` before it
/// is applied, predicted from the key's applied record `current`, with `version` (the version
/// the entry would get). `None` when the prediction is a refusal (a failed condition, an append
/// past its limit) or `cmd` is not a key write: those take the honest path.
pub fn predicted_result(
    cmd: &Command,
    version: u64,
    current: Option<&Record>,
) -> Option<CommandResult> {
    let holds =
        |c: &Option<kvorum_raftstore::Condition>| c.as_ref().is_none_or(|c| c.holds(current));
    match cmd {
        Command::Put { condition, .. } => {
            holds(condition).then_some(CommandResult::Written { version })
        }
        Command::Delete { condition, .. } => holds(condition).then_some(CommandResult::Deleted {
            existed: current.is_some(),
        }),
        Command::Append { .. } => Some(CommandResult::Written { version }),
        Command::AppendBounded {
            suffix,
            max_value_bytes,
            ..
        } => {
            let len = current.map_or(0, |r| r.value.len()) + suffix.len();
            (len as u64 <= *max_value_bytes).then_some(CommandResult::Written { version })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvorum_raftstore::Condition;

    fn rec(value: &str, version: u64) -> Record {
        Record {
            value: value.into(),
            version,
        }
    }

    // The faults are on only with the feature and the variable set to exactly "1", and each
    // that is on is announced with FAULT INJECTED.
    #[test]
    fn faults_need_the_feature_and_the_variable() {
        let all =
            |n: &str| (n == ACK_BEFORE_COMMIT_ENV || n == FAIL_PROPOSED_ENV).then(|| "1".into());
        let f = WriteFaults::from_vars(true, all);
        assert!(f.ack_before_commit && f.fail_proposed);
        let lines = f.announcements();
        assert_eq!(lines.len(), 2);
        assert!(
            lines.iter().all(|l| l.starts_with("FAULT INJECTED: ")),
            "{lines:?}"
        );
        assert!(lines[0].contains(ACK_BEFORE_COMMIT_ENV) && lines[1].contains(FAIL_PROPOSED_ENV));

        let off = WriteFaults::from_vars(false, all);
        assert!(!off.ack_before_commit && !off.fail_proposed);
        assert!(off.announcements().is_empty());
        let other = WriteFaults::from_vars(true, |_| Some("true".into()));
        assert!(!other.ack_before_commit && !other.fail_proposed);
        assert!(!WriteFaults::default().fail_this_proposal());
    }

    // Every FAIL_PROPOSED_EVERY-th proposal fails, deterministically.
    #[test]
    fn every_third_proposal_fails() {
        let f = WriteFaults::from_vars(true, |n| (n == FAIL_PROPOSED_ENV).then(|| "1".into()));
        let got: Vec<bool> = (0..7).map(|_| f.fail_this_proposal()).collect();
        assert_eq!(got, [false, false, true, false, false, true, false]);
    }

    // The prediction answers success with the given version unless the applied record refuses
    // the write; refusals (and slot commands) are left to the honest path.
    #[test]
    fn predictions_follow_the_applied_record() {
        let cur = rec("a", 4);
        let put = |condition| Command::Put {
            key: "k".into(),
            value: "b".into(),
            condition,
        };
        assert_eq!(
            predicted_result(&put(None), 9, Some(&cur)),
            Some(CommandResult::Written { version: 9 })
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(4))), 9, Some(&cur)),
            Some(CommandResult::Written { version: 9 })
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(3))), 9, Some(&cur)),
            None
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(0))), 9, Some(&cur)),
            None
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(0))), 9, None),
            Some(CommandResult::Written { version: 9 })
        );
        let del = |condition| Command::Delete {
            key: "k".into(),
            condition,
        };
        assert_eq!(
            predicted_result(&del(None), 9, Some(&cur)),
            Some(CommandResult::Deleted { existed: true })
        );
        assert_eq!(
            predicted_result(&del(None), 9, None),
            Some(CommandResult::Deleted { existed: false })
        );
        assert_eq!(
            predicted_result(
                &del(Some(Condition::Value(Some("x".into())))),
                9,
                Some(&cur)
            ),
            None
        );
        let append = |max| Command::AppendBounded {
            key: "k".into(),
            suffix: "bc".into(),
            max_value_bytes: max,
        };
        assert_eq!(
            predicted_result(&append(3), 9, Some(&cur)),
            Some(CommandResult::Written { version: 9 })
        );
        assert_eq!(predicted_result(&append(2), 9, Some(&cur)), None);
        assert_eq!(
            predicted_result(&Command::InitSlots { owned: vec![] }, 9, None),
            None
        );
    }
}
