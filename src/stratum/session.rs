//! One miner connection: a task that owns its socket, buffer and state.
//!
//! Order rules (DESIGN.md, FIRMWARE.md): the first line sent answers the miner's first request;
//! work (set_difficulty, then notify) starts once the miner is subscribed and authorized;
//! suggest_difficulty, configure, extranonce.subscribe and unknown methods never disconnect;
//! only submits are answered with a bare `true`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::value::RawValue;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::lines::{Line, LineReader};
use super::proto::{self, code, Param, SubmitParams};
use super::vardiff::{Retarget, Vardiff};
use super::{BlockCandidate, ServerCtx, UpstreamShare, Work};
use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::log::sharelog::ShareLine;
use crate::log::stats::{ShareTally, StatEvent};
use crate::share::{self, Reject, Submit};

/// Jobs remembered per session for late submits.
const JOBS_KEPT: usize = 16;
/// A connection that has not subscribed and authorized by then is dropped.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(120);
/// Consecutive unparseable lines tolerated before disconnecting.
const MAX_BAD_LINES: u32 = 20;

/// A job as this session was given it: with the difficulty in force when it was issued.
/// (64 bytes: an idle miner holds one or two.)
struct SentJob {
    local_id: u64,
    /// The work it came from: the job, and in proxy mode the upstream job it re-issues.
    work: Arc<Work>,
    target: Target,
    diff: Difficulty,
}

pub struct Session {
    ctx: Arc<ServerCtx>,
    id: u64,
    peer: SocketAddr,
    address: Arc<str>,
    /// extranonce1: `prefix` (the upstream's, proxy mode only) then this session's own bytes.
    en1: Vec<u8>,
    en1_key: u64,
    en1_hex: Arc<str>,
    prefix: Arc<[u8]>,
    extranonce_subscribed: bool,
    /// Proxy mode: the upstream changed under a miner that cannot take set_extranonce.
    must_reconnect: bool,
    subscribed: bool,
    authorized: bool,
    working: bool,
    agent: Arc<str>,
    username: Arc<str>,
    workername: Arc<str>,
    diff: Difficulty,
    suggested: Option<Difficulty>,
    version_mask: u32,
    jobs: VecDeque<SentJob>,
    rev: u8,
    last_prev: Option<[u8; 32]>,
    last_notify: Instant,
    /// Lines to send, written once per batch of lines read.
    out: Vec<u8>,
    bad_lines: u32,
    /// When the session began: vardiff's clock origin.
    born: Instant,
    vardiff: Vardiff,
    /// Statistics events queued while handling a batch of lines, sent (awaited) after it.
    stats_out: Vec<StatEvent>,
    /// Shares judged since the last statistics report (one event per batch, not per share).
    tally: ShareTally,
    /// The share log's backlog is over its cap: after replying, wait for room before reading on.
    log_full: bool,
    /// Found blocks and shares for the upstream pool, sent after the batch of lines that found
    /// them (so that the per-line code never awaits, and the task stays small).
    blocks_out: Vec<BlockCandidate>,
    upstream_out: Vec<UpstreamShare>,
    /// The jobs of the previous block dropped at the last new block: their local ids, height and
    /// the difficulty they were sent at, so that a late share on one is still logged (as stale).
    dropped: Option<Dropped>,
}

#[derive(Debug, Clone, Copy)]
struct Dropped {
    first_local_id: u64,
    last_local_id: u64,
    height: u32,
    diff: Difficulty,
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
    pub fn new(ctx: Arc<ServerCtx>, id: u64, peer: SocketAddr, en1_key: u64) -> Session {
        let n1 = ctx.params.nonce1_len;
        let en1 = en1_key.to_be_bytes()[8 - n1..].to_vec();
        let en1_hex: Arc<str> = hex::encode(&en1).into();
        let diff = ctx.clamp(ctx.params.startdiff);
        let version_mask = ctx.params.version_mask;
        let vardiff = Vardiff::new(ctx.params.vardiff, 0);
        Session {
            ctx,
            id,
            peer,
            address: peer.ip().to_string().into(),
            en1,
            en1_key,
            en1_hex,
            prefix: Arc::from(&[][..]),
            extranonce_subscribed: false,
            must_reconnect: false,
            subscribed: false,
            authorized: false,
            working: false,
            agent: "".into(),
            username: "".into(),
            workername: "".into(),
            diff,
            suggested: None,
            version_mask,
            // Grows with the jobs sent (an idle miner holds one or two): no 16-slot block up front.
            jobs: VecDeque::new(),
            rev: 0,
            last_prev: None,
            last_notify: Instant::now(),
            out: Vec::new(),
            bad_lines: 0,
            born: Instant::now(),
            vardiff,
            stats_out: Vec::new(),
            tally: ShareTally::default(),
            log_full: false,
            blocks_out: Vec::new(),
            upstream_out: Vec::new(),
            dropped: None,
        }
    }

