//! `kvctl status`: renders a [`ClusterStatus`] (`GET /v1/cluster/status`) for people; and
//! `kvctl check-consistency`: renders a [`ConsistencyReport`].
//!
//! Sections, in order: the header (cluster id, epoch, K, slots, metadata leader, whether health is
//! known), nodes, data groups, spares, the config group, and tasks in progress. A null field
//! prints `-`; a task of a kind this kvctl does not know is shown with its fields as they came.

use std::fmt::Display;

use kvorum_wire::{
    ClusterStatus, ConsistencyReport, GroupConsistency, TaskStatus, REPLACE_REPLICA, VIEW_CHANGE,
};
use serde_json::Value;

/// Text for one JSON cell (the fields of unknown task kinds): `-` for null, strings bare,
/// booleans `yes`/`no`, arrays comma-separated (`-` when empty), anything else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Text for an optional value: `-` when absent.
fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Text for a string: `-` when empty.
fn text(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.into()
    }
}

/// A list, comma-separated; `-` when empty.
fn list<T: Display>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Yes or no.
fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

/// A byte count in binary units (`512 B`, `5.5 KiB`); `-` when absent.
fn bytes(v: Option<u64>) -> String {
    let Some(n) = v else {
        return "-".into();
    };
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut size = n as f64;
    let mut unit = 0;
    while size >= 1024.0 && unit + 1 < UNITS.len() {
        size /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{size:.1} {}", UNITS[unit])
    }
}

/// How long ago the last heartbeat came, from milliseconds; `-` when absent.
fn heartbeat(v: Option<u64>) -> String {
    match v {
        Some(ms) if ms < 10_000 => format!("{ms} ms ago"),
        Some(ms) => format!("{} s ago", ms / 1000),
        None => "-".into(),
    }
}

/// A node reference: `node N`, or `-`.
fn node<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("node {v}"))
}

/// Left-aligned columns two spaces apart, widths fitted to the content; no trailing spaces.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            s.push_str(&format!("{c:<w$}  "));
        }
        format!("{}\n", s.trim_end())
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One task in progress, on one line.
fn task(t: &TaskStatus) -> String {
    let mut s = format!("#{} {}", t.id, text(&t.kind));
    if t.kind == REPLACE_REPLICA {
        s.push_str(&format!(
            ": group {}, {} replaced by {}",
            opt(t.group),
            node(t.dead),
            node(t.replacement)
        ));
    } else if t.kind == VIEW_CHANGE {
        let change = match &t.change {
            Some(kvorum_router::ViewChange::AddNode { addr }) => format!("add node at {addr}"),
            Some(kvorum_router::ViewChange::RemoveNode { node }) => format!("remove node {node}"),
            None => "-".into(),
        };
        s.push_str(&format!(
            ": {change}, {}/{} slots moved",
            opt(t.slots_moved),
            opt(t.slots_total)
        ));
    } else {
        // A kind this kvctl does not know: show its fields as they are, by name.
        let mut fields = t.other.clone();
        let known = [
            ("dead", t.dead),
            ("group", t.group.map(|g| g.0)),
            ("replacement", t.replacement),
            ("started_ms", t.started_ms),
        ];
        for (name, v) in known {
            if let Some(v) = v {
                fields.insert(name.to_string(), Value::from(v));
            }
        }
        for (k, v) in &fields {
            s.push_str(&format!(" {k}={}", cell(v)));
        }
    }
    s.push_str(&format!(" (step {})", text(&t.step)));
    s
}

/// The human rendering of a cluster status.
pub fn render(s: &ClusterStatus) -> String {
    let mut out = header(s);
    out.push_str(&nodes_section(s));
    out.push_str(&groups_section(s));
    out.push_str(&other_sections(s));
    out
}

/// The header: cluster id, epoch, K, slots, metadata leader, whether health is known.
fn header(s: &ClusterStatus) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "cluster {}  epoch {}  K={}  slots {} ({})\n",
        text(&s.cluster_id),
        s.epoch,
        s.k,
        s.slot_count,
        text(&s.hash),
    ));
    out.push_str(&format!(
        "metadata leader {}  health known {}  answered by {}\n",
        node(s.metadata_leader),
        yes_no(s.health_known),
        node(Some(s.answered_by)),
    ));
    if !s.health_known {
        out.push_str(
            "note: the metadata leader is unreachable from the answering node, so node states \
             are unknown\n",
        );
    }
    out
}

/// The NODES table.
fn nodes_section(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let nodes: Vec<Vec<String>> = s
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.to_string(),
                text(&n.addr),
                match n.drain_until_ms {
                    Some(_) => format!("{} (drained)", n.state),
                    None => n.state.to_string(),
                },
                n.role.to_string(),
                yes_no(n.config_voter),
                list(&n.groups),
                bytes(n.data_bytes),
                heartbeat(n.last_heartbeat_ms),
            ]
        })
        .collect();
    out.push_str("\nNODES\n");
    out.push_str(&table(
        &[
            "ID",
            "ADDRESS",
            "STATE",
            "ROLE",
            "CONFIG VOTER",
            "GROUPS",
            "DATA",
            "LAST HEARTBEAT",
        ],
        &nodes,
    ));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    for n in &s.nodes {
        if let Some(until) = n.drain_until_ms {
            out.push_str(&format!(
                "note: node {} is drained: no repair replaces it for about {} more minutes \
                 (kvctl drain {} --end ends it)\n",
                n.id,
                until.saturating_sub(now_ms).div_ceil(60_000),
                n.id
            ));
        }
    }
    out
}

