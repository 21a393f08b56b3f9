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
//! A run prints its seed; `KVORUM_JEPSEN_SEED` replays the same schedule of operations and faults
//! (timings still vary).

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_checker::{CheckOptions, Command as Op, Recorder, Report, Verdict};
use kvorum_client::{Client, ClientError, ClientOptions, Condition};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::nemesis::{connected, Nemesis, PartitionShape, Partitioner};
use crate::{group_of_key, spread_keys, Cluster, ClusterOptions};

/// Address the workers connect from; no partition rule mentions it.
const CLIENT_IP: &str = "127.0.1.1";

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
    /// Length of a quiet period and of a fault.
    pub fault_period: Duration,
    /// Extra environment for every node (for example shorter failure-detection timeouts).
    pub env: Vec<(String, String)>,
    /// 0-based indexes of the nodes the nemesis may hit; `None`: all.
    pub targets: Option<Vec<usize>>,
}

impl JepsenOptions {
    /// A short run of `nemeses` on 6 nodes with K=3 (two data groups);
    /// `KVORUM_JEPSEN_LONG=1` makes it 5 minutes.
    pub fn short(bin: PathBuf, name: &str, nemeses: &[Nemesis]) -> JepsenOptions {
        let long = std::env::var("KVORUM_JEPSEN_LONG").is_ok_and(|v| v == "1");
        JepsenOptions {
            name: name.to_string(),
            seed: seed_from_env(),
            nodes: 6,
            k: 3,
            duration: Duration::from_secs(if long { 300 } else { 20 }),
            clients: 6,
            keys: 6,
            nemeses: nemeses.to_vec(),
            bin,
            stale_reads: false,
            fault_period: Duration::from_secs(3),
            env: Vec::new(),
            targets: None,
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
    pub ops: usize,
    pub faults: usize,
    /// The cluster status when the run ended (every group had a leader again).
    pub final_status: crate::ClusterStatus,
}

impl Outcome {
    pub fn linearizable(&self) -> bool {
        matches!(self.report.verdict, Verdict::Linearizable)
    }
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

/// Runs one Jepsen-style test and returns the checker's verdict. Panics only on harness errors.
pub async fn run(opts: JepsenOptions) -> Outcome {
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
    let partitioner = if opts.nemeses.contains(&Nemesis::Partition) {
        Some(Partitioner::new().expect("partitions unavailable; the caller checks first"))
    } else {
        None
    };
    let mut copts = ClusterOptions::new(opts.bin.clone(), opts.nodes, opts.k);
    copts.stale_reads = opts.stale_reads;
    copts.env = opts.env.clone();
    let cluster = Arc::new(tokio::sync::Mutex::new(Cluster::start(copts).await));
    let addrs: Vec<String> = cluster
        .lock()
        .await
        .nodes
        .iter()
        .map(|n| n.addr.to_string())
        .collect();
    let ips: Vec<IpAddr> = cluster
        .lock()
        .await
        .nodes
        .iter()
        .map(|n| n.addr.ip())
        .collect();
    let recorder = Arc::new(Recorder::create(&dir.join("history.jsonl")).expect("history file"));
    let timeline = Arc::new(Timeline {
        out: Mutex::new(std::fs::File::create(dir.join("nemesis.log")).expect("nemesis log")),
        start: Instant::now(),
    });
    let map = cluster.lock().await.initial_map();
    let keys = spread_keys(&map, "k", opts.keys);
    let groups: BTreeSet<u64> = keys.iter().map(|k| group_of_key(&map, k)).collect();
    eprintln!(
        "jepsen {}: {} nodes, K={}, keys {keys:?} in groups {groups:?}",
        opts.name, opts.nodes, opts.k
    );
    assert!(
        opts.keys < map.groups.len() || groups.len() == map.groups.len(),
        "the keys {keys:?} miss some of the {} data groups",
        map.groups.len()
    );
    let client_ip: IpAddr = CLIENT_IP.parse().expect("ip");
    // Per node, a plain client (the node serves or forwards) and a smart one (routed by the
    // cluster map to the key's group, falling back to the node).
    let node_clients = |smart: bool| -> Arc<Vec<Client>> {
        Arc::new(
            addrs
                .iter()
                .map(|a| {
                    Client::new(
                        vec![a.clone()],
                        ClientOptions {
                            request_timeout: Duration::from_secs(3),
                            retry_for: Duration::ZERO,
                            local_address: Some(client_ip),
                        },
                    )
                    .expect("client")
                    .with_smart_routing(smart)
                })
                .collect(),
        )
    };
    let (plain_clients, smart_clients) = (node_clients(false), node_clients(true));

    // Workers.
    let stop = Arc::new(AtomicBool::new(false));
    let next_process = Arc::new(AtomicU64::new(opts.clients as u64));
    let mut workers = Vec::new();
    for w in 0..opts.clients {
        let ctx = Worker {
            process: w as u64,
            rng: StdRng::seed_from_u64(opts.seed.wrapping_add(1 + w as u64)),
            // Even workers exercise forwarding, odd ones smart routing.
            clients: if w % 2 == 0 {
                plain_clients.clone()
            } else {
                smart_clients.clone()
            },
            recorder: recorder.clone(),
            keys: keys.clone(),
            next_process: next_process.clone(),
            seen: HashMap::new(),
            n: 0,
        };
        let stop = stop.clone();
        workers.push(tokio::spawn(ctx.run(stop)));
    }

    // Nemesis.
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let end = Instant::now() + opts.duration;
    let mut faults = 0;
    timeline.log("start");
    while Instant::now() + opts.fault_period * 2 <= end && !opts.nemeses.is_empty() {
        tokio::time::sleep(opts.fault_period).await;
        let nemesis = opts.nemeses[rng.gen_range(0..opts.nemeses.len())];
        let target = match &opts.targets {
            Some(t) if !t.is_empty() => t[rng.gen_range(0..t.len())],
            _ => rng.gen_range(0..opts.nodes),
        };
        faults += 1;
        match nemesis {
            Nemesis::Kill => {
                timeline.log(&format!("kill node {}", target + 1));
                cluster.lock().await.kill(target);
                tokio::time::sleep(opts.fault_period).await;
                timeline.log(&format!("restart node {}", target + 1));
                cluster.lock().await.restart(target);
            }
            Nemesis::Pause => {
                timeline.log(&format!("pause node {}", target + 1));
                cluster.lock().await.pause(target, true);
                tokio::time::sleep(opts.fault_period).await;
                timeline.log(&format!("resume node {}", target + 1));
                cluster.lock().await.pause(target, false);
            }
            Nemesis::Partition => {
                let p = partitioner.as_ref().expect("partitioner");
                let shape = match rng.gen_range(0..3) {
                    0 => PartitionShape::RandomHalves,
                    1 => {
                        // The leader of a random group: 0 is the config group (the metadata
                        // leader), 1.. the data groups.
                        let group = rng.gen_range(0..=map.groups.len() as u64);
                        let c = cluster.lock().await;
                        let leader = if group == 0 {
                            c.metadata_leader().await
                        } else {
                            c.group_leader(group).await
                        };
                        PartitionShape::Isolate(leader.map_or(target, |l| c.index_of(l)))
                    }
                    _ => PartitionShape::MajorityRing,
                };
                let side: Vec<bool> = (0..opts.nodes).map(|_| rng.gen()).collect();
                timeline.log(&format!("partition {shape:?} sides {side:?}"));
                p.cut(&ips, |a, b| connected(shape, opts.nodes, &side, a, b))
                    .expect("nft rules");
                tokio::time::sleep(opts.fault_period).await;
                timeline.log("heal partition");
                p.heal().expect("nft heal");
            }
        }
    }
    let rest = end.saturating_duration_since(Instant::now());
    tokio::time::sleep(rest).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    timeline.log("workers stopped; final reads");

    // Final reads through any node, after everything healed and every group has a leader.
    let final_status = {
        let c = cluster.lock().await;
        c.wait_ready(Duration::from_secs(30)).await
    };
    let final_client = {
        let c = cluster.lock().await;
        let eps = c.nodes.iter().map(|n| n.addr.to_string()).collect();
        Client::new(
            eps,
            ClientOptions {
                request_timeout: Duration::from_secs(5),
                retry_for: Duration::from_secs(20),
                local_address: Some(client_ip),
            },
        )
        .expect("client")
    };
    for key in &keys {
        for _attempt in 0..5 {
            let p = next_process.fetch_add(1, Ordering::Relaxed);
            let _ = recorder.invoke(p, key, &Op::Get);
            match final_client.get(key, false).await {
                Ok(v) => {
                    let _ = recorder.ok(p, Some(&v.value));
                    break;
                }
                Err(ClientError::NotFound) => {
                    let _ = recorder.ok(p, None);
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
    }
    drop(partitioner);
    let file = std::fs::File::open(dir.join("history.jsonl")).expect("history");
    let history =
        kvorum_checker::parse_history(std::io::BufReader::new(file)).expect("valid history");
    let ops = history.len();
    let report = kvorum_checker::check(
        &history,
        &CheckOptions {
            time_limit: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let _ = std::fs::write(dir.join("report.txt"), report.to_text());
    let _ = std::fs::write(dir.join("report.html"), report.to_html());
    eprintln!(
        "jepsen {}: {} operations, {} faults, verdict {:?} ({})",
        opts.name,
        ops,
        faults,
        report.verdict,
        dir.join("report.txt").display()
    );
    Outcome {
        dir,
        report,
        ops,
        faults,
        final_status,
    }
}

/// One client process of the workload.
struct Worker {
    process: u64,
    rng: StdRng,
    clients: Arc<Vec<Client>>,
    recorder: Arc<Recorder>,
    keys: Vec<String>,
    next_process: Arc<AtomicU64>,
    /// Last value this worker saw per key, to make cas succeed sometimes.
    seen: HashMap<String, Option<String>>,
    n: u64,
}

/// How an operation ended, for the history.
enum End {
    Ok(Option<String>),
    Fail,
    Info,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            let key = self.keys[self.rng.gen_range(0..self.keys.len())].clone();
            let client = &self.clients[self.rng.gen_range(0..self.clients.len())];
            self.n += 1;
            let fresh = format!("{}.{}", self.process, self.n);
            let op = match self.rng.gen_range(0..100) {
                0..=39 => Op::Get,
                40..=59 => Op::Put { value: fresh },
                60..=69 => Op::Delete,
                70..=84 => {
                    let expected = match self.seen.get(&key) {
                        Some(v) if self.rng.gen_bool(0.7) => v.clone(),
                        _ => None,
                    };
                    Op::Cas {
                        expected,
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
                    Ok(v) => End::Ok(Some(v.value)),
                    Err(ClientError::NotFound) => End::Ok(None),
                    // A read that failed had no effect, whatever the reason.
                    Err(_) => End::Fail,
                },
                Op::Put { value } => write_end(client.put(&key, value, None).await.map(|_| ())),
                Op::Delete => write_end(client.delete(&key, None).await.map(|_| ())),
                Op::Append { value } => write_end(client.append(&key, value).await.map(|_| ())),
                Op::Cas { expected, value } => {
                    let expect = match expected {
                        Some(v) => Condition::Value(Some(v.clone())),
                        None => Condition::Version(0),
                    };
                    let new = value.clone().unwrap_or_default();
                    match client.put(&key, &new, Some(expect)).await {
                        Ok(_) => End::Ok(None),
                        // For cas, `fail` asserts the current value differed: only a failed
                        // condition means that. Other definite errors did nothing, which `info`
                        // ("may never have happened") also allows.
                        Err(ClientError::ConditionFailed { .. }) => End::Fail,
                        Err(_) => End::Info,
                    }
                }
            };
            let recorded = match &end {
                End::Ok(read) => {
                    if let Op::Get = op {
                        self.seen.insert(key.clone(), read.clone());
                    }
                    self.recorder.ok(self.process, read.as_deref())
                }
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

fn write_end(r: Result<(), ClientError>) -> End {
    match r {
        Ok(()) => End::Ok(None),
        Err(e) if e.is_definite() => End::Fail,
        Err(_) => End::Info,
    }
}
