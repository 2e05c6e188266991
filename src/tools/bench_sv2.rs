//! `ckpool bench --sv2 KEY`: the load generator over Stratum V2 (Noise-encrypted, one channel per
//! connection, extended or `--sv2-channel standard`).
//!
//! As the SV1 bench: every share is well formed (a live job, the channel's extranonce, the job's
//! ntime) but unsolved: the bench hashes each header itself and sends only nonces meeting neither
//! the channel's target nor the network's, so the pool rebuilds and hashes each one before
//! refusing it (`difficulty-too-low`). Reports answers per second, the server's CPU per share
//! (`--server-pid`), and with `--trigger` how a new block's SetNewPrevHash spread over the
//! connections after the command started.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

use super::bench::{ms, proc_usage, report_server, report_triggers, BenchArgs, Pace};
use crate::difficulty::Target;
use crate::sv2::client::{self, Event, ExtendedJob, Sv2Client, REQUIRES_VERSION_ROLLING};
use crate::sv2::jobs::target_from_le;
use crate::work::merkle::sha256d_header;

#[derive(Default)]
struct Stats {
    working: AtomicUsize,
    failed: AtomicUsize,
    answered: AtomicU64,
    accepted: AtomicU64,
    codes: Mutex<HashMap<String, u64>>,
    /// Per new prev hash: when each connection got its SetNewPrevHash.
    tips: Mutex<HashMap<[u8; 32], Vec<Instant>>>,
    first_error: Mutex<Option<String>>,
    stop: AtomicBool,
}

/// A job a channel can submit on: the header parts but the nonce.
#[derive(Clone)]
struct Live {
    job_id: u32,
    version: u32,
    root: [u8; 32],
    prev: [u8; 32],
    ntime: u32,
    nbits: u32,
}

struct Conn {
    channel: u32,
    extended: bool,
    target: Target,
    extranonce: Vec<u8>,
    rolled: usize,
    /// Jobs waiting for their SetNewPrevHash (extended: prefix, suffix, path; standard: root).
    future: HashMap<u32, (u32, [u8; 32])>,
    live: Option<Live>,
    prev: Option<([u8; 32], u32, u32)>,
    seq: u32,
    nonce: u32,
    outstanding: usize,
}

impl Conn {
    fn root_of(&self, j: &ExtendedJob) -> [u8; 32] {
        j.merkle_root(&self.extranonce)
    }

    /// Queues one unsolved share on the live job (sent by the next flush).
    fn push(&mut self, c: &mut Sv2Client, l: &Live) -> anyhow::Result<()> {
        let nonce = self.unsolved(l);
        self.seq = self.seq.wrapping_add(1);
        if self.extended {
            let en2 = &self.extranonce[self.extranonce.len() - self.rolled..];
            c.push_extended(self.channel, self.seq, l.job_id, nonce, l.ntime, l.version, en2)?;
        } else {
            c.push_standard(self.channel, self.seq, l.job_id, nonce, l.ntime, l.version)?;
        }
        self.outstanding += 1;
        Ok(())
    }

    /// The next nonce whose header meets neither the channel's target nor the network's.
    fn unsolved(&mut self, l: &Live) -> u32 {
        let net = Target::from_compact(l.nbits).unwrap_or(Target::MAX);
        loop {
            self.nonce = self.nonce.wrapping_add(1);
            let h = sha256d_header(&client::header(l.version, &l.prev, &l.root, l.ntime, l.nbits, self.nonce));
            if !self.target.is_met_by(&h) && !net.is_met_by(&h) {
                return self.nonce;
            }
        }
    }
}

