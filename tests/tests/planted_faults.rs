//! The suite can fail on the write path: each planted fault (test-only feature `test-faults` of
//! `kvnode-test`, switched on by an environment variable; see `tests/src/planted.rs`) must make
//! the checker call the history not linearizable, with a violation that involves the faulty
//! operation kind — a write acknowledged before it committed, or a write answered as a definite
//! failure although it committed. Each run takes ~20 s.

#![allow(clippy::unwrap_used)]

use kvorum_checker::{Outcome, Verdict};
use kvorum_tests::jepsen;
use kvorum_tests::planted::{
    describe_violations, is_write, violation_involves, violation_involves_kind, PlantedFault,
    WRITE_KINDS,
};
use kvorum_tests::{kvnode_bin, ONE_AT_A_TIME};

/// Runs a short Jepsen run with `fault` planted and asserts it is caught: not linearizable, and
/// the violation involves a write of the given outcome (`Ok`: acknowledged; `Fail`: reported
/// definitely failed).
async fn assert_caught(fault: PlantedFault, name: &str, write_outcome: Outcome) {
    let _guard = ONE_AT_A_TIME.lock().await;
    let out = jepsen::run(fault.options(kvnode_bin!(), name)).await;
    let found = describe_violations(&out.report);
    eprintln!("{name}: {} operations, violations:\n{found}", out.ops);
    assert_eq!(
        out.report.verdict,
        Verdict::NotLinearizable,
        "the planted fault {} went unnoticed ({} operations); artifacts: {}",
        fault.env_var(),
        out.ops,
        out.dir.display()
    );
    assert!(
        violation_involves_kind(&out.report, WRITE_KINDS),
        "the violation involves no write:\n{found}\nartifacts: {}",
        out.dir.display()
    );
    assert!(
        violation_involves(&out.report, |o| is_write(o) && o.outcome == write_outcome),
        "the violation involves no {write_outcome:?} write:\n{found}\nartifacts: {}",
        out.dir.display()
    );
}

// Writes acknowledged before they commit: a later read misses an acknowledged write, two
// concurrent cas both succeed, or a killed leader loses an acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_catches_ack_before_commit() {
    assert_caught(
        PlantedFault::AckBeforeCommit,
        "planted-ack-before-commit",
        Outcome::Ok,
    )
    .await;
}

// Committed writes answered 503 `unavailable` (definite): the harness records them `fail`, and
// a read that returns such a write's value cannot be linearized.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jepsen_catches_definite_failure_of_a_proposed_write() {
    assert_caught(
        PlantedFault::FailProposed,
        "planted-fail-proposed",
        Outcome::Fail,
    )
    .await;
}
