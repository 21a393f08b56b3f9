//! Explaining a violation: the first completion that breaks
//! linearizability.
//!
//! The search's own dead ends can be artifacts of a wrong choice made
//! earlier, so the op they blame is not always the one a person should
//! look at. Linearizability is prefix-closed: if the history as known at
//! time `t` (ops invoked by `t`; those not completed by `t` of unknown
//! outcome) is not linearizable, neither is the history at any later time.
//! A binary search over completion times therefore finds the first
//! completion `t*` after which the history is not linearizable; the op
//! completing at `t*` is the one to blame, and a linearization of the
//! history just before it (without that op) is the prefix to show.

use std::time::Instant;

use crate::budget::Budget;
use crate::model::{Model, StateId, Step, ABSENT};
use crate::search::{search, SearchOp, SearchResult};

/// The result of [`explain`], in indices of its input.
pub(crate) struct Explanation {
    /// A linearization of the history just before `offending` completed,
    /// without it.
    pub prefix: Vec<usize>,
    /// The op whose completion makes the history non-linearizable.
    pub offending: usize,
    /// The state after `prefix`.
    pub state: StateId,
}

/// The history as known at time `t`, without `skip`: ops invoked by `t`;
/// those completed by `t` as they are, the others with unknown outcome (a
/// pending read tells nothing and is dropped; a pending cas may swap).
/// Returns the ops and their indices in `ops`.
fn truncated(ops: &[SearchOp], t: u64, skip: Option<usize>) -> (Vec<SearchOp>, Vec<usize>) {
    let mut sub = Vec::new();
    let mut index = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        if o.call > t || Some(i) == skip {
            continue;
        }
        let op = if !o.required || o.ret.is_some_and(|r| r <= t) {
            *o
        } else {
            let step = match o.step {
                Step::Read(_) => continue,
                Step::CasOk { expected, new } | Step::CasFail { expected, new } => {
                    Step::CasMaybe { expected, new }
                }
                other => other,
            };
            SearchOp {
                step,
                required: false,
                call: o.call,
                ret: None,
            }
        };
        sub.push(op);
        index.push(i);
    }
    (sub, index)
}

/// `Some(Ok(witness))` if the truncated history is linearizable (witness
/// in indices of `ops`), `Some(Err(()))` if not, `None` if undecided
/// within `deadline`.
fn probe(
    ops: &[SearchOp],
    model: &mut Model,
    t: u64,
    skip: Option<usize>,
    limits: &Budget,
    deadline: Instant,
    explored: &mut usize,
) -> Option<Result<Vec<usize>, ()>> {
    let (sub, index) = truncated(ops, t, skip);
    let now = Instant::now();
    // A private budget: the check's cancellation flag is already set by
    // this very violation, and the explanation has its own time cap.
    let budget = Budget::new(
        now,
        deadline.saturating_duration_since(now),
        limits.max_states(),
        limits.max_bytes(),
    );
    match search(&sub, model, &budget) {
        SearchResult::Linearizable { witness, states } => {
            *explored += states;
            Some(Ok(witness
                .into_iter()
                .filter_map(|i| index.get(i).copied())
                .collect()))
        }
        SearchResult::Violation { states, .. } => {
            *explored += states;
            Some(Err(()))
        }
        SearchResult::Unknown { states, .. } => {
            *explored += states;
            None
        }
        SearchResult::Cancelled => None,
    }
}

/// Finds the first completion after which `ops` (known not to be
/// linearizable) stops being linearizable; `None` if that cannot be
/// decided by `deadline`.
pub(crate) fn explain(
    ops: &[SearchOp],
    model: &mut Model,
    limits: &Budget,
    deadline: Instant,
    states: &mut usize,
) -> Option<Explanation> {
    let mut times: Vec<u64> = ops
        .iter()
        .filter(|o| o.required)
        .filter_map(|o| o.ret)
        .collect();
    times.sort_unstable();
    times.dedup();
    // Invariant: the history at times[hi] is not linearizable (at the last
    // completion it is the whole history), and at every time before
    // times[lo] it is.
    let (mut lo, mut hi) = (0, times.len().checked_sub(1)?);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match probe(ops, model, times[mid], None, limits, deadline, states)? {
            Ok(_) => lo = mid + 1,
            Err(()) => hi = mid,
        }
    }
    let t = times[hi];
    let mut completing: Vec<usize> = (0..ops.len())
        .filter(|&i| ops[i].required && ops[i].ret == Some(t))
        .collect();
    completing.sort_by_key(|&i| (ops[i].call, i));
    // Usually one op completes at `t`; if several do, blame the first
    // whose removal makes the history at `t` linearizable again.
    let mut found = None;
    for &o in &completing {
        if let Ok(witness) = probe(ops, model, t, Some(o), limits, deadline, states)? {
            found = Some((o, witness));
            break;
        }
    }
    let (offending, prefix) = match found {
        Some(f) => f,
        None => {
            let offending = *completing.first()?;
            let before = hi.checked_sub(1).map_or(0, |i| times[i]);
            let witness = probe(
                ops,
                model,
                before,
                Some(offending),
                limits,
                deadline,
                states,
            )?
            .ok()?;
            (offending, witness)
        }
    };
    let state = replay_state(ops, model, &prefix)?;
    Some(Explanation {
        prefix,
        offending,
        state,
    })
}

/// The state after applying `prefix` (indices of `ops`) from absent, or
/// `None` if some step is illegal.
fn replay_state(ops: &[SearchOp], model: &mut Model, prefix: &[usize]) -> Option<StateId> {
    let mut state = ABSENT;
    for &i in prefix {
        state = model.step(state, ops.get(i)?.step)?;
    }
    Some(state)
}

/// For an op refuted before the search: a linearization of the history as
/// known when `op` was invoked (without it), and the state after it;
/// `None` if that cannot be found by `deadline`.
pub(crate) fn prefix_before(
    ops: &[SearchOp],
    model: &mut Model,
    op: usize,
    limits: &Budget,
    deadline: Instant,
    states: &mut usize,
) -> Option<(Vec<usize>, StateId)> {
    let t = ops.get(op)?.call;
    let prefix = probe(ops, model, t, Some(op), limits, deadline, states)?.ok()?;
    let state = replay_state(ops, model, &prefix)?;
    Some((prefix, state))
}
