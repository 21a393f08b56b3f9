//! Versions: an optional, independent check of one key's recorded
//! versions, run before the search.
//!
//! An `ok` completion may carry the version the node returned: a write's
//! (put, append, delete, ok cas) new version, or the version of the value
//! a get read. In every linearization of a correct store, versions of a
//! key grow with each write and a read returns the version of the write
//! whose value it observes. Hence, over the ops that carry a version:
//!
//! * two writes never share a version;
//! * an op completed before another was invoked precedes it in every
//!   linearization, so a later write has a strictly greater version than
//!   it, and a later read a version at least as great;
//! * a read of version `v`, when the write of version `v` was recorded,
//!   returns that write's value (for an append: a value ending with its
//!   suffix) and was not completed before that write was invoked.
//!
//! These are necessary conditions, so a violation of any is a violation of
//! linearizability; ops without a version are left to the search, which
//! checks values as before.

use crate::history::{Command, Operation, Outcome};

/// For one key's ops: the first op whose version contradicts another op,
/// and that other op (both as [`Operation::id`]s), if any.
pub(crate) fn version_violation(ops: &[&Operation]) -> Option<(usize, usize)> {
    let versioned: Vec<(&Operation, u64)> = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok)
        .filter_map(|o| o.version.map(|v| (*o, v)))
        .collect();
    let is_write = |o: &Operation| o.command != Command::Get;

    // Unique write versions.
    let mut writes: Vec<(u64, &Operation)> = versioned
        .iter()
        .filter(|(o, _)| is_write(o))
        .map(|&(o, v)| (v, o))
        .collect();
    writes.sort_by_key(|&(v, o)| (v, o.invoke_time, o.id));
    for pair in writes.windows(2) {
        if let [(v1, a), (v2, b)] = pair {
            if v1 == v2 {
                return Some((b.id, a.id));
            }
        }
    }

    // Real-time growth: sweep ops by invoke, with the greatest version
    // among the ops completed strictly before.
    let mut by_call: Vec<(&Operation, u64)> = versioned.clone();
    by_call.sort_by_key(|(o, _)| (o.invoke_time, o.id));
    let mut by_ret: Vec<(u64, u64, usize)> = versioned
        .iter()
        .filter_map(|(o, v)| o.complete_time.map(|t| (t, *v, o.id)))
        .collect();
    by_ret.sort_unstable();
    let mut next = 0;
    let mut max: Option<(u64, usize)> = None;
    for &(b, vb) in &by_call {
        while let Some(&(t, v, id)) = by_ret.get(next) {
            if t >= b.invoke_time {
                break;
            }
            if max.is_none_or(|(m, _)| v > m) {
                max = Some((v, id));
            }
            next += 1;
        }
        if let Some((m, id)) = max {
            let stale = if is_write(b) { vb <= m } else { vb < m };
            if stale {
                return Some((b.id, id));
            }
        }
    }

    // A read returns the version of the write it observes.
    for &(r, v) in versioned.iter().filter(|(o, _)| !is_write(o)) {
        let Ok(at) = writes.binary_search_by_key(&v, |&(wv, _)| wv) else {
            continue;
        };
        let Some(&(_, w)) = writes.get(at) else {
            continue;
        };
        let from_future = r.complete_time.is_some_and(|t| t < w.invoke_time);
        let same_value = match &w.command {
            Command::Put { value } => r.read.as_deref() == Some(value.as_str()),
            Command::Delete => r.read.is_none(),
            Command::Cas { value, .. } => r.read == *value,
            Command::Append { value } => r
                .read
                .as_deref()
                .is_some_and(|s| s.ends_with(value.as_str())),
            Command::Get => true,
        };
        if from_future || !same_value {
            return Some((r.id, w.id));
        }
    }
    None
}
