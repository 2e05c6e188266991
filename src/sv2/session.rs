//! One Stratum V2 connection, the mining core's second face: after the Noise handshake, a task
//! that owns the encrypted stream and the connection's channels (standard and extended), each a
//! mining-core [`Channel`] with its own extranonce prefix from the same space as SV1 sessions.
//!
//! Order rules (SV2 spec, "Mining Protocol"): SetupConnection first; a channel gets its
//! OpenChannel.Success, then a future job and the SetNewPrevHash that activates it; a new block is
//! a future job plus SetNewPrevHash, other new work a job active at once; a difficulty change is
//! SetTarget followed by the current work under a new job id (the core judges a share at the
//! difficulty its job was sent with, as for SV1). Every SubmitShares gets Success or Error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use binary_sv2::{Seq0255, Seq064K, Str0255, Sv2Option, B032, B064K, U256};
use common_messages_sv2::{Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess};
use mining_sv2::{
    NewExtendedMiningJob, NewMiningJob, OpenExtendedMiningChannel, OpenExtendedMiningChannelSuccess,
    OpenMiningChannelError, OpenStandardMiningChannel, OpenStandardMiningChannelSuccess, SetNewPrevHash, SetTarget,
    SubmitSharesError, SubmitSharesSuccess, UpdateChannel, UpdateChannelError,
};
use parsers_sv2::{AnyMessage, CommonMessages, Mining};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::jobs::{self, JobIds, JobRef};
use super::transport::{Frame, FrameReader, FrameWriter, TransportError};
use crate::hex;
use crate::log::sharelog::ShareLine;
use crate::log::stats::StatEvent;
use crate::mining::{Channel, Effects, Issued, Work};
use crate::share::Decoded;
use crate::serve::enonce::mask_of;
use crate::mining::BlockCandidate;
use crate::serve::{RejectKind, ServerCtx};
use crate::work::coinbase::MAX_NONCE2_LEN;

/// The only protocol version there is.
const VERSION: u16 = 2;
/// SetupConnection flags of the mining protocol (client side).
const REQUIRES_WORK_SELECTION: u32 = 0b010;
const REQUIRES_VERSION_ROLLING: u32 = 0b100;
/// The group every channel of a connection belongs to (channel ids start above it).
const GROUP_CHANNEL_ID: u32 = 1;
/// Channels one connection may hold (a translator opens one per SV1 miner behind it).
pub const MAX_CHANNELS: usize = 4096;
/// A connection that has not opened a channel by then is dropped.
const SETUP_DEADLINE: Duration = Duration::from_secs(120);
/// How long a write may wait for a peer that does not read.
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

/// One channel of a connection: the core's channel and what SV2 adds to it.
struct Sv2Channel {
    core: Channel,
    extended: bool,
    /// This channel's extranonce1 value in the server's set.
    en1_key: u64,
    en1_hex: Arc<str>,
    ids: JobIds,
    /// The previous block hash of the last job sent (a new one is a SetNewPrevHash).
    last_prev: Option<[u8; 32]>,
    /// The chain tip's min_ntime as last sent (later jobs never start below it).
    tip_ntime: u32,
    /// Solo mode: the address's payout script.
    payout: Option<bitcoin::ScriptBuf>,
    /// When this channel was last sent work (for the new-block latency figures).
    last_notify: std::time::Instant,
    /// Extranonce2 bytes (a standard channel's are zeros, the tail of its prefix).
    n2: usize,
}

/// Why the connection ended, for the log.
enum End {
    Closed,
    Shutdown,
    Refuse(String),
}

pub struct Sv2Session {
    ctx: Arc<ServerCtx>,
    id: u64,
    peer: SocketAddr,
    address: Arc<str>,
    agent: Arc<str>,
    setup: bool,
    channels: HashMap<u32, Sv2Channel>,
    next_channel_id: u32,
    next_en1: u64,
    born: Instant,
    stats_out: Vec<StatEvent>,
    blocks_out: Vec<BlockCandidate>,
    /// Accepted shares not yet acknowledged (sent after the batch of frames, before errors of
    /// the same channel so that answers keep their order).
    acks: Vec<SubmitSharesSuccess>,
    /// Channels that judged shares since the last statistics flush.
    touched: Vec<u32>,
    /// The share log's backlog is over its cap: wait for room before reading on.
    log_full: bool,
}

