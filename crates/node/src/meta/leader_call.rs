//! One internal request to a group's leader, for the metadata leader's slot and membership
//! calls, delivered by the leader courier ([`crate::courier`]): the members' addresses in order,
//! a `not_leader` answer's hint next; an answer whose code the caller names as final ends the
//! call; anything else (not delivered, another error) moves on to the next address.

use std::time::Duration;

use bytes::Bytes;
use kvorum_raftstore::GroupId;
use kvorum_wire::ErrorBody;

use crate::courier::{self, Attempt};

use super::state::Meta;

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
    meta: &Meta,
    addrs: Vec<String>,
    call: LeaderCall<'_>,
) -> Result<Answer, String> {
    let map = meta.node.map();
    if addrs.is_empty() {
        return Err(format!(
            "group {} has no member in epoch {}",
            call.group, map.epoch
        ));
    }
    let (map, call) = (&map, &call);
    courier::deliver(addrs, |addr: String| async move {
        let req = meta
            .node
            .internal_request(reqwest::Method::POST, &addr, &call.path)
            .timeout(call.timeout)
            .header(reqwest::header::CONTENT_TYPE, call.content_type)
            .body(call.body.clone());
        let (status, bytes) = match courier::exchange(req, &addr).await {
            Ok(answer) => answer,
            Err(why) => return Attempt::Next(why),
        };
        if status.is_success() {
            return Attempt::Done(Answer::Ok(bytes));
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
        if err.code == "not_leader" {
            Attempt::NotLeader {
                hint: err
                    .leader
                    .flatten()
                    .and_then(|l| map.addr(l))
                    .map(str::to_string),
                why: format!("{addr}: not the leader"),
            }
        } else if call.final_codes.contains(&err.code.as_str()) {
            Attempt::Done(Answer::Refused(err))
        } else {
            Attempt::Next(format!("{addr}: {status} {}", err.message))
        }
    })
    .await
    .map_err(courier::Undelivered::reason)
}
