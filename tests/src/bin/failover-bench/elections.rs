//! The elections after a kill, read back from the nodes' logs: the lines of each log written
//! since the kill (from the log's length at the kill, timestamps between the kill and the
//! node's recovery) that mark an election step.
//!
//! | step | kvorum (openraft 0.9 at info) | etcd 3.4 (zap JSON) |
//! |---|---|---|
//! | a follower's election timer fired | `election timeout passed` (openraft's own timer), or `pre-vote granted by a majority` (kvorum's, since the pre-vote) | `is starting a new election at term` |
//! | a vote request sent (a candidate) | `new candidate: {T<term>-N<id>…` | `became candidate at term <term>` |
//! | a vote refused: the voter's leader lease holds | `reject vote-request: leader lease has not yet expire` | `lease is not expired` |
//! | a vote refused: the candidate's log is behind the voter's | `reject vote-request: by last_log_id` | `rejected MsgVote` |
//! | elected | `a quorum granted my vote` (after `grant_by voting={T<term>…`) | `became leader at term <term>` |
//!
//! kvorum's lines do not name their group (the config group and the data group log alike):
//! a candidate is put in the group whose term moved past the candidate's during the kill, and
//! when both did, in the one whose last log index before the kill is nearer the candidate's; an
//! election won is put where the vote granted just before it was.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Where a group's Raft log stood: its term and its leader's last applied index, as far as
/// known.
#[derive(Debug, Clone, Copy, Default)]
pub struct Position {
    pub term: Option<u64>,
    pub index: Option<u64>,
}

/// Each group's position by name (`data`, `config`; etcd: `raft`).
pub type Positions = BTreeMap<String, Position>;

/// How a target's nodes write their logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// tracing's text format: an RFC 3339 timestamp, the level, the target, the message.
    Kvorum,
    /// etcd's zap logger: one JSON object a line, with `ts` and `msg`.
    Etcd,
}

/// An election step (see the module note).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    TimerFired,
    /// A candidate's term and last log index, as far as the line gives them.
    Candidate(Option<u64>, Option<u64>),
    LeaseRefusal,
    LogRefusal,
    /// kvorum: a vote granted to a candidate of this term and last log index (openraft logs
    /// it just before the quorum that elects).
    Granted(Option<u64>, Option<u64>),
    Elected(Option<u64>),
}

/// One line of etcd's JSON log.
#[derive(Deserialize)]
struct ZapLine {
    ts: String,
    msg: String,
}

/// The step a log line marks, with its time.
fn parse(format: LogFormat, line: &str) -> Option<(DateTime<Utc>, Step)> {
    let (ts, msg) = match format {
        LogFormat::Kvorum => line.split_once(' ')?,
        LogFormat::Etcd => {
            if !line.starts_with('{') {
                return None;
            }
            let z: ZapLine = serde_json::from_str(line).ok()?;
            let step = etcd_step(&z.msg)?;
            let at = DateTime::parse_from_rfc3339(&z.ts)
                .ok()?
                .with_timezone(&Utc);
            return Some((at, step));
        }
    };
    let step = kvorum_step(msg)?;
    let at = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    Some((at, step))
}

fn kvorum_step(msg: &str) -> Option<Step> {
    // openraft's own timer (before the pre-vote), or kvorum's pre-vote granted (`election.rs`).
    if msg.contains("election timeout passed") || msg.contains("pre-vote granted by a majority") {
        Some(Step::TimerFired)
    } else if let Some((_, rest)) = msg.split_once("new candidate: {T") {
        let (term, index) = candidacy(rest);
        Some(Step::Candidate(term, index))
    } else if let Some((_, rest)) = msg.split_once("grant_by voting={T") {
        let (term, index) = candidacy(rest);
        Some(Step::Granted(term, index))
    } else if msg.contains("reject vote-request: leader lease") {
        Some(Step::LeaseRefusal)
    } else if msg.contains("reject vote-request: by last_log_id") {
        Some(Step::LogRefusal)
    } else if msg.contains("a quorum granted my vote") {
        Some(Step::Elected(None))
    } else {
        None
    }
}

/// The term and last log index of openraft's candidate display, from just after its `{T`:
/// `<term>-N<id>:uncommitted@<time>, last_log_id:T<term>-N<id>-<index> progress:…}`.
fn candidacy(rest: &str) -> (Option<u64>, Option<u64>) {
    let index = rest
        .split_once("last_log_id:")
        .and_then(|(_, log)| log.split(' ').next())
        .and_then(|log| log.rsplit('-').next())
        .and_then(leading_number);
    (leading_number(rest), index)
}

