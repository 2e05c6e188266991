//! One Stratum V2 upstream session (`stratum2+tcp://HOST:PORT/KEY`): the Noise NX handshake with
//! the pool's certificate checked against the entry's authority key, SetupConnection, one
//! extended channel for every local miner; its jobs (future ones activated by SetNewPrevHash,
//! active ones at once), SetTarget and SetExtranoncePrefix followed; local shares meeting the
//! channel's target sent as SubmitSharesExtended and the pool's verdicts counted.
//!
//! The local side is the SV1 session's: the channel's extranonce prefix plays extranonce1, its
//! extranonce size extranonce2, so each miner's slice of it and its own difficulty are as
//! under a Stratum V1 upstream.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use binary_sv2::{Seq0255, B0255, B032, B064K, U256};
use mining_sv2::{SetCustomMiningJob, SubmitSharesExtended};
use parsers_sv2::{AnyMessage, Mining};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, timeout_at, Instant};

use super::declare::{Declared, Declarer, Step};
use super::{End, UpstreamClient, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, OUT_CAP, PRIMARY_PROBE};
use crate::config::Upstream;
use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::log::escape::Esc;
use crate::sv2::client::{Event, ExtendedJob, Sv2Client};
use crate::sv2::noise::NoiseError;
use crate::sv2::transport::TransportError;
use crate::sv2::{jobs, keys, MAX_EXTRANONCE};
use crate::work::job::{NotifyError, UpstreamParts};
use crate::work::Job;

/// SetupConnection flag: the proxy selects its own work (Job Declaration, an entry with `jds`).
const REQUIRES_WORK_SELECTION: u32 = 0b010;
/// BIP320's bits: what SV2 miners roll when a job allows version rolling.
const BIP320_MASK: u32 = 0x1fff_e000;
/// Future jobs kept waiting for their SetNewPrevHash.
const FUTURE_KEPT: usize = 16;
/// Unparseable frames in a row before the upstream is given up.
const MAX_BAD_FRAMES: u32 = 50;
/// The largest SubmitShares.Success batch the proxy waits to fill before it holds the pool to an
/// answer.
const MAX_BATCH: usize = 1000;

