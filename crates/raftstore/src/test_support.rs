//! Helpers shared by the store's test modules: commands, applying them, and the set-up of a move
//! between two groups of one store.

use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use tempfile::TempDir;

use crate::{Command, CommandResult, FenceToken, GroupId, StateMachineStore, Store, TypeConfig};
use kvorum_router::slot_of;

/// Every slot.
pub const ALL: (u16, u16) = (0, 4095);

/// An unconditional `Put` of `key`.
pub fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.into(),
        condition: None,
    }
}

/// An unconditional `Delete` of `key`.
pub fn del(key: &str) -> Command {
    Command::Delete {
        key: key.into(),
        condition: None,
    }
}

/// Applies `cmds` as one batch of entries starting after `*index`.
pub async fn apply(
    sm: &mut StateMachineStore,
    index: &mut u64,
    cmds: Vec<Command>,
) -> anyhow::Result<Vec<CommandResult>> {
    let entries: Vec<Entry<TypeConfig>> = cmds
        .into_iter()
        .map(|c| {
            *index += 1;
            Entry {
                log_id: log_id(1, 1, *index),
                payload: EntryPayload::Normal(c),
            }
        })
        .collect();
    Ok(sm.apply(entries).await?)
}

/// The slot of `key`.
pub fn slot(key: &str) -> u16 {
    slot_of(key.as_bytes()).0
}

/// `n` keys whose slots are pairwise distinct.
pub fn keys_in_distinct_slots(n: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    (0..)
        .map(|i| format!("key{i}"))
        .filter(|k| seen.insert(slot(k)))
        .take(n)
        .collect()
}

/// The applied index of `sm`.
pub async fn index_of(sm: &mut StateMachineStore) -> anyhow::Result<u64> {
    Ok(sm.applied_state().await?.0.map_or(0, |l| l.index))
}

/// Applies `cmds` after `sm`'s applied index.
pub async fn run(
    sm: &mut StateMachineStore,
    cmds: Vec<Command>,
) -> anyhow::Result<Vec<CommandResult>> {
    let mut index = index_of(sm).await?;
    apply(sm, &mut index, cmds).await
}

/// Applies `cmd` after `sm`'s applied index.
pub async fn run1(sm: &mut StateMachineStore, cmd: Command) -> anyhow::Result<CommandResult> {
    Ok(run(sm, vec![cmd]).await?.remove(0))
}

/// The end of a move: `slots` released at the source `from`, activated at the destination
/// `to` (results not checked).
pub async fn hand_over(
    from: &mut StateMachineStore,
    to: &mut StateMachineStore,
    slots: &[(u16, u16)],
) -> anyhow::Result<()> {
    let slots = slots.to_vec();
    run1(
        from,
        Command::Release {
            slots: slots.clone(),
        },
    )
    .await?;
    run1(to, Command::Activate { slots }).await?;
    Ok(())
}

/// The one-slot range of `s`.
pub fn one(s: u16) -> Vec<(u16, u16)> {
    vec![(s, s)]
}

/// Asserts that `group`'s kept key and byte counts equal a scan of its data.
pub fn assert_stats_right(store: &Store, group: GroupId) -> anyhow::Result<()> {
    assert_eq!(
        store.group_stats(group)?,
        store.scan_stats(group)?,
        "{group}"
    );
    Ok(())
}

/// A store with two groups as a move between them starts (see [`move_setup`]).
pub struct MoveSetup {
    /// The store's directory (deleted when dropped).
    pub dir: TempDir,
    pub store: Store,
    /// The source group's state machine: it owns every slot.
    pub sa: StateMachineStore,
    /// The destination group's state machine: it owns no slot.
    pub sb: StateMachineStore,
}

/// Opens a store in a new directory with the groups `a` (the source, owning every slot) and `b`
/// (the destination, owning none), their `InitSlots` sent by the driver holding `fence` if
/// given, then applies `writes` at `a` in one batch.
pub async fn move_setup(
    (a, b): (GroupId, GroupId),
    fence: Option<FenceToken>,
    writes: Vec<Command>,
) -> anyhow::Result<MoveSetup> {
    let init = |owned| {
        let cmd = Command::InitSlots { owned };
        match fence {
            Some(token) => cmd.fenced(token),
            None => cmd,
        }
    };
    let dir = TempDir::new()?;
    let store = Store::open(dir.path())?;
    let mut sa = store.state_machine(a).await?;
    let mut sb = store.state_machine(b).await?;
    run1(&mut sa, init(vec![ALL])).await?;
    run1(&mut sb, init(vec![])).await?;
    if !writes.is_empty() {
        run(&mut sa, writes).await?;
    }
    Ok(MoveSetup { dir, store, sa, sb })
}