impl Sv2Session {
    pub fn new(ctx: Arc<ServerCtx>, id: u64, peer: SocketAddr, en1_seed: u64) -> Sv2Session {
        Sv2Session {
            ctx,
            id,
            peer,
            address: peer.ip().to_string().into(),
            agent: "".into(),
            setup: false,
            channels: HashMap::new(),
            next_channel_id: GROUP_CHANNEL_ID + 1,
            next_en1: en1_seed,
            born: Instant::now(),
            stats_out: Vec::new(),
            blocks_out: Vec::new(),
            touched: Vec::new(),
            acks: Vec::new(),
            log_full: false,
        }
    }

    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    /// Serves the connection until it closes, breaks the protocol, or the pool shuts down.
    pub async fn run<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        mut self,
        mut rd: FrameReader<R>,
        mut wr: FrameWriter<W>,
    ) {
        let mut work_rx = self.ctx.work.clone();
        let _ = work_rx.borrow_and_update();
        let mut shutdown = self.ctx.shutdown.clone();
        let setup_deadline = tokio::time::sleep(SETUP_DEADLINE);
        tokio::pin!(setup_deadline);
        // Armed until the first channel opens.
        let mut awaiting_channel = true;
        let end = loop {
            let step = tokio::select! {
                f = rd.read_frame() => match f {
                    // Then every frame already received, so that their answers go out in one write.
                    Ok(frame) => self.on_frame(frame, &mut wr).and_then(|()| self.drain_ready(&mut rd, &mut wr)),
                    Err(e) => Err(ended(e)),
                },
                r = work_rx.changed() => match r {
                    Ok(()) => {
                        let w = work_rx.borrow_and_update().clone();
                        if let Some(w) = w {
                            self.on_work(&w, &mut wr);
                        }
                        Ok(())
                    }
                    Err(_) => Err(End::Shutdown),
                },
                _ = shutdown.changed() => Err(End::Shutdown),
                _ = &mut setup_deadline, if awaiting_channel => {
                    Err(End::Refuse(format!("no channel opened within {}s", SETUP_DEADLINE.as_secs())))
                }
            };
            if self.channels.is_empty() != awaiting_channel {
                // The deadline runs while the connection holds no channel (again).
                awaiting_channel = self.channels.is_empty();
                if awaiting_channel {
                    setup_deadline.as_mut().reset(Instant::now() + SETUP_DEADLINE);
                }
            }
            self.push_acks(&mut wr);
            let wrote = tokio::time::timeout(WRITE_DEADLINE, wr.flush()).await;
            self.flush_outbound().await;
            if self.log_full {
                self.ctx.shares.wait_for_room().await;
                self.log_full = false;
            }
            match (step, wrote) {
                (Err(end), _) => break end,
                (Ok(()), Err(_)) => {
                    break End::Refuse(format!("not reading (no write progress in {WRITE_DEADLINE:?})"))
                }
                (Ok(()), Ok(Err(_))) => break End::Closed,
                (Ok(()), Ok(Ok(()))) => {}
            }
        };
        match &end {
            End::Closed if !self.setup => tracing::warn!(
                peer = %self.peer, client = self.id,
                "sv2 connection closed by the peer before SetupConnection (a client that pins another authority key closes right after the handshake: check the key it was given against `ckpool sv2-key`)"
            ),
            End::Closed => tracing::info!(peer = %self.peer, client = self.id, "sv2 connection closed by the peer"),
            End::Shutdown => {}
            End::Refuse(why) => {
                tracing::warn!(peer = %self.peer, client = self.id, agent = %self.agent, "sv2 connection dropped: {why}")
            }
        }
        // Free the channels first: a peer that stopped reading must not hold them.
        self.finish().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), wr.close()).await;
    }

    /// Handles the frames that can be read without waiting (at most a batch's worth).
    fn drain_ready<R, W>(&mut self, rd: &mut FrameReader<R>, wr: &mut FrameWriter<W>) -> Result<(), End>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        for _ in 0..BATCH_FRAMES {
            match poll_once(rd.read_frame()) {
                None => return Ok(()),
                Some(Ok(frame)) => self.on_frame(frame, wr)?,
                Some(Err(e)) => return Err(ended(e)),
            }
        }
        Ok(())
    }

    /// Sends the batch's acknowledgements: one SubmitShares.Success per run of accepted shares
    /// of a channel.
    fn push_acks<W: AsyncWrite + Unpin>(&mut self, wr: &mut FrameWriter<W>) {
        for ok in self.acks.drain(..) {
            let _ = push(wr, AnyMessage::Mining(Mining::SubmitSharesSuccess(ok)));
        }
    }

    /// Frees every channel's extranonce and reports its last shares.
    async fn finish(&mut self) {
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        for id in ids {
            self.close_channel(id);
        }
        self.flush_outbound().await;
    }

    fn close_channel(&mut self, id: u32) {
        let Some(mut ch) = self.channels.remove(&id) else { return };
        let tally = ch.core.take_tally();
        let (user, worker) = (ch.core.user().clone(), ch.core.worker().clone());
        if !tally.is_empty() {
            self.stats_out.push(StatEvent::Shares { user: user.clone(), worker: worker.clone(), tally });
        }
        self.stats_out.push(StatEvent::Gone { user, worker });
        self.ctx.enonces.release([ch.en1_key]);
    }

    /// Sends found blocks, then statistics (a full channel slows this connection; nothing dropped).
    async fn flush_outbound(&mut self) {
        for id in self.touched.drain(..) {
            let Some(ch) = self.channels.get_mut(&id) else { continue };
            let tally = ch.core.take_tally();
            if !tally.is_empty() {
                self.stats_out.push(StatEvent::Shares {
                    user: ch.core.user().clone(),
                    worker: ch.core.worker().clone(),
                    tally,
                });
            }
        }
        for cand in self.blocks_out.drain(..) {
            let hash = cand.hash;
            if self.ctx.blocks.send(cand).await.is_err() {
                tracing::error!("block submitter is gone; block {} not submitted", hex::encode_rev(&hash));
            }
        }
        for ev in self.stats_out.drain(..) {
            if self.ctx.stats.send(ev).await.is_err() {
                tracing::error!("stats task is gone");
                break;
            }
        }
    }

    fn on_frame<W>(&mut self, mut frame: Frame, wr: &mut FrameWriter<W>) -> Result<(), End>
    where
        W: AsyncWrite + Unpin,
    {
        let msg_type = frame.msg_type();
        let ext = frame.header.ext_type_without_channel_msg();
        let msg = frame.message().map_err(|e| {
            End::Refuse(format!(
                "unreadable message (extension 0x{ext:04x}, type 0x{msg_type:02x}: {}): {e:?}",
                parsers_sv2::message_type_to_name(msg_type)
            ))
        })?;
        if !self.setup {
            return match msg {
                AnyMessage::Common(CommonMessages::SetupConnection(m)) => self.on_setup(m, wr),
                other => Err(End::Refuse(format!("expected SetupConnection first, got {}", name(&other)))),
            };
        }
        match msg {
            AnyMessage::Mining(Mining::SubmitSharesExtended(m)) => {
                let d = Decoded {
                    extranonce2: m.extranonce.as_bytes(),
                    ntime: m.ntime,
                    nonce: m.nonce,
                    version: m.version,
                };
                self.on_submit(m.channel_id, m.sequence_number, m.job_id, d, wr);
            }
            AnyMessage::Mining(Mining::SubmitSharesStandard(m)) => {
                let d = Decoded { extranonce2: &[], ntime: m.ntime, nonce: m.nonce, version: m.version };
                self.on_submit(m.channel_id, m.sequence_number, m.job_id, d, wr);
            }
            AnyMessage::Mining(Mining::OpenExtendedMiningChannel(m)) => self.on_open_extended(m, wr),
            AnyMessage::Mining(Mining::OpenStandardMiningChannel(m)) => self.on_open_standard(m, wr),
            AnyMessage::Mining(Mining::UpdateChannel(m)) => self.on_update(m, wr),
            AnyMessage::Mining(Mining::CloseChannel(m)) => {
                tracing::info!(peer = %self.peer, client = self.id, channel = m.channel_id, "sv2 channel closed by the peer: {}", m.reason_code.as_utf8_or_hex());
                self.close_channel(m.channel_id);
            }
            AnyMessage::Extensions(parsers_sv2::Extensions::ExtensionsNegotiation(
                parsers_sv2::ExtensionsNegotiation::RequestExtensions(m),
            )) => {
                // No optional extension is offered: the request succeeds with none supported.
                tracing::info!(peer = %self.peer, client = self.id, "sv2 extensions requested ({:?}); none offered", m.requested_extensions.clone().into_inner());
                let reply = extensions_sv2::RequestExtensionsSuccess {
                    request_id: m.request_id,
                    supported_extensions: Seq064K::new(Vec::new()).expect("empty"),
                };
                push(
                    wr,
                    AnyMessage::Extensions(parsers_sv2::Extensions::ExtensionsNegotiation(
                        parsers_sv2::ExtensionsNegotiation::RequestExtensionsSuccess(reply),
                    )),
                )?;
            }
            AnyMessage::Common(CommonMessages::SetupConnection(_)) => {
                return Err(End::Refuse("a second SetupConnection".into()));
            }
            other => {
                // A message only a pool sends, or one of a protocol this pool does not serve
                // (job declaration, template distribution): named in the log, not answered.
                tracing::warn!(peer = %self.peer, client = self.id, "sv2: ignoring {} (not a message a pool takes)", name(&other));
            }
        }
        Ok(())
    }

    fn on_setup<W: AsyncWrite + Unpin>(&mut self, m: SetupConnection<'_>, wr: &mut FrameWriter<W>) -> Result<(), End> {
        let agent = format!(
            "{}/{} {}",
            m.vendor.as_utf8_or_hex(),
            m.hardware_version.as_utf8_or_hex(),
            m.firmware.as_utf8_or_hex()
        );
        self.agent = agent.trim().chars().take(128).collect::<String>().into();
        let refuse = |code: &'static str, flags: u32| {
            AnyMessage::Common(CommonMessages::SetupConnectionError(SetupConnectionError {
                flags,
                error_code: Str0255::new(code.as_bytes()).expect("short code"),
            }))
        };
        let (error, flags) = if m.protocol != Protocol::MiningProtocol {
            (Some("unsupported-protocol"), 0)
        } else if m.min_version > VERSION || m.max_version < VERSION {
            (Some("protocol-version-mismatch"), 0)
        } else if m.flags & REQUIRES_WORK_SELECTION != 0 {
            (Some("unsupported-feature-flags"), REQUIRES_WORK_SELECTION)
        } else if m.flags & REQUIRES_VERSION_ROLLING != 0 && self.ctx.params.version_mask == 0 {
            // version_mask 0: this pool lets no miner roll the version.
            (Some("unsupported-feature-flags"), REQUIRES_VERSION_ROLLING)
        } else {
            (None, 0)
        };
        if let Some(code) = error {
            push(wr, refuse(code, flags))?;
            return Err(End::Refuse(format!(
                "SetupConnection refused ({code}): protocol {:?}, versions {}..={}, flags {:#b}",
                m.protocol, m.min_version, m.max_version, m.flags
            )));
        }
        self.setup = true;
        tracing::info!(peer = %self.peer, client = self.id, agent = %self.agent, "sv2 connection set up (flags {:#b})", m.flags);
        push(
            wr,
            AnyMessage::Common(CommonMessages::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: VERSION,
                flags: 0,
            })),
        )
    }

    /// Checks what every OpenChannel asks, then opens the channel; `Err` carries the SV2 error code.
    fn open_channel(
        &mut self,
        user: &str,
        hashrate: f32,
        max_target: &[u8; 32],
        extended: bool,
    ) -> Result<u32, &'static str> {
        if self.channels.len() >= MAX_CHANNELS {
            return Err("channel-capacity-exhausted");
        }
        let user: String = user.chars().take(256).collect();
        if user.is_empty() {
            return Err("invalid-user-identity");
        }
        let payout = match &self.ctx.params.solo {
            Some(solo) => match solo.payout_script(&user) {
                Ok(s) => Some(s),
                Err(why) => {
                    tracing::warn!(peer = %self.peer, client = self.id, "solo: refusing sv2 channel of {user:?}: {why}");
                    return Err("unknown-user");
                }
            },
            None => None,
        };
        let floor = crate::difficulty::Difficulty::from_target(&jobs::target_from_le(max_target));
        let params = self.ctx.params.channel();
        if !params.maxdiff.is_zero() && floor > params.maxdiff {
            return Err("max-target-out-of-range");
        }
        let n1 = self.ctx.params.nonce1_len;
        let Ok(key) = self.ctx.enonces.take(&mut self.next_en1, mask_of(n1)) else {
            tracing::warn!(peer = %self.peer, client = self.id, "sv2 channel refused: every extranonce1 value is held by a connected miner");
            return Err("channel-capacity-exhausted");
        };
        let now = self.now_us();
        let mut core = Channel::new(params, &key.to_be_bytes()[8 - n1..], now);
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
        let (u, w) = (core.user().clone(), core.worker().clone());
        self.stats_out.push(StatEvent::Agent { user: u.clone(), worker: w.clone(), agent: self.agent.clone() });
        self.stats_out.push(StatEvent::Authorized { user: u, worker: w });
        tracing::info!(
            peer = %self.peer, client = self.id, channel = id, worker = %core.worker(), agent = %self.agent,
            "sv2 {} channel opened at difficulty {}", if extended { "extended" } else { "standard" }, core.difficulty()
        );
        let en1_hex = hex::encode(core.en1()).into();
        let n2 = self.nonce2_len();
        self.channels.insert(
            id,
            Sv2Channel {
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
            },
        );
        Ok(id)
    }

    fn open_refused<W: AsyncWrite + Unpin>(
        &self,
        wr: &mut FrameWriter<W>,
        request_id: u32,
        user: &str,
        code: &str,
    ) -> Result<(), End> {
        tracing::info!(peer = %self.peer, client = self.id, "sv2 channel for {user:?} refused: {code}");
        push(
            wr,
            AnyMessage::Mining(Mining::OpenMiningChannelError(OpenMiningChannelError {
                request_id,
                error_code: Str0255::new(code.as_bytes()).expect("short code"),
            })),
        )
    }

    fn on_open_extended<W: AsyncWrite + Unpin>(&mut self, m: OpenExtendedMiningChannel<'_>, wr: &mut FrameWriter<W>) {
        let user = m.user_identity.as_utf8_or_hex();
        let nonce2_len = self.nonce2_len();
        if m.min_extranonce_size as usize > nonce2_len {
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
        let ch = &self.channels[&id];
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

    fn on_open_standard<W: AsyncWrite + Unpin>(&mut self, m: OpenStandardMiningChannel<'_>, wr: &mut FrameWriter<W>) {
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

    fn on_update<W: AsyncWrite + Unpin>(&mut self, m: UpdateChannel<'_>, wr: &mut FrameWriter<W>) {
        let now = self.now_us();
        let floor = crate::difficulty::Difficulty::from_target(&jobs::target_from_le(&m.maximum_target.to_array()));
        let interval = self.ctx.params.vardiff.target_interval_us;
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
            tracing::info!(peer = %self.peer, client = self.id, channel = m.channel_id, "sv2 UpdateChannel refused: {code}");
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
    fn retarget<W: AsyncWrite + Unpin>(&mut self, id: u32, wr: &mut FrameWriter<W>) {
        let Some(ch) = self.channels.get(&id) else { return };
        let target = jobs::target_le(&ch.core.difficulty().to_target());
        tracing::debug!(peer = %self.peer, client = self.id, channel = id, "sv2 difficulty -> {}", ch.core.difficulty());
        let msg = SetTarget { channel_id: id, maximum_target: U256::new(&target).expect("32 bytes") };
        if push(wr, AnyMessage::Mining(Mining::SetTarget(msg))).is_ok() {
            self.send_current_work(id, wr, true);
        }
    }

    fn nonce2_len(&self) -> usize {
        self.ctx.work.borrow().as_ref().map(|w| w.job.coinbase.nonce2_len).unwrap_or(8)
    }

    fn send_current_work<W: AsyncWrite + Unpin>(&mut self, id: u32, wr: &mut FrameWriter<W>, fresh_id: bool) {
        let base = self.ctx.work.borrow().clone();
        if let Some(base) = base {
            self.send_work(id, &base, wr, fresh_id);
        }
    }

    /// New work published: every channel gets it (after an idle channel's difficulty drop).
    fn on_work<W: AsyncWrite + Unpin>(&mut self, base: &Arc<Work>, wr: &mut FrameWriter<W>) {
        let ids: Vec<u32> = self.channels.keys().copied().collect();
        let network = Some(base.network_diff);
        let now = self.now_us();
        for id in ids {
            let lowered = self.channels.get_mut(&id).and_then(|ch| ch.core.idle_check(now, network)).is_some();
            if lowered {
                self.retarget(id, wr);
            } else {
                self.send_work(id, base, wr, false);
            }
        }
    }

    /// Sends `base` (in solo mode the channel's own coinbase of it) to channel `id`: a new block
    /// as a future job and the SetNewPrevHash that activates it, other work as a job active now.
    fn send_work<W: AsyncWrite + Unpin>(&mut self, id: u32, base: &Arc<Work>, wr: &mut FrameWriter<W>, fresh_id: bool) {
        let Some(ch) = self.channels.get_mut(&id) else { return };
        let w = match (&self.ctx.params.solo, &ch.payout) {
            (Some(solo), Some(script)) => match solo.work_for(base, script) {
                Some(w) => w,
                None => return,
            },
            _ => base.clone(),
        };
        let Issued::Job { local_id, .. } = ch.core.issue(&w, fresh_id) else { return };
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
            return;
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
    }

    fn on_submit<W: AsyncWrite + Unpin>(
        &mut self,
        channel_id: u32,
        seq: u32,
        job_id: u32,
        mut d: Decoded<'_>,
        wr: &mut FrameWriter<W>,
    ) {
        let now = self.now_us();
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            self.ctx.counters.add_rejected(RejectKind::InvalidParams);
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
                self.ctx.counters.add_rejected(RejectKind::from(&kind));
                self.reject(wr, channel_id, seq, code);
                return;
            }
        };
        let mut fx = Effects::default();
        let verdict = ch.core.submit_decoded(local, &d, now, &mut fx);
        let reject = match verdict.result {
            Ok(()) => {
                self.ctx.counters.add_accepted(verdict.diff);
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
                self.ctx.counters.add_rejected(RejectKind::from(&r));
                // Earlier accepted shares are answered first.
                for ok in self.acks.drain(..) {
                    let _ = push(wr, AnyMessage::Mining(Mining::SubmitSharesSuccess(ok)));
                }
                let _ = push(wr, submit_error(channel_id, seq, jobs::reject_code(&r)));
                Some(r.reason())
            }
        };
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
                if self.ctx.shares.append(record.height, record.workinfoid, &line) {
                    self.log_full = true;
                }
            }
        }
        if let Some(cand) = fx.block.take() {
            tracing::info!(worker = %ch.core.worker(), height = cand.job.height, "block candidate {} from {} (sv2)", hex::encode_rev(&cand.hash), ch.core.worker());
            self.blocks_out.push(cand);
        }
        if fx.retarget.take().is_some() {
            self.retarget(channel_id, wr);
        }
    }
}

