//! Jepsen-style runs: concurrent clients against a real cluster under a nemesis, every operation
//! recorded, the history judged by the linearizability checker.
//!
//! Steps of a run: (1) start the cluster in a fresh folder; (2) start the workers — each a
//! process in the history, doing random get/put/delete/cas/append on a small key set through
//! random nodes (even workers with smart routing off, so the node forwards; odd workers with
//! the client's smart routing, straight to the key's group); a process whose operation ended
//! `info` is retired and replaced by a new process id, as Jepsen does; (3) the nemesis alternates
//! quiet periods and faults on a seeded schedule; (4) after the run every fault heals, and a
//! final linearizable read of every key is recorded; (5) the checker judges the history; the
//! folder keeps history, nemesis timeline, node logs and the report (text and HTML).
//!
//! The default cluster is 6 nodes with K=3: two data groups (nodes 1–3 and 4–6), no spare, so
//! no repair runs during a test (a kill lasts one fault period, far below the dead timeout).
//! The key set is spread over both groups by the slot hash and the initial map, and a run
//! asserts that every group owns some of its keys. Kill and pause hit one node at a time, so
//! every group keeps a majority alive; a partition may cut a client's node off a group's leader,
//! which makes operations unavailable, never wrong.
//!
//! With the membership nemesis ([`Nemesis::Membership`]) the run also changes the cluster's
//! view while it runs (see `membership_nemesis`): the workers pick from the nodes present (a node
//! leaves their list when its removal starts, a new one enters it when its add is done), kill and
//! pause skip nodes a change holds, and a partition is cut over the nodes present. A scenario
//! ([`run_with`]) can drive its own faults next to the workers (`tests/view_change_faults.rs`).
//!
//! A run prints its seed; `KVORUM_JEPSEN_SEED` replays the same schedule of operations and faults
//! (timings still vary).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_checker::{
    CheckOptions, Command as Op, History, Outcome as OpOutcome, Recorder, Report, Verdict,
};
use kvorum_client::{Client, ClientError, ClientOptions, Condition, TaskProgress, TaskState};
use kvorum_router::{ClusterMap, ViewChange};
use kvorum_wire::{NodeRole, NodeState};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::nemesis::{connected, random_halves, Nemesis, PartitionShape, Partitioner};
use crate::{group_of_key, spread_keys, Cluster, ClusterOptions, ExtraNode};

/// Address the workers connect from; no partition rule mentions it.
const CLIENT_IP: &str = "127.0.1.1";

/// Default longest time a view change of the membership nemesis may take (a change of these
/// small clusters moves at most a few thousand slots of a few keys each).
pub const CHANGE_DEADLINE: Duration = Duration::from_secs(60);

/// Applied entries between snapshots in Jepsen runs (`KVORUM_SNAPSHOT_EVERY`; the node's default
/// is 20,000): a short run builds snapshots every second or so, so snapshot build and log purge
/// happen under the faults.
pub const SNAPSHOT_EVERY: u64 = 100;

/// Floor of a run that proves something: every key has at least this many `get`s completed
/// `ok`. The short runs reach 145+ per key (6 keys, 10 clients, 30 s; kill-all the least), the
/// floor leaves room for slower machines; below it the run fails as vacuous.
pub const MIN_OK_READS_PER_KEY: usize = 30;

/// Like [`MIN_OK_READS_PER_KEY`], for writes (put, append, delete, cas) completed `ok`.
pub const MIN_OK_WRITES_PER_KEY: usize = 30;

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct JepsenOptions {
    pub name: String,
    pub seed: u64,
    pub nodes: usize,
    pub k: usize,
    pub duration: Duration,
    pub clients: usize,
    pub keys: usize,
    pub nemeses: Vec<Nemesis>,
    /// The kvnode binary: `kvnode_bin!()`.
    pub bin: PathBuf,
    /// Inject the stale-reads fault.
    pub stale_reads: bool,
    /// Shortest fault; each fault lasts a seeded random time in `fault_period..=fault_max`.
    pub fault_period: Duration,
    /// Longest fault (not below `fault_period`).
    pub fault_max: Duration,
    /// Quiet time before each fault (and before each change of the membership nemesis).
    pub quiet: Duration,
    /// `KVORUM_SNAPSHOT_EVERY` of every node (`None`: the node's default).
    pub snapshot_every: Option<u64>,
    /// The lazyfs binary (`lazyfs_bin!()`): every node's data directory on a lazyfs mount, which
    /// [`Nemesis::PowerLoss`] needs.
    pub lazyfs: Option<PathBuf>,
    /// Extra environment for every node (for example shorter failure-detection timeouts).
    pub env: Vec<(String, String)>,
    /// 0-based indexes of the nodes the nemesis may hit; `None`: all.
    pub targets: Option<Vec<usize>>,
    /// The run's keys, instead of `keys` keys chosen by the run.
    pub chosen_keys: Option<Vec<String>>,
    /// Longest a view change of the membership nemesis may take; one still running then fails
    /// the run.
    pub change_deadline: Duration,
}

impl JepsenOptions {
    /// A short run of `nemeses` on 6 nodes with K=3 (two data groups), 10 clients on 6 keys,
    /// 30 s of 2 s quiet and 5–7 s faults, snapshots every [`SNAPSHOT_EVERY`] entries;
    /// `KVORUM_JEPSEN_LONG=1` makes it 5 minutes.
    pub fn short(bin: PathBuf, name: &str, nemeses: &[Nemesis]) -> JepsenOptions {
        let long = std::env::var("KVORUM_JEPSEN_LONG").is_ok_and(|v| v == "1");
        JepsenOptions {
            name: name.to_string(),
            seed: seed_from_env(),
            nodes: 6,
            k: 3,
            duration: Duration::from_secs(if long { 300 } else { 30 }),
            clients: 10,
            keys: 6,
            nemeses: nemeses.to_vec(),
            bin,
            stale_reads: false,
            fault_period: Duration::from_secs(5),
            fault_max: Duration::from_secs(7),
            quiet: Duration::from_secs(2),
            snapshot_every: Some(SNAPSHOT_EVERY),
            lazyfs: None,
            env: Vec::new(),
            targets: None,
            chosen_keys: None,
            change_deadline: CHANGE_DEADLINE,
        }
    }
}

