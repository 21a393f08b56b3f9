//! One RocksDB per node, shared by every group's log store and state machine, and the WAL
//! flusher that gives group commit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::LogFlushed;
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBRecoveryMode, Options, DB};

use crate::command::RecordCodec;
use crate::faults::{Fsync, StoreFaults};
use crate::layout::{self, CF_DATA, CF_LOG, CF_META};
use crate::slots::{self, SlotEpochs, SlotTable};
use crate::{GroupId, SlotState, TypeConfig, Versioned};

/// A chunk of a slot scan ([`Store::scan_slots`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotChunk {
    /// `(key, record)` pairs in key order (slot, then key bytes).
    pub records: Vec<(String, Versioned)>,
    /// Where the next chunk starts (pass it as `after`); `None` when the scan is done. It may be
    /// `Some` when nothing remains: the next chunk is then empty with `None`.
    pub next: Option<Vec<u8>>,
    /// Bytes of the records returned, counted as [`Store::group_stats`] counts them (data key
    /// plus encoded record); an unchanged record counts its data key only.
    pub bytes: u64,
    /// Keys whose record's version is at most the scan's `since` ([`Store::scan_slots_since`]):
    /// present, not changed since a copy read them, so returned without their record (in key
    /// order, interleaved with `records` in the store).
    pub unchanged: Vec<String>,
}

/// The answer of [`Store::read_served`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedRead {
    /// The group served the slot before and after the read, and the key has this record.
    Found(Versioned),
    /// The group served the slot before and after the read, and the key is absent.
    Absent,
    /// The group does not serve the slot at the caller's epoch (or its slot table changed under
    /// the read): the caller refreshes its map and retries where the map now routes the key.
    NotServed,
}

/// Reads a slot-table change can interrupt before [`Store::read_served`] gives up with
/// [`ServedRead::NotServed`] (the caller then retries after refreshing its map).
const SERVED_READ_ATTEMPTS: usize = 3;

/// What the store publishes in memory of one group's slot table (see [`Inner::slots`]).
#[derive(Default)]
struct Published {
    /// The table as last applied; `None`: uninitialized, every slot owned.
    table: Option<SlotTable>,
    /// The epochs from which the group owns its slots (`slots::SlotEpochs`).
    since: SlotEpochs,
    /// The group was dropped ([`Store::drop_group`]): a tombstone, it serves nothing until its
    /// state machine is opened again.
    dropped: bool,
    /// Counts slot-table changes: odd from before the write that changes the table until the new
    /// table is published, so a read can tell that a change overlapped it.
    seq: u64,
}

impl Published {
    fn serves_read(&self, slot: u16, epoch: u64) -> bool {
        let state = slots::state_of(self.table.as_deref(), slot);
        !self.dropped
            && matches!(state, SlotState::Owned | SlotState::Frozen)
            && epoch >= slots::since_of(&self.since, slot)
    }
}

/// Errors of the store's own read API.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// RocksDB failed; the node's disk or data directory needs an operator.
    #[error("storage: {0}")]
    Rocks(rocksdb::Error),
    /// RocksDB found a damaged file while reading (a block or record checksum mismatch). The
    /// replica must stop serving from this store: mark it ([`Store::mark_corrupt`]) and stop; the
    /// cluster replaces it like a dead node. Another replica answers the request.
    #[error("corrupt data: {0}")]
    Corruption(rocksdb::Error),
    /// The store cannot open because a file is corrupt (or it was marked corrupt while running):
    /// the node must not start on it. Carries what to do ([`crate::WIPE_ADVICE`]).
    #[error(
        "refusing to start: corrupt data in {file} ({detail}); {advice} (data directory {path})",
        advice = crate::WIPE_ADVICE,
        path = .dir.display()
    )]
    CorruptAtOpen {
        /// The data directory.
        dir: PathBuf,
        /// The damaged file, as RocksDB reported it, or the corruption marker.
        file: String,
        /// RocksDB's message, or the reason the store was marked.
        detail: String,
    },
    /// Bytes on disk do not decode: corruption. The replica must not serve them.
    #[error("corrupt record for key {key:?}")]
    Corrupt {
        /// The key whose record does not decode (lossy UTF-8).
        key: String,
    },
    /// A file-system error outside RocksDB (snapshot files).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The group is installing a snapshot on this replica: its data is being replaced, and a read
    /// now could see a state that never existed. Retry shortly or at another replica.
    #[error("group {group} is installing a snapshot on this replica")]
    Installing {
        /// The group whose snapshot is being installed.
        group: GroupId,
    },
    /// A slot range is empty or past the last slot: a caller bug.
    #[error("bad slot range {from}..={to}")]
    BadSlotRange {
        /// First slot of the range.
        from: u16,
        /// Last slot of the range.
        to: u16,
    },
}

