//! Times parsing and checking a history file.
//!
//! ```text
//! cargo run --release -p kvorum-checker --example check_file -- /tmp/h.jsonl [--text] [--html out.html]
//! ```
//!
//! Prints the parse and check times and the verdict (with `--text`, the
//! full text report); exits with the same code as `kvctl check`.

use std::fs::File;
use std::io::BufReader;
use std::process::ExitCode;
use std::time::Instant;

use kvorum_checker::{check, parse_history, CheckOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: check_file FILE [--text] [--html OUT]");
        return ExitCode::from(2);
    };
    let html = args
        .iter()
        .position(|a| a == "--html")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let text = args.iter().any(|a| a == "--text");
    let t0 = Instant::now();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot open {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let history = match parse_history(BufReader::new(file)) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(2);
        }
    };
    let parsed = t0.elapsed();
    let t1 = Instant::now();
    let report = check(&history, &CheckOptions::default());
    let checked = t1.elapsed();
    let states: usize = report.keys.iter().map(|k| k.states).sum();
    println!(
        "{} ops, {} keys: parse {:.1} ms, check {:.1} ms ({} memoized states), verdict {}",
        history.len(),
        report.keys.len(),
        parsed.as_secs_f64() * 1e3,
        checked.as_secs_f64() * 1e3,
        states,
        report.verdict_text()
    );
    if text {
        print!("{}", report.to_text());
    }
    if let Some(out) = html {
        if let Err(e) = std::fs::write(&out, report.to_html()) {
            eprintln!("cannot write {out}: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::from(u8::try_from(report.exit_code()).unwrap_or(2))
}
