//! When to stop submitting a found block (pure: node answers and `now` in, the next action out).
//!
//! A found block is submitted to every node until one of them has it (`null`, "duplicate",
//! "inconclusive"), every node has answered with a final rejection, or the chain has moved past
//! the block's height on a node we can reach (then the block is stale: it can no longer win).
//! A node that is unreachable or answers with a transient error (connect error, timeout, HTTP 503
//! "work queue depth exceeded", -28 warming up) is asked again after a backoff of 250 ms doubling
//! to 5 s; there is no deadline, because the block may still win when the node returns.

use std::time::Duration;

use serde_json::Value;

use crate::bitcoind::RpcError;

/// First pause between rounds of `submitblock`.
pub const FIRST_DELAY: Duration = Duration::from_millis(250);
/// Longest pause between rounds.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// One node's answer to `submitblock`, as far as the decision goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `null`: the node took the block.
    Accepted,
    /// "duplicate": the node already has it.
    Duplicate,
    /// "inconclusive": the node stored it but has not made it its tip (yet); the fate follower
    /// tells whether it wins.
    Inconclusive,
    /// Any other answer: the node will not take this block, asking again will not change it.
    Rejected(String),
    /// Unreachable, timed out, overloaded or warming up: ask again.
    Transient(String),
}

impl Answer {
    /// The node has the block.
    pub fn has_block(&self) -> bool {
        matches!(self, Answer::Accepted | Answer::Duplicate | Answer::Inconclusive)
    }

    /// Operator text: "accepted", "duplicate", "rejected: ...", "unreachable: ...".
    pub fn text(&self) -> String {
        match self {
            Answer::Accepted => "accepted".into(),
            Answer::Duplicate => "duplicate".into(),
            Answer::Inconclusive => "inconclusive".into(),
            Answer::Rejected(why) => format!("rejected: {why}"),
            Answer::Transient(why) => format!("no answer yet: {why}"),
        }
    }
}

/// Sorts a `submitblock` result into an [`Answer`].
pub fn classify(result: &Result<Value, RpcError>) -> Answer {
    match result {
        Ok(Value::Null) => Answer::Accepted,
        Ok(Value::String(s)) if s == "duplicate" => Answer::Duplicate,
        Ok(Value::String(s)) if s == "inconclusive" => Answer::Inconclusive,
        Ok(Value::String(s)) => Answer::Rejected(s.clone()),
        Ok(v) => Answer::Rejected(v.to_string()),
        Err(e) => {
            if is_transient(e) {
                Answer::Transient(e.to_string())
            } else {
                Answer::Rejected(e.to_string())
            }
        }
    }
}

/// Errors that say "not now" rather than "no".
pub fn is_transient(e: &RpcError) -> bool {
    match e {
        RpcError::Connect { .. } | RpcError::Timeout { .. } | RpcError::Reply { .. } | RpcError::Cookie { .. } => true,
        RpcError::Http { status, .. } => matches!(status, 502..=504),
        RpcError::Node { code, .. } => *code == -28,
        RpcError::Unauthorized { .. } | RpcError::NoNode => false,
    }
}

/// What a reachable node's chain says at the block's height (`getblockcount`, `getblockhash`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainView {
    /// The node did not answer.
    Unknown,
    /// The node's chain is not that long yet.
    Below { tip: u64 },
    /// Our block is at that height.
    Ours,
    /// Another block is at that height.
    Other { hash: String, tip: u64 },
}

/// How a submission ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// At least one node has the block (named).
    Accepted { nodes: Vec<String> },
    /// Every node refused it; their reasons.
    Rejected { reasons: Vec<String> },
    /// Another block took its height before any node took ours.
    Stale { by: String, tip: u64 },
}

impl Outcome {
    /// The `outcome` word in blocks.log.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Accepted { .. } => "accepted",
            Outcome::Rejected { .. } => "rejected",
            Outcome::Stale { .. } => "stale",
        }
    }
}

/// What the shell does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask the chain (every node) and, unless that settles it, submit again to these nodes at `at_ms`.
    Retry { at_ms: u64, delay: Duration, nodes: Vec<usize> },
    /// Stop: record this.
    Done(Outcome),
}

