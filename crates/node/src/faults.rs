//! Faults planted for the test suite, gathered in one value ([`Faults`]): each breaks one
//! promise of the node or its store, so that a test proves it can catch it, or holds a step
//! open so that a test can hit a window.
//!
//! Only builds with the `test-faults` feature have them, and only the test suite's
//! `kvnode-test` binary (package `kvorum-tests`) turns that feature on; the `kvnode` that users
//! build has no hook and names no fault variable. `kvnode-test` builds the value once at start
//! from the environment (`Faults::from_env`) and passes it to [`crate::run_with_faults`]: the
//! store's part goes to [`kvorum_raftstore::Store::open_with`], the node's part is kept by
//! [`crate::node::Node`]. No hook reads the environment afterwards (the no-heartbeats fault reads
//! the file it names before each heartbeat, so a test can pick the node at run time). Each fault
//! that is on is logged at startup as `FAULT INJECTED: ...`.
//!
//! The node's faults (the store's are listed in [`kvorum_raftstore::faults`]):
//! - `KVORUM_FAULT_ACK_BEFORE_COMMIT=1`: the leader hands a write to Raft without waiting
//!   (`client_write_ff`) and answers at once what it predicts from its applied state (success,
//!   with the version the entry would get), before the entry is committed or applied. An
//!   acknowledged write can then be missed by a read that follows it, reordered with a
//!   concurrent write, refused at apply (a cas whose condition a pending write broke), or lost
//!   with the leader. A write the prediction refuses takes the honest path.
//! - `KVORUM_FAULT_FAIL_PROPOSED=1`: one write proposal in `FAIL_PROPOSED_EVERY` (3) on each node
//!   is answered 503 `unavailable` — a definite failure, "nothing was written" — after
//!   `client_write` committed it.
//! - `KVORUM_FAULT_STALE_READS=1`: linearizable reads are served from the local replica without
//!   a read index (the Jepsen suite must catch it).
//! - `KVORUM_FAULT_NO_HEARTBEATS=<file>`: a node whose id the file lists (commas or white space)
//!   sends no heartbeats; its replicas keep running.
//! - `KVORUM_FAULT_TASK_STEP_DELAY_MS=<ms>`: every repair step waits this long before it runs.
//! - `KVORUM_FAULT_MOVE_HOLD=<after_freeze|before_activate>:<ms>`: every move batch waits `ms`
//!   at that point (see [`MovePoint`]).
//! - `KVORUM_FAULT_MOVE_BATCH_SLOTS=<n>`: move batches of `n` slots instead of
//!   [`crate::meta::MOVE_BATCH_SLOTS`].
//! - `KVORUM_FAULT_STEP_FAIL_LIMIT_MS=<ms>`: a view-change step fails the change after this long
//!   instead of the production limit.
//! - `KVORUM_FAULT_CATCH_UP_WAIT_MS=<ms>`: a group's leader waits this long (instead of the
//!   production wait) for a new learner to catch up, so a learner that never does fails its step
//!   in seconds.
//! - `KVORUM_FAULT_COPY_CHUNK_DELAY_MS=<ms>`: a move's copy waits this long before each chunk it
//!   sends to the destination (logged `FAULT INJECTED: copy chunk delayed`), so that a copy of a
//!   few chunks spans seconds.

use std::time::Duration;

use kvorum_raftstore::{NodeId, StoreFaults};

#[cfg(feature = "test-faults")]
use kvorum_raftstore::{Command, Versioned, WriteResult};

