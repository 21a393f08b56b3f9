//! The `kvnode` command: parses flags, environment and config file, installs tracing, binds the
//! listener and runs the node until SIGTERM or SIGINT. In the library so that the test suite's
//! `kvnode-test` binary runs the same program with its planted faults ([`main_with_faults`]).

use std::path::PathBuf;

use crate::config::{Config, FileConfig};
use crate::faults::Faults;
use anyhow::Context;
use clap::Parser;

/// One node of a kvorum cluster. With no view, a single-node cluster with its data in ./data.
///
/// Settings come from defaults < the config file < environment < flags.
#[derive(Parser, Debug)]
#[command(name = "kvnode", version)]
struct Args {
    /// TOML config file (see deploy/kvnode.toml).
    #[arg(long, env = "KVORUM_CONFIG")]
    config: Option<PathBuf>,
    /// Address of this node's client API and Raft transport, ip:port [default: 127.0.0.1:7070].
    #[arg(long, env = "IPPORT")]
    listen: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "KVORUM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Every node's address, comma-separated, identical on every node [default: none: single node].
    #[arg(long, alias = "peers", env = "VIEW")]
    view: Option<String>,
    /// Addresses of running nodes, comma-separated: join their cluster as a new node, waiting
    /// until `kvctl add-node` adds it. Exclusive with --view.
    #[arg(long, env = "KVORUM_JOIN")]
    join: Option<String>,
    /// Replicas per group [default: min(N, 3)].
    #[arg(short = 'k', long = "replicas", env = "K")]
    k: Option<usize>,
    /// Secret authenticating the internal Raft transport [default: a development secret, with a warning].
    #[arg(long, env = "KVORUM_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Largest key in bytes [default: 4096].
    #[arg(long, env = "KVORUM_MAX_KEY_BYTES")]
    max_key_bytes: Option<usize>,
    /// Largest value in bytes [default: 1048576].
    #[arg(long, env = "KVORUM_MAX_VALUE_BYTES")]
    max_value_bytes: Option<usize>,
    /// Voters of the config group once the cluster has that many nodes: 3 or 5.
    #[arg(long, env = "KVORUM_CONFIG_VOTERS")]
    config_voters: Option<usize>,
    /// Time a request may take before its outcome is reported unknown, ms [default: 5000].
    #[arg(long, env = "KVORUM_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// Raft heartbeat interval, ms [default: 250].
    #[arg(long, env = "KVORUM_HEARTBEAT_MS")]
    heartbeat_ms: Option<u64>,
    /// Election timeout, ms: a follower campaigns after 1–1.5× this without its leader [default: 1000].
    #[arg(long, env = "KVORUM_ELECTION_TIMEOUT_MS")]
    election_timeout_ms: Option<u64>,
    /// Applied log entries between snapshots [default: 20000].
    #[arg(long, env = "KVORUM_SNAPSHOT_EVERY")]
    snapshot_every: Option<u64>,
    /// Interval of this node's heartbeat to the metadata leader, ms [default: 1000].
    #[arg(long, env = "KVORUM_NODE_HEARTBEAT_MS")]
    node_heartbeat_ms: Option<u64>,
    /// Silence after which the metadata leader marks a node suspect, ms [default: 3000].
    #[arg(long, env = "KVORUM_SUSPECT_AFTER_MS")]
    suspect_after_ms: Option<u64>,
    /// Silence after which a node is dead and its replicas are repaired from spares, ms [default: 300000].
    #[arg(long, env = "KVORUM_DEAD_AFTER_MS")]
    dead_after_ms: Option<u64>,
    /// Log entries kept after a snapshot (a follower further behind gets a snapshot) [default: 5000].
    #[arg(long, env = "KVORUM_SNAPSHOT_LOGS_KEPT")]
    snapshot_logs_kept: Option<u64>,
    /// Most client connections at once; more are refused with 503 too_many_connections. Lowered
    /// to what the open-file limit leaves [default: 10000].
    #[arg(long, env = "KVORUM_MAX_CLIENT_CONNECTIONS")]
    max_client_connections: Option<usize>,
    /// Time a connection has to send a request's headers, ms [default: 10000].
    #[arg(long, env = "KVORUM_HEADER_TIMEOUT_MS")]
    header_timeout_ms: Option<u64>,
    /// Time a keep-alive connection may stay idle between requests, ms [default: 120000].
    #[arg(long, env = "KVORUM_IDLE_TIMEOUT_MS")]
    idle_timeout_ms: Option<u64>,
}

fn load_config(args: Args) -> anyhow::Result<Config> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let over = FileConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        view: args.view,
        join: args.join,
        k: args.k,
        cluster_secret: args.cluster_secret,
        max_key_bytes: args.max_key_bytes,
        max_value_bytes: args.max_value_bytes,
        config_voters: args.config_voters,
        request_timeout_ms: args.request_timeout_ms,
        heartbeat_ms: args.heartbeat_ms,
        election_timeout_ms: args.election_timeout_ms,
        snapshot_every: args.snapshot_every,
        snapshot_logs_kept: args.snapshot_logs_kept,
        node_heartbeat_ms: args.node_heartbeat_ms,
        suspect_after_ms: args.suspect_after_ms,
        dead_after_ms: args.dead_after_ms,
        max_client_connections: args.max_client_connections,
        header_timeout_ms: args.header_timeout_ms,
        idle_timeout_ms: args.idle_timeout_ms,
    };
    Config::from_file_config(file.overridden_by(over))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

/// The whole `kvnode` program, without faults; `kvnode`'s `main`.
pub fn main() -> std::process::ExitCode {
    main_with_faults(Faults::default())
}

/// The `kvnode` program with the test suite's planted `faults` (see `faults.rs`), which the
/// `kvnode-test` binary reads from its environment once at start.
pub fn main_with_faults(faults: Faults) -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = (|| -> anyhow::Result<()> {
        let cfg = load_config(Args::parse())?;
        // Before anything opens a file: the connection cap is sized from this limit.
        crate::http::budget::raise_open_files_limit();
        let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind(cfg.listen)
                .await
                .with_context(|| format!("cannot listen on {}", cfg.listen))?;
            crate::run_with_faults(cfg, faults, listener, shutdown_signal()).await
        })
    })();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvnode: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
