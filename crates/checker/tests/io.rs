//! Specification of the file format, the recorder, the CLI entry point and
//! the reports.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvorum_checker::{
    check, parse_history, run_cli, CheckOptions, Command, Event, EventType, HistoryBuilder, OpFn,
    Outcome, ParseErrorKind, Recorder, Verdict,
};

fn parse(text: &str) -> Result<kvorum_checker::History, kvorum_checker::ParseError> {
    parse_history(Cursor::new(text.as_bytes().to_vec()))
}

/// A fresh path in the temp dir, unique per test and process.
fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvorum-checker-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const GOOD: &str = r#"{"process": 1, "type": "invoke", "f": "put", "key": "k1", "value": "v7", "time": 100}
{"process": 1, "type": "ok", "f": "put", "key": "k1", "time": 200}
{"process": 2, "type": "invoke", "f": "get", "key": "k1", "time": 300}
{"process": 2, "type": "ok", "f": "get", "key": "k1", "value": "v7", "time": 400}
{"process": 3, "type": "invoke", "f": "cas", "key": "k1", "expected": null, "value": "x", "time": 500, "extra": 1}
"#;

// ---- Parsing ----------------------------------------------------------------

#[test]
fn parses_a_valid_history() {
    // Property: events pair into operations; an op with no completion is
    // info; unknown fields are ignored.
    let h = parse(GOOD).unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h.ops[0].command, Command::Put { value: "v7".into() });
    assert_eq!(h.ops[0].outcome, Outcome::Ok);
    assert_eq!(
        (h.ops[0].invoke_time, h.ops[0].complete_time),
        (100, Some(200))
    );
    assert_eq!(h.ops[1].read.as_deref(), Some("v7"));
    assert_eq!(
        h.ops[2].command,
        Command::Cas {
            expected: None,
            value: Some("x".into())
        }
    );
    assert_eq!(h.ops[2].outcome, Outcome::Info);
    assert_eq!(h.ops[2].complete_time, None);
    assert_eq!(
        check(&h, &CheckOptions::default()).verdict,
        Verdict::Linearizable
    );
}

#[test]
fn get_ok_with_null_value_reads_absent() {
    // Property: `"value": null` on a get completion means "key absent".
    let h = parse(concat!(
        r#"{"process":1,"type":"invoke","f":"get","key":"k","time":1}"#,
        "\n",
        r#"{"process":1,"type":"ok","f":"get","key":"k","value":null,"time":2}"#,
        "\n"
    ))
    .unwrap();
    assert_eq!(h.ops[0].outcome, Outcome::Ok);
    assert_eq!(h.ops[0].read, None);
}

/// Parses `text` and returns (line, kind) of the error.
fn parse_err(text: &str) -> (usize, ParseErrorKind) {
    let e = parse(text).unwrap_err();
    (e.line, e.kind)
}

const INV1: &str = r#"{"process":1,"type":"invoke","f":"put","key":"k","value":"a","time":1}"#;

