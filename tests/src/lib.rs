//! Test harness: clusters of real `kvnode` processes on distinct loopback addresses, each with a
//! fresh data directory, stopped by PID when the cluster is dropped.
//!
//! The binary is `kvnode-test`, this package's build of the kvnode program (see
//! [`kvnode_bin!`]), so `cargo test` builds it with everything else. It alone carries the planted
//! faults (feature `test-faults` of `kvorum-node`), read from `KVORUM_FAULT_*` variables once at
//! its start and all off unless a cluster sets them ([`ClusterOptions::with_env`]); the shipped
//! `kvnode` has none.
//!
//! [`Cluster::start`] returns only when the cluster serves: every node answers
//! `GET /v1/cluster/status`, and some node's status knows the metadata leader and its health
//! view, and shows a leader on a running node for every data group of the initial map. Tests then
//! wait on the typed status ([`ClusterStatus`]) with [`Cluster::wait_for_status`] (a predicate
//! and a deadline, never a bare sleep).
//!
//! When a test panics, the cluster's folder (node logs, data) is kept and its path printed.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kvorum_client::{Client, ClientError, ClientOptions};
use kvorum_router::{ClusterMap, NodeLifecycle};
pub use kvorum_wire::{ClusterStatus, GroupStatus, NodeStatus, TaskStatus};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;
use serde_json::Value;

/// Longest wait for a fresh cluster to serve (every group led, metadata leader known).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Time one status probe of one node may take; a paused node costs this much per poll.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between polls of a condition.
const POLL: Duration = Duration::from_millis(100);

/// Serializes the tests of one test binary (each binary links its own copy): each cluster wants
/// the machine's 2 cores for itself, and partitions use the same loopback addresses. A test holds
/// the guard of `ONE_AT_A_TIME.lock().await` for its whole run.
pub static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The seed of a test's random choices: `KVORUM_TEST_SEED` or a fresh one, printed with `test`'s
/// name so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("KVORUM_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    eprintln!("{test}: seed={seed} (replay: KVORUM_TEST_SEED={seed})");
    seed
}

/// The path of the kvnode binary built for the tests; expands in the integration test, where
/// cargo provides it.
#[macro_export]
macro_rules! kvnode_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_kvnode-test"))
    };
}

/// The path of the lazyfs binary built for the tests (see [`mount`]).
#[macro_export]
macro_rules! lazyfs_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_lazyfs-test"))
    };
}

mod keys;
pub mod mount;
mod process;
mod status;

pub use keys::{group_of_key, keys_by_group, spread_keys};
use process::free_port;
pub use process::{ExtraNode, Node};
pub use status::{assert_map_is, brief, id_list, node_state, status_group, status_node};

/// Settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The kvnode binary: `kvnode_bin!()`.
    pub bin: PathBuf,
    pub nodes: usize,
    pub k: usize,
    /// Inject the stale-reads fault (reads skip read index).
    pub stale_reads: bool,
    /// Extra environment for every node, e.g. `KVORUM_DEAD_AFTER_MS`.
    pub env: Vec<(String, String)>,
    /// The lazyfs binary (`lazyfs_bin!()`): when set, each node's data directory is a lazyfs
    /// mount of its own (see [`mount::LazyMount`]), so [`Cluster::power_cut`] can drop what the
    /// node did not fsync.
    pub lazyfs: Option<PathBuf>,
    /// When set, every node runs with this open-file limit, soft and hard (`ulimit -n` in a
    /// shell that then execs the node, so the PID is the node's), as a small machine would.
    pub open_files: Option<u64>,
    /// The last byte of the first node's loopback address: node `i` (0-based) listens on
    /// 127.0.0.(`first_host` + i). The suite's clusters use 1; a run beside the suite (the
    /// failover bench) takes others, so that the partition tests' nftables rules, which drop
    /// packets between the suite's addresses, never touch it.
    pub first_host: u8,
}

impl ClusterOptions {
    /// `nodes` nodes of `bin` with K=`k`: no faults, no extra environment, no lazyfs.
    pub fn new(bin: PathBuf, nodes: usize, k: usize) -> Self {
        ClusterOptions {
            bin,
            nodes,
            k,
            stale_reads: false,
            env: Vec::new(),
            lazyfs: None,
            open_files: None,
            first_host: 1,
        }
    }

    /// `self` with the nodes on 127.0.0.`first_host`, 127.0.0.`first_host + 1`, …
    pub fn with_first_host(mut self, first_host: u8) -> Self {
        self.first_host = first_host;
        self
    }

    /// `self` with every node limited to `n` open files (soft and hard `RLIMIT_NOFILE`).
    pub fn with_open_files(mut self, n: u64) -> Self {
        self.open_files = Some(n);
        self
    }

