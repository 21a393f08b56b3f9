//! Snapshot files: written by streaming a RocksDB snapshot of one group, read back by streaming
//! them into write batches. Never held whole in memory.
//!
//! Format (persistent, sent between nodes; MUST NOT change, bump the magic for a new one):
//! `MAGIC`, `u32 BE` header length, bincode [`SnapshotMeta`], then per record `u32 BE` key
//! length, key (`slot ++ user key`), `u32 BE` value length, value (an encoded record), and an end
//! marker `u32::MAX` followed by the `u64 BE` record count.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use openraft::{BasicNode, SnapshotMeta};
use serde::{Deserialize, Serialize};

use crate::faults::{Fsync, StoreFaults};
use crate::NodeId;

const MAGIC: &[u8; 8] = b"KVSNAP1\n";
const END: u32 = u32::MAX;
/// Largest header or key/value frame accepted when reading; anything larger is corruption.
const MAX_FRAME: u32 = 64 << 20;

// A snapshot build must never fail on state that apply accepted: apply never stores a key frame
// (`slot ++ key`) or a value frame (an encoded record, `version ++ value`) as large as this.
const _: () = assert!(
    (crate::command::MAX_VALUE_BYTES + 8) * 3 / 2 < MAX_FRAME as usize,
    "snapshot frames must comfortably exceed the hard value cap"
);
const _: () = assert!(
    (crate::command::MAX_KEY_BYTES + 2) * 3 / 2 < MAX_FRAME as usize,
    "snapshot frames must comfortably exceed the hard key cap"
);

/// The snapshot a group serves to followers and restores from, recorded in its meta.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CurrentSnapshot {
    pub meta: SnapshotMeta<NodeId, BasicNode>,
    /// File name inside the snapshot directory.
    pub file: String,
}

/// Streams records into a new snapshot file.
pub(crate) struct SnapshotWriter {
    out: BufWriter<File>,
    count: u64,
}

impl SnapshotWriter {
    /// Creates the file at `tmp` and writes the header.
    pub fn create(tmp: &Path, meta: &SnapshotMeta<NodeId, BasicNode>) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(tmp)?);
        out.write_all(MAGIC)?;
        let header = bincode::serialize(meta).map_err(std::io::Error::other)?;
        write_frame(&mut out, &header)?;
        Ok(SnapshotWriter { out, count: 0 })
    }

    pub fn record(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        write_frame(&mut self.out, key)?;
        write_frame(&mut self.out, value)?;
        self.count += 1;
        Ok(())
    }

    /// Ends the file and fsyncs it; [`durable_rename`] then puts it in place.
    pub fn finish(mut self) -> std::io::Result<File> {
        self.out.write_all(&END.to_be_bytes())?;
        self.out.write_all(&self.count.to_be_bytes())?;
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(file)
    }
}

/// Makes `file` (open at `from`) durable at `to`: fsyncs it, renames it and fsyncs the directory,
/// so that the new name survives a crash before any meta points at it. `faults` may replace
/// the file's fsync (test builds only).
pub(crate) fn durable_rename(
    file: &File,
    from: &Path,
    to: &Path,
    faults: &StoreFaults,
) -> std::io::Result<()> {
    if let Some(r) = faults.fsync(from, Fsync::Snapshot) {
        r?;
    }
    file.sync_all()?;
    durability::record("sync file", from);
    std::fs::rename(from, to)?;
    durability::record("rename", to);
    let dir = to
        .parent()
        .ok_or_else(|| std::io::Error::other("snapshot path has no directory"))?;
    File::open(dir)?.sync_all()?;
    durability::record("sync dir", dir);
    Ok(())
}

/// In tests, a log of the durability steps taken on snapshot files (fsyncs and renames, in
/// order), so tests can check that what must be durable was made so; nothing in other builds.
pub(crate) mod durability {
    use std::path::Path;

    #[cfg(test)]
    pub(crate) static LOG: std::sync::Mutex<Vec<(&'static str, std::path::PathBuf)>> =
        std::sync::Mutex::new(Vec::new());

    /// Records that `what` was done to `path` (tests only).
    #[cfg(test)]
    pub(crate) fn record(what: &'static str, path: &Path) {
        LOG.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((what, path.to_path_buf()));
    }

    #[cfg(not(test))]
    pub(crate) fn record(_: &'static str, _: &Path) {}
}

fn write_frame(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l < MAX_FRAME)
        .ok_or_else(|| std::io::Error::other("snapshot frame too large"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(bytes)
}

/// Streams records out of a snapshot file, checking its framing and record count.
pub(crate) struct SnapshotReader {
    input: BufReader<File>,
    count: u64,
    done: bool,
}

fn corrupt(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("snapshot: {what}"))
}

impl SnapshotReader {
    /// Opens `file` (positioned anywhere) from its start and reads its header.
    pub fn open(mut file: File) -> std::io::Result<(Self, SnapshotMeta<NodeId, BasicNode>)> {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(0))?;
        let mut input = BufReader::with_capacity(1 << 20, file);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(corrupt("bad magic"));
        }
        let header = read_frame(&mut input)?.ok_or_else(|| corrupt("missing header"))?;
        let meta = bincode::deserialize(&header).map_err(|_| corrupt("bad header"))?;
        let reader = SnapshotReader {
            input,
            count: 0,
            done: false,
        };
        Ok((reader, meta))
    }

    /// The next `(key, value)`, or `None` at a well-formed end.
    pub fn next_record(&mut self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        match read_frame(&mut self.input)? {
            Some(key) => {
                let value = read_frame(&mut self.input)?.ok_or_else(|| corrupt("missing value"))?;
                self.count += 1;
                Ok(Some((key, value)))
            }
            None => {
                let mut n = [0u8; 8];
                self.input.read_exact(&mut n)?;
                if u64::from_be_bytes(n) != self.count {
                    return Err(corrupt("record count mismatch"));
                }
                self.done = true;
                Ok(None)
            }
        }
    }
}

/// A frame's bytes, or `None` for the end marker.
fn read_frame(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len == END {
        return Ok(None);
    }
    if len >= MAX_FRAME {
        return Err(corrupt("frame too large"));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> SnapshotMeta<NodeId, BasicNode> {
        SnapshotMeta {
            last_log_id: None,
            last_membership: Default::default(),
            snapshot_id: "t".into(),
        }
    }

    // What is written reads back; a truncated file is rejected rather than read short.
    #[test]
    fn round_trip_and_truncation() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("s.snap");
        let tmp = dir.path().join("s.tmp");
        let mut w = SnapshotWriter::create(&tmp, &meta())?;
        w.record(b"k1", b"v1")?;
        w.record(b"k2", b"")?;
        durable_rename(&w.finish()?, &tmp, &path, &StoreFaults::default())?;
        let (mut r, m) = SnapshotReader::open(File::open(&path)?)?;
        assert_eq!(m.snapshot_id, "t");
        assert_eq!(r.next_record()?, Some((b"k1".to_vec(), b"v1".to_vec())));
        assert_eq!(r.next_record()?, Some((b"k2".to_vec(), vec![])));
        assert_eq!(r.next_record()?, None);

        let bytes = std::fs::read(&path)?;
        std::fs::write(&path, &bytes[..bytes.len() - 3])?;
        let (mut r, _) = SnapshotReader::open(File::open(&path)?)?;
        let mut res = Ok(None);
        for _ in 0..3 {
            res = r.next_record();
            if res.is_err() {
                break;
            }
        }
        assert!(res.is_err(), "truncated snapshot was accepted");
        Ok(())
    }
}
