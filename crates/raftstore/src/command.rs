//! The commands of the data state machine and their deterministic application.
//!
//! Commands are stored in the Raft log (bincode): their encoding is a persistent format. MUST
//! NOT change existing variants or fields; add a new variant.
//!
//! Versions: every key carries a version, the Raft log index (in its group) of the write that
//! produced its current value, plus the group's version base (0 unless records were ingested
//! from another group, see [`Command::Ingest`]). It strictly increases with every write to the key, survives a
//! delete and re-create (the new write has a later index), and 0 means "absent", so
//! `Condition::Version(0)` is create-if-absent.
//!
//! [`Condition`] and [`Versioned`] are defined in kvorum-record (the wire re-exports them: the
//! client sends the one and reads the other); their encodings are pinned by the tests here.

use serde::{Deserialize, Serialize};

/// Largest value, in bytes, that `apply` ever stores, whatever the command or the proposing
/// node's configuration (the largest configurable `max_value_bytes`): no sequence of commands
/// can create a record a snapshot cannot carry.
pub const MAX_VALUE_BYTES: usize = 32 << 20;

/// Largest key, in bytes, that `apply` ever stores (far above any configured `max_key_bytes`;
/// an HTTP path cannot even carry one this long).
pub const MAX_KEY_BYTES: usize = 1 << 20;

