//! One Job Declaration connection: SetupConnection (job declaration, full-template mode),
//! tokens, declarations checked and answered, missing transactions asked for, solutions pushed.
//! Every refusal is the protocol's error code to the client and one line in the operator log.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use binary_sv2::{Seq064K, Str0255, B0255, B064K};
use common_messages_sv2::{Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess};
use job_declaration_sv2::{
    AllocateMiningJobToken, AllocateMiningJobTokenSuccess, DeclareMiningJob, DeclareMiningJobError,
    DeclareMiningJobSuccess, ProvideMissingTransactions, ProvideMissingTransactionsSuccess, PushSolution,
};
use parsers_sv2::{AnyMessage, CommonMessages, JobDeclaration};
use tokio::io::{AsyncRead, AsyncWrite};

use super::known::{Found, Provided, TemplateIndex};
use super::limits::{self, Bucket};
use super::Jds;
use crate::log::escape::Esc;
use crate::log::ratelimit::LogKind;
use crate::serve::ServerCtx;
use crate::sv2::transport::{FrameReader, FrameWriter, ReadReady, TransportError};
use crate::work::declared::{DeclaredCoinbase, DeclaredJob, Tip};
use crate::work::TemplateTx;

/// SetupConnection flag of the job declaration protocol: the client declares full templates.
const DECLARE_TX_DATA: u32 = 0b1;
const VERSION: u16 = 2;
/// A connection that has not set up by then is dropped.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// A declaration as the server keeps it while its missing transactions are asked for.
struct Declaration {
    request_id: u32,
    token: u64,
    /// The user identifier the token was allocated to.
    user: Arc<str>,
    version: u32,
    coinbase: DeclaredCoinbase,
    wtxids: Vec<[u8; 32]>,
    /// When it was asked for missing transactions (microseconds since the connection began).
    asked_at: u64,
    /// The positions asked for.
    asked: Vec<u16>,
}

/// Why a declaration is refused: the code the client gets and what the log says.
struct Refusal {
    code: &'static str,
    why: String,
}

fn refuse(code: &'static str, why: impl Into<String>) -> Refusal {
    Refusal { code, why: why.into() }
}

enum End {
    Closed,
    Shutdown,
    Refuse(String),
}

pub struct JdsSession {
    jds: Arc<Jds>,
    ctx: Arc<ServerCtx>,
    peer: SocketAddr,
    id: u64,
    setup: bool,
    born: Instant,
    /// Tokens allocated and not yet declared with, with the user they were allocated to.
    tokens: VecDeque<(u64, Arc<str>)>,
    /// Tokens of the jobs this connection declared (newest last), for PushSolution.
    own: VecDeque<u64>,
    declare: Bucket,
    pending: Option<Declaration>,
    provided: Provided,
    /// The previous block the provided transactions were for (dropped on a new one).
    provided_tip: [u8; 32],
    index: Option<Arc<TemplateIndex>>,
}

