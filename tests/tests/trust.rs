//! Trust of the internal routes (docs/architecture.md, "Trust"), with real processes:
//! - every internal call is authenticated before its body is read, and the control routes take
//!   small bodies only;
//! - with a cluster secret, an internal call from any address must carry it;
//! - without one (the seed's K/VIEW/IPPORT start) the node is in protected mode: internal calls
//!   are accepted only from the cluster's nodes and loopback, even with the public default
//!   secret, while the client API stays open to everyone.
//!
//! Strangers call from [`STRANGER`], a loopback address no test node uses (the harness runs
//! nodes on 127.0.0.1..N).

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use kvorum_node::config::DEV_CLUSTER_SECRET;
use kvorum_node::http::{CONTROL_BODY_LIMIT, RAFT_BODY_LIMIT};
use kvorum_tests::{kvnode_bin, Cluster, ClusterOptions};
use kvorum_wire::headers::{CLUSTER_HEADER, SECRET_HEADER};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The address strangers call from: on loopback, but not a node of any test cluster.
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 99));
/// The secret the harness gives every node.
const TEST_SECRET: &str = "test-secret";
/// How fast a refusal must come: far less than sending the announced body would take.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(3);
/// Announced size of the huge bodies: more than any route takes is not needed, only more than
/// is ever sent.
const HUGE_BODY: u64 = 200 << 20;

/// An HTTP client whose connections come from `from`.
fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(from)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Sends `head` (a request head and the first bytes of its body) from `from` to `to` over a raw
/// connection and returns the answer's status and body, or why none came within `within`.
async fn raw_call(
    from: IpAddr,
    to: SocketAddr,
    head: &str,
    within: Duration,
) -> Result<(u16, String), String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut s = socket.connect(to).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let (headers, body) = (&text[..end], &text[end + 4..]);
            let length = headers
                .lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                let status = headers
                    .split(' ')
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0);
                return Ok((status, body.to_string()));
            }
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => {
                return Err(format!(
                    "no answer within {within:?} (the node is waiting for the body?); got {text:?}"
                ))
            }
            Ok(Ok(0)) => return Err(format!("connection closed; got {text:?}")),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => return Err(format!("read failed: {e}; got {text:?}")),
        }
    }
}

/// The head of a POST to `path` announcing a `length`-byte body, with `headers` (`name: value`
/// lines), followed by the body's first bytes.
fn post_head(path: &str, content_type: &str, length: u64, headers: &[(&str, &str)]) -> String {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nhost: kvorum\r\ncontent-type: {content_type}\r\ncontent-length: {length}\r\n"
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n{\"no");
    head
}

/// The cluster id, as the status shows it.
async fn cluster_id(c: &Cluster) -> String {
    let s = c.status_of(0).await.unwrap();
    s.cluster_id
}

/// The forged internal calls a stranger tries: path, content type, body.
fn forged_calls() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    vec![
        (
            "/internal/v1/heartbeat",
            "application/json",
            json!({ "node": 1, "epoch": 1, "replicas": [] })
                .to_string()
                .into_bytes(),
        ),
        (
            "/internal/v1/groups/1/membership",
            "application/json",
            // A no-op (no such learner), so that an accepted call changes nothing.
            json!({ "op": "remove_learner", "node": 999 })
                .to_string()
                .into_bytes(),
        ),
        (
            "/internal/v1/raft/1/vote",
            "application/octet-stream",
            b"not bincode".to_vec(),
        ),
    ]
}

/// POSTs `body` to `path` on `to` from `http` with `secret` and `cluster`; returns the status and
/// the body as JSON (null if not JSON).
async fn internal_post(
    http: &reqwest::Client,
    to: SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    secret: &str,
    cluster: &str,
) -> (StatusCode, Value) {
    let resp = http
        .post(format!("http://{to}{path}"))
        .header(SECRET_HEADER, secret)
        .header(CLUSTER_HEADER, cluster)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: no answer: {e}"));
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// GETs the internal status of `to` from `http`; returns the status code and body.
async fn internal_status(
    http: &reqwest::Client,
    to: SocketAddr,
    secret: &str,
    cluster: &str,
) -> (StatusCode, Value) {
    let resp = http
        .get(format!("http://{to}/internal/v1/status"))
        .header(SECRET_HEADER, secret)
        .header(CLUSTER_HEADER, cluster)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

// An internal call without the secret is refused from its headers: the answer comes at once,
// although the body it announces (200 MiB) never arrives. An authenticated control call whose
// body is larger than the control limit gets 413 from its headers too; Raft RPCs take larger
// bodies (append batches, snapshot chunks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_calls_are_authenticated_before_the_body_is_read() {
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 1, 1)).await;
    let node = c.nodes[0].addr;
    let from = node.ip();
    let cluster = cluster_id(&c).await;

    for (path, ct, _) in forged_calls() {
        for secret in [None, Some("wrong-secret")] {
            let extra: Vec<(&str, &str)> = secret
                .map(|s| vec![(SECRET_HEADER, s), (CLUSTER_HEADER, cluster.as_str())])
                .unwrap_or_default();
            let started = Instant::now();
            let (status, body) = raw_call(
                from,
                node,
                &post_head(path, ct, HUGE_BODY, &extra),
                REFUSAL_DEADLINE,
            )
            .await
            .unwrap_or_else(|e| panic!("{path} with secret {secret:?}: {e}"));
            assert_eq!(status, 401, "{path} with secret {secret:?}: {body}");
            assert!(body.contains("\"unauthorized\""), "{path}: {body}");
            println!(
                "{path} with secret {secret:?}: 401 after {:?}",
                started.elapsed()
            );
        }
    }

    let auth = [
        (SECRET_HEADER, TEST_SECRET),
        (CLUSTER_HEADER, cluster.as_str()),
    ];
    for path in ["/internal/v1/heartbeat", "/internal/v1/groups/1/membership"] {
        let over = CONTROL_BODY_LIMIT as u64 + 1;
        let (status, body) = raw_call(
            from,
            node,
            &post_head(path, "application/json", over, &auth),
            REFUSAL_DEADLINE,
        )
        .await
        .unwrap_or_else(|e| panic!("{path} with a {over}-byte body: {e}"));
        assert_eq!(status, 413, "{path} with a {over}-byte body: {body}");
        assert!(body.contains("\"body_too_large\""), "{path}: {body}");
    }

    // A Raft RPC of the same size is read and judged on its content (bad bincode: 400).
    const { assert!(RAFT_BODY_LIMIT > CONTROL_BODY_LIMIT + 1) };
    let http = client_from(from);
    let (status, _) = internal_post(
        &http,
        node,
        "/internal/v1/raft/1/vote",
        "application/octet-stream",
        vec![0xff; CONTROL_BODY_LIMIT + 1],
        TEST_SECRET,
        &cluster,
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "Raft RPC over the control limit"
    );

    // The node still serves.
    c.client().put("k", "v", None).await.unwrap();
}

