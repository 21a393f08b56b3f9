//! The membership nemesis: view changes (nodes added with `--join` and removed, groups created
//! and dissolved) while the workers run, each followed to its end, and the keys of a membership
//! run (half of them in slots the first change moves).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvorum_client::{ClientError, TaskProgress, TaskState};
use kvorum_router::{ClusterMap, ViewChange};
use kvorum_wire::{NodeRole, NodeState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::members::{Ctx, Endpoint};
use super::setup::Run;
use super::MembershipStats;
use crate::{group_of_key, spread_keys};

/// Mixed into the seed of the membership nemesis's choices, so they do not repeat the fault
/// schedule's.
const MEMBERSHIP_SEED_SALT: u64 = 0x6d65_6d62_6572;

/// What the membership nemesis does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Add,
    RemoveSpare,
    RemoveReplica,
}

/// A node a removal took from the workers' list: its id and, if the workers used it, its entry.
type Removing = Option<(u64, Option<Endpoint>)>;

/// A change the metadata leader was asked for.
struct Asked {
    /// How the timeline names it.
    what: String,
    /// The node a removal took out of the workers' list.
    removing: Removing,
    /// The leader's answer: the task, or a refusal.
    answer: Result<TaskProgress, ClientError>,
    /// The address of the node an add adds.
    added: Option<SocketAddr>,
}

/// Keys `{prefix}{n}` (n = 0, 1, …) whose slot satisfies `pick`, `count` of them.
pub fn keys_in_slots(prefix: &str, count: usize, pick: impl Fn(u16) -> bool) -> Vec<String> {
    (0u64..)
        .map(|n| format!("{prefix}{n}"))
        .filter(|k| pick(kvorum_router::slot_of(k.as_bytes()).0))
        .take(count)
        .collect()
}

/// The run's keys for a membership run: half of them in slots that the first planned change
/// (adding a node to `map`) moves, the rest spread over the groups.
pub(super) fn membership_keys(map: &ClusterMap, count: usize) -> Vec<String> {
    let change = ViewChange::AddNode {
        addr: "127.0.0.250:1".into(),
    };
    let target = match kvorum_router::plan(map, &change) {
        Ok(p) => p.target,
        Err(_) => return spread_keys(map, "k", count),
    };
    let moving = keys_in_slots("km", count.div_ceil(2), |s| {
        map.slots.get(usize::from(s)) != target.slots.get(usize::from(s))
    });
    let mut keys = spread_keys(map, "k", count - moving.len());
    keys.extend(moving);
    keys
}

/// Starts the membership nemesis of `run` as a task, until `end`, recording in `stats`.
pub(super) fn start(
    run: &Run,
    end: Instant,
    stats: Arc<Mutex<MembershipStats>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(membership_nemesis(
        run.ctx.clone(),
        StdRng::seed_from_u64(run.opts.seed ^ MEMBERSHIP_SEED_SALT),
        run.opts.quiet,
        end,
        run.opts.change_deadline,
        stats,
    ))
}

/// The membership nemesis: after each quiet period, one view change (the first adds a node, so
/// that groups are created and slots move at once; then add, remove a spare or remove a replica —
/// replaced by a spare if there is one, else its group is dissolved), each waited for up to
/// `deadline`. The node count stays within the initial count ± 1; any node may be removed, the
/// metadata leader included. Refusals and changes that end
/// `cancelled`/`failed` are recorded, never an error; a change not final by `deadline` is
/// recorded in `stuck`.
async fn membership_nemesis(
    ctx: Arc<Ctx>,
    mut rng: StdRng,
    period: Duration,
    end: Instant,
    deadline: Duration,
    stats: Arc<Mutex<MembershipStats>>,
) {
    let initial = ctx.members.present().len();
    let mut first = true;
    while Instant::now() + period <= end {
        tokio::time::sleep(period).await;
        let Ok(status) = ctx.members.admin().status().await else {
            ctx.log("membership: no status; skipped");
            continue;
        };
        let (kind, spares, replicas) = choose(&ctx, &status, &mut rng, initial, first);
        first = false;
        let before = ctx.map().await;
        let Some(asked) = ask(&ctx, &mut rng, kind, &spares, &replicas).await else {
            continue;
        };
        let Asked {
            what,
            removing,
            answer,
            added,
        } = asked;
        let p = match answer {
            Ok(p) => p,
            Err(e) => {
                ctx.log(&format!("membership: {what}: refused: {e}"));
                stats.lock().unwrap_or_else(|p| p.into_inner()).refused += 1;
                give_back(&ctx, removing);
                continue;
            }
        };
        stats.lock().unwrap_or_else(|p| p.into_inner()).started += 1;
        ctx.log(&format!(
            "membership: {what}: task {} started, {} slots to move",
            p.id, p.slots_total
        ));
        let Some(done) = ctx.wait_task(p.id, deadline).await else {
            let msg = format!("{what}: task {} not final within {deadline:?}", p.id);
            ctx.log(&format!("membership: STUCK {msg}"));
            stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .stuck
                .push(msg);
            // Leave the node claimed: the change may still be running.
            return;
        };
        settle(&ctx, &what, &done, removing, added, &stats);
        count_moved_keys(&ctx, before, &stats).await;
    }
}

