//! openraft state machine of one group: applies commands to the `data` column family, builds
//! and installs snapshots.
//!
//! Steps of an install: (1) copy the received file into a `.tmp` in the snapshot directory and
//! fsync it, (2) check its framing end to end, (3) mark the group installing in memory (reads
//! of it are refused until (6)), (4) rename the file in place (directory fsynced) and record it
//! as current with an "installing" marker (synced), (5) drop the group's data and stream the
//! records in batches, (6) write last-applied and membership and clear the marker (synced), then
//! delete the group's superseded snapshot files. A crash between (4) and (6) is finished when the
//! store next opens, by redoing (5)-(6) from the file.
//!
//! Snapshot files: a `.snap` is renamed into place only under the store's snapshot lock, in the
//! same critical section that records it as its group's current snapshot (or deletes it when a
//! newer one is recorded), and files are opened for reading under that lock too. So outside the
//! lock every `.snap` is either named by its group's record or garbage, and a file is never
//! deleted between reading the record and opening it. Garbage (and `.tmp` files of a build or
//! install a crash interrupted) is deleted when the store opens.
//!
//! Blocking: RocksDB writes (a write stall, an fsync) and file I/O run on tokio's blocking
//! threads, never on the async workers that run heartbeats.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use rocksdb::{WriteBatch, WriteOptions};
use serde::de::DeserializeOwned;

use crate::command::RecordCodec;
use crate::command::{self, Effect};
use crate::keys::{self, tag, CF_DATA, CF_META};
use crate::slots::{self, SlotEpochs, SlotTable};
use crate::snapshot::{durable_rename, CurrentSnapshot, SnapshotReader, SnapshotWriter};
use crate::{Command, FenceToken, SlotState, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use crate::{CommandResult, Entry, GroupId, NodeId, Record, Store, TypeConfig};
use kvorum_router::slot_of;

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

/// Runs `f` on tokio's blocking threads, off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
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

/// The state machine of one group. Keeps last-applied, membership, stats, the slot table and the
/// version base in memory (a copy of what is in the meta CF); data in RocksDB.
pub struct StateMachineStore {
    store: Store,
    group: GroupId,
    state: SmState,
}

/// What a group's state machine keeps besides its data; the state one apply batch leaves for
/// the next.
#[derive(Debug, Clone)]
struct SmState {
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    stats: GroupStats,
    /// The slot table; `None`: uninitialized, every slot owned.
    slots: Option<SlotTable>,
    /// The epochs from which the group owns its slots (empty: none recorded).
    since: SlotEpochs,
    /// Added to a write's log index to make its version (see [`Command::Ingest`]).
    base: u64,
    /// The highest driver token applied (see [`Command::Fence`]); zero: none.
    fence: FenceToken,
}

/// The group's slot table as recorded (`None`: uninitialized).
fn read_slots(
    get: impl FnOnce(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    group: GroupId,
) -> Result<Option<SlotTable>> {
    let raw = get(&keys::meta_key(group, tag::SLOTS)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    raw.map(|b| {
        slots::decode_table(&b).ok_or_else(|| {
            sm_err(
                ErrorVerb::Read,
                format!("corrupt slot table of group {group}"),
            )
        })
    })
    .transpose()
}

/// The group's slot epochs as recorded (empty: none).
fn read_epochs(
    get: impl FnOnce(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    group: GroupId,
) -> Result<SlotEpochs> {
    let raw =
        get(&keys::meta_key(group, tag::SLOT_EPOCHS)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    match raw {
        None => Ok(Vec::new()),
        Some(b) => slots::decode_epochs(&b).ok_or_else(|| {
            sm_err(
                ErrorVerb::Read,
                format!("corrupt slot epochs of group {group}"),
            )
        }),
    }
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
            // Store::open could not finish it; try again, so the error reaches openraft.
            let s = store.clone();
            blocking(move || finish_install(&s, group)).await?;
        }
        let applied = read_meta::<Option<LogId<NodeId>>>(get, group, tag::APPLIED)?.flatten();
        let membership = read_meta(get, group, tag::MEMBERSHIP)?.unwrap_or_default();
        let stats = load_stats(&store, group)?;
        let slots = read_slots(get, group)?;
        let since = read_epochs(get, group)?;
        let base = read_meta(get, group, tag::VERSION_BASE)?.unwrap_or(0);
        let fence = read_meta(get, group, tag::FENCE)?.unwrap_or_default();
        store.set_slot_table(group, slots.clone(), since.clone());
        Ok(StateMachineStore {
            store,
            group,
            state: SmState {
                applied,
                membership,
                stats,
                slots,
                since,
                base,
                fence,
            },
        })
    }
}

/// Deletes snapshot files no group's record names, and finishes the snapshot installs a crash
/// interrupted. Runs when the store opens, before any group uses it.
pub(crate) fn recover(store: &Store) -> std::result::Result<(), crate::StoreError> {
    let db = store.db();
    let mut named = std::collections::HashSet::new();
    let mut keep_all = false;
    let mut installing = Vec::new();
    let mut tables: HashMap<GroupId, (SlotTable, SlotEpochs)> = HashMap::new();
    let mut it = db.raw_iterator_cf(store.cf(CF_META));
    it.seek_to_first();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        // Meta keys are `group ++ tag`.
        if let (Ok(g), Some(&t), 9) = (<[u8; 8]>::try_from(&k[..k.len().min(8)]), k.get(8), k.len())
        {
            let group = GroupId(u64::from_be_bytes(g));
            if t == tag::SNAPSHOT {
                match bincode::deserialize::<CurrentSnapshot>(v) {
                    Ok(c) => {
                        named.insert(c.file);
                    }
                    Err(e) => {
                        // Keep every file: we cannot tell which one this record names.
                        tracing::error!(group = %group, error = %e, "undecodable snapshot record");
                        keep_all = true;
                    }
                }
            }
            if t == tag::INSTALLING && bincode::deserialize::<bool>(v).unwrap_or(true) {
                installing.push(group);
            }
            // Its state machine fails to open on an undecodable table or epochs too.
            if t == tag::SLOTS {
                match slots::decode_table(v) {
                    Some(table) => tables.entry(group).or_default().0 = table,
                    None => tracing::error!(group = %group, "undecodable slot table"),
                }
            }
            if t == tag::SLOT_EPOCHS {
                match slots::decode_epochs(v) {
                    Some(epochs) => tables.entry(group).or_default().1 = epochs,
                    None => tracing::error!(group = %group, "undecodable slot epochs"),
                }
            }
        }
        it.next();
    }
    it.status()?;
    drop(it);
    for (group, (table, epochs)) in tables {
        // Epochs exist only with a table (ActivateAt needs Incoming slots).
        if !table.is_empty() {
            store.set_slot_table(group, Some(table), epochs);
        }
    }
    for entry in std::fs::read_dir(&store.inner.snapshot_dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep_all && !named.contains(&name) {
            tracing::info!(file = %name, "deleting a snapshot file no group uses");
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %name, error = %e, "cannot delete an unused snapshot file");
            }
        }
    }
    for group in installing {
        if let Err(e) = finish_install(store, group) {
            tracing::error!(group = %group, error = %e, "cannot finish an interrupted snapshot install; the group's replica will not start");
        }
    }
    Ok(())
}

