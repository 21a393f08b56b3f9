//! A FUSE passthrough filesystem that loses what was not fsynced, in the spirit of Jepsen's
//! lazyfs: the tests put a node's data directory on it and "cut the power" to see what a real
//! disk would keep.
//!
//! # Durability model
//! - **File data and sizes** (write, pwrite, append, ftruncate, O_TRUNC, fallocate that grows a
//!   file) go to a per-file page cache in memory ([`cache::FileCache`], pages of
//!   [`cache::PAGE`] bytes); readers see them at once. `fsync`/`fdatasync` on any handle of the
//!   file writes that file's cached pages and size to the backing file and fsyncs it. `close`
//!   makes nothing durable.
//! - **`sync_file_range`** is not forwarded by the kernel to FUSE filesystems: it makes nothing
//!   durable here, as it gives no durability guarantee on a real disk either (no metadata, no
//!   device cache flush).
//! - **Namespace changes** (create, mkdir, link, unlink, rename) reach the backing directory at
//!   once (readers see them) but are durable only once their directory is fsynced, as on a real
//!   disk: a power cut takes back every change whose directory was not fsynced since
//!   ([`namespace`]), newest first: a created file or directory disappears (with whatever it
//!   holds), a rename reverts (and the file it replaced comes back), an unlinked file comes back
//!   with its synced contents (it waits in a hidden directory of the backing root,
//!   [`fs::HIDDEN_DIR`], until the unlink is durable). An fsync of a *file* does not make its
//!   directory entry durable. A directory's changes become durable in order: a rename across
//!   directories is durable once either directory is fsynced, and with it the earlier changes
//!   of both. Directory renames and rmdir are durable at once, and make every pending change
//!   durable first (kinder than a disk; taking back changes under a moved directory by path
//!   would be wrong). chmod and utimes are durable at once.
//! - **Unlinked open files** (anonymous temp files: `O_TMPFILE` is not supported by the FUSE
//!   layer, so `tempfile` creates and unlinks one) live on through their open handles: reads,
//!   writes, fstat, ftruncate, fchmod work until the last handle is released, which drops the
//!   file's cache. Like any unlink, theirs is taken back by a cut before their directory is
//!   fsynced: the temp file comes back under its name with its synced contents.
//! - **Power cut** ([`State::cut`]): every file's cache is dropped and the pending namespace
//!   changes are taken back, so the backing directory holds exactly what was synced. Cut *after* the processes using the mount are dead (SIGKILL,
//!   then cut): a process still running would go on writing on top of state that is gone.
//! - Unsupported: fallocate modes other than 0 and KEEP_SIZE (EOPNOTSUPP), symlink, mknod,
//!   xattrs (ENOSYS). POSIX and flock locks are handled by the kernel (local to the mount).
//!
//! # Control
//! `--control SOCKET`: a unix socket; each connection sends one line and gets one line back:
//! `cut` → `ok files=N bytes=M namespace=K` (what was dropped: files with unsynced data, their
//! bytes, namespace changes taken back), `stats` → the same for what is unsynced now.
//! [`control`] is the client.

#![deny(unsafe_code)]

pub mod cache;
pub mod cli;
pub mod fs;
pub mod namespace;
mod state;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use fs::{LazyFs, State};

/// Serves the control socket at `path` until the process exits (one thread per connection is
/// not needed: commands are short).
pub fn serve_control(path: &Path, state: Arc<Mutex<State>>) -> std::io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::thread::Builder::new()
        .name("lazyfs-control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = handle(conn, &state);
            }
        })?;
    Ok(())
}

fn handle(conn: UnixStream, state: &Arc<Mutex<State>>) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
    let reply = match line.trim() {
        "cut" => {
            let u = st.cut();
            eprintln!(
                "lazyfs: POWER CUT: dropped {} unsynced bytes in {} files, took back {} \
                 namespace changes",
                u.bytes, u.files, u.namespace_ops
            );
            format!(
                "ok files={} bytes={} namespace={}\n",
                u.files, u.bytes, u.namespace_ops
            )
        }
        "stats" => {
            let u = st.dirty();
            format!(
                "ok files={} bytes={} namespace={}\n",
                u.files, u.bytes, u.namespace_ops
            )
        }
        other => format!("error unknown command {other:?}\n"),
    };
    drop(st);
    (&conn).write_all(reply.as_bytes())
}

/// Sends `command` (`cut` or `stats`) to the control socket at `path`; returns the reply line.
pub fn control(path: &Path, command: &str) -> std::io::Result<String> {
    let mut conn = UnixStream::connect(path)?;
    conn.write_all(format!("{command}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line)?;
    if !line.starts_with("ok") {
        return Err(std::io::Error::other(line.trim().to_string()));
    }
    Ok(line.trim().to_string())
}