/// Default of [`StoreOptions::max_open_files`]: the table files RocksDB keeps open.
pub const DEFAULT_MAX_OPEN_FILES: u32 = 512;
/// Fewest table files RocksDB is given: it keeps 10 descriptors of its `max_open_files` for
/// other files, and a table cache of a few dozen files still serves a small store well.
pub const MIN_MAX_OPEN_FILES: u32 = 32;

/// How a store is opened.
#[derive(Debug)]
pub struct StoreOptions {
    /// Most files RocksDB keeps open (its `max_open_files`: the table cache of SST files, less
    /// 10 it keeps for other files; at least [`MIN_MAX_OPEN_FILES`]). Beyond it RocksDB closes
    /// the least recently used table and reopens it when read, so the bound costs reads of a
    /// large store some I/O and never fails one. The node sizes it from its file-descriptor
    /// budget. Default [`DEFAULT_MAX_OPEN_FILES`].
    pub max_open_files: u32,
    /// The test suite's planted faults (none outside its `kvnode-test` binary).
    pub faults: StoreFaults,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            faults: StoreFaults::default(),
        }
    }
}

/// The node's RocksDB, shared by all groups. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: DB,
    /// The data directory the store was opened in (RocksDB is in `dir/db`).
    pub(crate) dir: PathBuf,
    /// Where snapshot files live.
    pub(crate) snapshot_dir: PathBuf,
    /// Queue of the WAL flusher: appends waiting to be reported durable.
    flush_tx: std::sync::Mutex<mpsc::Sender<LogFlushed<TypeConfig>>>,
    /// The planted faults of the test suite (none outside its `kvnode-test` binary).
    pub(crate) faults: StoreFaults,
    /// Serializes updates of the groups' current-snapshot records.
    pub(crate) snapshot_lock: std::sync::Mutex<()>,
    /// Per group, a count of snapshot install starts and ends: odd while the group's data range
    /// is being replaced (or an install failed half way), so reads can tell they overlapped one.
    installs: std::sync::Mutex<HashMap<GroupId, u64>>,
    /// Per group, its slot table as last applied (absent: uninitialized, every slot owned), or
    /// the tombstone of a dropped group. Kept current by apply and snapshot installs, after
    /// their writes, so that ownership can be re-checked after a read index.
    slots: std::sync::RwLock<HashMap<GroupId, Published>>,
    /// Per group, the last hash of its applied state (the consistency check).
    pub(crate) hashes: crate::consistency::Hashes,
    /// Test hook: the next write that reaches [`Store::stall_point`] signals the first channel
    /// and waits on the second.
    #[cfg(test)]
    stall: std::sync::Mutex<Option<(mpsc::SyncSender<()>, mpsc::Receiver<()>)>>,
}

