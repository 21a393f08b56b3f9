//! Moving slots between groups: the `MoveSlots` step of a view change, in batches.
//!
//! Steps of a batch (see docs/architecture.md, "Moving slots"): (a) recorded in the task,
//! (b) both groups' slot tables initialized from the map (once), (c) BeginIncoming at the
//! destination, (d) copy, the source still serving: chunks read at the source's leader after a
//! read-index round, proposed as Ingest entries at the destination, (e) fence: Freeze at the
//! source and, in the same call, its final data read, (f) catch-up: one CatchUp entry at the
//! destination with what changed since the copy (records, removed keys, the version
//! high-water mark), (g) Release at the source, (h) Activate at the destination and, at the
//! same time, the flip: the map names the destination (the destination may serve the slots
//! first: only the new map routes to it), (i) DropSlots at the source, and the next batch
//! recorded in the same map change. A batch resumed before its flip asks the source's slot
//! table: released means copied (roll forward), otherwise redo or, when cancelled, roll back
//! (Unfreeze, then AbortIncoming). A flipped batch only rolls forward.

use kvorum_raftstore::{Command, FenceToken, GroupId, SlotState};
use kvorum_router::{ClusterMap, MoveBatch, ViewChangeTask};

use crate::faults::MovePoint;

use super::state::Meta;

use super::admin::{admin, propose, raise_fence, AdminError};
use super::copy::{copy_batch, Copied};
use super::driver::{repair_running, step_done, task_mut, Next};
use super::record::update_map;
use crate::group::{AdminOp, AdminReply};

/// Most slots moved in one batch: a request to one of them waits for at most one batch's
/// frozen window. The window holds the catch-up of what changed during the batch's copy, not
/// the batch's data, so larger batches cost little pause and save per-batch rounds.
pub const MOVE_BATCH_SLOTS: u16 = 64;
/// Slots per move batch: [`MOVE_BATCH_SLOTS`], or the test suite's batch-size fault's.
fn batch_slots(meta: &Meta) -> u16 {
    meta.node
        .faults
        .move_batch_slots()
        .unwrap_or(MOVE_BATCH_SLOTS)
}

/// The next batch of a move: up to `max_slots` slots (in production [`MOVE_BATCH_SLOTS`]) of
/// `ranges` that `from` still owns, in slot order, as ranges. Pure.
pub fn next_batch(
    map: &ClusterMap,
    from: GroupId,
    ranges: &[(u16, u16)],
    max_slots: u16,
) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    let mut n = 0;
    for (a, b) in ranges {
        for s in *a..=*b {
            if n == max_slots {
                return out;
            }
            if map.slots.get(usize::from(s)) != Some(&from) {
                continue;
            }
            n += 1;
            match out.last_mut() {
                Some((_, end)) if *end + 1 == s => *end = s,
                _ => out.push((s, s)),
            }
        }
    }
    out
}

fn count(slots: &[(u16, u16)]) -> u64 {
    slots.iter().map(|(a, b)| u64::from(b - a) + 1).sum()
}

/// One round of the `MoveSlots` step of a view change (see the module docs): at a batch
/// boundary it starts the next batch ([`start_batch`]); with a batch in flight it fences the
/// source, hands the batch over ([`hand_over`], or only Activate for a batch another driver
/// flipped) and ends it ([`end_batch`]).
pub(super) async fn move_slots(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    v: &ViewChangeTask,
    step: SlotMove<'_>,
) -> anyhow::Result<Next> {
    let Some(batch) = v.batch.clone() else {
        return start_batch(meta, map, tok, v, step).await;
    };
    let (from, to) = (step.from, step.to);
    // Fence the groups before any other step of the batch: from these entries on, their state
    // machines refuse every step of a deposed driver (an older term), whatever that driver's
    // map or the receiving leader's memory says. A batch resumed by a new metadata leader thus
    // never interleaves with the old one's.
    // The destination is fenced before the copy (in `hand_over`), not here: a rollback must not
    // wait for a destination that lost its quorum (its AbortIncoming is best effort, and a
    // fenced step itself).
    raise_fence(meta, from, tok).await?;
    let copied = if batch.flipped {
        // Flipped by a previous driver: Activate (idempotent) is all that may be missing. The
        // flip's epoch is not known here (the map may have moved on since): 0, no epoch refused.
        let slots = batch.slots.clone();
        propose(meta, to, tok, Command::ActivateAt { slots, epoch: 0 }).await?;
        None
    } else {
        match hand_over(meta, map, tok, v, &batch).await? {
            HandOver::RolledBack => return Ok(Next::Now),
            HandOver::Flipped(copied) => copied,
        }
    };
    end_batch(meta, tok, &batch, copied.as_ref(), step.ranges).await
}

