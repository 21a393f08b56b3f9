//! A group's slot table: which writes and reads it serves in each slot state and at which
//! epoch, the same outcome batched or one by one, and the table (with the version base) kept
//! across restarts, snapshots and a dropped group.

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

use crate::layout::{self, CF_DATA, CF_LOG, CF_META};
use crate::test_support::{
    assert_stats_right, index_of, keys_in_distinct_slots, one, put, run, run1, slot, ALL,
};
use crate::{
    AdminResult, Command, CommandResult, GroupId, SlotState, Store, Versioned, WriteResult,
};

// Writes of every kind to a Frozen slot answer Frozen, to a Released or Incoming slot
// NotOwner, and write nothing; writes to Owned slots still apply.
#[tokio::test]
async fn writes_to_unserved_slots_are_refused_and_write_nothing() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let store = Store::open(dir.path())?;
    let g = GroupId(11);
    let mut sm = store.state_machine(g).await?;
    let ks = keys_in_distinct_slots(4);
    let (frozen, released, incoming, owned) = (&ks[0], &ks[1], &ks[2], &ks[3]);
    let mut cmds = vec![Command::InitSlots { owned: vec![ALL] }];
    cmds.extend(ks.iter().map(|k| put(k, "v1")));
    cmds.extend([
        Command::Freeze {
            slots: vec![
                (slot(frozen), slot(frozen)),
                (slot(released), slot(released)),
            ],
        },
        Command::Release {
            slots: one(slot(released)),
        },
        Command::Freeze {
            slots: one(slot(incoming)),
        },
        Command::Release {
            slots: one(slot(incoming)),
        },
        Command::BeginIncoming {
            slots: one(slot(incoming)),
        },
    ]);
    let results = run(&mut sm, cmds).await?;
    assert!(
        results
            .iter()
            .all(|r| !matches!(r, CommandResult::Admin(AdminResult::SlotState { .. }))),
        "{results:?}"
    );
    let before: Vec<Option<Versioned>> = ks
        .iter()
        .map(|k| store.read(g, k))
        .collect::<Result<_, _>>()?;
    assert!(before[2].is_none(), "BeginIncoming deletes the slot's data");
    for (key, expect) in [
        (
            frozen,
            CommandResult::Write(WriteResult::Frozen { slot: slot(frozen) }),
        ),
        (
            released,
            CommandResult::Write(WriteResult::NotOwner {
                slot: slot(released),
            }),
        ),
        (
            incoming,
            CommandResult::Write(WriteResult::NotOwner {
                slot: slot(incoming),
            }),
        ),
    ] {
        let writes = vec![
            put(key, "v2"),
            Command::Delete {
                key: key.clone(),
                condition: None,
            },
            Command::Append {
                key: key.clone(),
                suffix: "x".into(),
            },
            Command::AppendBounded {
                key: key.clone(),
                suffix: "x".into(),
                max_value_bytes: 99,
            },
        ];
        for r in run(&mut sm, writes).await? {
            assert_eq!(r, expect, "{key}");
        }
    }
    let after: Vec<Option<Versioned>> = ks
        .iter()
        .map(|k| store.read(g, k))
        .collect::<Result<_, _>>()?;
    assert_eq!(after[..3], before[..3], "a refused write wrote something");
    assert!(matches!(
        run1(&mut sm, put(owned, "v2")).await?,
        CommandResult::Write(WriteResult::Written { .. })
    ));
    assert_eq!(store.slot_state(g, slot(frozen)), SlotState::Frozen);
    assert_eq!(store.slot_state(g, slot(released)), SlotState::Released);
    assert_eq!(store.slot_state(g, slot(incoming)), SlotState::Incoming);
    assert_eq!(store.slot_state(g, slot(owned)), SlotState::Owned);
    assert_stats_right(&store, g)
}

