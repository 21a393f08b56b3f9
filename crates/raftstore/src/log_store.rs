//! openraft log storage of one group: the Raft log, vote, committed and purged log ids.
//!
//! Steps of an append: encode every entry into one WriteBatch, write it (entries are readable at
//! once), then hand the flush callback to the store's WAL flusher, which fsyncs once for all
//! appends waiting and only then reports them durable (group commit).
//!
//! Every write (and its fsync) runs on tokio's blocking threads: a RocksDB write stall must not
//! hold up the async workers that send heartbeats. openraft awaits each call before the next, so
//! writes keep their order.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    AnyError, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError,
    StorageIOError, Vote,
};
use rocksdb::{WriteBatch, WriteOptions};
use serde::{de::DeserializeOwned, Serialize};

use crate::layout::{self, tag, CF_LOG, CF_META};
use crate::{Entry, GroupId, NodeId, Store, TypeConfig};

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// The log storage of one group in the node's shared RocksDB. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    store: Store,
    group: GroupId,
}

fn io(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

/// Runs `f` on tokio's blocking threads, off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))?
}

impl LogStore {
    pub(crate) fn new(store: Store, group: GroupId) -> LogStore {
        LogStore { store, group }
    }

    fn meta<T: DeserializeOwned>(&self, t: u8, subject: ErrorSubject<NodeId>) -> Result<Option<T>> {
        let db = self.store.db();
        let raw = db
            .get_cf(self.store.cf(CF_META), layout::meta_key(self.group, t))
            .map_err(|e| io(subject.clone(), ErrorVerb::Read, e))?;
        raw.map(|b| bincode::deserialize(&b).map_err(|e| io(subject, ErrorVerb::Read, e)))
            .transpose()
    }

    fn put_meta<T: Serialize>(
        &self,
        t: u8,
        v: &T,
        sync: bool,
        subject: ErrorSubject<NodeId>,
    ) -> Result<()> {
        let bytes = bincode::serialize(v).map_err(|e| io(subject.clone(), ErrorVerb::Write, e))?;
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        self.store
            .db()
            .put_cf_opt(
                self.store.cf(CF_META),
                layout::meta_key(self.group, t),
                bytes,
                &wo,
            )
            .map_err(|e| io(subject, ErrorVerb::Write, e))
    }

    fn last_entry(&self) -> Result<Option<Entry>> {
        let mut ro = rocksdb::ReadOptions::default();
        ro.set_iterate_lower_bound(layout::group_start(self.group).to_vec());
        ro.set_iterate_upper_bound(layout::group_end(self.group));
        let mut it = self
            .store
            .db()
            .raw_iterator_cf_opt(self.store.cf(CF_LOG), ro);
        it.seek_to_last();
        it.status()
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        match it.value() {
            None => Ok(None),
            Some(v) => bincode::deserialize(v)
                .map(Some)
                .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    /// Runs on a blocking thread, like every write: an iterator that misses the block cache
    /// waits for the disk, and the leader's replication streams (one per follower) call this;
    /// on the async threads, a slow disk would stall the node's whole runtime (heartbeats,
    /// requests) until its followers elect another leader.
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = range.end_bound().cloned();
        let this = self.clone();
        blocking(move || {
            this.store.stall_point();
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_upper_bound(layout::group_end(this.group));
            let mut it = this
                .store
                .db()
                .raw_iterator_cf_opt(this.store.cf(CF_LOG), ro);
            it.seek(layout::log_key(this.group, start));
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                let Some(index) = layout::log_index(k) else {
                    break;
                };
                if !(Bound::Included(start), end).contains(&index) {
                    break;
                }
                let entry: Entry = bincode::deserialize(v)
                    .map_err(|e| io(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
                out.push(entry);
                it.next();
            }
            it.status()
                .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            Ok(out)
        })
        .await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.meta(tag::PURGED, ErrorSubject::Store)?;
        let last_log_id = match self.last_entry()? {
            Some(e) => Some(e.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<()> {
        // The vote must be fsynced before we reply: a node must never vote twice in a term.
        let (this, vote) = (self.clone(), *vote);
        blocking(move || {
            this.store.stall_point();
            this.put_meta(tag::VOTE, &vote, true, ErrorSubject::Vote)
        })
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>> {
        // Read back uncommitted: a node that restarts never resumes a leadership of its old term
        // without an election. openraft restores a node whose committed vote was for itself as
        // leader at once, answering reads by the commit index it finds on disk; that index is
        // not synced (below), so after a power loss it can be older than the last write the
        // node acknowledged, and reads would return the value before it. Elected again, in a
        // new term, a leader commits an entry of its own before it serves reads. The vote stays
        // the same ballot (same term and candidate): the node still refuses any other candidate
        // of that term, and a leader's committed vote of that term still supersedes it.
        Ok(self
            .meta::<Vote<NodeId>>(tag::VOTE, ErrorSubject::Vote)?
            .map(|mut v| {
                v.committed = false;
                v
            }))
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<()> {
        // Not synced: it only lets a restart apply sooner; losing it is safe because a restarted
        // node never serves reads by it as leader (see `read_vote`).
        let this = self.clone();
        blocking(move || this.put_meta(tag::COMMITTED, &committed, false, ErrorSubject::Store))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>> {
        Ok(self
            .meta::<Option<LogId<NodeId>>>(tag::COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let this = self.clone();
        blocking(move || {
            let cf = this.store.cf(CF_LOG);
            let mut batch = WriteBatch::default();
            for entry in entries {
                let bytes = bincode::serialize(&entry)
                    .map_err(|e| io(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
                batch.put_cf(cf, layout::log_key(this.group, entry.log_id.index), bytes);
            }
            // Written but not yet durable; the flusher fsyncs and then calls back.
            this.store
                .db()
                .write(batch)
                .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            this.store.flush_later(callback);
            Ok(())
        })
        .await
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        let this = self.clone();
        blocking(move || {
            let mut wo = WriteOptions::default();
            // Synced so that removed (conflicting) entries cannot come back after a crash.
            wo.set_sync(true);
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(
                this.store.cf(CF_LOG),
                layout::log_key(this.group, log_id.index).to_vec(),
                layout::group_end(this.group),
            );
            this.store
                .db()
                .write_opt(batch, &wo)
                .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<()> {
        // Record the purge point and delete the entries in one batch. No sync: entries up to a
        // purge point are covered by a snapshot, so keeping them after a crash is harmless.
        let bytes = bincode::serialize(&log_id)
            .map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))?;
        let this = self.clone();
        blocking(move || {
            let mut batch = WriteBatch::default();
            batch.put_cf(
                this.store.cf(CF_META),
                layout::meta_key(this.group, tag::PURGED),
                bytes,
            );
            batch.delete_range_cf(
                this.store.cf(CF_LOG),
                layout::log_key(this.group, 0),
                layout::log_key(this.group, log_id.index.saturating_add(1)),
            );
            this.store
                .db()
                .write(batch)
                .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))
        })
        .await
    }
}

impl Store {
    /// The log storage of `group` for openraft.
    pub fn log_store(&self, group: GroupId) -> LogStore {
        LogStore::new(self.clone(), group)
    }
}
