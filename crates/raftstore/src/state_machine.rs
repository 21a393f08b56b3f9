//! openraft state machine of one group: applies commands to the `data` column family, builds
//! and installs snapshots.
//!
//! Steps of an install: (1) copy the received file into the snapshot directory and fsync it,
//! (2) check its framing end to end, (3) record it as current with an "installing" marker
//! (synced), (4) drop the group's data and stream the records in batches, (5) write last-applied
//! and membership and clear the marker (synced). A crash between (3) and (5) is finished at the
//! next open by redoing (4)-(5) from the file.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use rocksdb::{WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;

use crate::command::{self, Effect};
use crate::keys::{self, tag, CF_DATA, CF_META};
use crate::snapshot::{CurrentSnapshot, SnapshotReader, SnapshotWriter};
use crate::{CommandResult, Entry, GroupId, NodeId, Record, Store, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// Bytes of records per write batch while installing a snapshot.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Distinguishes snapshot files built in the same nanosecond.
static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

/// Number of keys of a group and their bytes (data keys plus encoded records), kept up to date by
/// `apply` and snapshot installs in the same write batches as the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct GroupStats {
    pub keys: u64,
    pub bytes: u64,
}

impl GroupStats {
    fn add(&mut self, key_len: usize, record_len: usize) {
        self.keys += 1;
        self.bytes += (key_len + record_len) as u64;
    }

    fn remove(&mut self, key_len: usize, record_len: usize) {
        self.keys = self.keys.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub((key_len + record_len) as u64);
    }
}

/// The group's stats as recorded, or counted by a scan for data written before they were kept.
pub(crate) fn load_stats(store: &Store, group: GroupId) -> Result<GroupStats> {
    let db = store.db();
    let meta_cf = store.cf(CF_META);
    match read_meta(|k| db.get_cf(meta_cf, k), group, tag::STATS)? {
        Some(s) => Ok(s),
        None => {
            let (keys, bytes) = store
                .scan_stats(group)
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
            Ok(GroupStats { keys, bytes })
        }
    }
}

/// Injected fault (feature `test-faults`): a write of the key named by
/// `KVORUM_FAULT_APPLY_FAIL_KEY` fails to apply with a storage error, as a failing disk would.
#[cfg(feature = "test-faults")]
fn fault_apply(cmd: &crate::Command) -> Result<()> {
    match std::env::var("KVORUM_FAULT_APPLY_FAIL_KEY") {
        Ok(k) if k == cmd.key() => Err(sm_err(
            ErrorVerb::Write,
            "FAULT INJECTED: apply failed (KVORUM_FAULT_APPLY_FAIL_KEY)",
        )),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "test-faults"))]
fn fault_apply(_: &crate::Command) -> Result<()> {
    Ok(())
}

/// The state machine of one group. Keeps last-applied, membership and stats in memory; data in
/// RocksDB.
pub struct StateMachineStore {
    store: Store,
    group: GroupId,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    stats: GroupStats,
}

/// Builds snapshots of one group from a RocksDB snapshot, concurrently with apply.
pub struct SnapshotBuilder {
    store: Store,
    group: GroupId,
}

fn read_meta<T: DeserializeOwned>(
    get: impl FnOnce(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    group: GroupId,
    t: u8,
) -> Result<Option<T>> {
    let raw = get(&keys::meta_key(group, t)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    raw.map(|b| bincode::deserialize(&b).map_err(|e| sm_err(ErrorVerb::Read, e)))
        .transpose()
}

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    bincode::serialize(v).map_err(|e| sm_err(ErrorVerb::Write, e))
}

impl StateMachineStore {
    pub(crate) async fn open(store: Store, group: GroupId) -> Result<Self> {
        let db = store.db();
        let meta_cf = store.cf(CF_META);
        let get = |k: &[u8]| db.get_cf(meta_cf, k);
        let installing: Option<bool> = read_meta(get, group, tag::INSTALLING)?;
        if installing.unwrap_or(false) {
            let current: Option<CurrentSnapshot> = read_meta(get, group, tag::SNAPSHOT)?;
            let current = current.ok_or_else(|| {
                snap_err(
                    ErrorVerb::Read,
                    "install marker set but no current snapshot",
                )
            })?;
            tracing::warn!(group = %group, snapshot = %current.meta.snapshot_id, "finishing an interrupted snapshot install");
            let s = store.clone();
            tokio::task::spawn_blocking(move || ingest(&s, group, &current))
                .await
                .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        }
        let applied = read_meta::<Option<LogId<NodeId>>>(get, group, tag::APPLIED)?.flatten();
        let membership = read_meta(get, group, tag::MEMBERSHIP)?.unwrap_or_default();
        let stats = load_stats(&store, group)?;
        Ok(StateMachineStore {
            store,
            group,
            applied,
            membership,
            stats,
        })
    }
}

/// Replaces `group`'s data with the records of `current`'s file and records it as applied.
fn ingest(store: &Store, group: GroupId, current: &CurrentSnapshot) -> Result<()> {
    let path = store.inner.snapshot_dir.join(&current.file);
    let file = std::fs::File::open(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let (mut reader, _) = SnapshotReader::open(file).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let db = store.db();
    let data_cf = store.cf(CF_DATA);
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(
        data_cf,
        keys::group_start(group).to_vec(),
        keys::group_end(group),
    );
    let prefix = keys::group_start(group);
    let mut stats = GroupStats::default();
    while let Some((k, v)) = reader
        .next_record()
        .map_err(|e| snap_err(ErrorVerb::Read, e))?
    {
        let mut full = Vec::with_capacity(8 + k.len());
        full.extend_from_slice(&prefix);
        full.extend_from_slice(&k);
        stats.add(full.len(), v.len());
        batch.put_cf(data_cf, full, v);
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))
                .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        }
    }
    let meta_cf = store.cf(CF_META);
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::APPLIED),
        encode(&current.meta.last_log_id)?,
    );
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::MEMBERSHIP),
        encode(&current.meta.last_membership)?,
    );
    batch.put_cf(meta_cf, keys::meta_key(group, tag::STATS), encode(&stats)?);
    batch.delete_cf(meta_cf, keys::meta_key(group, tag::INSTALLING));
    let mut wo = WriteOptions::default();
    // Durable before openraft learns the snapshot is installed (it may then purge its log).
    wo.set_sync(true);
    db.write_opt(batch, &wo)
        .map_err(|e| snap_err(ErrorVerb::Write, e))
}