/// Environment variable of the ack-before-commit fault (`1`: on).
#[cfg(feature = "test-faults")]
pub const ACK_BEFORE_COMMIT_ENV: &str = "KVORUM_FAULT_ACK_BEFORE_COMMIT";
/// Environment variable of the fail-proposed fault (`1`: on).
#[cfg(feature = "test-faults")]
pub const FAIL_PROPOSED_ENV: &str = "KVORUM_FAULT_FAIL_PROPOSED";
/// Environment variable of the stale-reads fault (`1`: on).
#[cfg(feature = "test-faults")]
pub const STALE_READS_ENV: &str = "KVORUM_FAULT_STALE_READS";
/// Environment variable of the no-heartbeats fault: the path of a file listing node ids.
#[cfg(feature = "test-faults")]
pub const NO_HEARTBEATS_ENV: &str = "KVORUM_FAULT_NO_HEARTBEATS";
/// Environment variable of the repair step delay, in ms.
#[cfg(feature = "test-faults")]
pub const TASK_STEP_DELAY_ENV: &str = "KVORUM_FAULT_TASK_STEP_DELAY_MS";
/// Environment variable of the move hold: `<point>:<ms>`.
#[cfg(feature = "test-faults")]
pub const MOVE_HOLD_ENV: &str = "KVORUM_FAULT_MOVE_HOLD";
/// Environment variable of the slots per move batch.
#[cfg(feature = "test-faults")]
pub const MOVE_BATCH_SLOTS_ENV: &str = "KVORUM_FAULT_MOVE_BATCH_SLOTS";
/// Environment variable of the view-change step failure limit, in ms.
#[cfg(feature = "test-faults")]
pub const STEP_FAIL_LIMIT_ENV: &str = "KVORUM_FAULT_STEP_FAIL_LIMIT_MS";
/// Environment variable of the learner catch-up wait, in ms.
#[cfg(feature = "test-faults")]
pub const CATCH_UP_WAIT_ENV: &str = "KVORUM_FAULT_CATCH_UP_WAIT_MS";

/// Environment variable of the copy-chunk delay fault (milliseconds).
#[cfg(feature = "test-faults")]
pub const COPY_CHUNK_DELAY_ENV: &str = "KVORUM_FAULT_COPY_CHUNK_DELAY_MS";

/// Under the fail-proposed fault, every this-many-th write proposal of a node (the 3rd, 6th, ...)
/// is answered `unavailable` although it was committed: often enough that a run of a few
/// seconds reads such a write's value, rarely enough that most writes still succeed.
#[cfg(feature = "test-faults")]
pub const FAIL_PROPOSED_EVERY: u64 = 3;

/// Where a move batch can be held by the move-hold fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MovePoint {
    /// The source is frozen and the copy made; nothing caught up yet.
    AfterFreeze,
    /// Flipped in the map; the destination not yet serving.
    BeforeActivate,
}

impl MovePoint {
    /// The point's name in the fault's variable and in the `FAULT INJECTED` line.
    pub fn name(self) -> &'static str {
        match self {
            MovePoint::AfterFreeze => "after_freeze",
            MovePoint::BeforeActivate => "before_activate",
        }
    }
}

/// Every planted fault of one node process, built once at start. [`Faults::default`] (what
/// `kvnode` runs with) has none.
#[derive(Debug, Default)]
pub struct Faults {
    /// The store's faults, handed to [`kvorum_raftstore::Store::open_with`].
    pub store: StoreFaults,
    /// The node's own faults, kept by [`crate::node::Node`].
    pub node: NodeFaults,
}

/// The node's planted faults (see the module overview). Without the `test-faults` feature the
/// struct is empty and every accessor answers what production does.
#[derive(Debug, Default)]
pub struct NodeFaults {
    /// Acknowledge writes before they commit.
    #[cfg(feature = "test-faults")]
    ack_before_commit: bool,
    /// Answer some committed writes as definite failures.
    #[cfg(feature = "test-faults")]
    fail_proposed: bool,
    /// Write proposals counted by [`NodeFaults::fail_this_proposal`].
    #[cfg(feature = "test-faults")]
    proposals: std::sync::atomic::AtomicU64,
    /// Serve linearizable reads without a read index.
    #[cfg(feature = "test-faults")]
    stale_reads: bool,
    /// The file listing the nodes that send no heartbeats.
    #[cfg(feature = "test-faults")]
    no_heartbeats: Option<std::path::PathBuf>,
    /// Wait before each repair step.
    #[cfg(feature = "test-faults")]
    task_step_delay: Duration,
    /// Hold every move batch at this point for this long.
    #[cfg(feature = "test-faults")]
    move_hold: Option<(MovePoint, Duration)>,
    /// Slots per move batch.
    #[cfg(feature = "test-faults")]
    move_batch_slots: Option<u16>,
    /// How long a view-change step may keep failing.
    #[cfg(feature = "test-faults")]
    step_fail_limit: Option<Duration>,
    /// How long a group's leader waits for a new learner to catch up.
    #[cfg(feature = "test-faults")]
    catch_up_wait: Option<Duration>,
    /// Wait before each copy chunk of a move.
    #[cfg(feature = "test-faults")]
    copy_chunk_delay: Option<Duration>,
}

