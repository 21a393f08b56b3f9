//! Node configuration: defaults < config file < environment < flags.
//!
//! Every field is documented with its unit and default; `deploy/kvnode.toml` is the commented
//! reference. The seed's variables `K`, `VIEW` and `IPPORT` are accepted as environment.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default client API address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Secret sent when none is configured. It is public: without a configured secret the node runs
/// in protected mode, where the caller's address, not this secret, guards the internal routes.
pub const DEV_CLUSTER_SECRET: &str = "kvorum-development-secret";
/// Default largest key, in bytes.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4 * 1024;
/// Default largest value, in bytes.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest configurable `max_value_bytes`: one value must cross the link between nodes within
/// one Raft heartbeat (openraft's append RPC limit), so 8 MiB already needs ~270 Mbit/s per
/// follower at the default 250 ms. Below the state machine's hard cap, which apply enforces.
pub const MAX_CONFIGURABLE_VALUE_BYTES: usize = 8 << 20;
const _: () = assert!(MAX_CONFIGURABLE_VALUE_BYTES <= kvorum_raftstore::MAX_VALUE_BYTES);
/// Default time a client request may take before its outcome is reported unknown, in ms.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Default Raft heartbeat interval, in ms. openraft 0.9 also uses it as the time limit of an
/// append RPC and of a read-index round, so it must let one append RPC (at most
/// `network::MAX_APPEND_BYTES`, 1 MiB) cross the link: 250 ms holds down to ~35 Mbit/s.
pub const DEFAULT_HEARTBEAT_MS: u64 = 250;
/// Default election timeout, in ms: four heartbeats. A follower that has not heard its leader
/// for this long plus a random part of up to half of it asks for pre-votes and, granted, campaigns
/// (see `election`); it is also openraft's leader lease.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u64 = 1_000;
/// Default number of applied log entries between snapshots.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 20_000;
/// Default interval of a node's heartbeat to the metadata leader, in ms.
pub const DEFAULT_NODE_HEARTBEAT_MS: u64 = 1_000;
/// Default number of log entries kept after a snapshot.
pub const DEFAULT_SNAPSHOT_LOGS_KEPT: u64 = 5_000;
/// Default time without a heartbeat after which a node is suspect, in ms.
pub const DEFAULT_SUSPECT_AFTER_MS: u64 = 3_000;
/// Default time without a heartbeat after which a node is dead (and repaired), in ms: 5 minutes,
/// so that a restart, an upgrade or a network blip never costs a node its replicas (CockroachDB
/// waits as long before it moves a store's replicas).
pub const DEFAULT_DEAD_AFTER_MS: u64 = 300_000;
/// Default cap of client connections (Redis's `maxclients`); lowered at start to what the
/// open-file limit leaves (see `http::budget`).
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 10_000;
/// Default time a connection has to send a request's headers, in ms, counted from its opening
/// or from the request's first byte.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// Default time a keep-alive connection may stay idle between requests, in ms: longer than the
/// idle timeout of reqwest's and most clients' connection pools (90 s), so that a client drops an
/// idle connection before the node closes it under a request it is sending.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 120_000;

/// Shortest `header_timeout_ms` and `idle_timeout_ms`: a peer across a LAN sends a request's
/// headers in a few milliseconds, and a client needs a moment between two requests.
pub const MIN_CONNECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// The file form of the configuration: every field optional, unknown fields rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
// Each field is the setting of the same name, documented on [`Config`] (milliseconds where the
// name ends in `_ms`) and in deploy/kvnode.toml.
#[allow(missing_docs)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub view: Option<String>,
    pub join: Option<String>,
    pub k: Option<usize>,
    pub cluster_secret: Option<String>,
    pub max_key_bytes: Option<usize>,
    pub max_value_bytes: Option<usize>,
    pub request_timeout_ms: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    pub election_timeout_ms: Option<u64>,
    pub snapshot_every: Option<u64>,
    pub snapshot_logs_kept: Option<u64>,
    pub node_heartbeat_ms: Option<u64>,
    pub suspect_after_ms: Option<u64>,
    pub dead_after_ms: Option<u64>,
    pub config_voters: Option<usize>,
    pub max_client_connections: Option<usize>,
    pub header_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
}

