//! The copy of a slot move: the source's data of a batch's slots scanned in chunks and ingested
//! at the destination, then caught up after the freeze.

use std::collections::{HashSet, VecDeque};
use std::time::Instant;

use kvorum_raftstore::{AdminResult, Command, CommandResult, FenceToken, GroupId};
use kvorum_router::{slot_of, ClusterMap, MoveBatch};

use crate::faults::MovePoint;

use super::state::Meta;

use super::admin::{admin, propose, AdminError};
use crate::group::{AdminOp, AdminReply};

/// Bytes of slot data per copy chunk (one Ingest entry; at least one record).
const COPY_CHUNK_BYTES: usize = 256 << 10;

/// Initializes `group`'s slot table from `map` unless this driver did so already for task `id`
/// (the command is a no-op on an initialized table; this only saves a proposal per batch).
async fn init_slots_once(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    group: GroupId,
) -> anyhow::Result<()> {
    static DONE: std::sync::Mutex<Vec<(u64, GroupId)>> = std::sync::Mutex::new(Vec::new());
    let done = |d: &Vec<(u64, GroupId)>| d.contains(&(tok.task, group));
    if done(&DONE.lock().unwrap_or_else(|p| p.into_inner())) {
        return Ok(());
    }
    let cmd = Command::InitSlots {
        owned: map.slot_ranges(group),
    };
    propose(meta, group, tok, cmd).await?;
    DONE.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((tok.task, group));
    Ok(())
}

/// What [`copy_batch`] copied, and when the source was frozen.
pub(super) struct Copied {
    pub(super) keys: u64,
    pub(super) bytes: u64,
    pub(super) frozen_at: Instant,
    /// Milliseconds from the Freeze's start to the final data read (Freeze applied) and to the
    /// catch-up's end with the release.
    pub(super) copied_ms: u64,
    pub(super) released_ms: u64,
}

/// One scan chunk at the source (see [`AdminOp::Scan`]).
pub(super) struct Chunk {
    records: Vec<(String, kvorum_raftstore::Versioned)>,
    unchanged: Vec<String>,
    next: Option<Vec<u8>>,
    bytes: u64,
    high_water: u64,
}

/// One scan chunk of the batch's slots at `group` (the source, or the destination for its
/// copied keys).
pub(super) async fn scan(
    meta: &Meta,
    tok: FenceToken,
    group: GroupId,
    b: &MoveBatch,
    after: Option<Vec<u8>>,
    since: u64,
    freeze: bool,
) -> anyhow::Result<Chunk> {
    let op = AdminOp::Scan {
        slots: b.slots.clone(),
        after,
        max_bytes: COPY_CHUNK_BYTES,
        since,
        freeze,
    };
    match admin(meta, group, tok, op, None).await? {
        AdminReply::Chunk {
            records,
            unchanged,
            next,
            bytes,
            high_water,
        } => Ok(Chunk {
            records,
            unchanged,
            next,
            bytes,
            high_water,
        }),
        AdminReply::Result(CommandResult::Admin(AdminResult::SlotState { slot, state: s })) => {
            Err(AdminError::Refused {
                group,
                slot,
                state: s,
            }
            .into())
        }
        other => anyhow::bail!("unexpected reply to a scan: {other:?}"),
    }
}

/// Proposes a copy command (`Ingest` or `CatchUp`) at the destination; every record and key
/// must land (their slots are Incoming there).
pub(super) async fn ingest(
    meta: &Meta,
    tok: FenceToken,
    to: GroupId,
    cmd: Command,
) -> anyhow::Result<()> {
    match propose(meta, to, tok, cmd).await? {
        CommandResult::Admin(AdminResult::Ingested { skipped: 0, .. }) => Ok(()),
        CommandResult::Admin(AdminResult::Ingested { skipped, .. }) => {
            anyhow::bail!("group {to} skipped {skipped} records of the copy")
        }
        other => anyhow::bail!("unexpected ingest result {other:?}"),
    }
}

/// What [`copy_all`] copied.
pub(super) struct Copy {
    keys: u64,
    bytes: u64,
    /// The source's version high-water mark read before the first chunk: every write the copy
    /// does not show has a version above it.
    mark: u64,
}

/// Copies all data of the batch's slots from the source to the destination (cleared first, by
/// `BeginIncoming`), in chunks; the source may still be serving them.
pub(super) async fn copy_all(meta: &Meta, tok: FenceToken, b: &MoveBatch) -> anyhow::Result<Copy> {
    propose(
        meta,
        b.to,
        tok,
        Command::BeginIncoming {
            slots: b.slots.clone(),
        },
    )
    .await?;
    let (mut keys, mut bytes) = (0u64, 0u64);
    let mut mark = None;
    let mut after = None;
    loop {
        let c = scan(meta, tok, b.from, b, after.take(), 0, false).await?;
        mark.get_or_insert(c.high_water);
        if !c.records.is_empty() {
            keys += c.records.len() as u64;
            bytes += c.bytes;
            meta.node.faults.hold_copy_chunk(tok.task).await;
            ingest(meta, tok, b.to, Command::Ingest { records: c.records }).await?;
        }
        match c.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    Ok(Copy {
        keys,
        bytes,
        mark: mark.unwrap_or(0),
    })
}

/// Where a key sorts in a group's data: by slot, then by its bytes (the scans' order).
pub(super) fn storage_order(key: &str) -> (u16, &[u8]) {
    (slot_of(key.as_bytes()).0, key.as_bytes())
}

/// The destination's keys of a batch (its copy), read in chunks of keys only, in storage order:
/// memory holds one chunk, whatever the batch's size.
pub(super) struct DestKeys<'a> {
    meta: &'a Meta,
    tok: FenceToken,
    batch: &'a MoveBatch,
    buf: VecDeque<String>,
    /// Where the next chunk starts; `None` with `done` at the end.
    after: Option<Vec<u8>>,
    done: bool,
}

