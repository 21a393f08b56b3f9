//! Wing–Gong / Lowe search for one key (Porcupine's `checkSingle`), with
//! reductions that keep it fast on contended keys and `info` ops.
//!
//! # The base algorithm
//!
//! Entries (one call and one return per required op) sit in a
//! doubly-linked list sorted by time; calls sort before returns at equal
//! times. The calls before the first return entry are the *candidates*:
//! the ops that may take effect next. The first return entry belongs to
//! the *blocker*, an op that must take effect before anything invoked
//! later. Linearizing an op "lifts" its entries out of the list;
//! backtracking restores them (dancing links, in reverse order of
//! removal). A memo of configurations (linearized set, state) prunes
//! repeats.
//!
//! # Info ops
//!
//! Ops with unknown outcome are *optional*: their return is +infinity and
//! the search succeeds once every required op is linearized. They are kept
//! out of the list: a pending optional op is a candidate whenever its call
//! precedes the blocker's return.
//!
//! # Reductions
//!
//! Each one discards configurations that cannot succeed, or that succeed
//! only if a configuration still explored does. A randomized test checks
//! the verdicts against brute-force enumeration.
//!
//! * **Forced reads.** A legal required read or failed cas is linearized
//!   at once, without trying alternatives: it changes no state and nothing
//!   pending must precede it, so any successful continuation can be
//!   rewritten to start with it.
//! * **Candidate order.** Required candidates come first, ordered by the
//!   midpoint of their interval (the best guess of when each took
//!   effect), so the first path tried is usually right; optional ones
//!   after, by call.
//! * **Dominance.** The memo key covers the required set and the state;
//!   a configuration is pruned if a *finished* one had the same, a subset
//!   of its optional ops and no stricter restriction (below): it had at
//!   least the same options and failed. Unfinished entries (ancestors)
//!   prune only exact repeats, which cannot be ancestors.
//! * **Restrictions after optional ops.** An optional op followed by a
//!   blind write (put/delete), or by nothing, can be deleted from any
//!   linearization, so after one the next op must observe the state
//!   (level 1: no blind write). An optional put or append whose mark (its
//!   value followed by an append suffix, or its suffix) occurs in no
//!   observed value can only matter by making a failed cas legal, and can
//!   be moved to just before that cas (level 2: only a read or failed cas
//!   may follow; see [`unobservable`]). Optional ops after which no
//!   candidate could be linearized are not tried at all.
//! * **Reads-from.** Up front, a read (or ok cas) whose value was written
//!   only by writes that some other required write separates from it in
//!   real time refutes the key at once (see [`impossible_observer`]).
//! * **Reachability.** Before a pending read or ok cas takes effect, only
//!   pending ops invoked before its completion can: resets (put, delete,
//!   cas) set the value and appends extend it. If the value it needs is
//!   neither the current value nor a reset's value, extended by pending
//!   appends, the configuration is doomed; the search then jumps back to
//!   the nearest ancestor where that value is reachable again. This finds
//!   a wrong order of concurrent appends (or a write placed too early) at
//!   once, instead of after every permutation of the ops that follow it.

use std::collections::BTreeSet;

use crate::budget::{Account, Budget, Stop};
use crate::hash::FastMap;
use crate::memo::{Linearized, Memo};
use crate::model::{Model, StateId, Step, ABSENT};

/// How often (in loop iterations) the search polls the budget. A poll costs
/// a clock read and a few atomics; 1024 iterations take microseconds.
const POLL_EVERY: u64 = 1024;

/// Values longer than this are not analysed by the reachability check
/// (which is quadratic in their length); such configurations are simply
/// never declared doomed.
const MAX_ANALYSED_LEN: usize = 256;

/// How many pending reads and ok cases beyond the candidates the
/// reachability check examines per configuration: the next ones to be
/// invoked, which expose a wrong order of the ops just placed.
const LOOKAHEAD: usize = 8;

/// Most byte comparisons spent deciding observability; past it, ops are
/// conservatively treated as observable.
const OBSERVABILITY_BUDGET: usize = 50_000_000;

/// An op as the search sees it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SearchOp {
    pub step: Step,
    pub required: bool,
    pub call: u64,
    /// `None` = +infinity.
    pub ret: Option<u64>,
}

/// Result of [`search`]; op indices are positions in the input slice.
pub(crate) enum SearchResult {
    Linearizable {
        states: usize,
        /// A linearization: every required op and some optional ones.
        witness: Vec<usize>,
    },
    Violation {
        /// Longest linearizable prefix found, in linearization order.
        prefix: Vec<usize>,
        /// Op that could not be placed after that prefix.
        offending: usize,
        /// Whether it was found unreachable (its value could no longer be
        /// produced) rather than blocked at its completion.
        unreachable: bool,
        /// State after the prefix.
        state: StateId,
        states: usize,
        /// Refuted before the search by the reads-from argument (see
        /// [`impossible_observer`]); then `prefix` is empty and
        /// `overwritten_by` is the latest required write of another value
        /// that completed before `offending` was invoked, if any.
        up_front: bool,
        overwritten_by: Option<usize>,
    },
    Unknown {
        reason: String,
        states: usize,
    },
    Cancelled,
}