// A group whose table was never initialized serves every slot, and a later InitSlots is
// applied once (a second one is a no-op).
#[tokio::test]
async fn uninitialized_groups_own_every_slot_and_init_is_idempotent() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let store = Store::open(dir.path())?;
    let g = GroupId(12);
    let mut sm = store.state_machine(g).await?;
    assert!(matches!(
        run1(&mut sm, put("a", "1")).await?,
        CommandResult::Write(WriteResult::Written { .. })
    ));
    assert_eq!(store.slot_table(g), None);
    assert_eq!(store.slot_state(g, slot("a")), SlotState::Owned);
    let s = slot("a");
    assert_eq!(
        run1(&mut sm, Command::InitSlots { owned: one(s) }).await?,
        CommandResult::None
    );
    assert_eq!(
        run1(&mut sm, Command::InitSlots { owned: vec![] }).await?,
        CommandResult::None
    );
    let table = store.slot_table(g).expect("initialized");
    assert_eq!(table[usize::from(s)], SlotState::Owned);
    assert_eq!(table.iter().filter(|t| **t == SlotState::Owned).count(), 1);
    Ok(())
}

// The same entries give the same results and state whether applied in one batch (reading
// through the batch's pending writes and range deletes) or one by one, and applying a
// sequence's admin commands again changes nothing further.
#[tokio::test]
async fn batched_and_single_application_agree() -> anyhow::Result<()> {
    let ks = keys_in_distinct_slots(3);
    let s: Vec<u16> = ks.iter().map(|k| slot(k)).collect();
    let rec = |v: &str, version| Versioned {
        value: v.into(),
        version,
    };
    let cmds = vec![
        Command::InitSlots {
            owned: vec![(s[0], s[0])],
        },
        put(&ks[0], "a"),
        put(&ks[1], "refused"),
        Command::BeginIncoming { slots: one(s[1]) },
        Command::Ingest {
            records: vec![
                (ks[1].clone(), rec("in", 500)),
                (ks[0].clone(), rec("skip", 9)),
            ],
        },
        Command::AbortIncoming { slots: one(s[1]) },
        Command::BeginIncoming { slots: one(s[1]) },
        Command::Ingest {
            records: vec![(ks[1].clone(), rec("in2", 700))],
        },
        Command::Ingest {
            records: vec![(ks[1].clone(), rec("in3", 800))],
        },
        Command::BeginIncoming { slots: one(s[1]) },
        Command::Ingest {
            records: vec![(ks[1].clone(), rec("in4", 900))],
        },
        Command::Activate { slots: one(s[1]) },
        Command::Activate { slots: one(s[1]) },
        Command::Append {
            key: ks[1].clone(),
            suffix: "+".into(),
        },
        Command::Freeze { slots: one(s[0]) },
        Command::Freeze { slots: one(s[0]) },
        put(&ks[0], "frozen"),
        Command::Release { slots: one(s[0]) },
        Command::Release { slots: one(s[0]) },
        Command::DropSlots { slots: vec![ALL] },
        Command::DropSlots { slots: vec![ALL] },
        Command::Freeze { slots: one(s[2]) },
    ];
    let mut outcomes = Vec::new();
    for batched in [true, false] {
        let dir = tempfile::TempDir::new()?;
        let store = Store::open(dir.path())?;
        let g = GroupId(40);
        let mut sm = store.state_machine(g).await?;
        let results = if batched {
            run(&mut sm, cmds.clone()).await?
        } else {
            let mut rs = Vec::new();
            for c in cmds.clone() {
                rs.push(run1(&mut sm, c).await?);
            }
            rs
        };
        let data: Vec<Option<Versioned>> = ks
            .iter()
            .map(|k| store.read(g, k))
            .collect::<Result<_, _>>()?;
        assert_stats_right(&store, g)?;
        outcomes.push((results, data, store.slot_table(g), store.group_stats(g)?));
    }
    assert_eq!(outcomes[0], outcomes[1]);
    let (results, data, _, stats) = &outcomes[0];
    assert_eq!(
        results[2],
        CommandResult::Write(WriteResult::NotOwner { slot: s[1] })
    );
    assert_eq!(
        results[4],
        CommandResult::Admin(AdminResult::Ingested {
            written: 1,
            skipped: 1
        })
    );
    assert_eq!(
        results[16],
        CommandResult::Write(WriteResult::Frozen { slot: s[0] })
    );
    assert_eq!(
        results[21],
        CommandResult::Admin(AdminResult::SlotState {
            slot: s[2],
            state: SlotState::Released
        })
    );
    assert_eq!(data[0], None, "dropped");
    assert_eq!(data[1].as_ref().map(|r| r.value.as_str()), Some("in4+"));
    assert!(data[1].as_ref().is_some_and(|r| r.version > 900));
    assert_eq!(stats.0, 1);
    Ok(())
}

