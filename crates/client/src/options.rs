//! Settings of a [`Client`](crate::Client) and the parsing of endpoint lists.

use std::time::Duration;

/// Settings of a [`Client`](crate::Client).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time for one HTTP exchange.
    pub request_timeout: Duration,
    /// How long to keep retrying definite failures (unreachable, 503) before giving up. A
    /// request whose slot is being moved (503 `slot_moving`) is retried for up to the larger of
    /// this and `request_timeout`; [`Client::wait_task`](crate::Client::wait_task) gives up
    /// after that long without any answer.
    pub retry_for: Duration,
    /// Local address to bind outgoing connections to (default: chosen by the OS).
    pub local_address: Option<std::net::IpAddr>,
}

/// Default of [`ClientOptions::request_timeout`]: above a node's own request timeout (5 s by
/// default), so a node answers `outcome_unknown` before the client gives up on it.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`ClientOptions::retry_for`]: covers a leader election and a map change or two.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(10);
/// Longest a TCP connect to a node may take: a live node answers a connect in milliseconds, so
/// one still pending after a second is to a dead or cut-off node, and the client tries another.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_for: DEFAULT_RETRY_FOR,
            local_address: None,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
