//! Storage integrity: a corrupted log or data file is detected, never silently dropped.
//!
//! How each kind of damage is found:
//! 1. The WAL (the Raft log, the vote and the applied state of every group go through it): it is
//!    recovered in RocksDB's `TolerateCorruptedTailRecords` mode, which accepts only a torn final
//!    record (a crash during a write, never acknowledged); a bad record anywhere else fails the
//!    open with `Corruption`, where the default point-in-time mode would silently keep the records
//!    before it and drop the rest (acknowledged entries, a vote). `paranoid_checks` makes RocksDB
//!    check the MANIFEST and the SST files it opens the same way.
//! 2. SST files: every read verifies block checksums (RocksDB's default, kept), so a damaged
//!    block answers `Corruption` to a read, a compaction or a snapshot build.
//! 3. Records that do not decode: [`StoreError::Corrupt`].
//!
//! What the store does: an open that fails with `Corruption` answers
//! [`StoreError::CorruptAtOpen`], naming the damaged file (from RocksDB's own `LOG`) and what to
//! do. A read that fails with `Corruption` answers [`StoreError::Corruption`]; whoever sees one
//! (the node) calls [`Store::mark_corrupt`], which writes [`CORRUPT_MARKER`] durably into the
//! data directory and stops the replica's node, so that a restart is refused too
//! ([`StoreError::CorruptAtOpen`]) and the node stays down until the cluster replaced it: the
//! flow of a dead node. The only repair is a wipe: the node joins again as a new one.

use std::path::{Path, PathBuf};

use crate::{Store, StoreError};

/// File in the data directory that marks its store corrupt: written (durably) when corruption
/// was found while running; while it exists the store refuses to open. It holds the reason.
pub const CORRUPT_MARKER: &str = "CORRUPTED";

/// What an operator does with a corrupt store (part of every corruption message).
pub const WIPE_ADVICE: &str = "this node's Raft log and data cannot be trusted, and restarting \
     it on them would lose acknowledged writes or a vote. Leave it stopped: the cluster replaces \
     its replicas from a spare as for a dead node. Then wipe the data directory and add the \
     machine back as a new node (kvnode --join, kvctl add-node)";

/// Whether a RocksDB error reports corruption (a checksum mismatch, a bad block or record).
pub fn is_rocks_corruption(e: &rocksdb::Error) -> bool {
    e.kind() == rocksdb::ErrorKind::Corruption
}

/// Whether the text of an error (as openraft carries a storage error: a string) reports
/// corruption: RocksDB's `Corruption:` status, or a record of ours that does not decode.
pub fn mentions_corruption(text: &str) -> bool {
    text.contains("Corruption:") || text.contains("corrupt record")
}

impl StoreError {
    /// Whether this error means the store's files are corrupt (the replica must stop serving;
    /// see [`Store::mark_corrupt`]).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            StoreError::Corruption(_)
                | StoreError::Corrupt { .. }
                | StoreError::CorruptAtOpen { .. }
        )
    }
}

impl From<rocksdb::Error> for StoreError {
    fn from(e: rocksdb::Error) -> Self {
        if is_rocks_corruption(&e) {
            StoreError::Corruption(e)
        } else {
            StoreError::Rocks(e)
        }
    }
}

/// Refuses to open a store whose data directory carries [`CORRUPT_MARKER`].
pub(crate) fn refuse_if_marked(dir: &Path) -> Result<(), StoreError> {
    let marker = dir.join(CORRUPT_MARKER);
    match std::fs::read_to_string(&marker) {
        Ok(reason) => Err(StoreError::CorruptAtOpen {
            dir: dir.to_path_buf(),
            file: marker.display().to_string(),
            detail: format!("corruption was found while the node ran: {}", reason.trim()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io(e)),
    }
}

/// The error of an open of the RocksDB under `db_dir` that failed with `e`: for corruption,
/// [`StoreError::CorruptAtOpen`] naming the damaged file as RocksDB's `LOG` reports it.
pub(crate) fn open_error(dir: &Path, db_dir: &Path, e: rocksdb::Error) -> StoreError {
    if !is_rocks_corruption(&e) {
        return StoreError::Rocks(e);
    }
    let file = damaged_file(db_dir).unwrap_or_else(|| {
        format!(
            "a file of {} (RocksDB's LOG there has the details)",
            db_dir.display()
        )
    });
    StoreError::CorruptAtOpen {
        dir: dir.to_path_buf(),
        file,
        detail: e.into_string(),
    }
}

/// The file RocksDB last reported damaged in its `LOG` under `db_dir`: the last line that
/// reports corruption and names a WAL (`.log`), table (`.sst`) or `MANIFEST` file.
fn damaged_file(db_dir: &Path) -> Option<String> {
    let log = std::fs::read_to_string(db_dir.join("LOG")).ok()?;
    log.lines()
        .rev()
        .filter(|l| l.contains("Corruption") || l.contains("dropping"))
        .find_map(|l| {
            l.split(|c: char| c.is_whitespace() || c == ',' || c == ';')
                .map(|w| w.trim_end_matches(':'))
                .find(|w| w.ends_with(".log") || w.ends_with(".sst") || w.contains("MANIFEST-"))
                .map(|w| {
                    let p = PathBuf::from(w);
                    if p.is_absolute() {
                        w.to_string()
                    } else {
                        db_dir.join(p).display().to_string()
                    }
                })
        })
}

impl Store {
    /// Marks this store corrupt because of `reason`: writes [`CORRUPT_MARKER`] into its data
    /// directory, durably (file and directory fsynced), so that it refuses to open again
    /// ([`StoreError::CorruptAtOpen`]). Idempotent: the first reason is kept. The caller stops
    /// serving from the store (the node stops).
    pub fn mark_corrupt(&self, reason: &str) -> Result<(), StoreError> {
        let dir = &self.inner.dir;
        if dir.join(CORRUPT_MARKER).exists() {
            return Ok(());
        }
        let tmp = dir.join(format!("{CORRUPT_MARKER}.tmp"));
        std::fs::write(&tmp, format!("{reason}\n"))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(CORRUPT_MARKER))?;
        // The rename must survive a power cut, or the node would start again on bad data.
        std::fs::File::open(dir)?.sync_all()?;
        tracing::error!(dir = %dir.display(), %reason, "store marked corrupt");
        Ok(())
    }
}
