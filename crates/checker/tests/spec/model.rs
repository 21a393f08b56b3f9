//! Semantics of the key-value model.

use super::*;

// ---- Semantics of the key-value model -----------------------------------

#[test]
fn append_to_absent_key_starts_from_empty() {
    // Property: append on an absent key behaves as if the value were "".
    assert_linearizable(&["1 0..10 append x", "1 20..30 get -> x"]);
    assert_violation(&["1 0..10 append x", "1 20..30 get -> nil"]);
}

#[test]
fn concurrent_appends_apply_in_some_order() {
    // Property: overlapping appends may land in either order, but both land.
    assert_linearizable(&["1 0..10 append x", "2 0..10 append y", "3 20..30 get -> yx"]);
    assert_linearizable(&["1 0..10 append x", "2 0..10 append y", "3 20..30 get -> xy"]);
    assert_violation(&["1 0..10 append x", "2 0..10 append y", "3 20..30 get -> x"]);
}

#[test]
fn delete_makes_key_absent() {
    // Property: after delete a read sees nil, and the old value is gone.
    assert_linearizable(&["1 0..10 put v1", "1 20..30 delete", "2 40..50 get -> nil"]);
    assert_violation(&["1 0..10 put v1", "1 20..30 delete", "2 40..50 get -> v1"]);
    // Deleting an absent key is fine; append after delete starts over.
    assert_linearizable(&[
        "1 0..10 delete",
        "1 20..30 append a",
        "1 40..50 delete",
        "1 60..70 append b",
        "1 80..90 get -> b",
    ]);
}

#[test]
fn cas_with_null_expected_means_absent_and_null_value_deletes() {
    // Property: `expected: null` matches only an absent key; `value: null`
    // makes the key absent.
    assert_linearizable(&["1 0..10 cas nil a", "1 20..30 get -> a"]);
    assert_violation(&["1 0..10 put z", "1 20..30 cas nil a"]);
    assert_linearizable(&["1 0..10 put a", "1 20..30 cas a nil", "1 40..50 get -> nil"]);
}

#[test]
fn empty_history_is_linearizable() {
    // Property: nothing to contradict.
    let r = check(&History::default(), &CheckOptions::default());
    assert_eq!(r.verdict, Verdict::Linearizable);
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn equal_timestamps_count_as_concurrent() {
    // Property: an op completing at the instant another is invoked may be
    // ordered either way (ties never manufacture a violation).
    assert_linearizable(&["1 0..10 put v1", "2 10..20 get -> nil"]);
}

#[test]
fn keys_are_checked_independently() {
    // Property: each key is its own register; a violation on one key is
    // reported on that key only.
    let r = assert_violation(&[
        "1 0..10 @a put 1",
        "1 20..30 @b put 2",
        "2 40..50 @a get -> 1",
        "2 60..70 @b get -> 1",
    ]);
    let verdicts: Vec<(&str, &KeyVerdict)> = r
        .keys
        .iter()
        .map(|k| (k.key.as_str(), &k.verdict))
        .collect();
    assert_eq!(verdicts[1], ("b", &KeyVerdict::NotLinearizable));
    assert!(matches!(
        verdicts[0].1,
        KeyVerdict::Linearizable | KeyVerdict::Skipped
    ));
}
