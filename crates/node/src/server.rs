//! Starting and stopping a node: identity, store, the replicas the cluster map asks for, the
//! heartbeat and metadata loops, the HTTP server, graceful shutdown.
//!
//! Steps of `run`: (0) share the open-file limit between RocksDB and connections
//! (`http::budget`); (1) load the identity from the data directory; on an empty one, decide how
//! the node starts (`join.rs`): create the identity from the view, or, joining a running cluster
//! (`--join`, or a VIEW whose peers run another cluster), serve only the joining routes and wait
//! until the cluster adds it, then take the id its map gives; (2) open RocksDB; (3) take the
//! newest map known locally: the config replica's stored map, `cluster-map.json` (the newest map
//! this node installed), the map a peer answered at startup, and the initial map computed from
//! the view and K (identical on every node; not for a joined node); (4) start the replicas that
//! map asks for, initializing the pristine ones this node is an initial member of, only while
//! that map is still the initial one (epoch 1; every initial member does so with the same
//! membership, which openraft allows); (5) start the heartbeat loop and the metadata loop,
//! (6) serve the client API and the internal routes (`http::listener`, with its connection caps
//! and timers) until `shutdown` resolves or the node learns it was removed, (7) stop the
//! replicas.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use kvorum_raftstore::{Store, StoreOptions};
use kvorum_router::ClusterMap;
use tokio::sync::watch;

use crate::config::Config;
use crate::faults::Faults;
use crate::http::budget::{open_files_limits, FdBudget};
use crate::http::listener::{self, Class, Connections, Limits};
use crate::http::transport::is_node_ip;
use crate::identity::Identity;
use crate::join::{self, Start};
use crate::map_copies::{
    initial_map_to_use, initial_to_initialize, newest_map, read_map_file, stored_map_in,
    write_map_file,
};
use crate::meta::Meta;
use crate::node::{http_client, Node};

/// Runs a node on `listener` until `shutdown` resolves, then stops it cleanly. Returns an error
/// when the node had to stop because it was removed from the cluster.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    run_with_faults(cfg, Faults::default(), listener, shutdown).await
}

/// [`run`] with the test suite's planted `faults`, read once at start by its `kvnode-test`
/// binary (see `faults.rs`); `kvnode` runs with none.
///
/// A node a repair replaced while it was away (its replicas all taken by spares) does not exit:
/// it drops its stale replicas, wipes its data directory (`rejoin`) and starts again as a
/// joiner that asks the cluster to add it, with the addresses of its map's nodes as peers. The
/// planted faults apply to its first life only.
pub async fn run_with_faults(
    cfg: Config,
    faults: Faults,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut ended = run_once(cfg.clone(), faults, listener, stop.clone(), false).await?;
    loop {
        match ended {
            Ended::Stopped => return Ok(()),
            Ended::Replaced { listener, peers } => {
                let cfg = rejoin(cfg.clone(), peers)?;
                ended = run_once(cfg, Faults::default(), listener, stop.clone(), true).await?;
            }
        }
    }
}

/// How one life of the node ended.
enum Ended {
    /// `shutdown` resolved.
    Stopped,
    /// A repair replaced the node while it was away; its replicas are shut down and its store
    /// closed. `listener` is its listening socket, `peers` its map's other active nodes.
    Replaced {
        listener: tokio::net::TcpListener,
        peers: Vec<SocketAddr>,
    },
}

/// Longest wait, after a replaced node's replicas stopped, for the last handle of its store to
/// be dropped (RocksDB closed) before its data directory is wiped.
const STORE_CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Prepares a replaced node to rejoin: wipes `cfg.data_dir` (see [`wipe_data_dir`]) and returns
/// the configuration of a joiner with `peers` (the configured view and join peers added).
fn rejoin(mut cfg: Config, mut peers: Vec<SocketAddr>) -> anyhow::Result<Config> {
    wipe_data_dir(&cfg.data_dir)?;
    peers.extend(cfg.view.iter().chain(cfg.join.iter()).copied());
    peers.retain(|p| *p != cfg.listen);
    peers.sort_unstable();
    peers.dedup();
    if peers.is_empty() {
        anyhow::bail!("the node was replaced but knows no other node to rejoin through");
    }
    tracing::warn!(
        data_dir = %cfg.data_dir.display(),
        peers = ?peers,
        "stale replicas dropped and data directory wiped; rejoining as a new node"
    );
    cfg.join = peers;
    cfg.view = Vec::new();
    Ok(cfg)
}

