//! lazyfs mounts for node data directories: a `lazyfs-test` process per node, started and
//! stopped by PID, with a control socket for power cuts (see the `kvorum-lazyfs` crate).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Longest wait for a mount to appear or go away.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether lazyfs mounts can work here: root and /dev/fuse. `Err` says what is missing.
pub fn lazyfs_available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root (FUSE mounts need root here)".into());
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_err()
    {
        return Err("/dev/fuse cannot be opened".into());
    }
    Ok(())
}

/// Whether `path` is a mount point now (listed in /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == want))
}

/// One lazyfs process: `mountpoint` shows `backing`, unsynced writes live in its memory.
pub struct LazyMount {
    pub mountpoint: PathBuf,
    pub backing: PathBuf,
    pub control: PathBuf,
    /// lazyfs's own log (what each power cut dropped and took back).
    pub log: PathBuf,
    child: Option<Child>,
}

impl LazyMount {
    /// Mounts a lazyfs at `mountpoint` over `dir/backingN`, logging to `dir/lazyfsN.log`; waits
    /// (bounded) until the mount answers.
    pub fn start(bin: &Path, dir: &Path, mountpoint: &Path, n: usize) -> LazyMount {
        let backing = dir.join(format!("backing{n}"));
        let control = dir.join(format!("lazyfs{n}.sock"));
        std::fs::create_dir_all(&backing).expect("backing dir");
        std::fs::create_dir_all(mountpoint).expect("mountpoint");
        let log_path = dir.join(format!("lazyfs{n}.log"));
        let log = std::fs::File::create(&log_path).expect("lazyfs log");
        let child = Command::new(bin)
            .arg(mountpoint)
            .arg(&backing)
            .arg("--control")
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn lazyfs");
        let mut m = LazyMount {
            mountpoint: mountpoint.to_path_buf(),
            backing,
            control,
            log: log_path,
            child: Some(child),
        };
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while !(is_mounted(&m.mountpoint) && kvorum_lazyfs::control(&m.control, "stats").is_ok()) {
            if let Some(Ok(Some(st))) = m.child.as_mut().map(|c| c.try_wait()) {
                panic!("lazyfs for node {n} exited ({st}); see {}", dir.display());
            }
            assert!(
                Instant::now() < deadline,
                "lazyfs for node {n} not mounted within {MOUNT_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// Drops every unsynced write (the node using it must be dead); returns lazyfs's reply.
    pub fn cut(&self) -> String {
        kvorum_lazyfs::control(&self.control, "cut").expect("lazyfs cut")
    }

    /// Unsynced files and bytes now (lazyfs's reply).
    pub fn stats(&self) -> String {
        kvorum_lazyfs::control(&self.control, "stats").expect("lazyfs stats")
    }

    /// Unmounts: SIGTERM by PID, bounded wait, then SIGKILL and a lazy unmount.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + MOUNT_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = c.try_wait() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
    }
}

impl Drop for LazyMount {
    fn drop(&mut self) {
        self.stop();
    }
}