/// A write, proposed through a group's Raft log and applied by every replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value`, if `condition` holds (or there is none).
    Put {
        /// The key written.
        key: String,
        /// Its new value.
        value: String,
        /// The precondition checked at apply time, if any.
        condition: Option<Condition>,
    },
    /// Remove `key`, if `condition` holds (or there is none). Removing an absent key succeeds.
    Delete {
        /// The key removed.
        key: String,
        /// The precondition checked at apply time, if any.
        condition: Option<Condition>,
    },
    /// Add `suffix` to the end of the value of `key`; an absent key counts as empty. Only
    /// [`MAX_VALUE_BYTES`] bounds the result: nodes propose [`Command::AppendBounded`].
    Append {
        /// The key appended to.
        key: String,
        /// The bytes added at the end of its value.
        suffix: String,
    },
    /// Add `suffix` to the end of the value of `key` (an absent key counts as empty) if the
    /// result is at most `max_value_bytes` (the proposing node's limit; [`MAX_VALUE_BYTES`]
    /// bounds it too). The limit travels in the command so that every replica checks the same.
    AppendBounded {
        /// The key appended to.
        key: String,
        /// The bytes added at the end of its value.
        suffix: String,
        /// Largest value the append may produce, in bytes.
        max_value_bytes: u64,
    },
    // Slot admin commands (a move's steps; see `slots`). Slot sets are inclusive ranges `(from,
    // to)` within `0..SLOT_COUNT`; a bad range is refused ([`CommandResult::BadSlotRange`]).
    // Every one is checked for all its slots before any changes: a refusal
    // ([`CommandResult::SlotState`]) changes nothing.
    /// Initializes an uninitialized slot table: `owned` Owned, every other slot Released. A no-op
    /// on an initialized table. Until then a group serves every slot.
    InitSlots {
        /// The slots the group owns.
        owned: Vec<(u16, u16)>,
    },
    /// Owned → Frozen (Frozen stays): writes to the slots are refused with
    /// [`CommandResult::Frozen`]; reads are still served.
    Freeze {
        /// The slots frozen.
        slots: Vec<(u16, u16)>,
    },
    /// Frozen → Owned (Owned stays): rolls back a move not yet released.
    Unfreeze {
        /// The slots unfrozen.
        slots: Vec<(u16, u16)>,
    },
    /// Frozen → Released (Released stays): the group serves nothing of the slots; their data
    /// stays until [`Command::DropSlots`].
    Release {
        /// The slots released.
        slots: Vec<(u16, u16)>,
    },
    /// Deletes the data of those of the slots that are Released; others are left alone.
    DropSlots {
        /// The slots whose data is dropped.
        slots: Vec<(u16, u16)>,
    },
    /// Released → Incoming, and Incoming stays; either way the slots' data is deleted, so a
    /// restarted copy starts clean.
    BeginIncoming {
        /// The slots about to be copied in.
        slots: Vec<(u16, u16)>,
    },
    /// Writes each record (with its own version) whose key's slot is Incoming; skips the others.
    /// Later writes of the group get versions above every ingested one.
    Ingest {
        /// `(key, record)` pairs copied from the source group.
        records: Vec<(String, Versioned)>,
    },
    /// Incoming → Owned (Owned stays): the group starts serving the slots.
    Activate {
        /// The slots activated.
        slots: Vec<(u16, u16)>,
    },
    /// Incoming → Released, deleting their data (Released stays): rolls back a copy.
    AbortIncoming {
        /// The slots whose copy is abandoned.
        slots: Vec<(u16, u16)>,
    },
    /// Raises the version base so that every later write of the group gets a version above
    /// `above` (no change if they already do). A move sends the source's
    /// [`crate::Store::version_high_water`], so that a key deleted at the source and re-created
    /// at the destination never gets a version it had before.
    RaiseVersionBase {
        /// A version every later write must exceed.
        above: u64,
    },
    /// The catch-up of a copy made before the source froze its slots: writes `records` as
    /// [`Command::Ingest`] does, deletes each key of `removed` whose slot is Incoming (deleted
    /// at the source since the copy read it), and raises the version base above `above` as
    /// [`Command::RaiseVersionBase`] does.
    CatchUp {
        /// `(key, record)` pairs written at the source since the copy read them.
        records: Vec<(String, Versioned)>,
        /// Keys the copy brought that the source no longer has.
        removed: Vec<String>,
        /// A version every later write must exceed (the frozen source's high-water mark).
        above: u64,
    },
    /// A key write (Put, Delete, Append, AppendBounded) with the route it was proposed under:
    /// the key's `slot` and the `epoch` of the proposing node's cluster map. Apply refuses it
    /// with [`CommandResult::Misrouted`] if `write` is not a key write or `slot` is not its key's,
    /// with [`CommandResult::NotOwner`] if the group does not own the slot at `epoch` (not Owned,
    /// or owned only since a later epoch, see [`Command::ActivateAt`]), with
    /// [`CommandResult::Frozen`] if the slot is frozen; otherwise `write` applies as it would
    /// alone. Nodes propose every key write in this form.
    Routed {
        /// The slot the proposer routed the key to.
        slot: u16,
        /// The epoch of the proposer's cluster map.
        epoch: u64,
        /// The key write.
        write: Box<Command>,
    },
    /// [`Command::Activate`] that also records, for each slot it turns from Incoming to Owned,
    /// `epoch` as the epoch from which the group owns it: a [`Command::Routed`] write or a read
    /// under an older map is refused as not owned. `epoch` is at most the epoch of the map that
    /// names this group the slots' owner (0: unknown, no epoch is refused).
    ActivateAt {
        /// The slots activated.
        slots: Vec<(u16, u16)>,
        /// The first epoch at which the group owns them.
        epoch: u64,
    },
    /// Raises the group's fence to `token` (see [`FenceToken`]): from this entry on, every
    /// [`Command::Fenced`] step with a lower token is refused. Refused itself, with
    /// [`CommandResult::Fenced`] and no change, when the group's fence is already higher. A
    /// driver that resumes a task sends it to every group it touches before any other step.
    Fence {
        /// The driver's token.
        token: FenceToken,
    },
    /// A step of a view change or repair (a slot command, never a key write) sent by the driver
    /// holding `token`: refused with [`CommandResult::Fenced`], writing nothing, when the group's
    /// fence is above `token`; otherwise the fence is raised to `token` and `step` applies as it
    /// would alone. A `step` that is not a slot command is refused with
    /// [`CommandResult::Misrouted`] (nothing written). Nodes send every slot command in this form.
    Fenced {
        /// The driver's token.
        token: FenceToken,
        /// The slot command.
        step: Box<Command>,
    },
    /// Every replica hashes its group's applied state at this entry's index and records the
    /// hash ([`crate::Store::state_hash`]), so that replicas can be compared at the same index
    /// (the consistency check). Changes nothing; answers [`CommandResult::Hashed`]. Must stay
    /// after every older variant (bincode encodes the variant's position).
    ComputeHash,
}