/// The move a `MoveSlots` step makes: slots of `ranges` from group `from` to group `to`.
#[derive(Clone, Copy)]
pub(super) struct SlotMove<'a> {
    pub from: GroupId,
    pub to: GroupId,
    pub ranges: &'a [(u16, u16)],
}

/// Step (a) of a batch, at a batch boundary: records the next batch of the move in the task, or
/// the step done when no slot is left; waits instead while a repair of either group runs or is
/// due (a batch's groups are repaired only between its batches).
async fn start_batch(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    v: &ViewChangeTask,
    step: SlotMove<'_>,
) -> anyhow::Result<Next> {
    let SlotMove { from, to, ranges } = step;
    if v.cancel {
        return Ok(Next::Now);
    }
    let slots = next_batch(map, from, ranges, batch_slots(meta));
    if slots.is_empty() {
        step_done(meta, tok.task, v.next, "view change: slots moved", |_| {}).await?;
        return Ok(Next::Now);
    }
    if repair_due(meta, map, tok.task, [from, to]) {
        tracing::debug!(task = tok.task, from = %from, to = %to, "view change: waiting for a repair before the next batch");
        return Ok(Next::Later);
    }
    update_map(meta, "view change: move batch started", |m| {
        if repair_running(m, [from, to]) {
            return;
        }
        if let Some(v) = task_mut(m, tok.task) {
            v.batch = Some(MoveBatch {
                from,
                to,
                slots,
                flipped: false,
            });
        }
    })
    .await?;
    Ok(Next::Now)
}

/// How [`hand_over`] left a batch that was not flipped yet.
enum HandOver {
    /// Cancelled before its Release: rolled back, the batch gone from the task.
    RolledBack,
    /// Activated at the destination and flipped in the map; with what this driver copied (a
    /// batch resumed after its Release was copied by another driver).
    Flipped(Option<Copied>),
}