impl JdsSession {
    pub fn new(jds: Arc<Jds>, ctx: Arc<ServerCtx>, peer: SocketAddr, id: u64) -> JdsSession {
        JdsSession {
            jds,
            ctx,
            peer,
            id,
            setup: false,
            born: Instant::now(),
            tokens: VecDeque::new(),
            own: VecDeque::new(),
            declare: Bucket::new(limits::DECLARE_BURST, limits::DECLARE_PER_MINUTE, 0),
            pending: None,
            provided: Provided::default(),
            provided_tip: [0; 32],
            index: None,
        }
    }

    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    pub async fn run<R, W>(mut self, mut rd: FrameReader<R>, mut wr: FrameWriter<W>)
    where
        R: AsyncRead + ReadReady + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut shutdown = self.ctx.shutdown.clone();
        let setup_deadline = tokio::time::sleep(SETUP_DEADLINE);
        tokio::pin!(setup_deadline);
        let end = loop {
            let wait_missing = self.pending.as_ref().map(|p| {
                let left = (p.asked_at + limits::MISSING_TXS_WAIT_US).saturating_sub(self.now_us());
                tokio::time::Instant::now() + Duration::from_micros(left)
            });
            let step = tokio::select! {
                f = rd.read_frame() => match f {
                    Ok(mut frame) => {
                        let msg_type = frame.msg_type();
                        match frame.message() {
                            Ok(msg) => self.on_message(msg, &mut wr).await,
                            Err(e) => Err(End::Refuse(format!("unreadable message (type 0x{msg_type:02x}): {e:?}"))),
                        }
                    }
                    Err(TransportError::Closed) => Err(End::Closed),
                    Err(e) => Err(End::Refuse(e.to_string())),
                },
                _ = shutdown.changed() => Err(End::Shutdown),
                _ = &mut setup_deadline, if !self.setup => {
                    Err(End::Refuse(format!("no SetupConnection within {}s", SETUP_DEADLINE.as_secs())))
                }
                _ = tokio::time::sleep_until(wait_missing.unwrap_or_else(tokio::time::Instant::now)), if wait_missing.is_some() => {
                    if let Some(p) = self.pending.take() {
                        let r = refuse("missing-txs", format!(
                            "{} missing transaction(s) not provided within {} s",
                            p.asked.len(),
                            limits::MISSING_TXS_WAIT_US / 1_000_000
                        ));
                        self.refused(p.request_id, r, &mut wr)
                    } else {
                        Ok(())
                    }
                }
            };
            let wrote = match &step {
                Ok(()) | Err(End::Refuse(_)) => match tokio::time::timeout(Duration::from_secs(30), wr.flush()).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(End::Refuse("not reading (no write progress in 30 s)".into())),
                },
                _ => Ok(()),
            };
            match (step, wrote) {
                (Err(end), _) | (Ok(()), Err(end)) => break end,
                (Ok(()), Ok(())) => {}
            }
        };
        if self.ctx.guard.log(LogKind::Close) {
            match &end {
                End::Closed => tracing::info!(peer = %self.peer, client = self.id, "jds connection closed by the peer"),
                End::Shutdown => {}
                End::Refuse(why) => {
                    tracing::warn!(peer = %self.peer, client = self.id, "jds connection dropped: {}", Esc(why))
                }
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), wr.close()).await;
    }

    async fn on_message<W: AsyncWrite + Unpin>(
        &mut self,
        msg: AnyMessage<'_>,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        if !self.setup {
            return match msg {
                AnyMessage::Common(CommonMessages::SetupConnection(m)) => self.on_setup(m, wr),
                _ => Err(End::Refuse("expected SetupConnection first".into())),
            };
        }
        match msg {
            AnyMessage::JobDeclaration(JobDeclaration::AllocateMiningJobToken(m)) => self.on_allocate(m, wr),
            AnyMessage::JobDeclaration(JobDeclaration::DeclareMiningJob(m)) => self.on_declare(m, wr).await,
            AnyMessage::JobDeclaration(JobDeclaration::ProvideMissingTransactionsSuccess(m)) => {
                self.on_provided(m, wr).await
            }
            AnyMessage::JobDeclaration(JobDeclaration::PushSolution(m)) => {
                self.on_push_solution(m).await;
                Ok(())
            }
            AnyMessage::Common(CommonMessages::SetupConnection(_)) => {
                Err(End::Refuse("a second SetupConnection".into()))
            }
            other => {
                if self.ctx.guard.log(LogKind::BadLine) {
                    let s = format!("{other:?}");
                    let name: String = s.chars().take_while(|c| c.is_alphanumeric() || *c == '(').collect();
                    tracing::warn!(peer = %self.peer, client = self.id, "jds: ignoring {} (not a message a job declaration server takes)", Esc(&name));
                }
                Ok(())
            }
        }
    }

    fn on_setup<W: AsyncWrite + Unpin>(&mut self, m: SetupConnection<'_>, wr: &mut FrameWriter<W>) -> Result<(), End> {
        let error = if m.protocol != Protocol::JobDeclarationProtocol {
            Some(("unsupported-protocol", 0))
        } else if m.min_version > VERSION || m.max_version < VERSION {
            Some(("protocol-version-mismatch", 0))
        } else if m.flags & DECLARE_TX_DATA == 0 {
            // Coinbase-only mode: the pool could not check the transactions it is asked to pay for.
            Some(("unsupported-feature-flags", DECLARE_TX_DATA))
        } else {
            None
        };
        if let Some((code, flags)) = error {
            let e = SetupConnectionError { flags, error_code: Str0255::new(code.as_bytes()).expect("short code") };
            push(wr, AnyMessage::Common(CommonMessages::SetupConnectionError(e)))?;
            return Err(End::Refuse(format!(
                "SetupConnection refused ({code}): protocol {:?}, versions {}..={}, flags {:#b} (this server takes full-template declarations only)",
                m.protocol, m.min_version, m.max_version, m.flags
            )));
        }
        self.setup = true;
        if self.ctx.guard.log(LogKind::Connect) {
            tracing::info!(peer = %self.peer, client = self.id, "jds connection set up (flags {:#b})", m.flags);
        }
        push(
            wr,
            AnyMessage::Common(CommonMessages::SetupConnectionSuccess(SetupConnectionSuccess {
                used_version: VERSION,
                flags: 0,
            })),
        )
    }

    fn on_allocate<W: AsyncWrite + Unpin>(
        &mut self,
        m: AllocateMiningJobToken<'_>,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        let user: String = m.user_identifier.as_utf8_or_hex().chars().take(128).collect();
        if self.tokens.len() >= limits::MAX_TOKENS {
            // The oldest unused token is revoked: a client that allocates without declaring
            // holds at most MAX_TOKENS.
            self.tokens.pop_front();
        }
        let token = self.jds.mint();
        self.tokens.push_back((token, user.into()));
        let tok = token.to_le_bytes();
        let reply = AllocateMiningJobTokenSuccess {
            request_id: m.request_id,
            mining_job_token: B0255::new(&tok[..]).expect("8 bytes"),
            coinbase_outputs: B064K::new(&self.jds.outputs[..]).expect("one output"),
        };
        push(wr, AnyMessage::JobDeclaration(JobDeclaration::AllocateMiningJobTokenSuccess(reply)))
    }

    async fn on_declare<W: AsyncWrite + Unpin>(
        &mut self,
        m: DeclareMiningJob<'_>,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        let request_id = m.request_id;
        let token = m.mining_job_token.try_as_array::<8>().ok().map(u64::from_le_bytes);
        let Some(at) = token.and_then(|t| self.tokens.iter().position(|(k, _)| *k == t)) else {
            let r = refuse(
                "invalid-mining-job-token",
                "the token is not one this connection was allocated and has not used (each token declares one job)",
            );
            return self.refused(request_id, r, wr);
        };
        let (token, user) = self.tokens.remove(at).expect("found");
        if !self.declare.take(self.now_us()) {
            let r = refuse(
                "rate-limited",
                format!(
                    "over {} declarations a minute (burst {}): each is checked by the node",
                    limits::DECLARE_PER_MINUTE,
                    limits::DECLARE_BURST
                ),
            );
            return self.refused(request_id, r, wr);
        }
        let coinbase =
            match DeclaredCoinbase::from_declared(m.coinbase_tx_prefix.as_bytes(), m.coinbase_tx_suffix.as_bytes()) {
                Ok(c) => c,
                Err(e) => return self.refused(request_id, refuse(e.code(), e.to_string()), wr),
            };
        let wtxids: Vec<[u8; 32]> = m.wtxid_list.into_inner().iter().map(|u| u.to_array()).collect();
        if let Some(p) = self.pending.take() {
            let r = refuse("missing-txs", "a newer declaration came before the missing transactions");
            self.refused(p.request_id, r, wr)?;
        }
        let decl = Declaration {
            request_id,
            token,
            user,
            version: m.version,
            coinbase,
            wtxids,
            asked_at: 0,
            asked: Vec::new(),
        };
        self.settle(decl, wr).await
    }

    async fn on_provided<W: AsyncWrite + Unpin>(
        &mut self,
        m: ProvideMissingTransactionsSuccess<'_>,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        let Some(p) = self.pending.take_if(|p| p.request_id == m.request_id) else {
            if self.ctx.guard.log(LogKind::BadLine) {
                tracing::warn!(peer = %self.peer, client = self.id, "jds: ProvideMissingTransactions.Success {} answers no pending request", m.request_id);
            }
            return Ok(());
        };
        self.new_tip_check();
        for (i, raw) in m.transaction_list.into_inner().iter().enumerate() {
            let Some(&pos) = p.asked.get(i) else { break };
            let wtxid = p.wtxids[pos as usize];
            if let Err(e) = self.provided.add(i, &wtxid, raw.as_bytes(), limits::PROVIDED_MAX_BYTES) {
                return self.refused(p.request_id, refuse("invalid-job", e.to_string()), wr);
            }
        }
        self.settle(p, wr).await
    }

    /// Takes from the node's mempool (over IPC) the declaration's transactions at `missing`,
    /// checked like provided ones (one transaction, the wtxid asked for); leaves in `missing`
    /// those the node does not have.
    async fn take_from_mempool(&mut self, d: &Declaration, missing: &mut Vec<u16>) {
        let asked: Vec<[u8; 32]> = missing.iter().map(|&i| d.wtxids[i as usize]).collect();
        let Some(txs) = self.jds.check.mempool_txs(asked).await else { return };
        let mut still = Vec::new();
        for (&pos, raw) in missing.iter().zip(txs.iter()) {
            let wtxid = d.wtxids[pos as usize];
            if raw.is_empty() {
                still.push(pos);
                continue;
            }
            if let Err(e) = self.provided.add(pos as usize, &wtxid, raw, limits::PROVIDED_MAX_BYTES) {
                if self.ctx.guard.log(LogKind::BadLine) {
                    tracing::warn!(peer = %self.peer, client = self.id, "jds: the node's mempool answer for declaration {}: {e}", d.request_id);
                }
                still.push(pos);
            }
        }
        *missing = still;
    }

    /// Drops the provided transactions when the tip has moved (they were for the last block).
    fn new_tip_check(&mut self) {
        let tip = self.ctx.work.borrow().as_ref().map(|w| w.job.prev_hash);
        if let Some(tip) = tip.filter(|t| *t != self.provided_tip) {
            self.provided.clear();
            self.provided_tip = tip;
        }
    }

    /// Finds the declaration's transactions; asks for those it lacks once, then checks it.
    async fn settle<W: AsyncWrite + Unpin>(&mut self, mut d: Declaration, wr: &mut FrameWriter<W>) -> Result<(), End> {
        let Some(work) = self.ctx.work.borrow().clone() else {
            return self.refused(d.request_id, refuse("internal-error", "the pool has no template yet"), wr);
        };
        self.new_tip_check();
        let index = TemplateIndex::for_work(&self.index, &work);
        self.index = Some(index.clone());
        let mut found: Vec<Found> = Vec::with_capacity(d.wtxids.len());
        let mut missing: Vec<u16> = Vec::new();
        for (i, w) in d.wtxids.iter().enumerate() {
            match index.get(w).or_else(|| self.provided.get(w)) {
                Some(f) => found.push(f),
                None => missing.push(i as u16),
            }
        }
        if !missing.is_empty() && d.asked.is_empty() && self.jds.check.ipc().is_some() {
            // With IPC, the node's mempool first: what it has is not asked of the client.
            self.take_from_mempool(&d, &mut missing).await;
            if missing.is_empty() {
                found = d.wtxids.iter().filter_map(|w| index.get(w).or_else(|| self.provided.get(w))).collect();
                if found.len() != d.wtxids.len() {
                    return self.refused(
                        d.request_id,
                        refuse("internal-error", "a mempool transaction was dropped"),
                        wr,
                    );
                }
            }
        }
        if !missing.is_empty() {
            if !d.asked.is_empty() {
                let r = refuse(
                    "missing-txs",
                    format!("{} transaction(s) still unknown after they were asked for", missing.len()),
                );
                return self.refused(d.request_id, r, wr);
            }
            let ask = ProvideMissingTransactions {
                request_id: d.request_id,
                unknown_tx_position_list: Seq064K::new(missing.clone()).expect("at most the list's length"),
            };
            push(wr, AnyMessage::JobDeclaration(JobDeclaration::ProvideMissingTransactions(ask)))?;
            d.asked = missing;
            d.asked_at = self.now_us();
            self.pending = Some(d);
            return Ok(());
        }
        let job = &work.job;
        let tip = Tip {
            prev_hash: job.prev_hash,
            height: job.height,
            nbits: job.nbits,
            mintime: job.mintime,
            target: job.network_target,
        };
        // What the pool is owed: the subsidy (the template's value less its fees) and the fees
        // of the declared transactions the pool knows.
        let template_fees: u64 = job.transactions.as_ref().map_or(0, |t| t.iter().filter_map(|t| t.fee).sum());
        let subsidy = job.coinbase_value.saturating_sub(template_fees);
        let required = subsidy + found.iter().filter_map(|f| f.fee).sum::<u64>();
        let paid = match d.coinbase.check_pays(&self.jds.pool_script, required) {
            Ok(p) => p,
            Err(e) => return self.refused(d.request_id, refuse(e.code(), e.to_string()), wr),
        };
        let mut hex = Vec::with_capacity(found.iter().map(|f| f.hex.len()).sum());
        for f in &found {
            hex.extend_from_slice(&f.hex);
        }
        let txids: Arc<[TemplateTx]> = found.iter().map(|f| TemplateTx { txid: f.txid, fee: f.fee }).collect();
        let declared = Arc::new(DeclaredJob {
            user: d.user.clone(),
            version: d.version,
            tip,
            coinbase: d.coinbase,
            txids,
            txs_hex: hex.into(),
            paid,
        });
        let started = Instant::now();
        let ntime = (now_unix() as u32).max(job.mintime).max(job.ntime);
        let (path, verdict) = self.jds.check.check(&declared.proposal(ntime)).await;
        match verdict {
            Ok(()) => {}
            Err(super::NodeVerdict::Invalid(reason)) if reason.contains("prevblk") => {
                return self.refused(
                    d.request_id,
                    refuse("stale-chain-tip", format!("the node says {reason} ({})", path.name())),
                    wr,
                );
            }
            Err(super::NodeVerdict::Invalid(reason)) => {
                return self.refused(
                    d.request_id,
                    refuse("invalid-job", format!("the node refuses the block ({}): {reason}", path.name())),
                    wr,
                );
            }
            Err(super::NodeVerdict::Unreachable(why)) => {
                return self.refused(
                    d.request_id,
                    refuse("internal-error", format!("the node could not check it: {why}")),
                    wr,
                );
            }
        }
        let checked_ms = started.elapsed().as_secs_f64() * 1000.0;
        let declared_now = self.ctx.work.borrow().as_ref().map(|w| w.job.prev_hash);
        if declared_now != Some(declared.tip.prev_hash) {
            return self.refused(
                d.request_id,
                refuse("stale-chain-tip", "a new block came while the node checked it"),
                wr,
            );
        }
        if let Some(reg) = &self.ctx.params.declared {
            reg.insert(d.token, declared.clone());
        }
        if self.own.len() >= limits::MAX_OWN_JOBS {
            // Superseded: a client mines its latest declarations (a job already set on a
            // channel lives on there).
            if let (Some(old), Some(reg)) = (self.own.pop_front(), &self.ctx.params.declared) {
                reg.remove(old);
            }
        }
        self.own.push_back(d.token);
        self.jds.counts.accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.ctx.guard.log(LogKind::Connect) {
            tracing::info!(
                peer = %self.peer, client = self.id, user = %Esc(&declared.user),
                "jds: job {} declared at height {}: {} transaction(s), {} sat to the pool, checked by the node ({}) in {checked_ms:.1} ms",
                d.request_id, declared.tip.height, declared.txids.len(), declared.paid, path.name()
            );
        }
        let tok = d.token.to_le_bytes();
        let ok = DeclareMiningJobSuccess {
            request_id: d.request_id,
            new_mining_job_token: B0255::new(&tok[..]).expect("8 bytes"),
        };
        push(wr, AnyMessage::JobDeclaration(JobDeclaration::DeclareMiningJobSuccess(ok)))
    }

    fn refused<W: AsyncWrite + Unpin>(
        &mut self,
        request_id: u32,
        r: Refusal,
        wr: &mut FrameWriter<W>,
    ) -> Result<(), End> {
        self.jds.counts.refusal(r.code);
        if self.ctx.guard.log(LogKind::Refusal) {
            tracing::warn!(peer = %self.peer, client = self.id, "jds: declaration {request_id} refused ({}): {}", r.code, Esc(&r.why));
        }
        let details: Vec<u8> = r.why.into_bytes().into_iter().take(1024).collect();
        let e = DeclareMiningJobError {
            request_id,
            error_code: Str0255::new(r.code.as_bytes()).expect("short code"),
            error_details: B064K::new(&details[..]).expect("at most 1 KiB"),
        };
        push(wr, AnyMessage::JobDeclaration(JobDeclaration::DeclareMiningJobError(e)))
    }

    /// A block the client found on one of its declared jobs: assembled from the declaration and
    /// handed to the block task like any found block (the miner's share usually got there first:
    /// the node then answers that it has it).
    async fn on_push_solution(&mut self, m: PushSolution<'_>) {
        let Some(reg) = &self.ctx.params.declared else { return };
        let prev = m.prev_hash.to_array();
        let own: Vec<u64> = self.own.iter().copied().collect();
        let extranonce = m.extranonce.as_bytes().to_vec();
        for job in reg.on_tip(&own, &prev) {
            if job.coinbase.extranonce_len != extranonce.len() || job.tip.nbits != m.nbits {
                continue;
            }
            let j = Arc::new(job.job(0, extranonce.len(), m.ntime));
            let root = j.merkle_root(&extranonce, &[]);
            let header = j.header(&root, m.version, m.ntime, m.nonce);
            let hash = crate::work::merkle::sha256d_header(&header);
            if !j.network_target.is_met_by(&hash) {
                continue;
            }
            tracing::info!(peer = %self.peer, client = self.id, user = %Esc(&job.user), "jds: PushSolution solves a declared job at height {}: submitting it", job.tip.height);
            let c = crate::mining::BlockCandidate {
                job: j,
                en1: extranonce.clone(),
                en2: Vec::new(),
                header,
                hash,
                workername: job.user.clone(),
                username: job.user.clone(),
                difficulty: crate::difficulty::Difficulty::from_hash(&hash),
            };
            let _ = self.ctx.blocks.send(c).await;
            return;
        }
        if self.ctx.guard.log(LogKind::BadLine) {
            tracing::warn!(peer = %self.peer, client = self.id, "jds: PushSolution solves none of this connection's declared jobs on that block");
        }
    }
}

fn push<W: AsyncWrite + Unpin>(wr: &mut FrameWriter<W>, msg: AnyMessage<'_>) -> Result<(), End> {
    wr.push(msg).map_err(|e| End::Refuse(e.to_string()))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
