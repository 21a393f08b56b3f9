//! Test harness: clusters of real `kvnode` processes on distinct loopback addresses, each with a
//! fresh data directory, stopped by PID when the cluster is dropped.
//!
//! The binary is `kvnode-test`, this package's build of the kvnode program (see
//! [`kvnode_bin!`]), so `cargo test` builds it with everything else. It carries the `stale-reads`
//! fault, off unless a cluster asks for it.
//!
//! When a test panics, the cluster's folder (node logs, data) is kept and its path printed.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvorum_client::{Client, ClientOptions};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The path of the kvnode binary built for the tests; expands in the integration test, where
/// cargo provides it.
#[macro_export]
macro_rules! kvnode_bin {
    () => {
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_kvnode-test"))
    };
}

/// One kvnode process of a test cluster.
pub struct Node {
    /// Node id: 1-based position in the view.
    pub id: u64,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    /// The PID of the running process, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// Settings of a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The kvnode binary: `kvnode_bin!()`.
    pub bin: PathBuf,
    pub nodes: usize,
    pub k: usize,
    /// Inject the stale-reads fault (reads skip read index).
    pub stale_reads: bool,
    /// Extra environment for every node.
    pub env: Vec<(String, String)>,
}

impl ClusterOptions {
    pub fn new(bin: PathBuf, nodes: usize, k: usize) -> Self {
        ClusterOptions {
            bin,
            nodes,
            k,
            stale_reads: false,
            env: Vec::new(),
        }
    }
}

/// A cluster of real kvnode processes on 127.0.0.{1..N}.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub dir: Option<tempfile::TempDir>,
    view: String,
    opts: ClusterOptions,
}

/// A free port on `ip`, found by binding port 0.
fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind(format!("{ip}:0")).expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

impl Cluster {
    /// Starts `opts.nodes` nodes with fresh data directories and waits until a leader is known.
    pub async fn start(opts: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("kvorum-test-")
            .tempdir()
            .expect("tempdir");
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let ip = format!("127.0.0.{}", i + 1);
            let port = free_port(&ip);
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("addr");
            let data_dir = dir.path().join(format!("node{}", i + 1));
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
        let mut c = Cluster {
            nodes,
            dir: Some(dir),
            view,
            opts,
        };
        for i in 0..c.nodes.len() {
            c.spawn(i);
        }
        c.wait_for_leader(Duration::from_secs(30)).await;
        c
    }

    /// The cluster's folder (node logs and data).
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .expect("dir present until drop")
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {} already running", node.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open log");
        let mut cmd = Command::new(&self.opts.bin);
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
        node.child = Some(cmd.spawn().expect("spawn kvnode"));
    }

    /// SIGKILL node `i` (0-based) and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
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

    /// A client of every node, which fails over between them.
    pub fn client(&self) -> Client {
        self.client_of(&(0..self.nodes.len()).collect::<Vec<_>>())
    }

    /// A client of the given nodes only (0-based).
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
    }

    /// The leader (node id) as reported by the running nodes, if they agree on one.
    pub async fn leader(&self) -> Option<u64> {
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_running() {
                continue;
            }
            let c = Client::new(
                vec![n.addr.to_string()],
                ClientOptions {
                    request_timeout: Duration::from_secs(2),
                    retry_for: Duration::ZERO,
                    local_address: None,
                },
            )
            .ok()?;
            if let Ok(s) = c.status().await {
                if let Some(l) = s["groups"][0]["leader"].as_u64() {
                    if self.nodes.iter().any(|n| n.id == l && n.is_running()) {
                        let _ = i;
                        return Some(l);
                    }
                }
            }
        }
        None
    }

    /// Waits until a running node reports a running leader; panics at the deadline.
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
            tokio::time::sleep(Duration::from_millis(100)).await;
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
            tokio::time::sleep(Duration::from_millis(100)).await;
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
        if std::thread::panicking() {
            if let Some(d) = self.dir.take() {
                let p = d.keep();
                eprintln!("test failed: cluster logs and data kept in {}", p.display());
            }
        }
    }
}

pub mod jepsen;
pub mod nemesis;
