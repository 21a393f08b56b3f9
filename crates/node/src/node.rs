//! The node's shared state: its identity and store, the replicas it hosts, and its copy of the
//! cluster map with leader hints (the routing cache).
//!
//! Which replicas a node hosts follows the map: the config group (always: an uninitialized
//! replica on a non-voter is idle until the metadata leader adds it), every data group the map
//! lists it in, and every group a task is adding it to. Replicas are created when the map
//! changes and never dropped while the node runs.
//!
//! The map itself lives in the config group's state machine as the value of [`crate::map_copies::MAP_KEY`], written
//! only by the metadata leader with a compare-and-set on its version (see `meta/record.rs`). Nodes learn
//! newer maps from heartbeat replies; config voters also read it from their own replica.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use kvorum_raftstore::{GroupId, NodeId, Raft, Store, StoreError};
use kvorum_router::{ClusterMap, RoutingCache, Slot, Step, TaskKind, CONFIG_GROUP};
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::election::{self, LeaderClock};
use crate::error::ApiError;
use crate::faults::NodeFaults;
use crate::group::steps::GroupSteps;
use crate::http::listener::Connections;
use crate::identity::Identity;
use crate::incarnation::{Incarnations, INCARNATION_HEADER};
use crate::map_copies::{stored_map_in, write_map_file};
use crate::network::Network;
use crate::serve::read_index::ReadBatcher;
use kvorum_wire::headers::{CLUSTER_HEADER, SECRET_HEADER};

/// Largest number of log entries per append RPC: bounds an RPC at this many max-size values.
const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Timeout of one snapshot chunk RPC, ms (openraft sends a snapshot in chunks of up to 3 MiB):
/// such a chunk crosses a link of about 2.5 Mbit/s within it.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;
/// How long an idle pooled connection to a peer is kept, at most: steady Raft and heartbeat
/// traffic reuses its connections, and a peer gone for a minute is forgotten. Never more than
/// half the peers' `idle_timeout`, so that this node drops an idle connection before the peer
/// closes it, which could be just as a request is sent on it.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest a TCP connect to a peer may take: a live peer on a LAN answers in milliseconds, so a
/// connect still pending after a second is to a dead or cut-off host, and the caller moves on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One replica hosted by this node.
#[derive(Clone)]
pub struct Replica {
    /// The replica's Raft instance.
    pub(crate) raft: Raft,
    /// Its read-index batcher (one round serves the reads that queued meanwhile).
    pub(crate) reads: ReadBatcher,
    /// When it last heard its leader (the transport notes it; elections and pre-votes read it).
    pub(crate) clock: Arc<LeaderClock>,
}

/// Shared state of a running node.
pub struct Node {
    /// The node's settings, fixed at start.
    pub(crate) cfg: Config,
    /// Who this node is: its id, cluster, address and incarnation.
    pub(crate) identity: Identity,
    /// The node's RocksDB store, shared by all its replicas.
    pub(crate) store: Store,
    /// Replicas hosted here, by group.
    groups: RwLock<HashMap<GroupId, Replica>>,
    /// The newest cluster map this node knows, and leader hints.
    routing: RwLock<RoutingCache>,
    /// The metadata leader as this node last learned it (from a heartbeat reply, or itself
    /// while it holds the role): where requests for the metadata leader go first.
    metadata_leader: std::sync::Mutex<Option<NodeId>>,
    /// What this node keeps as a group's leader about the steps drivers send it.
    pub(crate) steps: GroupSteps,
    /// Wakes the heartbeat loop early (a request saw a newer epoch).
    pub(crate) refresh: Notify,
    /// The epoch of the installed map, for [`Node::learn_epoch`] to wait on.
    epoch: watch::Sender<u64>,
    /// Set when the node must stop (it was removed from the cluster, or one of its replicas
    /// stopped on a fatal error); carries the reason.
    pub(crate) fatal: Arc<watch::Sender<Option<String>>>,
    /// Set (before `fatal`) when the node stops because a repair replaced it: the server then
    /// drops its stale replicas and rejoins as a new node instead of exiting.
    rejoin: std::sync::atomic::AtomicBool,
    /// The incarnations the known map records, shared with the Raft transport.
    pub(crate) incarnations: Incarnations,
    /// HTTP client for forwarding and the Raft transport; binds to this node's IP.
    pub(crate) http: reqwest::Client,
    /// Serializes map installs with their writes of [`MAP_FILE`], so that an older map never
    /// overwrites a newer one.
    map_file: std::sync::Mutex<()>,
    /// The test suite's planted faults (none in `kvnode`; see `faults.rs`), read once at start.
    pub(crate) faults: NodeFaults,
    /// The HTTP listener's counters (connections open, refused, timed out), for `/metrics`.
    pub(crate) connections: Arc<Connections>,
    /// Groups whose leadership this node is handing off (a drain, `group/handoff.rs`): their
    /// requests are refused here meanwhile, so that the other voters' leader lease runs out.
    handoffs: std::sync::Mutex<BTreeSet<GroupId>>,
}

