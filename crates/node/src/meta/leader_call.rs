//! One internal request to a group's leader, for the metadata server's slot and membership
//! calls: the addresses are tried in order (at most [`MAX_TRIES`] distinct ones), a `not_leader`
//! answer's hint is tried next, and an answer whose code the caller names as final ends the
//! call; anything else (not delivered, another error) moves on to the next address.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::body::Bytes;
use kvorum_raftstore::GroupId;
use kvorum_wire::ErrorBody;

use crate::node::Node;

/// Most distinct addresses one call tries.
const MAX_TRIES: usize = 6;

/// What a group's leader answered.
pub(super) enum Answer {
    /// A success status, with the body.
    Ok(Bytes),
    /// An error whose code the caller named final.
    Refused(ErrorBody),
}

/// How to send the request: route, body and its type, and how long one try may take.
pub(super) struct LeaderCall<'a> {
    pub group: GroupId,
    /// The path under the member's address.
    pub path: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub timeout: Duration,
    /// Error codes that end the call (returned as [`Answer::Refused`]).
    pub final_codes: &'a [&'a str],
}

/// Sends `call` to the first of `addrs` that answers it as the group's leader (see the module
/// docs). `Err` carries the last failure, for the caller's message.
pub(super) async fn call_leader(
    state: &Node,
    mut addrs: Vec<String>,
    call: LeaderCall<'_>,
) -> Result<Answer, String> {
    let map = state.map();
    let mut tried = BTreeSet::new();
    let mut last = format!("group {} has no member in epoch {}", call.group, map.epoch);
    while let Some(addr) = addrs.first().cloned() {
        addrs.remove(0);
        if !tried.insert(addr.clone()) || tried.len() > MAX_TRIES {
            continue;
        }
        let resp = state
            .internal_request(reqwest::Method::POST, &addr, &call.path)
            .timeout(call.timeout)
            .header(reqwest::header::CONTENT_TYPE, call.content_type)
            .body(call.body.clone())
            .send()
            .await;
        let r = match resp {
            Ok(r) => r,
            Err(e) => {
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let status = r.status();
        let bytes = r.bytes().await.unwrap_or_default();
        if status.is_success() {
            return Ok(Answer::Ok(bytes));
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        if err.code == "not_leader" {
            if let Some(a) = err.leader.flatten().and_then(|l| map.addr(l)) {
                addrs.insert(0, a.to_string());
            }
            last = format!("{addr}: not the leader");
        } else if call.final_codes.contains(&err.code.as_str()) {
            return Ok(Answer::Refused(err));
        } else {
            last = format!("{addr}: {status} {}", err.message);
        }
    }
    Err(last)
}
