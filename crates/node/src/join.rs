//! How a node with an empty data directory finds out whether it creates a cluster or joins a
//! running one, and how a joining node waits until it is added.
//!
//! Steps of a start on an empty data directory:
//! 1. With `--join ADDR,...` the node is a joiner. With a VIEW of several nodes it first asks the
//!    view's other nodes for their map (`GET /v1/cluster/map`, [`probe`]) and decides with
//!    [`classify_start`]: a peer of another cluster (its cluster id is not the one this view
//!    implies) makes it a joiner; a peer of its own cluster that lists its view id as removed or
//!    records an incarnation for it makes it refuse (a wiped member, see `incarnation.rs`);
//!    otherwise it creates its identity from the view (a new cluster, or a late initial member of
//!    its own cluster, which then starts from that peer's newest map).
//! 2. A joiner never bootstraps or initializes anything. It serves only `/healthz` and
//!    `GET /v1/join` (every other route answers 503 `joining`) and polls the addresses it was
//!    given every [`JOIN_POLL`] ([`wait_until_added`]) until the newest map among their answers
//!    lists its address as an active node with no incarnation recorded, or its own ([`listed`]).
//! 3. It then adopts that id: writes the map to `cluster-map.json` and its identity (`joined`,
//!    node id from the map, cluster id from the peer), and starts like any node. The add recorded
//!    the incarnation the joiner answered (kept in the data directory while it waits, so a
//!    restart keeps it): a joiner wiped after the add has another one and is refused the id. An
//!    address the map lists as a member with another incarnation makes it refuse to start; nothing
//!    else bounds the wait.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_router::{ClusterMap, NodeId, NodeLifecycle};
use kvorum_wire::{ErrorBody, JoinPhase, JoinState, MapReply};
use tokio::sync::watch;

use crate::config::Config;
use crate::http::listener::{Class, Connections};
use crate::identity::Identity;

/// Interval between two polls of the joining node's peers.
pub const JOIN_POLL: Duration = Duration::from_millis(500);
/// Interval between two rounds of a rejoining node's requests to be added.
const ASK_EVERY: Duration = Duration::from_secs(2);
/// Time one request to be added may take (the metadata leader first probes the joiner).
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Time one map request of a startup probe or a poll may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Interval of the "waiting to be added" line in a joining node's log.
const WAITING_LOG_EVERY: Duration = Duration::from_secs(30);
/// File in the data directory holding a joining node's incarnation while it waits, so a restart
/// (not a wipe) keeps the incarnation an accepted add recorded for it.
const JOINING_INCARNATION_FILE: &str = "kvorum-joining-incarnation";

/// What a cluster map says about an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// The address is not in the map: not added yet.
    NotListed,
    /// An active node at this address with no incarnation recorded, or the asking node's own:
    /// the node was added under this id and takes it.
    Adopt(NodeId),
    /// The only entries at this address are removed nodes: ids are never reused.
    Removed(NodeId),
    /// An active node at this address with another incarnation: the cluster knows another data
    /// directory under this id (this one was wiped or is a second process).
    OtherIncarnation(NodeId),
}

/// What `map` says about the node at `addr` whose incarnation is `incarnation`. An active entry
/// takes precedence over removed ones (an address can be added again under a new id).
pub fn listed(map: &ClusterMap, addr: &str, incarnation: &str) -> Listed {
    let mut other = None;
    let mut removed = None;
    for (id, n) in map.nodes.iter().filter(|(_, n)| n.addr == addr) {
        match (n.state, n.incarnation.as_deref()) {
            (NodeLifecycle::Active, None) => return Listed::Adopt(*id),
            (NodeLifecycle::Active, Some(i)) if i == incarnation => return Listed::Adopt(*id),
            (NodeLifecycle::Active, Some(_)) => other = Some(*id),
            (NodeLifecycle::Removed, _) => removed = Some(*id),
        }
    }
    match (other, removed) {
        (Some(id), _) => Listed::OtherIncarnation(id),
        (None, Some(id)) => Listed::Removed(id),
        (None, None) => Listed::NotListed,
    }
}

