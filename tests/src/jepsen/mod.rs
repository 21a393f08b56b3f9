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
//! view while it runs (see `membership_nemesis` in `membership.rs`): the workers pick from the nodes present (a node
//! leaves their list when its removal starts, a new one enters it when its add is done), kill and
//! pause skip nodes a change holds, and a partition is cut over the nodes present. A scenario
//! ([`run_with`]) can drive its own faults next to the workers (`tests/view_change_faults.rs`).
//!
//! A run prints its seed; `KVORUM_JEPSEN_SEED` replays the same schedule of operations and faults
//! (timings still vary).
//!
//! The files: `setup.rs` starts a run (its folder, cluster, keys and context); `members.rs` holds
//! the nodes as the workers, nemeses and scenarios see them ([`Members`], [`Ctx`]); `worker.rs`
//! the client workers that record the history; `faults.rs` the kill, pause, partition and
//! power-loss nemeses; `membership.rs` the membership nemesis; `final_reads.rs` the final reads
//! and the accounting of `ok` operations and lost acknowledgements; `report.rs` the run's folder,
//! nemesis timeline and report.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_checker::{Report, Verdict};
use rand::Rng;

use crate::nemesis::Nemesis;

mod faults;
mod final_reads;
mod members;
mod membership;
mod report;
mod setup;
mod worker;

pub use final_reads::{lost_acks, ok_counts, vacuous};
pub use members::{Ctx, Endpoint, Members};
pub use membership::keys_in_slots;

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
    /// The run's name: its folder is `{name}-{seed}`.
    pub name: String,
    /// The seed of the run's schedule of operations and faults.
    pub seed: u64,
    /// Nodes of the initial view.
    pub nodes: usize,
    /// Replicas per data group.
    pub k: usize,
    /// Shortest time the workers run.
    pub duration: Duration,
    /// Concurrent client workers.
    pub clients: usize,
    /// Keys the run chooses (unless `chosen_keys`).
    pub keys: usize,
    /// The faults the run strikes, in turn.
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
    /// The run's folder: history, nemesis timeline, node logs, report.
    pub dir: PathBuf,
    /// The checker's report.
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
    /// Faults that struck, membership changes started included.
    pub faults: usize,
    /// Total time faults were in force (from each fault's start to its heal).
    pub fault_time: Duration,
    /// "built snapshot" lines in the node logs.
    pub snapshots_built: usize,
    /// "installed snapshot" lines in the node logs.
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
    /// `get`s.
    pub reads: usize,
    /// Puts, appends, deletes and cas.
    pub writes: usize,
}

impl Outcome {
    /// Whether the checker judged the history linearizable.
    pub fn linearizable(&self) -> bool {
        matches!(self.report.verdict, Verdict::Linearizable)
    }

    /// Why the run proves too little to pass, if it does: a key below
    /// [`MIN_OK_READS_PER_KEY`] / [`MIN_OK_WRITES_PER_KEY`], or a final read that failed.
    pub fn vacuous(&self) -> Option<String> {
        vacuous(&self.per_key, &self.final_reads_failed)
    }
}

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

/// Runs one Jepsen-style test with `scenario` (if any) running next to the workers and the
/// nemesis, and returns the checker's verdict. The run lasts at least `opts.duration` and until
/// the scenario and every membership change have ended. Panics on harness errors and when the
/// scenario panics.
pub async fn run_with(opts: JepsenOptions, scenario: Option<Scenario>) -> Outcome {
    let run = setup::start(opts).await;
    let workers = worker::start_workers(&run);
    let end = Instant::now() + run.opts.duration;
    run.timeline.log("start");
    let scenario = scenario.map(|s| tokio::spawn(s(run.ctx.clone())));
    let stats = Arc::new(Mutex::new(MembershipStats::default()));
    let changes = run
        .membership
        .then(|| membership::start(&run, end, stats.clone()));
    let (mut faults, fault_time) = faults::strike_until(&run, end).await;
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
    workers.stop().await;
    run.timeline.log("workers stopped; final reads");
    let final_status = final_reads::wait_final_status(&run).await;
    let final_procs = final_reads::read_every_key(&run).await;
    run.timeline.log("done");
    run.recorder.flush().expect("flush history");
    report::finish(
        run,
        report::Ended {
            faults,
            fault_time,
            final_status,
            final_procs,
            membership: membership_stats,
            scenario,
        },
    )
    .await
}