impl FileConfig {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))
    }

    /// `self` with every field that `over` sets replaced by `over`'s.
    pub fn overridden_by(self, over: FileConfig) -> FileConfig {
        FileConfig {
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            view: over.view.or(self.view),
            join: over.join.or(self.join),
            k: over.k.or(self.k),
            cluster_secret: over.cluster_secret.or(self.cluster_secret),
            max_key_bytes: over.max_key_bytes.or(self.max_key_bytes),
            max_value_bytes: over.max_value_bytes.or(self.max_value_bytes),
            request_timeout_ms: over.request_timeout_ms.or(self.request_timeout_ms),
            heartbeat_ms: over.heartbeat_ms.or(self.heartbeat_ms),
            election_timeout_ms: over.election_timeout_ms.or(self.election_timeout_ms),
            snapshot_every: over.snapshot_every.or(self.snapshot_every),
            snapshot_logs_kept: over.snapshot_logs_kept.or(self.snapshot_logs_kept),
            node_heartbeat_ms: over.node_heartbeat_ms.or(self.node_heartbeat_ms),
            suspect_after_ms: over.suspect_after_ms.or(self.suspect_after_ms),
            dead_after_ms: over.dead_after_ms.or(self.dead_after_ms),
            config_voters: over.config_voters.or(self.config_voters),
            max_client_connections: over.max_client_connections.or(self.max_client_connections),
            header_timeout_ms: over.header_timeout_ms.or(self.header_timeout_ms),
            idle_timeout_ms: over.idle_timeout_ms.or(self.idle_timeout_ms),
        }
    }
}

/// The validated configuration of one node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client API and internal transport address, `ip:port`; also this node's address in the
    /// view. Default `127.0.0.1:7070`.
    pub listen: SocketAddr,
    /// Data directory (RocksDB, snapshots, node identity). Default `./data`.
    pub data_dir: PathBuf,
    /// Every node's address, in the same order on every node; empty for a single-node cluster
    /// (or a node started with `join`).
    pub view: Vec<SocketAddr>,
    /// Addresses of running nodes of the cluster this node joins (`--join`, `KVORUM_JOIN`):
    /// a new node started with them waits until the metadata leader adds it (`kvctl add-node`),
    /// then takes the id the map gives it. Exclusive with `view`. Default: none.
    pub join: Vec<SocketAddr>,
    /// Replicas per group. Default: min(N, 3); 1 with no view; with `join`, the cluster's.
    pub k: usize,
    /// Whether K was configured rather than defaulted. A joining node whose configured K is not
    /// the cluster's refuses to join.
    pub k_configured: bool,
    /// Secret that authenticates the internal routes (Raft RPCs, heartbeats, membership,
    /// status), identical on every node. Default: none, which means protected mode (below).
    pub cluster_secret: String,
    /// No secret is configured (`cluster_secret` is the public [`DEV_CLUSTER_SECRET`]): the
    /// internal routes accept only calls from the addresses of the cluster map's nodes and from
    /// loopback (127.0.0.1, ::1), as Redis does without a password.
    pub protected_mode: bool,
    /// Largest key in bytes. Default 4 KiB.
    pub max_key_bytes: usize,
    /// Largest value in bytes. Default 1 MiB.
    pub max_value_bytes: usize,
    /// Time a client request may take. Default 5 s.
    pub request_timeout: Duration,
    /// Raft heartbeat interval (also openraft's time limit of an append RPC). Default 250 ms.
    pub heartbeat: Duration,
    /// Election timeout: a follower campaigns after 1–1.5× this without hearing its leader (see
    /// `election`); also openraft's leader lease. Default 1000 ms.
    pub election_timeout: Duration,
    /// Applied entries between snapshots. Default 20,000.
    pub snapshot_every: u64,
    /// Log entries kept after a snapshot, so that a briefly lagging follower catches up from the
    /// log rather than by snapshot. Default 5,000.
    pub snapshot_logs_kept: u64,
    /// Interval of this node's heartbeat to the metadata leader. Default 1 s.
    pub node_heartbeat: Duration,
    /// Silence after which the metadata leader marks a node suspect. Default 3 s.
    pub suspect_after: Duration,
    /// Silence after which the metadata leader marks a node dead and repairs its replicas from
    /// spares. Default 5 min.
    pub dead_after: Duration,
    /// Voters of the config group once the cluster has that many nodes: 3 (default) or 5. View
    /// changes grow and shrink the config group towards min(N, this).
    pub config_voters: usize,
    /// Most client connections open at once (connections from the cluster's nodes have a reserve
    /// of their own); one more is refused at once with 503 `too_many_connections`. Lowered at
    /// start to what the open-file limit leaves (`http::budget`). Default 10,000.
    pub max_client_connections: usize,
    /// Time a connection has to send a request's headers, from its opening or from the first
    /// byte of its next request; then it is closed. Default 10 s.
    pub header_timeout: Duration,
    /// Time a keep-alive connection may stay idle between requests; then it is closed. The
    /// node's own pool drops idle connections to its peers after half of it. Default 120 s.
    pub idle_timeout: Duration,
}

