//! Slot moves between two groups of one store: copy, freeze, catch-up and hand-over, a rolled
//! back move, and the destination's versions raised above every one the source gave.

use crate::test_support::{
    assert_stats_right, del, hand_over, move_setup, one, put, run, run1, slot, MoveSetup,
};
use crate::{
    AdminResult, Command, CommandResult, GroupId, SlotState, Store, Versioned, WriteResult,
};

// Copy → fence → catch-up: B copies A's slots while A still takes writes (overwrites,
// deletes, creates); after A freezes, a scan since the copy's high-water mark returns only
// what changed as records and the rest as keys, and one CatchUp (changed records, keys the
// copy brought that A no longer has, A's final high-water mark) leaves B equal to A, with
// B's next writes above every version A gave.
#[tokio::test]
async fn a_copy_before_the_freeze_is_caught_up_after_it() -> anyhow::Result<()> {
    let (a, b) = (GroupId(31), GroupId(32));
    let moving = vec![(0u16, 2047u16)];
    let moves = |k: &str| slot(k) <= 2047;
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let writes = keys.iter().map(|k| put(k, "v1")).collect();
    let MoveSetup {
        dir: _dir,
        store,
        mut sa,
        mut sb,
    } = move_setup((a, b), None, writes).await?;
    run1(
        &mut sb,
        Command::BeginIncoming {
            slots: moving.clone(),
        },
    )
    .await?;
    // The copy, A not frozen: the mark is read before the scan.
    let mark = store.version_high_water(a)?;
    let mut copied: Vec<String> = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let chunk = store.scan_slots(a, &moving, cursor.as_deref(), 500)?;
        assert!(chunk.unchanged.is_empty());
        copied.extend(chunk.records.iter().map(|(k, _)| k.clone()));
        run1(
            &mut sb,
            Command::Ingest {
                records: chunk.records,
            },
        )
        .await?;
        match chunk.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    // A keeps serving: overwrites, deletes and creates in the moving slots.
    let mut later = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match i % 4 {
            0 => later.push(put(k, "v2")),
            1 => later.push(del(k)),
            _ => {}
        }
    }
    later.extend((0..40).map(|i| put(&format!("new{i}"), "n")));
    run(&mut sa, later).await?;
    run1(
        &mut sa,
        Command::Freeze {
            slots: moving.clone(),
        },
    )
    .await?;
    // The catch-up: everything changed since the mark, in one chunk.
    let chunk = store.scan_slots_since(a, &moving, None, 1 << 20, mark)?;
    assert_eq!(chunk.next, None);
    let present: std::collections::BTreeSet<&String> = chunk
        .unchanged
        .iter()
        .chain(chunk.records.iter().map(|(k, _)| k))
        .collect();
    let changed = keys
        .iter()
        .enumerate()
        .filter(|(i, k)| i % 4 == 0 && moves(k))
        .count()
        + (0..40).filter(|i| moves(&format!("new{i}"))).count();
    assert_eq!(
        chunk.records.len(),
        changed,
        "only changed records carry values"
    );
    assert!(chunk.records.iter().all(|(_, r)| r.version > mark));
    let removed: Vec<String> = copied
        .iter()
        .filter(|k| !present.contains(k))
        .cloned()
        .collect();
    let deleted = keys
        .iter()
        .enumerate()
        .filter(|(i, k)| i % 4 == 1 && moves(k))
        .count();
    assert_eq!(removed.len(), deleted);
    let above = store.version_high_water(a)?;
    let r = run1(
        &mut sb,
        Command::CatchUp {
            records: chunk.records,
            removed,
            above,
        },
    )
    .await?;
    assert_eq!(
        r,
        CommandResult::Admin(AdminResult::Ingested {
            written: (changed + deleted) as u64,
            skipped: 0
        })
    );
    // B now holds exactly A's data of the moving slots.
    let all: Vec<String> = keys
        .iter()
        .cloned()
        .chain((0..40).map(|i| format!("new{i}")))
        .collect();
    for k in &all {
        let want = if moves(k) { store.read(a, k)? } else { None };
        assert_eq!(store.read(b, k)?, want, "{k}");
    }
    assert_eq!(store.slot_stats(a, &moving)?, store.slot_stats(b, &moving)?);
    assert_stats_right(&store, b)?;
    hand_over(&mut sa, &mut sb, &moving).await?;
    // A key deleted at A and created again at B gets a version above every one A gave.
    let gone = keys
        .iter()
        .enumerate()
        .find(|(i, k)| i % 4 == 1 && moves(k))
        .map(|(_, k)| k.clone())
        .expect("a deleted moving key");
    match run1(&mut sb, put(&gone, "again")).await? {
        CommandResult::Write(WriteResult::Written { version }) => {
            assert!(version > above, "{version} <= {above}")
        }
        r => panic!("{r:?}"),
    }
    Ok(())
}