/// The seed from `KVORUM_JEPSEN_SEED`, or a fresh one.
pub fn seed_from_env() -> u64 {
    std::env::var("KVORUM_JEPSEN_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen())
}

/// What a run found.
pub struct Outcome {
    pub dir: PathBuf,
    pub report: Report,
    /// Operations invoked (whatever their outcome).
    pub ops: usize,
    /// Per key, the operations that completed `ok` (final reads included).
    pub per_key: BTreeMap<String, KeyOps>,
    /// Keys whose final read never succeeded.
    pub final_reads_failed: Vec<String>,
    /// Acknowledged writes no final read shows although nothing could have overwritten them
    /// (see [`lost_acks`]), described.
    pub lost_acks: Vec<String>,
    pub faults: usize,
    /// Total time faults were in force (from each fault's start to its heal).
    pub fault_time: Duration,
    /// "built snapshot" / "installed snapshot" lines in the node logs.
    pub snapshots_built: usize,
    pub snapshots_installed: usize,
    /// Nodes that stopped because a replica hit a fatal (storage) error: one entry per
    /// "replica stopped on a fatal error" line in the node logs, `file: line`.
    pub fatal_stops: Vec<String>,
    /// The cluster status when the run ended (every group had a leader again).
    pub final_status: crate::ClusterStatus,
    /// What the membership nemesis did (all zero without it).
    pub membership: MembershipStats,
    /// The scenario's summary (see [`run_with`]).
    pub scenario: Option<String>,
}

/// Operations of one key that completed `ok`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyOps {
    pub reads: usize,
    pub writes: usize,
}

impl Outcome {
    pub fn linearizable(&self) -> bool {
        matches!(self.report.verdict, Verdict::Linearizable)
    }

    /// Why the run proves too little to pass, if it does: a key below
    /// [`MIN_OK_READS_PER_KEY`] / [`MIN_OK_WRITES_PER_KEY`], or a final read that failed.
    pub fn vacuous(&self) -> Option<String> {
        vacuous(&self.per_key, &self.final_reads_failed)
    }
}

/// Why a run with these `ok` counts and failed final reads proves too little (see
/// [`Outcome::vacuous`]).
pub fn vacuous(
    per_key: &BTreeMap<String, KeyOps>,
    final_reads_failed: &[String],
) -> Option<String> {
    {
        let thin: Vec<String> = per_key
            .iter()
            .filter(|(_, c)| c.reads < MIN_OK_READS_PER_KEY || c.writes < MIN_OK_WRITES_PER_KEY)
            .map(|(k, c)| format!("{k}: {} ok reads, {} ok writes", c.reads, c.writes))
            .collect();
        if !thin.is_empty() {
            return Some(format!(
                "keys below the floor of {MIN_OK_READS_PER_KEY} ok reads and \
                 {MIN_OK_WRITES_PER_KEY} ok writes: {thin:?}"
            ));
        }
        if !final_reads_failed.is_empty() {
            return Some(format!("final reads failed for {final_reads_failed:?}"));
        }
        None
    }
}

/// Per key of `history`, the operations that completed `ok`: reads (`get`) and writes.
pub fn ok_counts(history: &History) -> BTreeMap<String, KeyOps> {
    let mut per_key: BTreeMap<String, KeyOps> = BTreeMap::new();
    for op in &history.ops {
        if op.outcome != OpOutcome::Ok {
            continue;
        }
        let c = per_key.entry(op.key.clone()).or_default();
        if matches!(op.command, Op::Get) {
            c.reads += 1;
        } else {
            c.writes += 1;
        }
    }
    per_key
}

/// Acknowledged writes whose effect the final read of their key (the operation `final_reads`
/// names, by key) does not show, where that is well defined: every value the workers write is a
/// unique token `P.N,`, so a final value is a list of tokens — the put or cas that set it, then
/// the appends after it. An acknowledged put or cas `w` must be the first token and an
/// acknowledged append one of them, unless some other write may have overwritten it: a put,
/// delete or cas not recorded `fail` that was not completed `ok` before `w` was invoked (it may
/// be linearized after `w`; one recorded `info` may take effect any time after its invocation,
/// however long after its client gave up). Returns a description of each lost write.
pub fn lost_acks(history: &History, final_reads: &BTreeMap<String, usize>) -> Vec<String> {
    let mut lost = Vec::new();
    for (key, &f) in final_reads {
        let Some(fin) = history.ops.get(f) else {
            continue;
        };
        let tokens: Vec<&str> = fin
            .read
            .as_deref()
            .unwrap_or("")
            .split(',')
            .filter(|t| !t.is_empty())
            .collect();
        let ops: Vec<_> = history.ops.iter().filter(|o| &o.key == key).collect();
        for w in &ops {
            if w.outcome != OpOutcome::Ok {
                continue;
            }
            let (token, whole) = match &w.command {
                Op::Put { value } => (value.trim_end_matches(','), true),
                Op::Cas {
                    value: Some(value), ..
                } => (value.trim_end_matches(','), true),
                Op::Append { value } => (value.trim_end_matches(','), false),
                _ => continue,
            };
            let overwritable = ops.iter().any(|o| {
                o.id != w.id
                    && o.outcome != OpOutcome::Fail
                    && matches!(o.command, Op::Put { .. } | Op::Delete | Op::Cas { .. })
                    // An unknown outcome may take effect at any time after its invocation.
                    && (o.outcome == OpOutcome::Info
                        || o.complete_time.is_none_or(|c| c > w.invoke_time))
            });
            if overwritable {
                continue;
            }
            let shown = if whole {
                tokens.first() == Some(&token)
            } else {
                tokens.contains(&token)
            };
            if !shown {
                lost.push(format!(
                    "{key}: #{} {} acknowledged, final read #{} {}",
                    w.id,
                    w.label(),
                    fin.id,
                    fin.label()
                ));
            }
        }
    }
    lost
}

fn runs_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KVORUM_JEPSEN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("jepsen"))
        .unwrap_or_else(|| PathBuf::from("jepsen"))
}

/// A nemesis event log, with times relative to the run's start.
struct Timeline {
    out: Mutex<std::fs::File>,
    start: Instant,
}

impl Timeline {
    fn log(&self, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut f = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{t:9.3}s {what}");
    }
}

/// A node the workers may use: its id, address, and a plain and a smart client of it.
#[derive(Clone)]
pub struct Endpoint {
    pub id: u64,
    pub addr: SocketAddr,
    plain: Arc<Client>,
    smart: Arc<Client>,
}

