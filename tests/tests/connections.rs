//! Clients can never stop a node (docs/architecture.md, "Connections"): connection floods
//! against real nodes limited to 1,024 open files, the common default.
//!
//! Each flood opens [`FLOOD`] connections to a node, more than its open-file limit, each sending
//! half a request and nothing more, while writers run through every node. What must hold: no
//! node stops; the writes through every node keep being acknowledged, the flooded ones included
//! (their clients connected before the flood); the flooded node keeps applying Raft entries; the
//! connections beyond the node's client cap are answered 503 `too_many_connections` at once; the
//! others are closed once [`HEADER_TIMEOUT`] passed, not before; `/metrics` counts them. First
//! against one node (the leader of group 1, which every write reaches), then against every node
//! at once. Before the floods, a keep-alive connection that answered a request and then stays
//! silent is closed by the idle timeout, not by the shorter header timeout.
//!
//! Addresses: the flood comes from [`FLOOD_FROM`] and the writers from [`CLIENTS_FROM`], loopback
//! addresses no node uses, so the nodes count them as clients. The test's probes (status,
//! `/metrics`) connect from 127.0.0.1, node 1's address, so the nodes count them as the
//! cluster's own connections, which have a reserve of their own: they get through the flood as
//! Raft does.
//!
//! On the code before the connection cap, the flooded node ran out of descriptors and stopped
//! ("the replica of group 1 stopped on a fatal error (... Too many open files)"), and the
//! half-sent connections it accepted were never closed.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvorum_client::{Client, ClientOptions};
use kvorum_tests::workload::{assert_readable_through, Load};
use kvorum_tests::{kvnode_bin, Cluster, ClusterOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every node's open-file limit, soft and hard: the common default.
const OPEN_FILES: u64 = 1024;
/// Connections of one flood against one node: more than its open-file limit.
const FLOOD: usize = 1500;
/// The nodes' header timeout.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// The nodes' idle timeout: longer than the header timeout, to tell the two apart.
const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Slack for a loaded two-core machine on top of a timer.
const SLACK: Duration = Duration::from_secs(5);
/// How long a flood connection waits for the node to close it.
const HOLD_FOR: Duration = Duration::from_secs(15);
/// Connects of a flood in flight at once (the node's backlog is 1,024).
const CONNECTS_AT_ONCE: usize = 256;
/// Interval of the samples of a flooded node's open connections.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// The series of the client connections a node holds.
const OPEN_CLIENTS: &str = "kvorum_connections_open{class=\"client\"}";
/// The series of a node's client cap.
const CLIENT_CAP: &str = "kvorum_connections_limit{class=\"client\"}";
/// Fewest writes acknowledged through each writer's node while a flood lasts.
const WRITES_DURING_FLOOD: usize = 10;
/// The flood's source address: no node's.
const FLOOD_FROM: &str = "127.0.1.1";
/// The writers' source address: no node's.
const CLIENTS_FROM: &str = "127.0.1.2";
/// The idle connection's source address: no node's.
const IDLE_FROM: &str = "127.0.1.3";
/// What the flood's connections send: half a request line, or a request line and some headers
/// without the blank line that ends them.
const HALF_REQUESTS: [&str; 2] = [
    "GET /v1/keys/flo",
    "PUT /v1/keys/flood HTTP/1.1\r\nhost: kvorum\r\ncontent-length: 5\r\n",
];

fn options() -> ClusterOptions {
    ClusterOptions::new(kvnode_bin!(), 3, 3)
        .with_open_files(OPEN_FILES)
        .with_env(
            "KVORUM_HEADER_TIMEOUT_MS",
            &HEADER_TIMEOUT.as_millis().to_string(),
        )
        .with_env(
            "KVORUM_IDLE_TIMEOUT_MS",
            &IDLE_TIMEOUT.as_millis().to_string(),
        )
        // A snapshot every 100 entries: the store keeps creating files during the floods.
        .with_env("KVORUM_SNAPSHOT_EVERY", "100")
}

/// Raises this process's soft open-file limit to its hard limit and checks it holds `needed`
/// descriptors (every node flooded at once).
fn raise_own_open_files(needed: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    assert!(
        hard >= needed,
        "this test opens {needed} connections at once; raise the open-file limit (ulimit -Hn) \
         above {hard}"
    );
}

/// How one flood connection ended.
#[derive(Debug)]
enum Ending {
    /// Answered 503 `too_many_connections` and closed, this long after it opened.
    Refused(Duration),
    /// Closed without an answer, at least the first and at most the second this long after it
    /// opened (from before and from after the connect).
    Closed(Duration, Duration),
    /// Still open after [`HOLD_FOR`].
    Open,
    /// Could not connect.
    NotConnected(String),
    /// Answered something else.
    Other(String),
}

/// A flood of `count` half-sent connections to `to`, each kept until the node closes it.
struct Flood {
    /// Connections opened or failed so far.
    connected: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Ending>>,
    count: usize,
}

impl Flood {
    fn start(to: SocketAddr, count: usize) -> Flood {
        let connected = Arc::new(AtomicUsize::new(0));
        let connects = Arc::new(tokio::sync::Semaphore::new(CONNECTS_AT_ONCE));
        let tasks = (0..count)
            .map(|i| {
                let (connected, connects) = (connected.clone(), connects.clone());
                tokio::spawn(async move {
                    let permit = connects.acquire_owned().await.unwrap();
                    let stream = connect_from(FLOOD_FROM, to).await;
                    drop(permit);
                    connected.fetch_add(1, Ordering::Relaxed);
                    match stream {
                        Ok(opened) => hold(opened, HALF_REQUESTS[i % 2]).await,
                        Err(e) => Ending::NotConnected(e),
                    }
                })
            })
            .collect();
        Flood {
            connected,
            tasks,
            count,
        }
    }

    /// Waits until every connection of the flood is open (or failed to open).
    async fn wait_connected(&self, c: &Cluster) {
        let connected = self.connected.clone();
        let count = self.count;
        c.wait_until(
            Duration::from_secs(30),
            "the flood's connections",
            || async { connected.load(Ordering::Relaxed) >= count },
        )
        .await;
    }

    /// How each connection ended.
    async fn endings(self) -> Vec<Ending> {
        let mut out = Vec::new();
        for t in self.tasks {
            out.push(t.await.unwrap());
        }
        out
    }
}

/// A connection just opened: the stream, when it was asked for and when it was open.
struct Opened {
    stream: TcpStream,
    asked: Instant,
    open: Instant,
}

/// A connection to `to` from the address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> Result<Opened, String> {
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    let from: IpAddr = from.parse().unwrap();
    socket
        .bind(SocketAddr::new(from, 0))
        .map_err(|e| e.to_string())?;
    // The node cannot accept the connection, and start its timers, before this.
    let asked = Instant::now();
    match tokio::time::timeout(Duration::from_secs(5), socket.connect(to)).await {
        Ok(Ok(stream)) => Ok(Opened {
            stream,
            asked,
            open: Instant::now(),
        }),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connect timed out".into()),
    }
}

