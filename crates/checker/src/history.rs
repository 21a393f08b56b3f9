//! The history model: operations (an invoke paired with its completion)
//! and the history they form. Event lines are `event.rs`; pairing them
//! into a [`History`] is `assemble.rs`.

use serde::Serialize;

use crate::event::{Event, EventType, OpFn};

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

    pub(crate) fn from_invoke(e: &Event) -> Command {
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