impl Endpoint {
    fn new(id: u64, addr: SocketAddr) -> Endpoint {
        let client = |smart: bool| {
            Arc::new(
                Client::new(
                    vec![addr.to_string()],
                    ClientOptions {
                        request_timeout: Duration::from_secs(3),
                        retry_for: Duration::ZERO,
                        local_address: Some(client_ip()),
                    },
                )
                .expect("client")
                .with_smart_routing(smart),
            )
        };
        Endpoint {
            id,
            addr,
            plain: client(false),
            smart: client(true),
        }
    }
}

/// The nodes of the cluster as a run goes: the ones the workers use (a node leaves this list
/// when its removal starts, and a new node enters it once its add is done), the processes
/// started to join, and which nodes a change or a fault holds, so that the membership nemesis and
/// the kill/pause nemeses never pick the same node at once.
#[derive(Default)]
pub struct Members {
    state: Mutex<MembersState>,
}

#[derive(Default)]
struct MembersState {
    endpoints: Vec<Endpoint>,
    extras: Vec<ExtraNode>,
    /// Nodes a view change adds or removes right now.
    changing: BTreeSet<u64>,
    /// Nodes killed or paused right now.
    faulted: BTreeSet<u64>,
    removed: BTreeSet<u64>,
}

impl Members {
    fn lock(&self) -> std::sync::MutexGuard<'_, MembersState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pick(&self, rng: &mut StdRng) -> Option<Endpoint> {
        let s = self.lock();
        if s.endpoints.is_empty() {
            return None;
        }
        Some(s.endpoints[rng.gen_range(0..s.endpoints.len())].clone())
    }

    /// The nodes the workers use, by id.
    pub fn present(&self) -> Vec<(u64, SocketAddr)> {
        self.lock()
            .endpoints
            .iter()
            .map(|e| (e.id, e.addr))
            .collect()
    }

    /// Whether node `id` was removed by a change of this run.
    pub fn is_removed(&self, id: u64) -> bool {
        self.lock().removed.contains(&id)
    }

    /// Marks node `id` as hit by a fault, unless a change holds it or it was removed.
    fn claim_fault(&self, id: u64) -> bool {
        let mut s = self.lock();
        if s.changing.contains(&id) || s.removed.contains(&id) {
            return false;
        }
        s.faulted.insert(id)
    }

    fn release_fault(&self, id: u64) {
        self.lock().faulted.remove(&id);
    }

    /// Marks node `id` as the subject of a change, unless a fault holds it.
    fn claim_change(&self, id: u64) -> bool {
        let mut s = self.lock();
        if s.faulted.contains(&id) || s.removed.contains(&id) {
            return false;
        }
        s.changing.insert(id)
    }

    fn release_change(&self, id: u64) {
        self.lock().changing.remove(&id);
    }

    /// Takes node `id` out of the workers' list (its removal starts); returns its entry.
    fn take(&self, id: u64) -> Option<Endpoint> {
        let mut s = self.lock();
        let i = s.endpoints.iter().position(|e| e.id == id)?;
        Some(s.endpoints.remove(i))
    }

    fn put(&self, e: Endpoint) {
        self.lock().endpoints.push(e);
    }

    fn keep_extra(&self, x: ExtraNode) {
        self.lock().extras.push(x);
    }

    /// A client over every node the workers use, failing over between them, from the workers'
    /// address (no partition rule mentions it), for admin calls.
    pub fn admin(&self) -> Client {
        let eps = self
            .present()
            .iter()
            .map(|(_, a)| a.to_string())
            .collect::<Vec<_>>();
        Client::new(
            eps,
            ClientOptions {
                request_timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(10),
                local_address: Some(client_ip()),
            },
        )
        .expect("client")
        .with_smart_routing(false)
    }
}

fn client_ip() -> IpAddr {
    CLIENT_IP.parse().expect("ip")
}

/// What a scenario (see [`run_with`]) gets: the cluster, the nodes the workers use, the run's
/// keys and seed, and the nemesis timeline.
pub struct Ctx {
    pub cluster: Arc<tokio::sync::Mutex<Cluster>>,
    pub members: Arc<Members>,
    pub keys: Vec<String>,
    pub seed: u64,
    timeline: Arc<Timeline>,
    /// Addresses of nodes started to join, in order: 127.0.0.{nodes+1}, …
    next_ip: AtomicU64,
}

impl Ctx {
    /// Writes `what` to the nemesis timeline (and stderr).
    pub fn log(&self, what: &str) {
        eprintln!("{what}");
        self.timeline.log(what);
    }

