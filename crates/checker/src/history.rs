//! Event lines, operations and the JSON Lines parser.
//!
//! A history file is a sequence of [`Event`]s. The parser pairs each
//! completion with the open invoke of the same process and produces one
//! [`Operation`] per invoke. All validation that needs context (pairing,
//! matching `f`/`key`, time order) lives in [`Assembler`], so the file
//! parser and the in-memory [`HistoryBuilder`] reject exactly the same
//! histories with the same messages.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, Write};

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
/// per-line rules; pairing rules are enforced by [`parse_history`] and
/// [`HistoryBuilder::build`]. Serializing writes `null` wherever the field
/// is required, so every `Event` round-trips.
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
struct RawEvent {
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

/// What an operation asked for (its invoke arguments).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Command {
    /// Read the key.
    Get,
    /// Set the key.
    Put {
        /// New value.
        value: String,
    },
    /// Remove the key.
    Delete,
    /// Compare-and-swap.
    Cas {
        /// Required current value (`None` = absent).
        expected: Option<String>,
        /// Value to install (`None` = make absent).
        value: Option<String>,
    },
    /// Append to the current value (absent counts as empty).
    Append {
        /// Suffix to append.
        value: String,
    },
}

impl Command {
    /// The operation name.
    pub fn f(&self) -> OpFn {
        match self {
            Command::Get => OpFn::Get,
            Command::Put { .. } => OpFn::Put,
            Command::Delete => OpFn::Delete,
            Command::Cas { .. } => OpFn::Cas,
            Command::Append { .. } => OpFn::Append,
        }
    }

    /// `get`, `put("v")`, `cas("a" -> "b")`, ... for reports.
    pub fn label(&self) -> String {
        match self {
            Command::Get => "get".to_string(),
            Command::Put { value } => format!("put({value:?})"),
            Command::Delete => "delete".to_string(),
            Command::Cas { expected, value } => {
                format!("cas({} -> {})", show_value(expected), show_value(value))
            }
            Command::Append { value } => format!("append({value:?})"),
        }
    }

    /// Builds the invoke event for this command.
    pub fn invoke_event(&self, process: u64, key: &str, time: u64) -> Event {
        let (value, expected) = match self {
            Command::Get | Command::Delete => (None, None),
            Command::Put { value } | Command::Append { value } => (Some(value.clone()), None),
            Command::Cas { expected, value } => (value.clone(), expected.clone()),
        };
        Event {
            process,
            kind: EventType::Invoke,
            f: self.f(),
            key: key.to_string(),
            value,
            expected,
            version: None,
            deleted: None,
            time,
        }
    }

    fn from_invoke(e: &Event) -> Command {
        match e.f {
            OpFn::Get => Command::Get,
            OpFn::Put => Command::Put {
                value: e.value.clone().unwrap_or_default(),
            },
            OpFn::Delete => Command::Delete,
            OpFn::Cas => Command::Cas {
                expected: e.expected.clone(),
                value: e.value.clone(),
            },
            OpFn::Append => Command::Append {
                value: e.value.clone().unwrap_or_default(),
            },
        }
    }
}

/// `"v"` for a value, `absent` for `None`.
pub(crate) fn show_value(v: &Option<String>) -> String {
    match v {
        Some(s) => format!("{s:?}"),
        None => "absent".to_string(),
    }
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Outcome {
    /// Completed with `ok`.
    Ok,
    /// Completed with `fail`.
    Fail,
    /// Completed with `info`, or never completed.
    Info,
}

impl Outcome {
    /// `ok`, `fail` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Info => "info",
        }
    }
}

/// One invoke paired with its completion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Operation {
    /// Index in [`History::ops`] (invoke order in the file); reports use it
    /// as the operation's name (`#id`).
    pub id: usize,
    /// Client process.
    pub process: u64,
    /// Key the operation touches.
    pub key: String,
    /// Invoke arguments.
    pub command: Command,
    /// Completion kind (`Info` if it never completed).
    pub outcome: Outcome,
    /// For a `get` that completed `ok`: the value read (`None` = absent).
    /// Always `None` otherwise.
    pub read: Option<String>,
    /// For an op that completed `ok` with a recorded version: the version
    /// the write gave the key, or the version a get read.
    pub version: Option<u64>,
    /// For a `delete` that completed `ok` with the flag recorded: whether
    /// the key existed. `None` otherwise.
    pub deleted: Option<bool>,
    /// Invoke time (ns).
    pub invoke_time: u64,
    /// Completion time (ns), `None` if no completion event was seen.
    pub complete_time: Option<u64>,
}

