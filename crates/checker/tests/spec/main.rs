//! Specification of the checker's verdicts on hand-made histories.
//!
//! Histories are written in a small notation, one operation per string:
//! `"<process> <invoke>..<complete> [@key] <op> [fail|info]"`, where
//! `<complete>` may be `?` (never completed) and `<op>` is one of
//! `put V`, `append V`, `delete`, `get -> V`, `get -> nil`, `cas E N`
//! (`nil` = absent). The key defaults to `k`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use kvorum_checker::{
    check, Cause, CheckOptions, Command, Event, EventType, History, HistoryBuilder, KeyVerdict,
    Report, Verdict,
};

mod anomalies;
mod bounds;
mod delete_answer;
mod model;
mod outcomes;
mod versions;

fn val(s: &str) -> Option<String> {
    (s != "nil").then(|| s.to_string())
}

/// Builds a history from the notation above.
fn hist(spec: &[&str]) -> History {
    let mut timed: Vec<(u64, u8, usize, Event)> = Vec::new();
    for (seq, line) in spec.iter().enumerate() {
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let process: u64 = words.remove(0).parse().unwrap();
        let (inv, ret) = words.remove(0).split_once("..").unwrap();
        let inv: u64 = inv.parse().unwrap();
        let ret: Option<u64> = (ret != "?").then(|| ret.parse().unwrap());
        let key = if words[0].starts_with('@') {
            words.remove(0)[1..].to_string()
        } else {
            "k".to_string()
        };
        let kind = match words.last() {
            Some(&"fail") => {
                words.pop();
                EventType::Fail
            }
            Some(&"info") => {
                words.pop();
                EventType::Info
            }
            _ => EventType::Ok,
        };
        let (command, read) = match words.as_slice() {
            ["put", v] => (
                Command::Put {
                    value: v.to_string(),
                },
                None,
            ),
            ["append", v] => (
                Command::Append {
                    value: v.to_string(),
                },
                None,
            ),
            ["delete"] => (Command::Delete, None),
            ["get", "->", v] => (Command::Get, val(v)),
            ["get"] => (Command::Get, None),
            ["cas", e, n] => (
                Command::Cas {
                    expected: val(e),
                    value: val(n),
                },
                None,
            ),
            other => panic!("bad op spec {other:?}"),
        };
        timed.push((inv, 1, seq, command.invoke_event(process, &key, inv)));
        if let Some(t) = ret {
            let mut e = command.invoke_event(process, &key, t);
            e.kind = kind;
            e.expected = None;
            e.value = if command == Command::Get { read } else { None };
            // Completions sort before invokes at the same instant so a
            // process may start its next op when the previous one ends.
            timed.push((t, 0, seq, e));
        }
    }
    timed.sort_by_key(|(t, order, seq, _)| (*t, *order, *seq));
    let mut b = HistoryBuilder::new();
    for (_, _, _, e) in timed {
        b.event(e);
    }
    b.build().unwrap()
}

fn run(spec: &[&str]) -> Report {
    check(&hist(spec), &CheckOptions::default())
}

#[track_caller]
fn assert_linearizable(spec: &[&str]) {
    let r = run(spec);
    assert_eq!(r.verdict, Verdict::Linearizable, "{}", r.to_text());
}

#[track_caller]
fn assert_violation(spec: &[&str]) -> Report {
    let r = run(spec);
    assert_eq!(r.verdict, Verdict::NotLinearizable, "{}", r.to_text());
    assert_eq!(r.exit_code(), 1);
    r
}

// ---- Histories built with HistoryBuilder (versions, delete's answer) ---------

fn put(value: &str) -> Command {
    Command::Put {
        value: value.into(),
    }
}

#[track_caller]
fn verdict_of(b: &HistoryBuilder) -> Report {
    check(&b.build().unwrap(), &CheckOptions::default())
}
