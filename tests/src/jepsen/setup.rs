//! The start of a run: its folder, the cluster with the nemeses' needs (partitions, lazyfs,
//! snapshot settings), the history recorder, the nemesis timeline, the run's keys and the context
//! shared with the nemeses and the scenario, held together as one [`Run`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvorum_checker::Recorder;
use kvorum_router::ClusterMap;

use super::members::{Ctx, Endpoint, Members};
use super::membership::membership_keys;
use super::report::{runs_dir, Timeline};
use super::JepsenOptions;
use crate::nemesis::{Nemesis, Partitioner};
use crate::{group_of_key, spread_keys, Cluster, ClusterOptions};

/// A run's state from its start to its report: what the steps of
/// [`run_with`](super::run_with) share.
pub(super) struct Run {
    pub(super) opts: JepsenOptions,
    /// The run's folder: history, nemesis timeline, node logs, report.
    pub(super) dir: PathBuf,
    /// Set when a nemesis cuts partitions; dropped (healing every rule) before the report.
    pub(super) partitioner: Option<Partitioner>,
    /// Whether the membership nemesis runs.
    pub(super) membership: bool,
    pub(super) cluster: Arc<tokio::sync::Mutex<Cluster>>,
    pub(super) members: Arc<Members>,
    pub(super) recorder: Arc<Recorder>,
    pub(super) timeline: Arc<Timeline>,
    /// The initial map.
    pub(super) map: ClusterMap,
    pub(super) keys: Vec<String>,
    pub(super) ctx: Arc<Ctx>,
    /// The next process id of the history (workers take `0..clients`; a retired worker and each
    /// final read take the next).
    pub(super) next_process: Arc<AtomicU64>,
}

/// Starts a run: a fresh folder, the cluster (which serves when this returns), the history and
/// timeline files, the run's keys (asserted to reach every data group) and the scenario's
/// context.
pub(super) async fn start(opts: JepsenOptions) -> Run {
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
    let copts = cluster_options(&opts);
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
    let keys = choose_keys(&opts, &map, membership);
    let ctx = Arc::new(Ctx {
        cluster: cluster.clone(),
        members: members.clone(),
        keys: keys.clone(),
        seed: opts.seed,
        timeline: timeline.clone(),
        next_ip: AtomicU64::new(opts.nodes as u64 + 1),
    });
    let next_process = Arc::new(AtomicU64::new(opts.clients as u64));
    Run {
        opts,
        dir,
        partitioner,
        membership,
        cluster,
        members,
        recorder,
        timeline,
        map,
        keys,
        ctx,
        next_process,
    }
}

/// The cluster's settings for a run: its size, faults and environment, snapshots every
/// `opts.snapshot_every` entries, data on lazyfs if `opts.lazyfs`. Asserts that a power-loss
/// run has lazyfs.
fn cluster_options(opts: &JepsenOptions) -> ClusterOptions {
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
    copts
}

/// The run's keys: `opts.chosen_keys`, or keys spread over the groups of `map` (half of them in
/// moving slots for a membership run); asserts they reach every data group unless chosen or
/// fewer than the groups.
fn choose_keys(opts: &JepsenOptions, map: &ClusterMap, membership: bool) -> Vec<String> {
    let keys = match &opts.chosen_keys {
        Some(k) => k.clone(),
        None if membership => membership_keys(map, opts.keys),
        None => spread_keys(map, "k", opts.keys),
    };
    let groups: BTreeSet<u64> = keys.iter().map(|k| group_of_key(map, k)).collect();
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
    keys
}
