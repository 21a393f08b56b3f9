//! The slot table of a data group: which slots it serves, and the pure transitions of the slot
//! admin commands that change it (a move's steps).
//!
//! Steps of a move, as the metadata leader drives them (each a log entry, each idempotent, each
//! a [`Command::Fenced`] step carrying the driver's token, see `FenceToken`): both groups fenced
//! (`Fence`) → destination `BeginIncoming` → copy while the source still serves
//! (`Store::scan_slots` at the source, `Ingest` at the destination) → source `Freeze` → catch-up
//! (`CatchUp` at the destination: what changed since the copy) → source `Release` → destination
//! `ActivateAt` together with the flip in the config group → source `DropSlots`. Rollback of a
//! batch not yet released: source `Unfreeze` first (the gate: refused once the source released),
//! then destination `AbortIncoming`; a released batch only rolls forward.
//!
//! Invariants: the table changes only by log entries (the same on every replica, also when an
//! entry is re-applied after a crash); a command is checked for every slot it names before any is
//! changed, so a refused command changes nothing; a group whose table was never initialized
//! serves every slot (existing clusters and the config group keep working unchanged).

use kvorum_router::SLOT_COUNT;
use serde::{Deserialize, Serialize};

use crate::{AdminResult, Command, CommandResult, WriteResult};

/// The state of one slot in a group's slot table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlotState {
    /// Served: reads and writes.
    Owned,
    /// Being moved away: reads served, writes refused ([`WriteResult::Frozen`]).
    Frozen,
    /// Not served (never owned, or moved away; its data stays until `DropSlots`).
    Released,
    /// Being copied in by `Ingest`; not served until `Activate`.
    Incoming,
}

impl SlotState {
    /// The persistent byte of the state (meta CF, snapshots). MUST NOT change.
    pub(crate) fn to_byte(self) -> u8 {
        match self {
            SlotState::Owned => 0,
            SlotState::Frozen => 1,
            SlotState::Released => 2,
            SlotState::Incoming => 3,
        }
    }

    pub(crate) fn from_byte(b: u8) -> Option<SlotState> {
        Some(match b {
            0 => SlotState::Owned,
            1 => SlotState::Frozen,
            2 => SlotState::Released,
            3 => SlotState::Incoming,
            _ => return None,
        })
    }
}

/// A group's slot table: the state of every slot, indexed by slot (`SLOT_COUNT` entries).
pub(crate) type SlotTable = Vec<SlotState>;

/// The persistent encoding of a table: one [`SlotState::to_byte`] per slot. MUST NOT change.
pub(crate) fn encode_table(table: &[SlotState]) -> Vec<u8> {
    table.iter().map(|s| s.to_byte()).collect()
}

/// Decodes [`encode_table`]; `None` when the bytes are not a table.
pub(crate) fn decode_table(bytes: &[u8]) -> Option<SlotTable> {
    if bytes.len() != usize::from(SLOT_COUNT) {
        return None;
    }
    bytes.iter().map(|b| SlotState::from_byte(*b)).collect()
}

/// The state of `slot` in `table` (`None`: uninitialized, every slot owned).
pub(crate) fn state_of(table: Option<&[SlotState]>, slot: u16) -> SlotState {
    table
        .and_then(|t| t.get(usize::from(slot)).copied())
        .unwrap_or(SlotState::Owned)
}

/// Whether a write to `slot` may apply; the refusal to answer otherwise.
pub(crate) fn check_write(table: Option<&[SlotState]>, slot: u16) -> Option<WriteResult> {
    match state_of(table, slot) {
        SlotState::Owned => None,
        SlotState::Frozen => Some(WriteResult::Frozen { slot }),
        SlotState::Released | SlotState::Incoming => Some(WriteResult::NotOwner { slot }),
    }
}

/// Per slot, the first map epoch at which the group owns it (set by [`Command::ActivateAt`]);
/// indexed by slot, and empty when no slot has one (0: every epoch).
pub(crate) type SlotEpochs = Vec<u64>;

