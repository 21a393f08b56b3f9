//! `kvctl`: the kvorum command-line client and admin tool, over the client library.
//!
//! Exit codes: 0 success; 1 error (unreachable, refused, internal); 2 usage error; 3 key not
//! found; 4 condition failed; 5 outcome unknown (the write may or may not have happened).
//! `kvctl check` has its own: 0 linearizable, 1 not linearizable, 2 unknown or invalid input.
//! So do the view-change commands (`add-node`, `remove-node`, `task`): 0 done (or started, with
//! `--no-wait`; or shown); 1 the task failed or was cancelled (or the cluster was unreachable);
//! 2 refused, nothing started (`error: <code>: <message>` on stderr); 5 the start's outcome is
//! unknown; 130 interrupted while waiting (the task goes on in the cluster). `kvctl drain`: 0
//! the node leads no group, 1 a leadership stayed (or the node did not answer), 2 refused.

mod bench;
mod drain;
mod nodes;
mod status;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kvorum_client::{parse_endpoints, Client, ClientError, ClientOptions, Condition};
use kvorum_wire::{DeleteReply, KeyReply, WriteReply};

/// Client and admin tool of a kvorum cluster.
#[derive(Parser, Debug)]
#[command(name = "kvctl", version)]
struct Cli {
    /// Nodes to talk to, comma-separated host:port; the next is tried when one is unreachable.
    #[arg(
        long,
        env = "KVORUM_ENDPOINTS",
        default_value = "127.0.0.1:7070",
        global = true
    )]
    endpoints: String,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Give up after this many ms of retrying an unavailable cluster.
    #[arg(long, default_value_t = 10_000, global = true)]
    timeout_ms: u64,
    /// Send every request to --endpoints (which forward it) instead of routing keys straight to
    /// their group by the cluster map.
    #[arg(long, global = true)]
    no_smart_routing: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print the value of KEY (alone, on stdout).
    Get {
        key: String,
        /// Read one replica's local state, possibly stale, without a read-index round.
        #[arg(long)]
        stale: bool,
    },
    /// Set KEY to VALUE, optionally only if a condition holds.
    Put {
        key: String,
        value: String,
        /// Only if the key's version is N (0: only if absent).
        #[arg(long, conflicts_with_all = ["expected_value", "if_absent"])]
        expected_version: Option<u64>,
        /// Only if the key's value is this.
        #[arg(long, conflicts_with = "if_absent")]
        expected_value: Option<String>,
        /// Only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
    },
    /// Remove KEY, optionally only if a condition holds.
    Delete {
        key: String,
        /// Only if the key's version is N.
        #[arg(long, conflicts_with = "expected_value")]
        expected_version: Option<u64>,
        /// Only if the key's value is this.
        #[arg(long)]
        expected_value: Option<String>,
    },
    /// Append VALUE to the value of KEY (absent counts as empty).
    Append { key: String, value: String },
    /// Show the cluster: epoch, K and slots; every node with its health, role and groups; every
    /// data group with its members, leader, term, slots, keys and size; spares, the config
    /// group, and tasks in progress. With --json, the status JSON, pretty-printed.
    Status,
    /// Check a recorded history (JSON Lines) for linearizability. Exit 0 linearizable,
    /// 1 not linearizable, 2 unknown, invalid input or nothing to check (no operation completed).
    /// With --json, stdout is one JSON object (verdict, per-key results, counterexample).
    Check {
        file: std::path::PathBuf,
        /// Also write a self-contained HTML report (timeline of the failing key) here.
        #[arg(long)]
        html: Option<std::path::PathBuf>,
        /// Give up (verdict unknown) after this many seconds.
        #[arg(long, default_value_t = 60)]
        time_limit_secs: u64,
        /// Give up (verdict unknown) when the search holds about this many MiB.
        #[arg(long, default_value_t = 1024)]
        memory_limit_mib: usize,
    },
    /// Load generator: run operations from many concurrent clients and report throughput and
    /// latency percentiles.
    Bench(bench::BenchArgs),
    /// Add the node at ADDR (running, waiting to join) to the cluster, and wait until the change
    /// is complete. Exit 0 done, 1 failed or cancelled, 2 refused, 130 stopped waiting (Ctrl-C
    /// never cancels the change).
    AddNode {
        /// The new node's address, ip:port.
        addr: String,
        /// Print the task's id and return at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Remove a node (by id, or by its ip:port) from the cluster for good, and wait until the
    /// change is complete. Exit codes as add-node.
    RemoveNode {
        /// The node's id or address.
        #[arg(value_name = "ID|ADDR")]
        node: String,
        /// Print the task's id and return at once instead of waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Before a planned stop (an upgrade, a reboot): keep repairs from replacing a node (by id,
    /// or by its ip:port) for MINUTES however long it is down, and hand the leadership of its
    /// groups to other replicas first. Exit 0 when it leads nothing any more (stop it now), 1
    /// when the drain is recorded but a leadership stayed, 2 refused.
    Drain {
        /// The node's id or address.
        #[arg(value_name = "ID|ADDR")]
        node: String,
        /// How long no repair replaces it, in minutes (1 to 10080; default 30).
        #[arg(long, conflicts_with = "end")]
        minutes: Option<u64>,
        /// End the node's drain now: repairs treat it as any node again.
        #[arg(long)]
        end: bool,
    },
    /// Check that every group's replicas hold the same data: each replica hashes its applied
    /// state at the same new log index, and the hashes are compared per group. Exit 0
    /// consistent, 1 a replica differs (named, with what to do) or a group could not be checked.
    CheckConsistency,
    /// Show a view-change task: state, step, slots and bytes moved, start and elapsed time.
    Task {
        id: u64,
        /// Wait until the task is final (exit 0 done, 1 failed or cancelled).
        #[arg(long)]
        wait: bool,
        /// Ask the task to stop safely: moves not yet released roll back, what was done stays
        /// valid. With --wait, wait for it to end.
        #[arg(long)]
        cancel: bool,
    },
}

/// The shortest request timeout of `kvctl drain`: a node hands off at most two leaderships,
/// each given up after 10 s.
const DRAIN_TIMEOUT_MS: u64 = 30_000;

/// Exit code for a client error.
fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NotFound => 3,
        ClientError::ConditionFailed { .. } => 4,
        ClientError::OutcomeUnknown(_) => 5,
        _ => 1,
    }
}

