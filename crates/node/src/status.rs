//! The cluster status (`GET /v1/cluster/status`, `GET /internal/v1/status`).
//!
//! Steps: (1) the map, and whether health is known (this node leads the metadata role in a
//! term): then the health of each node and its last heartbeat; (2) for each group the best
//! leader report: from heartbeats on the metadata leader, else from this node's own replicas;
//! (3) [`assemble`], a pure function, builds the [`ClusterStatus`] from them.

use std::collections::BTreeMap;
use std::time::Instant;

use kvorum_router::map::{GroupInfo, NodeInfo};
use kvorum_router::{ClusterMap, GroupId, NodeId, NodeLifecycle, Task, TaskKind, CONFIG_GROUP};
use kvorum_wire::{
    ClusterStatus, ConfigStatus, GroupConsistency, GroupStatus, NodeRole, NodeState, NodeStatus,
    TaskStatus, REPLACE_REPLICA, VIEW_CHANGE,
};

use crate::meta::{
    best_reports, comparisons, is_metadata_leader, voter_sets, Health, Meta, ReplicaReport,
};

/// The metadata leader's view of the nodes, which only it has.
#[derive(Debug, Clone, Default)]
pub struct HealthView {
    /// The health of each active node.
    pub health: BTreeMap<NodeId, Health>,
    /// The last heartbeat of each node that sent one.
    pub beats: BTreeMap<NodeId, LastBeat>,
}

/// A node's last heartbeat, as the status shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastBeat {
    /// Milliseconds since it arrived (or since the start of the node's grace period).
    pub ago_ms: u64,
    /// Bytes of applied data over the replicas it reported.
    pub data_bytes: u64,
}

/// What [`assemble`] builds the status from.
#[derive(Debug, Clone)]
pub struct StatusInputs<'a> {
    /// The answering node's map.
    pub map: &'a ClusterMap,
    /// The answering node.
    pub me: NodeId,
    /// The cluster's id.
    pub cluster_id: &'a str,
    /// Whether the answering node leads the config group.
    pub leading: bool,
    /// The metadata leader's view; `None` (the fallback, `health_known: false`) unless this node
    /// leads the metadata role in a term.
    pub health: Option<HealthView>,
    /// The best leader report of each group (data or config), highest term first.
    pub best: BTreeMap<GroupId, ReplicaReport>,
    /// The metadata leader this node last heard of, if any.
    pub known_leader: Option<NodeId>,
    /// The last comparison of each group's replica hashes (the metadata leader's only).
    pub consistency: Vec<GroupConsistency>,
}

/// The cluster status from `inputs`. Pure: same inputs, same status.
pub fn assemble(inputs: &StatusInputs<'_>) -> ClusterStatus {
    let StatusInputs {
        map,
        me,
        cluster_id,
        leading,
        ref health,
        ref best,
        known_leader,
        ref consistency,
    } = *inputs;
    let nodes = map
        .nodes
        .iter()
        .map(|(id, n)| node_status(map, health.as_ref(), *id, n))
        .collect();
    let groups = map
        .groups
        .iter()
        .map(|(gid, g)| group_status(map, best.get(gid), *gid, g))
        .collect();
    let config = best.get(&CONFIG_GROUP);
    let tasks = map.tasks.iter().map(task_status).collect();
    let config_leader = if leading {
        Some(me)
    } else {
        config.and_then(|r| r.leader)
    };
    ClusterStatus {
        answered_by: me,
        cluster_id: cluster_id.to_string(),
        config: ConfigStatus {
            leader: config_leader,
            term: config.map(|r| r.term),
            voters: map.config_voters.iter().copied().collect(),
        },
        consistency: consistency.clone(),
        epoch: map.epoch,
        groups,
        hash: map.hash.clone(),
        health_known: health.is_some(),
        k: map.k,
        metadata_leader: if leading {
            Some(me)
        } else {
            config_leader.or(known_leader)
        },
        nodes,
        slot_count: map.slot_count,
        spares: map.spares(),
        tasks,
    }
}