/// Node layout: 0 = head sentinel, then two entries per required op, then
/// the tail sentinel.
struct List {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Op of each node (sentinels: unused).
    op: Vec<u32>,
    is_call: Vec<bool>,
    /// Per op: its call and return nodes (required ops only).
    call_node: Vec<u32>,
    ret_node: Vec<u32>,
    tail: u32,
}

const HEAD: u32 = 0;

impl List {
    fn build(ops: &[SearchOp]) -> Self {
        // Sort key: (infinite?, time, return?, op). Calls sort before
        // returns at equal times, so touching intervals count as
        // concurrent (the permissive reading of equal timestamps).
        let mut entries: Vec<(bool, u64, bool, u32)> = Vec::new();
        for (i, op) in ops.iter().enumerate().filter(|(_, o)| o.required) {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            entries.push((false, op.call, false, i));
            match op.ret {
                Some(t) => entries.push((false, t.max(op.call), true, i)),
                None => entries.push((true, 0, true, i)),
            }
        }
        entries.sort_unstable();
        let nodes = entries.len() + 2;
        let n = nodes as u32;
        let mut list = List {
            next: (1..=n).collect(),
            prev: std::iter::once(0).chain(0..n - 1).collect(),
            op: vec![0; nodes],
            is_call: vec![false; nodes],
            call_node: vec![0; ops.len()],
            ret_node: vec![0; ops.len()],
            tail: n - 1,
        };
        for (pos, &(_, _, is_ret, op)) in entries.iter().enumerate() {
            let node = pos as u32 + 1;
            list.op[node as usize] = op;
            list.is_call[node as usize] = !is_ret;
            if is_ret {
                list.ret_node[op as usize] = node;
            } else {
                list.call_node[op as usize] = node;
            }
        }
        list
    }

    fn remove(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    fn restore(&mut self, x: u32) {
        let (p, n) = (self.prev[x as usize], self.next[x as usize]);
        self.next[p as usize] = x;
        self.prev[n as usize] = x;
    }

    /// Takes a required op's call and return out of the list.
    fn lift(&mut self, op: usize) {
        self.remove(self.call_node[op]);
        self.remove(self.ret_node[op]);
    }

    /// Undoes [`List::lift`] (reverse order of removal).
    fn unlift(&mut self, op: usize) {
        self.restore(self.ret_node[op]);
        self.restore(self.call_node[op]);
    }
}

/// Pending ops by call time.
type Pending = BTreeSet<(u64, usize)>;

/// Whether `set` holds an op other than `except` invoked by `deadline`.
fn pending_by(set: Option<&Pending>, deadline: u64, except: usize) -> bool {
    set.is_some_and(|s| {
        s.iter()
            .take_while(|&&(call, _)| call <= deadline)
            .any(|&(_, op)| op != except)
    })
}

/// One level of the DFS stack.
struct Frame {
    /// The op linearized at this level.
    op: usize,
    /// State before it.
    prev_state: StateId,
    /// Chosen by the forced-read rule: its siblings need not be tried.
    forced: bool,
    /// Position of `op` in the parent configuration's candidate order,
    /// where the parent resumes after this subtree fails.
    idx: usize,
}

/// What the candidates of a configuration need, to decide quickly whether
/// an optional op could be followed by anything.
#[derive(Default)]
struct Summary {
    /// Values wanted by required read candidates.
    reads: Vec<StateId>,
    /// `expected` of ok-cas and info-cas candidates.
    cas_expected: Vec<StateId>,
    /// `expected` of failed-cas candidates.
    casfail_expected: Vec<StateId>,
    /// Append candidates (required or level 1).
    appends: usize,
    /// Completion time of the blocker (+infinity if none).
    deadline: u64,
}

/// Outcome of trying to linearize one candidate.
#[derive(PartialEq, Eq)]
enum Push {
    Pushed,
    /// The model rejects the step.
    Illegal,
    /// The resulting configuration is in the memo (seen or dominated).
    Pruned,
}

/// The mutable state of one key's search.
///
/// Indexing below is into vectors sized from `ops.len()` and node ids
/// produced by [`List::build`], so it cannot go out of bounds.
struct Searcher<'a> {
    ops: &'a [SearchOp],
    model: &'a mut Model,
    list: List,
    /// Index of each op among the required ops or among the optional ops.
    slot: Vec<usize>,
    /// Restriction an op puts on the next one: 0 (required), 1 or 2.
    level: Vec<u8>,
    lin: Linearized,
    memo: Memo,
    state: StateId,
    calls: Vec<Frame>,
    total_required: usize,
    remaining: usize,
    /// Pending optional ops of level 1 and of level 2, and the level-2
    /// appends among them.
    optional: [Pending; 2],
    optional_appends: Pending,
    /// Pending resets (put, delete, cas, info cas) by the value they set.
    resets: FastMap<StateId, Pending>,
    /// Pending appends by suffix group (ops with equal suffixes).
    appends: Vec<Pending>,
    /// Pending required ok reads and ok cases.
    observers: Pending,
    /// Per op: its suffix group, for appends.
    append_group: Vec<Option<usize>>,
    /// Suffix text -> group.
    groups: FastMap<Box<str>, usize>,
    /// Candidates of the current configuration, in the order tried.
    cands: Vec<usize>,
    summary: Summary,
    /// Best dead end so far (see `snapshot`). `synced` = length of the
    /// common prefix of `best` and the stack, so a snapshot copies only
    /// what changed since the last one (amortized O(1) per push).
    best: Vec<usize>,
    synced: usize,
    /// (offending op, state, found unreachable rather than blocked).
    best_off: Option<(usize, StateId, bool)>,
    best_rank: (usize, usize),
}