/// Empties the data directory of a node a repair replaced: every acknowledged write it held is
/// on its groups' other replicas (a repair replaces a voter only while the group keeps a
/// majority, and the map says no group lists this node any more). Everything but the identity
/// goes first and the identity last, so a crash in between leaves a node that starts with its
/// old identity, is told again that it was replaced, and wipes again.
fn wipe_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    let identity = dir.join(crate::identity::IDENTITY_FILE);
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the data directory {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if path == identity {
            continue;
        }
        // A symbolic link is removed, never followed.
        let removed = if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("cannot remove {}", path.display()))?;
    }
    if identity.exists() {
        std::fs::remove_file(&identity)
            .with_context(|| format!("cannot remove {}", identity.display()))?;
    }
    // The removals must be durable before the node takes a new identity here.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the data directory {}", dir.display()))?;
    Ok(())
}

/// One life of the node: from its start on `listener` until `stop` turns true or it must stop.
/// `ask_to_join` makes a joiner ask its peers to add it (a replaced node rejoining) rather than
/// wait for an operator.
async fn run_once(
    cfg: Config,
    faults: Faults,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
    ask_to_join: bool,
) -> anyhow::Result<Ended> {
    let budget = fd_budget(&cfg)?;
    let connections = Arc::new(Connections::new(Limits::of(&cfg, &budget), budget.limit));
    let http = http_client(&cfg)?;
    let (identity, from_peer, listener) = match start_identity(
        &cfg,
        &http,
        listener,
        &connections,
        stop.clone(),
        ask_to_join,
    )
    .await?
    {
        Some(started) => started,
        // Stopped while waiting to be added.
        None => return Ok(Ended::Stopped),
    };
    log_trust_mode(&cfg);
    for line in faults.announcements() {
        tracing::error!("{line}");
    }
    let (state, initialize_from) = open_node(
        &cfg,
        &identity,
        faults,
        &budget,
        http,
        from_peer,
        &connections,
    )?;
    let map = state.map();
    if map.released_by_repair(identity.node_id) {
        tracing::warn!(
            "node {} was replaced while it was away (epoch {}); dropping its stale replicas and \
             rejoining as a new node",
            identity.node_id,
            map.epoch
        );
        return replaced(state, listener).await;
    }
    if !map.is_active(identity.node_id) {
        anyhow::bail!(
            "node {} was removed from the cluster (epoch {}); it cannot rejoin under this id: wipe {} and join it as a new node",
            identity.node_id,
            map.epoch,
            cfg.data_dir.display()
        );
    }
    state.host_groups(&map, initialize_from.as_ref()).await?;
    tracing::info!(
        node = identity.node_id,
        cluster = %identity.cluster_id,
        addr = %identity.addr,
        role = if state.is_spare() { "spare" } else { "replica" },
        map = %map.summary(),
        "kvnode serving"
    );
    serve(state, listener, connections, stop).await
}

/// Opens the node's store (RocksDB's open files bounded by `budget`) and builds its [`Node`]
/// with the map it starts from; returns it with the initial map its pristine groups are
/// initialized from, if any.
fn open_node(
    cfg: &Config,
    identity: &Identity,
    faults: Faults,
    budget: &FdBudget,
    http: reqwest::Client,
    from_peer: Option<ClusterMap>,
    connections: &Arc<Connections>,
) -> anyhow::Result<(Arc<Node>, Option<ClusterMap>)> {
    let Faults {
        store: store_faults,
        node: node_faults,
    } = faults;
    let store_options = StoreOptions {
        max_open_files: budget.table_files,
        faults: store_faults,
    };
    let store = Store::open_with(&cfg.data_dir, store_options)
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    let (map, initial) = starting_map(cfg, identity, &store, from_peer)?;
    let initialize_from = initial_to_initialize(&map, initial);
    let state = Arc::new(Node::new(
        cfg.clone(),
        identity.clone(),
        store,
        map,
        http,
        node_faults,
        connections.clone(),
    ));
    Ok((state, initialize_from))
}

