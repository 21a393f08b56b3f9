//! `GET /v1/cluster/map`: a node's cluster map and its leader hints.

use std::collections::BTreeMap;

use kvorum_router::{ClusterMap, GroupId, NodeId};
use serde::{Deserialize, Deserializer, Serialize};

/// Reply of `GET /v1/cluster/map`. `leaders` is declared first, the order the node wrote the
/// fields in before this type existed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapReply {
    /// Leader hints: group (data or config) → the node believed to lead it. In JSON an object
    /// keyed by the group id as a string. Hints are advisory: reading, a missing field is empty
    /// and null or unparsable entries are skipped.
    #[serde(default, deserialize_with = "lenient_leaders")]
    pub leaders: BTreeMap<GroupId, NodeId>,
    /// The node's cluster map.
    pub map: ClusterMap,
    /// The id of the answering node's cluster (a hash of its initial view and K). Left out by
    /// nodes that predate it; a joining node needs it to adopt the id the map gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

/// The leader hints, skipping entries whose key is not a group id or whose value is not a node
/// id.
fn lenient_leaders<'de, D>(d: D) -> Result<BTreeMap<GroupId, NodeId>, D::Error>
where
    D: Deserializer<'de>,
{
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw
        .into_iter()
        .filter_map(|(g, l)| Some((GroupId(g.parse().ok()?), l.as_u64()?)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 7 nodes, K=3: groups {1,2,3} and {4,5,6}, spare 7.
    fn map3() -> ClusterMap {
        kvorum_router::testing::map(7, 3)
    }

    // The reply has the fields the node wrote with `json!`; bad hints are skipped on reading.
    #[test]
    fn map_reply_round_trips_and_skips_bad_hints() {
        let reply = MapReply {
            leaders: BTreeMap::from([(GroupId(0), 1), (GroupId(1), 2)]),
            map: map3(),
            cluster_id: None,
        };
        let v = serde_json::to_value(&reply).expect("serializes");
        assert_eq!(
            v,
            json!({"map": serde_json::to_value(map3()).expect("map"), "leaders": {"0": 1, "1": 2}})
        );
        let back: MapReply = serde_json::from_value(v).expect("parses");
        assert_eq!(back, reply);
        let messy = json!({"map": map3(), "leaders": {"1": 2, "2": null, "x": 3, "0": 1}});
        let back: MapReply = serde_json::from_value(messy).expect("parses");
        assert_eq!(back.leaders, reply.leaders);
        let bare: MapReply = serde_json::from_value(json!({"map": map3()})).expect("parses");
        assert!(bare.leaders.is_empty());
        assert!(serde_json::from_value::<MapReply>(json!({"leaders": {}})).is_err());
        // The cluster id is sent when known and optional on reading.
        let with_id = MapReply {
            cluster_id: Some("00ff".into()),
            ..reply.clone()
        };
        let v = serde_json::to_value(&with_id).expect("serializes");
        assert_eq!(v["cluster_id"], "00ff");
        assert_eq!(
            serde_json::from_value::<MapReply>(v).expect("parses"),
            with_id
        );
        assert_eq!(bare.cluster_id, None);
    }
}
