//! Linearizability checker for kvorum key-value histories.
//!
//! # Design
//!
//! A history is a JSON Lines file of [`Event`]s (`invoke`, then `ok` /
//! `fail` / `info` from the same process). [`parse_history`] pairs them into
//! [`Operation`]s; [`check`] decides whether some total order of the
//! operations (a *linearization*) respects real time and the sequential
//! semantics of a key-value map.
//!
//! * **Per-key partitioning.** Linearizability is compositional and every
//!   operation touches one key, so each key is checked alone (as Porcupine
//!   does). Keys run in parallel on at most `available_parallelism` scoped
//!   threads pulling from a shared queue; the first violation sets a
//!   cancellation flag that running searches poll.
//! * **Search.** Wing–Gong/Lowe as in Porcupine's `checkSingle`: a
//!   time-sorted doubly-linked list of call/return entries, lift/unlift on
//!   linearize/backtrack, and a memo of (bitset of linearized ops, model
//!   state). States are interned to `u32`, the bitset hash is an
//!   incremental Zobrist hash, and memo entries store only the bitset words
//!   past the leading all-ones words, so memory per entry does not grow
//!   with the history's length. On top of that (see `search.rs` for the
//!   arguments): legal reads are linearized without branching, candidates
//!   are tried in order of interval midpoint, a configuration in which some
//!   pending read needs a value no remaining writes/appends can produce is
//!   abandoned at once (with backjumping), and `info` ops are restricted to
//!   positions where they can matter and pruned by dominance.
//! * **Versions.** Ops that carry the version the node returned (optional
//!   `version` field) are checked first, per key, against necessary
//!   conditions: versions only grow in real time and a read returns the
//!   version of the write it observes (`versions.rs`, [`Cause::Version`]).
//!   Ops without versions are checked by values only, as before.
//! * **Model.** A key holds `Option<String>`. `get` ok must read the
//!   current value; `put`/`delete`/`append` change it (`append` to an
//!   absent key appends to ""); `cas` ok requires current == expected; `cas`
//!   fail is a read observing current != expected; a `delete` ok that
//!   answered `deleted: false` requires the key absent (a cas from absent
//!   to absent; without the optional field, or with `true`, it is blind).
//!
//! # Invariants
//!
//! * `History::ops[i].id == i`, ops are in invoke order, a process has at
//!   most one open op (in file order and in time: its next invoke is not
//!   earlier than its previous completion), and a completion's time is >=
//!   its invoke's.
//! * An op that completed `ok` (and a `cas` that completed `fail`) must be
//!   linearized between its invoke and completion.
//! * An `info` op (or one never completed) may take effect at any instant
//!   after its invoke, or never: its return is +infinity and it is
//!   optional. The history is linearizable when every required op is
//!   linearized.
//! * A `fail` of any op but `cas` did not happen and is dropped; an `info`
//!   (or `fail`) `get` constrains nothing and is dropped.
//! * Equal timestamps count as overlapping (calls sort before returns), so
//!   ties never manufacture a violation. [`Recorder`] emits strictly
//!   increasing times, so a process's consecutive ops never tie.
//! * Every "linearizable" answer is checked a second time: the witness
//!   order the search found is replayed through the model, with real-time
//!   order and completeness checked, without any of the search's
//!   reductions (`replay.rs`). A witness that fails its replay makes the
//!   key unknown ("internal error"), never linearizable.
//! * No input makes the library panic; every search polls the cancellation
//!   flag, the deadline and the memory bound every 1024 steps, so
//!   [`check`] returns within a few milliseconds of `time_limit`.
//!
//! # Caveats
//!
//! * The search is exponential in the worst case (many concurrent ops on
//!   one key, many `info` writes, long append chains); the bounds turn that
//!   into [`Verdict::Unknown`]. Values longer than 256 bytes are not
//!   analysed by the reachability pruning, so append-heavy keys whose values
//!   grow long lose that pruning.
//! * The state is the full value, so a key whose value grows by appends
//!   costs memory per distinct value; the memory bound counts it.
//! * The memory bound is approximate (memo entries and interned values).
//! * Violations are explained by a second pass (`explain.rs`): a binary
//!   search for the first completion after which the history is not
//!   linearizable ([`Cause::FirstFailure`]); the prefix shown linearizes
//!   everything invoked before it. That pass gets about the search's own
//!   time (20 ms to 10 s, within the time limit), so explaining at most
//!   doubles the time of a failing key; when it runs out, the report falls
//!   back to the search's deepest dead end ([`Cause::Blocked`] /
//!   [`Cause::Unreachable`]), which can be an artifact of a wrong choice
//!   made earlier. A read refuted before the search by the reads-from
//!   argument ([`Cause::Overwritten`]) needs no binary search: the report
//!   names the overwriting write, and only the prefix (what completed
//!   before the read was invoked) is searched for, within the same cap.
//! * Reports show a window of operations around the violation, not the
//!   whole key, so reports stay readable for long histories.

#![warn(missing_docs)]

mod assemble;
mod budget;
mod check;
mod cli;
mod event;
mod explain;
mod hash;
mod history;
mod html;
mod memo;
mod model;
mod recorder;
mod replay;
mod report;
mod search;
mod versions;

pub use assemble::{parse_history, HistoryBuilder};
pub use check::{check, CheckOptions};
pub use cli::run_cli;
pub use event::{write_event, Event, EventType, OpFn, ParseError, ParseErrorKind};
pub use history::{Command, History, Operation, Outcome};
pub use recorder::Recorder;
pub use report::{Cause, KeyReport, KeyVerdict, Report, Verdict, Violation};
