//! Bounds and cancellation.

use super::*;

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
