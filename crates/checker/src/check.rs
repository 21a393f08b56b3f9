//! Partitioning by key, the worker pool and assembling the [`Report`].

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::budget::Budget;
use crate::explain::{explain, prefix_before};
use crate::history::{History, Operation};
use crate::model::{Model, StateId};
use crate::replay::replay;
use crate::report::{Cause, KeyReport, KeyVerdict, Report, Verdict, Violation};
use crate::search::{search, SearchOp, SearchResult};
use crate::versions::version_violation;

/// Limits and parallelism for [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    /// Wall-clock limit for the whole check; undecided keys become
    /// `Unknown` when it passes. Default 60 s.
    pub time_limit: Duration,
    /// Bound on memoized (linearized set, state) pairs held at once,
    /// summed over keys being searched concurrently. Default: unbounded
    /// (the byte bound applies).
    pub max_states: usize,
    /// Approximate bound on memory held by the memo tables and interned
    /// values, summed over concurrent keys. Default 1 GiB.
    pub max_memory_bytes: usize,
    /// Worker threads; 0 means `available_parallelism`. Never more than
    /// `available_parallelism` or the number of keys.
    pub threads: usize,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            time_limit: Duration::from_secs(60),
            max_states: usize::MAX,
            max_memory_bytes: 1 << 30,
            threads: 0,
        }
    }
}

/// Least time an explanation of a violation may take: enough for small
/// keys, short enough that a failing key is reported about as fast as a
/// passing one.
const EXPLAIN_MIN: Duration = Duration::from_millis(20);
/// Most time an explanation may take (within that, a quarter of the
/// search's own time, [`EXPLAIN_SHARE`]).
const EXPLAIN_MAX: Duration = Duration::from_secs(10);
/// The explanation of a violation gets at most 1/`EXPLAIN_SHARE` of the
/// search's time, so a failing key costs at most a quarter more than its
/// search: the search itself costs what a passing key of that shape costs.
/// (It had the search's whole time: failing keys cost ~2.4× passing ones.)
const EXPLAIN_SHARE: u32 = 4;

struct KeyTask<'h> {
    key: &'h str,
    /// Indices into `History::ops`, in invoke order.
    ops: Vec<usize>,
}

struct KeyOutcome {
    verdict: KeyVerdict,
    checked_ops: usize,
    states: usize,
    elapsed: Duration,
    search_elapsed: Duration,
    explain_elapsed: Duration,
    violation: Option<Violation>,
}

impl KeyOutcome {
    fn skipped() -> Self {
        KeyOutcome {
            verdict: KeyVerdict::Skipped,
            checked_ops: 0,
            states: 0,
            elapsed: Duration::ZERO,
            search_elapsed: Duration::ZERO,
            explain_elapsed: Duration::ZERO,
            violation: None,
        }
    }
}

/// One key's ops as the search sees them, with the way back to the
/// history's operations.
struct KeyCheck<'a> {
    history: &'a History,
    task: &'a KeyTask<'a>,
    budget: &'a Budget,
    model: Model,
    /// The key's indices into `History::ops`, in call order.
    order: Vec<usize>,
    ops: Vec<SearchOp>,
    /// `History::ops` index of each entry of `ops`.
    global: Vec<usize>,
}

/// Where a violation is pinned, in positions of `KeyCheck::ops`.
struct Failure {
    prefix: Vec<usize>,
    offending: usize,
    /// State after `prefix`.
    state: StateId,
    cause: Cause,
}

impl<'a> KeyCheck<'a> {
    fn new(history: &'a History, task: &'a KeyTask<'a>, budget: &'a Budget) -> Self {
        let mut model = Model::default();
        // Number ops in call order so the search's bitset is a dense prefix.
        let mut order = task.ops.clone();
        order.sort_by_key(|&i| history.ops.get(i).map(|o| (o.invoke_time, i)));
        let mut ops = Vec::with_capacity(order.len());
        let mut global = Vec::with_capacity(order.len());
        for &i in &order {
            let Some(op) = history.ops.get(i) else {
                continue;
            };
            if let Some(p) = model.prepare(op) {
                ops.push(SearchOp {
                    step: p.step,
                    required: p.required,
                    call: op.invoke_time,
                    ret: p.deadline,
                });
                global.push(op.id);
            }
        }
        KeyCheck {
            history,
            task,
            budget,
            model,
            order,
            ops,
            global,
        }
    }

    /// The key's operations, as a violation shows them.
    fn operations(&self) -> Vec<Operation> {
        self.task
            .ops
            .iter()
            .filter_map(|&i| self.history.ops.get(i).cloned())
            .collect()
    }

    /// A contradiction among the recorded versions, if any.
    fn version_violation(&self) -> Option<Violation> {
        let key_ops: Vec<&Operation> = self
            .order
            .iter()
            .filter_map(|&i| self.history.ops.get(i))
            .collect();
        let (offending, evidence) = version_violation(&key_ops)?;
        self.budget.cancel.store(true, Ordering::Relaxed);
        Some(Violation {
            operations: self.operations(),
            prefix: Vec::new(),
            offending,
            cause: Cause::Version,
            evidence: Some(evidence),
            value_after_prefix: None,
        })
    }

