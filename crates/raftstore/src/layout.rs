//! Key encoding of the three column families. Persistent format: MUST NOT change.

use kvorum_router::{slot_of, GroupId};

/// Column family of Raft logs.
pub(crate) const CF_LOG: &str = "log";
/// Column family of per-group metadata.
pub(crate) const CF_META: &str = "meta";
/// Column family of state machine data.
pub(crate) const CF_DATA: &str = "data";

/// Tags of the `meta` column family, one byte after the group prefix.
pub(crate) mod tag {
    pub const VOTE: u8 = 1;
    pub const COMMITTED: u8 = 2;
    pub const PURGED: u8 = 3;
    pub const APPLIED: u8 = 4;
    pub const MEMBERSHIP: u8 = 5;
    pub const SNAPSHOT: u8 = 6;
    pub const INSTALLING: u8 = 7;
    pub const STATS: u8 = 8;
    /// The slot table (`slots::encode_table`); absent: uninitialized.
    pub const SLOTS: u8 = 9;
    /// The version base (bincode u64); absent: 0.
    pub const VERSION_BASE: u8 = 10;
    /// The slot epochs (`slots::encode_epochs`); absent: none.
    pub const SLOT_EPOCHS: u8 = 11;
    /// The fence: the highest driver token applied (bincode `FenceToken`); absent: zero.
    pub const FENCE: u8 = 12;
}

/// Prefix (after the group) of the special snapshot records; never a data key, whose slot is
/// below `SLOT_COUNT`.
pub(crate) const SNAP_SPECIAL: [u8; 2] = [0xff, 0xff];
/// Snapshot record (after the group prefix) carrying the slot table.
pub(crate) const SNAP_SLOTS: [u8; 3] = [0xff, 0xff, 1];
/// Snapshot record (after the group prefix) carrying the version base (u64 BE).
pub(crate) const SNAP_VERSION_BASE: [u8; 3] = [0xff, 0xff, 2];
/// Snapshot record (after the group prefix) carrying the slot epochs (`slots::encode_epochs`).
pub(crate) const SNAP_SLOT_EPOCHS: [u8; 3] = [0xff, 0xff, 3];
/// Snapshot record (after the group prefix) carrying the fence (bincode `FenceToken`).
pub(crate) const SNAP_FENCE: [u8; 3] = [0xff, 0xff, 4];

/// `group ++ index`, both big-endian so that the log sorts by index.
pub(crate) fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&group.0.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The index of a `log` key written by [`log_key`].
pub(crate) fn log_index(key: &[u8]) -> Option<u64> {
    let b: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// `group ++ tag`.
pub(crate) fn meta_key(group: GroupId, tag: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&group.0.to_be_bytes());
    k[8] = tag;
    k
}

/// The first key of a group in any column family.
pub(crate) fn group_start(group: GroupId) -> [u8; 8] {
    group.0.to_be_bytes()
}

/// The first key after a group in any column family (exclusive end of its range).
pub(crate) fn group_end(group: GroupId) -> Vec<u8> {
    match group.0.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        // The last possible group: every key starting with its prefix sorts before this.
        None => vec![0xff; 9],
    }
}

/// `group ++ slot`: the first data key of `slot` (up to `SLOT_COUNT`, the end of the last).
pub(crate) fn slot_start(group: GroupId, slot: u16) -> [u8; 10] {
    let mut k = [0u8; 10];
    k[..8].copy_from_slice(&group.0.to_be_bytes());
    k[8..].copy_from_slice(&slot.to_be_bytes());
    k
}

/// The slot of a data key (`group ++ slot ++ key`).
pub(crate) fn data_key_slot(key: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(key.get(8..10)?.try_into().ok()?))
}

/// `group ++ slot ++ key`.
pub(crate) fn data_key(group: GroupId, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + key.len());
    k.extend_from_slice(&group.0.to_be_bytes());
    k.extend_from_slice(&slot_of(key).0.to_be_bytes());
    k.extend_from_slice(key);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    // Log keys sort by index within a group, and groups do not interleave.
    #[test]
    fn log_keys_sort_by_group_then_index() {
        let a = log_key(GroupId(1), 255);
        let b = log_key(GroupId(1), 256);
        let c = log_key(GroupId(2), 0);
        assert!(a < b && b < c);
        assert_eq!(log_index(&b), Some(256));
        assert!(group_start(GroupId(2)).as_slice() <= c.as_slice());
        assert!(c.as_slice() < group_end(GroupId(2)).as_slice());
    }

    // A data key holds the user key after the 10-byte prefix.
    #[test]
    fn data_key_round_trips() {
        let k = data_key(GroupId(7), b"hello");
        assert_eq!(&k[10..], b"hello");
        assert_eq!(&k[8..10], &slot_of(b"hello").0.to_be_bytes());
        assert_eq!(&k[..8], &7u64.to_be_bytes());
    }
}