/// The persistent encoding of [`SlotEpochs`] (meta CF, snapshots): bincode of the `(slot,
/// epoch)` pairs whose epoch is not 0, in slot order. MUST NOT change.
pub(crate) fn encode_epochs(epochs: &[u64]) -> Vec<u8> {
    let pairs: Vec<(u16, u64)> = (0..SLOT_COUNT)
        .zip(epochs.iter().copied())
        .filter(|(_, e)| *e != 0)
        .collect();
    // bincode 1's layout of a Vec<(u16, u64)>: u64 LE length, then each pair LE.
    let mut out = Vec::with_capacity(8 + pairs.len() * 10);
    out.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
    for (slot, epoch) in pairs {
        out.extend_from_slice(&slot.to_le_bytes());
        out.extend_from_slice(&epoch.to_le_bytes());
    }
    out
}

/// Decodes [`encode_epochs`]; `None` when the bytes are not slot epochs.
pub(crate) fn decode_epochs(bytes: &[u8]) -> Option<SlotEpochs> {
    let pairs: Vec<(u16, u64)> = bincode::deserialize(bytes).ok()?;
    let mut epochs = vec![0; usize::from(SLOT_COUNT)];
    for (slot, epoch) in pairs {
        *epochs.get_mut(usize::from(slot))? = epoch;
    }
    Some(epochs)
}

/// The first epoch at which the group owns `slot` (0: every epoch).
pub(crate) fn since_of(epochs: &[u64], slot: u16) -> u64 {
    epochs.get(usize::from(slot)).copied().unwrap_or(0)
}

/// Whether a write to `slot` routed under map `epoch` may apply; the refusal to answer
/// otherwise. Owned since a later epoch than the proposer's map: not its owner at that epoch.
pub(crate) fn check_routed_write(
    table: Option<&[SlotState]>,
    epochs: &[u64],
    slot: u16,
    epoch: u64,
) -> Option<WriteResult> {
    check_write(table, slot)
        .or_else(|| (epoch < since_of(epochs, slot)).then_some(WriteResult::NotOwner { slot }))
}

/// The slots of inclusive ranges, in the order given; the first bad range (`from > to`, or past
/// the last slot) as an error.
pub(crate) fn expand(ranges: &[(u16, u16)]) -> Result<Vec<u16>, AdminResult> {
    let mut slots = Vec::new();
    for &(from, to) in ranges {
        if from > to || to >= SLOT_COUNT {
            return Err(AdminResult::BadSlotRange { from, to });
        }
        slots.extend(from..=to);
    }
    Ok(slots)
}

/// What a slot admin command does: the new table (`None`: unchanged), the slots whose data
/// must be deleted, and the result.
pub(crate) struct Transition {
    pub table: Option<SlotTable>,
    pub clear: Vec<u16>,
    pub result: CommandResult,
    /// Slots turned Incoming → Owned by [`Command::ActivateAt`], with its epoch: their new
    /// [`SlotEpochs`] entries.
    pub owned_since: Vec<(u16, u64)>,
}

impl Transition {
    fn refused(result: CommandResult) -> Transition {
        Transition {
            table: None,
            clear: Vec::new(),
            result,
            owned_since: Vec::new(),
        }
    }
}

/// An allowed `(from, to)` change of a slot's state.
type Move = (SlotState, SlotState);

