//! Tests of view changes and slot moves from the client's side, against the fake nodes of
//! `client_tests.rs`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_router::{ClusterMap, GroupId, NodeLifecycle, ViewChange};
use kvorum_wire::{AddNodeBody, TaskProgress, TaskState};
use serde_json::json;

use crate::client_tests::{
    answer, client, key_requests, map_reply, two_groups, FakeNode, Handler, Seen,
};
use crate::{Client, ClientError, ClientOptions};

/// Task 3 adding `127.0.0.7:7070` at `step` of 3, moving 100 slots per step.
fn progress(step: u64, state: TaskState) -> TaskProgress {
    TaskProgress {
        bytes_moved: step * 1000,
        change: ViewChange::AddNode {
            addr: "127.0.0.7:7070".into(),
        },
        epoch: 40 + step,
        error: None,
        finished_ms: state.is_final().then_some(5000),
        id: 3,
        keys_moved: step * 10,
        node: Some(7),
        slots_moved: step * 100,
        slots_total: 300,
        started_ms: 1000,
        state,
        step,
        step_name: format!("step {step}"),
        steps: 3,
    }
}

fn reply(status: u16, p: &TaskProgress) -> Option<(u16, String)> {
    answer(status, serde_json::to_value(p).expect("serializes"))
}

/// A client whose patience (and request timeout) is `ms` milliseconds.
fn impatient(endpoints: &[&str], ms: u64) -> Client {
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(ms),
        retry_for: Duration::ZERO,
        local_address: None,
    };
    Client::new(endpoints.iter().map(|e| e.to_string()).collect(), opts).expect("client")
}

/// A handler answering the polls of task 3 with steps 1, 2, 3 (done), then done again.
fn polls() -> impl Fn() -> Option<(u16, String)> + Send + Sync {
    let step = AtomicU64::new(0);
    move || {
        let s = (step.fetch_add(1, Ordering::SeqCst) + 1).min(3);
        let state = if s == 3 {
            TaskState::Done
        } else {
            TaskState::Running
        };
        reply(200, &progress(s, state))
    }
}

// Adding a node posts its address and returns the task at once; waiting polls the task until it
// is final and hands every answer to the callback in order.
#[tokio::test]
async fn add_node_returns_the_task_and_wait_reports_progress_in_order() {
    let mut a = FakeNode::bind().await;
    let poll = polls();
    a.serve(Arc::new(move |r: &Seen| {
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/v1/cluster/nodes") => {
                let body: AddNodeBody = serde_json::from_str(&r.body).ok()?;
                assert_eq!(body.addr, "127.0.0.7:7070");
                reply(202, &progress(0, TaskState::Running))
            }
            ("GET", "/v1/cluster/tasks/3") => poll(),
            _ => answer(404, json!({"code": "no_route", "message": r.path})),
        }
    }));
    let c = client(&[&a.addr]);
    let started = c.add_node("127.0.0.7:7070").await.expect("started");
    assert_eq!(started, progress(0, TaskState::Running));
    let mut seen = Vec::new();
    let last = c
        .wait_task(started.id, Duration::from_millis(1), |p| {
            seen.push((p.step, p.state))
        })
        .await
        .expect("final");
    assert_eq!(last, progress(3, TaskState::Done));
    assert_eq!(
        seen,
        vec![
            (1, TaskState::Running),
            (2, TaskState::Running),
            (3, TaskState::Done)
        ]
    );
}

