//! `ckpool mine`: a stratum v1 SHA256d CPU miner for testing a pool before pointing ASICs at it.
//! Negotiates version rolling, honours set_difficulty, clean_jobs, set_extranonce and
//! client.reconnect, rolls nonce, extranonce2, version bits and ntime, and reconnects when dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::work::job::Job;
use crate::work::merkle::sha256d;

#[derive(Debug, Clone, Args)]
pub struct MineArgs {
    /// Pool URL: stratum+tcp://HOST:PORT (or HOST:PORT)
    #[arg(short = 'o', long = "url")]
    pub url: String,
    /// Worker name
    #[arg(short = 'u', long = "user", default_value = "ckpool-mine")]
    pub user: String,
    /// Worker password
    #[arg(short = 'p', long = "pass", default_value = "x")]
    pub pass: String,
    /// USER:PASS in one argument
    #[arg(short = 'O', long = "userpass")]
    pub userpass: Option<String>,
    /// Mining threads (default: one per core)
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// Print every protocol line in and out
    #[arg(short = 'P', long = "dump-protocol")]
    pub protocol: bool,
    /// Quiet: only errors
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Debug output
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Stop after this many seconds
    #[arg(long = "duration")]
    pub duration: Option<u64>,
    /// Stop after this many accepted shares
    #[arg(long = "shares")]
    pub shares: Option<u64>,
}

/// Work the hashing threads share; `generation` changes when they must drop what they do.
struct SharedWork {
    job: Arc<Job>,
    job_id: String,
    en1: Vec<u8>,
    target: Target,
    version_mask: u32,
}

struct Found {
    job_id: String,
    en2: Vec<u8>,
    ntime: u32,
    nonce: u32,
    version_bits: Option<u32>,
}

/// Searches `count` nonces from `start` for a header meeting `target`. Pure; the hashing loop.
pub fn search(
    job: &Job,
    root: &[u8; 32],
    version: u32,
    ntime: u32,
    target: &Target,
    start: u32,
    count: u32,
) -> Option<u32> {
    let mut header = job.header(root, version, ntime, start);
    for i in 0..count {
        let nonce = start.wrapping_add(i);
        header[76..80].copy_from_slice(&nonce.to_le_bytes());
        if target.is_met_by(&sha256d(&header)) {
            return Some(nonce);
        }
    }
    None
}

pub fn parse_url(url: &str) -> anyhow::Result<String> {
    let hp = url.trim().trim_start_matches("stratum+tcp://").trim_end_matches('/');
    if !hp.contains(':') {
        bail!("pool url {url:?} must be stratum+tcp://HOST:PORT");
    }
    Ok(hp.to_string())
}

pub fn run(args: MineArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(if args.debug {
            "debug"
        } else if args.quiet {
            "error"
        } else {
            "info"
        })
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    rt.block_on(mine(args))
}