/// One node's line of the status: its role and groups from `map`, its state from the metadata
/// leader's `health` view (unknown without one).
fn node_status(
    map: &ClusterMap,
    health: Option<&HealthView>,
    id: NodeId,
    n: &NodeInfo,
) -> NodeStatus {
    let state = if n.state == NodeLifecycle::Removed {
        NodeState::Removed
    } else {
        health
            .and_then(|h| h.health.get(&id))
            .map_or(NodeState::Unknown, |h| match h {
                Health::Alive => NodeState::Alive,
                Health::Suspect => NodeState::Suspect,
                Health::Dead => NodeState::Dead,
            })
    };
    let group = map.group_of_node(id);
    let beat = health.and_then(|h| h.beats.get(&id));
    NodeStatus {
        addr: n.addr.clone(),
        config_voter: map.config_voters.contains(&id),
        data_bytes: beat.map(|b| b.data_bytes),
        drain_until_ms: n.drain_until_ms.filter(|t| *t > crate::meta::now_ms()),
        groups: group.into_iter().collect(),
        id,
        last_heartbeat_ms: beat.map(|b| b.ago_ms),
        role: if group.is_some() {
            NodeRole::Replica
        } else {
            NodeRole::Spare
        },
        state,
    }
}

/// One group's line of the status: members and slots from `map`, leader, term and counts from
/// its best leader report `r`.
fn group_status(
    map: &ClusterMap,
    r: Option<&ReplicaReport>,
    gid: GroupId,
    g: &GroupInfo,
) -> GroupStatus {
    let ranges: Vec<String> = map
        .slot_ranges(gid)
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    GroupStatus {
        applied: r.and_then(|r| r.applied),
        bytes: r.and_then(|r| r.bytes),
        id: gid,
        keys: r.and_then(|r| r.keys),
        leader: r.and_then(|r| r.leader),
        members: g.members.iter().copied().collect(),
        slot_count: map.slot_count_of(gid),
        slots: ranges.join(","),
        term: r.map(|r| r.term),
        voters: r.map(|r| r.voters.clone()),
    }
}

/// One task's line of the status.
fn task_status(t: &Task) -> TaskStatus {
    match &t.kind {
        TaskKind::ReplaceReplica {
            group,
            dead,
            replacement,
        } => TaskStatus {
            change: None,
            dead: Some(*dead),
            group: Some(*group),
            id: t.id,
            kind: REPLACE_REPLICA.into(),
            replacement: Some(*replacement),
            slots_moved: None,
            slots_total: None,
            started_ms: Some(t.started_ms),
            step: t.step.to_string(),
            other: BTreeMap::new(),
        },
        TaskKind::ViewChange(v) => TaskStatus {
            change: Some(v.change.clone()),
            dead: None,
            group: None,
            id: t.id,
            kind: VIEW_CHANGE.into(),
            replacement: None,
            slots_moved: Some(v.slots_moved),
            slots_total: Some(v.slots_total),
            started_ms: Some(t.started_ms),
            step: v
                .steps
                .get(v.next)
                .map_or_else(|| "finishing".to_string(), crate::meta::describe),
            other: BTreeMap::new(),
        },
    }
}

