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
    OpenMiningChannelError, OpenStandardMiningChannel, OpenStandardMiningChannelSuccess, SetExtranoncePrefix,
    SetNewPrevHash, SetTarget, SubmitSharesSuccess, UpdateChannel, UpdateChannelError,
};
use parsers_sv2::{AnyMessage, CommonMessages, Mining};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::hot;
use super::jobs::{self, JobIds, JobRef};
use super::transport::{FrameReader, FrameRef as Frame, FrameWriter, ReadReady, TransportError};
use crate::hex;
use crate::log::escape::Esc;
use crate::log::ratelimit::LogKind;
use crate::log::sharelog::ShareLine;
use crate::log::stats::StatEvent;
use crate::mining::{Channel, Effects, Issued, Work};
use crate::serve::enonce::mask_of;
use crate::serve::guard::{BanScore, Outcome};
use crate::serve::outbox::Outbox;
use crate::serve::{RejectKind, ServerCtx};
use crate::share::Decoded;
use crate::work::coinbase::MAX_NONCE2_LEN;

mod channels;
mod custom;
mod shares;
#[cfg(test)]
mod tests;
mod work;

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
    /// The job the miner set itself (SetCustomMiningJob, Job Declaration) on the current block:
    /// the pool's work on that block is not sent to this channel meanwhile.
    custom: Option<Arc<Work>>,
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
    /// Boxed: a map of one channel holds four buckets, and a channel is hundreds of bytes
    /// (issue 31: 2.8 KB of an idle connection's 16 KB was this map's empty buckets).
    channels: HashMap<u32, Box<Sv2Channel>>,
    next_channel_id: u32,
    next_en1: u64,
    born: Instant,
    /// A share's effects (serve::outbox): a found block leaves at once, statistics after the
    /// batch of frames; and whether the share log's backlog is over its cap (wait for room
    /// before reading on).
    outbox: Outbox,
    /// Accepted shares not yet acknowledged (sent after the batch of frames, before errors of
    /// the same channel so that answers keep their order).
    acks: Vec<SubmitSharesSuccess>,
    /// Channels that judged shares since the last statistics flush.
    touched: Vec<u32>,
    /// When a share last came (or the connection began): `dropidle` counts from here.
    last_share: Instant,
    /// Channels opened so far (each a name the statistics hold while it is open).
    names: u32,
    /// Banning's share counts (serve::guard); `banned`: past the threshold, close and ban.
    score: BanScore,
    banned: bool,
    /// SetupConnection asked for work selection (Job Declaration on, `sv2jdurl`): its extended
    /// channels may mine jobs it declared (SetCustomMiningJob).
    work_selection: bool,
}

