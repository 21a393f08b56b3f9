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
    // to)` within `0..SLOT_COUNT`; a bad range is refused ([`AdminResult::BadSlotRange`]).
    // Every one is checked for all its slots before any changes: a refusal
    // ([`AdminResult::SlotState`]) changes nothing.
    /// Initializes an uninitialized slot table: `owned` Owned, every other slot Released. A no-op
    /// on an initialized table. Until then a group serves every slot.
    InitSlots {
        /// The slots the group owns.
        owned: Vec<(u16, u16)>,
    },
    /// Owned → Frozen (Frozen stays): writes to the slots are refused with
    /// [`WriteResult::Frozen`]; reads are still served.
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
    /// with [`WriteResult::Misrouted`] if `write` is not a key write or `slot` is not its key's,
    /// with [`WriteResult::NotOwner`] if the group does not own the slot at `epoch` (not Owned,
    /// or owned only since a later epoch, see [`Command::ActivateAt`]), with
    /// [`WriteResult::Frozen`] if the slot is frozen; otherwise `write` applies as it would
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
    /// [`AdminResult::Fenced`] and no change, when the group's fence is already higher. A
    /// driver that resumes a task sends it to every group it touches before any other step.
    Fence {
        /// The driver's token.
        token: FenceToken,
    },
    /// A step of a view change or repair (a slot command, never a key write) sent by the driver
    /// holding `token`: refused with [`AdminResult::Fenced`], writing nothing, when the group's
    /// fence is above `token`; otherwise the fence is raised to `token` and `step` applies as it
    /// would alone. A `step` that is not a slot command is refused with
    /// [`WriteResult::Misrouted`] (nothing written). Nodes send every slot command in this form.
    Fenced {
        /// The driver's token.
        token: FenceToken,
        /// The slot command.
        step: Box<Command>,
    },
    /// Every replica hashes its group's applied state at this entry's index and records the
    /// hash ([`crate::Store::state_hash`]), so that replicas can be compared at the same index
    /// (the consistency check). Changes nothing; answers [`AdminResult::Hashed`]. Must stay
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
///
/// openraft has one response type per group, so this one holds the outcomes of every kind of
/// entry: a key write answers [`CommandResult::Write`], a slot command, a fence or a hash
/// [`CommandResult::Admin`] (or [`CommandResult::None`] when it applied with nothing to report).
///
/// Its serde form (the internal admin RPC carries it) is the flat enum it was before the
/// outcomes were split into [`WriteResult`] and [`AdminResult`], so its encoding is unchanged
/// (see the `result_encoding` module).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    from = "crate::result_encoding::FlatResult",
    into = "crate::result_encoding::FlatResult"
)]
pub enum CommandResult {
    /// A blank or membership entry: nothing to report. Also a slot command or a
    /// [`Command::Fence`] that applied.
    None,
    /// The outcome of a key write: [`Command::Put`], [`Command::Delete`], [`Command::Append`],
    /// [`Command::AppendBounded`], alone or in a [`Command::Routed`]; also the refusal of a
    /// [`Command::Fenced`] whose step is not a slot command.
    Write(WriteResult),
    /// The outcome of a slot command (alone or in a [`Command::Fenced`]), a [`Command::Fence`]
    /// or a [`Command::ComputeHash`], when there is one to report.
    Admin(AdminResult),
}

/// The outcome of a key write (see [`CommandResult::Write`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteResult {
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
    /// A [`Command::Routed`] whose write is not a key write, or whose `slot` is not its key's
    /// (`key_slot`): the proposer hashes keys differently; nothing was written. Also the refusal
    /// of a [`Command::Fenced`] whose step is not a slot command (`slot` 0, `key_slot` `None`).
    Misrouted {
        /// The slot the command named.
        slot: u16,
        /// The key's slot (`None`: the write is not a key write).
        key_slot: Option<u16>,
    },
}

/// The outcome, when there is one to report, of a slot admin command, a fence or a hash (see
/// [`CommandResult::Admin`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminResult {
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

impl From<WriteResult> for CommandResult {
    fn from(r: WriteResult) -> CommandResult {
        CommandResult::Write(r)
    }
}

impl From<AdminResult> for CommandResult {
    fn from(r: AdminResult) -> CommandResult {
        CommandResult::Admin(r)
    }
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
) -> (Effect, WriteResult) {
    let failed = || {
        (
            Effect::Unchanged,
            WriteResult::ConditionFailed {
                current: current.cloned(),
            },
        )
    };
    let key = cmd.key();
    if key.len() > MAX_KEY_BYTES && !matches!(cmd, Command::Delete { .. }) {
        let result = WriteResult::KeyTooLarge {
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
                let result = WriteResult::ValueTooLarge {
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
            (Effect::Set(rec), WriteResult::Written { version })
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
            (effect, WriteResult::Deleted { existed })
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
        // Not a key write (the state machine applies the others itself, never through here):
        // refused as a routed non-write would be.
        _ => (
            Effect::Unchanged,
            WriteResult::Misrouted {
                slot: 0,
                key_slot: None,
            },
        ),
    }
}

/// An append of `suffix` at `version` whose result may be at most `limit` bytes.
fn append(
    version: u64,
    current: Option<&Versioned>,
    suffix: &str,
    limit: usize,
) -> (Effect, WriteResult) {
    let old = current.map_or("", |r| r.value.as_str());
    let len = old.len().saturating_add(suffix.len());
    if len > limit {
        let result = WriteResult::ValueTooLarge {
            len: len as u64,
            limit: limit as u64,
        };
        return (Effect::Unchanged, result);
    }
    let mut value = String::with_capacity(len);
    value.push_str(old);
    value.push_str(suffix);
    let rec = Versioned { value, version };
    (Effect::Set(rec), WriteResult::Written { version })
}