/// The value a reset op sets.
fn reset_value(step: Step) -> Option<StateId> {
    match step {
        Step::Write(v) | Step::CasOk { new: v, .. } | Step::CasMaybe { new: v, .. } => Some(v),
        _ => None,
    }
}

impl<'a> Searcher<'a> {
    fn new(ops: &'a [SearchOp], model: &'a mut Model) -> Self {
        let unobservable = unobservable(ops, model);
        let mut slot = vec![0usize; ops.len()];
        let mut level = vec![0u8; ops.len()];
        let (mut n_req, mut n_opt) = (0usize, 0usize);
        let mut optional: [Pending; 2] = Default::default();
        let mut optional_appends = Pending::new();
        let mut resets: FastMap<StateId, Pending> = FastMap::default();
        let mut groups: FastMap<Box<str>, usize> = FastMap::default();
        let mut appends: Vec<Pending> = Vec::new();
        let mut append_group = vec![None; ops.len()];
        let mut observers = Pending::new();
        for (i, op) in ops.iter().enumerate() {
            if op.required && matches!(op.step, Step::Read(_) | Step::CasOk { .. }) {
                observers.insert((op.call, i));
            }
            let counter = if op.required { &mut n_req } else { &mut n_opt };
            slot[i] = *counter;
            *counter += 1;
            let is_append = matches!(op.step, Step::Append(_));
            if !op.required {
                level[i] = if unobservable[i] { 2 } else { 1 };
                optional[usize::from(level[i] - 1)].insert((op.call, i));
                if level[i] == 2 && is_append {
                    optional_appends.insert((op.call, i));
                }
            }
            if let Some(v) = reset_value(op.step) {
                resets.entry(v).or_default().insert((op.call, i));
            }
            if let Step::Append(idx) = op.step {
                let suffix = model.suffix(idx).unwrap_or("");
                let next = groups.len();
                let g = *groups.entry(suffix.into()).or_insert(next);
                if g == appends.len() {
                    appends.push(Pending::new());
                }
                if let Some(set) = appends.get_mut(g) {
                    set.insert((op.call, i));
                }
                append_group[i] = Some(g);
            }
        }
        let total_required = n_req;
        Searcher {
            ops,
            model,
            list: List::build(ops),
            slot,
            level,
            lin: Linearized::new(n_req, n_opt),
            memo: Memo::default(),
            state: ABSENT,
            calls: Vec::new(),
            total_required,
            remaining: total_required,
            optional,
            optional_appends,
            resets,
            appends,
            observers,
            append_group,
            groups,
            cands: Vec::new(),
            summary: Summary::default(),
            best: Vec::new(),
            synced: 0,
            best_off: None,
            best_rank: (0, 0),
        }
    }

    /// The restriction on the current configuration's next op.
    fn current_level(&self) -> u8 {
        self.calls.last().map_or(0, |f| self.level[f.op])
    }

    /// Whether restriction `level` allows linearizing `step` next.
    fn allowed(level: u8, step: Step) -> bool {
        match level {
            0 => true,
            1 => !matches!(step, Step::Write(_)),
            _ => matches!(step, Step::Read(_) | Step::CasFail { .. }),
        }
    }

