//! The command set's unit tests: the key commands' effects, slot commands, and the pinned
//! encodings of the log's values.

use crate::command::*;

fn rec(value: &str, version: u64) -> Versioned {
    Versioned {
        value: value.into(),
        version,
    }
}

fn put(cond: Option<Condition>) -> Command {
    Command::Put {
        key: "k".into(),
        value: "new".into(),
        condition: cond,
    }
}

// A put stores the value at the entry's index as version.
#[test]
fn put_sets_version_to_log_index() {
    let (eff, res) = apply(&put(None), 9, Some(&rec("old", 3)));
    assert!(matches!(eff, Effect::Set(r) if r == rec("new", 9)));
    assert_eq!(res, WriteResult::Written { version: 9 });
}

// Conditional puts: by version (0 = absent) and by value (None = absent).
#[test]
fn conditions_are_checked_against_current_record() {
    let cur = rec("old", 3);
    let cases = [
        (Condition::Version(3), Some(&cur), true),
        (Condition::Version(4), Some(&cur), false),
        (Condition::Version(0), None, true),
        (Condition::Version(0), Some(&cur), false),
        (Condition::Value(Some("old".into())), Some(&cur), true),
        (Condition::Value(Some("other".into())), Some(&cur), false),
        (Condition::Value(None), None, true),
        (Condition::Value(None), Some(&cur), false),
        (Condition::Value(Some("old".into())), None, false),
    ];
    for (cond, current, ok) in cases {
        let (_, res) = apply(&put(Some(cond.clone())), 10, current);
        let written = matches!(res, WriteResult::Written { .. });
        assert_eq!(written, ok, "{cond:?} on {current:?}");
        if !ok {
            assert_eq!(
                res,
                WriteResult::ConditionFailed {
                    current: current.cloned()
                }
            );
        }
    }
}

// Append treats an absent key as empty.
#[test]
fn append_concatenates() {
    let cmd = Command::Append {
        key: "k".into(),
        suffix: "b".into(),
    };
    let (eff, _) = apply(&cmd, 5, None);
    assert!(matches!(eff, Effect::Set(r) if r == rec("b", 5)));
    let (eff, _) = apply(&cmd, 6, Some(&rec("a", 5)));
    assert!(matches!(eff, Effect::Set(r) if r == rec("ab", 6)));
}

// A bounded append is refused, writing nothing, when the result would exceed its own limit
// or the hard cap; at the limit exactly it is written.
#[test]
fn bounded_append_is_refused_past_its_limit() {
    let cmd = |max| Command::AppendBounded {
        key: "k".into(),
        suffix: "cd".into(),
        max_value_bytes: max,
    };
    let (eff, res) = apply(&cmd(4), 7, Some(&rec("ab", 5)));
    assert!(matches!(eff, Effect::Set(r) if r == rec("abcd", 7)));
    assert_eq!(res, WriteResult::Written { version: 7 });
    let (eff, res) = apply(&cmd(3), 7, Some(&rec("ab", 5)));
    assert!(matches!(eff, Effect::Unchanged));
    assert_eq!(res, WriteResult::ValueTooLarge { len: 4, limit: 3 });
    let big = rec(&"x".repeat(MAX_VALUE_BYTES - 1), 5);
    let (eff, res) = apply(&cmd(u64::MAX), 7, Some(&big));
    assert!(matches!(eff, Effect::Unchanged));
    let (len, limit) = ((MAX_VALUE_BYTES + 1) as u64, MAX_VALUE_BYTES as u64);
    assert_eq!(res, WriteResult::ValueTooLarge { len, limit });
}

// Puts past the hard cap and writes of keys past the key cap are refused; deletes are not.
#[test]
fn hard_caps_refuse_puts_and_huge_keys() {
    let (eff, res) = apply(
        &Command::Put {
            key: "k".into(),
            value: "x".repeat(MAX_VALUE_BYTES + 1),
            condition: None,
        },
        3,
        None,
    );
    assert!(matches!(eff, Effect::Unchanged));
    assert!(matches!(res, WriteResult::ValueTooLarge { .. }), "{res:?}");
    let huge = "k".repeat(MAX_KEY_BYTES + 1);
    let (eff, res) = apply(
        &Command::Append {
            key: huge.clone(),
            suffix: "v".into(),
        },
        3,
        None,
    );
    assert!(matches!(eff, Effect::Unchanged));
    assert!(matches!(res, WriteResult::KeyTooLarge { .. }), "{res:?}");
    let (_, res) = apply(
        &Command::Delete {
            key: huge,
            condition: None,
        },
        3,
        None,
    );
    assert_eq!(res, WriteResult::Deleted { existed: false });
}

