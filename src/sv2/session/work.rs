//! Work for the connection's channels: a job per channel (standard: its own merkle root;
//! extended: the coinbase parts), SetNewPrevHash on a new block, the current work after a retarget.

use super::*;

impl Sv2Session {
    pub(super) fn nonce2_len(&self) -> usize {
        self.ctx.work.borrow().as_ref().map(|w| w.job.coinbase.nonce2_len).unwrap_or(8)
    }

    pub(super) fn send_current_work<W: AsyncWrite + Unpin>(
        &mut self,
        id: u32,
        wr: &mut FrameWriter<W>,
        fresh_id: bool,
    ) {
        let base = self.ctx.work.borrow().clone();
        if let Some(base) = base {
            // A size change is met first by `on_work`, which ends the connection.
            let _ = self.send_work(id, &base, wr, fresh_id);
        }
    }

    /// New work published: every channel gets it (after an idle channel's difficulty drop).
    /// Ends the connection when an extended channel cannot mine it (see `send_work`).
    pub(super) fn on_work<W: AsyncWrite + Unpin>(
        &mut self,
        base: &Arc<Work>,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        let network = Some(base.network_diff);
        let now = self.now_us();
        for id in ids {
            let lowered = self.channels.get_mut(&id).and_then(|ch| ch.core.idle_check(now, network)).is_some();
            if lowered {
                self.retarget(id, wr);
            } else {
                self.send_work(id, base, wr, false)?;
            }
        }
        Ok(())
    }

    /// Sends `base` (in solo mode the channel's own coinbase of it) to channel `id`: a new block
    /// as a future job and the SetNewPrevHash that activates it, other work as a job active now.
    pub(super) fn send_work<W: AsyncWrite + Unpin>(
        &mut self,
        id: u32,
        base: &Arc<Work>,
        wr: &mut FrameWriter<W>,
        fresh_id: bool,
    ) -> Result<(), End> {
        let Some(ch) = self.channels.get_mut(&id) else { return Ok(()) };
        let n2 = base.job.coinbase.nonce2_len;
        if self.work_selection && ch.extended && ch.n2 != n2 {
            // A job-declaring client's channel rolling more than the pool's jobs allow: it
            // mines its own jobs only (SetCustomMiningJob).
            return Ok(());
        }
        let mut resized = false;
        if ch.n2 != n2 {
            // Proxy mode: the new upstream leaves another extranonce2 size.
            if ch.extended {
                // An extended channel's rollable size is fixed when it opens (SetExtranoncePrefix
                // cannot change it), and shares of the old size would all be refused: the
                // miner reconnects and opens its channel with the new size.
                return Err(End::Refuse(format!(
                    "the upstream pool now leaves {n2} extranonce bytes to roll, channel {id} was opened with {}: closed so that the miner opens it again",
                    ch.n2
                )));
            }
            // A standard channel's rollable part is zeros at the end of its prefix: a new
            // prefix of the new length.
            ch.n2 = n2;
            resized = true;
        }
        if let Some(custom) = &ch.custom {
            if custom.job.prev_hash == base.job.prev_hash {
                // The miner mines its own job on this block (SetCustomMiningJob).
                return Ok(());
            }
            // A new block: the pool's work until the miner sets a job on it.
            ch.custom = None;
        }
        if resized || *base.en1_prefix != *ch.core.prefix() {
            // Proxy mode, a new upstream session: a new prefix, every job sent so far gone (the
            // next job comes with a SetNewPrevHash).
            ch.core.switch_prefix(&base.en1_prefix);
            ch.en1_hex = hex::encode(ch.core.en1()).into();
            ch.last_prev = None;
            let mut prefix = ch.core.en1().to_vec();
            if !ch.extended {
                prefix.resize(prefix.len() + ch.n2, 0);
            }
            let Ok(extranonce_prefix) = B032::new(&prefix[..]) else { return Ok(()) };
            let m = SetExtranoncePrefix { channel_id: id, extranonce_prefix };
            if push(wr, AnyMessage::Mining(Mining::SetExtranoncePrefix(m))).is_err() {
                return Ok(());
            }
        }
        if let Some(allowed) = base.version_mask {
            // Proxy mode: the mask the upstream grants now.
            ch.core.allow_version_mask(allowed);
        }
        let w = match (&self.ctx.params.solo, &ch.payout) {
            (Some(solo), Some(script)) => match solo.work_for(base, script) {
                Some(w) => w,
                None => return Ok(()),
            },
            _ => base.clone(),
        };
        let Issued::Job { local_id, .. } = ch.core.issue(&w, fresh_id) else { return Ok(()) };
        let job_id = ch.ids.assign(local_id);
        let job = &w.job;
        let new_block = ch.last_prev != Some(job.prev_hash);
        let min_ntime = if new_block { None } else { Some(job.ntime.max(ch.tip_ntime)) };
        let mask = ch.core.version_mask();
        // A standard channel's job carries its merkle root (its extranonce2 is zeros).
        let root = (!ch.extended).then(|| {
            let en2 = [0u8; MAX_NONCE2_LEN];
            job.merkle_root(ch.core.en1(), &en2[..job.coinbase.nonce2_len])
        });
        let msg = if let Some(root) = &root {
            AnyMessage::Mining(Mining::NewMiningJob(NewMiningJob {
                channel_id: id,
                job_id,
                min_ntime: Sv2Option::new(min_ntime),
                version: job.version,
                merkle_root: U256::new(root).expect("32 bytes"),
            }))
        } else {
            let path: Vec<U256<'_>> = job.branches.iter().map(|b| U256::new(b).expect("32 bytes")).collect();
            AnyMessage::Mining(Mining::NewExtendedMiningJob(NewExtendedMiningJob {
                channel_id: id,
                job_id,
                min_ntime: Sv2Option::new(min_ntime),
                version: job.version,
                version_rolling_allowed: mask != 0,
                merkle_path: Seq0255::new(path).expect("at most 255 branches"),
                coinbase_tx_prefix: B064K::new(&job.coinbase.coinb1).expect("coinbase part under 64 KiB"),
                coinbase_tx_suffix: B064K::new(&job.coinbase.coinb2).expect("coinbase part under 64 KiB"),
            }))
        };
        if push(wr, msg).is_err() {
            return Ok(());
        }
        if new_block {
            ch.last_prev = Some(job.prev_hash);
            ch.tip_ntime = job.ntime;
            let snph = SetNewPrevHash {
                channel_id: id,
                job_id,
                prev_hash: U256::new(&job.prev_hash).expect("32 bytes"),
                min_ntime: job.ntime,
                nbits: job.nbits,
            };
            let _ = push(wr, AnyMessage::Mining(Mining::SetNewPrevHash(snph)));
            w.note_notified(ch.last_notify, std::time::Instant::now());
        }
        ch.last_notify = std::time::Instant::now();
        Ok(())
    }
}