/// One block's submission across `n` nodes.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Node labels, in `btcd` order.
    labels: Vec<String>,
    /// Per node: `None` while it has not answered finally, else its final answer.
    finals: Vec<Option<Answer>>,
    /// Rounds of `submitblock` done.
    pub rounds: u32,
    pub started_ms: u64,
}

impl Submission {
    pub fn new(labels: Vec<String>, now_ms: u64) -> Submission {
        let finals = vec![None; labels.len()];
        Submission { labels, finals, rounds: 0, started_ms: now_ms }
    }

    /// Nodes still to be asked.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.finals.len()).filter(|&i| self.finals[i].is_none()).collect()
    }

    /// The pause before round `rounds + 1`: 250 ms doubling to 5 s.
    pub fn delay(rounds: u32) -> Duration {
        let shift = rounds.saturating_sub(1).min(16);
        (FIRST_DELAY * (1u32 << shift)).min(MAX_DELAY)
    }

    /// Takes one round of answers (node index, answer) and says what to do next.
    pub fn on_answers(&mut self, now_ms: u64, answers: &[(usize, Answer)]) -> Action {
        self.rounds += 1;
        let mut holders = Vec::new();
        for (i, a) in answers {
            if a.has_block() {
                holders.push(self.labels[*i].clone());
            }
            if !matches!(a, Answer::Transient(_)) {
                self.finals[*i] = Some(a.clone());
            }
        }
        if !holders.is_empty() {
            return Action::Done(Outcome::Accepted { nodes: holders });
        }
        let nodes = self.pending();
        if nodes.is_empty() {
            let reasons = self
                .finals
                .iter()
                .zip(&self.labels)
                .map(|(a, l)| format!("{l}: {}", a.as_ref().map(Answer::text).unwrap_or_default()))
                .collect();
            return Action::Done(Outcome::Rejected { reasons });
        }
        let delay = Submission::delay(self.rounds);
        Action::Retry { at_ms: now_ms + delay.as_millis() as u64, delay, nodes }
    }

    /// Before a retry: what the nodes' chains say at our height. `Some` settles it: a node
    /// already has our block there (accepted), or another block holds that height (stale).
    pub fn on_chain(&self, views: &[ChainView]) -> Option<Outcome> {
        let holders: Vec<String> = views
            .iter()
            .zip(&self.labels)
            .filter(|(v, _)| matches!(v, ChainView::Ours))
            .map(|(_, l)| l.clone())
            .collect();
        if !holders.is_empty() {
            return Some(Outcome::Accepted { nodes: holders });
        }
        views.iter().find_map(|v| match v {
            ChainView::Other { hash, tip } => Some(Outcome::Stale { by: hash.clone(), tip: *tip }),
            _ => None,
        })
    }
}

