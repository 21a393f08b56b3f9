//! A correct sequential key-value map driven by simulated concurrent
//! processes. Each operation takes effect at a random instant between its
//! invoke and its completion, so every history it produces is
//! linearizable by construction (the effect order is a witness).
//!
//! Shared by the randomized tests and `examples/gen_history.rs` (included
//! with `#[path]`), hence the dead-code allowance.
#![allow(dead_code)]

use std::collections::HashMap;

use kvorum_checker::{Command, Event, EventType, HistoryBuilder, OpFn};
use rand::Rng;

/// get 40%, put 25%, cas 15%, append 10%, delete 10%.
pub const DEFAULT_MIX: [f64; 5] = [0.40, 0.25, 0.15, 0.10, 0.10];

/// Shape of a simulated run.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub ops: usize,
    pub keys: usize,
    pub processes: usize,
    /// Probability that an op's outcome is unknown (`info`).
    pub info_rate: f64,
    /// Probability that a put/delete/append fails (does not happen).
    pub fail_rate: f64,
    /// Maximum latency of one op, in ns.
    pub max_latency: u64,
    /// Maximum think time between a process's ops, in ns.
    pub max_gap: u64,
    /// Relative weights of get, put, cas, append, delete.
    pub mix: [f64; 5],
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            ops: 200,
            keys: 3,
            processes: 5,
            info_rate: 0.02,
            fail_rate: 0.02,
            max_latency: 1_000,
            max_gap: 300,
            mix: DEFAULT_MIX,
        }
    }
}

/// One simulated operation.
#[derive(Clone, Debug)]
pub struct SimOp {
    pub id: usize,
    pub process: u64,
    pub key: String,
    pub command: Command,
    pub invoke: u64,
    /// The instant it took effect (if `applied`).
    pub effect: u64,
    /// `None`: never completed (only the last op of a process).
    pub complete: Option<u64>,
    pub outcome: EventType,
    /// What a `get` read.
    pub read: Option<String>,
    /// Whether it changed or observed the state.
    pub applied: bool,
    /// The version recorded on its `ok` completion (see [`assign_versions`]).
    pub version: Option<u64>,
}

impl SimOp {
    /// True for an `ok` write that changed the key (put, delete, append, or
    /// a cas that swapped).
    pub fn is_ok_write(&self) -> bool {
        self.outcome == EventType::Ok && !matches!(self.command, Command::Get)
    }
}