fn parse_addr(s: &str, what: &str) -> anyhow::Result<SocketAddr> {
    s.trim().parse().map_err(|_| {
        anyhow::anyhow!("{what}: {s:?} is not an ip:port address (e.g. 127.0.0.1:7070)")
    })
}

impl Config {
    /// Resolves and validates a merged [`FileConfig`]; rejects impossible combinations.
    pub fn from_file_config(f: FileConfig) -> anyhow::Result<Config> {
        let listen = parse_addr(
            f.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
            "listen address (IPPORT)",
        )?;
        let view: Vec<SocketAddr> = match f.view.as_deref().map(str::trim) {
            None | Some("") => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|a| parse_addr(a, "view (VIEW)"))
                .collect::<anyhow::Result<_>>()?,
        };
        let join: Vec<SocketAddr> = match f.join.as_deref().map(str::trim) {
            None | Some("") => Vec::new(),
            Some(v) => v
                .split(',')
                .map(|a| parse_addr(a, "join addresses (--join, KVORUM_JOIN)"))
                .collect::<anyhow::Result<_>>()?,
        };
        let n = view.len().max(1);
        let k = f.k.unwrap_or(n.min(3));
        let (cluster_secret, protected_mode) = match f.cluster_secret {
            Some(s) if !s.is_empty() => (s, false),
            _ => (DEV_CLUSTER_SECRET.to_string(), true),
        };
        let cfg = Config {
            listen,
            data_dir: f
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            view,
            join,
            k,
            k_configured: f.k.is_some(),
            cluster_secret,
            protected_mode,
            max_key_bytes: f.max_key_bytes.unwrap_or(DEFAULT_MAX_KEY_BYTES),
            max_value_bytes: f.max_value_bytes.unwrap_or(DEFAULT_MAX_VALUE_BYTES),
            request_timeout: Duration::from_millis(
                f.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS),
            ),
            heartbeat: Duration::from_millis(f.heartbeat_ms.unwrap_or(DEFAULT_HEARTBEAT_MS)),
            election_timeout: Duration::from_millis(
                f.election_timeout_ms.unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS),
            ),
            snapshot_every: f.snapshot_every.unwrap_or(DEFAULT_SNAPSHOT_EVERY),
            snapshot_logs_kept: f.snapshot_logs_kept.unwrap_or(DEFAULT_SNAPSHOT_LOGS_KEPT),
            node_heartbeat: Duration::from_millis(
                f.node_heartbeat_ms.unwrap_or(DEFAULT_NODE_HEARTBEAT_MS),
            ),
            suspect_after: Duration::from_millis(
                f.suspect_after_ms.unwrap_or(DEFAULT_SUSPECT_AFTER_MS),
            ),
            dead_after: Duration::from_millis(f.dead_after_ms.unwrap_or(DEFAULT_DEAD_AFTER_MS)),
            config_voters: f
                .config_voters
                .unwrap_or(kvorum_router::map::MAX_CONFIG_VOTERS),
            max_client_connections: f
                .max_client_connections
                .unwrap_or(DEFAULT_MAX_CLIENT_CONNECTIONS),
            header_timeout: Duration::from_millis(
                f.header_timeout_ms.unwrap_or(DEFAULT_HEADER_TIMEOUT_MS),
            ),
            idle_timeout: Duration::from_millis(
                f.idle_timeout_ms.unwrap_or(DEFAULT_IDLE_TIMEOUT_MS),
            ),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Rejects impossible combinations with a message that says what to change.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.join.is_empty() {
            return self.validate_join();
        }
        let n = self.view.len();
        if n > 0 {
            if !self.view.contains(&self.listen) {
                anyhow::bail!(
                    "this node's address {} (IPPORT) is not in the view (VIEW); list it exactly as in VIEW",
                    self.listen
                );
            }
            let mut sorted = self.view.clone();
            sorted.sort();
            sorted.dedup();
            if sorted.len() != n {
                anyhow::bail!("the view (VIEW) lists an address twice");
            }
            if self.listen.ip().is_unspecified() {
                anyhow::bail!(
                    "IPPORT must be an address peers can reach, not {}",
                    self.listen.ip()
                );
            }
        }
        let n = n.max(1);
        if self.k == 0 || self.k > n {
            anyhow::bail!(
                "K must be between 1 and the number of nodes ({n}), got {}",
                self.k
            );
        }
        self.validate_limits()
    }

    /// The checks of a node started with `join`: no view, addresses of other nodes, K positive
    /// (the cluster's K bounds it, checked when the node finds the cluster).
    fn validate_join(&self) -> anyhow::Result<()> {
        if !self.view.is_empty() {
            anyhow::bail!(
                "--join (KVORUM_JOIN) and VIEW are exclusive: give VIEW (every node's address) to \
                 create a cluster or to start one of its nodes, or --join ADDR,... (some running \
                 nodes) to add this node to a running cluster"
            );
        }
        if self.join.iter().all(|a| *a == self.listen) {
            anyhow::bail!(
                "--join must name at least one running node other than this one ({})",
                self.listen
            );
        }
        if self.listen.ip().is_unspecified() {
            anyhow::bail!(
                "IPPORT must be an address peers can reach, not {}",
                self.listen.ip()
            );
        }
        if self.k == 0 {
            anyhow::bail!("K must be at least 1");
        }
        self.validate_limits()
    }

    /// The checks of the limits and timings, whatever the way the node starts.
    fn validate_limits(&self) -> anyhow::Result<()> {
        if self.config_voters != 3 && self.config_voters != 5 {
            anyhow::bail!(
                "config_voters (--config-voters) must be 3 or 5, got {}",
                self.config_voters
            );
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            anyhow::bail!("max_key_bytes and max_value_bytes must be positive");
        }
        if self.max_value_bytes > MAX_CONFIGURABLE_VALUE_BYTES {
            anyhow::bail!(
                "max_value_bytes must be at most {MAX_CONFIGURABLE_VALUE_BYTES} (8 MiB): a value \
                 must cross the link within one Raft heartbeat"
            );
        }
        if self.max_key_bytes > kvorum_raftstore::MAX_KEY_BYTES {
            anyhow::bail!(
                "max_key_bytes must be at most {} (1 MiB)",
                kvorum_raftstore::MAX_KEY_BYTES
            );
        }
        if self.heartbeat.is_zero() || self.election_timeout <= self.heartbeat * 2 {
            anyhow::bail!("election_timeout_ms must exceed twice heartbeat_ms");
        }
        if self.request_timeout < Duration::from_millis(100) {
            anyhow::bail!("request_timeout_ms must be at least 100");
        }
        if self.node_heartbeat < Duration::from_millis(10) {
            anyhow::bail!("node_heartbeat_ms must be at least 10");
        }
        if self.suspect_after <= self.node_heartbeat || self.dead_after <= self.suspect_after {
            anyhow::bail!(
                "need node_heartbeat_ms < suspect_after_ms < dead_after_ms (got {} < {} < {})",
                self.node_heartbeat.as_millis(),
                self.suspect_after.as_millis(),
                self.dead_after.as_millis()
            );
        }
        if self.snapshot_every == 0 {
            anyhow::bail!("snapshot_every must be positive");
        }
        if self.max_client_connections == 0 {
            anyhow::bail!("max_client_connections must be positive");
        }
        if self.header_timeout < MIN_CONNECTION_TIMEOUT
            || self.idle_timeout < MIN_CONNECTION_TIMEOUT
        {
            anyhow::bail!(
                "header_timeout_ms and idle_timeout_ms must be at least {} (got {} and {})",
                MIN_CONNECTION_TIMEOUT.as_millis(),
                self.header_timeout.as_millis(),
                self.idle_timeout.as_millis()
            );
        }
        Ok(())
    }

    /// Whether this node was started to join a running cluster (`--join`).
    pub fn joins(&self) -> bool {
        !self.join.is_empty()
    }

    /// The view with this node's place in it; a single-node view when none is configured.
    pub fn effective_view(&self) -> Vec<SocketAddr> {
        if self.view.is_empty() {
            vec![self.listen]
        } else {
            self.view.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fc(view: &str, listen: &str, k: Option<usize>) -> FileConfig {
        FileConfig {
            view: Some(view.into()),
            listen: Some(listen.into()),
            k,
            ..Default::default()
        }
    }

    // The embedded default: no view, one node, K=1, data in ./data.
    #[test]
    fn defaults_make_a_single_node_cluster() -> anyhow::Result<()> {
        let c = Config::from_file_config(FileConfig::default())?;
        assert_eq!(c.k, 1);
        assert_eq!(c.effective_view(), vec![c.listen]);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.protected_mode);
        Ok(())
    }

    // A configured secret turns protected mode off; an empty one counts as none.
    #[test]
    fn protected_mode_only_without_a_secret() -> anyhow::Result<()> {
        let with = |secret: &str| FileConfig {
            cluster_secret: Some(secret.into()),
            ..Default::default()
        };
        let c = Config::from_file_config(with("s3cret"))?;
        assert!(!c.protected_mode);
        assert_eq!(c.cluster_secret, "s3cret");
        let c = Config::from_file_config(with(""))?;
        assert!(c.protected_mode);
        assert_eq!(c.cluster_secret, DEV_CLUSTER_SECRET);
        Ok(())
    }

    // Values are bounded by what one heartbeat can carry, keys by the state machine's cap.
    #[test]
    fn size_limits_are_bounded() {
        let with = |key: usize, value: usize| {
            Config::from_file_config(FileConfig {
                max_key_bytes: Some(key),
                max_value_bytes: Some(value),
                ..Default::default()
            })
        };
        assert!(with(4096, MAX_CONFIGURABLE_VALUE_BYTES).is_ok());
        assert!(with(4096, MAX_CONFIGURABLE_VALUE_BYTES + 1).is_err());
        assert!(with(kvorum_raftstore::MAX_KEY_BYTES + 1, 1024).is_err());
        assert!(with(0, 1024).is_err());
    }

    // The connection settings default to Redis's maxclients and sane timers, and a zero cap or
    // a timer under MIN_CONNECTION_TIMEOUT is refused.
    #[test]
    fn connection_settings_have_defaults_and_bounds() -> anyhow::Result<()> {
        let c = Config::from_file_config(FileConfig::default())?;
        assert_eq!(c.max_client_connections, DEFAULT_MAX_CLIENT_CONNECTIONS);
        assert_eq!(
            c.header_timeout,
            Duration::from_millis(DEFAULT_HEADER_TIMEOUT_MS)
        );
        assert_eq!(
            c.idle_timeout,
            Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS)
        );
        let with = |max: usize, header: u64, idle: u64| {
            Config::from_file_config(FileConfig {
                max_client_connections: Some(max),
                header_timeout_ms: Some(header),
                idle_timeout_ms: Some(idle),
                ..Default::default()
            })
        };
        let c = with(50, 2_000, 4_000)?;
        assert_eq!(c.max_client_connections, 50);
        assert_eq!(c.header_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(4));
        assert!(with(0, 2_000, 4_000).is_err());
        assert!(with(50, 99, 4_000).is_err());
        assert!(with(50, 2_000, 99).is_err());
        Ok(())
    }

    // Impossible combinations are refused with a reason.
    #[test]
    fn bad_views_are_rejected() {
        let cases = [
            fc("127.0.0.1:1,127.0.0.1:2", "127.0.0.1:3", None), // not in view
            fc("127.0.0.1:1,127.0.0.1:1", "127.0.0.1:1", None), // duplicate
            fc("127.0.0.1:1,127.0.0.1:2", "127.0.0.1:1", Some(3)), // K > N
            fc("127.0.0.1:1,nonsense", "127.0.0.1:1", None),    // bad address
        ];
        for c in cases {
            let v = c.view.clone();
            assert!(Config::from_file_config(c).is_err(), "{v:?} accepted");
        }
    }

    // --join names running nodes; it excludes VIEW, and needs a node other than this one.
    #[test]
    fn join_excludes_view() -> anyhow::Result<()> {
        let join = |view: Option<&str>, join: &str, k: Option<usize>| {
            Config::from_file_config(FileConfig {
                view: view.map(str::to_string),
                join: Some(join.into()),
                listen: Some("127.0.0.4:7070".into()),
                k,
                ..Default::default()
            })
        };
        let c = join(None, "127.0.0.1:7070, 127.0.0.2:7070", Some(3))?;
        assert!(c.joins());
        assert_eq!(c.join.len(), 2);
        assert!(c.k_configured);
        assert!(!join(None, "127.0.0.1:7070", None)?.k_configured);
        let err = join(
            Some("127.0.0.1:7070,127.0.0.4:7070"),
            "127.0.0.1:7070",
            None,
        )
        .expect_err("join with a view");
        assert!(err.to_string().contains("exclusive"), "{err}");
        assert!(join(None, "127.0.0.4:7070", None).is_err()); // only itself
        assert!(join(None, "nonsense", None).is_err());
        assert!(join(None, "127.0.0.1:7070", Some(0)).is_err());
        Ok(())
    }

    // Three nodes default to one group of three; five nodes with K=3 leave two spares.
    #[test]
    fn k_defaults_to_at_most_three() -> anyhow::Result<()> {
        let c = Config::from_file_config(fc(
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
            "127.0.0.1:2",
            None,
        ))?;
        assert_eq!(c.k, 3);
        let v5 = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5";
        assert_eq!(Config::from_file_config(fc(v5, "127.0.0.1:5", None))?.k, 3);
        Ok(())
    }
}
