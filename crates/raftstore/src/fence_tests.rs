//! The fence of a group's state machine: two drivers of one move (a deposed metadata leader's
//! and its successor's) send their steps to the same groups, interleaved; every step of the
//! older driver after the newer one fenced a group is refused and changes nothing, in the table,
//! the data, the version base or the fence, also after a restart and on a replica that installed
//! a snapshot.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

use crate::test_support::{move_setup, put, run1, MoveSetup, ALL};
use crate::{
    AdminResult, Command, CommandResult, FenceToken, GroupId, StateMachineStore, Store, Versioned,
    WriteResult,
};

/// The slots that move from A to D.
const MOVING: (u16, u16) = (0, 2047);

/// Everything a step could change in `group`: its slot table, every record, and the version
/// base (the high-water mark less the applied index, which every entry advances).
async fn observable(
    store: &Store,
    sm: &mut StateMachineStore,
    group: GroupId,
) -> anyhow::Result<impl PartialEq + std::fmt::Debug> {
    let chunk = store.scan_slots(group, &[ALL], None, usize::MAX)?;
    let records: Vec<(String, Versioned)> = chunk.records;
    let applied = sm.applied_state().await?.0.map_or(0, |l| l.index);
    Ok((
        store.slot_table(group),
        records,
        store.version_high_water(group)? - applied,
    ))
}

/// Every step a driver can send, for the moving slots.
fn every_step(records: Vec<(String, Versioned)>) -> Vec<Command> {
    let slots = vec![MOVING];
    vec![
        Command::InitSlots {
            owned: slots.clone(),
        },
        Command::BeginIncoming {
            slots: slots.clone(),
        },
        Command::Freeze {
            slots: slots.clone(),
        },
        Command::Ingest {
            records: records.clone(),
        },
        Command::CatchUp {
            records,
            removed: vec!["k1".into(), "k2".into()],
            above: 1_000_000,
        },
        Command::RaiseVersionBase { above: 2_000_000 },
        Command::Release {
            slots: slots.clone(),
        },
        Command::ActivateAt {
            slots: slots.clone(),
            epoch: 9,
        },
        Command::Activate {
            slots: slots.clone(),
        },
        Command::AbortIncoming {
            slots: slots.clone(),
        },
        Command::Unfreeze {
            slots: slots.clone(),
        },
        Command::DropSlots { slots },
    ]
}