/// The cluster status. Built by the metadata leader from heartbeats (`health_known`); a node
/// that cannot reach it builds one from its own map and replicas, with every node's state
/// "unknown".
pub fn status(meta: &Meta) -> ClusterStatus {
    let state = &*meta.node;
    let map = state.map();
    let leading = is_metadata_leader(state);
    let health_known = leading && meta.lock().led_term.is_some();
    let health = health_known.then(|| {
        meta.health(
            &map,
            state.id(),
            state.cfg.suspect_after,
            state.cfg.dead_after,
        )
    });
    let inner = meta.lock();
    let now = Instant::now();
    let health = health.map(|health| HealthView {
        health,
        beats: inner
            .seen
            .iter()
            .filter_map(|(id, s)| {
                let b = s.beat.as_ref()?;
                Some((
                    *id,
                    LastBeat {
                        ago_ms: now.duration_since(s.at).as_millis() as u64,
                        // The node's data: the sum over the replicas it hosts.
                        data_bytes: b.replicas.iter().filter_map(|r| r.bytes).sum(),
                    },
                ))
            })
            .collect(),
    });
    let best = if health_known {
        best_reports(&inner)
            .into_iter()
            .map(|(g, (_, r))| (g, r))
            .collect()
    } else {
        // Our own replicas are all we know.
        state
            .replicas()
            .into_iter()
            .filter_map(|(g, h)| {
                let m = h.raft.metrics().borrow().clone();
                let l = m.current_leader?;
                let r = ReplicaReport {
                    group: g,
                    is_leader: l == state.id(),
                    leader: Some(l),
                    term: m.current_term,
                    applied: m.last_applied.map(|x| x.index),
                    keys: None,
                    bytes: None,
                    voters: voter_sets(&m),
                    hash: None,
                };
                Some((g, r))
            })
            .collect()
    };
    let consistency = if health_known {
        comparisons(&inner, &map)
    } else {
        Vec::new()
    };
    drop(inner);
    assemble(&StatusInputs {
        map: &map,
        me: state.id(),
        cluster_id: &state.identity.cluster_id,
        leading,
        health,
        best,
        known_leader: state.known_metadata_leader(),
        consistency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvorum_router::{Task, TaskStep};

    /// Seven nodes, K=3: groups 1 = {1,2,3} and 2 = {4,5,6}, node 7 a spare.
    fn map7() -> ClusterMap {
        let view: Vec<String> = (1..=7).map(|i| format!("127.0.0.1:{}", 7069 + i)).collect();
        ClusterMap::initial(&view, 3).expect("valid view")
    }

    fn report(group: u64, leader: NodeId, term: u64, voters: Vec<Vec<NodeId>>) -> ReplicaReport {
        ReplicaReport {
            group: GroupId(group),
            is_leader: true,
            leader: Some(leader),
            term,
            applied: Some(10 * term),
            keys: Some(5),
            bytes: Some(500),
            voters,
            hash: None,
        }
    }

    fn inputs(map: &ClusterMap, health: Option<HealthView>) -> StatusInputs<'_> {
        StatusInputs {
            map,
            me: 1,
            cluster_id: "c1",
            leading: health.is_some(),
            health,
            best: BTreeMap::new(),
            known_leader: None,
            consistency: Vec::new(),
        }
    }

    fn all_alive(map: &ClusterMap) -> HealthView {
        HealthView {
            health: map.nodes.keys().map(|id| (*id, Health::Alive)).collect(),
            beats: BTreeMap::new(),
        }
    }

    // Group members are replicas, the rest spares; config voters are flagged; health and the
    // last heartbeat come from the metadata leader's view.
    #[test]
    fn nodes_have_roles_states_and_heartbeats() {
        let map = map7();
        let mut view = all_alive(&map);
        view.health.insert(5, Health::Dead);
        view.health.insert(6, Health::Suspect);
        view.beats.insert(
            2,
            LastBeat {
                ago_ms: 40,
                data_bytes: 1024,
            },
        );
        let s = assemble(&inputs(&map, Some(view)));
        assert!(s.health_known);
        let roles: Vec<(NodeId, NodeRole, NodeState, bool)> = s
            .nodes
            .iter()
            .map(|n| (n.id, n.role, n.state, n.config_voter))
            .collect();
        use {NodeRole::*, NodeState::*};
        assert_eq!(
            roles,
            vec![
                (1, Replica, Alive, true),
                (2, Replica, Alive, true),
                (3, Replica, Alive, true),
                (4, Replica, Alive, false),
                (5, Replica, Dead, false),
                (6, Replica, Suspect, false),
                (7, Spare, Alive, false),
            ]
        );
        assert_eq!(s.nodes[0].groups, vec![GroupId(1)]);
        assert_eq!(s.nodes[6].groups, vec![]);
        assert_eq!(s.spares, vec![7]);
        assert_eq!(
            (s.nodes[1].last_heartbeat_ms, s.nodes[1].data_bytes),
            (Some(40), Some(1024))
        );
        assert_eq!(
            (s.nodes[2].last_heartbeat_ms, s.nodes[2].data_bytes),
            (None, None)
        );
    }

    // Leaders, terms, sizes and voters come from each group's best report; both voter sets are
    // shown during a joint change; a group without a report has nulls; the config group's leader
    // is the answering node when it leads.
    #[test]
    fn groups_show_leaders_and_joint_voters() {
        let map = map7();
        let mut i = inputs(&map, Some(all_alive(&map)));
        i.best.insert(
            GroupId(1),
            report(1, 2, 4, vec![vec![1, 2, 3], vec![1, 2, 7]]),
        );
        i.best
            .insert(CONFIG_GROUP, report(0, 1, 3, vec![vec![1, 2, 3]]));
        let s = assemble(&i);
        let g1 = &s.groups[0];
        assert_eq!(
            (g1.id, g1.leader, g1.term, g1.applied, g1.keys, g1.bytes),
            (GroupId(1), Some(2), Some(4), Some(40), Some(5), Some(500))
        );
        assert_eq!(g1.voters, Some(vec![vec![1, 2, 3], vec![1, 2, 7]]));
        assert_eq!(g1.members, vec![1, 2, 3]);
        assert_eq!((g1.slots.as_str(), g1.slot_count), ("0-2047", 2048));
        let g2 = &s.groups[1];
        assert_eq!((g2.leader, g2.term, g2.voters.clone()), (None, None, None));
        assert_eq!(g2.slots, "2048-4095");
        assert_eq!(s.metadata_leader, Some(1));
        assert_eq!(
            s.config,
            ConfigStatus {
                leader: Some(1),
                term: Some(3),
                voters: vec![1, 2, 3]
            }
        );
    }

    // A replacement in progress is listed with its group, nodes, step and start.
    #[test]
    fn tasks_are_listed() {
        let mut map = map7();
        map.tasks.push(Task {
            id: 3,
            kind: TaskKind::ReplaceReplica {
                group: GroupId(2),
                dead: 5,
                replacement: 7,
            },
            step: TaskStep::AddLearner,
            started_ms: 1234,
            leader_term: 2,
        });
        let s = assemble(&inputs(&map, Some(all_alive(&map))));
        assert_eq!(
            s.tasks,
            vec![TaskStatus {
                change: None,
                dead: Some(5),
                group: Some(GroupId(2)),
                id: 3,
                kind: "replace_replica".into(),
                replacement: Some(7),
                slots_moved: None,
                slots_total: None,
                started_ms: Some(1234),
                step: "add_learner".into(),
                other: BTreeMap::new(),
            }]
        );
    }

    // Without the metadata leader's view: health unknown, every active node's state unknown
    // (removed ones stay removed), no heartbeat facts, and the metadata leader is the config
    // leader this node's replica knows, else the last one it heard of.
    #[test]
    fn fallback_when_health_is_unknown() {
        let mut map = map7();
        map.nodes.get_mut(&7).expect("node 7").state = NodeLifecycle::Removed;
        let mut i = inputs(&map, None);
        i.me = 4;
        i.known_leader = Some(3);
        let s = assemble(&i);
        assert!(!s.health_known);
        assert_eq!(s.answered_by, 4);
        assert_eq!(s.metadata_leader, Some(3));
        assert_eq!(s.config.leader, None);
        assert!(s.nodes[..6].iter().all(|n| n.state == NodeState::Unknown
            && n.last_heartbeat_ms.is_none()
            && n.data_bytes.is_none()));
        assert_eq!(s.nodes[6].state, NodeState::Removed);
        i.best
            .insert(CONFIG_GROUP, report(0, 2, 6, vec![vec![1, 2, 3]]));
        let s = assemble(&i);
        assert_eq!(s.metadata_leader, Some(2));
        assert_eq!((s.config.leader, s.config.term), (Some(2), Some(6)));
    }
}
