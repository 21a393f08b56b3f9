//! Versions.

use super::*;

// ---- Versions ----------------------------------------------------------------

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