impl Store {
    /// Opens the RocksDB under `dir` and starts its WAL flusher; [`Store::open_with`] (in
    /// `lifecycle`) then recovers what a crash left.
    pub(crate) fn open_db(dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let StoreOptions {
            max_open_files,
            faults,
        } = options;
        crate::integrity::refuse_if_marked(dir)?;
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir)?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Bound the WAL so a quiet group does not keep old WAL files alive forever.
        opts.set_max_total_wal_size(256 << 20);
        // Only a torn final record (a crash mid-write, never acknowledged) is tolerated: a bad
        // record anywhere else fails the open instead of dropping the WAL after it, which would
        // lose acknowledged log entries and the vote (point-in-time recovery, the default).
        opts.set_wal_recovery_mode(DBRecoveryMode::TolerateCorruptedTailRecords);
        // Corruption found in the MANIFEST, SST files or in the background stops the DB
        // (RocksDB's default, stated here because integrity depends on it).
        opts.set_paranoid_checks(true);
        // Bounded, so that the node's file-descriptor budget holds however many SST files the
        // store grows (RocksDB's default, -1, keeps every table open for good).
        let max_open_files = max_open_files.max(MIN_MAX_OPEN_FILES);
        opts.set_max_open_files(i32::try_from(max_open_files).unwrap_or(i32::MAX));
        let cfs = [CF_LOG, CF_META, CF_DATA]
            .into_iter()
            .map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db_dir = dir.join("db");
        let db = DB::open_cf_descriptors(&opts, &db_dir, cfs)
            .map_err(|e| crate::integrity::open_error(dir, &db_dir, e))?;
        let (tx, rx) = mpsc::channel::<LogFlushed<TypeConfig>>();
        let inner = Arc::new(Inner {
            db,
            dir: dir.to_path_buf(),
            snapshot_dir,
            flush_tx: std::sync::Mutex::new(tx),
            faults,
            snapshot_lock: std::sync::Mutex::new(()),
            installs: std::sync::Mutex::new(HashMap::new()),
            slots: std::sync::RwLock::new(HashMap::new()),
            hashes: Default::default(),
            #[cfg(test)]
            stall: std::sync::Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("kvorum-wal-flush".into())
            .spawn(move || flusher(weak, rx))?;
        Ok(Store { inner })
    }

    /// The current record of `key` in `group`'s state machine, as applied locally.
    ///
    /// This is a local read: linearizable only after the caller made sure (read index) that
    /// this replica applied every write committed before the read began. A read that overlaps a
    /// snapshot install of the group is refused ([`StoreError::Installing`]): the install
    /// replaces the data range in several batches, and in between it holds a state that never
    /// existed.
    pub fn read(&self, group: GroupId, key: &str) -> Result<Option<Versioned>, StoreError> {
        let seq = self.install_seq(group);
        if seq & 1 == 1 {
            return Err(StoreError::Installing { group });
        }
        let raw = self
            .inner
            .db
            .get_pinned_cf(self.cf(CF_DATA), layout::data_key(group, key.as_bytes()))?;
        let record = match raw {
            None => None,
            Some(b) => Some(Versioned::decode(&b).ok_or_else(|| StoreError::Corrupt {
                key: key.to_string(),
            })?),
        };
        // An install that started (and maybe ended) since the first check may have changed
        // what we read half way.
        if self.install_seq(group) != seq {
            return Err(StoreError::Installing { group });
        }
        Ok(record)
    }

    /// The per-group install sequence numbers (odd while an install runs).
    fn installs(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, u64>> {
        self.inner
            .installs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn install_seq(&self, group: GroupId) -> u64 {
        let installs = self.installs();
        installs.get(&group).copied().unwrap_or(0)
    }

    /// Marks `group` as installing a snapshot: reads of it are refused until
    /// [`Store::end_install`]. Call before the first write of the install.
    pub(crate) fn begin_install(&self, group: GroupId) {
        let mut installs = self.installs();
        let seq = installs.entry(group).or_insert(0);
        if *seq & 1 == 0 {
            *seq += 1;
        }
    }

    /// Ends [`Store::begin_install`], after the install's last write. Not called when an install
    /// fails half way: the group's data is then not a state that existed.
    pub(crate) fn end_install(&self, group: GroupId) {
        let mut installs = self.installs();
        let seq = installs.entry(group).or_insert(0);
        if *seq & 1 == 1 {
            *seq += 1;
        }
    }

    /// Number of keys and their bytes in `group`, counted by a scan of the group.
    pub fn scan_stats(&self, group: GroupId) -> Result<(u64, u64), StoreError> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_lower_bound(layout::group_start(group).to_vec());
        ro.set_iterate_upper_bound(layout::group_end(group));
        let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(CF_DATA), ro);
        it.seek_to_first();
        let (mut n, mut bytes) = (0u64, 0u64);
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            n += 1;
            bytes += (k.len() + v.len()) as u64;
            it.next();
        }
        it.status()?;
        Ok((n, bytes))
    }

    /// The state of `slot` in `group`'s slot table, as applied locally (an uninitialized table,
    /// or a group this store does not know, owns every slot; a dropped group's slots are all
    /// `Released`). From memory, no I/O: call it after a read index to re-check that the group
    /// still serves the slot.
    pub fn slot_state(&self, group: GroupId, slot: u16) -> SlotState {
        let tables = self.slot_tables();
        match tables.get(&group) {
            Some(p) if p.dropped => SlotState::Released,
            p => slots::state_of(p.and_then(|p| p.table.as_deref()), slot),
        }
    }