/// Redoes steps (5)-(6) of an install a crash interrupted. Reads of the group are refused
/// meanwhile, and stay refused if it fails.
fn finish_install(store: &Store, group: GroupId) -> Result<()> {
    store.begin_install(group);
    let current = read_current(store, group)?;
    let current = current.ok_or_else(|| {
        snap_err(
            ErrorVerb::Read,
            "install marker set but no current snapshot",
        )
    })?;
    tracing::warn!(group = %group, snapshot = %current.meta.snapshot_id, "finishing an interrupted snapshot install");
    ingest(store, group, &current)?;
    store.end_install(group);
    Ok(())
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
    // Snapshots written before slot tables existed carry neither: uninitialized, base 0.
    let mut table: Option<SlotTable> = None;
    let mut since: SlotEpochs = Vec::new();
    let mut base: u64 = 0;
    let mut fence = FenceToken::default();
    while let Some((k, v)) = reader
        .next_record()
        .map_err(|e| snap_err(ErrorVerb::Read, e))?
    {
        if k.starts_with(&keys::SNAP_SPECIAL) {
            if k == keys::SNAP_SLOTS {
                table = Some(
                    slots::decode_table(&v)
                        .ok_or_else(|| snap_err(ErrorVerb::Read, "corrupt slot table"))?,
                );
            } else if k == keys::SNAP_SLOT_EPOCHS {
                since = slots::decode_epochs(&v)
                    .ok_or_else(|| snap_err(ErrorVerb::Read, "corrupt slot epochs"))?;
            } else if k == keys::SNAP_VERSION_BASE {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| snap_err(ErrorVerb::Read, "corrupt version base"))?;
                base = u64::from_be_bytes(b);
            } else if k == keys::SNAP_FENCE {
                fence = bincode::deserialize(&v)
                    .map_err(|_| snap_err(ErrorVerb::Read, "corrupt fence token"))?;
            } else {
                return Err(snap_err(ErrorVerb::Read, "unknown special snapshot record"));
            }
            continue;
        }
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
    match &table {
        Some(t) => batch.put_cf(
            meta_cf,
            keys::meta_key(group, tag::SLOTS),
            slots::encode_table(t),
        ),
        None => batch.delete_cf(meta_cf, keys::meta_key(group, tag::SLOTS)),
    }
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::SLOT_EPOCHS),
        slots::encode_epochs(&since),
    );
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::VERSION_BASE),
        encode(&base)?,
    );
    batch.put_cf(meta_cf, keys::meta_key(group, tag::FENCE), encode(&fence)?);
    batch.delete_cf(meta_cf, keys::meta_key(group, tag::INSTALLING));
    let mut wo = WriteOptions::default();
    // Durable before openraft learns the snapshot is installed (it may then purge its log).
    wo.set_sync(true);
    db.write_opt(batch, &wo)
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    store.set_slot_table(group, table, since);
    Ok(())
}

