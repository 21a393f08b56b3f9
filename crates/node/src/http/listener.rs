//! The node's HTTP listener: its own accept loop over hyper's HTTP/1.1 connections, so that no
//! number of clients can use up the node's file descriptors or hold a connection forever.
//!
//! Steps of [`serve`]:
//! 1. accept a connection;
//! 2. classify it by its source address ([`Class`]): a *peer* connection comes from the IP of a
//!    node of the cluster map (nodes call from their own IP, `node::http_client`), any other is
//!    a *client* connection;
//! 3. admit it ([`admit`], pure): a peer takes a slot of the peer reserve, or a client slot when
//!    the reserve is full; a client takes a client slot. Without a slot it is refused at once: the
//!    node writes a 503 `too_many_connections` answer (best effort, without reading the request)
//!    and closes it, and counts it;
//! 4. serve it with hyper's HTTP/1.1, TCP_NODELAY, and the caller's address as axum's
//!    `ConnectInfo` (protected mode checks it on internal routes), under two timers
//!    (`Phase`): a request's headers must arrive within `header_timeout` of the connection's
//!    opening or of the request's first byte, and the connection may stay idle between requests
//!    for `idle_timeout`. Either closes it, counted;
//! 5. on shutdown, stop accepting, let every connection finish its request in flight, and
//!    return once all are closed.
//!
//! Why classes by address: the decision is made at accept, before a byte is read, so a slow
//! sender cannot delay it, and a client elsewhere can never take the cluster's reserve, whatever
//! it sends. (A reserve decided by the first request's route, `/internal/...`, could be filled
//! for a whole header timeout by connections that never send a request.) Raft, heartbeats and
//! forwarded requests therefore always find a connection, and the pooled connections peers hold
//! are never refused, however many clients connect.
//!
//! Caveats: nodes that reach each other through NAT or a proxy (from another address) share the
//! client cap; a client on a node's own host counts as a peer (the reserve, then the client cap
//! bound it). A request is not timed once its headers arrived: a client that trickles a body
//! holds its connection (the cap bounds how many). HTTP/1.1 only: neither the nodes nor the
//! client library speak HTTP/2.

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::config::Config;
use crate::error::ApiError;
use crate::http::budget::FdBudget;

/// Pause after an accept error other than a connection's own (the process is out of
/// descriptors: `EMFILE`): the connection waits in the backlog until some close.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Least time between two warnings about refused connections or accept errors; the ones in
/// between are counted in the next warning.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Where a connection comes from, decided at accept by its source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Any address that is not a node's.
    Client,
    /// The IP of a node of the cluster map.
    Peer,
}

impl Class {
    fn label(self) -> &'static str {
        match self {
            Class::Client => "client",
            Class::Peer => "peer",
        }
    }
}

/// The caps and timers of the listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections in client slots (`max_client_connections`, lowered to the budget).
    pub clients: usize,
    /// Most connections in the peer reserve.
    pub peers: usize,
    /// Time to send a request's headers, from the opening or the request's first byte.
    pub header_timeout: Duration,
    /// Time a connection may stay idle between requests.
    pub idle_timeout: Duration,
}

/// Connections open, by the slots they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Open {
    /// Connections in client slots (clients, and peers beyond the reserve).
    pub clients: usize,
    /// Connections in the peer reserve.
    pub peers: usize,
}

/// The slot a new connection of `class` takes when `open` are open, or `None`: refuse it.
/// A peer takes the reserve first, then a client slot; a client only a client slot. So clients
/// never hold more than `limits.clients` connections, all connections together never more than
/// `limits.clients + limits.peers`, and a peer is refused only when both are full.
pub fn admit(open: Open, limits: &Limits, class: Class) -> Option<Class> {
    if class == Class::Peer && open.peers < limits.peers {
        return Some(Class::Peer);
    }
    (open.clients < limits.clients).then_some(Class::Client)
}

/// The listener's counters, shared with `/metrics`: connections open by slot, refused by class,
/// and closed by each timer.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    /// The open-file limit the caps were sized from.
    fd_limit: u64,
    open_clients: AtomicUsize,
    open_peers: AtomicUsize,
    refused_clients: AtomicU64,
    refused_peers: AtomicU64,
    header_timeouts: AtomicU64,
    idle_timeouts: AtomicU64,
}

impl Limits {
    /// `budget`'s caps with `cfg`'s timers.
    pub fn of(cfg: &Config, budget: &FdBudget) -> Limits {
        Limits {
            clients: budget.client_connections,
            peers: budget.peer_connections,
            header_timeout: cfg.header_timeout,
            idle_timeout: cfg.idle_timeout,
        }
    }
}