/// Applies the slot admin command `cmd` (any but `Ingest`) to `table`. Pure and deterministic.
/// Returns `None` for commands that are not slot admin commands.
pub(crate) fn transition(table: Option<&[SlotState]>, cmd: &Command) -> Option<Transition> {
    use SlotState::*;
    // (ranges, allowed (from, to) moves, which resulting states have their data deleted)
    let (ranges, moves, clear_if): (&[(u16, u16)], &[Move], &[SlotState]) = match cmd {
        Command::InitSlots { owned } => return Some(init(table, owned)),
        Command::Freeze { slots } => (slots, &[(Owned, Frozen), (Frozen, Frozen)], &[]),
        Command::Unfreeze { slots } => (slots, &[(Frozen, Owned), (Owned, Owned)], &[]),
        Command::Release { slots } => (slots, &[(Frozen, Released), (Released, Released)], &[]),
        Command::DropSlots { slots } => (
            slots,
            &[
                (Owned, Owned),
                (Frozen, Frozen),
                (Released, Released),
                (Incoming, Incoming),
            ],
            &[Released],
        ),
        Command::BeginIncoming { slots } => (
            slots,
            &[(Released, Incoming), (Incoming, Incoming)],
            &[Incoming],
        ),
        Command::Activate { slots } | Command::ActivateAt { slots, .. } => {
            (slots, &[(Incoming, Owned), (Owned, Owned)], &[])
        }
        // Released stays (and keeps its data): a repeated abort changes nothing.
        Command::AbortIncoming { slots } => {
            let t = abort(table, slots);
            return Some(t);
        }
        _ => return None,
    };
    let slots = match expand(ranges) {
        Ok(s) => s,
        Err(r) => return Some(Transition::refused(r.into())),
    };
    let mut next: Vec<(u16, SlotState)> = Vec::with_capacity(slots.len());
    for slot in slots {
        let state = state_of(table, slot);
        match moves.iter().find(|(from, _)| *from == state) {
            Some(&(_, to)) => next.push((slot, to)),
            None => {
                return Some(Transition::refused(
                    AdminResult::SlotState { slot, state }.into(),
                ))
            }
        }
    }
    let owned_since = match cmd {
        Command::ActivateAt { epoch, .. } => next
            .iter()
            .filter(|(slot, _)| state_of(table, *slot) == Incoming)
            .map(|(slot, _)| (*slot, *epoch))
            .collect(),
        _ => Vec::new(),
    };
    Some(Transition {
        owned_since,
        ..commit(table, next, clear_if)
    })
}

/// `AbortIncoming`: Incoming → Released (data deleted), Released stays.
fn abort(table: Option<&[SlotState]>, ranges: &[(u16, u16)]) -> Transition {
    let slots = match expand(ranges) {
        Ok(s) => s,
        Err(r) => return Transition::refused(r.into()),
    };
    let mut next = Vec::with_capacity(slots.len());
    let mut clear = Vec::new();
    for slot in slots {
        match state_of(table, slot) {
            SlotState::Incoming => {
                next.push((slot, SlotState::Released));
                clear.push(slot);
            }
            SlotState::Released => {}
            state => return Transition::refused(AdminResult::SlotState { slot, state }.into()),
        }
    }
    let mut t = commit(table, next, &[]);
    t.clear = clear;
    t
}

/// Applies checked moves `next` to `table`; the slots whose new state is in `clear_if` have
/// their data deleted.
fn commit(
    table: Option<&[SlotState]>,
    next: Vec<(u16, SlotState)>,
    clear_if: &[SlotState],
) -> Transition {
    let clear = next
        .iter()
        .filter(|(_, s)| clear_if.contains(s))
        .map(|(slot, _)| *slot)
        .collect();
    let changed = next.iter().any(|&(slot, s)| state_of(table, slot) != s);
    let table = changed.then(|| {
        // An uninitialized table serves every slot: it becomes explicit on its first change.
        let mut t = table.map_or_else(
            || vec![SlotState::Owned; usize::from(SLOT_COUNT)],
            <[SlotState]>::to_vec,
        );
        for (slot, s) in next {
            t[usize::from(slot)] = s;
        }
        t
    });
    Transition {
        table,
        clear,
        result: CommandResult::None,
        owned_since: Vec::new(),
    }
}

