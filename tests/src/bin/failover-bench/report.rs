//! The report: one line per kill as it happens, then the figures, p50 / p99 / max (HDR
//! histogram, nearest rank, to the millisecond) and a `FAILOVER-BENCH key=value ...` line for
//! scripts; the same as JSON in `summary.json`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::elections::{Elections, Seen};
use crate::load::Load;
use crate::Leader;

/// Candidates listed on a kill's line; the rest are counted.
const MAX_LISTED: usize = 6;

/// One kill and what followed it.
pub struct Kill {
    pub leader: Leader,
    /// When it was SIGKILLed (and reaped).
    pub killed_at: DateTime<Utc>,
    /// From the kill to the first acknowledged write invoked after it; `None` past the
    /// deadline.
    pub failover: Option<Duration>,
    /// Requests that failed meanwhile.
    pub failed: u64,
    /// Those failures by kind, most frequent first.
    pub errors: Vec<(String, u64)>,
    /// From the restart to the node back and caught up.
    pub recovery: Duration,
    pub elections: Elections,
}

impl Kill {
    /// The kill's report line (and its elections' line).
    pub fn line(&self, n: usize, of: usize) -> String {
        let failover = match self.failover {
            Some(d) => format!("writes back after {} ms", d.as_millis()),
            None => format!(
                "NO WRITE ACKNOWLEDGED within {:?}",
                crate::FAILOVER_DEADLINE
            ),
        };
        let errors: Vec<String> = self
            .errors
            .iter()
            .take(3)
            .map(|(kind, count)| format!("{kind} ×{count}"))
            .collect();
        let failed = if self.failed == 0 {
            "no request failed".to_string()
        } else {
            format!("{} requests failed: {}", self.failed, errors.join(", "))
        };
        format!(
            "kill {n}/{of}: {} (leads {}) SIGKILLed at {}; {failover} ({failed}); back and caught \
             up {:.1} s after its restart\n  elections: {}",
            self.leader.name,
            self.leader.leads,
            self.killed_at.format("%H:%M:%S%.3f"),
            self.recovery.as_secs_f64(),
            elections_line(&self.elections)
        )
    }
}

fn at(seen: &Seen) -> String {
    let term = match (seen.term, &seen.group) {
        (Some(t), Some(g)) => format!(", {g} term {t}"),
        (Some(t), None) => format!(", term {t}"),
        (None, Some(g)) => format!(", {g}"),
        (None, None) => String::new(),
    };
    format!(
        "+{:.2} s ({}{term})",
        seen.after_ms as f64 / 1000.0,
        seen.node
    )
}

fn elections_line(e: &Elections) -> String {
    let mut parts = Vec::new();
    match &e.first_timer {
        Some(s) => parts.push(format!("first election timer fired {}", at(s))),
        None => parts.push("no election timer fired".into()),
    }
    if e.candidates.is_empty() {
        parts.push("no vote request".into());
    } else {
        let sent: Vec<String> = e.candidates.iter().take(MAX_LISTED).map(at).collect();
        let more = e.candidates.len().saturating_sub(MAX_LISTED);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        parts.push(format!("vote requests {}{more}", sent.join(", ")));
    }
    parts.push(format!(
        "votes refused: {} for the leader lease, {} for a shorter log",
        e.lease_refusals, e.log_refusals
    ));
    if !e.elected.is_empty() {
        let won: Vec<String> = e.elected.iter().map(at).collect();
        parts.push(format!("elected {}", won.join(", ")));
    }
    let terms: Vec<String> = e
        .terms
        .iter()
        .map(|(g, (b, a))| {
            let t = |t: &Option<u64>| t.map_or("?".to_string(), |t| t.to_string());
            format!("{g} {}→{}", t(b), t(a))
        })
        .collect();
    parts.push(format!("terms {}", terms.join(", ")));
    parts.join("; ")
}

/// The percentiles of some kills' failover times.
#[derive(Serialize)]
struct Figures {
    /// What these kills have in common (`all`, or what the killed node led).
    of: String,
    kills: usize,
    /// Kills with no acknowledged write within the deadline.
    timeouts: usize,
    p50_ms: u64,
    p99_ms: u64,
    max_ms: u64,
}

impl Figures {
    /// The figures of `failovers` (milliseconds; `None`: a timeout).
    fn of(of: &str, failovers: &[Option<u64>]) -> Figures {
        let mut h =
            Histogram::<u64>::new_with_bounds(1, 3_600_000, 4).expect("valid histogram bounds");
        for ms in failovers.iter().flatten() {
            h.saturating_record((*ms).max(1));
        }
        Figures {
            of: of.to_string(),
            kills: failovers.len(),
            timeouts: failovers.iter().filter(|m| m.is_none()).count(),
            p50_ms: h.value_at_quantile(0.5),
            p99_ms: h.value_at_quantile(0.99),
            max_ms: h.max(),
        }
    }