    /// Whether `group`, as applied locally, serves reads of `slot` to a request routed under map
    /// `epoch`: the slot is Owned or Frozen, and owned since that epoch or an earlier one (see
    /// [`crate::Command::ActivateAt`]). A dropped group serves nothing. From memory, no I/O: call
    /// it after a read index.
    pub fn serves_read(&self, group: GroupId, slot: u16, epoch: u64) -> bool {
        let tables = self.slot_tables();
        tables
            .get(&group)
            .is_none_or(|p| p.serves_read(slot, epoch))
    }

    /// Reads `key` (of `slot`) from `group` if the group serves the slot at map `epoch` both
    /// before and after the read, and no slot-table change of the group overlapped the read: a
    /// `Release`, `ActivateAt` or `DropSlots` applied in between would otherwise turn a key that
    /// moved away into an answer of "absent". Like [`Store::read`], a local read: linearizable
    /// only after a read index.
    pub fn read_served(
        &self,
        group: GroupId,
        slot: u16,
        epoch: u64,
        key: &str,
    ) -> Result<ServedRead, StoreError> {
        for _ in 0..SERVED_READ_ATTEMPTS {
            let (served, seq) = self.served_at(group, slot, epoch);
            if !served {
                return Ok(ServedRead::NotServed);
            }
            if seq & 1 == 1 {
                // A change is being written: its table is not published yet.
                continue;
            }
            self.stall_point();
            let record = self.read(group, key)?;
            match self.served_at(group, slot, epoch) {
                (false, _) => return Ok(ServedRead::NotServed),
                (true, after) if after == seq => {
                    return Ok(record.map_or(ServedRead::Absent, ServedRead::Found))
                }
                // The table changed (another slot, or this one and back): read again.
                (true, _) => {}
            }
        }
        Ok(ServedRead::NotServed)
    }

    /// [`Store::serves_read`] and the group's slot-table sequence number, read together.
    fn served_at(&self, group: GroupId, slot: u16, epoch: u64) -> (bool, u64) {
        let tables = self.slot_tables();
        tables
            .get(&group)
            .map_or((true, 0), |p| (p.serves_read(slot, epoch), p.seq))
    }

    /// `group`'s slot table as applied locally, indexed by slot; `None` when uninitialized or
    /// dropped.
    pub fn slot_table(&self, group: GroupId) -> Option<Vec<SlotState>> {
        let tables = self.slot_tables();
        tables.get(&group).and_then(|p| p.table.clone())
    }

    fn slot_tables(&self) -> std::sync::RwLockReadGuard<'_, HashMap<GroupId, Published>> {
        self.inner.slots.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `group`'s slot table as changing: call it before the write that changes the table,
    /// which [`Store::set_slot_table`] then publishes. Reads that overlap the two calls are
    /// retried ([`Store::read_served`]).
    pub(crate) fn begin_slot_change(&self, group: GroupId) {
        let mut tables = self.inner.slots.write().unwrap_or_else(|p| p.into_inner());
        tables.entry(group).or_default().seq |= 1;
    }

    /// Publishes `group`'s slot table and slot epochs after the write that made them current (a
    /// dropped group's tombstone goes: its state machine was opened again).
    pub(crate) fn set_slot_table(
        &self,
        group: GroupId,
        table: Option<SlotTable>,
        epochs: SlotEpochs,
    ) {
        self.publish(group, table, epochs, false);
    }

    fn publish(&self, group: GroupId, table: Option<SlotTable>, since: SlotEpochs, dropped: bool) {
        let mut tables = self.inner.slots.write().unwrap_or_else(|p| p.into_inner());
        let p = tables.entry(group).or_default();
        *p = Published {
            table,
            since,
            dropped,
            // Even again, and different from every value a reader may hold.
            seq: (p.seq | 1) + 1,
        };
    }

