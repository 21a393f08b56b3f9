//! Delete's answer.

use super::*;

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
