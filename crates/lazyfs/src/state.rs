//! What the filesystem knows: FUSE inodes and their backing paths, open handles, the unsynced
//! data of each file, the journal of pending namespace changes; and the power cut that drops
//! what is not durable.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType};

use crate::cache::FileCache;
use crate::namespace::{Journal, Pending, Undo};

/// State shared by the filesystem and the control socket.
#[derive(Default)]
pub struct State {
    /// FUSE inode → backing paths (several with hard links).
    pub(crate) paths: HashMap<u64, Vec<PathBuf>>,
    /// Unsynced data per FUSE inode.
    pub(crate) caches: HashMap<u64, FileCache>,
    /// Open files: handle → (inode, backing file, opened with O_APPEND).
    pub(crate) handles: HashMap<u64, (u64, File, bool)>,
    pub(crate) next_fh: u64,
    pub(crate) root_backing_ino: u64,
    /// Namespace changes whose directory was not fsynced since (see [`crate::namespace`]).
    pub(crate) journal: Journal,
    /// Where unlinked files wait ([`HIDDEN_DIR`](crate::fs::HIDDEN_DIR)), and the next name there.
    pub(crate) hidden_dir: PathBuf,
    pub(crate) next_hidden: u64,
    /// Per FUSE inode, how many of its backing links are hidden copies (not visible).
    pub(crate) hidden_links: HashMap<u64, u64>,
    /// Namespace changes durable at once (the model before directory fsyncs counted).
    pub(crate) namespace_durable: bool,
}

impl State {
    /// Power cut: forgets every unsynced write and takes back every namespace change whose
    /// directory was not fsynced since, newest first. Returns what was unsynced (see
    /// [`State::dirty`]).
    pub fn cut(&mut self) -> Unsynced {
        let out = self.dirty();
        self.caches.clear();
        for op in self.journal.take_undo() {
            match undo(&op.undo) {
                Ok(()) => eprintln!("lazyfs: power cut: took back {:?}", op.undo),
                Err(e) => eprintln!("lazyfs: power cut: cannot take back {:?}: {e}", op.undo),
            }
        }
        self.hidden_links.clear();
        out
    }

    /// What is unsynced now.
    pub fn dirty(&self) -> Unsynced {
        let dirty: Vec<&FileCache> = self.caches.values().filter(|c| c.is_dirty()).collect();
        Unsynced {
            files: dirty.len(),
            bytes: dirty.iter().map(|c| c.dirty_bytes()).sum(),
            namespace_ops: self.journal.len(),
        }
    }
}

/// What a power cut drops: files with unsynced data, their cached bytes, and namespace changes
/// not yet durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsynced {
    pub files: usize,
    pub bytes: u64,
    pub namespace_ops: usize,
}

/// Takes back one namespace change on the backing directory.
pub(crate) fn undo(u: &Undo) -> io::Result<()> {
    let gone_ok = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    };
    match u {
        Undo::RemoveFile(p) => gone_ok(std::fs::remove_file(p)),
        Undo::RemoveDir(p) => gone_ok(std::fs::remove_dir_all(p)),
        Undo::Restore { hidden, path } => std::fs::rename(hidden, path),
        Undo::RenameBack { from, to } => std::fs::rename(from, to),
    }
}

/// A file time from seconds and nanoseconds since the epoch (before it: the epoch).
fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