impl Connections {
    /// The counters of a listener held to `limits`, sized from the open-file limit `fd_limit`,
    /// nothing open yet.
    pub fn new(limits: Limits, fd_limit: u64) -> Connections {
        Connections {
            limits,
            fd_limit,
            open_clients: AtomicUsize::new(0),
            open_peers: AtomicUsize::new(0),
            refused_clients: AtomicU64::new(0),
            refused_peers: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
        }
    }

    /// The caps and timers.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> Open {
        Open {
            clients: self.open_clients.load(Ordering::Relaxed),
            peers: self.open_peers.load(Ordering::Relaxed),
        }
    }

    fn gauge(&self, slot: Class) -> &AtomicUsize {
        match slot {
            Class::Client => &self.open_clients,
            Class::Peer => &self.open_peers,
        }
    }

    /// A slot for a new connection of `class` ([`admit`]), held until the value is dropped; or
    /// `None`, counted as refused. Only the accept loop admits, so two admissions never race
    /// for the last slot (closing connections only free slots).
    fn try_admit(self: &Arc<Self>, class: Class) -> Option<Held> {
        match admit(self.open(), &self.limits, class) {
            Some(slot) => {
                self.gauge(slot).fetch_add(1, Ordering::Relaxed);
                Some(Held {
                    conns: self.clone(),
                    slot,
                })
            }
            None => {
                match class {
                    Class::Client => &self.refused_clients,
                    Class::Peer => &self.refused_peers,
                }
                .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Appends the listener's series to `/metrics` text (Prometheus format).
    pub fn write_metrics(&self, out: &mut String) {
        let open = self.open();
        let limits = self.limits;
        let by_class = |out: &mut String, name: &str, kind: &str, help: &str, v: [u64; 2]| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            out.push_str(&format!("{name}{{class=\"client\"}} {}\n", v[0]));
            out.push_str(&format!("{name}{{class=\"peer\"}} {}\n", v[1]));
        };
        by_class(
            out,
            "kvorum_connections_open",
            "gauge",
            "HTTP connections open, by the slots they hold (peer: the reserve of the cluster's nodes).",
            [open.clients as u64, open.peers as u64],
        );
        by_class(
            out,
            "kvorum_connections_limit",
            "gauge",
            "Most HTTP connections held in each kind of slot.",
            [limits.clients as u64, limits.peers as u64],
        );
        by_class(
            out,
            "kvorum_connections_refused_total",
            "counter",
            "Connections refused at accept (503 too_many_connections), by where they came from.",
            [
                self.refused_clients.load(Ordering::Relaxed),
                self.refused_peers.load(Ordering::Relaxed),
            ],
        );
        out.push_str("# HELP kvorum_connections_timed_out_total Connections closed by a timer: headers not sent in time (header) or idle too long (idle).\n# TYPE kvorum_connections_timed_out_total counter\n");
        out.push_str(&format!(
            "kvorum_connections_timed_out_total{{timer=\"header\"}} {}\n",
            self.header_timeouts.load(Ordering::Relaxed)
        ));
        out.push_str(&format!(
            "kvorum_connections_timed_out_total{{timer=\"idle\"}} {}\n",
            self.idle_timeouts.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP kvorum_open_files_limit The open-file limit (RLIMIT_NOFILE) the connection caps were sized from.\n# TYPE kvorum_open_files_limit gauge\n");
        out.push_str(&format!("kvorum_open_files_limit {}\n", self.fd_limit));
    }
}

/// A connection's slot, freed when dropped.
struct Held {
    conns: Arc<Connections>,
    slot: Class,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.conns.gauge(self.slot).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, within `conns`' caps and timers (see
/// the module overview); `class_of` tells a peer's address from a client's. Returns once every
/// connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    conns: Arc<Connections>,
    class_of: impl Fn(IpAddr) -> Class,
    shutdown: impl Future<Output = ()>,
) {
    let refusal = refusal_answer(conns.limits.clients);
    // Connections start their graceful shutdown when this turns true ...
    let (stop_tx, stop_rx) = watch::channel(false);
    // ... and each holds a receiver of this one until it is closed.
    let (closed_tx, closed_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    let mut refused_warning = Warning::default();
    let mut accept_warning = Warning::default();
    loop {
        let (stream, remote) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    if let Some(more) = accept_warning.due() {
                        tracing::warn!(error = %e, more, "cannot accept connections");
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let class = class_of(remote.ip());
        let Some(held) = conns.try_admit(class) else {
            refuse(stream, &refusal);
            if let Some(more) = refused_warning.due() {
                let Limits { clients, peers, .. } = conns.limits;
                tracing::warn!(
                    class = class.label(),
                    from = %remote,
                    clients,
                    peers,
                    more,
                    "connections refused: all client connection slots are in use \
                     (max_client_connections)"
                );
            }
            continue;
        };
        tokio::spawn(connection(
            stream,
            remote,
            router.clone(),
            held,
            stop_rx.clone(),
            closed_rx.clone(),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(closed_rx);
    closed_tx.closed().await;
}

/// Errors of one connection that `accept` reports; the listener goes on at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// The bytes of the answer to a refused connection: 503 `too_many_connections` in the error
/// format of every answer, then the connection closes.
fn refusal_answer(limit: usize) -> Vec<u8> {
    let error = ApiError::TooManyConnections { limit };
    let body = serde_json::to_string(&error.body()).expect("an error body serializes");
    let status = error.status();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Service Unavailable"),
        body.len()
    )
    .into_bytes()
}

/// Answers a refused connection with `answer` and closes it, without waiting for anything.
fn refuse(stream: TcpStream, answer: &[u8]) {
    // Out of the runtime, so that the write is tried now (tokio reports a fresh socket not yet
    // writable until its reactor saw it); the socket stays non-blocking.
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    // A fresh connection's send buffer takes the short answer whole.
    let _ = stream.write(answer);
    // Take what already arrived, so that closing sends a FIN rather than a reset, which could
    // make the client's system discard the answer before it is read.
    let _ = stream.read(&mut [0u8; 4096]);
}

/// One warning per [`WARN_EVERY`], counting the occasions in between.
#[derive(Default)]
struct Warning {
    last: Option<Instant>,
    suppressed: u64,
}

impl Warning {
    /// `Some(occasions since the last warning)` when a warning is due now.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|l| now < l + WARN_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Serves one admitted connection until it closes, a timer closes it, or the server stops.
async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    router: Router,
    held: Held,
    mut stop: watch::Receiver<bool>,
    _open: watch::Receiver<()>,
) {
    // Replies (Raft RPC answers above all) go out at once, not held back by Nagle's algorithm
    // waiting for the peer's delayed ACK.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, %remote, "cannot set TCP_NODELAY");
    }
    let conns = held.conns.clone();
    let limits = conns.limits;
    let (phase_tx, mut phase) = watch::channel(Phase::Head(Instant::now()));
    let clock = Clock(Arc::new(phase_tx));
    let io = TokioIo::new(Watched {
        stream,
        clock: clock.clone(),
    });
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let busy = clock.busy();
        req.extensions_mut().insert(ConnectInfo(remote));
        let router = router.clone();
        async move {
            let resp = router
                .oneshot(req.map(Body::new))
                .await
                .unwrap_or_else(|e| match e {});
            Ok::<_, Infallible>(resp.map(|body| Tracked { body, _busy: busy }))
        }
    });
    let mut conn = pin!(http1::Builder::new().serve_connection(io, service));
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, %remote, "connection ended");
                }
                break;
            }
            _ = stop.wait_for(|s| *s), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            timer = expiry(&mut phase, &limits) => match timer {
                Timer::Header => {
                    conns.header_timeouts.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%remote, "request headers not sent in time; closing");
                    break;
                }
                // Closes it at once when idle, else after the request that just came in.
                Timer::Idle if !draining => {
                    conns.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                Timer::Idle => break,
            },
        }
    }
    drop(held);
}

