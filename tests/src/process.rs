//! The processes of a test cluster: [`Node`] (one kvnode process of the view), [`ExtraNode`] (a
//! process started next to the cluster, such as a node that joins it) and the [`Cluster`]
//! methods that start extra processes.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Cluster;

/// One kvnode process of a test cluster.
pub struct Node {
    /// Node id: 1-based position in the view.
    pub id: u64,
    /// The node's address.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log: stdout and stderr of every run.
    pub log: PathBuf,
    /// The running process; `None` while the node is down.
    pub(crate) child: Option<Child>,
}

impl Node {
    /// The PID of the running process, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Whether the node's process runs (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The node's log (stdout and stderr of every run), or "" if it cannot be read.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A kvnode process started next to a cluster with settings of its own (a node that joins it,
/// see [`Cluster::spawn_extra`]); killed by PID when dropped.
pub struct ExtraNode {
    /// The process's address.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log: stdout and stderr of every run.
    pub log: PathBuf,
    child: Option<Child>,
    /// How it was started, to start it again ([`ExtraNode::restart`]).
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl ExtraNode {
    /// The process's log (stdout and stderr), or "" if it cannot be read.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if the process has exited (reaping it), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Waits up to `within` for the process to exit by itself; returns its exit status, or
    /// `None` if it still runs at the deadline.
    pub async fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            if Instant::now() >= deadline || self.child.is_none() {
                return None;
            }
            tokio::time::sleep(crate::POLL).await;
        }
    }

    /// SIGKILL the process and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the process again as it was first started, with its data directory; its output
    /// goes on in the same log.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.addr);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open log");
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out);
        self.child = Some(cmd.spawn().expect("spawn kvnode"));
    }
}

impl Drop for ExtraNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free port on `ip`, found by binding port 0.
pub(crate) fn free_port(ip: &str) -> u16 {
    let l = TcpListener::bind(format!("{ip}:0")).expect("bind port 0");
    l.local_addr().expect("local addr").port()
}

impl Cluster {
    /// A free address on `ip` for a process started with [`Self::spawn_extra`].
    pub fn free_addr(ip: &str) -> SocketAddr {
        format!("{ip}:{}", free_port(ip)).parse().expect("addr")
    }

    /// Starts a new node at a free port of `ip` with `--join` (node 1's address) and waits until
    /// it answers `GET /v1/join` as waiting to be added.
    pub async fn start_joiner(&self, ip: &str) -> ExtraNode {
        let first = self.nodes[0].addr.to_string();
        let j = self.spawn_extra(Cluster::free_addr(ip), &["--join", &first], &[]);
        self.wait_joining(
            j.addr,
            Duration::from_secs(20),
            "the new node waiting to join",
        )
        .await;
        j
    }

    /// Waits until the node at `addr` answers `GET /v1/join` as waiting to be added (with the
    /// cluster's id it found), or panics after `within` naming `what`.
    pub async fn wait_joining(&self, addr: SocketAddr, within: Duration, what: &str) {
        self.wait_until(within, what, || async move {
            match reqwest::get(format!("http://{addr}/v1/join")).await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["state"] == "waiting" && v["cluster_id"].is_string()),
                Err(_) => false,
            }
        })
        .await;
    }

    /// Starts one more kvnode process at `addr`, with a fresh data directory and log in the
    /// cluster's folder, the cluster's secret, K and environment, but no VIEW: `env` and `args`
    /// say how it starts (e.g. `--join ADDR`, or a `VIEW` of its own).
    pub fn spawn_extra(
        &self,
        addr: SocketAddr,
        args: &[&str],
        env_extra: &[(&str, &str)],
    ) -> ExtraNode {
        // Unique even when a test starts two processes at one address.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("extra{n}-{}-{}", addr.ip(), addr.port());
        let data_dir = self.path().join(&name);
        let log = self.path().join(format!("{name}.log"));
        let mut env: Vec<(String, String)> = vec![
            ("IPPORT".into(), addr.to_string()),
            ("K".into(), self.opts.k.to_string()),
            ("KVORUM_DATA_DIR".into(), data_dir.display().to_string()),
            ("KVORUM_CLUSTER_SECRET".into(), "test-secret".into()),
            ("RUST_LOG".into(), "info,openraft=warn".into()),
        ];
        env.extend(self.opts.env.iter().cloned());
        env.extend(
            env_extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut x = ExtraNode {
            addr,
            data_dir,
            log,
            child: None,
            bin: self.opts.bin.clone(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
        };
        let _ = std::fs::File::create(&x.log).expect("create log");
        x.restart();
        x
    }
}
