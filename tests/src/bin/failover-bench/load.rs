//! The write load and the failover probe.
//!
//! Each writer puts keys of its own in a loop, one request at a time, over plain HTTP (kvorum:
//! `PUT /v1/keys/{key}` with the wire's `PutBody`; etcd: `POST /v3/kv/put` on its JSON gateway,
//! key and value in base64), to a random live node; a failed request is sent again at once to
//! another live node, and after a failure at every live node in a row the writer pauses briefly.
//! The bench marks a node not live just before it kills it and live again once it is back.
//!
//! The probe: [`Load::arm`] sets the kill's instant; the first acknowledged write whose request
//! was *invoked* at or after it is the end of the failover ([`Load::first_ack`]). Writes invoked
//! before the kill never count, even when acknowledged after it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hdrhistogram::Histogram;
use kvorum_wire::{ErrorBody, PutBody, WriteReply};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Keys per writer: it cycles over `failover-w{writer}-{0..KEYS_PER_WRITER}`.
const KEYS_PER_WRITER: u64 = 1000;
/// Bytes of every value written.
const VALUE_BYTES: usize = 100;

/// The HTTP API a writer speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// kvorum's client API: `PUT /v1/keys/{key}`.
    Kvorum,
    /// etcd's v3 JSON gateway: `POST /v3/kv/put`.
    Etcd,
}

/// The body of etcd's `POST /v3/kv/put`: key and value in base64.
#[derive(Serialize)]
struct EtcdPut {
    key: String,
    value: String,
}

/// The nodes a writer sends puts to, by index, and how.
pub struct Endpoints {
    api: Api,
    addrs: Vec<SocketAddr>,
}

impl Endpoints {
    /// `api` at `addrs` (one client address per node, in node order).
    pub fn new(api: Api, addrs: Vec<SocketAddr>) -> Endpoints {
        Endpoints { api, addrs }
    }

    /// The number of nodes.
    pub fn count(&self) -> usize {
        self.addrs.len()
    }

    /// Puts `key` = `value` at node `i`; `Err` holds a short kind of failure for the report
    /// (`HTTP 503 no_leader`, `timeout`, `connect`).
    async fn put(
        &self,
        http: &reqwest::Client,
        i: usize,
        key: &str,
        value: &str,
    ) -> Result<(), String> {
        let addr = self.addrs[i];
        let request = match self.api {
            Api::Kvorum => http
                .put(format!("http://{addr}/v1/keys/{key}"))
                .json(&PutBody::new(value, None)),
            Api::Etcd => http
                .post(format!("http://{addr}/v3/kv/put"))
                .json(&EtcdPut {
                    key: B64.encode(key),
                    value: B64.encode(value),
                }),
        };
        let response = request.send().await.map_err(|e| failure_kind(&e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| failure_kind(&e))?;
        if !status.is_success() {
            let code = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| format!(" {}", e.code))
                .unwrap_or_default();
            return Err(format!("HTTP {}{code}", status.as_u16()));
        }
        if self.api == Api::Kvorum {
            serde_json::from_slice::<WriteReply>(&body)
                .map_err(|_| format!("HTTP {} with an unreadable reply", status.as_u16()))?;
        }
        Ok(())
    }
}

/// A transport failure in a word.
fn failure_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "transport".into()
    }
}

/// What the writers share with the bench.
pub struct Load {
    /// Per node: whether writers may send to it.
    live: Vec<AtomicBool>,
    /// Acknowledged writes since the start.
    acks: AtomicU64,
    /// Failed requests since the start.
    failures: AtomicU64,
    /// Set when the writers are to stop.
    stop: AtomicBool,
    /// Latency of every acknowledged put, in microseconds.
    latency: Mutex<Histogram<u64>>,
    /// The kill being measured.
    probe: Mutex<Probe>,
}

/// The kill being measured: its instant, the first acknowledgement of a write invoked after it,
/// and the failures seen since, by kind.
#[derive(Default)]
struct Probe {
    killed_at: Option<Instant>,
    first_ack: Option<Instant>,
    errors: BTreeMap<String, u64>,
}

impl Load {
    /// The shared state of a load on `nodes` nodes, all live.
    pub fn new(nodes: usize) -> Load {
        Load {
            live: (0..nodes).map(|_| AtomicBool::new(true)).collect(),
            acks: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            probe: Mutex::new(Probe::default()),
        }
    }

    /// Lets writers send to node `i`, or not.
    pub fn set_live(&self, i: usize, live: bool) {
        self.live[i].store(live, Ordering::SeqCst);
    }

