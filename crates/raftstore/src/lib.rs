//! Raft storage of kvorum: openraft's type config, and the RocksDB-backed log storage and state
//! machine of many Raft groups in one RocksDB per node.
//!
//! Layout (one RocksDB, three column families; every key starts with the 8-byte big-endian
//! [`GroupId`], so one group's data is one contiguous range and a drop is a range delete):
//! - `log`:  `group ++ index` → bincode [`Entry`]; the Raft log.
//! - `meta`: `group ++ tag` → bincode; vote, committed, last purged, last applied, last
//!   membership, current snapshot, snapshot-install marker, key/byte counts of the data, version
//!   base; the slot table ([`SlotState`] per slot, one byte each).
//! - `data`: `group ++ slot (2 bytes BE) ++ key` → `version (8 bytes BE) ++ value`; the state
//!   machine. All keys of one (group, slot) are contiguous, so a move is a range scan.
//!
//! Durability rules (openraft's storage contract):
//! - the vote is fsynced before `save_vote` ([`LogStore`]) returns, and read back uncommitted
//!   (`read_vote`): a restarted node is elected again before it leads, because the commit index
//!   it would serve reads by is not synced;
//! - appended entries are written at once (readable) but reported flushed only after the WAL is
//!   fsynced; one flusher thread per RocksDB fsyncs once for every append that queued up while the
//!   previous fsync ran, across all groups (group commit);
//! - `apply` writes data and `last_applied` in one WriteBatch, so a crash never half-applies. It
//!   needs no fsync of its own: RocksDB recovers a prefix of its single WAL, and the log entries
//!   it applied were synced first, so a lost apply is replayed from the log;
//! - a storage error during apply is returned to openraft, which stops the replica: it never
//!   diverges. A failed condition is a deterministic [`CommandResult`], not an error;
//! - snapshots are built by streaming a RocksDB snapshot into a file, and installed by streaming a
//!   file into write batches; neither is held whole in memory. An install interrupted by a crash
//!   is redone from the snapshot file when the store next opens; reads of a group are refused
//!   while it installs ([`StoreError::Installing`]);
//! - limits that protect the state are enforced by `apply`, identically on every replica: no key
//!   above [`MAX_KEY_BYTES`], no value above [`MAX_VALUE_BYTES`] or above the limit a
//!   [`Command::AppendBounded`] carries. Snapshot frames exceed both caps, so a snapshot build never
//!   fails on state apply accepted;
//! - the slot table (see the `slots` module) and the version base change only by log entries,
//!   in the apply's WriteBatch, and are carried by snapshots; a write at index i gets version
//!   i + base, and an ingest raises the base above every ingested version;
//! - RocksDB writes and fsyncs run on tokio's blocking threads, never on the async workers;
//! - integrity (the `integrity` module): the WAL is recovered tolerating only a torn final
//!   record, so a damaged WAL fails the open ([`StoreError::CorruptAtOpen`], naming the file)
//!   instead of silently dropping acknowledged entries and the vote; a damaged block read while
//!   running answers [`StoreError::Corruption`], and [`Store::mark_corrupt`] makes the store
//!   refuse to open again; [`Command::ComputeHash`] makes every replica hash its group's state at
//!   the same index ([`Store::state_hash`]), for the consistency check.
//!
//! Not implemented / caveats:
//! - slot ownership is checked by `apply` against the group's slot table (writes to a Frozen slot
//!   answer [`WriteResult::Frozen`], to a Released or Incoming one [`WriteResult::NotOwner`]);
//!   a [`Command::Routed`] write also carries the proposer's map epoch, refused at apply when the
//!   group owns the slot only since a later epoch; other commands carry no epoch.
//! - `Ingest` carries records only: a key deleted at the source after the copy read it is not
//!   deleted at the destination. A copy made before `Freeze` must be completed by a `CatchUp`
//!   after it (changed records, removed keys, the final version high-water mark).
//! - no disk quota: a full disk surfaces as a storage error.

#![warn(missing_docs)]
// openraft's storage traits fix `StorageError` as the error type; it is large, and boxing it at
// every helper would only move the allocation.
#![allow(clippy::result_large_err)]

mod applied;
mod apply;
mod command;
mod consistency;
pub mod faults;
mod integrity;
mod layout;
mod lifecycle;
mod log_store;
mod result_encoding;
mod slots;
mod snapshot;
mod state_machine;
mod store;

#[cfg(test)]
mod command_tests;
#[cfg(test)]
mod corruption_tests;
#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod fence_tests;
#[cfg(test)]
mod move_tests;
#[cfg(test)]
mod slot_tests;
#[cfg(test)]
mod storage_tests;
#[cfg(test)]
mod test_support;

pub use command::{
    AdminResult, Command, CommandResult, Condition, FenceToken, Versioned, WriteResult,
    MAX_KEY_BYTES, MAX_VALUE_BYTES,
};
pub use consistency::StateHash;
pub use faults::StoreFaults;
pub use integrity::{is_rocks_corruption, mentions_corruption, CORRUPT_MARKER, WIPE_ADVICE};
pub use log_store::LogStore;
pub use slots::SlotState;
pub use state_machine::StateMachineStore;
pub use store::{
    ServedRead, SlotChunk, Store, StoreError, StoreOptions, DEFAULT_MAX_OPEN_FILES,
    MIN_MAX_OPEN_FILES,
};

pub use kvorum_router::{GroupId, NodeId};

openraft::declare_raft_types!(
    /// openraft's type configuration for every kvorum group.
    ///
    /// Snapshots are files (`tokio::fs::File`), streamed in chunks by openraft's
    /// `install_snapshot` RPC and never held in memory whole.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = tokio::fs::File,
);

/// A Raft log entry of a kvorum group.
pub type Entry = openraft::Entry<TypeConfig>;

/// A running Raft replica of a kvorum group.
pub type Raft = openraft::Raft<TypeConfig>;