    /// Moves `op` into (`pending`) or out of the pending indexes.
    fn set_pending(&mut self, op: usize, pending: bool) {
        let o = &self.ops[op];
        let key = (o.call, op);
        let mut sets: Vec<&mut Pending> = Vec::with_capacity(3);
        if !o.required {
            let lvl = usize::from(self.level[op].max(1) - 1);
            if let Some(s) = self.optional.get_mut(lvl) {
                sets.push(s);
            }
            if lvl == 1 && matches!(o.step, Step::Append(_)) {
                sets.push(&mut self.optional_appends);
            }
        }
        if let Some(v) = reset_value(o.step) {
            if let Some(s) = self.resets.get_mut(&v) {
                sets.push(s);
            }
        }
        if let Some(g) = self.append_group[op] {
            if let Some(s) = self.appends.get_mut(g) {
                sets.push(s);
            }
        }
        if o.required && matches!(o.step, Step::Read(_) | Step::CasOk { .. }) {
            sets.push(&mut self.observers);
        }
        for s in sets {
            if pending {
                s.insert(key);
            } else {
                s.remove(&key);
            }
        }
    }

    fn try_push(&mut self, op: usize, forced: bool, idx: usize) -> Push {
        let o = &self.ops[op];
        let required = o.required;
        let Some(new_state) = self.model.step(self.state, o.step) else {
            return Push::Illegal;
        };
        self.lin.toggle(required, self.slot[op], true);
        if !self.memo.insert(&self.lin, new_state, self.level[op]) {
            self.lin.toggle(required, self.slot[op], false);
            return Push::Pruned;
        }
        self.calls.push(Frame {
            op,
            prev_state: self.state,
            forced,
            idx,
        });
        self.state = new_state;
        if required {
            self.list.lift(op);
            self.remaining -= 1;
        }
        self.set_pending(op, false);
        Push::Pushed
    }