/// The next change, from the status: add while the node count is at most the initial one (and
/// always first), remove a spare or a replica the workers use while it is at least the initial
/// one; returns it with the removable spares and replicas.
fn choose(
    ctx: &Ctx,
    status: &crate::ClusterStatus,
    rng: &mut StdRng,
    initial: usize,
    first: bool,
) -> (ChangeKind, Vec<u64>, Vec<u64>) {
    let active: Vec<&kvorum_wire::NodeStatus> = status
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Removed)
        .collect();
    let present: BTreeSet<u64> = ctx.members.present().iter().map(|(i, _)| *i).collect();
    // Any node the workers use, the metadata leader included (it hands its config seat over
    // and loses its leadership mid-change).
    let removable = |n: &&&kvorum_wire::NodeStatus| present.contains(&n.id);
    let spares: Vec<u64> = active
        .iter()
        .filter(|n| n.role == NodeRole::Spare)
        .filter(removable)
        .map(|n| n.id)
        .collect();
    let replicas: Vec<u64> = active
        .iter()
        .filter(|n| n.role == NodeRole::Replica)
        .filter(removable)
        .map(|n| n.id)
        .collect();
    let mut choices = Vec::new();
    if active.len() <= initial {
        choices.push(ChangeKind::Add);
    }
    if active.len() >= initial {
        if !spares.is_empty() {
            choices.push(ChangeKind::RemoveSpare);
        }
        if !replicas.is_empty() {
            choices.push(ChangeKind::RemoveReplica);
        }
    }
    let kind = if first || choices.is_empty() {
        ChangeKind::Add
    } else {
        choices[rng.gen_range(0..choices.len())]
    };
    (kind, spares, replicas)
}

/// Asks the metadata leader for a change of `kind`: an add of a node started to join, or the
/// removal of a random one of `spares` / `replicas` (taken out of the workers' list first).
/// `None` if it was not asked (the joiner did not come up; a fault holds the node).
async fn ask(
    ctx: &Ctx,
    rng: &mut StdRng,
    kind: ChangeKind,
    spares: &[u64],
    replicas: &[u64],
) -> Option<Asked> {
    match kind {
        ChangeKind::Add => match ctx.start_joiner().await {
            Ok(addr) => {
                let what = format!("add {addr}");
                ctx.log(&format!("membership: {what}"));
                let answer = ctx.members.admin().add_node(&addr.to_string()).await;
                Some(Asked {
                    what,
                    removing: None,
                    answer,
                    added: Some(addr),
                })
            }
            Err(e) => {
                ctx.log(&format!("membership: add: {e}"));
                None
            }
        },
        ChangeKind::RemoveSpare | ChangeKind::RemoveReplica => {
            let from = if kind == ChangeKind::RemoveSpare {
                spares
            } else {
                replicas
            };
            let id = from[rng.gen_range(0..from.len())];
            if !ctx.members.claim_change(id) {
                ctx.log(&format!(
                    "membership: remove node {id}: skipped (a fault holds it)"
                ));
                return None;
            }
            // The workers stop using it before it goes.
            let ep = ctx.members.take(id);
            let what = format!("remove node {id} ({kind:?})");
            ctx.log(&format!("membership: {what}"));
            let answer = ctx.members.admin().remove_node(id).await;
            Some(Asked {
                what,
                removing: Some((id, ep)),
                answer,
                added: None,
            })
        }
    }
}

/// Gives a node whose removal did not happen back to the workers and releases it.
fn give_back(ctx: &Ctx, removing: Removing) {
    if let Some((id, ep)) = removing {
        if let Some(ep) = ep {
            ctx.members.put(ep);
        }
        ctx.members.release_change(id);
    }
}

/// Records how the change `what` ended (`done`, its final progress): logs it, counts it, and
/// updates the nodes present (a removed node stays out, an added one enters the workers' list;
/// a removal not done gives its node back).
fn settle(
    ctx: &Ctx,
    what: &str,
    done: &TaskProgress,
    removing: Removing,
    added: Option<SocketAddr>,
    stats: &Mutex<MembershipStats>,
) {
    let took = Duration::from_millis(
        done.finished_ms
            .unwrap_or(done.started_ms)
            .saturating_sub(done.started_ms),
    );
    ctx.log(&format!(
        "membership: {what}: task {} {:?} in {took:?}: {}/{} slots, {} keys moved{}",
        done.id,
        done.state,
        done.slots_moved,
        done.slots_total,
        done.keys_moved,
        done.error
            .as_ref()
            .map(|e| format!("; error: {e}"))
            .unwrap_or_default()
    ));
    let is_done = done.state == TaskState::Done;
    {
        let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
        if is_done {
            s.done += 1;
        } else {
            s.not_done += 1;
        }
    }
    match (removing, added) {
        (Some((id, _)), _) if is_done => {
            ctx.members.lock().removed.insert(id);
            ctx.members.release_change(id);
        }
        (removing @ Some(_), _) => give_back(ctx, removing),
        (None, Some(addr)) => {
            if let (true, Some(id)) = (is_done, done.node) {
                ctx.members.put(Endpoint::new(id, addr));
            }
        }
        (None, None) => {}
    }
}

/// Logs which of the run's keys changed group between `before` and the map now, and counts the
/// change in `moved_run_keys` if any did.
async fn count_moved_keys(ctx: &Ctx, before: Option<ClusterMap>, stats: &Mutex<MembershipStats>) {
    // Which of the run's keys changed group.
    if let (Some(before), Some(after)) = (before, ctx.map().await) {
        let moved: Vec<&String> = ctx
            .keys
            .iter()
            .filter(|k| group_of_key(&before, k) != group_of_key(&after, k))
            .collect();
        ctx.log(&format!("membership: run keys that moved: {moved:?}"));
        if !moved.is_empty() {
            stats
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .moved_run_keys += 1;
        }
    }
}
