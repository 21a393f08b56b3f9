//! The leader courier: the one way a node delivers a request to whichever node leads something
//! (a data group, the metadata role) when it only has candidates: send to the first candidate,
//! follow a "not the leader" answer's hint (tried next), move on past an address that does not
//! answer, never try one candidate twice, and give up after [`MAX_TRIES`] distinct candidates.
//!
//! What an answer means is the caller's: each caller sends to one candidate and classifies what
//! came back as an [`Attempt`] (forwarded client requests, the metadata leader's calls to group
//! leaders, heartbeats, cluster calls forwarded to the metadata leader, the status proxy). The
//! courier owns only the order and the limit, so every caller retries the same way.

use std::collections::VecDeque;
use std::future::Future;

/// Most distinct candidates one delivery tries: a group's K members or the config voters (up to
/// five), plus a hint or two, fit.
pub const MAX_TRIES: usize = 6;

/// What one attempt at a candidate came to.
#[derive(Debug)]
pub enum Attempt<T, E, C> {
    /// Answered: the delivery is over with this.
    Done(T),
    /// The delivery is over with this error, not to be tried elsewhere (for example a write that
    /// reached a node and whose outcome is now unknown).
    Fail(E),
    /// The candidate is not the leader; `hint` names the one it believes leads, tried next.
    NotLeader {
        /// The leader the candidate named, if any.
        hint: Option<C>,
        /// What the candidate said, for the error if no candidate answers.
        why: String,
    },
    /// Not delivered, or refused in a way another candidate may not be: try the next one.
    Next(String),
}

/// Why a delivery ended without an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Undelivered<E> {
    /// An attempt failed for good (see [`Attempt::Fail`]).
    Failed(E),
    /// No candidate answered: the last one's reason, or that there was none.
    Exhausted(String),
}

/// Sends `req` (built for `addr`) and reads its whole answer: the status and the body (empty if
/// the body could not be read). `Err` says why nothing came back, naming `addr`: for a caller
/// that tries the next candidate then.
pub async fn exchange(
    req: reqwest::RequestBuilder,
    addr: &str,
) -> Result<(reqwest::StatusCode, axum::body::Bytes), String> {
    let r = req.send().await.map_err(|e| format!("{addr}: {e}"))?;
    let status = r.status();
    Ok((status, r.bytes().await.unwrap_or_default()))
}

impl Undelivered<std::convert::Infallible> {
    /// Why a delivery whose attempts never fail for good ended: the last candidate's reason.
    pub fn reason(self) -> String {
        match self {
            Undelivered::Failed(never) => match never {},
            Undelivered::Exhausted(why) => why,
        }
    }
}

/// Delivers to the first of `candidates` that answers as the leader (see the module docs);
/// `attempt` sends to one candidate and classifies the answer.
pub async fn deliver<C, T, E, F, Fut>(
    candidates: impl IntoIterator<Item = C>,
    mut attempt: F,
) -> Result<T, Undelivered<E>>
where
    C: Clone + PartialEq,
    F: FnMut(C) -> Fut,
    Fut: Future<Output = Attempt<T, E, C>>,
{
    let mut queue: VecDeque<C> = candidates.into_iter().collect();
    let mut tried: Vec<C> = Vec::new();
    let mut last = String::from("no candidate to try");
    while let Some(c) = queue.pop_front() {
        if tried.contains(&c) {
            continue;
        }
        if tried.len() >= MAX_TRIES {
            last = format!("{last} (gave up after {MAX_TRIES} candidates)");
            break;
        }
        tried.push(c.clone());
        match attempt(c).await {
            Attempt::Done(t) => return Ok(t),
            Attempt::Fail(e) => return Err(Undelivered::Failed(e)),
            Attempt::NotLeader { hint, why } => {
                if let Some(h) = hint.filter(|h| !tried.contains(h)) {
                    queue.push_front(h);
                }
                last = why;
            }
            Attempt::Next(why) => last = why,
        }
    }
    Err(Undelivered::Exhausted(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A cluster of candidates 1..=n where `leader` leads and each other candidate answers
    /// "not the leader" with its own hint (`hints[c]`), unless it is in `dead` (no answer).
    /// Returns the result and the candidates tried, in order.
    async fn run(
        candidates: &[u64],
        leader: Option<u64>,
        hint_of: impl Fn(u64) -> Option<u64>,
        dead: &[u64],
    ) -> (Result<u64, Undelivered<String>>, Vec<u64>) {
        let seen = Mutex::new(Vec::new());
        let r = deliver(candidates.iter().copied(), |c| {
            seen.lock().expect("not poisoned").push(c);
            let out = if dead.contains(&c) {
                Attempt::Next(format!("{c}: connection refused"))
            } else if Some(c) == leader {
                Attempt::Done(c)
            } else {
                Attempt::NotLeader {
                    hint: hint_of(c),
                    why: format!("{c} is not the leader"),
                }
            };
            async move { out }
        })
        .await;
        let seen = seen.into_inner().expect("not poisoned");
        (r, seen)
    }

    // A hint is followed at once, before the other candidates.
    #[tokio::test]
    async fn follows_the_hint_first() {
        let (r, seen) = run(&[1, 2, 3], Some(3), |_| Some(3), &[]).await;
        assert_eq!(r, Ok(3));
        assert_eq!(seen, vec![1, 3]);
    }

    // A wrong hint (to another follower) costs one try; the candidates after it still come.
    #[tokio::test]
    async fn a_wrong_hint_costs_one_try() {
        let (r, seen) = run(&[1, 2, 3], Some(3), |c| (c == 1).then_some(2), &[]).await;
        assert_eq!(r, Ok(3));
        assert_eq!(seen, vec![1, 2, 3]);
    }

    // A dead address is passed over; a hint to it is not tried twice.
    #[tokio::test]
    async fn a_dead_address_is_passed_over_once() {
        let (r, seen) = run(&[1, 2, 3], Some(3), |_| Some(1), &[1]).await;
        assert_eq!(r, Ok(3));
        assert_eq!(seen, vec![1, 2, 3]);
    }

    // Without a leader the delivery stops after MAX_TRIES distinct candidates, naming the last
    // reason; candidates listed twice are tried once.
    #[tokio::test]
    async fn gives_up_after_the_limit() {
        let many: Vec<u64> = (1..=10).chain(1..=10).collect();
        let (r, seen) = run(&many, None, |c| Some(c + 1), &[]).await;
        assert_eq!(seen, (1..=MAX_TRIES as u64).collect::<Vec<_>>());
        match r {
            Err(Undelivered::Exhausted(why)) => {
                assert!(why.contains("6 is not the leader"), "{why}");
                assert!(why.contains("gave up"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let (r, _) = run(&[], None, |_| None, &[]).await;
        assert_eq!(r, Err(Undelivered::Exhausted("no candidate to try".into())));
    }

    // A failure for good ends the delivery at once.
    #[tokio::test]
    async fn a_failure_stops_at_once() {
        let mut seen = Vec::new();
        let r: Result<(), _> = deliver([1u64, 2, 3], |c| {
            seen.push(c);
            async move { Attempt::Fail(format!("{c}: outcome unknown")) }
        })
        .await;
        assert_eq!(r, Err(Undelivered::Failed("1: outcome unknown".into())));
        assert_eq!(seen, vec![1]);
    }
}
