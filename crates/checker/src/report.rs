//! Verdicts, per-key results and the plain-text rendering.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::history::{show_value, Command, Operation, Outcome};

/// The overall answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Verdict {
    /// Every key's history is linearizable.
    Linearizable,
    /// At least one key's history is not linearizable.
    NotLinearizable,
    /// No violation found, but some key could not be decided.
    Unknown {
        /// Why (time limit, memory bound, ...).
        reason: String,
    },
}

impl Verdict {
    /// Process exit code of `kvctl check`: 0, 1 or 2.
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Linearizable => 0,
            Verdict::NotLinearizable => 1,
            Verdict::Unknown { .. } => 2,
        }
    }
}

/// The answer for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum KeyVerdict {
    /// This key's history is linearizable.
    Linearizable,
    /// This key's history is not linearizable; see [`KeyReport::violation`].
    NotLinearizable,
    /// The search stopped early (time limit, memory bound).
    Unknown {
        /// Why.
        reason: String,
    },
    /// Not checked (or abandoned) because another key was found not
    /// linearizable first.
    Skipped,
}

impl KeyVerdict {
    /// `linearizable`, `not_linearizable`, `unknown` or `skipped`.
    pub fn code(&self) -> &'static str {
        match self {
            KeyVerdict::Linearizable => "linearizable",
            KeyVerdict::NotLinearizable => "not_linearizable",
            KeyVerdict::Unknown { .. } => "unknown",
            KeyVerdict::Skipped => "skipped",
        }
    }

    fn text(&self) -> String {
        match self {
            KeyVerdict::Linearizable => "linearizable".to_string(),
            KeyVerdict::NotLinearizable => "NOT LINEARIZABLE".to_string(),
            KeyVerdict::Unknown { reason } => format!("unknown ({reason})"),
            KeyVerdict::Skipped => "skipped (another key failed first)".to_string(),
        }
    }
}

/// Evidence for a non-linearizable key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Every operation on the key (including failed and info ones), in
    /// invoke order.
    pub operations: Vec<Operation>,
    /// The longest linearizable prefix the search found: op ids in
    /// linearization order. "Longest" counts required (ok) ops; among equal
    /// prefixes the one with fewer info ops wins, since placing an info op
    /// is a guess rather than evidence.
    pub prefix: Vec<usize>,
    /// The op that could not be placed after that prefix: the pending op
    /// whose completion the search reached without being able to
    /// linearize it (its own step was illegal, or every way of placing the
    /// ops before it was a dead end).
    pub offending: usize,
    /// The key's value after the prefix (`None` = absent).
    pub value_after_prefix: Option<String>,
    /// Why the offending op cannot be placed.
    pub cause: Cause,
    /// The op (id) that shows why: for [`Cause::Overwritten`] the write
    /// that overwrote the value the offending op needs before it was
    /// invoked; for [`Cause::Version`] the op whose version contradicts
    /// the offending op's.
    pub evidence: Option<usize>,
}

/// Why the offending op of a [`Violation`] cannot be placed after the
/// prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cause {
    /// Its completion was reached: it had to take effect before anything
    /// invoked later, and no order of the operations pending at that point
    /// allows it.
    Blocked,
    /// It needs a value (a read's result, a cas's `expected`) that no
    /// remaining sequence of pending writes and appends can produce.
    Unreachable,
    /// The history as known just before it completed is linearizable (the
    /// prefix linearizes it, without this op), and the history as known
    /// when it completed is not: this is the first completion that makes
    /// the history non-linearizable.
    FirstFailure,
    /// Found before any search (reads-from): every write of the value it
    /// needs is followed, before it was invoked, by a completed write of
    /// another value ([`Violation::evidence`] is the latest), so it
    /// cannot be linearized anywhere. The prefix shown linearizes the ops
    /// that completed before it was invoked.
    Overwritten,
    /// Its recorded version contradicts another op's
    /// ([`Violation::evidence`]): versions of a key only grow (a write
    /// completed before another is invoked has the smaller version, a read
    /// never returns a version older than one already written or read), and
    /// a read returns the version of the write whose value it read. Found
    /// before the search; the prefix is empty.
    Version,
}

