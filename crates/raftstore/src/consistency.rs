//! The cross-replica consistency check: a hash of a group's applied state at one log index,
//! computed by every replica when it applies [`crate::Command::ComputeHash`] (TiKV's
//! ComputeHash admin command, etcd's periodic corruption check), so that replicas' hashes at the
//! same index can be compared. Replicas that applied the same log hold the same state, so any
//! difference is damage or a bug: data changed behind Raft's back.
//!
//! The hash covers what a snapshot carries: every data record of the group (key and encoded
//! record: version and value), the slot table, the slot epochs and the version base (the latter
//! three normalized as a snapshot writes them, so a replica that installed a snapshot hashes like
//! one that applied the log). It is xxh3-64 over length-prefixed fields. It is computed inside
//! apply, on the state right after the entry (the apply batch is written up to it first), so it
//! holds up this group's apply for one scan of the group.

use std::collections::HashMap;

use xxhash_rust::xxh3::Xxh3;

use crate::layout::{self, CF_DATA};
use crate::slots;
use crate::{GroupId, SlotState, Store, StoreError};

/// A replica's hash of its group's applied state at log index `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateHash {
    /// The log index of the [`crate::Command::ComputeHash`] entry the hash was computed at.
    pub index: u64,
    /// xxh3-64 of the group's applied state at `index` (see the module docs).
    pub hash: u64,
}

/// The last [`StateHash`] each group computed on this store, in memory (lost at restart: the
/// next check computes a new one).
#[derive(Default)]
pub(crate) struct Hashes(std::sync::Mutex<HashMap<GroupId, StateHash>>);

impl Hashes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GroupId, StateHash>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Feeds one length-prefixed field into `h`.
fn field(h: &mut Xxh3, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The hash of `group`'s applied state as RocksDB holds it now, with the slot table `table`,
/// slot epochs `since` and version base `base` of the same state (see the module docs). A
/// damaged block answers [`StoreError::Corruption`].
pub(crate) fn hash_group(
    store: &Store,
    group: GroupId,
    table: Option<&[SlotState]>,
    since: &[u64],
    base: u64,
) -> Result<u64, StoreError> {
    let mut h = Xxh3::new();
    let mut ro = rocksdb::ReadOptions::default();
    ro.set_iterate_lower_bound(layout::group_start(group).to_vec());
    ro.set_iterate_upper_bound(layout::group_end(group));
    let mut it = store.db().raw_iterator_cf_opt(store.cf(CF_DATA), ro);
    it.seek_to_first();
    while let (Some(k), Some(v)) = (it.key(), it.value()) {
        field(&mut h, &k[8..]);
        field(&mut h, v);
        it.next();
    }
    it.status()?;
    // The special records, as a snapshot writes them (after every data key).
    if let Some(t) = table {
        field(&mut h, &layout::SNAP_SLOTS);
        field(&mut h, &slots::encode_table(t));
    }
    if base != 0 {
        field(&mut h, &layout::SNAP_VERSION_BASE);
        field(&mut h, &base.to_be_bytes());
    }
    if since.iter().any(|e| *e != 0) {
        field(&mut h, &layout::SNAP_SLOT_EPOCHS);
        field(&mut h, &slots::encode_epochs(since));
    }
    Ok(h.digest())
}

impl Store {
    /// The last hash of `group`'s applied state this replica computed (see
    /// [`crate::Command::ComputeHash`]), if any since the store opened.
    pub fn state_hash(&self, group: GroupId) -> Option<StateHash> {
        self.inner.hashes.lock().get(&group).copied()
    }

    /// Records `hash` as `group`'s newest state hash.
    pub(crate) fn record_hash(&self, group: GroupId, hash: StateHash) {
        self.inner.hashes.lock().insert(group, hash);
    }

    /// Forgets `group`'s state hash (the group was dropped here).
    pub(crate) fn forget_hash(&self, group: GroupId) {
        self.inner.hashes.lock().remove(&group);
    }
}

impl Store {
    /// Test hook (feature `test-faults`, never in shipped builds): writes `key` = `value` with
    /// version 1 into `group`'s data directly, behind Raft's back, as a damaged disk or a bug
    /// would; the consistency check must report the replica.
    #[cfg(any(test, feature = "test-faults"))]
    pub fn write_behind_raft(
        &self,
        group: GroupId,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        use crate::command::RecordCodec;
        let record = crate::Versioned {
            value: value.to_string(),
            version: 1,
        };
        let mut wo = rocksdb::WriteOptions::default();
        wo.set_sync(true);
        self.db().put_cf_opt(
            self.cf(CF_DATA),
            layout::data_key(group, key.as_bytes()),
            record.encode(),
            &wo,
        )?;
        Ok(())
    }
}
