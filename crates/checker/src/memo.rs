//! The memo of explored configurations: (required ops linearized, state,
//! optional ops linearized, restriction level), with dominance.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::hash::splitmix64;
use crate::model::StateId;

/// Approximate bytes of one memo entry besides its bitsets: hash map slot
/// (key + bucket vector), control byte, load-factor slack, the entry in the
/// bucket's heap block and allocator headers.
const ENTRY_OVERHEAD: usize = 128;

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
    /// Restriction on the next op (see `Searcher::level`): a higher level
    /// allows fewer continuations.
    level: u8,
    /// Its subtree has been fully explored without success.
    done: bool,
}

impl MemoEntry {
    fn same_required(&self, state: StateId, req: &Bits) -> bool {
        self.state == state && self.lead as usize == req.lead && *self.tail == *req.tail()
    }
}

#[derive(Default)]
pub(crate) struct Memo {
    /// Keyed by hash(required set, state); a bucket holds the optional
    /// sets seen with them (and, rarely, hash collisions).
    map: HashMap<u64, Vec<MemoEntry>, BuildHasherDefault<IdHasher>>,
    /// Entries held.
    pub(crate) len: usize,
    /// Approximate heap bytes held.
    pub(crate) bytes: usize,
}

impl Memo {
    /// Records a configuration about to be explored. Returns false when it
    /// need not be: it was seen before, or a *finished* configuration with
    /// the same required set and state had a subset of its optional ops.
    /// (Info ops are never forced, so fewer linearized info ops means at
    /// least as many ways forward; if that configuration failed, this one
    /// fails too. Only finished ones count: an unfinished one is an
    /// ancestor whose outcome is not yet known.)
    pub(crate) fn insert(&mut self, lin: &Linearized, state: StateId, level: u8) -> bool {
        let hash = lin.key(state);
        let req = &lin.req;
        let opt = trimmed(&lin.opt);
        let bucket = match self.map.entry(hash) {
            Entry::Vacant(v) => v.insert(Vec::with_capacity(1)),
            Entry::Occupied(o) => {
                let bucket = o.into_mut();
                let dominated = bucket.iter().any(|e| {
                    e.same_required(state, req)
                        && is_subset(&e.opt, opt)
                        && e.level <= level
                        && (e.done || (*e.opt == *opt && e.level == level))
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
            level,
            done: false,
        });
        self.len += 1;
        self.bytes += ENTRY_OVERHEAD + 8 * (req.tail().len() + opt.len());
        true
    }

    /// Marks a configuration as fully explored.
    pub(crate) fn finish(&mut self, lin: &Linearized, state: StateId, level: u8) {
        let hash = lin.key(state);
        let req = &lin.req;
        let opt = trimmed(&lin.opt);
        if let Some(bucket) = self.map.get_mut(&hash) {
            if let Some(e) = bucket
                .iter_mut()
                .find(|e| e.same_required(state, req) && *e.opt == *opt && e.level == level)
            {
                e.done = true;
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

/// The set of linearized ops of a configuration: required ops in a compact
/// bitset with an incremental Zobrist hash, optional ops in a plain bitset
/// (not hashed: configurations differing only in optional ops share a
/// bucket, where dominance is checked).
pub(crate) struct Linearized {
    req: Bits,
    opt: Vec<u64>,
    hash: u64,
}

impl Linearized {
    /// Nothing linearized yet, for `n_req` required and `n_opt` optional
    /// ops (numbered separately).
    pub(crate) fn new(n_req: usize, n_opt: usize) -> Self {
        Linearized {
            req: Bits::new(n_req),
            opt: vec![0; n_opt.div_ceil(64)],
            hash: 0,
        }
    }

    /// Adds (`on`) or removes a required (by its required-op number) or
    /// optional (by its optional-op number) op.
    pub(crate) fn toggle(&mut self, required: bool, slot: usize, on: bool) {
        if required {
            if on {
                self.req.set(slot);
            } else {
                self.req.clear(slot);
            }
            self.hash ^= op_key(slot);
        } else {
            set_bit(&mut self.opt, slot, on);
        }
    }

    /// The memo key of this set with `state`.
    fn key(&self, state: StateId) -> u64 {
        self.hash ^ state_key(state)
    }
}