fn raft_config(cfg: &Config, cluster_id: &str) -> anyhow::Result<openraft::Config> {
    let election = cfg.election_timeout.as_millis() as u64;
    let c = openraft::Config {
        cluster_name: format!("kvorum-{cluster_id}"),
        heartbeat_interval: cfg.heartbeat.as_millis() as u64,
        // openraft's own election timer is off (see `election`): its maximum is only the
        // leader lease, during which a voter refuses to vote for anyone else.
        election_timeout_min: election / 2,
        election_timeout_max: election,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
        max_in_snapshot_log_to_keep: cfg.snapshot_logs_kept,
        install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
        ..Default::default()
    };
    c.validate().context("invalid Raft settings")
}

/// Builds the HTTP client used for forwarding, heartbeats and the Raft transport.
pub fn http_client(cfg: &Config) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        // Bind outgoing connections to our own address, so packet filters on address pairs
        // can partition loopback clusters.
        .local_address(cfg.listen.ip())
        .tcp_nodelay(true)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT.min(cfg.idle_timeout / 2))
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .context("cannot build HTTP client")
}

/// Stops the node when the replica of `group` stops on a fatal error (openraft stops a replica
/// whose storage failed, e.g. a write or fsync error, and never restarts it). A replica that
/// silently stopped would leave its group a replica short while the node still looks alive, so
/// the whole node exits instead: a supervisor restarts it (the replica resumes from its log), and
/// if it stays down the metadata leader sees it dead and replaces its replicas from the spares.
///
/// A fatal error that reports corruption (a damaged block read by apply, a compaction or a
/// snapshot build) also marks the store corrupt ([`Store::mark_corrupt`]): a restart would serve
/// the same damaged files, so the node refuses to start until it is wiped, and stays down until
/// the cluster replaced it.
async fn watch_replica(
    group: GroupId,
    raft: Raft,
    store: Store,
    fatal: Arc<watch::Sender<Option<String>>>,
) {
    let mut metrics = raft.metrics();
    loop {
        let stopped = match &metrics.borrow_and_update().running_state {
            // A normal stop (node shutdown) is not a failure.
            Err(openraft::error::Fatal::Stopped) | Ok(()) => None,
            Err(e) => Some(e.to_string()),
        };
        if let Some(error) = stopped {
            if kvorum_raftstore::mentions_corruption(&error) {
                let reason = format!("the replica of group {group} found corrupt data: {error}");
                if let Err(e) = store.mark_corrupt(&reason) {
                    tracing::error!(group = %group, error = %e, "cannot mark the store corrupt");
                }
            }
            let reason = format!(
                "the replica of group {group} stopped on a fatal error ({error}); the node stops. \
                 Check the disk and restart it: the replica resumes from its log. If it stays \
                 down, the metadata leader replaces it like a dead node"
            );
            tracing::error!(group = %group, %error, "replica stopped on a fatal error; stopping the node");
            set_fatal(&fatal, reason);
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

/// Records `reason` as why the node must stop, unless one is recorded already.
fn set_fatal(fatal: &watch::Sender<Option<String>>, reason: String) {
    fatal.send_if_modified(|f| {
        if f.is_none() {
            *f = Some(reason);
            true
        } else {
            false
        }
    });
}

impl Node {
    /// The state of a node that knows `map`, hosting nothing yet.
    pub fn new(
        cfg: Config,
        identity: Identity,
        store: Store,
        map: ClusterMap,
        http: reqwest::Client,
        faults: NodeFaults,
        connections: Arc<Connections>,
    ) -> Node {
        let incarnations = Incarnations::default();
        incarnations.update(&map);
        let (epoch, _) = watch::channel(map.epoch);
        let mut routing = RoutingCache::new();
        routing.update_map(Arc::new(map));
        let (fatal, _) = watch::channel(None);
        let fatal = Arc::new(fatal);
        Node {
            cfg,
            identity,
            store,
            groups: RwLock::new(HashMap::new()),
            routing: RwLock::new(routing),
            metadata_leader: std::sync::Mutex::new(None),
            steps: GroupSteps::default(),
            refresh: Notify::new(),
            epoch,
            fatal,
            rejoin: std::sync::atomic::AtomicBool::new(false),
            incarnations,
            http,
            map_file: std::sync::Mutex::new(()),
            faults,
            connections,
            handoffs: std::sync::Mutex::new(BTreeSet::new()),
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.identity.node_id
    }

    /// Whether this node is handing off its leadership of `group` (a drain): it serves none of
    /// the group's leader requests meanwhile.
    pub fn handing_off(&self, group: GroupId) -> bool {
        self.handoffs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&group)
    }

    /// Marks (or, with `false`, unmarks) `group` as being handed off; see
    /// [`Node::handing_off`].
    pub(crate) fn set_handing_off(&self, group: GroupId, on: bool) {
        let mut set = self.handoffs.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(group);
        } else {
            set.remove(&group);
        }
    }

    /// The metadata leader this node last heard from.
    pub fn known_metadata_leader(&self) -> Option<NodeId> {
        *self
            .metadata_leader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records the metadata leader this node last heard from (`None`: none answered).
    pub fn set_known_metadata_leader(&self, leader: Option<NodeId>) {
        *self
            .metadata_leader
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = leader;
    }

    /// A request to the internal route `path` of the node at `addr`, authenticated with the
    /// cluster secret and id.
    pub fn internal_request(
        &self,
        method: reqwest::Method,
        addr: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("http://{addr}{path}"))
            .header(SECRET_HEADER, self.cfg.cluster_secret.as_str())
            .header(CLUSTER_HEADER, self.identity.cluster_id.as_str())
            .header(INCARNATION_HEADER, self.identity.incarnation.as_str())
    }

    /// Stops the node with `reason` (the first reason wins); `server::run` returns it as an error.
    pub fn stop_with(&self, reason: String) {
        set_fatal(&self.fatal, reason);
    }

    /// What a request does with a failed read of this node's store: corruption takes the node
    /// out of service (the store is marked corrupt, so it stays down, and the node stops; the
    /// cluster then replaces its replicas like a dead node's) and answers 503 `unavailable`, so
    /// that the client retries at a healthy replica; any other error is internal.
    pub fn store_failed(&self, group: GroupId, e: StoreError) -> ApiError {
        if !e.is_corruption() {
            tracing::error!(group = %group, error = %e, "store read failed");
            return ApiError::Internal(e.to_string());
        }
        let reason = format!(
            "node {} found corrupt data in its replica of group {group}: {e}",
            self.id()
        );
        tracing::error!(group = %group, error = %e, "corrupt data found; taking the node out of service");
        if let Err(m) = self.store.mark_corrupt(&reason) {
            tracing::error!(group = %group, error = %m, "cannot mark the store corrupt");
        }
        self.stop_with(format!("{reason}; {}", kvorum_raftstore::WIPE_ADVICE));
        ApiError::Unavailable(format!(
            "the replica of group {group} on node {} found corrupt data and left service \
             (another replica answers)",
            self.id()
        ))
    }

    /// This node's replica of `group`, if hosted here.
    pub fn replica(&self, group: GroupId) -> Option<Replica> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
            .cloned()
    }

    /// This node's replica of `group` if it is the group's leader; else `not_leader` with the
    /// leader it knows (what a group leader's internal route answers a misdirected call). A
    /// leader handing the group off ([`Node::handing_off`]) answers `not_leader` without a hint:
    /// the caller tries again once the new leader is known.
    pub fn leading_replica(&self, group: GroupId) -> Result<Raft, ApiError> {
        let Some(raft) = self.group(group) else {
            return Err(ApiError::NotLeader { leader: None });
        };
        let leader = raft.metrics().borrow().current_leader;
        if leader != Some(self.id()) {
            return Err(ApiError::NotLeader { leader });
        }
        if self.handing_off(group) {
            return Err(ApiError::NotLeader { leader: None });
        }
        Ok(raft)
    }

    /// Whether this node's replica of `group` leads it.
    pub fn leads(&self, group: GroupId) -> bool {
        self.group(group).is_some_and(|r| {
            let m = r.metrics();
            let m = m.borrow();
            m.current_leader == Some(self.id()) && m.state.is_leader()
        })
    }

    /// This node's replica of `group`, if hosted here.
    pub fn group(&self, group: GroupId) -> Option<Raft> {
        self.replica(group).map(|h| h.raft)
    }

    /// Every hosted replica, by group.
    pub fn replicas(&self) -> BTreeMap<GroupId, Replica> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(g, h)| (*g, h.clone()))
            .collect()
    }

    /// The newest map this node knows.
    pub fn map(&self) -> Arc<ClusterMap> {
        let r = self.routing.read().unwrap_or_else(|p| p.into_inner());
        match r.map() {
            Some(m) => m.clone(),
            // The cache is created with a map and never loses it.
            None => unreachable!("routing cache without a map"),
        }
    }

    /// A copy of the routing cache (map and leader hints).
    pub fn routing(&self) -> RoutingCache {
        self.routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until this node knows a map of at least `epoch` (asking for one at once with a
    /// heartbeat), for at most `within`; whether it does.
    pub async fn learn_epoch(&self, epoch: u64, within: Duration) -> bool {
        let mut seen = self.epoch.subscribe();
        if *seen.borrow_and_update() >= epoch {
            return true;
        }
        self.refresh.notify_one();
        tokio::time::timeout(within, seen.wait_for(|e| *e >= epoch))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Records leader hints (from a heartbeat reply).
    pub fn set_leaders(&self, leaders: &BTreeMap<GroupId, NodeId>) {
        let mut r = self.routing.write().unwrap_or_else(|p| p.into_inner());
        for (g, l) in leaders {
            r.set_leader(*g, Some(*l));
        }
    }

    /// Installs `map` if it is newer than the known one, then hosts what it asks for. Returns
    /// whether it was newer.
    ///
    /// A newer map is first written to [`crate::map_copies::MAP_FILE`], atomically and durably, and only then
    /// installed: a restarted node never starts from a map older than one it acted on. A map that
    /// cannot be written is not installed (an error; the next heartbeat brings it again).
    pub async fn install_map(&self, map: ClusterMap) -> anyhow::Result<bool> {
        let newer = {
            // Held across the write so that an older map never replaces a newer one on disk.
            let _writing = self.map_file.lock().unwrap_or_else(|p| p.into_inner());
            if self.map().epoch >= map.epoch {
                false
            } else {
                write_map_file(&self.cfg.data_dir, &map)?;
                let mut r = self.routing.write().unwrap_or_else(|p| p.into_inner());
                r.update_map(Arc::new(map))
            }
        };
        if newer {
            let m = self.map();
            self.epoch.send_replace(m.epoch);
            self.incarnations.update(&m);
            tracing::info!(map = %m.summary(), "cluster map updated");
            if m.released_by_repair(self.id()) {
                self.stop_to_rejoin(format!(
                    "node {} was replaced while it was away (epoch {}); dropping its stale \
                     replicas and rejoining as a new node",
                    self.id(),
                    m.epoch
                ));
            } else if m.nodes.get(&self.id()).is_some_and(|n| n.replaced) {
                // Replaced in one group while another still lists it: its replica there is a
                // voter until that repair ends; the heartbeats tell it when to rejoin.
                tracing::info!(
                    "node {} was replaced in some of its groups; it keeps its other replicas \
                     until they are replaced too",
                    self.id()
                );
            } else if !m.is_active(self.id()) {
                let reason = format!(
                    "node {} was removed from the cluster (epoch {}); it cannot rejoin under this id: \
                     wipe its data directory and join it as a new node",
                    self.id(),
                    m.epoch
                );
                self.fatal.send_replace(Some(reason));
            }
            self.host_groups(&m, None).await?;
            self.drop_dissolved(&m).await;
        }
        Ok(newer)
    }

    /// Stops the replicas of groups `map` no longer has (dissolved by a view change; group ids
    /// are never given again) and deletes their state.
    async fn drop_dissolved(&self, map: &ClusterMap) {
        let gone: Vec<GroupId> = self
            .replicas()
            .into_keys()
            .filter(|g| {
                *g != CONFIG_GROUP && !map.groups.contains_key(g) && g.0 < map.new_group_id().0
            })
            .filter(|g| {
                // A group a task is still creating is not gone.
                !map.tasks.iter().any(|t| {
                    t.kind.view_change().is_some_and(|v| {
                        v.steps
                            .iter()
                            .any(|s| matches!(s, Step::CreateGroup { group, .. } if group == g))
                    })
                })
            })
            .collect();
        for g in gone {
            let replica = self
                .groups
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&g);
            if let Some(r) = replica {
                if let Err(e) = r.raft.shutdown().await {
                    tracing::warn!(group = %g, error = %e, "shutting down a dissolved group's replica");
                }
            }
            match self.store.drop_group(g) {
                Ok(()) => {
                    tracing::info!(group = %g, "group dissolved: its replica stopped and its state deleted")
                }
                Err(e) => {
                    tracing::warn!(group = %g, error = %e, "could not delete a dissolved group's state")
                }
            }
        }
    }

    /// Starts the replicas `map` asks this node to host that are not running yet: the config
    /// group, the data groups that list it, and groups a task is adding it to. Groups of
    /// `initial` that list this node and are pristine are initialized with that membership.
    pub async fn host_groups(
        &self,
        map: &ClusterMap,
        initial: Option<&ClusterMap>,
    ) -> anyhow::Result<()> {
        let me = self.id();
        let mut wanted = vec![CONFIG_GROUP];
        wanted.extend(
            map.groups
                .iter()
                .filter(|(_, g)| g.members.contains(&me))
                .map(|(id, _)| *id),
        );
        for t in &map.tasks {
            match &t.kind {
                TaskKind::ReplaceReplica {
                    group, replacement, ..
                } => {
                    if *replacement == me {
                        wanted.push(*group);
                    }
                }
                TaskKind::ViewChange(v) => {
                    for step in v.steps.iter().skip(v.next) {
                        match step {
                            Step::AddLearner { group, node } if *node == me => wanted.push(*group),
                            Step::CreateGroup { group, members } if members.contains(&me) => {
                                wanted.push(*group)
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        for group in wanted {
            if self.replica(group).is_some() {
                continue;
            }
            let hosted = self.start_replica(group).await?;
            if let Some(init) = initial {
                self.initialize(group, &hosted.raft, init).await?;
            }
            self.groups
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(group)
                .or_insert(hosted);
        }
        Ok(())
    }

    async fn start_replica(&self, group: GroupId) -> anyhow::Result<Replica> {
        let network = Network {
            http: self.http.clone(),
            group,
            from: self.id(),
            secret: self.cfg.cluster_secret.as_str().into(),
            cluster_id: self.identity.cluster_id.as_str().into(),
            incarnation: self.identity.incarnation.as_str().into(),
            recorded: self.incarnations.clone(),
        };
        let network_for_elections = network.clone();
        let sm = self
            .store
            .state_machine(group)
            .await
            .with_context(|| format!("cannot open the state machine of group {group}"))?;
        let raft = Raft::new(
            self.id(),
            Arc::new(raft_config(&self.cfg, &self.identity.cluster_id)?),
            network,
            self.store.log_store(group),
            sm,
        )
        .await
        .with_context(|| format!("cannot start the replica of group {group}"))?;
        // Elections are driven by `election::run`, after a pre-vote round.
        raft.runtime_config().elect(false);
        let clock = Arc::new(LeaderClock::new());
        tokio::spawn(election::run(
            raft.clone(),
            clock.clone(),
            network_for_elections,
            self.cfg.election_timeout,
        ));
        tracing::info!(group = %group, "replica started");
        tokio::spawn(watch_replica(
            group,
            raft.clone(),
            self.store.clone(),
            self.fatal.clone(),
        ));
        Ok(Replica {
            reads: ReadBatcher::spawn(raft.clone()),
            raft,
            clock,
        })
    }

    /// Initializes a pristine replica of a group this node is an initial member of. Every
    /// initial member does so with the same membership, which openraft allows.
    async fn initialize(
        &self,
        group: GroupId,
        raft: &Raft,
        init: &ClusterMap,
    ) -> anyhow::Result<()> {
        let Some(members) = init.members_of(group) else {
            return Ok(());
        };
        if !members.contains(&self.id()) || raft.is_initialized().await? {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .filter_map(|id| init.addr(*id).map(|a| (*id, BasicNode::new(a))))
            .collect();
        match raft.initialize(nodes).await {
            Ok(()) => tracing::info!(group = %group, "initialized the group"),
            // Another member initialized first and we already hold its log: fine.
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot initialize group {group}")),
        }
        Ok(())
    }

    /// Stops every hosted replica.
    pub async fn shutdown_replicas(&self) {
        for (group, h) in self.replicas() {
            if let Err(e) = h.raft.shutdown().await {
                tracing::warn!(group = %group, error = %e, "replica did not stop cleanly");
            }
        }
    }

    /// The group serving `slot` in the known map.
    pub fn owner(&self, slot: Slot) -> Option<GroupId> {
        self.map().group_of(slot)
    }

    /// Whether this node is a voter of data group `group` in the known map.
    pub fn is_member(&self, group: GroupId) -> bool {
        self.map()
            .members_of(group)
            .is_some_and(|m| m.contains(&self.id()))
    }

    /// Stops the node because a repair replaced it while it was away (`reason` says so): the
    /// server then drops its stale replicas and rejoins as a new node ([`Node::must_rejoin`]).
    pub(crate) fn stop_to_rejoin(&self, reason: String) {
        // Only when this is why the node stops: a fatal error recorded first keeps it down.
        if self.fatal.borrow().is_none() {
            self.rejoin.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        set_fatal(&self.fatal, reason);
    }

    /// Whether the node stopped because a repair replaced it, and may rejoin as a new node.
    pub(crate) fn must_rejoin(&self) -> bool {
        self.rejoin.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether this node is a spare (in no data group).
    pub fn is_spare(&self) -> bool {
        self.map().group_of_node(self.id()).is_none()
    }

    /// Addresses to forward a request for `group` to: the leader hint first, then the members.
    pub fn group_addrs(&self, group: GroupId) -> Vec<String> {
        let r = self.routing.read().unwrap_or_else(|p| p.into_inner());
        let mut addrs = r.group_addrs(group).unwrap_or_default();
        let me = r.map().and_then(|m| m.addr(self.id())).map(str::to_string);
        addrs.retain(|a| Some(a) != me.as_ref());
        addrs
    }

    /// The stored map of the config group's local replica and its record version, if any.
    pub fn stored_map(&self) -> anyhow::Result<Option<(ClusterMap, u64)>> {
        stored_map_in(&self.store)
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
