//! `failover-bench`: how long a three-node cluster takes to acknowledge writes again after its
//! leader is SIGKILLed, measured from outside, for kvorum and for etcd by the same method
//! (issue 20, "Failover: as fast as etcd's").
//!
//! One run:
//! 1. starts three nodes on 127.0.0.201–203 with default settings, each with its own data directory
//!    and log in one folder (kvorum: K=3, so one data group and the config group, through the
//!    test harness; etcd: three members, `etcd.rs`);
//! 2. starts the load (`load.rs`): `--writers` tasks putting keys over plain HTTP, each to a
//!    random live node, a failed request sent again at once to another one;
//! 3. `--kills` times: finds the leader (kvorum: of the data group, or with
//!    `--kill metadata-leader` of the config group; etcd: the member that leads), SIGKILLs it,
//!    and takes the time from the kill to the first acknowledged write *invoked after* it; then
//!    starts the killed process again on its data directory, waits until it is back and caught
//!    up, and lets `--steady-secs` of writes pass;
//! 4. prints each kill's figure, then p50 / p99 / max, and a `FAILOVER-BENCH` line for scripts
//!    (`report.rs`); `summary.json` and the nodes' logs stay in the printed folder.
//!
//! With `--soak-secs` there is no kill: the load runs that long without a fault (with
//! `--neighbour`, beside a disk-heavy neighbour), sampled for each group's term and each node's
//! memory (`soak.rs`).
//!
//! Each kill is also looked up in the nodes' logs (`elections.rs`): when a survivor's election
//! timer fired, when the first vote request went out, how many were refused.
//!
//! Caveats: the nodes, their disks and the bench share the machine; a figure's resolution is one
//! request's round trip plus the retry pause (`--retry-pause-ms`, taken only after every live
//! node failed in a row); a request given up after `--request-timeout-ms` counts as failed though
//! the node may still apply it, and is sent again.

mod elections;
mod etcd;
mod kvorum;
mod load;
mod report;
mod soak;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

use crate::elections::{LogFormat, Positions};
use crate::load::{Endpoints, Load};
use crate::report::{Kill, Report};

/// Longest wait, after a kill, for the first acknowledged write invoked after it; a kill that
/// passes it is reported as a timeout and the run goes on.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait for a restarted node to be back and caught up; the run stops past it.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);
/// Longest wait for a leader to kill; the run stops past it.
const LEADER_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two looks at a condition.
const POLL: Duration = Duration::from_millis(100);
/// The last byte of the first node's loopback address: the nodes listen on 127.0.0.201–203,
/// apart from the test suite's 127.0.0.1…, between which its partition tests drop packets
/// (nftables, by address) while they run.
const FIRST_HOST: u8 = 201;

/// The failover bench: SIGKILL the leader of a three-node cluster under write load, time the
/// first acknowledged write invoked after the kill.
#[derive(Parser, Debug)]
#[command(name = "failover-bench")]
struct Args {
    /// The system measured.
    #[arg(long, value_enum, default_value_t = TargetKind::Kvorum)]
    target: TargetKind,
    /// kvorum: which leader is killed (etcd has one group: its leader).
    #[arg(long, value_enum, default_value_t = KillKind::DataLeader)]
    kill: KillKind,
    /// Number of kills.
    #[arg(long, default_value_t = 10)]
    kills: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Seconds of writes after a killed node is back, before the next kill (and before the
    /// first).
    #[arg(long, default_value_t = 3)]
    steady_secs: u64,
    /// A writer gives up on a request after this many milliseconds and sends it to another node.
    #[arg(long, default_value_t = 100)]
    request_timeout_ms: u64,
    /// A writer whose requests failed at every live node in a row waits this many milliseconds
    /// before the next.
    #[arg(long, default_value_t = 10)]
    retry_pause_ms: u64,
    /// Seed of the writers' choices of node (default: `KVORUM_TEST_SEED`, else random; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// The kvnode program (default: `kvnode` next to this program).
    #[arg(long)]
    kvnode: Option<PathBuf>,
    /// The etcd program.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Instead of kills: run the load this many seconds without a fault, sampling terms and
    /// memory (`soak.rs`).
    #[arg(long)]
    soak_secs: Option<u64>,
    /// With `--soak-secs`: seconds between two samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// With `--soak-secs`: a disk-heavy neighbour writes and fsyncs beside the nodes.
    #[arg(long)]
    neighbour: bool,
}

/// The system measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Kvorum,
    Etcd,
}

/// Which kvorum leader a kill aims at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KillKind {
    /// The leader of data group 1.
    DataLeader,
    /// The metadata leader: the leader of the config group.
    MetadataLeader,
}