/// Records `current` as the group's snapshot (optionally with the install marker) unless a newer
/// one is already recorded, and deletes the file it replaces. Returns whether it was recorded.
fn set_current(
    store: &Store,
    group: GroupId,
    current: &CurrentSnapshot,
    installing: bool,
) -> Result<bool> {
    let _guard = store
        .inner
        .snapshot_lock
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let db = store.db();
    let meta_cf = store.cf(CF_META);
    let old: Option<CurrentSnapshot> = read_meta(|k| db.get_cf(meta_cf, k), group, tag::SNAPSHOT)?;
    if !installing {
        if let Some(old) = &old {
            if old.meta.last_log_id > current.meta.last_log_id {
                return Ok(false);
            }
        }
    }
    let mut batch = WriteBatch::default();
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::SNAPSHOT),
        encode(current)?,
    );
    if installing {
        batch.put_cf(
            meta_cf,
            keys::meta_key(group, tag::INSTALLING),
            encode(&true)?,
        );
    }
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    db.write_opt(batch, &wo)
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    if let Some(old) = old.filter(|o| o.file != current.file) {
        // Followers being sent the old file keep reading it: unlinking an open file is safe.
        let _ = std::fs::remove_file(store.inner.snapshot_dir.join(old.file));
    }
    Ok(true)
}

fn snapshot_file_name(group: GroupId, last: Option<LogId<NodeId>>) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let seq = SNAPSHOT_SEQ.fetch_add(1, Ordering::Relaxed);
    let index = last.map_or(0, |l| l.index);
    format!("g{group}-{index}-{nanos}-{seq}.snap")
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>> {
        let store = self.store.clone();
        let group = self.group;
        let (meta, file) = tokio::task::spawn_blocking(move || build(&store, group))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        let path = self.store.inner.snapshot_dir.join(file);
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(f),
        })
    }
}