/// What to tell the user to do about an error.
fn advice(e: &ClientError) -> &'static str {
    match e {
        ClientError::NotFound => "",
        ClientError::ConditionFailed { .. } => {
            " (nothing was written; read the key and retry with its current version)"
        }
        ClientError::OutcomeUnknown(_) => {
            " (the write may or may not have happened; read the key before retrying)"
        }
        ClientError::Unavailable(_) => {
            " (check that the nodes in --endpoints are running and have a leader)"
        }
        ClientError::ChangeInProgress { .. } => {
            " (another view change is running: follow it with kvctl task ID --wait)"
        }
        ClientError::Api { .. } if !e.is_definite() => {
            " (if this was a write, it may or may not have happened: read the key before retrying)"
        }
        ClientError::Api { .. } => "",
    }
}

/// The `--json` text of a reply: one line, or pretty-printed.
fn json_text(v: &impl serde::Serialize, pretty: bool) -> Result<String, ClientError> {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    };
    text.map_err(|e| ClientError::Api {
        status: 0,
        code: "unprintable".into(),
        message: format!("cannot print the reply as JSON: {e}"),
    })
}

/// Runs a command and returns its exit code.
async fn run(cli: Cli) -> Result<u8, ClientError> {
    let (client, endpoints) = connect(&cli)?;
    let json = cli.json;
    match cli.cmd {
        Cmd::Get { key, stale } => get(&client, key, stale, json).await?,
        Cmd::Put {
            key,
            value,
            expected_version,
            expected_value,
            if_absent,
        } => {
            let expect = match (expected_version, expected_value, if_absent) {
                (Some(v), _, _) => Some(Condition::Version(v)),
                (_, Some(v), _) => Some(Condition::Value(Some(v))),
                (_, _, true) => Some(Condition::Version(0)),
                _ => None,
            };
            let version = client.put(&key, &value, expect).await?;
            print_version(key, version, json)?;
        }
        Cmd::Delete {
            key,
            expected_version,
            expected_value,
        } => {
            let expect = expected_version
                .map(Condition::Version)
                .or(expected_value.map(|v| Condition::Value(Some(v))));
            delete(&client, key, expect, json).await?;
        }
        Cmd::Append { key, value } => {
            let version = client.append(&key, &value).await?;
            print_version(key, version, json)?;
        }
        Cmd::Status => {
            let s = client.status().await?;
            if json {
                println!("{}", json_text(&s, true)?);
            } else {
                print!("{}", status::render(&s));
            }
        }
        Cmd::CheckConsistency => {
            let report = client.check_consistency().await?;
            if json {
                println!("{}", json_text(&report, true)?);
            } else {
                print!("{}", status::render_consistency(&report));
            }
            return Ok(if report.consistent() { 0 } else { 1 });
        }
        Cmd::Bench(args) => bench::run(client, endpoints, args, json).await?,
        Cmd::AddNode { addr, no_wait } => {
            return nodes::add_node(&client, &addr, no_wait, json).await
        }
        Cmd::RemoveNode { node, no_wait } => {
            return nodes::remove_node(&client, &node, no_wait, json).await
        }
        Cmd::Drain { node, minutes, end } => {
            return drain::drain(&client, &node, minutes, end, json).await
        }
        Cmd::Task { id, wait, cancel } => {
            return nodes::task(&client, id, wait, cancel, json).await
        }
        Cmd::Check { .. } => unreachable!("handled in main before connecting"),
    }
    Ok(0)
}