/// Serves the node on `listener` (its heartbeat and metadata loops beside) until `stop` turns
/// true, the node must stop, or a repair replaced it.
async fn serve(
    state: Arc<Node>,
    listener: tokio::net::TcpListener,
    connections: Arc<Connections>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Ended> {
    let role = Arc::new(Meta::new(state.clone()));
    let heartbeats = tokio::spawn(crate::heartbeat::run(state.clone(), role.clone()));
    let meta = tokio::spawn(crate::meta::run(role.clone()));
    let mut fatal = state.fatal.subscribe();
    let stopped = async move {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = fatal.wait_for(|f| f.is_some()) => {}
        }
    };
    // A second handle of the listening socket, for a second life if a repair replaces the node.
    let std_listener = listener.into_std()?;
    let spare_listener = std_listener.try_clone()?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    // Connections from the map's nodes have a reserve of their own (the map can change).
    let nodes = state.clone();
    let class_of = move |ip| {
        if is_node_ip(ip, &nodes.map()) {
            Class::Peer
        } else {
            Class::Client
        }
    };
    listener::serve(
        listener,
        crate::http::router(state.clone(), role),
        connections,
        class_of,
        stopped,
    )
    .await;
    tracing::info!("shutting down");
    heartbeats.abort();
    meta.abort();
    state.shutdown_replicas().await;
    if state.must_rejoin() {
        return replaced(state, tokio::net::TcpListener::from_std(spare_listener)?).await;
    }
    if let Some(reason) = state.fatal.borrow().clone() {
        anyhow::bail!("{reason}");
    }
    Ok(Ended::Stopped)
}

/// Ends a life of a node a repair replaced: closes its store and hands its listening socket and
/// its map's other nodes to the next life.
async fn replaced(state: Arc<Node>, listener: tokio::net::TcpListener) -> anyhow::Result<Ended> {
    let peers = map_peers(&state.map(), state.id());
    let store = state.store.clone();
    drop(state);
    close_store(store).await?;
    Ok(Ended::Replaced { listener, peers })
}

/// The addresses of `map`'s active nodes other than `me`.
fn map_peers(map: &ClusterMap, me: kvorum_raftstore::NodeId) -> Vec<SocketAddr> {
    map.nodes
        .iter()
        .filter(|(id, _)| **id != me && map.is_active(**id))
        .filter_map(|(_, n)| n.addr.parse().ok())
        .collect()
}

/// Waits until `store` is the last handle of the node's store (the stopped replicas and the
/// tasks that served them let theirs go), then drops it, which closes RocksDB. Fails after
/// [`STORE_CLOSE_WAIT`]: wiping a directory an open RocksDB still writes to would corrupt the
/// next store opened there.
async fn close_store(store: Store) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STORE_CLOSE_WAIT;
    while !store.is_last_handle() {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "this node was replaced while it was away, but its store was still in use {} s \
                 after its replicas stopped; wipe its data directory and start it with --join",
                STORE_CLOSE_WAIT.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(store);
    Ok(())
}

/// Shares the open-file limit between RocksDB and connections (`http::budget`) and logs how.
fn fd_budget(cfg: &Config) -> anyhow::Result<FdBudget> {
    let (limit, _) = open_files_limits().context("cannot read the open-file limit")?;
    let budget = FdBudget::plan(limit, cfg.max_client_connections)?;
    tracing::info!(
        open_files = budget.limit,
        rocksdb_files = budget.table_files,
        peer_connections = budget.peer_connections,
        client_connections = budget.client_connections,
        header_timeout_ms = cfg.header_timeout.as_millis() as u64,
        idle_timeout_ms = cfg.idle_timeout.as_millis() as u64,
        "file descriptors shared between storage and connections"
    );
    if let Some(configured) = budget.lowered_from {
        tracing::warn!(
            configured,
            allowed = budget.client_connections,
            open_files = budget.limit,
            "max_client_connections lowered to what the open-file limit leaves; raise the hard \
             limit (ulimit -Hn, LimitNOFILE= in the systemd unit) to allow more"
        );
    }
    Ok(budget)
}