impl Cause {
    /// `blocked`, `unreachable` or `first_failure`.
    pub fn code(self) -> &'static str {
        match self {
            Cause::Blocked => "blocked",
            Cause::Unreachable => "unreachable",
            Cause::FirstFailure => "first_failure",
            Cause::Overwritten => "overwritten",
            Cause::Version => "version",
        }
    }

    /// One sentence for reports.
    pub fn explain(self) -> &'static str {
        match self {
            Cause::Blocked => {
                "it had to take effect before its completion, and no order of the operations \
                 pending at that point allows it"
            }
            Cause::Unreachable => {
                "the value it needs can no longer be produced by any remaining order of the \
                 pending writes and appends"
            }
            Cause::FirstFailure => {
                "it is the first operation whose completion makes the history non-linearizable: \
                 everything invoked before it completed linearizes (as numbered, without it), \
                 and no linearization includes it as completed"
            }
            Cause::Overwritten => {
                "the value it needs was overwritten before it was invoked: every write of that \
                 value is followed, in real time, by a completed write of another value (the \
                 prefix linearizes what completed before it was invoked)"
            }
            Cause::Version => {
                "its version contradicts the operation below: versions of a key only grow, \
                 and a read returns the version of the write whose value it read"
            }
        }
    }
}

impl Violation {
    /// The operation with this id, if it is on this key.
    pub fn op(&self, id: usize) -> Option<&Operation> {
        self.operations
            .binary_search_by_key(&id, |o| o.id)
            .ok()
            .and_then(|i| self.operations.get(i))
            .or_else(|| self.operations.iter().find(|o| o.id == id))
    }

    /// Position (1-based) of each prefix op in the linearization.
    pub(crate) fn positions(&self) -> HashMap<usize, usize> {
        self.prefix
            .iter()
            .enumerate()
            .map(|(i, &id)| (id, i + 1))
            .collect()
    }

    /// The operations worth showing: those overlapping the interval from
    /// the last few prefix ops to the offending op's completion, at most
    /// `max`, preferring the offending op, then the prefix tail, then ops
    /// nearest in time. Returned in invoke order.
    pub(crate) fn window(&self, max: usize) -> Vec<&Operation> {
        let Some(off) = self.op(self.offending) else {
            return self.operations.iter().take(max).collect();
        };
        let tail_ids: Vec<usize> = self.prefix.iter().rev().take(12).copied().collect();
        let start = tail_ids
            .iter()
            .filter_map(|&id| self.op(id))
            .map(|o| o.invoke_time)
            .fold(off.invoke_time, u64::min);
        let end = off.complete_time.unwrap_or(u64::MAX);
        let mut picked: Vec<&Operation> = self
            .operations
            .iter()
            .filter(|o| o.invoke_time <= end && o.complete_time.unwrap_or(u64::MAX) >= start)
            .collect();
        if picked.len() > max {
            let rank = |o: &Operation| -> (u8, u64) {
                if o.id == off.id {
                    (0, 0)
                } else if tail_ids.contains(&o.id) {
                    (1, 0)
                } else {
                    (2, o.invoke_time.abs_diff(off.invoke_time))
                }
            };
            picked.sort_by_key(|o| rank(o));
            picked.truncate(max);
        }
        picked.sort_by_key(|o| (o.invoke_time, o.id));
        picked
    }
}

/// The result for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Its verdict.
    pub verdict: KeyVerdict,
    /// Operations on the key (all outcomes).
    pub ops: usize,
    /// Operations that took part in the search (failed non-cas ops and
    /// unknown-outcome gets are dropped).
    pub checked_ops: usize,
    /// Memoized (linearized set, state) pairs explored.
    pub states: usize,
    /// Wall time spent on this key.
    pub elapsed: Duration,
    /// Of `elapsed`, the time of the search itself (including the replay
    /// of its witness).
    pub search_elapsed: Duration,
    /// Of `elapsed`, the time spent explaining a violation after the
    /// search found it (zero for other verdicts).
    pub explain_elapsed: Duration,
    /// Evidence, when `verdict` is `NotLinearizable`.
    pub violation: Option<Violation>,
}

/// The result of [`crate::check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Overall verdict.
    pub verdict: Verdict,
    /// One entry per key, sorted by key.
    pub keys: Vec<KeyReport>,
    /// Operations in the history.
    pub total_ops: usize,
    /// Wall time of the whole check.
    pub elapsed: Duration,
}

/// `1.234 s`, `12.3 ms`, ...
pub(crate) fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.3} s")
    } else if s >= 1e-3 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// Nanoseconds as a short human string.
pub(crate) fn fmt_ns(ns: u64) -> String {
    if ns >= 1_000_000_000 {
        format!("{:.3} s", ns as f64 / 1e9)
    } else if ns >= 1_000_000 {
        format!("{:.3} ms", ns as f64 / 1e6)
    } else if ns >= 1_000 {
        format!("{:.1} µs", ns as f64 / 1e3)
    } else {
        format!("{ns} ns")
    }
}

impl Report {
    /// Exit code for `kvctl check`: 0 linearizable, 1 not, 2 unknown.
    pub fn exit_code(&self) -> i32 {
        self.verdict.exit_code()
    }