    /// Abandons the current configuration (marking it fully explored) and
    /// returns to its parent.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.calls.pop()?;
        let op = frame.op;
        let required = self.ops[op].required;
        self.memo.finish(&self.lin, self.state, self.level[op]);
        self.synced = self.synced.min(self.calls.len());
        self.lin.toggle(required, self.slot[op], false);
        if required {
            self.list.unlift(op);
            self.remaining += 1;
        }
        self.set_pending(op, true);
        self.state = frame.prev_state;
        Some(frame)
    }

    /// A required candidate that leaves the state unchanged (an ok read, a
    /// failed cas) and is legal now: it may be linearized without trying
    /// alternatives (see the module docs).
    fn forced_candidate(&mut self) -> Option<usize> {
        let mut node = self.list.next[HEAD as usize];
        while self.list.is_call.get(node as usize) == Some(&true) {
            let op = self.list.op[node as usize] as usize;
            let step = self.ops[op].step;
            if matches!(step, Step::Read(_) | Step::CasFail { .. })
                && self.model.step(self.state, step).is_some()
            {
                return Some(op);
            }
            node = self.list.next[node as usize];
        }
        None
    }

    /// Fills `cands` with the current configuration's candidates in the
    /// order to try them, and `summary` with what they need. Returns the
    /// blocker (the op of the first return entry), if any.
    fn candidates(&mut self) -> Option<usize> {
        self.cands.clear();
        let mut node = self.list.next[HEAD as usize];
        while self.list.is_call.get(node as usize) == Some(&true) {
            self.cands.push(self.list.op[node as usize] as usize);
            node = self.list.next[node as usize];
        }
        let blocker = (node != self.list.tail).then(|| self.list.op[node as usize] as usize);
        let deadline = blocker.and_then(|b| self.ops[b].ret).unwrap_or(u64::MAX);
        let ops = self.ops;
        self.cands.sort_by_key(|&i| {
            let o = &ops[i];
            u128::from(o.call) + u128::from(o.ret.unwrap_or(u64::MAX))
        });

        let mut summary = Summary {
            deadline,
            ..Summary::default()
        };
        for &i in &self.cands {
            match ops[i].step {
                Step::Read(v) => summary.reads.push(v),
                Step::CasOk { expected, .. } => summary.cas_expected.push(expected),
                Step::CasFail { expected, .. } => summary.casfail_expected.push(expected),
                Step::Append(_) => summary.appends += 1,
                _ => {}
            }
        }
        // Level-1 optional ops, by call.
        for &(call, i) in &self.optional[0] {
            if call > deadline {
                break;
            }
            self.cands.push(i);
            match ops[i].step {
                Step::CasMaybe { expected, .. } => summary.cas_expected.push(expected),
                Step::Append(_) => summary.appends += 1,
                _ => {}
            }
        }
        // Level-2 ops can only help by making a blocked failed cas legal.
        if summary.casfail_expected.contains(&self.state) {
            for &(call, i) in &self.optional[1] {
                if call > deadline {
                    break;
                }
                self.cands.push(i);
            }
        }
        self.summary = summary;
        blocker
    }

    /// Whether linearizing optional candidate `op` now could lead
    /// anywhere: some other candidate allowed after it would then be legal.
    /// (Linearizing an info op does not change the candidate set, as its
    /// return is at +infinity.) Ops that never took effect stay candidates
    /// forever; without this test every dead end would try each of them.
    fn optional_useful(&mut self, op: usize) -> bool {
        let step = self.ops[op].step;
        let Some(after) = self.model.step(self.state, step) else {
            return false;
        };
        let s = &self.summary;
        if s.reads.contains(&after) || s.casfail_expected.iter().any(|&e| e != after) {
            return true;
        }
        if self.level[op] != 1 {
            return false;
        }
        let own_append = usize::from(matches!(step, Step::Append(_)));
        s.cas_expected.contains(&after)
            || s.appends > own_append
            || pending_by(Some(&self.optional_appends), s.deadline, op)
    }

    /// Whether pending appends invoked by `deadline` might turn `from` into
    /// `to`: `to` must extend `from`, and what is missing must begin with
    /// one such append's suffix and end with one's (appends add whole
    /// suffixes, in some order). Only a necessary condition: `true` when
    /// unsure.
    fn reachable(&self, from: StateId, to: StateId, deadline: u64) -> bool {
        if from == to {
            return true;
        }
        let Some(want) = self.model.value(to) else {
            // Only a reset makes the key absent.
            return false;
        };
        let have = self.model.value(from).unwrap_or("");
        let Some(rest) = want.strip_prefix(have) else {
            return false;
        };
        if rest.is_empty() || rest.len() > MAX_ANALYSED_LEN {
            return true;
        }
        let pending = |part: &str| {
            let set = self.groups.get(part).and_then(|&g| self.appends.get(g));
            pending_by(set, deadline, usize::MAX)
        };
        let boundaries = || (1..=rest.len()).filter(|&b| rest.is_char_boundary(b));
        boundaries().any(|b| rest.get(..b).is_some_and(pending))
            && boundaries().any(|b| rest.get(rest.len() - b..).is_some_and(pending))
    }

    /// Whether pending op `i` (an ok read or ok cas) needs a value the key
    /// cannot reach in any continuation: it must be the current value or
    /// the value of a pending reset invoked before `i` completes, extended
    /// by pending appends (see the module docs).
    fn unreachable(&self, i: usize) -> bool {
        let op = &self.ops[i];
        let (Some(ret), true) = (op.ret, op.required) else {
            return false;
        };
        let wanted = match op.step {
            Step::Read(v) | Step::CasOk { expected: v, .. } => v,
            _ => return false,
        };
        if self.state == wanted || pending_by(self.resets.get(&wanted), ret, i) {
            return false;
        }
        if self.appends.is_empty() {
            // No appends on this key: only the exact value would do.
            return true;
        }
        if self.reachable(self.state, wanted, ret) {
            return false;
        }
        let via = |base: StateId| {
            pending_by(self.resets.get(&base), ret, i) && self.reachable(base, wanted, ret)
        };
        let Some(want) = self.model.value(wanted) else {
            return !via(ABSENT);
        };
        if want.len() > MAX_ANALYSED_LEN || via(ABSENT) {
            return false;
        }
        // A reset's value must be a prefix of the wanted one.
        !(0..=want.len())
            .filter(|&b| want.is_char_boundary(b))
            .filter_map(|b| want.get(..b).and_then(|p| self.model.lookup(p)))
            .any(via)
    }

    /// A pending required op, among the candidates and the next few to be
    /// invoked, whose needed value is unreachable.
    fn doomed(&self) -> Option<usize> {
        let next = self.observers.iter().take(LOOKAHEAD).map(|&(_, i)| i);
        self.cands
            .iter()
            .copied()
            .filter(|&i| self.ops[i].required)
            .chain(next)
            .find(|&i| self.unreachable(i))
    }

    /// Records the current stack if this dead end (at which op `blocked`
    /// cannot be placed) beats the best so far. Rank: required ops
    /// linearized, then fewer optional (info) ops, since an info op in the
    /// prefix is a guess, not evidence.
    fn snapshot(&mut self, blocked: usize, unreachable: bool) {
        let req_depth = self.total_required - self.remaining;
        let rank = (req_depth, usize::MAX - (self.calls.len() - req_depth));
        if self.best_off.is_some() && rank <= self.best_rank {
            return;
        }
        self.best_rank = rank;
        self.best.truncate(self.synced);
        let fresh: Vec<usize> = self.calls[self.synced..].iter().map(|f| f.op).collect();
        self.best.extend(fresh);
        self.synced = self.calls.len();
        self.best_off = Some((blocked, self.state, unreachable));
    }

    fn success(&self) -> SearchResult {
        SearchResult::Linearizable {
            states: self.memo.len,
            witness: self.calls.iter().map(|f| f.op).collect(),
        }
    }

    fn violation(self) -> SearchResult {
        let (offending, state, unreachable) = self.best_off.unwrap_or((0, ABSENT, false));
        SearchResult::Violation {
            prefix: self.best,
            offending,
            unreachable,
            state,
            states: self.memo.len,
            up_front: false,
            overwritten_by: None,
        }
    }
}