// The sequence that lost acknowledged writes end to end: M1 froze A's batch and copied it to D,
// M2 takes over (fences both groups, redoes the copy), then M1 wakes and sends the rest of its
// batch. Every one of M1's steps is refused at both groups and changes nothing; M2's move
// completes with every key at D; the fences survive a restart and travel in snapshots.
#[tokio::test]
async fn a_deposed_drivers_steps_are_refused_and_change_nothing() -> anyhow::Result<()> {
    let (a, d) = (GroupId(41), GroupId(42));
    let m1 = FenceToken { term: 5, task: 7 };
    let m2 = FenceToken { term: 6, task: 7 };
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let writes = keys.iter().map(|k| put(k, "v1")).collect();
    let MoveSetup {
        dir,
        store,
        mut sa,
        sb: mut sd,
    } = move_setup((a, d), Some(m1), writes).await?;
    // M1: fence, BeginIncoming, copy, Freeze.
    for sm in [&mut sa, &mut sd] {
        assert_eq!(
            run1(sm, Command::Fence { token: m1 }).await?,
            CommandResult::None
        );
    }
    let slots = vec![MOVING];
    let begin = Command::BeginIncoming {
        slots: slots.clone(),
    };
    assert_eq!(
        run1(&mut sd, begin.clone().fenced(m1)).await?,
        CommandResult::None
    );
    let copy = store.scan_slots(a, &slots, None, usize::MAX)?.records;
    assert!(!copy.is_empty());
    let r = run1(
        &mut sd,
        Command::Ingest {
            records: copy.clone(),
        }
        .fenced(m1),
    )
    .await?;
    assert!(
        matches!(
            r,
            CommandResult::Admin(AdminResult::Ingested { skipped: 0, .. })
        ),
        "{r:?}"
    );
    let freeze = Command::Freeze {
        slots: slots.clone(),
    };
    assert_eq!(
        run1(&mut sa, freeze.clone().fenced(m1)).await?,
        CommandResult::None
    );

    // M2 resumes the task: it fences both groups before anything else.
    for sm in [&mut sa, &mut sd] {
        assert_eq!(
            run1(sm, Command::Fence { token: m2 }).await?,
            CommandResult::None
        );
    }
    // M1 wakes: each of its steps, at either group, is refused and changes nothing.
    let refused = CommandResult::Admin(AdminResult::Fenced { current: m2 });
    for (group, sm) in [(a, &mut sa), (d, &mut sd)] {
        for step in every_step(copy.clone()) {
            let before = observable(&store, sm, group).await?;
            let what = format!("{step:?}");
            assert_eq!(run1(sm, step.fenced(m1)).await?, refused, "{group}: {what}");
            let after = observable(&store, sm, group).await?;
            assert_eq!(after, before, "{group}: {what} changed state");
        }
        assert_eq!(run1(sm, Command::Fence { token: m1 }).await?, refused);
    }
    // A key write never rides a fence.
    assert_eq!(
        run1(&mut sa, put("k1", "x").fenced(m2)).await?,
        CommandResult::Write(WriteResult::Misrouted {
            slot: 0,
            key_slot: None
        })
    );

    // M2 completes the move; D then serves every moved key with A's value.
    assert_eq!(run1(&mut sd, begin.fenced(m2)).await?, CommandResult::None);
    let copy = store.scan_slots(a, &slots, None, usize::MAX)?.records;
    let n = copy.len() as u64;
    let r = run1(&mut sd, Command::Ingest { records: copy }.fenced(m2)).await?;
    assert_eq!(
        r,
        CommandResult::Admin(AdminResult::Ingested {
            written: n,
            skipped: 0
        })
    );
    assert_eq!(run1(&mut sa, freeze.fenced(m2)).await?, CommandResult::None);
    let release = Command::Release {
        slots: slots.clone(),
    };
    assert_eq!(
        run1(&mut sa, release.fenced(m2)).await?,
        CommandResult::None
    );
    let activate = Command::ActivateAt {
        slots: slots.clone(),
        epoch: 3,
    };
    assert_eq!(
        run1(&mut sd, activate.fenced(m2)).await?,
        CommandResult::None
    );
    for k in &keys {
        let moved = kvorum_router::slot_of(k.as_bytes()).0 <= MOVING.1;
        let at = if moved { d } else { a };
        assert_eq!(
            store.read(at, k)?.map(|r| r.value),
            Some("v1".into()),
            "{k}"
        );
    }

    // The fence survives a restart ...
    drop((sa, sd));
    drop(store);
    let store = Store::open(dir.path())?;
    let mut sd = store.state_machine(d).await?;
    let drop_slots = Command::DropSlots {
        slots: slots.clone(),
    };
    assert_eq!(run1(&mut sd, drop_slots.clone().fenced(m1)).await?, refused);
    // ... and travels in a snapshot: a replica that installs one refuses M1 too.
    let snap = sd.get_snapshot_builder().await.build_snapshot().await?;
    let dir2 = tempfile::TempDir::new()?;
    let store2 = Store::open(dir2.path())?;
    let mut sd2 = store2.state_machine(d).await?;
    sd2.install_snapshot(&snap.meta, snap.snapshot).await?;
    let before = observable(&store2, &mut sd2, d).await?;
    assert_eq!(run1(&mut sd2, drop_slots.fenced(m1)).await?, refused);
    assert_eq!(observable(&store2, &mut sd2, d).await?, before);
    // A newer driver is admitted everywhere.
    let m3 = FenceToken { term: 8, task: 9 };
    assert_eq!(
        run1(&mut sd2, Command::Fence { token: m3 }).await?,
        CommandResult::None
    );
    Ok(())
}
