//! The etcd target: three etcd members on 127.0.0.201–203 (free ports, the shape of
//! `scripts/bench.sh`), default settings but for the log format: JSON (`--logger=zap`), whose
//! timestamps have milliseconds, so the bench can read the elections back.
//!
//! The leader is the member whose `POST /v3/maintenance/status` names itself as leader; a
//! restarted member is back when it answers that status with a leader, and caught up when its
//! applied index reaches the leader's, read just before.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kvorum_tests::Cluster;
use serde::Deserialize;

use crate::elections::{LogFormat, Position, Positions};
use crate::load::{Api, Endpoints};
use crate::{Leader, Target};

/// Members of the cluster.
const MEMBERS: usize = 3;
/// Longest wait for a new cluster to elect a leader with every member answering.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// Time one status request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The parts of etcd's `StatusResponse` the bench reads (uint64 fields come as strings in the
/// JSON gateway; zero fields are left out).
#[derive(Debug, Deserialize)]
struct Status {
    header: Header,
    #[serde(default)]
    leader: Option<String>,
    #[serde(default, rename = "raftTerm")]
    raft_term: Option<String>,
    #[serde(default, rename = "raftAppliedIndex")]
    raft_applied_index: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Header {
    member_id: String,
}

impl Status {
    fn leader(&self) -> Option<&str> {
        self.leader.as_deref().filter(|l| *l != "0")
    }

    fn term(&self) -> u64 {
        self.raft_term
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }

    fn applied(&self) -> u64 {
        self.raft_applied_index
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0)
    }
}

/// One etcd member.
struct Member {
    name: String,
    client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    /// Its member id (decimal, as the gateway writes it), once it answered a status.
    id: Option<String>,
    child: Option<Child>,
}

/// An etcd cluster under the bench; its processes are killed when it is dropped, its folder
/// kept.
pub struct Etcd {
    bin: PathBuf,
    version: String,
    dir: PathBuf,
    initial_cluster: String,
    members: Vec<Member>,
    http: reqwest::Client,
}

impl Etcd {
    /// Starts the members and waits until each answers its status and they have a leader.
    pub async fn start(bin: &Path) -> anyhow::Result<Etcd> {
        let version = Command::new(bin)
            .arg("--version")
            .output()
            .with_context(|| {
                format!(
                    "cannot run {} (Debian/Ubuntu: apt-get install etcd-server)",
                    bin.display()
                )
            })?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("etcd, version unknown")
            .to_string();
        let dir = tempfile::Builder::new()
            .prefix("kvorum-failover-etcd-")
            .tempdir()
            .context("create the run's folder")?
            .keep();
        let members: Vec<Member> = (1..=MEMBERS)
            .map(|i| {
                let ip = format!("127.0.0.{}", usize::from(crate::FIRST_HOST) + i - 1);
                Member {
                    name: format!("e{i}"),
                    client: Cluster::free_addr(&ip),
                    peer: Cluster::free_addr(&ip),
                    data_dir: dir.join(format!("e{i}")),
                    log: dir.join(format!("e{i}.log")),
                    id: None,
                    child: None,
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .build()
            .context("an HTTP client")?;
        let mut etcd = Etcd {
            bin: bin.to_path_buf(),
            version,
            dir,
            initial_cluster,
            members,
            http,
        };
        for i in 0..MEMBERS {
            etcd.spawn(i)?;
        }
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let mut led = true;
            for i in 0..MEMBERS {
                match etcd.status(i).await {
                    Ok(s) => {
                        led &= s.leader().is_some();
                        etcd.members[i].id = Some(s.header.member_id);
                    }
                    Err(_) => led = false,
                }
            }
            if led {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd not led with every member answering within {START_DEADLINE:?}; logs in {}",
                    etcd.dir.display()
                );
            }
            tokio::time::sleep(crate::POLL).await;
        }
    }

    /// Starts member `i` on its data directory (a new cluster the first time; the flags of the
    /// initial cluster are ignored once the data directory holds one).
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let m = &mut self.members[i];
        assert!(m.child.is_none(), "{} already running", m.name);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&m.log)
            .with_context(|| format!("open {}", m.log.display()))?;
        let client = format!("http://{}", m.client);
        let peer = format!("http://{}", m.peer);
        let child = Command::new(&self.bin)
            .args([
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
                "--name",
                &m.name,
            ])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "kvorum-failover-bench"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("clone the log's handle")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        m.child = Some(child);
        Ok(())
    }

    /// Member `i`'s answer to `POST /v3/maintenance/status`.
    async fn status(&self, i: usize) -> Result<Status, String> {
        let url = format!("http://{}/v3/maintenance/status", self.members[i].client);
        let response = self
            .http
            .post(&url)
            .body("{}")
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("POST {url}: {}", response.status()));
        }
        response
            .json()
            .await
            .map_err(|e| format!("POST {url}: {e}"))
    }

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..MEMBERS).filter(|i| self.members[*i].child.is_some())
    }

    /// The index of the member with id `id`.
    fn index_of(&self, id: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.id.as_deref() == Some(id))
    }
}

impl Target for Etcd {
    fn describe(&self) -> String {
        format!("{} ({MEMBERS} members, default settings)", self.version)
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints::new(Api::Etcd, self.members.iter().map(|m| m.client).collect())
    }

    fn dir(&self) -> &Path {
        &self.dir
    }

    fn logs(&self) -> Vec<(String, PathBuf)> {
        self.members
            .iter()
            .map(|m| (m.name.clone(), m.log.clone()))
            .collect()
    }

    fn pids(&self) -> Vec<Option<u32>> {
        self.members
            .iter()
            .map(|m| m.child.as_ref().map(|c| c.id()))
            .collect()
    }

    fn log_format(&self) -> LogFormat {
        LogFormat::Etcd
    }

    async fn leader(&self) -> Option<Leader> {
        for i in self.running() {
            let Ok(s) = self.status(i).await else {
                continue;
            };
            if s.leader() == Some(s.header.member_id.as_str()) {
                return Some(Leader {
                    index: i,
                    name: self.members[i].name.clone(),
                    leads: "raft".into(),
                });
            }
        }
        None
    }

    async fn positions(&self) -> Positions {
        let mut raft = Position::default();
        for i in self.running() {
            if let Ok(s) = self.status(i).await {
                raft.term = raft.term.max(Some(s.term()));
                raft.index = raft.index.max(Some(s.applied()));
            }
        }
        Positions::from([("raft".to_string(), raft)])
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self, i: usize) {
        if let Err(e) = self.spawn(i) {
            // Reported by `recovered`, which then never holds.
            eprintln!(
                "failover-bench: cannot restart {}: {e:#}",
                self.members[i].name
            );
        }
    }

    async fn recovered(&self, i: usize) -> Result<(), String> {
        let name = &self.members[i].name;
        let s = self.status(i).await?;
        let leader = s
            .leader()
            .ok_or_else(|| format!("{name} knows no leader"))?;
        let l = self
            .index_of(leader)
            .ok_or_else(|| format!("{name} names an unknown leader {leader}"))?;
        let want = self.status(l).await?.applied();
        let have = self.status(i).await?.applied();
        if have < want {
            return Err(format!("{name} applied {have}, the leader {want}"));
        }
        Ok(())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..MEMBERS {
            self.kill(i);
        }
    }
}