/// The Noise handshake with the pool at `addr`, its certificate checked against `key`.
pub(super) async fn handshake(addr: &str, key: &[u8; 32]) -> anyhow::Result<Sv2Client> {
    let stream = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("no connection within {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| anyhow::anyhow!("cannot connect: {e}"))?;
    Sv2Client::handshake_on(stream, key).await
}

/// The operator's line for a failed handshake: a certificate the key does not vouch for says
/// which key was expected and what to do; any other handshake failure (a certificate out of its
/// window, a tampered message) says what failed.
fn handshake_failure(e: &anyhow::Error, key: &[u8; 32], idx: usize) -> String {
    match e.downcast_ref::<TransportError>() {
        Some(TransportError::Handshake(why @ NoiseError::CertificateSignature)) => format!(
            "Noise handshake refused: {why}; proxy[{idx}].url pins authority key {}: another pool, or a new key, at this address; put the key `ckpool sv2-key` prints on the pool (its authority_pubkey) in the url",
            keys::encode_public(key)
        ),
        Some(TransportError::Handshake(why)) => format!("Noise handshake failed: {why}"),
        Some(TransportError::HandshakeTimeout(t)) => {
            format!("no Noise handshake answer within {t:?} (is this a Stratum V2 port?)")
        }
        Some(TransportError::Closed) => "closed the connection during the Noise handshake (is this a Stratum V2 port?)".into(),
        _ => format!("{e:#}"),
    }
}

/// The block the channel's jobs build on (SetNewPrevHash).
#[derive(Clone, Copy)]
struct Prev {
    prev_hash: [u8; 32],
    nbits: u32,
}

/// What one SV2 upstream session knows once its channel is open.
struct Channel {
    id: u32,
    group: u32,
    en1: Vec<u8>,
    en2_size: usize,
    target: Target,
    difficulty: Difficulty,
    prev: Option<Prev>,
    /// Jobs waiting for the SetNewPrevHash that names them.
    future: HashMap<u32, ExtendedJob>,
    seq: u32,
    /// Shares sent and not yet answered, by sequence number: who sent them, at what difficulty.
    pending: BTreeMap<u32, (Arc<str>, Difficulty)>,
    /// When the pool must have said something (it owes a verdict: [`Channel::owes_answer`]).
    answer_due: Option<Instant>,
    /// The most shares one SubmitShares.Success has acknowledged (1 until the pool batches).
    batch: usize,
    /// Job Declaration: jobs sent with SetCustomMiningJob and not yet answered, by request id.
    custom_pending: HashMap<u32, Declared>,
    custom_request: u32,
    /// The block a declared job is mined on: the pool's own jobs on it are not published.
    declared_tip: Option<[u8; 32]>,
}

impl Channel {
    fn ours(&self, channel: u32) -> bool {
        channel == self.id || channel == self.group
    }

    /// Whether the pool owes the proxy a verdict: as many shares unanswered as its largest batch.
    /// A pool may acknowledge valid shares in batches (SRI's pool_sv2 answers every
    /// `share_batch_size`-th share, blocks and refusals at once), so fewer shares waiting than
    /// it has shown it batches is no sign of a dead pool.
    fn owes_answer(&self) -> bool {
        !self.pending.is_empty() && self.pending.len() >= self.batch
    }
}

impl UpstreamClient {
    pub(super) async fn sv2_session(
        &mut self,
        addr: &str,
        entry: &Upstream,
        key: &[u8; 32],
        idx: usize,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
        let started = Instant::now();
        let mut c = match timeout(CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT, handshake(addr, key)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return End::Failed(handshake_failure(&e, key, idx)),
            Err(_) => return End::Failed("no Noise handshake within 25 s".into()),
        };
        let deadline = started + CONNECT_TIMEOUT + HANDSHAKE_TIMEOUT;
        // Job Declaration: the server first; without it the pool's jobs (and no work selection).
        let mut declarer = match (&entry.jds, &self.node) {
            (Some(jds), Some(rpc)) => {
                let poll = self.blockpoll;
                match Declarer::connect(jds, key, &entry.auth, rpc.clone(), &self.btcsig, poll, self.update_interval)
                    .await
                {
                    Ok(d) => {
                        tracing::info!(
                            "upstream {}: Job Declaration server {jds} set up; declaring jobs from this proxy's node",
                            entry.display()
                        );
                        Some(d)
                    }
                    Err(e) => {
                        tracing::warn!(
                            "upstream {}: Job Declaration server {jds}: {}; mining the pool's jobs",
                            entry.display(),
                            Esc(&format!("{e:#}"))
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let mut ch = match timeout_at(deadline, self.open_channel(&mut c, entry, addr, declarer.is_some())).await {
            Ok(Ok(ch)) => ch,
            Ok(Err(why)) => return End::Failed(why),
            Err(_) => return End::Failed("no SetupConnection/OpenExtendedMiningChannel answer within 25 s".into()),
        };
        self.counters.on_connected(idx);
        tracing::info!(
            "upstream {}: connected over Stratum V2 (pool's key checked), extended channel {} open for {} at difficulty {}; extranonce {}+{} bytes",
            entry.display(),
            ch.id,
            entry.auth,
            ch.difficulty,
            ch.en1.len(),
            ch.en2_size
        );
        let silence = self.silence_limit;
        let full_extranonce = ch.en1.len() + ch.en2_size;
        let mut bad_frames = 0u32;
        let mut probe = tokio::time::interval(PRIMARY_PROBE);
        probe.tick().await;
        loop {
            let (rd, wr) = c.halves();
            let limit = ch.answer_due.unwrap_or_else(|| Instant::now() + silence);
            let mut declared = None;
            tokio::select! {
                step = async { declarer.as_mut().expect("guarded").next(full_extranonce).await }, if declarer.is_some() => {
                    declared = Some(step);
                }
                f = rd.read_frame() => {
                    let f = match f {
                        Ok(f) => f,
                        Err(TransportError::Closed) => return End::Failed("closed the connection".into()),
                        Err(e) => return End::Failed(format!("{e}")),
                    };
                    ch.answer_due = ch.owes_answer().then(|| Instant::now() + silence);
                    match Event::of(f) {
                        Ok(ev) => {
                            bad_frames = 0;
                            if let Some(end) = self.on_sv2_event(ev, &mut ch, addr) {
                                return end;
                            }
                        }
                        Err(e) => {
                            bad_frames += 1;
                            tracing::warn!("upstream {addr}: {}", Esc(&format!("{e:#}")));
                            if bad_frames > MAX_BAD_FRAMES {
                                return End::Failed(format!("{bad_frames} unreadable messages in a row"));
                            }
                        }
                    }
                }
                share = self.shares.recv() => {
                    let Some(sh) = share else { return End::Shutdown };
                    if sh.generation != self.generation {
                        tracing::debug!("share from {} for a previous upstream session dropped as stale", Esc(&sh.workername));
                        continue;
                    }
                    if wr.pending() >= OUT_CAP {
                        if self.counters.dropped.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                            tracing::warn!("upstream {addr}: not reading ({} KiB queued); shares are dropped until it does", wr.pending() >> 10);
                        }
                        continue;
                    }
                    let parsed = (
                        sh.job_id.parse::<u32>(),
                        u32::from_str_radix(&sh.ntime, 16),
                        u32::from_str_radix(&sh.nonce, 16),
                        hex::decode(&sh.extranonce2),
                    );
                    let (Ok(job_id), Ok(ntime), Ok(nonce), Ok(extranonce)) = parsed else {
                        tracing::warn!("upstream {addr}: share from {} not forwarded: unreadable fields", Esc(&sh.workername));
                        continue;
                    };
                    let Ok(extranonce) = B032::new(&extranonce[..]) else { continue };
                    ch.seq = ch.seq.wrapping_add(1);
                    let m = SubmitSharesExtended {
                        channel_id: ch.id,
                        sequence_number: ch.seq,
                        job_id,
                        nonce,
                        ntime,
                        version: sh.version,
                        extranonce,
                    };
                    if let Err(e) = wr.push(AnyMessage::Mining(Mining::SubmitSharesExtended(m))) {
                        tracing::warn!("upstream {addr}: share from {} not forwarded: {e}", Esc(&sh.workername));
                        continue;
                    }
                    if ch.pending.len() >= 100_000 {
                        ch.pending.clear();
                    }
                    ch.pending.insert(ch.seq, (sh.workername.clone(), sh.difficulty));
                    if ch.owes_answer() {
                        ch.answer_due.get_or_insert_with(|| Instant::now() + silence);
                    }
                    self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                r = wr.flush(), if wr.pending() > 0 => {
                    if let Err(e) = r {
                        return End::Failed(format!("write failed: {e}"));
                    }
                }
                _ = probe.tick(), if idx != 0 => {
                    if self.primary_answers().await {
                        // Shares queued for this upstream are still due to it: written before leaving.
                        let _ = timeout(std::time::Duration::from_secs(2), c.flush()).await;
                        return End::Primary;
                    }
                }
                _ = tokio::time::sleep_until(limit), if ch.answer_due.is_some() => {
                    return End::Failed(format!("no answer to forwarded shares for {silence:?}"));
                }
                _ = shutdown.changed() => {
                    let _ = timeout(std::time::Duration::from_secs(2), c.flush()).await;
                    return End::Shutdown;
                }
            }
            match declared {
                None => {}
                Some(Step::Declared(d)) => {
                    if let Err(e) = set_custom_job(c.writer(), &mut ch, d) {
                        tracing::warn!("upstream {addr}: SetCustomMiningJob not sent: {e}; mining the pool's jobs");
                    }
                }
                Some(Step::Refused(why)) => {
                    tracing::warn!("upstream {addr}: Job Declaration: {why}; mining the pool's jobs on this block");
                }
                Some(Step::Failed(why)) => {
                    tracing::warn!(
                        "upstream {addr}: Job Declaration server lost: {}; mining the pool's jobs from now on",
                        Esc(&why)
                    );
                    declarer = None;
                }
            }
        }
    }

    /// SetupConnection, then one extended channel for the entry's user; what the pool answers.
    async fn open_channel(
        &mut self,
        c: &mut Sv2Client,
        entry: &Upstream,
        addr: &str,
        work_selection: bool,
    ) -> Result<Channel, String> {
        let wire = |e: anyhow::Error| format!("{e:#}");
        c.setup(2, 2, if work_selection { REQUIRES_WORK_SELECTION } else { 0 }).await.map_err(wire)?;
        loop {
            match c.next_event().await.map_err(wire)? {
                Event::SetupOk { .. } => break,
                Event::SetupRefused { code, flags } => {
                    return Err(format!("SetupConnection refused: {} (flags {flags:#b})", Esc(&code)))
                }
                other => tracing::debug!("upstream {addr}: before SetupConnection.Success: {other:?}"),
            }
        }
        // Room for the miners' prefix and at least a byte of their own.
        let min_extranonce = self.prefix_len.map_or(2, |p| p + 1) as u16;
        // Hashrate 0: this project's pool starts the channel at its own difficulty, SRI's
        // pool_sv2 at the max_target asked (all ones); either's vardiff follows the shares forwarded.
        let request = c.open_extended(&entry.auth, 0.0, min_extranonce).await.map_err(wire)?;
        loop {
            match c.next_event().await.map_err(wire)? {
                Event::ExtendedOpened { request_id, channel, target, extranonce_prefix, extranonce_size, group }
                    if request_id == request =>
                {
                    let n = extranonce_size as usize;
                    if extranonce_prefix.len() + n > MAX_EXTRANONCE {
                        return Err(format!(
                            "extranonce prefix {} + size {n} bytes is over Stratum V2's {MAX_EXTRANONCE}",
                            extranonce_prefix.len()
                        ));
                    }
                    self.miner_prefix(n, addr)?;
                    let target = jobs::target_from_le(&target);
                    return Ok(Channel {
                        id: channel,
                        group,
                        en1: extranonce_prefix,
                        en2_size: n,
                        target,
                        difficulty: Difficulty::from_target(&target),
                        prev: None,
                        future: HashMap::new(),
                        seq: 0,
                        pending: BTreeMap::new(),
                        answer_due: None,
                        batch: 1,
                        custom_pending: HashMap::new(),
                        custom_request: 0,
                        declared_tip: None,
                    });
                }
                Event::OpenRefused { code, .. } => {
                    return Err(format!("extended channel for {:?} refused: {}", entry.auth, Esc(&code)))
                }
                other => tracing::debug!("upstream {addr}: before the channel opened: {other:?}"),
            }
        }
    }

    /// One message from the pool; `Some` ends the session.
    fn on_sv2_event(&mut self, ev: Event, ch: &mut Channel, addr: &str) -> Option<End> {
        match ev {
            Event::ExtendedJob(j) if ch.ours(j.channel) => match (j.min_ntime, ch.prev) {
                (None, _) => {
                    if ch.future.len() >= FUTURE_KEPT {
                        ch.future.clear();
                    }
                    ch.future.insert(j.job_id, j);
                }
                (Some(ntime), Some(prev)) => self.publish_sv2(&j, prev, ntime, false, ch, addr),
                (Some(_), None) => {
                    tracing::debug!("upstream {addr}: job {} before any SetNewPrevHash ignored", j.job_id)
                }
            },
            Event::PrevHash { channel, job_id, prev_hash, min_ntime, nbits } if ch.ours(channel) => {
                let prev = Prev { prev_hash, nbits };
                ch.prev = Some(prev);
                match ch.future.remove(&job_id) {
                    Some(j) => self.publish_sv2(&j, prev, min_ntime, true, ch, addr),
                    None => tracing::warn!("upstream {addr}: SetNewPrevHash names job {job_id}, which it never sent as a future job; waiting for the next job"),
                }
                ch.future.clear();
            }
            Event::Target { channel, target } if ch.ours(channel) => {
                ch.target = jobs::target_from_le(&target);
                let d = Difficulty::from_target(&ch.target);
                if d != ch.difficulty {
                    tracing::info!("upstream {addr}: difficulty {d} (SetTarget; from the next job)");
                }
                ch.difficulty = d;
            }
            Event::ExtranoncePrefix { channel, prefix } if ch.ours(channel) => {
                if prefix.len() + ch.en2_size > MAX_EXTRANONCE {
                    return Some(End::Failed(format!(
                        "unusable SetExtranoncePrefix: {} bytes with {} to roll is over {MAX_EXTRANONCE}",
                        prefix.len(),
                        ch.en2_size
                    )));
                }
                tracing::info!("upstream {addr}: new extranonce prefix {} (from the next job)", hex::encode(&prefix));
                ch.en1 = prefix;
                self.generation += 1;
            }
            Event::Accepted { channel, last_seq, count, .. } if ch.ours(channel) => {
                self.counters.accepted.fetch_add(count as u64, Ordering::Relaxed);
                let batch = (count as usize).min(MAX_BATCH);
                if batch > ch.batch {
                    tracing::info!("upstream {addr}: acknowledges shares in batches of {batch}; a verdict is due once that many wait");
                    ch.batch = batch;
                }
                let later = ch.pending.split_off(&last_seq.saturating_add(1));
                ch.pending = later;
            }
            Event::Rejected { channel, seq, code } if ch.ours(channel) => {
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                if let Some((worker, d)) = ch.pending.remove(&seq) {
                    tracing::info!(
                        "upstream {addr} rejected a share from {} (difficulty {d}): {}",
                        Esc(&worker),
                        Esc(&code)
                    );
                }
            }
            Event::CustomJobSet { channel, request_id, job_id } if ch.ours(channel) => {
                if let Some(d) = ch.custom_pending.remove(&request_id) {
                    self.publish_declared(d, job_id, ch, addr);
                }
            }
            Event::CustomJobRefused { channel, request_id, code } if ch.ours(channel) => {
                if ch.custom_pending.remove(&request_id).is_some() {
                    tracing::warn!("upstream {addr}: SetCustomMiningJob {request_id} refused ({}); mining the pool's jobs on this block", Esc(&code));
                }
            }
            Event::ChannelClosed { channel, code } if ch.ours(channel) => {
                return Some(End::Failed(format!("closed the channel: {}", Esc(&code))));
            }
            other => tracing::debug!("upstream {addr}: ignoring {other:?}"),
        }
        if !ch.owes_answer() {
            ch.answer_due = None;
        }
        None
    }

    /// Publishes a job the pool took (SetCustomMiningJob.Success) to local miners: its
    /// transactions are the own node's, so a block found on it can be assembled here too.
    fn publish_declared(&mut self, d: Declared, job_id: u32, ch: &mut Channel, addr: &str) {
        let t = d.template.clone();
        let clean = self.work.borrow().as_ref().is_none_or(|w| w.job.prev_hash != t.prev_hash);
        let make = |id, n1, n2| -> Result<(Job, String), NotifyError> {
            Ok((Job::new(id, &t, d.coinbase.coinbase(n1, n2), clean), job_id.to_string()))
        };
        match self.publish(&ch.en1, ch.en2_size, (ch.target, ch.difficulty), make) {
            Ok(()) => {
                ch.declared_tip = Some(t.prev_hash);
                tracing::info!(
                    "upstream {addr}: mining declared job {job_id} at height {} ({} transaction(s) from this proxy's node)",
                    t.height,
                    t.transactions.len()
                );
            }
            Err(e) => tracing::warn!("upstream {addr}: declared job {job_id} unusable: {e}"),
        }
    }

    /// Re-issues an extended job on `prev` to local miners.
    fn publish_sv2(&mut self, j: &ExtendedJob, prev: Prev, ntime: u32, clean: bool, ch: &Channel, addr: &str) {
        if ch.declared_tip == Some(prev.prev_hash) {
            // A declared job is mined on this block: the pool's are the fallback only.
            return;
        }
        let mask = if j.version_rolling { self.version_mask & BIP320_MASK } else { 0 };
        if mask != self.mask {
            self.mask = mask;
            self.granted_mask.send_replace(mask);
        }
        let make = |id, n1, n2| -> Result<(Job, String), NotifyError> {
            let parts = UpstreamParts {
                prev_hash: prev.prev_hash,
                coinb1: j.coinbase_prefix.clone(),
                coinb2: j.coinbase_suffix.clone(),
                branches: j.merkle_path.clone(),
                version: j.version,
                nbits: prev.nbits,
                ntime,
                clean,
            };
            Ok((Job::upstream(id, parts, n1, n2)?, j.job_id.to_string()))
        };
        if let Err(e) = self.publish(&ch.en1, ch.en2_size, (ch.target, ch.difficulty), make) {
            tracing::warn!("upstream {addr}: unusable job {}: {e}", j.job_id);
        }
    }
}

/// Sends a declared job to the pool on the channel (the answer comes as an event).
fn set_custom_job<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut crate::sv2::transport::FrameWriter<W>,
    ch: &mut Channel,
    d: Declared,
) -> Result<(), String> {
    let t = &d.template;
    let txids: Vec<[u8; 32]> = t.transactions.iter().map(|x| x.txid).collect();
    let branches = crate::work::merkle::branches(&txids);
    let path: Vec<U256<'_>> = branches.iter().map(|b| U256::new(&b[..]).expect("32 bytes")).collect();
    ch.custom_request = ch.custom_request.wrapping_add(1);
    let request_id = ch.custom_request;
    let m = SetCustomMiningJob {
        channel_id: ch.id,
        request_id,
        token: B0255::new(&d.token[..]).map_err(|e| format!("token: {e:?}"))?,
        version: t.version,
        prev_hash: U256::new(&t.prev_hash[..]).expect("32 bytes"),
        min_ntime: t.curtime.max(t.mintime),
        nbits: t.nbits,
        coinbase_tx_version: d.coinbase.version,
        coinbase_prefix: B0255::new(&d.coinbase.script_head[..]).map_err(|e| format!("coinbase prefix: {e:?}"))?,
        coinbase_tx_input_n_sequence: d.coinbase.sequence,
        coinbase_tx_outputs: B064K::new(&d.coinbase.outputs[..]).map_err(|e| format!("outputs: {e:?}"))?,
        coinbase_tx_locktime: d.coinbase.locktime,
        merkle_path: Seq0255::new(path).map_err(|e| format!("merkle path: {e:?}"))?,
    };
    wr.push(AnyMessage::Mining(Mining::SetCustomMiningJob(m))).map_err(|e| e.to_string())?;
    if ch.custom_pending.len() >= FUTURE_KEPT {
        ch.custom_pending.clear();
    }
    ch.custom_pending.insert(request_id, d);
    Ok(())
}

#[cfg(test)]
#[path = "sv2_tests.rs"]
mod tests;
