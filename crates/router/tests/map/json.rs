//! JSON round trips of the map and its tasks.

use super::*;

// ---------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------

// A map with a removed node and a task survives a JSON round trip unchanged.
#[test]
fn map_with_task_and_removed_node_json_round_trip() {
    let mut map = initial(7, 2);
    map.epoch = 12;
    map.nodes.get_mut(&2).expect("node 2").state = NodeLifecycle::Removed;
    map.tasks.push(Task {
        id: 4,
        kind: TaskKind::ReplaceReplica {
            group: GroupId(1),
            dead: 2,
            replacement: 7,
        },
        step: TaskStep::Swap,
        started_ms: 1_700_000_000_000,
        leader_term: 3,
    });
    map.next_task_id = 5;
    let json = serde_json::to_string_pretty(&map).expect("a map serializes");
    let back: ClusterMap = serde_json::from_str(&json).expect("a map deserializes");
    assert_eq!(back, map);
    // Serializing the result again gives the same text.
    assert_eq!(
        serde_json::to_string_pretty(&back).expect("a map serializes"),
        json
    );
}

// A task recorded by an older release (steps `promote`/`remove_dead`, no start time, no leader
// term) decodes: both old steps are the one swap step, start and term default to 0 (unknown).
#[test]
fn task_of_an_older_release_decodes() {
    for old in ["promote", "remove_dead"] {
        let json = format!(
            r#"{{"id":4,"kind":{{"kind":"replace_replica","group":1,"dead":2,"replacement":7}},"step":"{old}"}}"#
        );
        let task: Task = serde_json::from_str(&json).expect("an old task decodes");
        assert_eq!(task.step, TaskStep::Swap, "step {old}");
        assert_eq!((task.started_ms, task.leader_term), (0, 0), "step {old}");
        assert_eq!(task.kind.group(), Some(GroupId(1)));
    }
    assert_eq!(TaskStep::Swap.to_string(), "swap");
    assert_eq!(TaskStep::AddLearner.to_string(), "add_learner");
}

// `replaced` is written only when true, and a map without it (written before it existed) reads
// as not replaced: old maps stay readable and their JSON unchanged.
#[test]
fn replaced_mark_defaults_to_false_and_is_written_only_when_set() {
    let mut map = initial(4, 3);
    let json = serde_json::to_string(&map).expect("json");
    assert!(!json.contains("replaced"), "{json}");
    let back: ClusterMap = serde_json::from_str(&json).expect("decodes");
    assert!(back.nodes.values().all(|n| !n.replaced));
    let n = map.nodes.get_mut(&2).expect("node 2");
    n.state = NodeLifecycle::Removed;
    n.replaced = true;
    let json = serde_json::to_string(&map).expect("json");
    let back: ClusterMap = serde_json::from_str(&json).expect("decodes");
    assert!(back.nodes[&2].replaced && !back.nodes[&1].replaced);
}

// A drain is written only when set, reads back as set, and holds only until its time and only
// for an active node: a map written before drains existed drains nobody.
#[test]
fn drain_mark_is_optional_and_holds_until_its_time() {
    let mut map = initial(4, 3);
    let json = serde_json::to_string(&map).expect("json");
    assert!(!json.contains("drain_until_ms"), "{json}");
    assert!(map.drained(0).is_empty());
    map.nodes.get_mut(&2).expect("node 2").drain_until_ms = Some(1_000);
    map.nodes.get_mut(&3).expect("node 3").drain_until_ms = Some(5_000);
    let json = serde_json::to_string(&map).expect("json");
    let back: ClusterMap = serde_json::from_str(&json).expect("decodes");
    assert_eq!(back, map);
    assert_eq!(back.drained(999), BTreeSet::from([2, 3]));
    assert_eq!(back.drained(1_000), BTreeSet::from([3]));
    assert!(back.drained(5_000).is_empty());
    map.nodes.get_mut(&3).expect("node 3").state = NodeLifecycle::Removed;
    assert!(map.drained(999) == BTreeSet::from([2]));
}