    /// Microseconds since the session began (vardiff's time).
    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    /// Queues the shares tallied so far as one statistics event for the current worker name.
    fn close_tally(&mut self) {
        if !self.tally.is_empty() {
            let tally = std::mem::take(&mut self.tally);
            self.stats_out.push(StatEvent::Shares {
                user: self.username.clone(),
                worker: self.workername.clone(),
                tally,
            });
        }
    }

    /// Sends what the last batch of lines produced: found blocks first, then shares for the
    /// upstream pool, then statistics. A full channel slows this miner; nothing is dropped.
    async fn flush_outbound(&mut self) {
        self.close_tally();
        if !self.try_flush_outbound() {
            // Rare: a channel is full. Wait in a separate allocation so that every session's
            // task does not carry the waiting state.
            Box::pin(self.flush_outbound_waiting()).await;
        }
    }

    /// Sends without waiting; false when a channel was full (what is left stays queued, in order).
    fn try_flush_outbound(&mut self) -> bool {
        try_send_all(&self.ctx.blocks, &mut self.blocks_out, "block submitter")
            && self.ctx.upstream.as_ref().is_none_or(|tx| try_send_all(tx, &mut self.upstream_out, "upstream task"))
            && try_send_all(&self.ctx.stats, &mut self.stats_out, "stats task")
    }

