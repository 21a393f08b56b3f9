//! Event lines: the wire format of a history file (one JSON object per
//! line), the rules a single line must satisfy on its own, and the errors
//! invalid input is reported with. Pairing lines into operations is
//! `assemble.rs`.

use std::fmt;
use std::io::{self, Write};

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `type` field of an event line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// The client sent the request.
    Invoke,
    /// The operation definitely took effect (for `get`: this is what it read).
    Ok,
    /// The operation definitely did not take effect (for `cas`: it observed a
    /// value different from `expected`).
    Fail,
    /// The outcome is unknown (timeout, crash): it may take effect at any
    /// point after its invocation, or never.
    Info,
}

impl EventType {
    /// The wire spelling (`"invoke"`, `"ok"`, `"fail"`, `"info"`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "invoke" => EventType::Invoke,
            "ok" => EventType::Ok,
            "fail" => EventType::Fail,
            "info" => EventType::Info,
            _ => return None,
        })
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `f` field of an event line: which key-value operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpFn {
    /// Read the key; completes with the read `value` (`null` = absent).
    Get,
    /// Set the key to `value`.
    Put,
    /// Make the key absent.
    Delete,
    /// Compare-and-swap: if the current value equals `expected` (`null` =
    /// absent) set it to `value` (`null` = make absent).
    Cas,
    /// Append `value` to the current string (absent counts as empty).
    Append,
}

impl OpFn {
    /// The wire spelling (`"get"`, `"put"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OpFn::Get => "get",
            OpFn::Put => "put",
            OpFn::Delete => "delete",
            OpFn::Cas => "cas",
            OpFn::Append => "append",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "get" => OpFn::Get,
            "put" => OpFn::Put,
            "delete" => OpFn::Delete,
            "cas" => OpFn::Cas,
            "append" => OpFn::Append,
            _ => return None,
        })
    }
}

impl fmt::Display for OpFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a history file.
///
/// On the wire `value` and `expected` distinguish "missing" from `null`:
/// a `get` `ok` must carry `value` (null meaning absent) and a `cas` invoke
/// must carry both `expected` and `value`. Deserializing enforces those
/// per-line rules; pairing rules are enforced by
/// [`parse_history`](crate::parse_history) and
/// [`HistoryBuilder::build`](crate::HistoryBuilder::build). Serializing
/// writes `null` wherever the field is required, so every `Event`
/// round-trips.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawEvent")]
pub struct Event {
    /// Client process id; a process has at most one operation open.
    pub process: u64,
    /// Invoke or completion kind (`"type"` on the wire).
    pub kind: EventType,
    /// Which operation; a completion repeats the invoke's `f`.
    pub f: OpFn,
    /// The key; a completion repeats the invoke's key.
    pub key: String,
    /// put/append/cas argument on invoke; the read value on a `get` `ok`.
    pub value: Option<String>,
    /// cas only: the value the key must hold for the swap (`None` = absent).
    pub expected: Option<String>,
    /// Optional, on an `ok` completion only: for put/append/delete/cas the
    /// version the node gave the key by this write; for a get the version
    /// of the value it read. Ignored elsewhere; absent = not recorded.
    pub version: Option<u64>,
    /// Optional, on a `delete` `ok` only: whether the key existed (the
    /// node's `deleted` answer). Ignored elsewhere; absent = not recorded
    /// (older histories), and the delete is then checked as a blind write.
    pub deleted: Option<bool>,
    /// Nanoseconds since the start of the run.
    pub time: u64,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Write `null` only where the reader needs the field to be present,
        // so ordinary lines stay short.
        let value_required = matches!(
            (self.f, self.kind),
            (OpFn::Get, EventType::Ok) | (OpFn::Cas, EventType::Invoke)
        );
        let expected_required = self.f == OpFn::Cas && self.kind == EventType::Invoke;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("process", &self.process)?;
        map.serialize_entry("type", self.kind.as_str())?;
        map.serialize_entry("f", self.f.as_str())?;
        map.serialize_entry("key", &self.key)?;
        if self.value.is_some() || value_required {
            map.serialize_entry("value", &self.value)?;
        }
        if self.expected.is_some() || expected_required {
            map.serialize_entry("expected", &self.expected)?;
        }
        if let Some(v) = self.version {
            map.serialize_entry("version", &v)?;
        }
        if let Some(d) = self.deleted {
            map.serialize_entry("deleted", &d)?;
        }
        map.serialize_entry("time", &self.time)?;
        map.end()
    }
}

/// The literal shape of a line. `Option<Option<_>>` keeps "missing" (outer
/// `None`) apart from `null` (inner `None`).
#[derive(Deserialize)]
pub(crate) struct RawEvent {
    process: u64,
    #[serde(rename = "type")]
    kind: String,
    f: String,
    key: String,
    #[serde(default, deserialize_with = "present")]
    value: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    expected: Option<Option<String>>,
    #[serde(default)]
    version: Option<u64>,
    #[serde(default)]
    deleted: Option<bool>,
    time: u64,
}

