//! The kvorum client library, used by `kvctl` and by applications.
//!
//! A [`Client`] talks to any node of a cluster over HTTP; the node forwards to the leader. It
//! tries the configured endpoints in turn when one cannot be connected to, and retries answers
//! that are definite failures (503: no leader, unavailable) until its deadline. It never retries a
//! write whose outcome is unknown: that surfaces as [`ClientError::OutcomeUnknown`].
//!
//! Not implemented: routing straight to the leader (smart client); binary keys and values
//! (keys and values are UTF-8 strings).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Characters of a key left unescaped in a URL path: RFC 3986 unreserved.
const KEY_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Pause between retries of a definite failure.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A value with its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: String,
    /// The log index of the write that produced the value; strictly increases per key.
    pub version: u64,
}

/// A condition on a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// The key's version is this (0: the key is absent).
    Version(u64),
    /// The key's value is this.
    Value(String),
}

/// Errors of the client. Each says what the caller can do.
#[derive(Debug, thiserror::Error)]
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
    /// The node refused the request (bad input, limits, internal error).
    #[error("{code}: {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
}

fn describe(current: &Option<Versioned>) -> String {
    match current {
        Some(v) => format!("holds {:?} at version {}", v.value, v.version),
        None => "does not exist".into(),
    }
}

impl ClientError {
    /// Whether the operation definitely did not take effect.
    pub fn is_definite(&self) -> bool {
        !matches!(self, ClientError::OutcomeUnknown(_))
    }
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time for one HTTP exchange.
    pub request_timeout: Duration,
    /// How long to keep retrying definite failures (unreachable, 503) before giving up.
    pub retry_for: Duration,
    /// Local address to bind outgoing connections to (default: chosen by the OS).
    pub local_address: Option<std::net::IpAddr>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(10),
            retry_for: Duration::from_secs(10),
            local_address: None,
        }
    }
}

/// A client of a kvorum cluster. Cheap to share across tasks.
pub struct Client {
    endpoints: Vec<String>,
    http: reqwest::Client,
    next: AtomicUsize,
    opts: ClientOptions,
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    message: String,
    #[serde(default)]
    current: Option<Versioned>,
}

/// Splits a comma-separated `host:port` list, rejecting empty entries and URLs.
pub fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    let eps: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
    for e in &eps {
        if e.is_empty() || e.contains('/') || !e.contains(':') {
            return Err(format!(
                "endpoint {e:?} is not host:port (e.g. 127.0.0.1:7070)"
            ));
        }
    }
    Ok(eps)
}

impl Client {
    /// A client of the nodes at `endpoints` (`host:port`).
    pub fn new(endpoints: Vec<String>, opts: ClientOptions) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Unavailable("no endpoints given".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .local_address(opts.local_address)
            .build()
            .map_err(|e| ClientError::Unavailable(format!("cannot build HTTP client: {e}")))?;
        Ok(Client {
            endpoints,
            http,
            next: AtomicUsize::new(0),
            opts,
        })
    }

    /// The value of `key`: linearizable, or a possibly stale read from one replica's local state.
    pub async fn get(&self, key: &str, stale: bool) -> Result<Versioned, ClientError> {
        let q = if stale { "?stale=true" } else { "" };
        let v = self
            .call(Method::GET, &key_path("keys", key, q), None, false)
            .await?;
        serde_json::from_value(v).map_err(bad_reply)
    }

    /// Sets `key` to `value` if `expect` holds; returns the new version.
    pub async fn put(
        &self,
        key: &str,
        value: &str,
        expect: Option<Expect>,
    ) -> Result<u64, ClientError> {
        let mut body = json!({ "value": value });
        match expect {
            Some(Expect::Version(v)) => body["expected_version"] = json!(v),
            Some(Expect::Value(v)) => body["expected_value"] = json!(v),
            None => {}
        }
        let v = self
            .call(Method::PUT, &key_path("keys", key, ""), Some(body), true)
            .await?;
        version_of(&v)
    }

    /// Removes `key` if `expect` holds; returns whether it existed.
    pub async fn delete(&self, key: &str, expect: Option<Expect>) -> Result<bool, ClientError> {
        let q = match expect {
            Some(Expect::Version(v)) => format!("?expected_version={v}"),
            Some(Expect::Value(v)) => {
                format!("?expected_value={}", utf8_percent_encode(&v, KEY_ESCAPE))
            }
            None => String::new(),
        };
        let v = self
            .call(Method::DELETE, &key_path("keys", key, &q), None, true)
            .await?;
        v.get("deleted")
            .and_then(|d| d.as_bool())
            .ok_or_else(|| bad_reply("no deleted field"))
    }

