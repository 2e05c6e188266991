//! `ckpool mine`: a stratum v1 SHA256d CPU miner for testing a pool before pointing ASICs at it.
//! Negotiates version rolling, honours set_difficulty, clean_jobs, set_extranonce and
//! client.reconnect, rolls nonce, extranonce2, version bits and ntime, and reconnects when dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::sync::mpsc;

use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::share::Submit;
use crate::sv1::client::Client;
use crate::sv1::server_msg::{Event, Subscription};
use crate::work::job::Job;
use crate::work::merkle::sha256d;

#[derive(Debug, Clone, Args)]
pub struct MineArgs {
    /// Pool URL: stratum+tcp://HOST:PORT, stratum+tls://HOST:PORT (or HOST:PORT)
    #[arg(short = 'o', long = "url")]
    pub url: String,
    /// With stratum+tls://: PEM certificate(s) to trust (a self-signed pool's), instead of the
    /// built-in webpki roots
    #[arg(long = "tlsca", value_name = "PEM")]
    pub tlsca: Option<std::path::PathBuf>,
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

/// `HOST:PORT` of a `stratum+tcp://`, `stratum+tls://` or bare url.
pub fn parse_url(url: &str) -> anyhow::Result<String> {
    let u = url.trim();
    let hp = u.strip_prefix("stratum+tls://").unwrap_or(u).trim_start_matches("stratum+tcp://").trim_end_matches('/');
    if !hp.contains(':') {
        bail!("pool url {url:?} must be stratum+tcp://HOST:PORT or stratum+tls://HOST:PORT");
    }
    Ok(hp.to_string())
}

/// The TLS client configuration for `url` when it is `stratum+tls://` (trusting `ca`, else the
/// built-in webpki roots); `None` for plain TCP.
pub fn tls_for(url: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    if url.trim().starts_with("stratum+tls://") {
        Ok(Some(crate::tls::client_config(ca)?))
    } else if ca.is_some() {
        bail!("--tlsca is for a stratum+tls:// url")
    } else {
        Ok(None)
    }
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
    let tls = tls_for(&args.url, args.tlsca.as_deref())?;
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
    let mut m = Mining {
        accepted: 0,
        rejected: 0,
        work,
        generation,
        en1: Vec::new(),
        en2_len: 4,
        mask: 0,
        diff: Difficulty::ONE,
    };
    let mut backoff = Duration::from_secs(1);
    let deadline = args.duration.map(|d| tokio::time::Instant::from_std(started + Duration::from_secs(d)));
    let result = loop {
        let conn = match &tls {
            Some(config) => Client::connect_tls(&addr, config.clone()).await,
            None => Client::connect(&addr).await.map_err(anyhow::Error::from),
        };
        let mut pool = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("cannot connect to {addr}: {e:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        tracing::info!("connected to {addr}");
        pool.dump_protocol(args.protocol);
        pool.send_configure(0x1fffe000);
        pool.send_subscribe(concat!("ckpool-mine/", env!("CARGO_PKG_VERSION")), None);
        pool.send_authorize(&args.user, &args.pass);
        (m.en1, m.en2_len, m.mask, m.diff) = (Vec::new(), 4, 0, Difficulty::ONE);
        let mut report = tokio::time::interval(Duration::from_secs(10));
        report.tick().await;
        let mut last_hashes = 0u64;
        let mut last_report = Instant::now();
        let end = loop {
            tokio::select! {
                ev = pool.next_event() => match ev {
                    Ok(ev) => if let Some(leave) = m.on_event(ev, &args, &mut addr) { break leave },
                    Err(e) => { tracing::warn!("connection to {addr} lost ({e}); reconnecting"); break Leave::Reconnect }
                },
                f = found_rx.recv() => {
                    let Some(f) = f else { break Leave::Done };
                    let (en2, ntime, nonce) = (hex::encode(&f.en2), format!("{:08x}", f.ntime), format!("{:08x}", f.nonce));
                    let bits = f.version_bits.map(|b| format!("{b:08x}"));
                    pool.send_submit(&args.user, &Submit { job_id: &f.job_id, extranonce2: &en2, ntime: &ntime, nonce: &nonce, version_bits: bits.as_deref() });
                }
                _ = report.tick() => {
                    let h = hashes.load(Ordering::Relaxed);
                    let rate = (h - last_hashes) as f64 / last_report.elapsed().as_secs_f64();
                    last_hashes = h; last_report = Instant::now();
                    tracing::info!("{}, accepted {}, rejected {}", format_rate(rate), m.accepted, m.rejected);
                }
                _ = async { match deadline { Some(u) => tokio::time::sleep_until(u).await, None => std::future::pending().await } } => break Leave::Done,
            }
        };
        if let Leave::Done = end {
            break Ok(());
        }
        m.set_work(None);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, Ordering::Release);
    println!("ckpool mine: accepted {}, rejected {}", m.accepted, m.rejected);
    result
}

/// The mining session's state, kept across reconnections for the counts and the threads' work.
struct Mining {
    accepted: u64,
    rejected: u64,
    work: Arc<Mutex<Option<SharedWork>>>,
    generation: Arc<AtomicU64>,
    en1: Vec<u8>,
    en2_len: usize,
    mask: u32,
    diff: Difficulty,
}

/// Why a connection is left.
enum Leave {
    Reconnect,
    /// The run is over (enough shares, the duration, or the threads stopped).
    Done,
}

impl Mining {
    /// One pool line; `Some` leaves the connection.
    fn on_event(&mut self, ev: Event<'_>, args: &MineArgs, addr: &mut String) -> Option<Leave> {
        match ev {
            Event::Notify(n) => match n.job(0, self.en1.len().max(1), self.en2_len) {
                Ok(j) => {
                    tracing::debug!("new job {} (clean {})", j.job_id, j.job.clean);
                    let w = SharedWork {
                        job: Arc::new(j.job),
                        job_id: j.job_id,
                        en1: self.en1.clone(),
                        target: self.diff.to_target(),
                        version_mask: self.mask,
                    };
                    self.set_work(Some(w));
                }
                Err(e) => tracing::warn!("unusable notify: {e}"),
            },
            Event::SetDifficulty(d) => {
                self.diff = d;
                tracing::info!("difficulty {d}");
            }
            Event::SetExtranonce(Subscription { extranonce1, extranonce2_size }) => {
                (self.en1, self.en2_len) = (extranonce1, extranonce2_size);
                self.set_work(None);
            }
            Event::Reconnect(to) => {
                if let Some(to) = to {
                    *addr = to;
                }
                tracing::info!("pool asked to reconnect to {addr}");
                return Some(Leave::Reconnect);
            }
            Event::SetVersionMask(m) | Event::Configured(m) => self.mask = m,
            Event::Subscribed(Ok(s)) => (self.en1, self.en2_len) = (s.extranonce1, s.extranonce2_size),
            Event::Subscribed(Err(r)) => tracing::error!("subscribe refused: {r}"),
            Event::Authorized(Ok(())) => tracing::info!("authorized as {}", args.user),
            Event::Authorized(Err(r)) => tracing::error!("authorize refused: {r}"),
            Event::Submitted { result, .. } => {
                match result {
                    Ok(()) => self.accepted += 1,
                    Err(r) => {
                        self.rejected += 1;
                        tracing::info!("share rejected: {r}");
                    }
                }
                if args.shares.is_some_and(|n| self.accepted >= n) {
                    return Some(Leave::Done);
                }
            }
            Event::ShowMessage(msg) => tracing::info!("pool says: {msg}"),
            Event::NotJson { line, .. } => tracing::warn!("pool sent non-JSON: {line}"),
            Event::Malformed { method, params } => tracing::warn!("pool sent unusable {method} {params}"),
            Event::Method { .. } | Event::Replied { .. } | Event::Stray(_) => {}
        }
        None
    }

    /// Replaces the threads' work; they drop what they do.
    fn set_work(&self, w: Option<SharedWork>) {
        *self.work.lock().unwrap() = w;
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
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
