//! The body of every error answer of the client API: `{"code", "message", ...}` plus the fields
//! some codes add. The codes and their meaning are documented in README.md.

use kvorum_router::{GroupId, NodeId, Slot};
use serde::{Deserialize, Deserializer, Serialize};

use crate::keys::Versioned;

/// An error answer. Fields are declared in alphabetical order, the order the node wrote them in
/// before this type existed, so the bytes on the wire did not change. A field that is `None` is
/// left out; `current` and `leader` can also be present as `null` (`Some(None)`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable machine-readable code (`not_owner`, `condition_failed`, ...).
    pub code: String,
    /// `condition_failed`: what the key held (`null`: absent).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub current: Option<Option<Versioned>>,
    /// `not_owner`: the epoch of the answering node's map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// `not_owner`: the group that owns the slot in that map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<GroupId>,
    /// `not_leader`: the leader the node knows of (`null`: none).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub leader: Option<Option<NodeId>>,
    /// A sentence for people saying what happened and what to do.
    pub message: String,
    /// `not_owner`: the slot of the request's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<Slot>,
    /// `change_in_progress`: the id of the view-change task that is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<u64>,
}

impl ErrorBody {
    /// An answer with just a code and a message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.into(),
            message: message.into(),
            ..ErrorBody::default()
        }
    }
}

/// A field that is present, possibly `null`: `Some(None)` for `null` (an absent field takes the
/// `default`, `None`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Each shape the node answers keeps the JSON it had when built with `json!` (sorted keys),
    // and reads back to the same body.
    #[test]
    fn error_bodies_keep_their_json() {
        let cases = [
            (
                ErrorBody::new("bad_request", "m"),
                json!({"code": "bad_request", "message": "m"}),
            ),
            (
                ErrorBody {
                    current: Some(Some(Versioned {
                        value: "v".into(),
                        version: 2,
                    })),
                    ..ErrorBody::new("condition_failed", "m")
                },
                json!({"code": "condition_failed", "message": "m",
                       "current": {"value": "v", "version": 2}}),
            ),
            (
                ErrorBody {
                    current: Some(None),
                    ..ErrorBody::new("condition_failed", "m")
                },
                json!({"code": "condition_failed", "message": "m", "current": null}),
            ),
            (
                ErrorBody {
                    leader: Some(None),
                    ..ErrorBody::new("not_leader", "m")
                },
                json!({"code": "not_leader", "message": "m", "leader": null}),
            ),
            (
                ErrorBody {
                    leader: Some(Some(3)),
                    ..ErrorBody::new("not_leader", "m")
                },
                json!({"code": "not_leader", "message": "m", "leader": 3}),
            ),
            (
                ErrorBody {
                    slot: Some(Slot(7)),
                    group: Some(GroupId(2)),
                    epoch: Some(5),
                    ..ErrorBody::new("not_owner", "m")
                },
                json!({"code": "not_owner", "message": "m", "slot": 7, "group": 2, "epoch": 5}),
            ),
        ];
        for (body, expected) in cases {
            let text = serde_json::to_string(&body).expect("serializes");
            assert_eq!(text, expected.to_string());
            let back: ErrorBody = serde_json::from_str(&text).expect("parses");
            assert_eq!(back, body, "{text}");
        }
    }
}