// A change refused because another runs is a definite refusal with its code, its message and
// the running task's id; it is not a failed condition.
#[tokio::test]
async fn change_in_progress_refusal_carries_the_running_task() {
    let mut a = FakeNode::bind().await;
    a.serve(Arc::new(|_| {
        answer(
            409,
            json!({"code": "change_in_progress", "message": "task 5 is adding a node", "task": 5}),
        )
    }));
    let c = client(&[&a.addr]);
    for result in [c.add_node("127.0.0.7:7070").await, c.remove_node(2).await] {
        match result {
            Err(
                ref e @ ClientError::ChangeInProgress {
                    task: 5,
                    ref message,
                },
            ) => {
                assert_eq!(message, "task 5 is adding a node");
                assert_eq!(e.to_string(), "change_in_progress: task 5 is adding a node");
                assert!(e.is_definite());
            }
            other => panic!("expected change_in_progress, got {other:?}"),
        }
    }
    let paths: Vec<(String, String)> = a.seen().into_iter().map(|s| (s.method, s.path)).collect();
    assert_eq!(
        paths,
        vec![
            ("POST".to_string(), "/v1/cluster/nodes".to_string()),
            ("DELETE".to_string(), "/v1/cluster/nodes/2".to_string())
        ]
    );
}

// Waiting survives nodes failing: an endpoint that refuses connections or drops a poll without
// an answer is replaced by the next one, even with no retry budget.
#[tokio::test]
async fn wait_task_moves_on_from_failing_endpoints() {
    let dead = FakeNode::refused();
    let (mut a, mut b) = (FakeNode::bind().await, FakeNode::bind().await);
    let poll = Arc::new(polls());
    let served = AtomicU64::new(0);
    let poll_a = poll.clone();
    // A answers one poll, then closes every connection without answering.
    a.serve(Arc::new(move |_| {
        if served.fetch_add(1, Ordering::SeqCst) == 0 {
            poll_a()
        } else {
            None
        }
    }));
    b.serve(Arc::new(move |_| poll()));
    let c = client(&[&dead, &a.addr, &b.addr]);
    let mut steps = Vec::new();
    let last = c
        .wait_task(3, Duration::from_millis(1), |p| steps.push(p.step))
        .await
        .expect("final despite the failures");
    assert_eq!(last.state, TaskState::Done);
    assert_eq!(steps, vec![1, 2, 3]);
    assert!(a.seen().len() >= 2, "a was polled again and failed");
    assert!(!b.seen().is_empty());
}