/// Sends `half` on `stream` and reads until the node closes it (or [`HOLD_FOR`] passes).
async fn hold(opened: Opened, half: &str) -> Ending {
    let Opened {
        mut stream,
        asked,
        open,
    } = opened;
    // A refused connection may be closed before this arrives: then the write fails, and what
    // the node answered is still read below.
    let _ = stream.write_all(half.as_bytes()).await;
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 2048];
        // Until the end of the stream, or a reset (a refused connection closed with unread data).
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    };
    if tokio::time::timeout(HOLD_FOR, read).await.is_err() {
        return Ending::Open;
    }
    let text = String::from_utf8_lossy(&got);
    if text.is_empty() {
        Ending::Closed(asked.elapsed(), open.elapsed())
    } else if text.starts_with("HTTP/1.1 503 ") && text.contains("\"too_many_connections\"") {
        Ending::Refused(open.elapsed())
    } else {
        Ending::Other(text.into_owned())
    }
}

/// The test's probe of `/metrics`, from 127.0.0.1 (node 1's address: a peer's connection).
#[derive(Clone)]
struct Probe(reqwest::Client);

impl Probe {
    fn new() -> Probe {
        Probe(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        )
    }

    /// `/metrics` of the node at `addr`, or why it did not answer.
    async fn try_metrics(&self, addr: SocketAddr) -> Result<String, String> {
        let url = format!("http://{addr}/metrics");
        let resp = self.0.get(&url).send().await;
        let resp = resp.map_err(|e| format!("GET {url}: {e}"))?;
        resp.text().await.map_err(|e| format!("GET {url}: {e}"))
    }

