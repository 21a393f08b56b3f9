//! Tests of the client's routing against fake nodes: tiny HTTP/1.1 servers on loopback that
//! record what they receive and answer from a handler. No kvnode is involved. The fake nodes
//! are shared with `cluster_tests.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kvorum_router::{slot_of, ClusterMap, GroupId};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::{Client, ClientError, ClientOptions, ROUTE_HEADER};

/// One request as a fake node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    /// The `x-kvorum-route` header, if sent.
    pub(crate) route: Option<String>,
    /// The request body.
    pub(crate) body: String,
}

/// A fake node's answer to a request: status and JSON body, or `None` to close the connection
/// without answering (after reading the request, so the outcome of a write is unknown).
pub(crate) type Handler = Arc<dyn Fn(&Seen) -> Option<(u16, String)> + Send + Sync>;

/// A fake node: a bound listener, then a server answering from a handler.
pub(crate) struct FakeNode {
    pub(crate) addr: String,
    listener: Option<TcpListener>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeNode {
    /// Binds a loopback port; `serve` starts answering.
    /// An address where connections are refused: port 1 on loopback, where nothing listens. (A
    /// bound-then-dropped port is not: a test running in parallel may bind it again.)
    pub(crate) fn refused() -> String {
        "127.0.0.1:1".to_string()
    }

    pub(crate) async fn bind() -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("bound").to_string();
        FakeNode {
            addr,
            listener: Some(listener),
            seen: Arc::default(),
        }
    }

    /// Answers every connection's one request with `handler`.
    pub(crate) fn serve(&mut self, handler: Handler) {
        let listener = self.listener.take().expect("served once");
        let seen = self.seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (handler, seen) = (handler.clone(), seen.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut sock).await else {
                        return;
                    };
                    seen.lock().expect("not poisoned").push(req.clone());
                    if let Some((status, body)) = handler(&req) {
                        let resp = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = sock.write_all(resp.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    }
                });
            }
        });
    }

    /// The requests received so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

/// Reads one HTTP/1.1 request (head and `content-length` body).
async fn read_request(sock: &mut TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let (mut len, mut route) = (0, None);
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().ok()?,
                k if k == ROUTE_HEADER => route = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    while buf.len() < head_end + len {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
    Some(Seen {
        method,
        path,
        route,
        body,
    })
}

pub(crate) fn answer(status: u16, body: serde_json::Value) -> Option<(u16, String)> {
    Some((status, body.to_string()))
}

pub(crate) fn map_reply(map: &ClusterMap) -> Option<(u16, String)> {
    answer(200, json!({ "map": map, "leaders": {"1": 1, "2": 2} }))
}

/// A map of two nodes with K=1 (group 1 on node 1 at `a`, group 2 on node 2 at `b`) and a key
/// of group 2 with its slot.
pub(crate) fn two_groups(a: &str, b: &str) -> (ClusterMap, String, u16) {
    let map = ClusterMap::initial(&[a.to_string(), b.to_string()], 1).expect("valid view");
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| map.route_key(k.as_bytes()).map(|r| r.1) == Some(GroupId(2)))
        .expect("half the keys are in group 2");
    let slot = slot_of(key.as_bytes()).0;
    (map, key, slot)
}

pub(crate) fn client(endpoints: &[&str]) -> Client {
    let opts = ClientOptions {
        request_timeout: Duration::from_secs(2),
        retry_for: Duration::ZERO,
        local_address: None,
    };
    Client::new(endpoints.iter().map(|e| e.to_string()).collect(), opts).expect("client")
}

fn put(route: Option<String>) -> Seen {
    Seen {
        method: "PUT".into(),
        path: String::new(),
        route,
        body: String::new(),
    }
}

/// The requests other than map fetches, paths blanked (keys are checked by the route header).
pub(crate) fn key_requests(node: &FakeNode) -> Vec<Seen> {
    node.seen()
        .into_iter()
        .filter(|s| s.path != "/v1/cluster/map")
        .map(|s| Seen {
            path: String::new(),
            body: String::new(),
            ..s
        })
        .collect()
}

fn map_fetches(node: &FakeNode) -> usize {
    node.seen()
        .iter()
        .filter(|s| s.path == "/v1/cluster/map")
        .count()
}

