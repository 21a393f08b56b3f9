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

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::model::{Model, StateId, Step, ABSENT};

/// How often (in loop iterations) the search polls the budget. A poll costs
/// a clock read and a few atomics; 1024 iterations take microseconds.
const POLL_EVERY: u64 = 1024;

/// Approximate bytes of one memo entry besides its bitset tail: hash map
/// slot (key + bucket), control byte, load factor slack, box header.
const ENTRY_OVERHEAD: usize = 96;

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

struct MemoEntry {
    state: StateId,
    lead: u32,
    tail: Box<[u64]>,
}

impl MemoEntry {
    fn matches(&self, state: StateId, bits: &Bits) -> bool {
        self.state == state && self.lead as usize == bits.lead && *self.tail == *bits.tail()
    }
}

/// Hash collisions are rare, so the first entry lives inline.
struct Bucket {
    first: MemoEntry,
    more: Vec<MemoEntry>,
}

#[derive(Default)]
struct Memo {
    map: HashMap<u64, Bucket, BuildHasherDefault<IdHasher>>,
    len: usize,
    bytes: usize,
}

impl Memo {
    /// Inserts (bits, state) under `hash`; false if it was already there.
    fn insert(&mut self, hash: u64, state: StateId, bits: &Bits) -> bool {
        let make = || MemoEntry {
            state,
            lead: u32::try_from(bits.lead).unwrap_or(u32::MAX),
            tail: bits.tail().into(),
        };
        match self.map.entry(hash) {
            Entry::Vacant(v) => {
                v.insert(Bucket {
                    first: make(),
                    more: Vec::new(),
                });
            }
            Entry::Occupied(mut o) => {
                let bucket = o.get_mut();
                if bucket.first.matches(state, bits)
                    || bucket.more.iter().any(|e| e.matches(state, bits))
                {
                    return false;
                }
                bucket.more.push(make());
                self.bytes += 32;
            }
        }
        self.len += 1;
        self.bytes += ENTRY_OVERHEAD + 8 * bits.tail().len();
        true
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

/// Decides whether `ops` (one key's history) is linearizable.
///
/// Indexing below is into vectors sized from `ops.len()` and node ids
/// produced by [`List::build`], so it cannot go out of bounds.
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
    let mut remaining = total_required;
    if remaining == 0 {
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

    let mut list = List::build(ops);
    let tail = (ops.len() * 2 + 1) as u32;
    let mut bits = Bits::new(ops.len());
    let mut set_hash: u64 = 0;
    let mut memo = Memo::default();
    let mut state: StateId = ABSENT;
    // Stack of (call node, state before it) for backtracking.
    let mut calls: Vec<(u32, StateId)> = Vec::new();

    // Best prefix seen at a dead end. `synced` = length of the common
    // prefix of `best` and the current stack, so snapshots copy only what
    // changed since the last one (amortized O(1) per push).
    let mut best: Vec<usize> = Vec::new();
    let mut synced = 0usize;
    let mut best_off: Option<(usize, StateId)> = None;
    let (mut best_req, mut best_opt) = (0usize, 0usize);

    let mut entry = list.next[HEAD as usize];
    let mut iterations: u64 = 0;
    loop {
        iterations += 1;
        if iterations % POLL_EVERY == 0 {
            if let Err(stop) = account.poll(memo.len, memo.bytes + model.bytes()) {
                return match stop {
                    Stop::Cancelled => SearchResult::Cancelled,
                    Stop::Unknown(reason) => SearchResult::Unknown {
                        reason,
                        states: memo.len,
                    },
                };
            }
        }

        if entry != tail && list.is_call[entry as usize] {
            let op = list.op[entry as usize] as usize;
            let mut advanced = false;
            if let Some(new_state) = model.step(state, ops[op].step) {
                bits.set(op);
                let h = set_hash ^ op_key(op);
                if memo.insert(h ^ state_key(new_state), new_state, &bits) {
                    calls.push((entry, state));
                    state = new_state;
                    set_hash = h;
                    list.lift(entry);
                    if ops[op].required {
                        remaining -= 1;
                        if remaining == 0 {
                            return SearchResult::Linearizable { states: memo.len };
                        }
                    }
                    entry = list.next[HEAD as usize];
                    advanced = true;
                } else {
                    bits.clear(op);
                }
            }
            if !advanced {
                entry = list.next[entry as usize];
            }
            continue;
        }

        // A return entry (or, defensively, the end of the list): every
        // candidate before it failed, so undo the last choice.
        // Rank dead ends by required ops linearized, then by fewer optional
        // (info) ops: an info op in the prefix is a guess, not evidence.
        let req_depth = total_required - remaining;
        let opt_depth = calls.len() - req_depth;
        let better = match best_off {
            None => true,
            Some(_) => req_depth > best_req || (req_depth == best_req && opt_depth < best_opt),
        };
        if entry != tail && better {
            best_req = req_depth;
            best_opt = opt_depth;
            best.truncate(synced);
            best.extend(
                calls[synced..]
                    .iter()
                    .map(|&(node, _)| list.op[node as usize] as usize),
            );
            synced = calls.len();
            best_off = Some((list.op[entry as usize] as usize, state));
        }
        let Some((call, prev_state)) = calls.pop() else {
            let (offending, state) = best_off.unwrap_or((0, ABSENT));
            return SearchResult::Violation {
                prefix: best,
                offending,
                state,
                states: memo.len,
            };
        };
        synced = synced.min(calls.len());
        let op = list.op[call as usize] as usize;
        bits.clear(op);
        set_hash ^= op_key(op);
        state = prev_state;
        list.unlift(call);
        if ops[op].required {
            remaining += 1;
        }
        entry = list.next[call as usize];
    }
}
