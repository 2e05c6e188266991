//! One found block's submission (the async shell around [`decide`]): rounds of `submitblock` to
//! the nodes still to answer, each answer logged, backoff between rounds, the chain looked at
//! before each retry, until the block is settled or the pool shuts down.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::decide::{self, Action, Answer, ChainView, Outcome, Submission};
use super::hex_path;
use super::journal::Meta;
use crate::bitcoind::{Rpc, SubmitBody};

/// A block to submit.
pub(super) struct Pending {
    pub meta: Meta,
    /// The `submitblock` request body (its hex: `SubmitBody::block_hex`).
    pub body: SubmitBody,
    /// Read back at start: look at the chain before submitting.
    pub resumed: bool,
}

/// A submission task's news for the ledger.
pub(super) enum Note {
    /// The first round found no node to take it.
    Retrying { meta: Meta, answers: Vec<(String, String)> },
}

/// How a submission task ended: `None` when stopped by shutdown.
pub(super) struct Ended {
    pub meta: Meta,
    pub outcome: Option<Outcome>,
    pub answers: Vec<(String, String)>,
}

/// One block's submission: rounds of `submitblock` to the nodes still to answer, with backoff,
/// until [`Submission`] says it is settled or the pool shuts down.
pub(super) async fn submit_task(
    rpc: Arc<Rpc>,
    logdir: PathBuf,
    p: Pending,
    mut shutdown: watch::Receiver<bool>,
    notes: mpsc::Sender<Note>,
    origin: tokio::time::Instant,
) -> Ended {
    let Pending { meta, body, resumed } = p;
    let (hash, height) = (meta.hash.as_str(), meta.height);
    let labels: Vec<String> = (0..rpc.node_count()).map(|i| rpc.node_label(i).to_string()).collect();
    let now_ms = || origin.elapsed().as_millis() as u64;
    let mut sub = Submission::new(labels.clone(), now_ms());
    let mut last: Vec<Option<String>> = vec![None; labels.len()];
    let answers = |last: &[Option<String>]| -> Vec<(String, String)> {
        labels.iter().zip(last).filter_map(|(l, a)| a.clone().map(|a| (l.clone(), a))).collect()
    };
    let end = |outcome: Option<Outcome>, last: &[Option<String>]| {
        if let Some(o) = &outcome {
            log_outcome(hash, height, o);
        }
        Ended { meta: meta.clone(), outcome, answers: answers(last) }
    };
    // The request was built once; every node and round shares it.
    let mut nodes = sub.pending();
    let mut look_first = resumed;
    loop {
        if look_first {
            let views = chain_views(&rpc, height, hash).await;
            if let Some(o) = sub.on_chain(&views) {
                return end(Some(o), &last);
            }
        }
        look_first = true;
        let round = sub.rounds + 1;
        let calls = nodes.iter().map(|&i| {
            let rpc = rpc.clone();
            let body = body.clone();
            async move { (i, decide::classify(&rpc.submit_block(i, body).await)) }
        });
        let got = join_all(calls).await;
        for (i, a) in &got {
            let text = a.text();
            match a {
                Answer::Accepted | Answer::Duplicate | Answer::Inconclusive => {
                    tracing::info!(
                        "block {hash} at height {height}: submitblock round {round}: node {}: {text}",
                        labels[*i]
                    )
                }
                Answer::Transient(_) => {
                    tracing::warn!(
                        "block {hash} at height {height}: submitblock round {round}: node {}: {text}",
                        labels[*i]
                    )
                }
                Answer::Rejected(_) => {
                    tracing::error!(
                        "block {hash} at height {height}: submitblock round {round}: node {}: {text}",
                        labels[*i]
                    )
                }
            }
            last[*i] = Some(text);
        }
        match sub.on_answers(now_ms(), &got) {
            Action::Done(o) => return end(Some(o), &last),
            Action::Retry { delay, nodes: next, .. } => {
                if round == 1 {
                    let _ = notes.send(Note::Retrying { meta: meta.clone(), answers: answers(&last) }).await;
                }
                if *shutdown.borrow() {
                    log_shutdown(&logdir, &meta);
                    return end(None, &last);
                }
                tracing::warn!(
                    "block {hash} at height {height}: no node has it yet; submitting again in {delay:?} (round {}, hex in {})",
                    round + 1,
                    hex_path(&logdir, height, hash).display()
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {
                        log_shutdown(&logdir, &meta);
                        return end(None, &last);
                    }
                }
                nodes = next;
            }
        }
    }
}

fn log_outcome(hash: &str, height: u64, o: &Outcome) {
    match o {
        Outcome::Accepted { nodes } => {
            tracing::info!("block {hash} at height {height}: ACCEPTED by {}", nodes.join(", "))
        }
        Outcome::Rejected { reasons } => {
            tracing::error!("block {hash} at height {height}: REJECTED by every node: {}", reasons.join("; "))
        }
        Outcome::Stale { by, tip } => tracing::error!(
            "block {hash} at height {height}: STALE: a node's chain (tip {tip}) has block {by} at that height; not submitting again"
        ),
    }
}

fn log_shutdown(logdir: &Path, meta: &Meta) {
    tracing::warn!(
        "block {} at height {}: shutting down before any node took it; {} is submitted again at the next start (or by `ckpool submitblock {}`)",
        meta.hash,
        meta.height,
        hex_path(logdir, meta.height, &meta.hash).display(),
        meta.hash
    );
}

/// What each node's chain says at `height` (nodes that do not answer are `Unknown`).
async fn chain_views(rpc: &Rpc, height: u64, ours: &str) -> Vec<ChainView> {
    let mut out = Vec::new();
    for i in 0..rpc.node_count() {
        let tip = rpc.call_node(i, "getblockcount", json!([])).await.ok().and_then(|v| v.as_u64());
        let at = match tip {
            Some(t) if t >= height => {
                rpc.call_node(i, "getblockhash", json!([height])).await.ok().and_then(|v| v.as_str().map(String::from))
            }
            _ => None,
        };
        out.push(decide::chain_view(height, ours, tip, at.as_deref()));
    }
    out
}

/// Runs futures concurrently and collects their outputs in order.
async fn join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("submitblock call does not panic"));
    }
    out
}