// The first request fetches the map from an endpoint, then goes straight to the key's group
// with the route header `<slot>:<epoch>:<group>`.
#[tokio::test]
async fn put_is_routed_to_the_owning_group_with_the_route_header() {
    let (mut a, mut b) = (FakeNode::bind().await, FakeNode::bind().await);
    let (map, key, slot) = two_groups(&a.addr, &b.addr);
    a.serve(Arc::new(move |r| match r.path.as_str() {
        "/v1/cluster/map" => map_reply(&map),
        _ => answer(
            500,
            json!({"code": "unexpected", "message": "routed elsewhere"}),
        ),
    }));
    b.serve(Arc::new(|_| answer(200, json!({"version": 9}))));
    let c = client(&[&a.addr]);
    assert_eq!(c.put(&key, "v", None).await.expect("put"), 9);
    assert_eq!(map_fetches(&a), 1);
    assert!(key_requests(&a).is_empty());
    assert_eq!(key_requests(&b), vec![put(Some(format!("{slot}:1:2")))]);
    assert_eq!(c.cached_map().map(|m| m.epoch), Some(1));
}

// A 421 not_owner with a newer epoch makes the client fetch the map (from the node that answered
// first) and route again by it; the retry is safe because nothing was proposed.
#[tokio::test]
async fn not_owner_refreshes_the_map_and_routes_again() {
    let (mut a, mut b) = (FakeNode::bind().await, FakeNode::bind().await);
    let (old, key, slot) = two_groups(&a.addr, &b.addr);
    let mut new = old.clone();
    new.epoch = 2;
    new.slots = vec![GroupId(1); new.slots.len()];
    // Node A still has the old map; node B has the new one.
    a.serve(Arc::new(move |r| match r.path.as_str() {
        "/v1/cluster/map" => map_reply(&old),
        _ => answer(200, json!({"version": 10})),
    }));
    b.serve(Arc::new(move |r| match r.path.as_str() {
        "/v1/cluster/map" => map_reply(&new),
        _ => answer(
            421,
            json!({"code": "not_owner", "message": "moved", "slot": slot, "group": 1, "epoch": 2}),
        ),
    }));
    let c = client(&[&a.addr]);
    assert_eq!(c.put(&key, "v", None).await.expect("put"), 10);
    assert_eq!(key_requests(&b), vec![put(Some(format!("{slot}:1:2")))]);
    assert_eq!(
        map_fetches(&b),
        1,
        "the map is fetched from the node that knew it"
    );
    assert_eq!(key_requests(&a), vec![put(Some(format!("{slot}:2:1")))]);
    assert_eq!(c.cached_map().map(|m| m.epoch), Some(2));
}

// A routed address that refuses connections is skipped (nothing was sent, so even a write may
// go on) and the request takes the plain path through the endpoints, without the header.
#[tokio::test]
async fn unreachable_route_falls_back_to_the_endpoints() {
    let mut a = FakeNode::bind().await;
    let dead = FakeNode::refused();
    let (map, key, _) = two_groups(&a.addr, &dead);
    a.serve(Arc::new(move |r| match r.path.as_str() {
        "/v1/cluster/map" => map_reply(&map),
        _ => answer(200, json!({"version": 4})),
    }));
    let c = client(&[&a.addr]);
    assert_eq!(c.put(&key, "v", None).await.expect("put"), 4);
    assert_eq!(key_requests(&a), vec![put(None)]);
}