// The slot table and version base survive a restart, and are carried by a snapshot into
// another store; versions keep growing above ingested ones on both.
#[tokio::test]
async fn table_and_version_base_survive_restart_and_snapshots() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let g = GroupId(50);
    let s = slot("k");
    let (table, snap, last) = {
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(g).await?;
        run1(&mut sm, Command::InitSlots { owned: vec![] }).await?;
        run1(&mut sm, Command::BeginIncoming { slots: one(s) }).await?;
        let rec = Versioned {
            value: "old".into(),
            version: 10_000,
        };
        let r = run1(
            &mut sm,
            Command::Ingest {
                records: vec![("k".into(), rec.clone())],
            },
        )
        .await?;
        assert_eq!(
            r,
            CommandResult::Admin(AdminResult::Ingested {
                written: 1,
                skipped: 0
            })
        );
        assert_eq!(store.read(g, "k")?, Some(rec));
        run1(&mut sm, Command::Activate { slots: one(s) }).await?;
        let mut last = 10_000;
        for i in 0..3 {
            match run1(&mut sm, put("k", &format!("v{i}"))).await? {
                CommandResult::Write(WriteResult::Written { version }) => {
                    assert!(version > last, "version {version} not above {last}");
                    last = version;
                }
                r => panic!("{r:?}"),
            }
        }
        let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
        (store.slot_table(g), snap, last)
    };
    assert!(table.is_some());
    // Restart.
    let store = Store::open(dir.path())?;
    assert_eq!(
        store.slot_table(g),
        table,
        "loaded at open, before the state machine"
    );
    let mut sm = store.state_machine(g).await?;
    match run1(&mut sm, put("k", "after restart")).await? {
        CommandResult::Write(WriteResult::Written { version }) => {
            assert!(version > last, "{version} <= {last}")
        }
        r => panic!("{r:?}"),
    }
    // Snapshot install into another store's group (which had a different table).
    let dir2 = tempfile::TempDir::new()?;
    let store2 = Store::open(dir2.path())?;
    let mut sm2 = store2.state_machine(g).await?;
    run1(&mut sm2, Command::InitSlots { owned: vec![ALL] }).await?;
    sm2.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert_eq!(store2.slot_table(g), table);
    assert_eq!(store2.slot_state(g, s), SlotState::Owned);
    assert_eq!(
        store2.slot_state(g, s.wrapping_add(1) % 4096),
        SlotState::Released
    );
    assert_stats_right(&store2, g)?;
    match run1(&mut sm2, put("k", "on the copy")).await? {
        CommandResult::Write(WriteResult::Written { version }) => {
            assert!(version > last, "{version} <= {last}")
        }
        r => panic!("{r:?}"),
    }
    // And after a restart of the installed copy.
    drop(sm2);
    drop(store2);
    let store2 = Store::open(dir2.path())?;
    assert_eq!(store2.slot_table(g), table);
    Ok(())
}

