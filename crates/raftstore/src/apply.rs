//! Applying a batch of log entries to a group's state machine: commands to RocksDB write
//! batches, deterministically, with the group's applied state in the same batch.

use std::collections::{HashMap, HashSet};

use openraft::{EntryPayload, ErrorVerb, StorageError, StoredMembership};
use rocksdb::WriteBatch;

use crate::applied::{encode, sm_err, GroupStats, SmState};
use crate::command::RecordCodec;
use crate::command::{self, Effect};
use crate::layout::{self, tag, CF_DATA, CF_META};
use crate::slots::{self};
use crate::{AdminResult, CommandResult, Entry, GroupId, NodeId, Store, Versioned, WriteResult};
use crate::{Command, FenceToken, SlotState, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use kvorum_router::slot_of;

type Result<T> = std::result::Result<T, StorageError<NodeId>>;

/// Applies `entries` in one WriteBatch (one more per [`Command::ComputeHash`], which writes what
/// came before it first; each a consistent state), from the `state` the previous batch left, and returns
/// the results and the new state. Runs on a blocking thread; openraft applies one batch at a
/// time, so batches keep their order.
///
/// Deterministic: every replica computes the same results and state from the same entries, also
/// when a batch is re-applied after a crash (each WriteBatch holds its entries' data, slot table,
/// version base and last-applied together: a crash never half-applies one).
pub(crate) fn apply_entries(
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
                AdminResult::Hashed { index, hash }.into()
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
pub(crate) fn write_batch(
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
        layout::meta_key(group, tag::APPLIED),
        encode(&state.applied)?,
    );
    batch.put_cf(
        meta_cf,
        layout::meta_key(group, tag::MEMBERSHIP),
        encode(&state.membership)?,
    );
    batch.put_cf(
        meta_cf,
        layout::meta_key(group, tag::STATS),
        encode(&state.stats)?,
    );
    if let (true, Some(table)) = (slots_changed, &state.slots) {
        batch.put_cf(
            meta_cf,
            layout::meta_key(group, tag::SLOTS),
            slots::encode_table(table),
        );
        batch.put_cf(
            meta_cf,
            layout::meta_key(group, tag::SLOT_EPOCHS),
            slots::encode_epochs(&state.since),
        );
    }
    if state.base != old_base {
        batch.put_cf(
            meta_cf,
            layout::meta_key(group, tag::VERSION_BASE),
            encode(&state.base)?,
        );
    }
    if state.fence != old_fence {
        batch.put_cf(
            meta_cf,
            layout::meta_key(group, tag::FENCE),
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
pub(crate) fn apply_command(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    cmd: Command,
    slots_changed: &mut bool,
) -> Result<CommandResult> {
    Ok(match cmd {
        Command::Ingest { records } => {
            let (written, skipped) = ingest_records(pending, state, index, records)?;
            AdminResult::Ingested { written, skipped }.into()
        }
        Command::RaiseVersionBase { above } => {
            raise_base(state, index, above);
            CommandResult::None
        }
        Command::CatchUp {
            records,
            removed,
            above,
        } => {
            let (written, skipped) = ingest_records(pending, state, index, records)?;
            let (deleted, not_deleted) = remove_incoming(pending, state, removed)?;
            raise_base(state, index, above);
            AdminResult::Ingested {
                written: written + deleted,
                skipped: skipped + not_deleted,
            }
            .into()
        }
        Command::Routed { slot, epoch, write } => {
            routed_write(pending, state, index, slot, epoch, &write)?.into()
        }
        Command::Fence { token } => match raise_fence(state, token) {
            Some(refused) => refused.into(),
            None => CommandResult::None,
        },
        Command::Fenced { token, step } => {
            if let Some(refused) = raise_fence(state, token) {
                refused.into()
            } else if !step.is_slot_command() {
                // Not a driver's step (a key write, say): refused as a routed non-write is.
                WriteResult::Misrouted {
                    slot: 0,
                    key_slot: None,
                }
                .into()
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
            } else if let Some(key) = cmd.written_key() {
                let slot = slot_of(key.as_bytes()).0;
                match slots::check_write(state.slots.as_deref(), slot) {
                    Some(refused) => refused.into(),
                    None => write_key(pending, state, index, &cmd)?.into(),
                }
            } else {
                // `ComputeHash`: answered by `apply_entries`, which never passes it here.
                CommandResult::None
            }
        }
    })
}

/// Raises the group's fence to `token`, or refuses it (the fence is higher: a deposed driver's
/// step) with the result to answer, changing nothing.
pub(crate) fn raise_fence(state: &mut SmState, token: FenceToken) -> Option<AdminResult> {
    if state.fence.refuses(&token) {
        return Some(AdminResult::Fenced {
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
pub(crate) fn routed_write(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    slot: u16,
    epoch: u64,
    write: &Command,
) -> Result<WriteResult> {
    let key_slot = match write {
        Command::Routed { .. } => None,
        w => w.written_key().map(|k| slot_of(k.as_bytes()).0),
    };
    if key_slot != Some(slot) {
        return Ok(WriteResult::Misrouted { slot, key_slot });
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
pub(crate) fn write_key(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    cmd: &Command,
) -> Result<WriteResult> {
    if let Some(message) = pending.store.inner.faults.apply(cmd.key()) {
        return Err(sm_err(ErrorVerb::Write, message));
    }
    let key = cmd.key().as_bytes();
    let dk = layout::data_key(pending.group, key);
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
/// raises the version base so that later writes get versions above every ingested one. Answers
/// how many records were written and how many skipped.
pub(crate) fn ingest_records(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    index: u64,
    records: Vec<(String, Versioned)>,
) -> Result<(u64, u64)> {
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
        let dk = layout::data_key(pending.group, key.as_bytes());
        let current = pending.current(&dk)?;
        pending.set(dk, current.as_ref(), record, &mut state.stats);
        written += 1;
    }
    Ok((written, skipped))
}

/// Raises the version base at log `index` so that a later write (at index j > `index`, version
/// j + base) gets a version above `above`.
pub(crate) fn raise_base(state: &mut SmState, index: u64, above: u64) {
    state.base = state.base.max(above.saturating_sub(index));
}

/// The removals of a `CatchUp`: deletes each key whose slot is Incoming (skips the others).
/// Answers how many keys were deleted and how many skipped.
pub(crate) fn remove_incoming(
    pending: &mut Pending<'_>,
    state: &mut SmState,
    keys: Vec<String>,
) -> Result<(u64, u64)> {
    let (mut written, mut skipped) = (0u64, 0u64);
    for key in keys {
        let slot = slot_of(key.as_bytes()).0;
        if slots::state_of(state.slots.as_deref(), slot) != SlotState::Incoming {
            skipped += 1;
            continue;
        }
        let dk = layout::data_key(pending.group, key.as_bytes());
        let current = pending.current(&dk)?;
        pending.remove(dk, current.as_ref(), &mut state.stats);
        written += 1;
    }
    Ok((written, skipped))
}

/// The writes of one apply batch not yet in RocksDB, and how to read through them: later
/// entries of a batch must see earlier ones.
pub(crate) struct Pending<'a> {
    store: &'a Store,
    group: GroupId,
    batch: WriteBatch,
    /// Keys written or deleted by this batch (`None`: deleted).
    overlay: HashMap<Vec<u8>, Option<Versioned>>,
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
    fn current(&self, dk: &[u8]) -> Result<Option<Versioned>> {
        if let Some(r) = self.overlay.get(dk) {
            return Ok(r.clone());
        }
        if layout::data_key_slot(dk).is_some_and(|s| self.cleared.contains(&s)) {
            return Ok(None);
        }
        let raw = self
            .store
            .db()
            .get_pinned_cf(self.store.cf(CF_DATA), dk)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?;
        match raw {
            None => Ok(None),
            Some(b) => Ok(Some(Versioned::decode(&b).ok_or_else(|| {
                sm_err(ErrorVerb::Read, format!("corrupt record {dk:?}"))
            })?)),
        }
    }

    fn set(&mut self, dk: Vec<u8>, old: Option<&Versioned>, r: Versioned, stats: &mut GroupStats) {
        if let Some(old) = old {
            stats.remove(dk.len(), old.encoded_len());
        }
        stats.add(dk.len(), r.encoded_len());
        self.batch.put_cf(self.store.cf(CF_DATA), &dk, r.encode());
        self.overlay.insert(dk, Some(r));
    }

    fn remove(&mut self, dk: Vec<u8>, old: Option<&Versioned>, stats: &mut GroupStats) {
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
            let start = layout::slot_start(self.group, from).to_vec();
            let end = layout::slot_start(self.group, to + 1).to_vec();
            let mut ro = rocksdb::ReadOptions::default();
            ro.set_iterate_lower_bound(start.clone());
            ro.set_iterate_upper_bound(end.clone());
            let mut it = db.raw_iterator_cf_opt(data_cf, ro);
            it.seek_to_first();
            while let (Some(k), Some(v)) = (it.key(), it.value()) {
                // Keys this batch already wrote or cleared are counted through the overlay.
                let cleared = layout::data_key_slot(k).is_some_and(|s| self.cleared.contains(&s));
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
            if layout::data_key_slot(k).is_some_and(|s| set.contains(&s)) {
                if let Some(old) = r.take() {
                    stats.remove(k.len(), old.encoded_len());
                }
            }
        }
        self.cleared.extend(set);
        Ok(())
    }
}