    /// The keys that were found not linearizable.
    pub fn violations(&self) -> impl Iterator<Item = (&KeyReport, &Violation)> {
        self.keys
            .iter()
            .filter_map(|k| k.violation.as_ref().map(|v| (k, v)))
    }

    /// The overall verdict as a short phrase.
    pub fn verdict_text(&self) -> String {
        match &self.verdict {
            Verdict::Linearizable => "LINEARIZABLE".to_string(),
            Verdict::NotLinearizable => "NOT LINEARIZABLE".to_string(),
            Verdict::Unknown { reason } => format!("UNKNOWN ({reason})"),
        }
    }

    /// A human-readable report: one line per key, details for each
    /// violation (the prefix tail, the value after it, the op that cannot
    /// be placed and the operations around it), then the overall verdict.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "checked {} operations on {} keys in {}",
            self.total_ops,
            self.keys.len(),
            fmt_duration(self.elapsed)
        );
        for k in &self.keys {
            let cause = k.violation.as_ref().map(|v| v.cause);
            let how = match cause {
                Some(Cause::Overwritten) => format!(
                    "refuted before the search by reads-from, {} states to show a prefix",
                    k.states
                ),
                Some(Cause::Version) => "refuted before the search by versions".to_string(),
                _ => format!("{} states", k.states),
            };
            let _ = writeln!(
                s,
                "key {:?}: {} ({} ops, {how}, {})",
                k.key,
                k.verdict.text(),
                k.ops,
                fmt_duration(k.elapsed)
            );
        }
        for (k, v) in self.violations() {
            write_violation_text(&mut s, k, v);
        }
        let _ = writeln!(s, "verdict: {}", self.verdict_text());
        s
    }

    /// The report as one JSON object (what `kvctl check --json` prints):
    ///
    /// ```text
    /// {"verdict": "linearizable" | "not_linearizable" | "unknown",
    ///  "reason": ..., (unknown only)
    ///  "exit_code": 0 | 1 | 2, "total_ops": N, "elapsed_ms": F,
    ///  "keys": [{"key", "verdict", "reason"?, "ops", "checked_ops", "states",
    ///            "elapsed_ms", "search_ms", "explain_ms"}],
    ///  "counterexample": null | {"key", "cause", "because", "prefix": [op ids
    ///            in linearization order], "value_after_prefix", "offending": op,
    ///            "operations": [every op on the key]}}
    /// ```
    ///
    /// An op is `{"id", "process", "f", "value"?, "expected"?, "outcome":
    /// "ok" | "fail" | "info", "read"? (get ok), "deleted"? (delete ok,
    /// when recorded), "invoke_time",
    /// "complete_time" (null: never), "label"}`. Only the first failing
    /// key's counterexample is given (the check stops at the first).
    pub fn to_json(&self) -> serde_json::Value {
        let keys: Vec<serde_json::Value> = self
            .keys
            .iter()
            .map(|k| {
                let mut v = json!({
                    "key": k.key,
                    "verdict": k.verdict.code(),
                    "ops": k.ops,
                    "checked_ops": k.checked_ops,
                    "states": k.states,
                    "elapsed_ms": ms(k.elapsed),
                    "search_ms": ms(k.search_elapsed),
                    "explain_ms": ms(k.explain_elapsed),
                });
                if let (KeyVerdict::Unknown { reason }, Some(obj)) = (&k.verdict, v.as_object_mut())
                {
                    obj.insert("reason".to_string(), json!(reason));
                }
                v
            })
            .collect();
        let counterexample = self.violations().next().map(|(k, v)| {
            json!({
                "key": k.key,
                "cause": v.cause.code(),
                "because": v.cause.explain(),
                "prefix": v.prefix,
                "value_after_prefix": v.value_after_prefix,
                "offending": v.op(v.offending).map(op_json),
                "evidence": v.evidence.and_then(|id| v.op(id)).map(op_json),
                "operations": v.operations.iter().map(op_json).collect::<Vec<_>>(),
            })
        });
        let (verdict, reason) = match &self.verdict {
            Verdict::Linearizable => ("linearizable", None),
            Verdict::NotLinearizable => ("not_linearizable", None),
            Verdict::Unknown { reason } => ("unknown", Some(reason)),
        };
        let mut v = json!({
            "verdict": verdict,
            "exit_code": self.exit_code(),
            "total_ops": self.total_ops,
            "elapsed_ms": ms(self.elapsed),
            "keys": keys,
            "counterexample": counterexample,
        });
        if let (Some(reason), Some(obj)) = (reason, v.as_object_mut()) {
            obj.insert("reason".to_string(), json!(reason));
        }
        v
    }
}

