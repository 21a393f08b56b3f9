//! `kvctl bench`: a closed-loop load generator. Each of `--clients` tasks sends one request at a
//! time for `--duration-secs`; latencies go into an HDR histogram.
//!
//! `--target etcd` sends the same load to an etcd cluster through its v3 JSON gateway
//! (`POST /v3/kv/put`, `POST /v3/kv/range`; linearizable ranges unless `--stale`, which asks for
//! serializable ones) at the first endpoint, so both systems are measured by one client over
//! HTTP/1.1 + JSON on the same machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hdrhistogram::Histogram;
use kvorum_client::{Client, ClientError};
use rand::{Rng, SeedableRng};
use serde_json::json;

/// Where the load goes.
enum Target {
    Kvorum(Box<Client>),
    /// An etcd v3 JSON gateway at `base` (`http://host:port`).
    Etcd {
        http: reqwest::Client,
        base: String,
    },
}

impl Target {
    async fn put(&self, key: &str, value: &str) -> Result<(), ClientError> {
        match self {
            Target::Kvorum(c) => c.put(key, value, None).await.map(|_| ()),
            Target::Etcd { http, base } => {
                let body = json!({ "key": B64.encode(key), "value": B64.encode(value) });
                etcd_call(http, &format!("{base}/v3/kv/put"), &body).await
            }
        }
    }

    async fn get(&self, key: &str, stale: bool) -> Result<(), ClientError> {
        match self {
            Target::Kvorum(c) => c.get(key, stale).await.map(|_| ()),
            Target::Etcd { http, base } => {
                let body = json!({ "key": B64.encode(key), "serializable": stale });
                etcd_call(http, &format!("{base}/v3/kv/range"), &body).await
            }
        }
    }
}

async fn etcd_call(
    http: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> Result<(), ClientError> {
    let resp = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| ClientError::Unavailable(format!("etcd at {url}: {e}")))?;
    let status = resp.status();
    // Read the whole answer, as a real client would.
    let text = resp
        .bytes()
        .await
        .map_err(|e| ClientError::Unavailable(format!("etcd at {url}: {e}")))?;
    if status.is_success() {
        Ok(())
    } else {
        Err(ClientError::Api {
            status: status.as_u16(),
            code: "etcd_error".into(),
            message: String::from_utf8_lossy(&text).chars().take(200).collect(),
        })
    }
}

/// Arguments of `kvctl bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Operation: put or get (gets read keys written in a prefill phase).
    #[arg(long, value_parser = ["put", "get"], default_value = "put")]
    op: String,
    /// Concurrent clients, each with one request in flight.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// How long to run, seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Read with ?stale=true (local state, no read index).
    #[arg(long)]
    stale: bool,
    /// Seed of the key choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// System under load: kvorum, or etcd (v3 JSON gateway at the first endpoint, for
    /// comparisons on the same machine).
    #[arg(long, value_parser = ["kvorum", "etcd"], default_value = "kvorum")]
    target: String,
}

/// Runs the benchmark: checks the arguments, prefills the keys of a `get` run, runs the clients
/// until the duration has passed, and prints the report.
pub async fn run(
    client: Client,
    endpoints: Vec<String>,
    args: BenchArgs,
    as_json: bool,
) -> Result<(), ClientError> {
    if args.clients == 0 || args.keys == 0 || args.duration_secs == 0 {
        return Err(ClientError::Api {
            status: 0,
            code: "bad_arguments".into(),
            message: "--clients, --keys and --duration-secs must be positive".into(),
        });
    }
    let client = Arc::new(target(client, &endpoints, &args)?);
    let value: Arc<str> = "x".repeat(args.value_bytes).into();
    if args.op == "get" {
        eprintln!("prefilling {} keys...", args.keys);
        for i in 0..args.keys {
            client.put(&format!("bench-{i}"), &value).await?;
        }
    }
    eprintln!(
        "running {} x{} for {} s (seed {})...",
        args.op, args.clients, args.duration_secs, args.seed
    );
    let until = Instant::now() + Duration::from_secs(args.duration_secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.clients)
        .map(|c| tokio::spawn(load(client.clone(), value.clone(), &args, c, until)))
        .collect();
    let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    let mut errors = 0;
    for t in tasks {
        if let Ok((h, e)) = t.await {
            let _ = hist.add(&h);
            errors += e;
        }
    }
    report(&args, start.elapsed().as_secs_f64(), &hist, errors, as_json);
    Ok(())
}

/// The system under load: the kvorum `client`, or etcd at the first endpoint.
fn target(client: Client, endpoints: &[String], args: &BenchArgs) -> Result<Target, ClientError> {
    if args.target != "etcd" {
        return Ok(Target::Kvorum(Box::new(client)));
    }
    let http = reqwest::Client::builder()
        .timeout(kvorum_client::DEFAULT_REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| ClientError::Unavailable(format!("cannot build HTTP client: {e}")))?;
    let first = endpoints.first().cloned().unwrap_or_default();
    Ok(Target::Etcd {
        http,
        base: format!("http://{first}"),
    })
}

/// Client number `c`: one request at a time on random keys until `until`; returns its latency
/// histogram (microseconds) and its error count.
fn load(
    client: Arc<Target>,
    value: Arc<str>,
    args: &BenchArgs,
    c: usize,
    until: Instant,
) -> impl std::future::Future<Output = (Histogram<u64>, u64)> {
    let op = args.op.clone();
    let (keys, stale, seed) = (args.keys, args.stale, args.seed.wrapping_add(c as u64));
    async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
        let mut errors = 0u64;
        while Instant::now() < until {
            let key = format!("bench-{}", rng.gen_range(0..keys));
            let t = Instant::now();
            let r = if op == "put" {
                client.put(&key, &value).await
            } else {
                client.get(&key, stale).await
            };
            match r {
                Ok(()) => {
                    let _ = hist.record(t.elapsed().as_micros() as u64);
                }
                Err(_) => errors += 1,
            }
        }
        (hist, errors)
    }
}

/// Prints the run's throughput and latencies, as JSON or as one line.
fn report(args: &BenchArgs, secs: f64, hist: &Histogram<u64>, errors: u64, as_json: bool) {
    let ops = hist.len();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    if as_json {
        println!(
            "{}",
            json!({
                "target": args.target, "op": args.op, "clients": args.clients, "seconds": secs, "ops": ops, "errors": errors,
                "ops_per_sec": ops as f64 / secs, "p50_ms": ms(0.5), "p99_ms": ms(0.99),
                "p999_ms": ms(0.999), "max_ms": hist.max() as f64 / 1000.0,
            })
        );
    } else {
        println!(
            "{} {} clients={} ops={} errors={} throughput={:.0} ops/s p50={:.2} ms p99={:.2} ms p99.9={:.2} ms max={:.2} ms",
            args.target,
            args.op,
            args.clients,
            ops,
            errors,
            ops as f64 / secs,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            hist.max() as f64 / 1000.0
        );
    }
}
