//! The key routes (`/v1/keys/{key}`): extracting and checking a request, and the answer to a
//! write.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::Response;
use kvorum_raftstore::{Command, Condition};
use kvorum_wire::{AppendBody, ConditionConflict, DeleteQuery, GetQuery, PutBody};

use crate::error::ApiError;
use crate::node::Node;

use crate::serve::read::read_once;
use crate::serve::write::{through_moves, write};
use crate::serve::Incoming;

/// Largest body a client request may have: JSON escaping can make a string up to six times
/// longer than its bytes.
pub(crate) fn body_limit(state: &Node) -> usize {
    6 * (state.cfg.max_value_bytes + state.cfg.max_key_bytes) + 64 * 1024
}

#[axum::async_trait]
impl<S> FromRequest<S> for Incoming
where
    Arc<Node>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let max = body_limit(&Arc::<Node>::from_ref(state));
        let announced = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max as u64) {
            // Refused from the headers: the body is never read.
            return Err(ApiError::BodyTooLarge { max });
        }
        let method = req.method().clone();
        let uri = req.uri().clone();
        let headers = req.headers().clone();
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge { max },
                _ => ApiError::BadRequest(format!("cannot read the request body: {e}")),
            })?;
        Ok(Incoming {
            method,
            uri,
            headers,
            body,
        })
    }
}

/// Checks a key from the path against the limits.
pub(crate) fn check_key(
    state: &Node,
    key: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    let Path(key) = key.map_err(|e| ApiError::BadRequest(format!("bad key in path: {e}")))?;
    let max = state.cfg.max_key_bytes;
    if key.is_empty() {
        return Err(ApiError::EmptyKey { max });
    }
    if key.len() > max {
        return Err(ApiError::KeyTooLarge {
            len: key.len(),
            max,
        });
    }
    Ok(key)
}

pub(crate) fn check_value(state: &Node, value: &str) -> Result<(), ApiError> {
    let max = state.cfg.max_value_bytes;
    if value.len() > max {
        return Err(ApiError::ValueTooLarge {
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// The condition a request asks for, refusing one that gives both kinds.
pub(crate) fn condition(
    asked: Result<Option<Condition>, ConditionConflict>,
) -> Result<Option<Condition>, ApiError> {
    asked.map_err(|e| ApiError::BadRequest(e.to_string()))
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(format!("bad query string: {}", e.body_text())))
}

pub(crate) async fn get_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    q: Result<Query<GetQuery>, QueryRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let q = query(q)?;
    through_moves(&state, || read_once(&state, &inc, &key, &q)).await
}

pub(crate) async fn put_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let body: PutBody = inc.json()?;
    check_value(&state, &body.value)?;
    let cmd = Command::Put {
        key,
        condition: condition(body.condition())?,
        value: body.value,
    };
    write(&state, &inc, cmd).await
}

pub(crate) async fn delete_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let q = query(q)?;
    if let Some(v) = &q.expected_value {
        check_value(&state, v)?;
    }
    let cmd = Command::Delete {
        key,
        condition: condition(q.condition())?,
    };
    write(&state, &inc, cmd).await
}

pub(crate) async fn append_key(
    State(state): State<Arc<Node>>,
    key: Result<Path<String>, PathRejection>,
    inc: Incoming,
) -> Result<Response, ApiError> {
    let key = check_key(&state, key)?;
    let body: AppendBody = inc.json()?;
    check_value(&state, &body.value)?;
    // The limit travels in the command: every replica refuses, at apply, an append that would
    // grow the value past it.
    let cmd = Command::AppendBounded {
        key,
        suffix: body.value,
        max_value_bytes: state.cfg.max_value_bytes as u64,
    };
    write(&state, &inc, cmd).await
}
