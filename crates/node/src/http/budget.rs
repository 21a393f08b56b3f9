//! The node's file-descriptor budget: how the open-file limit (`RLIMIT_NOFILE`) is shared
//! between RocksDB, the cluster's own connections and client connections, so that no number of
//! clients can take the descriptors storage and Raft need.
//!
//! Steps: (1) at start the `kvnode` program raises the soft limit to the hard limit
//! ([`raise_open_files_limit`], logged); (2) [`FdBudget::plan`] (pure) splits the limit: a fixed
//! share for everything that is not a connection or a table file, RocksDB's table files (its
//! `max_open_files`), [`PEER_CONNECTIONS`] connections from the cluster's nodes and as many of
//! this node's own to them, and what is left for client connections at two descriptors each (a
//! client's request may be forwarded to its group's leader over a connection of its own), up to
//! `max_client_connections`; (3) the listener (`http::listener`) holds connections to those
//! numbers, and the store is opened with its share.
//!
//! Caveats: the shares are budgets, not limits the kernel enforces: this node's outgoing
//! connections and RocksDB's non-table files are not counted one by one, they fit in their
//! shares with room to spare.

/// Descriptors kept for everything that is neither a connection nor a RocksDB table file: stdio,
/// the async runtime, RocksDB's WAL, MANIFEST, LOG and lock files, flush and compaction outputs,
/// snapshot files being built, sent or installed, and the data directory's own files.
pub const OTHER_FDS: u64 = 128;
/// Connections kept for the cluster's nodes (Raft RPCs, heartbeats, forwarded requests), whatever
/// clients do; the budget counts as many again for this node's own connections to them.
pub const PEER_CONNECTIONS: usize = 128;
/// Share of the open-file limit given to RocksDB's table files: one in this many descriptors.
pub const TABLE_FILES_SHARE: u64 = 8;
/// Fewest table files RocksDB is given, whatever the limit.
pub const MIN_TABLE_FILES: u64 = 64;
/// Most table files RocksDB is given, whatever the limit (a table cache of 4096 SST files holds
/// a store of a few hundred GiB open).
pub const MAX_TABLE_FILES: u64 = 4096;
/// Descriptors one client connection is budgeted: its own, and the connection its request may
/// be forwarded over.
pub const FDS_PER_CLIENT: u64 = 2;
/// Fewest client connections a node starts with: below it the open-file limit is too low to
/// serve (the node refuses to start and says how far to raise it).
pub const MIN_CLIENT_CONNECTIONS: usize = 16;

/// How the open-file limit is shared (see the module overview).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// The soft open-file limit it was planned for.
    pub limit: u64,
    /// RocksDB's `max_open_files`.
    pub table_files: u32,
    /// Connections kept for the cluster's nodes: [`PEER_CONNECTIONS`].
    pub peer_connections: usize,
    /// The cap of client connections: what the limit leaves, at most `max_client_connections`.
    pub client_connections: usize,
    /// What the limit alone would allow, when `max_client_connections` is higher (it was
    /// lowered); `None` when the configured cap fits.
    pub lowered_from: Option<usize>,
}

/// The open-file limit is too low to run a node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the open-file limit ({limit}) is too low for kvnode: it needs at least {needed} descriptors \
     (RocksDB, the cluster's connections and {MIN_CLIENT_CONNECTIONS} client connections); raise \
     it (ulimit -n, or LimitNOFILE= in the systemd unit)"
)]
pub struct LimitTooLow {
    /// The soft limit found.
    pub limit: u64,
    /// The smallest limit that works.
    pub needed: u64,
}

impl FdBudget {
    /// Shares the open-file `limit` (see the module overview), with at most
    /// `max_client_connections` client connections. Pure: the same limit and cap give the same
    /// budget.
    pub fn plan(limit: u64, max_client_connections: usize) -> Result<FdBudget, LimitTooLow> {
        let table_files = (limit / TABLE_FILES_SHARE).clamp(MIN_TABLE_FILES, MAX_TABLE_FILES);
        let fixed = OTHER_FDS + table_files + 2 * PEER_CONNECTIONS as u64;
        let room = limit.saturating_sub(fixed) / FDS_PER_CLIENT;
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        if room < MIN_CLIENT_CONNECTIONS {
            return Err(LimitTooLow {
                limit,
                needed: OTHER_FDS
                    + MIN_TABLE_FILES
                    + 2 * PEER_CONNECTIONS as u64
                    + FDS_PER_CLIENT * MIN_CLIENT_CONNECTIONS as u64,
            });
        }
        let client_connections = room.min(max_client_connections);
        Ok(FdBudget {
            limit,
            table_files: u32::try_from(table_files).expect("at most MAX_TABLE_FILES"),
            peer_connections: PEER_CONNECTIONS,
            client_connections,
            lowered_from: (max_client_connections > room).then_some(max_client_connections),
        })
    }
}