    /// `self` with every node's data directory on a lazyfs mount run by `bin`.
    pub fn with_lazyfs(mut self, bin: PathBuf) -> Self {
        self.lazyfs = Some(bin);
        self
    }

    /// `self` with `key=value` in every node's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Number of data groups of the initial map: floor(N/K).
    pub fn groups(&self) -> usize {
        self.nodes / self.k
    }
}

/// A cluster of real kvnode processes on 127.0.0.{1..N} (see [`ClusterOptions::first_host`]).
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// Per node, its lazyfs mount (with [`ClusterOptions::with_lazyfs`]).
    pub mounts: Vec<mount::LazyMount>,
    pub dir: Option<tempfile::TempDir>,
    view: String,
    opts: ClusterOptions,
    /// One client per node for status probes: short timeout, no retries, no failover.
    probes: Vec<Client>,
    http: reqwest::Client,
}

/// A client of `addr` only: smart routing off (the node serves or forwards every request), no
/// failover, retries of definite failures for `retry_for`.
pub fn direct_client(addr: SocketAddr, request_timeout: Duration, retry_for: Duration) -> Client {
    Client::new(
        vec![addr.to_string()],
        ClientOptions {
            request_timeout,
            retry_for,
            local_address: None,
        },
    )
    .expect("client")
    .with_smart_routing(false)
}

