//! The values kvorum's Raft log, its HTTP wire and its client share, defined once:
//! [`Versioned`], a value with its version (the record a data group stores), and [`Condition`],
//! the precondition of a conditional write.
//!
//! Both travel inside Raft log entries and command results (bincode), and [`Versioned`] in HTTP
//! bodies (JSON): their serde shapes are a persistent format and MUST NOT change. The tests here
//! pin them; raftstore's `command.rs` pins them inside whole commands too. `kvorum-wire`
//! re-exports both, next to the HTTP bodies that carry them; raftstore stores [`Versioned`] under
//! the name `Record`.
//!
//! The crate depends on serde only, so every side can use it: the node, the client library, and
//! the storage.

#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// A value with its version. Also the stored record of the data state machine (raftstore's
/// `Record`), inside [`Condition`] results in the Raft pipeline: its serde shape (`value`, then
/// `version`) MUST NOT change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// The value, UTF-8.
    pub value: String,
    /// The log index of the write that produced the value; strictly increases per key, never 0
    /// for a stored value.
    pub version: u64,
}

/// A precondition of a conditional write, checked against the key's current value at apply
/// time. It travels inside commands in the Raft log (bincode): its variants, their order and
/// their payloads are a persistent format and MUST NOT change; add a new variant instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    /// The key's version equals this (0: the key is absent).
    Version(u64),
    /// The key's value equals this (`None`: the key is absent).
    Value(Option<String>),
}

impl Condition {
    /// Whether the condition holds for `current` (`None`: the key is absent).
    pub fn holds(&self, current: Option<&Versioned>) -> bool {
        match self {
            Condition::Version(v) => current.map_or(0, |r| r.version) == *v,
            Condition::Value(expected) => current.map(|r| &r.value) == expected.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A condition holds against the current value (absent: version 0, value None).
    #[test]
    fn conditions_hold() {
        let cur = Versioned {
            value: "a".into(),
            version: 5,
        };
        assert!(Condition::Version(5).holds(Some(&cur)));
        assert!(!Condition::Version(0).holds(Some(&cur)));
        assert!(Condition::Version(0).holds(None));
        assert!(Condition::Value(Some("a".into())).holds(Some(&cur)));
        assert!(Condition::Value(None).holds(None));
        assert!(!Condition::Value(None).holds(Some(&cur)));
    }

    /// Bytes written as hex pairs, blanks ignored.
    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
            .collect()
    }

    // The encodings in the Raft log and the HTTP bodies: the same bytes raftstore's command
    // tests expect inside commands and results (bincode 1: u32 LE variant index, u8 option tag,
    // u64 LE string length), and the JSON the node answers with.
    #[test]
    fn encodings_are_unchanged() {
        let conditions = [
            (Condition::Version(7), "00000000 0700000000000000"),
            (
                Condition::Value(Some("x".into())),
                "01000000 01 0100000000000000 78",
            ),
            (Condition::Value(None), "01000000 00"),
        ];
        for (c, bytes) in conditions {
            let encoded = bincode::serialize(&c).expect("encodes");
            assert_eq!(encoded, hex(bytes), "{c:?}");
            let decoded: Condition = bincode::deserialize(&encoded).expect("decodes");
            assert_eq!(decoded, c);
        }
        let rec = Versioned {
            value: "v".into(),
            version: 3,
        };
        assert_eq!(
            bincode::serialize(&rec).expect("encodes"),
            hex("0100000000000000 76 0300000000000000")
        );
        assert_eq!(
            serde_json::to_string(&rec).expect("encodes"),
            r#"{"value":"v","version":3}"#
        );
    }
}