pub async fn bench_sv2(args: BenchArgs, addr: SocketAddr, key: [u8; 32], extended: bool) -> anyhow::Result<()> {
    let args = Arc::new(args);
    let stats = Arc::new(Stats::default());
    let total = args.connections + args.idle;
    let start = Instant::now();
    println!(
        "bench: {} submitting + {} idle Stratum V2 {} channel connection(s) to {addr}, {}, {} s",
        args.connections,
        args.idle,
        if extended { "extended" } else { "standard" },
        if args.rate > 0 { format!("{} shares/s total", args.rate) } else { format!("window {}", args.window) },
        args.duration
    );
    let before = args.server_pid.map(proc_usage).transpose()?;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        tasks.spawn(connection(i, addr, key, extended, args.clone(), stats.clone()));
        if args.ramp > 0 && (i + 1) % 50 == 0 {
            tokio::time::sleep_until(start + Duration::from_secs_f64((i + 1) as f64 / args.ramp as f64)).await;
        }
    }
    let ramp_limit = Instant::now() + Duration::from_secs(15);
    while stats.working.load(Ordering::Relaxed) + stats.failed.load(Ordering::Relaxed) < total
        && Instant::now() < ramp_limit
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let up = stats.working.load(Ordering::Relaxed);
    println!("bench: {up}/{total} connections working after {:.2} s", ms(Instant::now() - start) / 1000.0);
    if up == 0 {
        stats.stop.store(true, Ordering::Relaxed);
        bail!("no connection reached work: {:?}", stats.first_error.lock().unwrap());
    }
    let after_ramp = args.server_pid.map(proc_usage).transpose()?;
    let (a0, c0) = (stats.answered.load(Ordering::Relaxed), args.server_pid.map(proc_usage).transpose()?);
    let t0 = Instant::now();
    let mut end = t0 + Duration::from_secs(args.duration);
    let mut trigger_ats = Vec::new();
    let every = Duration::from_secs_f64(args.trigger_every.max(0.1));
    let triggers = if args.trigger.is_some() { args.blocks.max(1) } else { 0 };
    while Instant::now() < end {
        let due =
            (trigger_ats.len() < triggers).then(|| t0 + Duration::from_secs(1) + every * trigger_ats.len() as u32);
        match due {
            Some(t) if t <= end => {
                tokio::time::sleep_until(t).await;
                trigger_ats.push(Instant::now());
                let cmd = args.trigger.clone().unwrap_or_default();
                tokio::spawn(async move {
                    let _ = tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(&cmd)
                        .stdin(std::process::Stdio::null())
                        .stdout(std::process::Stdio::null())
                        .status()
                        .await;
                });
                end = end.max(Instant::now() + Duration::from_secs(3));
            }
            _ => tokio::time::sleep_until(end).await,
        }
    }
    let t1 = Instant::now();
    let (a1, c1) = (stats.answered.load(Ordering::Relaxed), args.server_pid.map(proc_usage).transpose()?);
    stats.stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();

    let secs = (t1 - t0).as_secs_f64();
    let answered = a1 - a0;
    let codes = stats.codes.lock().unwrap().clone();
    println!(
        "bench: RESULT {answered} answers in {secs:.2} s = {:.0} shares/s; accepted {}, refused {codes:?}",
        answered as f64 / secs,
        stats.accepted.load(Ordering::Relaxed)
    );
    let mut tips: Vec<(Vec<Instant>, [u8; 32])> = stats.tips.lock().unwrap().drain().map(|(k, v)| (v, k)).collect();
    for (v, _) in tips.iter_mut() {
        v.sort_unstable();
    }
    tips.sort_by_key(|(v, _)| v[0]);
    if let Some(cmd) = &args.trigger {
        let arrivals: Vec<&[Instant]> = tips.iter().map(|(v, _)| v.as_slice()).collect();
        report_triggers(cmd, &trigger_ats, &arrivals, "SetNewPrevHash", up);
    }
    if let (Some(pid), Some(b), Some(r), Some(c0), Some(c1)) = (args.server_pid, before, after_ramp, c0, c1) {
        report_server(pid, [b, r, c0, c1], answered, secs, up);
    }
    if let Some(e) = stats.first_error.lock().unwrap().clone() {
        println!("bench: first error: {e}");
    }
    Ok(())
}