impl Cluster {
    /// Starts `opts.nodes` nodes with fresh data directories and waits until the cluster serves
    /// (see the module note); panics after [`START_TIMEOUT`], or at once if a node exits.
    pub async fn start(opts: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("kvorum-test-")
            .tempdir()
            .expect("tempdir");
        let mut nodes = Vec::new();
        let mut mounts = Vec::new();
        for i in 0..opts.nodes {
            let ip = format!("127.0.0.{}", usize::from(opts.first_host) + i);
            let port = free_port(&ip);
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
            let data_dir = dir.path().join(format!("node{}", i + 1));
            if let Some(bin) = &opts.lazyfs {
                mounts.push(mount::LazyMount::start(bin, dir.path(), &data_dir, i + 1));
            }
            let log = dir.path().join(format!("node{}.log", i + 1));
            nodes.push(Node {
                id: i as u64 + 1,
                addr,
                data_dir,
                log,
                child: None,
            });
        }
        let view = nodes
            .iter()
            .map(|n| n.addr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let probes = nodes
            .iter()
            .map(|n| direct_client(n.addr, PROBE_TIMEOUT, Duration::ZERO))
            .collect();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        let mut c = Cluster {
            nodes,
            mounts,
            dir: Some(dir),
            view,
            opts,
            probes,
            http,
        };
        for i in 0..c.nodes.len() {
            c.spawn(i);
        }
        c.wait_started().await;
        c
    }

    /// Waits until every node answers status and one status shows the cluster ready.
    async fn wait_started(&mut self) {
        let started = Instant::now();
        let deadline = started + START_TIMEOUT;
        let mut answered = vec![false; self.nodes.len()];
        let mut last: Option<ClusterStatus> = None;
        loop {
            for i in 0..self.nodes.len() {
                if let Some(status) = self.reap(i) {
                    let log = self.nodes[i].log_text();
                    let tail: Vec<&str> = log.lines().rev().take(20).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    panic!(
                        "node {} exited during startup ({status}); logs in {}; its last lines:\n{}",
                        i + 1,
                        self.path().display(),
                        tail.join("\n")
                    );
                }
            }
            let mut ready = false;
            for (i, seen) in answered.iter_mut().enumerate() {
                if let Ok(s) = self.status_of(i).await {
                    *seen = true;
                    ready |= self.shows_ready(&s);
                    last = Some(s);
                }
            }
            if ready && answered.iter().all(|a| *a) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster of {} nodes (K={}) not ready within {START_TIMEOUT:?}: nodes answering \
                 status {:?}; want health_known, a metadata leader and a leader for each of {} \
                 groups; last status: {}; logs in {}",
                self.nodes.len(),
                self.opts.k,
                answered,
                self.opts.groups(),
                brief(last.as_ref()),
                self.path().display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether `s` shows a serving cluster: health known, a running metadata leader, and a
    /// running leader for each of the initial map's floor(N/K) data groups.
    pub fn shows_ready(&self, s: &ClusterStatus) -> bool {
        let running = |v: Option<u64>| v.is_some_and(|id| self.is_running_id(id));
        s.health_known
            && running(s.metadata_leader)
            && s.groups.len() == self.opts.groups()
            && s.groups.iter().all(|g| running(g.leader))
    }

    /// Waits until some running node's status shows the cluster ready (see [`Self::shows_ready`]).
    pub async fn wait_ready(&self, within: Duration) -> ClusterStatus {
        self.wait_for_status(within, "the cluster to be ready", |s| self.shows_ready(s))
            .await
    }

    /// Waits until the cluster is ready and its map has settled: the metadata leader records
    /// each node's incarnation from the node's first heartbeats, a new epoch each time, so a test
    /// that compares epochs (a refusal changes nothing) starts from here. Returns the status.
    pub async fn wait_settled(&self, within: Duration) -> ClusterStatus {
        let deadline = Instant::now() + within;
        let client = self.client();
        self.wait_until(within, "every node's incarnation in the map", || async {
            client.map().await.is_ok_and(|(map, _)| {
                map.nodes
                    .values()
                    .all(|n| n.state != NodeLifecycle::Active || n.incarnation.is_some())
            })
        })
        .await;
        let (map, _) = client.map().await.expect("the map, just read");
        let left = deadline.saturating_duration_since(Instant::now());
        self.wait_until(left, "every running node at the settled epoch", || async {
            let mut all = true;
            for i in self.running() {
                all &= self
                    .status_of(i)
                    .await
                    .is_ok_and(|s| s.epoch >= map.epoch && self.shows_ready(&s));
            }
            all
        })
        .await;
        self.status()
            .await
            .expect("a running node answers its status")
    }

    /// The cluster's folder (node logs and data).
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .expect("dir present until drop")
    }

    /// Node addresses in view order.
    pub fn view(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.to_string()).collect()
    }

    /// K of the cluster.
    pub fn k(&self) -> usize {
        self.opts.k
    }

    /// The deterministic initial map every node computes from the view and K.
    pub fn initial_map(&self) -> ClusterMap {
        ClusterMap::initial(&self.view(), self.opts.k).expect("valid view and K")
    }

    /// The 0-based index of node `id`.
    pub fn index_of(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn is_running_id(&self, id: u64) -> bool {
        self.nodes.iter().any(|n| n.id == id && n.is_running())
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_running())
            .collect()
    }

    fn spawn(&mut self, i: usize) {
        self.spawn_with(i, &[]);
    }

    /// Starts node `i` with `extra` added to its environment (after the cluster's own).
    fn spawn_with(&mut self, i: usize, extra: &[(&str, &str)]) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} already running", node.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open log");
        let mut cmd = match self.opts.open_files {
            None => Command::new(&self.opts.bin),
            Some(n) => {
                // `exec` keeps the shell's PID, so the node is still stopped by this PID.
                let mut sh = Command::new("/bin/sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\""))
                    .arg(&self.opts.bin);
                sh
            }
        };
        cmd.env("IPPORT", node.addr.to_string())
            .env("VIEW", &self.view)
            .env("K", self.opts.k.to_string())
            .env("KVORUM_DATA_DIR", &node.data_dir)
            .env("KVORUM_CLUSTER_SECRET", "test-secret")
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        if self.opts.stale_reads {
            cmd.env("KVORUM_FAULT_STALE_READS", "1");
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        node.child = Some(cmd.spawn().expect("spawn kvnode"));
    }

    /// If node `i`'s process has exited, reaps it and returns its exit status.
    fn reap(&mut self, i: usize) -> Option<ExitStatus> {
        let child = self.nodes[i].child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.nodes[i].child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Waits up to `within` for node `i`'s process to exit by itself; returns its exit status,
    /// or `None` if it is still running at the deadline (or was not running).
    pub async fn wait_for_exit(&mut self, i: usize, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            self.nodes[i].child.as_ref()?;
            if let Some(status) = self.reap(i) {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGKILL node `i` (0-based) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Cuts the power of nodes `idx` at once: SIGKILLs each (and reaps it), then drops what its
    /// lazyfs mount holds unsynced, so the data directory keeps only what was fsynced. The nodes
    /// stay down; [`Cluster::restart`] brings them back on what survived. Needs
    /// [`ClusterOptions::with_lazyfs`].
    pub fn power_cut(&mut self, idx: &[usize]) {
        assert!(
            !self.mounts.is_empty(),
            "power_cut needs ClusterOptions::with_lazyfs"
        );
        for &i in idx {
            self.pause(i, false);
            self.kill(i);
        }
        for &i in idx {
            let reply = self.mounts[i].cut();
            eprintln!("power cut of node {}: {reply}", i + 1);
        }
    }

    /// SIGTERM node `i` and wait up to 20 s for it to exit (then SIGKILL).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP / SIGCONT node `i`.
    pub fn pause(&self, i: usize, paused: bool) {
        if let Some(pid) = self.nodes[i].pid() {
            let sig = if paused {
                Signal::SIGSTOP
            } else {
                Signal::SIGCONT
            };
            let _ = kill(Pid::from_raw(pid as i32), sig);
        }
    }

    /// Starts node `i` again with its data directory.
    pub fn restart(&mut self, i: usize) {
        self.spawn(i);
    }

    /// Starts node `i` again with its data directory and `extra` in its environment only (a
    /// fault injected into one node).
    pub fn restart_with_env(&mut self, i: usize, extra: &[(&str, &str)]) {
        self.spawn_with(i, extra);
    }

    /// A client of every node, which fails over between them.
    pub fn client(&self) -> Client {
        self.client_of(&(0..self.nodes.len()).collect::<Vec<_>>())
    }

    /// A client of the given nodes only (0-based): smart routing off, so requests go to these
    /// nodes, which serve or forward them.
    pub fn client_of(&self, idx: &[usize]) -> Client {
        let eps = idx
            .iter()
            .map(|i| self.nodes[*i].addr.to_string())
            .collect();
        Client::new(
            eps,
            ClientOptions {
                request_timeout: Duration::from_secs(10),
                retry_for: Duration::from_secs(20),
                local_address: None,
            },
        )
        .expect("client")
        .with_smart_routing(false)
    }

    /// The status as node `i` answers it (one try, short timeout).
    pub async fn status_of(&self, i: usize) -> Result<ClusterStatus, ClientError> {
        self.probes[i].status().await
    }

    /// The status from the first running node that answers.
    pub async fn status(&self) -> Option<ClusterStatus> {
        for i in self.running() {
            if let Ok(s) = self.status_of(i).await {
                return Some(s);
            }
        }
        None
    }

    /// `GET path` on node `i`, answered 200 with JSON.
    pub async fn get_json(&self, i: usize, path: &str) -> Result<Value, String> {
        let url = format!("http://{}{path}", self.nodes[i].addr);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let code = resp.status();
        let body = resp.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !code.is_success() {
            return Err(format!("GET {url}: {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("GET {url}: not JSON ({e}): {body}"))
    }

    /// Waits until the status of some running node (asked in order) satisfies `pred`, and
    /// returns that status; panics with `what`, the last status seen and the logs folder at the
    /// deadline.
    pub async fn wait_for_status<F>(
        &self,
        within: Duration,
        what: &str,
        mut pred: F,
    ) -> ClusterStatus
    where
        F: FnMut(&ClusterStatus) -> bool,
    {
        let deadline = Instant::now() + within;
        let mut last: Option<ClusterStatus> = None;
        loop {
            for i in self.running() {
                if let Ok(s) = self.status_of(i).await {
                    if pred(&s) {
                        return s;
                    }
                    last = Some(s);
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; last status: {}; logs in {}",
                brief(last.as_ref()),
                self.path().display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The leader of data group `group` as reported by a running node, if it is running.
    pub async fn group_leader(&self, group: u64) -> Option<u64> {
        self.reported(|s| status_group(s, group).and_then(|g| g.leader))
            .await
    }

    /// The metadata leader (leader of the config group) as reported by a running node, if it is
    /// running.
    pub async fn metadata_leader(&self) -> Option<u64> {
        self.reported(|s| s.metadata_leader).await
    }

    /// The first node id `pick` finds in a running node's status that names a running node.
    async fn reported(&self, pick: impl Fn(&ClusterStatus) -> Option<u64>) -> Option<u64> {
        for i in self.running() {
            if let Ok(s) = self.status_of(i).await {
                if let Some(l) = pick(&s) {
                    if self.is_running_id(l) {
                        return Some(l);
                    }
                }
            }
        }
        None
    }

    /// The leader (node id) of data group 1 as reported by the running nodes.
    pub async fn leader(&self) -> Option<u64> {
        self.group_leader(1).await
    }

    /// Waits until a running node reports a running leader of group 1; panics at the deadline.
    pub async fn wait_for_leader(&self, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {within:?}; logs in {}",
                self.path().display()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until `cond` holds; panics with `what` at the deadline.
    pub async fn wait_until<F, Fut>(&self, within: Duration, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        while !cond().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {within:?} waiting for {what}; logs in {}",
                self.path().display()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // Resume paused nodes so SIGKILL is delivered promptly, then kill by PID.
            self.pause(i, false);
            self.kill(i);
        }
        // Unmount before the folder is removed (or kept).
        for m in &mut self.mounts {
            m.stop();
        }
        let failed = std::thread::panicking();
        if failed || std::env::var_os("KVORUM_TEST_KEEP").is_some() {
            if let Some(d) = self.dir.take() {
                let p = d.keep();
                let why = if failed {
                    "test failed"
                } else {
                    "KVORUM_TEST_KEEP"
                };
                eprintln!("{why}: cluster logs and data kept in {}", p.display());
            }
        }
    }
}

pub mod jepsen;
pub mod nemesis;
pub mod planted;
pub mod workload;