// With a secret configured, the secret (and the cluster id) decides, from any address: a
// stranger with the wrong secret is refused, with the right one accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_secret_internal_calls_from_any_address_must_carry_it() {
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 1, 1)).await;
    let node = c.nodes[0].addr;
    let cluster = cluster_id(&c).await;
    let stranger = client_from(STRANGER);

    let (status, body) = internal_status(&stranger, node, DEV_CLUSTER_SECRET, &cluster).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "default secret: {body}");
    assert_eq!(body["code"], "unauthorized", "{body}");
    let (status, body) = internal_status(&stranger, node, TEST_SECRET, "another-cluster").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "wrong cluster: {body}");
    assert_eq!(body["code"], "wrong_cluster", "{body}");
    let (status, body) = internal_status(&stranger, node, TEST_SECRET, &cluster).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "right secret from a stranger: {body}"
    );
    assert_eq!(body["cluster_id"], cluster.as_str(), "{body}");

    let log = c.nodes[0].log_text();
    assert!(
        !log.contains("PROTECTED MODE"),
        "log says protected mode:\n{log}"
    );
}

// Without a secret (the seed's start) the node is in protected mode: a stranger's internal calls
// are refused (403 protected_mode) even with the public default secret and the right cluster id,
// at once even with a huge body; the cluster's own nodes and loopback are accepted; the client
// API stays open to everyone; the node says so at startup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_mode_admits_only_cluster_nodes_and_loopback() {
    let opts = ClusterOptions::new(kvnode_bin!(), 3, 3).with_env("KVORUM_CLUSTER_SECRET", "");
    // Starting at all shows the nodes accept each other's Raft RPCs and heartbeats.
    let c = Cluster::start(opts).await;
    let cluster = cluster_id(&c).await;
    let stranger = client_from(STRANGER);
    assert!(
        c.nodes.iter().all(|n| n.addr.ip() != STRANGER),
        "the stranger's address is a node's"
    );

    for n in &c.nodes {
        for (path, ct, body) in forged_calls() {
            let (status, answer) = internal_post(
                &stranger,
                n.addr,
                path,
                ct,
                body,
                DEV_CLUSTER_SECRET,
                &cluster,
            )
            .await;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "stranger's forged {path} to node {}: {answer}",
                n.id
            );
            assert_eq!(answer["code"], "protected_mode", "{path}: {answer}");
        }
        let (status, answer) =
            internal_status(&stranger, n.addr, DEV_CLUSTER_SECRET, &cluster).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "stranger's status: {answer}");
        assert_eq!(answer["code"], "protected_mode", "{answer}");
    }

    // Refused from the address alone, before the (never sent) body.
    let head = post_head(
        "/internal/v1/heartbeat",
        "application/json",
        HUGE_BODY,
        &[
            (SECRET_HEADER, DEV_CLUSTER_SECRET),
            (CLUSTER_HEADER, &cluster),
        ],
    );
    let (status, body) = raw_call(STRANGER, c.nodes[0].addr, &head, REFUSAL_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("stranger's huge heartbeat: {e}"));
    assert_eq!(status, 403, "stranger's huge heartbeat: {body}");
    assert!(body.contains("\"protected_mode\""), "{body}");

    // A node of the cluster (node 2's address, calling node 3) and loopback are accepted.
    for (from, what) in [
        (c.nodes[1].addr.ip(), "node 2"),
        (c.nodes[0].addr.ip(), "loopback"),
    ] {
        let (status, answer) = internal_status(
            &client_from(from),
            c.nodes[2].addr,
            DEV_CLUSTER_SECRET,
            &cluster,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{what}: {answer}");
    }

    // The client API stays open to strangers.
    for path in [
        "/healthz",
        "/v1/cluster/status",
        "/v1/cluster/map",
        "/metrics",
    ] {
        let resp = stranger
            .get(format!("http://{}{path}", c.nodes[1].addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "stranger's GET {path}");
    }
    let resp = stranger
        .put(format!("http://{}/v1/keys/open", c.nodes[1].addr))
        .json(&json!({ "value": "to everyone" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "stranger's PUT");

    for n in &c.nodes {
        let log = n.log_text();
        assert!(
            log.contains("PROTECTED MODE"),
            "node {} does not announce protected mode:\n{log}",
            n.id
        );
    }
}
