//! Bad input gets the documented error (status and stable code), and the node keeps serving.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kvorum_tests::{kvnode_bin, Cluster, ClusterOptions};
use reqwest::{Method, StatusCode};

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    status: StatusCode,
    code: &'static str,
}

fn case(
    what: &'static str,
    method: Method,
    path: &str,
    body: &[u8],
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case {
        what,
        method,
        path: path.to_string(),
        content_type: Some("application/json"),
        body: body.to_vec(),
        status,
        code,
    }
}

// Every malformed request is answered with its documented status and code, never 200, never a
// panic, and the node serves normal requests afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_documented_errors_and_node_keeps_serving() {
    let c = Cluster::start(ClusterOptions::new(kvnode_bin!(), 1, 1)).await;
    let base = format!("http://{}", c.nodes[0].addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let long_key = "k".repeat(4097);
    let big_value = format!("{{\"value\":\"{}\"}}", "v".repeat(1024 * 1024 + 1));
    let mut cases = vec![
        case(
            "oversized key",
            Method::PUT,
            &format!("/v1/keys/{long_key}"),
            br#"{"value":"x"}"#,
            StatusCode::PAYLOAD_TOO_LARGE,
            "key_too_large",
        ),
        case(
            "oversized value",
            Method::PUT,
            "/v1/keys/k",
            big_value.as_bytes(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "value_too_large",
        ),
        case(
            "malformed JSON",
            Method::PUT,
            "/v1/keys/k",
            b"{\"value\": ",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "JSON of the wrong shape",
            Method::PUT,
            "/v1/keys/k",
            br#"{"value": 5}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "unknown field",
            Method::PUT,
            "/v1/keys/k",
            br#"{"value":"x","valeu":"y"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "two conditions",
            Method::PUT,
            "/v1/keys/k",
            br#"{"value":"x","expected_version":1,"expected_value":"y"}"#,
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "empty body",
            Method::PUT,
            "/v1/keys/k",
            b"",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "unknown path",
            Method::GET,
            "/v1/nope",
            b"",
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        case(
            "empty key",
            Method::GET,
            "/v1/keys/",
            b"",
            StatusCode::BAD_REQUEST,
            "empty_key",
        ),
        case(
            "empty key on put",
            Method::PUT,
            "/v1/keys/",
            br#"{"value":"x"}"#,
            StatusCode::BAD_REQUEST,
            "empty_key",
        ),
        case(
            "missing key",
            Method::GET,
            "/v1/keys/absent",
            b"",
            StatusCode::NOT_FOUND,
            "key_not_found",
        ),
        case(
            "bad query",
            Method::DELETE,
            "/v1/keys/k?expected_version=abc",
            b"",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "unknown query parameter",
            Method::GET,
            "/v1/keys/k?consistency=weak",
            b"",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "invalid UTF-8 key",
            Method::GET,
            "/v1/keys/%FF%FE",
            b"",
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        case(
            "method not allowed",
            Method::PATCH,
            "/v1/keys/k",
            b"",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        case(
            "failed condition",
            Method::PUT,
            "/v1/keys/cond",
            br#"{"value":"x","expected_version":7}"#,
            StatusCode::CONFLICT,
            "condition_failed",
        ),
        case(
            "internal route without secret",
            Method::POST,
            "/internal/v1/raft/1/vote",
            b"junk",
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
    ];
    let mut wrong_type = case(
        "wrong content type",
        Method::PUT,
        "/v1/keys/k",
        br#"{"value":"x"}"#,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    wrong_type.content_type = Some("text/plain");
    cases.push(wrong_type);
    let mut no_type = case(
        "no content type",
        Method::PUT,
        "/v1/keys/k",
        br#"{"value":"x"}"#,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    no_type.content_type = None;
    cases.push(no_type);

    for c in &cases {
        let mut req = http
            .request(c.method.clone(), format!("{base}{}", c.path))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: no answer: {e}", c.what));
        let status = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: error body is not JSON: {e}", c.what));
        assert_eq!(status, c.status, "{}: status; body {body}", c.what);
        assert_eq!(body["code"], c.code, "{}: code; body {body}", c.what);
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: no message",
            c.what
        );
    }

    // A body announced larger than any valid request is refused from its headers, before the
    // node reads (or buffers) it.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(c.nodes[0].addr)
            .await
            .unwrap();
        let head = "PUT /v1/keys/k HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 104857600\r\n\r\n{\"value\":\"";
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 413"), "oversized body: {text}");
        assert!(text.contains("body_too_large"), "oversized body: {text}");
    }

    // A route header (`slot:epoch:group`) that is malformed or names the wrong slot is bad input;
    // one naming a group that does not own the slot is `not_owner` with the owner and epoch.
    let slot = kvorum_router::slot_of(b"k").0;
    let other_slot = (slot + 1) % kvorum_router::SLOT_COUNT;
    let routes = [
        ("junk".to_string(), StatusCode::BAD_REQUEST, "bad_request"),
        (format!("{slot}:1"), StatusCode::BAD_REQUEST, "bad_request"),
        (
            format!("{other_slot}:1:1"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            format!("{slot}:1:2"),
            StatusCode::MISDIRECTED_REQUEST,
            "not_owner",
        ),
    ];
    for (route, status, code) in routes {
        let resp = http
            .get(format!("{base}/v1/keys/k"))
            .header("x-kvorum-route", route.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "route {route:?}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["code"], code, "route {route:?}: {body}");
        if code == "not_owner" {
            assert_eq!(body["group"], 1, "owner of slot {slot}: {body}");
            assert_eq!(body["slot"], slot, "{body}");
            assert!(body["epoch"].as_u64().is_some_and(|e| e >= 1), "{body}");
        }
    }

    // The node still serves, and a conditional write reports the current record.
    let client = c.client();
    client.put("k", "v1", None).await.unwrap();
    assert_eq!(client.get("k", false).await.unwrap().value, "v1");
    let resp = http
        .put(format!("{base}/v1/keys/k"))
        .header("content-type", "application/json")
        .body(r#"{"value":"x","expected_value":"nope"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["current"]["value"], "v1");
}