pub(crate) fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl State {
    /// FUSE inode of a backing inode (the root and inode 1 swap places).
    pub(crate) fn fuse_ino(&self, backing: u64) -> u64 {
        if backing == self.root_backing_ino {
            fuser::FUSE_ROOT_ID
        } else if backing == fuser::FUSE_ROOT_ID {
            self.root_backing_ino
        } else {
            backing
        }
    }

    /// Whether `path` exists and is inode `ino` (a remembered path may since name another).
    fn names(&self, path: &Path, ino: u64) -> bool {
        path.symlink_metadata()
            .is_ok_and(|m| self.fuse_ino(m.ino()) == ino)
    }

    pub(crate) fn path(&self, ino: u64) -> Result<PathBuf, i32> {
        self.paths
            .get(&ino)
            .and_then(|v| v.iter().find(|p| self.names(p, ino)).cloned())
            .ok_or(libc::ENOENT)
    }

    pub(crate) fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, i32> {
        Ok(self.path(parent)?.join(name))
    }

    fn remember(&mut self, ino: u64, path: PathBuf) {
        let mut v = self.paths.remove(&ino).unwrap_or_default();
        v.retain(|p| *p != path && self.names(p, ino));
        v.push(path);
        self.paths.insert(ino, v);
    }

    pub(crate) fn attr(&self, ino: u64, m: &std::fs::Metadata) -> FileAttr {
        let kind = match m.mode() & libc::S_IFMT {
            libc::S_IFDIR => FileType::Directory,
            libc::S_IFLNK => FileType::Symlink,
            _ => FileType::RegularFile,
        };
        let size = match self.caches.get(&ino) {
            Some(c) => c.size(m.size()),
            None => m.size(),
        };
        FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: time(m.atime(), m.atime_nsec()),
            mtime: time(m.mtime(), m.mtime_nsec()),
            ctime: time(m.ctime(), m.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: self.visible_links(ino, m) as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: m.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Looks `path` up, remembers it, and returns its attributes.
    pub(crate) fn entry(&mut self, path: PathBuf) -> Result<FileAttr, i32> {
        let m = path.symlink_metadata().map_err(|e| errno(&e))?;
        let ino = self.fuse_ino(m.ino());
        self.remember(ino, path);
        Ok(self.attr(ino, &m))
    }

    pub(crate) fn open_file(&mut self, ino: u64, path: &Path, flags: i32) -> Result<u64, i32> {
        // Always read-write (root), so that the cache can read pages and a flush can write
        // through any handle; the kernel enforces the caller's access mode.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .or_else(|_| File::open(path))
            .map_err(|e| errno(&e))?;
        if flags & libc::O_TRUNC != 0 {
            let len = file.metadata().map_err(|e| errno(&e))?.len();
            self.caches.entry(ino).or_default().truncate(0, len);
        }
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles
            .insert(fh, (ino, file, flags & libc::O_APPEND != 0));
        Ok(fh)
    }

    /// Links of inode `ino` (backing metadata `m`) visible in the mount (hidden copies of
    /// pending unlinks do not count).
    fn visible_links(&self, ino: u64, m: &std::fs::Metadata) -> u64 {
        m.nlink()
            .saturating_sub(self.hidden_links.get(&ino).copied().unwrap_or(0))
    }

    /// The backing directory path of FUSE directory `ino`, as the journal names it.
    pub(crate) fn dir_path(&self, ino: u64) -> Result<PathBuf, i32> {
        self.path(ino)
    }

    /// Unlinks the file at `path` (FUSE inode `ino`) from the mount: it moves to the hidden
    /// area until its directory `dir` is fsynced (a cut before that brings it back).
    pub(crate) fn hide(&mut self, dir: PathBuf, path: &Path, ino: u64) -> Result<(), i32> {
        let hidden = self.hidden_dir.join(format!("u{}", self.next_hidden));
        self.next_hidden += 1;
        std::fs::rename(path, &hidden).map_err(|e| errno(&e))?;
        *self.hidden_links.entry(ino).or_default() += 1;
        // Other hard links may still show the file (their paths need not be known here).
        let visible = hidden
            .symlink_metadata()
            .map_or(0, |m| self.visible_links(ino, &m));
        self.record(
            vec![dir],
            Undo::Restore {
                hidden,
                path: path.to_path_buf(),
            },
        );
        if visible == 0 {
            self.forget_if_gone(ino);
        }
        Ok(())
    }

    /// After the last visible link of `ino` went: without an open handle the file is forgotten
    /// (its unsynced data cannot be reached any more: a cut would drop it too). An unlinked
    /// open file lives on through its handles (readers and writers see its unsynced data)
    /// until the last one is released.
    fn forget_if_gone(&mut self, ino: u64) {
        if self.open_backing(ino, None).is_none() {
            self.caches.remove(&ino);
            self.paths.remove(&ino);
        }
    }

    /// Records a namespace change (durable at once with [`LazyFs::namespace_durable`]).
    pub(crate) fn record(&mut self, dirs: Vec<PathBuf>, undo: Undo) {
        self.journal.record(dirs, undo);
        if self.namespace_durable {
            let ops = self.journal.sync_all();
            self.made_durable(ops);
        }
    }

    /// Namespace changes made durable: delete the hidden copies of durable unlinks.
    pub(crate) fn made_durable(&mut self, ops: Vec<Pending>) {
        for op in ops {
            let Some(hidden) = op.hidden() else { continue };
            if let Ok(m) = hidden.symlink_metadata() {
                let ino = self.fuse_ino(m.ino());
                if let Some(n) = self.hidden_links.get_mut(&ino) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.hidden_links.remove(&ino);
                    }
                }
            }
            if let Err(e) = std::fs::remove_file(hidden) {
                eprintln!("lazyfs: cannot delete {}: {e}", hidden.display());
            }
        }
    }

    /// An open backing file of `ino`: handle `fh` if it is one of `ino`'s, else any open handle
    /// of `ino`. A file unlinked while open (e.g. an anonymous temp file) has no path left, only
    /// its handles, and the kernel asks for its attributes by inode alone.
    fn open_backing(&self, ino: u64, fh: Option<u64>) -> Option<&File> {
        fh.and_then(|fh| self.handles.get(&fh))
            .filter(|(i, ..)| *i == ino)
            .or_else(|| self.handles.values().find(|(i, ..)| *i == ino))
            .map(|(_, f, _)| f)
    }

    /// The backing file of `ino` opened for metadata changes: through its path, or one of its
    /// open handles if it has no path left.
    pub(crate) fn backing_file(&self, ino: u64, fh: Option<u64>) -> Result<File, i32> {
        match self.path(ino) {
            Ok(p) => File::open(p).map_err(|e| errno(&e)),
            Err(e) => self
                .open_backing(ino, fh)
                .ok_or(e)?
                .try_clone()
                .map_err(|e| errno(&e)),
        }
    }

    /// Metadata of `ino`'s backing file: through handle `fh`, its path, or any open handle.
    pub(crate) fn metadata(&self, ino: u64, fh: Option<u64>) -> Result<std::fs::Metadata, i32> {
        if let Some(f) = fh.and_then(|_| self.open_backing(ino, fh)) {
            return f.metadata().map_err(|e| errno(&e));
        }
        match self.path(ino) {
            Ok(p) => p.symlink_metadata().map_err(|e| errno(&e)),
            Err(e) => self
                .open_backing(ino, None)
                .ok_or(e)?
                .metadata()
                .map_err(|e| errno(&e)),
        }
    }

    /// Closes handle `fh`; the last close of a file with no link left drops its cache.
    pub(crate) fn release(&mut self, fh: u64) {
        let Some((ino, file, _)) = self.handles.remove(&fh) else {
            return;
        };
        let unlinked = file
            .metadata()
            .is_ok_and(|m| self.visible_links(ino, &m) == 0);
        if unlinked && self.open_backing(ino, None).is_none() {
            self.caches.remove(&ino);
            self.paths.remove(&ino);
        }
    }

    pub(crate) fn flush(&mut self, ino: u64, fh: u64) -> Result<(), i32> {
        let Some((_, file, _)) = self.handles.get(&fh) else {
            return Err(libc::EBADF);
        };
        let Some(cache) = self.caches.get_mut(&ino) else {
            return file.sync_all().map_err(|e| errno(&e));
        };
        let len = file.metadata().map_err(|e| errno(&e))?.len();
        let f = cache.take_flush(len);
        let run = || -> io::Result<()> {
            if let Some(t) = f.truncate_to {
                file.set_len(t)?;
            }
            if let Some(l) = f.set_len {
                file.set_len(l)?;
            }
            for (off, bytes) in &f.writes {
                file.write_all_at(bytes, *off)?;
            }
            file.sync_all()
        };
        run().map_err(|e| errno(&e))?;
        self.caches.remove(&ino);
        Ok(())
    }
}