/// The GROUPS table.
fn groups_section(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let groups: Vec<Vec<String>> = s
        .groups
        .iter()
        .map(|g| {
            vec![
                g.id.to_string(),
                list(&g.members),
                opt(g.leader),
                opt(g.term),
                text(&g.slots),
                g.slot_count.to_string(),
                opt(g.keys),
                bytes(g.bytes),
                opt(g.applied),
            ]
        })
        .collect();
    out.push_str("\nGROUPS\n");
    out.push_str(&table(
        &[
            "ID",
            "MEMBERS",
            "LEADER",
            "TERM",
            "SLOTS",
            "SLOT COUNT",
            "KEYS",
            "BYTES",
            "APPLIED",
        ],
        &groups,
    ));
    out
}

/// Spares, the config group, consistency mismatches if any, and tasks in progress.
fn other_sections(s: &ClusterStatus) -> String {
    let mut out = String::new();
    let spares = if s.spares.is_empty() {
        "none".to_string()
    } else {
        list(&s.spares)
    };
    out.push_str(&format!("\nSPARES {spares}\n"));

    let c = &s.config;
    out.push_str(&format!(
        "CONFIG GROUP voters {}  leader {}  term {}\n",
        list(&c.voters),
        node(c.leader),
        opt(c.term),
    ));

    let mismatches: Vec<&GroupConsistency> =
        s.consistency.iter().filter(|c| c.is_mismatch()).collect();
    if !mismatches.is_empty() {
        out.push_str("CONSISTENCY MISMATCH\n");
        for c in mismatches {
            out.push_str(&format!(
                "  group {} at index {}: nodes {} differ from nodes {}\n",
                c.group,
                c.index,
                list(&c.mismatched),
                list(&c.agreeing)
            ));
        }
    }

    if s.tasks.is_empty() {
        out.push_str("TASKS none\n");
    } else {
        out.push_str("TASKS\n");
        for t in &s.tasks {
            out.push_str(&format!("  {}\n", task(t)));
        }
    }
    out
}

