//! `kvctl add-node`, `kvctl remove-node` and `kvctl task`: start a view change, follow its task,
//! cancel it.
//!
//! Steps of `add-node ADDR` / `remove-node ID|ADDR`:
//! 1. (remove by address) resolve the address to a node id in the cluster map;
//! 2. start the change; a refusal prints `error: <code>: <message>` and exits 2;
//! 3. with `--no-wait`, print the task id and how to follow it, and exit 0;
//! 4. otherwise poll the task until it is final, showing progress on stderr (a progress bar on a
//!    terminal, else one line per step), and print one line on stdout: exit 0 when done, 1 when
//!    failed or cancelled. Ctrl-C stops waiting (exit 130) and never cancels the task.
//!
//! With `--json`, stdout holds one JSON object only: the task's final progress (with
//! `--no-wait`, or `task` without `--wait`, the first). Formatting is pure and tested here.

use std::io::IsTerminal;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};
use kvorum_client::{Client, ClientError, TaskProgress, TaskState, ViewChange};

/// How often a running task is polled.
const TASK_POLL: Duration = Duration::from_millis(500);

/// How often the progress bar redraws by itself (spinner, elapsed time) between polls.
const BAR_TICK: Duration = Duration::from_millis(120);

/// Exit code when the task ended failed or cancelled.
const EXIT_NOT_DONE: u8 = 1;

/// Exit code when the cluster (or kvctl) refused the request: nothing was started.
const EXIT_REFUSED: u8 = 2;

/// Exit code when Ctrl-C stopped the wait (128 + SIGINT, as shells report it).
const EXIT_INTERRUPTED: u8 = 130;

/// `kvctl add-node ADDR`.
pub async fn add_node(client: &Client, addr: &str, no_wait: bool, json: bool) -> Exit {
    let first = client.add_node(addr).await;
    start(client, first, no_wait, json).await
}

/// `kvctl remove-node ID|ADDR`.
pub async fn remove_node(client: &Client, node: &str, no_wait: bool, json: bool) -> Exit {
    let first = match client.resolve_node(node).await {
        Ok(id) => client.remove_node(id).await,
        Err(e) => Err(e),
    };
    start(client, first, no_wait, json).await
}

/// `kvctl task ID [--cancel] [--wait]`.
pub async fn task(client: &Client, id: u64, wait: bool, cancel: bool, json: bool) -> Exit {
    let shown = if cancel {
        client.cancel_task(id).await
    } else {
        client.task(id).await
    };
    let p = match shown {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    if wait {
        return follow(client, p, json).await;
    }
    if json {
        print_json(&p);
    } else {
        print!("{}", render_task(&p, now_ms()));
    }
    Ok(0)
}

/// A command's exit code, or a client error for `main` to report (exit 1, or 5 for an unknown
/// outcome).
pub type Exit = Result<u8, ClientError>;

/// After the start of a change: report a refusal, or follow the task (or not, with `no_wait`).
async fn start(
    client: &Client,
    first: Result<TaskProgress, ClientError>,
    no_wait: bool,
    json: bool,
) -> Exit {
    let first = match first {
        Ok(p) => p,
        Err(ClientError::OutcomeUnknown(m)) => {
            return Err(ClientError::OutcomeUnknown(format!(
                "{m} (the change may or may not have started: `kvctl status` lists running tasks)"
            )))
        }
        Err(e) => return refused(e),
    };
    if no_wait {
        if json {
            print_json(&first);
        } else {
            println!(
                "task {id} started: {change}; follow it with kvctl task {id} --wait",
                id = first.id,
                change = describe_change(&first)
            );
        }
        return Ok(0);
    }
    follow(client, first, json).await
}

/// Prints a refusal (`error: <code>: <message>`, and the running task for
/// `change_in_progress`) and exits 2; other errors go to `main`.
pub fn refused(e: ClientError) -> Exit {
    match e {
        ClientError::ChangeInProgress { task, message } => {
            eprintln!(
                "{}",
                refusal_text("change_in_progress", &message, Some(task))
            );
            Ok(EXIT_REFUSED)
        }
        ClientError::Api {
            status,
            code,
            message,
        } if status == 0 || (400..500).contains(&status) => {
            eprintln!("{}", refusal_text(&code, &message, None));
            Ok(EXIT_REFUSED)
        }
        e => Err(e),
    }
}

/// Waits for the task of `first` to be final, reporting progress on stderr, then prints the
/// outcome. Ctrl-C stops the wait only.
async fn follow(client: &Client, first: TaskProgress, json: bool) -> Exit {
    let id = first.id;
    let mut reporter = Reporter::new(std::io::stderr().is_terminal());
    reporter.update(&first);
    let waited = {
        let wait = client.wait_task(id, TASK_POLL, |p| reporter.update(p));
        tokio::select! {
            r = wait => Some(r),
            // Registering the handler can fail only without signal support: then wait on.
            Ok(()) = tokio::signal::ctrl_c() => None,
        }
    };
    // Interrupted, the bar stays where the task was; finished, the result line replaces it.
    reporter.finish(waited.is_none());
    let Some(last) = waited else {
        eprintln!("task {id} continues in the cluster; follow it with kvctl task {id} --wait");
        return Ok(EXIT_INTERRUPTED);
    };
    let last = last?;
    if json {
        print_json(&last);
    }
    if last.state == TaskState::Done {
        if !json {
            println!("{}", success_line(&last));
        }
        Ok(0)
    } else {
        eprintln!("error: {}", failure_line(&last));
        Ok(EXIT_NOT_DONE)
    }
}

/// Prints `reply` as one line of JSON.
pub fn print_json(reply: &impl serde::Serialize) {
    match serde_json::to_string(reply) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("kvctl: cannot print the reply as JSON: {e}"),
    }
}