/// Renames the finished snapshot file `tmp` (open as `file`) to `current.file` and records it as
/// the group's snapshot (optionally with the install marker) unless a newer one is already
/// recorded (then deletes it), and deletes the file it replaces. Returns whether it was recorded.
/// All under the snapshot lock: see the module overview.
fn publish(
    store: &Store,
    group: GroupId,
    file: &std::fs::File,
    tmp: &std::path::Path,
    current: &CurrentSnapshot,
    installing: bool,
) -> Result<bool> {
    let _guard = lock_snapshots(store);
    let path = store.inner.snapshot_dir.join(&current.file);
    durable_rename(file, tmp, &path, &store.inner.faults)
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
    let db = store.db();
    let meta_cf = store.cf(CF_META);
    let old: Option<CurrentSnapshot> = read_meta(|k| db.get_cf(meta_cf, k), group, tag::SNAPSHOT)?;
    if !installing {
        if let Some(old) = &old {
            if old.meta.last_log_id > current.meta.last_log_id {
                // Whoever holds it open (the build that made it) keeps reading it.
                let _ = std::fs::remove_file(&path);
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

/// Holds the store's snapshot lock: publishing a snapshot, reading which one is current and
/// deleting old files are atomic with respect to each other.
fn lock_snapshots(store: &Store) -> std::sync::MutexGuard<'_, ()> {
    store
        .inner
        .snapshot_lock
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The group's current snapshot record, if any.
fn read_current(store: &Store, group: GroupId) -> Result<Option<CurrentSnapshot>> {
    let db = store.db();
    read_meta(|k| db.get_cf(store.cf(CF_META), k), group, tag::SNAPSHOT)
}

/// Opens the group's current snapshot file, if any. Under the snapshot lock, so the file the
/// record names is not deleted in between (an open file survives its unlink).
fn open_current(store: &Store, group: GroupId) -> Result<Option<(CurrentSnapshot, std::fs::File)>> {
    let _guard = lock_snapshots(store);
    let current = read_current(store, group)?;
    let Some(current) = current else {
        return Ok(None);
    };
    let path = store.inner.snapshot_dir.join(&current.file);
    let f = std::fs::File::open(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    Ok(Some((current, f)))
}

/// Deletes the group's snapshot files other than its current one (never `.tmp` files: a
/// concurrent build may be writing one).
fn remove_superseded(store: &Store, group: GroupId) -> Result<()> {
    let _guard = lock_snapshots(store);
    let current = read_current(store, group)?;
    let prefix = format!("g{group}-");
    let dir = &store.inner.snapshot_dir;
    let entries = std::fs::read_dir(dir).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    for entry in entries {
        let name = entry
            .map_err(|e| snap_err(ErrorVerb::Read, e))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        let is_current = current.as_ref().is_some_and(|c| c.file == name);
        if name.starts_with(&prefix) && name.ends_with(".snap") && !is_current {
            tracing::info!(group = %group, file = %name, "deleting a superseded snapshot file");
            let _ = std::fs::remove_file(dir.join(&name));
        }
    }
    Ok(())
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
        let (meta, f) = blocking(move || build(&store, group)).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        })
    }
}

/// Streams a consistent RocksDB snapshot of `group` into a new snapshot file and returns it,
/// open for reading.
fn build(
    store: &Store,
    group: GroupId,
) -> Result<(SnapshotMeta<NodeId, BasicNode>, std::fs::File)> {
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
    let tmp = store.inner.snapshot_dir.join(format!("{file}.tmp"));
    let written = write_snapshot(store, group, &snap, &tmp, &meta);
    let (written, reader) = match written {
        Ok(files) => files,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let current = CurrentSnapshot {
        meta: meta.clone(),
        file,
    };
    if !publish(store, group, &written, &tmp, &current, false)? {
        tracing::debug!(group = %group, "a newer snapshot was recorded meanwhile");
    }
    tracing::info!(group = %group, snapshot = %meta.snapshot_id, "built snapshot");
    Ok((meta, reader))
}

/// Writes the group's data as of `snap` into `tmp` (synced); returns the written file and the
/// same file open for reading.
fn write_snapshot(
    store: &Store,
    group: GroupId,
    snap: &rocksdb::Snapshot<'_>,
    tmp: &std::path::Path,
    meta: &SnapshotMeta<NodeId, BasicNode>,
) -> Result<(std::fs::File, std::fs::File)> {
    let w = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
    let mut out = SnapshotWriter::create(tmp, meta).map_err(w)?;
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_snapshot(snap);
    ro.set_iterate_lower_bound(keys::group_start(group).to_vec());
    ro.set_iterate_upper_bound(keys::group_end(group));
    let mut it = store.db().raw_iterator_cf_opt(store.cf(CF_DATA), ro);
    it.seek_to_first();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        out.record(&k[8..], v).map_err(w)?;
        it.next();
    }
    it.status().map_err(|e| snap_err(ErrorVerb::Read, e))?;
    drop(it);
    // The slot table and version base, from the same RocksDB snapshot as the data; after it
    // (special keys sort after every data key).
    let meta_cf = store.cf(CF_META);
    if let Some(table) = read_slots(|k| snap.get_cf(meta_cf, k), group)? {
        out.record(&keys::SNAP_SLOTS, &slots::encode_table(&table))
            .map_err(w)?;
    }
    let base: u64 = read_meta(|k| snap.get_cf(meta_cf, k), group, tag::VERSION_BASE)?.unwrap_or(0);
    if base != 0 {
        out.record(&keys::SNAP_VERSION_BASE, &base.to_be_bytes())
            .map_err(w)?;
    }
    let since = read_epochs(|k| snap.get_cf(meta_cf, k), group)?;
    if since.iter().any(|e| *e != 0) {
        out.record(&keys::SNAP_SLOT_EPOCHS, &slots::encode_epochs(&since))
            .map_err(w)?;
    }
    // The fence travels with the slot table it guards: a replica that installs this snapshot
    // refuses a deposed driver's steps as the others do.
    let fence: FenceToken =
        read_meta(|k| snap.get_cf(meta_cf, k), group, tag::FENCE)?.unwrap_or_default();
    if fence != FenceToken::default() {
        out.record(&keys::SNAP_FENCE, &encode(&fence)?).map_err(w)?;
    }
    let written = out.finish().map_err(w)?;
    let reader = std::fs::File::open(tmp).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    Ok((written, reader))
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, Membership)> {
        Ok((self.state.applied, self.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let store = self.store.clone();
        let (group, state) = (self.group, self.state.clone());
        let (results, state) =
            blocking(move || apply_entries(&store, group, entries, state)).await?;
        self.state = state;
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
        blocking(move || install(&store, group, meta2, received)).await?;
        let db = self.store.db();
        let get = |k: &[u8]| db.get_cf(self.store.cf(CF_META), k);
        self.state = SmState {
            applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            stats: load_stats(&self.store, self.group)?,
            slots: read_slots(get, self.group)?,
            since: read_epochs(get, self.group)?,
            base: read_meta(get, self.group, tag::VERSION_BASE)?.unwrap_or(0),
            fence: read_meta(get, self.group, tag::FENCE)?.unwrap_or_default(),
        };
        tracing::info!(group = %self.group, snapshot = %meta.snapshot_id, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>> {
        let store = self.store.clone();
        let group = self.group;
        let current = blocking(move || open_current(&store, group)).await?;
        Ok(current.map(|(current, f)| Snapshot {
            meta: current.meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        }))
    }
}

/// Applies `entries` in one WriteBatch (one more per [`Command::ComputeHash`], which writes what
/// came before it first; each a consistent state), from the `state` the previous batch left, and returns
/// the results and the new state. Runs on a blocking thread; openraft applies one batch at a
/// time, so batches keep their order.
///
/// Deterministic: every replica computes the same results and state from the same entries, also
/// when a batch is re-applied after a crash (each WriteBatch holds its entries' data, slot table,
/// version base and last-applied together: a crash never half-applies one).
fn apply_entries(
    store: &Store,
    group: GroupId,
    entries: Vec<Entry>,
    mut state: SmState,
) -> Result<(Vec<CommandResult>, SmState)> {
    let mut pending = Pending::new(store, group);
    let mut slots_changed = false;
    let (mut old_base, mut old_fence) = (state.base, state.fence);
    let mut results = Vec::new();
    for entry in entries {
        state.applied = Some(entry.log_id);
        let index = entry.log_id.index;
        let result = match entry.payload {
            EntryPayload::Blank => CommandResult::None,
            EntryPayload::Membership(m) => {
                state.membership = StoredMembership::new(Some(entry.log_id), m);
                CommandResult::None
            }
            EntryPayload::Normal(Command::ComputeHash) => {
                // The hash is of the state at this index: write the batch so far (last-applied
                // is this entry, which changes nothing else), then read it back.
                let written = std::mem::replace(&mut pending, Pending::new(store, group));
                write_batch(store, &state, written, slots_changed, (old_base, old_fence))?;
                slots_changed = false;
                (old_base, old_fence) = (state.base, state.fence);
                let hash = crate::consistency::hash_group(
                    store,
                    group,
                    state.slots.as_deref(),
                    &state.since,
                    state.base,
                )
                .map_err(|e| sm_err(ErrorVerb::Read, e))?;
                store.record_hash(group, crate::StateHash { index, hash });
                tracing::info!(group = %group, index, hash = %format!("{hash:016x}"), "state hash computed");
                CommandResult::Hashed { index, hash }
            }
            EntryPayload::Normal(cmd) => {
                apply_command(&mut pending, &mut state, index, cmd, &mut slots_changed)?
            }
        };
        results.push(result);
    }
    write_batch(store, &state, pending, slots_changed, (old_base, old_fence))?;
    Ok((results, state))
}

/// Writes the batch `pending` of an apply with the group's meta as `state` holds it
/// (last-applied, membership, counts, and the slot table, version base and fence when they
/// changed since the previous write: `slots_changed`, `old` = the base and fence written last)
/// in one WriteBatch, then publishes the slot table.
fn write_batch(
    store: &Store,
    state: &SmState,
    pending: Pending<'_>,
    slots_changed: bool,
    (old_base, old_fence): (u64, FenceToken),
) -> Result<()> {
    let group = pending.group;
    let mut batch = pending.batch;
    let meta_cf = store.cf(CF_META);
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::APPLIED),
        encode(&state.applied)?,
    );
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::MEMBERSHIP),
        encode(&state.membership)?,
    );
    batch.put_cf(
        meta_cf,
        keys::meta_key(group, tag::STATS),
        encode(&state.stats)?,
    );
    if let (true, Some(table)) = (slots_changed, &state.slots) {
        batch.put_cf(
            meta_cf,
            keys::meta_key(group, tag::SLOTS),
            slots::encode_table(table),
        );
        batch.put_cf(
            meta_cf,
            keys::meta_key(group, tag::SLOT_EPOCHS),
            slots::encode_epochs(&state.since),
        );
    }
    if state.base != old_base {
        batch.put_cf(
            meta_cf,
            keys::meta_key(group, tag::VERSION_BASE),
            encode(&state.base)?,
        );
    }
    if state.fence != old_fence {
        batch.put_cf(
            meta_cf,
            keys::meta_key(group, tag::FENCE),
            encode(&state.fence)?,
        );
    }
    // Data, slot table and last-applied in one batch: a crash never half-applies. An error here
    // stops the replica (openraft treats it as fatal), so it never diverges.
    if slots_changed {
        // Reads overlapping the write and the publish below retry (`Store::read_served`).
        store.begin_slot_change(group);
    }
    store.stall_point();
    store
        .db()
        .write(batch)
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
    if slots_changed {
        // Only after the write: a reader never sees a table the store could lose.
        store.set_slot_table(group, state.slots.clone(), state.since.clone());
    }
    Ok(())
}

/// Applies one command at log `index`; `slots_changed` is set when the slot table or the slot
/// epochs changed. Deterministic (see [`apply_entries`]).
fn apply_command(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    cmd: Command,
    slots_changed: &mut bool,
) -> Result<CommandResult> {
    Ok(match cmd {
        Command::Ingest { records } => ingest_records(pending, state, index, records)?,
        Command::RaiseVersionBase { above } => {
            raise_base(state, index, above);
            CommandResult::None
        }
        Command::CatchUp {
            records,
            removed,
            above,
        } => {
            let ingested = ingest_records(pending, state, index, records)?;
            let gone = remove_incoming(pending, state, removed)?;
            raise_base(state, index, above);
            match (ingested, gone) {
                (
                    CommandResult::Ingested { written, skipped },
                    CommandResult::Ingested {
                        written: w,
                        skipped: s,
                    },
                ) => CommandResult::Ingested {
                    written: written + w,
                    skipped: skipped + s,
                },
                (other, _) => other,
            }
        }
        Command::Routed { slot, epoch, write } => {
            routed_write(pending, state, index, slot, epoch, &write)?
        }
        Command::Fence { token } => match raise_fence(state, token) {
            Some(refused) => refused,
            None => CommandResult::None,
        },
        Command::Fenced { token, step } => {
            if let Some(refused) = raise_fence(state, token) {
                refused
            } else if !step.is_slot_command() {
                CommandResult::Misrouted {
                    slot: 0,
                    key_slot: None,
                }
            } else {
                apply_command(pending, state, index, *step, slots_changed)?
            }
        }
        cmd => {
            if let Some(t) = slots::transition(state.slots.as_deref(), &cmd) {
                if let Some(table) = t.table {
                    state.slots = Some(table);
                    *slots_changed = true;
                }
                if !t.owned_since.is_empty() {
                    if state.since.is_empty() {
                        state.since = vec![0; usize::from(kvorum_router::SLOT_COUNT)];
                    }
                    for (slot, epoch) in t.owned_since {
                        state.since[usize::from(slot)] = epoch;
                    }
                    *slots_changed = true;
                }
                pending.clear_slots(&t.clear, &mut state.stats)?;
                t.result
            } else {
                let slot = slot_of(cmd.key().as_bytes()).0;
                match slots::check_write(state.slots.as_deref(), slot) {
                    Some(refused) => refused,
                    None => write_key(pending, state, index, &cmd)?,
                }
            }
        }
    })
}

/// Raises the group's fence to `token`, or refuses it (the fence is higher: a deposed driver's
/// step) with the result to answer, changing nothing.
fn raise_fence(state: &mut SmState, token: FenceToken) -> Option<CommandResult> {
    if state.fence.refuses(&token) {
        return Some(CommandResult::Fenced {
            current: state.fence,
        });
    }
    if token.term > state.fence.term {
        state.fence = token;
    }
    None
}

/// A [`Command::Routed`] key write at log `index`: refused if it is not a key write of `slot`,
/// or if the group does not serve the slot to a proposer with map `epoch`; else applied as
/// [`write_key`] does.
fn routed_write(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    slot: u16,
    epoch: u64,
    write: &Command,
) -> Result<CommandResult> {
    let key_slot = match write {
        Command::Routed { .. } => None,
        w => w.written_key().map(|k| slot_of(k.as_bytes()).0),
    };
    if key_slot != Some(slot) {
        return Ok(CommandResult::Misrouted { slot, key_slot });
    }
    if let Some(refused) =
        slots::check_routed_write(state.slots.as_deref(), &state.since, slot, epoch)
    {
        return Ok(refused);
    }
    write_key(pending, state, index, write)
}

/// A key write (Put, Delete, Append, AppendBounded) at log `index` whose slot the group serves
/// (checked by the caller): applied with version `index + base`.
fn write_key(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    cmd: &Command,
) -> Result<CommandResult> {
    if let Some(message) = pending.store.inner.faults.apply(cmd.key()) {
        return Err(sm_err(ErrorVerb::Write, message));
    }
    let key = cmd.key().as_bytes();
    let dk = keys::data_key(pending.group, key);
    let current = pending.current(&dk)?;
    let (effect, result) = command::apply(cmd, index + state.base, current.as_ref());
    match effect {
        Effect::Unchanged => {}
        Effect::Set(r) => pending.set(dk, current.as_ref(), r, &mut state.stats),
        Effect::Remove => pending.remove(dk, current.as_ref(), &mut state.stats),
    }
    Ok(result)
}

/// `Ingest` at log `index`: stores each record whose slot is Incoming with its own version, and
/// raises the version base so that later writes get versions above every ingested one.
fn ingest_records(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    records: Vec<(String, Record)>,
) -> Result<CommandResult> {
    let (mut written, mut skipped) = (0u64, 0u64);
    for (key, record) in records {
        let slot = slot_of(key.as_bytes()).0;
        let storable = key.len() <= MAX_KEY_BYTES
            && record.value.len() <= MAX_VALUE_BYTES
            // Version 0 means absent.
            && record.version > 0;
        if !storable || slots::state_of(state.slots.as_deref(), slot) != SlotState::Incoming {
            skipped += 1;
            continue;
        }
        // A later write at index j > index gets j + base > record.version.
        state.base = state.base.max(record.version.saturating_sub(index));
        let dk = keys::data_key(pending.group, key.as_bytes());
        let current = pending.current(&dk)?;
        pending.set(dk, current.as_ref(), record, &mut state.stats);
        written += 1;
    }
    Ok(CommandResult::Ingested { written, skipped })
}

/// Raises the version base at log `index` so that a later write (at index j > `index`, version
/// j + base) gets a version above `above`.
fn raise_base(state: &mut SmState, index: u64, above: u64) {
    state.base = state.base.max(above.saturating_sub(index));
}

/// The removals of a `CatchUp`: deletes each key whose slot is Incoming (skips the others).
fn remove_incoming(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    keys: Vec<String>,
) -> Result<CommandResult> {
    let (mut written, mut skipped) = (0u64, 0u64);
    for key in keys {
        let slot = slot_of(key.as_bytes()).0;
        if slots::state_of(state.slots.as_deref(), slot) != SlotState::Incoming {
            skipped += 1;
            continue;
        }
        let dk = keys::data_key(pending.group, key.as_bytes());
        let current = pending.current(&dk)?;
        pending.remove(dk, current.as_ref(), &mut state.stats);
        written += 1;
    }
    Ok(CommandResult::Ingested { written, skipped })
}

/// The writes of one apply batch not yet in RocksDB, and how to read through them: later
/// entries of a batch must see earlier ones.
struct Pending<'a> {
    store: &'a Store,
    group: GroupId,
    batch: WriteBatch,
    /// Keys written or deleted by this batch (`None`: deleted).
    overlay: HashMap<Vec<u8>, Option<Record>>,
    /// Slots whose data this batch deleted (a range delete in `batch`): a key of one that is not
    /// in `overlay` is absent, whatever RocksDB still holds.
    cleared: HashSet<u16>,
}

