//! One miner connection, SV1's face of the mining core: a task that owns its socket, read
//! buffer, the SV1 handshake state and a [`Channel`] that decides about work and shares.
//!
//! Order rules (docs/firmware.md): the first line sent answers the miner's first request;
//! work (set_difficulty, then notify) starts once the miner is subscribed and authorized — when
//! the authorize completes the handshake, the work goes out just before its answer, so that a
//! client that stops reading at the answer (ckproxy 0.9.9) has it; suggest_difficulty,
//! configure, extranonce.subscribe and unknown methods never disconnect; only submits are
//! answered with a bare `true`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::lines::{Line, LineReader};
use super::proto::{self, code};
use super::server::MinerStream;
use crate::hex;
use crate::log::escape::Esc;
use crate::log::ratelimit::LogKind;
use crate::log::stats::StatEvent;
use crate::mining::vardiff::Retarget;
use crate::mining::Work;
use crate::mining::{Channel, ChannelParams, Issued};
use crate::serve::guard::BanScore;
use crate::serve::outbox::Outbox;
use crate::serve::ServerCtx;

/// A connection that has not subscribed and authorized by then is dropped.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(120);
/// How long a write may wait for a miner that does not read (then it is dropped; what the pool
/// holds for it meanwhile is one batch of answers and the kernel's socket buffer).
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// At shutdown, how long a connection that has not subscribed yet may take to send its first
/// line (within the 5 s sessions get to end).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Consecutive unparseable lines tolerated before disconnecting.
const MAX_BAD_LINES: u32 = 20;
/// Answers queued for a miner slow to read before this session stops reading it too.
const MAX_UNWRITTEN: usize = 1 << 20;

mod handshake;
mod shares;
#[cfg(test)]
mod tests;
mod write;

pub struct Session {
    ctx: Arc<ServerCtx>,
    id: u64,
    peer: SocketAddr,
    address: Arc<str>,
    /// The mining core's state for this miner: jobs, difficulty, vardiff, extranonce1.
    channel: Channel,
    /// This session's own extranonce1 value, as held in the server's set.
    en1_key: u64,
    /// The whole extranonce1 (upstream prefix included), hex: sent at subscribe, logged per share.
    en1_hex: Arc<str>,
    extranonce_subscribed: bool,
    /// Proxy mode: the upstream changed under a miner that cannot take set_extranonce.
    must_reconnect: bool,
    subscribed: bool,
    authorized: bool,
    working: bool,
    agent: Arc<str>,
    /// Solo mode: the authorized address's payout script (its own coinbase).
    payout: Option<bitcoin::ScriptBuf>,
    last_notify: Instant,
    /// Lines to send, written once per batch of lines read.
    out: Vec<u8>,
    bad_lines: u32,
    /// When the session began: the channel's clock origin.
    born: Instant,
    /// When it last sent a share (or began): `dropidle` counts from here.
    last_share: Instant,
    /// Names authorized on this connection (serve::guard::NAMES_PER_SV1_CONNECTION).
    names: u32,
    /// Banning's share counts (serve::guard); `banned`: past the threshold, close and ban.
    score: BanScore,
    banned: bool,
    /// A share's effects (serve::outbox): a found block leaves at once; upstream shares and
    /// statistics after the batch of lines (the per-line code never awaits); and whether the
    /// share log's backlog is over its cap (after replying, wait for room before reading on).
    outbox: Outbox,
}

/// Why the session ended, for the log.
enum End {
    Closed,
    Shutdown,
    Kick(String),
}