    fn line(&self) -> String {
        let timeouts = if self.timeouts > 0 {
            format!(
                ", {} kills with no write within the deadline",
                self.timeouts
            )
        } else {
            String::new()
        };
        format!(
            "{} kills, p50 {} ms, p99 {} ms, max {} ms{timeouts}",
            self.kills, self.p50_ms, self.p99_ms, self.max_ms
        )
    }
}

/// The run's summary.
#[derive(Serialize)]
pub struct Report {
    mode: String,
    system: String,
    seed: u64,
    #[serde(flatten)]
    all: Figures,
    /// Each kill's failover in milliseconds, in order (`null`: a timeout).
    failover_ms: Vec<Option<u64>>,
    /// The figures by what the killed node led (when that varied).
    by_leads: Vec<Figures>,
    /// Each kill: from the kill to the first vote request in the logs, in milliseconds, by
    /// group (`?`: not known).
    first_vote_request_ms: Vec<BTreeMap<String, i64>>,
    /// Each kill: vote requests refused for the leader lease.
    lease_refusals: Vec<usize>,
    /// Each kill: vote requests refused for a candidate's shorter log.
    log_refusals: Vec<usize>,
    /// Acknowledged puts over the run, and their latency (p50, p99, max) in milliseconds.
    puts: u64,
    put_latency_ms: [f64; 3],
    /// Failed requests over the run (refused, timed out, connection lost).
    failed_requests: u64,
    run_secs: u64,
    /// The machine's load averages (1, 5, 15 minutes) at the start and at the end of the run.
    load_average: [String; 2],
}

/// The machine's load averages over 1, 5 and 15 minutes (`/proc/loadavg`), or "?".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

impl Report {
    /// The summary of `kills`.
    pub fn new(
        mode: &str,
        system: String,
        seed: u64,
        kills: Vec<Kill>,
        load: &Load,
        run: Duration,
        load_average: [String; 2],
    ) -> Report {
        let latency = load.latency();
        let ms = |us: u64| us as f64 / 1000.0;
        let failover_ms: Vec<Option<u64>> = kills
            .iter()
            .map(|k| k.failover.map(|d| d.as_millis() as u64))
            .collect();
        let mut leads: BTreeMap<&str, Vec<Option<u64>>> = BTreeMap::new();
        for (k, ms) in kills.iter().zip(&failover_ms) {
            leads.entry(&k.leader.leads).or_default().push(*ms);
        }
        let by_leads = if leads.len() > 1 {
            leads
                .iter()
                .map(|(l, ms)| Figures::of(&format!("killed node led {l}"), ms))
                .collect()
        } else {
            Vec::new()
        };
        Report {
            mode: mode.to_string(),
            system,
            seed,
            all: Figures::of("all", &failover_ms),
            by_leads,
            failover_ms,
            first_vote_request_ms: kills
                .iter()
                .map(|k| {
                    let mut first = BTreeMap::new();
                    for c in &k.elections.candidates {
                        let group = c.group.clone().unwrap_or_else(|| "?".into());
                        first.entry(group).or_insert(c.after_ms);
                    }
                    first
                })
                .collect(),
            lease_refusals: kills.iter().map(|k| k.elections.lease_refusals).collect(),
            log_refusals: kills.iter().map(|k| k.elections.log_refusals).collect(),
            puts: load.acks(),
            put_latency_ms: [
                ms(latency.value_at_quantile(0.5)),
                ms(latency.value_at_quantile(0.99)),
                ms(latency.max()),
            ],
            failed_requests: load.failures(),
            run_secs: run.as_secs(),
            load_average,
        }
    }

    /// Prints the figures, the percentiles and the `FAILOVER-BENCH` line.
    pub fn print(&self) {
        let list = |v: &[Option<u64>]| {
            v.iter()
                .map(|m| m.map_or("timeout".to_string(), |m| m.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut sorted: Vec<Option<u64>> = self.failover_ms.clone();
        sorted.sort_by_key(|m| m.unwrap_or(u64::MAX));
        println!(
            "failover-bench: {}: {} kills in {} s (load average {} at the start, {} at the end); \
             failover ms in order: {}",
            self.mode,
            self.all.kills,
            self.run_secs,
            self.load_average[0],
            self.load_average[1],
            list(&self.failover_ms)
        );
        println!("failover-bench: sorted: {}", list(&sorted));
        let [p50, p99, max] = self.put_latency_ms;
        println!(
            "failover-bench: {} puts acknowledged (latency p50 {p50:.1} ms, p99 {p99:.1} ms, max \
             {max:.1} ms), {} requests failed or timed out",
            self.puts, self.failed_requests
        );
        for f in &self.by_leads {
            println!("failover-bench: {}: {}", f.of, f.line());
        }
        println!("failover-bench: {}: {}", self.mode, self.all.line());
        println!(
            "FAILOVER-BENCH mode={} kills={} timeouts={} p50_ms={} p99_ms={} max_ms={} failover_ms={} seed={}",
            self.mode.replace(' ', "/"),
            self.all.kills,
            self.all.timeouts,
            self.all.p50_ms,
            self.all.p99_ms,
            self.all.max_ms,
            list(&self.failover_ms),
            self.seed
        );
    }

    /// The summary as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the summary serializes")
    }
}