impl<'a> Pending<'a> {
    fn new(store: &'a Store, group: GroupId) -> Self {
        Pending {
            store,
            group,
            batch: WriteBatch::default(),
            overlay: HashMap::new(),
            cleared: HashSet::new(),
        }
    }

    /// The current record of data key `dk`, as of the entries applied so far.
    fn current(&self, dk: &[u8]) -> Result<Option<Record>> {
        if let Some(r) = self.overlay.get(dk) {
            return Ok(r.clone());
        }
        if keys::data_key_slot(dk).is_some_and(|s| self.cleared.contains(&s)) {
            return Ok(None);
        }
        let raw = self
            .store
            .db()
            .get_pinned_cf(self.store.cf(CF_DATA), dk)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        match raw {
            None => Ok(None),
            Some(b) => Ok(Some(Record::decode(&b).ok_or_else(|| {
                sm_err(ErrorVerb::Read, format!("corrupt record {dk:?}"))
            })?)),
        }
    }

    fn set(&mut self, dk: Vec<u8>, old: Option<&Record>, r: Record, stats: &mut GroupStats) {
        if let Some(old) = old {
            stats.remove(dk.len(), old.encoded_len());
        }
        stats.add(dk.len(), r.encoded_len());
        self.batch.put_cf(self.store.cf(CF_DATA), &dk, r.encode());
        self.overlay.insert(dk, Some(r));
    }

