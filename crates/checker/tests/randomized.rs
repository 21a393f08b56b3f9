//! Randomized specification: histories of a correct map are accepted, and
//! targeted corruptions of them are rejected.
//!
//! Every test prints `seed = N`; rerun with `CHECKER_SEED=N` to replay.
#![allow(clippy::unwrap_used)]

#[path = "support/sim.rs"]
mod sim;

use std::time::{SystemTime, UNIX_EPOCH};

use kvorum_checker::{check, Cause, CheckOptions, Command, EventType, Report, Verdict};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use sim::{SimConfig, SimOp};

fn rng(test: &str) -> (StdRng, u64) {
    let seed = std::env::var("CHECKER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
    eprintln!("{test}: seed = {seed}");
    (StdRng::seed_from_u64(seed), seed)
}

fn random_config(rng: &mut StdRng) -> SimConfig {
    SimConfig {
        ops: rng.gen_range(10..200),
        keys: rng.gen_range(1..4),
        processes: rng.gen_range(1..8),
        info_rate: rng.gen_range(0.0..0.1),
        fail_rate: rng.gen_range(0.0..0.1),
        max_latency: rng.gen_range(1..2_000),
        max_gap: rng.gen_range(1..500),
        mix: sim::DEFAULT_MIX,
    }
}

/// Checks `ops`; on an unexpected verdict, saves the history for replay.
fn check_ops(ops: &[SimOp], opts: &CheckOptions) -> Report {
    let b = sim::builder(ops);
    let history = b.build().expect("the simulator writes valid histories");
    check(&history, opts)
}

#[track_caller]
fn expect(ops: &[SimOp], verdict: Verdict, seed: u64, what: &str) -> Report {
    let r = check_ops(ops, &CheckOptions::default());
    if r.verdict != verdict {
        let path = std::env::temp_dir().join(format!("kvorum-checker-failure-{seed}.jsonl"));
        let mut text = Vec::new();
        sim::builder(ops).write_jsonl(&mut text).unwrap();
        std::fs::write(&path, text).unwrap();
        panic!(
            "{what}: expected {verdict:?} (seed {seed}, history saved to {})\n{}",
            path.display(),
            r.to_text()
        );
    }
    r
}

#[test]
fn histories_of_a_correct_map_are_linearizable() {
    // Property: soundness. Whatever the overlap, info and fail mix, a
    // history produced by a sequential map is accepted.
    let (mut rng, seed) = rng("histories_of_a_correct_map_are_linearizable");
    for _ in 0..300 {
        let cfg = random_config(&mut rng);
        let ops = sim::simulate(&cfg, &mut rng);
        expect(&ops, Verdict::Linearizable, seed, "valid history");
    }
}

#[test]
fn large_history_is_linearizable_with_any_thread_count() {
    // Property: partitioning and parallelism do not change the verdict.
    let (mut rng, seed) = rng("large_history_is_linearizable_with_any_thread_count");
    let cfg = SimConfig {
        ops: 4_000,
        keys: 16,
        processes: 12,
        ..SimConfig::default()
    };
    let ops = sim::simulate(&cfg, &mut rng);
    expect(&ops, Verdict::Linearizable, seed, "valid history");
    let one = check_ops(
        &ops,
        &CheckOptions {
            threads: 1,
            ..CheckOptions::default()
        },
    );
    assert_eq!(one.verdict, Verdict::Linearizable, "seed {seed}");
}

#[test]
fn weakening_outcomes_to_info_keeps_histories_linearizable() {
    // Property: monotonicity. Turning known outcomes into "unknown" only
    // adds possible linearizations. (Kept to ~10% of ops: every info op
    // stays a candidate forever, and info appends that never happened make
    // the search exponential; see the crate's caveats.)
    let (mut rng, seed) = rng("weakening_outcomes_to_info_keeps_histories_linearizable");
    for _ in 0..100 {
        let cfg = random_config(&mut rng);
        let mut ops = sim::simulate(&cfg, &mut rng);
        for op in ops.iter_mut() {
            if rng.gen_bool(0.1) {
                op.outcome = EventType::Info;
            }
        }
        expect(&ops, Verdict::Linearizable, seed, "weakened history");
    }
}

#[test]
fn histories_with_versions_of_a_correct_store_are_linearizable() {
    // Property: versions a correct store would return never make a
    // linearizable history fail; one read set back to an older version
    // after a newer write completed makes it fail.
    let (mut rng, seed) = rng("histories_with_versions_of_a_correct_store_are_linearizable");
    let mut planted = 0;
    for _ in 0..100 {
        let cfg = random_config(&mut rng);
        let mut ops = sim::simulate(&cfg, &mut rng);
        sim::assign_versions(&mut ops);
        expect(&ops, Verdict::Linearizable, seed, "versioned history");
        // A get invoked after an ok write completed, set to a version
        // below that write's.
        let stale = ok_gets(&ops).into_iter().find_map(|g| {
            let newest = (0..ops.len())
                .filter(|&w| ops[w].key == ops[g].key && ops[w].is_ok_write())
                .filter(|&w| ops[w].complete.is_some_and(|c| c < ops[g].invoke))
                .filter_map(|w| ops[w].version)
                .max()?;
            (newest > 0).then_some((g, newest - 1))
        });
        if let Some((g, v)) = stale {
            ops[g].version = Some(v);
            let r = expect(&ops, Verdict::NotLinearizable, seed, "stale version");
            let (_, viol) = r.violations().next().unwrap();
            assert_eq!(viol.cause, Cause::Version, "seed {seed}\n{}", r.to_text());
            planted += 1;
        }
    }
    assert!(
        planted > 10,
        "seed {seed}: only {planted} stale versions planted"
    );
}

/// Indices of ok gets.
fn ok_gets(ops: &[SimOp]) -> Vec<usize> {
    (0..ops.len())
        .filter(|&i| ops[i].outcome == EventType::Ok && ops[i].command == Command::Get)
        .collect()
}

#[test]
fn read_of_a_value_never_written_is_rejected() {
    // Property: completeness for phantom reads.
    let (mut rng, seed) = rng("read_of_a_value_never_written_is_rejected");
    let mut tested = 0;
    while tested < 100 {
        let cfg = random_config(&mut rng);
        let mut ops = sim::simulate(&cfg, &mut rng);
        let Some(&g) = ok_gets(&ops).choose(&mut rng) else {
            continue;
        };
        ops[g].read = Some("never-written".to_string());
        let r = expect(&ops, Verdict::NotLinearizable, seed, "phantom read");
        // The history is fine until the corrupted read completes, so that
        // read is exactly what the report blames (found by the explanation
        // pass, or before the search: a value never written is unreachable).
        let (k, v) = r.violations().next().unwrap();
        assert_eq!(k.key, ops[g].key, "seed {seed}");
        assert_eq!(v.offending, g, "seed {seed}\n{}", r.to_text());
        assert!(
            matches!(v.cause, Cause::FirstFailure | Cause::Unreachable),
            "seed {seed}: {:?}",
            v.cause
        );
        tested += 1;
    }
}

/// An ok get `g` and an ok put whose value is provably stale for it: the
/// put completed before another ok write on the key began, which completed
/// before `g` began.
fn stale_candidate(ops: &[SimOp], rng: &mut StdRng) -> Option<(usize, String)> {
    let mut gets = ok_gets(ops);
    gets.shuffle(rng);
    for g in gets {
        let key = &ops[g].key;
        let before = |i: usize, t: u64| ops[i].complete.is_some_and(|c| c < t);
        for w2 in 0..ops.len() {
            if &ops[w2].key != key || !ops[w2].is_ok_write() || !before(w2, ops[g].invoke) {
                continue;
            }
            for w1 in 0..ops.len() {
                if &ops[w1].key != key
                    || ops[w1].outcome != EventType::Ok
                    || !before(w1, ops[w2].invoke)
                {
                    continue;
                }
                if let Command::Put { value } = &ops[w1].command {
                    return Some((g, value.clone()));
                }
            }
        }
    }
    None
}

#[test]
fn stale_read_is_rejected() {
    // Property: completeness for stale reads. Values are unique, so once a
    // later write completes, the old value can never be read again.
    let (mut rng, seed) = rng("stale_read_is_rejected");
    let mut tested = 0;
    let mut attempts = 0;
    while tested < 100 && attempts < 10_000 {
        attempts += 1;
        let cfg = random_config(&mut rng);
        let mut ops = sim::simulate(&cfg, &mut rng);
        let Some((g, stale)) = stale_candidate(&ops, &mut rng) else {
            continue;
        };
        ops[g].read = Some(stale);
        let r = expect(&ops, Verdict::NotLinearizable, seed, "stale read");
        let (_, v) = r.violations().next().unwrap();
        assert_eq!(v.offending, g, "seed {seed}\n{}", r.to_text());
        tested += 1;
    }
    assert_eq!(tested, 100, "seed {seed}: too few stale-read candidates");
}

#[test]
fn dropping_a_write_that_was_read_is_rejected() {
    // Property: completeness for lost writes. If the write that produced a
    // value vanishes from the history, the read of that value is a phantom.
    let (mut rng, seed) = rng("dropping_a_write_that_was_read_is_rejected");
    let mut tested = 0;
    let mut attempts = 0;
    while tested < 100 && attempts < 10_000 {
        attempts += 1;
        let cfg = random_config(&mut rng);
        let mut ops = sim::simulate(&cfg, &mut rng);
        let read_values: Vec<String> = ok_gets(&ops)
            .into_iter()
            .filter_map(|g| ops[g].read.clone())
            .collect();
        let Some(w) = (0..ops.len()).find(
            |&i| matches!(&ops[i].command, Command::Put { value } if read_values.contains(value)),
        ) else {
            continue;
        };
        ops.remove(w);
        expect(&ops, Verdict::NotLinearizable, seed, "dropped write");
        tested += 1;
    }
    assert_eq!(tested, 100, "seed {seed}: too few dropped-write candidates");
}

#[test]
fn swapping_the_results_of_sequential_reads_is_rejected_when_they_differ() {
    // Property: completeness for reordered observations. Two reads by the
    // same process whose results come from writes ordered in real time
    // between them cannot be swapped.
    let (mut rng, seed) = rng("swapping_the_results_of_sequential_reads");
    let mut tested = 0;
    let mut attempts = 0;
    while tested < 50 && attempts < 10_000 {
        attempts += 1;
        let cfg = random_config(&mut rng);
        let mut ops = sim::simulate(&cfg, &mut rng);
        // r1 reads a value put by w1; w1 completes before w2 (an ok put)
        // starts; r2 (later, same key) reads w2's value and begins after
        // w2 completes. Swapping r1's and r2's results makes r2 read the
        // stale w1 value.
        let puts: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].outcome == EventType::Ok)
            .filter(|&i| matches!(ops[i].command, Command::Put { .. }))
            .collect();
        let value_of = |i: usize| match &ops[i].command {
            Command::Put { value } => Some(value.clone()),
            _ => None,
        };
        let mut found = None;
        'search: for &r2 in &ok_gets(&ops) {
            let Some(w2) = puts.iter().copied().find(|&w| value_of(w) == ops[r2].read) else {
                continue;
            };
            let w2_done = ops[w2].complete.unwrap_or(u64::MAX);
            if w2_done >= ops[r2].invoke {
                continue;
            }
            for &r1 in &ok_gets(&ops) {
                if ops[r1].key != ops[r2].key || r1 == r2 {
                    continue;
                }
                let Some(w1) = puts.iter().copied().find(|&w| value_of(w) == ops[r1].read) else {
                    continue;
                };
                if ops[w1].complete.unwrap_or(u64::MAX) < ops[w2].invoke {
                    found = Some((r1, r2));
                    break 'search;
                }
            }
        }
        let Some((r1, r2)) = found else {
            continue;
        };
        let (a, b) = (ops[r1].read.clone(), ops[r2].read.clone());
        ops[r1].read = b;
        ops[r2].read = a;
        expect(&ops, Verdict::NotLinearizable, seed, "swapped reads");
        tested += 1;
    }
    assert_eq!(tested, 50, "seed {seed}: too few swap candidates");
}

