//! Wing–Gong / Lowe search for one key (Porcupine's `checkSingle`).
//!
//! Entries (one call and one return per op) sit in a doubly-linked list
//! sorted by time. Scanning from the head, a call entry is a candidate to
//! linearize next; reaching a return entry means the op it belongs to must
//! already have been linearized, so the search backtracks. Linearizing an
//! op "lifts" its two entries out of the list; backtracking restores them
//! (dancing links, restored in reverse order of removal). A memo of
//! (set of linearized ops, state) prunes configurations already explored.
//!
//! Info ops have their return at +infinity and are not required: the
//! search succeeds as soon as every required op is linearized, so an info
//! op may be placed anywhere after its call, or nowhere.
//!
//! Two refinements over Porcupine keep info ops from multiplying the
//! search space: each configuration tries required candidates before
//! optional ones, and the memo prunes a configuration when a *finished*
//! one had the same required set and state and a subset of its linearized
//! info ops (it had at least the same options and still failed). Only
//! finished configurations may prune by dominance; pruning by an ancestor
//! still on the stack would assume the outcome being computed. Exact
//! repeats are pruned as in Porcupine.
//!
//! Finally, an optional op immediately followed by a blind write
//! (put/delete), or by nothing, can be deleted from any linearization
//! without changing it. So, without loss of generality, the op linearized
//! right after an optional op must observe the state (a read, cas or
//! append): the search never tries a blind write there. Configurations
//! under that restriction are memoized as such ("restricted"), and an
//! unrestricted finished configuration dominates a restricted one, not the
//! reverse.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::model::{Model, StateId, Step, ABSENT};

/// How often (in loop iterations) the search polls the budget. A poll costs
/// a clock read and a few atomics; 1024 iterations take microseconds.
const POLL_EVERY: u64 = 1024;

/// Approximate bytes of one memo entry besides its bitsets: hash map slot
/// (key + bucket vector), control byte, load-factor slack, the entry in the
/// bucket's heap block and allocator headers.
const ENTRY_OVERHEAD: usize = 128;

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

/// What stopped a search early.
enum Stop {
    Cancelled,
    Unknown(String),
}

/// One search's share of the budget; returns it on drop.
struct Account<'a> {
    budget: &'a Budget,
    states: usize,
    bytes: usize,
}

impl Account<'_> {
    /// Publishes local totals and checks every limit.
    fn poll(&mut self, states: usize, bytes: usize) -> Result<(), Stop> {
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

/// An op as the search sees it.
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
    },
    Violation {
        /// Longest linearizable prefix found, in linearization order.
        prefix: Vec<usize>,
        /// Op whose return was reached right after that prefix: it had to
        /// be linearized and could not be.
        offending: usize,
        /// State after the prefix.
        state: StateId,
        states: usize,
    },
    Unknown {
        reason: String,
        states: usize,
    },
    Cancelled,
}

/// Identity hasher: memo keys are already well-mixed 64-bit hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached if a non-u64 key is ever hashed; stay correct.
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Zobrist key of op `i`: the set's hash is the XOR over its members, so it
/// updates in O(1) when an op is linearized or un-linearized.
fn op_key(i: usize) -> u64 {
    splitmix64(i as u64)
}

fn state_key(s: StateId) -> u64 {
    splitmix64(u64::from(s) ^ 0xA5A5_5A5A_C3C3_3C3C)
}

/// Bitset of linearized ops, with its canonical compact form maintained
/// incrementally: `lead` = number of leading all-ones words, `hi` = one past
/// the last non-zero word. Ops are numbered in call order, so the
/// linearized set is almost always a full prefix plus a few stragglers and
/// the memo stores only `words[lead..hi]`, making memory per entry
/// independent of history length.
struct Bits {
    words: Vec<u64>,
    lead: usize,
    hi: usize,
}

impl Bits {
    fn new(n: usize) -> Self {
        Bits {
            words: vec![0; n.div_ceil(64)],
            lead: 0,
            hi: 0,
        }
    }