#[test]
fn bad_json_reports_its_line() {
    // Property: the first bad line is named (1-based, blank lines count).
    let (line, kind) = parse_err(&format!("{INV1}\n\n{{not json\n"));
    assert_eq!(line, 3);
    assert!(matches!(kind, ParseErrorKind::Json(_)), "{kind}");
    let (line, kind) = parse_err(r#"{"process":1,"type":"invoke","f":"get","key":"k"}"#);
    assert_eq!(line, 1);
    assert!(kind.to_string().contains("time"), "{kind}");
}

#[test]
fn unknown_type_and_function_are_rejected() {
    // Property: only the documented `type` and `f` values are accepted.
    let (line, kind) = parse_err(&format!(
        "{INV1}\n{}\n",
        r#"{"process":1,"type":"done","f":"put","key":"k","time":2}"#
    ));
    assert_eq!(
        (line, kind),
        (2, ParseErrorKind::UnknownType("done".into()))
    );
    let (line, kind) = parse_err(r#"{"process":1,"type":"invoke","f":"incr","key":"k","time":2}"#);
    assert_eq!(
        (line, kind),
        (1, ParseErrorKind::UnknownFunction("incr".into()))
    );
}

#[test]
fn completion_without_invoke_is_rejected() {
    // Property: every completion closes an open invoke of its process.
    let (line, kind) = parse_err(&format!(
        "{INV1}\n{}\n",
        r#"{"process":2,"type":"ok","f":"put","key":"k","time":2}"#
    ));
    assert_eq!(line, 2);
    assert_eq!(
        kind,
        ParseErrorKind::CompletionWithoutInvoke {
            process: 2,
            kind: EventType::Ok
        }
    );
}

#[test]
fn invoke_while_open_is_rejected() {
    // Property: a process has at most one operation open.
    let (line, kind) = parse_err(&format!("{INV1}\n{INV1}\n"));
    assert_eq!(line, 2);
    assert_eq!(
        kind,
        ParseErrorKind::InvokeWhileOpen {
            process: 1,
            open_line: 1
        }
    );
}

#[test]
fn invoke_before_previous_completion_is_rejected() {
    // Property: a process's next invoke is not earlier than its previous
    // operation's completion (file order alone is not enough).
    let text = r#"{"process": 1, "type": "invoke", "f": "put", "key": "k", "value": "a", "time": 0}
{"process": 1, "type": "ok", "f": "put", "key": "k", "time": 50}
{"process": 1, "type": "invoke", "f": "get", "key": "k", "time": 30}
"#;
    let (line, kind) = parse_err(text);
    assert_eq!(line, 3);
    assert_eq!(
        kind,
        ParseErrorKind::InvokeBeforePreviousCompletion {
            process: 1,
            time: 30,
            previous_line: 1,
            previous_complete: 50,
        }
    );
    let msg = kind.to_string();
    assert!(msg.contains("process 1") && msg.contains("line 1"), "{msg}");
    // The builder rejects it the same way.
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", Command::Delete)
        .info(1, 50)
        .invoke(1, 49, "k", Command::Get);
    assert_eq!(b.build().unwrap_err().line, 3);
}

#[test]
fn completion_must_repeat_f_and_key() {
    // Property: the completion is for the same operation as the invoke.
    let (line, kind) = parse_err(&format!(
        "{INV1}\n{}\n",
        r#"{"process":1,"type":"ok","f":"get","key":"k","value":null,"time":2}"#
    ));
    assert_eq!(line, 2);
    assert!(
        matches!(kind, ParseErrorKind::CompletionMismatch { .. }),
        "{kind}"
    );
    let (line, kind) = parse_err(&format!(
        "{INV1}\n{}\n",
        r#"{"process":1,"type":"ok","f":"put","key":"other","time":2}"#
    ));
    assert_eq!(line, 2);
    assert!(kind.to_string().contains("other"), "{kind}");
}

#[test]
fn missing_values_are_rejected() {
    // Property: put/append need a string value, cas needs expected and
    // value, a get completion needs the value read.
    let cases = [
        r#"{"process":1,"type":"invoke","f":"put","key":"k","time":1}"#,
        r#"{"process":1,"type":"invoke","f":"append","key":"k","value":null,"time":1}"#,
        r#"{"process":1,"type":"invoke","f":"cas","key":"k","value":"b","time":1}"#,
        r#"{"process":1,"type":"invoke","f":"cas","key":"k","expected":"a","time":1}"#,
    ];
    for case in cases {
        let (line, kind) = parse_err(case);
        assert_eq!(line, 1, "{case}");
        assert!(
            matches!(kind, ParseErrorKind::MissingValue { .. }),
            "{case}: {kind}"
        );
    }
    let (line, kind) = parse_err(concat!(
        r#"{"process":1,"type":"invoke","f":"get","key":"k","time":1}"#,
        "\n",
        r#"{"process":1,"type":"ok","f":"get","key":"k","time":2}"#
    ));
    assert_eq!(line, 2);
    assert!(
        matches!(kind, ParseErrorKind::MissingValue { .. }),
        "{kind}"
    );
}

#[test]
fn completion_before_invoke_is_rejected() {
    // Property: time does not run backwards within an operation.
    let (line, kind) = parse_err(&format!(
        "{INV1}\n{}\n",
        r#"{"process":1,"type":"ok","f":"put","key":"k","time":0}"#
    ));
    assert_eq!(line, 2);
    assert!(
        matches!(kind, ParseErrorKind::TimeBeforeInvoke { .. }),
        "{kind}"
    );
}

#[test]
fn invalid_utf8_is_reported_not_panicked() {
    // Property: arbitrary bytes yield an error with the line number.
    let mut bytes = format!("{INV1}\n").into_bytes();
    bytes.extend_from_slice(&[0xff, 0xfe, b'\n']);
    let e = parse_history(Cursor::new(bytes)).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(matches!(e.kind, ParseErrorKind::Io(_)));
}

#[test]
fn events_round_trip_through_json_lines() {
    // Property: what the builder writes, the parser reads back unchanged,
    // including null values and cas arguments.
    let mut b = HistoryBuilder::new();
    b.invoke(
        1,
        10,
        "a",
        Command::Put {
            value: "x\"y\n".into(),
        },
    )
    .ok(1, 20, None)
    .invoke(2, 15, "a", Command::Get)
    .ok(2, 25, None)
    .invoke(
        3,
        30,
        "b",
        Command::Cas {
            expected: None,
            value: None,
        },
    )
    .fail(3, 40)
    .invoke(1, 50, "a", Command::Append { value: "z".into() })
    .info(1, 60)
    .invoke(2, 70, "a", Command::Delete)
    .ok_deleted(2, 80, true)
    .invoke(2, 90, "a", Command::Delete);
    let mut text = Vec::new();
    b.write_jsonl(&mut text).unwrap();
    let parsed = parse_history(Cursor::new(text.clone())).unwrap();
    assert_eq!(parsed, b.build().unwrap());
    // Each line also deserializes as an Event on its own.
    let events: Vec<Event> = String::from_utf8(text)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events, b.events());
}

#[test]
fn delete_answer_is_optional_and_read_when_present() {
    // Property: a history written before the field existed still parses
    // (the delete is a blind write); `deleted` is kept on a delete's `ok`.
    let old = r#"{"process":1,"type":"invoke","f":"delete","key":"k","time":1}
{"process":1,"type":"ok","f":"delete","key":"k","time":2}
{"process":1,"type":"invoke","f":"delete","key":"k","time":3}
{"process":1,"type":"ok","f":"delete","key":"k","deleted":false,"time":4}
{"process":1,"type":"invoke","f":"put","key":"k","value":"v","time":5}
{"process":1,"type":"ok","f":"put","key":"k","deleted":true,"time":6}
"#;
    let h = parse(old).unwrap();
    assert_eq!(h.ops[0].deleted, None);
    assert_eq!(h.ops[1].deleted, Some(false));
    assert_eq!(h.ops[1].label(), "delete -> absent");
    assert_eq!(h.ops[2].deleted, None, "only a delete's answer counts");
}

#[test]
fn builder_reports_misuse_at_build() {
    // Property: the builder applies the parser's rules; `line` is the
    // 1-based event index.
    let mut b = HistoryBuilder::new();
    b.invoke(1, 0, "k", Command::Get).ok(2, 5, None);
    let e = b.build().unwrap_err();
    assert_eq!(e.line, 2);
}

// ---- Recorder ---------------------------------------------------------------

#[test]
fn recorder_writes_a_checkable_history_from_many_threads() {
    // Property: a Recorder shared by threads driving a real (mutex-guarded,
    // hence linearizable) map produces a valid, linearizable history with
    // strictly increasing timestamps.
    let path = temp_path("recorder.jsonl");
    let rec = Arc::new(Recorder::create(&path).unwrap());
    let store: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    std::thread::scope(|s| {
        for p in 0..4u64 {
            let rec = Arc::clone(&rec);
            let store = Arc::clone(&store);
            s.spawn(move || {
                for i in 0..100u64 {
                    let key = format!("k{}", i % 3);
                    if (i + p) % 2 == 0 {
                        let value = format!("p{p}-{i}");
                        rec.invoke(
                            p,
                            &key,
                            &Command::Put {
                                value: value.clone(),
                            },
                        )
                        .unwrap();
                        store.lock().unwrap().insert(key, value);
                        rec.ok(p, None).unwrap();
                    } else {
                        rec.invoke(p, &key, &Command::Get).unwrap();
                        let read = store.lock().unwrap().get(&key).cloned();
                        rec.ok(p, read.as_deref()).unwrap();
                    }
                }
            });
        }
    });
    rec.flush().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let times: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<Event>(l).unwrap().time)
        .collect();
    assert_eq!(times.len(), 800);
    assert!(
        times.windows(2).all(|w| w[0] < w[1]),
        "timestamps not strictly increasing"
    );
    let h = parse_history(Cursor::new(text.into_bytes())).unwrap();
    assert_eq!(
        check(&h, &CheckOptions::default()).verdict,
        Verdict::Linearizable
    );
}