fn now_unix() -> (u64, u32) {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

impl Session {
    /// A session for the miner at `peer` (its own address, after any PROXY header), opened with
    /// `params` (its listener's difficulties).
    pub fn new(ctx: Arc<ServerCtx>, id: u64, peer: SocketAddr, en1_key: u64, params: ChannelParams) -> Session {
        let n1 = ctx.params.nonce1_len;
        let channel = Channel::new(params, &en1_key.to_be_bytes()[8 - n1..], 0);
        let en1_hex: Arc<str> = hex::encode(channel.en1()).into();
        Session {
            ctx,
            id,
            peer,
            address: peer.ip().to_string().into(),
            channel,
            en1_key,
            en1_hex,
            extranonce_subscribed: false,
            must_reconnect: false,
            subscribed: false,
            authorized: false,
            working: false,
            agent: "".into(),
            payout: None,
            last_notify: Instant::now(),
            out: Vec::new(),
            bad_lines: 0,
            born: Instant::now(),
            last_share: Instant::now(),
            names: 0,
            score: BanScore::default(),
            banned: false,
            outbox: Outbox::default(),
        }
    }

    /// The work this session mines from the published `base`: itself, or in solo mode the
    /// authorized address's own (its coinbase pays that address).
    fn work_of(&self, base: Option<Arc<Work>>) -> Option<Arc<Work>> {
        let base = base?;
        match (&self.ctx.params.solo, &self.payout) {
            (Some(solo), Some(script)) => solo.work_for(&base, script),
            _ => Some(base),
        }
    }

    /// The current work for this session (see [`Session::work_of`]).
    fn current_work(&self) -> Option<Arc<Work>> {
        let base = self.ctx.work.borrow().clone();
        self.work_of(base)
    }

    /// Microseconds since the session began (the channel's time).
    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    fn worker(&self) -> &str {
        self.channel.worker()
    }

    /// A difficulty change the channel decided: set_difficulty now; the caller sends work under
    /// a new id.
    fn send_difficulty(&mut self, r: Option<Retarget>) {
        if let Some(r) = r {
            tracing::debug!(
                peer = %self.peer, client = self.id, worker = %Esc(self.worker()),
                "vardiff: difficulty -> {} (rate {:.4e} diff-1 shares/s)",
                r.new, r.rate as f64 / crate::difficulty::SCALE as f64
            );
        }
        self.out.extend_from_slice(proto::set_difficulty_line(self.channel.difficulty()).as_bytes());
    }

    /// Before sending work: lowers a session that has been quiet for a retarget interval.
    /// Returns true when the difficulty changed (the work must then go out under a new id).
    fn idle_check(&mut self) -> bool {
        let network = self.ctx.network_diff();
        match self.channel.idle_check(self.now_us(), network) {
            Some(r) => {
                self.send_difficulty(Some(r));
                true
            }
            None => false,
        }
    }

    /// Serves the connection until it closes, misbehaves or the server shuts down.
    /// Boxed: the session's state lives once on the heap, not twice inside the task's future.
    pub async fn run(mut self: Box<Self>, mut stream: MinerStream) {
        let mut reader = LineReader::new(proto::MAX_LINE);
        let mut work_rx = self.ctx.work.clone();
        // Work already published is sent by `maybe_start`; only later changes come through here.
        let _ = work_rx.borrow_and_update();
        // The long-lived waits are made once, not once per batch of lines: registering and
        // dropping a waiter on the shared work and shutdown channels (and a timer) for every
        // share would contend between all sessions.
        let mut work_wait = Box::pin(next_work(work_rx));
        let mut shutdown = self.ctx.shutdown.clone();
        let shutdown_wait = async move {
            let _ = shutdown.changed().await;
        };
        tokio::pin!(shutdown_wait);
        let started = Instant::now();
        let keepalive = Duration::from_secs(self.ctx.params.keepalive_secs);
        let timer = tokio::time::sleep_until(started + HANDSHAKE_DEADLINE);
        tokio::pin!(timer);
        let dropidle = Duration::from_micros(self.ctx.guard.policy.dropidle_us);
        let end = loop {
            let tick = if self.working { self.last_notify + keepalive } else { started + HANDSHAKE_DEADLINE };
            // ckpool's dropidle: no share for that long, from the connection's start.
            let idle_at = (!dropidle.is_zero()).then(|| self.last_share + dropidle);
            let tick = idle_at.map_or(tick, |at| tick.min(at));
            // The deadline only moves later as work is sent: the timer is re-armed when it fires
            // early, and moved here only when it must fire sooner.
            if tick < timer.deadline() {
                timer.as_mut().reset(tick);
            }
            let mut kicked = None;
            let mut outbound_waiting = false;
            tokio::select! {
                // Wait for data without holding a read buffer: an idle miner keeps none.
                read = stream.read_into(&mut reader) => {
                    match read {
                        Ok(0) => break End::Closed,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => break End::Kick(format!("read error: {e}")),
                    }
                    kicked = self.handle_lines(&mut reader).err();
                    // Blocks, upstream shares and statistics leave now if their channels have
                    // room; if one is full, the waiting is done after the miner has its answers.
                    self.close_tally();
                    outbound_waiting = !self.outbox.try_flush(&self.ctx);
                }
                (mut rx, changed) = &mut work_wait, if self.working => {
                    if changed.is_err() { break End::Shutdown; }
                    let w = rx.borrow_and_update().clone();
                    work_wait = Box::pin(next_work(rx));
                    let w = self.work_of(w);
                    if let Some(w) = w { let fresh = self.idle_check(); self.send_work(&w, fresh); }
                }
                _ = &mut timer => {
                    if Instant::now() < tick {
                        timer.as_mut().reset(tick);
                        continue;
                    }
                    if idle_at.is_some_and(|at| Instant::now() >= at) {
                        self.ctx.guard.counts.dropped_idle.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        break End::Kick(format!("no share for {} s (dropidle)", dropidle.as_secs()));
                    }
                    if !self.working {
                        break End::Kick("did not subscribe and authorize within 120 s".into());
                    }
                    self.keepalive();
                    timer.as_mut().reset(self.last_notify + keepalive);
                }
                _ = &mut shutdown_wait => {
                    // What has arrived is answered before closing, and a connection that has
                    // not subscribed yet (accepted just before a stop or a handover) gets
                    // SHUTDOWN_GRACE for its first line: it is answered, never dropped unanswered.
                    let grace = if self.subscribed { Duration::ZERO } else { SHUTDOWN_GRACE };
                    // Boxed: a timer and a read, taken once at shutdown, kept out of the task.
                    let first = Box::pin(tokio::time::timeout(grace, stream.read_into(&mut reader)));
                    if let Ok(Ok(n)) = first.await {
                        if n > 0 {
                            let _ = self.handle_lines(&mut reader);
                            let _ = self.write_out(&mut stream, &mut reader).await;
                        }
                    }
                    break End::Shutdown;
                }
            }
            if let Err(end) = self.write_out(&mut stream, &mut reader).await {
                break end;
            }
            if outbound_waiting {
                // A channel was full (the block submitter, the upstream task or statistics):
                // the miner has its answers; this session waits, in a boxed future, before reading on.
                self.outbox.flush(&self.ctx).await;
            }
            if let Some(why) = kicked {
                break End::Kick(why);
            }
            if self.outbox.take_log_full() {
                // The miner has its answers; it waits here, not for them, until the disk catches up.
                // Boxed: rare (a full disk), so an idle session's task does not carry it.
                let room = Box::pin(self.ctx.shares.wait_for_room());
                tokio::select! {
                    _ = room => {}
                    _ = &mut shutdown_wait => break End::Shutdown,
                }
            }
        };
        let kicked = matches!(end, End::Kick(_));
        self.finish(end).await;
        if kicked {
            // Our last answer (e.g. "Line too long") must reach the miner: closing with its
            // unread bytes still queued would send a reset that can destroy that answer.
            tokio::spawn(linger(stream));
        }
    }

    /// Writes what the last batch produced, in one write. A miner slow to read does not stop
    /// this session from reading ([`Session::write_reading`], [`Session::write_reading_tls`]).
    async fn write_out(&mut self, stream: &mut MinerStream, reader: &mut LineReader) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        // The common case: a plain socket takes the whole batch at once, without a wait.
        let mut sent = 0;
        if let MinerStream::Plain(s) = stream {
            match s.try_write(&self.out) {
                Ok(n) => sent = n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(End::Kick(format!("write error: {e}"))),
            }
        }
        if sent < self.out.len() {
            // A miner that does not read is dropped after WRITE_DEADLINE; the session keeps
            // reading its lines meanwhile (a block share behind a stalled write still leaves).
            // Boxed: the waiting state (over TLS, the stream's two halves too) is allocated only
            // when a write waits, so that an idle session's task does not carry it.
            let write = async {
                match stream {
                    MinerStream::Plain(s) => self.write_reading(s, reader, sent).await,
                    MinerStream::Tls(t) => self.write_reading_tls(t, reader).await,
                }
            };
            match Box::pin(tokio::time::timeout(WRITE_DEADLINE, write)).await {
                Ok(r) => r?,
                Err(_) => {
                    self.ctx.guard.counts.dropped_slow.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let secs = WRITE_DEADLINE.as_secs();
                    return Err(End::Kick(format!("not reading (no write progress in {secs} s)")));
                }
            }
        }
        if self.must_reconnect {
            return Err(End::Kick(
                "upstream changed; sent client.reconnect (miner did not subscribe to set_extranonce)".into(),
            ));
        }
        self.out.clear();
        // A few share answers fit in 512 bytes and keep their buffer; a notify or a pipelined
        // batch gives its buffer back, so an idle miner holds none.
        if self.out.capacity() > 512 {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Answers every line the last read completed (written once, after); `Err` disconnects.
    fn handle_lines(&mut self, reader: &mut LineReader) -> Result<(), String> {
        let mut result = Ok(());
        while let Some(line) = reader.buffered_line() {
            match line {
                Line::Data(range) => {
                    if let Err(why) = self.handle_line(reader.line(range)) {
                        result = Err(why);
                        break;
                    }
                }
                Line::TooLong => {
                    proto::push_error(&mut self.out, "null", code::OTHER, "Line too long");
                    result = Err(format!("sent a line over {} bytes", proto::MAX_LINE));
                    break;
                }
                Line::Eof => break,
            }
        }
        reader.release_if_drained();
        result
    }

    /// Quiet for a keepalive interval: the current job again, so that the miner keeps the
    /// connection (cgminer drops a pool after 90 s without work).
    fn keepalive(&mut self) {
        let w = self.current_work();
        if let Some(w) = w {
            let fresh = self.idle_check();
            if !self.send_work(&w, fresh) {
                if let Some(id) = self.channel.current_local_id(&w) {
                    w.push_notify(&mut self.out, id, false);
                }
            }
        }
        self.last_notify = Instant::now();
    }

    /// Logs why the session ended, frees its extranonce1 and reports it gone.
    async fn finish(mut self: Box<Self>, end: End) {
        match end {
            End::Closed if self.ctx.guard.log(LogKind::Close) => {
                tracing::info!(peer = %self.peer, client = self.id, worker = %Esc(self.worker()), "miner disconnected")
            }
            End::Kick(why) if self.ctx.guard.log(LogKind::Close) => {
                tracing::warn!(peer = %self.peer, client = self.id, worker = %Esc(self.worker()), "dropping miner: {}", Esc(&why))
            }
            _ => {}
        }
        self.ctx.enonces.release([self.en1_key]);
        if self.authorized {
            let (user, worker) = (self.channel.user().clone(), self.channel.worker().clone());
            self.close_tally();
            self.outbox.stat(StatEvent::Gone { user, worker });
        }
        self.flush_outbound().await;
    }

    fn reply(&mut self, id: &str, result: &str) {
        proto::push_result(&mut self.out, id, result);
    }

    fn error(&mut self, id: &str, code: i32, msg: &str) {
        proto::push_error(&mut self.out, id, code, msg);
    }

    /// Handles one line; `Err` disconnects with the reason.
    fn handle_line(&mut self, line: &[u8]) -> Result<(), String> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let req = match proto::parse_request(line) {
            Ok(r) => r,
            Err(e) => {
                self.bad_lines += 1;
                self.error("null", code::OTHER, &e.to_string());
                if self.bad_lines > MAX_BAD_LINES {
                    return Err(format!("{} unparseable lines in a row (last: {e})", self.bad_lines));
                }
                tracing::debug!(peer = %self.peer, "unparseable line: {}", Esc(&e.to_string()));
                return Ok(());
            }
        };
        self.bad_lines = 0;
        let id = proto::id_text(req.id);
        let method = &*req.method;
        match method {
            "mining.submit" => {
                self.on_submit(id, req.params);
                if self.banned {
                    self.ctx.guard.ban(self.peer.ip());
                    return Err(self.ctx.guard.ban_reason());
                }
            }
            "mining.subscribe" => self.on_subscribe(id, &req.params_value()),
            "mining.authorize" => self.on_authorize(id, &req.params_value()),
            "mining.configure" => self.on_configure(id, &req.params_value()),
            "mining.suggest_difficulty" | "mining.suggest_target" => self.on_suggest(method, &req.params_value()),
            "mining.extranonce.subscribe" => {
                self.extranonce_subscribed = true;
                if proto::wants_reply(req.id) {
                    self.reply(id, "true");
                }
            }
            "mining.multi_version" => {}
            other => {
                tracing::debug!(peer = %self.peer, "unknown method {:?}", Esc(other));
                if proto::wants_reply(req.id) {
                    self.error(id, code::OTHER, &format!("Method not supported: {other}"));
                }
            }
        }
        Ok(())
    }

    /// Starts work once subscribed and authorized: set_difficulty, then the current job.
    fn maybe_start(&mut self) {
        if self.working || !self.subscribed || !self.authorized {
            return;
        }
        self.working = true;
        self.send_difficulty(None);
        let w = self.current_work();
        if let Some(w) = w {
            self.send_work(&w, true);
        }
    }

    /// Queues the notify for `w`. `fresh_id` re-sends the same job under a new local id (after a
    /// difficulty change). Returns false when nothing was queued (the exact job was sent already).
    fn send_work(&mut self, w: &Arc<Work>, fresh_id: bool) -> bool {
        if self.subscribed && *w.en1_prefix != *self.channel.prefix() {
            // Proxy mode: a new upstream session, so a new extranonce1 for this miner.
            self.channel.switch_prefix(&w.en1_prefix);
            self.en1_hex = hex::encode(self.channel.en1()).into();
            if self.extranonce_subscribed {
                let p = json!([&*self.en1_hex, w.job.coinbase.nonce2_len]);
                self.out.extend_from_slice(proto::notification_line("mining.set_extranonce", &p).as_bytes());
            } else {
                self.out.extend_from_slice(proto::notification_line("client.reconnect", &json!([])).as_bytes());
                self.must_reconnect = true;
                return true;
            }
        }
        if let Some(allowed) = w.version_mask {
            // The upstream changed the mask it grants: miners that negotiated version rolling
            // are told before the job it applies to.
            let changed = self.channel.allow_version_mask(allowed);
            if let Some(m) = changed.filter(|_| self.channel.negotiated_version_rolling()) {
                let p = json!([format!("{m:08x}")]);
                self.out.extend_from_slice(proto::notification_line("mining.set_version_mask", &p).as_bytes());
            }
        }
        match self.channel.issue(w, fresh_id) {
            Issued::AlreadySent => false,
            Issued::Job { local_id, clean } => {
                w.push_notify(&mut self.out, local_id, clean);
                if clean {
                    w.note_notified(self.last_notify.into_std(), std::time::Instant::now());
                }
                self.last_notify = Instant::now();
                true
            }
        }
    }
}

/// A lingering close: FIN after the last answer, then the peer's remaining bytes are read and
/// dropped (at most 256 KiB, 2 s) so that the kernel does not answer them with a reset.
async fn linger(mut stream: MinerStream) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let mut buf = vec![0u8; 4096];
    let drain = async {
        let mut total = 0usize;
        while total < 256 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

/// Waits for the next published work, handing the receiver back with the result.
async fn next_work(
    mut rx: tokio::sync::watch::Receiver<Option<Arc<Work>>>,
) -> (tokio::sync::watch::Receiver<Option<Arc<Work>>>, Result<(), tokio::sync::watch::error::RecvError>) {
    let r = rx.changed().await;
    (rx, r)
}
