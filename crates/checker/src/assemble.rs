//! Pairing events into a [`History`]: the JSON Lines parser and the
//! in-memory [`HistoryBuilder`].
//!
//! The parser pairs each completion with the open invoke of the same
//! process and produces one [`Operation`] per invoke. All validation that
//! needs context (pairing, matching `f`/`key`, time order) lives in
//! [`Assembler`], so the file parser and the in-memory [`HistoryBuilder`]
//! reject exactly the same histories with the same messages.

use std::collections::HashMap;
use std::io::{self, BufRead, Write};

use crate::event::{write_event, Event, EventType, OpFn, ParseError, ParseErrorKind, RawEvent};
use crate::history::{Command, History, Operation, Outcome};

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