// Deleting reports whether the key existed; a failed condition leaves it.
#[test]
fn delete_reports_existence() {
    let del = |c| Command::Delete {
        key: "k".into(),
        condition: c,
    };
    assert_eq!(
        apply(&del(None), 2, None).1,
        WriteResult::Deleted { existed: false }
    );
    let (eff, res) = apply(&del(None), 2, Some(&rec("a", 1)));
    assert!(matches!(eff, Effect::Remove));
    assert_eq!(res, WriteResult::Deleted { existed: true });
    let (eff, _) = apply(&del(Some(Condition::Version(7))), 2, Some(&rec("a", 1)));
    assert!(matches!(eff, Effect::Unchanged));
}

// The record encoding round-trips and rejects short input.
#[test]
fn record_encoding_round_trips() {
    let r = rec("héllo", 42);
    assert_eq!(Versioned::decode(&r.encode()), Some(r));
    assert_eq!(Versioned::decode(b"short"), None);
}

/// Bytes written as hex pairs, blanks ignored.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

// Commands are in the Raft log: their bincode encoding, conditions included, is a persistent
// format. The expected bytes were produced by the definitions before `Condition` moved to
// kvorum-wire (bincode 1: u32 LE variant index, u8 option tag, u64 LE string length).
#[test]
fn command_encoding_is_unchanged() {
    let put = |condition| Command::Put {
        key: "k".into(),
        value: "v".into(),
        condition,
    };
    // Put: variant 0, key "k", value "v", then the condition.
    let put_prefix = "00000000 0100000000000000 6b 0100000000000000 76";
    let cases = [
        (put(None), format!("{put_prefix} 00")),
        (
            put(Some(Condition::Version(7))),
            format!("{put_prefix} 01 00000000 0700000000000000"),
        ),
        (
            put(Some(Condition::Value(Some("x".into())))),
            format!("{put_prefix} 01 01000000 01 0100000000000000 78"),
        ),
        (
            put(Some(Condition::Value(None))),
            format!("{put_prefix} 01 01000000 00"),
        ),
        (
            Command::Delete {
                key: "k".into(),
                condition: Some(Condition::Version(0)),
            },
            "01000000 0100000000000000 6b 01 00000000 0000000000000000".to_string(),
        ),
    ];
    for (cmd, bytes) in cases {
        let encoded = bincode::serialize(&cmd).expect("encodes");
        assert_eq!(encoded, hex(&bytes), "{cmd:?}");
        let decoded: Command = bincode::deserialize(&encoded).expect("decodes");
        assert_eq!(decoded, cmd);
    }
}

// Entries written before the slot admin commands existed decode as they did: the append
// variants and the results keep their indices, and the new variants come after them.
#[test]
fn old_encodings_still_decode() {
    let cases = [
        (
            "02000000 0100000000000000 6b 0100000000000000 76",
            Command::Append {
                key: "k".into(),
                suffix: "v".into(),
            },
        ),
        (
            "03000000 0100000000000000 6b 0100000000000000 76 0500000000000000",
            Command::AppendBounded {
                key: "k".into(),
                suffix: "v".into(),
                max_value_bytes: 5,
            },
        ),
    ];
    for (bytes, cmd) in cases {
        let decoded: Command = bincode::deserialize(&hex(bytes)).expect("decodes");
        assert_eq!(decoded, cmd);
        assert_eq!(bincode::serialize(&cmd).expect("encodes"), hex(bytes));
    }
    let results = [
        ("00000000", CommandResult::None),
        (
            "01000000 0900000000000000",
            CommandResult::Write(WriteResult::Written { version: 9 }),
        ),
        (
            "02000000 01",
            CommandResult::Write(WriteResult::Deleted { existed: true }),
        ),
        (
            "04000000 0500000000000000 0400000000000000",
            CommandResult::Write(WriteResult::ValueTooLarge { len: 5, limit: 4 }),
        ),
        (
            "05000000 0500000000000000 0400000000000000",
            CommandResult::Write(WriteResult::KeyTooLarge { len: 5, limit: 4 }),
        ),
    ];
    for (bytes, res) in results {
        let decoded: CommandResult = bincode::deserialize(&hex(bytes)).expect("decodes");
        assert_eq!(decoded, res);
    }
    // The first new variants follow the old ones.
    let init = bincode::serialize(&Command::InitSlots { owned: vec![] }).expect("encodes");
    assert_eq!(init, hex("04000000 0000000000000000"));
    let frozen = bincode::serialize(&CommandResult::Write(WriteResult::Frozen { slot: 1 }))
        .expect("encodes");
    assert_eq!(frozen, hex("06000000 0100"));
    assert_eq!(
        serde_json::to_string(&crate::SlotState::Incoming).expect("encodes"),
        r#""incoming""#
    );
}

