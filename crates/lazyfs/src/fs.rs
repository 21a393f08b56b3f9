//! The FUSE filesystem: a passthrough to a backing directory whose file data goes through
//! [`FileCache`] (see the crate note for the durability model).
//!
//! The inode, handle and journal bookkeeping and the power cut are in `state.rs`.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
};

use crate::cache::FileCache;
use crate::namespace::Undo;
use crate::state::{errno, undo};

pub use crate::state::{State, Unsynced};

/// Name of the directory in the backing root that keeps unlinked files until their unlink is
/// durable (a power cut before that brings them back); hidden from the mount.
pub const HIDDEN_DIR: &str = ".kvorum-lazyfs-unlinked";

/// How long the kernel may cache entries and attributes: zero, so that it asks us every time
/// (sizes change with the cache, and a power cut changes them behind the kernel's back).
const TTL: Duration = Duration::ZERO;

/// The filesystem; [`LazyFs::state`] is the handle for power cuts.
pub struct LazyFs {
    state: Arc<Mutex<State>>,
}

fn lock(s: &Arc<Mutex<State>>) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
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