#[cfg(feature = "test-faults")]
impl Faults {
    /// The faults the process environment switches on; read once, at start.
    pub fn from_env() -> Faults {
        let var = |n: &str| std::env::var(n).ok();
        Faults {
            store: StoreFaults::from_vars(var),
            node: NodeFaults::from_vars(var),
        }
    }

    /// The `FAULT INJECTED` lines to log at startup, one per fault that is on.
    pub fn announcements(&self) -> Vec<String> {
        let mut lines = self.store.announcements();
        lines.extend(self.node.announcements());
        lines
    }
}

#[cfg(not(feature = "test-faults"))]
impl Faults {
    /// No lines: this build has no faults.
    pub fn announcements(&self) -> Vec<String> {
        Vec::new()
    }
}

#[cfg(feature = "test-faults")]
impl NodeFaults {
    /// The faults `var` (a variable's value by name) switches on: the on/off ones by exactly
    /// `1`, the others by a value that parses.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> NodeFaults {
        let on = |name: &str| var(name).is_some_and(|v| v == "1");
        let ms = |name: &str| {
            var(name)
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        };
        let move_hold = var(MOVE_HOLD_ENV).and_then(|v| {
            let (p, ms) = v.split_once(':')?;
            let point = [MovePoint::AfterFreeze, MovePoint::BeforeActivate]
                .into_iter()
                .find(|m| m.name() == p)?;
            Some((point, Duration::from_millis(ms.parse().ok()?)))
        });
        NodeFaults {
            ack_before_commit: on(ACK_BEFORE_COMMIT_ENV),
            fail_proposed: on(FAIL_PROPOSED_ENV),
            proposals: std::sync::atomic::AtomicU64::new(0),
            stale_reads: on(STALE_READS_ENV),
            no_heartbeats: var(NO_HEARTBEATS_ENV).map(std::path::PathBuf::from),
            task_step_delay: ms(TASK_STEP_DELAY_ENV).unwrap_or(Duration::ZERO),
            move_hold,
            move_batch_slots: var(MOVE_BATCH_SLOTS_ENV)
                .and_then(|v| v.parse().ok())
                .filter(|n| *n > 0),
            step_fail_limit: ms(STEP_FAIL_LIMIT_ENV),
            catch_up_wait: ms(CATCH_UP_WAIT_ENV),
            copy_chunk_delay: ms(COPY_CHUNK_DELAY_ENV),
        }
    }

    /// The `FAULT INJECTED` lines to log at startup, one per fault that is on.
    pub fn announcements(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if self.ack_before_commit {
            lines.push(format!(
                "FAULT INJECTED: writes are acknowledged before they are committed \
                 ({ACK_BEFORE_COMMIT_ENV}=1); acknowledged writes may be lost or reordered"
            ));
        }
        if self.fail_proposed {
            lines.push(format!(
                "FAULT INJECTED: one write proposal in {FAIL_PROPOSED_EVERY} is answered 503 \
                 unavailable after it was proposed and committed ({FAIL_PROPOSED_ENV}=1)"
            ));
        }
        if self.stale_reads {
            lines.push(format!(
                "FAULT INJECTED: reads skip read index and may be stale ({STALE_READS_ENV}=1)"
            ));
        }
        if let Some(f) = &self.no_heartbeats {
            lines.push(format!(
                "FAULT INJECTED: nodes listed in {} send no heartbeats ({NO_HEARTBEATS_ENV})",
                f.display()
            ));
        }
        if !self.task_step_delay.is_zero() {
            lines.push(format!(
                "FAULT INJECTED: every repair step waits {} ms before it runs \
                 ({TASK_STEP_DELAY_ENV})",
                self.task_step_delay.as_millis()
            ));
        }
        if let Some((p, d)) = &self.move_hold {
            lines.push(format!(
                "FAULT INJECTED: every move batch is held {} ms at {} ({MOVE_HOLD_ENV})",
                d.as_millis(),
                p.name()
            ));
        }
        if let Some(n) = self.move_batch_slots {
            lines.push(format!(
                "FAULT INJECTED: move batches of {n} slots ({MOVE_BATCH_SLOTS_ENV})"
            ));
        }
        if let Some(d) = self.step_fail_limit {
            lines.push(format!(
                "FAULT INJECTED: a view-change step fails the change after {} ms \
                 ({STEP_FAIL_LIMIT_ENV})",
                d.as_millis()
            ));
        }
        if let Some(d) = self.catch_up_wait {
            lines.push(format!(
                "FAULT INJECTED: a new learner gets {} ms to catch up ({CATCH_UP_WAIT_ENV})",
                d.as_millis()
            ));
        }
        if let Some(d) = self.copy_chunk_delay {
            lines.push(format!(
                "FAULT INJECTED: every copy chunk of a move waits {} ms ({COPY_CHUNK_DELAY_ENV})",
                d.as_millis()
            ));
        }
        lines
    }

    /// Whether writes are acknowledged before they commit (see `serve::write::ack_before_commit`).
    pub fn ack_before_commit(&self) -> bool {
        self.ack_before_commit
    }

    /// Under the fail-proposed fault, the message of the `unavailable` answer for the write being
    /// proposed now (every [`FAIL_PROPOSED_EVERY`]-th proposal); `None` otherwise.
    pub fn fail_this_proposal(&self) -> Option<String> {
        let n = self
            .proposals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        (self.fail_proposed && fails(n)).then(|| {
            format!(
                "planted fault {FAIL_PROPOSED_ENV}: this committed write is reported as not done"
            )
        })
    }
}

