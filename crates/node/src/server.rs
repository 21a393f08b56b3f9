//! Starting and stopping a node: identity, store, the data group's replica (when this node is
//! a member), the HTTP server, graceful shutdown.
//!
//! Steps of `run`: (1) load or create the identity in the data directory, (2) open RocksDB,
//! (3) when this node is among the first K of the view, start its replica of the data group and
//! initialize the group if it is pristine (every member does so with the same membership, which
//! openraft allows), (4) serve the client API and the internal transport on the listener until
//! `shutdown` resolves, (5) stop the replica.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use kvorum_raftstore::{GroupId, NodeId, Raft, Store};
use kvorum_router::FIRST_DATA_GROUP;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};

use crate::config::Config;
use crate::identity::Identity;
use crate::reads::ReadBatcher;
use crate::transport::Network;

/// Largest number of log entries per append RPC: bounds an RPC at this many max-size values.
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Log entries kept after a snapshot, so that a briefly lagging follower needs no snapshot.
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 5_000;

/// Shared state of a running node.
pub struct NodeState {
    pub cfg: Config,
    pub identity: Identity,
    pub store: Store,
    /// Replicas hosted here, by group.
    groups: HashMap<GroupId, Raft>,
    /// Read batchers of the hosted replicas.
    reads: HashMap<GroupId, ReadBatcher>,
    /// Members of the data group: the first K nodes of the view.
    pub members: BTreeMap<NodeId, SocketAddr>,
    /// HTTP client for forwarding and the Raft transport; binds to this node's IP.
    pub http: reqwest::Client,
    /// Injected fault (feature `stale-reads` and `KVORUM_FAULT_STALE_READS=1`): serve
    /// linearizable reads from local state without read index. Tests must catch it.
    pub fault_stale_reads: bool,
}

impl NodeState {
    /// This node's replica of `group`, if hosted here.
    pub fn group(&self, group: GroupId) -> Option<&Raft> {
        self.groups.get(&group)
    }

    /// The read batcher of `group`, if hosted here.
    pub fn reads(&self, group: GroupId) -> Option<&ReadBatcher> {
        self.reads.get(&group)
    }

    /// Whether this node is a spare (in no data group).
    pub fn is_spare(&self) -> bool {
        !self.members.contains_key(&self.identity.node_id)
    }
}

fn raft_config(cfg: &Config, cluster_id: &str) -> anyhow::Result<openraft::Config> {
    let election = cfg.election_timeout.as_millis() as u64;
    let c = openraft::Config {
        cluster_name: format!("kvorum-{cluster_id}"),
        heartbeat_interval: cfg.heartbeat.as_millis() as u64,
        election_timeout_min: election,
        election_timeout_max: election * 2,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
        max_in_snapshot_log_to_keep: LOGS_KEPT_AFTER_SNAPSHOT,
        install_snapshot_timeout: 10_000,
        ..Default::default()
    };
    c.validate().context("invalid Raft settings")
}

/// Builds the HTTP client used for forwarding and the Raft transport.
fn http_client(cfg: &Config) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        // Bind outgoing connections to our own address, so packet filters on address pairs
        // can partition loopback clusters.
        .local_address(cfg.listen.ip())
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .context("cannot build HTTP client")
}

/// Runs a node on `listener` until `shutdown` resolves, then stops it cleanly.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let identity = Identity::load_or_create(&cfg.data_dir, &cfg)?;
    if cfg.dev_secret {
        tracing::warn!(
            "no cluster secret configured (KVORUM_CLUSTER_SECRET); using the development default. \
             Anyone who can reach this port can join the Raft transport: set a secret in production"
        );
    }
    let store = Store::open(&cfg.data_dir)
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    let members: BTreeMap<NodeId, SocketAddr> = identity
        .view
        .iter()
        .take(identity.k)
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, *a))
        .collect();
    let http = http_client(&cfg)?;
    let mut groups = HashMap::new();
    let mut reads = HashMap::new();
    if members.contains_key(&identity.node_id) {
        let group = FIRST_DATA_GROUP;
        let network = Network {
            http: http.clone(),
            group,
            secret: cfg.cluster_secret.as_str().into(),
            cluster_id: identity.cluster_id.as_str().into(),
        };
        let sm = store
            .state_machine(group)
            .await
            .context("cannot open the state machine")?;
        let raft = Raft::new(
            identity.node_id,
            Arc::new(raft_config(&cfg, &identity.cluster_id)?),
            network,
            store.log_store(group),
            sm,
        )
        .await
        .context("cannot start the Raft replica")?;
        if !raft.is_initialized().await? {
            let nodes: BTreeMap<NodeId, BasicNode> = members
                .iter()
                .map(|(id, a)| (*id, BasicNode::new(a.to_string())))
                .collect();
            match raft.initialize(nodes).await {
                Ok(()) => tracing::info!(group = %group, "initialized the group"),
                // Another member initialized first and we already hold its log: fine.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => return Err(e).context("cannot initialize the group"),
            }
        }
        reads.insert(group, ReadBatcher::spawn(raft.clone()));
        groups.insert(group, raft);
    }
    let fault_stale_reads = cfg!(feature = "stale-reads")
        && std::env::var("KVORUM_FAULT_STALE_READS").is_ok_and(|v| v == "1");
    if fault_stale_reads {
        tracing::error!(
            "FAULT INJECTED: reads skip read index and may be stale (KVORUM_FAULT_STALE_READS=1)"
        );
    }
    let state = Arc::new(NodeState {
        cfg: cfg.clone(),
        identity: identity.clone(),
        store,
        groups,
        reads,
        members,
        http,
        fault_stale_reads,
    });
    tracing::info!(
        node = identity.node_id,
        cluster = %identity.cluster_id,
        addr = %identity.addr,
        role = if state.is_spare() { "spare" } else { "replica" },
        "kvnode serving"
    );
    let app = crate::api::router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")?;
    tracing::info!("shutting down");
    for (group, raft) in &state.groups {
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(group = %group, error = %e, "replica did not stop cleanly");
        }
    }
    Ok(())
}
