//! Namespace changes not yet durable, as a pure model: a journal of pending changes (create,
//! link, mkdir, unlink, rename), each naming the directories whose entries it touched and how
//! to take it back. An fsync of a directory makes the changes touching it durable; a power cut
//! takes back the rest, newest first. Nothing here touches a disk: the filesystem applies the
//! [`Undo`]s (and deletes the hidden copies of durable unlinks).
//!
//! A directory's changes become durable in order (its on-disk entries are one sequence of
//! updates): when a change is durable, so is every earlier change touching any directory it
//! touches. So the pending changes of each directory are always a suffix of its changes, and
//! taking them back newest first restores every directory to its state at its last fsync.

use std::path::{Path, PathBuf};

/// How to take back one namespace change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// A file (or a hard link) was created at this path: remove it.
    RemoveFile(PathBuf),
    /// A directory was created at this path: remove it with whatever it holds.
    RemoveDir(PathBuf),
    /// A file was unlinked from `path` and kept at `hidden`: move it back.
    Restore { hidden: PathBuf, path: PathBuf },
    /// A file was renamed from `from` to `to`: rename it back.
    RenameBack { from: PathBuf, to: PathBuf },
}

/// One change not yet durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The directories whose entries it touched (two for a rename across directories).
    pub dirs: Vec<PathBuf>,
    pub undo: Undo,
}

impl Pending {
    /// The hidden copy an unlink keeps (to delete once the unlink is durable).
    pub fn hidden(&self) -> Option<&Path> {
        match &self.undo {
            Undo::Restore { hidden, .. } => Some(hidden),
            _ => None,
        }
    }
}

/// The pending namespace changes, oldest first.
#[derive(Debug, Default)]
pub struct Journal {
    ops: Vec<Pending>,
}

impl Journal {
    /// Records a change that touched `dirs` (duplicates are dropped).
    pub fn record(&mut self, mut dirs: Vec<PathBuf>, undo: Undo) {
        dirs.dedup();
        self.ops.push(Pending { dirs, undo });
    }

    /// Number of pending changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// An fsync of `dir`: every pending change touching it becomes durable, and with each such
    /// change every earlier one touching a directory it touches (in order, per directory).
    /// Returns the changes made durable, oldest first.
    pub fn sync_dir(&mut self, dir: &Path) -> Vec<Pending> {
        let mut durable = vec![false; self.ops.len()];
        // (directory, end): every change before `end` touching the directory is durable.
        let mut work = vec![(dir.to_path_buf(), self.ops.len())];
        while let Some((d, end)) = work.pop() {
            for (i, op) in self.ops.iter().enumerate().take(end) {
                if !durable[i] && op.dirs.contains(&d) {
                    durable[i] = true;
                    for other in op.dirs.iter().filter(|o| **o != d) {
                        work.push((other.clone(), i + 1));
                    }
                }
            }
        }
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for (op, d) in std::mem::take(&mut self.ops).into_iter().zip(durable) {
            if d {
                out.push(op);
            } else {
                keep.push(op);
            }
        }
        self.ops = keep;
        out
    }

    /// Every pending change becomes durable (a barrier, where taking back would be hard to get
    /// right: a disk may always have written more than was synced). Returns them, oldest first.
    pub fn sync_all(&mut self) -> Vec<Pending> {
        std::mem::take(&mut self.ops)
    }

    /// Takes the newest pending change back out of the journal (its operation failed after
    /// all, and the caller undoes it).
    pub fn pop(&mut self) -> Option<Pending> {
        self.ops.pop()
    }