    fn set(&mut self, i: usize) {
        let w = i / 64;
        if let Some(word) = self.words.get_mut(w) {
            *word |= 1 << (i % 64);
        }
        if w >= self.hi {
            self.hi = w + 1;
        }
        if w == self.lead {
            while self.words.get(self.lead) == Some(&u64::MAX) {
                self.lead += 1;
            }
        }
    }

    fn clear(&mut self, i: usize) {
        let w = i / 64;
        if let Some(word) = self.words.get_mut(w) {
            *word &= !(1 << (i % 64));
        }
        if w < self.lead {
            self.lead = w;
        }
        if w + 1 == self.hi {
            while self.hi > 0 && self.words.get(self.hi - 1) == Some(&0) {
                self.hi -= 1;
            }
        }
    }

    fn tail(&self) -> &[u64] {
        self.words.get(self.lead..self.hi).unwrap_or(&[])
    }
}

/// The linearized optional (info) ops: a plain bitset, usually tiny.
/// Compared after trimming trailing zero words.
fn trimmed(words: &[u64]) -> &[u64] {
    let len = words.iter().rposition(|&w| w != 0).map_or(0, |i| i + 1);
    words.get(..len).unwrap_or(&[])
}

/// `a ⊆ b` for trimmed or untrimmed bitsets.
fn is_subset(a: &[u64], b: &[u64]) -> bool {
    a.iter()
        .enumerate()
        .all(|(i, &w)| w & !b.get(i).copied().unwrap_or(0) == 0)
}

/// A configuration: (required ops linearized, state, optional ops
/// linearized).
struct MemoEntry {
    state: StateId,
    lead: u32,
    tail: Box<[u64]>,
    opt: Box<[u64]>,
    /// The last op linearized was optional, so the next must observe the
    /// state (see `search`): fewer continuations than unrestricted.
    restricted: bool,
    /// Its subtree has been fully explored without success.
    done: bool,
}

impl MemoEntry {
    fn same_required(&self, state: StateId, req: &Bits) -> bool {
        self.state == state && self.lead as usize == req.lead && *self.tail == *req.tail()
    }
}

#[derive(Default)]
struct Memo {
    /// Keyed by hash(required set, state); a bucket holds the optional
    /// sets seen with them (and, rarely, hash collisions).
    map: HashMap<u64, Vec<MemoEntry>, BuildHasherDefault<IdHasher>>,
    len: usize,
    bytes: usize,
}

impl Memo {
    /// Records a configuration about to be explored. Returns false when it
    /// need not be: it was seen before, or a *finished* configuration with
    /// the same required set and state had a subset of its optional ops.
    /// (Info ops are never forced, so fewer linearized info ops means at
    /// least as many ways forward; if that configuration failed, this one
    /// fails too. Only finished ones count: an unfinished one is an
    /// ancestor whose outcome is not yet known.)
    fn insert(
        &mut self,
        hash: u64,
        state: StateId,
        req: &Bits,
        opt: &[u64],
        restricted: bool,
    ) -> bool {
        let opt = trimmed(opt);
        let bucket = match self.map.entry(hash) {
            Entry::Vacant(v) => v.insert(Vec::with_capacity(1)),
            Entry::Occupied(o) => {
                let bucket = o.into_mut();
                let dominated = bucket.iter().any(|e| {
                    e.same_required(state, req)
                        && is_subset(&e.opt, opt)
                        && (!e.restricted || restricted)
                        && (e.done || (*e.opt == *opt && e.restricted == restricted))
                });
                if dominated {
                    return false;
                }
                bucket
            }
        };
        bucket.push(MemoEntry {
            state,
            lead: u32::try_from(req.lead).unwrap_or(u32::MAX),
            tail: req.tail().into(),
            opt: opt.into(),
            restricted,
            done: false,
        });
        self.len += 1;
        self.bytes += ENTRY_OVERHEAD + 8 * (req.tail().len() + opt.len());
        true
    }

    /// Marks a configuration as fully explored.
    fn finish(&mut self, hash: u64, state: StateId, req: &Bits, opt: &[u64], restricted: bool) {
        let opt = trimmed(opt);
        if let Some(bucket) = self.map.get_mut(&hash) {
            if let Some(e) = bucket.iter_mut().find(|e| {
                e.same_required(state, req) && *e.opt == *opt && e.restricted == restricted
            }) {
                e.done = true;
            }
        }
    }
}

