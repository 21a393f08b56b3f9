//! Mounts a real lazyfs (needs root and /dev/fuse; prints SKIPPED otherwise, and fails in CI)
//! and checks the durability model through the kernel: unsynced writes are lost on a cut,
//! fsynced ones (and renames) are kept.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::os::unix::fs::FileExt;
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

#[test]
fn cut_loses_unsynced_writes_keeps_synced() {
    if let Err(why) = available() {
        assert!(
            std::env::var("CI").is_err(),
            "lazyfs mount test cannot run in CI: {why}"
        );
        println!("SKIPPED cut_loses_unsynced_writes_keeps_synced: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mnt, backing, sock) = (
        dir.path().join("mnt"),
        dir.path().join("b"),
        dir.path().join("s"),
    );
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&backing).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvorum-lazyfs"))
        .arg(&mnt)
        .arg(&backing)
        .arg("--control")
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(mounted(&mnt) && kvorum_lazyfs::control(&sock, "stats").is_ok()) {
        assert!(Instant::now() < deadline, "not mounted within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = || {
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
        std::fs::File::open(&mnt).unwrap().sync_all().unwrap();
        // Truncate then unsynced: lost.
        let g = std::fs::OpenOptions::new()
            .write(true)
            .open(mnt.join("CURRENT"))
            .unwrap();
        g.set_len(3).unwrap();
        assert_eq!(std::fs::read(mnt.join("CURRENT")).unwrap(), b"cur");
        let names: Vec<_> = std::fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.contains(&"CURRENT".to_string()), "{names:?}");
        drop((f, g));
        let reply = kvorum_lazyfs::control(&sock, "cut").unwrap();
        println!("cut: {reply}");
        assert!(reply.starts_with("ok files=2"), "{reply}");
        assert_eq!(std::fs::read(mnt.join("log")).unwrap(), b"synced-");
        assert_eq!(std::fs::read(mnt.join("CURRENT")).unwrap(), b"current");
        assert_eq!(std::fs::read(backing.join("log")).unwrap(), b"synced-");
        let st = nix::sys::statvfs::statvfs(&mnt).unwrap();
        assert!(st.blocks() > 0);
    };
    let result = std::panic::catch_unwind(run);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = Command::new("umount").arg("-l").arg(&mnt).status();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!mounted(&mnt), "still mounted after SIGTERM");
    result.unwrap();
}
