//! The serde form of [`CommandResult`]: one flat enum, the shape `CommandResult` had before its
//! outcomes were split into [`WriteResult`] and [`AdminResult`], so that the encoding did not
//! change (bincode in the internal admin RPC's `AdminReply::Result`; results are never stored).
//!
//! bincode encodes a variant by its position: MUST NOT reorder or change variants; a new outcome
//! is a new variant at the end (and its arm in both conversions below).

use serde::{Deserialize, Serialize};

use crate::command::{AdminResult, CommandResult, WriteResult};
use crate::{FenceToken, SlotState, Versioned};

/// [`CommandResult`] as it is encoded. Each variant is the one of [`WriteResult`] or
/// [`AdminResult`] of the same name (or [`CommandResult::None`]).
#[derive(Serialize, Deserialize)]
pub(crate) enum FlatResult {
    None,
    Written { version: u64 },
    Deleted { existed: bool },
    ConditionFailed { current: Option<Versioned> },
    ValueTooLarge { len: u64, limit: u64 },
    KeyTooLarge { len: u64, limit: u64 },
    Frozen { slot: u16 },
    NotOwner { slot: u16 },
    SlotState { slot: u16, state: SlotState },
    Ingested { written: u64, skipped: u64 },
    BadSlotRange { from: u16, to: u16 },
    Misrouted { slot: u16, key_slot: Option<u16> },
    Fenced { current: FenceToken },
    Hashed { index: u64, hash: u64 },
}

impl From<CommandResult> for FlatResult {
    fn from(r: CommandResult) -> FlatResult {
        match r {
            CommandResult::None => FlatResult::None,
            CommandResult::Write(w) => match w {
                WriteResult::Written { version } => FlatResult::Written { version },
                WriteResult::Deleted { existed } => FlatResult::Deleted { existed },
                WriteResult::ConditionFailed { current } => FlatResult::ConditionFailed { current },
                WriteResult::ValueTooLarge { len, limit } => {
                    FlatResult::ValueTooLarge { len, limit }
                }
                WriteResult::KeyTooLarge { len, limit } => FlatResult::KeyTooLarge { len, limit },
                WriteResult::Frozen { slot } => FlatResult::Frozen { slot },
                WriteResult::NotOwner { slot } => FlatResult::NotOwner { slot },
                WriteResult::Misrouted { slot, key_slot } => {
                    FlatResult::Misrouted { slot, key_slot }
                }
            },
            CommandResult::Admin(a) => match a {
                AdminResult::SlotState { slot, state } => FlatResult::SlotState { slot, state },
                AdminResult::Ingested { written, skipped } => {
                    FlatResult::Ingested { written, skipped }
                }
                AdminResult::BadSlotRange { from, to } => FlatResult::BadSlotRange { from, to },
                AdminResult::Fenced { current } => FlatResult::Fenced { current },
                AdminResult::Hashed { index, hash } => FlatResult::Hashed { index, hash },
            },
        }
    }
}

impl From<FlatResult> for CommandResult {
    fn from(r: FlatResult) -> CommandResult {
        use CommandResult::{Admin, Write};
        match r {
            FlatResult::None => CommandResult::None,
            FlatResult::Written { version } => Write(WriteResult::Written { version }),
            FlatResult::Deleted { existed } => Write(WriteResult::Deleted { existed }),
            FlatResult::ConditionFailed { current } => {
                Write(WriteResult::ConditionFailed { current })
            }
            FlatResult::ValueTooLarge { len, limit } => {
                Write(WriteResult::ValueTooLarge { len, limit })
            }
            FlatResult::KeyTooLarge { len, limit } => {
                Write(WriteResult::KeyTooLarge { len, limit })
            }
            FlatResult::Frozen { slot } => Write(WriteResult::Frozen { slot }),
            FlatResult::NotOwner { slot } => Write(WriteResult::NotOwner { slot }),
            FlatResult::Misrouted { slot, key_slot } => {
                Write(WriteResult::Misrouted { slot, key_slot })
            }
            FlatResult::SlotState { slot, state } => Admin(AdminResult::SlotState { slot, state }),
            FlatResult::Ingested { written, skipped } => {
                Admin(AdminResult::Ingested { written, skipped })
            }
            FlatResult::BadSlotRange { from, to } => Admin(AdminResult::BadSlotRange { from, to }),
            FlatResult::Fenced { current } => Admin(AdminResult::Fenced { current }),
            FlatResult::Hashed { index, hash } => Admin(AdminResult::Hashed { index, hash }),
        }
    }
}