// A routed write that reached a node and got no answer is not retried anywhere: its outcome is
// unknown. A read in the same situation moves on to the endpoints.
#[tokio::test]
async fn routed_write_with_unknown_outcome_is_not_retried() {
    let (mut a, mut b) = (FakeNode::bind().await, FakeNode::bind().await);
    let (map, key, _) = two_groups(&a.addr, &b.addr);
    a.serve(Arc::new(move |r| match r.path.as_str() {
        "/v1/cluster/map" => map_reply(&map),
        _ => answer(200, json!({"value": "v", "version": 1})),
    }));
    b.serve(Arc::new(|_| None));
    let c = client(&[&a.addr]);
    match c.put(&key, "v", None).await {
        Err(e @ ClientError::OutcomeUnknown(_)) => assert!(!e.is_definite()),
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
    assert!(key_requests(&a).is_empty(), "the write was retried");
    assert_eq!(c.get(&key, false).await.expect("get").value, "v");
    assert_eq!(key_requests(&a).len(), 1);
}

// Without a map (the nodes do not serve one) requests take the plain path, and the client does
// not refetch the map on every request.
#[tokio::test]
async fn unavailable_map_uses_the_endpoints() {
    let mut a = FakeNode::bind().await;
    a.serve(Arc::new(|r| match r.path.as_str() {
        "/v1/cluster/map" => answer(404, json!({"code": "not_found", "message": "no route"})),
        _ => answer(200, json!({"version": 2})),
    }));
    let c = client(&[&a.addr]);
    for _ in 0..3 {
        assert_eq!(c.put("k", "v", None).await.expect("put"), 2);
    }
    assert_eq!(map_fetches(&a), 1, "fetching backs off");
    assert_eq!(key_requests(&a), vec![put(None); 3]);
    assert!(c.cached_map().is_none());
    assert!(matches!(
        c.map().await,
        Err(ClientError::Api { status: 404, .. })
    ));
}

// With smart routing off the client never fetches the map and sends everything to the
// endpoints; `map()` still reads the map and its leader hints.
#[tokio::test]
async fn smart_routing_off_sends_to_the_endpoints_only() {
    let (mut a, b) = (FakeNode::bind().await, FakeNode::bind().await);
    let (map, key, _) = two_groups(&a.addr, &b.addr);
    let expected = map.clone();
    a.serve(Arc::new(move |r| match r.path.as_str() {
        "/v1/cluster/map" => map_reply(&map),
        _ => answer(200, json!({"version": 3})),
    }));
    let c = client(&[&a.addr]).with_smart_routing(false);
    assert!(!c.smart_routing());
    assert_eq!(c.put(&key, "v", None).await.expect("put"), 3);
    assert_eq!(map_fetches(&a), 0);
    assert_eq!(key_requests(&a), vec![put(None)]);
    let (got, leaders) = c.map().await.expect("map");
    assert_eq!(got, expected);
    assert_eq!(
        leaders.into_iter().collect::<Vec<_>>(),
        vec![(1, 1), (2, 2)]
    );
}

// A write's error is definite ("nothing was written") only when the node answered one of the
// listed codes. `internal`, a code the client does not know, and a reply it cannot parse (even a
// 200 without the reply's fields) leave the outcome unknown, and such a write is sent once only.
#[tokio::test]
async fn only_listed_codes_make_a_write_error_definite() {
    let err = |code: &str| format!(r#"{{"code":"{code}","message":"m"}}"#);
    let cases: Vec<(u16, String, bool)> = vec![
        (500, err("internal"), false),
        (503, err("overloaded"), false),
        (409, err("something_new"), false),
        (502, "<html>bad gateway</html>".into(), false),
        (504, String::new(), false),
        (200, "not json".into(), false),
        (200, r#"{"key":"k"}"#.into(), false),
        (503, err("unavailable"), true),
        (503, err("no_leader"), true),
        (503, err("joining"), true),
        (503, err("too_many_connections"), true),
        (400, err("bad_request"), true),
        (413, err("value_too_large"), true),
        (
            409,
            r#"{"code":"condition_failed","message":"m","current":null}"#.into(),
            true,
        ),
    ];
    for (status, body, definite) in cases {
        for op in ["put", "append", "delete"] {
            let mut a = FakeNode::bind().await;
            let reply = body.clone();
            a.serve(Arc::new(move |_| Some((status, reply.clone()))));
            let c = client(&[&a.addr]).with_smart_routing(false);
            let e = match op {
                "put" => c.put("k", "v", None).await.map(|_| ()),
                "append" => c.append("k", "v").await.map(|_| ()),
                _ => c.delete("k", None).await.map(|_| ()),
            }
            .expect_err("an error");
            assert_eq!(
                e.is_definite(),
                definite,
                "{op} answered {status} {body:?} gave {e:?}"
            );
            if !definite {
                assert_eq!(
                    key_requests(&a).len(),
                    1,
                    "{op} {status} {body:?} was retried"
                );
            }
        }
    }
}

// The error keeps what the node said: a 503 `unavailable` is reported as unavailable (definite),
// and a 500 `internal` keeps its code and message (not definite).
#[tokio::test]
async fn write_errors_keep_the_node_code() {
    let mut a = FakeNode::bind().await;
    a.serve(Arc::new(|r| match r.method.as_str() {
        "PUT" => answer(
            503,
            json!({"code": "unavailable", "message": "no replica reachable"}),
        ),
        _ => answer(500, json!({"code": "internal", "message": "disk on fire"})),
    }));
    let c = client(&[&a.addr]).with_smart_routing(false);
    match c.put("k", "v", None).await {
        Err(e @ ClientError::Unavailable(_)) => {
            assert!(e.is_definite());
            assert!(e.to_string().contains("no replica reachable"), "{e}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    match c.append("k", "v").await {
        Err(
            ref e @ ClientError::Api {
                status: 500,
                ref code,
                ..
            },
        ) => {
            assert_eq!(code, "internal");
            assert!(!e.is_definite());
        }
        other => panic!("expected internal, got {other:?}"),
    }
}
