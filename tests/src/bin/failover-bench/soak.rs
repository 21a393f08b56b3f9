//! The soak (`--soak-secs`): no kill, only the write load for a long time, optionally beside a
//! disk-heavy neighbour (`--neighbour`), to show that leaders do not change without a fault and
//! that the nodes' memory stays flat (issue 20, "No election without a fault").
//!
//! Every `--sample-secs` it records a [`Sample`]: writes acknowledged so far, each group's term
//! (a term rises once per election, won or not; kvorum's pre-vote rounds do not raise it) and
//! each node's resident memory (`VmRSS` in `/proc/PID/status`). The report gives the elections
//! per group (last term minus first), the memory at the first sample after warm-up, at the end
//! and its maximum, and the put latency.
//!
//! The neighbour ([`Neighbour`]) is a thread of this program that rewrites a 512 MiB file in the
//! run's folder in 1 MiB writes with an `fdatasync` every 16 MiB, as fast as the disk takes them:
//! the nodes' WAL fsyncs queue behind its flushes, as behind a busy database or a build on a
//! shared disk.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::load::Load;
use crate::Target;

/// Size of the neighbour's file; it wraps to the start when it reaches it.
const NEIGHBOUR_FILE_BYTES: u64 = 512 << 20;
/// Bytes of one neighbour write.
const NEIGHBOUR_WRITE_BYTES: usize = 1 << 20;
/// Bytes the neighbour writes between two `fdatasync` calls.
const NEIGHBOUR_SYNC_BYTES: u64 = 16 << 20;
/// Samples taken before this much of the run are warm-up: the memory figure starts after it.
const WARM_UP: Duration = Duration::from_secs(120);

/// One look at the cluster during the soak.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the soak began.
    pub at_secs: u64,
    /// Writes acknowledged since the load began.
    pub puts: u64,
    /// Each group's term, where known.
    pub terms: std::collections::BTreeMap<String, u64>,
    /// Each node's resident memory in MiB (`None`: not running or unreadable).
    pub rss_mib: Vec<Option<u64>>,
    /// MiB the neighbour wrote since the soak began.
    pub neighbour_mib: u64,
}

