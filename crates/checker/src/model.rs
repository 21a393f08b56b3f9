//! The sequential specification of one key, over interned values.
//!
//! The state of a key is `Option<String>`. The search memoizes
//! (set of linearized ops, state) pairs, so states are interned to `u32`
//! ids: comparisons and hashing become integer operations and each distinct
//! string is stored once however many memo entries refer to it. Id 0 is
//! "absent".

use std::rc::Rc;

use crate::hash::FastMap;
use crate::history::{Command, Operation, Outcome};

/// Interned state id; [`ABSENT`] is the key being absent.
pub(crate) type StateId = u32;

/// The id of "key absent".
pub(crate) const ABSENT: StateId = 0;

/// One operation reduced to what the model needs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Step {
    /// `get` ok: legal only if the state is the read value.
    Read(StateId),
    /// `put`/`delete`: state becomes the value.
    Write(StateId),
    /// `append`: the index of the suffix in [`Model::suffixes`].
    Append(u32),
    /// `cas` ok: legal only if state == expected; then state = new.
    CasOk { expected: StateId, new: StateId },
    /// `cas` fail: legal only if state != expected; no change. (`new` is
    /// kept for explanations, which treat a cas still pending at some
    /// instant as one that may swap.)
    CasFail { expected: StateId, new: StateId },
    /// `cas` info: if it took effect and swapped, state was expected. A
    /// failed cas changes nothing, which is the same as never happening, so
    /// only the swapping branch is worth exploring.
    CasMaybe { expected: StateId, new: StateId },
}

/// How an operation takes part in the search.
pub(crate) struct Prepared {
    pub step: Step,
    /// Must be linearized (ok ops and failed cas); info ops are optional.
    pub required: bool,
    /// Must take effect before this time; `None` = +infinity (info).
    pub deadline: Option<u64>,
}

/// Interner plus step function for one key. Not shared across threads.
#[derive(Default)]
pub(crate) struct Model {
    ids: FastMap<Rc<str>, StateId>,
    /// `values[id - 1]` is the string of state `id`.
    values: Vec<Rc<str>>,
    suffixes: Vec<String>,
    /// (state, suffix index) -> state after the append.
    appended: FastMap<(StateId, u32), StateId>,
    /// Approximate heap bytes held, for the memory bound.
    bytes: usize,
}

impl Model {
    /// Approximate heap bytes held by interned values.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value a state id stands for (`None` = absent).
    pub(crate) fn value(&self, id: StateId) -> Option<&str> {
        let idx = usize::try_from(id).ok()?.checked_sub(1)?;
        self.values.get(idx).map(|s| &**s)
    }

    /// The id of an already interned value.
    pub(crate) fn lookup(&self, s: &str) -> Option<StateId> {
        self.ids.get(s).copied()
    }

    /// The suffix of append step `idx`.
    pub(crate) fn suffix(&self, idx: u32) -> Option<&str> {
        self.suffixes
            .get(usize::try_from(idx).ok()?)
            .map(String::as_str)
    }

    fn intern_str(&mut self, s: &str) -> StateId {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        // More than u32::MAX - 1 distinct values in one key would exhaust
        // memory long before; saturate rather than panic.
        let id = StateId::try_from(self.values.len() + 1).unwrap_or(StateId::MAX);
        let rc: Rc<str> = Rc::from(s);
        self.bytes += s.len() + 64;
        self.values.push(Rc::clone(&rc));
        self.ids.insert(rc, id);
        id
    }

    fn intern(&mut self, v: Option<&str>) -> StateId {
        match v {
            None => ABSENT,
            Some(s) => self.intern_str(s),
        }
    }

    /// Reduces an operation to a search step, or `None` when it cannot
    /// constrain anything: a failed non-cas op (it did not happen) and a
    /// get whose result is unknown.
    pub(crate) fn prepare(&mut self, op: &Operation) -> Option<Prepared> {
        let finite = op.complete_time.map(|t| t.max(op.invoke_time));
        let (step, required) = match (&op.command, op.outcome) {
            (Command::Get, Outcome::Ok) => (Step::Read(self.intern(op.read.as_deref())), true),
            (Command::Get, _) => return None,
            (Command::Cas { expected, value }, outcome) => {
                let expected = self.intern(expected.as_deref());
                let new = self.intern(value.as_deref());
                match outcome {
                    Outcome::Ok => (Step::CasOk { expected, new }, true),
                    Outcome::Fail => (Step::CasFail { expected, new }, true),
                    Outcome::Info => (Step::CasMaybe { expected, new }, false),
                }
            }
            (_, Outcome::Fail) => return None,
            (Command::Put { value }, outcome) => {
                (Step::Write(self.intern_str(value)), outcome == Outcome::Ok)
            }
            // A delete that found the key absent observed it absent: like a cas from absent
            // to absent. (One that found it present is checked as a blind write: the model
            // has no step for "any value".)
            (Command::Delete, Outcome::Ok) if op.deleted == Some(false) => (
                Step::CasOk {
                    expected: ABSENT,
                    new: ABSENT,
                },
                true,
            ),
            (Command::Delete, outcome) => (Step::Write(ABSENT), outcome == Outcome::Ok),
            (Command::Append { value }, outcome) => {
                let idx = u32::try_from(self.suffixes.len()).unwrap_or(u32::MAX);
                self.bytes += value.len() + 24;
                self.suffixes.push(value.clone());
                (Step::Append(idx), outcome == Outcome::Ok)
            }
        };
        Some(Prepared {
            step,
            required,
            deadline: if required { finite } else { None },
        })
    }

    /// Applies `step` to `state`: `Some(new state)` if legal.
    pub(crate) fn step(&mut self, state: StateId, step: Step) -> Option<StateId> {
        match step {
            Step::Read(v) => (state == v).then_some(state),
            Step::Write(v) => Some(v),
            Step::CasOk { expected, new } | Step::CasMaybe { expected, new } => {
                (state == expected).then_some(new)
            }
            Step::CasFail { expected, .. } => (state != expected).then_some(state),
            Step::Append(idx) => {
                if let Some(&id) = self.appended.get(&(state, idx)) {
                    return Some(id);
                }
                let suffix = self.suffixes.get(usize::try_from(idx).ok()?)?;
                let mut s = self.value(state).unwrap_or("").to_string();
                s.push_str(suffix);
                let id = self.intern_str(&s);
                self.appended.insert((state, idx), id);
                self.bytes += 32;
                Some(id)
            }
        }
    }
}