/// What exploring a configuration did.
enum Explored {
    /// Linearized a candidate: the search moves to the new configuration.
    Pushed,
    /// No (further) candidate can be linearized here. `doom`: the pending
    /// op whose value was found unreachable, if that is why.
    DeadEnd { doom: Option<usize> },
}

impl Searcher<'_> {
    /// Publishes the search's totals and checks the budget; `Err` carries
    /// the answer to stop with.
    fn poll(&self, account: &mut Account<'_>) -> Result<(), SearchResult> {
        let bytes = self.memo.bytes + self.model.bytes();
        account
            .poll(self.memo.len, bytes)
            .map_err(|stop| match stop {
                Stop::Cancelled => SearchResult::Cancelled,
                Stop::Unknown(reason) => SearchResult::Unknown {
                    reason,
                    states: self.memo.len,
                },
            })
    }

    /// Tries the current configuration's candidates from position `from`
    /// on (0 on first arrival), after the reachability check.
    fn explore(&mut self, from: usize) -> Explored {
        let ops = self.ops;
        let blocker = self.candidates();
        // The reachability check, once per configuration, unless the last
        // step left the value and the pending resets and appends as they
        // were (a read or failed cas), so nothing it depends on changed.
        let changed = self
            .calls
            .last()
            .is_none_or(|f| !matches!(ops[f.op].step, Step::Read(_) | Step::CasFail { .. }));
        if from == 0 && changed {
            if let Some(op) = self.doomed() {
                self.snapshot(op, true);
                return Explored::DeadEnd { doom: Some(op) };
            }
        }
        let level = self.current_level();
        let mut i = from;
        while let Some(&op) = self.cands.get(i) {
            let o = &ops[op];
            if Searcher::allowed(level, o.step)
                && (o.required || self.optional_useful(op))
                && self.try_push(op, false, i) == Push::Pushed
            {
                return Explored::Pushed;
            }
            i += 1;
        }
        if let Some(op) = blocker {
            self.snapshot(op, false);
        }
        Explored::DeadEnd { doom: None }
    }

    /// Dead end: returns to the nearest ancestor with untried candidates
    /// and gives the position to resume from there, or `None` when the
    /// stack is empty (no linearization exists). A forced frame's parent
    /// has none. A doomed configuration's ancestors are doomed too while
    /// the same op's value stays unreachable there: jump over them.
    fn backtrack(&mut self, mut doom: Option<usize>) -> Option<usize> {
        loop {
            let frame = self.pop()?;
            if let Some(op) = doom {
                if self.unreachable(op) {
                    continue;
                }
                doom = None;
            }
            if !frame.forced {
                return Some(frame.idx + 1);
            }
        }
    }

    /// The depth-first search proper, from the empty configuration.
    fn run(mut self, account: &mut Account<'_>) -> SearchResult {
        let mut fresh = true;
        let mut next_idx = 0usize;
        let mut iterations: u64 = 0;
        loop {
            iterations += 1;
            if iterations % POLL_EVERY == 0 {
                if let Err(stop) = self.poll(account) {
                    return stop;
                }
            }

            // On arriving at a configuration: a forced read, if any, is the
            // only child; a configuration whose forced child failed is dead.
            let mut dead = false;
            if fresh {
                fresh = false;
                next_idx = 0;
                if let Some(op) = self.forced_candidate() {
                    if self.try_push(op, true, 0) == Push::Pushed {
                        if self.remaining == 0 {
                            return self.success();
                        }
                        fresh = true;
                        continue;
                    }
                    dead = true;
                }
            }

            let doom = if dead {
                None
            } else {
                match self.explore(next_idx) {
                    Explored::Pushed => {
                        if self.remaining == 0 {
                            return self.success();
                        }
                        fresh = true;
                        continue;
                    }
                    Explored::DeadEnd { doom } => doom,
                }
            };

            match self.backtrack(doom) {
                Some(idx) => next_idx = idx,
                None => return self.violation(),
            }
        }
    }
}

