//! Linearizable reads through read index, batched: concurrent reads share one round.
//!
//! Steps: a read enqueues a waiter; the batcher task takes every waiter queued so far, runs one
//! `ensure_linearizable` round (the leader confirms its leadership with a quorum and waits until
//! it applied everything committed before the round began), then wakes them all. Every waiter in
//! a round was queued before the round started, so each read observes every write that completed
//! before the read began. Reads arriving during a round wait for the next one.

use kvorum_raftstore::{NodeId, Raft};
use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::{mpsc, oneshot};

/// Outcome of a read-index round.
#[derive(Debug, Clone)]
// The variant docs name and describe each field.
#[allow(missing_docs)]
pub enum ReadIndex {
    /// This replica is the leader and has applied everything committed before the read began.
    Ready,
    /// This replica is not (or no longer) the leader; the leader is `leader` if known.
    NotLeader { leader: Option<NodeId> },
    /// The round failed (no quorum reached, shutting down); retry.
    Failed(String),
}

/// Queues reads for batched read-index rounds of one group.
#[derive(Clone)]
pub struct ReadBatcher {
    tx: mpsc::UnboundedSender<oneshot::Sender<ReadIndex>>,
}

impl ReadBatcher {
    /// Starts the batcher task of `raft`; it ends when every handle is dropped.
    pub fn spawn(raft: Raft) -> ReadBatcher {
        let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<ReadIndex>>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut waiters = vec![first];
                while let Ok(w) = rx.try_recv() {
                    waiters.push(w);
                }
                let outcome = match raft.ensure_linearizable().await {
                    Ok(_) => ReadIndex::Ready,
                    Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                        ReadIndex::NotLeader {
                            leader: f.leader_id,
                        }
                    }
                    Err(e) => ReadIndex::Failed(e.to_string()),
                };
                tracing::debug!(reads = waiters.len(), ?outcome, "read index round");
                for w in waiters {
                    let _ = w.send(outcome.clone());
                }
            }
        });
        ReadBatcher { tx }
    }

    /// Waits for the next read-index round that starts after this call.
    pub async fn read_index(&self) -> ReadIndex {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(tx).is_err() {
            return ReadIndex::Failed("read batcher stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| ReadIndex::Failed("read batcher stopped".into()))
    }
}
