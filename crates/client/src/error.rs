//! The client's errors: [`ClientError`], the node codes that mean nothing was written
//! ([`DEFINITE_CODES`]), and how an HTTP answer maps to them.

use kvorum_wire::{ErrorBody, Versioned};
use reqwest::StatusCode;

/// Errors of the client. Each says what the caller can do.
#[derive(Debug, thiserror::Error)]
// The variant docs name and describe each field.
#[allow(missing_docs)]
pub enum ClientError {
    /// The key does not exist.
    #[error("key not found")]
    NotFound,
    /// A condition did not hold; nothing was written.
    #[error("condition failed; the key {}", describe(current))]
    ConditionFailed { current: Option<Versioned> },
    /// The write may or may not have happened. Read the key before retrying.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// No node could serve the request before the deadline. Nothing was written.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The node refused the request (bad input, limits, a view change it cannot make, internal
    /// error), or the client did before sending it (`status` 0). `code` is the error body's
    /// stable code.
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// A view change was refused because another one, task `task`, is running (409
    /// `change_in_progress`). Nothing was started: follow that task, and retry once it ends.
    #[error("change_in_progress: {message}")]
    ChangeInProgress { task: u64, message: String },
}

fn describe(current: &Option<Versioned>) -> String {
    match current {
        Some(v) => format!("holds {:?} at version {}", v.value, v.version),
        None => "does not exist".into(),
    }
}

/// The error codes a node answers only when nothing was written: the request was refused before
/// it was proposed (validation, routing, no leader, the serving replica unreachable) or refused
/// at apply (a failed condition, an append past the limit), or it changed nothing (a read's
/// `key_not_found`, a view change refused by the planner). An error is definite only if its code
/// is listed here (see [`ClientError::is_definite`]); any other code (`internal`, one this client
/// does not know) and any reply it cannot parse leave a write's outcome unknown.
pub const DEFINITE_CODES: &[&str] = &[
    // Validation, before anything is proposed.
    "bad_request",
    "empty_key",
    "key_too_large",
    "value_too_large",
    "body_too_large",
    "unsupported_media_type",
    "no_route",
    "method_not_allowed",
    // Routing and availability, before proposing.
    "not_owner",
    "not_leader",
    "slot_moving",
    "no_leader",
    "unavailable",
    "joining",
    "metadata_leader_changing",
    "too_many_connections",
    // Refused at apply, or nothing to do.
    "condition_failed",
    "key_not_found",
    // Refused by the guard of internal routes.
    "unauthorized",
    "wrong_cluster",
    "protected_mode",
    "node_removed",
    "node_replaced",
    // View changes refused: nothing started.
    "change_in_progress",
    "unknown_task",
    "unreachable",
    "address_in_use",
    "below_quorum",
    "dead_node",
    "empty_address",
    "invalid_map",
    "invalid_target",
    "task_in_progress",
    "too_few_nodes",
    "unknown_node",
];

/// The 503 codes that are definite and worth retrying (at another node or after a pause).
const RETRYABLE_503_CODES: &[&str] = &[
    "no_leader",
    "unavailable",
    "joining",
    "metadata_leader_changing",
    "too_many_connections",
];

impl ClientError {
    /// Whether the operation definitely did not take effect: only for the errors whose meaning
    /// is "nothing was written" — a failed condition, a missing key, the client's own
    /// `Unavailable` (it gives up only after definite refusals or unsent requests), a running
    /// view change, a refusal the client made before sending (`status` 0), or a node's answer
    /// whose code is in [`DEFINITE_CODES`]. Everything else — `outcome_unknown`, `internal`,
    /// an unknown code, a reply that could not be parsed — is not definite.
    pub fn is_definite(&self) -> bool {
        match self {
            ClientError::NotFound
            | ClientError::ConditionFailed { .. }
            | ClientError::Unavailable(_)
            | ClientError::ChangeInProgress { .. } => true,
            ClientError::OutcomeUnknown(_) => false,
            ClientError::Api { status: 0, .. } => true,
            ClientError::Api { code, .. } => DEFINITE_CODES.contains(&code.as_str()),
        }
    }
}

/// What to do with an HTTP answer.
#[derive(Debug)]
pub(crate) enum Reply {
    Done(Result<serde_json::Value, ClientError>),
    /// A definite, retryable failure (503).
    Retry(String),
    /// 503 `slot_moving`: the slot is frozen by a move; nothing was done.
    SlotMoving(String),
    /// 421 `not_owner`, with the epoch of the answering node's map if it said.
    NotOwner {
        epoch: Option<u64>,
        message: String,
    },
}