/// Milliseconds, as a float, for JSON.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One operation as JSON (see [`Report::to_json`]).
fn op_json(o: &Operation) -> serde_json::Value {
    let mut v = json!({
        "id": o.id,
        "process": o.process,
        "f": o.command.f().as_str(),
        "outcome": o.outcome.as_str(),
        "invoke_time": o.invoke_time,
        "complete_time": o.complete_time,
        "label": o.label(),
        "version": o.version,
    });
    if let Some(obj) = v.as_object_mut() {
        match &o.command {
            Command::Put { value } | Command::Append { value } => {
                obj.insert("value".to_string(), json!(value));
            }
            Command::Cas { expected, value } => {
                obj.insert("expected".to_string(), json!(expected));
                obj.insert("value".to_string(), json!(value));
            }
            Command::Get | Command::Delete => {}
        }
        if o.outcome == Outcome::Ok && o.command == Command::Get {
            obj.insert("read".to_string(), json!(o.read));
        }
        if let Some(d) = o.deleted {
            obj.insert("deleted".to_string(), json!(d));
        }
    }
    v
}

const TEXT_PREFIX_SHOWN: usize = 20;
const TEXT_OPS_SHOWN: usize = 40;

fn op_line(
    o: &Operation,
    base: u64,
    positions: &HashMap<usize, usize>,
    offending: usize,
) -> String {
    let mark = if o.id == offending {
        "  <-- cannot be linearized".to_string()
    } else if let Some(p) = positions.get(&o.id) {
        format!("  [linearized {p}]")
    } else {
        String::new()
    };
    let complete = match o.complete_time {
        Some(t) => format!("{:>12}", t.saturating_sub(base)),
        None => format!("{:>12}", "never"),
    };
    format!(
        "    #{:<7} p{:<5} {:>12} {} {:<4} {}{}",
        o.id,
        o.process,
        o.invoke_time.saturating_sub(base),
        complete,
        o.outcome.as_str(),
        o.label(),
        mark
    )
}

fn write_violation_text(s: &mut String, k: &KeyReport, v: &Violation) {
    let _ = writeln!(s, "\nkey {:?} is not linearizable", k.key);
    let shown: Vec<String> = v
        .prefix
        .iter()
        .rev()
        .take(TEXT_PREFIX_SHOWN)
        .rev()
        .map(|id| format!("#{id}"))
        .collect();
    let elided = v.prefix.len().saturating_sub(TEXT_PREFIX_SHOWN);
    let _ = writeln!(
        s,
        "  longest linearizable prefix: {} of {} checked ops{}",
        v.prefix.len(),
        k.checked_ops,
        if v.prefix.is_empty() { "" } else { ":" }
    );
    if !v.prefix.is_empty() {
        let _ = writeln!(
            s,
            "    {}{}",
            if elided > 0 {
                format!("... ({elided} earlier) ")
            } else {
                String::new()
            },
            shown.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "  value after the prefix: {}",
        show_value(&v.value_after_prefix)
    );
    if let Some(off) = v.op(v.offending) {
        let _ = writeln!(
            s,
            "  cannot linearize: #{} process {} {}{} (invoked at {} ns, completed at {})\n    because {}",
            off.id,
            off.process,
            off.label(),
            off.version.map_or(String::new(), |n| format!(" version {n}")),
            off.invoke_time,
            off.complete_time
                .map_or("never".to_string(), |t| format!("{t} ns")),
            v.cause.explain()
        );
        if let Some(b) = v.evidence.and_then(|id| v.op(id)) {
            let _ = writeln!(
                s,
                "  {} #{} process {} {}{} (invoked at {} ns, completed at {})",
                if v.cause == Cause::Version {
                    "contradicted by"
                } else {
                    "overwritten by"
                },
                b.id,
                b.process,
                b.label(),
                b.version.map_or(String::new(), |n| format!(" version {n}")),
                b.invoke_time,
                b.complete_time
                    .map_or("never".to_string(), |t| format!("{t} ns")),
            );
        }
    }
    let window = v.window(TEXT_OPS_SHOWN);
    let base = window.iter().map(|o| o.invoke_time).min().unwrap_or(0);
    let _ = writeln!(
        s,
        "  operations around the violation ({} of {}; times in ns after {}):",
        window.len(),
        v.operations.len(),
        base
    );
    let _ = writeln!(
        s,
        "    {:<8} {:<6} {:>12} {:>12} {:<4} op",
        "id", "proc", "invoke", "complete", "end"
    );
    let positions = v.positions();
    for o in window {
        let _ = writeln!(s, "{}", op_line(o, base, &positions, v.offending));
    }
}