// A routed write applies only if it names its key's slot and the group owns the slot at its
// epoch: ActivateAt records the epoch from which it does (a later ActivateAt of an owned slot
// keeps it); reads are checked the same way. Unrouted writes (entries of older nodes) apply
// as before. The epochs survive a restart (loaded at open, before the state machine) and
// travel in snapshots.
#[tokio::test]
async fn routed_writes_and_reads_are_checked_against_the_slot_epochs() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let g = GroupId(52);
    let s = slot("k");
    let other = (s + 1) % 4096;
    let snap = {
        let store = Store::open(dir.path())?;
        let mut sm = store.state_machine(g).await?;
        run1(&mut sm, Command::InitSlots { owned: vec![] }).await?;
        run1(&mut sm, Command::BeginIncoming { slots: one(s) }).await?;
        let activate = |epoch| Command::ActivateAt {
            slots: one(s),
            epoch,
        };
        assert_eq!(run1(&mut sm, activate(7)).await?, CommandResult::None);
        assert!(!store.serves_read(g, s, 6) && store.serves_read(g, s, 7));
        assert_eq!(
            run1(&mut sm, put("k", "old map").routed(s, 6)).await?,
            CommandResult::Write(WriteResult::NotOwner { slot: s })
        );
        assert_eq!(store.read(g, "k")?, None);
        let written = run1(&mut sm, put("k", "v").routed(s, 7)).await?;
        assert!(
            matches!(written, CommandResult::Write(WriteResult::Written { .. })),
            "{written:?}"
        );
        assert_eq!(
            run1(&mut sm, put("k", "x").routed(other, 7)).await?,
            CommandResult::Write(WriteResult::Misrouted {
                slot: other,
                key_slot: Some(s)
            })
        );
        let not_a_write = Command::Freeze { slots: one(s) }.routed(s, 7);
        let nested = put("k", "x").routed(s, 7).routed(s, 7);
        for cmd in [not_a_write, nested] {
            assert_eq!(
                run1(&mut sm, cmd).await?,
                CommandResult::Write(WriteResult::Misrouted {
                    slot: s,
                    key_slot: None
                })
            );
        }
        assert_eq!(store.read(g, "k")?.map(|r| r.value), Some("v".into()));
        // An unrouted write (an entry proposed by an older node) is not epoch-checked.
        let unrouted = run1(&mut sm, put("k", "unrouted")).await?;
        assert!(
            matches!(unrouted, CommandResult::Write(WriteResult::Written { .. })),
            "{unrouted:?}"
        );
        // Activating an owned slot again keeps its epoch.
        assert_eq!(run1(&mut sm, activate(9)).await?, CommandResult::None);
        assert!(store.serves_read(g, s, 7));
        // Released slots are not served whatever the epoch.
        assert!(!store.serves_read(g, other, 100));
        sm.get_snapshot_builder().await.build_snapshot().await?
    };
    let store = Store::open(dir.path())?;
    assert!(
        !store.serves_read(g, s, 6) && store.serves_read(g, s, 7),
        "loaded at open"
    );
    let mut sm = store.state_machine(g).await?;
    assert_eq!(
        run1(&mut sm, put("k", "old map").routed(s, 6)).await?,
        CommandResult::Write(WriteResult::NotOwner { slot: s })
    );
    // A snapshot carries them into another store's group (which had none).
    let dir2 = tempfile::TempDir::new()?;
    let store2 = Store::open(dir2.path())?;
    let mut sm2 = store2.state_machine(g).await?;
    run1(&mut sm2, Command::InitSlots { owned: vec![ALL] }).await?;
    assert!(store2.serves_read(g, s, 1));
    sm2.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert!(!store2.serves_read(g, s, 6) && store2.serves_read(g, s, 7));
    assert_eq!(
        run1(&mut sm2, put("k", "old map").routed(s, 6)).await?,
        CommandResult::Write(WriteResult::NotOwner { slot: s })
    );
    drop(sm2);
    drop(store2);
    let store2 = Store::open(dir2.path())?;
    assert!(!store2.serves_read(g, s, 6) && store2.serves_read(g, s, 7));
    Ok(())
}

// A read checks ownership before and after it reads: when the slot is released and its data
// dropped between the first check and the read (as a move's Release and DropSlots can apply
// meanwhile), the key is not served, rather than answered as absent.
#[tokio::test]
async fn a_read_overlapping_a_release_and_drop_is_not_served() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let store = Store::open(dir.path())?;
    let g = GroupId(57);
    let s = slot("k");
    let mut sm = store.state_machine(g).await?;
    run1(&mut sm, Command::InitSlots { owned: vec![ALL] }).await?;
    run1(&mut sm, put("k", "v")).await?;
    assert!(matches!(
        store.read_served(g, s, 1, "k")?,
        crate::ServedRead::Found(_)
    ));
    // The reader passes its first check, then stalls before reading.
    let (entered, release) = store.arm_write_stall();
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || store.read_served(g, s, 1, "k"))
    };
    entered.recv_timeout(std::time::Duration::from_secs(5))?;
    run(
        &mut sm,
        vec![
            Command::Freeze { slots: one(s) },
            Command::Release { slots: one(s) },
            Command::DropSlots { slots: one(s) },
        ],
    )
    .await?;
    assert_eq!(store.read(g, "k")?, None, "dropped");
    release.send(())?;
    let answer = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    assert_eq!(answer, crate::ServedRead::NotServed);
    Ok(())
}