async fn connection(
    i: usize,
    addr: SocketAddr,
    key: [u8; 32],
    extended: bool,
    args: Arc<BenchArgs>,
    stats: Arc<Stats>,
) {
    if let Err(e) = run_connection(i, addr, key, extended, &args, &stats).await {
        if !stats.stop.load(Ordering::Relaxed) {
            stats.first_error.lock().unwrap().get_or_insert(format!("connection {i}: {e:#}"));
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn run_connection(
    i: usize,
    addr: SocketAddr,
    key: [u8; 32],
    extended: bool,
    args: &BenchArgs,
    stats: &Stats,
) -> anyhow::Result<()> {
    let flags = if extended { REQUIRES_VERSION_ROLLING } else { 0 };
    let mut c = Sv2Client::connect(addr, &key, flags).await?;
    let user = format!("{}.{i}", args.user);
    if extended {
        c.open_extended(&user, 1.0e9, 4).await?;
    } else {
        c.open_standard(&user, 1.0e9, [0xff; 32]).await?;
    }
    let mut conn: Option<Conn> = None;
    let mut counted = false;
    // Idle connections (the first --idle) open a channel and only listen.
    let window = if i < args.idle { 0 } else { args.window.max(1) };
    // --rate: shares when due (at most 64 outstanding) instead of keeping the window full.
    let mut pace = if window > 0 { Pace::for_connection(args) } else { None };
    loop {
        if stats.stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut wait = Duration::from_secs(1);
        if let Some(cn) = conn.as_mut() {
            if let Some(l) = cn.live.clone() {
                if !counted {
                    counted = true;
                    stats.working.fetch_add(1, Ordering::Relaxed);
                }
                let now = Instant::now();
                let due = match pace.as_mut() {
                    Some(p) => p.due(now, 64usize.saturating_sub(cn.outstanding)),
                    None => window.saturating_sub(cn.outstanding),
                };
                for _ in 0..due {
                    cn.push(&mut c, &l)?;
                }
                if due > 0 {
                    c.flush().await?;
                }
                if let Some(p) = &pace {
                    wait = wait.min(p.next.saturating_duration_since(now));
                }
            }
        }
        let ev = tokio::time::timeout(wait, c.next_event()).await;
        let ev = match ev {
            Err(_) => continue,
            Ok(r) => r?,
        };
        let at = Instant::now();
        match ev {
            Event::ExtendedOpened { channel, target, extranonce_prefix, extranonce_size, .. } => {
                let mut extranonce = extranonce_prefix;
                extranonce.extend((0..extranonce_size).map(|b| (i as u8).wrapping_add(b as u8)));
                conn = Some(new_conn(channel, true, &target, extranonce, extranonce_size as usize));
            }
            Event::StandardOpened { channel, target, extranonce_prefix, .. } => {
                conn = Some(new_conn(channel, false, &target, extranonce_prefix, 0));
            }
            Event::OpenRefused { code, .. } => bail!("channel refused: {code}"),
            Event::ExtendedJob(j) => {
                let Some(cn) = conn.as_mut() else { continue };
                let root = cn.root_of(&j);
                take_job(cn, j.job_id, j.min_ntime, j.version, root);
            }
            Event::StandardJob { job_id, min_ntime, version, merkle_root, .. } => {
                let Some(cn) = conn.as_mut() else { continue };
                take_job(cn, job_id, min_ntime, version, merkle_root);
            }
            Event::PrevHash { job_id, prev_hash, min_ntime, nbits, .. } => {
                let Some(cn) = conn.as_mut() else { continue };
                stats.tips.lock().unwrap().entry(prev_hash).or_default().push(at);
                cn.prev = Some((prev_hash, min_ntime, nbits));
                if let Some((version, root)) = cn.future.remove(&job_id) {
                    cn.live = Some(Live { job_id, version, root, prev: prev_hash, ntime: min_ntime, nbits });
                }
                cn.future.clear();
            }
            Event::Target { target, .. } => {
                if let Some(cn) = conn.as_mut() {
                    cn.target = target_from_le(&target);
                }
            }
            Event::Accepted { count, .. } => {
                stats.answered.fetch_add(count as u64, Ordering::Relaxed);
                stats.accepted.fetch_add(count as u64, Ordering::Relaxed);
                if let Some(cn) = conn.as_mut() {
                    cn.outstanding = cn.outstanding.saturating_sub(count as usize);
                }
            }
            Event::Rejected { code, .. } => {
                stats.answered.fetch_add(1, Ordering::Relaxed);
                *stats.codes.lock().unwrap().entry(code).or_default() += 1;
                if let Some(cn) = conn.as_mut() {
                    cn.outstanding = cn.outstanding.saturating_sub(1);
                }
            }
            _ => {}
        }
    }
}

fn new_conn(channel: u32, extended: bool, target: &[u8; 32], extranonce: Vec<u8>, rolled: usize) -> Conn {
    Conn {
        channel,
        extended,
        target: target_from_le(target),
        extranonce,
        rolled,
        future: HashMap::new(),
        live: None,
        prev: None,
        seq: 0,
        nonce: 0,
        outstanding: 0,
    }
}

/// A job arrived: a future one waits for its SetNewPrevHash; one with min_ntime is live at once.
fn take_job(cn: &mut Conn, job_id: u32, min_ntime: Option<u32>, version: u32, root: [u8; 32]) {
    match (min_ntime, cn.prev) {
        (Some(ntime), Some((prev, _, nbits))) => cn.live = Some(Live { job_id, version, root, prev, ntime, nbits }),
        _ => {
            cn.future.insert(job_id, (version, root));
        }
    }
}
