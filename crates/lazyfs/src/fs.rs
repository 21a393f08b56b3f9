//! The FUSE filesystem: a passthrough to a backing directory whose file data goes through
//! [`FileCache`] (see the crate note for the durability model).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::cache::FileCache;
use crate::namespace::{Journal, Pending, Undo};

/// Name of the directory in the backing root that keeps unlinked files until their unlink is
/// durable (a power cut before that brings them back); hidden from the mount.
pub const HIDDEN_DIR: &str = ".kvorum-lazyfs-unlinked";

/// How long the kernel may cache entries and attributes: zero, so that it asks us every time
/// (sizes change with the cache, and a power cut changes them behind the kernel's back).
const TTL: Duration = Duration::ZERO;

/// State shared by the filesystem and the control socket.
#[derive(Default)]
pub struct State {
    /// FUSE inode → backing paths (several with hard links).
    paths: HashMap<u64, Vec<PathBuf>>,
    /// Unsynced data per FUSE inode.
    caches: HashMap<u64, FileCache>,
    /// Open files: handle → (inode, backing file, opened with O_APPEND).
    handles: HashMap<u64, (u64, File, bool)>,
    next_fh: u64,
    root_backing_ino: u64,
    /// Namespace changes whose directory was not fsynced since (see [`crate::namespace`]).
    journal: Journal,
    /// Where unlinked files wait ([`HIDDEN_DIR`]), and the next name there.
    hidden_dir: PathBuf,
    next_hidden: u64,
    /// Per FUSE inode, how many of its backing links are hidden copies (not visible).
    hidden_links: HashMap<u64, u64>,
    /// Namespace changes durable at once (the model before directory fsyncs counted).
    namespace_durable: bool,
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
fn undo(u: &Undo) -> io::Result<()> {
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

/// The filesystem; [`LazyFs::state`] is the handle for power cuts.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn lock(s: &Arc<Mutex<State>>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
    } else {
        UNIX_EPOCH
    }
}

impl LazyFs {
    /// A filesystem over `backing` (an existing directory).
    pub fn new(backing: &Path) -> io::Result<LazyFs> {
        let root = backing.canonicalize()?;
        let meta = std::fs::metadata(&root)?;
        // Unlinks a previous lazyfs left pending there are taken as durable.
        let hidden_dir = root.join(HIDDEN_DIR);
        if hidden_dir.exists() {
            std::fs::remove_dir_all(&hidden_dir)?;
        }
        std::fs::create_dir(&hidden_dir)?;
        let mut st = State {
            root_backing_ino: meta.ino(),
            next_fh: 1,
            hidden_dir,
            ..State::default()
        };
        st.paths.insert(fuser::FUSE_ROOT_ID, vec![root]);
        Ok(LazyFs {
            state: Arc::new(Mutex::new(st)),
        })
    }

    /// Makes namespace changes durable at once, as if every directory were fsynced after each
    /// (kinder than a disk; to tell findings of the directory model from others).
    pub fn namespace_durable(self) -> LazyFs {
        lock(&self.state).namespace_durable = true;
        self
    }

    /// The shared state (for the control socket).
    pub fn state(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }
}

