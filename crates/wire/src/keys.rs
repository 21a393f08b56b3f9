//! The key API, `/v1/keys/{key}` and `/v1/append/{key}`: request bodies and queries, replies,
//! and the two values both ends (and the Raft log) share: [`Versioned`] and [`Condition`],
//! defined in kvorum-record and re-exported here.
//!
//! Replies are serialized by the node and deserialized by the client. Their fields are declared
//! in alphabetical order, the order the node wrote them in before these types existed, so the
//! bytes on the wire did not change. The client does not need a reply's `key`, so an absent one
//! reads as empty.

use serde::{Deserialize, Serialize};

pub use kvorum_record::{Condition, Versioned};

/// The `expected_version` / `expected_value` pair that expresses `condition` over HTTP.
/// "Absent" by value is sent as version 0, which means the same.
fn to_expected(condition: &Condition) -> (Option<u64>, Option<String>) {
    match condition {
        Condition::Version(v) => (Some(*v), None),
        Condition::Value(Some(v)) => (None, Some(v.clone())),
        Condition::Value(None) => (Some(0), None),
    }
}

/// The condition an `expected_version` / `expected_value` pair asks for, if any.
fn from_expected(
    expected_version: Option<u64>,
    expected_value: Option<String>,
) -> Result<Option<Condition>, ConditionConflict> {
    match (expected_version, expected_value) {
        (Some(_), Some(_)) => Err(ConditionConflict),
        (Some(v), None) => Ok(Some(Condition::Version(v))),
        (None, Some(v)) => Ok(Some(Condition::Value(Some(v)))),
        (None, None) => Ok(None),
    }
}

/// A request gave both `expected_version` and `expected_value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("give at most one of expected_version and expected_value")]
pub struct ConditionConflict;

/// Query of `GET /v1/keys/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// Serve from one replica's local state without read index (may be stale).
    #[serde(default)]
    pub stale: bool,
}

/// Body of `PUT /v1/keys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// The new value.
    pub value: String,
    /// Write only if the key's version equals this (0: only if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// Write only if the key's value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_value: Option<String>,
}

impl PutBody {
    /// The body setting `value` if `condition` holds.
    pub fn new(value: &str, condition: Option<&Condition>) -> PutBody {
        let (expected_version, expected_value) = condition.map(to_expected).unwrap_or_default();
        PutBody {
            value: value.to_string(),
            expected_version,
            expected_value,
        }
    }

    /// The condition this body asks for.
    pub fn condition(&self) -> Result<Option<Condition>, ConditionConflict> {
        from_expected(self.expected_version, self.expected_value.clone())
    }
}

/// Query of `DELETE /v1/keys/{key}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete only if the key's version equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
    /// Delete only if the key's value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_value: Option<String>,
}

impl DeleteQuery {
    /// The query deleting if `condition` holds.
    pub fn new(condition: Option<&Condition>) -> DeleteQuery {
        let (expected_version, expected_value) = condition.map(to_expected).unwrap_or_default();
        DeleteQuery {
            expected_version,
            expected_value,
        }
    }

    /// The condition this query asks for.
    pub fn condition(&self) -> Result<Option<Condition>, ConditionConflict> {
        from_expected(self.expected_version, self.expected_value.clone())
    }
}

/// Body of `POST /v1/append/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendBody {
    /// The bytes added at the end of the key's value.
    pub value: String,
}

/// Reply of `GET /v1/keys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReply {
    /// The key read.
    #[serde(default)]
    pub key: String,
    /// Its value.
    pub value: String,
    /// Its version.
    pub version: u64,
}

impl KeyReply {
    /// The value with its version.
    pub fn into_versioned(self) -> Versioned {
        Versioned {
            value: self.value,
            version: self.version,
        }
    }
}

/// Reply of `PUT /v1/keys/{key}` and `POST /v1/append/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteReply {
    /// The key written.
    #[serde(default)]
    pub key: String,
    /// Its new version.
    pub version: u64,
}

/// Reply of `DELETE /v1/keys/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteReply {
    /// Whether the key existed before.
    pub deleted: bool,
    /// The key deleted.
    #[serde(default)]
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Replies keep the JSON the node wrote with `json!` (sorted keys) before they were typed.
    #[test]
    fn replies_keep_their_json() {
        let get = KeyReply {
            key: "k".into(),
            value: "v".into(),
            version: 3,
        };
        let put = WriteReply {
            key: "k".into(),
            version: 4,
        };
        let del = DeleteReply {
            deleted: true,
            key: "k".into(),
        };
        assert_eq!(
            text(&get),
            json!({ "key": "k", "value": "v", "version": 3 }).to_string()
        );
        assert_eq!(text(&put), json!({ "key": "k", "version": 4 }).to_string());
        assert_eq!(
            text(&del),
            json!({ "key": "k", "deleted": true }).to_string()
        );
        let rec = Versioned {
            value: "v".into(),
            version: 3,
        };
        assert_eq!(
            text(&rec),
            json!({ "value": "v", "version": 3 }).to_string()
        );
    }

    /// The JSON text of `v`.
    fn text<T: Serialize>(v: &T) -> String {
        serde_json::to_string(v).expect("serializes")
    }

    // The client's bodies are what the node reads back, and absent-by-value goes as version 0.
    #[test]
    fn conditions_round_trip_through_bodies() {
        for c in [
            None,
            Some(Condition::Version(0)),
            Some(Condition::Version(7)),
            Some(Condition::Value(Some("x".into()))),
        ] {
            let body = PutBody::new("v", c.as_ref());
            let text = serde_json::to_string(&body).expect("serializes");
            let back: PutBody = serde_json::from_str(&text).expect("parses");
            assert_eq!(back.condition(), Ok(c.clone()), "{text}");
            assert_eq!(DeleteQuery::new(c.as_ref()).condition(), Ok(c));
        }
        assert_eq!(
            serde_json::to_string(&PutBody::new("v", None)).expect("serializes"),
            r#"{"value":"v"}"#
        );
        assert_eq!(
            PutBody::new("v", Some(&Condition::Value(None))).condition(),
            Ok(Some(Condition::Version(0)))
        );
        let both: Result<PutBody, _> =
            serde_json::from_str(r#"{"value":"v","expected_version":1,"expected_value":"a"}"#);
        assert_eq!(both.expect("parses").condition(), Err(ConditionConflict));
        assert!(serde_json::from_str::<PutBody>(r#"{"value":"v","x":1}"#).is_err());
    }
}