    /// `/metrics` of the node at `addr`.
    async fn metrics(&self, addr: SocketAddr) -> String {
        self.try_metrics(addr)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Samples a node's open client connections every [`SAMPLE_EVERY`] until finished.
struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Sampler {
    fn start(probe: &Probe, addr: SocketAddr) -> Sampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (probe, stopped) = (probe.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut most = 0;
            while !stopped.load(Ordering::Relaxed) {
                // A node that does not answer shows up in the checks after the flood.
                if let Ok(m) = probe.try_metrics(addr).await {
                    most = most.max(value(&m, OPEN_CLIENTS).unwrap_or(0));
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
            most
        });
        Sampler { stop, task }
    }

    /// The most client connections seen open at once.
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The value of the series `series` (name and labels, as written) in `text`.
fn value(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A client of node `i` only, connecting from [`CLIENTS_FROM`].
fn client_of(c: &Cluster, i: usize) -> Arc<Client> {
    let from: IpAddr = CLIENTS_FROM.parse().unwrap();
    let client = Client::new(
        vec![c.nodes[i].addr.to_string()],
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(2),
            local_address: Some(from),
        },
    )
    .unwrap()
    .with_smart_routing(false);
    Arc::new(client)
}

/// What a flood of one node showed.
struct Seen<'a> {
    /// The node (0-based).
    i: usize,
    /// How each flood connection ended.
    endings: &'a [Ending],
    /// The node's client cap.
    cap: u64,
    /// The most client connections it held at once while flooded.
    most_open: u64,
    /// Its `/metrics` before and after the flood.
    before: &'a str,
    after: &'a str,
}

/// Checks how a flood of one node ended: every connection was refused at once (503) or closed
/// once the header timeout passed, none is left open; the node held at most its cap of client
/// connections, and held it (the flood was more than it takes); its counters saw it all.
fn check_flood(c: &Cluster, seen: &Seen) {
    let node = seen.i + 1;
    let left_open = seen
        .endings
        .iter()
        .filter(|e| matches!(e, Ending::Open))
        .count();
    assert_eq!(
        left_open,
        0,
        "node {node}: {left_open} half-sent connections still open {HOLD_FOR:?} after they \
         opened (header timeout {HEADER_TIMEOUT:?}); logs in {}",
        c.path().display()
    );
    let mut refused = 0u64;
    let mut timed_out = 0u64;
    for e in seen.endings {
        match e {
            // At once: not held for the header timeout as the admitted ones are.
            Ending::Refused(after) => {
                assert!(
                    *after < HEADER_TIMEOUT,
                    "node {node}: refused after {after:?}"
                );
                refused += 1;
            }
            Ending::Closed(at_least, at_most) => {
                assert!(
                    *at_least >= HEADER_TIMEOUT && *at_most < HEADER_TIMEOUT + SLACK,
                    "node {node}: a half-sent connection closed {at_most:?} to {at_least:?} \
                     after it opened, not once the header timeout ({HEADER_TIMEOUT:?}) passed"
                );
                timed_out += 1;
            }
            Ending::NotConnected(e) => panic!("node {node}: a flood connection failed: {e}"),
            Ending::Other(answer) => panic!("node {node}: a flood connection got {answer:?}"),
            Ending::Open => unreachable!("counted above"),
        }
    }
    let cap = seen.cap;
    eprintln!(
        "node {node}: {refused} connections refused, {timed_out} closed by the header timeout; \
         at most {} client connections open (cap {cap})",
        seen.most_open
    );
    assert_eq!(
        seen.most_open, cap,
        "node {node}: the flood should have filled the client cap, never more"
    );
    assert!(refused > 0, "node {node}: nothing refused");
    assert!(timed_out > 0, "node {node}: no flood connection admitted");
    let grew =
        |series: &str| value(seen.after, series).unwrap() - value(seen.before, series).unwrap_or(0);
    assert_eq!(
        grew("kvorum_connections_refused_total{class=\"client\"}"),
        refused,
        "node {node}\n{}",
        seen.after
    );
    assert!(
        grew("kvorum_connections_timed_out_total{timer=\"header\"}") >= timed_out,
        "node {node}\n{}",
        seen.after
    );
}

/// Floods the nodes `targets` at once (see the module note) while `loads` write through every
/// node, and checks the outcome: no node stops, every load's writes go on, every flooded node
/// applies Raft entries meanwhile, and each flood ends as [`check_flood`] wants.
async fn flood_and_check(c: &mut Cluster, probe: &Probe, loads: &[Load], targets: &[usize]) {
    let addr = |c: &Cluster, i: usize| c.nodes[i].addr;
    let mut before = Vec::new();
    for &i in targets {
        before.push(probe.metrics(addr(c, i)).await);
    }
    let started = Instant::now();
    let samplers: Vec<Sampler> = targets
        .iter()
        .map(|&i| Sampler::start(probe, addr(c, i)))
        .collect();
    let floods: Vec<Flood> = targets
        .iter()
        .map(|&i| Flood::start(addr(c, i), FLOOD))
        .collect();
    for f in &floods {
        f.wait_connected(c).await;
    }
    eprintln!("{targets:?} flooded: connected in {:?}", started.elapsed());
    let mut during = Vec::new();
    for &i in targets {
        during.push(probe.try_metrics(addr(c, i)).await);
    }
    let mut endings = Vec::new();
    for f in floods {
        endings.push(f.endings().await);
    }
    let mut most_open = Vec::new();
    for s in samplers {
        most_open.push(s.finish().await);
    }
    for i in 0..c.nodes.len() {
        if let Some(status) = c.wait_for_exit(i, Duration::ZERO).await {
            let log = c.nodes[i].log_text();
            let last: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("ERROR"))
                .take(3)
                .collect();
            panic!(
                "node {} stopped ({status}); its first errors:\n{}\nlogs in {}",
                i + 1,
                last.join("\n"),
                c.path().display()
            );
        }
    }
    let flooded: Vec<usize> = targets.iter().map(|i| i + 1).collect();
    for (i, load) in loads.iter().enumerate() {
        let acked = load.acked(1, started);
        assert!(
            acked >= WRITES_DURING_FLOOD,
            "only {acked} writes through node {} while nodes {flooded:?} were flooded; logs in {}",
            i + 1,
            c.path().display()
        );
    }
    let applied = |m: &str| value(m, "kvorum_raft_applied_index{group=\"1\"}").unwrap();
    for (k, &i) in targets.iter().enumerate() {
        let during = during[k].as_ref().unwrap_or_else(|e| {
            panic!("node {} did not answer while flooded: {e}", i + 1);
        });
        let after = probe.metrics(addr(c, i)).await;
        assert!(
            applied(&after) > applied(during),
            "node {} applied nothing while flooded",
            i + 1
        );
        let cap = value(&after, CLIENT_CAP).expect("the node exports its client cap");
        check_flood(
            c,
            &Seen {
                i,
                endings: &endings[k],
                cap,
                most_open: most_open[k],
                before: &before[k],
                after: &after,
            },
        );
    }
}

/// A keep-alive connection that answered a request and then stays silent outlives the header
/// timeout and is closed by the idle timeout.
async fn idle_connection_is_closed_by_the_idle_timeout(c: &Cluster) {
    let mut s = connect_from(IDLE_FROM, c.nodes[1].addr)
        .await
        .unwrap()
        .stream;
    // The node starts the idle timer when it has answered, so after this.
    let sent = Instant::now();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: kvorum\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let n = tokio::time::timeout(IDLE_TIMEOUT + SLACK, s.read(&mut buf))
        .await
        .expect("the idle connection is closed")
        .unwrap_or(0);
    let after = sent.elapsed();
    assert_eq!(n, 0, "the idle connection received more");
    assert!(
        after >= IDLE_TIMEOUT,
        "an idle keep-alive connection was closed {after:?} after its request, before the idle \
         timeout ({IDLE_TIMEOUT:?})"
    );
}

// A flood of half-sent connections, more than the open-file limit, against the leader and then
// against every node: no node stops, writes through every node go on, the excess is refused at
// once with a 503, and the rest are closed after the header timeout (see the module note).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connection_floods_stop_no_node() {
    raise_own_open_files(3 * FLOOD as u64 + 1024);
    let mut c = Cluster::start(options()).await;
    let probe = Probe::new();
    let leader = c.wait_for_leader(Duration::from_secs(30)).await;
    let li = c.index_of(leader);

