//! Planted faults for Jepsen-style runs: how to start a run with one (the node's environment
//! variable, compiled in by the `test-faults` feature of `kvnode-test`), and which operations a
//! checker violation involves, so that a test can assert the violation found is about the faulty
//! operation kind.
//!
//! The faults (see `crates/node/src/faults.rs`):
//! - [`PlantedFault::AckBeforeCommit`]: the leader acknowledges a write before it is committed;
//! - [`PlantedFault::FailProposed`]: one write proposal in three is answered 503 `unavailable`
//!   (definite: "nothing was written") although it was committed; the harness records it `fail`.

use std::path::PathBuf;
use std::time::Duration;

use kvorum_checker::{Command, OpFn, Operation, Outcome, Report, Violation};

use crate::jepsen::JepsenOptions;
use crate::nemesis::Nemesis;

/// A fault planted in the node's write path, switched on by an environment variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlantedFault {
    /// `KVORUM_FAULT_ACK_BEFORE_COMMIT=1`: writes acknowledged before they commit.
    AckBeforeCommit,
    /// `KVORUM_FAULT_FAIL_PROPOSED=1`: some committed writes answered `unavailable`.
    FailProposed,
}

/// Length of a planted-fault run's workload: long enough for hundreds of operations per key,
/// short enough that start, run, final reads and check stay within 30 s.
pub const PLANTED_RUN: Duration = Duration::from_secs(12);

impl PlantedFault {
    /// The node's environment variable that switches the fault on.
    pub fn env_var(self) -> &'static str {
        match self {
            PlantedFault::AckBeforeCommit => "KVORUM_FAULT_ACK_BEFORE_COMMIT",
            PlantedFault::FailProposed => "KVORUM_FAULT_FAIL_PROPOSED",
        }
    }

    /// The environment that plants the fault in every node of a run.
    pub fn env(self) -> Vec<(String, String)> {
        vec![(self.env_var().to_string(), "1".to_string())]
    }

    /// A short run (named `name`) with the fault planted: 3 nodes (one group, so every write is
    /// served by a faulty leader), 2 keys and 8 clients (many overlapping operations per key).
    /// The ack-before-commit run kills nodes too, so that an acknowledged write can also be lost
    /// with its leader; the fail-proposed run needs no nemesis.
    pub fn options(self, bin: PathBuf, name: &str) -> JepsenOptions {
        let nemeses: &[Nemesis] = match self {
            PlantedFault::AckBeforeCommit => &[Nemesis::Kill],
            PlantedFault::FailProposed => &[],
        };
        let mut opts = JepsenOptions::short(bin, name, nemeses);
        opts.nodes = 3;
        opts.keys = 2;
        opts.clients = 8;
        opts.duration = PLANTED_RUN;
        opts.env.extend(self.env());
        opts
    }
}

/// Whether `op` writes (put, append, cas, delete).
pub fn is_write(op: &Operation) -> bool {
    !matches!(op.command, Command::Get)
}

/// Whether `w` may have produced (part of) `value` (`None`: absent). Over-approximates for
/// appends: a suffix found anywhere in the value counts.
fn produces(w: &Operation, value: &Option<String>) -> bool {
    match (&w.command, value) {
        (Command::Put { value: p }, Some(v)) => v.starts_with(p.as_str()),
        (Command::Cas { value: Some(p), .. }, Some(v)) => v.starts_with(p.as_str()),
        (Command::Append { value: s }, Some(v)) => v.contains(s.as_str()),
        (Command::Delete, None) | (Command::Cas { value: None, .. }, None) => true,
        _ => false,
    }
}