    /// Starts measuring the kill made at `killed_at`.
    pub fn arm(&self, killed_at: Instant) {
        *self.probe() = Probe {
            killed_at: Some(killed_at),
            ..Probe::default()
        };
    }

    /// Stops measuring; returns the failures seen since [`Load::arm`], by kind, most frequent
    /// first.
    pub fn disarm(&self) -> Vec<(String, u64)> {
        let probe = std::mem::take(&mut *self.probe());
        let mut errors: Vec<_> = probe.errors.into_iter().collect();
        errors.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        errors
    }

    /// When the first write invoked after the armed kill was acknowledged, if one was.
    pub fn first_ack(&self) -> Option<Instant> {
        self.probe().first_ack
    }

    /// Acknowledged writes since the start.
    pub fn acks(&self) -> u64 {
        self.acks.load(Ordering::SeqCst)
    }

    /// Failed requests since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::SeqCst)
    }

    /// Asks the writers to stop after their request in flight.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    fn probe(&self) -> MutexGuard<'_, Probe> {
        // A writer never panics while holding the lock; recover the data if one did.
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latency of the acknowledged puts so far, in microseconds.
    pub fn latency(&self) -> Histogram<u64> {
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn acked(&self, invoked: Instant, acked: Instant) {
        self.acks.fetch_add(1, Ordering::SeqCst);
        let micros = acked.duration_since(invoked).as_micros();
        self.latency
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .saturating_record(u64::try_from(micros).unwrap_or(u64::MAX));
        let mut probe = self.probe();
        if probe.first_ack.is_none() && probe.killed_at.is_some_and(|k| invoked >= k) {
            probe.first_ack = Some(acked);
        }
    }

    fn failed(&self, kind: String) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        let mut probe = self.probe();
        if probe.killed_at.is_some() {
            *probe.errors.entry(kind).or_default() += 1;
        }
    }

    /// The live nodes but `except`; all live nodes if that leaves none.
    fn live_nodes(&self, except: Option<usize>) -> Vec<usize> {
        let live: Vec<usize> = (0..self.live.len())
            .filter(|i| self.live[*i].load(Ordering::SeqCst))
            .collect();
        let others: Vec<usize> = live
            .iter()
            .copied()
            .filter(|i| Some(*i) != except)
            .collect();
        if others.is_empty() {
            live
        } else {
            others
        }
    }
}

/// Starts `writers` writers (see the module note); each gives up on a request after
/// `request_timeout`, and pauses `retry_pause` after failing at every live node in a row.
pub fn start(
    load: Arc<Load>,
    endpoints: Arc<Endpoints>,
    writers: usize,
    seed: u64,
    request_timeout: Duration,
    retry_pause: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::builder()
        .timeout(request_timeout)
        .build()
        .expect("a client with a timeout builds");
    (0..writers)
        .map(|w| {
            let (load, endpoints, http) = (load.clone(), endpoints.clone(), http.clone());
            let rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            tokio::spawn(writer(w, load, endpoints, http, rng, retry_pause))
        })
        .collect()
}

/// One writer's loop.
async fn writer(
    w: usize,
    load: Arc<Load>,
    endpoints: Arc<Endpoints>,
    http: reqwest::Client,
    mut rng: StdRng,
    retry_pause: Duration,
) {
    let value = "x".repeat(VALUE_BYTES);
    let mut n: u64 = 0;
    let mut failed_at: Option<usize> = None;
    let mut failed_in_a_row = 0;
    while !load.stop.load(Ordering::SeqCst) {
        let nodes = load.live_nodes(failed_at);
        if nodes.is_empty() {
            tokio::time::sleep(retry_pause).await;
            continue;
        }
        let i = nodes[rng.gen_range(0..nodes.len())];
        // A failed put is sent again with the same key; the next key only after an ack.
        let key = format!("failover-w{w}-{}", n % KEYS_PER_WRITER);
        let invoked = Instant::now();
        match endpoints.put(&http, i, &key, &value).await {
            Ok(()) => {
                load.acked(invoked, Instant::now());
                n += 1;
                failed_at = None;
                failed_in_a_row = 0;
            }
            Err(kind) => {
                load.failed(kind);
                failed_at = Some(i);
                failed_in_a_row += 1;
                if failed_in_a_row >= load.live_nodes(None).len() {
                    failed_in_a_row = 0;
                    tokio::time::sleep(retry_pause).await;
                }
            }
        }
    }
}