    /// The power cut: every pending change, newest first, to take back in that order; the
    /// journal is empty afterwards.
    pub fn take_undo(&mut self) -> Vec<Pending> {
        let mut ops = std::mem::take(&mut self.ops);
        ops.reverse();
        ops
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// An in-memory namespace: path → file id, plus the hidden copies of unlinked files.
    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    struct Ns {
        files: BTreeMap<PathBuf, u32>,
        dirs: Vec<PathBuf>,
    }

    /// What the filesystem does: the change, its journal record, and the hidden copies.
    struct Fs {
        ns: Ns,
        hidden: BTreeMap<PathBuf, u32>,
        journal: Journal,
        next: u32,
    }

    impl Fs {
        fn new(ns: Ns) -> Fs {
            Fs {
                ns,
                hidden: BTreeMap::new(),
                journal: Journal::default(),
                next: 1000,
            }
        }

        fn parent(p: &Path) -> PathBuf {
            p.parent().unwrap().to_path_buf()
        }

        fn create(&mut self, p: &str) {
            let p = PathBuf::from(p);
            if self.ns.files.contains_key(&p) {
                return;
            }
            self.next += 1;
            self.ns.files.insert(p.clone(), self.next);
            self.journal
                .record(vec![Self::parent(&p)], Undo::RemoveFile(p));
        }

        fn link(&mut self, from: &str, to: &str) {
            let (from, to) = (PathBuf::from(from), PathBuf::from(to));
            let Some(&id) = self.ns.files.get(&from) else {
                return;
            };
            if self.ns.files.contains_key(&to) {
                return;
            }
            self.ns.files.insert(to.clone(), id);
            self.journal
                .record(vec![Self::parent(&to)], Undo::RemoveFile(to));
        }

        fn unlink(&mut self, p: &str) {
            let p = PathBuf::from(p);
            let Some(id) = self.ns.files.remove(&p) else {
                return;
            };
            self.next += 1;
            let hidden = PathBuf::from(format!("/hidden/{}", self.next));
            self.hidden.insert(hidden.clone(), id);
            self.journal
                .record(vec![Self::parent(&p)], Undo::Restore { hidden, path: p });
        }

        fn rename(&mut self, from: &str, to: &str) {
            let (from, to) = (PathBuf::from(from), PathBuf::from(to));
            let Some(&id) = self.ns.files.get(&from) else {
                return;
            };
            if from == to || self.ns.files.get(&to) == Some(&id) {
                return;
            }
            if self.ns.files.contains_key(&to) {
                self.unlink(to.to_str().unwrap());
            }
            self.ns.files.remove(&from);
            self.ns.files.insert(to.clone(), id);
            self.journal.record(
                vec![Self::parent(&from), Self::parent(&to)],
                Undo::RenameBack { from: to, to: from },
            );
        }

        fn mkdir(&mut self, p: &str) {
            let p = PathBuf::from(p);
            self.ns.dirs.push(p.clone());
            self.journal
                .record(vec![Self::parent(&p)], Undo::RemoveDir(p));
        }

        fn sync_dir(&mut self, d: &str) {
            for op in self.journal.sync_dir(Path::new(d)) {
                if let Some(h) = op.hidden() {
                    self.hidden.remove(h).unwrap();
                }
            }
        }

        fn cut(&mut self) {
            for op in self.journal.take_undo() {
                match op.undo {
                    Undo::RemoveFile(p) => {
                        self.ns.files.remove(&p).unwrap();
                    }
                    Undo::RemoveDir(p) => {
                        self.ns.files.retain(|f, _| !f.starts_with(&p));
                        self.ns.dirs.retain(|d| !d.starts_with(&p));
                    }
                    Undo::Restore { hidden, path } => {
                        let id = self.hidden.remove(&hidden).unwrap();
                        assert!(self.ns.files.insert(path, id).is_none());
                    }
                    Undo::RenameBack { from, to } => {
                        let id = self.ns.files.remove(&from).unwrap();
                        assert!(self.ns.files.insert(to, id).is_none());
                    }
                }
            }
            assert!(self.hidden.is_empty(), "every hidden copy is restored");
        }
    }

    fn ns(files: &[(&str, u32)]) -> Ns {
        Ns {
            files: files.iter().map(|(p, i)| (PathBuf::from(p), *i)).collect(),
            dirs: Vec::new(),
        }
    }

    #[test]
    fn cut_takes_back_unsynced_create_rename_unlink() {
        let start = ns(&[("/d/a", 1), ("/d/b", 2)]);
        let mut fs = Fs::new(start.clone());
        fs.create("/d/new");
        fs.rename("/d/a", "/d/b"); // overwrites b
        fs.unlink("/d/b");
        fs.link("/d/new", "/d/n2");
        fs.cut();
        assert_eq!(fs.ns, start);
    }

    #[test]
    fn dir_fsync_makes_earlier_changes_durable() {
        let mut fs = Fs::new(ns(&[("/d/a", 1)]));
        fs.create("/d/tmp");
        fs.rename("/d/tmp", "/d/CURRENT");
        fs.sync_dir("/d");
        let synced = fs.ns.clone();
        fs.unlink("/d/a");
        fs.cut();
        assert_eq!(fs.ns, synced);
        assert!(fs.ns.files.contains_key(Path::new("/d/a")));
    }

    #[test]
    fn rename_across_dirs_is_durable_with_either_dir_and_drags_earlier_changes() {
        // unlink d/a, then e/x renamed onto d/a: an fsync of e makes the rename durable, and
        // with it the earlier unlink in d (d's changes are durable in order).
        let mut fs = Fs::new(ns(&[("/d/a", 1), ("/e/x", 2)]));
        fs.unlink("/d/a");
        fs.rename("/e/x", "/d/a");
        fs.create("/d/later");
        fs.sync_dir("/e");
        assert_eq!(fs.journal.len(), 1, "only the later create is pending");
        fs.cut();
        assert_eq!(fs.ns, ns(&[("/d/a", 2)]));
    }

    #[test]
    fn unsynced_mkdir_takes_its_synced_contents_with_it() {
        let mut fs = Fs::new(ns(&[]));
        fs.mkdir("/d/sub");
        fs.create("/d/sub/f");
        fs.sync_dir("/d/sub");
        fs.cut();
        assert_eq!(fs.ns, ns(&[]));
        let mut fs = Fs::new(ns(&[]));
        fs.mkdir("/d/sub");
        fs.create("/d/sub/f");
        fs.sync_dir("/d");
        fs.cut();
        assert!(
            fs.ns.files.is_empty(),
            "the file's entry in sub was not synced"
        );
        assert_eq!(fs.ns.dirs, vec![PathBuf::from("/d/sub")]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(u8),
        Unlink(u8),
        Rename(u8, u8),
        Link(u8, u8),
        Sync,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..5).prop_map(Op::Create),
            2 => (0u8..5).prop_map(Op::Unlink),
            3 => (0u8..5, 0u8..5).prop_map(|(a, b)| Op::Rename(a, b)),
            1 => (0u8..5, 0u8..5).prop_map(|(a, b)| Op::Link(a, b)),
            1 => Just(Op::Sync),
        ]
    }

    proptest! {
        // One directory: a cut brings back exactly its entries as of its last fsync.
        #[test]
        fn cut_restores_the_directory_as_of_its_last_fsync(
            initial in proptest::collection::btree_map(0u8..5, 0u32..3, 0..5),
            ops in proptest::collection::vec(op(), 0..30),
        ) {
            let name = |n: u8| format!("/d/f{n}");
            let start = Ns {
                files: initial.iter().map(|(n, id)| (PathBuf::from(name(*n)), *id)).collect(),
                dirs: Vec::new(),
            };
            let mut fs = Fs::new(start.clone());
            let mut synced = start;
            for op in ops {
                match op {
                    Op::Create(n) => fs.create(&name(n)),
                    Op::Unlink(n) => fs.unlink(&name(n)),
                    Op::Rename(a, b) => fs.rename(&name(a), &name(b)),
                    Op::Link(a, b) => fs.link(&name(a), &name(b)),
                    Op::Sync => {
                        fs.sync_dir("/d");
                        prop_assert!(fs.journal.is_empty());
                        prop_assert!(fs.hidden.is_empty());
                        synced = fs.ns.clone();
                    }
                }
            }
            fs.cut();
            prop_assert_eq!(fs.ns, synced);
        }
    }
}