/// A disk-heavy neighbour: a thread that rewrites a file with frequent `fdatasync` until dropped.
pub struct Neighbour {
    stop: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Neighbour {
    /// Starts the neighbour on a file in `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Neighbour> {
        let path = dir.join("neighbour.bin");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("create {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let (s, w) = (stop.clone(), written.clone());
        let thread = std::thread::spawn(move || {
            // Not all zeroes, so no layer below can skip the writes.
            let chunk: Vec<u8> = (0..NEIGHBOUR_WRITE_BYTES).map(|i| i as u8).collect();
            let mut offset = 0u64;
            let mut since_sync = 0u64;
            while !s.load(Ordering::Relaxed) {
                if offset >= NEIGHBOUR_FILE_BYTES {
                    offset = 0;
                    if file.seek(SeekFrom::Start(0)).is_err() {
                        break;
                    }
                }
                if file.write_all(&chunk).is_err() {
                    break;
                }
                offset += chunk.len() as u64;
                since_sync += chunk.len() as u64;
                w.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if since_sync >= NEIGHBOUR_SYNC_BYTES {
                    since_sync = 0;
                    if file.sync_data().is_err() {
                        break;
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        });
        Ok(Neighbour {
            stop,
            written,
            thread: Some(thread),
        })
    }

    /// MiB written so far.
    pub fn written_mib(&self) -> u64 {
        self.written.load(Ordering::Relaxed) >> 20
    }
}

impl Drop for Neighbour {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A process's resident memory in MiB, from `/proc/PID/status`.
fn rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Runs the load for `length`, sampling every `every`; prints each sample as it is taken.
/// Fails when no write is acknowledged between two samples.
pub async fn run<T: Target>(
    target: &T,
    load: &Load,
    length: Duration,
    every: Duration,
    neighbour: Option<&Neighbour>,
) -> anyhow::Result<Vec<Sample>> {
    let started = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    loop {
        let terms = target
            .positions()
            .await
            .into_iter()
            .filter_map(|(group, p)| Some((group, p.term?)))
            .collect();
        let sample = Sample {
            at_secs: started.elapsed().as_secs(),
            puts: load.acks(),
            terms,
            rss_mib: target
                .pids()
                .into_iter()
                .map(|p| p.and_then(rss_mib))
                .collect(),
            neighbour_mib: neighbour.map_or(0, Neighbour::written_mib),
        };
        println!("soak: {}", line(&sample));
        if let Some(last) = samples.last() {
            if sample.puts == last.puts {
                anyhow::bail!(
                    "no write acknowledged between {} s and {} s of the soak",
                    last.at_secs,
                    sample.at_secs
                );
            }
        }
        samples.push(sample);
        if started.elapsed() >= length {
            return Ok(samples);
        }
        tokio::time::sleep(every.min(length.saturating_sub(started.elapsed()))).await;
    }
}

/// A sample as one line.
fn line(s: &Sample) -> String {
    let terms: Vec<String> = s.terms.iter().map(|(g, t)| format!("{g} {t}")).collect();
    let rss: Vec<String> = s
        .rss_mib
        .iter()
        .map(|r| r.map_or("-".into(), |r| r.to_string()))
        .collect();
    format!(
        "{:>5} s: {} puts; terms {}; RSS MiB {}; neighbour {} MiB",
        s.at_secs,
        s.puts,
        terms.join(", "),
        rss.join("/"),
        s.neighbour_mib
    )
}

/// The soak's outcome, as printed and saved.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Elections per group over the run: its last term minus its first.
    pub elections: std::collections::BTreeMap<String, u64>,
    /// Per node: resident MiB at the first sample after warm-up, at the end, and the maximum
    /// after warm-up.
    pub rss_mib: Vec<[Option<u64>; 3]>,
    /// The neighbour's write rate in MiB/s (0 without one).
    pub neighbour_mib_per_sec: u64,
    pub samples: Vec<Sample>,
}

impl Summary {
    /// The summary of `samples`.
    pub fn of(samples: Vec<Sample>) -> Summary {
        let mut elections = std::collections::BTreeMap::new();
        if let (Some(first), Some(last)) = (samples.first(), samples.last()) {
            for (group, t) in &last.terms {
                if let Some(t0) = first.terms.get(group) {
                    elections.insert(group.clone(), t.saturating_sub(*t0));
                }
            }
        }
        let warm: Vec<&Sample> = samples
            .iter()
            .filter(|s| Duration::from_secs(s.at_secs) >= WARM_UP)
            .collect();
        let nodes = samples.first().map_or(0, |s| s.rss_mib.len());
        let rss_mib = (0..nodes)
            .map(|i| {
                let at = |s: Option<&&Sample>| s.and_then(|s| s.rss_mib[i]);
                let max = warm.iter().filter_map(|s| s.rss_mib[i]).max();
                [at(warm.first()), at(warm.last()), max]
            })
            .collect();
        let neighbour_mib_per_sec = samples
            .last()
            .filter(|s| s.at_secs > 0)
            .map_or(0, |s| s.neighbour_mib / s.at_secs);
        Summary {
            elections,
            rss_mib,
            neighbour_mib_per_sec,
            samples,
        }
    }

    /// Prints the summary and a `SOAK` line for scripts.
    pub fn print(&self) {
        let elections: Vec<String> = self
            .elections
            .iter()
            .map(|(g, n)| format!("{g} {n}"))
            .collect();
        println!("soak: elections: {}", elections.join(", "));
        let show = |m: Option<u64>| m.map_or("-".into(), |m| m.to_string());
        for (i, [first, last, max]) in self.rss_mib.iter().enumerate() {
            println!(
                "soak: node {} RSS after warm-up {} MiB, at the end {} MiB, max {} MiB",
                i + 1,
                show(*first),
                show(*last),
                show(*max)
            );
        }
        println!(
            "SOAK elections={} neighbour_mib_per_sec={} rss_end_mib={}",
            self.elections.values().sum::<u64>(),
            self.neighbour_mib_per_sec,
            self.rss_mib
                .iter()
                .map(|[_, last, _]| show(*last))
                .collect::<Vec<_>>()
                .join("/")
        );
    }
}
