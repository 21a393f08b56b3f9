//! `kvctl drain ID|ADDR [--minutes M] [--end]`: before a planned stop (an upgrade, a reboot),
//! keep repairs from replacing a node while it is down, and move its leaderships away first.
//!
//! Steps: (1) resolve an address to a node id in the cluster map; (2) ask the metadata leader to
//! drain the node (or, with `--end`, to end its drain); a refusal prints `error: <code>:
//! <message>` and exits 2; (3) print what happened: until when the node is drained, each group
//! whose leadership it handed off and to whom, and any group it still leads with why. Exit 0
//! when the node leads nothing any more (stop it now), 1 when the mark is set but a leadership
//! stayed or the node did not answer (stopping it then costs that group a failover). With
//! `--json`, stdout holds the reply. Formatting is pure and tested here.

use kvorum_client::{Client, DrainReply};

use crate::nodes::{print_json, refused, Exit};

/// Exit code when the drain was recorded but the node still leads a group (or did not say).
const EXIT_STILL_LEADS: u8 = 1;

/// `kvctl drain`.
pub async fn drain(
    client: &Client,
    node: &str,
    minutes: Option<u64>,
    end: bool,
    json: bool,
) -> Exit {
    let id = match client.resolve_node(node).await {
        Ok(id) => id,
        Err(e) => return refused(e),
    };
    let reply = if end {
        client.end_drain(id).await
    } else {
        client.drain(id, minutes).await
    };
    let reply = match reply {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    if json {
        print_json(&reply);
    } else {
        print!("{}", render(&reply));
    }
    Ok(if end || leads_nothing(&reply) {
        0
    } else {
        EXIT_STILL_LEADS
    })
}

/// Whether the drained node answered and handed off every group it led.
fn leads_nothing(r: &DrainReply) -> bool {
    r.unreachable.is_none() && r.leaderships.as_ref().is_some_and(|l| l.kept.is_empty())
}

/// The reply as text.
fn render(r: &DrainReply) -> String {
    let Some(until) = r.until_ms else {
        return format!(
            "node {}: drain ended; repairs treat it as any node again\n",
            r.node
        );
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut out = format!(
        "node {} drained for {} minutes: no repair replaces it until then\n",
        r.node,
        until.saturating_sub(now).div_ceil(60_000)
    );
    if let Some(why) = &r.unreachable {
        out.push_str(&format!("its leaderships were not moved: {why}\n"));
    }
    if let Some(l) = &r.leaderships {
        for h in &l.moved {
            out.push_str(&format!(
                "group {}: leadership handed to node {} in {} ms\n",
                h.group, h.to, h.took_ms
            ));
        }
        for (group, why) in &l.kept {
            out.push_str(&format!(
                "group {group}: still led by node {}: {why}\n",
                r.node
            ));
        }
    }
    if leads_nothing(r) {
        out.push_str(&format!(
            "node {} leads no group: stop it now, and start it again before the drain ends \
             (kvctl drain {} --end ends it early)\n",
            r.node, r.node
        ));
    } else {
        out.push_str(&format!(
            "stopping node {} now costs a failover of the groups it leads; run kvctl drain {} \
             again to retry\n",
            r.node, r.node
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvorum_client::Leaderships;
    use kvorum_wire::HandedOff;

    fn reply(leaderships: Option<Leaderships>, unreachable: Option<&str>) -> DrainReply {
        DrainReply {
            node: 2,
            until_ms: Some(u64::MAX),
            leaderships,
            unreachable: unreachable.map(str::to_string),
        }
    }

    #[test]
    fn a_node_that_handed_off_everything_may_stop() {
        let r = reply(
            Some(Leaderships {
                moved: vec![HandedOff {
                    group: kvorum_router::GroupId(1),
                    to: 3,
                    took_ms: 1200,
                }],
                kept: vec![],
            }),
            None,
        );
        assert!(leads_nothing(&r));
        let text = render(&r);
        assert!(
            text.contains("group 1: leadership handed to node 3 in 1200 ms"),
            "{text}"
        );
        assert!(
            text.contains("node 2 leads no group: stop it now"),
            "{text}"
        );
    }

    #[test]
    fn a_kept_leadership_or_a_silent_node_is_reported() {
        let kept = reply(
            Some(Leaderships {
                moved: vec![],
                kept: vec![(kvorum_router::GroupId(0), "no other voter".into())],
            }),
            None,
        );
        assert!(!leads_nothing(&kept));
        assert!(render(&kept).contains("group 0: still led by node 2: no other voter"));
        let silent = reply(None, Some("node 2 at 127.0.0.2:7070 did not answer"));
        assert!(!leads_nothing(&silent));
        let text = render(&silent);
        assert!(text.contains("its leaderships were not moved"), "{text}");
        assert!(text.contains("costs a failover"), "{text}");
    }

    #[test]
    fn an_ended_drain_says_so() {
        let r = DrainReply {
            node: 4,
            until_ms: None,
            leaderships: None,
            unreachable: None,
        };
        assert_eq!(
            render(&r),
            "node 4: drain ended; repairs treat it as any node again\n"
        );
    }
}