/// How a node of a VIEW starting on an empty data directory proceeds.
#[derive(Debug, Clone, PartialEq, Eq)]
// The variant docs name and describe each field.
#[allow(missing_docs)]
pub enum Start {
    /// Create the identity from the view. `newest` is the newest map a peer of this view's own
    /// cluster answered (a late initial member starts from it), `None` when no such peer answered.
    Create { newest: Option<ClusterMap> },
    /// Another cluster runs at addresses of this view: wait to be added to it.
    Join,
    /// Refuse to start, for the reason given.
    Refuse(String),
}

/// Decides how a node at `me`, whose view gives it the id `own_id` and implies the cluster id
/// `own_cluster_id`, starts on an empty data directory, given the maps its view's peers
/// answered. A peer that reports no cluster id (an older kvnode) counts as one of its own
/// cluster. Any peer of another cluster makes it a joiner, even when peers of its own cluster
/// answer too: a node that cannot tell which cluster it belongs to must not help form one.
///
/// A map of its own cluster is judged by the entry of `own_id`, the id the node would take, not
/// by other entries at its address: removed, or recorded with an incarnation (this empty data
/// directory is not that one), makes it refuse, even when the address was added again under a
/// new id (that id is a joiner's to take, with `--join`).
pub fn classify_start(
    me: SocketAddr,
    own_id: NodeId,
    own_cluster_id: &str,
    answers: &[(SocketAddr, MapReply)],
) -> Start {
    let mut newest: Option<&ClusterMap> = None;
    let mut other = false;
    for (peer, reply) in answers {
        if reply
            .cluster_id
            .as_deref()
            .is_some_and(|c| c != own_cluster_id)
        {
            other = true;
            continue;
        }
        let map = &reply.map;
        if let Some(reason) = refusal(map, me, own_id, *peer) {
            return Start::Refuse(reason);
        }
        if newest.is_none_or(|n| n.epoch < map.epoch) {
            newest = Some(map);
        }
    }
    if other {
        Start::Join
    } else {
        Start::Create {
            newest: newest.cloned(),
        }
    }
}

/// Why a VIEW node at `me` with the empty data directory must not start as node `own_id` of
/// `map` (answered by `peer`), if it must not.
fn refusal(map: &ClusterMap, me: SocketAddr, own_id: NodeId, peer: SocketAddr) -> Option<String> {
    let node = map.nodes.get(&own_id)?;
    match (node.state, node.incarnation.as_deref()) {
        (NodeLifecycle::Removed, _) => {
            let again = map
                .nodes
                .iter()
                .find(|(id, n)| {
                    **id != own_id && n.addr == me.to_string() && n.state == NodeLifecycle::Active
                })
                .map(|(id, _)| *id);
            let how = match again {
                Some(id) => format!(
                    "This address was added again as node {id}: start it with --join to take                      that id"
                ),
                None => format!(
                    "Wipe the data directory and start it at a new address with --join, or add                      this address again with `kvctl add-node {me}` and then start it with --join"
                ),
            };
            Some(format!(
                "{me} was node {own_id} of this cluster, which removed it (peer {peer}, epoch {});                  it cannot rejoin under that id. {how}",
                map.epoch
            ))
        }
        (NodeLifecycle::Active, Some(_)) => Some(format!(
            "refusing to start: the cluster (peer {peer}, epoch {}) knows {me} as member node              {own_id}, but this node's data directory is empty. {}",
            map.epoch,
            crate::incarnation::wiped_message_short(own_id)
        )),
        (NodeLifecycle::Active, None) => None,
    }
}