impl State {
    /// FUSE inode of a backing inode (the root and inode 1 swap places).
    fn fuse_ino(&self, backing: u64) -> u64 {
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

    fn path(&self, ino: u64) -> Result<PathBuf, i32> {
        self.paths
            .get(&ino)
            .and_then(|v| v.iter().find(|p| self.names(p, ino)).cloned())
            .ok_or(libc::ENOENT)
    }

    fn child(&self, parent: u64, name: &OsStr) -> Result<PathBuf, i32> {
        Ok(self.path(parent)?.join(name))
    }

    fn remember(&mut self, ino: u64, path: PathBuf) {
        let mut v = self.paths.remove(&ino).unwrap_or_default();
        v.retain(|p| *p != path && self.names(p, ino));
        v.push(path);
        self.paths.insert(ino, v);
    }

    fn attr(&self, ino: u64, m: &std::fs::Metadata) -> FileAttr {
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
    fn entry(&mut self, path: PathBuf) -> Result<FileAttr, i32> {
        let m = path.symlink_metadata().map_err(|e| errno(&e))?;
        let ino = self.fuse_ino(m.ino());
        self.remember(ino, path);
        Ok(self.attr(ino, &m))
    }

    fn open_file(&mut self, ino: u64, path: &Path, flags: i32) -> Result<u64, i32> {
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
    fn dir_path(&self, ino: u64) -> Result<PathBuf, i32> {
        self.path(ino)
    }

    /// Unlinks the file at `path` (FUSE inode `ino`) from the mount: it moves to the hidden
    /// area until its directory `dir` is fsynced (a cut before that brings it back).
    fn hide(&mut self, dir: PathBuf, path: &Path, ino: u64) -> Result<(), i32> {
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
    fn record(&mut self, dirs: Vec<PathBuf>, undo: Undo) {
        self.journal.record(dirs, undo);
        if self.namespace_durable {
            let ops = self.journal.sync_all();
            self.made_durable(ops);
        }
    }

    /// Namespace changes made durable: delete the hidden copies of durable unlinks.
    fn made_durable(&mut self, ops: Vec<Pending>) {
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
    fn backing_file(&self, ino: u64, fh: Option<u64>) -> Result<File, i32> {
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
    fn metadata(&self, ino: u64, fh: Option<u64>) -> Result<std::fs::Metadata, i32> {
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
    fn release(&mut self, fh: u64) {
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

    fn flush(&mut self, ino: u64, fh: u64) -> Result<(), i32> {
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

impl Filesystem for LazyFs {
    fn init(&mut self, _req: &Request<'_>, _config: &mut KernelConfig) -> Result<(), libc::c_int> {
        Ok(())
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == fuser::FUSE_ROOT_ID && name == HIDDEN_DIR {
            return reply.error(libc::ENOENT);
        }
        let mut st = lock(&self.state);
        match st.child(parent, name).and_then(|p| st.entry(p)) {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        let st = lock(&self.state);
        match st.metadata(ino, fh) {
            Ok(m) => reply.attr(&TTL, &st.attr(ino, &m)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        let mut st = lock(&self.state);
        let file = match st.backing_file(ino, fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let run = |st: &mut State| -> io::Result<()> {
            if let Some(mode) = mode {
                file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if let Some(size) = size {
                let len = file.metadata()?.len();
                st.caches.entry(ino).or_default().truncate(size, len);
            }
            if atime.is_some() || mtime.is_some() {
                let to = |t: Option<TimeOrNow>| match t {
                    Some(TimeOrNow::SpecificTime(t)) => Some(t),
                    Some(TimeOrNow::Now) => Some(SystemTime::now()),
                    None => None,
                };
                let mut times = std::fs::FileTimes::new();
                if let Some(t) = to(atime) {
                    times = times.set_accessed(t);
                }
                if let Some(t) = to(mtime) {
                    times = times.set_modified(t);
                }
                file.set_times(times)?;
            }
            Ok(())
        };
        if let Err(e) = run(&mut st) {
            return reply.error(errno(&e));
        }
        match file.metadata() {
            Ok(m) => reply.attr(&TTL, &st.attr(ino, &m)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut st = lock(&self.state);
        let r = st.child(parent, name).and_then(|p| {
            std::fs::DirBuilder::new()
                .mode(mode & !umask & 0o7777)
                .create(&p)
                .map_err(|e| errno(&e))?;
            let dir = st.dir_path(parent)?;
            st.record(vec![dir], Undo::RemoveDir(p.clone()));
            st.entry(p)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut st = lock(&self.state);
        let r = st.child(parent, name).and_then(|p| {
            let m = p.symlink_metadata().map_err(|e| errno(&e))?;
            if m.is_dir() {
                return Err(libc::EISDIR);
            }
            let ino = st.fuse_ino(m.ino());
            let dir = st.dir_path(parent)?;
            st.hide(dir, &p, ino)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        let mut st = lock(&self.state);
        // Durable at once, with every pending change before it (see `rename`).
        let ops = st.journal.sync_all();
        st.made_durable(ops);
        match st
            .child(parent, name)
            .and_then(|p| std::fs::remove_dir(p).map_err(|e| errno(&e)))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        if flags != 0 {
            return reply.error(libc::EINVAL);
        }
        let mut st = lock(&self.state);
        let r = (|| {
            let from = st.child(parent, name)?;
            let to = st.child(newparent, newname)?;
            let m = from.symlink_metadata().map_err(|e| errno(&e))?;
            let target = to.symlink_metadata().ok();
            if m.is_dir() {
                // A directory rename (or one onto a directory) is durable at once, with every
                // pending change before it: taking back changes under a moved directory by
                // path would be wrong, and a disk may always have written more than synced.
                let ops = st.journal.sync_all();
                st.made_durable(ops);
                std::fs::rename(&from, &to).map_err(|e| errno(&e))?;
                return st.entry(to).map(|_| ());
            }
            let (dir, newdir) = (st.dir_path(parent)?, st.dir_path(newparent)?);
            if let Some(t) = &target {
                if t.is_dir() {
                    return Err(libc::EISDIR);
                }
                if t.ino() == m.ino() {
                    // Two links of one file: rename does nothing.
                    return Ok(());
                }
                let gone = st.fuse_ino(t.ino());
                st.hide(newdir.clone(), &to, gone)?;
            }
            if let Err(e) = std::fs::rename(&from, &to) {
                if target.is_some() && !st.namespace_durable {
                    // Put the target back (the hide is the journal's last change).
                    if let Some(op) = st.journal.pop() {
                        let _ = undo(&op.undo);
                    }
                }
                return Err(errno(&e));
            }
            st.record(
                vec![dir, newdir],
                Undo::RenameBack {
                    from: to.clone(),
                    to: from,
                },
            );
            st.entry(to).map(|_| ())
        })();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        newparent: u64,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let mut st = lock(&self.state);
        let r = (|| {
            let from = st.path(ino)?;
            let to = st.child(newparent, newname)?;
            std::fs::hard_link(&from, &to).map_err(|e| errno(&e))?;
            let dir = st.dir_path(newparent)?;
            st.record(vec![dir], Undo::RemoveFile(to.clone()));
            st.entry(to)
        })();
        match r {
            Ok(a) => reply.entry(&TTL, &a, 0),
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        let mut st = lock(&self.state);
        match st.path(ino).and_then(|p| st.open_file(ino, &p, flags)) {
            Ok(fh) => reply.opened(fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = lock(&self.state);
        let r = (|| {
            let p = st.child(parent, name)?;
            let mut o = OpenOptions::new();
            o.read(true)
                .write(true)
                .create(true)
                .mode(mode & !umask & 0o7777);
            if flags & libc::O_EXCL != 0 {
                o.create_new(true);
            }
            let existed = p.symlink_metadata().is_ok();
            o.open(&p).map_err(|e| errno(&e))?;
            let a = st.entry(p.clone())?;
            if !existed {
                // A new file: nothing cached under a reused inode number applies to it.
                st.caches.remove(&a.ino);
                let dir = st.dir_path(parent)?;
                st.record(vec![dir], Undo::RemoveFile(p.clone()));
            }
            let fh = st.open_file(a.ino, &p, flags)?;
            let a = st.entry(p)?;
            Ok((a, fh))
        })();
        match r {
            Ok((a, fh)) => reply.created(&TTL, &a, 0, fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let st = lock(&self.state);
        let Some((_, file, _)) = st.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let r = (|| {
            let len = file.metadata()?.len();
            let backing = |off: u64, buf: &mut [u8]| file.read_at(buf, off);
            match st.caches.get(&ino) {
                Some(c) => c.read(offset.max(0) as u64, size as usize, &backing, len),
                None => {
                    FileCache::default().read(offset.max(0) as u64, size as usize, &backing, len)
                }
            }
        })();
        match r {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some((_, file, append)) = st.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        let r = (|| {
            let len = file.metadata()?.len();
            let cache = st.caches.entry(ino).or_default();
            let off = if *append {
                cache.size(len)
            } else {
                offset.max(0) as u64
            };
            let backing = |off: u64, buf: &mut [u8]| file.read_at(buf, off);
            cache.write(off, data, &backing, len)
        })();
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.state).release(fh);
        reply.ok();
    }

    fn fsync(&mut self, _req: &Request<'_>, ino: u64, fh: u64, _datasync: bool, reply: ReplyEmpty) {
        match lock(&self.state).flush(ino, fh) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let st = lock(&self.state);
        let dir = match st.path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(it) => it,
            Err(e) => return reply.error(errno(&e)),
        };
        let mut all: Vec<(u64, FileType, std::ffi::OsString)> = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        for e in entries.flatten() {
            if ino == fuser::FUSE_ROOT_ID && e.file_name() == HIDDEN_DIR {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            let kind = if m.is_dir() {
                FileType::Directory
            } else if m.file_type().is_symlink() {
                FileType::Symlink
            } else {
                FileType::RegularFile
            };
            all.push((st.fuse_ino(m.ino()), kind, e.file_name()));
        }
        for (i, (ino, kind, name)) in all.into_iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(ino, i as i64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // The directory's pending namespace changes become durable (they are on the backing
        // directory already: fsync it too).
        let mut st = lock(&self.state);
        let r = st.dir_path(ino).and_then(|p| {
            let ops = st.journal.sync_dir(&p);
            st.made_durable(ops);
            File::open(p)
                .and_then(|f| f.sync_all())
                .map_err(|e| errno(&e))
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyStatfs) {
        let st = lock(&self.state);
        let p = st.path(ino).or_else(|_| st.path(fuser::FUSE_ROOT_ID));
        match p.and_then(|p| nix::sys::statvfs::statvfs(&p).map_err(|e| e as i32)) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&mut self, _req: &Request<'_>, _ino: u64, _mask: i32, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Preallocation only: KEEP_SIZE is a no-op, plain mode extends the (cached) size; hole
        // punching and the rest are not supported.
        if mode == libc::FALLOC_FL_KEEP_SIZE {
            return reply.ok();
        }
        if mode != 0 {
            return reply.error(libc::EOPNOTSUPP);
        }
        let mut st = lock(&self.state);
        let st = &mut *st;
        let Some((_, file, _)) = st.handles.get(&fh) else {
            return reply.error(libc::EBADF);
        };
        match file.metadata() {
            Ok(m) => {
                let cache = st.caches.entry(ino).or_default();
                let end = (offset + length).max(0) as u64;
                if end > cache.size(m.len()) {
                    cache.truncate(end, m.len());
                }
                reply.ok()
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}