/// Steps (b)-(h) of a batch not yet flipped: from the source's slot table, either the copy →
/// fence → catch-up → Release (or, when cancelled before the Release, the rollback), or, when a
/// previous driver released it, the destination's version base raised; then Activate at the
/// destination together with the flip.
async fn hand_over(
    meta: &Meta,
    map: &ClusterMap,
    tok: FenceToken,
    v: &ViewChangeTask,
    batch: &MoveBatch,
) -> anyhow::Result<HandOver> {
    let (from, to) = (batch.from, batch.to);
    let states = slot_states(meta, tok, from, &batch.slots).await?;
    let released = states.iter().all(|s| *s == SlotState::Released);
    let copied = if !released {
        if v.cancel {
            // Past Release (another driver released it meanwhile) the next round finds the
            // slots released and rolls forward.
            roll_back(meta, tok, batch).await?;
            return Ok(HandOver::RolledBack);
        }
        raise_fence(meta, to, tok).await?;
        Some(copy_batch(meta, map, tok, batch).await?)
    } else {
        // Copied, caught up and released by a previous driver (Release comes only after the
        // whole catch-up), which may not have raised the destination's version base yet: raise
        // it (idempotent) before the flip.
        let AdminReply::HighWater(above) =
            admin(meta, from, tok, AdminOp::VersionHighWater, None).await?
        else {
            anyhow::bail!("unexpected reply to a version high-water read");
        };
        propose(meta, to, tok, Command::RaiseVersionBase { above }).await?;
        None
    };
    let n = count(&batch.slots);
    let (keys, bytes) = copied.as_ref().map_or((0, 0), |c| (c.keys, c.bytes));
    let slots = batch.slots.clone();
    meta.node
        .faults
        .hold_move_at(MovePoint::BeforeActivate, tok.task)
        .await;
    // Activate and flip together: the source released the slots and the destination holds all
    // their data, so the destination may serve them before the map names it (only a request
    // routed by the new map can reach it for these slots). The flip's epoch is above `map`'s:
    // the destination owns the slots from `map.epoch + 1` on, and refuses a request routed under
    // an older map.
    let activate = propose(
        meta,
        to,
        tok,
        Command::ActivateAt {
            slots: batch.slots.clone(),
            epoch: map.epoch + 1,
        },
    );
    let flip = update_map(meta, "view change: slots flipped", |m| {
        for (a, b) in &slots {
            for s in *a..=*b {
                if let Some(o) = m.slots.get_mut(usize::from(s)) {
                    *o = to;
                }
            }
        }
        if let Some(v) = task_mut(m, tok.task) {
            v.slots_moved += n;
            v.keys_moved += keys;
            v.bytes_moved += bytes;
            if let Some(b) = &mut v.batch {
                b.flipped = true;
            }
        }
    });
    let (activated, flipped) = tokio::join!(activate, flip);
    activated?;
    flipped?;
    Ok(HandOver::Flipped(copied))
}

/// Step (i) of a batch, flipped and activated: DropSlots at the source, then the next batch
/// recorded in the same map change (one epoch less per batch), unless a repair of either group
/// is due: then the batch boundary is left open for it.
async fn end_batch(
    meta: &Meta,
    tok: FenceToken,
    batch: &MoveBatch,
    copied: Option<&Copied>,
    ranges: &[(u16, u16)],
) -> anyhow::Result<Next> {
    let (from, to) = (batch.from, batch.to);
    let paused_ms = copied.map(|c| c.frozen_at.elapsed().as_millis() as u64);
    propose(
        meta,
        from,
        tok,
        Command::DropSlots {
            slots: batch.slots.clone(),
        },
    )
    .await?;
    if let Some(c) = copied {
        tracing::info!(
            task = tok.task,
            from = %from,
            to = %to,
            slots = ?batch.slots,
            keys = c.keys,
            bytes = c.bytes,
            pause_ms = paused_ms.unwrap_or(0),
            copied_ms = c.copied_ms,
            released_ms = c.released_ms,
            "view change: batch moved (ms from the Freeze: copied, released, and pause_ms to \
             Activate and flip)"
        );
    }
    let now = meta.node.map();
    let next = next_batch(&now, from, ranges, batch_slots(meta));
    let repair = repair_due(meta, &now, tok.task, [from, to]);
    if repair {
        tracing::info!(
            task = tok.task,
            from = %from,
            to = %to,
            "view change: a replica of group {from} or {to} needs a repair; it runs before the next batch"
        );
    }
    update_map(meta, "view change: move batch done", |m| {
        let repair = repair || repair_running(m, [from, to]);
        if let Some(v) = task_mut(m, tok.task) {
            v.batch = (!v.cancel && !next.is_empty() && !repair).then_some(MoveBatch {
                from,
                to,
                slots: next,
                flipped: false,
            });
        }
    })
    .await?;
    Ok(Next::Now)
}

