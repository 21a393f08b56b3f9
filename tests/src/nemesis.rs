//! Nemeses: faults injected into a running test cluster on purpose.
//!
//! - kill: SIGKILL a node (a random one or a group's leader), restart it when the fault heals;
//! - kill-all: SIGKILL every node at once, restart them all when the fault heals;
//! - pause: SIGSTOP a node (a random one or a group's leader), SIGCONT when the fault heals;
//! - power loss: on lazyfs-mounted data directories, cut the power of one node, of a minority
//!   or of every node (SIGKILL, then drop every write not fsynced), restart them on what was
//!   synced when the fault heals;
//! - partition: drop packets between loopback address pairs with nftables (needs root and the
//!   `nft` tool). Every node binds its outgoing connections to its own address, so a rule on an
//!   address pair cuts exactly that link. Clients use an address no rule mentions;
//! - membership: view changes during the run — a new node started with `--join` and added,
//!   a spare removed, a replica removed (replaced by a spare, or its group dissolved) — driven by
//!   `jepsen::run`, which keeps the workers' node list in step.

use std::net::IpAddr;
use std::process::Command;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nemesis {
    Kill,
    Pause,
    Partition,
    Membership,
    /// Every node SIGKILLed at once, all restarted when the fault heals.
    KillAll,
    /// Power cuts on lazyfs mounts (the run starts its cluster with lazyfs): in turn one node,
    /// a minority of the nodes, every node.
    PowerLoss,
    /// The metadata leader cut off from the other config voters only (nftables): it still
    /// reaches every other node, so it believes it leads while a new metadata leader is elected
    /// (openraft 0.9 has no check-quorum). Healed when the fault ends.
    IsolateMetadataLeader,
}

impl Nemesis {
    pub fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::Membership => "membership",
            Nemesis::KillAll => "kill-all",
            Nemesis::PowerLoss => "power-loss",
            Nemesis::IsolateMetadataLeader => "isolate-metadata-leader",
        }
    }
}

/// Whether a test that needs `what` can run: true if it is there; else, with
/// `KVORUM_ALLOW_SKIP=1`, prints `SKIPPED test: why` on stdout (the test summary shows it) and
/// returns false; without it, fails the test.
pub fn available_or_skip(test: &str, what: Result<(), String>) -> bool {
    match what {
        Ok(()) => true,
        Err(why) if std::env::var("KVORUM_ALLOW_SKIP").is_ok_and(|v| v == "1") => {
            println!("SKIPPED {test}: {why}");
            false
        }
        Err(why) => panic!("{test} cannot run: {why} (KVORUM_ALLOW_SKIP=1 skips it)"),
    }
}

/// Whether partitions can be done here (see [`available_or_skip`]).
pub fn partitions_available(test: &str) -> bool {
    available_or_skip(test, Partitioner::new().map(|_| ()))
}

/// Shapes of network partitions over nodes `0..n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionShape {
    /// Two random halves, both non-empty (a draw with every node on one side is redrawn).
    RandomHalves,
    /// Every node whose `side` is true alone (typically the leader of every data group and the
    /// metadata leader); the others reach each other.
    IsolateEach,
    /// The given node alone (typically the leader).
    Isolate(usize),
    /// Node i reaches only i-1 and i+1 (mod n): every node sees a majority, no two the same.
    MajorityRing,
    /// The given node cut off from the nodes whose `side` is true (typically the metadata
    /// leader from the other config voters); every other link stays.
    Sever(usize),
}

/// Whether nodes `a` and `b` (0-based) may talk under `shape`; `side` gives the halves.
pub fn connected(shape: PartitionShape, n: usize, side: &[bool], a: usize, b: usize) -> bool {
    match shape {
        PartitionShape::RandomHalves => side[a] == side[b],
        PartitionShape::IsolateEach => a == b || (!side[a] && !side[b]),
        PartitionShape::Isolate(x) => (a == x) == (b == x),
        PartitionShape::MajorityRing => {
            let d = (a + n - b) % n;
            a == b || d == 1 || d == n - 1
        }
        PartitionShape::Sever(x) => {
            a == b || (a == x && !side[b]) || (b == x && !side[a]) || (a != x && b != x)
        }
    }
}

/// Packet filtering on loopback address pairs through an nftables table of this process.
pub struct Partitioner {
    table: String,
}

