//! `kvctl check FILE`, as a function the real binary calls.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::Path;

use serde_json::json;

use crate::assemble::parse_history;
use crate::check::{check, CheckOptions};
use crate::history::{Command, History, Outcome};

/// Exit code when there is nothing to check, the input is invalid or the
/// verdict is unknown.
const EXIT_UNDECIDED: i32 = 2;

/// How many operations must be decided by the search: ok ops and failed
/// cas (a failed put/append/delete did not happen, an info op may never
/// have happened, so neither proves anything).
fn decisive_ops(history: &History) -> usize {
    history
        .ops
        .iter()
        .filter(|o| {
            o.outcome == Outcome::Ok
                || (o.outcome == Outcome::Fail && matches!(o.command, Command::Cas { .. }))
        })
        .count()
}

/// Runs `kvctl check FILE [--json] [--html OUT]`: parses `path`, checks
/// it, prints the result to `out` and writes the HTML report to `html_out`
/// when given (never otherwise). Errors (unreadable or invalid input, an
/// HTML report that cannot be written) go to `err`.
///
/// `out` gets the human text, or with `json` exactly one JSON object (see
/// [`crate::Report::to_json`]; for an input that cannot be checked,
/// `{"verdict": "invalid_input" | "nothing_to_check", "exit_code": 2,
/// "error": ...}`).
///
/// Returns the process exit code: 0 linearizable, 1 not linearizable,
/// 2 unknown (time or memory bound), invalid input (the message names the
/// first bad line), or nothing to check (no operation completed `ok`, nor
/// a `cas` `fail`). A requested HTML report that cannot be written is
/// reported on `err` and does not change the code. Failures to write to
/// `out`/`err` themselves are ignored: the exit code still carries the
/// verdict.
pub fn run_cli(
    path: &Path,
    opts: &CheckOptions,
    html_out: Option<&Path>,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut refuse = |verdict: &str, message: String| {
        let _ = writeln!(err, "error: {message}");
        if json {
            let v = json!({"verdict": verdict, "exit_code": EXIT_UNDECIDED, "error": message});
            let _ = writeln!(out, "{v}");
        }
        let _ = out.flush();
        EXIT_UNDECIDED
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) => {
            return refuse(
                "invalid_input",
                format!("cannot open {}: {e}", path.display()),
            );
        }
    };
    let history = match parse_history(BufReader::new(file)) {
        Ok(h) => h,
        Err(e) => {
            return refuse(
                "invalid_input",
                format!(
                    "{}: invalid history at line {}: {}",
                    path.display(),
                    e.line,
                    e.kind
                ),
            );
        }
    };
    if decisive_ops(&history) == 0 {
        return refuse(
            "nothing_to_check",
            format!(
                "nothing to check: none of the {} operations in {} completed ok (nor a cas fail), \
                 so no verdict would mean anything",
                history.len(),
                path.display()
            ),
        );
    }
    let report = check(&history, opts);
    let code = report.exit_code();
    let mut html_written = None;
    if let Some(html) = html_out {
        match std::fs::write(html, report.to_html()) {
            Ok(()) => html_written = Some(html),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "error: cannot write HTML report {}: {e}",
                    html.display()
                );
            }
        }
    }
    if json {
        let mut v = report.to_json();
        if let (Some(obj), Some(html)) = (v.as_object_mut(), html_out) {
            obj.insert(
                "html".to_string(),
                json!({"path": html.display().to_string(), "written": html_written.is_some()}),
            );
        }
        let _ = writeln!(out, "{v}");
    } else {
        let _ = out.write_all(report.to_text().as_bytes());
        if let Some(html) = html_written {
            let _ = writeln!(out, "HTML report written to {}", html.display());
        }
    }
    let _ = out.flush();
    code
}