impl<'a> DestKeys<'a> {
    fn new(meta: &'a Meta, tok: FenceToken, batch: &'a MoveBatch) -> DestKeys<'a> {
        DestKeys {
            meta,
            tok,
            batch,
            buf: VecDeque::new(),
            after: None,
            done: false,
        }
    }

    /// Reads the next chunk if none is buffered and any remains.
    async fn fill(&mut self) -> anyhow::Result<()> {
        while self.buf.is_empty() && !self.done {
            // Every record at or below u64::MAX: keys only.
            let c = scan(
                self.meta,
                self.tok,
                self.batch.to,
                self.batch,
                self.after.take(),
                u64::MAX,
                false,
            )
            .await?;
            self.buf.extend(c.unchanged);
            self.buf.extend(c.records.into_iter().map(|(k, _)| k));
            match c.next {
                Some(n) => self.after = Some(n),
                None => self.done = true,
            }
        }
        Ok(())
    }

    /// The destination's keys up to `upto` (inclusive, storage order; `None`: all that remain)
    /// that are not in `present`, consumed, at most about `max_bytes` of them; `true` if more
    /// may remain up to `upto`.
    async fn missing_from(
        &mut self,
        present: &HashSet<String>,
        upto: Option<&str>,
        max_bytes: usize,
    ) -> anyhow::Result<(Vec<String>, bool)> {
        let (mut gone, mut n) = (Vec::new(), 0usize);
        loop {
            if n >= max_bytes {
                return Ok((gone, true));
            }
            self.fill().await?;
            let Some(k) = self.buf.front() else {
                return Ok((gone, false));
            };
            if upto.is_some_and(|u| storage_order(k) > storage_order(u)) {
                return Ok((gone, false));
            }
            if let Some(k) = self.buf.pop_front() {
                if !present.contains(&k) {
                    n += k.len();
                    gone.push(k);
                }
            }
        }
    }
}

/// Steps (b)-(g) of a batch, copy → fence → catch-up: both tables initialized, the destination
/// cleared, the slots' data copied in chunks while the source still serves them, the source
/// frozen (and its final data read in the same call), only what changed since the copy sent
/// (records written since, keys deleted since, the source's final high-water mark for the
/// destination's version base), then the source released. The frozen window holds one small
/// CatchUp entry instead of the whole batch's data.
///
/// Memory: one chunk of the source's data and one of the destination's keys (the keys deleted
/// since the copy are found by merging the two in storage order), whatever the batch's size.
pub(super) async fn copy_batch(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    b: &MoveBatch,
) -> anyhow::Result<Copied> {
    let (from, to) = (b.from, b.to);
    init_slots_once(meta, map, tok, from).await?;
    init_slots_once(meta, map, tok, to).await?;
    let copy = copy_all(meta, tok, b).await?;
    let (mut keys, mut bytes, mark) = (copy.keys, copy.bytes, copy.mark);
    // The destination's copied keys, read ahead: they change only by this driver's entries, and
    // the first chunk is then at hand when the frozen window starts.
    let mut copied = DestKeys::new(meta, tok, b);
    copied.fill().await?;
    // The fence and the catch-up: what changed since the mark, the source frozen.
    let frozen_at = Instant::now();
    let mut c = scan(meta, tok, from, b, None, mark, true).await?;
    let copied_ms = frozen_at.elapsed().as_millis() as u64;
    meta.node
        .faults
        .hold_move_at(MovePoint::AfterFreeze, tok.task)
        .await;
    let above = c.high_water;
    loop {
        // Keys the copy brought that the source no longer has, up to this chunk's last key
        // (to the end after the last chunk): a merge of two streams in storage order.
        let last_key = c
            .unchanged
            .iter()
            .chain(c.records.iter().map(|(k, _)| k))
            .max_by(|x, y| storage_order(x).cmp(&storage_order(y)))
            .cloned();
        let upto = if c.next.is_none() { None } else { last_key };
        let mut present: HashSet<String> = std::mem::take(&mut c.unchanged).into_iter().collect();
        present.extend(c.records.iter().map(|(k, _)| k.clone()));
        let mut records = std::mem::take(&mut c.records);
        bytes += records
            .iter()
            .map(|(k, r)| (k.len() + r.value.len()) as u64)
            .sum::<u64>();
        loop {
            let (removed, more) = copied
                .missing_from(&present, upto.as_deref(), COPY_CHUNK_BYTES)
                .await?;
            let last = c.next.is_none() && !more;
            if !records.is_empty() || !removed.is_empty() || last {
                keys += records.len() as u64;
                let cmd = Command::CatchUp {
                    records: std::mem::take(&mut records),
                    removed,
                    above,
                };
                ingest(meta, tok, to, cmd).await?;
            }
            if !more {
                break;
            }
        }
        match c.next {
            Some(n) => c = scan(meta, tok, from, b, Some(n), mark, false).await?,
            None => break,
        }
    }
    // Release only after the whole catch-up: before it the batch can still roll back (the
    // destination losing its quorum must not strand the slots), after it only forward.
    propose(
        meta,
        from,
        tok,
        Command::Release {
            slots: b.slots.clone(),
        },
    )
    .await?;
    let released_ms = frozen_at.elapsed().as_millis() as u64;
    tracing::info!(
        task = tok.task,
        from = %from,
        to = %to,
        slots = ?b.slots,
        keys,
        bytes,
        frozen_ms = released_ms,
        "view change: batch copied, caught up and released"
    );
    Ok(Copied {
        keys,
        bytes,
        frozen_at,
        copied_ms,
        released_ms,
    })
}
