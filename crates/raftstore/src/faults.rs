//! Faults planted in the store for the test suite, gathered in one value ([`StoreFaults`]).
//!
//! Only builds with the `test-faults` feature have them, and only the test suite's `kvnode-test`
//! binary turns that feature on. There the value is built once at start from the environment
//! (`StoreFaults::from_env`) and handed to [`Store::open_with`](crate::Store::open_with) in its
//! [`StoreOptions`](crate::StoreOptions); no hook reads the environment afterwards. Without the
//! feature [`StoreFaults`] has no fields, its hooks do nothing, and no fault variable's name is
//! compiled in.
//!
//! The faults (each logged as `FAULT INJECTED: ...`):
//! - `KVORUM_FAULT_SKIP_WAL_FSYNC=1`: the WAL flusher reports appends durable without fsyncing
//!   the WAL (a disk that lies), so a power cut loses acknowledged entries;
//! - `KVORUM_FAULT_FSYNC_EIO=<1 or a path substring>`: the first WAL or snapshot fsync of the
//!   store under a matching path fails with EIO (once: a node that retried would then carry on,
//!   which the tests must catch);
//! - `KVORUM_FAULT_APPLY_FAIL_KEY=<key>`: applying a write of that key fails with a storage
//!   error, as a failing disk would.

use std::path::Path;

/// Environment variable of the skipped-WAL-fsync fault (`1`: on).
#[cfg(feature = "test-faults")]
pub const SKIP_WAL_FSYNC_ENV: &str = "KVORUM_FAULT_SKIP_WAL_FSYNC";
/// Environment variable of the fsync-EIO fault (`1`: any path; else a path substring).
#[cfg(feature = "test-faults")]
pub const FSYNC_EIO_ENV: &str = "KVORUM_FAULT_FSYNC_EIO";
/// Environment variable of the apply-fail fault (the key whose writes fail to apply).
#[cfg(feature = "test-faults")]
pub const APPLY_FAIL_KEY_ENV: &str = "KVORUM_FAULT_APPLY_FAIL_KEY";

/// What an fsync hook is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fsync {
    /// The WAL fsync that makes appended log entries durable.
    Wal,
    /// The fsync of a finished snapshot file.
    Snapshot,
}

/// The store's planted faults: all off by default, and always off without the `test-faults`
/// feature (the struct is then empty).
#[derive(Debug, Default)]
pub struct StoreFaults {
    /// Report WAL fsyncs done without doing them.
    #[cfg(feature = "test-faults")]
    skip_wal_fsync: bool,
    /// Fail the first fsync under a path containing this (`"1"`: any path) with EIO.
    #[cfg(feature = "test-faults")]
    fsync_eio: Option<String>,
    /// Whether the EIO fault has fired (it fires once).
    #[cfg(feature = "test-faults")]
    eio_fired: std::sync::atomic::AtomicBool,
    /// Fail to apply writes of this key.
    #[cfg(feature = "test-faults")]
    apply_fail_key: Option<String>,
}

#[cfg(feature = "test-faults")]
impl StoreFaults {
    /// The faults the process environment switches on; read once, at start.
    pub fn from_env() -> StoreFaults {
        StoreFaults::from_vars(|n| std::env::var(n).ok())
    }

    /// The faults `var` (a variable's value by name) switches on.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> StoreFaults {
        StoreFaults {
            skip_wal_fsync: var(SKIP_WAL_FSYNC_ENV).is_some_and(|v| v == "1"),
            fsync_eio: var(FSYNC_EIO_ENV).filter(|v| !v.is_empty()),
            eio_fired: std::sync::atomic::AtomicBool::new(false),
            apply_fail_key: var(APPLY_FAIL_KEY_ENV),
        }
    }

    /// The `FAULT INJECTED` lines to log at startup, one per fault that is on.
    pub fn announcements(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.skip_wal_fsync {
            lines.push(format!(
                "FAULT INJECTED: appends are reported durable without a WAL fsync \
                 ({SKIP_WAL_FSYNC_ENV}=1)"
            ));
        }
        if let Some(p) = &self.fsync_eio {
            lines.push(format!(
                "FAULT INJECTED: the first WAL or snapshot fsync fails with EIO ({FSYNC_EIO_ENV}={p})"
            ));
        }
        if let Some(k) = &self.apply_fail_key {
            lines.push(format!(
                "FAULT INJECTED: writes of key {k:?} fail to apply ({APPLY_FAIL_KEY_ENV})"
            ));
        }
        lines
    }

    /// `Some(result)` replaces the fsync of `what` under `path`; `None`: fsync as usual.
    pub(crate) fn fsync(&self, path: &Path, what: Fsync) -> Option<std::io::Result<()>> {
        use std::sync::atomic::Ordering;
        if let Some(p) = &self.fsync_eio {
            if (p == "1" || path.to_string_lossy().contains(p.as_str()))
                && !self.eio_fired.swap(true, Ordering::SeqCst)
            {
                tracing::error!(path = %path.display(), "FAULT INJECTED: {what:?} fsync fails with EIO ({FSYNC_EIO_ENV})");
                return Some(Err(std::io::Error::from_raw_os_error(EIO)));
            }
        }
        if what == Fsync::Wal && self.skip_wal_fsync {
            return Some(Ok(()));
        }
        None
    }

    /// The storage error message with which applying a write of `key` fails, if it must.
    pub(crate) fn apply(&self, key: &str) -> Option<String> {
        (self.apply_fail_key.as_deref() == Some(key))
            .then(|| format!("FAULT INJECTED: apply failed ({APPLY_FAIL_KEY_ENV})"))
    }
}

/// The errno of an I/O error (Linux `EIO`).
#[cfg(feature = "test-faults")]
const EIO: i32 = 5;

#[cfg(not(feature = "test-faults"))]
impl StoreFaults {
    /// `None`: fsync as usual (no faults in this build).
    pub(crate) fn fsync(&self, _: &Path, _: Fsync) -> Option<std::io::Result<()>> {
        None
    }

    /// `None`: apply as usual (no faults in this build).
    pub(crate) fn apply(&self, _: &str) -> Option<String> {
        None
    }
}

#[cfg(all(test, feature = "test-faults"))]
mod tests {
    use super::*;

    // Each fault is on only when its variable says so; EIO fires once, only under a matching
    // path; the skipped fsync is the WAL's only.
    #[test]
    fn faults_follow_their_variables() {
        let none = StoreFaults::from_vars(|_| None);
        assert!(none.announcements().is_empty());
        assert!(none.fsync(Path::new("/d/snapshots"), Fsync::Wal).is_none());
        assert!(none.apply("k").is_none());

        let f = StoreFaults::from_vars(|n| match n {
            SKIP_WAL_FSYNC_ENV => Some("1".into()),
            FSYNC_EIO_ENV => Some("node-2".into()),
            APPLY_FAIL_KEY_ENV => Some("boom".into()),
            _ => None,
        });
        assert_eq!(f.announcements().len(), 3);
        assert!(f.apply("boom").is_some() && f.apply("other").is_none());
        assert!(f.fsync(Path::new("/d/node-1"), Fsync::Snapshot).is_none());
        assert!(matches!(
            f.fsync(Path::new("/d/node-2"), Fsync::Snapshot),
            Some(Err(_))
        ));
        // Fired once: the next fsync under the path is the skipped WAL fsync, or a real one.
        assert!(matches!(
            f.fsync(Path::new("/d/node-2"), Fsync::Wal),
            Some(Ok(()))
        ));
        assert!(f.fsync(Path::new("/d/node-2"), Fsync::Snapshot).is_none());
    }
}