/// The token of a task driver (a metadata leader driving one view change or repair): the config
/// group term in which it claimed the task, and the task's id. Tokens are ordered by `term`
/// alone: one metadata leader holds a term, and its drivers of different tasks never touch the
/// same group at once, so only a driver of an older term (a deposed metadata leader) is fenced
/// out. `task` names the driver in refusals and logs. Zero: no driver yet.
///
/// Persistent (in log entries, the `meta` column family and snapshots): MUST NOT change; add
/// fields only in a new type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FenceToken {
    /// The config group term in which the driver claimed its task.
    pub term: u64,
    /// The task's id.
    pub task: u64,
}

impl FenceToken {
    /// Whether a group whose fence is `self` refuses a step carrying `token`.
    pub fn refuses(&self, token: &FenceToken) -> bool {
        token.term < self.term
    }
}

impl std::fmt::Display for FenceToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "term {} task {}", self.term, self.task)
    }
}

impl Command {
    /// The key this command writes; empty for the slot admin commands, which write no one key
    /// (see [`Command::written_key`]).
    pub fn key(&self) -> &str {
        self.written_key().unwrap_or("")
    }

    /// The key this command writes, if it is a key write (Put, Delete, Append, AppendBounded),
    /// routed or not.
    pub fn written_key(&self) -> Option<&str> {
        match self {
            Command::Put { key, .. }
            | Command::Delete { key, .. }
            | Command::Append { key, .. }
            | Command::AppendBounded { key, .. } => Some(key),
            Command::Routed { write, .. } => match write.as_ref() {
                Command::Routed { .. } => None,
                w => w.written_key(),
            },
            // Slot commands, fences: no one key.
            _ => None,
        }
    }

    /// Whether this is a slot command (a move's step, see `slots`): what a [`Command::Fenced`]
    /// may carry.
    pub fn is_slot_command(&self) -> bool {
        matches!(
            self,
            Command::InitSlots { .. }
                | Command::Freeze { .. }
                | Command::Unfreeze { .. }
                | Command::Release { .. }
                | Command::DropSlots { .. }
                | Command::BeginIncoming { .. }
                | Command::Ingest { .. }
                | Command::CatchUp { .. }
                | Command::Activate { .. }
                | Command::ActivateAt { .. }
                | Command::AbortIncoming { .. }
                | Command::RaiseVersionBase { .. }
        )
    }

    /// This slot command as sent by the driver holding `token` (see [`Command::Fenced`]).
    pub fn fenced(self, token: FenceToken) -> Command {
        Command::Fenced {
            token,
            step: Box::new(self),
        }
    }

    /// This key write as proposed under the route `(slot, epoch)` (see [`Command::Routed`]).
    pub fn routed(self, slot: u16, epoch: u64) -> Command {
        Command::Routed {
            slot,
            epoch,
            write: Box::new(self),
        }
    }
}

pub use kvorum_record::Condition;

/// A stored value with its version (which the wire re-exports). Its serde shape is pinned by a
/// test (it travels in [`CommandResult`]).
pub use kvorum_record::Versioned;

/// The `data` column family encoding of a [`Versioned`]: `version (8 bytes BE) ++ value`. MUST NOT
/// change.
pub(crate) trait RecordCodec: Sized {
    /// The stored bytes.
    fn encode(&self) -> Vec<u8>;
    /// Length of [`RecordCodec::encode`]'s output.
    fn encoded_len(&self) -> usize;
    /// Decodes [`RecordCodec::encode`]; `None` when the bytes are not a record.
    fn decode(bytes: &[u8]) -> Option<Self>;
}

impl RecordCodec for Versioned {
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.value.len());
        v.extend_from_slice(&self.version.to_be_bytes());
        v.extend_from_slice(self.value.as_bytes());
        v
    }

    fn encoded_len(&self) -> usize {
        8 + self.value.len()
    }

    fn decode(bytes: &[u8]) -> Option<Versioned> {
        let version = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let value = std::str::from_utf8(bytes.get(8..)?).ok()?.to_string();
        Some(Versioned { value, version })
    }
}

