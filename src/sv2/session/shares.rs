//! SubmitShares: the share decoded and judged by the channel's mining core, its effects queued
//! (share log, statistics, found block first), and every share answered in order.

use super::*;

impl Sv2Session {
    /// A frame read: SubmitShares.Extended, the share path, decoded by hand (`sv2::hot`); any
    /// other message (or a submit SRI's parser must judge) through `on_frame`.
    pub(super) fn handle<W: AsyncWrite + Unpin>(
        &mut self,
        frame: Frame<'_>,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        if self.setup {
            if let Some(m) = hot::submit_extended(frame.header.ext_type(), frame.msg_type(), frame.payload) {
                let d = Decoded { extranonce2: m.extranonce, ntime: m.ntime, nonce: m.nonce, version: m.version };
                self.on_submit(m.channel_id, m.sequence_number, m.job_id, d, wr);
                return self.check_ban();
            }
        }
        self.on_frame(frame, wr)
    }

    pub(super) fn on_submit<W: AsyncWrite + Unpin>(
        &mut self,
        channel_id: u32,
        seq: u32,
        job_id: u32,
        mut d: Decoded<'_>,
        wr: &mut FrameWriter<W>,
    ) {
        let now = self.now_us();
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            self.outbox.count_unread(&self.ctx, RejectKind::InvalidParams);
            self.last_share = Instant::now();
            self.banned |= self.score.count(Outcome::Invalid, &self.ctx.guard.policy);
            tracing::debug!(peer = %self.peer, client = self.id, "sv2 share for unknown channel {channel_id}");
            self.reject(wr, channel_id, seq, "invalid-channel-id");
            return;
        };
        if self.touched.last() != Some(&channel_id) && !self.touched.contains(&channel_id) {
            self.touched.push(channel_id);
        }
        // A standard channel rolls no extranonce: its extranonce2 is the zeros of its prefix.
        if !ch.extended {
            d.extranonce2 = &ZERO_EN2[..ch.n2.min(MAX_NONCE2_LEN)];
        }
        let local = match ch.ids.lookup(job_id) {
            JobRef::Local(l) => l,
            r @ (JobRef::Past | JobRef::Unknown) => {
                let code = if r == JobRef::Past { "stale-share" } else { "invalid-job-id" };
                ch.core.count_unread();
                let kind =
                    if r == JobRef::Past { crate::share::Reject::Stale } else { crate::share::Reject::UnknownJob };
                self.outbox.count_refused(&self.ctx, &kind);
                self.last_share = Instant::now();
                self.banned |= self.score.count(Outcome::of(&Err(kind)), &self.ctx.guard.policy);
                self.reject(wr, channel_id, seq, code);
                return;
            }
        };
        let mut fx = Effects::default();
        let verdict = ch.core.submit_decoded(local, &d, now, self.ctx.upstream.is_some(), &mut fx);
        self.outbox.count(&self.ctx, &verdict);
        self.last_share = Instant::now();
        self.banned |= self.score.count(Outcome::of(&verdict.result), &self.ctx.guard.policy);
        let reject = match verdict.result {
            Ok(()) => {
                let weight = jobs::share_weight(verdict.diff);
                match self.acks.last_mut() {
                    Some(ok) if ok.channel_id == channel_id => {
                        ok.last_sequence_number = seq;
                        ok.new_submits_accepted_count += 1;
                        ok.new_shares_sum = ok.new_shares_sum.saturating_add(weight);
                    }
                    _ => self.acks.push(SubmitSharesSuccess {
                        channel_id,
                        last_sequence_number: seq,
                        new_submits_accepted_count: 1,
                        new_shares_sum: weight,
                    }),
                }
                None
            }
            Err(r) => {
                // Earlier accepted shares are answered first.
                for ok in self.acks.drain(..) {
                    let _ = hot::push_success(wr, &ok);
                }
                let _ = hot::push_error(wr, channel_id, seq, jobs::reject_code(&r));
                Some(r.reason())
            }
        };
        // The block first (to the block task now), then the share-log line.
        self.outbox.take_effects(&self.ctx, &mut fx, ch.core.worker(), " (sv2)");
        if let Some(record) = fx.share.take() {
            if self.ctx.params.log_shares {
                let (nonce2, nonce, ntime) =
                    (hex::encode(d.extranonce2), format!("{:08x}", d.nonce), format!("{:08x}", d.ntime));
                let line = ShareLine {
                    workinfoid: record.workinfoid,
                    clientid: self.id,
                    enonce1: &ch.en1_hex,
                    nonce2: &nonce2,
                    nonce: &nonce,
                    ntime: &ntime,
                    diff: record.diff,
                    sdiff: record.sdiff,
                    hash: record.hash.as_ref(),
                    result: reject.is_none(),
                    reject_reason: reject.as_deref(),
                    createdate: now_unix(),
                    workername: ch.core.worker(),
                    username: ch.core.user(),
                    address: &self.address,
                    agent: &self.agent,
                };
                self.outbox.log_share(&self.ctx, &record, &line);
            }
        }
        if fx.retarget.take().is_some() {
            self.retarget(channel_id, wr);
        }
    }
    /// Answers a share with an error, after any pending acknowledgement (answers keep their order).
    pub(super) fn reject<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut FrameWriter<W>,
        channel_id: u32,
        seq: u32,
        code: &'static str,
    ) {
        self.push_acks(wr);
        let _ = hot::push_error(wr, channel_id, seq, code);
    }
}

/// A standard channel's extranonce2.
static ZERO_EN2: [u8; MAX_NONCE2_LEN] = [0; MAX_NONCE2_LEN];