#[test]
fn recorder_rejects_misuse_without_writing() {
    // Property: misuse is an error and leaves the file valid.
    let path = temp_path("misuse.jsonl");
    let rec = Recorder::create(&path).unwrap();
    assert!(rec.ok(1, None).is_err());
    rec.invoke(1, "k", &Command::Delete).unwrap();
    assert!(rec.invoke(1, "k", &Command::Get).is_err());
    rec.info(1).unwrap();
    drop(rec);
    let h = parse_history(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h.ops[0].outcome, Outcome::Info);
    assert_eq!(h.ops[0].command.f(), OpFn::Delete);
}

// ---- CLI and reports --------------------------------------------------------

fn write_file(name: &str, text: &str) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the CLI; returns the exit code and stdout followed by stderr.
fn cli(path: &std::path::Path, html: Option<&std::path::Path>) -> (i32, String) {
    let (code, out, err) = cli_split(path, html, false);
    (code, format!("{out}{err}"))
}

/// Runs the CLI; returns the exit code, stdout and stderr.
fn cli_split(
    path: &std::path::Path,
    html: Option<&std::path::Path>,
    json: bool,
) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_cli(
        path,
        &CheckOptions::default(),
        html,
        json,
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn stale_read_jsonl(key: &str, value: &str) -> String {
    let mut b = HistoryBuilder::new();
    b.invoke(
        1,
        0,
        key,
        Command::Put {
            value: value.into(),
        },
    )
    .ok(1, 10, None)
    .invoke(
        1,
        20,
        key,
        Command::Put {
            value: "second".into(),
        },
    )
    .ok(1, 30, None)
    .invoke(2, 40, key, Command::Get)
    .ok(2, 50, Some(value))
    .invoke(
        3,
        45,
        key,
        Command::Put {
            value: "late".into(),
        },
    )
    .info(3, 60);
    let mut out = Vec::new();
    b.write_jsonl(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn cli_exit_code_0_when_linearizable() {
    // Property: exit 0 and the per-key and overall verdicts are printed.
    let path = write_file("good.jsonl", GOOD);
    let (code, out) = cli(&path, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("key \"k1\": linearizable"), "{out}");
    assert!(out.contains("verdict: LINEARIZABLE"), "{out}");
}

#[test]
fn cli_exit_code_1_and_report_when_not_linearizable() {
    // Property: exit 1; the text names the prefix, the value after it and
    // the offending op; the HTML is written only when asked.
    let path = write_file("stale.jsonl", &stale_read_jsonl("k", "first"));
    let (code, out) = cli(&path, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("verdict: NOT LINEARIZABLE"), "{out}");
    assert!(out.contains("longest linearizable prefix: 2 of"), "{out}");
    assert!(out.contains("value after the prefix: \"second\""), "{out}");
    assert!(
        out.contains("cannot linearize: #2 process 2 get -> \"first\""),
        "{out}"
    );
    assert!(!out.contains("HTML"), "{out}");

    let html_path = temp_path("stale.html");
    let (code, out) = cli(&path, Some(&html_path));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("HTML report written"), "{out}");
    assert!(std::fs::read_to_string(&html_path)
        .unwrap()
        .contains("<svg"));
}

#[test]
fn cli_exit_code_2_on_invalid_input_names_the_line() {
    // Property: invalid input exits 2 and names the first bad line.
    // Errors go to stderr, stdout stays empty.
    let path = write_file("bad.jsonl", &format!("{INV1}\n{INV1}\n"));
    let (code, out, err) = cli_split(&path, None, false);
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");
    assert_eq!(out, "");
    let (code, out, err) = cli_split(&temp_path("does-not-exist.jsonl"), None, false);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open"), "{err}");
    assert_eq!(out, "");
}

#[test]
fn cli_exit_code_2_when_nothing_completed() {
    // Property: a history in which no operation completed proves nothing:
    // exit 2 with "nothing to check", not 0.
    for (name, text) in [
        ("empty.jsonl", String::new()),
        (
            "infos.jsonl",
            format!(
                "{INV1}\n{}\n{}\n",
                r#"{"process":1,"type":"info","f":"put","key":"k","time":9}"#,
                r#"{"process":2,"type":"invoke","f":"get","key":"k","time":10}"#
            ),
        ),
    ] {
        let path = write_file(name, &text);
        let (code, out) = cli(&path, None);
        assert_eq!(code, 2, "{name}: {out}");
        assert!(out.contains("nothing to check"), "{name}: {out}");
    }
}

#[test]
fn unwritable_html_keeps_the_verdict_exit_code() {
    // Property: the exit code is the verdict's; a failed HTML write is
    // reported but does not turn 1 (or 0) into 2.
    let bad = std::path::Path::new("/nonexistent-kvorum-dir/report.html");
    let path = write_file("stale-html.jsonl", &stale_read_jsonl("k", "first"));
    let (code, out) = cli(&path, Some(bad));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot write HTML report"), "{out}");
    let (_, stdout, stderr) = cli_split(&path, Some(bad), false);
    assert!(stderr.contains("cannot write HTML report"), "{stderr}");
    assert!(!stdout.contains("cannot write"), "{stdout}");
    let path = write_file("good-html.jsonl", GOOD);
    let (code, out) = cli(&path, Some(bad));
    assert_eq!(code, 0, "{out}");
}

#[test]
fn cli_json_prints_one_object_and_nothing_else() {
    // Property: with --json, stdout is exactly one JSON object with the
    // verdict, per-key results with timings and the counterexample.
    let path = write_file("stale-json.jsonl", &stale_read_jsonl("k", "first"));
    let (code, out, _) = cli_split(&path, None, true);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["verdict"], "not_linearizable", "{v}");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["keys"][0]["key"], "k");
    assert_eq!(v["keys"][0]["verdict"], "not_linearizable");
    for field in ["elapsed_ms", "search_ms", "explain_ms", "states"] {
        assert!(v["keys"][0][field].is_number(), "{field}: {v}");
    }
    let cx = &v["counterexample"];
    assert_eq!(cx["key"], "k");
    assert_eq!(cx["offending"]["id"], 2, "{cx}");
    assert_eq!(cx["offending"]["read"], "first");
    assert_eq!(cx["prefix"], serde_json::json!([0, 1]));
    assert_eq!(cx["value_after_prefix"], "second");
    assert_eq!(cx["operations"].as_array().map(Vec::len), Some(4));

    let good = write_file("good-json.jsonl", GOOD);
    let (code, out, _) = cli_split(&good, None, true);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["verdict"], "linearizable");
    assert!(v["counterexample"].is_null());

    // Inputs that cannot be checked: still one object, the message on stderr.
    let empty = write_file("empty-json.jsonl", "");
    let (code, out, err) = cli_split(&empty, None, true);
    assert_eq!(code, 2);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["verdict"], "nothing_to_check");
    assert!(err.contains("nothing to check"), "{err}");
}

