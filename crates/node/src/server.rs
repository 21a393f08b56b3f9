//! Starting and stopping a node: identity, store, the replicas the cluster map asks for, the
//! heartbeat and metadata loops, the HTTP server, graceful shutdown.
//!
//! Steps of `run`: (1) load or create the identity in the data directory, (2) open RocksDB,
//! (3) take the newest map known locally (the config replica's stored map, else the initial map
//! computed from the view and K, identical on every node), (4) start the replicas that map asks
//! for, initializing the pristine ones this node is an initial member of (every initial member
//! does so with the same membership, which openraft allows), (5) start the heartbeat loop and the
//! metadata loop, (6) serve the client API and the internal routes until `shutdown` resolves or
//! the node learns it was removed, (7) stop the replicas.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use kvorum_raftstore::Store;

use crate::config::Config;
use crate::identity::Identity;
use crate::node::{http_client, initial_map, Node};

/// Runs a node on `listener` until `shutdown` resolves, then stops it cleanly. Returns an error
/// when the node had to stop because it was removed from the cluster.
pub async fn run(
    cfg: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !Identity::exists(&cfg.data_dir) && cfg.effective_view().len() > 1 {
        // An empty data directory: refuse if the cluster already knows this address as a
        // member (a wiped node would rejoin without its log and vote).
        let view = cfg.effective_view();
        crate::incarnation::refuse_if_known(&http_client(&cfg)?, &view, cfg.listen, &cfg.data_dir)
            .await?;
    }
    let identity = Identity::load_or_create(&cfg.data_dir, &cfg)?;
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
    let store = Store::open(&cfg.data_dir)
        .with_context(|| format!("cannot open the store in {}", cfg.data_dir.display()))?;
    let initial = initial_map(&identity)?;
    let http = http_client(&cfg)?;
    let fault_stale_reads = cfg!(feature = "stale-reads")
        && std::env::var("KVORUM_FAULT_STALE_READS").is_ok_and(|v| v == "1");
    if fault_stale_reads {
        tracing::error!(
            "FAULT INJECTED: reads skip read index and may be stale (KVORUM_FAULT_STALE_READS=1)"
        );
    }
    let state = Arc::new(Node::new(
        cfg.clone(),
        identity.clone(),
        store,
        initial.clone(),
        http,
        fault_stale_reads,
    ));
    if let Some((stored, _)) = state.stored_map()? {
        state.install_map(stored).await?;
    }
    let map = state.map();
    if !map.is_active(identity.node_id) {
        anyhow::bail!(
            "node {} was removed from the cluster (epoch {}); it cannot rejoin under this id: wipe {} and join it as a new node",
            identity.node_id,
            map.epoch,
            cfg.data_dir.display()
        );
    }
    state.host_groups(&map, Some(&initial)).await?;
    tracing::info!(
        node = identity.node_id,
        cluster = %identity.cluster_id,
        addr = %identity.addr,
        role = if state.is_spare() { "spare" } else { "replica" },
        map = %map.summary(),
        "kvnode serving"
    );
    let heartbeats = tokio::spawn(crate::heartbeat::run(state.clone()));
    let meta = tokio::spawn(crate::meta::run(state.clone()));
    let mut fatal = state.fatal.subscribe();
    let removed = async move {
        let _ = fatal.wait_for(|f| f.is_some()).await;
    };
    // Served with the caller's address, which protected mode checks on internal routes.
    let app = crate::api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = shutdown => {}
                _ = removed => {}
            }
        })
        // Replies (Raft RPC answers above all) go out at once, not held back by Nagle's algorithm
        // waiting for the peer's delayed ACK.
        .tcp_nodelay(true)
        .await
        .context("HTTP server failed")?;
    tracing::info!("shutting down");
    heartbeats.abort();
    meta.abort();
    state.shutdown_replicas().await;
    if let Some(reason) = state.fatal.borrow().clone() {
        anyhow::bail!("{reason}");
    }
    Ok(())
}