// ---- Cross-check against brute force on tiny histories ------------------

/// The sequential specification, written independently of the crate's
/// interned model: `Some(new state)` if `op` may take effect in `state`.
fn brute_step(state: &Option<String>, op: &kvorum_checker::Operation) -> Option<Option<String>> {
    use kvorum_checker::Outcome;
    match (&op.command, op.outcome) {
        (Command::Get, _) => (*state == op.read).then(|| state.clone()),
        (Command::Put { value }, _) => Some(Some(value.clone())),
        (Command::Delete, _) => Some(None),
        (Command::Append { value }, _) => Some(Some(format!(
            "{}{}",
            state.clone().unwrap_or_default(),
            value
        ))),
        (Command::Cas { expected, .. }, Outcome::Fail) => {
            (state != expected).then(|| state.clone())
        }
        (Command::Cas { expected, value }, _) => (state == expected).then(|| value.clone()),
    }
}

/// Tries every order of every subset of optional ops: linearizable iff all
/// required ops can be placed, each after every required op that returned
/// before it was invoked.
fn brute_force(history: &kvorum_checker::History) -> bool {
    use kvorum_checker::Outcome;
    let ops: Vec<&kvorum_checker::Operation> = history
        .ops
        .iter()
        .filter(|o| match (&o.command, o.outcome) {
            (Command::Get, Outcome::Ok) => true,
            (Command::Get, _) => false,
            (Command::Cas { .. }, _) => true,
            (_, Outcome::Fail) => false,
            _ => true,
        })
        .collect();
    let required: Vec<bool> = ops.iter().map(|o| o.outcome != Outcome::Info).collect();
    let ret = |i: usize| match ops[i].outcome {
        Outcome::Info => u64::MAX,
        _ => ops[i].complete_time.unwrap_or(u64::MAX),
    };
    // Configurations known to fail: (ops placed, value). Without this
    // memo the enumeration is factorial; with it, it is the plain
    // exponential search with none of the checker's reductions.
    type Failed = std::collections::HashSet<(Vec<bool>, Option<String>)>;
    fn go(
        ops: &[&kvorum_checker::Operation],
        required: &[bool],
        ret: &dyn Fn(usize) -> u64,
        placed: &mut Vec<bool>,
        state: &Option<String>,
        failed: &mut Failed,
    ) -> bool {
        if (0..ops.len()).all(|i| placed[i] || !required[i]) {
            return true;
        }
        if failed.contains(&(placed.clone(), state.clone())) {
            return false;
        }
        for i in 0..ops.len() {
            if placed[i] {
                continue;
            }
            let blocked = (0..ops.len())
                .any(|p| !placed[p] && p != i && required[p] && ret(p) < ops[i].invoke_time);
            if blocked {
                continue;
            }
            if let Some(next) = brute_step(state, ops[i]) {
                placed[i] = true;
                let ok = go(ops, required, ret, placed, &next, failed);
                placed[i] = false;
                if ok {
                    return true;
                }
            }
        }
        failed.insert((placed.clone(), state.clone()));
        false
    }
    go(
        &ops,
        &required,
        &ret,
        &mut vec![false; ops.len()],
        &None,
        &mut Failed::new(),
    )
}