/// Channels one connection may open in its life: a translator opens one per SV1 miner behind it
/// and again when one reconnects; a flood of new names is refused past it.
pub const NAMES_PER_CONNECTION: u32 = 4 * MAX_CHANNELS as u32;

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
            outbox: Outbox::default(),
            touched: Vec::new(),
            acks: Vec::new(),
            last_share: Instant::now(),
            names: 0,
            score: BanScore::default(),
            banned: false,
            work_selection: false,
        }
    }

    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    /// Serves the connection until it closes, breaks the protocol, or the pool shuts down.
    #[allow(clippy::manual_async_fn)] // on purpose: see the async block below
    pub fn run<R: AsyncRead + ReadReady + Unpin, W: AsyncWrite + Unpin>(
        mut self,
        mut rd: FrameReader<R>,
        mut wr: FrameWriter<W>,
    ) -> impl std::future::Future<Output = ()> {
        // An async block using the arguments in place: an async fn would hold them twice in
        // its future (arguments, then the locals they move into), ~750 bytes (issue 31).
        async move {
            let mut work_rx = self.ctx.work.clone();
            let _ = work_rx.borrow_and_update();
            let mut shutdown = self.ctx.shutdown.clone();
            let setup_deadline = tokio::time::sleep(SETUP_DEADLINE);
            tokio::pin!(setup_deadline);
            // Armed until the first channel opens.
            let mut awaiting_channel = true;
            // ckpool's dropidle: no share for that long, from the connection's start. The timer is
            // moved only when it fires (a share costs no timer reset).
            let dropidle = Duration::from_micros(self.ctx.guard.policy.dropidle_us);
            let idle_timer = tokio::time::sleep(if dropidle.is_zero() { SETUP_DEADLINE } else { dropidle });
            tokio::pin!(idle_timer);
            let end = loop {
                let step = tokio::select! {
                    f = rd.next_frame() => match f {
                        // Then every frame already received, so that their answers go out in one write.
                        Ok(frame) => self.handle(frame, &mut wr).and_then(|()| self.drain_ready(&mut rd, &mut wr)),
                        Err(e) => Err(ended(e)),
                    },
                    r = work_rx.changed() => match r {
                        Ok(()) => {
                            let w = work_rx.borrow_and_update().clone();
                            match w {
                                Some(w) => self.on_work(&w, &mut wr),
                                None => Ok(()),
                            }
                        }
                        Err(_) => Err(End::Shutdown),
                    },
                    _ = shutdown.changed() => Err(End::Shutdown),
                    _ = &mut idle_timer, if !dropidle.is_zero() => {
                        let at = self.last_share + dropidle;
                        if Instant::now() < at {
                            idle_timer.as_mut().reset(at);
                            Ok(())
                        } else {
                            self.ctx.guard.counts.dropped_idle.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            Err(End::Refuse(format!("no share for {} s (dropidle)", dropidle.as_secs())))
                        }
                    }
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
                // A found block whose channel was full goes before the write to this peer (which
                // may be slow to read): no block waits behind it.
                self.outbox.send_blocks(&self.ctx).await;
                let wrote = match step {
                    Ok(()) => self.write_reading(&mut rd, &mut wr).await,
                    Err(_) => Ok(()),
                };
                self.flush_outbound().await;
                if self.outbox.take_log_full() {
                    self.ctx.shares.wait_for_room().await;
                }
                match (step, wrote) {
                    (Err(end), _) | (Ok(()), Err(end)) => break end,
                    (Ok(()), Ok(())) => {}
                }
            };
            let logged = matches!(end, End::Shutdown) || self.ctx.guard.log(LogKind::Close);
            match &end {
                _ if !logged => {}
                End::Closed if !self.setup => tracing::warn!(
                    peer = %self.peer, client = self.id,
                    "sv2 connection closed by the peer before SetupConnection (a client that pins another authority key closes right after the handshake: check the key it was given against `ckpool sv2-key`)"
                ),
                End::Closed => tracing::info!(peer = %self.peer, client = self.id, "sv2 connection closed by the peer"),
                End::Shutdown => {}
                End::Refuse(why) => {
                    tracing::warn!(peer = %self.peer, client = self.id, agent = %Esc(&self.agent), "sv2 connection dropped: {}", Esc(why))
                }
            }
            // Free the channels first: a peer that stopped reading must not hold them.
            self.finish().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), wr.close()).await;
        }
    }

    /// Writes what was pushed to the peer. A peer slow to read does not stop this session
    /// from reading: frames that arrive meanwhile are handled (a found block among them leaves
    /// for the block task at once), their answers queued behind, up to [`MAX_UNWRITTEN`] bytes.
    /// The peer is dropped when the write makes no way within [`WRITE_DEADLINE`].
    async fn write_reading<R, W>(&mut self, rd: &mut FrameReader<R>, wr: &mut FrameWriter<W>) -> Result<(), End>
    where
        R: AsyncRead + ReadReady + Unpin,
        W: AsyncWrite + Unpin,
    {
        if wr.pending() == 0 {
            return Ok(());
        }
        let deadline = tokio::time::sleep(WRITE_DEADLINE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                biased;
                r = wr.flush() => return r.map_err(|_| End::Closed),
                f = rd.next_frame(), if wr.pending() < MAX_UNWRITTEN => {
                    match f {
                        Ok(frame) => self.handle(frame, wr)?,
                        Err(e) => return Err(ended(e)),
                    }
                    self.push_acks(wr);
                    self.outbox.send_blocks(&self.ctx).await;
                }
                _ = &mut deadline => {
                    self.ctx.guard.counts.dropped_slow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Err(End::Refuse(format!("not reading (no write progress in {WRITE_DEADLINE:?})")));
                }
            }
        }
    }

    /// Handles the frames that can be read without waiting (at most a batch's worth).
    fn drain_ready<R, W>(&mut self, rd: &mut FrameReader<R>, wr: &mut FrameWriter<W>) -> Result<(), End>
    where
        R: AsyncRead + ReadReady + Unpin,
        W: AsyncWrite + Unpin,
    {
        for _ in 0..BATCH_FRAMES {
            match poll_once(rd.next_frame()) {
                None => return Ok(()),
                Some(Ok(frame)) => self.handle(frame, wr)?,
                Some(Err(e)) => return Err(ended(e)),
            }
        }
        Ok(())
    }

    /// Sends the batch's acknowledgements: one SubmitShares.Success per run of accepted shares
    /// of a channel.
    fn push_acks<W: AsyncWrite + Unpin>(&mut self, wr: &mut FrameWriter<W>) {
        for ok in self.acks.drain(..) {
            let _ = hot::push_success(wr, &ok);
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
        self.outbox.tally(&user, &worker, tally);
        self.outbox.stat(StatEvent::Gone { user, worker });
        self.ctx.enonces.release([ch.en1_key]);
    }

    /// Sends found blocks, then statistics (serve::outbox; a full channel slows this
    /// connection, nothing is dropped).
    async fn flush_outbound(&mut self) {
        for id in self.touched.drain(..) {
            let Some(ch) = self.channels.get_mut(&id) else { continue };
            let tally = ch.core.take_tally();
            self.outbox.tally(ch.core.user(), ch.core.worker(), tally);
        }
        self.outbox.flush(&self.ctx).await;
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
                self.check_ban()?;
            }
            AnyMessage::Mining(Mining::SubmitSharesStandard(m)) => {
                let d = Decoded { extranonce2: &[], ntime: m.ntime, nonce: m.nonce, version: m.version };
                self.on_submit(m.channel_id, m.sequence_number, m.job_id, d, wr);
                self.check_ban()?;
            }
            AnyMessage::Mining(Mining::OpenExtendedMiningChannel(m)) => self.on_open_extended(m, wr),
            AnyMessage::Mining(Mining::OpenStandardMiningChannel(m)) => self.on_open_standard(m, wr),
            AnyMessage::Mining(Mining::UpdateChannel(m)) => self.on_update(m, wr),
            AnyMessage::Mining(Mining::SetCustomMiningJob(m)) => self.on_custom_job(m, wr)?,
            AnyMessage::Mining(Mining::CloseChannel(m)) => {
                if self.ctx.guard.log(LogKind::Close) {
                    tracing::info!(peer = %self.peer, client = self.id, channel = m.channel_id, "sv2 channel closed by the peer: {}", Esc(&m.reason_code.as_utf8_or_hex()));
                }
                self.close_channel(m.channel_id);
            }
            AnyMessage::Extensions(parsers_sv2::Extensions::ExtensionsNegotiation(
                parsers_sv2::ExtensionsNegotiation::RequestExtensions(m),
            )) => {
                // No optional extension is offered: the request succeeds with none supported.
                if self.ctx.guard.log(LogKind::Connect) {
                    tracing::info!(peer = %self.peer, client = self.id, "sv2 extensions requested ({:?}); none offered", m.requested_extensions.clone().into_inner());
                }
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
                if self.ctx.guard.log(LogKind::BadLine) {
                    tracing::warn!(peer = %self.peer, client = self.id, "sv2: ignoring {} (not a message a pool takes)", Esc(&name(&other)));
                }
            }
        }
        Ok(())
    }

    /// Past banning's threshold: the address is banned and the connection closed.
    fn check_ban(&mut self) -> Result<(), End> {
        if !self.banned {
            return Ok(());
        }
        self.ctx.guard.ban(self.peer.ip());
        Err(End::Refuse(self.ctx.guard.ban_reason()))
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
        } else if m.flags & REQUIRES_WORK_SELECTION != 0 && self.ctx.params.declared.is_none() {
            // Work selection is Job Declaration: on when the pool serves `sv2jdurl`.
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
        self.work_selection = m.flags & REQUIRES_WORK_SELECTION != 0;
        if self.ctx.guard.log(LogKind::Connect) {
            tracing::info!(peer = %self.peer, client = self.id, agent = %Esc(&self.agent), "sv2 connection set up (flags {:#b})", m.flags);
        }
        push(
            wr,
            AnyMessage::Common(CommonMessages::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: VERSION,
                flags: 0,
            })),
        )
    }
}

/// Frames handled per wake-up before answering (bounds the time one busy peer holds its task).
const BATCH_FRAMES: usize = 64;
/// Answers queued for a peer slow to read before this session stops reading it too.
const MAX_UNWRITTEN: usize = 1 << 20;

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
