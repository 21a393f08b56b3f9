//! A run's folder and report: where runs go, the nemesis timeline, and at the end the node logs
//! copied in, the checker's report written (text and HTML) and the summary lines printed.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kvorum_checker::CheckOptions;

use super::final_reads::{final_read_ids, lost_acks, ok_counts};
use super::setup::Run;
use super::{MembershipStats, Outcome};

/// The folder of the runs' folders: `KVORUM_JEPSEN_DIR`, or `jepsen` next to the test binary's
/// folder.
pub(super) fn runs_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KVORUM_JEPSEN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("jepsen"))
        .unwrap_or_else(|| PathBuf::from("jepsen"))
}

/// A nemesis event log, with times relative to the run's start.
pub(super) struct Timeline {
    pub(super) out: Mutex<std::fs::File>,
    pub(super) start: Instant,
}

impl Timeline {
    /// Writes `what` with the time since the run's start.
    pub(super) fn log(&self, what: &str) {
        let t = self.start.elapsed().as_secs_f64();
        let mut f = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(f, "{t:9.3}s {what}");
    }
}

/// What a run gathered by its end, besides its [`Run`], for the report.
pub(super) struct Ended {
    pub(super) faults: usize,
    pub(super) fault_time: Duration,
    pub(super) final_status: crate::ClusterStatus,
    /// Per key, the process whose final read succeeded.
    pub(super) final_procs: BTreeMap<String, u64>,
    pub(super) membership: MembershipStats,
    pub(super) scenario: Option<String>,
}

/// Node logs, snapshot and fatal-stop lines found in them.
struct LogCounts {
    snapshots_built: usize,
    snapshots_installed: usize,
    fatal_stops: Vec<String>,
}

/// Ends a run: keeps the node logs in its folder, heals any partition, judges the history,
/// writes the report and prints the summary. Returns the outcome; the cluster stops when `run`
/// is dropped, after.
pub(super) async fn finish(mut run: Run, ended: Ended) -> Outcome {
    let dir = run.dir.clone();
    copy_logs(&run).await;
    drop(run.partitioner.take());
    let file = std::fs::File::open(dir.join("history.jsonl")).expect("history");
    let history =
        kvorum_checker::parse_history(std::io::BufReader::new(file)).expect("valid history");
    let ops = history.len();
    let per_key = ok_counts(&history);
    let final_reads_failed: Vec<String> = run
        .keys
        .iter()
        .filter(|k| !ended.final_procs.contains_key(*k))
        .cloned()
        .collect();
    let final_reads = final_read_ids(&history, &ended.final_procs);
    let lost = lost_acks(&history, &final_reads);
    let logs = scan_logs(&dir);
    let report = kvorum_checker::check(
        &history,
        &CheckOptions {
            time_limit: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let _ = std::fs::write(dir.join("report.txt"), report.to_text());
    let _ = std::fs::write(dir.join("report.html"), report.to_html());
    let outcome = Outcome {
        dir,
        report,
        ops,
        per_key,
        final_reads_failed,
        lost_acks: lost,
        faults: ended.faults,
        fault_time: ended.fault_time,
        snapshots_built: logs.snapshots_built,
        snapshots_installed: logs.snapshots_installed,
        fatal_stops: logs.fatal_stops,
        final_status: ended.final_status,
        membership: ended.membership,
        scenario: ended.scenario,
    };
    print_summary(&run, &outcome);
    outcome
}

/// Keeps the node logs (and lazyfs logs, and the logs of nodes started to join) with the run.
async fn copy_logs(run: &Run) {
    let dir = &run.dir;
    let c = run.cluster.lock().await;
    for n in &c.nodes {
        let _ = std::fs::copy(&n.log, dir.join(format!("node{}.log", n.id)));
    }
    for (i, m) in c.mounts.iter().enumerate() {
        let _ = std::fs::copy(&m.log, dir.join(format!("lazyfs{}.log", i + 1)));
    }
    for x in &run.members.lock().extras {
        let name = x.log.file_name().map(|f| f.to_string_lossy().into_owned());
        let _ = std::fs::copy(&x.log, dir.join(name.unwrap_or_default()));
    }
}

/// Counts "built snapshot" / "installed snapshot" lines and lists the fatal stops ("replica
/// stopped on a fatal error", as `file: line`) in the `.log` files of `dir`.
fn scan_logs(dir: &Path) -> LogCounts {
    let (mut snapshots_built, mut snapshots_installed) = (0, 0);
    let mut fatal_stops = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                snapshots_built += text.matches("built snapshot").count();
                snapshots_installed += text.matches("installed snapshot").count();
                let file = e.file_name().to_string_lossy().into_owned();
                fatal_stops.extend(
                    text.lines()
                        .filter(|l| l.contains("replica stopped on a fatal error"))
                        .map(|l| format!("{file}: {l}")),
                );
            }
        }
    }
    LogCounts {
        snapshots_built,
        snapshots_installed,
        fatal_stops,
    }
}

/// Prints the run's verdict, the summary line for scripts (stdout), the `ok` operations per key,
/// every lost ack and fatal stop, and what the membership nemesis did.
fn print_summary(run: &Run, out: &Outcome) {
    let opts = &run.opts;
    let (ops, faults, report) = (out.ops, out.faults, &out.report);
    let per_key = &out.per_key;
    let (ok_reads, ok_writes) = per_key
        .values()
        .fold((0, 0), |(r, w), c| (r + c.reads, w + c.writes));
    eprintln!(
        "jepsen {}: {} operations, {} faults, verdict {:?} ({})",
        opts.name,
        ops,
        faults,
        report.verdict,
        out.dir.join("report.txt").display()
    );
    let (snapshots_built, snapshots_installed) = (out.snapshots_built, out.snapshots_installed);
    // One line for scripts (scripts/soak.sh), on stdout so that it shows in a test summary.
    println!(
        "jepsen-summary name={} seed={} ops={ops} ok_reads={ok_reads} ok_writes={ok_writes} \
         faults={faults} fault_secs={:.1} lost_acks={} final_reads_failed={} \
         snapshots_built={snapshots_built} snapshots_installed={snapshots_installed} verdict={:?}",
        opts.name,
        opts.seed,
        out.fault_time.as_secs_f64(),
        out.lost_acks.len(),
        out.final_reads_failed.len(),
        report.verdict
    );
    eprintln!("jepsen {}: ok operations per key {per_key:?}", opts.name);
    for l in &out.lost_acks {
        eprintln!("jepsen {}: LOST ACK {l}", opts.name);
    }
    for l in &out.fatal_stops {
        eprintln!("jepsen {}: FATAL STOP {l}", opts.name);
    }
    if run.membership {
        let membership_stats = &out.membership;
        eprintln!("jepsen {}: membership {membership_stats:?}", opts.name);
    }
}