/// Node layout: 0 = head sentinel, 1..=2n entries, 2n+1 = tail sentinel.
struct List {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Op of each node (sentinels: unused).
    op: Vec<u32>,
    is_call: Vec<bool>,
    /// Per op: its return node.
    ret_node: Vec<u32>,
}

const HEAD: u32 = 0;

impl List {
    fn build(ops: &[SearchOp]) -> Self {
        // Sort key: (infinite?, time, return?, op). Calls sort before
        // returns at equal times, so touching intervals count as concurrent
        // (the permissive reading of equal timestamps).
        let mut entries: Vec<(bool, u64, bool, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            entries.push((false, op.call, false, i));
            match op.ret {
                Some(t) => entries.push((false, t.max(op.call), true, i)),
                None => entries.push((true, 0, true, i)),
            }
        }
        entries.sort_unstable();
        let nodes = entries.len() + 2;
        let mut list = List {
            next: (1..=nodes as u32).collect(),
            prev: std::iter::once(0).chain(0..nodes as u32 - 1).collect(),
            op: vec![0; nodes],
            is_call: vec![false; nodes],
            ret_node: vec![0; ops.len()],
        };
        for (pos, &(_, _, is_ret, op)) in entries.iter().enumerate() {
            let node = pos + 1;
            list.op[node] = op;
            list.is_call[node] = !is_ret;
            if is_ret {
                list.ret_node[op as usize] = node as u32;
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

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: u32) {
        let ret = self.ret_node[self.op[call as usize] as usize];
        self.remove(call);
        self.remove(ret);
    }

    /// Undoes [`List::lift`] (reverse order of removal).
    fn unlift(&mut self, call: u32) {
        let ret = self.ret_node[self.op[call as usize] as usize];
        self.restore(ret);
        self.restore(call);
    }
}

/// One level of the DFS stack.
struct Frame {
    /// Call node of the op linearized at this level.
    node: u32,
    /// State before it.
    prev_state: StateId,
    /// Chosen by the forced-read rule: its siblings need not be tried.
    forced: bool,
    /// Position of `node` in the parent configuration's candidate order,
    /// where the parent resumes after this subtree fails.
    idx: usize,
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
    req_bits: Bits,
    opt_bits: Vec<u64>,
    /// Zobrist hash of `req_bits`.
    req_hash: u64,
    memo: Memo,
    state: StateId,
    calls: Vec<Frame>,
    total_required: usize,
    remaining: usize,
    /// Best dead end so far (see `snapshot`). `synced` = length of the
    /// common prefix of `best` and the stack, so a snapshot copies only
    /// what changed since the last one (amortized O(1) per push).
    best: Vec<usize>,
    synced: usize,
    best_off: Option<(usize, StateId)>,
    best_rank: (usize, usize),
    /// Candidates of the current configuration, in the order tried.
    cands: Vec<u32>,
}

impl Searcher<'_> {
    fn op_of(&self, node: u32) -> usize {
        self.list.op[node as usize] as usize
    }

    /// The last op linearized was optional: the next must observe the state.
    fn restricted(&self) -> bool {
        self.calls
            .last()
            .is_some_and(|f| !self.ops[self.op_of(f.node)].required)
    }

    fn try_push(&mut self, node: u32, forced: bool, idx: usize) -> Push {
        let op = self.op_of(node);
        let required = self.ops[op].required;
        let Some(new_state) = self.model.step(self.state, self.ops[op].step) else {
            return Push::Illegal;
        };
        let s = self.slot[op];
        let h = if required {
            self.req_bits.set(s);
            self.req_hash ^ op_key(s)
        } else {
            set_bit(&mut self.opt_bits, s, true);
            self.req_hash
        };
        let key = h ^ state_key(new_state);
        if !self
            .memo
            .insert(key, new_state, &self.req_bits, &self.opt_bits, !required)
        {
            if required {
                self.req_bits.clear(s);
            } else {
                set_bit(&mut self.opt_bits, s, false);
            }
            return Push::Pruned;
        }
        self.calls.push(Frame {
            node,
            prev_state: self.state,
            forced,
            idx,
        });
        self.state = new_state;
        self.req_hash = h;
        self.list.lift(node);
        if required {
            self.remaining -= 1;
        }
        Push::Pushed
    }

    /// Abandons the current configuration (marking it fully explored) and
    /// returns to its parent.
    fn pop(&mut self) -> Option<Frame> {
        let frame = self.calls.pop()?;
        let op = self.op_of(frame.node);
        let required = self.ops[op].required;
        let key = self.req_hash ^ state_key(self.state);
        self.memo
            .finish(key, self.state, &self.req_bits, &self.opt_bits, !required);
        self.synced = self.synced.min(self.calls.len());
        if required {
            self.req_bits.clear(self.slot[op]);
            self.req_hash ^= op_key(self.slot[op]);
            self.remaining += 1;
        } else {
            set_bit(&mut self.opt_bits, self.slot[op], false);
        }
        self.state = frame.prev_state;
        self.list.unlift(frame.node);
        Some(frame)
    }

    /// A candidate that may be linearized without branching: a required
    /// op that leaves the state unchanged (an ok read, a failed cas) and is
    /// legal now. Any successful continuation can be rewritten to start
    /// with it: it changes no state, and no pending op has to precede it
    /// (it is a candidate), so moving it to the front keeps every other op
    /// legal and in real-time order.
    fn forced_candidate(&mut self) -> Option<u32> {
        let mut node = self.list.next[HEAD as usize];
        while self.list.is_call.get(node as usize) == Some(&true) {
            let op = &self.ops[self.op_of(node)];
            if op.required
                && matches!(op.step, Step::Read(_) | Step::CasFail { .. })
                && self.model.step(self.state, op.step).is_some()
            {
                return Some(node);
            }
            node = self.list.next[node as usize];
        }
        None
    }

    /// Fills `cands` with the current configuration's candidates (calls
    /// before the first return entry) in the order to try them, and returns
    /// that first return node (the op that blocks further progress).
    ///
    /// Order: required ops before optional ones ("the info op did not
    /// happen yet" first keeps speculative info ops out of most paths and
    /// makes dominance pruning effective); required ops by the midpoint of
    /// their interval, the best guess of when they took effect, so that
    /// the first path tried is usually right and chronological
    /// backtracking rarely has to undo deep mistakes; optional ops by call.
    fn candidates(&mut self) -> u32 {
        self.cands.clear();
        let mut node = self.list.next[HEAD as usize];
        while self.list.is_call.get(node as usize) == Some(&true) {
            self.cands.push(node);
            node = self.list.next[node as usize];
        }
        let ops = self.ops;
        let list = &self.list;
        self.cands.sort_by_key(|&n| {
            let op = &ops[list.op[n as usize] as usize];
            match (op.required, op.ret) {
                (true, Some(ret)) => (false, u128::from(op.call) + u128::from(ret)),
                _ => (true, u128::from(op.call)),
            }
        });
        node
    }

    /// Records the current stack if this dead end (blocked by the op of
    /// return node `ret`) beats the best so far. Rank: required ops
    /// linearized, then fewer optional (info) ops, since an info op in the
    /// prefix is a guess, not evidence.
    fn snapshot(&mut self, ret: u32) {
        let req_depth = self.total_required - self.remaining;
        let rank = (req_depth, usize::MAX - (self.calls.len() - req_depth));
        if self.best_off.is_some() && rank <= self.best_rank {
            return;
        }
        self.best_rank = rank;
        self.best.truncate(self.synced);
        let fresh: Vec<usize> = self.calls[self.synced..]
            .iter()
            .map(|f| self.list.op[f.node as usize] as usize)
            .collect();
        self.best.extend(fresh);
        self.synced = self.calls.len();
        self.best_off = Some((self.op_of(ret), self.state));
    }

    fn violation(self) -> SearchResult {
        let (offending, state) = self.best_off.unwrap_or((0, ABSENT));
        SearchResult::Violation {
            prefix: self.best,
            offending,
            state,
            states: self.memo.len,
        }
    }
}

/// Decides whether `ops` (one key's history) is linearizable.
pub(crate) fn search(ops: &[SearchOp], model: &mut Model, budget: &Budget) -> SearchResult {
    let mut account = Account {
        budget,
        states: 0,
        bytes: 0,
    };
    if budget.cancel.load(Ordering::Relaxed) {
        return SearchResult::Cancelled;
    }
    let total_required = ops.iter().filter(|o| o.required).count();
    if total_required == 0 {
        return SearchResult::Linearizable { states: 0 };
    }
    // Node ids are u32; a single key with more than 2^31 ops would not fit
    // in memory anyway.
    if ops.len() >= (u32::MAX / 2 - 2) as usize {
        return SearchResult::Unknown {
            reason: "too many operations on one key".to_string(),
            states: 0,
        };
    }

    // Required and optional ops are numbered separately: the memo key
    // covers the required set exactly and the optional set by dominance.
    let mut slot = vec![0usize; ops.len()];
    let (mut n_req, mut n_opt) = (0usize, 0usize);
    for (i, op) in ops.iter().enumerate() {
        let counter = if op.required { &mut n_req } else { &mut n_opt };
        slot[i] = *counter;
        *counter += 1;
    }
    let tail = (ops.len() * 2 + 1) as u32;
    let mut s = Searcher {
        ops,
        model,
        list: List::build(ops),
        slot,
        req_bits: Bits::new(n_req),
        opt_bits: vec![0u64; n_opt.div_ceil(64)],
        req_hash: 0,
        memo: Memo::default(),
        state: ABSENT,
        calls: Vec::new(),
        total_required,
        remaining: total_required,
        best: Vec::new(),
        synced: 0,
        best_off: None,
        best_rank: (0, 0),
        cands: Vec::new(),
    };

    // Each configuration is first checked for a forced read; otherwise its
    // candidates are tried in `Searcher::candidates` order.
    let mut fresh = true;
    let mut next_idx = 0usize;
    let mut iterations: u64 = 0;
    loop {
        iterations += 1;
        if iterations % POLL_EVERY == 0 {
            let bytes = s.memo.bytes + s.model.bytes();
            if let Err(stop) = account.poll(s.memo.len, bytes) {
                return match stop {
                    Stop::Cancelled => SearchResult::Cancelled,
                    Stop::Unknown(reason) => SearchResult::Unknown {
                        reason,
                        states: s.memo.len,
                    },
                };
            }
        }

        let mut dead = false;
        if fresh {
            fresh = false;
            next_idx = 0;
            if let Some(node) = s.forced_candidate() {
                if s.try_push(node, true, 0) == Push::Pushed {
                    if s.remaining == 0 {
                        return SearchResult::Linearizable { states: s.memo.len };
                    }
                    fresh = true;
                    continue;
                }
                // Every continuation may start with the forced op, and
                // that configuration already failed.
                dead = true;
            }
        }

        if !dead {
            let blocker = s.candidates();
            let restricted = s.restricted();
            let mut pushed = false;
            let mut i = next_idx;
            while let Some(&node) = s.cands.get(i) {
                let blind = matches!(ops[s.op_of(node)].step, Step::Write(_));
                if !(blind && restricted) && s.try_push(node, false, i) == Push::Pushed {
                    pushed = true;
                    break;
                }
                i += 1;
            }
            if pushed {
                if s.remaining == 0 {
                    return SearchResult::Linearizable { states: s.memo.len };
                }
                fresh = true;
                continue;
            }
            if blocker != tail {
                s.snapshot(blocker);
            }
        }

        // Dead end: return to the nearest ancestor with untried
        // candidates. A forced frame's parent has none.
        loop {
            let Some(frame) = s.pop() else {
                return s.violation();
            };
            if !frame.forced {
                next_idx = frame.idx + 1;
                break;
            }
        }
    }
}

fn set_bit(words: &mut [u64], i: usize, on: bool) {
    if let Some(w) = words.get_mut(i / 64) {
        if on {
            *w |= 1 << (i % 64);
        } else {
            *w &= !(1 << (i % 64));
        }
    }
}