/// Accessors that exist in every build: without the `test-faults` feature each answers what
/// production does.
impl NodeFaults {
    /// Whether linearizable reads skip the read index (the stale-reads fault).
    pub fn stale_reads(&self) -> bool {
        #[cfg(feature = "test-faults")]
        {
            self.stale_reads
        }
        #[cfg(not(feature = "test-faults"))]
        {
            false
        }
    }

    /// Whether node `me` sends no heartbeat now: the no-heartbeats fault's file lists it (logged
    /// as `FAULT INJECTED` each time). Reads the file at each call, so a test can silence a node
    /// it picks at run time.
    pub fn heartbeats_muted(&self, me: NodeId) -> bool {
        #[cfg(feature = "test-faults")]
        {
            let Some(path) = &self.no_heartbeats else {
                return false;
            };
            let listed = std::fs::read_to_string(path).unwrap_or_default();
            let muted = listed
                .split(|c: char| c == ',' || c.is_whitespace())
                .any(|id| id.parse::<NodeId>().is_ok_and(|id| id == me));
            if muted {
                tracing::error!(
                    "FAULT INJECTED: this node sends no heartbeats ({NO_HEARTBEATS_ENV})"
                );
            }
            muted
        }
        #[cfg(not(feature = "test-faults"))]
        {
            let _ = me;
            false
        }
    }

    /// How long every repair step waits before it runs: zero but under the step-delay fault.
    pub fn task_step_delay(&self) -> Duration {
        #[cfg(feature = "test-faults")]
        {
            self.task_step_delay
        }
        #[cfg(not(feature = "test-faults"))]
        {
            Duration::ZERO
        }
    }

    /// How long a move batch of task `task` waits at `point`: nothing but under the move-hold
    /// fault, which logs `FAULT INJECTED: move held at <point>` first.
    pub async fn hold_move_at(&self, point: MovePoint, task: u64) {
        #[cfg(feature = "test-faults")]
        if let Some((p, d)) = self.move_hold {
            if p == point {
                tracing::error!(
                    task,
                    "FAULT INJECTED: move held at {} for {} ms",
                    point.name(),
                    d.as_millis()
                );
                tokio::time::sleep(d).await;
            }
        }
        #[cfg(not(feature = "test-faults"))]
        let _ = (point, task);
    }

