//! Specification of the checker's verdicts on hand-made histories.
//!
//! Histories are written in a small notation, one operation per string:
//! `"<process> <invoke>..<complete> [@key] <op> [fail|info]"`, where
//! `<complete>` may be `?` (never completed) and `<op>` is one of
//! `put V`, `append V`, `delete`, `get -> V`, `get -> nil`, `cas E N`
//! (`nil` = absent). The key defaults to `k`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kvorum_checker::{
    check, Cause, CheckOptions, Command, Event, EventType, History, HistoryBuilder, KeyVerdict,
    Report, Verdict,
};

fn val(s: &str) -> Option<String> {
    (s != "nil").then(|| s.to_string())
}

/// Builds a history from the notation above.
fn hist(spec: &[&str]) -> History {
    let mut timed: Vec<(u64, u8, usize, Event)> = Vec::new();
    for (seq, line) in spec.iter().enumerate() {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let process: u64 = words.remove(0).parse().unwrap();
        let (inv, ret) = words.remove(0).split_once("..").unwrap();
        let inv: u64 = inv.parse().unwrap();
        let ret: Option<u64> = (ret != "?").then(|| ret.parse().unwrap());
        let key = if words[0].starts_with('@') {
            words.remove(0)[1..].to_string()
        } else {
            "k".to_string()
        };
        let kind = match words.last() {
            Some(&"fail") => {
                words.pop();
                EventType::Fail
            }
            Some(&"info") => {
                words.pop();
                EventType::Info
            }
            _ => EventType::Ok,
        };
        let (command, read) = match words.as_slice() {
            ["put", v] => (
                Command::Put {
                    value: v.to_string(),
                },
                None,
            ),
            ["append", v] => (
                Command::Append {
                    value: v.to_string(),
                },
                None,
            ),
            ["delete"] => (Command::Delete, None),
            ["get", "->", v] => (Command::Get, val(v)),
            ["get"] => (Command::Get, None),
            ["cas", e, n] => (
                Command::Cas {
                    expected: val(e),
                    value: val(n),
                },
                None,
            ),
            other => panic!("bad op spec {other:?}"),
        };
        timed.push((inv, 1, seq, command.invoke_event(process, &key, inv)));
        if let Some(t) = ret {
            let mut e = command.invoke_event(process, &key, t);
            e.kind = kind;
            e.expected = None;
            e.value = if command == Command::Get { read } else { None };
            // Completions sort before invokes at the same instant so a
            // process may start its next op when the previous one ends.
            timed.push((t, 0, seq, e));
        }
    }
    timed.sort_by_key(|(t, order, seq, _)| (*t, *order, *seq));
    let mut b = HistoryBuilder::new();
    for (_, _, _, e) in timed {
        b.event(e);
    }
    b.build().unwrap()
}

fn run(spec: &[&str]) -> Report {
    check(&hist(spec), &CheckOptions::default())
}

#[track_caller]
fn assert_linearizable(spec: &[&str]) {
    let r = run(spec);
    assert_eq!(r.verdict, Verdict::Linearizable, "{}", r.to_text());
}

#[track_caller]
fn assert_violation(spec: &[&str]) -> Report {
    let r = run(spec);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
    assert_eq!(r.exit_code(), 1);
    r
}

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

// ---- Bounds and cancellation ----------------------------------------------

/// A key on which the search must explore every subset and order of `n`
/// concurrent writes before concluding: after all of them complete, one
/// process reads w0 and then w1, with nothing written in between. Each
/// read alone is satisfiable, so no local check refutes the history.
fn hard_spec(key: &str, n: u64) -> Vec<String> {
    let mut spec: Vec<String> = (0..n)
        .map(|i| format!("{} 0..1000 @{key} put w{i}", i + 1))
        .collect();
    spec.push(format!("{} 2000..2010 @{key} get -> w0", n + 1));
    spec.push(format!("{} 2020..2030 @{key} get -> w1", n + 1));
    spec
}

fn hard_history(parts: &[(&str, u64)], extra: &[&str]) -> History {
    let mut spec: Vec<String> = Vec::new();
    for &(key, n) in parts {
        spec.extend(hard_spec(key, n));
    }
    spec.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = spec.iter().map(String::as_str).collect();
    hist(&refs)
}

#[test]
fn time_limit_yields_unknown() {
    // Property: an undecided search stops at the time limit with Unknown
    // (exit code 2) instead of hanging.
    let h = hard_history(&[("k", 24)], &[]);
    let opts = CheckOptions {
        time_limit: Duration::from_millis(50),
        ..CheckOptions::default()
    };
    let t0 = Instant::now();
    let r = check(&h, &opts);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    assert!(
        matches!(r.verdict, Verdict::Unknown { .. }),
        "{}",
        r.to_text()
    );
    assert_eq!(r.exit_code(), 2);
    assert!(r.to_text().contains("time limit"), "{}", r.to_text());
}

