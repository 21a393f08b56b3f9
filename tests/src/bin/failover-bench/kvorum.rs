//! The kvorum target: three `kvnode` processes with K=3 (data group 1 and the config group),
//! default settings, started and killed by the test harness ([`Cluster`]).
//!
//! The leader comes from `GET /v1/cluster/status` (the metadata leader's view); a restarted
//! node is back when that status shows it alive and every group led, and caught up when its
//! applied index of each group (`GET /metrics`) reaches its leader's, read just before.

use std::path::{Path, PathBuf};

use kvorum_tests::{node_state, status_group, Cluster, ClusterOptions, START_TIMEOUT};

use crate::elections::{LogFormat, Position, Positions};
use crate::load::{Api, Endpoints};
use crate::{KillKind, Leader, Target};

/// Nodes of the cluster.
const NODES: usize = 3;
/// Replicas per data group: all three nodes form group 1.
const K: usize = 3;
/// The data group whose writes are measured.
const DATA_GROUP: u64 = 1;
/// The config group's id (the metadata leader's group).
const CONFIG_GROUP: u64 = 0;
/// The nodes' log filter: openraft at info logs its election steps (timer fired, vote requests
/// sent, received and refused), which the bench reads back (`elections.rs`).
const LOG_FILTER: &str = "info,openraft=info";

/// A kvorum cluster under the bench.
pub struct Kvorum {
    cluster: Cluster,
    bin: PathBuf,
    kill: KillKind,
    http: reqwest::Client,
}

impl Kvorum {
    /// Starts the cluster and waits until it serves with its map settled; panics (keeping the
    /// logs) if it does not within the harness's start timeout.
    pub async fn start(bin: PathBuf, kill: KillKind) -> Kvorum {
        let opts = ClusterOptions::new(bin.clone(), NODES, K)
            .with_env("RUST_LOG", LOG_FILTER)
            .with_first_host(crate::FIRST_HOST);
        let cluster = Cluster::start(opts).await;
        cluster.wait_settled(START_TIMEOUT).await;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("a client with a timeout builds");
        Kvorum {
            cluster,
            bin,
            kill,
            http,
        }
    }

    /// Node `i`'s last applied log index of `group`, from its metrics.
    async fn applied(&self, i: usize, group: u64) -> Result<u64, String> {
        let url = format!("http://{}/metrics", self.cluster.nodes[i].addr);
        let text = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .text()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let series = format!("kvorum_raft_applied_index{{group=\"{group}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("GET {url}: no applied index of group {group}"))
    }

    fn id(&self, i: usize) -> u64 {
        self.cluster.nodes[i].id
    }
}

impl Target for Kvorum {
    fn describe(&self) -> String {
        format!(
            "kvorum {} ({NODES} nodes, K={K}: data group {DATA_GROUP} and the config group; \
             default settings)",
            self.bin.display()
        )
    }

    fn endpoints(&self) -> Endpoints {
        Endpoints::new(
            Api::Kvorum,
            self.cluster.nodes.iter().map(|n| n.addr).collect(),
        )
    }

    fn dir(&self) -> &Path {
        self.cluster.path()
    }

    fn logs(&self) -> Vec<(String, PathBuf)> {
        self.cluster
            .nodes
            .iter()
            .map(|n| (format!("node {}", n.id), n.log.clone()))
            .collect()
    }

    fn pids(&self) -> Vec<Option<u32>> {
        self.cluster.nodes.iter().map(|n| n.pid()).collect()
    }

    fn log_format(&self) -> LogFormat {
        LogFormat::Kvorum
    }

    async fn leader(&self) -> Option<Leader> {
        let s = self.cluster.status().await?;
        if !self.cluster.shows_ready(&s) {
            return None;
        }
        let data = status_group(&s, DATA_GROUP).and_then(|g| g.leader);
        let meta = s.metadata_leader;
        let id = match self.kill {
            KillKind::DataLeader => data?,
            KillKind::MetadataLeader => meta?,
        };
        let leads: Vec<String> = [
            (data == Some(id)).then(|| format!("data group {DATA_GROUP}")),
            (meta == Some(id)).then(|| "config group".to_string()),
        ]
        .into_iter()
        .flatten()
        .collect();
        Some(Leader {
            index: self.cluster.index_of(id),
            name: format!("node {id}"),
            leads: leads.join(", "),
        })
    }

    async fn positions(&self) -> Positions {
        let mut positions = Positions::new();
        let Some(s) = self.cluster.status().await else {
            return positions;
        };
        if let Some(g) = status_group(&s, DATA_GROUP) {
            positions.insert(
                "data".into(),
                Position {
                    term: g.term,
                    index: g.applied,
                },
            );
        }
        let index = match s.metadata_leader {
            Some(l) => self
                .applied(self.cluster.index_of(l), CONFIG_GROUP)
                .await
                .ok(),
            None => None,
        };
        positions.insert(
            "config".into(),
            Position {
                term: s.config.term,
                index,
            },
        );
        positions
    }

    fn kill(&mut self, i: usize) {
        self.cluster.kill(i);
    }

    fn restart(&mut self, i: usize) {
        self.cluster.restart(i);
    }

    async fn recovered(&self, i: usize) -> Result<(), String> {
        let id = self.id(i);
        let s = self
            .cluster
            .status_of(i)
            .await
            .map_err(|e| format!("node {id} does not answer its status: {e}"))?;
        if !self.cluster.shows_ready(&s) {
            return Err("the status does not show every group led".into());
        }
        let state = node_state(&s, id);
        if state != "alive" {
            return Err(format!("node {id} is {state}"));
        }
        let leaders = [
            (
                DATA_GROUP,
                status_group(&s, DATA_GROUP).and_then(|g| g.leader),
            ),
            (CONFIG_GROUP, s.metadata_leader),
        ];
        for (group, leader) in leaders {
            let leader = leader.ok_or_else(|| format!("group {group} has no leader"))?;
            let want = self.applied(self.cluster.index_of(leader), group).await?;
            let have = self.applied(i, group).await?;
            if have < want {
                return Err(format!(
                    "node {id} applied {have} of group {group}, its leader {want}"
                ));
            }
        }
        Ok(())
    }
}

impl Drop for Kvorum {
    /// Stops the nodes and keeps their folder: the logs are the bench's record.
    fn drop(&mut self) {
        for i in 0..self.cluster.nodes.len() {
            self.cluster.kill(i);
        }
        if let Some(dir) = self.cluster.dir.take() {
            let _ = dir.keep();
        }
    }
}
