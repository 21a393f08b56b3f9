//! Classic anomalies, each with a linearizable twin.

use super::*;

// ---- Classic anomalies, each with a linearizable twin ----------------------

#[test]
fn stale_read_is_rejected() {
    // Property: once a write completes, later reads never see older values.
    let r = assert_violation(&["1 0..10 put v1", "1 20..30 put v2", "2 40..50 get -> v1"]);
    // The report pins the blame: both puts linearize, then the read of v1
    // cannot be placed while the key holds v2.
    let (_, v) = r.violations().next().unwrap();
    assert_eq!(v.prefix, vec![0, 1]);
    assert_eq!(v.offending, 2);
    assert_eq!(v.value_after_prefix.as_deref(), Some("v2"));
}

#[test]
fn read_refuted_up_front_names_the_overwrite_without_a_zero_states_line() {
    // Property: a read whose value was overwritten (by a completed write,
    // after every write of it) before it was invoked is refuted before the
    // search; the report names that overwrite, gives the prefix known when
    // the read was invoked, and does not claim "0 states".
    let r = assert_violation(&[
        "1 0..10 append a",
        "2 5..25 append b",
        "1 20..30 append c",
        "3 40..50 get -> nil",
        "2 45..60 append d",
    ]);
    let text = r.to_text();
    let (_, v) = r.violations().next().unwrap();
    assert_eq!(v.offending, 3, "{text}");
    assert_eq!(v.prefix.len(), 3, "{text}");
    assert_eq!(v.value_after_prefix.as_deref(), Some("abc"), "{text}");
    assert!(text.contains("overwritten by #2"), "{text}");
    assert!(!text.contains(" 0 states"), "{text}");
    assert_eq!(v.cause, Cause::Overwritten);
    assert_eq!(v.evidence, Some(2));
}

#[test]
fn report_blames_the_first_completion_that_breaks_linearizability() {
    // Property: the offending op is the one whose completion first makes
    // the history non-linearizable, and the prefix linearizes everything
    // invoked before that. Here the search could also dead-end on the
    // later read, but the stale read of "a" comes first. (Appends, so that
    // the reads-from argument cannot refute it before the search.)
    let r = assert_violation(&[
        "1 0..10 append a",
        "1 20..30 append b",
        "2 40..50 get -> a",
        "1 60..70 append c",
        "3 80..90 get -> abc",
    ]);
    let (_, v) = r.violations().next().unwrap();
    assert_eq!(v.offending, 2);
    assert_eq!(v.prefix, vec![0, 1]);
    assert_eq!(v.cause, Cause::FirstFailure);
    assert!(r.to_text().contains("first operation whose completion"));
}

#[test]
fn read_concurrent_with_overwrite_may_see_old_value() {
    // Twin of the stale read: the read overlaps the second put, so it may
    // be linearized before it.
    assert_linearizable(&["1 0..10 put v1", "1 20..30 put v2", "2 25..50 get -> v1"]);
}

#[test]
fn lost_update_via_cas_is_rejected() {
    // Property: two read-modify-writes from the same value cannot both
    // succeed (the second would overwrite the first's update).
    assert_violation(&["1 0..10 put x", "1 20..40 cas x a", "2 20..40 cas x b"]);
}

#[test]
fn concurrent_cas_one_wins_one_fails_is_accepted() {
    // Twin: exactly one of the two swaps succeeds.
    assert_linearizable(&["1 0..10 put x", "1 20..40 cas x a", "2 20..40 cas x b fail"]);
}

#[test]
fn lost_update_via_append_is_rejected() {
    // Property: an acknowledged append is never lost.
    assert_violation(&["1 0..10 append a", "2 20..30 append b", "3 40..50 get -> b"]);
}

#[test]
fn appends_accumulate() {
    // Twin: both appends visible, in real-time order.
    assert_linearizable(&[
        "1 0..10 append a",
        "2 20..30 append b",
        "3 40..50 get -> ab",
    ]);
}

#[test]
fn read_of_value_never_written_is_rejected() {
    // Property: reads only return values some write produced.
    assert_violation(&["1 0..10 put v1", "2 5..50 get -> v9"]);
    assert_violation(&["2 0..10 get -> v9"]);
}

#[test]
fn read_of_written_value_is_accepted() {
    // Twin: the read overlaps the write and returns its value.
    assert_linearizable(&["1 0..10 put v1", "2 5..50 get -> v1"]);
}

#[test]
fn write_seen_then_unseen_is_rejected() {
    // Property: once a read observes a write, later reads observe it too
    // (even while the write is still in flight).
    assert_violation(&[
        "1 0..100 put v1",
        "2 20..30 get -> v1",
        "2 40..50 get -> nil",
    ]);
}

#[test]
fn write_unseen_then_seen_is_accepted() {
    // Twin: the in-flight write takes effect between the two reads.
    assert_linearizable(&[
        "1 0..100 put v1",
        "2 20..30 get -> nil",
        "2 40..50 get -> v1",
    ]);
}

#[test]
fn cas_succeeding_on_wrong_value_is_rejected() {
    // Property: cas swaps only when the current value equals `expected`.
    assert_violation(&["1 0..10 put a", "2 20..30 cas b c"]);
    // Also on an absent key.
    assert_violation(&["2 20..30 cas b c"]);
}

#[test]
fn cas_on_right_value_is_accepted() {
    // Twin: the matching cas succeeds; the mismatching one fails.
    assert_linearizable(&[
        "1 0..10 put a",
        "2 20..30 cas a c",
        "2 40..50 cas a d fail",
        "3 60..70 get -> c",
    ]);
}

#[test]
fn reads_observing_non_overlapping_writes_in_wrong_order_are_rejected() {
    // Property: writes ordered in real time are observed in that order. The
    // reader sees v2 and then v1, but put v1 finished before put v2 began.
    assert_violation(&[
        "1 0..10 put v1",
        "1 20..30 put v2",
        "2 5..25 get -> v2",
        "2 26..40 get -> v1",
    ]);
}

#[test]
fn reads_observing_non_overlapping_writes_in_order_are_accepted() {
    // Twin: v1 then v2.
    assert_linearizable(&[
        "1 0..10 put v1",
        "1 20..30 put v2",
        "2 5..25 get -> v1",
        "2 26..40 get -> v2",
    ]);
}