/// The result of applying one log entry. Deterministic: every replica computes the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    /// A blank or membership entry: nothing to report.
    None,
    /// The key now holds a value at `version`.
    Written {
        /// The new version: the entry's log index.
        version: u64,
    },
    /// The key is absent; `existed` says whether it was present before.
    Deleted {
        /// Whether the key was present before.
        existed: bool,
    },
    /// The condition did not hold; nothing was written. `current` is what the key held.
    ConditionFailed {
        /// The key's record when the condition was checked (`None`: absent).
        current: Option<Versioned>,
    },
    /// The write would make the key's value `len` bytes, more than `limit`; nothing was written.
    ValueTooLarge {
        /// Bytes the value would have had.
        len: u64,
        /// The limit it exceeded, in bytes.
        limit: u64,
    },
    /// The key is `len` bytes, more than [`MAX_KEY_BYTES`] (`limit`); nothing was written.
    KeyTooLarge {
        /// Bytes of the key.
        len: u64,
        /// The limit it exceeded, in bytes.
        limit: u64,
    },
    /// The key's slot is frozen (being moved away); nothing was written. Retry after the move:
    /// the slot is then served by its new group (or again here, if the move rolled back).
    Frozen {
        /// The key's slot.
        slot: u16,
    },
    /// This group does not serve the key's slot (released, or still being copied in); nothing
    /// was written. Refresh the cluster map and retry at the owner.
    NotOwner {
        /// The key's slot.
        slot: u16,
    },
    /// A slot admin command was refused because `slot` is in `state`, from which the command
    /// has no transition; nothing changed (for any of its slots).
    SlotState {
        /// The first slot found in a wrong state.
        slot: u16,
        /// Its state.
        state: crate::SlotState,
    },
    /// An [`Command::Ingest`] or [`Command::CatchUp`] applied: `written` records stored (and
    /// keys removed), `skipped` ones not (their slot was not Incoming, or the record was not
    /// storable).
    Ingested {
        /// Records stored.
        written: u64,
        /// Records skipped.
        skipped: u64,
    },
    /// A slot admin command named the range `from..=to`, which is empty or past the last slot;
    /// nothing changed.
    BadSlotRange {
        /// First slot of the range.
        from: u16,
        /// Last slot of the range.
        to: u16,
    },
    /// A [`Command::Routed`] whose write is not a key write, or whose `slot` is not its key's
    /// (`key_slot`): the proposer hashes keys differently; nothing was written.
    Misrouted {
        /// The slot the command named.
        slot: u16,
        /// The key's slot (`None`: the write is not a key write).
        key_slot: Option<u16>,
    },
    /// A [`Command::Fence`] or [`Command::Fenced`] step carrying a token below the group's
    /// fence `current`: it comes from a deposed driver. Nothing changed; the driver stops.
    Fenced {
        /// The group's fence.
        current: FenceToken,
    },
    /// A [`Command::ComputeHash`] applied: this replica's hash of the group's state at `index`.
    Hashed {
        /// The entry's log index.
        index: u64,
        /// The hash ([`crate::StateHash::hash`]).
        hash: u64,
    },
}

/// What applying a command does to its key: the new record (`None` deletes it), if any.
pub(crate) enum Effect {
    Unchanged,
    Set(Versioned),
    Remove,
}

/// Applies the key write `cmd` to the key's `current` record; a write gets `version` (its log
/// index plus the group's version base). Pure and deterministic: it runs
/// on every replica, and again when an entry is re-applied after a crash.
///
/// Limits: a write whose key is longer than [`MAX_KEY_BYTES`], or whose resulting value is longer
/// than [`MAX_VALUE_BYTES`] (or an [`Command::AppendBounded`]'s own limit), writes nothing and
/// reports it. Deletes are never refused.
pub(crate) fn apply(
    cmd: &Command,
    version: u64,
    current: Option<&Versioned>,
) -> (Effect, CommandResult) {
    let failed = || {
        (
            Effect::Unchanged,
            CommandResult::ConditionFailed {
                current: current.cloned(),
            },
        )
    };
    let key = cmd.key();
    if key.len() > MAX_KEY_BYTES && !matches!(cmd, Command::Delete { .. }) {
        let result = CommandResult::KeyTooLarge {
            len: key.len() as u64,
            limit: MAX_KEY_BYTES as u64,
        };
        return (Effect::Unchanged, result);
    }
    match cmd {
        Command::Put {
            value, condition, ..
        } => {
            if value.len() > MAX_VALUE_BYTES {
                let result = CommandResult::ValueTooLarge {
                    len: value.len() as u64,
                    limit: MAX_VALUE_BYTES as u64,
                };
                return (Effect::Unchanged, result);
            }
            if condition.as_ref().is_some_and(|c| !c.holds(current)) {
                return failed();
            }
            let rec = Versioned {
                value: value.clone(),
                version,
            };
            (Effect::Set(rec), CommandResult::Written { version })
        }
        Command::Delete { condition, .. } => {
            if condition.as_ref().is_some_and(|c| !c.holds(current)) {
                return failed();
            }
            let existed = current.is_some();
            let effect = if existed {
                Effect::Remove
            } else {
                Effect::Unchanged
            };
            (effect, CommandResult::Deleted { existed })
        }
        Command::Append { suffix, .. } => append(version, current, suffix, MAX_VALUE_BYTES),
        Command::AppendBounded {
            suffix,
            max_value_bytes,
            ..
        } => {
            let limit = usize::try_from(*max_value_bytes)
                .unwrap_or(usize::MAX)
                .min(MAX_VALUE_BYTES);
            append(version, current, suffix, limit)
        }
        // Not key writes: applied by the state machine against its slot table.
        _ => (Effect::Unchanged, CommandResult::None),
    }
}

