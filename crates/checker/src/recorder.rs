//! A thread-safe recorder that a test harness uses to write a history file.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::event::{write_event, Event, EventType, OpFn};
use crate::history::Command;

struct Inner {
    out: BufWriter<Box<dyn Write + Send>>,
    start: Instant,
    last: Option<u64>,
    open: HashMap<u64, (OpFn, String)>,
}

/// Writes [`Event`]s as JSON Lines, stamping them with a monotonic clock.
///
/// Timestamps are taken under the same lock as the write, and are strictly
/// increasing, so file order equals time order and no two events tie (a tie
/// would make the checker treat an op and its successor as concurrent).
/// Completions fill in `f` and `key` from the process's open invoke.
/// Misuse (completing a process with nothing open, invoking twice) returns
/// `io::ErrorKind::InvalidInput` and writes nothing, so the file stays valid.
pub struct Recorder {
    inner: Mutex<Inner>,
}

impl Recorder {
    /// Records to an arbitrary writer; the clock starts now.
    pub fn new<W: Write + Send + 'static>(writer: W) -> Self {
        Recorder {
            inner: Mutex::new(Inner {
                out: BufWriter::new(Box::new(writer)),
                start: Instant::now(),
                last: None,
                open: HashMap::new(),
            }),
        }
    }

    /// Creates (truncates) `path` and records to it.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::new(File::create(path)?))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another harness thread must not lose the history: the
        // state is consistent between calls, so a poisoned lock is usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now(inner: &mut Inner) -> u64 {
        let elapsed = u64::try_from(inner.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let t = match inner.last {
            Some(last) => elapsed.max(last.saturating_add(1)),
            None => elapsed,
        };
        inner.last = Some(t);
        t
    }

    /// Process `process` invokes `command` on `key`. Returns the timestamp.
    pub fn invoke(&self, process: u64, key: &str, command: &Command) -> io::Result<u64> {
        let mut inner = self.lock();
        if inner.open.contains_key(&process) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("process {process} already has an open operation"),
            ));
        }
        let time = Self::now(&mut inner);
        let event = command.invoke_event(process, key, time);
        write_event(&mut inner.out, &event)?;
        inner.open.insert(process, (command.f(), key.to_string()));
        Ok(time)
    }

    fn complete(
        &self,
        process: u64,
        kind: EventType,
        value: Option<&str>,
        version: Option<u64>,
    ) -> io::Result<u64> {
        self.complete_event(process, kind, value, version, None)
    }

    fn complete_event(
        &self,
        process: u64,
        kind: EventType,
        value: Option<&str>,
        version: Option<u64>,
        deleted: Option<bool>,
    ) -> io::Result<u64> {
        let mut inner = self.lock();
        let Some((f, key)) = inner.open.get(&process).cloned() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("process {process} has no open operation"),
            ));
        };
        let time = Self::now(&mut inner);
        let event = Event {
            process,
            kind,
            f,
            key,
            value: value.map(str::to_string),
            expected: None,
            version,
            deleted,
            time,
        };
        write_event(&mut inner.out, &event)?;
        inner.open.remove(&process);
        Ok(time)
    }

    /// The open operation of `process` succeeded. `read` is what a `get`
    /// read (`None` = absent); it is ignored for other operations.
    pub fn ok(&self, process: u64, read: Option<&str>) -> io::Result<u64> {
        self.complete(process, EventType::Ok, read, None)
    }

    /// Like [`Recorder::ok`], with the version the node returned: a write's
    /// new version, or the version of the value a `get` read.
    pub fn ok_versioned(&self, process: u64, read: Option<&str>, version: u64) -> io::Result<u64> {
        self.complete(process, EventType::Ok, read, Some(version))
    }

    /// The open `delete` of `process` succeeded; `deleted` is the node's
    /// answer (whether the key existed).
    pub fn ok_deleted(&self, process: u64, deleted: bool) -> io::Result<u64> {
        self.complete_event(process, EventType::Ok, None, None, Some(deleted))
    }

    /// The open operation of `process` definitely did not happen (for a
    /// `cas`: it saw a value different from `expected`).
    pub fn fail(&self, process: u64) -> io::Result<u64> {
        self.complete(process, EventType::Fail, None, None)
    }

    /// The outcome of the open operation of `process` is unknown.
    pub fn info(&self, process: u64) -> io::Result<u64> {
        self.complete(process, EventType::Info, None, None)
    }

    /// Flushes buffered lines to the writer.
    pub fn flush(&self) -> io::Result<()> {
        self.lock().out.flush()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // Best effort: BufWriter's own drop would also flush, but ignoring
        // errors explicitly documents that a failing disk cannot panic here.
        let _ = self.flush();
    }
}
