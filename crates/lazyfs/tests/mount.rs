//! Mounts a real lazyfs (needs root and /dev/fuse; prints SKIPPED otherwise, and fails in CI)
//! and checks the durability model through the kernel: unsynced writes are lost on a cut,
//! fsynced ones (and renames) are kept.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .map(|_| ())
        .map_err(|e| format!("/dev/fuse: {e}"))
}

fn mounted(p: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*p.to_string_lossy()))
}

/// A lazyfs mounted at `dir/mnt` over `dir/b` for one test; unmounted (SIGTERM) on drop.
struct Mount {
    _dir: tempfile::TempDir,
    mnt: std::path::PathBuf,
    backing: std::path::PathBuf,
    sock: std::path::PathBuf,
    child: std::process::Child,
}

impl Mount {
    /// Mounts, or returns `None` (printing SKIPPED) where FUSE mounts cannot work (not in CI).
    fn start(test: &str) -> Option<Mount> {
        if let Err(why) = available() {
            assert!(
                std::env::var("CI").is_err(),
                "lazyfs mount test cannot run in CI: {why}"
            );
            println!("SKIPPED {test}: {why}");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let (mnt, backing, sock) = (
            dir.path().join("mnt"),
            dir.path().join("b"),
            dir.path().join("s"),
        );
        std::fs::create_dir_all(&mnt).unwrap();
        std::fs::create_dir_all(&backing).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kvorum-lazyfs"))
            .arg(&mnt)
            .arg(&backing)
            .arg("--control")
            .arg(&sock)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let m = Mount {
            _dir: dir,
            mnt,
            backing,
            sock,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(mounted(&m.mnt) && kvorum_lazyfs::control(&m.sock, "stats").is_ok()) {
            assert!(Instant::now() < deadline, "not mounted within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
    }

    fn cut(&self) -> String {
        let reply = kvorum_lazyfs::control(&self.sock, "cut").unwrap();
        println!("cut: {reply}");
        reply
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !std::thread::panicking() {
            assert!(!mounted(&self.mnt), "still mounted after SIGTERM");
        }
    }
}

#[test]
fn cut_loses_unsynced_writes_keeps_synced() {
    let Some(m) = Mount::start("cut_loses_unsynced_writes_keeps_synced") else {
        return;
    };
    let (mnt, backing) = (&m.mnt, &m.backing);
    {
        // Synced file, then an unsynced append and an unsynced overwrite.
        let mut f = std::fs::File::create(mnt.join("log")).unwrap();
        f.write_all(b"synced-").unwrap();
        f.sync_all().unwrap();
        f.write_all(b"unsynced").unwrap();
        f.write_all_at(b"S", 0).unwrap();
        assert_eq!(std::fs::read(mnt.join("log")).unwrap(), b"Synced-unsynced");
        assert_eq!(std::fs::read(backing.join("log")).unwrap(), b"synced-");
        // A file written, fsynced, renamed (durable: namespace changes pass through).
        let mut t = std::fs::File::create(mnt.join("tmp")).unwrap();
        t.write_all(b"current").unwrap();
        t.sync_data().unwrap();
        std::fs::rename(mnt.join("tmp"), mnt.join("CURRENT")).unwrap();
        std::fs::File::open(mnt).unwrap().sync_all().unwrap();
        // Truncate then unsynced: lost.
        let g = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("CURRENT"))
            .unwrap();
        g.set_len(3).unwrap();
        assert_eq!(std::fs::read(mnt.join("CURRENT")).unwrap(), b"cur");
        let names: Vec<_> = std::fs::read_dir(mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.contains(&"CURRENT".to_string()), "{names:?}");
        drop((f, g));
        let reply = m.cut();
        assert!(reply.starts_with("ok files=2"), "{reply}");
        assert_eq!(std::fs::read(mnt.join("log")).unwrap(), b"synced-");
        assert_eq!(std::fs::read(mnt.join("CURRENT")).unwrap(), b"current");
        assert_eq!(std::fs::read(backing.join("log")).unwrap(), b"synced-");
        let st = nix::sys::statvfs::statvfs(mnt).unwrap();
        assert!(st.blocks() > 0);
    }
}

/// `Ok` if `got == want`, else an error saying how they differ (not the bytes).
fn same(got: &[u8], want: &[u8]) -> std::io::Result<()> {
    if got == want {
        return Ok(());
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    Err(std::io::Error::other(format!(
        "{} bytes, want {}; first difference at {first:?}",
        got.len(),
        want.len()
    )))
}

// What kvorum's snapshot receive does (crates/raftstore `begin_receiving_snapshot` and
// `install`): an anonymous temp file in a directory (`tempfile_in`: O_TMPFILE, or create then
// unlink), written, read back from the start and copied into a named file that is fsynced and
// renamed; with power cuts between rounds. Every step works as on a plain filesystem.
#[test]
fn anonymous_temp_file_is_usable_across_cuts() {
    use std::io::{Read, Seek, SeekFrom};
    let Some(m) = Mount::start("anonymous_temp_file_is_usable_across_cuts") else {
        return;
    };
    let dir = m.mnt.join("snapshots");
    std::fs::create_dir(&dir).unwrap();
    std::fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
    let mut failed = Vec::new();
    for round in 0..3u8 {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i as u8) ^ round).collect();
        let mut step = |what: &str, r: std::io::Result<()>| {
            if let Err(e) = r {
                failed.push(format!("round {round}: {what}: {e}"));
            }
        };
        let mut anon = tempfile::tempfile_in(&dir)
            .unwrap_or_else(|e| panic!("round {round}: tempfile_in: {e}"));
        step("write", anon.write_all(&data));
        step(
            "fstat",
            anon.metadata().map(|md| assert_eq!(md.len(), 10_000)),
        );
        step(
            "fchmod",
            anon.set_permissions(std::fs::Permissions::from_mode(0o600)),
        );
        step("seek", anon.seek(SeekFrom::Start(0)).map(|_| ()));
        let mut back = Vec::new();
        step("read back", anon.read_to_end(&mut back).map(|_| ()));
        step("read back", same(&back, &data));
        step("fsync", anon.sync_all());
        step("seek", anon.seek(SeekFrom::Start(0)).map(|_| ()));
        let tmp = dir.join(format!("s{round}.snap.tmp"));
        let mut out = std::fs::File::create(&tmp).unwrap();
        step("copy", std::io::copy(&mut anon, &mut out).map(|_| ()));
        step("sync copy", out.sync_all());
        step("ftruncate", anon.set_len(5));
        drop(anon);
        // A named file written (unsynced), then unlinked while open: still readable through
        // its descriptor.
        let named = dir.join("open-unlinked");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&named)
            .unwrap();
        step("write", f.write_all(&data));
        std::fs::remove_file(&named).unwrap();
        let mut back = Vec::new();
        step("seek", f.seek(SeekFrom::Start(0)).map(|_| ()));
        step("read unlinked", f.read_to_end(&mut back).map(|_| ()));
        step("read unlinked", same(&back, &data));
        drop(f);
        // A file unlinked while another link shows it keeps its unsynced data.
        let (a, b) = (dir.join("linked-a"), dir.join("linked-b"));
        step("write", std::fs::write(&a, &data));
        step("link", std::fs::hard_link(&a, &b));
        step("unlink", std::fs::remove_file(&a));
        step("read other link", same(&std::fs::read(&b).unwrap(), &data));
        step("unlink", std::fs::remove_file(&b));
        step("copied", same(&std::fs::read(&tmp).unwrap(), &data));
        std::fs::rename(&tmp, dir.join(format!("s{round}.snap"))).unwrap();
        std::fs::File::open(&dir).unwrap().sync_all().unwrap();
        drop(out);
        m.cut();
        let kept = std::fs::read(dir.join(format!("s{round}.snap"))).unwrap();
        step("after the cut", same(&kept, &data));
    }
    assert!(failed.is_empty(), "failed steps: {failed:#?}");
    let left: Vec<_> = std::fs::read_dir(m.backing.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 3, "only the renamed files are left: {left:?}");
}

// Namespace changes are durable only once their directory is fsynced: write + fsync + rename
// without a directory fsync loses the rename (and a new file) on a cut; with the directory fsync
// both are kept. An fsync of the file alone does not make its directory entry durable.
#[test]
fn rename_without_dir_fsync_is_lost_on_cut() {
    let Some(m) = Mount::start("rename_without_dir_fsync_is_lost_on_cut") else {
        return;
    };
    let d = m.mnt.join("d");
    std::fs::create_dir(&d).unwrap();
    std::fs::File::open(&m.mnt).unwrap().sync_all().unwrap();
    let write_synced = |name: &str, data: &[u8]| {
        let mut f = std::fs::File::create(d.join(name)).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
    };
    write_synced("CURRENT", b"old");
    std::fs::File::open(&d).unwrap().sync_all().unwrap();
    // Without a directory fsync: the new file and the rename onto CURRENT are lost.
    write_synced("tmp", b"new");
    std::fs::rename(d.join("tmp"), d.join("CURRENT")).unwrap();
    write_synced("created", b"x");
    std::fs::remove_file(d.join("created")).unwrap();
    write_synced("fresh", b"y");
    assert_eq!(std::fs::read(d.join("CURRENT")).unwrap(), b"new");
    m.cut();
    let names = |dir: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(std::fs::read(d.join("CURRENT")).unwrap(), b"old");
    assert_eq!(
        names(&d),
        ["CURRENT"],
        "new files are gone, tmp is not back"
    );
    // With the directory fsync: kept.
    write_synced("tmp", b"new");
    std::fs::rename(d.join("tmp"), d.join("CURRENT")).unwrap();
    write_synced("fresh", b"y");
    std::fs::File::open(&d).unwrap().sync_all().unwrap();
    // An unlink without a directory fsync comes back with its synced data.
    std::fs::remove_file(d.join("fresh")).unwrap();
    m.cut();
    assert_eq!(std::fs::read(d.join("CURRENT")).unwrap(), b"new");
    assert_eq!(std::fs::read(d.join("fresh")).unwrap(), b"y");
    assert_eq!(names(&d), ["CURRENT", "fresh"]);
    // A directory never fsynced into its parent goes with everything in it.
    std::fs::create_dir(m.mnt.join("e")).unwrap();
    write_synced("../e/f", b"z");
    std::fs::File::open(m.mnt.join("e"))
        .unwrap()
        .sync_all()
        .unwrap();
    m.cut();
    assert!(!m.mnt.join("e").exists());
    assert_eq!(names(&m.mnt), ["d"], "the hidden area does not show");
}