/// Logs how internal calls are trusted: by the cluster secret, or in protected mode by the
/// caller's address.
fn log_trust_mode(cfg: &Config) {
    if cfg.protected_mode {
        tracing::warn!(
            "PROTECTED MODE: no cluster secret is configured (KVORUM_CLUSTER_SECRET), so the \
         internal routes (Raft, heartbeats, membership, /internal) accept calls only from \
         the addresses of the cluster's nodes and from loopback (127.0.0.1, ::1); the client \
         API stays open. Set the same secret on every node to authenticate internal calls \
         instead (needed when nodes reach each other through NAT or a proxy)"
        );
    } else {
        tracing::info!("internal routes authenticated by the cluster secret");
    }
}

/// The map a starting node serves from: the newest of its store's, its map file's, the one a
/// peer answered while it started, and the initial one of a new cluster (also returned: a new
/// cluster's first node initializes its groups from it). The map file is brought up to date.
fn starting_map(
    cfg: &Config,
    identity: &Identity,
    store: &Store,
    from_peer: Option<ClusterMap>,
) -> anyhow::Result<(ClusterMap, Option<ClusterMap>)> {
    let initial = initial_map_to_use(identity)?;
    let stored = stored_map_in(store)?.map(|(m, _)| m);
    let file = read_map_file(&cfg.data_dir)?;
    let file_epoch = file.as_ref().map_or(0, |m| m.epoch);
    let Some(map) = newest_map([stored, file, from_peer, initial.clone()]) else {
        anyhow::bail!(
            "node {} joined its cluster but {} holds no cluster map; wipe the data directory and \
             join it again as a new node",
            identity.node_id,
            cfg.data_dir.display()
        );
    };
    if map.epoch > file_epoch {
        write_map_file(&cfg.data_dir, &map)?;
    }
    Ok((map, initial))
}

/// How a node starts: its identity, the newest map a peer answered when it decided how to start
/// (if any), and the listener to serve on.
type Started = (Identity, Option<ClusterMap>, tokio::net::TcpListener);

/// How the node starts (see [`Started`]); `None` when `stop` fired while it waited to be added.
async fn start_identity(
    cfg: &Config,
    http: &reqwest::Client,
    listener: tokio::net::TcpListener,
    connections: &Arc<Connections>,
    stop: watch::Receiver<bool>,
    ask_to_join: bool,
) -> anyhow::Result<Option<Started>> {
    if Identity::exists(&cfg.data_dir) {
        return Ok(Some((
            Identity::load_or_create(&cfg.data_dir, cfg)?,
            None,
            listener,
        )));
    }
    let peers: Vec<SocketAddr> = if cfg.joins() {
        cfg.join.clone()
    } else {
        cfg.effective_view()
    };
    let peers: Vec<SocketAddr> = peers.into_iter().filter(|p| *p != cfg.listen).collect();
    if !cfg.joins() {
        // An empty data directory in a view: a new cluster, a late initial member of a running
        // one, or a new node of another cluster running at these addresses.
        let newest = if peers.is_empty() {
            None
        } else {
            let own = Identity::from_config(cfg)?;
            let answers = join::probe(http, &peers).await;
            match join::classify_start(cfg.listen, own.node_id, &own.cluster_id, &answers) {
                Start::Refuse(reason) => anyhow::bail!("{reason}"),
                Start::Create { newest } => newest,
                Start::Join => {
                    tracing::warn!(
                        "another cluster runs at addresses of this node's view, so this node does \
                         not create one: it joins that cluster as a new node once it is added"
                    );
                    return joiner(cfg, http, &peers, listener, connections, stop, false).await;
                }
            }
        };
        let identity = Identity::load_or_create(&cfg.data_dir, cfg)?;
        return Ok(Some((identity, newest, listener)));
    }
    joiner(cfg, http, &peers, listener, connections, stop, ask_to_join).await
}

/// [`join::run_joiner`], its outcome in the form of [`start_identity`]'s.
async fn joiner(
    cfg: &Config,
    http: &reqwest::Client,
    peers: &[SocketAddr],
    listener: tokio::net::TcpListener,
    connections: &Arc<Connections>,
    stop: watch::Receiver<bool>,
    ask_to_join: bool,
) -> anyhow::Result<Option<Started>> {
    Ok(
        join::run_joiner(cfg, http, peers, listener, connections, stop, ask_to_join)
            .await?
            .map(|(joined, listener)| (joined.identity, Some(joined.map), listener)),
    )
}