/// The source's slot states of `slots`.
async fn slot_states(
    meta: &Meta,
    tok: FenceToken,
    group: GroupId,
    slots: &[(u16, u16)],
) -> anyhow::Result<Vec<SlotState>> {
    let op = AdminOp::SlotStates {
        slots: slots.to_vec(),
    };
    match admin(meta, group, tok, op, None).await? {
        AdminReply::States(s) => Ok(s),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

/// Whether a repair of `from` or `to` runs, or would start if view change `id` had no batch in
/// flight: the change's driver then starts no batch of those groups until the repair ends (a
/// batch's groups are repaired only between its batches).
fn repair_due(meta: &Meta, map: &ClusterMap, id: u64, groups: [GroupId; 2]) -> bool {
    if repair_running(map, groups) {
        return true;
    }
    let mut between = map.clone();
    if let Some(v) = task_mut(&mut between, id) {
        v.batch = None;
    }
    let health = meta.health(
        map,
        meta.node.id(),
        meta.node.cfg.suspect_after,
        meta.node.cfg.dead_after,
    );
    kvorum_router::plan_repairs(&between, &health, &meta.vetoed(map))
        .iter()
        .any(|r| groups.contains(&r.group))
}

/// What [`roll_back`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RollBack {
    /// The source owns the slots again; the destination's copy is dropped (or will be by the
    /// next move); the batch is gone from the task.
    Done,
    /// The source had released the slots: the copy is complete and the batch only rolls
    /// forward (nothing was changed).
    PastRelease,
}

/// Rolls back a batch not yet released: the source unfreezes, then the destination drops its
/// copy. The source goes first because Unfreeze is the gate: it is refused once the source
/// released the slots (another driver may have finished the copy and released them since this
/// one looked), and then the destination's copy is the only one and must stay.
pub(super) async fn roll_back(
    meta: &Meta,
    tok: FenceToken,
    b: &MoveBatch,
) -> anyhow::Result<RollBack> {
    let unfreeze = Command::Unfreeze {
        slots: b.slots.clone(),
    };
    match propose(meta, b.from, tok, unfreeze).await {
        Ok(_) => {}
        Err(AdminError::Refused {
            state: SlotState::Released,
            ..
        }) => {
            tracing::warn!(
                task = tok.task,
                slots = ?b.slots,
                "view change: the batch cannot roll back, the source released it: it rolls forward"
            );
            return Ok(RollBack::PastRelease);
        }
        Err(e) => return Err(e.into()),
    }
    let abort = Command::AbortIncoming {
        slots: b.slots.clone(),
    };
    if let Err(e) = propose(meta, b.to, tok, abort).await {
        // The destination never serves Incoming slots; its copy is dropped by the next move.
        tracing::warn!(task = tok.task, error = %e, "rollback: the destination could not drop its copy");
    }
    update_map(meta, "view change: batch rolled back", |m| {
        if let Some(v) = task_mut(m, tok.task) {
            v.batch = None;
        }
    })
    .await?;
    tracing::warn!(task = tok.task, slots = ?b.slots, "view change: batch rolled back");
    Ok(RollBack::Done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::map;

    // Batches take the source's slots of the step's ranges in order, at most
    // MOVE_BATCH_SLOTS, skipping slots that already moved.
    #[test]
    fn batches_take_the_sources_remaining_slots_in_order() {
        let mut m = map(6);
        let g1 = GroupId(1);
        let n = MOVE_BATCH_SLOTS;
        let ranges = vec![(0u16, 9u16), (20, 20 + 2 * n)];
        // 10 slots of the first range, the rest of a batch from the second.
        assert_eq!(
            next_batch(&m, g1, &ranges, n),
            vec![(0, 9), (20, 20 + n - 11)]
        );
        for s in 0..=5 {
            m.slots[s] = GroupId(2);
        }
        assert_eq!(
            next_batch(&m, g1, &ranges, n),
            vec![(6, 9), (20, 20 + n - 5)]
        );
        for s in (6..=9).chain(20..=20 + usize::from(2 * n)) {
            m.slots[s] = GroupId(2);
        }
        assert!(next_batch(&m, g1, &ranges, n).is_empty());
    }
}
