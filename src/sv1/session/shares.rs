//! Shares: a submit read, judged by the channel, answered, logged; its effects (blocks,
//! upstream shares, retargets, statistics) queued and sent after the batch of lines.

use serde_json::value::RawValue;

use super::{now_unix, Session};
use crate::hex;
use crate::log::sharelog::ShareLine;
use crate::log::stats::StatEvent;
use crate::mining::{Effects, ShareRecord};
use crate::serve::RejectKind;
use crate::share::Submit;
use crate::sv1::proto::{code, Param, SubmitParams};

impl Session {
    /// Queues the shares tallied so far as one statistics event for the current worker name.
    pub(super) fn close_tally(&mut self) {
        let tally = self.channel.take_tally();
        if !tally.is_empty() {
            self.stats_out.push(StatEvent::Shares {
                user: self.channel.user().clone(),
                worker: self.channel.worker().clone(),
                tally,
            });
        }
    }

    /// Sends what the last batch of lines produced: found blocks first, then shares for the
    /// upstream pool, then statistics. A full channel slows this miner; nothing is dropped.
    pub(super) async fn flush_outbound(&mut self) {
        self.close_tally();
        if !self.try_flush_outbound() {
            // Rare: a channel is full. Wait in a separate allocation so that every session's
            // task does not carry the waiting state.
            Box::pin(self.flush_outbound_waiting()).await;
        }
    }

    /// Sends without waiting; false when a channel was full (what is left stays queued, in order).
    pub(super) fn try_flush_outbound(&mut self) -> bool {
        try_send_all(&self.ctx.blocks, &mut self.blocks_out, "block submitter")
            && self.ctx.upstream.as_ref().is_none_or(|tx| try_send_all(tx, &mut self.upstream_out, "upstream task"))
            && try_send_all(&self.ctx.stats, &mut self.stats_out, "stats task")
    }

    pub(super) async fn flush_outbound_waiting(&mut self) {
        for cand in self.blocks_out.drain(..) {
            let hash = cand.hash;
            if self.ctx.blocks.send(cand).await.is_err() {
                tracing::error!("block submitter is gone; block {} not submitted", hex::encode_rev(&hash));
            }
        }
        if let Some(tx) = &self.ctx.upstream {
            for share in self.upstream_out.drain(..) {
                if tx.send(share).await.is_err() {
                    tracing::error!("upstream task is gone; share from {} not forwarded", self.channel.worker());
                }
            }
        }
        for ev in self.stats_out.drain(..) {
            if self.ctx.stats.send(ev).await.is_err() {
                tracing::error!("stats task is gone");
                break;
            }
        }
    }

    pub(super) fn on_submit(&mut self, id: &str, params: Option<&RawValue>) {
        if !self.subscribed {
            self.error(id, code::NOT_SUBSCRIBED, "Not subscribed");
            return;
        }
        if !self.authorized {
            self.error(id, code::UNAUTHORIZED, "Unauthorized worker");
            return;
        }
        let Some(params) = SubmitParams::parse(params) else {
            return self.unread_submit(id, "Invalid params", RejectKind::InvalidParams);
        };
        let p = |i| params.str(i);
        let (Some(_worker), Some(job_id), Some(en2), Some(ntime), Some(nonce)) = (p(0), p(1), p(2), p(3), p(4)) else {
            return self.unread_submit(id, "Invalid params", RejectKind::InvalidParams);
        };
        let version_bits = match params.get(5) {
            None | Some(Param::Null) => None,
            Some(Param::Str(s)) => Some(&**s),
            Some(Param::Other) => return self.unread_submit(id, "Invalid version bits", RejectKind::BadVersion),
        };
        let sub = Submit { job_id, extranonce2: en2, ntime, nonce, version_bits };
        // On the stack (no allocation); not kept in the session, so an idle miner does not pay for it.
        let mut fx = Effects::default();
        let verdict = self.channel.submit(&sub, self.now_us(), self.ctx.upstream.is_some(), &mut fx);
        let reject = match verdict.result {
            Ok(()) => {
                self.ctx.counters.add_accepted(verdict.diff);
                self.reply(id, "true");
                None
            }
            Err(r) => {
                let reason = r.reason();
                self.ctx.counters.add_rejected(RejectKind::from(&r));
                self.error(id, r.code(), &reason);
                if fx.share.is_none() {
                    tracing::debug!(peer = %self.peer, worker = %self.worker(), "share rejected: {reason} ({sub:?})");
                }
                Some(reason)
            }
        };
        if let Some(record) = fx.share.take() {
            self.log_share(&record, &sub, reject.as_deref());
        }
        self.take_effects(&mut fx);
    }

    /// Queues a submit's block and upstream share, and answers a retarget: set_difficulty, then
    /// the current job under a new id.
    pub(super) fn take_effects(&mut self, fx: &mut Effects) {
        if let Some(up) = fx.upstream.take() {
            // Queued for the upstream task; the miner never waits for the upstream's reply.
            self.upstream_out.push(up);
        }
        if let Some(cand) = fx.block.take() {
            tracing::info!(worker = %self.worker(), height = cand.job.height, "block candidate {} from {}", hex::encode_rev(&cand.hash), self.worker());
            self.blocks_out.push(cand);
        }
        if let Some(r) = fx.retarget.take() {
            self.send_difficulty(Some(r));
            let current = self.current_work();
            if let Some(w) = current {
                self.send_work(&w, true);
            }
        }
    }

    /// A submit whose params could not be read: counted as rejected, answered, not logged.
    pub(super) fn unread_submit(&mut self, id: &str, reason: &str, kind: RejectKind) {
        self.ctx.counters.add_rejected(kind);
        self.channel.count_unread();
        self.error(id, code::OTHER, reason);
        tracing::debug!(peer = %self.peer, worker = %self.worker(), "share rejected: {reason}");
    }

    /// Appends the share's line to the share log (formatted here, written by the log's thread).
    pub(super) fn log_share(&mut self, r: &ShareRecord, sub: &Submit<'_>, reject: Option<&str>) {
        if !self.ctx.params.log_shares {
            return;
        }
        let line = ShareLine {
            workinfoid: r.workinfoid,
            clientid: self.id,
            enonce1: &self.en1_hex,
            nonce2: sub.extranonce2,
            nonce: sub.nonce,
            ntime: sub.ntime,
            diff: r.diff,
            sdiff: r.sdiff,
            hash: r.hash.as_ref(),
            result: reject.is_none(),
            reject_reason: reject,
            createdate: now_unix(),
            workername: self.channel.worker(),
            username: self.channel.user(),
            address: &self.address,
            agent: &self.agent,
        };
        if self.ctx.shares.append(r.height, r.workinfoid, &line) {
            self.log_full = true;
        }
    }
}

/// Sends `items` in order without waiting. Returns false at the first full channel, with that
/// item and the rest left in `items`; a closed channel is logged and its items dropped (the
/// task behind it is gone: shutdown).
fn try_send_all<T>(tx: &tokio::sync::mpsc::Sender<T>, items: &mut Vec<T>, what: &str) -> bool {
    use tokio::sync::mpsc::error::TrySendError;
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