/// The leader chosen for a kill.
#[derive(Debug, Clone)]
pub struct Leader {
    /// Its index among the nodes (0-based).
    pub index: usize,
    /// Its name in the report (`node 2`, `e2`).
    pub name: String,
    /// What it leads, for the report (`data group 1, config group`).
    pub leads: String,
}

/// A three-node system the bench loads, and whose leader it finds, kills and restarts.
trait Target {
    /// The system and its settings, one line for the report.
    fn describe(&self) -> String;
    /// Where writers send their puts.
    fn endpoints(&self) -> Endpoints;
    /// The folder of the nodes' data and logs.
    fn dir(&self) -> &Path;
    /// Each node's name and log file, by index.
    fn logs(&self) -> Vec<(String, PathBuf)>;
    /// Each node's process id while it runs, by index.
    fn pids(&self) -> Vec<Option<u32>>;
    /// How the nodes' logs are written.
    fn log_format(&self) -> LogFormat;
    /// The leader to kill now; `None` while none is known or it is not running.
    async fn leader(&self) -> Option<Leader>;
    /// Where each group's Raft log stands (term, last applied index), as far as known.
    async fn positions(&self) -> Positions;
    /// SIGKILLs node `i` and reaps it.
    fn kill(&mut self, i: usize);
    /// Starts node `i` again on its data directory.
    fn restart(&mut self, i: usize);
    /// `Ok` when node `i` is back, the cluster led and node `i` caught up with its leaders;
    /// otherwise what is missing.
    async fn recovered(&self, i: usize) -> Result<(), String>;
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        tokio::select! {
            result = run(args) => result,
            signal = interrupted() => {
                // Dropping `run` killed the nodes and kept their folder.
                bail!("stopped by {signal}; the nodes are stopped")
            }
        }
    })
}

/// Resolves on SIGINT or SIGTERM, with its name.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let seed = match args.seed {
        Some(seed) => {
            eprintln!("failover-bench: seed={seed}");
            seed
        }
        None => kvorum_tests::seed("failover-bench"),
    };
    match args.target {
        TargetKind::Kvorum => {
            let bin = match &args.kvnode {
                Some(bin) => bin.clone(),
                None => std::env::current_exe()
                    .context("cannot find this program's path")?
                    .with_file_name("kvnode"),
            };
            if !bin.is_file() {
                bail!(
                    "no kvnode at {}; build it with `cargo build --workspace --bins` or pass --kvnode",
                    bin.display()
                );
            }
            let mut target = kvorum::Kvorum::start(bin, args.kill).await;
            bench(&mut target, &args, seed).await
        }
        TargetKind::Etcd => {
            let mut target = etcd::Etcd::start(&args.etcd).await?;
            bench(&mut target, &args, seed).await
        }
    }
}

/// Runs the load and the kills against `target`, then prints and saves the report.
async fn bench<T: Target>(target: &mut T, args: &Args, seed: u64) -> anyhow::Result<()> {
    let mode = match (args.target, args.kill) {
        (TargetKind::Etcd, _) => "etcd",
        (TargetKind::Kvorum, KillKind::DataLeader) => "kvorum data-leader",
        (TargetKind::Kvorum, KillKind::MetadataLeader) => "kvorum metadata-leader",
    };
    println!("failover-bench: {mode}; {}", target.describe());
    let endpoints = target.endpoints();
    let load = Arc::new(Load::new(endpoints.count()));
    let writers = load::start(
        load.clone(),
        Arc::new(endpoints),
        args.writers,
        seed,
        Duration::from_millis(args.request_timeout_ms),
        Duration::from_millis(args.retry_pause_ms),
    );
    if let Some(secs) = args.soak_secs {
        println!(
            "failover-bench: {} writers, request timeout {} ms; seed {seed}; logs in {}",
            args.writers,
            args.request_timeout_ms,
            target.dir().display()
        );
        return soak(target, args, load, writers, secs).await;
    }
    println!(
        "failover-bench: {} kills, {} writers, request timeout {} ms, retry pause {} ms, {} s steady \
         between kills; seed {seed}; logs in {}",
        args.kills,
        args.writers,
        args.request_timeout_ms,
        args.retry_pause_ms,
        args.steady_secs,
        target.dir().display()
    );
    let steady = Duration::from_secs(args.steady_secs);
    let started = Instant::now();
    let load_before = report::load_average();
    let result = async {
        steady_writes(&load, steady).await?;
        let mut kills = Vec::new();
        for n in 1..=args.kills {
            let kill = one_kill(target, &load, n, args.kills).await?;
            println!("{}", kill.line(n, args.kills));
            kills.push(kill);
            steady_writes(&load, steady).await?;
        }
        Ok::<_, anyhow::Error>(kills)
    }
    .await;
    load.stop();
    for w in writers {
        let _ = w.await;
    }
    let kills = result?;
    let report = Report::new(
        mode,
        target.describe(),
        seed,
        kills,
        &load,
        started.elapsed(),
        [load_before, report::load_average()],
    );
    report.print();
    let path = target.dir().join("summary.json");
    std::fs::write(&path, report.json()).with_context(|| format!("write {}", path.display()))?;
    println!(
        "failover-bench: logs and summary.json in {}",
        target.dir().display()
    );
    Ok(())
}

