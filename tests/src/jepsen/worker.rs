//! The client workers: each a process of the history doing random get/put/delete/cas/append on
//! the run's keys through a node present, every operation recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvorum_checker::{Command as Op, Recorder};
use kvorum_client::{ClientError, Condition};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::members::Members;
use super::setup::Run;

/// The running workers of a run.
pub(super) struct Workers {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts `opts.clients` workers, each seeded from the run's seed: even workers with smart
/// routing off (the node forwards), odd ones with it.
pub(super) fn start_workers(run: &Run) -> Workers {
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..run.opts.clients {
        let ctx = Worker {
            process: w as u64,
            rng: StdRng::seed_from_u64(run.opts.seed.wrapping_add(1 + w as u64)),
            // Even workers exercise forwarding, odd ones smart routing.
            smart: w % 2 == 1,
            members: run.members.clone(),
            recorder: run.recorder.clone(),
            keys: run.keys.clone(),
            next_process: run.next_process.clone(),
            seen: HashMap::new(),
            n: 0,
        };
        let stop = stop.clone();
        workers.push(tokio::spawn(ctx.run(stop)));
    }
    Workers {
        stop,
        handles: workers,
    }
}

impl Workers {
    /// Tells every worker to stop after its current operation and waits for them all.
    pub(super) async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.handles {
            let _ = w.await;
        }
    }
}

/// One client process of the workload.
struct Worker {
    process: u64,
    rng: StdRng,
    /// Whether this worker routes by the cluster map (else the node it asks serves or forwards).
    smart: bool,
    members: Arc<Members>,
    recorder: Arc<Recorder>,
    keys: Vec<String>,
    next_process: Arc<AtomicU64>,
    /// Last value and version this worker read per key (`None`: absent), to make cas succeed
    /// sometimes.
    seen: HashMap<String, Option<(String, u64)>>,
    n: u64,
}

/// How an operation ended, for the history.
enum End {
    /// What a get read, and the version the node returned (a write's new version, the version
    /// of the value a get read; none for a delete or an absent key).
    Ok(Option<String>, Option<u64>),
    /// A delete's `ok`, with the node's answer: whether the key existed.
    Deleted(bool),
    Fail,
    Info,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let key = self.keys[self.rng.gen_range(0..self.keys.len())].clone();
            let Some(ep) = self.members.pick(&mut self.rng) else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let client = if self.smart { &ep.smart } else { &ep.plain };
            self.n += 1;
            // Unique tokens ending in ',', so a value built by appends lists its writes (see
            // `lost_acks`).
            let fresh = format!("{}.{},", self.process, self.n);
            let (mut by_version, mut expected_version) = (false, None);
            let op = match self.rng.gen_range(0..100) {
                0..=39 => Op::Get,
                40..=59 => Op::Put { value: fresh },
                60..=69 => Op::Delete,
                70..=84 => {
                    let seen = match self.seen.get(&key) {
                        Some(v) if self.rng.gen_bool(0.7) => v.clone(),
                        _ => None,
                    };
                    // Half by version: the write of that version is the only one that made the
                    // value (every value is unique), so the recorded expected value is exact.
                    by_version = seen.is_some() && self.rng.gen_bool(0.5);
                    expected_version = seen.as_ref().map(|(_, v)| *v);
                    Op::Cas {
                        expected: seen.map(|(v, _)| v),
                        value: Some(fresh),
                    }
                }
                _ => Op::Append {
                    value: format!("{fresh},"),
                },
            };
            if self.recorder.invoke(self.process, &key, &op).is_err() {
                return;
            }
            let end = match &op {
                Op::Get => match client.get(&key, false).await {
                    Ok(v) => End::Ok(Some(v.value), Some(v.version)),
                    Err(ClientError::NotFound) => End::Ok(None, None),
                    // A read that failed had no effect, whatever the reason.
                    Err(_) => End::Fail,
                },
                Op::Put { value } => write_end(client.put(&key, value, None).await.map(Some)),
                // With the node's answer (whether the key existed), which the checker checks.
                Op::Delete => match client.delete(&key, None).await {
                    Ok(existed) => End::Deleted(existed),
                    Err(e) => write_end(Err(e)),
                },
                Op::Append { value } => write_end(client.append(&key, value).await.map(Some)),
                Op::Cas { expected, value } => {
                    let expect = match (expected, expected_version) {
                        (Some(_), Some(v)) if by_version => Condition::Version(v),
                        (Some(v), _) => Condition::Value(Some(v.clone())),
                        (None, _) => Condition::Version(0),
                    };
                    let new = value.clone().unwrap_or_default();
                    match client.put(&key, &new, Some(expect)).await {
                        Ok(v) => End::Ok(None, Some(v)),
                        // For cas, `fail` asserts the current value differed: only a failed
                        // condition means that. Other definite errors did nothing, which `info`
                        // ("may never have happened") also allows.
                        Err(ClientError::ConditionFailed { .. }) => End::Fail,
                        Err(_) => End::Info,
                    }
                }
            };
            let recorded = match &end {
                End::Ok(read, version) => {
                    if let Op::Get = op {
                        self.seen.insert(key.clone(), read.clone().zip(*version));
                    }
                    match version {
                        Some(v) => self
                            .recorder
                            .ok_versioned(self.process, read.as_deref(), *v),
                        None => self.recorder.ok(self.process, read.as_deref()),
                    }
                }
                End::Deleted(existed) => self.recorder.ok_deleted(self.process, *existed),
                End::Fail => self.recorder.fail(self.process),
                End::Info => self.recorder.info(self.process),
            };
            if recorded.is_err() {
                return;
            }
            if let End::Info = end {
                // The operation may still take effect: this process can never invoke again.
                self.process = self.next_process.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_end(r: Result<Option<u64>, ClientError>) -> End {
    match r {
        Ok(version) => End::Ok(None, version),
        Err(e) if e.is_definite() => End::Fail,
        Err(_) => End::Info,
    }
}