// The routed form and ActivateAt come after every older variant, and Misrouted after every
// older result: entries and results written before them decode as they did.
#[test]
fn routed_commands_are_appended_variants() {
    let routed = Command::Put {
        key: "k".into(),
        value: "v".into(),
        condition: None,
    }
    .routed(1, 2);
    assert_eq!(
        bincode::serialize(&routed).expect("encodes"),
        hex("0f000000 0100 0200000000000000 \
             00000000 0100000000000000 6b 0100000000000000 76 00")
    );
    assert_eq!(routed.written_key(), Some("k"));
    let activate = Command::ActivateAt {
        slots: vec![(3, 4)],
        epoch: 5,
    };
    assert_eq!(
        bincode::serialize(&activate).expect("encodes"),
        hex("10000000 0100000000000000 0300 0400 0500000000000000")
    );
    let misrouted = CommandResult::Write(WriteResult::Misrouted {
        slot: 1,
        key_slot: None,
    });
    assert_eq!(
        bincode::serialize(&misrouted).expect("encodes"),
        hex("0b000000 0100 00")
    );
}

// A record (in a `ConditionFailed` result) keeps its serde shape: value then version.
#[test]
fn record_serde_shape_is_unchanged() {
    let res = CommandResult::Write(WriteResult::ConditionFailed {
        current: Some(rec("v", 3)),
    });
    assert_eq!(
        bincode::serialize(&res).expect("encodes"),
        hex("03000000 01 0100000000000000 76 0300000000000000")
    );
    assert_eq!(
        serde_json::to_string(&rec("v", 3)).expect("encodes"),
        r#"{"value":"v","version":3}"#
    );
}

// A result is encoded as the flat enum it was before its outcomes were split into `WriteResult`
// and `AdminResult` (see `result_encoding`): every outcome keeps its variant index and its JSON
// shape, and decodes back to itself.
#[test]
fn results_keep_their_flat_encoding() {
    use crate::{AdminResult, FenceToken, SlotState};
    let write = |w| CommandResult::Write(w);
    let admin = |a| CommandResult::Admin(a);
    let cases: Vec<(u32, CommandResult, &str)> = vec![
        (0, CommandResult::None, r#""None""#),
        (
            1,
            write(WriteResult::Written { version: 9 }),
            r#"{"Written":{"version":9}}"#,
        ),
        (
            2,
            write(WriteResult::Deleted { existed: true }),
            r#"{"Deleted":{"existed":true}}"#,
        ),
        (
            3,
            write(WriteResult::ConditionFailed {
                current: Some(rec("v", 3)),
            }),
            r#"{"ConditionFailed":{"current":{"value":"v","version":3}}}"#,
        ),
        (
            4,
            write(WriteResult::ValueTooLarge { len: 5, limit: 4 }),
            r#"{"ValueTooLarge":{"len":5,"limit":4}}"#,
        ),
        (
            5,
            write(WriteResult::KeyTooLarge { len: 5, limit: 4 }),
            r#"{"KeyTooLarge":{"len":5,"limit":4}}"#,
        ),
        (
            6,
            write(WriteResult::Frozen { slot: 1 }),
            r#"{"Frozen":{"slot":1}}"#,
        ),
        (
            7,
            write(WriteResult::NotOwner { slot: 1 }),
            r#"{"NotOwner":{"slot":1}}"#,
        ),
        (
            8,
            admin(AdminResult::SlotState {
                slot: 2,
                state: SlotState::Frozen,
            }),
            r#"{"SlotState":{"slot":2,"state":"frozen"}}"#,
        ),
        (
            9,
            admin(AdminResult::Ingested {
                written: 3,
                skipped: 1,
            }),
            r#"{"Ingested":{"written":3,"skipped":1}}"#,
        ),
        (
            10,
            admin(AdminResult::BadSlotRange { from: 5, to: 4 }),
            r#"{"BadSlotRange":{"from":5,"to":4}}"#,
        ),
        (
            11,
            write(WriteResult::Misrouted {
                slot: 1,
                key_slot: Some(2),
            }),
            r#"{"Misrouted":{"slot":1,"key_slot":2}}"#,
        ),
        (
            12,
            admin(AdminResult::Fenced {
                current: FenceToken { term: 4, task: 7 },
            }),
            r#"{"Fenced":{"current":{"term":4,"task":7}}}"#,
        ),
        (
            13,
            admin(AdminResult::Hashed { index: 8, hash: 6 }),
            r#"{"Hashed":{"index":8,"hash":6}}"#,
        ),
    ];
    for (index, res, json) in cases {
        let bytes = bincode::serialize(&res).expect("encodes");
        assert_eq!(bytes[..4], index.to_le_bytes(), "{res:?}");
        let decoded: CommandResult = bincode::deserialize(&bytes).expect("decodes");
        assert_eq!(decoded, res);
        assert_eq!(serde_json::to_string(&res).expect("encodes"), json);
        let decoded: CommandResult = serde_json::from_str(json).expect("decodes");
        assert_eq!(decoded, res);
    }
}
