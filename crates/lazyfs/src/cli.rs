//! `kvorum-lazyfs MOUNTPOINT BACKING_DIR [--control SOCKET]`: mounts a lazyfs over BACKING_DIR at
//! MOUNTPOINT (in the foreground, until SIGTERM/SIGINT, which unmount). Needs root (or
//! fusermount3) and /dev/fuse.

use std::path::PathBuf;

use anyhow::{bail, Context};
use fuser::MountOption;

/// Environment variable: `durable` makes namespace changes durable at once, without a
/// directory fsync (the model before directory fsyncs counted), to tell whether a finding
/// depends on the directory model. Inherited from the test that starts the mounts.
pub const NAMESPACE_ENV: &str = "KVORUM_LAZYFS_NAMESPACE";

/// The `kvorum-lazyfs` command line (see the crate note); returns when unmounted by a signal.
pub fn cli_main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let mut positional = Vec::new();
    let mut control = None;
    while let Some(a) = args.next() {
        if a == "--control" {
            control = Some(PathBuf::from(
                args.next().context("--control needs a path")?,
            ));
        } else {
            positional.push(PathBuf::from(a));
        }
    }
    let [mountpoint, backing] = positional.as_slice() else {
        bail!("usage: kvorum-lazyfs MOUNTPOINT BACKING_DIR [--control SOCKET]");
    };
    // Unmount on SIGTERM/SIGINT (dropping the session unmounts). Blocked before any thread
    // starts, so that every thread inherits the mask and only `wait` below sees them.
    let mut signals = nix::sys::signal::SigSet::empty();
    signals.add(nix::sys::signal::Signal::SIGTERM);
    signals.add(nix::sys::signal::Signal::SIGINT);
    signals.thread_block().context("block signals")?;
    let mut fs = crate::LazyFs::new(backing)
        .with_context(|| format!("backing directory {}", backing.display()))?;
    if std::env::var(NAMESPACE_ENV).is_ok_and(|v| v == "durable") {
        eprintln!("kvorum-lazyfs: {NAMESPACE_ENV}=durable: namespace changes are durable at once");
        fs = fs.namespace_durable();
    }
    if let Some(path) = &control {
        crate::serve_control(path, fs.state())
            .with_context(|| format!("control socket {}", path.display()))?;
    }
    let opts = [
        MountOption::FSName("kvorum-lazyfs".into()),
        MountOption::DefaultPermissions,
    ];
    let session = fuser::spawn_mount2(fs, mountpoint, &opts)
        .with_context(|| format!("mount at {}", mountpoint.display()))?;
    eprintln!(
        "kvorum-lazyfs: {} mounted over {}",
        mountpoint.display(),
        backing.display()
    );
    let sig = signals.wait().context("wait for a signal")?;
    eprintln!(
        "kvorum-lazyfs: {sig:?}: unmounting {}",
        mountpoint.display()
    );
    drop(session);
    Ok(())
}