    /// Appends `value` to `key` (absent counts as empty); returns the new version.
    pub async fn append(&self, key: &str, value: &str) -> Result<u64, ClientError> {
        let body = json!({ "value": value });
        let v = self
            .call(Method::POST, &key_path("append", key, ""), Some(body), true)
            .await?;
        version_of(&v)
    }

    /// The cluster status as seen by the first node that answers.
    pub async fn status(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, "/v1/cluster/status", None, false)
            .await
    }

    /// One request with retries of definite failures, rotating endpoints.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        write: bool,
    ) -> Result<serde_json::Value, ClientError> {
        let deadline = Instant::now() + self.opts.retry_for;
        let mut last;
        loop {
            let i = self.next.load(Ordering::Relaxed) % self.endpoints.len();
            let ep = &self.endpoints[i];
            let mut req = self
                .http
                .request(method.clone(), format!("http://{ep}{path}"));
            if let Some(b) = &body {
                req = req.json(b);
            }
            match req.send().await {
                Err(e) if e.is_connect() => {
                    // Nothing was sent: safe to try the next endpoint.
                    last = format!("{ep}: {e}");
                    self.next.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if write => return Err(ClientError::OutcomeUnknown(format!("{ep}: {e}"))),
                Err(e) => {
                    last = format!("{ep}: {e}");
                    self.next.fetch_add(1, Ordering::Relaxed);
                }
                Ok(resp) => {
                    let status = resp.status();
                    match resp.bytes().await {
                        Ok(bytes) => match interpret(status, &bytes) {
                            Reply::Done(r) => return r,
                            Reply::Retry(m) => {
                                // Definite: nothing was proposed. Retry, possibly elsewhere.
                                last = format!("{ep}: {m}");
                                self.next.fetch_add(1, Ordering::Relaxed);
                            }
                        },
                        Err(e) if write => {
                            return Err(ClientError::OutcomeUnknown(format!("{ep}: {e}")))
                        }
                        Err(e) => last = format!("{ep}: {e}"),
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Unavailable(last));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// What to do with an HTTP answer.
enum Reply {
    Done(Result<serde_json::Value, ClientError>),
    /// A definite, retryable failure (503).
    Retry(String),
}

fn interpret(status: StatusCode, bytes: &[u8]) -> Reply {
    if status.is_success() {
        return Reply::Done(serde_json::from_slice(bytes).map_err(bad_reply));
    }
    let Ok(err) = serde_json::from_slice::<ErrorBody>(bytes) else {
        return Reply::Done(Err(ClientError::Api {
            status: status.as_u16(),
            code: "unexpected_reply".into(),
            message: String::from_utf8_lossy(bytes).chars().take(200).collect(),
        }));
    };
    Reply::Done(Err(match (status, err.code.as_str()) {
        (StatusCode::NOT_FOUND, "key_not_found") => ClientError::NotFound,
        (StatusCode::CONFLICT, _) => ClientError::ConditionFailed {
            current: err.current,
        },
        (_, "outcome_unknown") => ClientError::OutcomeUnknown(err.message),
        (StatusCode::SERVICE_UNAVAILABLE, _) => return Reply::Retry(err.message),
        _ => ClientError::Api {
            status: status.as_u16(),
            code: err.code,
            message: err.message,
        },
    }))
}

fn key_path(kind: &str, key: &str, query: &str) -> String {
    format!("/v1/{kind}/{}{query}", utf8_percent_encode(key, KEY_ESCAPE))
}

fn bad_reply(e: impl std::fmt::Display) -> ClientError {
    ClientError::Api {
        status: 200,
        code: "unexpected_reply".into(),
        message: e.to_string(),
    }
}

fn version_of(v: &serde_json::Value) -> Result<u64, ClientError> {
    v.get("version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| bad_reply("no version field"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Keys are percent-encoded so any UTF-8 key, slashes included, is one path segment.
    #[test]
    fn keys_are_escaped_in_paths() {
        assert_eq!(key_path("keys", "a/b c", ""), "/v1/keys/a%2Fb%20c");
        assert_eq!(
            key_path("keys", "k-1_.~", "?stale=true"),
            "/v1/keys/k-1_.~?stale=true"
        );
    }

    // Endpoint lists must be host:port entries.
    #[test]
    fn endpoint_lists_are_checked() {
        assert_eq!(
            parse_endpoints("127.0.0.1:1, 127.0.0.2:2").ok(),
            Some(vec!["127.0.0.1:1".to_string(), "127.0.0.2:2".to_string()])
        );
        assert!(parse_endpoints("http://x:1").is_err());
        assert!(parse_endpoints("a:1,,b:2").is_err());
        assert!(parse_endpoints("nohost").is_err());
    }
}