    fn remove(&mut self, dk: Vec<u8>, old: Option<&Record>, stats: &mut GroupStats) {
        if let Some(old) = old {
            stats.remove(dk.len(), old.encoded_len());
        }
        self.batch.delete_cf(self.store.cf(CF_DATA), &dk);
        self.overlay.insert(dk, None);
    }

    /// Deletes all data of `slots`: one range delete per run of consecutive slots, the stats
    /// reduced by what it removes (counted by a scan, so the batch does not grow with the data).
    fn clear_slots(&mut self, slots: &[u16], stats: &mut GroupStats) -> Result<()> {
        let mut sorted = slots.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let db = self.store.db();
        let data_cf = self.store.cf(CF_DATA);
        let mut i = 0;
        while i < sorted.len() {
            let from = sorted[i];
            let mut to = from;
            while i + 1 < sorted.len() && sorted[i + 1] == to + 1 {
                i += 1;
                to += 1;
            }
            i += 1;
            let start = keys::slot_start(self.group, from).to_vec();
            let end = keys::slot_start(self.group, to + 1).to_vec();
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_lower_bound(start.clone());
            ro.set_iterate_upper_bound(end.clone());
            let mut it = db.raw_iterator_cf_opt(data_cf, ro);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                // Keys this batch already wrote or cleared are counted through the overlay.
                let cleared = keys::data_key_slot(k).is_some_and(|s| self.cleared.contains(&s));
                if !cleared && !self.overlay.contains_key(k) {
                    stats.remove(k.len(), v.len());
                }
                it.next();
            }
            it.status().map_err(|e| sm_err(ErrorVerb::Read, e))?;
            self.batch.delete_range_cf(data_cf, start, end);
        }
        let set: HashSet<u16> = sorted.into_iter().collect();
        for (k, r) in self.overlay.iter_mut() {
            if keys::data_key_slot(k).is_some_and(|s| set.contains(&s)) {
                if let Some(old) = r.take() {
                    stats.remove(k.len(), old.encoded_len());
                }
            }
        }
        self.cleared.extend(set);
        Ok(())
    }
}