/// `InitSlots`: on an uninitialized table, `owned` Owned and every other slot Released;
/// otherwise nothing (idempotent).
fn init(table: Option<&[SlotState]>, owned: &[(u16, u16)]) -> Transition {
    let slots = match expand(owned) {
        Ok(s) => s,
        Err(r) => return Transition::refused(r.into()),
    };
    if table.is_some() {
        return Transition::refused(CommandResult::None);
    }
    let mut t = vec![SlotState::Released; usize::from(SLOT_COUNT)];
    for slot in slots {
        t[usize::from(slot)] = SlotState::Owned;
    }
    Transition {
        table: Some(t),
        clear: Vec::new(),
        result: CommandResult::None,
        owned_since: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SlotState::*;

    fn table_with(slot: u16, state: SlotState) -> SlotTable {
        let mut t = vec![Owned; usize::from(SLOT_COUNT)];
        t[usize::from(slot)] = state;
        t
    }

    // Every slot admin command from every state: the state after it, whether it deleted the
    // slot's data, and whether it was refused (naming the slot and its state, changing nothing).
    #[test]
    fn transition_table() {
        let s = 7u16;
        type Make = fn(Vec<(u16, u16)>) -> Command;
        let cmds: [(&str, Make); 8] = [
            ("freeze", |slots| Command::Freeze { slots }),
            ("unfreeze", |slots| Command::Unfreeze { slots }),
            ("release", |slots| Command::Release { slots }),
            ("drop", |slots| Command::DropSlots { slots }),
            ("begin", |slots| Command::BeginIncoming { slots }),
            ("activate", |slots| Command::Activate { slots }),
            ("activate", |slots| Command::ActivateAt { slots, epoch: 5 }),
            ("abort", |slots| Command::AbortIncoming { slots }),
        ];
        // (command, from, Some((to, data deleted)) or None for refused)
        let expect = |name: &str, from: SlotState| -> Option<(SlotState, bool)> {
            match (name, from) {
                ("freeze", Owned | Frozen) => Some((Frozen, false)),
                ("unfreeze", Frozen | Owned) => Some((Owned, false)),
                ("release", Frozen | Released) => Some((Released, false)),
                ("drop", s) => Some((s, s == Released)),
                ("begin", Released | Incoming) => Some((Incoming, true)),
                ("activate", Incoming | Owned) => Some((Owned, false)),
                ("abort", Incoming) => Some((Released, true)),
                ("abort", Released) => Some((Released, false)),
                _ => None,
            }
        };
        for (name, make) in cmds {
            for from in [Owned, Frozen, Released, Incoming] {
                let table = table_with(s, from);
                let t = transition(Some(&table), &make(vec![(s, s)])).expect("admin command");
                let after = t.table.as_deref().map_or(from, |t| t[usize::from(s)]);
                match expect(name, from) {
                    Some((to, cleared)) => {
                        assert_eq!(t.result, CommandResult::None, "{name} from {from:?}");
                        assert_eq!(after, to, "{name} from {from:?}");
                        assert_eq!(t.clear == vec![s], cleared, "{name} from {from:?}");
                    }
                    None => {
                        assert_eq!(
                            t.result,
                            CommandResult::Admin(AdminResult::SlotState {
                                slot: s,
                                state: from
                            }),
                            "{name} from {from:?}"
                        );
                        assert!(
                            t.table.is_none() && t.clear.is_empty(),
                            "{name} from {from:?}"
                        );
                    }
                }
            }
        }
    }

    // A command refused for one slot changes none of the others (checked before any change).
    #[test]
    fn a_refused_command_changes_nothing() {
        let table = table_with(9, Released);
        let t = transition(
            Some(&table),
            &Command::Freeze {
                slots: vec![(5, 12)],
            },
        )
        .expect("admin command");
        assert_eq!(
            t.result,
            CommandResult::Admin(AdminResult::SlotState {
                slot: 9,
                state: Released
            })
        );
        assert!(t.table.is_none());
    }

    // InitSlots initializes once: listed slots Owned, the rest Released; later ones are no-ops.
    // An uninitialized table serves every slot; bad ranges are refused.
    #[test]
    fn init_is_idempotent_and_uninitialized_owns_everything() {
        assert_eq!(state_of(None, 4095), Owned);
        assert_eq!(check_write(None, 3), None);
        let t = transition(
            None,
            &Command::InitSlots {
                owned: vec![(0, 9)],
            },
        )
        .expect("admin");
        let table = t.table.expect("initialized");
        assert_eq!(table[9], Owned);
        assert_eq!(table[10], Released);
        let again = transition(Some(&table), &Command::InitSlots { owned: vec![] }).expect("a");
        assert!(again.table.is_none());
        assert_eq!(again.result, CommandResult::None);
        for bad in [(5, 4), (0, SLOT_COUNT)] {
            let t = transition(Some(&table), &Command::Freeze { slots: vec![bad] }).expect("a");
            assert_eq!(
                t.result,
                CommandResult::Admin(AdminResult::BadSlotRange {
                    from: bad.0,
                    to: bad.1
                })
            );
        }
        assert_eq!(decode_table(&encode_table(&table)), Some(table));
    }

    // ActivateAt records its epoch for the slots it turns Incoming → Owned (not for those
    // already Owned, whose epoch stays); a routed write under an older map is NotOwner there,
    // at that epoch or later it applies; Frozen and not-owned slots answer as unrouted writes.
    #[test]
    fn activate_at_records_the_epoch_routed_writes_are_checked_against() {
        let mut table = table_with(3, Incoming);
        table[4] = Frozen;
        let t = transition(
            Some(&table),
            &Command::ActivateAt {
                slots: vec![(2, 3)],
                epoch: 9,
            },
        )
        .expect("admin");
        assert_eq!(t.result, CommandResult::None);
        assert_eq!(t.owned_since, vec![(3, 9)]);
        let table = t.table.expect("changed");
        let mut epochs = vec![0; usize::from(SLOT_COUNT)];
        for (slot, e) in t.owned_since {
            epochs[usize::from(slot)] = e;
        }
        let check = |slot, epoch| check_routed_write(Some(&table), &epochs, slot, epoch);
        assert_eq!(check(3, 8), Some(WriteResult::NotOwner { slot: 3 }));
        assert_eq!(check(3, 9), None);
        assert_eq!(check(3, 12), None);
        assert_eq!(check(2, 1), None);
        assert_eq!(check(4, 20), Some(WriteResult::Frozen { slot: 4 }));
        assert_eq!(
            check_routed_write(Some(&table_with(5, Released)), &[], 5, 20),
            Some(WriteResult::NotOwner { slot: 5 })
        );
        assert_eq!(check_routed_write(None, &[], 5, 0), None);
        // A refused ActivateAt records nothing.
        let refused = transition(
            Some(&table_with(3, Frozen)),
            &Command::ActivateAt {
                slots: vec![(3, 3)],
                epoch: 9,
            },
        )
        .expect("admin");
        assert!(refused.owned_since.is_empty() && refused.table.is_none());
        // The encoding keeps only the slots with an epoch, and round-trips.
        let bytes = encode_epochs(&epochs);
        let pairs: Vec<(u16, u64)> = vec![(3, 9)];
        assert_eq!(bytes, bincode::serialize(&pairs).expect("encodes"));
        assert_eq!(decode_epochs(&bytes), Some(epochs));
        assert_eq!(
            decode_epochs(&encode_epochs(&[])),
            Some(vec![0; usize::from(SLOT_COUNT)])
        );
        assert_eq!(decode_epochs(b"junk"), None);
        let past_the_end = bincode::serialize(&vec![(SLOT_COUNT, 1u64)]).expect("encodes");
        assert_eq!(decode_epochs(&past_the_end), None);
    }
}