/// Called only when the field is present, so wrapping in `Some` marks presence.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl TryFrom<RawEvent> for Event {
    type Error = ParseErrorKind;

    fn try_from(raw: RawEvent) -> Result<Self, Self::Error> {
        let kind = EventType::parse(&raw.kind).ok_or(ParseErrorKind::UnknownType(raw.kind))?;
        let f = OpFn::parse(&raw.f).ok_or(ParseErrorKind::UnknownFunction(raw.f))?;
        let missing = |field: &'static str, what: &'static str| ParseErrorKind::MissingValue {
            f,
            kind,
            field,
            what,
        };
        match (f, kind) {
            (OpFn::Put | OpFn::Append, EventType::Invoke)
                if !matches!(raw.value, Some(Some(_))) =>
            {
                return Err(missing("value", "a string"));
            }
            (OpFn::Cas, EventType::Invoke) => {
                if raw.expected.is_none() {
                    return Err(missing("expected", "a string, or null for \"key absent\""));
                }
                if raw.value.is_none() {
                    return Err(missing("value", "a string, or null to make the key absent"));
                }
            }
            (OpFn::Get, EventType::Ok) if raw.value.is_none() => {
                return Err(missing("value", "the value read, or null when absent"));
            }
            _ => {}
        }
        Ok(Event {
            process: raw.process,
            kind,
            f,
            key: raw.key,
            value: raw.value.flatten(),
            expected: raw.expected.flatten(),
            version: raw.version,
            deleted: raw.deleted,
            time: raw.time,
        })
    }
}

/// Why a history was rejected, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number of the first bad line (event index + 1 for
    /// [`HistoryBuilder`](crate::HistoryBuilder)).
    pub line: usize,
    /// What is wrong with it.
    pub kind: ParseErrorKind,
}

/// The kinds of invalid input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The reader failed (includes invalid UTF-8).
    #[error("cannot read input: {0}")]
    Io(String),
    /// Not a JSON object of the expected shape (missing or mistyped field).
    #[error("invalid JSON event: {0}")]
    Json(String),
    /// `type` is not invoke/ok/fail/info.
    #[error("unknown event type {0:?} (expected invoke, ok, fail or info)")]
    UnknownType(String),
    /// `f` is not get/put/delete/cas/append.
    #[error("unknown operation {0:?} (expected get, put, delete, cas or append)")]
    UnknownFunction(String),
    /// A completion for a process that has no open operation.
    #[error("{kind} event for process {process} without an open invoke")]
    CompletionWithoutInvoke {
        /// The process.
        process: u64,
        /// The completion kind.
        kind: EventType,
    },
    /// An invoke for a process that already has an open operation.
    #[error("invoke for process {process} while its operation invoked on line {open_line} is still open")]
    InvokeWhileOpen {
        /// The process.
        process: u64,
        /// Line of the open invoke.
        open_line: usize,
    },
    /// An invoke earlier than the completion of the same process's
    /// previous operation: the process would have two operations open at
    /// once, which no client can do.
    #[error("process {process} invokes at time {time}, before its previous operation (invoked on line {previous_line}) completed at time {previous_complete}")]
    InvokeBeforePreviousCompletion {
        /// The process.
        process: u64,
        /// The new invoke's time.
        time: u64,
        /// Line of the previous operation's invoke.
        previous_line: usize,
        /// Completion time of the previous operation.
        previous_complete: u64,
    },
    /// A completion whose `f` or `key` differ from its invoke's.
    #[error("completion is {f} on key {key:?} but the open invoke (line {invoke_line}) is {invoke_f} on key {invoke_key:?}")]
    CompletionMismatch {
        /// Completion's f.
        f: OpFn,
        /// Completion's key.
        key: String,
        /// Invoke's f.
        invoke_f: OpFn,
        /// Invoke's key.
        invoke_key: String,
        /// Line of the invoke.
        invoke_line: usize,
    },
    /// A required `value`/`expected` is missing (or null where a string is needed).
    #[error("{f} {kind} event needs `{field}`: {what}")]
    MissingValue {
        /// Operation.
        f: OpFn,
        /// Event type.
        kind: EventType,
        /// `value` or `expected`.
        field: &'static str,
        /// What it must be.
        what: &'static str,
    },
    /// A completion earlier than its invoke.
    #[error("completion time {time} is before the invoke time {invoke_time} (line {invoke_line})")]
    TimeBeforeInvoke {
        /// Completion time.
        time: u64,
        /// Invoke time.
        invoke_time: u64,
        /// Line of the invoke.
        invoke_line: usize,
    },
}

/// Writes one event as a JSON line.
pub fn write_event(out: &mut dyn Write, event: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *out, event).map_err(io::Error::other)?;
    out.write_all(b"\n")
}