/// The answer when no search is needed: cancelled already, nothing
/// required, too many ops, or refuted up front by the reads-from argument.
fn answer_without_search(ops: &[SearchOp], model: &Model, budget: &Budget) -> Option<SearchResult> {
    if budget.cancel.load(std::sync::atomic::Ordering::Relaxed) {
        return Some(SearchResult::Cancelled);
    }
    if !ops.iter().any(|o| o.required) {
        return Some(SearchResult::Linearizable {
            states: 0,
            witness: Vec::new(),
        });
    }
    // Node ids are u32; a single key with more than 2^31 ops would not fit
    // in memory anyway.
    if ops.len() >= (u32::MAX / 2 - 2) as usize {
        return Some(SearchResult::Unknown {
            reason: "too many operations on one key".to_string(),
            states: 0,
        });
    }
    let op = impossible_observer(ops, model)?;
    Some(SearchResult::Violation {
        prefix: Vec::new(),
        offending: op,
        unreachable: true,
        state: ABSENT,
        states: 0,
        up_front: true,
        overwritten_by: overwriter(ops, op),
    })
}

/// Decides whether `ops` (one key's history) is linearizable.
pub(crate) fn search(ops: &[SearchOp], model: &mut Model, budget: &Budget) -> SearchResult {
    let mut account = Account::new(budget);
    if let Some(answer) = answer_without_search(ops, model, budget) {
        return answer;
    }
    Searcher::new(ops, model).run(&mut account)
}

/// The distinct suffixes the appends of `ops` add, and their distinct lengths (sorted), for
/// "does this value end with some append's suffix" tests.
fn append_suffixes<'m>(
    ops: &[SearchOp],
    model: &'m Model,
) -> (std::collections::HashSet<&'m str>, Vec<usize>) {
    let suffixes: std::collections::HashSet<&str> = ops
        .iter()
        .filter_map(|o| match o.step {
            Step::Append(idx) => model.suffix(idx),
            _ => None,
        })
        .collect();
    let mut lens: Vec<usize> = suffixes.iter().map(|s| s.len()).collect();
    lens.sort_unstable();
    lens.dedup();
    (suffixes, lens)
}

/// For each op: whether it is an optional put or append whose effect no
/// read or cas on the key can ever observe. Observed values are read
/// values and cas `expected`s. A put of `v` is observable if some observed
/// value is `v`, or `v` followed by some append's suffix; an append is
/// observable if its suffix occurs in some observed value.
///
/// After an unobservable op, until the next reset, the value carries its
/// mark, so no read, ok cas or info cas can take effect; only appends and
/// failed cases can. Any linearization using the op can therefore drop
/// it, or move it later to just before the first failed cas that needs it
/// (appends do not care, and later failed cases still see a value with
/// the mark, which their `expected` lacks). So only a read or failed cas
/// may follow it (level 2).
fn unobservable(ops: &[SearchOp], model: &Model) -> Vec<bool> {
    let mut seen: Vec<&str> = ops
        .iter()
        .filter_map(|o| match o.step {
            Step::Read(v)
            | Step::CasOk { expected: v, .. }
            | Step::CasFail { expected: v, .. }
            | Step::CasMaybe { expected: v, .. } => model.value(v),
            _ => None,
        })
        .collect();
    seen.sort_unstable();
    seen.dedup();
    let (suffixes, suffix_lens) = append_suffixes(ops, model);
    // For substring queries: every observed value, NUL-separated.
    let haystack = seen.join("\0");
    let mut budget = OBSERVABILITY_BUDGET;
    ops.iter()
        .map(|o| {
            if o.required {
                return false;
            }
            match o.step {
                Step::Write(v) => {
                    let Some(val) = model.value(v).filter(|val| !val.is_empty()) else {
                        return false;
                    };
                    let from = seen.partition_point(|s| *s < val);
                    let observed = seen
                        .get(from..)
                        .unwrap_or(&[])
                        .iter()
                        .take_while(|s| s.starts_with(val))
                        .any(|s| {
                            let rest = s.get(val.len()..).unwrap_or("");
                            rest.is_empty()
                                || suffix_lens
                                    .iter()
                                    .any(|&n| rest.get(..n).is_some_and(|p| suffixes.contains(p)))
                        });
                    !observed
                }
                Step::Append(idx) => {
                    let Some(suffix) = model.suffix(idx) else {
                        return false;
                    };
                    if suffix.is_empty() || suffix.contains('\0') || budget < haystack.len() {
                        return false;
                    }
                    budget -= haystack.len();
                    !haystack.contains(suffix)
                }
                _ => false,
            }
        })
        .collect()
}