impl Operation {
    /// `put("v")`, `get -> "v"`, `cas("a" -> "b") fail`, `delete ?` ...
    pub fn label(&self) -> String {
        let mut s = self.command.label();
        match (self.outcome, &self.command) {
            (Outcome::Ok, Command::Get) => {
                s.push_str(" -> ");
                s.push_str(&show_value(&self.read));
            }
            (Outcome::Ok, Command::Delete) => match self.deleted {
                Some(true) => s.push_str(" -> existed"),
                Some(false) => s.push_str(" -> absent"),
                None => {}
            },
            (Outcome::Ok, _) => {}
            (Outcome::Fail, _) => s.push_str(" fail"),
            (Outcome::Info, _) => s.push_str(" ?"),
        }
        s
    }
}

/// A parsed history: every operation, in invoke order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct History {
    /// `ops[i].id == i`.
    pub ops: Vec<Operation>,
}

impl History {
    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when there are no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// Why a history was rejected, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line number of the first bad line (event index + 1 for
    /// [`HistoryBuilder`]).
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

/// Pairs events into operations; shared by the file parser and the builder.
#[derive(Default)]
pub(crate) struct Assembler {
    ops: Vec<Operation>,
    /// process -> (index in ops, line of the invoke)
    open: HashMap<u64, (usize, usize)>,
    /// process -> (completion time, invoke line) of its last completed op.
    done: HashMap<u64, (u64, usize)>,
}

impl Assembler {
    pub(crate) fn push(&mut self, e: Event, line: usize) -> Result<(), ParseErrorKind> {
        if e.kind == EventType::Invoke {
            if let Some(&(_, open_line)) = self.open.get(&e.process) {
                return Err(ParseErrorKind::InvokeWhileOpen {
                    process: e.process,
                    open_line,
                });
            }
            if let Some(&(previous_complete, previous_line)) = self.done.get(&e.process) {
                if e.time < previous_complete {
                    return Err(ParseErrorKind::InvokeBeforePreviousCompletion {
                        process: e.process,
                        time: e.time,
                        previous_line,
                        previous_complete,
                    });
                }
            }
            let id = self.ops.len();
            self.ops.push(Operation {
                id,
                process: e.process,
                command: Command::from_invoke(&e),
                key: e.key,
                outcome: Outcome::Info,
                read: None,
                version: None,
                deleted: None,
                invoke_time: e.time,
                complete_time: None,
            });
            self.open.insert(e.process, (id, line));
            return Ok(());
        }
        let Some(&(id, invoke_line)) = self.open.get(&e.process) else {
            return Err(ParseErrorKind::CompletionWithoutInvoke {
                process: e.process,
                kind: e.kind,
            });
        };
        // `id` always indexes `ops`: `open` only holds indices we pushed.
        let Some(op) = self.ops.get_mut(id) else {
            return Err(ParseErrorKind::CompletionWithoutInvoke {
                process: e.process,
                kind: e.kind,
            });
        };
        if op.command.f() != e.f || op.key != e.key {
            return Err(ParseErrorKind::CompletionMismatch {
                f: e.f,
                key: e.key,
                invoke_f: op.command.f(),
                invoke_key: op.key.clone(),
                invoke_line,
            });
        }
        if e.time < op.invoke_time {
            return Err(ParseErrorKind::TimeBeforeInvoke {
                time: e.time,
                invoke_time: op.invoke_time,
                invoke_line,
            });
        }
        op.complete_time = Some(e.time);
        op.outcome = match e.kind {
            EventType::Ok => Outcome::Ok,
            EventType::Fail => Outcome::Fail,
            EventType::Info | EventType::Invoke => Outcome::Info,
        };
        if op.outcome == Outcome::Ok && e.f == OpFn::Get {
            op.read = e.value;
        }
        if op.outcome == Outcome::Ok {
            op.version = e.version;
        }
        if op.outcome == Outcome::Ok && e.f == OpFn::Delete {
            op.deleted = e.deleted;
        }
        self.open.remove(&e.process);
        self.done.insert(e.process, (e.time, invoke_line));
        Ok(())
    }

