//! The snapshot lifecycle of a group's state machine: building a snapshot, installing a
//! received one, and the recovery of both when the store opens.
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::storage::Snapshot;
use openraft::{
    BasicNode, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::{WriteBatch, WriteOptions};

use crate::applied::{blocking, encode, read_epochs, read_meta, read_slots, snap_err, GroupStats};
use crate::layout::{self, tag, CF_DATA, CF_META};
use crate::slots::{self, SlotEpochs, SlotTable};
use crate::snapshot::{durable_rename, CurrentSnapshot, SnapshotReader, SnapshotWriter};
use crate::FenceToken;
use crate::{GroupId, NodeId, Store, TypeConfig};
use crate::{StoreError, StoreOptions};
use std::path::Path;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// Bytes of records per write batch while installing a snapshot.
const INSTALL_BATCH_BYTES: usize = 4 << 20;

/// Distinguishes snapshot files built in the same nanosecond.
static SNAPSHOT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Builds snapshots of one group from a RocksDB snapshot, concurrently with apply.
pub struct SnapshotBuilder {
    pub(crate) store: Store,
    pub(crate) group: GroupId,
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
pub(crate) fn finish_install(store: &Store, group: GroupId) -> Result<()> {
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
pub(crate) fn ingest(store: &Store, group: GroupId, current: &CurrentSnapshot) -> Result<()> {
    let path = store.inner.snapshot_dir.join(&current.file);
    let file = std::fs::File::open(&path).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let (mut reader, _) = SnapshotReader::open(file).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    let db = store.db();
    let data_cf = store.cf(CF_DATA);
    let mut batch = WriteBatch::default();
    batch.delete_range_cf(
        data_cf,
        layout::group_start(group).to_vec(),
        layout::group_end(group),
    );
    let prefix = layout::group_start(group);
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
        if k.starts_with(&layout::SNAP_SPECIAL) {
            if k == layout::SNAP_SLOTS {
                table = Some(
                    slots::decode_table(&v)
                        .ok_or_else(|| snap_err(ErrorVerb::Read, "corrupt slot table"))?,
                );
            } else if k == layout::SNAP_SLOT_EPOCHS {
                since = slots::decode_epochs(&v)
                    .ok_or_else(|| snap_err(ErrorVerb::Read, "corrupt slot epochs"))?;
            } else if k == layout::SNAP_VERSION_BASE {
                let b: [u8; 8] = v
                    .as_slice()
                    .try_into()
                    .map_err(|_| snap_err(ErrorVerb::Read, "corrupt version base"))?;
                base = u64::from_be_bytes(b);
            } else if k == layout::SNAP_FENCE {
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
        layout::meta_key(group, tag::APPLIED),
        encode(&current.meta.last_log_id)?,
    );
    batch.put_cf(
        meta_cf,
        layout::meta_key(group, tag::MEMBERSHIP),
        encode(&current.meta.last_membership)?,
    );
    batch.put_cf(
        meta_cf,
        layout::meta_key(group, tag::STATS),
        encode(&stats)?,
    );
    match &table {
        Some(t) => batch.put_cf(
            meta_cf,
            layout::meta_key(group, tag::SLOTS),
            slots::encode_table(t),
        ),
        None => batch.delete_cf(meta_cf, layout::meta_key(group, tag::SLOTS)),
    }
    batch.put_cf(
        meta_cf,
        layout::meta_key(group, tag::SLOT_EPOCHS),
        slots::encode_epochs(&since),
    );
    batch.put_cf(
        meta_cf,
        layout::meta_key(group, tag::VERSION_BASE),
        encode(&base)?,
    );
    batch.put_cf(
        meta_cf,
        layout::meta_key(group, tag::FENCE),
        encode(&fence)?,
    );
    batch.delete_cf(meta_cf, layout::meta_key(group, tag::INSTALLING));
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
pub(crate) fn publish(
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
        layout::meta_key(group, tag::SNAPSHOT),
        encode(current)?,
    );
    if installing {
        batch.put_cf(
            meta_cf,
            layout::meta_key(group, tag::INSTALLING),
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
pub(crate) fn lock_snapshots(store: &Store) -> std::sync::MutexGuard<'_, ()> {
    store
        .inner
        .snapshot_lock
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The group's current snapshot record, if any.
pub(crate) fn read_current(store: &Store, group: GroupId) -> Result<Option<CurrentSnapshot>> {
    let db = store.db();
    read_meta(|k| db.get_cf(store.cf(CF_META), k), group, tag::SNAPSHOT)
}

/// Opens the group's current snapshot file, if any. Under the snapshot lock, so the file the
/// record names is not deleted in between (an open file survives its unlink).
pub(crate) fn open_current(
    store: &Store,
    group: GroupId,
) -> Result<Option<(CurrentSnapshot, std::fs::File)>> {
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
pub(crate) fn remove_superseded(store: &Store, group: GroupId) -> Result<()> {
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

pub(crate) fn snapshot_file_name(group: GroupId, last: Option<LogId<NodeId>>) -> String {
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
pub(crate) fn build(
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
pub(crate) fn write_snapshot(
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
    ro.set_iterate_lower_bound(layout::group_start(group).to_vec());
    ro.set_iterate_upper_bound(layout::group_end(group));
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
        out.record(&layout::SNAP_SLOTS, &slots::encode_table(&table))
            .map_err(w)?;
    }
    let base: u64 = read_meta(|k| snap.get_cf(meta_cf, k), group, tag::VERSION_BASE)?.unwrap_or(0);
    if base != 0 {
        out.record(&layout::SNAP_VERSION_BASE, &base.to_be_bytes())
            .map_err(w)?;
    }
    let since = read_epochs(|k| snap.get_cf(meta_cf, k), group)?;
    if since.iter().any(|e| *e != 0) {
        out.record(&layout::SNAP_SLOT_EPOCHS, &slots::encode_epochs(&since))
            .map_err(w)?;
    }
    // The fence travels with the slot table it guards: a replica that installs this snapshot
    // refuses a deposed driver's steps as the others do.
    let fence: FenceToken =
        read_meta(|k| snap.get_cf(meta_cf, k), group, tag::FENCE)?.unwrap_or_default();
    if fence != FenceToken::default() {
        out.record(&layout::SNAP_FENCE, &encode(&fence)?)
            .map_err(w)?;
    }
    let written = out.finish().map_err(w)?;
    let reader = std::fs::File::open(tmp).map_err(|e| snap_err(ErrorVerb::Read, e))?;
    Ok((written, reader))
}

/// Steps (1)-(6) of the module overview, on a blocking thread.
pub(crate) fn install(
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
pub(crate) fn copy_checked(
    received: &mut std::fs::File,
    tmp: &std::path::Path,
) -> Result<std::fs::File> {
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

impl Store {
    /// Opens (creating if needed) the RocksDB under `dir` (`dir/db`, snapshots in
    /// `dir/snapshots`) and starts its WAL flusher thread, which ends when the store is dropped.
    ///
    /// Then recovers what a crash left: deletes snapshot files no group's record names, and
    /// finishes every interrupted snapshot install (a group whose install cannot be finished
    /// refuses reads, and its state machine fails to open).
    ///
    /// A corrupt file (see the `integrity` module), or a store marked corrupt while it ran
    /// ([`Store::mark_corrupt`]), is refused with [`StoreError::CorruptAtOpen`].
    pub fn open(dir: &Path) -> std::result::Result<Store, StoreError> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Whether this is the last handle of the store (replicas and state machines hold others):
    /// dropping it closes RocksDB, after which the data directory may be wiped.
    pub fn is_last_handle(&self) -> bool {
        std::sync::Arc::strong_count(&self.inner) == 1
    }

    /// [`Store::open`] with `options`: RocksDB's bound on open files, and the test suite's
    /// planted faults (built once at start; see [`StoreFaults`](crate::StoreFaults)).
    pub fn open_with(dir: &Path, options: StoreOptions) -> std::result::Result<Store, StoreError> {
        let store = Store::open_db(dir, options)?;
        recover(&store)?;
        Ok(store)
    }
}
