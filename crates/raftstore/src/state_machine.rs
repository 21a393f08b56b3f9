//! openraft state machine of one group: applies commands to the `data` column family (`apply`),
//! builds and installs snapshots (`lifecycle`); keeps the group's applied state (`applied`) in
//! memory.
//!
//! Blocking: RocksDB writes (a write stall, an fsync) and file I/O run on tokio's blocking
//! threads, never on the async workers that run heartbeats.

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{BasicNode, ErrorVerb, LogId, SnapshotMeta, StorageError, StoredMembership};

use crate::applied::{blocking, load_stats, read_epochs, read_meta, read_slots, snap_err, SmState};
use crate::apply::apply_entries;
use crate::layout::{tag, CF_META};
use crate::lifecycle::{finish_install, install, open_current, SnapshotBuilder};
use crate::{CommandResult, Entry, GroupId, NodeId, Store, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// The state machine of one group. Keeps last-applied, membership, stats, the slot table and the
/// version base in memory (a copy of what is in the meta CF); data in RocksDB.
pub struct StateMachineStore {
    store: Store,
    group: GroupId,
    state: SmState,
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

impl Store {
    /// The state machine of `group` for openraft. Finishes a snapshot install that a crash
    /// interrupted before returning.
    pub async fn state_machine(
        &self,
        group: GroupId,
    ) -> std::result::Result<StateMachineStore, openraft::StorageError<u64>> {
        StateMachineStore::open(self.clone(), group).await
    }
}