    /// Searches the key; a positive answer whose witness does not replay
    /// becomes `Unknown`.
    fn search(&mut self) -> SearchResult {
        let mut result = search(&self.ops, &mut self.model, self.budget);
        // Every positive answer is checked again: its witness must replay.
        if let SearchResult::Linearizable { states, witness } = &result {
            if let Err(why) = replay(&self.ops, &mut self.model, witness) {
                result = SearchResult::Unknown {
                    reason: format!(
                        "internal error: the search's witness failed its replay: {why}"
                    ),
                    states: *states,
                };
            }
        }
        result
    }

    /// Improves `failure` where the time allows (see the constants above);
    /// sets `outcome.explain_elapsed` and returns the states the
    /// explanation visited. `up_front`, `overwritten`: as the search's
    /// violation says.
    fn explain(
        &mut self,
        failure: &mut Failure,
        up_front: bool,
        overwritten: bool,
        outcome: &mut KeyOutcome,
    ) -> usize {
        let budget = self.budget;
        // A better explanation, if it can be had in a share of the
        // search's own time (and before the check's deadline).
        let cap = (outcome.search_elapsed / EXPLAIN_SHARE).clamp(EXPLAIN_MIN, EXPLAIN_MAX);
        let mut deadline = Instant::now() + cap;
        if let Some(limit) = budget.deadline() {
            deadline = deadline.min(limit);
        }
        let t_explain = Instant::now();
        let mut explain_states = 0;
        if up_front {
            // The reads-from argument is the explanation; only the
            // prefix (what completed before the op) is searched for.
            if overwritten {
                failure.cause = Cause::Overwritten;
            }
            if let Some((p, s)) = prefix_before(
                &self.ops,
                &mut self.model,
                failure.offending,
                budget,
                deadline,
                &mut explain_states,
            ) {
                failure.prefix = p;
                failure.state = s;
            }
        } else if let Some(e) = explain(
            &self.ops,
            &mut self.model,
            budget,
            deadline,
            &mut explain_states,
        ) {
            failure.prefix = e.prefix;
            failure.offending = e.offending;
            failure.state = e.state;
            failure.cause = Cause::FirstFailure;
        }
        outcome.explain_elapsed = t_explain.elapsed();
        explain_states
    }

    /// The violation to report, in `History::ops` ids.
    fn violation(&self, failure: Failure, overwritten_by: Option<usize>) -> Violation {
        let id = |local: usize| self.global.get(local).copied().unwrap_or(usize::MAX);
        let cause = failure.cause;
        Violation {
            operations: self.operations(),
            prefix: failure.prefix.into_iter().map(id).collect(),
            offending: id(failure.offending),
            cause,
            evidence: overwritten_by
                .filter(|_| cause == Cause::Overwritten)
                .map(id),
            value_after_prefix: self.model.value(failure.state).map(str::to_string),
        }
    }
}

fn check_key(history: &History, task: &KeyTask<'_>, budget: &Budget) -> KeyOutcome {
    let t0 = Instant::now();
    let mut key = KeyCheck::new(history, task, budget);
    let mut outcome = KeyOutcome {
        verdict: KeyVerdict::Linearizable,
        checked_ops: key.ops.len(),
        states: 0,
        elapsed: Duration::ZERO,
        search_elapsed: Duration::ZERO,
        explain_elapsed: Duration::ZERO,
        violation: None,
    };
    // Recorded versions first: a contradiction needs no search.
    if let Some(violation) = key.version_violation() {
        outcome.verdict = KeyVerdict::NotLinearizable;
        outcome.violation = Some(violation);
        outcome.elapsed = t0.elapsed();
        return outcome;
    }
    let t_search = Instant::now();
    let result = key.search();
    outcome.search_elapsed = t_search.elapsed();
    match result {
        SearchResult::Linearizable { states, .. } => outcome.states = states,
        SearchResult::Violation {
            prefix,
            offending,
            unreachable,
            state,
            states,
            up_front,
            overwritten_by,
        } => {
            budget.cancel.store(true, Ordering::Relaxed);
            let cause = if unreachable {
                Cause::Unreachable
            } else {
                Cause::Blocked
            };
            let mut failure = Failure {
                prefix,
                offending,
                state,
                cause,
            };
            let explain_states = key.explain(
                &mut failure,
                up_front,
                overwritten_by.is_some(),
                &mut outcome,
            );
            outcome.verdict = KeyVerdict::NotLinearizable;
            outcome.states = states + explain_states;
            outcome.violation = Some(key.violation(failure, overwritten_by));
        }
        SearchResult::Unknown { reason, states } => {
            outcome.verdict = KeyVerdict::Unknown { reason };
            outcome.states = states;
        }
        SearchResult::Cancelled => outcome.verdict = KeyVerdict::Skipped,
    }
    outcome.elapsed = t0.elapsed();
    outcome
}