    async fn flush_outbound_waiting(&mut self) {
        for cand in self.blocks_out.drain(..) {
            let hash = cand.hash;
            if self.ctx.blocks.send(cand).await.is_err() {
                tracing::error!("block submitter is gone; block {} not submitted", hex::encode_rev(&hash));
            }
        }
        if let Some(tx) = &self.ctx.upstream {
            for share in self.upstream_out.drain(..) {
                if tx.send(share).await.is_err() {
                    tracing::error!("upstream task is gone; share from {} not forwarded", self.workername);
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

    /// Takes a vardiff decision: set_difficulty now; the caller sends work under a new id.
    fn take_retarget(&mut self, r: Retarget) {
        tracing::debug!(
            peer = %self.peer, client = self.id, worker = %self.workername,
            "vardiff: difficulty {} -> {} (rate {:.4e} diff-1 shares/s)",
            self.diff, r.new, r.rate as f64 / crate::difficulty::SCALE as f64
        );
        self.diff = r.new;
        self.out.extend_from_slice(proto::set_difficulty_line(self.diff).as_bytes());
        self.rev = self.rev.wrapping_add(1);
    }

    /// Before sending work: lowers a session that has been quiet for a retarget interval.
    /// Returns true when the difficulty changed (the work must then go out under a new id).
    fn idle_check(&mut self) -> bool {
        let lim = self.ctx.limits(self.suggested);
        match self.vardiff.on_idle(self.now_us(), self.diff, &lim) {
            Some(r) => {
                self.take_retarget(r);
                true
            }
            None => false,
        }
    }

    /// Serves the connection until it closes, misbehaves or the server shuts down.
    /// Boxed: the session's state lives once on the heap, not twice inside the task's future.
    pub async fn run(mut self: Box<Self>, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
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
        let end = loop {
            let tick = if self.working { self.last_notify + keepalive } else { started + HANDSHAKE_DEADLINE };
            // The deadline only moves later as work is sent: the timer is re-armed when it fires
            // early, and moved here only when it must fire sooner.
            if tick < timer.deadline() {
                timer.as_mut().reset(tick);
            }
            let mut kicked = None;
            let mut outbound_waiting = false;
            tokio::select! {
                // Wait for data without holding a read buffer: an idle miner keeps none.
                ready = stream.readable() => {
                    if let Err(e) = ready {
                        break End::Kick(format!("read error: {e}"));
                    }
                    match reader.read_ready(&stream) {
                        Ok(0) => break End::Closed,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => break End::Kick(format!("read error: {e}")),
                    }
                    // Answer every line this read completed, then write once.
                    while let Some(line) = reader.buffered_line() {
                        match line {
                            Line::Data(range) => {
                                if let Err(why) = self.handle_line(reader.line(range)) {
                                    kicked = Some(why);
                                    break;
                                }
                            }
                            Line::TooLong => {
                                proto::push_error(&mut self.out, "null", code::OTHER, "Line too long");
                                kicked = Some(format!("sent a line over {} bytes", proto::MAX_LINE));
                                break;
                            }
                            Line::Eof => break,
                        }
                    }
                    reader.release_if_drained();
                    // Blocks, upstream shares and statistics leave now if their channels have
                    // room; if one is full, the waiting is done after the miner has its answers.
                    self.close_tally();
                    outbound_waiting = !self.try_flush_outbound();
                }
                (mut rx, changed) = &mut work_wait, if self.working => {
                    if changed.is_err() { break End::Shutdown; }
                    let w = rx.borrow_and_update().clone();
                    work_wait = Box::pin(next_work(rx));
                    if let Some(w) = w { let fresh = self.idle_check(); self.send_work(&w, fresh); }
                }
                _ = &mut timer => {
                    if Instant::now() < tick {
                        timer.as_mut().reset(tick);
                        continue;
                    }
                    if !self.working {
                        break End::Kick("did not subscribe and authorize within 120 s".into());
                    }
                    // Quiet for `keepalive`: the current job again, so that the miner keeps the connection.
                    let w = self.ctx.work.borrow().clone();
                    if let Some(w) = w {
                        let fresh = self.idle_check();
                        if !self.send_work(&w, fresh) {
                            self.resend_current(&w);
                        }
                    }
                    self.last_notify = Instant::now();
                    timer.as_mut().reset(self.last_notify + keepalive);
                }
                _ = &mut shutdown_wait => break End::Shutdown,
            }
            if !self.out.is_empty() {
                if let Err(e) = stream.write_all(&self.out).await {
                    break End::Kick(format!("write error: {e}"));
                }
                if self.must_reconnect {
                    break End::Kick(
                        "upstream changed; sent client.reconnect (miner did not subscribe to set_extranonce)".into(),
                    );
                }
                self.out.clear();
                // A few share answers fit in 512 bytes and keep their buffer; a notify or a
                // pipelined batch gives its buffer back, so an idle miner holds none.
                if self.out.capacity() > 512 {
                    self.out = Vec::new();
                }
            }
            if outbound_waiting {
                // A channel was full (the block submitter, the upstream task or statistics):
                // the miner has its answers; this session waits, in a boxed future, before reading on.
                Box::pin(self.flush_outbound_waiting()).await;
            }
            if let Some(why) = kicked {
                break End::Kick(why);
            }
            if std::mem::take(&mut self.log_full) {
                // The miner has its answers; it waits here, not for them, until the disk catches up.
                let room = self.ctx.shares.wait_for_room();
                tokio::select! {
                    _ = room => {}
                    _ = &mut shutdown_wait => break End::Shutdown,
                }
            }
        };
        match end {
            End::Closed => {
                tracing::info!(peer = %self.peer, client = self.id, worker = %self.workername, "miner disconnected")
            }
            End::Shutdown => {}
            End::Kick(why) => {
                tracing::warn!(peer = %self.peer, client = self.id, worker = %self.workername, "dropping miner: {why}")
            }
        }
        self.ctx.enonces.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.en1_key);
        if self.authorized {
            self.stats_out.push(StatEvent::Gone { user: self.username.clone(), worker: self.workername.clone() });
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
                tracing::debug!(peer = %self.peer, "unparseable line: {e}");
                return Ok(());
            }
        };
        self.bad_lines = 0;
        let id = proto::id_text(req.id);
        let method = &*req.method;
        match method {
            "mining.submit" => self.on_submit(id, req.params),
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
                tracing::debug!(peer = %self.peer, "unknown method {other:?}");
                if proto::wants_reply(req.id) {
                    self.error(id, code::OTHER, &format!("Method not supported: {other}"));
                }
            }
        }
        Ok(())
    }

    fn on_subscribe(&mut self, id: &str, params: &Value) {
        if let Some(agent) = proto::str_param(params, 0) {
            self.agent = agent.chars().take(128).collect::<String>().into();
        }
        let prefix = self.ctx.work.borrow().as_ref().map(|w| w.en1_prefix.clone());
        if let Some(p) = prefix {
            self.set_prefix(p);
        }
        // Session resume: a miner reconnecting with its old session id gets its extranonce1 back
        // when no live session holds it.
        if !self.subscribed {
            let old = proto::str_param(params, 1)
                .and_then(|s| hex::decode(s).ok())
                .filter(|o| o.starts_with(&self.prefix))
                .map(|o| o[self.prefix.len()..].to_vec());
            if let Some(old) = old {
                if old.len() == self.ctx.params.nonce1_len && old != self.en1[self.prefix.len()..] {
                    let mut key_bytes = [0u8; 8];
                    key_bytes[8 - old.len()..].copy_from_slice(&old);
                    let key = u64::from_be_bytes(key_bytes);
                    let mut set = self.ctx.enonces.lock().unwrap_or_else(|p| p.into_inner());
                    if set.insert(key) {
                        set.remove(&self.en1_key);
                        self.en1_key = key;
                        self.en1 = [&self.prefix[..], &old].concat();
                        self.en1_hex = hex::encode(&self.en1).into();
                    }
                }
            }
        }
        self.subscribed = true;
        let result = json!([
            [["mining.set_difficulty", &*self.en1_hex], ["mining.notify", &*self.en1_hex]],
            &*self.en1_hex,
            self.ctx_nonce2_len()
        ]);
        self.reply(id, &result.to_string());
        self.maybe_start();
    }

    /// Puts `prefix` (the upstream's extranonce1) before this session's own bytes.
    fn set_prefix(&mut self, prefix: Arc<[u8]>) {
        let own = self.en1[self.prefix.len()..].to_vec();
        self.en1 = [&prefix[..], &own].concat();
        self.en1_hex = hex::encode(&self.en1).into();
        self.prefix = prefix;
    }

    fn ctx_nonce2_len(&self) -> usize {
        self.ctx.work.borrow().as_ref().map(|w| w.job.coinbase.nonce2_len).unwrap_or(8)
    }

    fn on_authorize(&mut self, id: &str, params: &Value) {
        let Some(user) = proto::str_param(params, 0).filter(|u| !u.is_empty()) else {
            self.error(id, code::OTHER, "Invalid params: expected [\"username\", \"password\"]");
            return;
        };
        let user: String = user.chars().take(256).collect();
        let base = user.split(['.', '_']).next().unwrap_or(&user).to_string();
        // Shares so far belong to the name they were sent under.
        self.close_tally();
        if self.authorized && *self.workername != *user {
            self.stats_out.push(StatEvent::Gone { user: self.username.clone(), worker: self.workername.clone() });
        }
        let renamed = !self.authorized || *self.workername != *user;
        self.workername = user.clone().into();
        self.username = base.into();
        if renamed {
            self.stats_out.push(StatEvent::Authorized { user: self.username.clone(), worker: self.workername.clone() });
        }
        // A "d=N" / "+N"-free password is ignored; "d=0.001" asks for a start difficulty.
        if let Some(pass) = proto::str_param(params, 1) {
            if let Some(d) =
                pass.split(',').find_map(|kv| kv.trim().strip_prefix("d=")).and_then(|v| v.parse::<Difficulty>().ok())
            {
                self.suggested = Some(d);
                self.diff = self.ctx.clamp(d);
            }
        }
        if !self.authorized {
            tracing::info!(peer = %self.peer, client = self.id, worker = %self.workername, agent = %self.agent, "miner authorized");
        }
        self.authorized = true;
        self.reply(id, "true");
        self.maybe_start();
    }

    fn on_configure(&mut self, id: &str, params: &Value) {
        let exts: Vec<&str> = params
            .get(0)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let opts = params.get(1).cloned().unwrap_or(Value::Null);
        let mut result = serde_json::Map::new();
        for ext in exts {
            match ext {
                "version-rolling" => {
                    let asked = opts
                        .get("version-rolling.mask")
                        .and_then(Value::as_str)
                        .and_then(|m| hex::parse_u32_be(m).ok())
                        .unwrap_or(u32::MAX);
                    let mask = asked & self.ctx.params.version_mask;
                    self.version_mask = mask;
                    result.insert("version-rolling".into(), Value::Bool(true));
                    result.insert("version-rolling.mask".into(), Value::String(format!("{mask:08x}")));
                }
                "minimum-difficulty" => {
                    if let Some(d) = opts.get("minimum-difficulty.value").and_then(|v| Difficulty::from_json(v).ok()) {
                        self.apply_suggestion(d);
                    }
                    result.insert("minimum-difficulty".into(), Value::Bool(true));
                }
                "subscribe-extranonce" => {
                    result.insert("subscribe-extranonce".into(), Value::Bool(true));
                }
                other => {
                    result.insert(other.to_string(), Value::Bool(false));
                }
            }
        }
        self.reply(id, &Value::Object(result).to_string());
    }

    fn on_suggest(&mut self, method: &str, params: &Value) {
        let d = if method == "mining.suggest_target" {
            proto::str_param(params, 0).and_then(|t| {
                let mut be = [0u8; 32];
                hex::decode_into(t, &mut be).ok()?;
                Some(Difficulty::from_target(&Target::from_u256(ruint::aliases::U256::from_be_bytes(be))))
            })
        } else {
            proto::suggested_difficulty(params)
        };
        match d {
            Some(d) if !d.is_zero() => self.apply_suggestion(d),
            _ => tracing::debug!(peer = %self.peer, "ignoring {method} with params {params}"),
        }
    }

    /// Takes a miner's difficulty wish (within mindiff..maxdiff); when work is flowing, the new
    /// difficulty is sent followed by the current job under a new id.
    fn apply_suggestion(&mut self, d: Difficulty) {
        self.suggested = Some(d);
        let new = self.ctx.clamp(d);
        if new == self.diff {
            return;
        }
        self.diff = new;
        let now = self.now_us();
        self.vardiff.reset(now);
        if self.working {
            let w = self.ctx.work.borrow().clone();
            if let Some(w) = w {
                self.out.extend_from_slice(proto::set_difficulty_line(self.diff).as_bytes());
                self.rev = self.rev.wrapping_add(1);
                self.send_work(&w, true);
            }
        }
    }

    /// Starts work once subscribed and authorized: set_difficulty, then the current job.
    fn maybe_start(&mut self) {
        if self.working || !self.subscribed || !self.authorized {
            return;
        }
        self.working = true;
        self.out.extend_from_slice(proto::set_difficulty_line(self.diff).as_bytes());
        let w = self.ctx.work.borrow().clone();
        if let Some(w) = w {
            self.send_work(&w, true);
        }
    }

    /// Queues the notify for `w`. `fresh_id` re-sends the same job under a new local id (after a
    /// difficulty change). clean_jobs is set whenever the previous block changed.
    /// Returns false when nothing was queued (the exact job was sent already).
    fn send_work(&mut self, w: &Arc<Work>, fresh_id: bool) -> bool {
        if !fresh_id
            && self.jobs.back().is_some_and(|s| s.work.job.id == w.job.id && s.local_id & 0xff == self.rev as u64)
        {
            return false; // this exact job was already sent
        }
        if self.subscribed && *w.en1_prefix != *self.prefix {
            // Proxy mode: a new upstream session, so a new extranonce1 for this miner.
            self.set_prefix(w.en1_prefix.clone());
            // Shares still on their way for the old upstream's jobs are answered stale and
            // logged against their job, as at a new block (none missing from the share log).
            if let (Some(first), Some(last)) = (self.jobs.front(), self.jobs.back()) {
                self.dropped = Some(Dropped {
                    first_local_id: first.local_id,
                    last_local_id: last.local_id,
                    height: last.work.job.height,
                    diff: last.diff,
                });
            }
            self.jobs.clear();
            if self.extranonce_subscribed {
                let p = json!([&*self.en1_hex, w.job.coinbase.nonce2_len]);
                self.out.extend_from_slice(proto::notification_line("mining.set_extranonce", &p).as_bytes());
            } else {
                self.out.extend_from_slice(proto::notification_line("client.reconnect", &json!([])).as_bytes());
                self.must_reconnect = true;
                return true;
            }
        }
        let prev_changed = self.last_prev != Some(w.job.prev_hash);
        let clean = prev_changed || (w.job.clean && self.jobs.back().is_none_or(|s| s.work.job.id != w.job.id));
        let local_id = (w.job.id << 8) | self.rev as u64;
        w.push_notify(&mut self.out, local_id, clean);
        if prev_changed && self.jobs.len() > 1 {
            // A new block: of the old block's jobs only the last is kept (late shares on it are
            // logged as stale against it); the rest, and their memory, go.
            let n = self.jobs.len() - 1;
            // The remembered range covers only the previous block's jobs (one height).
            let old_prev = self.jobs[n - 1].work.job.prev_hash;
            let from = self.jobs.iter().take(n).position(|j| j.work.job.prev_hash == old_prev).unwrap_or(n - 1);
            let (first, last) = (&self.jobs[from], &self.jobs[n - 1]);
            self.dropped = Some(Dropped {
                first_local_id: first.local_id,
                last_local_id: last.local_id,
                height: last.work.job.height,
                diff: last.diff,
            });
            self.jobs.drain(..n);
            self.jobs.shrink_to(4);
        }
        if self.jobs.len() == JOBS_KEPT {
            self.jobs.pop_front();
        }
        self.jobs.push_back(SentJob { local_id, work: w.clone(), target: self.diff.to_target(), diff: self.diff });
        self.last_prev = Some(w.job.prev_hash);
        self.last_notify = Instant::now();
        true
    }

    /// Sends the last job again as it was (same id, clean_jobs false): a keepalive.
    fn resend_current(&mut self, w: &Work) {
        if let Some(last) = self.jobs.back().filter(|s| s.work.job.id == w.job.id) {
            let id = last.local_id;
            w.push_notify(&mut self.out, id, false);
        }
    }

    fn on_submit(&mut self, id: &str, params: Option<&RawValue>) {
        if !self.subscribed {
            self.error(id, code::NOT_SUBSCRIBED, "Not subscribed");
            return;
        }
        if !self.authorized {
            self.error(id, code::UNAUTHORIZED, "Unauthorized worker");
            return;
        }
        let Some(params) = SubmitParams::parse(params) else {
            self.counted_reject(id, None, "Invalid params", code::OTHER);
            return;
        };
        let p = |i| params.str(i);
        let (Some(_worker), Some(job_id), Some(en2), Some(ntime), Some(nonce)) = (p(0), p(1), p(2), p(3), p(4)) else {
            self.counted_reject(id, None, "Invalid params", code::OTHER);
            return;
        };
        let version_bits = match params.get(5) {
            None | Some(Param::Null) => None,
            Some(Param::Str(s)) => Some(&**s),
            Some(Param::Other) => {
                self.counted_reject(id, None, "Invalid version bits", code::OTHER);
                return;
            }
        };
        let sub = Submit { job_id, extranonce2: en2, ntime, nonce, version_bits };
        let Some(idx) =
            u64::from_str_radix(job_id, 16).ok().and_then(|lid| self.jobs.iter().position(|s| s.local_id == lid))
        else {
            let lid = u64::from_str_radix(job_id, 16).ok().filter(|_| job_id.len() <= 16);
            let r = if lid.is_some() { Reject::Stale } else { Reject::UnknownJob };
            // A late share on a job of the previous block that was dropped at the new block:
            // logged as stale against that job, as if it were still kept.
            let dropped =
                self.dropped.filter(|d| lid.is_some_and(|l| (d.first_local_id..=d.last_local_id).contains(&l)));
            if let (Some(d), Some(l)) = (dropped, lid) {
                self.ctx.counters.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.tally.add(d.diff, Difficulty::ZERO, false);
                self.error(id, r.code(), &r.reason());
                self.log_share(l >> 8, d.height, &sub, d.diff, Difficulty::ZERO, None, Some(&r.reason()));
                return;
            }
            self.counted_reject(id, Some(&sub), &r.reason(), r.code());
            return;
        };
        let sent = &self.jobs[idx];
        let (target, diff, workinfoid, height) = (sent.target, sent.diff, sent.work.job.id, sent.work.job.height);
        // Work on a previous block: stale, and logged against its job; but a share this job has
        // already taken is a duplicate whenever it comes back (the answer does not depend on
        // whether the next block's work reached the session first).
        let result = if self.last_prev != Some(sent.work.job.prev_hash) {
            match share::check(&sent.work.job, &self.en1, &sub, self.version_mask, &target) {
                Err(Reject::Duplicate) => Err(Reject::Duplicate),
                _ => Err(Reject::Stale),
            }
        } else {
            share::check(&sent.work.job, &self.en1, &sub, self.version_mask, &target)
        };
        match result {
            Ok(acc) => {
                self.ctx.counters.add_accepted(diff);
                self.reply(id, "true");
                let sent = &self.jobs[idx];
                if let (Some(up), Some(_)) = (&sent.work.upstream, &self.ctx.upstream) {
                    // Shares meeting the upstream's difficulty go up; so does any block-meeting
                    // share (on test networks the block target can be easier than the pool's).
                    if acc.block || up.target.is_met_by(&acc.hash) {
                        let mut en2 = hex::encode(&self.en1[self.prefix.len()..]);
                        en2.push_str(sub.extranonce2);
                        let share = UpstreamShare {
                            job_id: up.job_id.clone(),
                            generation: up.generation,
                            extranonce2: en2,
                            ntime: format!("{:08x}", acc.ntime),
                            nonce: format!("{:08x}", acc.nonce),
                            version_bits: (acc.version != sent.work.job.version)
                                .then(|| format!("{:08x}", acc.version & self.version_mask)),
                            workername: self.workername.clone(),
                            difficulty: acc.difficulty,
                        };
                        // Queued for the upstream task; the miner never waits for the upstream's reply.
                        self.upstream_out.push(share);
                    }
                }
                if acc.block {
                    let job = self.jobs[idx].work.job.clone();
                    let cand = BlockCandidate {
                        job,
                        en1: self.en1.clone(),
                        en2: acc.extranonce2().to_vec(),
                        header: acc.header,
                        hash: acc.hash,
                        workername: self.workername.clone(),
                        username: self.username.clone(),
                        difficulty: acc.difficulty,
                    };
                    tracing::info!(worker = %self.workername, height, "block candidate {} from {}", hex::encode_rev(&acc.hash), self.workername);
                    self.blocks_out.push(cand);
                }
                self.tally.add(diff, acc.difficulty, true);
                self.log_share(workinfoid, height, &sub, diff, acc.difficulty, Some(&acc.hash), None);
                let lim = self.ctx.limits(self.suggested);
                if let Some(r) = self.vardiff.on_share(self.now_us(), diff, self.diff, &lim) {
                    // set_difficulty, then the current job under a new id.
                    self.take_retarget(r);
                    let w = self.ctx.work.borrow().clone();
                    if let Some(w) = w {
                        self.send_work(&w, true);
                    }
                }
            }
            Err(r) => {
                let (sdiff, hash) = match &r {
                    Reject::LowDifficulty { difficulty, hash } => (*difficulty, Some(hash)),
                    _ => (Difficulty::ZERO, None),
                };
                self.ctx.counters.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.tally.add(diff, sdiff, false);
                let reason = r.reason();
                self.error(id, r.code(), &reason);
                self.log_share(workinfoid, height, &sub, diff, sdiff, hash, Some(&reason));
            }
        }
    }

    /// A reject before any job was found (bad params, unknown job): counted, not logged.
    fn counted_reject(&mut self, id: &str, sub: Option<&Submit>, reason: &str, code: i32) {
        self.ctx.counters.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tally.add(self.diff, Difficulty::ZERO, false);
        self.error(id, code, reason);
        tracing::debug!(peer = %self.peer, worker = %self.workername, "share rejected: {reason} ({sub:?})");
    }

    /// Appends the share's line to the share log (formatted here, written by the log's thread).
    #[allow(clippy::too_many_arguments)]
    fn log_share(
        &mut self,
        workinfoid: u64,
        height: u32,
        sub: &Submit<'_>,
        diff: Difficulty,
        sdiff: Difficulty,
        hash: Option<&[u8; 32]>,
        reject: Option<&str>,
    ) {
        if !self.ctx.params.log_shares {
            return;
        }
        let line = ShareLine {
            workinfoid,
            clientid: self.id,
            enonce1: &self.en1_hex,
            nonce2: sub.extranonce2,
            nonce: sub.nonce,
            ntime: sub.ntime,
            diff,
            sdiff,
            hash,
            result: reject.is_none(),
            reject_reason: reject,
            createdate: now_unix(),
            workername: &self.workername,
            username: &self.username,
            address: &self.address,
            agent: &self.agent,
        };
        if self.ctx.shares.append(height, workinfoid, &line) {
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

/// Waits for the next published work, handing the receiver back with the result.
async fn next_work(
    mut rx: tokio::sync::watch::Receiver<Option<Arc<Work>>>,
) -> (tokio::sync::watch::Receiver<Option<Arc<Work>>>, Result<(), tokio::sync::watch::error::RecvError>) {
    let r = rx.changed().await;
    (rx, r)
}