    /// Up to about `max_bytes` of the records of `slots` (inclusive ranges) in `group`, in key
    /// order, from this replica's applied state, starting after the cursor `after` (a previous
    /// chunk's `next`; `None` to start). Always returns at least one record if any remain, so
    /// every call makes progress; memory is bounded by `max_bytes` plus one record. Each chunk is
    /// read from one consistent view; chunks are consistent with each other only if the slots do
    /// not change meanwhile (frozen or released). Refused while the group installs a snapshot.
    pub fn scan_slots(
        &self,
        group: GroupId,
        slots: &[(u16, u16)],
        after: Option<&[u8]>,
        max_bytes: usize,
    ) -> Result<SlotChunk, StoreError> {
        self.scan_slots_since(group, slots, after, max_bytes, 0)
    }

    /// [`Store::scan_slots`], except that a record whose version is at most `since` comes back
    /// as its key only, in [`SlotChunk::unchanged`], and counts only its key's bytes: the
    /// catch-up of a copy made before the source froze, which must learn which keys still exist
    /// but needs the values of those written since only.
    pub fn scan_slots_since(
        &self,
        group: GroupId,
        slots: &[(u16, u16)],
        after: Option<&[u8]>,
        max_bytes: usize,
        since: u64,
    ) -> Result<SlotChunk, StoreError> {
        let seq = self.install_seq(group);
        if seq & 1 == 1 {
            return Err(StoreError::Installing { group });
        }
        let mut chunk = SlotChunk {
            records: Vec::new(),
            next: None,
            bytes: 0,
            unchanged: Vec::new(),
        };
        // The cursor is a data key without its group prefix: `slot ++ key`.
        let cursor: Option<Vec<u8>> = after.map(|a| {
            let mut k = layout::group_start(group).to_vec();
            k.extend_from_slice(a);
            k
        });
        for (from, to) in merge_ranges(slots)? {
            let start = layout::slot_start(group, from).to_vec();
            let end = layout::slot_start(group, to + 1).to_vec();
            if cursor.as_ref().is_some_and(|c| *c >= end) {
                continue;
            }
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_lower_bound(start.clone());
            ro.set_iterate_upper_bound(end);
            let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(CF_DATA), ro);
            match &cursor {
                Some(c) if *c >= start => {
                    it.seek(c);
                    if it.key() == Some(c.as_slice()) {
                        it.next();
                    }
                }
                _ => it.seek_to_first(),
            }
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let lossy = || String::from_utf8_lossy(&k[10..]).into_owned();
                let key = std::str::from_utf8(&k[10..])
                    .map_err(|_| StoreError::Corrupt { key: lossy() })?
                    .to_string();
                let record =
                    Versioned::decode(v).ok_or_else(|| StoreError::Corrupt { key: lossy() })?;
                if record.version <= since {
                    chunk.bytes += k.len() as u64;
                    chunk.unchanged.push(key);
                } else {
                    chunk.bytes += (k.len() + v.len()) as u64;
                    chunk.records.push((key, record));
                }
                if chunk.bytes >= max_bytes as u64 {
                    chunk.next = Some(k[8..].to_vec());
                    break;
                }
                it.next();
            }
            it.status()?;
            if chunk.next.is_some() {
                break;
            }
        }
        if self.install_seq(group) != seq {
            return Err(StoreError::Installing { group });
        }
        Ok(chunk)
    }

    /// Number of keys of `slots` (inclusive ranges) in `group` and their bytes (counted as
    /// [`Store::group_stats`] counts them), by a scan of this replica's applied state.
    pub fn slot_stats(
        &self,
        group: GroupId,
        slots: &[(u16, u16)],
    ) -> Result<(u64, u64), StoreError> {
        let (mut n, mut bytes) = (0u64, 0u64);
        for (from, to) in merge_ranges(slots)? {
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_lower_bound(layout::slot_start(group, from).to_vec());
            ro.set_iterate_upper_bound(layout::slot_start(group, to + 1).to_vec());
            let mut it = self.inner.db.raw_iterator_cf_opt(self.cf(CF_DATA), ro);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                n += 1;
                bytes += (k.len() + v.len()) as u64;
                it.next();
            }
            it.status()?;
        }
        Ok((n, bytes))
    }

    /// Deletes everything this store holds for `group`: its log, meta (vote, applied, slot table,
    /// ...), data and snapshot files, durably (the deletes are synced before this returns). The
    /// caller shuts the group's replica down first; a later `state_machine(group)` starts empty.
    pub fn drop_group(&self, group: GroupId) -> Result<(), StoreError> {
        let mut batch = rocksdb::WriteBatch::default();
        for cf in [CF_LOG, CF_META, CF_DATA] {
            batch.delete_range_cf(
                self.cf(cf),
                layout::group_start(group).to_vec(),
                layout::group_end(group),
            );
        }
        let mut wo = rocksdb::WriteOptions::default();
        // The group is gone for good once this returns: no restart brings it back.
        wo.set_sync(true);
        self.begin_slot_change(group);
        {
            // Under the snapshot lock: no build or install publishes a file of the group meanwhile.
            let _guard = self
                .inner
                .snapshot_lock
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.inner.db.write_opt(batch, &wo)?;
            let prefix = format!("g{group}-");
            for entry in std::fs::read_dir(&self.inner.snapshot_dir)? {
                let name = entry?.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    std::fs::remove_file(self.inner.snapshot_dir.join(&name))?;
                }
            }
        }
        // A tombstone, not an uninitialized table (which would serve every slot): a read that
        // reached the group's replica before it stopped must not answer from the empty range.
        self.publish(group, None, Vec::new(), true);
        self.installs().remove(&group);
        self.forget_hash(group);
        tracing::info!(group = %group, "dropped the group's log, meta, data and snapshots");
        Ok(())
    }

    /// Queues `cb` to be completed after the next WAL fsync.
    pub(crate) fn flush_later(&self, cb: LogFlushed<TypeConfig>) {
        let tx = match self.inner.flush_tx.lock() {
            Ok(tx) => tx,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(mpsc::SendError(cb)) = tx.send(cb) {
            // The flusher is gone (the store is shutting down): report the append failed so
            // openraft never counts it as durable.
            cb.log_io_completed(Err(std::io::Error::other("WAL flusher stopped")));
        }
    }

    /// Test hook: makes the next write that reaches [`Store::stall_point`] block (until released
    /// or 3 s passed), as a RocksDB
    /// write stall would. Returns a receiver told when the write blocked, and a sender that lets
    /// it go on.
    #[cfg(test)]
    pub(crate) fn arm_write_stall(&self) -> (mpsc::Receiver<()>, mpsc::SyncSender<()>) {
        let (entered_tx, entered_rx) = mpsc::sync_channel(1);
        let (release_tx, release_rx) = mpsc::sync_channel(1);
        *self.inner.stall.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((entered_tx, release_rx));
        (entered_rx, release_tx)
    }

    /// Where a blocking write, a log read, or a served read between its first check and its read,
    /// may stall
    /// (test hook; nothing in other builds).
    pub(crate) fn stall_point(&self) {
        #[cfg(test)]
        {
            let armed = self
                .inner
                .stall
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some((entered, release)) = armed {
                let _ = entered.send(());
                let _ = release.recv_timeout(std::time::Duration::from_secs(3));
            }
        }
    }

    pub(crate) fn db(&self) -> &DB {
        &self.inner.db
    }

    pub(crate) fn cf(&self, name: &str) -> &ColumnFamily {
        self.inner
            .db
            .cf_handle(name)
            .expect("column families are created at open")
    }
}

/// Sorted, merged, checked inclusive slot ranges.
fn merge_ranges(ranges: &[(u16, u16)]) -> Result<Vec<(u16, u16)>, StoreError> {
    let mut sorted = ranges.to_vec();
    for &(from, to) in &sorted {
        if from > to || to >= kvorum_router::SLOT_COUNT {
            return Err(StoreError::BadSlotRange { from, to });
        }
    }
    sorted.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::with_capacity(sorted.len());
    for (from, to) in sorted {
        match merged.last_mut() {
            Some(last) if from <= last.1.saturating_add(1) => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    Ok(merged)
}

/// Fsyncs the WAL once for every batch of appends that queued up while the previous fsync ran
/// (group commit), then reports them durable.
fn flusher(store: std::sync::Weak<Inner>, rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = match store.upgrade() {
            // Appended entries become durable here; only now may openraft count them.
            Some(inner) => match inner.faults.fsync(&inner.snapshot_dir, Fsync::Wal) {
                Some(r) => r,
                None => inner.db.flush_wal(true).map_err(std::io::Error::other),
            },
            None => Err(std::io::Error::other("store closed")),
        };
        for cb in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            cb.log_io_completed(r);
        }
    }
}