/// Asks each of `peers` for its map, concurrently; returns the answers that came back with a
/// map (unreachable peers, errors and joining nodes, which answer 503, are left out).
pub async fn probe(http: &reqwest::Client, peers: &[SocketAddr]) -> Vec<(SocketAddr, MapReply)> {
    let mut asks = tokio::task::JoinSet::new();
    for peer in peers.iter().copied() {
        let req = http
            .get(format!("http://{peer}/v1/cluster/map"))
            .timeout(PROBE_TIMEOUT);
        asks.spawn(async move {
            let resp = req.send().await.ok()?.error_for_status().ok()?;
            Some((peer, resp.json::<MapReply>().await.ok()?))
        });
    }
    let mut answers = Vec::new();
    while let Some(done) = asks.join_next().await {
        if let Ok(Some(answer)) = done {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(peer, _)| *peer);
    answers
}

/// Asks the cluster, through each of `peers` in turn (one that is not the metadata leader
/// forwards), to add the node at `me` (`POST /v1/cluster/nodes`), a round every [`ASK_EVERY`]
/// until the joiner sees itself added (the caller stops this then); never returns. A round ends
/// at the first peer that accepts or answers that an active node has the address (added
/// already). A refusal (a view change under way, no metadata leader yet) or an add that did not
/// complete is simply asked again.
async fn ask_to_be_added(http: &reqwest::Client, peers: &[SocketAddr], me: SocketAddr) -> ! {
    let body = kvorum_wire::AddNodeBody {
        addr: me.to_string(),
    };
    let mut accepted = false;
    loop {
        for peer in peers {
            let resp = http
                .post(format!("http://{peer}/v1/cluster/nodes"))
                .timeout(ASK_TIMEOUT)
                .json(&body)
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    if !accepted {
                        tracing::info!(%peer, "the cluster accepted to add this node");
                        accepted = true;
                    }
                    break;
                }
                Ok(r) => {
                    let status = r.status();
                    let error: Option<ErrorBody> = r.json().await.ok();
                    if error.as_ref().is_some_and(|e| e.code == "address_in_use") {
                        break;
                    }
                    tracing::debug!(%peer, %status, ?error, "add not accepted yet");
                }
                Err(e) => tracing::debug!(%peer, error = %e, "cannot ask to be added"),
            }
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

/// What a joining node learned when it was added.
#[derive(Debug, Clone)]
pub struct Joined {
    /// Its identity, written to the data directory.
    pub identity: Identity,
    /// The map that lists it, written to `cluster-map.json`.
    pub map: ClusterMap,
}

/// The state a joining node shows on `GET /v1/join` while it waits.
pub fn waiting_state(cfg: &Config, incarnation: &str) -> JoinState {
    JoinState {
        addr: cfg.listen.to_string(),
        state: JoinPhase::Waiting,
        node: None,
        cluster_id: None,
        incarnation: incarnation.to_string(),
    }
}

/// Polls `peers` every [`JOIN_POLL`] until the newest map among their answers lists this node
/// (see [`listed`]), then writes that map and the joined identity to the data directory and
/// returns them. Errors when the map lists this address as removed or under another incarnation,
/// or when the cluster's K is not the configured one; otherwise waits until cancelled.
/// `status` shows the cluster id once a peer answered.
pub async fn wait_until_added(
    cfg: &Config,
    http: &reqwest::Client,
    peers: &[SocketAddr],
    incarnation: &str,
    status: &watch::Sender<JoinState>,
) -> anyhow::Result<Joined> {
    let me = cfg.listen;
    let me_str = me.to_string();
    let mut logged: Option<Instant> = None;
    let mut found: Option<(String, u64)> = None;
    loop {
        let answers = probe(http, peers).await;
        let newest = answers
            .iter()
            .filter_map(|(peer, r)| Some((*peer, r.cluster_id.clone()?, &r.map)))
            .max_by_key(|(_, _, m)| m.epoch);
        if let Some((peer, cluster_id, map)) = newest {
            if found.as_ref().is_none_or(|(c, _)| *c != cluster_id) {
                tracing::info!(%peer, cluster = %cluster_id, epoch = map.epoch, "found the cluster");
                status.send_modify(|s| s.cluster_id = Some(cluster_id.clone()));
            }
            found = Some((cluster_id.clone(), map.epoch));
            if cfg.k_configured && cfg.k != map.k {
                anyhow::bail!(
                    "this node is configured with K={}, but the cluster it joins (peer {peer}) has \
                     K={}; start it with K={} or without K",
                    cfg.k,
                    map.k,
                    map.k
                );
            }
            match listed(map, &me_str, incarnation) {
                Listed::Adopt(id) => return adopt(cfg, incarnation, id, cluster_id, map.clone()),
                // A removed node's address may come back as a new node, under a new id: this
                // data directory is new, so it waits to be added like any new node.
                Listed::Removed(_) | Listed::NotListed => {}
                Listed::OtherIncarnation(id) => anyhow::bail!(
                    "refusing to start: the cluster (peer {peer}, epoch {}) knows {me} as member \
                     node {id} with another data directory. {}",
                    map.epoch,
                    crate::incarnation::wiped_message_short(id)
                ),
            }
        } else if !answers.is_empty() {
            tracing::warn!(
                "the peers answer without a cluster id (an older kvnode); this node cannot join \
                 until they are upgraded"
            );
        }
        if logged.is_none_or(|t| t.elapsed() >= WAITING_LOG_EVERY) {
            logged = Some(Instant::now());
            match &found {
                Some((cluster, epoch)) => tracing::info!(
                    cluster = %cluster,
                    epoch,
                    "waiting to be added: run `kvctl add-node {me}` against the cluster"
                ),
                None => tracing::warn!(
                    peers = ?peers,
                    "waiting to be added: no peer answers its map yet; run `kvctl add-node {me}` \
                     against the cluster once it runs"
                ),
            }
        }
        tokio::time::sleep(JOIN_POLL).await;
    }
}

/// Takes id `node` from `map`: writes the map, then the identity (in that order: a node with an
/// identity always has a map to start from; a crash in between leaves no identity, and the node
/// joins again on restart).
fn adopt(
    cfg: &Config,
    incarnation: &str,
    node: NodeId,
    cluster_id: String,
    map: ClusterMap,
) -> anyhow::Result<Joined> {
    let identity = Identity {
        node_id: node,
        cluster_id,
        addr: cfg.listen,
        view: cfg.view.clone(),
        k: map.k,
        incarnation: incarnation.to_string(),
        joined: true,
    };
    std::fs::create_dir_all(&cfg.data_dir)?;
    crate::map_copies::write_map_file(&cfg.data_dir, &map)?;
    Identity::create_joined(&cfg.data_dir, &identity)?;
    tracing::info!(
        node,
        cluster = %identity.cluster_id,
        epoch = map.epoch,
        "added to the cluster; starting as node {node}"
    );
    Ok(Joined { identity, map })
}

/// The incarnation of a joining node's data directory: the one a previous start of this joiner
/// wrote there, or a new one, written durably before the node answers `GET /v1/join` with it (an
/// add records what that answer says, see `meta/view_change.rs`).
fn joining_incarnation(dir: &std::path::Path) -> anyhow::Result<String> {
    let path = dir.join(JOINING_INCARNATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
    let incarnation = crate::incarnation::new_incarnation();
    std::fs::create_dir_all(dir)?;
    crate::identity::write_file_durably(dir, JOINING_INCARNATION_FILE, incarnation.as_bytes())?;
    Ok(incarnation)
}

/// Runs a joining node: serves the joining routes on `listener` and waits until the node is
/// added (see the module overview). Returns what it learned and the listener to serve the full
/// API on, or `None` when `stop` fired first.
pub async fn run_joiner(
    cfg: &Config,
    http: &reqwest::Client,
    peers: &[SocketAddr],
    listener: tokio::net::TcpListener,
    connections: &Arc<Connections>,
    mut stop: watch::Receiver<bool>,
    ask_to_join: bool,
) -> anyhow::Result<Option<(Joined, tokio::net::TcpListener)>> {
    let incarnation = joining_incarnation(&cfg.data_dir)?;
    let (status, _) = watch::channel(waiting_state(cfg, &incarnation));
    let status = Arc::new(status);
    // Two handles of one listening socket: this phase serves on one and closes it when it ends;
    // the node then serves on the other, and connections arriving in between wait in the backlog.
    let std_listener = listener.into_std()?;
    let later = std_listener.try_clone()?;
    let now = tokio::net::TcpListener::from_std(std_listener)?;
    let (done_tx, mut done_rx) = watch::channel(false);
    let app = crate::http::joining_router(status.clone());
    // A joiner is in no map yet, so no caller is a peer: every connection is a client's.
    let server = tokio::spawn(crate::http::listener::serve(
        now,
        app,
        connections.clone(),
        |_| Class::Client,
        async move {
            let _ = done_rx.wait_for(|d| *d).await;
        },
    ));
    tracing::info!(
        addr = %cfg.listen,
        peers = ?peers,
        "joining: this node is not in the cluster map; it serves only /healthz and /v1/join until \
         it is added (run `kvctl add-node {}` against the cluster)",
        cfg.listen
    );
    let asking = async {
        if ask_to_join {
            ask_to_be_added(http, peers, cfg.listen).await
        } else {
            std::future::pending().await
        }
    };
    let outcome = tokio::select! {
        r = wait_until_added(cfg, http, peers, &incarnation, &status) => Some(r),
        _ = asking => None,
        _ = stop.wait_for(|s| *s) => None,
    };
    let _ = done_tx.send(true);
    if let Err(e) = server.await {
        return Err(anyhow::anyhow!("HTTP server task failed: {e}"));
    }
    match outcome {
        None => Ok(None),
        Some(r) => Ok(Some((r?, tokio::net::TcpListener::from_std(later)?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map3() -> ClusterMap {
        kvorum_router::testing::map_at("127.0.0.", 7070, 3, 3)
    }

    /// `map` with a node added at `addr` under the next id.
    fn with_node(mut map: ClusterMap, addr: &str, incarnation: Option<&str>) -> ClusterMap {
        let id = map.nodes.keys().max().copied().unwrap_or(0) + 1;
        map.nodes.insert(
            id,
            kvorum_router::NodeInfo {
                addr: addr.into(),
                state: NodeLifecycle::Active,
                incarnation: incarnation.map(str::to_string),
                replaced: false,
                drain_until_ms: None,
            },
        );
        map.epoch += 1;
        map
    }

    const ME: &str = "127.0.0.4:7070";

    // The address-listed → adopt-id decision of a waiting node.
    #[test]
    fn listed_address_is_adopted() {
        // Not added yet: wait.
        assert_eq!(listed(&map3(), ME, "mine"), Listed::NotListed);
        // Added, no incarnation recorded yet: take the id.
        let added = with_node(map3(), ME, None);
        assert_eq!(listed(&added, ME, "mine"), Listed::Adopt(4));
        // Its own incarnation recorded (it crashed right after adopting): take the id.
        let recorded = with_node(map3(), ME, Some("mine"));
        assert_eq!(listed(&recorded, ME, "mine"), Listed::Adopt(4));
        // Another data directory is recorded under that id: refuse.
        let other = with_node(map3(), ME, Some("theirs"));
        assert_eq!(listed(&other, ME, "mine"), Listed::OtherIncarnation(4));
        // Removed: refuse; added again under a new id: take the new id.
        let mut removed = with_node(map3(), ME, Some("old"));
        removed.nodes.get_mut(&4).expect("node 4").state = NodeLifecycle::Removed;
        assert_eq!(listed(&removed, ME, "mine"), Listed::Removed(4));
        let again = with_node(removed, ME, None);
        assert_eq!(listed(&again, ME, "mine"), Listed::Adopt(5));
        // Another address is not this node.
        assert_eq!(listed(&added, "127.0.0.5:7070", "mine"), Listed::NotListed);
    }

    fn reply(map: ClusterMap, cluster_id: Option<&str>) -> MapReply {
        MapReply {
            leaders: Default::default(),
            map,
            cluster_id: cluster_id.map(str::to_string),
        }
    }

    fn peer(i: u8) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, i], 7070))
    }

    // A VIEW node on an empty data directory: its own cluster → create; another → join.
    #[test]
    fn view_node_joins_only_another_cluster() {
        let me = peer(3);
        // No peer answers: a new cluster (the remaining window, see docs/architecture.md).
        assert_eq!(
            classify_start(me, 3, "own", &[]),
            Start::Create { newest: None }
        );
        // A peer of its own cluster lists it with no incarnation: a late initial member, which
        // starts from the newest map its peers answered.
        let mut later = map3();
        later.epoch = 5;
        let answers = [
            (peer(1), reply(map3(), Some("own"))),
            (peer(2), reply(later.clone(), Some("own"))),
        ];
        assert_eq!(
            classify_start(me, 3, "own", &answers),
            Start::Create {
                newest: Some(later)
            }
        );
        // An older peer that reports no cluster id counts as its own cluster.
        assert_eq!(
            classify_start(me, 3, "own", &[(peer(1), reply(map3(), None))]),
            Start::Create {
                newest: Some(map3())
            }
        );
        // Another cluster runs at the view's addresses: join it, even if an own peer answers.
        let answers = [
            (peer(1), reply(map3(), Some("other"))),
            (peer(2), reply(map3(), Some("own"))),
        ];
        assert_eq!(classify_start(peer(4), 4, "own", &answers), Start::Join);
        // Its own cluster knows it under an incarnation, or removed it: refuse.
        let mut known = map3();
        known.nodes.get_mut(&3).expect("node 3").incarnation = Some("x".into());
        assert!(matches!(
            classify_start(
                me,
                3,
                "own",
                &[(peer(1), reply(known.clone(), Some("own")))]
            ),
            Start::Refuse(_)
        ));
        known.nodes.get_mut(&3).expect("node 3").state = NodeLifecycle::Removed;
        assert!(matches!(
            classify_start(me, 3, "own", &[(peer(1), reply(known, Some("own")))]),
            Start::Refuse(m) if m.contains("removed")
        ));
    }

    // A VIEW node judges a map by its own view id: once that id was removed, an entry that added
    // its address again (no incarnation recorded yet) does not hide the removal. Starting under
    // the removed id would only end at install, when the node learns it was removed.
    #[test]
    fn view_node_whose_id_was_removed_refuses_even_when_its_address_was_added_again() {
        let me = peer(3);
        let mut removed = map3();
        removed.nodes.get_mut(&3).expect("node 3").state = NodeLifecycle::Removed;
        removed.epoch += 1;
        let again = with_node(removed, &me.to_string(), None);
        assert_eq!(listed(&again, &me.to_string(), "new"), Listed::Adopt(4));
        match classify_start(me, 3, "own", &[(peer(1), reply(again, Some("own")))]) {
            Start::Refuse(m) => assert!(
                m.contains("removed") && m.contains("added again as node 4"),
                "{m}"
            ),
            Start::Create { newest } => panic!(
                "a removed id must not start: Create from the map at epoch {:?}",
                newest.map(|m| m.epoch)
            ),
            Start::Join => panic!("a removed id must not start: Join"),
        }
    }

    // A joiner keeps its incarnation across restarts while it waits (an accepted add recorded
    // it), and a wiped one gets a new one.
    #[test]
    fn a_waiting_joiner_keeps_its_incarnation_until_wiped() -> anyhow::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let first = joining_incarnation(dir.path())?;
        assert_eq!(joining_incarnation(dir.path())?, first);
        std::fs::remove_file(dir.path().join(JOINING_INCARNATION_FILE))?;
        assert_ne!(joining_incarnation(dir.path())?, first);
        Ok(())
    }
}