/// A standard channel's extranonce2.
static ZERO_EN2: [u8; MAX_NONCE2_LEN] = [0; MAX_NONCE2_LEN];

/// Frames handled per wake-up before answering (bounds the time one busy peer holds its task).
const BATCH_FRAMES: usize = 64;

fn ended(e: TransportError) -> End {
    match e {
        TransportError::Closed => End::Closed,
        e => End::Refuse(e.to_string()),
    }
}

/// Polls `f` once: its output if ready now (the futures it is used with keep their progress in
/// their owner, so dropping a pending one loses nothing).
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

impl Drop for Sv2Session {
    /// A task that ends without `finish` (a panic) still gives back its extranonce1 values.
    fn drop(&mut self) {
        if !self.channels.is_empty() {
            self.ctx.enonces.release(self.channels.values().map(|ch| ch.en1_key));
        }
    }
}

impl Sv2Session {
    /// Answers a share with an error, after any pending acknowledgement (answers keep their order).
    fn reject<W: AsyncWrite + Unpin>(
        &mut self,
        wr: &mut FrameWriter<W>,
        channel_id: u32,
        seq: u32,
        code: &'static str,
    ) {
        self.push_acks(wr);
        let _ = push(wr, submit_error(channel_id, seq, code));
    }
}

fn submit_error(channel_id: u32, seq: u32, code: &'static str) -> AnyMessage<'static> {
    AnyMessage::Mining(Mining::SubmitSharesError(SubmitSharesError {
        channel_id,
        sequence_number: seq,
        error_code: Str0255::new(code.as_bytes()).expect("short code"),
    }))
}

/// Encodes `msg` for the peer; an encoding failure (a message over SV2's limits) ends the
/// connection with a log line rather than sending something malformed.
fn push<W: AsyncWrite + Unpin>(wr: &mut FrameWriter<W>, msg: AnyMessage<'_>) -> Result<(), End> {
    wr.push(msg).map_err(|e| End::Refuse(e.to_string()))
}

/// A message's name for the log.
fn name(m: &AnyMessage<'_>) -> String {
    let s = format!("{m:?}");
    let end = s.find(['(', ' ', '{']).unwrap_or(s.len());
    let inner = s[end..].trim_start_matches('(');
    let inner_end = inner.find(['(', ' ', '{']).unwrap_or(inner.len());
    inner[..inner_end].to_string()
}

fn now_unix() -> (u64, u32) {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}