// A whole move of half the slots from A to B in one store, copying in small chunks:
// afterwards B serves every moved key with its value and version, A none of them, the
// others stay at A, counts are right on both, and B's next writes get higher versions.
#[tokio::test]
async fn a_move_between_two_groups_moves_every_key_with_its_version() -> anyhow::Result<()> {
    let (a, b) = (GroupId(21), GroupId(22));
    let keys: Vec<String> = (0..300).map(|i| format!("k{i}")).collect();
    let writes = keys
        .iter()
        .map(|k| put(k, &format!("value of {k}")))
        .collect();
    let MoveSetup {
        dir: _dir,
        store,
        mut sa,
        mut sb,
    } = move_setup((a, b), None, writes).await?;
    // Overwrites, so A's versions are well above B's log index.
    run(
        &mut sa,
        keys.iter().map(|k| put(k, &format!("v2 of {k}"))).collect(),
    )
    .await?;
    let moving = vec![(0u16, 1000u16), (3000, 4095)];
    let moves = |k: &str| moving.iter().any(|&(f, t)| (f..=t).contains(&slot(k)));
    let before: Vec<Option<Versioned>> = keys
        .iter()
        .map(|k| store.read(a, k))
        .collect::<Result<_, _>>()?;

    assert_eq!(
        run1(
            &mut sa,
            Command::Freeze {
                slots: moving.clone()
            }
        )
        .await?,
        CommandResult::None
    );
    assert_eq!(
        run1(
            &mut sb,
            Command::BeginIncoming {
                slots: moving.clone()
            }
        )
        .await?,
        CommandResult::None
    );
    let mut cursor: Option<Vec<u8>> = None;
    let (mut copied, mut chunks) = (0u64, 0);
    loop {
        let chunk = store.scan_slots(a, &moving, cursor.as_deref(), 300)?;
        assert!(chunk.bytes <= 300 + 200, "chunk of {} bytes", chunk.bytes);
        chunks += 1;
        if !chunk.records.is_empty() {
            let n = chunk.records.len() as u64;
            let r = run1(
                &mut sb,
                Command::Ingest {
                    records: chunk.records,
                },
            )
            .await?;
            assert_eq!(
                r,
                CommandResult::Admin(AdminResult::Ingested {
                    written: n,
                    skipped: 0
                })
            );
            copied += n;
        }
        match chunk.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let expected = keys.iter().filter(|k| moves(k)).count() as u64;
    assert_eq!(copied, expected, "in {chunks} chunks");
    assert!(chunks > 5, "only {chunks} chunks");
    assert_eq!(store.slot_stats(a, &moving)?, store.slot_stats(b, &moving)?);
    hand_over(&mut sa, &mut sb, &moving).await?;
    run1(
        &mut sa,
        Command::DropSlots {
            slots: moving.clone(),
        },
    )
    .await?;

    for (k, rec) in keys.iter().zip(&before) {
        let (at_a, at_b) = (store.read(a, k)?, store.read(b, k)?);
        if moves(k) {
            assert_eq!(&at_b, rec, "{k} at B");
            assert_eq!(at_a, None, "{k} at A");
        } else {
            assert_eq!(&at_a, rec, "{k} at A");
            assert_eq!(at_b, None, "{k} at B");
        }
    }
    assert_eq!(store.group_stats(b)?.0, expected);
    assert_eq!(store.group_stats(a)?.0, keys.len() as u64 - expected);
    assert_stats_right(&store, a)?;
    assert_stats_right(&store, b)?;
    // Writes: the moved keys at A are refused, at B they get a higher version.
    let moved = keys.iter().position(|k| moves(k)).expect("some key moves");
    let k = &keys[moved];
    assert_eq!(
        run1(&mut sa, put(k, "x")).await?,
        CommandResult::Write(WriteResult::NotOwner { slot: slot(k) })
    );
    let old = before[moved].as_ref().map_or(0, |r| r.version);
    let max = before
        .iter()
        .flatten()
        .map(|r| r.version)
        .max()
        .unwrap_or(0);
    match run1(&mut sb, put(k, "x")).await? {
        CommandResult::Write(WriteResult::Written { version }) => {
            assert!(
                version > max,
                "version {version} after a move, not above {max} (was {old})"
            )
        }
        r => panic!("{r:?}"),
    }
    Ok(())
}

// A move rolled back: the destination's AbortIncoming deletes what it copied and releases
// the slots; the source's Unfreeze makes the slots writable again.
#[tokio::test]
async fn a_rolled_back_move_leaves_the_source_serving() -> anyhow::Result<()> {
    let (a, b) = (GroupId(31), GroupId(32));
    let MoveSetup {
        dir: _dir,
        store,
        mut sa,
        mut sb,
    } = move_setup((a, b), None, vec![put("k", "v")]).await?;
    let s = slot("k");
    run1(&mut sa, Command::Freeze { slots: one(s) }).await?;
    run1(&mut sb, Command::BeginIncoming { slots: one(s) }).await?;
    let chunk = store.scan_slots(a, &one(s), None, 1 << 20)?;
    assert_eq!(chunk.next, None);
    run1(
        &mut sb,
        Command::Ingest {
            records: chunk.records,
        },
    )
    .await?;
    assert!(store.read(b, "k")?.is_some());
    assert_eq!(
        run1(&mut sb, Command::AbortIncoming { slots: one(s) }).await?,
        CommandResult::None
    );
    assert_eq!(store.read(b, "k")?, None);
    assert_eq!(store.group_stats(b)?, (0, 0));
    assert_eq!(store.slot_state(b, s), SlotState::Released);
    // Activating an aborted copy is refused.
    assert_eq!(
        run1(&mut sb, Command::Activate { slots: one(s) }).await?,
        CommandResult::Admin(AdminResult::SlotState {
            slot: s,
            state: SlotState::Released
        })
    );
    assert_eq!(
        run1(&mut sa, Command::Unfreeze { slots: one(s) }).await?,
        CommandResult::None
    );
    assert!(matches!(
        run1(&mut sa, put("k", "w")).await?,
        CommandResult::Write(WriteResult::Written { .. })
    ));
    assert_stats_right(&store, a)?;
    assert_stats_right(&store, b)
}

// A key deleted at the source and re-created at the destination gets a version above every
// version the source gave, once the move raised the destination's base to the source's
// high water.
#[tokio::test]
async fn raise_version_base_puts_later_writes_above_the_source() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let store = Store::open(dir.path())?;
    let (a, b) = (GroupId(55), GroupId(56));
    let mut sa = store.state_machine(a).await?;
    let mut sb = store.state_machine(b).await?;
    let cmds = (0..50).map(|i| put("k", &i.to_string())).collect();
    run(&mut sa, cmds).await?;
    let last = store.read(a, "k")?.map_or(0, |r| r.version);
    run1(
        &mut sa,
        Command::Delete {
            key: "k".into(),
            condition: None,
        },
    )
    .await?;
    let high = store.version_high_water(a)?;
    assert!(high >= last, "{high} < {last}");
    run1(&mut sb, Command::RaiseVersionBase { above: high }).await?;
    match run1(&mut sb, put("k", "re-created")).await? {
        CommandResult::Write(WriteResult::Written { version }) => {
            assert!(version > high, "{version} <= {high}")
        }
        r => panic!("{r:?}"),
    }
    assert!(store.version_high_water(b)? > high);
    Ok(())
}
