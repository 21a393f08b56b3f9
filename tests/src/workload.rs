//! Load and read-back for the end-to-end tests: every write puts [`value_of`] its key, so any
//! read can be checked. Checked writes and reads ([`put_checked`], [`read_checked`]), bulk
//! writes and read-back through random nodes ([`write_all`], [`assert_readable`]), and a
//! continuous [`Load`] of fresh keys per data group whose acknowledged writes are recorded.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_client::{Client, ClientError};
use kvorum_router::ClusterMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{direct_client, group_of_key, Cluster};

/// The value every test writes to `key`, so any read can be checked.
pub fn value_of(key: &str) -> String {
    format!("v-{key}")
}

/// One client per node, without failover: a request goes to exactly that node, which serves or
/// forwards it.
pub fn node_clients(c: &Cluster, retry_for: Duration) -> Arc<Vec<Client>> {
    Arc::new(
        c.nodes
            .iter()
            .map(|n| direct_client(n.addr, Duration::from_secs(5), retry_for))
            .collect(),
    )
}

/// Runs `f` on every item with `tasks` concurrent tasks; returns the items `f` failed on, with
/// the reason.
pub async fn run_all<T, F, Fut>(items: Vec<T>, tasks: usize, f: F) -> Vec<(T, String)>
where
    T: Clone + Send + Sync + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let items = Arc::new(items);
    let next = Arc::new(AtomicUsize::new(0));
    let f = Arc::new(f);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (items, next, f, failures) =
                (items.clone(), next.clone(), f.clone(), failures.clone());
            tokio::spawn(async move {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    if let Err(e) = f(item.clone()).await {
                        failures.lock().unwrap().push((item.clone(), e));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let mut failures = failures.lock().unwrap();
    std::mem::take(&mut *failures)
}

/// Writes `key` = [`value_of`] through node `first`, then the next nodes, up to 3 tries. A put
/// of the same value is idempotent, so retrying after an unknown outcome is safe here.
pub async fn put_checked(clients: &[Client], first: usize, key: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    for attempt in 0..3 {
        let i = (first + attempt) % clients.len();
        match clients[i].put(key, &value_of(key), None).await {
            Ok(_) => return Ok(()),
            Err(e) => errors.push(format!("via node {}: {e}", i + 1)),
        }
    }
    Err(errors.join("; "))
}

/// Reads `key` through `client` and checks it holds [`value_of`].
pub async fn read_checked(client: &Client, key: &str, stale: bool) -> Result<(), String> {
    match client.get(key, stale).await {
        Ok(v) if v.value == value_of(key) => Ok(()),
        Ok(v) => Err(format!("WRONG value {:?} for {key}", v.value)),
        Err(ClientError::NotFound) => Err(format!("{key} not found")),
        Err(e) => Err(format!("{key}: {e}")),
    }
}

/// Reads every key through `client`, one at a time (stale reads if `stale`), and panics on the
/// first that is missing or wrong.
pub async fn assert_readable_through(client: &Client, keys: &[String], stale: bool) {
    for key in keys {
        if let Err(e) = read_checked(client, key, stale).await {
            panic!("acknowledged write not read back: {e}");
        }
    }
}

/// Writes every key through a random node (seeded), 32 at a time; panics on a key that could not
/// be written.
pub async fn write_all(c: &Cluster, keys: &[String], rng: &mut StdRng) {
    let clients = node_clients(c, Duration::from_secs(10));
    let n = c.nodes.len();
    let items: Vec<(String, usize)> = keys
        .iter()
        .map(|k| (k.clone(), rng.gen_range(0..n)))
        .collect();
    let failed = run_all(items, 32, move |(key, node)| {
        let clients = clients.clone();
        async move { put_checked(&clients, node, &key).await }
    })
    .await;
    assert!(
        failed.is_empty(),
        "{} writes failed, e.g. {:?}; logs in {}",
        failed.len(),
        &failed[..failed.len().min(5)],
        c.path().display()
    );
}

/// Reads every key linearizably through random nodes among `via` (0-based), 32 at a time, and
/// panics on any key that is missing or wrong.
pub async fn assert_readable(c: &Cluster, keys: &[String], via: &[usize], seed: u64) {
    let clients = node_clients(c, Duration::from_secs(10));
    let mut rng = StdRng::seed_from_u64(seed);
    let items: Vec<(String, usize)> = keys
        .iter()
        .map(|k| (k.clone(), via[rng.gen_range(0..via.len())]))
        .collect();
    let failed = run_all(items, 32, move |(key, node)| {
        let clients = clients.clone();
        async move { read_checked(&clients[node], &key, false).await }
    })
    .await;
    assert!(
        failed.is_empty(),
        "{} of {} acknowledged writes do not read back, e.g. {:?}; logs in {}",
        failed.len(),
        keys.len(),
        &failed[..failed.len().min(5)],
        c.path().display()
    );
}

/// An acknowledged write of a [`Load`].
pub struct Ack {
    /// The key written, holding [`value_of`] it.
    pub key: String,
    /// The data group of `key`.
    pub group: u64,
    /// When the acknowledgement arrived.
    pub at: Instant,
}

/// Continuous writers of fresh keys, each bound to one data group, through random live nodes
/// ([`Load::start`]) or one client ([`Load::through`]).
pub struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    /// Nodes (0-based) the writers may send to.
    live: Arc<Mutex<Vec<usize>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Where the writers of a [`Load`] send.
#[derive(Clone)]
enum Route {
    /// One client per node: each write goes to a random node of the load's live nodes.
    Nodes(Arc<Vec<Client>>),
    /// One client for every write (it may fail over between nodes by itself).
    Client(Arc<Client>),
}

impl Load {
    /// Starts `per_group` writers for each of `groups`, sending to random nodes of `live`.
    pub fn start(
        c: &Cluster,
        map: &ClusterMap,
        groups: &[u64],
        per_group: usize,
        live: Vec<usize>,
        seed: u64,
        prefix: &str,
    ) -> Load {
        // Short retries: a writer whose node cannot serve moves on to another node.
        let clients = node_clients(c, Duration::from_secs(1));
        Load::spawn(
            map,
            groups,
            per_group,
            Route::Nodes(clients),
            live,
            seed,
            prefix,
        )
    }

    /// Starts `per_group` writers for each of `groups`, all sending through `client`.
    pub fn through(
        client: Arc<Client>,
        map: &ClusterMap,
        groups: &[u64],
        per_group: usize,
        prefix: &str,
    ) -> Load {
        Load::spawn(
            map,
            groups,
            per_group,
            Route::Client(client),
            Vec::new(),
            0,
            prefix,
        )
    }

    /// Starts the writers: writer `w` writes keys `{prefix}w{w}-{n}` of its group, `n = 0, 1, …`
    /// skipping those of other groups.
    fn spawn(
        map: &ClusterMap,
        groups: &[u64],
        per_group: usize,
        route: Route,
        live: Vec<usize>,
        seed: u64,
        prefix: &str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let live = Arc::new(Mutex::new(live));
        let mut tasks = Vec::new();
        for (w, group) in groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(*g, per_group))
            .enumerate()
        {
            let (route, stop, acks, live) =
                (route.clone(), stop.clone(), acks.clone(), live.clone());
            let map = map.clone();
            let prefix = format!("{prefix}w{w}-");
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
            tasks.push(tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = loop {
                        let key = format!("{prefix}{n}");
                        n += 1;
                        if group_of_key(&map, &key) == group {
                            break key;
                        }
                    };
                    let client = match &route {
                        Route::Nodes(clients) => {
                            let live = live.lock().unwrap();
                            &clients[live[rng.gen_range(0..live.len())]]
                        }
                        Route::Client(client) => client,
                    };
                    // Failures (unavailable, unknown outcome) are allowed; only acks are promised.
                    if client.put(&key, &value_of(&key), None).await.is_ok() {
                        let at = Instant::now();
                        acks.lock().unwrap().push(Ack { key, group, at });
                    }
                }
            }));
        }
        Load {
            stop,
            acks,
            live,
            tasks,
        }
    }

    /// Stops sending to node `i` (before it is killed).
    pub fn avoid(&self, i: usize) {
        self.live.lock().unwrap().retain(|n| *n != i);
    }

    /// Acknowledged writes to `group` completed after `since`.
    pub fn acked(&self, group: u64, since: Instant) -> usize {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.group == group && a.at >= since)
            .count()
    }

    /// Stops the writers and returns every acknowledged write.
    pub async fn finish(self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let mut acks = self.acks.lock().unwrap();
        std::mem::take(&mut *acks)
    }
}

/// The longest time between successive acknowledgements of `acks` accepted by `filter`.
pub fn longest_gap(acks: &[Ack], filter: impl Fn(&Ack) -> bool) -> Duration {
    let mut times: Vec<Instant> = acks.iter().filter(|a| filter(a)).map(|a| a.at).collect();
    times.sort();
    times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// Waits until `load` has `n` acknowledged writes to `group` after `since`.
pub async fn wait_acked(
    c: &Cluster,
    load: &Load,
    group: u64,
    since: Instant,
    n: usize,
    what: &str,
) {
    c.wait_until(Duration::from_secs(30), what, || async {
        load.acked(group, since) >= n
    })
    .await;
}