#[test]
fn cli_exit_code_2_when_unknown() {
    // Property: an undecided check exits 2.
    let mut b = HistoryBuilder::new();
    for p in 0..20u64 {
        b.invoke(
            p,
            0,
            "k",
            Command::Put {
                value: format!("w{p}"),
            },
        );
    }
    for p in 0..20u64 {
        b.ok(p, 1000, None);
    }
    // Each read alone is possible; together they are not, and only an
    // exhaustive search over the 20 writes can tell.
    b.invoke(99, 2000, "k", Command::Get)
        .ok(99, 2010, Some("w0"));
    b.invoke(99, 2020, "k", Command::Get)
        .ok(99, 2030, Some("w1"));
    let mut text = Vec::new();
    b.write_jsonl(&mut text).unwrap();
    let path = write_file("hard.jsonl", &String::from_utf8(text).unwrap());
    let opts = CheckOptions {
        max_states: 2_000,
        ..CheckOptions::default()
    };
    let mut out = Vec::new();
    assert_eq!(
        run_cli(&path, &opts, None, false, &mut out, &mut Vec::new()),
        2
    );
    assert!(String::from_utf8(out).unwrap().contains("UNKNOWN"));
}

#[test]
fn html_report_is_self_contained_and_marks_the_violation() {
    // Property: one page, no external assets; lanes per process, the
    // prefix numbered, the offending op in red, a legend, info ops drawn
    // to the edge.
    let path = write_file("stale2.jsonl", &stale_read_jsonl("k", "first"));
    let h = parse_history(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let html = check(&h, &CheckOptions::default()).to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    for external in ["src=", "<link", "@import", "href="] {
        assert!(!html.contains(external), "external asset marker {external}");
    }
    for needle in [
        "process 1",
        "process 2",
        "process 3",
        "class=\"op offending\"",
        "class=\"op prefix\"",
        "class=\"legend\"",
        "cannot be linearized",
        "class=\"info\"",
        ">1</text>",
        ">2</text>",
        "<style>",
        "<script>",
    ] {
        assert!(html.contains(needle), "missing {needle}");
    }
}

#[test]
fn html_report_escapes_user_strings() {
    // Property: keys and values cannot inject markup.
    let path = write_file(
        "xss.jsonl",
        &stale_read_jsonl("<script>alert(1)</script>", "\"'&<img onerror=x>"),
    );
    let h = parse_history(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let report = check(&h, &CheckOptions::default());
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let html = report.to_html();
    assert!(!html.contains("<script>alert"), "unescaped key");
    assert!(!html.contains("<img"), "unescaped value");
    assert!(html.contains("&lt;img onerror=x&gt;"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
}

#[test]
fn reports_serialize_to_json() {
    // Property: the report is plain data (for `--json` style output).
    let path = write_file("stale3.jsonl", &stale_read_jsonl("k", "first"));
    let h = parse_history(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let json = serde_json::to_string(&check(&h, &CheckOptions::default())).unwrap();
    assert!(json.contains("\"NotLinearizable\""));
    assert!(json.contains("\"offending\":2"));
}