#[test]
fn memory_bound_yields_unknown() {
    // Property: the memo bound turns an exploding search into Unknown.
    let h = hard_history(&[("k", 24)], &[]);
    let opts = CheckOptions {
        max_states: 5_000,
        ..CheckOptions::default()
    };
    let r = check(&h, &opts);
    match &r.verdict {
        Verdict::Unknown { reason } => assert!(reason.contains("state bound"), "{reason}"),
        other => panic!("expected Unknown, got {other:?}"),
    }
    let opts = CheckOptions {
        max_memory_bytes: 1 << 20,
        ..CheckOptions::default()
    };
    let r = check(&h, &opts);
    match &r.verdict {
        Verdict::Unknown { reason } => assert!(reason.contains("memory bound"), "{reason}"),
        other => panic!("expected Unknown, got {other:?}"),
    }
}

#[test]
fn violation_on_one_key_cancels_the_others() {
    // Property: the first violation stops the searches still running; the
    // hard key is reported as skipped and the check returns promptly.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let h = hard_history(
        &[("hard", 24)],
        &[
            "90 0..10 @bad put v1",
            "90 20..30 @bad put v2",
            "91 40..50 @bad get -> v1",
        ],
    );
    let opts = CheckOptions {
        // On a single core there is no second worker to find the
        // violation; the time limit then ends the hard key instead.
        time_limit: Duration::from_secs(if cores >= 2 { 60 } else { 2 }),
        threads: 2,
        ..CheckOptions::default()
    };
    let t0 = Instant::now();
    let r = check(&h, &opts);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
    if cores >= 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "took {:?}",
            t0.elapsed()
        );
        let hard = r.keys.iter().find(|k| k.key == "hard").unwrap();
        assert_eq!(hard.verdict, KeyVerdict::Skipped, "{}", r.to_text());
    }
}

#[test]
fn violation_beats_unknown_in_the_overall_verdict() {
    // Property: a definite violation on any key makes the whole history
    // not linearizable, even if another key is undecided. One thread: the
    // hard key (more ops, so first) exhausts the state bound, releases its
    // memo, then the bad key is checked.
    let h = hard_history(
        &[("hard", 24)],
        &["90 0..10 @bad put v1", "91 20..30 @bad get -> v2"],
    );
    let opts = CheckOptions {
        max_states: 5_000,
        threads: 1,
        ..CheckOptions::default()
    };
    let r = check(&h, &opts);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
    let hard = r.keys.iter().find(|k| k.key == "hard").unwrap();
    assert!(
        matches!(hard.verdict, KeyVerdict::Unknown { .. }),
        "{}",
        r.to_text()
    );
}

// ---- Versions ----------------------------------------------------------------

fn put(value: &str) -> Command {
    Command::Put {
        value: value.into(),
    }
}

#[track_caller]
fn verdict_of(b: &HistoryBuilder) -> Report {
    check(&b.build().unwrap(), &CheckOptions::default())
}

#[test]
fn versioned_history_that_agrees_is_linearizable() {
    // Property: versions that grow with the writes and reads that return
    // the version of the write they observe are accepted, alongside ops
    // without versions (checked as before).
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("a"))
        .ok_versioned(1, 10, None, 1)
        .invoke(2, 5, "k", put("b"))
        .ok_versioned(2, 30, None, 2)
        .invoke(3, 12, "k", Command::Get)
        .ok_versioned(3, 20, Some("a"), 1)
        .invoke(1, 40, "k", Command::Append { value: "c".into() })
        .ok_versioned(1, 50, None, 3)
        .invoke(3, 45, "k", Command::Get)
        .ok_versioned(3, 60, Some("bc"), 3)
        .invoke(2, 70, "k", Command::Get)
        .ok(2, 80, Some("bc"))
        .invoke(1, 90, "k", Command::Delete)
        .ok_versioned(1, 95, None, 4);
    let r = verdict_of(&b);
    assert_eq!(r.verdict, Verdict::Linearizable, "{}", r.to_text());
}

#[test]
fn read_of_an_older_version_after_a_newer_write_completed_is_rejected() {
    // Property: the values alone are linearizable (both writes wrote "x"),
    // but the read returns version 1 after the write of version 2
    // completed: versions never go back.
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("x"))
        .ok_versioned(1, 10, None, 1)
        .invoke(1, 20, "k", put("x"))
        .ok_versioned(1, 30, None, 2)
        .invoke(2, 40, "k", Command::Get)
        .ok_versioned(2, 50, Some("x"), 1);
    let r = verdict_of(&b);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
    let (_, v) = r.violations().next().unwrap();
    assert_eq!(v.offending, 2, "{}", r.to_text());
    assert_eq!(v.cause, Cause::Version, "{}", r.to_text());
    assert_eq!(v.evidence, Some(1), "{}", r.to_text());
}