/// What one node's `getblockcount` and `getblockhash(height)` answers mean for our block.
pub fn chain_view(height: u64, ours: &str, tip: Option<u64>, hash_at_height: Option<&str>) -> ChainView {
    match (tip, hash_at_height) {
        (None, _) => ChainView::Unknown,
        (Some(tip), _) if tip < height => ChainView::Below { tip },
        (Some(_), Some(h)) if h == ours => ChainView::Ours,
        (Some(tip), Some(h)) => ChainView::Other { hash: h.to_string(), tip },
        (Some(_), None) => ChainView::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node{i}")).collect()
    }

    fn down() -> Answer {
        Answer::Transient("cannot connect".into())
    }

    #[test]
    fn backoff_doubles_from_250ms_to_5s() {
        let d: Vec<u64> = (1..=8).map(|r| Submission::delay(r).as_millis() as u64).collect();
        assert_eq!(d, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(Submission::delay(10_000), MAX_DELAY);
    }

    #[test]
    fn accepted_by_any_node_ends_it() {
        let mut s = Submission::new(labels(2), 0);
        let a = s.on_answers(0, &[(0, down()), (1, Answer::Accepted)]);
        assert_eq!(a, Action::Done(Outcome::Accepted { nodes: vec!["node1".into()] }));
        let mut s = Submission::new(labels(1), 0);
        let a = s.on_answers(0, &[(0, Answer::Duplicate)]);
        assert_eq!(a, Action::Done(Outcome::Accepted { nodes: vec!["node0".into()] }));
    }

    #[test]
    fn an_unreachable_node_is_retried_with_backoff_without_deadline() {
        let mut s = Submission::new(labels(1), 1_000);
        let mut now = 1_000;
        for round in 1..=1000u32 {
            match s.on_answers(now, &[(0, down())]) {
                Action::Retry { at_ms, delay, nodes } => {
                    assert_eq!(nodes, vec![0]);
                    assert_eq!(delay, Submission::delay(round));
                    assert_eq!(at_ms, now + delay.as_millis() as u64);
                    now = at_ms;
                }
                other => panic!("round {round}: {other:?}"),
            }
        }
        assert_eq!(
            s.on_answers(now, &[(0, Answer::Accepted)]),
            Action::Done(Outcome::Accepted { nodes: vec!["node0".into()] })
        );
    }

    #[test]
    fn a_rejecting_node_is_not_asked_again_but_a_down_one_is() {
        let mut s = Submission::new(labels(2), 0);
        let a = s.on_answers(0, &[(0, Answer::Rejected("bad-txns".into())), (1, down())]);
        assert!(matches!(a, Action::Retry { ref nodes, .. } if nodes == &vec![1]), "{a:?}");
        let a = s.on_answers(250, &[(1, Answer::Rejected("high-hash".into()))]);
        assert_eq!(
            a,
            Action::Done(Outcome::Rejected {
                reasons: vec!["node0: rejected: bad-txns".into(), "node1: rejected: high-hash".into()]
            })
        );
    }

    #[test]
    fn chain_past_our_height_makes_it_stale_and_ours_there_makes_it_accepted() {
        let s = Submission::new(labels(2), 0);
        let ours = "00ab";
        assert_eq!(chain_view(10, ours, Some(9), None), ChainView::Below { tip: 9 });
        assert_eq!(chain_view(10, ours, None, None), ChainView::Unknown);
        assert_eq!(chain_view(10, ours, Some(10), Some(ours)), ChainView::Ours);
        let other = chain_view(10, ours, Some(11), Some("00cd"));
        assert_eq!(other, ChainView::Other { hash: "00cd".into(), tip: 11 });
        assert_eq!(s.on_chain(&[ChainView::Unknown, ChainView::Below { tip: 9 }]), None);
        assert_eq!(
            s.on_chain(&[ChainView::Unknown, other.clone()]),
            Some(Outcome::Stale { by: "00cd".into(), tip: 11 })
        );
        // A node holding ours wins over one that has another block there.
        assert_eq!(s.on_chain(&[other, ChainView::Ours]), Some(Outcome::Accepted { nodes: vec!["node1".into()] }));
    }

    #[test]
    fn classify_node_answers() {
        use serde_json::json;
        let node = |code| RpcError::Node { node: "n".into(), method: "submitblock".into(), code, message: "m".into() };
        let http = |status| RpcError::Http { node: "n".into(), method: "submitblock".into(), status, body: "".into() };
        assert_eq!(classify(&Ok(Value::Null)), Answer::Accepted);
        assert_eq!(classify(&Ok(json!("duplicate"))), Answer::Duplicate);
        assert_eq!(classify(&Ok(json!("inconclusive"))), Answer::Inconclusive);
        assert_eq!(classify(&Ok(json!("bad-cb-amount"))), Answer::Rejected("bad-cb-amount".into()));
        assert!(matches!(classify(&Err(node(-28))), Answer::Transient(_)));
        assert!(matches!(classify(&Err(node(-22))), Answer::Rejected(_)));
        assert!(matches!(classify(&Err(http(503))), Answer::Transient(_)));
        assert!(matches!(classify(&Err(http(500))), Answer::Rejected(_)));
        let connect = RpcError::Connect { node: "n".into(), why: "refused".into() };
        assert!(matches!(classify(&Err(connect)), Answer::Transient(_)));
        let timeout = RpcError::Timeout { node: "n".into(), method: "submitblock".into(), secs: 15 };
        assert!(matches!(classify(&Err(timeout)), Answer::Transient(_)));
    }
}
