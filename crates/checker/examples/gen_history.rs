//! Generates a linearizable key-value history for benchmarking the checker.
//!
//! ```text
//! cargo run --release -p kvorum-checker --example gen_history -- \
//!     --ops 100000 --keys 100 --processes 16 --seed 1 --out /tmp/h.jsonl
//! ```
//!
//! Operations come from a correct sequential map driven by simulated
//! processes with random latencies; each takes effect at a random instant
//! between its invoke and completion (1% info, 1% failed writes).

#[path = "../tests/support/sim.rs"]
mod sim;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use rand::rngs::StdRng;
use rand::SeedableRng;

const USAGE: &str = "usage: gen_history [--ops N] [--keys N] [--processes N] [--seed N] \
                     [--info-rate F] [--fail-rate F] [--latency-ns N] [--gap-ns N] \
                     [--mix GET,PUT,CAS,APPEND,DELETE] --out FILE";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut cfg = sim::SimConfig {
        ops: 100_000,
        keys: 100,
        processes: 16,
        info_rate: 0.01,
        fail_rate: 0.01,
        max_latency: 2_000_000,
        max_gap: 500_000,
        mix: sim::DEFAULT_MIX,
    };
    let mut seed: u64 = 1;
    let mut out: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--ops" => cfg.ops = parse(&value()?)?,
            "--keys" => cfg.keys = parse(&value()?)?,
            "--processes" => cfg.processes = parse(&value()?)?,
            "--seed" => seed = parse(&value()?)?,
            "--info-rate" => cfg.info_rate = parse(&value()?)?,
            "--fail-rate" => cfg.fail_rate = parse(&value()?)?,
            "--out" => out = Some(value()?),
            "--latency-ns" => cfg.max_latency = parse(&value()?)?,
            "--gap-ns" => cfg.max_gap = parse(&value()?)?,
            "--mix" => {
                let v = value()?;
                let w: Vec<f64> = v.split(',').map(parse).collect::<Result<_, _>>()?;
                cfg.mix = w.try_into().map_err(|_| {
                    format!("--mix needs 5 weights (get,put,cas,append,delete), got {v:?}")
                })?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let out = out.ok_or("--out is required")?;
    let mut rng = StdRng::seed_from_u64(seed);
    let ops = sim::simulate(&cfg, &mut rng);
    let file = File::create(&out).map_err(|e| format!("cannot create {out}: {e}"))?;
    let mut w = BufWriter::new(file);
    for e in sim::events(&ops) {
        kvorum_checker::write_event(&mut w, &e).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())?;
    eprintln!(
        "wrote {} operations ({} keys, {} processes, seed {seed}) to {out}",
        ops.len(),
        cfg.keys,
        cfg.processes
    );
    Ok(())
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("invalid number {s:?}"))
}
