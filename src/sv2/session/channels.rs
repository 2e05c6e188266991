//! Opening, updating and retargeting a connection's channels (standard and extended): what
//! every OpenChannel asks checked, the channel's extranonce prefix taken from the shared space.

use super::*;

impl Sv2Session {
    /// Checks what every OpenChannel asks, then opens the channel; `Err` carries the SV2 error code.
    pub(super) fn open_channel(
        &mut self,
        user: &str,
        hashrate: f32,
        max_target: &[u8; 32],
        extended: bool,
    ) -> Result<u32, &'static str> {
        if self.channels.len() >= MAX_CHANNELS {
            return Err("channel-capacity-exhausted");
        }
        if self.names >= NAMES_PER_CONNECTION {
            self.ctx.guard.counts.names_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err("too-many-names");
        }
        let user: String = user.chars().take(256).collect();
        if user.is_empty() {
            return Err("invalid-user-identity");
        }
        let payout = match &self.ctx.params.solo {
            Some(solo) => match solo.payout_script(&user) {
                Ok(s) => Some(s),
                Err(why) => {
                    if self.ctx.guard.log(LogKind::Refusal) {
                        tracing::warn!(peer = %self.peer, client = self.id, "solo: refusing sv2 channel of {:?}: {why}", Esc(&user));
                    }
                    return Err("unknown-user");
                }
            },
            None => {
                if let Some(Err(why)) = self.ctx.params.payees.as_ref().map(|p| p.payout_script(&user)) {
                    if self.ctx.guard.log(LogKind::Refusal) {
                        tracing::warn!(peer = %self.peer, client = self.id, "pplns: refusing sv2 channel of {:?}: {why}", Esc(&user));
                    }
                    return Err("unknown-user");
                }
                None
            }
        };
        let floor = crate::difficulty::Difficulty::from_target(&jobs::target_from_le(max_target));
        let params = self.ctx.params.channel();
        if !params.maxdiff.is_zero() && floor > params.maxdiff {
            return Err("max-target-out-of-range");
        }
        let n1 = self.ctx.params.nonce1_len;
        let Ok(key) = self.ctx.enonces.take(&mut self.next_en1, mask_of(n1)) else {
            if self.ctx.guard.log(LogKind::Refusal) {
                tracing::warn!(peer = %self.peer, client = self.id, "sv2 channel refused: every extranonce1 value is held by a connected miner");
            }
            return Err("channel-capacity-exhausted");
        };
        let now = self.now_us();
        let mut core = Channel::new(params, &key.to_be_bytes()[8 - n1..], now);
        // Proxy mode: the upstream's extranonce comes first (empty in pool mode).
        if let Some(prefix) = self.ctx.work.borrow().as_ref().map(|w| w.en1_prefix.clone()) {
            core.set_prefix(&prefix);
        }
        let base = user.split(['.', '_']).next().unwrap_or(&user).to_string();
        core.set_identity(base.into(), user.into());
        let wanted = jobs::hashrate_difficulty(hashrate, params.vardiff.target_interval_us);
        core.miner_bounds(floor, wanted, now);
        // Ids above the group's, never u32::MAX (SRI's translator keeps it for its own channel),
        // never one in use (after 2^32 opens the counter wraps).
        let mut id = self.next_channel_id;
        while id == u32::MAX || id <= GROUP_CHANNEL_ID || self.channels.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_channel_id = id.wrapping_add(1);
        self.names += 1;
        let (u, w) = (core.user().clone(), core.worker().clone());
        self.outbox.stat(StatEvent::Agent { user: u.clone(), worker: w.clone(), agent: self.agent.clone() });
        self.outbox.stat(StatEvent::Authorized { user: u, worker: w });
        if self.ctx.guard.log(LogKind::Connect) {
            tracing::info!(
                peer = %self.peer, client = self.id, channel = id, worker = %Esc(core.worker()), agent = %Esc(&self.agent),
                "sv2 {} channel opened at difficulty {}", if extended { "extended" } else { "standard" }, core.difficulty()
            );
        }
        let en1_hex = hex::encode(core.en1()).into();
        let n2 = self.nonce2_len();
        self.channels.insert(
            id,
            Box::new(Sv2Channel {
                core,
                extended,
                en1_key: key,
                en1_hex,
                ids: JobIds::default(),
                last_prev: None,
                tip_ntime: 0,
                payout,
                last_notify: std::time::Instant::now(),
                n2,
                custom: None,
            }),
        );
        Ok(id)
    }

    pub(super) fn open_refused<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut FrameWriter<W>,
        request_id: u32,
        user: &str,
        code: &str,
    ) -> Result<(), End> {
        if self.ctx.guard.log(LogKind::Refusal) {
            tracing::info!(peer = %self.peer, client = self.id, "sv2 channel for {:?} refused: {code}", Esc(user));
        }
        push(
            wr,
            AnyMessage::Mining(Mining::OpenMiningChannelError(OpenMiningChannelError {
                request_id,
                error_code: Str0255::new(code.as_bytes()).expect("short code"),
            })),
        )
    }

    pub(super) fn on_open_extended<W: AsyncWrite + Unpin>(
        &mut self,
        m: OpenExtendedMiningChannel<'_>,
        wr: &mut FrameWriter<W>,
    ) {
        let user = m.user_identity.as_utf8_or_hex();
        let mut nonce2_len = self.nonce2_len();
        let asked = m.min_extranonce_size as usize;
        if asked > nonce2_len && self.work_selection {
            // A job-declaring client builds its own coinbases: it may roll more than the pool's
            // own jobs leave (SRI's jd_client_sv2 asks 10 bytes by default), up to SV2's 32 with
            // the prefix and the core's extranonce2 limit. The pool's jobs are not sent to it.
            let most = MAX_NONCE2_LEN.min(crate::sv2::MAX_EXTRANONCE - self.ctx.params.nonce1_len);
            if asked <= most {
                nonce2_len = asked;
            }
        }
        if asked > nonce2_len {
            let _ = self.open_refused(wr, m.request_id, &user, "min-extranonce-size-too-large");
            return;
        }
        let id = match self.open_channel(&user, m.nominal_hash_rate, &m.max_target.to_array(), true) {
            Ok(id) => id,
            Err(code) => {
                let _ = self.open_refused(wr, m.request_id, &user, code);
                return;
            }
        };
        let ch = self.channels.get_mut(&id).expect("just opened");
        ch.n2 = nonce2_len;
        let target = jobs::target_le(&ch.core.difficulty().to_target());
        let ok = OpenExtendedMiningChannelSuccess {
            request_id: m.request_id,
            channel_id: id,
            target: U256::new(&target).expect("32 bytes"),
            extranonce_size: nonce2_len as u16,
            extranonce_prefix: B032::new(ch.core.en1()).expect("nonce1length <= 32 (checked at start)"),
            group_channel_id: GROUP_CHANNEL_ID,
        };
        if push(wr, AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(ok))).is_ok() {
            self.send_current_work(id, wr, false);
        }
    }

    pub(super) fn on_open_standard<W: AsyncWrite + Unpin>(
        &mut self,
        m: OpenStandardMiningChannel<'_>,
        wr: &mut FrameWriter<W>,
    ) {
        let user = m.user_identity.as_utf8_or_hex();
        let id = match self.open_channel(&user, m.nominal_hash_rate, &m.max_target.to_array(), false) {
            Ok(id) => id,
            Err(code) => {
                let _ = self.open_refused(wr, m.request_id, &user, code);
                return;
            }
        };
        let ch = &self.channels[&id];
        let target = jobs::target_le(&ch.core.difficulty().to_target());
        // A standard channel's prefix is the whole extranonce: its extranonce1, then zeros.
        let mut prefix = ch.core.en1().to_vec();
        prefix.resize(prefix.len() + self.nonce2_len(), 0);
        let ok = OpenStandardMiningChannelSuccess {
            request_id: m.request_id,
            channel_id: id,
            target: U256::new(&target).expect("32 bytes"),
            extranonce_prefix: B032::new(&prefix).expect("nonce1length + nonce2length <= 32 (checked at start)"),
            group_channel_id: GROUP_CHANNEL_ID,
        };
        if push(wr, AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(ok))).is_ok() {
            self.send_current_work(id, wr, false);
        }
    }

    pub(super) fn on_update<W: AsyncWrite + Unpin>(&mut self, m: UpdateChannel<'_>, wr: &mut FrameWriter<W>) {
        let now = self.now_us();
        let floor = crate::difficulty::Difficulty::from_target(&jobs::target_from_le(&m.maximum_target.to_array()));
        let interval = self.ctx.params.channel().vardiff.target_interval_us;
        let decided = match self.channels.get_mut(&m.channel_id) {
            None => Err("invalid-channel-id"),
            Some(ch) if ch.core.maxdiff().is_some_and(|max| floor > max) => Err("max-target-out-of-range"),
            Some(ch) => Ok(ch.core.miner_bounds(floor, jobs::hashrate_difficulty(m.nominal_hash_rate, interval), now)),
        };
        let code = match decided {
            Ok(Some(_)) => {
                self.retarget(m.channel_id, wr);
                None
            }
            Ok(None) => None,
            Err(code) => Some(code),
        };
        if let Some(code) = code {
            if self.ctx.guard.log(LogKind::Refusal) {
                tracing::info!(peer = %self.peer, client = self.id, channel = m.channel_id, "sv2 UpdateChannel refused: {code}");
            }
            let _ = push(
                wr,
                AnyMessage::Mining(Mining::UpdateChannelError(UpdateChannelError {
                    channel_id: m.channel_id,
                    error_code: Str0255::new(code.as_bytes()).expect("short code"),
                })),
            );
        }
    }

    /// The difficulty of `id` changed: SetTarget, then the current work under a new job id.
    pub(super) fn retarget<W: AsyncWrite + Unpin>(&mut self, id: u32, wr: &mut FrameWriter<W>) {
        let Some(ch) = self.channels.get(&id) else { return };
        let target = jobs::target_le(&ch.core.difficulty().to_target());
        tracing::debug!(peer = %self.peer, client = self.id, channel = id, "sv2 difficulty -> {}", ch.core.difficulty());
        let msg = SetTarget { channel_id: id, maximum_target: U256::new(&target).expect("32 bytes") };
        if push(wr, AnyMessage::Mining(Mining::SetTarget(msg))).is_err() {
            return;
        }
        match self.channels.get_mut(&id) {
            // Its jobs are the miner's own: they take the new target as they are.
            Some(ch) if ch.custom.is_some() => ch.core.retarget_held(),
            _ => self.send_current_work(id, wr, true),
        }
    }
}
