//! Operations with unknown or failed outcomes.

use super::*;

// ---- Operations with unknown or failed outcomes ---------------------------

#[test]
fn info_write_may_have_happened() {
    // Property: an info op may take effect (here: its value is read).
    assert_linearizable(&[
        "1 0..10 put v1",
        "2 20..30 put v2 info",
        "3 40..50 get -> v2",
    ]);
}

#[test]
fn info_write_may_not_have_happened() {
    // Property: an info op may never take effect.
    assert_linearizable(&[
        "1 0..10 put v1",
        "2 20..30 put v2 info",
        "3 40..50 get -> v1",
    ]);
}

#[test]
fn info_write_may_take_effect_after_its_info_completion() {
    // Property: info means "unknown", so the op may still be in flight
    // after the client gave up: its return counts as +infinity.
    assert_linearizable(&[
        "1 0..10 put v1",
        "2 20..30 put v2 info",
        "3 40..50 get -> v1",
        "3 60..70 get -> v2",
    ]);
}

#[test]
fn info_write_cannot_take_effect_before_its_invoke() {
    // Property: an info op still starts at its invoke.
    assert_violation(&["3 0..10 get -> v2", "2 20..30 put v2 info"]);
}

#[test]
fn info_write_takes_effect_at_most_once() {
    // Property: after an info write is observed, it cannot be undone.
    assert_violation(&[
        "1 0..10 put v1",
        "2 20..30 put v2 info",
        "3 40..50 get -> v2",
        "3 60..70 get -> v1",
    ]);
}

#[test]
fn never_completed_op_counts_as_info() {
    // Property: an invoke without completion behaves like info (either
    // outcome is fine).
    assert_linearizable(&["1 0..10 put v1", "2 20..? put v2", "3 40..50 get -> v2"]);
    assert_linearizable(&["1 0..10 put v1", "2 20..? put v2", "3 40..50 get -> v1"]);
}

#[test]
fn info_get_constrains_nothing() {
    // Property: a read whose result is unknown is ignored.
    assert_linearizable(&["1 0..10 put v1", "2 20..30 get info", "2 40..50 get -> v1"]);
}

#[test]
fn failed_write_is_dropped() {
    // Property: `fail` means the write did not happen, so its value can
    // never be read.
    assert_linearizable(&[
        "1 0..10 put v1",
        "2 20..30 put v2 fail",
        "3 40..50 get -> v1",
    ]);
    assert_violation(&[
        "1 0..10 put v1",
        "2 20..30 put v2 fail",
        "3 40..50 get -> v2",
    ]);
    assert_violation(&["1 0..10 append a fail", "3 40..50 get -> a"]);
    assert_violation(&[
        "1 0..10 put a",
        "1 20..30 delete fail",
        "3 40..50 get -> nil",
    ]);
}

#[test]
fn failed_cas_is_an_observation() {
    // Property: cas `fail` means it read a value different from
    // `expected`, so it is rejected when the value must have been equal.
    assert_violation(&["1 0..10 put a", "2 20..30 cas a b fail"]);
    assert_linearizable(&[
        "1 0..10 put a",
        "2 20..30 cas z b fail",
        "3 40..50 get -> a",
    ]);
    // ... and it may be linearized before a concurrent write made it match.
    assert_linearizable(&[
        "1 0..50 put a",
        "2 20..30 cas a b fail",
        "3 60..70 get -> a",
    ]);
}

#[test]
fn info_cas_may_or_may_not_swap() {
    // Property: an info cas either swapped (when the value matched) or
    // had no effect.
    assert_linearizable(&[
        "1 0..10 put a",
        "2 20..30 cas a b info",
        "3 40..50 get -> b",
    ]);
    assert_linearizable(&[
        "1 0..10 put a",
        "2 20..30 cas a b info",
        "3 40..50 get -> a",
    ]);
    // It cannot swap a value it did not expect.
    assert_violation(&[
        "1 0..10 put x",
        "2 20..30 cas a b info",
        "3 40..50 get -> b",
    ]);
}