pub(crate) fn interpret(status: StatusCode, bytes: &[u8]) -> Reply {
    if status.is_success() {
        return Reply::Done(serde_json::from_slice(bytes).map_err(bad_reply));
    }
    if status == StatusCode::MISDIRECTED_REQUEST {
        // Raised before proposing, so definite even without a readable body.
        let body = serde_json::from_slice::<ErrorBody>(bytes).ok();
        return Reply::NotOwner {
            epoch: body.as_ref().and_then(|b| b.epoch),
            message: body.map_or_else(|| "not the owner of the slot".to_string(), |b| b.message),
        };
    }
    let Ok(err) = serde_json::from_slice::<ErrorBody>(bytes) else {
        return Reply::Done(Err(ClientError::Api {
            status: status.as_u16(),
            code: "unexpected_reply".into(),
            message: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        }));
    };
    if let (StatusCode::CONFLICT, "change_in_progress", Some(task)) =
        (status, err.code.as_str(), err.task)
    {
        return Reply::Done(Err(ClientError::ChangeInProgress {
            task,
            message: err.message,
        }));
    }
    Reply::Done(Err(match (status, err.code.as_str()) {
        (StatusCode::NOT_FOUND, "key_not_found") => ClientError::NotFound,
        // Other 409s (`change_in_progress`) are refusals.
        (StatusCode::CONFLICT, "condition_failed") => ClientError::ConditionFailed {
            current: err.current.flatten(),
        },
        (_, "outcome_unknown") => ClientError::OutcomeUnknown(err.message),
        (StatusCode::SERVICE_UNAVAILABLE, "slot_moving") => return Reply::SlotMoving(err.message),
        (StatusCode::SERVICE_UNAVAILABLE, code) if RETRYABLE_503_CODES.contains(&code) => {
            return Reply::Retry(err.message)
        }
        _ => ClientError::Api {
            status: status.as_u16(),
            code: err.code,
            message: err.message,
        },
    }))
}

pub(crate) fn bad_reply(e: impl std::fmt::Display) -> ClientError {
    ClientError::Api {
        status: 200,
        code: "unexpected_reply".into(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A 421 is a definite not_owner answer carrying the node's epoch; without a readable body
    // it is still definite.
    #[test]
    fn misdirected_request_is_not_owner() {
        let body = br#"{"code":"not_owner","message":"slot 7 is owned by group 2","slot":7,"group":2,"epoch":5}"#;
        match interpret(StatusCode::MISDIRECTED_REQUEST, body) {
            Reply::NotOwner { epoch, message } => {
                assert_eq!(epoch, Some(5));
                assert_eq!(message, "slot 7 is owned by group 2");
            }
            other => panic!("expected NotOwner, got {other:?}"),
        }
        assert!(matches!(
            interpret(StatusCode::MISDIRECTED_REQUEST, b"<html>"),
            Reply::NotOwner { epoch: None, .. }
        ));
    }

    // The other answers keep their meaning: 503 retries, 404/409 are final, outcome_unknown is
    // never definite, and a success is the JSON body.
    #[test]
    fn answers_map_to_client_errors() {
        let err = |code: &str| format!(r#"{{"code":"{code}","message":"m"}}"#).into_bytes();
        assert!(matches!(
            interpret(StatusCode::SERVICE_UNAVAILABLE, &err("no_leader")),
            Reply::Retry(_)
        ));
        assert!(matches!(
            interpret(StatusCode::NOT_FOUND, &err("key_not_found")),
            Reply::Done(Err(ClientError::NotFound))
        ));
        assert!(matches!(
            interpret(StatusCode::CONFLICT, &err("condition_failed")),
            Reply::Done(Err(ClientError::ConditionFailed { current: None }))
        ));
        match interpret(StatusCode::GATEWAY_TIMEOUT, &err("outcome_unknown")) {
            Reply::Done(Err(e)) => assert!(!e.is_definite()),
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
        assert!(matches!(
            interpret(StatusCode::OK, br#"{"version":3}"#),
            Reply::Done(Ok(v)) if v["version"] == 3
        ));
        assert!(matches!(
            interpret(StatusCode::BAD_GATEWAY, b"oops"),
            Reply::Done(Err(ClientError::Api { status: 502, .. }))
        ));
    }

    // A frozen slot (503 slot_moving) is told apart from other 503s, and a 409 other than
    // condition_failed (a view change already running) is a refusal carrying the task's id.
    #[test]
    fn slot_moving_and_change_in_progress_have_their_own_meaning() {
        let body = br#"{"code":"slot_moving","message":"slot 7 is being moved; retry"}"#;
        assert!(matches!(
            interpret(StatusCode::SERVICE_UNAVAILABLE, body),
            Reply::SlotMoving(m) if m == "slot 7 is being moved; retry"
        ));
        let body = br#"{"code":"change_in_progress","message":"task 3 is running","task":3}"#;
        match interpret(StatusCode::CONFLICT, body) {
            Reply::Done(Err(e @ ClientError::ChangeInProgress { task: 3, .. })) => {
                assert_eq!(e.to_string(), "change_in_progress: task 3 is running");
            }
            other => panic!("expected a change_in_progress refusal, got {other:?}"),
        }
        // Without the task's id it is still a refusal, with its code.
        let body = br#"{"code":"change_in_progress","message":"busy"}"#;
        assert!(matches!(
            interpret(StatusCode::CONFLICT, body),
            Reply::Done(Err(ClientError::Api { status: 409, .. }))
        ));
    }
}