/// Shows a task's progress on stderr while waiting: a bar on a terminal, else one line each
/// time the step or state changes.
struct Reporter {
    bar: Option<ProgressBar>,
    /// The step and state last printed (plain mode).
    last: Option<(u64, String, TaskState)>,
}

impl Reporter {
    fn new(terminal: bool) -> Reporter {
        let bar = terminal.then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed}] [{bar:30}] {pos}/{len} slots, {prefix}, ETA {eta}\n  {msg}",
            )
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(BAR_TICK);
            bar
        });
        Reporter { bar, last: None }
    }

    fn update(&mut self, p: &TaskProgress) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(p.slots_total);
                bar.set_position(p.slots_moved);
                bar.set_prefix(transfer_text(p, now_ms()));
                bar.set_message(step_text(p));
            }
            None => {
                let now = (p.step, p.step_name.clone(), p.state);
                if self.last.as_ref() != Some(&now) {
                    eprintln!("{}", step_line(p));
                    self.last = Some(now);
                }
            }
        }
    }

    /// Stops the bar: left on screen if `keep`, else cleared.
    fn finish(&mut self, keep: bool) {
        if let Some(bar) = self.bar.take() {
            if keep {
                bar.abandon();
            } else {
                bar.finish_and_clear();
            }
        }
    }
}

/// The refusal's text: `error: <code>: <message>`, plus the running task and how to follow it
/// for `change_in_progress`.
pub fn refusal_text(code: &str, message: &str, task: Option<u64>) -> String {
    let mut out = format!("error: {code}: {message}");
    if let Some(t) = task {
        out.push_str(&format!(
            "\ntask {t} is running; follow it with kvctl task {t} --wait"
        ));
    }
    out
}

/// What the change does: `add node 127.0.0.7:7070 (node 7)`, `remove node 3`.
pub fn describe_change(p: &TaskProgress) -> String {
    match &p.change {
        ViewChange::AddNode { addr } => match p.node {
            Some(n) => format!("add node {addr} (node {n})"),
            None => format!("add node {addr}"),
        },
        ViewChange::RemoveNode { node } => format!("remove node {node}"),
    }
}

/// The success line: `node 7 added at 127.0.0.7:7070: 1365 slots moved (12.3 MB) in 14.2 s;
/// epoch 42`.
pub fn success_line(p: &TaskProgress) -> String {
    let what = match &p.change {
        ViewChange::AddNode { addr } => match p.node {
            Some(n) => format!("node {n} added at {addr}"),
            None => format!("node added at {addr}"),
        },
        ViewChange::RemoveNode { node } => format!("node {node} removed"),
    };
    format!(
        "{what}: {} slots moved ({}) in {}; epoch {}",
        p.slots_moved,
        decimal_bytes(p.bytes_moved),
        duration_text(task_elapsed_ms(p, p.started_ms)),
        p.epoch
    )
}

/// The number of the step the task is at, from 1: `step` counts the completed steps, so the
/// current one is the next (all of them once done).
pub fn current_step(p: &TaskProgress) -> u64 {
    if p.state == TaskState::Done {
        p.steps
    } else {
        (p.step + 1).min(p.steps)
    }
}