#[test]
fn agrees_with_plain_search_on_corrupted_simulations() {
    // Property: soundness and completeness at a larger scale. On simulated
    // single-key histories of up to 60 ops, some with reads changed to
    // other written values (often, but not always, a violation), the
    // checker agrees with the memoized exhaustive search above.
    let (mut rng, seed) = rng("agrees_with_plain_search_on_corrupted_simulations");
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..150 {
        let cfg = SimConfig {
            ops: rng.gen_range(10..60),
            keys: 1,
            processes: rng.gen_range(2..6),
            info_rate: rng.gen_range(0.0..0.15),
            fail_rate: rng.gen_range(0.0..0.1),
            max_latency: rng.gen_range(1..2_000),
            max_gap: rng.gen_range(1..1_000),
            mix: sim::DEFAULT_MIX,
        };
        let mut ops = sim::simulate(&cfg, &mut rng);
        let written: Vec<Option<String>> = ops
            .iter()
            .filter_map(|o| match &o.command {
                Command::Put { value } => Some(Some(value.clone())),
                _ => o.read.clone().map(Some),
            })
            .chain([None])
            .collect();
        for g in ok_gets(&ops) {
            if rng.gen_bool(0.05) {
                ops[g].read = written[rng.gen_range(0..written.len())].clone();
            }
        }
        let b = sim::builder(&ops);
        let history = b.build().unwrap();
        let expected = brute_force(&history);
        let got = check(&history, &CheckOptions::default());
        let mut text = Vec::new();
        b.write_jsonl(&mut text).unwrap();
        assert_eq!(
            got.verdict == Verdict::Linearizable,
            expected,
            "seed {seed}: checker says {:?}, plain search says {expected}\n{}\n{}",
            got.verdict,
            String::from_utf8_lossy(&text),
            got.to_text()
        );
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(
        accepted > 20 && rejected > 20,
        "{accepted} accepted, {rejected} rejected"
    );
}

/// (time, order key, process, invoke (command, key) or completion,
/// completion kind, value read).
type TinyEvent = (
    u64,
    usize,
    u64,
    Option<(Command, String)>,
    EventType,
    Option<String>,
);

#[test]
fn agrees_with_brute_force_on_tiny_random_histories() {
    // Property: soundness and completeness. On histories small enough to
    // enumerate every linearization, the search gives the same verdict as
    // brute force, with random (often impossible) reads and random
    // ok/fail/info outcomes.
    let (mut rng, seed) = rng("agrees_with_brute_force_on_tiny_random_histories");
    // Few, overlapping values so that reads often match, and appends whose
    // concatenations are ambiguous ("a"+"ab" = "aa"+"b").
    let values = ["a", "b", "ab", "ba", "aa", "aab", "aba"];
    let pick = |rng: &mut StdRng| -> Option<String> {
        if rng.gen_bool(0.2) {
            None
        } else {
            Some(values[rng.gen_range(0..values.len())].to_string())
        }
    };
    // CHECKER_BRUTE_OPS=10 (say) explores bigger histories, slowly.
    let max_ops: usize = std::env::var("CHECKER_BRUTE_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..3_000 {
        let mut b = kvorum_checker::HistoryBuilder::new();
        let mut events: Vec<TinyEvent> = Vec::new();
        let n_ops = rng.gen_range(1..=max_ops);
        let processes = rng.gen_range(1..=4u64);
        let mut clock = vec![0u64; processes as usize];
        for seq in 0..n_ops {
            let p = rng.gen_range(0..processes);
            let inv = clock[p as usize] + rng.gen_range(0..4);
            let ret = inv + rng.gen_range(0..6);
            clock[p as usize] = ret + rng.gen_range(0..3);
            let command = match rng.gen_range(0..5) {
                0 => Command::Get,
                1 => Command::Put {
                    // "x" is never read: unobservable when info.
                    value: ["a", "b", "ab", "x"][rng.gen_range(0..4)].to_string(),
                },
                2 => Command::Delete,
                3 => Command::Append {
                    value: ["a", "b", "ab", "aa", "y"][rng.gen_range(0..5)].to_string(),
                },
                _ => Command::Cas {
                    expected: pick(&mut rng),
                    value: pick(&mut rng),
                },
            };
            let kind = match rng.gen_range(0..10) {
                0 => EventType::Fail,
                1 | 2 => EventType::Info,
                _ => EventType::Ok,
            };
            let read = pick(&mut rng);
            // Invokes sort before completions at equal times only across
            // processes; a process's own completion precedes its next invoke.
            events.push((inv, seq * 2 + 1, p, Some((command, "k".into())), kind, None));
            if seq + 1 < n_ops || rng.gen_bool(0.8) {
                events.push((ret, seq * 2, p, None, kind, read));
            }
        }
        events.sort_by_key(|e| (e.0, e.1 % 2 == 1, e.1));
        let mut open = std::collections::HashMap::new();
        for (t, _, p, invoke, kind, read) in events {
            match invoke {
                Some((command, key)) => {
                    if open.insert(p, ()).is_some() {
                        // The previous op of p has no completion: skip.
                        continue;
                    }
                    b.invoke(p, t, &key, command);
                }
                None => {
                    if open.remove(&p).is_none() {
                        continue;
                    }
                    match kind {
                        EventType::Fail => b.fail(p, t),
                        EventType::Info => b.info(p, t),
                        _ => b.ok(p, t, read.as_deref()),
                    };
                }
            }
        }
        let Ok(history) = b.build() else {
            continue;
        };
        let expected = brute_force(&history);
        let got = check(&history, &CheckOptions::default());
        let mut text = Vec::new();
        b.write_jsonl(&mut text).unwrap();
        assert_eq!(
            got.verdict == Verdict::Linearizable,
            expected,
            "seed {seed}: checker says {:?}, brute force says {expected}\n{}\n{}",
            got.verdict,
            String::from_utf8_lossy(&text),
            got.to_text()
        );
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    // Both verdicts must actually be exercised.
    assert!(
        accepted > 200 && rejected > 200,
        "{accepted} accepted, {rejected} rejected"
    );
}