/// Steps (1)-(6) of the module overview, on a blocking thread.
fn install(
    store: &Store,
    group: GroupId,
    meta: SnapshotMeta<NodeId, BasicNode>,
    mut received: std::fs::File,
) -> Result<()> {
    let file = snapshot_file_name(group, meta.last_log_id);
    let tmp = store.inner.snapshot_dir.join(format!("{file}.tmp"));
    let copied = copy_checked(&mut received, &tmp);
    let copied = match copied {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    store.begin_install(group);
    let current = CurrentSnapshot { meta, file };
    publish(store, group, &copied, &tmp, &current, true)?;
    ingest(store, group, &current)?;
    store.end_install(group);
    remove_superseded(store, group)
}

/// Steps (1)-(2): copies `received` to `tmp`, fsyncs it and checks its framing end to end.
fn copy_checked(received: &mut std::fs::File, tmp: &std::path::Path) -> Result<std::fs::File> {
    use std::io::Seek;
    let w = |e: std::io::Error| snap_err(ErrorVerb::Write, e);
    received.seek(std::io::SeekFrom::Start(0)).map_err(w)?;
    let mut out = std::fs::File::create(tmp).map_err(w)?;
    std::io::copy(received, &mut out).map_err(w)?;
    out.sync_all().map_err(w)?;
    // Check the whole file before touching the state machine.
    let (mut reader, _) = SnapshotReader::open(std::fs::File::open(tmp).map_err(w)?)
        .map_err(|e| snap_err(ErrorVerb::Read, e))?;
    while reader
        .next_record()
        .map_err(|e| snap_err(ErrorVerb::Read, e))?
        .is_some()
    {}
    Ok(out)
}

/// Last applied index plus version base of `group`, from one consistent view.
pub(crate) fn version_high_water(store: &Store, group: GroupId) -> Result<u64> {
    let snap = store.db().snapshot();
    let meta_cf = store.cf(CF_META);
    let applied =
        read_meta::<Option<LogId<NodeId>>>(|k| snap.get_cf(meta_cf, k), group, tag::APPLIED)?
            .flatten()
            .map_or(0, |l| l.index);
    let base: u64 = read_meta(|k| snap.get_cf(meta_cf, k), group, tag::VERSION_BASE)?.unwrap_or(0);
    Ok(applied.saturating_add(base))
}
