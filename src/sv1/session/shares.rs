//! Shares: a submit read, judged by the channel, answered, logged; its effects (blocks,
//! upstream shares, retargets, statistics) queued and sent after the batch of lines.

use serde_json::value::RawValue;

use super::{now_unix, Session};
use crate::log::escape::Esc;
use crate::log::sharelog::ShareLine;
use crate::mining::{Effects, ShareRecord};
use crate::serve::guard::Outcome;
use crate::serve::RejectKind;
use crate::share::Submit;
use crate::sv1::proto::{code, Param, SubmitParams};

impl Session {
    /// Queues the shares tallied so far as one statistics event for the current worker name.
    pub(super) fn close_tally(&mut self) {
        let tally = self.channel.take_tally();
        self.outbox.tally(self.channel.user(), self.channel.worker(), tally);
    }

    /// Sends what the session produced (serve::outbox): found blocks first, then shares for the
    /// upstream pool, then statistics. A full channel slows this miner; nothing is dropped.
    pub(super) async fn flush_outbound(&mut self) {
        self.close_tally();
        self.outbox.flush(&self.ctx).await;
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
        self.outbox.count(&self.ctx, &verdict);
        self.judged(Outcome::of(&verdict.result));
        let reject = match verdict.result {
            Ok(()) => {
                self.reply(id, "true");
                None
            }
            Err(r) => {
                let reason = r.reason();
                self.error(id, r.code(), &reason);
                if fx.share.is_none() {
                    tracing::debug!(peer = %self.peer, worker = %Esc(self.worker()), "share rejected: {reason} ({sub:?})");
                }
                Some(reason)
            }
        };
        // The block first (to the block task now), then the share-log line.
        self.take_effects(&mut fx);
        if let Some(record) = fx.share.take() {
            self.log_share(&record, &sub, reject.as_deref());
        }
    }

    /// Hands a submit's block to the block task and queues its upstream share (before any
    /// answer reaches the miner), and answers a retarget: set_difficulty, then
    /// the current job under a new id.
    pub(super) fn take_effects(&mut self, fx: &mut Effects) {
        self.outbox.take_effects(&self.ctx, fx, self.channel.worker(), "");
        if let Some(r) = fx.retarget.take() {
            self.send_difficulty(Some(r));
            let current = self.current_work();
            if let Some(w) = current {
                self.send_work(&w, true);
            }
        }
    }

    /// A share judged: dropidle's clock starts again; banning counts it.
    fn judged(&mut self, o: Outcome) {
        self.last_share = tokio::time::Instant::now();
        self.banned |= self.score.count(o, &self.ctx.guard.policy);
    }

    /// A submit whose params could not be read: counted as rejected, answered, not logged.
    pub(super) fn unread_submit(&mut self, id: &str, reason: &str, kind: RejectKind) {
        self.judged(Outcome::Invalid);
        self.outbox.count_unread(&self.ctx, kind);
        self.channel.count_unread();
        self.error(id, code::OTHER, reason);
        tracing::debug!(peer = %self.peer, worker = %Esc(self.worker()), "share rejected: {reason}");
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
        self.outbox.log_share(&self.ctx, r, &line);
    }
}