/// The process's soft and hard open-file limits.
pub fn open_files_limits() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{getrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok((soft, hard))
}

/// Raises the soft open-file limit to the hard limit, as far as the system lets it (macOS caps
/// it below an unlimited hard limit), and logs what it did. A failure is logged and leaves the
/// limit as it was: the budget is then planned from the lower limit.
pub fn raise_open_files_limit() {
    use nix::sys::resource::{setrlimit, Resource};
    let (soft, hard) = match open_files_limits() {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit (RLIMIT_NOFILE)");
            return;
        }
    };
    if soft >= hard {
        tracing::info!(
            limit = soft,
            "open-file limit (RLIMIT_NOFILE) is at its hard limit"
        );
        return;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => tracing::info!(
            from = soft,
            to = hard,
            "raised the open-file limit (RLIMIT_NOFILE) to its hard limit"
        ),
        Err(e) => tracing::warn!(
            soft,
            hard,
            error = %e,
            "cannot raise the open-file limit (RLIMIT_NOFILE) to its hard limit; the connection \
             cap is sized from the soft limit"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The common default of 1024 descriptors: RocksDB gets an eighth, the cluster's connections
    // their reserve both ways, clients half of the rest (two descriptors each).
    #[test]
    fn a_default_limit_leaves_room_for_clients_and_storage() {
        let b = FdBudget::plan(1024, 10_000).expect("1024 is enough");
        assert_eq!(b.table_files, 128);
        assert_eq!(b.peer_connections, PEER_CONNECTIONS);
        assert_eq!(b.client_connections, (1024 - 128 - 128 - 256) / 2);
        assert_eq!(b.lowered_from, Some(10_000));
        let used = OTHER_FDS
            + u64::from(b.table_files)
            + 2 * b.peer_connections as u64
            + FDS_PER_CLIENT * b.client_connections as u64;
        assert!(used <= b.limit, "{b:?} uses {used}");
    }

    // A configured cap below what the limit allows is kept as it is.
    #[test]
    fn the_configured_cap_is_kept_when_it_fits() {
        let b = FdBudget::plan(1 << 20, 10_000).expect("plenty");
        assert_eq!(b.client_connections, 10_000);
        assert_eq!(b.lowered_from, None);
        assert_eq!(u64::from(b.table_files), MAX_TABLE_FILES);
    }

    // Whatever the limit, the shares never exceed it, and RocksDB's stays within its bounds.
    #[test]
    fn shares_never_exceed_the_limit() {
        for limit in (0..70_000).step_by(97).chain([u64::MAX]) {
            let Ok(b) = FdBudget::plan(limit, usize::MAX) else {
                continue;
            };
            let tables = u64::from(b.table_files);
            assert!(
                (MIN_TABLE_FILES..=MAX_TABLE_FILES).contains(&tables),
                "{b:?}"
            );
            assert!(b.client_connections >= MIN_CLIENT_CONNECTIONS, "{b:?}");
            let used = (OTHER_FDS + tables + 2 * b.peer_connections as u64)
                .saturating_add(FDS_PER_CLIENT.saturating_mul(b.client_connections as u64));
            assert!(used <= limit, "{b:?} uses {used}");
        }
    }

    // Below the minimum the node refuses to start, naming the limit that works; at it, it starts.
    #[test]
    fn a_limit_too_low_is_refused_with_the_limit_needed() {
        let err = FdBudget::plan(256, 10_000).expect_err("256 is too few");
        assert_eq!(err.limit, 256);
        assert!(FdBudget::plan(err.needed, 10_000).is_ok(), "{err}");
        assert!(FdBudget::plan(err.needed - 1, 10_000).is_err(), "{err}");
        assert!(err.to_string().contains("ulimit -n"), "{err}");
    }
}
