//! One outbox per session, used by both faces: a verdict's effects applied the same way whatever
//! protocol carried the share. The pool-wide counters are bumped, a found block leaves for the
//! block task at once (before the face writes anything to its miner), the share-log line is
//! appended, upstream shares and statistics events are queued and flushed after the batch of
//! lines or frames: found blocks first, then upstream shares, then statistics. A full channel
//! slows this session; nothing is dropped.

use tokio::sync::mpsc::error::TrySendError;

use super::{RejectKind, ServerCtx};
use crate::hex;
use crate::log::sharelog::ShareLine;
use crate::log::stats::StatEvent;
use crate::mining::{BlockCandidate, Effects, ShareRecord, ShareTally, UpstreamShare, Verdict};
use crate::share::Reject;

/// What a session has produced and not yet handed to the outputs.
#[derive(Debug, Default)]
pub struct Outbox {
    blocks: Vec<BlockCandidate>,
    upstream: Vec<UpstreamShare>,
    stats: Vec<StatEvent>,
    /// The share log refused a line (disk full): the face tells its miner once.
    log_full: bool,
}

impl Outbox {
    /// Counts a judged share in the pool-wide counters.
    pub fn count(&self, ctx: &ServerCtx, verdict: &Verdict) {
        match &verdict.result {
            Ok(()) => ctx.counters.add_accepted(verdict.diff),
            Err(r) => ctx.counters.add_rejected(RejectKind::from(r)),
        }
    }

    /// Counts a share refused before the core judged it (unreadable params, an unknown channel).
    pub fn count_unread(&self, ctx: &ServerCtx, kind: RejectKind) {
        ctx.counters.add_rejected(kind);
    }

    /// Counts a share the face refused for the core's reason without a job to judge it on.
    pub fn count_refused(&self, ctx: &ServerCtx, reject: &Reject) {
        ctx.counters.add_rejected(RejectKind::from(reject));
    }

    /// Appends a judged share's line to the share log (when `--log-shares`); the line is written
    /// by the log's thread.
    pub fn log_share(&mut self, ctx: &ServerCtx, record: &ShareRecord, line: &ShareLine<'_>) {
        if ctx.shares.append(record.height, record.workinfoid, line) {
            self.log_full = true;
        }
    }

    /// True once after the share log refused a line.
    pub fn take_log_full(&mut self) -> bool {
        std::mem::take(&mut self.log_full)
    }

    /// Applies a submit's block and upstream share: the block goes to the block task now (queued
    /// only when its channel is full), the upstream share is queued. `worker` names the finder
    /// in the log; `face` is "" for SV1 and " (sv2)" for SV2.
    pub fn take_effects(&mut self, ctx: &ServerCtx, fx: &mut Effects, worker: &str, face: &str) {
        if let Some(cand) = fx.block.take() {
            let (job, hash) = (cand.job.clone(), cand.hash);
            let w = crate::log::escape::Esc(worker);
            tracing::info!(worker = %w, height = cand.job.height, "block candidate {} from {w}{face}", hex::encode_rev(&cand.hash));
            if self.blocks.is_empty() {
                match ctx.blocks.try_send(cand) {
                    Ok(()) => {}
                    Err(TrySendError::Full(cand)) => self.blocks.push(cand),
                    Err(TrySendError::Closed(cand)) => {
                        tracing::error!("block submitter is gone; block {} not submitted", hex::encode_rev(&cand.hash))
                    }
                }
            } else {
                self.blocks.push(cand);
            }
            // After the hand-over: the miners this block's coinbase did not pay keep their credit.
            if let (Some(p), Some(split)) = (&ctx.params.payees, &job.coinbase.split) {
                let n = p.block_found(split, job.coinbase.plan.as_deref(), job.height, &hash);
                if n > 0 {
                    tracing::info!("pplns: {n} miner(s) this block does not pay keep their credit in the window");
                }
            }
        }
        if let Some(up) = fx.upstream.take() {
            // Queued for the upstream task; the miner never waits for the upstream's reply.
            self.upstream.push(up);
        }
    }

    /// Sends the found blocks still queued (their channel was full when they were found),
    /// waiting for room: called before the face writes to its miner, so no block waits behind a
    /// slow reader.
    pub async fn send_blocks(&mut self, ctx: &ServerCtx) {
        if self.blocks.is_empty() {
            return;
        }
        // In a separate allocation (rare: a channel was full): the send's state, a candidate
        // and the wait for room, is ~900 bytes that every session's task would carry for its
        // life (issue 31).
        Box::pin(self.send_blocks_waiting(ctx)).await;
    }

    async fn send_blocks_waiting(&mut self, ctx: &ServerCtx) {
        for cand in self.blocks.drain(..) {
            let hash = cand.hash;
            if ctx.blocks.send(cand).await.is_err() {
                tracing::error!("block submitter is gone; block {} not submitted", hex::encode_rev(&hash));
            }
        }
    }

    /// Queues a channel's tally as one statistics event (nothing when it is empty).
    pub fn tally(&mut self, user: &std::sync::Arc<str>, worker: &std::sync::Arc<str>, tally: ShareTally) {
        if !tally.is_empty() {
            self.stats.push(StatEvent::Shares { user: user.clone(), worker: worker.clone(), tally });
        }
    }

    /// Queues any other statistics event (a worker seen or gone).
    pub fn stat(&mut self, ev: StatEvent) {
        self.stats.push(ev);
    }

    /// Sends what is queued: found blocks first, then upstream shares (never waited for:
    /// dropped and counted when the upstream task has no room), then statistics. Waits only
    /// when a channel is full (rare), in a separate allocation so that an idle session's
    /// task does not carry the waiting state.
    pub async fn flush(&mut self, ctx: &ServerCtx) {
        if !self.try_flush(ctx) {
            Box::pin(self.flush_waiting(ctx)).await;
        }
    }

    /// Sends without waiting; false when a channel was full (what is left stays queued, in order).
    pub fn try_flush(&mut self, ctx: &ServerCtx) -> bool {
        let blocks = try_send_all(&ctx.blocks, &mut self.blocks, "block submitter");
        if let Some(tx) = &ctx.upstream {
            // Never waited for: a share the upstream task has no room for is counted and dropped
            // (the upstream is gone or not reading); the miner was answered already.
            if !try_send_all(tx, &mut self.upstream, "upstream task") {
                let n = self.upstream.len() as u64;
                self.upstream.clear();
                ctx.counters.upstream_dropped.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        }
        blocks && try_send_all(&ctx.stats, &mut self.stats, "stats task")
    }

    async fn flush_waiting(&mut self, ctx: &ServerCtx) {
        self.send_blocks(ctx).await;
        for ev in self.stats.drain(..) {
            if ctx.stats.send(ev).await.is_err() {
                tracing::error!("stats task is gone");
                break;
            }
        }
    }
}

/// Sends `items` in order without waiting. Returns false at the first full channel, with that
/// item and the rest left in `items`; a closed channel is logged and its items dropped (the
/// task behind it is gone: shutdown).
fn try_send_all<T>(tx: &tokio::sync::mpsc::Sender<T>, items: &mut Vec<T>, what: &str) -> bool {
    if items.is_empty() {
        return true;
    }
    let mut it = std::mem::take(items).into_iter();
    while let Some(v) = it.next() {
        match tx.try_send(v) {
            Ok(()) => {}
            Err(TrySendError::Full(v)) => {
                items.push(v);
                items.extend(it);
                return false;
            }
            Err(TrySendError::Closed(_)) => {
                tracing::error!("{what} is gone; {} item(s) not delivered", 1 + it.len());
                return true;
            }
        }
    }
    true
}