/// The client the global options describe, and the endpoints it was given.
fn connect(cli: &Cli) -> Result<(Client, Vec<String>), ClientError> {
    let endpoints = parse_endpoints(&cli.endpoints).map_err(|m| ClientError::Api {
        status: 0,
        code: "bad_endpoints".into(),
        message: m,
    })?;
    // A drain waits for the node's hand-offs, an election each.
    let least = match cli.cmd {
        Cmd::Drain { .. } => DRAIN_TIMEOUT_MS,
        _ => 1000,
    };
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(cli.timeout_ms.max(least)),
        retry_for: Duration::from_millis(cli.timeout_ms),
        local_address: None,
    };
    let client = Client::new(endpoints.clone(), opts)?.with_smart_routing(!cli.no_smart_routing);
    Ok((client, endpoints))
}

/// `kvctl get`: the value alone, or the key reply as JSON.
async fn get(client: &Client, key: String, stale: bool, json: bool) -> Result<(), ClientError> {
    let v = client.get(&key, stale).await?;
    if json {
        let reply = KeyReply {
            key,
            value: v.value,
            version: v.version,
        };
        println!("{}", json_text(&reply, false)?);
    } else {
        println!("{}", v.value);
    }
    Ok(())
}

/// `kvctl delete`: whether the key existed.
async fn delete(
    client: &Client,
    key: String,
    expect: Option<Condition>,
    json: bool,
) -> Result<(), ClientError> {
    let existed = client.delete(&key, expect).await?;
    if json {
        let reply = DeleteReply {
            deleted: existed,
            key,
        };
        println!("{}", json_text(&reply, false)?);
    } else if existed {
        println!("OK deleted");
    } else {
        println!("OK (the key did not exist)");
    }
    Ok(())
}

/// The outcome of `kvctl put` or `append`: the key's new version.
fn print_version(key: String, version: u64, json: bool) -> Result<(), ClientError> {
    if json {
        println!("{}", json_text(&WriteReply { key, version }, false)?);
    } else {
        println!("OK version={version}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Cmd::Check {
        file,
        html,
        time_limit_secs,
        memory_limit_mib,
    } = &cli.cmd
    {
        // Needs no cluster: the checker alone decides the exit code (0, 1 or 2).
        let opts = kvorum_checker::CheckOptions {
            time_limit: Duration::from_secs(*time_limit_secs),
            max_memory_bytes: memory_limit_mib.saturating_mul(1 << 20),
            ..Default::default()
        };
        let code = kvorum_checker::run_cli(
            file,
            &opts,
            html.as_deref(),
            cli.json,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kvctl: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("kvctl: {e}{}", advice(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}
