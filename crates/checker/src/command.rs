//! `kvctl check FILE`, as a function the real binary calls.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use crate::check::{check, CheckOptions};
use crate::history::parse_history;

/// Runs `kvctl check FILE`: parses `path`, checks it, prints the per-key
/// verdicts and the overall verdict to `out`, and writes the HTML report to
/// `html_out` when given (never otherwise).
///
/// Returns the process exit code: 0 linearizable, 1 not linearizable,
/// 2 unknown (time or memory bound), invalid input (the message names the
/// first bad line), or a requested HTML report that could not be written.
/// Failures to write to `out` itself are ignored: the exit code still
/// carries the verdict.
pub fn run_cli(
    path: &Path,
    opts: &CheckOptions,
    html_out: Option<&Path>,
    out: &mut dyn Write,
) -> i32 {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(out, "error: cannot open {}: {e}", path.display());
            return 2;
        }
    };
    let history = match parse_history(BufReader::new(file)) {
        Ok(h) => h,
        Err(e) => {
            let _ = writeln!(
                out,
                "error: {}: invalid history at line {}: {}",
                path.display(),
                e.line,
                e.kind
            );
            return 2;
        }
    };
    let report = check(&history, opts);
    let _ = out.write_all(report.to_text().as_bytes());
    let mut code = report.exit_code();
    if let Some(html) = html_out {
        match std::fs::write(html, report.to_html()) {
            Ok(()) => {
                let _ = writeln!(out, "HTML report written to {}", html.display());
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "error: cannot write HTML report {}: {e}",
                    html.display()
                );
                code = 2;
            }
        }
    }
    let _ = out.flush();
    code
}