    /// Operations still open stay `Outcome::Info` with no completion time.
    pub(crate) fn finish(self) -> History {
        History { ops: self.ops }
    }
}

/// Parses a JSON Lines history. Blank lines are ignored; unknown fields are
/// ignored. Returns the first bad line's number and what is wrong with it.
pub fn parse_history(reader: impl BufRead) -> Result<History, ParseError> {
    let mut asm = Assembler::default();
    for (i, line) in reader.lines().enumerate() {
        let line_no = i + 1;
        let err = |kind| ParseError {
            line: line_no,
            kind,
        };
        let text = line.map_err(|e| err(ParseErrorKind::Io(e.to_string())))?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let raw: RawEvent =
            serde_json::from_str(text).map_err(|e| err(ParseErrorKind::Json(e.to_string())))?;
        let event = Event::try_from(raw).map_err(err)?;
        asm.push(event, line_no).map_err(err)?;
    }
    Ok(asm.finish())
}

/// Writes one event as a JSON line.
pub fn write_event(out: &mut dyn Write, event: &Event) -> io::Result<()> {
    serde_json::to_writer(&mut *out, event).map_err(io::Error::other)?;
    out.write_all(b"\n")
}

/// Builds a history in memory with explicit timestamps (tests, simulators).
///
/// Completions (`ok`, `fail`, `info`) fill in `f` and `key` from the
/// process's open invoke. Mistakes are not reported immediately but by
/// [`HistoryBuilder::build`], with the event's 1-based index as `line`, so
/// calls chain.
#[derive(Clone, Debug, Default)]
pub struct HistoryBuilder {
    events: Vec<Event>,
    open: HashMap<u64, (OpFn, String)>,
}

impl HistoryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a raw event.
    pub fn event(&mut self, event: Event) -> &mut Self {
        match event.kind {
            EventType::Invoke => {
                self.open
                    .entry(event.process)
                    .or_insert((event.f, event.key.clone()));
            }
            _ => {
                self.open.remove(&event.process);
            }
        }
        self.events.push(event);
        self
    }

    /// Process `process` invokes `command` on `key` at `time`.
    pub fn invoke(&mut self, process: u64, time: u64, key: &str, command: Command) -> &mut Self {
        self.event(command.invoke_event(process, key, time))
    }

    fn complete(
        &mut self,
        process: u64,
        time: u64,
        kind: EventType,
        value: Option<String>,
        version: Option<u64>,
    ) -> &mut Self {
        self.complete_event(process, time, kind, value, version, None)
    }

    fn complete_event(
        &mut self,
        process: u64,
        time: u64,
        kind: EventType,
        value: Option<String>,
        version: Option<u64>,
        deleted: Option<bool>,
    ) -> &mut Self {
        // An unknown process yields an event that build() rejects with
        // CompletionWithoutInvoke at this position.
        let (f, key) = self
            .open
            .get(&process)
            .cloned()
            .unwrap_or((OpFn::Get, String::new()));
        self.event(Event {
            process,
            kind,
            f,
            key,
            value,
            expected: None,
            version,
            deleted,
            time,
        })
    }

    /// The open `delete` of `process` completes `ok`; `deleted` is the
    /// node's answer (whether the key existed).
    pub fn ok_deleted(&mut self, process: u64, time: u64, deleted: bool) -> &mut Self {
        self.complete_event(process, time, EventType::Ok, None, None, Some(deleted))
    }

    /// The open operation of `process` completes `ok`; `read` is the value
    /// read by a `get` (`None` = absent) and ignored otherwise.
    pub fn ok(&mut self, process: u64, time: u64, read: Option<&str>) -> &mut Self {
        self.complete(process, time, EventType::Ok, read.map(str::to_string), None)
    }

    /// Like [`HistoryBuilder::ok`], with the version the node returned (a
    /// write's new version, or the version a get read).
    pub fn ok_versioned(
        &mut self,
        process: u64,
        time: u64,
        read: Option<&str>,
        version: u64,
    ) -> &mut Self {
        self.complete(
            process,
            time,
            EventType::Ok,
            read.map(str::to_string),
            Some(version),
        )
    }

    /// The open operation of `process` completes `fail`.
    pub fn fail(&mut self, process: u64, time: u64) -> &mut Self {
        self.complete(process, time, EventType::Fail, None, None)
    }

    /// The open operation of `process` completes `info` (unknown outcome).
    pub fn info(&mut self, process: u64, time: u64) -> &mut Self {
        self.complete(process, time, EventType::Info, None, None)
    }

    /// The events so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Writes the events as JSON Lines.
    pub fn write_jsonl(&self, out: &mut dyn Write) -> io::Result<()> {
        for e in &self.events {
            write_event(out, e)?;
        }
        Ok(())
    }

    /// Pairs the events into a [`History`], with the same rules as
    /// [`parse_history`].
    pub fn build(&self) -> Result<History, ParseError> {
        let mut asm = Assembler::default();
        for (i, e) in self.events.iter().enumerate() {
            asm.push(e.clone(), i + 1)
                .map_err(|kind| ParseError { line: i + 1, kind })?;
        }
        Ok(asm.finish())
    }
}