async fn mine(mut args: MineArgs) -> anyhow::Result<()> {
    if let Some(up) = args.userpass.take() {
        let (u, p) = up.split_once(':').context("-O takes USER:PASS")?;
        args.user = u.into();
        args.pass = p.into();
    }
    let mut addr = parse_url(&args.url)?;
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let work: Arc<Mutex<Option<SharedWork>>> = Arc::new(Mutex::new(None));
    let generation = Arc::new(AtomicU64::new(0));
    let hashes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (found_tx, mut found_rx) = mpsc::channel::<Found>(256);
    for t in 0..threads {
        let (work, generation, hashes, stop, tx) =
            (work.clone(), generation.clone(), hashes.clone(), stop.clone(), found_tx.clone());
        std::thread::Builder::new()
            .name(format!("hash{t}"))
            .spawn(move || hash_thread(t as u32, threads as u32, work, generation, hashes, stop, tx))?;
    }
    let started = Instant::now();
    let (mut accepted, mut rejected) = (0u64, 0u64);
    let mut backoff = Duration::from_secs(1);
    let result = 'outer: loop {
        let stream = match TcpStream::connect(&addr).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot connect to {addr}: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        tracing::info!("connected to {addr}");
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        let mut out = String::new();
        let send = |out: &mut String, v: Value, proto: bool| {
            let l = v.to_string();
            if proto {
                println!("> {l}");
            }
            out.push_str(&l);
            out.push('\n');
        };
        send(
            &mut out,
            json!({"id": 1, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": "1fffe000", "version-rolling.min-bit-count": 2}]}),
            args.protocol,
        );
        send(
            &mut out,
            json!({"id": 2, "method": "mining.subscribe", "params": [concat!("ckpool-mine/", env!("CARGO_PKG_VERSION"))]}),
            args.protocol,
        );
        send(&mut out, json!({"id": 3, "method": "mining.authorize", "params": [args.user, args.pass]}), args.protocol);
        wr.write_all(out.as_bytes()).await?;
        out.clear();
        let mut en1 = Vec::new();
        let mut en2_len = 4usize;
        let mut mask = 0u32;
        let mut diff = Difficulty::ONE;
        let mut next_id = 10u64;
        let mut report = tokio::time::interval(Duration::from_secs(10));
        report.tick().await;
        let mut last_hashes = 0u64;
        let mut last_report = Instant::now();
        let deadline = args.duration.map(|d| started + Duration::from_secs(d));
        loop {
            let until = deadline.map(tokio::time::Instant::from_std);
            tokio::select! {
                line = lines.next_line() => {
                    let line = match line {
                        Ok(Some(l)) => l,
                        Ok(None) | Err(_) => { tracing::warn!("connection to {addr} lost; reconnecting"); break; }
                    };
                    if args.protocol { println!("< {line}"); }
                    let Ok(v) = serde_json::from_str::<Value>(&line) else { tracing::warn!("pool sent non-JSON: {line}"); continue };
                    match v.get("method").and_then(Value::as_str) {
                        Some("mining.notify") => {
                            let p = &v["params"];
                            match Job::from_notify(0, p, en1.len().max(1), en2_len) {
                                Ok(job) => {
                                    let id = p[0].as_str().unwrap_or("").to_string();
                                    let clean = p[8].as_bool().unwrap_or(false);
                                    *work.lock().unwrap() = Some(SharedWork { job: Arc::new(job), job_id: id, en1: en1.clone(), target: diff.to_target(), version_mask: mask });
                                    generation.fetch_add(1, Ordering::AcqRel);
                                    tracing::debug!("new job {} (clean {clean})", p[0]);
                                }
                                Err(e) => tracing::warn!("unusable notify: {e}"),
                            }
                        }
                        Some("mining.set_difficulty") => {
                            if let Some(d) = v["params"].get(0).and_then(|d| Difficulty::from_json(d).ok()) {
                                diff = d;
                                tracing::info!("difficulty {diff}");
                            }
                        }
                        Some("mining.set_extranonce") => {
                            if let Some(e) = v["params"][0].as_str().and_then(|s| hex::decode(s).ok()) { en1 = e; }
                            if let Some(n) = v["params"][1].as_u64() { en2_len = n as usize; }
                            *work.lock().unwrap() = None;
                            generation.fetch_add(1, Ordering::AcqRel);
                        }
                        Some("client.reconnect") => {
                            let host = v["params"][0].as_str().map(str::to_string);
                            let port = v["params"][1].as_u64().or_else(|| v["params"][1].as_str().and_then(|s| s.parse().ok()));
                            if let (Some(h), Some(p)) = (host, port) { addr = format!("{h}:{p}"); }
                            tracing::info!("pool asked to reconnect to {addr}");
                            break;
                        }
                        Some(_) => {}
                        None => match v["id"].as_u64() {
                            Some(1) => {
                                if let Some(m) = v["result"]["version-rolling.mask"].as_str() { mask = hex::parse_u32_be(m).unwrap_or(0); }
                            }
                            Some(2) => {
                                en1 = v["result"][1].as_str().and_then(|s| hex::decode(s).ok()).unwrap_or_default();
                                en2_len = v["result"][2].as_u64().unwrap_or(4) as usize;
                            }
                            Some(3) => {
                                if v["result"] == json!(true) {
                                    tracing::info!("authorized as {}", args.user);
                                } else {
                                    tracing::error!("authorize refused: {}", v["error"]);
                                }
                            }
                            Some(_) => {
                                if v["result"] == json!(true) { accepted += 1; } else { rejected += 1; tracing::info!("share rejected: {}", v["error"]); }
                                if args.shares.is_some_and(|n| accepted >= n) { break 'outer Ok(()); }
                            }
                            None => {}
                        },
                    }
                }
                f = found_rx.recv() => {
                    let Some(f) = f else { break 'outer Ok(()) };
                    next_id += 1;
                    let mut params = vec![json!(args.user), json!(f.job_id), json!(hex::encode(&f.en2)), json!(format!("{:08x}", f.ntime)), json!(format!("{:08x}", f.nonce))];
                    if let Some(b) = f.version_bits { params.push(json!(format!("{b:08x}"))); }
                    send(&mut out, json!({"id": next_id, "method": "mining.submit", "params": params}), args.protocol);
                }
                _ = report.tick() => {
                    let h = hashes.load(Ordering::Relaxed);
                    let rate = (h - last_hashes) as f64 / last_report.elapsed().as_secs_f64();
                    last_hashes = h; last_report = Instant::now();
                    tracing::info!("{}, accepted {accepted}, rejected {rejected}", crate::miner::format_rate(rate));
                }
                _ = async { match until { Some(u) => tokio::time::sleep_until(u).await, None => std::future::pending().await } } => break 'outer Ok(()),
            }
            if !out.is_empty() {
                if wr.write_all(out.as_bytes()).await.is_err() {
                    break;
                }
                out.clear();
            }
        }
        *work.lock().unwrap() = None;
        generation.fetch_add(1, Ordering::AcqRel);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, Ordering::Release);
    println!("ckpool mine: accepted {accepted}, rejected {rejected}");
    result
}

/// "12.3 MH/s" style rate (display only).
pub fn format_rate(hps: f64) -> String {
    let units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    let mut v = hps;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.2} {}", units[i])
}

fn hash_thread(
    t: u32,
    threads: u32,
    work: Arc<Mutex<Option<SharedWork>>>,
    generation: Arc<AtomicU64>,
    hashes: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Found>,
) {
    const CHUNK: u32 = 1 << 16;
    let mut en2_counter: u64 = t as u64;
    while !stop.load(Ordering::Acquire) {
        let gen = generation.load(Ordering::Acquire);
        let snapshot = work
            .lock()
            .unwrap()
            .as_ref()
            .map(|w| (w.job.clone(), w.job_id.clone(), w.en1.clone(), w.target, w.version_mask));
        let Some((job, job_id, en1, target, mask)) = snapshot else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let n2 = job.coinbase.nonce2_len;
        let started = Instant::now();
        'job: while generation.load(Ordering::Acquire) == gen && !stop.load(Ordering::Acquire) {
            en2_counter = en2_counter.wrapping_add(threads as u64);
            let mut en2 = vec![0u8; n2];
            let bytes = en2_counter.to_be_bytes();
            let k = n2.min(8);
            en2[n2 - k..].copy_from_slice(&bytes[8 - k..]);
            let root = job.merkle_root(&en1, &en2);
            // Roll one version bit inside the mask per thread, when the pool granted rolling.
            let version_bits = if mask != 0 { Some(((1u32 << mask.trailing_zeros()) * (t % 2)) & mask) } else { None };
            let version = (job.version & !mask) | version_bits.unwrap_or(0);
            let ntime = job.ntime + started.elapsed().as_secs() as u32;
            let mut start = 0u32;
            loop {
                if generation.load(Ordering::Acquire) != gen || stop.load(Ordering::Acquire) {
                    break 'job;
                }
                if let Some(nonce) = search(&job, &root, version, ntime, &target, start, CHUNK) {
                    let f = Found {
                        job_id: job_id.clone(),
                        en2: en2.clone(),
                        ntime,
                        nonce,
                        version_bits: version_bits.filter(|_| mask != 0),
                    };
                    if tx.blocking_send(f).is_err() {
                        return;
                    }
                    start = nonce.wrapping_add(1);
                } else {
                    start = start.wrapping_add(CHUNK);
                }
                hashes.fetch_add(CHUNK as u64, Ordering::Relaxed);
                if start < CHUNK {
                    break; // nonce space done: next extranonce2
                }
            }
        }
    }
}