/// Pulls keys from the shared queue until it is empty.
fn worker(
    history: &History,
    tasks: &[KeyTask<'_>],
    queue: &[usize],
    next: &AtomicUsize,
    budget: &Budget,
) -> Vec<(usize, KeyOutcome)> {
    let mut done = Vec::new();
    loop {
        let Some(&t) = queue.get(next.fetch_add(1, Ordering::Relaxed)) else {
            return done;
        };
        let Some(task) = tasks.get(t) else {
            continue;
        };
        let outcome = if budget.cancel.load(Ordering::Relaxed) {
            KeyOutcome::skipped()
        } else {
            // A bug in the search must not take the CLI down with it: the
            // key becomes Unknown and the rest of the report survives.
            catch_unwind(AssertUnwindSafe(|| check_key(history, task, budget))).unwrap_or_else(
                |_| KeyOutcome {
                    verdict: KeyVerdict::Unknown {
                        reason: "internal error: the search panicked".to_string(),
                    },
                    ..KeyOutcome::skipped()
                },
            )
        };
        done.push((t, outcome));
    }
}

/// Checks every key of `history` for linearizability, in parallel.
///
/// Keys are independent (a key-value map is the product of per-key
/// registers, and linearizability is compositional), so each key is
/// searched alone. Workers pull keys, largest first, from a shared queue;
/// the first violation cancels the searches still running and the keys not
/// yet started are reported as [`KeyVerdict::Skipped`]. Never panics and
/// never runs much past `opts.time_limit`.
pub fn check(history: &History, opts: &CheckOptions) -> Report {
    let start = Instant::now();
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in history.ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let tasks: Vec<KeyTask<'_>> = by_key
        .into_iter()
        .map(|(key, ops)| KeyTask { key, ops })
        .collect();
    // Largest keys first: the longest searches start early, which keeps
    // the workers evenly loaded at the end.
    let mut queue: Vec<usize> = (0..tasks.len()).collect();
    queue.sort_by_key(|&t| std::cmp::Reverse(tasks.get(t).map_or(0, |k| k.ops.len())));

    let budget = Budget::new(
        start,
        opts.time_limit,
        opts.max_states,
        opts.max_memory_bytes,
    );
    let next = AtomicUsize::new(0);
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let wanted = if opts.threads == 0 {
        cores
    } else {
        opts.threads
    };
    let threads = wanted.min(cores).min(tasks.len()).max(1);

    let mut outcomes: Vec<Option<KeyOutcome>> = (0..tasks.len()).map(|_| None).collect();
    let mut collect = |done: Vec<(usize, KeyOutcome)>| {
        for (t, o) in done {
            if let Some(slot) = outcomes.get_mut(t) {
                *slot = Some(o);
            }
        }
    };
    thread::scope(|s| {
        let mut handles = Vec::new();
        for i in 1..threads {
            let spawned = thread::Builder::new()
                .name(format!("kvorum-check-{i}"))
                .spawn_scoped(s, || worker(history, &tasks, &queue, &next, &budget));
            // If the OS refuses a thread, the others (and this one) still
            // drain the queue.
            if let Ok(h) = spawned {
                handles.push(h);
            }
        }
        collect(worker(history, &tasks, &queue, &next, &budget));
        for h in handles {
            if let Ok(done) = h.join() {
                collect(done);
            }
        }
    });

    let keys: Vec<KeyReport> = tasks
        .iter()
        .zip(outcomes)
        .map(|(task, outcome)| {
            let o = outcome.unwrap_or_else(|| KeyOutcome {
                verdict: KeyVerdict::Unknown {
                    reason: "internal error: worker thread lost".to_string(),
                },
                ..KeyOutcome::skipped()
            });
            KeyReport {
                key: task.key.to_string(),
                verdict: o.verdict,
                ops: task.ops.len(),
                checked_ops: o.checked_ops,
                states: o.states,
                elapsed: o.elapsed,
                search_elapsed: o.search_elapsed,
                explain_elapsed: o.explain_elapsed,
                violation: o.violation,
            }
        })
        .collect();

    Report {
        verdict: overall(&keys),
        keys,
        total_ops: history.ops.len(),
        elapsed: start.elapsed(),
    }
}

fn overall(keys: &[KeyReport]) -> Verdict {
    if keys
        .iter()
        .any(|k| k.verdict == KeyVerdict::NotLinearizable)
    {
        return Verdict::NotLinearizable;
    }
    let undecided: Vec<&KeyReport> = keys
        .iter()
        .filter(|k| k.verdict != KeyVerdict::Linearizable)
        .collect();
    match undecided.first() {
        None => Verdict::Linearizable,
        Some(first) => {
            let why = match &first.verdict {
                KeyVerdict::Unknown { reason } => reason.clone(),
                _ => "not checked".to_string(),
            };
            Verdict::Unknown {
                reason: format!(
                    "{} of {} keys undecided; key {:?}: {}",
                    undecided.len(),
                    keys.len(),
                    first.key,
                    why
                ),
            }
        }
    }
}