/// The operations a violation involves: the offending operation, the evidence operation (the
/// write that overwrote what it needed, or the one whose version contradicts it), and the writes
/// of its key that may have produced the value it needed (a get's read value, a cas's
/// `expected`) — whatever their outcome, so that a `fail` write whose value was read is named:
/// those invoked while it ran, and the last one that completed before it was invoked.
pub fn involved(v: &Violation) -> Vec<&Operation> {
    let mut ids = vec![v.offending];
    ids.extend(v.evidence);
    if let Some(off) = v.op(v.offending) {
        let needed = match (&off.command, off.outcome) {
            (Command::Get, Outcome::Ok) => Some(off.read.clone()),
            (Command::Cas { expected, .. }, Outcome::Ok) => Some(expected.clone()),
            _ => None,
        };
        if let Some(needed) = needed {
            let end = off.complete_time.unwrap_or(u64::MAX);
            let producers = v
                .operations
                .iter()
                .filter(|w| w.id != off.id && w.invoke_time < end && produces(w, &needed));
            let (before, during): (Vec<&Operation>, Vec<&Operation>) =
                producers.partition(|w| w.complete_time.is_some_and(|t| t < off.invoke_time));
            ids.extend(before.iter().max_by_key(|w| w.complete_time).map(|w| w.id));
            ids.extend(during.iter().map(|w| w.id));
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter().filter_map(|id| v.op(id)).collect()
}

/// Whether some violation in `report` involves (see [`involved`]) an operation for which
/// `pred` holds.
pub fn violation_involves(report: &Report, pred: impl Fn(&Operation) -> bool) -> bool {
    report
        .violations()
        .any(|(_, v)| involved(v).into_iter().any(&pred))
}

/// Whether some violation in `report` involves an operation of one of `kinds` (get, put,
/// append, cas, delete).
pub fn violation_involves_kind(report: &Report, kinds: &[OpFn]) -> bool {
    violation_involves(report, |op| kinds.contains(&op.command.f()))
}

/// The write kinds: put, append, cas, delete.
pub const WRITE_KINDS: &[OpFn] = &[OpFn::Put, OpFn::Append, OpFn::Cas, OpFn::Delete];

/// One line per violation: the key, the cause and the operations involved, for messages.
pub fn describe_violations(report: &Report) -> String {
    report
        .violations()
        .map(|(k, v)| {
            let ops: Vec<String> = involved(v)
                .iter()
                .map(|o| format!("#{} p{} {}", o.id, o.process, o.label()))
                .collect();
            format!(
                "key {}: cause {}, involved [{}]",
                k.key,
                v.cause.code(),
                ops.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvorum_checker::{check, CheckOptions, HistoryBuilder, Verdict};

    fn checked(b: &HistoryBuilder) -> Report {
        check(&b.build().expect("valid history"), &CheckOptions::default())
    }

    // A read of a value only a failed put wrote: the violation names that put, so a test can
    // tell it is about a write reported failed.
    #[test]
    fn a_read_of_a_failed_write_involves_that_write() {
        let mut b = HistoryBuilder::new();
        b.invoke(0, 0, "k", Command::Put { value: "a".into() })
            .fail(0, 10)
            .invoke(1, 20, "k", Command::Get)
            .ok(1, 30, Some("a"));
        let r = checked(&b);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert!(violation_involves(&r, |o| is_write(o) && o.outcome == Outcome::Fail));
        assert!(violation_involves_kind(&r, &[OpFn::Put]));
        assert!(!violation_involves_kind(
            &r,
            &[OpFn::Append, OpFn::Cas, OpFn::Delete]
        ));
        assert!(describe_violations(&r).contains("put(\"a\") fail"));
    }

    // A read that misses an acknowledged append: the violation involves an ok append.
    #[test]
    fn a_read_missing_an_acked_append_involves_a_write() {
        let mut b = HistoryBuilder::new();
        b.invoke(0, 0, "k", Command::Append { value: "x,".into() })
            .ok(0, 10, None)
            .invoke(0, 20, "k", Command::Append { value: "y,".into() })
            .ok(0, 30, None)
            .invoke(1, 40, "k", Command::Get)
            .ok(1, 50, Some("x,"));
        let r = checked(&b);
        assert_eq!(r.verdict, Verdict::NotLinearizable);
        assert!(violation_involves(&r, |o| is_write(o) && o.outcome == Outcome::Ok));
        assert!(violation_involves_kind(&r, &[OpFn::Append]));
        assert!(!violation_involves_kind(&r, &[OpFn::Put, OpFn::Cas]));
    }

    // A linearizable history has no violation, so it involves nothing.
    #[test]
    fn a_linearizable_history_involves_nothing() {
        let mut b = HistoryBuilder::new();
        b.invoke(0, 0, "k", Command::Put { value: "a".into() })
            .ok(0, 10, None)
            .invoke(1, 20, "k", Command::Get)
            .ok(1, 30, Some("a"));
        let r = checked(&b);
        assert_eq!(r.verdict, Verdict::Linearizable);
        assert!(!violation_involves(&r, |_| true));
        assert!(describe_violations(&r).is_empty());
    }

    // Each fault is planted through its environment variable, on a one-group cluster.
    #[test]
    fn options_plant_the_fault() {
        for (f, var) in [
            (
                PlantedFault::AckBeforeCommit,
                "KVORUM_FAULT_ACK_BEFORE_COMMIT",
            ),
            (PlantedFault::FailProposed, "KVORUM_FAULT_FAIL_PROPOSED"),
        ] {
            let o = f.options(PathBuf::from("kvnode-test"), "t");
            assert!(o.env.contains(&(var.to_string(), "1".to_string())));
            assert_eq!((o.nodes, o.k), (3, 3));
            assert!(o.duration <= Duration::from_secs(20));
        }
    }
}