/// An append of `suffix` at `version` whose result may be at most `limit` bytes.
fn append(
    version: u64,
    current: Option<&Versioned>,
    suffix: &str,
    limit: usize,
) -> (Effect, CommandResult) {
    let old = current.map_or("", |r| r.value.as_str());
    let len = old.len().saturating_add(suffix.len());
    if len > limit {
        let result = CommandResult::ValueTooLarge {
            len: len as u64,
            limit: limit as u64,
        };
        return (Effect::Unchanged, result);
    }
    let mut value = String::with_capacity(len);
    value.push_str(old);
    value.push_str(suffix);
    let rec = Versioned { value, version };
    (Effect::Set(rec), CommandResult::Written { version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(value: &str, version: u64) -> Versioned {
        Versioned {
            value: value.into(),
            version,
        }
    }

    fn put(cond: Option<Condition>) -> Command {
        Command::Put {
            key: "k".into(),
            value: "new".into(),
            condition: cond,
        }
    }

    // A put stores the value at the entry's index as version.
    #[test]
    fn put_sets_version_to_log_index() {
        let (eff, res) = apply(&put(None), 9, Some(&rec("old", 3)));
        assert!(matches!(eff, Effect::Set(r) if r == rec("new", 9)));
        assert_eq!(res, CommandResult::Written { version: 9 });
    }

    // Conditional puts: by version (0 = absent) and by value (None = absent).
    #[test]
    fn conditions_are_checked_against_current_record() {
        let cur = rec("old", 3);
        let cases = [
            (Condition::Version(3), Some(&cur), true),
            (Condition::Version(4), Some(&cur), false),
            (Condition::Version(0), None, true),
            (Condition::Version(0), Some(&cur), false),
            (Condition::Value(Some("old".into())), Some(&cur), true),
            (Condition::Value(Some("other".into())), Some(&cur), false),
            (Condition::Value(None), None, true),
            (Condition::Value(None), Some(&cur), false),
            (Condition::Value(Some("old".into())), None, false),
        ];
        for (cond, current, ok) in cases {
            let (_, res) = apply(&put(Some(cond.clone())), 10, current);
            let written = matches!(res, CommandResult::Written { .. });
            assert_eq!(written, ok, "{cond:?} on {current:?}");
            if !ok {
                assert_eq!(
                    res,
                    CommandResult::ConditionFailed {
                        current: current.cloned()
                    }
                );
            }
        }
    }

    // Append treats an absent key as empty.
    #[test]
    fn append_concatenates() {
        let cmd = Command::Append {
            key: "k".into(),
            suffix: "b".into(),
        };
        let (eff, _) = apply(&cmd, 5, None);
        assert!(matches!(eff, Effect::Set(r) if r == rec("b", 5)));
        let (eff, _) = apply(&cmd, 6, Some(&rec("a", 5)));
        assert!(matches!(eff, Effect::Set(r) if r == rec("ab", 6)));
    }

    // A bounded append is refused, writing nothing, when the result would exceed its own limit
    // or the hard cap; at the limit exactly it is written.
    #[test]
    fn bounded_append_is_refused_past_its_limit() {
        let cmd = |max| Command::AppendBounded {
            key: "k".into(),
            suffix: "cd".into(),
            max_value_bytes: max,
        };
        let (eff, res) = apply(&cmd(4), 7, Some(&rec("ab", 5)));
        assert!(matches!(eff, Effect::Set(r) if r == rec("abcd", 7)));
        assert_eq!(res, CommandResult::Written { version: 7 });
        let (eff, res) = apply(&cmd(3), 7, Some(&rec("ab", 5)));
        assert!(matches!(eff, Effect::Unchanged));
        assert_eq!(res, CommandResult::ValueTooLarge { len: 4, limit: 3 });
        let big = rec(&"x".repeat(MAX_VALUE_BYTES - 1), 5);
        let (eff, res) = apply(&cmd(u64::MAX), 7, Some(&big));
        assert!(matches!(eff, Effect::Unchanged));
        let (len, limit) = ((MAX_VALUE_BYTES + 1) as u64, MAX_VALUE_BYTES as u64);
        assert_eq!(res, CommandResult::ValueTooLarge { len, limit });
    }

    // Puts past the hard cap and writes of keys past the key cap are refused; deletes are not.
    #[test]
    fn hard_caps_refuse_puts_and_huge_keys() {
        let (eff, res) = apply(
            &Command::Put {
                key: "k".into(),
                value: "x".repeat(MAX_VALUE_BYTES + 1),
                condition: None,
            },
            3,
            None,
        );
        assert!(matches!(eff, Effect::Unchanged));
        assert!(
            matches!(res, CommandResult::ValueTooLarge { .. }),
            "{res:?}"
        );
        let huge = "k".repeat(MAX_KEY_BYTES + 1);
        let (eff, res) = apply(
            &Command::Append {
                key: huge.clone(),
                suffix: "v".into(),
            },
            3,
            None,
        );
        assert!(matches!(eff, Effect::Unchanged));
        assert!(matches!(res, CommandResult::KeyTooLarge { .. }), "{res:?}");
        let (_, res) = apply(
            &Command::Delete {
                key: huge,
                condition: None,
            },
            3,
            None,
        );
        assert_eq!(res, CommandResult::Deleted { existed: false });
    }

    // Deleting reports whether the key existed; a failed condition leaves it.
    #[test]
    fn delete_reports_existence() {
        let del = |c| Command::Delete {
            key: "k".into(),
            condition: c,
        };
        assert_eq!(
            apply(&del(None), 2, None).1,
            CommandResult::Deleted { existed: false }
        );
        let (eff, res) = apply(&del(None), 2, Some(&rec("a", 1)));
        assert!(matches!(eff, Effect::Remove));
        assert_eq!(res, CommandResult::Deleted { existed: true });
        let (eff, _) = apply(&del(Some(Condition::Version(7))), 2, Some(&rec("a", 1)));
        assert!(matches!(eff, Effect::Unchanged));
    }

    // The record encoding round-trips and rejects short input.
    #[test]
    fn record_encoding_round_trips() {
        let r = rec("héllo", 42);
        assert_eq!(Versioned::decode(&r.encode()), Some(r));
        assert_eq!(Versioned::decode(b"short"), None);
    }

    /// Bytes written as hex pairs, blanks ignored.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
            .collect()
    }

    // Commands are in the Raft log: their bincode encoding, conditions included, is a persistent
    // format. The expected bytes were produced by the definitions before `Condition` moved to
    // kvorum-wire (bincode 1: u32 LE variant index, u8 option tag, u64 LE string length).
    #[test]
    fn command_encoding_is_unchanged() {
        let put = |condition| Command::Put {
            key: "k".into(),
            value: "v".into(),
            condition,
        };
        // Put: variant 0, key "k", value "v", then the condition.
        let put_prefix = "00000000 0100000000000000 6b 0100000000000000 76";
        let cases = [
            (put(None), format!("{put_prefix} 00")),
            (
                put(Some(Condition::Version(7))),
                format!("{put_prefix} 01 00000000 0700000000000000"),
            ),
            (
                put(Some(Condition::Value(Some("x".into())))),
                format!("{put_prefix} 01 01000000 01 0100000000000000 78"),
            ),
            (
                put(Some(Condition::Value(None))),
                format!("{put_prefix} 01 01000000 00"),
            ),
            (
                Command::Delete {
                    key: "k".into(),
                    condition: Some(Condition::Version(0)),
                },
                "01000000 0100000000000000 6b 01 00000000 0000000000000000".to_string(),
            ),
        ];
        for (cmd, bytes) in cases {
            let encoded = bincode::serialize(&cmd).expect("encodes");
            assert_eq!(encoded, hex(&bytes), "{cmd:?}");
            let decoded: Command = bincode::deserialize(&encoded).expect("decodes");
            assert_eq!(decoded, cmd);
        }
    }

    // Entries written before the slot admin commands existed decode as they did: the append
    // variants and the results keep their indices, and the new variants come after them.
    #[test]
    fn old_encodings_still_decode() {
        let cases = [
            (
                "02000000 0100000000000000 6b 0100000000000000 76",
                Command::Append {
                    key: "k".into(),
                    suffix: "v".into(),
                },
            ),
            (
                "03000000 0100000000000000 6b 0100000000000000 76 0500000000000000",
                Command::AppendBounded {
                    key: "k".into(),
                    suffix: "v".into(),
                    max_value_bytes: 5,
                },
            ),
        ];
        for (bytes, cmd) in cases {
            let decoded: Command = bincode::deserialize(&hex(bytes)).expect("decodes");
            assert_eq!(decoded, cmd);
            assert_eq!(bincode::serialize(&cmd).expect("encodes"), hex(bytes));
        }
        let results = [
            ("00000000", CommandResult::None),
            (
                "01000000 0900000000000000",
                CommandResult::Written { version: 9 },
            ),
            ("02000000 01", CommandResult::Deleted { existed: true }),
            (
                "04000000 0500000000000000 0400000000000000",
                CommandResult::ValueTooLarge { len: 5, limit: 4 },
            ),
            (
                "05000000 0500000000000000 0400000000000000",
                CommandResult::KeyTooLarge { len: 5, limit: 4 },
            ),
        ];
        for (bytes, res) in results {
            let decoded: CommandResult = bincode::deserialize(&hex(bytes)).expect("decodes");
            assert_eq!(decoded, res);
        }
        // The first new variants follow the old ones.
        let init = bincode::serialize(&Command::InitSlots { owned: vec![] }).expect("encodes");
        assert_eq!(init, hex("04000000 0000000000000000"));
        let frozen = bincode::serialize(&CommandResult::Frozen { slot: 1 }).expect("encodes");
        assert_eq!(frozen, hex("06000000 0100"));
        assert_eq!(
            serde_json::to_string(&crate::SlotState::Incoming).expect("encodes"),
            r#""incoming""#
        );
    }

    // The routed form and ActivateAt come after every older variant, and Misrouted after every
    // older result: entries and results written before them decode as they did.
    #[test]
    fn routed_commands_are_appended_variants() {
        let routed = Command::Put {
            key: "k".into(),
            value: "v".into(),
            condition: None,
        }
        .routed(1, 2);
        assert_eq!(
            bincode::serialize(&routed).expect("encodes"),
            hex("0f000000 0100 0200000000000000 \
                 00000000 0100000000000000 6b 0100000000000000 76 00")
        );
        assert_eq!(routed.written_key(), Some("k"));
        let activate = Command::ActivateAt {
            slots: vec![(3, 4)],
            epoch: 5,
        };
        assert_eq!(
            bincode::serialize(&activate).expect("encodes"),
            hex("10000000 0100000000000000 0300 0400 0500000000000000")
        );
        let misrouted = CommandResult::Misrouted {
            slot: 1,
            key_slot: None,
        };
        assert_eq!(
            bincode::serialize(&misrouted).expect("encodes"),
            hex("0b000000 0100 00")
        );
    }

    // A record (in a `ConditionFailed` result) keeps its serde shape: value then version.
    #[test]
    fn record_serde_shape_is_unchanged() {
        let res = CommandResult::ConditionFailed {
            current: Some(rec("v", 3)),
        };
        assert_eq!(
            bincode::serialize(&res).expect("encodes"),
            hex("03000000 01 0100000000000000 76 0300000000000000")
        );
        assert_eq!(
            serde_json::to_string(&rec("v", 3)).expect("encodes"),
            r#"{"value":"v","version":3}"#
        );
    }
}