    /// Slots per move batch when the batch-size fault sets them; `None`: the production size.
    pub fn move_batch_slots(&self) -> Option<u16> {
        #[cfg(feature = "test-faults")]
        {
            self.move_batch_slots
        }
        #[cfg(not(feature = "test-faults"))]
        {
            None
        }
    }

    /// The view-change step failure limit when the fault sets it; `None`: the production limit.
    pub fn step_fail_limit(&self) -> Option<Duration> {
        #[cfg(feature = "test-faults")]
        {
            self.step_fail_limit
        }
        #[cfg(not(feature = "test-faults"))]
        {
            None
        }
    }

    /// Waits before a copy chunk of task `task`: nothing but under the copy-chunk delay fault,
    /// which logs `FAULT INJECTED: copy chunk delayed` first.
    pub async fn hold_copy_chunk(&self, task: u64) {
        #[cfg(feature = "test-faults")]
        if let Some(d) = self.copy_chunk_delay {
            tracing::error!(
                task,
                "FAULT INJECTED: copy chunk delayed {} ms",
                d.as_millis()
            );
            tokio::time::sleep(d).await;
        }
        #[cfg(not(feature = "test-faults"))]
        let _ = task;
    }

    /// The learner catch-up wait when the fault sets it; `None`: the production wait.
    pub fn catch_up_wait(&self) -> Option<Duration> {
        #[cfg(feature = "test-faults")]
        {
            self.catch_up_wait
        }
        #[cfg(not(feature = "test-faults"))]
        {
            None
        }
    }
}

/// Whether proposal number `n` (0-based) is answered `unavailable` under the fail-proposed fault.
#[cfg(feature = "test-faults")]
pub fn fails(n: u64) -> bool {
    n % FAIL_PROPOSED_EVERY == FAIL_PROPOSED_EVERY - 1
}

/// Under the ack-before-commit fault: the answer the leader gives for key write `cmd` before it
/// is applied, predicted from the key's applied record `current`, with `version` (the version
/// the entry would get). `None` when the prediction is a refusal (a failed condition, an append
/// past its limit) or `cmd` is not a key write: those take the honest path.
#[cfg(feature = "test-faults")]
pub fn predicted_result(
    cmd: &Command,
    version: u64,
    current: Option<&Versioned>,
) -> Option<WriteResult> {
    let holds =
        |c: &Option<kvorum_raftstore::Condition>| c.as_ref().is_none_or(|c| c.holds(current));
    match cmd {
        Command::Put { condition, .. } => {
            holds(condition).then_some(WriteResult::Written { version })
        }
        Command::Delete { condition, .. } => holds(condition).then_some(WriteResult::Deleted {
            existed: current.is_some(),
        }),
        Command::Append { .. } => Some(WriteResult::Written { version }),
        Command::AppendBounded {
            suffix,
            max_value_bytes,
            ..
        } => {
            let len = current.map_or(0, |r| r.value.len()) + suffix.len();
            (len as u64 <= *max_value_bytes).then_some(WriteResult::Written { version })
        }
        _ => None,
    }
}

#[cfg(all(test, feature = "test-faults"))]
mod tests {
    use super::*;
    use kvorum_raftstore::Condition;

    fn rec(value: &str, version: u64) -> Versioned {
        Versioned {
            value: value.into(),
            version,
        }
    }