/// For an observer refuted by [`impossible_observer`]: the required op
/// setting another value (put, delete, append, ok cas) that completed
/// before the observer was invoked and was invoked last. It seals every
/// sealed producer (it is invoked after any op another sealer is), so it
/// is the overwrite to show. `None` when the value was never written.
fn overwriter(ops: &[SearchOp], observer: usize) -> Option<usize> {
    let o = ops.get(observer)?;
    let wanted = match o.step {
        Step::Read(v) | Step::CasOk { expected: v, .. } => v,
        _ => return None,
    };
    // A value never written was not overwritten: it never existed.
    let written = wanted == ABSENT || ops.iter().any(|p| reset_value(p.step) == Some(wanted));
    if !written {
        return None;
    }
    ops.iter()
        .enumerate()
        .filter(|(_, b)| b.required && b.ret.is_some_and(|r| r < o.call))
        .filter(|(_, b)| match b.step {
            Step::Write(v) | Step::CasOk { new: v, .. } => v != wanted,
            Step::Append(_) => true,
            _ => false,
        })
        .max_by_key(|(i, b)| (b.call, *i))
        .map(|(i, _)| i)
}

/// A required read or ok cas whose value cannot be current when it takes
/// effect, whatever the order: the classic reads-from condition, checked
/// once up front so that a stale read deep in a long history is reported
/// at once instead of being discovered only when the search gets there.
///
/// Unless the value could be the result of an append (it ends with some
/// append's suffix), the last op before the observer `r` that made the
/// value current must be a *producer*: a reset to that value (or, for
/// "absent", the initial state). A producer `p` is *sealed* if some
/// required op `b` that sets a different value (a put, delete, append or
/// ok cas) lies strictly between them in real time (`p` completes before
/// `b` is invoked, `b` completes before `r` is invoked): then `b` follows
/// `p` in every linearization and precedes `r`, so `p` cannot be the last
/// producer. If every producer that could precede `r` is sealed, no
/// linearization exists.
fn impossible_observer(ops: &[SearchOp], model: &Model) -> Option<usize> {
    let (suffixes, suffix_lens) = append_suffixes(ops, model);
    let mut producers: FastMap<StateId, Vec<usize>> = FastMap::default();
    for (i, o) in ops.iter().enumerate() {
        if let Some(v) = reset_value(o.step) {
            producers.entry(v).or_default().push(i);
        }
    }
    // Required state-changing ops by call, with the value they set (an
    // append's result is never a producer's value here: see below).
    let mut sealers: Vec<(u64, u64, StateId)> = ops
        .iter()
        .filter(|o| o.required)
        .filter_map(|o| {
            let v = match o.step {
                Step::Write(v) | Step::CasOk { new: v, .. } => v,
                Step::Append(_) => StateId::MAX,
                _ => return None,
            };
            Some((o.call, o.ret.unwrap_or(u64::MAX), v))
        })
        .collect();
    sealers.sort_unstable();
    // For each suffix of `sealers`: the earliest completion (and its value)
    // and the earliest completion among ops setting a different value.
    let mut best = vec![(u64::MAX, StateId::MAX, u64::MAX); sealers.len() + 1];
    for i in (0..sealers.len()).rev() {
        let (_, ret, v) = sealers[i];
        let (b_ret, b_val, other) = best[i + 1];
        best[i] = if ret < b_ret {
            (ret, v, if v == b_val { other } else { b_ret })
        } else if v != b_val {
            (b_ret, b_val, other.min(ret))
        } else {
            (b_ret, b_val, other)
        };
    }
    // Is there a sealer invoked after `after` (all, if `None`) that
    // completes before `before` and sets something other than `v`?
    let sealed = |after: Option<u64>, before: u64, v: StateId| {
        let from = after.map_or(0, |a| sealers.partition_point(|s| s.0 <= a));
        let (b_ret, b_val, other) = best[from];
        if b_val != v {
            b_ret < before
        } else {
            other < before
        }
    };
    for (i, o) in ops.iter().enumerate() {
        let (Some(ret), true) = (o.ret, o.required) else {
            continue;
        };
        let wanted = match o.step {
            Step::Read(v) | Step::CasOk { expected: v, .. } => v,
            _ => continue,
        };
        if let Some(text) = model.value(wanted) {
            let by_append = suffix_lens.iter().any(|&n| {
                n == 0
                    || text
                        .len()
                        .checked_sub(n)
                        .and_then(|at| text.get(at..))
                        .is_some_and(|tail| suffixes.contains(tail))
            });
            if by_append {
                continue;
            }
        }
        let initial = wanted == ABSENT && !sealed(None, o.call, wanted);
        let viable = initial
            || producers.get(&wanted).is_some_and(|ps| {
                ps.iter().any(|&p| {
                    let po = &ops[p];
                    p != i
                        && po.call <= ret
                        // An optional producer can take effect at any
                        // later time, so it cannot be sealed.
                        && po.ret.is_none_or(|pr| !sealed(Some(pr), o.call, wanted))
                })
            });
        if !viable {
            return Some(i);
        }
    }
    None
}