#[test]
fn write_versions_going_back_in_real_time_are_rejected() {
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("a"))
        .ok_versioned(1, 10, None, 5)
        .invoke(1, 20, "k", put("b"))
        .ok_versioned(1, 30, None, 3);
    let r = verdict_of(&b);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
}

#[test]
fn read_must_return_the_version_of_the_write_it_observes() {
    // Property: by values, "a" can be read after both (concurrent) writes
    // if b took effect first; but the read names version 2, b's.
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("a"))
        .invoke(2, 0, "k", put("b"))
        .ok_versioned(1, 10, None, 1)
        .ok_versioned(2, 10, None, 2)
        .invoke(3, 20, "k", Command::Get)
        .ok_versioned(3, 30, Some("a"), 2);
    let r = verdict_of(&b);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
}

#[test]
fn versions_round_trip_through_json_lines() {
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("a")).ok_versioned(1, 10, None, 7);
    let mut text = Vec::new();
    b.write_jsonl(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("\"version\":7"), "{text}");
    let h = kvorum_checker::parse_history(std::io::Cursor::new(text.into_bytes())).unwrap();
    assert_eq!(h.ops[0].version, Some(7));
}

// ---- Delete's answer ---------------------------------------------------------

#[test]
fn delete_answering_absent_after_a_completed_put_is_rejected() {
    // Property: the node's `deleted: false` says the key was absent when the
    // delete took effect; after a completed put and nothing else, it was not.
    // (As a blind write, without the flag, the same history is accepted.)
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("a"))
        .ok(1, 10, None)
        .invoke(2, 20, "k", Command::Delete)
        .ok_deleted(2, 30, false);
    let r = verdict_of(&b);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
    let (_, v) = r.violations().next().unwrap();
    assert_eq!(v.offending, 1, "{}", r.to_text());
    let mut blind = HistoryBuilder::new();
    blind
        .invoke(1, 0, "k", put("a"))
        .ok(1, 10, None)
        .invoke(2, 20, "k", Command::Delete)
        .ok(2, 30, None);
    let r = verdict_of(&blind);
    assert_eq!(r.verdict, Verdict::Linearizable, "{}", r.to_text());
}

#[test]
fn delete_answers_that_agree_are_accepted() {
    // Absent at first (false), present after the put (true), absent again
    // (false); a delete concurrent with a put may find it absent (it took
    // effect first) and then the put's value stays.
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", Command::Delete)
        .ok_deleted(1, 10, false)
        .invoke(1, 20, "k", put("a"))
        .ok(1, 30, None)
        .invoke(2, 40, "k", Command::Delete)
        .ok_deleted(2, 50, true)
        .invoke(2, 60, "k", Command::Delete)
        .ok_deleted(2, 70, false)
        .invoke(1, 80, "k", put("b"))
        .invoke(2, 80, "k", Command::Delete)
        .ok(1, 90, None)
        .ok_deleted(2, 90, false)
        .invoke(3, 100, "k", Command::Get)
        .ok(3, 110, Some("b"));
    let r = verdict_of(&b);
    assert_eq!(r.verdict, Verdict::Linearizable, "{}", r.to_text());
}

#[test]
fn delete_answering_absent_is_rejected_when_the_key_always_holds_a_value() {
    // A delete concurrent with a put may find the key absent if it can go
    // before the put: accepted.
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("a"))
        .invoke(2, 5, "k", Command::Delete)
        .ok(1, 20, None)
        .ok_deleted(2, 30, false)
        .invoke(3, 40, "k", Command::Get)
        .ok(3, 50, Some("a"));
    assert_eq!(verdict_of(&b).verdict, Verdict::Linearizable);
    // "a" is there before the delete is invoked and "b" is written
    // concurrently with it: wherever the delete goes, the key holds a value.
    // As a blind write it could go before the put of "b"; answering
    // `deleted: false` it cannot go anywhere. Rejected.
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", put("a"))
        .ok(1, 10, None)
        .invoke(1, 15, "k", put("b"))
        .invoke(2, 20, "k", Command::Delete)
        .ok_deleted(2, 30, false)
        .ok(1, 40, None)
        .invoke(3, 50, "k", Command::Get)
        .ok(3, 60, Some("b"));
    let r = verdict_of(&b);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
}