/// Why the change did not complete: `task 3 (add node ...) failed at step 4/7 (...): <error>`
/// or `task 3 (...) was cancelled at step 4/7; ...`.
pub fn failure_line(p: &TaskProgress) -> String {
    let at = format!("step {}/{} ({})", current_step(p), p.steps, p.step_name);
    let head = format!("task {} ({})", p.id, describe_change(p));
    match p.state {
        TaskState::Cancelled => format!(
            "{head} was cancelled at {at}; what was done stays valid, the change did not complete"
        ),
        TaskState::Failed => format!(
            "{head} failed at {at}: {}",
            p.error.as_deref().unwrap_or("no reason given")
        ),
        other => format!("{head} is {other} at {at}"),
    }
}

/// The current step for people: `step 2/5: move slots 1366..=2047 from group 1 to group 3`
/// (with the state when it is not `running`).
pub fn step_text(p: &TaskProgress) -> String {
    let state = match p.state {
        TaskState::Running => String::new(),
        other => format!(" [{other}]"),
    };
    format!(
        "step {}/{}: {}{state}",
        current_step(p),
        p.steps,
        p.step_name
    )
}

/// One plain progress line (stderr when it is not a terminal):
/// `task 3: step 2/5: move ... (682/1365 slots, 12.3 MB)`.
pub fn step_line(p: &TaskProgress) -> String {
    format!(
        "task {}: {} ({}/{} slots, {})",
        p.id,
        step_text(p),
        p.slots_moved,
        p.slots_total,
        decimal_bytes(p.bytes_moved)
    )
}

/// Bytes moved and the average rate since the task started: `12.3 MB at 1.2 MB/s`.
pub fn transfer_text(p: &TaskProgress, now_ms: u64) -> String {
    let elapsed = task_elapsed_ms(p, now_ms);
    if elapsed == 0 {
        return decimal_bytes(p.bytes_moved);
    }
    let rate = (p.bytes_moved as f64 * 1000.0 / elapsed as f64) as u64;
    format!(
        "{} at {}/s",
        decimal_bytes(p.bytes_moved),
        decimal_bytes(rate)
    )
}

/// `kvctl task ID`: the task's change, state, step, slots, bytes, start and elapsed time.
pub fn render_task(p: &TaskProgress, now_ms: u64) -> String {
    let mut out = format!("task {}: {}\n", p.id, describe_change(p));
    let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<9}{v}\n"));
    row("state", p.state.to_string());
    row(
        "step",
        format!("{}/{} {}", current_step(p), p.steps, p.step_name),
    );
    row(
        "slots",
        format!("{}/{} moved", p.slots_moved, p.slots_total),
    );
    row(
        "data",
        format!("{} ({} keys)", transfer_text(p, now_ms), p.keys_moved),
    );
    row("started", utc_time(p.started_ms));
    row("elapsed", duration_text(task_elapsed_ms(p, now_ms)));
    row("epoch", p.epoch.to_string());
    if let Some(e) = &p.error {
        row("error", e.clone());
    }
    out
}

/// How long the task ran: until it finished, or until `now_ms` while it runs.
fn task_elapsed_ms(p: &TaskProgress, now_ms: u64) -> u64 {
    p.finished_ms.unwrap_or(now_ms).saturating_sub(p.started_ms)
}