fn etcd_step(msg: &str) -> Option<Step> {
    if msg.contains("is starting a new election at term") {
        Some(Step::TimerFired)
    } else if let Some((_, rest)) = msg.split_once("became candidate at term ") {
        Some(Step::Candidate(leading_number(rest), None))
    } else if msg.contains("lease is not expired") {
        Some(Step::LeaseRefusal)
    } else if msg.contains("rejected MsgVote") {
        Some(Step::LogRefusal)
    } else if let Some((_, rest)) = msg.split_once("became leader at term ") {
        Some(Step::Elected(leading_number(rest)))
    } else {
        None
    }
}

fn leading_number(s: &str) -> Option<u64> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A step seen: how long after the kill, on which node.
#[derive(Debug, Clone)]
pub struct Seen {
    pub after_ms: i64,
    pub node: String,
    /// The term (candidates and leaders, when known).
    pub term: Option<u64>,
    /// The group it belongs to, when known.
    pub group: Option<String>,
}

/// The elections between a kill and the killed node's recovery.
#[derive(Debug, Clone, Default)]
pub struct Elections {
    /// The first election timer that fired.
    pub first_timer: Option<Seen>,
    /// Every vote request sent (one per candidate and term), in time order.
    pub candidates: Vec<Seen>,
    /// Vote requests refused for the voter's leader lease.
    pub lease_refusals: usize,
    /// Vote requests refused because the candidate's log was behind the voter's.
    pub log_refusals: usize,
    /// Every election won, in time order.
    pub elected: Vec<Seen>,
    /// Each group's term before the kill and after the recovery.
    pub terms: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

/// Reads the steps from each `(node, log, offset)` written between `from` and `to`; `before`
/// and `after` are the groups' positions before the kill and after the recovery.
pub fn scan(
    format: LogFormat,
    logs: &[(String, PathBuf, u64)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    before: &Positions,
    after: &Positions,
) -> Elections {
    let mut e = Elections::default();
    for name in before.keys().chain(after.keys()) {
        let (b, a) = (before.get(name), after.get(name));
        e.terms.insert(
            name.clone(),
            (b.and_then(|p| p.term), a.and_then(|p| p.term)),
        );
    }
    let mut steps: Vec<(DateTime<Utc>, String, Step)> = Vec::new();
    for (node, path, offset) in logs {
        let Ok(mut file) = File::open(path) else {
            continue;
        };
        if file.seek(SeekFrom::Start(*offset)).is_err() {
            continue;
        }
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            if let Some((at, step)) = parse(format, &line) {
                if from <= at && at <= to {
                    steps.push((at, node.clone(), step));
                }
            }
        }
    }
    steps.sort_by_key(|(at, _, _)| *at);
    // Each node's last candidacy, or vote granted to it: (term, group).
    let mut last_candidacy: BTreeMap<String, (Option<u64>, Option<String>)> = BTreeMap::new();
    for (at, node, step) in steps {
        let seen = |term: Option<u64>, group: Option<String>| Seen {
            after_ms: (at - from).num_milliseconds(),
            node: node.clone(),
            term,
            group,
        };
        match step {
            Step::TimerFired => {
                if e.first_timer.is_none() {
                    e.first_timer = Some(seen(None, None));
                }
            }
            Step::Candidate(term, index) => {
                let group = term.and_then(|t| group_of(t, index, before, &e.terms));
                last_candidacy.insert(node.clone(), (term, group.clone()));
                e.candidates.push(seen(term, group));
            }
            Step::Granted(term, index) => {
                let group = term.and_then(|t| group_of(t, index, before, &e.terms));
                last_candidacy.insert(node.clone(), (term, group));
            }
            Step::LeaseRefusal => e.lease_refusals += 1,
            Step::LogRefusal => e.log_refusals += 1,
            Step::Elected(term) => {
                let (t, group) = match (term, last_candidacy.get(&node)) {
                    (Some(t), _) => (Some(t), group_of(t, None, before, &e.terms)),
                    (None, Some((t, g))) => (*t, g.clone()),
                    (None, None) => (None, None),
                };
                e.elected.push(seen(t, group));
            }
        }
    }
    e
}

/// The group a candidate of `term` with last log `index` belongs to (see the module note).
fn group_of(
    term: u64,
    index: Option<u64>,
    before: &Positions,
    terms: &BTreeMap<String, (Option<u64>, Option<u64>)>,
) -> Option<String> {
    let moved: Vec<&String> = terms
        .iter()
        .filter(|(_, (b, a))| b.is_some_and(|b| b < term) && a.is_some_and(|a| term <= a))
        .map(|(name, _)| name)
        .collect();
    match moved.as_slice() {
        [one] => Some((*one).clone()),
        [] => None,
        several => {
            let index = index?;
            several
                .iter()
                .filter_map(|g| Some((before.get(*g)?.index?.abs_diff(index), *g)))
                .min()
                .map(|(_, g)| g.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The lines each system writes for each step are recognised, with their time and term.
    #[test]
    fn steps_are_read_from_both_formats() {
        let k = "2026-12-07T22:46:02.205496Z  INFO openraft::engine::engine_impl: elect, new candidate: {T7-N2:uncommitted@22:46:02.205, last_log_id:T6-N1-100 progress:{}}";
        let (at, step) = parse(LogFormat::Kvorum, k).expect("a candidate line");
        assert_eq!(step, Step::Candidate(Some(7), Some(100)));
        assert_eq!(at.timestamp_subsec_micros(), 205_496);
        let k = "2026-12-07T22:46:02.2Z  INFO openraft::core::raft_core: election timeout passed, check if it is a voter for election";
        assert_eq!(
            parse(LogFormat::Kvorum, k).map(|p| p.1),
            Some(Step::TimerFired)
        );
        let k = "2026-12-07T22:46:02.2Z  INFO openraft::engine::engine_impl: reject vote-request: leader lease has not yet expire; now; ...";
        assert_eq!(
            parse(LogFormat::Kvorum, k).map(|p| p.1),
            Some(Step::LeaseRefusal)
        );
        let k = "2026-12-07T22:52:20.408667Z  INFO openraft::engine::engine_impl: reject vote-request: by last_log_id: !(req.last_log_id(Some(T4-N1-3260)) >= my_last_log_id(Some(T4-N1-3261))";
        assert_eq!(
            parse(LogFormat::Kvorum, k).map(|p| p.1),
            Some(Step::LogRefusal)
        );
        let e = r#"{"level":"info","ts":"2026-12-07T22:47:08.315Z","caller":"raft/raft.go:719","msg":"759c5cf4d6a01c89 became candidate at term 2"}"#;
        let (at, step) = parse(LogFormat::Etcd, e).expect("a candidate line");
        assert_eq!(step, Step::Candidate(Some(2), None));
        assert_eq!(at.timestamp_subsec_millis(), 315);
        let e = r#"{"level":"info","ts":"2026-12-07T22:47:08.316Z","msg":"759c5cf4d6a01c89 became leader at term 2"}"#;
        assert_eq!(
            parse(LogFormat::Etcd, e).map(|p| p.1),
            Some(Step::Elected(Some(2)))
        );
        assert_eq!(
            parse(LogFormat::Etcd, "raft2026/12/07 22:46:02 INFO: x"),
            None
        );
        assert_eq!(parse(LogFormat::Kvorum, "not a log line"), None);
    }

    // A candidate goes to the group whose term moved past its own; when both moved, to the one
    // whose last log index is nearer its own.
    #[test]
    fn candidates_are_put_in_their_group() {
        let pos = |term, index| Position {
            term: Some(term),
            index: Some(index),
        };
        let before = Positions::from([("config".into(), pos(3, 5)), ("data".into(), pos(3, 1740))]);
        let terms = BTreeMap::from([
            ("config".to_string(), (Some(3), Some(4))),
            ("data".to_string(), (Some(3), Some(4))),
        ]);
        assert_eq!(
            group_of(4, Some(1738), &before, &terms).as_deref(),
            Some("data")
        );
        assert_eq!(
            group_of(4, Some(6), &before, &terms).as_deref(),
            Some("config")
        );
        assert_eq!(group_of(4, None, &before, &terms), None);
        let terms = BTreeMap::from([
            ("config".to_string(), (Some(3), Some(3))),
            ("data".to_string(), (Some(3), Some(5))),
        ]);
        assert_eq!(group_of(5, None, &before, &terms).as_deref(), Some("data"));
        assert_eq!(group_of(6, None, &before, &terms), None);
    }
}