// A snapshot of a group without a table (as older versions wrote them) installs as
// uninitialized with base 0, replacing the receiver's table.
#[tokio::test]
async fn a_snapshot_without_a_table_installs_as_uninitialized() -> anyhow::Result<()> {
    let g = GroupId(51);
    let src_dir = tempfile::TempDir::new()?;
    let src = Store::open(src_dir.path())?;
    let mut src_sm = src.state_machine(g).await?;
    run1(&mut src_sm, put("a", "1")).await?;
    let snap = src_sm.get_snapshot_builder().await.build_snapshot().await?;
    let dir = tempfile::TempDir::new()?;
    let store = Store::open(dir.path())?;
    let mut sm = store.state_machine(g).await?;
    run(&mut sm, vec![Command::InitSlots { owned: vec![] }]).await?;
    sm.install_snapshot(&snap.meta, snap.snapshot).await?;
    assert_eq!(store.slot_table(g), None);
    match run1(&mut sm, put("a", "2")).await? {
        CommandResult::Write(WriteResult::Written { version }) => {
            assert_eq!(version, index_of(&mut sm).await?)
        }
        r => panic!("{r:?}"),
    }
    Ok(())
}

// Dropping a group leaves no key of it in any column family and none of its snapshot
// files; other groups are untouched, and the group can start again from empty.
#[tokio::test]
async fn drop_group_leaves_nothing_behind() -> anyhow::Result<()> {
    let dir = tempfile::TempDir::new()?;
    let store = Store::open(dir.path())?;
    let (g, other) = (GroupId(60), GroupId(61));
    for group in [g, other] {
        let mut sm = store.state_machine(group).await?;
        run(
            &mut sm,
            vec![Command::InitSlots { owned: vec![ALL] }, put("a", "1")],
        )
        .await?;
        sm.get_snapshot_builder().await.build_snapshot().await?;
        use openraft::storage::RaftLogStorage;
        let mut log = store.log_store(group);
        log.save_vote(&openraft::Vote::new(1, 1)).await?;
    }
    store.drop_group(g)?;
    for cf in [CF_LOG, CF_META, CF_DATA] {
        let mut it = store.db().raw_iterator_cf(store.cf(cf));
        it.seek(layout::group_start(g));
        let left = it.key().filter(|k| k.starts_with(&layout::group_start(g)));
        assert!(
            left.is_none(),
            "{cf}: key {left:?} of the dropped group left"
        );
    }
    let files: Vec<String> = std::fs::read_dir(dir.path().join("snapshots"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    assert!(files.iter().all(|f| !f.starts_with("g60-")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("g61-")), "{files:?}");
    assert_eq!(store.slot_table(g), None);
    // A tombstone: the dropped group serves nothing (an uninitialized table would serve
    // every slot, answering "absent" for keys that live elsewhere now).
    assert!(!store.serves_read(g, slot("a"), u64::MAX));
    assert_eq!(store.slot_state(g, slot("a")), SlotState::Released);
    assert_eq!(
        store.read_served(g, slot("a"), u64::MAX, "a")?,
        crate::ServedRead::NotServed
    );
    assert!(store.slot_table(other).is_some());
    assert!(store.serves_read(other, slot("a"), u64::MAX));
    assert!(store.read(other, "a")?.is_some());
    let mut sm = store.state_machine(g).await?;
    assert_eq!(sm.applied_state().await?.0, None);
    assert_eq!(store.read(g, "a")?, None);
    Ok(())
}