/// The human rendering of a consistency check: one row per group, then the verdict and, for a
/// mismatch, what to do.
pub fn render_consistency(r: &ConsistencyReport) -> String {
    let rows: Vec<Vec<String>> = r
        .groups
        .iter()
        .map(|c| {
            let result = match (&c.error, c.is_mismatch()) {
                (Some(e), _) => format!("not checked: {e}"),
                (None, true) => "MISMATCH".into(),
                (None, false) => "ok".into(),
            };
            vec![
                c.group.to_string(),
                c.index.to_string(),
                list(&c.agreeing),
                list(&c.mismatched),
                list(&c.missing),
                result,
            ]
        })
        .collect();
    let mut out = table(
        &[
            "GROUP",
            "INDEX",
            "AGREEING",
            "MISMATCHED",
            "MISSING",
            "RESULT",
        ],
        &rows,
    );
    let bad: Vec<String> = r
        .groups
        .iter()
        .flat_map(|c| c.mismatched.iter().map(ToString::to_string))
        .collect();
    if !bad.is_empty() {
        out.push_str(&format!(
            "INCONSISTENT: node(s) {} hold data that differs from their group's at the same log \
             index. Stop each (the cluster replaces it like a dead node), wipe it and add it back \
             as a new node\n",
            bad.join(",")
        ));
    } else if r.consistent() {
        out.push_str("consistent\n");
    } else {
        out.push_str("not every group could be checked\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A status as the node sends it (the JSON of `GET /v1/cluster/status`).
    fn sample_json() -> Value {
        json!({
            "cluster_id": "c-7f3a", "epoch": 3, "k": 3, "slot_count": 4096, "hash": "xxh3_64",
            "answered_by": 4, "metadata_leader": 2, "health_known": true,
            "nodes": [
                {"id": 1, "addr": "127.0.0.1:7070", "state": "alive", "role": "replica",
                 "config_voter": true, "groups": [1], "last_heartbeat_ms": 120,
                 "data_bytes": 10240},
                {"id": 7, "addr": "127.0.0.1:7076", "state": "alive", "role": "spare",
                 "config_voter": false, "groups": [], "last_heartbeat_ms": null},
            ],
            "groups": [
                {"id": 1, "members": [1, 2, 3], "leader": 2, "term": 5, "slots": "0-2047",
                 "slot_count": 2048, "keys": 1234, "bytes": 5678, "applied": 77},
                {"id": 2, "members": [4, 5, 6], "leader": null, "term": null,
                 "slots": "2048-4095", "slot_count": 2048, "keys": null, "bytes": null,
                 "applied": null},
            ],
            "spares": [7],
            "config": {"voters": [1, 2, 3], "leader": 2, "term": 3},
            "tasks": [],
        })
    }

    fn parse(v: Value) -> ClusterStatus {
        serde_json::from_value(v).expect("a cluster status")
    }

    fn sample() -> ClusterStatus {
        parse(sample_json())
    }

    // Every section is rendered; null fields print "-"; an empty task list prints "none".
    #[test]
    fn status_renders_every_section() {
        let text = render(&sample());
        let expected = "\
cluster c-7f3a  epoch 3  K=3  slots 4096 (xxh3_64)
metadata leader node 2  health known yes  answered by node 4

NODES
ID  ADDRESS         STATE  ROLE     CONFIG VOTER  GROUPS  DATA      LAST HEARTBEAT
1   127.0.0.1:7070  alive  replica  yes           1       10.0 KiB  120 ms ago
7   127.0.0.1:7076  alive  spare    no            -       -         -

GROUPS
ID  MEMBERS  LEADER  TERM  SLOTS      SLOT COUNT  KEYS  BYTES    APPLIED
1   1,2,3    2       5     0-2047     2048        1234  5.5 KiB  77
2   4,5,6    -       -     2048-4095  2048        -     -        -

SPARES 7
CONFIG GROUP voters 1,2,3  leader node 2  term 3
TASKS none
";
        assert_eq!(text, expected);
    }

    // Unknown health is called out, and tasks in progress are listed with their step.
    #[test]
    fn status_shows_unknown_health_and_tasks() {
        let mut s = sample_json();
        s["health_known"] = json!(false);
        s["metadata_leader"] = Value::Null;
        s["spares"] = json!([]);
        s["tasks"] = json!([
            {"id": 1, "kind": "replace_replica", "group": 2, "dead": 5, "replacement": 7,
             "step": "add_learner"},
            {"id": 2, "kind": "move_slots", "from": 1, "to": 3, "step": "copy"},
        ]);
        let text = render(&parse(s));
        assert!(
            text.contains("metadata leader -  health known no"),
            "{text}"
        );
        assert!(text.contains("node states are unknown"), "{text}");
        assert!(text.contains("SPARES none"), "{text}");
        assert!(
            text.contains(
                "#1 replace_replica: group 2, node 5 replaced by node 7 (step add_learner)"
            ),
            "{text}"
        );
        assert!(
            text.contains("#2 move_slots from=1 to=3 (step copy)"),
            "{text}"
        );
    }

    // Unexpected JSON (wrong types, missing sections, not an object) is refused when read
    // (kvctl reports an unexpected reply); it never reaches the renderer.
    #[test]
    fn unexpected_json_is_refused() {
        for v in [
            json!(null),
            json!([1, 2]),
            json!("text"),
            json!({}),
            json!({"nodes": 5, "groups": [null, 3, {"members": "x"}], "tasks": [7], "config": []}),
        ] {
            assert!(
                serde_json::from_value::<ClusterStatus>(v.clone()).is_err(),
                "{v}"
            );
        }
    }

    // Byte counts use binary units.
    #[test]
    fn bytes_are_human_readable() {
        let cases = [
            (Some(0), "0 B"),
            (Some(1023), "1023 B"),
            (Some(1536), "1.5 KiB"),
            (Some(5u64 << 30), "5.0 GiB"),
            (None, "-"),
        ];
        for (v, want) in cases {
            assert_eq!(bytes(v), want, "{v:?}");
        }
    }

    // A consistency report shows a row per group; a mismatched replica is named with what to do,
    // and the status gets a CONSISTENCY MISMATCH section.
    #[test]
    fn consistency_mismatch_is_named() {
        let g = |group: u64, mismatched: Vec<u64>| GroupConsistency {
            agreeing: vec![1, 3],
            error: None,
            group: kvorum_router::GroupId(group),
            index: 40,
            mismatched,
            missing: vec![],
        };
        let ok = ConsistencyReport {
            groups: vec![g(0, vec![])],
        };
        assert!(render_consistency(&ok).ends_with("consistent\n"));
        let bad = ConsistencyReport {
            groups: vec![g(0, vec![]), g(1, vec![2])],
        };
        let text = render_consistency(&bad);
        let expected = "\
GROUP  INDEX  AGREEING  MISMATCHED  MISSING  RESULT
0      40     1,3       -           -        ok
1      40     1,3       2           -        MISMATCH
INCONSISTENT: node(s) 2 hold data that differs from their group's at the same log index. Stop \
each (the cluster replaces it like a dead node), wipe it and add it back as a new node
";
        assert_eq!(text, expected);
        let mut s = sample();
        s.consistency = bad.groups;
        assert!(render(&s).contains(
            "CONSISTENCY MISMATCH\n  group 1 at index 40: nodes 2 differ from nodes 1,3\n"
        ));
    }
}
