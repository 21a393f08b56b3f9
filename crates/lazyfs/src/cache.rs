//! The page cache of one file, as a pure model: what a reader sees, and what a flush (fsync) must
//! write to the backing file. Nothing here touches a disk; the filesystem passes the backing
//! file's bytes in (`backing` reads and its length).
//!
//! State since the last flush: dirty pages (whole pages, as they should read), the file's logical
//! size if it changed, and `valid`, the offset from which the backing file's old bytes no longer
//! count (a truncate since the last flush cut them off: they read as zeros even if the file grows
//! again). Dropping the cache (a power cut) leaves exactly the backing file.

use std::collections::BTreeMap;
use std::io;

/// Size of a cached page: the unit in which unsynced data is kept.
pub const PAGE: u64 = 4096;

/// Reads backing bytes at an offset into a buffer; returns how many were read (short at EOF).
pub type BackingRead<'a> = &'a dyn Fn(u64, &mut [u8]) -> io::Result<usize>;

/// Unsynced state of one file.
#[derive(Debug, Default, Clone)]
pub struct FileCache {
    pages: BTreeMap<u64, Vec<u8>>,
    size: Option<u64>,
    valid: Option<u64>,
}

/// What a flush writes to the backing file, in order: cut it to `truncate_to` (old bytes a
/// truncate removed), set its length to `set_len`, write each `(offset, bytes)`; then fsync.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Flush {
    pub truncate_to: Option<u64>,
    pub set_len: Option<u64>,
    pub writes: Vec<(u64, Vec<u8>)>,
}

impl FileCache {
    /// Whether anything is unsynced.
    pub fn is_dirty(&self) -> bool {
        !self.pages.is_empty() || self.size.is_some() || self.valid.is_some()
    }