fn nft(script: &str) -> Result<(), String> {
    let out = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(script.as_bytes())?;
            }
            child.wait_with_output()
        })
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

impl Partitioner {
    /// Creates this process's table, or says why partitions cannot be done here.
    pub fn new() -> Result<Partitioner, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("partition tests need root (nftables rules)".into());
        }
        // Unique per partitioner: tests of one process create and drop them concurrently.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let table = format!("kvorum_test_{}_{n}", std::process::id());
        nft(&format!(
            "add table inet {table}\nadd chain inet {table} input {{ type filter hook input priority -10 ; policy accept ; }}\n"
        ))
        .map_err(|e| format!("nftables unavailable (install the nftables package): {e}"))?;
        Ok(Partitioner { table })
    }

    /// Drops all traffic between every pair of `addrs` for which `connected` is false.
    pub fn cut(
        &self,
        addrs: &[IpAddr],
        mut connected: impl FnMut(usize, usize) -> bool,
    ) -> Result<(), String> {
        let mut script = format!("flush chain inet {} input\n", self.table);
        for (i, a) in addrs.iter().enumerate() {
            for (j, b) in addrs.iter().enumerate() {
                if i != j && !connected(i, j) {
                    script.push_str(&format!(
                        "add rule inet {} input ip saddr {a} ip daddr {b} drop\n",
                        self.table
                    ));
                }
            }
        }
        nft(&script)
    }

    /// Removes every rule: the network is whole again.
    pub fn heal(&self) -> Result<(), String> {
        nft(&format!("flush chain inet {} input\n", self.table))
    }
}

impl Drop for Partitioner {
    fn drop(&mut self) {
        let _ = nft(&format!("delete table inet {}\n", self.table));
    }
}

/// Two random halves of `n` nodes for [`PartitionShape::RandomHalves`]: sides drawn by `rng`
/// until neither half is empty (for `n` ≥ 2), so the partition really cuts.
pub fn random_halves(rng: &mut impl rand::Rng, n: usize) -> Vec<bool> {
    loop {
        let side: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
        if n < 2 || (side.contains(&true) && side.contains(&false)) {
            return side;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    // Random halves always cut: over many draws of 2..7 nodes, both sides are non-empty.
    #[test]
    fn random_halves_are_never_one_sided() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in 2..8 {
            for _ in 0..500 {
                let side = random_halves(&mut rng, n);
                assert!(side.contains(&true) && side.contains(&false), "{side:?}");
            }
        }
    }

    // Severing a node from the marked ones: it reaches the unmarked nodes only; every other
    // pair, marked or not, still talks.
    #[test]
    fn sever_cuts_one_node_from_the_marked_ones_only() {
        let side = [false, true, true, false, false];
        let c = |a, b| connected(PartitionShape::Sever(0), 5, &side, a, b);
        assert!(!c(0, 1) && !c(2, 0));
        assert!(c(0, 3) && c(4, 0) && c(0, 0));
        assert!(c(1, 2) && c(1, 3) && c(3, 4));
    }

    // Isolating each marked node: marked nodes reach no one, the rest reach each other.
    #[test]
    fn isolate_each_cuts_every_marked_node() {
        let side = [true, false, false, true, false];
        let c = |a, b| connected(PartitionShape::IsolateEach, 5, &side, a, b);
        assert!(!c(0, 1) && !c(0, 3) && !c(3, 4) && !c(1, 0));
        assert!(c(1, 2) && c(2, 4) && c(0, 0));
    }

    // In a majority ring of 5, each node reaches itself and its two neighbours only.
    #[test]
    fn majority_ring_links_neighbours() {
        let side = [false; 5];
        let reach = |a| {
            (0..5)
                .filter(|b| connected(PartitionShape::MajorityRing, 5, &side, a, *b))
                .count()
        };
        assert!((0..5).all(|a| reach(a) == 3));
        assert!(!connected(PartitionShape::MajorityRing, 5, &side, 0, 2));
        assert!(connected(PartitionShape::MajorityRing, 5, &side, 0, 4));
    }

    // An isolated node reaches no one; the others reach each other.
    #[test]
    fn isolate_cuts_one_node() {
        let side = [false; 3];
        assert!(!connected(PartitionShape::Isolate(1), 3, &side, 1, 0));
        assert!(connected(PartitionShape::Isolate(1), 3, &side, 0, 2));
    }
}