/// Streams a consistent RocksDB snapshot of `group` into a new snapshot file.
fn build(store: &Store, group: GroupId) -> Result<(SnapshotMeta<NodeId, BasicNode>, String)> {
    let db = store.db();
    let snap = db.snapshot();
    let meta_cf = store.cf(CF_META);
    // Applied index, membership and data come from the same RocksDB snapshot: consistent.
    let applied =
        read_meta::<Option<LogId<NodeId>>>(|k| snap.get_cf(meta_cf, k), group, tag::APPLIED)?
            .flatten();
    let membership: Membership =
        read_meta(|k| snap.get_cf(meta_cf, k), group, tag::MEMBERSHIP)?.unwrap_or_default();
    let file = snapshot_file_name(group, applied);
    let meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id: file.trim_end_matches(".snap").to_string(),
    };
    let dir = &store.inner.snapshot_dir;
    let mut w = SnapshotWriter::create(dir.join(format!("{file}.tmp")), &meta)
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_snapshot(&snap);
    ro.set_iterate_lower_bound(keys::group_start(group).to_vec());
    ro.set_iterate_upper_bound(keys::group_end(group));
    let mut it = db.raw_iterator_cf_opt(store.cf(CF_DATA), ro);
    it.seek_to_first();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        w.record(&k[8..], v)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        it.next();
    }
    it.status().map_err(|e| snap_err(ErrorVerb::Read, e))?;
    w.finish(&dir.join(&file))
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let current = CurrentSnapshot {
        meta: meta.clone(),
        file: file.clone(),
    };
    if !set_current(store, group, &current, false)? {
        tracing::debug!(group = %group, "a newer snapshot was recorded meanwhile");
    }
    tracing::info!(group = %group, snapshot = %meta.snapshot_id, "built snapshot");
    Ok((meta, file))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
    {
        let db = self.store.db();
        let data_cf = self.store.cf(CF_DATA);
        let mut batch = WriteBatch::default();
        // Writes of this batch not yet in RocksDB: later entries must see earlier ones.
        let mut overlay: HashMap<Vec<u8>, Option<Record>> = HashMap::new();
        let mut applied = self.applied;
        let mut membership = self.membership.clone();
        let mut stats = self.stats;
        let mut results = Vec::new();
        for entry in entries {
            applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => CommandResult::None,
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::None
                }
                EntryPayload::Normal(cmd) => {
                    fault_apply(&cmd)?;
                    let dk = keys::data_key(self.group, cmd.key().as_bytes());
                    let current = match overlay.get(&dk) {
                        Some(r) => r.clone(),
                        None => {
                            let raw = db
                                .get_pinned_cf(data_cf, &dk)
                                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
                            match raw {
                                None => None,
                                Some(b) => Some(Record::decode(&b).ok_or_else(|| {
                                    sm_err(ErrorVerb::Read, format!("corrupt record {dk:?}"))
                                })?),
                            }
                        }
                    };
                    let (effect, result) =
                        command::apply(&cmd, entry.log_id.index, current.as_ref());
                    if let (Some(old), Effect::Set(_) | Effect::Remove) = (&current, &effect) {
                        stats.remove(dk.len(), old.encoded_len());
                    }
                    match effect {
                        Effect::Unchanged => {}
                        Effect::Set(r) => {
                            stats.add(dk.len(), r.encoded_len());
                            batch.put_cf(data_cf, &dk, r.encode());
                            overlay.insert(dk, Some(r));
                        }
                        Effect::Remove => {
                            batch.delete_cf(data_cf, &dk);
                            overlay.insert(dk, None);
                        }
                    }
                    result
                }
            };
            results.push(result);
        }
        let meta_cf = self.store.cf(CF_META);
        batch.put_cf(
            meta_cf,
            keys::meta_key(self.group, tag::APPLIED),
            encode(&applied)?,
        );
        batch.put_cf(
            meta_cf,
            keys::meta_key(self.group, tag::MEMBERSHIP),
            encode(&membership)?,
        );
        batch.put_cf(
            meta_cf,
            keys::meta_key(self.group, tag::STATS),
            encode(&stats)?,
        );
        // Data and last-applied in one batch: a crash never half-applies. An error here stops
        // the replica (openraft treats it as fatal), so it never diverges.
        self.store.stall_point();
        db.write(batch).map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.applied = applied;
        self.membership = membership;
        self.stats = stats;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            group: self.group,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>> {
        // An anonymous file: removed by the OS when dropped, even after a crash.
        let f = tempfile::tempfile_in(&self.store.inner.snapshot_dir)
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<()> {
        let received = snapshot.into_std().await;
        let store = self.store.clone();
        let group = self.group;
        let meta2 = meta.clone();
        tokio::task::spawn_blocking(move || install(&store, group, meta2, received))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        self.applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.stats = load_stats(&self.store, self.group)?;
        tracing::info!(group = %self.group, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let db = self.store.db();
        let meta_cf = self.store.cf(CF_META);
        let current: Option<CurrentSnapshot> =
            read_meta(|k| db.get_cf(meta_cf, k), self.group, tag::SNAPSHOT)?;
        let Some(current) = current else {
            return Ok(None);
        };
        let path = self.store.inner.snapshot_dir.join(&current.file);
        let f = tokio::fs::File::open(&path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: current.meta,
            snapshot: Box::new(f),
        }))
    }
}

/// Steps (1)-(5) of the module overview, on a blocking thread.
fn install(
    store: &Store,
    group: GroupId,
    meta: SnapshotMeta<NodeId, BasicNode>,
    mut received: std::fs::File,
) -> Result<()> {
    use std::io::Seek;
    let file = snapshot_file_name(group, meta.last_log_id);
    let dir = &store.inner.snapshot_dir;
    let path = dir.join(&file);
    let tmp = dir.join(format!("{file}.tmp"));
    let w = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
    received.seek(std::io::SeekFrom::Start(0)).map_err(w)?;
    let mut out = std::fs::File::create(&tmp).map_err(w)?;
    std::io::copy(&mut received, &mut out).map_err(w)?;
    out.sync_all().map_err(w)?;
    std::fs::rename(&tmp, &path).map_err(w)?;
    // Check the whole file before touching the state machine.
    let (mut reader, _) = SnapshotReader::open(std::fs::File::open(&path).map_err(w)?)
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    while reader
        .next_record()
        .map_err(|e| snap_err(ErrorVerb::Read, e))?
        .is_some()
    {}
    let current = CurrentSnapshot { meta, file };
    set_current(store, group, &current, true)?;
    ingest(store, group, &current)
}