/// Where a connection is in its request cycle; the timers run from the instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request's headers: since the connection opened, or since the first byte of
    /// the request after an idle time.
    Head(Instant),
    /// A request is being read, handled or answered: no timer runs.
    Busy,
    /// Between requests, since the last answer was sent.
    Idle(Instant),
}

/// Which timer expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Header,
    Idle,
}

/// Resolves when the timer of the connection's current phase expires.
async fn expiry(phase: &mut watch::Receiver<Phase>, limits: &Limits) -> Timer {
    loop {
        let now = *phase.borrow_and_update();
        let (deadline, timer) = match now {
            Phase::Head(since) => (since + limits.header_timeout, Timer::Header),
            Phase::Idle(since) => (since + limits.idle_timeout, Timer::Idle),
            Phase::Busy => {
                if phase.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return timer,
            changed = phase.changed() => {
                if changed.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// The connection's phase, moved by its reads, its service and its answers' bodies.
#[derive(Clone)]
struct Clock(Arc<watch::Sender<Phase>>);

impl Clock {
    /// Bytes arrived: after an idle time they start a request, and its header timer.
    fn read(&self) {
        self.0.send_if_modified(|p| match p {
            Phase::Idle(_) => {
                *p = Phase::Head(Instant::now());
                true
            }
            _ => false,
        });
    }

    /// A request's headers arrived: busy until the returned guard (kept by the answer's body)
    /// is dropped.
    fn busy(&self) -> Busy {
        self.0.send_replace(Phase::Busy);
        Busy(self.clone())
    }
}

/// Keeps a connection busy; idle from when it is dropped (its answer sent, or abandoned).
struct Busy(Clock);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0 .0.send_replace(Phase::Idle(Instant::now()));
    }
}

/// An answer's body that keeps its connection busy until it is sent.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's socket that tells its [`Clock`] when bytes arrive.
struct Watched {
    stream: TcpStream,
    clock: Clock,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.read();
        }
        poll
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