/// A byte count in decimal units, as disks and networks count: `512 B`, `12.3 MB`.
pub fn decimal_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < UNITS.len() {
        size /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// A duration for people: `14.2 s`, `3 min 12 s`, `2 h 05 min`.
pub fn duration_text(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else if s < 3600 {
        format!("{} min {} s", s / 60, s % 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    }
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC`.
pub fn utc_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm), for days >= 0.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(state: TaskState) -> TaskProgress {
        TaskProgress {
            bytes_moved: 12_300_000,
            change: ViewChange::AddNode {
                addr: "127.0.0.7:7070".into(),
            },
            epoch: 42,
            error: None,
            finished_ms: state.is_final().then_some(1_700_000_014_200),
            id: 3,
            keys_moved: 4_000,
            node: Some(7),
            slots_moved: 1365,
            slots_total: 1365,
            started_ms: 1_700_000_000_000,
            state,
            step: 7,
            step_name: "clean up group 1".into(),
            steps: 7,
        }
    }

    // The success line names the node, its address, slots and bytes moved, the task's own
    // duration (start to finish) and the new epoch.
    #[test]
    fn success_line_summarizes_the_change() {
        assert_eq!(
            success_line(&added(TaskState::Done)),
            "node 7 added at 127.0.0.7:7070: 1365 slots moved (12.3 MB) in 14.2 s; epoch 42"
        );
        let mut removed = added(TaskState::Done);
        removed.change = ViewChange::RemoveNode { node: 3 };
        removed.slots_moved = 0;
        removed.bytes_moved = 0;
        removed.finished_ms = Some(removed.started_ms + 300);
        assert_eq!(
            success_line(&removed),
            "node 3 removed: 0 slots moved (0 B) in 0.3 s; epoch 42"
        );
    }

    // A failure names the task, the change, the step and the reason; a cancel says that what
    // was done stays valid.
    #[test]
    fn failure_line_names_the_reason() {
        let mut p = added(TaskState::Failed);
        p.step = 3;
        p.step_name = "move slots 0..=681 from group 1 to group 3".into();
        p.error = Some("group 3 lost its quorum".into());
        assert_eq!(
            failure_line(&p),
            "task 3 (add node 127.0.0.7:7070 (node 7)) failed at step 4/7 (move slots 0..=681 \
             from group 1 to group 3): group 3 lost its quorum"
        );
        p.state = TaskState::Cancelled;
        assert!(failure_line(&p).ends_with(
            "was cancelled at step 4/7 (move slots 0..=681 from group 1 to group 3); what was \
             done stays valid, the change did not complete"
        ));
    }

    // Progress while waiting: the step (and a non-running state), slots and bytes; the rate is
    // the average since the task started, and absent at its first instant.
    #[test]
    fn progress_texts_show_step_slots_bytes_and_rate() {
        let mut p = added(TaskState::Running);
        p.step = 1;
        p.step_name = "move slots 1366..=2047 from group 1 to group 3".into();
        p.slots_moved = 682;
        assert_eq!(
            step_line(&p),
            "task 3: step 2/7: move slots 1366..=2047 from group 1 to group 3 (682/1365 slots, \
             12.3 MB)"
        );
        p.state = TaskState::Cancelling;
        assert_eq!(
            step_text(&p),
            "step 2/7: move slots 1366..=2047 from group 1 to group 3 [cancelling]"
        );
        assert_eq!(
            transfer_text(&p, p.started_ms + 10_000),
            "12.3 MB at 1.2 MB/s"
        );
        assert_eq!(transfer_text(&p, p.started_ms), "12.3 MB");
    }

    // `kvctl task` shows every field a person needs, one per row.
    #[test]
    fn task_is_rendered_with_its_fields() {
        let mut p = added(TaskState::Running);
        p.step = 1;
        p.slots_moved = 682;
        assert_eq!(
            render_task(&p, p.started_ms + 61_000),
            "task 3: add node 127.0.0.7:7070 (node 7)\n\
             \x20 state    running\n\
             \x20 step     2/7 clean up group 1\n\
             \x20 slots    682/1365 moved\n\
             \x20 data     12.3 MB at 201.6 kB/s (4000 keys)\n\
             \x20 started  2023-11-14 22:13:20 UTC\n\
             \x20 elapsed  1 min 1 s\n\
             \x20 epoch    42\n"
        );
        p.state = TaskState::Failed;
        p.error = Some("disk full".into());
        assert!(render_task(&p, 0).ends_with("  error    disk full\n"));
    }

    // `step` counts completed steps: the one running is the next; a done task is at its last.
    #[test]
    fn current_step_is_the_one_running() {
        let mut p = added(TaskState::Running);
        p.step = 0;
        assert_eq!(current_step(&p), 1);
        p.step = 7;
        assert_eq!(current_step(&p), 7, "never past the last");
        p.state = TaskState::Done;
        assert_eq!(current_step(&p), 7);
        p.steps = 0;
        p.step = 0;
        assert_eq!(current_step(&p), 0, "a plan without steps");
    }

    // Refusals print the stable code and message, and for change_in_progress the running task.
    #[test]
    fn refusal_names_the_code_and_the_running_task() {
        assert_eq!(
            refusal_text("address_in_use", "node 2 has that address", None),
            "error: address_in_use: node 2 has that address"
        );
        assert_eq!(
            refusal_text("change_in_progress", "a change is running", Some(5)),
            "error: change_in_progress: a change is running\n\
             task 5 is running; follow it with kvctl task 5 --wait"
        );
    }

    // Units and clocks.
    #[test]
    fn units_and_times_are_formatted_for_people() {
        assert_eq!(decimal_bytes(0), "0 B");
        assert_eq!(decimal_bytes(999), "999 B");
        assert_eq!(decimal_bytes(1_500), "1.5 kB");
        assert_eq!(decimal_bytes(3_200_000_000), "3.2 GB");
        assert_eq!(duration_text(14_200), "14.2 s");
        assert_eq!(duration_text(192_000), "3 min 12 s");
        assert_eq!(duration_text(7_500_000), "2 h 05 min");
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}
