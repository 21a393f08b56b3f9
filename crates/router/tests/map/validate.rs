//! `ClusterMap::validate` rejections.

use super::*;

// ---------------------------------------------------------------------------------------------
// validate
// ---------------------------------------------------------------------------------------------

/// Asserts `map` is rejected with an error whose message contains `what`.
fn assert_rejected(map: &ClusterMap, what: &str) {
    match map.validate() {
        Ok(()) => panic!("validate accepted a broken map ({what}): {}", map.summary()),
        Err(e) => assert!(e.to_string().contains(what), "expected {what:?}, got {e}"),
    }
}

// A slot table shorter or longer than slot_count is rejected.
#[test]
fn validate_rejects_wrong_slot_vector_length() {
    let mut short = initial(7, 2);
    short.slots.pop();
    assert_rejected(&short, "slot owners");

    let mut long = initial(7, 2);
    long.slots.push(GroupId(1));
    assert_rejected(&long, "slot owners");

    let mut empty = initial(7, 2);
    empty.slots.clear();
    assert_rejected(&empty, "slot owners");

    let mut fewer_slots = initial(7, 2);
    fewer_slots.slot_count -= 1;
    assert_rejected(&fewer_slots, "slot owners");
}

// A slot owned by a group that is not in the map (the config group included) is rejected.
#[test]
fn validate_rejects_slot_naming_unknown_group() {
    let mut map = initial(7, 2);
    map.slots[100] = GroupId(9);
    assert_rejected(&map, "unknown group");

    let mut config = initial(7, 2);
    config.slots[0] = CONFIG_GROUP;
    assert_rejected(&config, "unknown group");

    // A group deleted while still owning slots.
    let mut dissolved = initial(7, 2);
    dissolved.groups.remove(&GroupId(3));
    assert_rejected(&dissolved, "unknown group");
}

// A node in two data groups is rejected.
#[test]
fn validate_rejects_node_in_two_groups() {
    let mut map = initial(7, 2);
    map.groups
        .get_mut(&GroupId(2))
        .expect("group 2")
        .members
        .insert(1);
    assert_rejected(&map, "two data groups");

    // Also when the shared node is a spare added to two groups.
    let mut spare = initial(7, 2);
    for g in [GroupId(1), GroupId(3)] {
        spare
            .groups
            .get_mut(&g)
            .expect("group exists")
            .members
            .insert(7);
    }
    assert_rejected(&spare, "two data groups");
}

// A group member that is not a node of the map is rejected.
#[test]
fn validate_rejects_unknown_member() {
    let mut map = initial(7, 2);
    map.groups
        .get_mut(&GroupId(1))
        .expect("group 1")
        .members
        .insert(99);
    assert_rejected(&map, "unknown member");
}

// A config voter that is not a node of the map is rejected.
#[test]
fn validate_rejects_unknown_config_voter() {
    let mut map = initial(7, 2);
    map.config_voters.insert(42);
    assert_rejected(&map, "config voter");
}

// A data group numbered 0 (the config group's id) is rejected.
#[test]
fn validate_rejects_reserved_group_id() {
    let mut map = initial(7, 2);
    map.groups.insert(
        CONFIG_GROUP,
        GroupInfo {
            members: BTreeSet::from([7]),
        },
    );
    assert_rejected(&map, "reserved");
}
