//! A group's applied state besides its data, as the meta column family records it: last
//! applied, membership, key counts, slot table, version base and fence; read when a state
//! machine opens or a snapshot is built, and the errors and blocking helper the state machine
//! files share.

use openraft::{
    AnyError, BasicNode, ErrorSubject, ErrorVerb, LogId, StorageError, StorageIOError,
    StoredMembership,
};
use serde::de::DeserializeOwned;

use crate::layout::{self, tag, CF_META};
use crate::slots::{self, SlotEpochs, SlotTable};
use crate::FenceToken;
use crate::StoreError;
use crate::{GroupId, NodeId, Store};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

pub(crate) fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

pub(crate) fn snap_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        AnyError::error(e.to_string()),
    )
    .into()
}

/// Runs `f` on tokio's blocking threads, off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
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
    pub(crate) fn add(&mut self, key_len: usize, record_len: usize) {
        self.keys += 1;
        self.bytes += (key_len + record_len) as u64;
    }

    pub(crate) fn remove(&mut self, key_len: usize, record_len: usize) {
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

/// What a group's state machine keeps besides its data; the state one apply batch leaves for
/// the next.
#[derive(Debug, Clone)]
pub(crate) struct SmState {
    pub(crate) applied: Option<LogId<NodeId>>,
    pub(crate) membership: Membership,
    pub(crate) stats: GroupStats,
    /// The slot table; `None`: uninitialized, every slot owned.
    pub(crate) slots: Option<SlotTable>,
    /// The epochs from which the group owns its slots (empty: none recorded).
    pub(crate) since: SlotEpochs,
    /// Added to a write's log index to make its version (see [`Command::Ingest`]).
    pub(crate) base: u64,
    /// The highest driver token applied (see [`Command::Fence`]); zero: none.
    pub(crate) fence: FenceToken,
}

/// The group's slot table as recorded (`None`: uninitialized).
pub(crate) fn read_slots(
    get: impl FnOnce(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    group: GroupId,
) -> Result<Option<SlotTable>> {
    let raw = get(&layout::meta_key(group, tag::SLOTS)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
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
pub(crate) fn read_epochs(
    get: impl FnOnce(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    group: GroupId,
) -> Result<SlotEpochs> {
    let raw =
        get(&layout::meta_key(group, tag::SLOT_EPOCHS)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
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

pub(crate) fn read_meta<T: DeserializeOwned>(
    get: impl FnOnce(&[u8]) -> std::result::Result<Option<Vec<u8>>, rocksdb::Error>,
    group: GroupId,
    t: u8,
) -> Result<Option<T>> {
    let raw = get(&layout::meta_key(group, t)).map_err(|e| sm_err(ErrorVerb::Read, e))?;
    raw.map(|b| bincode::deserialize(&b).map_err(|e| sm_err(ErrorVerb::Read, e)))
        .transpose()
}

pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    bincode::serialize(v).map_err(|e| sm_err(ErrorVerb::Write, e))
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

impl Store {
    /// Number of keys of `group` and their bytes (data keys plus encoded records), as applied
    /// locally. Kept by the state machine in the same batches as the data: no scan.
    pub fn group_stats(&self, group: GroupId) -> std::result::Result<(u64, u64), StoreError> {
        let s = load_stats(self, group)
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        Ok((s.keys, s.bytes))
    }

    /// A version at least as high as every version `group` has given a write so far: its last
    /// applied index plus its version base (ingested records are below it too). Read from this
    /// replica's applied state.
    pub fn version_high_water(&self, group: GroupId) -> std::result::Result<u64, StoreError> {
        version_high_water(self, group)
            .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))
    }
}
