//! The fault nemeses of a run: kill, pause, kill-all, power loss, partition and isolate the
//! metadata leader, one fault after each quiet period on a seeded schedule, every fault healed
//! before the next.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::setup::Run;
use crate::nemesis::{connected, random_halves, Nemesis, PartitionShape};

/// The fault schedule as it goes: the run, its seeded choices, and what struck so far.
struct Faults<'a> {
    run: &'a Run,
    rng: StdRng,
    /// The run's nemeses other than the membership one.
    faults_of: Vec<Nemesis>,
    /// Each nemesis in turn, in a seeded order reshuffled every round, so every one of a mixed
    /// run's nemeses strikes.
    order: Vec<Nemesis>,
    /// Power cuts so far (they go one node, a minority, every node in turn).
    power_cuts: usize,
}

/// The node a fault hits: a random one or the leader of a group.
struct Target {
    /// 0-based index.
    index: usize,
    id: u64,
    /// The group whose leader was picked: 0 for the config group, `None` for a random node.
    leader_group: Option<u64>,
    /// How the timeline names it.
    what: String,
}

/// Strikes faults until `end` (none starts that could not heal by `end`): after each quiet
/// period, one fault of a seeded length in `fault_period..=fault_max`, on a random node or a
/// group's leader. Returns the faults that struck and their total time.
pub(super) async fn strike_until(run: &Run, end: Instant) -> (usize, Duration) {
    let faults_of: Vec<Nemesis> = run
        .opts
        .nemeses
        .iter()
        .copied()
        .filter(|n| *n != Nemesis::Membership)
        .collect();
    let mut f = Faults {
        run,
        rng: StdRng::seed_from_u64(run.opts.seed),
        faults_of,
        order: Vec::new(),
        power_cuts: 0,
    };
    let opts = &run.opts;
    let mut faults = 0;
    let mut fault_time = Duration::ZERO;
    loop {
        if f.faults_of.is_empty() {
            break;
        }
        let length = if opts.fault_max > opts.fault_period {
            f.rng.gen_range(opts.fault_period..=opts.fault_max)
        } else {
            opts.fault_period
        };
        if Instant::now() + opts.quiet + length > end {
            break;
        }
        tokio::time::sleep(opts.quiet).await;
        if f.order.is_empty() {
            f.order = f.faults_of.clone();
            f.order.shuffle(&mut f.rng);
        }
        let nemesis = f.order.remove(0);
        let target = f.pick_target().await;
        let began = Instant::now();
        if !f.strike(nemesis, &target, length).await {
            continue;
        }
        faults += 1;
        fault_time += began.elapsed();
    }
    (faults, fault_time)
}