/// Runs the simulation.
pub fn simulate(cfg: &SimConfig, rng: &mut impl Rng) -> Vec<SimOp> {
    let processes = cfg.processes.max(1);
    let keys = cfg.keys.max(1);
    let max_latency = cfg.max_latency.max(1);
    let max_gap = cfg.max_gap.max(1);
    let mut clock: Vec<u64> = (0..processes)
        .map(|_| rng.gen_range(0..max_latency))
        .collect();
    let mut ops = Vec::with_capacity(cfg.ops);
    for id in 0..cfg.ops {
        // The process whose next invoke comes first: ids are then in
        // invoke order.
        let p = (0..processes).min_by_key(|&p| (clock[p], p)).unwrap_or(0);
        let invoke = clock[p];
        let complete = invoke + rng.gen_range(1..=max_latency);
        let effect = rng.gen_range(invoke..=complete);
        clock[p] = complete + rng.gen_range(1..=max_gap);
        let key = format!("k{}", rng.gen_range(0..keys));
        let total: f64 = cfg.mix.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let mut cut = [0.0; 5];
        let mut acc = 0.0;
        for (c, w) in cut.iter_mut().zip(cfg.mix) {
            acc += w / total;
            *c = acc;
        }
        let roll: f64 = rng.gen();
        let command = if roll < cut[0] {
            Command::Get
        } else if roll < cut[1] {
            Command::Put {
                value: format!("v{id}"),
            }
        } else if roll < cut[2] {
            // `expected` is chosen when the op takes effect (below).
            Command::Cas {
                expected: None,
                value: Some(format!("c{id}")),
            }
        } else if roll < cut[3] {
            Command::Append {
                value: format!("a{id};"),
            }
        } else {
            Command::Delete
        };
        let outcome = if rng.gen_bool(cfg.info_rate.clamp(0.0, 1.0)) {
            EventType::Info
        } else if !matches!(command, Command::Get | Command::Cas { .. })
            && rng.gen_bool(cfg.fail_rate.clamp(0.0, 1.0))
        {
            EventType::Fail
        } else {
            EventType::Ok
        };
        ops.push(SimOp {
            id,
            process: p as u64,
            key,
            command,
            invoke,
            effect,
            complete: Some(complete),
            outcome,
            read: None,
            applied: false,
            version: None,
        });
    }

    // Apply effects in effect-time order to a plain map.
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].effect, i));
    let mut map: HashMap<String, Option<String>> = HashMap::new();
    for i in order {
        let op = &mut ops[i];
        let applied = match op.outcome {
            EventType::Ok => true,
            EventType::Info => rng.gen_bool(0.5),
            _ => false,
        };
        let cur = map.entry(op.key.clone()).or_insert(None);
        match &mut op.command {
            Command::Get => {
                if applied {
                    op.read = cur.clone();
                }
            }
            Command::Put { value } => {
                if applied {
                    *cur = Some(value.clone());
                }
            }
            Command::Delete => {
                if applied {
                    *cur = None;
                }
            }
            Command::Append { value } => {
                if applied {
                    let mut s = cur.clone().unwrap_or_default();
                    s.push_str(value);
                    *cur = Some(s);
                }
            }
            Command::Cas { expected, value } => {
                *expected = if rng.gen_bool(0.6) {
                    cur.clone()
                } else if rng.gen_bool(0.3) {
                    None
                } else {
                    Some(format!("v{}", rng.gen_range(0..=op.id)))
                };
                if applied && *cur == *expected {
                    *cur = value.clone();
                } else if op.outcome == EventType::Ok {
                    // Not swapped: an ok cas must then report fail.
                    op.outcome = EventType::Fail;
                }
            }
        }
        op.applied = applied;
    }

    // A process's last op may never complete if its outcome is unknown.
    for p in 0..processes as u64 {
        if let Some(last) = ops.iter_mut().rev().find(|o| o.process == p) {
            if last.outcome == EventType::Info && rng.gen_bool(0.5) {
                last.complete = None;
            }
        }
    }
    ops
}

/// Gives every `ok` op the version a correct store would return: per key,
/// each applied write (info ones included, unrecorded) takes the next
/// version in effect order, and a get the version current when it took
/// effect.
pub fn assign_versions(ops: &mut [SimOp]) {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].effect, i));
    let mut current: HashMap<String, u64> = HashMap::new();
    for i in order {
        let op = &mut ops[i];
        let v = current.entry(op.key.clone()).or_insert(0);
        let writes = !matches!(op.command, Command::Get)
            && op.applied
            && !(matches!(op.command, Command::Cas { .. }) && op.outcome == EventType::Fail);
        if writes {
            *v += 1;
        }
        if op.outcome == EventType::Ok {
            op.version = Some(*v);
        }
    }
}

/// The events of `ops`, in time order.
pub fn events(ops: &[SimOp]) -> Vec<Event> {
    let mut timed: Vec<(u64, usize, Event)> = Vec::with_capacity(ops.len() * 2);
    for (seq, op) in ops.iter().enumerate() {
        timed.push((
            op.invoke,
            2 * seq,
            op.command.invoke_event(op.process, &op.key, op.invoke),
        ));
        if let Some(t) = op.complete {
            let is_get_ok = op.outcome == EventType::Ok && op.command.f() == OpFn::Get;
            timed.push((
                t,
                2 * seq + 1,
                Event {
                    process: op.process,
                    kind: op.outcome,
                    f: op.command.f(),
                    key: op.key.clone(),
                    value: if is_get_ok { op.read.clone() } else { None },
                    expected: None,
                    version: if op.outcome == EventType::Ok {
                        op.version
                    } else {
                        None
                    },
                    deleted: None,
                    time: t,
                },
            ));
        }
    }
    timed.sort_by_key(|(t, seq, _)| (*t, *seq));
    timed.into_iter().map(|(_, _, e)| e).collect()
}

/// A builder holding the events of `ops`.
pub fn builder(ops: &[SimOp]) -> HistoryBuilder {
    let mut b = HistoryBuilder::new();
    for e in events(ops) {
        b.event(e);
    }
    b
}