    /// Starts a new node with `--join` (the present nodes' addresses) at a fresh loopback
    /// address, waits until it answers `GET /v1/join` as waiting, and keeps the process until the
    /// run ends. Returns its address, or why it did not come up.
    pub async fn start_joiner(&self) -> Result<SocketAddr, String> {
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let addr = Cluster::free_addr(&format!("127.0.0.{n}"));
        let join = self
            .members
            .present()
            .iter()
            .map(|(_, a)| a.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let extra = self
            .cluster
            .lock()
            .await
            .spawn_extra(addr, &["--join", &join], &[]);
        self.members.keep_extra(extra);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .local_address(client_ip())
            .build()
            .expect("http client");
        let deadline = Instant::now() + JOINER_UP_WITHIN;
        loop {
            if let Ok(r) = http.get(format!("http://{addr}/v1/join")).send().await {
                if r.json::<serde_json::Value>()
                    .await
                    .is_ok_and(|v| v["state"] == "waiting")
                {
                    return Ok(addr);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{addr} not waiting to join within {JOINER_UP_WITHIN:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls task `id` until it is final or `within` passes; `None` at the deadline.
    pub async fn wait_task(&self, id: u64, within: Duration) -> Option<TaskProgress> {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(p) = self.members.admin().task(id).await {
                if !matches!(p.state, TaskState::Running | TaskState::Cancelling) {
                    return Some(p);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// SIGKILL the process at `addr` (a node of the initial view, or one started by
    /// [`Self::start_joiner`]); false if no process of the run has that address.
    pub async fn kill_addr(&self, addr: &str) -> bool {
        let mut c = self.cluster.lock().await;
        if let Some(i) = c.nodes.iter().position(|n| n.addr.to_string() == addr) {
            c.kill(i);
            return true;
        }
        let mut s = self.members.lock();
        match s
            .extras
            .iter_mut()
            .rev()
            .find(|x| x.addr.to_string() == addr)
        {
            Some(x) => {
                x.kill();
                true
            }
            None => false,
        }
    }

    /// Starts the process at `addr` again after [`Self::kill_addr`], with its data directory.
    pub async fn restart_addr(&self, addr: &str) {
        let mut c = self.cluster.lock().await;
        if let Some(i) = c.nodes.iter().position(|n| n.addr.to_string() == addr) {
            c.restart(i);
            return;
        }
        let mut s = self.members.lock();
        if let Some(x) = s
            .extras
            .iter_mut()
            .rev()
            .find(|x| x.addr.to_string() == addr)
        {
            x.restart();
        }
    }

    /// The map as the cluster serves it now, if some node answers.
    pub async fn map(&self) -> Option<ClusterMap> {
        self.members.admin().map().await.ok().map(|(m, _)| m)
    }
}

/// Attempts of each key's final read (each with the final client's 20 s of retries).
const FINAL_READ_ATTEMPTS: usize = 5;

/// Longest wait for a node started with `--join` to answer as waiting.
const JOINER_UP_WITHIN: Duration = Duration::from_secs(20);

/// A scenario run next to the workers by [`run_with`]: it gets the run's context and returns a
/// one-line summary for the outcome; a panic in it fails the run.
pub type Scenario = Box<dyn FnOnce(Arc<Ctx>) -> BoxFuture<String> + Send>;
/// A boxed future of a scenario.
pub type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What the membership nemesis did during a run.
#[derive(Debug, Default, Clone)]
pub struct MembershipStats {
    /// Changes started (accepted by the metadata leader).
    pub started: usize,
    /// Changes refused up front (not an error).
    pub refused: usize,
    /// Changes that ended `done`.
    pub done: usize,
    /// Changes that ended `cancelled` or `failed`.
    pub not_done: usize,
    /// Changes that moved the slot of at least one of the run's keys.
    pub moved_run_keys: usize,
    /// Changes not final within the deadline: each fails the run.
    pub stuck: Vec<String>,
}

/// Runs one Jepsen-style test and returns the checker's verdict. Panics only on harness errors.
pub async fn run(opts: JepsenOptions) -> Outcome {
    run_with(opts, None).await
}

/// Keys `{prefix}{n}` (n = 0, 1, …) whose slot satisfies `pick`, `count` of them.
pub fn keys_in_slots(prefix: &str, count: usize, pick: impl Fn(u16) -> bool) -> Vec<String> {
    (0u64..)
        .map(|n| format!("{prefix}{n}"))
        .filter(|k| pick(kvorum_router::slot_of(k.as_bytes()).0))
        .take(count)
        .collect()
}

/// The run's keys for a membership run: half of them in slots that the first planned change
/// (adding a node to `map`) moves, the rest spread over the groups.
fn membership_keys(map: &ClusterMap, count: usize) -> Vec<String> {
    let change = ViewChange::AddNode {
        addr: "127.0.0.250:1".into(),
    };
    let target = match kvorum_router::plan(map, &change) {
        Ok(p) => p.target,
        Err(_) => return spread_keys(map, "k", count),
    };
    let moving = keys_in_slots("km", count.div_ceil(2), |s| {
        map.slots.get(usize::from(s)) != target.slots.get(usize::from(s))
    });
    let mut keys = spread_keys(map, "k", count - moving.len());
    keys.extend(moving);
    keys
}

/// Runs one Jepsen-style test with `scenario` (if any) running next to the workers and the
/// nemesis, and returns the checker's verdict. The run lasts at least `opts.duration` and until
/// the scenario and every membership change have ended. Panics on harness errors and when the
/// scenario panics.
pub async fn run_with(opts: JepsenOptions, scenario: Option<Scenario>) -> Outcome {
    let dir = runs_dir().join(format!("{}-{}", opts.name, opts.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create run dir");
    eprintln!(
        "jepsen {}: seed={} (replay: KVORUM_JEPSEN_SEED={}), artifacts in {}",
        opts.name,
        opts.seed,
        opts.seed,
        dir.display()
    );
    let partitioner = if opts.nemeses.contains(&Nemesis::Partition)
        || opts.nemeses.contains(&Nemesis::IsolateMetadataLeader)
    {
        Some(Partitioner::new().expect("partitions unavailable; the caller checks first"))
    } else {
        None
    };
    let membership = opts.nemeses.contains(&Nemesis::Membership);
    let mut copts = ClusterOptions::new(opts.bin.clone(), opts.nodes, opts.k);
    copts.stale_reads = opts.stale_reads;
    copts.env = opts.env.clone();
    if let Some(n) = opts.snapshot_every {
        copts
            .env
            .push(("KVORUM_SNAPSHOT_EVERY".into(), n.to_string()));
        // Keep few entries after a snapshot, so that a node back from a fault is caught up by
        // a snapshot install rather than from the log.
        copts.env.push((
            "KVORUM_SNAPSHOT_LOGS_KEPT".into(),
            (n / 2).max(10).to_string(),
        ));
    }
    if let Some(bin) = &opts.lazyfs {
        copts = copts.with_lazyfs(bin.clone());
    }
    assert!(
        !opts.nemeses.contains(&Nemesis::PowerLoss) || opts.lazyfs.is_some(),
        "the power-loss nemesis needs JepsenOptions::lazyfs"
    );
    let cluster = Arc::new(tokio::sync::Mutex::new(Cluster::start(copts).await));
    let members = Arc::new(Members::default());
    for n in &cluster.lock().await.nodes {
        members.put(Endpoint::new(n.id, n.addr));
    }
    let recorder = Arc::new(Recorder::create(&dir.join("history.jsonl")).expect("history file"));
    let timeline = Arc::new(Timeline {
        out: Mutex::new(std::fs::File::create(dir.join("nemesis.log")).expect("nemesis log")),
        start: Instant::now(),
    });
    let map = cluster.lock().await.initial_map();
    let keys = match &opts.chosen_keys {
        Some(k) => k.clone(),
        None if membership => membership_keys(&map, opts.keys),
        None => spread_keys(&map, "k", opts.keys),
    };
    let groups: BTreeSet<u64> = keys.iter().map(|k| group_of_key(&map, k)).collect();
    eprintln!(
        "jepsen {}: {} nodes, K={}, keys {keys:?} in groups {groups:?}",
        opts.name, opts.nodes, opts.k
    );
    assert!(
        opts.chosen_keys.is_some()
            || opts.keys < map.groups.len()
            || groups.len() == map.groups.len(),
        "the keys {keys:?} miss some of the {} data groups",
        map.groups.len()
    );
    let ctx = Arc::new(Ctx {
        cluster: cluster.clone(),
        members: members.clone(),
        keys: keys.clone(),
        seed: opts.seed,
        timeline: timeline.clone(),
        next_ip: AtomicU64::new(opts.nodes as u64 + 1),
    });

    // Workers.
    let stop = Arc::new(AtomicBool::new(false));
    let next_process = Arc::new(AtomicU64::new(opts.clients as u64));
    let mut workers = Vec::new();
    for w in 0..opts.clients {
        let ctx = Worker {
            process: w as u64,
            rng: StdRng::seed_from_u64(opts.seed.wrapping_add(1 + w as u64)),
            // Even workers exercise forwarding, odd ones smart routing.
            smart: w % 2 == 1,
            members: members.clone(),
            recorder: recorder.clone(),
            keys: keys.clone(),
            next_process: next_process.clone(),
            seen: HashMap::new(),
            n: 0,
        };
        let stop = stop.clone();
        workers.push(tokio::spawn(ctx.run(stop)));
    }

    let end = Instant::now() + opts.duration;
    timeline.log("start");
    let scenario = scenario.map(|s| tokio::spawn(s(ctx.clone())));
    let stats = Arc::new(Mutex::new(MembershipStats::default()));
    let changes = membership.then(|| {
        tokio::spawn(membership_nemesis(
            ctx.clone(),
            StdRng::seed_from_u64(opts.seed ^ MEMBERSHIP_SEED_SALT),
            opts.quiet,
            end,
            opts.change_deadline,
            stats.clone(),
        ))
    });

    // Kill, pause and partition.
    let faults_of: Vec<Nemesis> = opts
        .nemeses
        .iter()
        .copied()
        .filter(|n| *n != Nemesis::Membership)
        .collect();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut faults = 0;
    let mut fault_time = Duration::ZERO;
    // Each nemesis in turn, in a seeded order reshuffled every round, so every one of a mixed
    // run's nemeses strikes.
    let mut order: Vec<Nemesis> = Vec::new();
    let mut power_cuts = 0usize;
    loop {
        if faults_of.is_empty() {
            break;
        }
        let length = if opts.fault_max > opts.fault_period {
            rng.gen_range(opts.fault_period..=opts.fault_max)
        } else {
            opts.fault_period
        };
        if Instant::now() + opts.quiet + length > end {
            break;
        }
        tokio::time::sleep(opts.quiet).await;
        if order.is_empty() {
            order = faults_of.clone();
            order.shuffle(&mut rng);
        }
        let nemesis = order.remove(0);
        // A random node, or (half of the time, unless the run restricts its targets) the leader
        // of a random group: 0 is the config group (the metadata leader), 1.. the data groups.
        let random = match &opts.targets {
            Some(t) if !t.is_empty() => t[rng.gen_range(0..t.len())],
            _ => rng.gen_range(0..opts.nodes),
        };
        let leader_group = (opts.targets.is_none() && rng.gen_bool(0.5))
            .then(|| rng.gen_range(0..=map.groups.len() as u64));
        let target = match leader_group {
            Some(g) => {
                let c = cluster.lock().await;
                let leader = if g == 0 {
                    c.metadata_leader().await
                } else {
                    c.group_leader(g).await
                };
                leader
                    .filter(|id| (1..=opts.nodes as u64).contains(id))
                    .map(|id| id as usize - 1)
                    .unwrap_or(random)
            }
            None => random,
        };
        let target_id = target as u64 + 1;
        let what = match leader_group {
            Some(0) => format!("node {target_id} (metadata leader)"),
            Some(g) => format!("node {target_id} (leader of group {g})"),
            None => format!("node {target_id}"),
        };
        let began = Instant::now();
        match nemesis {
            Nemesis::Kill | Nemesis::Pause if !members.claim_fault(target_id) => {
                timeline.log(&format!(
                    "{} {what}: skipped (in a view change or removed)",
                    nemesis.name()
                ));
                continue;
            }
            Nemesis::Kill => {
                timeline.log(&format!("kill {what} for {length:?}"));
                cluster.lock().await.kill(target);
                tokio::time::sleep(length).await;
                timeline.log(&format!("restart node {target_id}"));
                cluster.lock().await.restart(target);
                members.release_fault(target_id);
            }
            Nemesis::Pause => {
                timeline.log(&format!("pause {what} for {length:?}"));
                cluster.lock().await.pause(target, true);
                tokio::time::sleep(length).await;
                timeline.log(&format!("resume node {target_id}"));
                cluster.lock().await.pause(target, false);
                members.release_fault(target_id);
            }
            Nemesis::KillAll => {
                timeline.log(&format!("kill all nodes for {length:?}"));
                let mut c = cluster.lock().await;
                for i in 0..c.nodes.len() {
                    c.kill(i);
                }
                drop(c);
                tokio::time::sleep(length).await;
                timeline.log("restart all nodes");
                let mut c = cluster.lock().await;
                for i in 0..c.nodes.len() {
                    c.restart(i);
                }
            }
            Nemesis::PowerLoss => {
                // In turn: one node (random or a leader), a minority, every node.
                let n = opts.nodes;
                let victims: Vec<usize> = match power_cuts % 3 {
                    0 => vec![target],
                    1 => {
                        let mut all: Vec<usize> = (0..n).collect();
                        all.shuffle(&mut rng);
                        all.truncate((n - 1) / 2);
                        all
                    }
                    _ => (0..n).collect(),
                };
                power_cuts += 1;
                timeline.log(&format!(
                    "power cut of nodes {:?} for {length:?}",
                    victims.iter().map(|i| i + 1).collect::<Vec<_>>()
                ));
                cluster.lock().await.power_cut(&victims);
                tokio::time::sleep(length).await;
                timeline.log("power back: restart");
                let mut c = cluster.lock().await;
                for &i in &victims {
                    c.restart(i);
                }
            }
            Nemesis::Partition => {
                let p = partitioner.as_ref().expect("partitioner");
                // Over the nodes present now (a membership nemesis adds and removes some).
                let present = members.present();
                let n = present.len();
                let ips: Vec<IpAddr> = present.iter().map(|(_, a)| a.ip()).collect();
                let index = |id: u64| present.iter().position(|(i, _)| *i == id);
                let mut side = random_halves(&mut rng, n);
                let shape = match rng.gen_range(0..4) {
                    0 => PartitionShape::RandomHalves,
                    1 => PartitionShape::Isolate(
                        leader_group
                            .and(Some(target_id))
                            .and_then(index)
                            .unwrap_or(target.min(n.saturating_sub(1))),
                    ),
                    2 => {
                        // The leader of every data group and the metadata leader, each alone.
                        side = vec![false; n];
                        let c = cluster.lock().await;
                        let mut leaders = vec![c.metadata_leader().await];
                        for g in 1..=map.groups.len() as u64 {
                            leaders.push(c.group_leader(g).await);
                        }
                        for i in leaders.into_iter().flatten().filter_map(index) {
                            side[i] = true;
                        }
                        PartitionShape::IsolateEach
                    }
                    _ => PartitionShape::MajorityRing,
                };
                timeline.log(&format!(
                    "partition {shape:?} over nodes {:?} sides {side:?} for {length:?}",
                    present.iter().map(|(i, _)| *i).collect::<Vec<_>>()
                ));
                p.cut(&ips, |a, b| connected(shape, n, &side, a, b))
                    .expect("nft rules");
                tokio::time::sleep(length).await;
                timeline.log("heal partition");
                p.heal().expect("nft heal");
            }
            Nemesis::IsolateMetadataLeader => {
                let p = partitioner.as_ref().expect("partitioner");
                let present = members.present();
                let n = present.len();
                let ips: Vec<IpAddr> = present.iter().map(|(_, a)| a.ip()).collect();
                let leader = cluster.lock().await.metadata_leader().await;
                let voters = match members.admin().map().await {
                    Ok((m, _)) => m.config_voters,
                    Err(_) => Default::default(),
                };
                let Some(x) = leader.and_then(|l| present.iter().position(|(i, _)| *i == l)) else {
                    timeline.log("isolate the metadata leader: skipped (no leader known)");
                    continue;
                };
                let side: Vec<bool> = present
                    .iter()
                    .map(|(i, _)| voters.contains(i) && Some(*i) != leader)
                    .collect();
                timeline.log(&format!(
                    "isolate the metadata leader {} from config voters {:?} for {length:?}",
                    present[x].0,
                    voters
                        .iter()
                        .filter(|v| Some(**v) != leader)
                        .collect::<Vec<_>>()
                ));
                p.cut(&ips, |a, b| {
                    connected(PartitionShape::Sever(x), n, &side, a, b)
                })
                .expect("nft rules");
                tokio::time::sleep(length).await;
                timeline.log("heal partition");
                p.heal().expect("nft heal");
            }
            Nemesis::Membership => unreachable!("filtered out above"),
        }
        faults += 1;
        fault_time += began.elapsed();
    }
    let rest = end.saturating_duration_since(Instant::now());
    tokio::time::sleep(rest).await;
    let scenario = match scenario {
        Some(h) => match h.await {
            Ok(summary) => Some(summary),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("scenario: {e}"),
        },
        None => None,
    };
    if let Some(h) = changes {
        if let Err(e) = h.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
    let membership_stats = stats.lock().unwrap_or_else(|p| p.into_inner()).clone();
    faults += membership_stats.started;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    timeline.log("workers stopped; final reads");

    // Final reads through any present node, after everything healed and every group has a
    // leader.
    let final_status = {
        let c = cluster.lock().await;
        if membership || opts.chosen_keys.is_some() {
            c.wait_for_status(
                Duration::from_secs(60),
                "every group led and no view change running",
                |s| {
                    s.health_known
                        && s.metadata_leader.is_some()
                        && s.groups.iter().all(|g| g.leader.is_some())
                        && !s.tasks.iter().any(|t| t.kind == "view_change")
                },
            )
            .await
        } else {
            c.wait_ready(Duration::from_secs(30)).await
        }
    };
    let final_client = {
        let eps = members
            .present()
            .iter()
            .map(|(_, a)| a.to_string())
            .collect();
        Client::new(
            eps,
            ClientOptions {
                request_timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(20),
                local_address: Some(client_ip()),
            },
        )
        .expect("client")
    };
    // Per key, the process whose final read succeeded.
    let mut final_procs: BTreeMap<String, u64> = BTreeMap::new();
    for key in &keys {
        for _attempt in 0..FINAL_READ_ATTEMPTS {
            let p = next_process.fetch_add(1, Ordering::Relaxed);
            let _ = recorder.invoke(p, key, &Op::Get);
            match final_client.get(key, false).await {
                Ok(v) => {
                    let _ = recorder.ok_versioned(p, Some(&v.value), v.version);
                    final_procs.insert(key.clone(), p);
                    break;
                }
                Err(ClientError::NotFound) => {
                    let _ = recorder.ok(p, None);
                    final_procs.insert(key.clone(), p);
                    break;
                }
                Err(_) => {
                    let _ = recorder.fail(p);
                }
            }
        }
    }
    timeline.log("done");
    recorder.flush().expect("flush history");

    // Keep node logs with the run.
    {
        let c = cluster.lock().await;
        for n in &c.nodes {
            let _ = std::fs::copy(&n.log, dir.join(format!("node{}.log", n.id)));
        }
        for (i, m) in c.mounts.iter().enumerate() {
            let _ = std::fs::copy(&m.log, dir.join(format!("lazyfs{}.log", i + 1)));
        }
        for x in &members.lock().extras {
            let name = x.log.file_name().map(|f| f.to_string_lossy().into_owned());
            let _ = std::fs::copy(&x.log, dir.join(name.unwrap_or_default()));
        }
    }
    drop(partitioner);
    let file = std::fs::File::open(dir.join("history.jsonl")).expect("history");
    let history =
        kvorum_checker::parse_history(std::io::BufReader::new(file)).expect("valid history");
    let ops = history.len();
    let per_key = ok_counts(&history);
    let final_reads_failed: Vec<String> = keys
        .iter()
        .filter(|k| !final_procs.contains_key(*k))
        .cloned()
        .collect();
    let final_reads: BTreeMap<String, usize> = history
        .ops
        .iter()
        .filter(|o| o.outcome == OpOutcome::Ok && final_procs.get(&o.key) == Some(&o.process))
        .map(|o| (o.key.clone(), o.id))
        .collect();
    let lost = lost_acks(&history, &final_reads);
    let (mut snapshots_built, mut snapshots_installed) = (0, 0);
    let mut fatal_stops = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                snapshots_built += text.matches("built snapshot").count();
                snapshots_installed += text.matches("installed snapshot").count();
                let file = e.file_name().to_string_lossy().into_owned();
                fatal_stops.extend(
                    text.lines()
                        .filter(|l| l.contains("replica stopped on a fatal error"))
                        .map(|l| format!("{file}: {l}")),
                );
            }
        }
    }
    let report = kvorum_checker::check(
        &history,
        &CheckOptions {
            time_limit: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let _ = std::fs::write(dir.join("report.txt"), report.to_text());
    let _ = std::fs::write(dir.join("report.html"), report.to_html());
    let (ok_reads, ok_writes) = per_key
        .values()
        .fold((0, 0), |(r, w), c| (r + c.reads, w + c.writes));
    eprintln!(
        "jepsen {}: {} operations, {} faults, verdict {:?} ({})",
        opts.name,
        ops,
        faults,
        report.verdict,
        dir.join("report.txt").display()
    );
    // One line for scripts (scripts/soak.sh), on stdout so that it shows in a test summary.
    println!(
        "jepsen-summary name={} seed={} ops={ops} ok_reads={ok_reads} ok_writes={ok_writes} \
         faults={faults} fault_secs={:.1} lost_acks={} final_reads_failed={} \
         snapshots_built={snapshots_built} snapshots_installed={snapshots_installed} verdict={:?}",
        opts.name,
        opts.seed,
        fault_time.as_secs_f64(),
        lost.len(),
        final_reads_failed.len(),
        report.verdict
    );
    eprintln!("jepsen {}: ok operations per key {per_key:?}", opts.name);
    for l in &lost {
        eprintln!("jepsen {}: LOST ACK {l}", opts.name);
    }
    for l in &fatal_stops {
        eprintln!("jepsen {}: FATAL STOP {l}", opts.name);
    }
    if membership {
        eprintln!("jepsen {}: membership {membership_stats:?}", opts.name);
    }
    Outcome {
        dir,
        report,
        ops,
        per_key,
        final_reads_failed,
        lost_acks: lost,
        faults,
        fault_time,
        snapshots_built,
        snapshots_installed,
        fatal_stops,
        final_status,
        membership: membership_stats,
        scenario,
    }
}

/// Mixed into the seed of the membership nemesis's choices, so they do not repeat the fault
/// schedule's.
const MEMBERSHIP_SEED_SALT: u64 = 0x6d65_6d62_6572;

/// What the membership nemesis does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Add,
    RemoveSpare,
    RemoveReplica,
}

/// The membership nemesis: after each quiet period, one view change (the first adds a node, so
/// that groups are created and slots move at once; then add, remove a spare or remove a replica —
/// replaced by a spare if there is one, else its group is dissolved), each waited for up to
/// `deadline`. The node count stays within the initial count ± 1; any node may be removed, the
/// metadata leader included. Refusals and changes that end
/// `cancelled`/`failed` are recorded, never an error; a change not final by `deadline` is
/// recorded in `stuck`.
async fn membership_nemesis(
    ctx: Arc<Ctx>,
    mut rng: StdRng,
    period: Duration,
    end: Instant,
    deadline: Duration,
    stats: Arc<Mutex<MembershipStats>>,
) {
    let initial = ctx.members.present().len();
    let mut first = true;
    while Instant::now() + period <= end {
        tokio::time::sleep(period).await;
        let Ok(status) = ctx.members.admin().status().await else {
            ctx.log("membership: no status; skipped");
            continue;
        };
        let active: Vec<&kvorum_wire::NodeStatus> = status
            .nodes
            .iter()
            .filter(|n| n.state != NodeState::Removed)
            .collect();
        let present: BTreeSet<u64> = ctx.members.present().iter().map(|(i, _)| *i).collect();
        // Any node the workers use, the metadata leader included (it hands its config seat over
        // and loses its leadership mid-change).
        let removable = |n: &&&kvorum_wire::NodeStatus| present.contains(&n.id);
        let spares: Vec<u64> = active
            .iter()
            .filter(|n| n.role == NodeRole::Spare)
            .filter(removable)
            .map(|n| n.id)
            .collect();
        let replicas: Vec<u64> = active
            .iter()
            .filter(|n| n.role == NodeRole::Replica)
            .filter(removable)
            .map(|n| n.id)
            .collect();
        let mut choices = Vec::new();
        if active.len() <= initial {
            choices.push(ChangeKind::Add);
        }
        if active.len() >= initial {
            if !spares.is_empty() {
                choices.push(ChangeKind::RemoveSpare);
            }
            if !replicas.is_empty() {
                choices.push(ChangeKind::RemoveReplica);
            }
        }
        let kind = if first || choices.is_empty() {
            ChangeKind::Add
        } else {
            choices[rng.gen_range(0..choices.len())]
        };
        first = false;
        let before = ctx.map().await;
        let (what, started) = match kind {
            ChangeKind::Add => match ctx.start_joiner().await {
                Ok(addr) => {
                    let what = format!("add {addr}");
                    ctx.log(&format!("membership: {what}"));
                    (
                        what,
                        Some((
                            None,
                            ctx.members.admin().add_node(&addr.to_string()).await,
                            Some(addr),
                        )),
                    )
                }
                Err(e) => {
                    ctx.log(&format!("membership: add: {e}"));
                    (String::new(), None)
                }
            },
            ChangeKind::RemoveSpare | ChangeKind::RemoveReplica => {
                let from = if kind == ChangeKind::RemoveSpare {
                    &spares
                } else {
                    &replicas
                };
                let id = from[rng.gen_range(0..from.len())];
                if !ctx.members.claim_change(id) {
                    ctx.log(&format!(
                        "membership: remove node {id}: skipped (a fault holds it)"
                    ));
                    continue;
                }
                // The workers stop using it before it goes.
                let ep = ctx.members.take(id);
                let what = format!("remove node {id} ({kind:?})");
                ctx.log(&format!("membership: {what}"));
                (
                    what,
                    Some((
                        Some((id, ep)),
                        ctx.members.admin().remove_node(id).await,
                        None,
                    )),
                )
            }
        };
        let Some((removing, answer, added)) = started else {
            continue;
        };
        let give_back = |removing: Option<(u64, Option<Endpoint>)>| {
            if let Some((id, ep)) = removing {
                if let Some(ep) = ep {
                    ctx.members.put(ep);
                }
                ctx.members.release_change(id);
            }
        };
        let p = match answer {
            Ok(p) => p,
            Err(e) => {
                ctx.log(&format!("membership: {what}: refused: {e}"));
                stats.lock().unwrap_or_else(|p| p.into_inner()).refused += 1;
                give_back(removing);
                continue;
            }
        };
        stats.lock().unwrap_or_else(|p| p.into_inner()).started += 1;
        ctx.log(&format!(
            "membership: {what}: task {} started, {} slots to move",
            p.id, p.slots_total
        ));
        let Some(done) = ctx.wait_task(p.id, deadline).await else {
            let msg = format!("{what}: task {} not final within {deadline:?}", p.id);
            ctx.log(&format!("membership: STUCK {msg}"));
            stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .stuck
                .push(msg);
            // Leave the node claimed: the change may still be running.
            return;
        };
        let took = Duration::from_millis(
            done.finished_ms
                .unwrap_or(done.started_ms)
                .saturating_sub(done.started_ms),
        );
        ctx.log(&format!(
            "membership: {what}: task {} {:?} in {took:?}: {}/{} slots, {} keys moved{}",
            done.id,
            done.state,
            done.slots_moved,
            done.slots_total,
            done.keys_moved,
            done.error
                .as_ref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        ));
        let is_done = done.state == TaskState::Done;
        {
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            if is_done {
                s.done += 1;
            } else {
                s.not_done += 1;
            }
        }
        match (removing, added) {
            (Some((id, _)), _) if is_done => {
                ctx.members.lock().removed.insert(id);
                ctx.members.release_change(id);
            }
            (removing @ Some(_), _) => give_back(removing),
            (None, Some(addr)) => {
                if let (true, Some(id)) = (is_done, done.node) {
                    ctx.members.put(Endpoint::new(id, addr));
                }
            }
            (None, None) => {}
        }
        // Which of the run's keys changed group.
        if let (Some(before), Some(after)) = (before, ctx.map().await) {
            let moved: Vec<&String> = ctx
                .keys
                .iter()
                .filter(|k| group_of_key(&before, k) != group_of_key(&after, k))
                .collect();
            ctx.log(&format!("membership: run keys that moved: {moved:?}"));
            if !moved.is_empty() {
                stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .moved_run_keys += 1;
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use kvorum_checker::HistoryBuilder;

    fn put(v: &str) -> Op {
        Op::Put {
            value: v.to_string(),
        }
    }

    fn append(v: &str) -> Op {
        Op::Append {
            value: v.to_string(),
        }
    }

    // A put and appends after it, all acknowledged, but the final read lacks an append: one
    // lost ack; the same final read showing them all: none.
    #[test]
    fn lost_acks_finds_an_acknowledged_append_missing() {
        let history = |fin: &str| {
            let mut b = HistoryBuilder::new();
            b.invoke(1, 10, "k", put("1.1,"))
                .ok(1, 20, None)
                .invoke(2, 30, "k", append("2.1,"))
                .ok(2, 40, None)
                .invoke(1, 50, "k", append("1.2,"))
                .ok(1, 60, None)
                .invoke(9, 100, "k", Op::Get)
                .ok(9, 110, Some(fin));
            b.build().expect("history")
        };
        let finals = BTreeMap::from([("k".to_string(), 3)]);
        assert!(lost_acks(&history("1.1,2.1,1.2,"), &finals).is_empty());
        let lost = lost_acks(&history("1.1,1.2,"), &finals);
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert!(lost[0].contains("2.1"), "{lost:?}");
        // The put itself must be the first token.
        assert_eq!(lost_acks(&history("2.1,1.2,"), &finals).len(), 1);
    }

    // An indeterminate put may take effect long after its client gave up (its entry commits
    // later): an append acknowledged after the put's `info` and missing from a final read that
    // shows the put is not lost. (Found by a soak run: the put committed 1.1 s after its info.)
    #[test]
    fn lost_acks_counts_an_unknown_put_as_possibly_later() {
        let mut b = HistoryBuilder::new();
        b.invoke(1, 10, "k", put("1.1,"))
            .info(1, 20)
            .invoke(2, 30, "k", append("2.1,"))
            .ok(2, 40, None)
            .invoke(9, 100, "k", Op::Get)
            .ok(9, 110, Some("1.1,"));
        let h = b.build().expect("history");
        let finals = BTreeMap::from([("k".to_string(), 2)]);
        assert!(
            lost_acks(&h, &finals).is_empty(),
            "{:?}",
            lost_acks(&h, &finals)
        );
    }

    // A write that a later (or concurrent, or unknown) put may have overwritten is not counted.
    #[test]
    fn lost_acks_skips_overwritable_writes() {
        let mut b = HistoryBuilder::new();
        b.invoke(1, 10, "k", put("1.1,"))
            .ok(1, 20, None)
            .invoke(2, 15, "k", put("2.1,"))
            .info(2, 90)
            .invoke(9, 100, "k", Op::Get)
            .ok(9, 110, Some("2.1,"));
        let h = b.build().expect("history");
        let finals = BTreeMap::from([("k".to_string(), 2)]);
        assert!(lost_acks(&h, &finals).is_empty());
    }

    // Counts of ok reads and writes per key, and the floor.
    #[test]
    fn vacuous_runs_are_named() {
        let mut b = HistoryBuilder::new();
        b.invoke(1, 10, "k", put("1.1,"))
            .ok(1, 20, None)
            .invoke(1, 30, "k", Op::Get)
            .ok(1, 40, Some("1.1,"))
            .invoke(1, 50, "k", Op::Get)
            .fail(1, 60);
        let counts = ok_counts(&b.build().expect("history"));
        assert_eq!(
            counts["k"],
            KeyOps {
                reads: 1,
                writes: 1
            }
        );
        assert!(vacuous(&counts, &[]).is_some_and(|w| w.contains("k: 1 ok reads")));
        let plenty = BTreeMap::from([(
            "k".to_string(),
            KeyOps {
                reads: MIN_OK_READS_PER_KEY,
                writes: MIN_OK_WRITES_PER_KEY,
            },
        )]);
        assert!(vacuous(&plenty, &[]).is_none());
        assert!(vacuous(&plenty, &["k".to_string()]).is_some());
    }
}