/// The soak: the load for `secs` seconds without a fault (and beside the neighbour with
/// `--neighbour`), sampled; prints and saves its summary (`soak.json`).
async fn soak<T: Target>(
    target: &T,
    args: &Args,
    load: Arc<Load>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    secs: u64,
) -> anyhow::Result<()> {
    let load_before = report::load_average();
    let neighbour = if args.neighbour {
        Some(soak::Neighbour::start(target.dir())?)
    } else {
        None
    };
    println!(
        "failover-bench: soak of {secs} s, a sample every {} s{}",
        args.sample_secs,
        if args.neighbour {
            ", beside a disk-heavy neighbour"
        } else {
            ""
        }
    );
    let samples = soak::run(
        target,
        &load,
        Duration::from_secs(secs),
        Duration::from_secs(args.sample_secs.max(1)),
        neighbour.as_ref(),
    )
    .await;
    drop(neighbour);
    load.stop();
    for w in writers {
        let _ = w.await;
    }
    let summary = soak::Summary::of(samples?);
    let latency = load.latency();
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "failover-bench: {} puts acknowledged (latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms), \
         {} requests failed or timed out; load average {} at the start, {} at the end",
        load.acks(),
        ms(latency.value_at_quantile(0.5)),
        ms(latency.value_at_quantile(0.99)),
        ms(latency.max()),
        load.failures(),
        load_before,
        report::load_average()
    );
    summary.print();
    let path = target.dir().join("soak.json");
    let json = serde_json::to_string_pretty(&summary).context("the soak's summary serializes")?;
    std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
    println!(
        "failover-bench: logs and soak.json in {}",
        target.dir().display()
    );
    Ok(())
}

/// One kill: finds the leader, kills it, waits for the first write invoked after the kill,
/// restarts the node and waits until it is back and caught up.
async fn one_kill<T: Target>(
    target: &mut T,
    load: &Load,
    n: usize,
    of: usize,
) -> anyhow::Result<Kill> {
    let deadline = Instant::now() + LEADER_DEADLINE;
    let leader = loop {
        if let Some(l) = target.leader().await {
            break l;
        }
        if Instant::now() > deadline {
            bail!("kill {n}/{of}: no leader known within {LEADER_DEADLINE:?}");
        }
        tokio::time::sleep(POLL).await;
    };
    let before = target.positions().await;
    let logs: Vec<_> = target
        .logs()
        .into_iter()
        .map(|(name, path)| {
            let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
            (name, path, offset)
        })
        .collect();
    load.set_live(leader.index, false);
    target.kill(leader.index);
    // The process is dead and reaped: every write from here on needs another leader.
    let killed_at = Instant::now();
    let killed_wall = chrono::Utc::now();
    load.arm(killed_at);
    let failover = loop {
        if let Some(ack) = load.first_ack() {
            break Some(ack.duration_since(killed_at));
        }
        if killed_at.elapsed() > FAILOVER_DEADLINE {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let errors = load.disarm();
    let failed = errors.iter().map(|(_, n)| n).sum();
    target.restart(leader.index);
    let restarted_at = Instant::now();
    let why = loop {
        match target.recovered(leader.index).await {
            Ok(()) => break None,
            Err(why) if restarted_at.elapsed() > RECOVERY_DEADLINE => break Some(why),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    };
    if let Some(why) = why {
        bail!(
            "kill {n}/{of}: {} not back and caught up within {RECOVERY_DEADLINE:?} of its restart: \
             {why}; logs in {}",
            leader.name,
            target.dir().display()
        );
    }
    let recovery = restarted_at.elapsed();
    load.set_live(leader.index, true);
    let after = target.positions().await;
    let elections = elections::scan(
        target.log_format(),
        &logs,
        killed_wall,
        chrono::Utc::now(),
        &before,
        &after,
    );
    Ok(Kill {
        leader,
        killed_at: killed_wall,
        failover,
        failed,
        errors,
        recovery,
        elections,
    })
}

/// Waits `steady` and checks that writes were acknowledged meanwhile; waits on (up to
/// [`RECOVERY_DEADLINE`]) while none is.
async fn steady_writes(load: &Load, steady: Duration) -> anyhow::Result<()> {
    let before = load.acks();
    tokio::time::sleep(steady).await;
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    while load.acks() == before {
        if Instant::now() > deadline {
            bail!("no write acknowledged for {RECOVERY_DEADLINE:?} while every node ran");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}
