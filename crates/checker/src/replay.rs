//! A second, independent check of every positive verdict: the witness
//! order the search found is replayed through the model.
//!
//! The search answers "linearizable" with a witness (the order in which it
//! linearized the ops). Replaying it checks, with none of the search's
//! reductions, that it is a linearization: every required op appears once,
//! nothing appears twice, no op is placed before one that completed before
//! it was invoked, and every step is legal in the model from "absent". A
//! bug in a reduction that made the search accept a wrong order is caught
//! here (the key is then reported unknown, never linearizable).

use crate::model::{Model, ABSENT};
use crate::search::SearchOp;

/// `Ok(())` if `witness` (indices into `ops`) is a linearization of `ops`;
/// otherwise what is wrong with it.
pub(crate) fn replay(ops: &[SearchOp], model: &mut Model, witness: &[usize]) -> Result<(), String> {
    let mut placed = vec![false; ops.len()];
    for &i in witness {
        let seen = placed
            .get_mut(i)
            .ok_or_else(|| format!("op {i} is not in the history"))?;
        if *seen {
            return Err(format!("op {i} is linearized twice"));
        }
        *seen = true;
    }
    if let Some(i) = (0..ops.len()).find(|&i| ops[i].required && !placed[i]) {
        return Err(format!("required op {i} is missing"));
    }
    // Real time: an op placed after `i` must not have completed before `i`
    // was invoked (equal times overlap). Sweep from the end, keeping the
    // earliest completion of the ops placed later.
    let mut earliest: Option<(u64, usize)> = None;
    for &i in witness.iter().rev() {
        let op = &ops[i];
        if let Some((ret, j)) = earliest {
            if ret < op.call {
                return Err(format!(
                    "op {j} is placed after op {i}, but completed (at {ret}) before op {i} was \
                     invoked (at {})",
                    op.call
                ));
            }
        }
        if let Some(ret) = op.ret {
            if earliest.is_none_or(|(e, _)| ret < e) {
                earliest = Some((ret, i));
            }
        }
    }
    let mut state = ABSENT;
    for (pos, &i) in witness.iter().enumerate() {
        state = model.step(state, ops[i].step).ok_or_else(|| {
            format!(
                "op {i} (position {}) is not legal in state {:?}",
                pos + 1,
                model.value(state)
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::assemble::HistoryBuilder;
    use crate::budget::Budget;
    use crate::history::Command;
    use crate::search::{search, SearchResult};
    use std::time::{Duration, Instant};

    /// ops: put a [0,10], put b [20,30], get -> b [40,50], append c [45,60].
    fn fixture() -> (Vec<SearchOp>, Model) {
        let mut b = HistoryBuilder::new();
        b.invoke(1, 0, "k", Command::Put { value: "a".into() })
            .ok(1, 10, None)
            .invoke(1, 20, "k", Command::Put { value: "b".into() })
            .ok(1, 30, None)
            .invoke(2, 40, "k", Command::Get)
            .ok(2, 50, Some("b"))
            .invoke(3, 45, "k", Command::Append { value: "c".into() })
            .ok(3, 60, None);
        let h = b.build().unwrap();
        let mut model = Model::default();
        let ops = h
            .ops
            .iter()
            .filter_map(|o| {
                model.prepare(o).map(|p| SearchOp {
                    step: p.step,
                    required: p.required,
                    call: o.invoke_time,
                    ret: p.deadline,
                })
            })
            .collect();
        (ops, model)
    }

    #[test]
    fn the_search_witness_replays() {
        let (ops, mut model) = fixture();
        let budget = Budget::new(Instant::now(), Duration::from_secs(5), usize::MAX, 1 << 30);
        let SearchResult::Linearizable { witness, .. } = search(&ops, &mut model, &budget) else {
            panic!("fixture is linearizable");
        };
        assert_eq!(replay(&ops, &mut model, &witness), Ok(()));
    }

    #[test]
    fn corrupted_witnesses_are_caught() {
        let (ops, mut model) = fixture();
        assert_eq!(replay(&ops, &mut model, &[0, 1, 2, 3]), Ok(()));
        let bad: [(&[usize], &str); 5] = [
            // Reads "b" after the append made it "bc": illegal step.
            (&[0, 1, 3, 2], "not legal"),
            // put b before put a, which completed before it was invoked.
            (&[1, 0, 2, 3], "completed (at 10) before op 1"),
            (&[0, 1, 2], "required op 3 is missing"),
            (&[0, 1, 1, 2, 3], "twice"),
            (&[0, 1, 2, 3, 9], "not in the history"),
        ];
        for (w, why) in bad {
            let err = replay(&ops, &mut model, w).unwrap_err();
            assert!(err.contains(why), "{w:?}: {err}");
        }
    }
}
