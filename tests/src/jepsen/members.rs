//! The nodes of a run as the workers, the nemeses and a scenario see them: [`Endpoint`] (a node
//! and its clients), [`Members`] (the nodes present, and which a fault or a change holds) and
//! [`Ctx`] (what a scenario gets).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_client::{Client, ClientOptions, TaskProgress, TaskState};
use kvorum_router::ClusterMap;
use rand::rngs::StdRng;
use rand::Rng;

use super::report::Timeline;
use crate::{Cluster, ExtraNode};

/// Address the workers connect from; no partition rule mentions it.
const CLIENT_IP: &str = "127.0.1.1";

/// Longest wait for a node started with `--join` to answer as waiting.
const JOINER_UP_WITHIN: Duration = Duration::from_secs(20);

/// A node the workers may use: its id, address, and a plain and a smart client of it.
#[derive(Clone)]
pub struct Endpoint {
    /// The node's id.
    pub id: u64,
    /// The node's address.
    pub addr: SocketAddr,
    pub(super) plain: Arc<Client>,
    pub(super) smart: Arc<Client>,
}

impl Endpoint {
    pub(super) fn new(id: u64, addr: SocketAddr) -> Endpoint {
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
pub(super) struct MembersState {
    pub(super) endpoints: Vec<Endpoint>,
    pub(super) extras: Vec<ExtraNode>,
    /// Nodes a view change adds or removes right now.
    pub(super) changing: BTreeSet<u64>,
    /// Nodes killed or paused right now.
    pub(super) faulted: BTreeSet<u64>,
    pub(super) removed: BTreeSet<u64>,
}

impl Members {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, MembersState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn pick(&self, rng: &mut StdRng) -> Option<Endpoint> {
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
    pub(super) fn claim_fault(&self, id: u64) -> bool {
        let mut s = self.lock();
        if s.changing.contains(&id) || s.removed.contains(&id) {
            return false;
        }
        s.faulted.insert(id)
    }

    pub(super) fn release_fault(&self, id: u64) {
        self.lock().faulted.remove(&id);
    }

    /// Marks node `id` as the subject of a change, unless a fault holds it.
    pub(super) fn claim_change(&self, id: u64) -> bool {
        let mut s = self.lock();
        if s.faulted.contains(&id) || s.removed.contains(&id) {
            return false;
        }
        s.changing.insert(id)
    }

    pub(super) fn release_change(&self, id: u64) {
        self.lock().changing.remove(&id);
    }

    /// Takes node `id` out of the workers' list (its removal starts); returns its entry.
    pub(super) fn take(&self, id: u64) -> Option<Endpoint> {
        let mut s = self.lock();
        let i = s.endpoints.iter().position(|e| e.id == id)?;
        Some(s.endpoints.remove(i))
    }

    pub(super) fn put(&self, e: Endpoint) {
        self.lock().endpoints.push(e);
    }

    pub(super) fn keep_extra(&self, x: ExtraNode) {
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

/// The workers' address, [`CLIENT_IP`].
pub(super) fn client_ip() -> IpAddr {
    CLIENT_IP.parse().expect("ip")
}

/// What a scenario (see [`run_with`](super::run_with)) gets: the cluster, the nodes the workers use, the run's
/// keys and seed, and the nemesis timeline.
pub struct Ctx {
    /// The cluster of the initial view.
    pub cluster: Arc<tokio::sync::Mutex<Cluster>>,
    /// The nodes the workers use, and which a fault or a change holds.
    pub members: Arc<Members>,
    /// The run's keys.
    pub keys: Vec<String>,
    /// The run's seed.
    pub seed: u64,
    pub(super) timeline: Arc<Timeline>,
    /// Addresses of nodes started to join, in order: 127.0.0.{nodes+1}, …
    pub(super) next_ip: AtomicU64,
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
