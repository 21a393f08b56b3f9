//! Times the checker on one non-linearizable key shaped like a Jepsen
//! run's hot key: ~230 append/get operations from 50 processes, with one
//! stale read planted: by default the key read as absent after appends
//! completed (`--plant prefix`: an older, shorter value).
//!
//! ```text
//! cargo run --release -p kvorum-checker --example failing_key -- [--seed N] [--runs N] \
//!     [--ops N] [--processes N] [--latency-ns N] [--gap-ns N] [--plant absent|prefix] [--out FILE]
//! ```
//!
//! For each run (seeds `seed`, `seed + 1`, ...) prints the seed, the
//! verdict, the memoized states and the time of the search and of the
//! explanation after it; `--out` writes the first run's history (for
//! `kvctl check`). The same histories unplanted are timed as a baseline.

#[path = "../tests/support/sim.rs"]
mod sim;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;
use std::time::Instant;

use kvorum_checker::{check, CheckOptions, Command, EventType, Verdict};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const USAGE: &str = "usage: failing_key [--seed N] [--runs N] [--ops N] [--processes N] \
                     [--latency-ns N] [--gap-ns N] [--plant absent|prefix] [--out FILE]";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Plants a stale read: a `get` that completed `ok` now returns a value
/// that a read completed before its invoke had already seen grow (appends
/// only, so values only grow: no linearization can read the shorter one);
/// with `absent`, it reads the key as absent (a lost history).
/// Returns the op id, or `None` if the history has no such pair.
fn plant_stale_read(ops: &mut [sim::SimOp], rng: &mut StdRng, absent: bool) -> Option<usize> {
    let reads: Vec<usize> = ops
        .iter()
        .filter(|o| o.outcome == EventType::Ok && matches!(o.command, Command::Get))
        .map(|o| o.id)
        .collect();
    let len = |v: &Option<String>| v.as_ref().map_or(0, String::len);
    // Victims in the second half, so the search has work to do first.
    let start = rng.gen_range(reads.len() / 2..reads.len().max(1));
    for &victim in reads.get(start..)?.iter().chain(reads.iter()) {
        let invoke = ops[victim].invoke;
        // A read completed before the victim's invoke that saw a non-empty
        // value; the victim will return a strict prefix of it.
        let Some(seen) = reads
            .iter()
            .filter(|&&r| ops[r].complete.is_some_and(|c| c < invoke))
            .max_by_key(|&&r| len(&ops[r].read))
            .and_then(|&r| ops[r].read.clone())
        else {
            continue;
        };
        let cut = seen[..seen.len() - 1].rfind(';').map_or(0, |i| i + 1);
        ops[victim].read = (cut > 0 && !absent).then(|| seen[..cut].to_string());
        return Some(victim);
    }
    None
}

fn run() -> Result<(), String> {
    let mut seed: u64 = 1;
    let mut runs: u64 = 10;
    let mut cfg = sim::SimConfig {
        ops: 230,
        keys: 1,
        processes: 50,
        info_rate: 0.02,
        fail_rate: 0.0,
        max_latency: 2_000_000,
        max_gap: 40_000_000,
        mix: [0.5, 0.0, 0.0, 0.5, 0.0],
    };
    let mut out: Option<String> = None;
    let mut absent = true;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--seed" => seed = parse(&value()?)?,
            "--runs" => runs = parse(&value()?)?,
            "--ops" => cfg.ops = parse(&value()?)?,
            "--processes" => cfg.processes = parse(&value()?)?,
            "--out" => out = Some(value()?),
            "--plant" => {
                absent = match value()?.as_str() {
                    "absent" => true,
                    "prefix" => false,
                    other => return Err(format!("--plant is absent or prefix, not {other:?}")),
                }
            }
            "--latency-ns" => cfg.max_latency = parse(&value()?)?,
            "--gap-ns" => cfg.max_gap = parse(&value()?)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let (mut fail_ms, mut pass_ms) = (Vec::new(), Vec::new());
    for s in seed..seed.saturating_add(runs) {
        let mut rng = StdRng::seed_from_u64(s);
        let mut ops = sim::simulate(&cfg, &mut rng);
        let good = sim::builder(&ops).build().map_err(|e| e.to_string())?;
        let t = Instant::now();
        let report = check(&good, &CheckOptions::default());
        pass_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if report.verdict != Verdict::Linearizable {
            return Err(format!(
                "seed {s}: unplanted history not linearizable:\n{}",
                report.to_text()
            ));
        }
        let Some(victim) = plant_stale_read(&mut ops, &mut rng, absent) else {
            println!("seed {s}: no read to plant a stale value in, skipped");
            continue;
        };
        let b = sim::builder(&ops);
        if s == seed {
            if let Some(path) = &out {
                let file = File::create(path).map_err(|e| format!("cannot create {path}: {e}"))?;
                let mut w = BufWriter::new(file);
                b.write_jsonl(&mut w).map_err(|e| e.to_string())?;
                w.flush().map_err(|e| e.to_string())?;
            }
        }
        let history = b.build().map_err(|e| e.to_string())?;
        let t = Instant::now();
        let report = check(&history, &CheckOptions::default());
        let total = t.elapsed().as_secs_f64() * 1e3;
        fail_ms.push(total);
        let k = report.keys.first().ok_or("no key")?;
        println!(
            "seed {s}: {} ops, stale read #{victim}: {:?}, {} states, search {:.2} ms, \
             explain {:.2} ms, total {total:.2} ms (unplanted: {:.2} ms)",
            k.ops,
            k.verdict,
            k.states,
            k.search_elapsed.as_secs_f64() * 1e3,
            k.explain_elapsed.as_secs_f64() * 1e3,
            pass_ms.last().copied().unwrap_or(0.0),
        );
    }
    let summary = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let med = v.get(v.len() / 2).copied().unwrap_or(0.0);
        let max = v.last().copied().unwrap_or(0.0);
        format!("median {med:.2} ms, max {max:.2} ms")
    };
    println!(
        "failing keys: {}; passing (unplanted): {}",
        summary(&mut fail_ms),
        summary(&mut pass_ms)
    );
    Ok(())
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("invalid number {s:?}"))
}
