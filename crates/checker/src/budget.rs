//! Time, memory and cancellation limits shared by the searches of one check.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Limits shared by all keys of one check, and the cancellation flag.
pub(crate) struct Budget {
    deadline: Option<Instant>,
    time_limit: Duration,
    max_states: usize,
    max_bytes: usize,
    states: AtomicUsize,
    bytes: AtomicUsize,
    /// Set when some key is found not linearizable: other searches stop.
    pub(crate) cancel: AtomicBool,
}

impl Budget {
    pub(crate) fn new(
        start: Instant,
        time_limit: Duration,
        max_states: usize,
        max_bytes: usize,
    ) -> Self {
        Budget {
            deadline: start.checked_add(time_limit),
            time_limit,
            max_states,
            max_bytes,
            states: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            cancel: AtomicBool::new(false),
        }
    }
}

impl Budget {
    /// The state bound.
    pub(crate) fn max_states(&self) -> usize {
        self.max_states
    }

    /// The memory bound.
    pub(crate) fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// When the check must stop, if ever.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// What stopped a search early.
pub(crate) enum Stop {
    Cancelled,
    Unknown(String),
}

/// One search's share of the budget; returns it on drop.
pub(crate) struct Account<'a> {
    budget: &'a Budget,
    states: usize,
    bytes: usize,
}

impl<'a> Account<'a> {
    /// An empty share of `budget`.
    pub(crate) fn new(budget: &'a Budget) -> Self {
        Account {
            budget,
            states: 0,
            bytes: 0,
        }
    }

    /// Publishes local totals and checks every limit.
    pub(crate) fn poll(&mut self, states: usize, bytes: usize) -> Result<(), Stop> {
        let b = self.budget;
        if b.cancel.load(Ordering::Relaxed) {
            return Err(Stop::Cancelled);
        }
        let ds = states.saturating_sub(self.states);
        let db = bytes.saturating_sub(self.bytes);
        self.states += ds;
        self.bytes += db;
        let total_states = b.states.fetch_add(ds, Ordering::Relaxed).saturating_add(ds);
        let total_bytes = b.bytes.fetch_add(db, Ordering::Relaxed).saturating_add(db);
        if total_states > b.max_states {
            return Err(Stop::Unknown(format!(
                "state bound reached: {total_states} memoized states (limit {})",
                b.max_states
            )));
        }
        if total_bytes > b.max_bytes {
            return Err(Stop::Unknown(format!(
                "memory bound reached: ~{} MiB of memoized states (limit ~{} MiB)",
                total_bytes >> 20,
                b.max_bytes >> 20
            )));
        }
        if let Some(deadline) = b.deadline {
            if Instant::now() >= deadline {
                return Err(Stop::Unknown(format!(
                    "time limit of {:?} reached",
                    b.time_limit
                )));
            }
        }
        Ok(())
    }
}

impl Drop for Account<'_> {
    fn drop(&mut self) {
        // The memo is freed when the search returns.
        self.budget.states.fetch_sub(self.states, Ordering::Relaxed);
        self.budget.bytes.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}