    /// Bytes held in dirty pages.
    pub fn dirty_bytes(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    /// The file's size as a reader sees it.
    pub fn size(&self, backing_len: u64) -> u64 {
        self.size.unwrap_or(backing_len)
    }

    /// Fills `buf` with the backing bytes at `off` as they count now: zeros past the backing
    /// file's end and past `valid`.
    fn read_backing(
        &self,
        off: u64,
        buf: &mut [u8],
        backing: BackingRead<'_>,
        backing_len: u64,
    ) -> io::Result<()> {
        buf.fill(0);
        let limit = self.valid.unwrap_or(backing_len).min(backing_len);
        if off >= limit {
            return Ok(());
        }
        let want = ((limit - off) as usize).min(buf.len());
        let mut done = 0;
        while done < want {
            let n = backing(off + done as u64, &mut buf[done..want])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `off` as a reader sees them (short at the logical end).
    pub fn read(
        &self,
        off: u64,
        len: usize,
        backing: BackingRead<'_>,
        backing_len: u64,
    ) -> io::Result<Vec<u8>> {
        let size = self.size(backing_len);
        if off >= size {
            return Ok(Vec::new());
        }
        let end = size.min(off + len as u64);
        let mut out = vec![0u8; (end - off) as usize];
        let mut pos = off;
        while pos < end {
            let page = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let take = ((PAGE - pos % PAGE).min(end - pos)) as usize;
            let dst = &mut out[(pos - off) as usize..(pos - off) as usize + take];
            match self.pages.get(&page) {
                Some(p) => dst.copy_from_slice(&p[in_page..in_page + take]),
                None => self.read_backing(pos, dst, backing, backing_len)?,
            }
            pos += take as u64;
        }
        Ok(out)
    }

    /// Writes `data` at `off` into the cache (nothing reaches the backing file).
    pub fn write(
        &mut self,
        off: u64,
        data: &[u8],
        backing: BackingRead<'_>,
        backing_len: u64,
    ) -> io::Result<()> {
        let size = self.size(backing_len);
        let end = off + data.len() as u64;
        let mut pos = off;
        while pos < end {
            let page = pos / PAGE;
            if !self.pages.contains_key(&page) {
                let mut p = vec![0u8; PAGE as usize];
                // Bytes past the logical size read as zeros whatever the backing file holds.
                let visible = size.saturating_sub(page * PAGE).min(PAGE) as usize;
                self.read_backing(page * PAGE, &mut p[..visible], backing, backing_len)?;
                self.pages.insert(page, p);
            }
            let in_page = (pos % PAGE) as usize;
            let take = ((PAGE - pos % PAGE).min(end - pos)) as usize;
            let src = &data[(pos - off) as usize..(pos - off) as usize + take];
            if let Some(p) = self.pages.get_mut(&page) {
                p[in_page..in_page + take].copy_from_slice(src);
            }
            pos += take as u64;
        }
        if end > size {
            self.size = Some(end);
        }
        Ok(())
    }

    /// Sets the logical size to `new` (ftruncate), in the cache only.
    pub fn truncate(&mut self, new: u64, backing_len: u64) {
        let size = self.size(backing_len);
        if new < size {
            let first_gone = new.div_ceil(PAGE);
            self.pages.retain(|p, _| *p < first_gone);
            if let Some(p) = self.pages.get_mut(&(new / PAGE)) {
                p[(new % PAGE) as usize..].fill(0);
            }
            let valid = self.valid.unwrap_or(backing_len).min(new);
            self.valid = Some(valid);
        }
        self.size = Some(new);
    }

    /// Takes what a flush must write and forgets it (the cache is clean afterwards).
    pub fn take_flush(&mut self, backing_len: u64) -> Flush {
        let size = self.size(backing_len);
        let truncate_to = self.valid.filter(|v| *v < backing_len);
        let after_truncate = truncate_to.unwrap_or(backing_len);
        let set_len = (size != after_truncate).then_some(size);
        let writes = std::mem::take(&mut self.pages)
            .into_iter()
            .filter_map(|(page, mut bytes)| {
                let start = page * PAGE;
                if start >= size {
                    return None;
                }
                bytes.truncate(((size - start).min(PAGE)) as usize);
                Some((start, bytes))
            })
            .collect();
        self.size = None;
        self.valid = None;
        Flush {
            truncate_to,
            set_len,
            writes,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn reader(v: &[u8]) -> impl Fn(u64, &mut [u8]) -> io::Result<usize> + '_ {
        move |off, buf| {
            let off = off as usize;
            if off >= v.len() {
                return Ok(0);
            }
            let n = buf.len().min(v.len() - off);
            buf[..n].copy_from_slice(&v[off..off + n]);
            Ok(n)
        }
    }

    fn apply(disk: &mut Vec<u8>, f: Flush) {
        if let Some(t) = f.truncate_to {
            disk.truncate(t as usize);
        }
        if let Some(l) = f.set_len {
            disk.resize(l as usize, 0);
        }
        for (off, b) in f.writes {
            let off = off as usize;
            if disk.len() < off + b.len() {
                disk.resize(off + b.len(), 0);
            }
            disk[off..off + b.len()].copy_from_slice(&b);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u64, Vec<u8>),
        Truncate(u64),
        Fsync,
        Cut,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..20_000, proptest::collection::vec(any::<u8>(), 1..6000))
                .prop_map(|(o, d)| Op::Write(o, d)),
            1 => (0u64..20_000).prop_map(Op::Truncate),
            1 => Just(Op::Fsync),
            1 => Just(Op::Cut),
        ]
    }

    proptest! {
        // Readers see every write (a plain file model); a cut brings back exactly what the last
        // fsync left on disk.
        #[test]
        fn reads_see_writes_and_cut_keeps_only_synced(
            initial in proptest::collection::vec(any::<u8>(), 0..9000),
            ops in proptest::collection::vec(op(), 1..40),
        ) {
            let mut disk = initial.clone();
            let mut visible = initial;
            let mut cache = FileCache::default();
            for op in ops {
                match op {
                    Op::Write(off, data) => {
                        cache.write(off, &data, &reader(&disk), disk.len() as u64).unwrap();
                        let end = off as usize + data.len();
                        if visible.len() < end {
                            visible.resize(end, 0);
                        }
                        visible[off as usize..end].copy_from_slice(&data);
                    }
                    Op::Truncate(n) => {
                        cache.truncate(n, disk.len() as u64);
                        visible.resize(n as usize, 0);
                    }
                    Op::Fsync => {
                        let f = cache.take_flush(disk.len() as u64);
                        apply(&mut disk, f);
                        prop_assert!(!cache.is_dirty());
                        prop_assert_eq!(&disk, &visible);
                    }
                    Op::Cut => {
                        cache = FileCache::default();
                        visible = disk.clone();
                    }
                }
                let len = disk.len() as u64;
                prop_assert_eq!(cache.size(len), visible.len() as u64);
                let got = cache.read(0, 40_000, &reader(&disk), len).unwrap();
                prop_assert_eq!(&got, &visible);
            }
        }
    }

    #[test]
    fn unsynced_append_is_lost_on_cut_synced_one_kept() {
        let mut disk = b"abc".to_vec();
        let mut cache = FileCache::default();
        cache.write(3, b"def", &reader(&disk), 3).unwrap();
        assert_eq!(cache.read(0, 10, &reader(&disk), 3).unwrap(), b"abcdef");
        let f = cache.take_flush(3);
        apply(&mut disk, f);
        assert_eq!(disk, b"abcdef");
        cache.write(6, b"ghi", &reader(&disk), 6).unwrap();
        assert!(cache.is_dirty());
        let cache = FileCache::default(); // the cut
        assert_eq!(cache.read(0, 10, &reader(&disk), 6).unwrap(), b"abcdef");
    }

    #[test]
    fn truncate_then_grow_reads_zeros_not_old_bytes() {
        let disk = b"abcdefgh".to_vec();
        let mut cache = FileCache::default();
        cache.truncate(2, 8);
        cache.write(6, b"X", &reader(&disk), 8).unwrap();
        assert_eq!(
            cache.read(0, 10, &reader(&disk), 8).unwrap(),
            b"ab\0\0\0\0X"
        );
    }
}