    // Writers through every node, connected before any flood.
    let map = c.initial_map();
    let loads: Vec<Load> = (0..3)
        .map(|i| Load::through(client_of(&c, i), &map, &[1], 2, &format!("n{}-", i + 1)))
        .collect();
    let start = Instant::now();
    c.wait_until(
        Duration::from_secs(30),
        "writes through every node",
        || async { loads.iter().all(|l| l.acked(1, start) >= 20) },
    )
    .await;

    idle_connection_is_closed_by_the_idle_timeout(&c).await;

    // The leader of group 1 (every write reaches it), then every node at once.
    flood_and_check(&mut c, &probe, &loads, &[li]).await;
    flood_and_check(&mut c, &probe, &loads, &[0, 1, 2]).await;

    // The caps were sized from the open-file limit.
    let m = probe.metrics(c.nodes[0].addr).await;
    assert_eq!(
        value(&m, "kvorum_open_files_limit"),
        Some(OPEN_FILES),
        "{m}"
    );
    assert!(value(&m, CLIENT_CAP).unwrap() < OPEN_FILES, "{m}");

    // Every acknowledged write reads back.
    let mut keys = Vec::new();
    for load in loads {
        keys.extend(load.finish().await.into_iter().map(|a| a.key));
    }
    eprintln!("{} acknowledged writes; reading them back", keys.len());
    assert_readable_through(&c.client(), &keys, false).await;
}
