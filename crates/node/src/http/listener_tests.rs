//! Tests of `listener`.
use super::*;

fn limits(clients: usize, peers: usize) -> Limits {
    Limits {
        clients,
        peers,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    }
}

fn open(clients: usize, peers: usize) -> Open {
    Open { clients, peers }
}

// Each case: what is open, who connects, which slot it gets (None: refused).
#[test]
fn admission_by_class() {
    use Class::{Client, Peer};
    let l = limits(2, 1);
    let cases = [
        // A client takes a client slot while one is free ...
        (open(0, 0), Client, Some(Client)),
        (open(1, 1), Client, Some(Client)),
        // ... and is refused when they are all in use, even with the reserve free.
        (open(2, 0), Client, None),
        // A peer takes the reserve first,
        (open(0, 0), Peer, Some(Peer)),
        (open(2, 0), Peer, Some(Peer)),
        // then a client slot,
        (open(0, 1), Peer, Some(Client)),
        // and is refused only when both are full.
        (open(2, 1), Peer, None),
    ];
    for (now, class, want) in cases {
        assert_eq!(admit(now, &l, class), want, "{now:?} {class:?}");
    }
}

// Whatever arrives in whatever order, clients never hold more than their cap, the total
// never exceeds both caps, and a peer is refused only when every slot it may take is full.
#[test]
fn caps_hold_for_any_arrival_order() {
    let l = limits(5, 3);
    for pattern in 0u32..(1 << 12) {
        let mut now = Open::default();
        for i in 0..12 {
            let class = if pattern & (1 << i) != 0 {
                Class::Peer
            } else {
                Class::Client
            };
            match admit(now, &l, class) {
                Some(Class::Client) => now.clients += 1,
                Some(Class::Peer) => now.peers += 1,
                None if class == Class::Peer => {
                    assert_eq!((now.clients, now.peers), (l.clients, l.peers))
                }
                None => assert_eq!(now.clients, l.clients),
            }
            assert!(now.clients <= l.clients && now.peers <= l.peers, "{now:?}");
        }
    }
}

/// A listener on a free loopback port serving a route that answers the caller's IP (from
/// `ConnectInfo`), with caps and timers `limits`; connections from 127.0.0.2 are peers.
/// Returns its address, its counters, the trigger of its shutdown and its task.
async fn start(
    limits: Limits,
) -> (
    SocketAddr,
    Arc<Connections>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = Router::new().route(
        "/ip",
        axum::routing::get(
            |ConnectInfo(a): ConnectInfo<SocketAddr>| async move { a.ip().to_string() },
        ),
    );
    let conns = Arc::new(Connections::new(limits, 1024));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let peer: IpAddr = "127.0.0.2".parse().expect("an IP");
    let task = tokio::spawn(serve(
        listener,
        router,
        conns.clone(),
        move |ip| {
            if ip == peer {
                Class::Peer
            } else {
                Class::Client
            }
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    (addr, conns, stop_tx, task)
}

/// A connection to `addr` from `from`.
async fn connect(addr: SocketAddr, from: &str) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind");
    socket.connect(addr).await.expect("connect")
}

/// Reads until the server closes `stream` (or 5 s pass); what arrived and when it closed.
async fn read_to_close(stream: &mut TcpStream) -> (String, Instant) {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut got));
    let _ = read.await.expect("closed within 5 s");
    (String::from_utf8_lossy(&got).into_owned(), Instant::now())
}

/// Sends a GET of `/ip` on `stream` and reads its answer's body (the connection stays open).
async fn get_ip(stream: &mut TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /ip HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed before answering: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("a content length");
            if body.len() >= len {
                return body.to_string();
            }
        }
    }
}

// A connection that sends half a request line is closed once the header timeout passed,
// not before; one that answered a request and then stays idle is closed by the idle
// timeout, although it is longer than the header timeout. Both are counted.
#[tokio::test]
async fn slow_and_idle_connections_are_closed_by_their_timers() {
    let header = Duration::from_millis(300);
    let idle = Duration::from_millis(900);
    let (addr, conns, stop, task) = start(Limits {
        clients: 8,
        peers: 8,
        header_timeout: header,
        idle_timeout: idle,
    })
    .await;
    let mut slow = connect(addr, "127.0.0.1").await;
    let opened = Instant::now();
    tokio::io::AsyncWriteExt::write_all(&mut slow, b"GET /ip HT")
        .await
        .expect("send");
    let mut idle_conn = connect(addr, "127.0.0.1").await;
    assert_eq!(get_ip(&mut idle_conn).await, "127.0.0.1");
    let answered = Instant::now();
    let (got, closed) = read_to_close(&mut slow).await;
    assert_eq!(got, "", "a half-sent request gets no answer");
    assert!(
        closed - opened >= header,
        "closed after {:?}",
        closed - opened
    );
    let (got, closed) = read_to_close(&mut idle_conn).await;
    assert_eq!(got, "");
    assert!(
        closed - answered >= idle,
        "closed after {:?}",
        closed - answered
    );
    let mut metrics = String::new();
    conns.write_metrics(&mut metrics);
    assert!(
        metrics.contains("kvorum_connections_timed_out_total{timer=\"header\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kvorum_connections_timed_out_total{timer=\"idle\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(conns.open(), Open::default());
    let _ = stop.send(());
    task.await.expect("the listener stops");
}

// With every client slot taken, another client is answered 503 too_many_connections and
// closed at once, and counted; a peer still gets a connection from its reserve, and is
// served with its own address as ConnectInfo.
#[tokio::test]
async fn beyond_the_cap_clients_are_refused_and_peers_served() {
    let (addr, conns, stop, task) = start(Limits {
        clients: 2,
        peers: 1,
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect(addr, "127.0.0.1").await;
        assert_eq!(get_ip(&mut c).await, "127.0.0.1");
        held.push(c);
    }
    let mut refused = connect(addr, "127.0.0.1").await;
    let asked = Instant::now();
    let (got, closed) = read_to_close(&mut refused).await;
    assert!(
        closed - asked < Duration::from_secs(1),
        "refused after {:?}",
        closed - asked
    );
    assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
    assert!(got.contains("\"code\":\"too_many_connections\""), "{got}");
    let mut peer = connect(addr, "127.0.0.2").await;
    assert_eq!(get_ip(&mut peer).await, "127.0.0.2");
    assert_eq!(
        conns.open(),
        Open {
            clients: 2,
            peers: 1
        }
    );
    let mut metrics = String::new();
    conns.write_metrics(&mut metrics);
    assert!(
        metrics.contains("kvorum_connections_refused_total{class=\"client\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kvorum_connections_open{class=\"peer\"} 1\n"),
        "{metrics}"
    );
    // Shutdown closes the idle connections and returns.
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the listener stops with idle connections open")
        .expect("the listener task");
    for c in held.iter_mut().chain([&mut peer]) {
        assert_eq!(read_to_close(c).await.0, "");
    }
}

// The refusal is a complete HTTP/1.1 503 answer whose body is the error format of every
// answer, and it closes the connection.
#[test]
fn refusal_is_a_503_in_the_error_format() {
    let text = String::from_utf8(refusal_answer(256)).expect("ASCII");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    assert!(
        head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{head}"
    );
    assert!(head.contains("connection: close"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let parsed: kvorum_wire::ErrorBody = serde_json::from_str(body).expect("an error body");
    assert_eq!(parsed.code, "too_many_connections");
    assert!(parsed.message.contains("256"), "{}", parsed.message);
}