impl Faults<'_> {
    /// A random node, or (half of the time, unless the run restricts its targets) the leader of
    /// a random group: 0 is the config group (the metadata leader), 1.. the data groups.
    async fn pick_target(&mut self) -> Target {
        let opts = &self.run.opts;
        let rng = &mut self.rng;
        let random = match &opts.targets {
            Some(t) if !t.is_empty() => t[rng.gen_range(0..t.len())],
            _ => rng.gen_range(0..opts.nodes),
        };
        let leader_group = (opts.targets.is_none() && rng.gen_bool(0.5))
            .then(|| rng.gen_range(0..=self.run.map.groups.len() as u64));
        let target = match leader_group {
            Some(g) => {
                let c = self.run.cluster.lock().await;
                let leader = if g == 0 {
                    c.metadata_leader().await
                } else {
                    c.group_leader(g).await
                };
                leader
                    .filter(|id| (1..=opts.nodes as u64).contains(id))
                    .map(|id| id as usize - 1)
                    .unwrap_or(random)
            }
            None => random,
        };
        let target_id = target as u64 + 1;
        let what = match leader_group {
            Some(0) => format!("node {target_id} (metadata leader)"),
            Some(g) => format!("node {target_id} (leader of group {g})"),
            None => format!("node {target_id}"),
        };
        Target {
            index: target,
            id: target_id,
            leader_group,
            what,
        }
    }

    /// Strikes `nemesis` at `target` for `length`, then heals it. False if it was skipped (a
    /// kill or pause of a node a view change holds or removed; no metadata leader known).
    async fn strike(&mut self, nemesis: Nemesis, target: &Target, length: Duration) -> bool {
        let run = self.run;
        let (timeline, members) = (&run.timeline, &run.members);
        let (what, target_id) = (&target.what, target.id);
        match nemesis {
            Nemesis::Kill | Nemesis::Pause if !members.claim_fault(target_id) => {
                timeline.log(&format!(
                    "{} {what}: skipped (in a view change or removed)",
                    nemesis.name()
                ));
                return false;
            }
            Nemesis::Kill => {
                timeline.log(&format!("kill {what} for {length:?}"));
                run.cluster.lock().await.kill(target.index);
                tokio::time::sleep(length).await;
                timeline.log(&format!("restart node {target_id}"));
                run.cluster.lock().await.restart(target.index);
                members.release_fault(target_id);
            }
            Nemesis::Pause => {
                timeline.log(&format!("pause {what} for {length:?}"));
                run.cluster.lock().await.pause(target.index, true);
                tokio::time::sleep(length).await;
                timeline.log(&format!("resume node {target_id}"));
                run.cluster.lock().await.pause(target.index, false);
                members.release_fault(target_id);
            }
            Nemesis::KillAll => self.kill_all(length).await,
            Nemesis::PowerLoss => self.power_loss(target, length).await,
            Nemesis::Partition => self.partition(target, length).await,
            Nemesis::IsolateMetadataLeader => return self.isolate_metadata_leader(length).await,
            Nemesis::Membership => unreachable!("filtered out above"),
        }
        true
    }

    /// Kills every node for `length`, then restarts them all.
    async fn kill_all(&mut self, length: Duration) {
        let (cluster, timeline) = (&self.run.cluster, &self.run.timeline);
        timeline.log(&format!("kill all nodes for {length:?}"));
        let mut c = cluster.lock().await;
        for i in 0..c.nodes.len() {
            c.kill(i);
        }
        drop(c);
        tokio::time::sleep(length).await;
        timeline.log("restart all nodes");
        let mut c = cluster.lock().await;
        for i in 0..c.nodes.len() {
            c.restart(i);
        }
    }

    /// Cuts the power of, in turn, `target`, a random minority, every node, for `length`; then
    /// restarts them on what they fsynced.
    async fn power_loss(&mut self, target: &Target, length: Duration) {
        let (cluster, timeline) = (&self.run.cluster, &self.run.timeline);
        // In turn: one node (random or a leader), a minority, every node.
        let n = self.run.opts.nodes;
        let victims: Vec<usize> = match self.power_cuts % 3 {
            0 => vec![target.index],
            1 => {
                let mut all: Vec<usize> = (0..n).collect();
                all.shuffle(&mut self.rng);
                all.truncate((n - 1) / 2);
                all
            }
            _ => (0..n).collect(),
        };
        self.power_cuts += 1;
        timeline.log(&format!(
            "power cut of nodes {:?} for {length:?}",
            victims.iter().map(|i| i + 1).collect::<Vec<_>>()
        ));
        cluster.lock().await.power_cut(&victims);
        tokio::time::sleep(length).await;
        timeline.log("power back: restart");
        let mut c = cluster.lock().await;
        for &i in &victims {
            c.restart(i);
        }
    }

    /// Cuts a seeded partition (random halves, `target` alone, every leader alone, or a
    /// majority ring) over the nodes present for `length`, then heals it.
    async fn partition(&mut self, target: &Target, length: Duration) {
        let run = self.run;
        let rng = &mut self.rng;
        let p = run.partitioner.as_ref().expect("partitioner");
        // Over the nodes present now (a membership nemesis adds and removes some).
        let present = run.members.present();
        let n = present.len();
        let ips: Vec<IpAddr> = present.iter().map(|(_, a)| a.ip()).collect();
        let index = |id: u64| present.iter().position(|(i, _)| *i == id);
        let mut side = random_halves(rng, n);
        let shape = match rng.gen_range(0..4) {
            0 => PartitionShape::RandomHalves,
            1 => PartitionShape::Isolate(
                target
                    .leader_group
                    .and(Some(target.id))
                    .and_then(index)
                    .unwrap_or(target.index.min(n.saturating_sub(1))),
            ),
            2 => {
                // The leader of every data group and the metadata leader, each alone.
                side = vec![false; n];
                let c = run.cluster.lock().await;
                let mut leaders = vec![c.metadata_leader().await];
                for g in 1..=run.map.groups.len() as u64 {
                    leaders.push(c.group_leader(g).await);
                }
                for i in leaders.into_iter().flatten().filter_map(index) {
                    side[i] = true;
                }
                PartitionShape::IsolateEach
            }
            _ => PartitionShape::MajorityRing,
        };
        run.timeline.log(&format!(
            "partition {shape:?} over nodes {:?} sides {side:?} for {length:?}",
            present.iter().map(|(i, _)| *i).collect::<Vec<_>>()
        ));
        p.cut(&ips, |a, b| connected(shape, n, &side, a, b))
            .expect("nft rules");
        tokio::time::sleep(length).await;
        run.timeline.log("heal partition");
        p.heal().expect("nft heal");
    }

    /// Cuts the metadata leader off the other config voters (it still reaches every other
    /// node) for `length`, then heals it. False if no metadata leader is known.
    async fn isolate_metadata_leader(&mut self, length: Duration) -> bool {
        let run = self.run;
        let (members, timeline) = (&run.members, &run.timeline);
        let p = run.partitioner.as_ref().expect("partitioner");
        let present = members.present();
        let n = present.len();
        let ips: Vec<IpAddr> = present.iter().map(|(_, a)| a.ip()).collect();
        let leader = run.cluster.lock().await.metadata_leader().await;
        let voters = match members.admin().map().await {
            Ok((m, _)) => m.config_voters,
            Err(_) => Default::default(),
        };
        let Some(x) = leader.and_then(|l| present.iter().position(|(i, _)| *i == l)) else {
            timeline.log("isolate the metadata leader: skipped (no leader known)");
            return false;
        };
        let side: Vec<bool> = present
            .iter()
            .map(|(i, _)| voters.contains(i) && Some(*i) != leader)
            .collect();
        timeline.log(&format!(
            "isolate the metadata leader {} from config voters {:?} for {length:?}",
            present[x].0,
            voters
                .iter()
                .filter(|v| Some(**v) != leader)
                .collect::<Vec<_>>()
        ));
        p.cut(&ips, |a, b| {
            connected(PartitionShape::Sever(x), n, &side, a, b)
        })
        .expect("nft rules");
        tokio::time::sleep(length).await;
        timeline.log("heal partition");
        p.heal().expect("nft heal");
        true
    }
}