    // Each fault is on only with its variable (the on/off ones set to exactly "1"), and each
    // that is on is announced with FAULT INJECTED.
    #[test]
    fn faults_follow_their_variables() {
        let all = |n: &str| match n {
            MOVE_HOLD_ENV => Some("before_activate:250".into()),
            NO_HEARTBEATS_ENV => Some("/nonexistent".into()),
            MOVE_BATCH_SLOTS_ENV | TASK_STEP_DELAY_ENV | STEP_FAIL_LIMIT_ENV
            | CATCH_UP_WAIT_ENV | COPY_CHUNK_DELAY_ENV => Some("5".into()),
            _ => Some("1".into()),
        };
        let f = NodeFaults::from_vars(all);
        assert!(f.ack_before_commit() && f.stale_reads());
        assert_eq!(
            f.move_hold,
            Some((MovePoint::BeforeActivate, Duration::from_millis(250)))
        );
        assert_eq!(f.move_batch_slots(), Some(5));
        assert_eq!(f.task_step_delay(), Duration::from_millis(5));
        assert_eq!(f.step_fail_limit(), Some(Duration::from_millis(5)));
        assert_eq!(f.catch_up_wait(), Some(Duration::from_millis(5)));
        assert_eq!(f.copy_chunk_delay, Some(Duration::from_millis(5)));
        assert!(!f.heartbeats_muted(1), "an unreadable file lists nobody");
        let lines = f.announcements();
        assert_eq!(lines.len(), 10, "{lines:?}");
        assert!(
            lines.iter().all(|l| l.starts_with("FAULT INJECTED: ")),
            "{lines:?}"
        );

        let off = NodeFaults::from_vars(|_| None);
        assert!(off.announcements().is_empty());
        assert!(!off.ack_before_commit() && !off.stale_reads());
        assert_eq!(off.task_step_delay(), Duration::ZERO);
        assert!(off.move_batch_slots().is_none() && off.step_fail_limit().is_none());
        assert!(off.catch_up_wait().is_none());
        let other = NodeFaults::from_vars(|_| Some("true".into()));
        assert!(!other.ack_before_commit() && !other.stale_reads());
        assert!(other.move_hold.is_none() && other.fail_this_proposal().is_none());
        assert!(Faults::default().announcements().is_empty());
    }

    // The no-heartbeats file is read at each call: a node listed later is muted from then on.
    #[test]
    fn muted_nodes_are_read_from_the_file() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("muted");
        let f =
            NodeFaults::from_vars(|n| (n == NO_HEARTBEATS_ENV).then(|| file.display().to_string()));
        assert!(!f.heartbeats_muted(2));
        std::fs::write(&file, "1, 2\n")?;
        assert!(f.heartbeats_muted(2) && f.heartbeats_muted(1) && !f.heartbeats_muted(3));
        Ok(())
    }

    // Every FAIL_PROPOSED_EVERY-th proposal fails, deterministically.
    #[test]
    fn every_third_proposal_fails() {
        let f = NodeFaults::from_vars(|n| (n == FAIL_PROPOSED_ENV).then(|| "1".into()));
        let got: Vec<bool> = (0..7).map(|_| f.fail_this_proposal().is_some()).collect();
        assert_eq!(got, [false, false, true, false, false, true, false]);
    }

    // The prediction answers success with the given version unless the applied record refuses
    // the write; refusals (and slot commands) are left to the honest path.
    #[test]
    fn predictions_follow_the_applied_record() {
        let cur = rec("a", 4);
        let put = |condition| Command::Put {
            key: "k".into(),
            value: "b".into(),
            condition,
        };
        assert_eq!(
            predicted_result(&put(None), 9, Some(&cur)),
            Some(WriteResult::Written { version: 9 })
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(4))), 9, Some(&cur)),
            Some(WriteResult::Written { version: 9 })
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(3))), 9, Some(&cur)),
            None
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(0))), 9, Some(&cur)),
            None
        );
        assert_eq!(
            predicted_result(&put(Some(Condition::Version(0))), 9, None),
            Some(WriteResult::Written { version: 9 })
        );
        let del = |condition| Command::Delete {
            key: "k".into(),
            condition,
        };
        assert_eq!(
            predicted_result(&del(None), 9, Some(&cur)),
            Some(WriteResult::Deleted { existed: true })
        );
        assert_eq!(
            predicted_result(&del(None), 9, None),
            Some(WriteResult::Deleted { existed: false })
        );
        assert_eq!(
            predicted_result(
                &del(Some(Condition::Value(Some("x".into())))),
                9,
                Some(&cur)
            ),
            None
        );
        let append = |max| Command::AppendBounded {
            key: "k".into(),
            suffix: "bc".into(),
            max_value_bytes: max,
        };
        assert_eq!(
            predicted_result(&append(3), 9, Some(&cur)),
            Some(WriteResult::Written { version: 9 })
        );
        assert_eq!(predicted_result(&append(2), 9, Some(&cur)), None);
        assert_eq!(
            predicted_result(&Command::InitSlots { owned: vec![] }, 9, None),
            None
        );
    }
}