// With no node answering at all, waiting gives up after the client's patience, not before.
#[tokio::test]
async fn wait_task_gives_up_only_after_the_patience_without_an_answer() {
    let dead = FakeNode::refused();
    let c = impatient(&[&dead], 300);
    let t0 = Instant::now();
    match c.wait_task(3, Duration::from_millis(10), |_| {}).await {
        Err(ClientError::Unavailable(m)) => assert!(m.contains("task 3"), "{m}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(300));
}

/// A fake node that answers key requests `503 slot_moving` `n` times, then with `ok`.
fn frozen_then(n: u64, ok: Option<(u16, String)>) -> Handler {
    let count = AtomicU64::new(0);
    Arc::new(move |_| {
        if count.fetch_add(1, Ordering::SeqCst) < n {
            answer(
                503,
                json!({"code": "slot_moving", "message": "slot 7 is being moved; retry"}),
            )
        } else {
            ok.clone()
        }
    })
}

// A write to a slot frozen by a move is retried with a short backoff until the slot is served
// again, even with no retry budget for unavailability (nothing was written by the refusals).
#[tokio::test]
async fn slot_moving_write_is_retried_until_served() {
    let mut a = FakeNode::bind().await;
    a.serve(frozen_then(3, answer(200, json!({"version": 7}))));
    let c = client(&[&a.addr]).with_smart_routing(false);
    assert_eq!(c.put("k", "v", None).await.expect("put"), 7);
    assert_eq!(a.seen().len(), 4);
}

// A slot that stays frozen fails the request after the client's patience, definitely.
#[tokio::test]
async fn slot_moving_gives_up_after_the_patience() {
    let mut a = FakeNode::bind().await;
    a.serve(frozen_then(u64::MAX, None));
    let c = impatient(&[&a.addr], 300).with_smart_routing(false);
    let t0 = Instant::now();
    match c.put("k", "v", None).await {
        Err(e @ ClientError::Unavailable(_)) => assert!(e.is_definite()),
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(t0.elapsed() >= Duration::from_millis(300));
    // Backoff from 10 ms doubling to 200 ms: a handful of tries, not hundreds.
    let tries = a.seen().len();
    assert!((3..=10).contains(&tries), "{tries} tries");
}

// A routed write during a move: the old group answers slot_moving while the slot is frozen, then
// not_owner once it is released; the client refetches the map and the new group serves it.
#[tokio::test]
async fn routed_write_follows_a_moving_slot_to_its_new_group() {
    let (mut a, mut b) = (FakeNode::bind().await, FakeNode::bind().await);
    let (old, key, slot) = two_groups(&a.addr, &b.addr);
    let mut new = old.clone();
    new.epoch = 2;
    new.slots = vec![GroupId(1); new.slots.len()];
    a.serve(Arc::new(move |r| match r.path.as_str() {
        "/v1/cluster/map" => map_reply(&old),
        _ => answer(200, json!({"version": 12})),
    }));
    let moved = Arc::new(Mutex::new(0u64));
    b.serve(Arc::new(move |r| {
        if r.path == "/v1/cluster/map" {
            return map_reply(&new);
        }
        let mut n = moved.lock().expect("not poisoned");
        *n += 1;
        if *n <= 2 {
            answer(503, json!({"code": "slot_moving", "message": "frozen"}))
        } else {
            answer(
                421,
                json!({"code": "not_owner", "message": "moved", "slot": slot, "group": 1, "epoch": 2}),
            )
        }
    }));
    let c = client(&[&a.addr]);
    assert_eq!(c.put(&key, "v", None).await.expect("put"), 12);
    assert_eq!(key_requests(&b).len(), 3);
    let at_a = key_requests(&a);
    assert_eq!(at_a.len(), 1);
    assert_eq!(at_a[0].route, Some(format!("{slot}:2:1")));
}

// A node named by address is looked up among the map's members; an id is taken as is; an
// unknown or removed address is a clear refusal.
#[tokio::test]
async fn remove_node_by_address_resolves_it_in_the_map() {
    let mut a = FakeNode::bind().await;
    let mut map = ClusterMap::initial(
        &[
            "127.0.0.1:1".into(),
            "127.0.0.2:2".into(),
            "127.0.0.3:3".into(),
        ],
        1,
    )
    .expect("valid view");
    if let Some(n) = map.nodes.get_mut(&3) {
        n.state = NodeLifecycle::Removed;
    }
    a.serve(Arc::new(move |r| {
        match (r.method.as_str(), r.path.as_str()) {
            (_, "/v1/cluster/map") => map_reply(&map),
            ("DELETE", "/v1/cluster/nodes/2") => {
                let mut p = progress(0, TaskState::Running);
                p.change = ViewChange::RemoveNode { node: 2 };
                p.node = Some(2);
                reply(202, &p)
            }
            _ => answer(404, json!({"code": "no_route", "message": r.path})),
        }
    }));
    let c = client(&[&a.addr]);
    assert_eq!(c.resolve_node("9").await.expect("an id"), 9);
    assert!(a.seen().is_empty(), "an id needs no lookup");
    let id = c.resolve_node("127.0.0.2:2").await.expect("a member");
    assert_eq!(id, 2);
    let p = c.remove_node(id).await.expect("started");
    assert_eq!(p.change, ViewChange::RemoveNode { node: 2 });
    let code = |r: Result<u64, ClientError>| match r {
        Err(ClientError::Api { code, message, .. }) => format!("{code}: {message}"),
        other => panic!("expected a refusal, got {other:?}"),
    };
    let unknown = code(c.resolve_node("127.0.0.9:9").await);
    assert!(unknown.starts_with("unknown_node: "), "{unknown}");
    assert!(unknown.contains("127.0.0.9:9"), "{unknown}");
    let removed = code(c.resolve_node("127.0.0.3:3").await);
    assert!(removed.starts_with("node_removed: node 3"), "{removed}");
    assert!(code(c.resolve_node("nodeX").await).starts_with("bad_node: "));
}
