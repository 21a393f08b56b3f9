//! The value of the [`ROUTE_HEADER`](crate::headers::ROUTE_HEADER): the route a client (or a
//! forwarding node) sent a key's request on, `<slot>:<epoch>:<group>`.

use std::fmt;
use std::str::FromStr;

use kvorum_router::{GroupId, Slot};

/// A request's route: the key's slot, the epoch of the sender's map, and the group that map
/// gives the slot to. Formats and parses as `<slot>:<epoch>:<group>` (decimal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteHeader {
    /// The key's slot.
    pub slot: Slot,
    /// The epoch of the sender's cluster map.
    pub epoch: u64,
    /// The group the sender's map gives the slot to.
    pub group: GroupId,
}

/// Why a route header value is not `<slot>:<epoch>:<group>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the route must be slot:epoch:group, got {0:?}")]
pub struct RouteParseError(pub String);

impl fmt::Display for RouteHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.slot.0, self.epoch, self.group.0)
    }
}

impl FromStr for RouteHeader {
    type Err = RouteParseError;

    /// Parses `<slot>:<epoch>:<group>`; blanks around each part are allowed.
    fn from_str(s: &str) -> Result<Self, RouteParseError> {
        let bad = || RouteParseError(s.chars().take(64).collect());
        let mut it = s.split(':');
        let mut part = || it.next().map(str::trim).ok_or_else(bad);
        let slot = part()?.parse().map_err(|_| bad())?;
        let epoch = part()?.parse().map_err(|_| bad())?;
        let group = part()?.parse().map_err(|_| bad())?;
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(RouteHeader {
            slot: Slot(slot),
            epoch,
            group: GroupId(group),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A route formats as slot:epoch:group and parses back to itself.
    #[test]
    fn route_round_trips() {
        let r = RouteHeader {
            slot: Slot(4095),
            epoch: 17,
            group: GroupId(2),
        };
        assert_eq!(r.to_string(), "4095:17:2");
        assert_eq!("4095:17:2".parse::<RouteHeader>(), Ok(r));
        assert_eq!(" 4095 : 17 : 2 ".parse::<RouteHeader>(), Ok(r));
    }

    // Anything but three decimal parts in range is refused with the offending value.
    #[test]
    fn bad_routes_are_refused() {
        for bad in [
            "",
            "1:2",
            "1:2:3:4",
            "a:2:3",
            "1:b:3",
            "1:2:c",
            "65536:1:1",
            "-1:2:3",
            "1::3",
            "1:2:",
        ] {
            let err = bad.parse::<RouteHeader>().expect_err(bad);
            assert_eq!(err, RouteParseError(bad.to_string()), "{bad}");
        }
        assert!("1:2:3:4"
            .parse::<RouteHeader>()
            .expect_err("four parts")
            .to_string()
            .contains("slot:epoch:group"));
    }
}
