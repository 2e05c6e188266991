//! `ckpool bench`: a stratum v1 load generator for measuring a pool on this machine.
//!
//! Opens `--connections` sessions (ramped), each of which subscribes, authorizes and then keeps
//! `--window` submits outstanding (or sends its part of `--rate` shares/s). Every share is well
//! formed (the job id it was given, an extranonce2 of the announced length that rolls, the job's
//! ntime, a random nonce) but unsolved: the bench hashes the header itself and only sends nonces
//! that meet neither the session's difficulty nor the network target, so the server has to
//! rebuild and hash each one before rejecting it. With `--accepted` each share meets the
//! session's difficulty (not the network's) instead, for a pool pinned at a low difficulty: the
//! pool accepts it and everything an accepted share feeds (share log, statistics, PPLNS window)
//! is measured too. `--idle` adds sessions that only subscribe and
//! authorize. It reports answers per second by reason, submit→answer latency, how a clean
//! notify spreads across connections, optionally the delay from a `--trigger` command (such as
//! the node's `generate 1`) to the resulting notify, and the server's CPU time per share and
//! memory per connection (`--server-pid`). It refuses any target outside 127.0.0.0/8 and ::1.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use anyhow::{bail, Context};
use clap::Args;
use tokio::time::Instant;

use crate::difficulty::{Difficulty, Target};
use crate::hex;
use crate::share::Submit;
use crate::sv1::client::{Client, ClientError};
use crate::sv1::server_msg::{Event, Notify, Refusal};
use crate::work::job::Job;
use crate::work::merkle::sha256d_header;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Pool URL on loopback: stratum+tcp://127.0.0.1:PORT, stratum+tls://127.0.0.1:PORT (or HOST:PORT)
    #[arg(short = 'o', long = "url")]
    pub url: String,
    /// Speak TLS to the pool (as a stratum+tls:// url does)
    #[arg(long = "tls")]
    pub tls: bool,
    /// With TLS: PEM certificate(s) to trust (the pool's self-signed one), instead of the
    /// built-in webpki roots
    #[arg(long = "tlsca", value_name = "PEM")]
    pub tlsca: Option<std::path::PathBuf>,
    /// Submitting connections
    #[arg(short = 'c', long = "connections", default_value_t = 20)]
    pub connections: usize,
    /// Extra idle sessions: subscribe and authorize, then only listen
    #[arg(long = "idle", default_value_t = 0)]
    pub idle: usize,
    /// New connections per second while ramping up (0: all at once)
    #[arg(long = "ramp", default_value_t = 2000)]
    pub ramp: u64,
    /// Outstanding submits per connection (pipelined; the next is sent when one is answered)
    #[arg(short = 'w', long = "window", default_value_t = 4)]
    pub window: usize,
    /// Total shares per second across all connections instead of a window (0: use the window)
    #[arg(short = 'r', long = "rate", default_value_t = 0)]
    pub rate: u64,
    /// Seconds of load once every connection is up
    #[arg(short = 'd', long = "duration", default_value_t = 10)]
    pub duration: u64,
    /// Shell command run once all connections are up (e.g. the node's `bitcoin-cli generate 1`);
    /// reports when the resulting clean notify reached the connections
    #[arg(long = "trigger", value_name = "CMD")]
    pub trigger: Option<String>,
    /// How many times to run the trigger (one new block each), one every --trigger-every seconds
    #[arg(long = "blocks", default_value_t = 1)]
    pub blocks: usize,
    /// Seconds between trigger runs
    #[arg(long = "trigger-every", default_value_t = 2.0)]
    pub trigger_every: f64,
    /// The node's ZMQ endpoint (loopback): time each clean notify from the node's
    /// hashblock/rawblock message for that block, as the pool hears it
    #[arg(long = "zmq", value_name = "tcp://127.0.0.1:PORT")]
    pub zmq: Option<String>,
    /// The server's process id: report its CPU time per share and memory per connection
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Speak Stratum V2 to the pool's sv2url with this authority public key (as `ckpool sv2-key`
    /// prints it): one channel per connection
    #[arg(long = "sv2", value_name = "AUTHORITY_PUBKEY")]
    pub sv2: Option<String>,
    /// Stratum V2 channel kind: extended (as proxies and translators open) or standard (as
    /// SV2 firmware opens)
    #[arg(long = "sv2-channel", value_name = "KIND", default_value = "extended", value_parser = ["extended", "standard"])]
    pub sv2_channel: String,
    /// Send shares the pool accepts: each meets the session's difficulty but not the network's
    /// (the bench hashes until one does). For a pool whose difficulty is pinned low enough, such
    /// as regtest with mindiff = startdiff = maxdiff = 0.000000000001 (`ACCEPTED=1 bash
    /// contrib/bench.sh`); a share not found within a million tries is sent unsolved
    #[arg(long = "accepted")]
    pub accepted: bool,
    /// Worker name sent in authorize
    #[arg(short = 'u', long = "user", default_value = "bench")]
    pub user: String,
    /// Bench runtime threads
    #[arg(short = 't', long = "threads", default_value_t = 1)]
    pub threads: usize,
    /// Do not print the per-second lines
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
}

/// Checks that `url` names a loopback address (127.0.0.0/8 or ::1) and returns it.
pub fn loopback_target(url: &str) -> anyhow::Result<SocketAddr> {
    let hp = super::miner::parse_url(url)?;
    let addrs: Vec<SocketAddr> =
        hp.to_socket_addrs().with_context(|| format!("cannot resolve {hp}"))?.collect::<Vec<_>>();
    let Some(first) = addrs.first().copied() else { bail!("{hp} resolves to no address") };
    if let Some(bad) = addrs.iter().find(|a| !is_loopback(a.ip())) {
        bail!("refusing to load {hp} ({}): ckpool bench only targets loopback addresses (127.0.0.0/8, ::1)", bad.ip());
    }
    Ok(first)
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 127,
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.octets()[0] == 127),
    }
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 0,
    }
}

/// Reject reasons kept apart: by stratum error code, with the message first seen for it.
const CODES: usize = 8;

fn code_slot(code: i64) -> usize {
    match code {
        20..=25 => (code - 20) as usize,
        _ => 6,
    }
}

/// Counters every connection updates.
#[derive(Default)]
struct Stats {
    answered: AtomicU64,
    accepted: AtomicU64,
    rejected: [AtomicU64; CODES],
    reasons: Mutex<[Option<String>; CODES]>,
    working: AtomicUsize,
    failed: AtomicUsize,
    /// Latencies in µs, merged from each connection at its end.
    latencies: Mutex<Vec<u32>>,
    /// Clean notifies after the first job, by prevhash: arrival instants (a connection's first
    /// on each previous block).
    notifies: Mutex<HashMap<String, Vec<Instant>>>,
    /// A connection's second clean notify on the same previous block, by prevhash: the full
    /// template after an empty-first job (`empty_first`).
    followups: Mutex<HashMap<String, Vec<Instant>>>,
    /// Submitting stops when set.
    stop: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl Stats {
    fn reject_breakdown(&self, snap: &[u64; CODES]) -> String {
        let reasons = self.reasons.lock().unwrap();
        let mut s = String::new();
        for (i, n) in snap.iter().enumerate() {
            if *n > 0 {
                let why = reasons[i].as_deref().unwrap_or("?");
                let _ = write!(s, "{}{why}: {n}", if s.is_empty() { "" } else { ", " });
            }
        }
        s
    }

    fn snapshot(&self) -> [u64; CODES] {
        std::array::from_fn(|i| self.rejected[i].load(Ordering::Relaxed))
    }
}

/// A small xorshift generator: nonces need to differ, not to be unpredictable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Extranonce2 changes every this many shares (the merkle root is recomputed on change).
const SHARES_PER_EN2: u32 = 16;

/// The work a connection submits against.
struct ConnWork {
    job: Job,
    job_id: String,
    ntime_hex: String,
    root: [u8; 32],
    en2: Vec<u8>,
    en2_hex: String,
    left_on_en2: u32,
}

/// One connection's state; its stratum client is beside it (see `connection`).
struct Conn {
    idx: usize,
    idle: bool,
    /// `--accepted`: shares that meet the session's target.
    accepted: bool,
    user: String,
    en1: Vec<u8>,
    en2_len: usize,
    en2_counter: u64,
    target: Target,
    work: Option<ConnWork>,
    /// A notify arrived (idle sessions keep no job).
    notified: bool,
    authorized: bool,
    working: bool,
    rng: Rng,
    /// Our submits awaiting an answer: (id, sent at), oldest first.
    pending: VecDeque<(u64, Instant)>,
    latencies: Vec<u32>,
    /// The previous block of the last clean notify counted, and whether its follow-up was.
    clean_prev: Option<(String, bool)>,
}

impl Conn {
    fn new(idx: usize, idle: bool, args: &BenchArgs) -> Conn {
        Conn {
            idx,
            idle,
            accepted: args.accepted,
            user: args.user.clone(),
            en1: Vec::new(),
            en2_len: 8,
            en2_counter: (idx as u64) << 32,
            target: Difficulty::ONE.to_target(),
            work: None,
            notified: false,
            authorized: false,
            working: false,
            rng: Rng((0x9e37_79b9_7f4a_7c15 ^ (idx as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)) | 1),
            pending: VecDeque::new(),
            latencies: Vec::new(),
            clean_prev: None,
        }
    }

    /// A clean notify on `prev` arrived at `at`: the connection's first on that block counts
    /// for the new block, its second for the full template after an empty job.
    fn note_clean(&mut self, prev: String, stats: &Stats, at: Instant) {
        match &mut self.clean_prev {
            Some((p, followed)) if *p == prev => {
                if !*followed {
                    *followed = true;
                    stats.followups.lock().unwrap().entry(prev).or_default().push(at);
                }
            }
            _ => {
                stats.notifies.lock().unwrap().entry(prev.clone()).or_default().push(at);
                self.clean_prev = Some((prev, false));
            }
        }
    }

    /// Queues one unsolved, well-formed submit. False when there is no work yet.
    fn push_submit(&mut self, client: &mut Client) -> bool {
        let Some(w) = self.work.as_mut() else { return false };
        if w.left_on_en2 == 0 {
            self.en2_counter = self.en2_counter.wrapping_add(1);
            let bytes = self.en2_counter.to_be_bytes();
            let k = w.en2.len().min(8);
            let n = w.en2.len();
            w.en2[n - k..].copy_from_slice(&bytes[8 - k..]);
            w.en2_hex.clear();
            hex::encode_to(&w.en2, &mut w.en2_hex);
            w.root = w.job.merkle_root(&self.en1, &w.en2);
            w.left_on_en2 = SHARES_PER_EN2;
        }
        w.left_on_en2 -= 1;
        // A random nonce whose hash meets neither the share nor the network target (on regtest
        // about half of all hashes would be blocks); with --accepted, one that meets the share
        // target and not the network's (a million tries at most: then it is sent unsolved).
        let mut tries = 0u32;
        let nonce = loop {
            let nonce = self.rng.next() as u32;
            let h = sha256d_header(&w.job.header(&w.root, w.job.version, w.job.ntime, nonce));
            tries += 1;
            if !w.job.network_target.is_met_by(&h) && (self.target.is_met_by(&h) == self.accepted || tries > 1_000_000)
            {
                break nonce;
            }
        };
        let mut nonce_hex = [0u8; 8];
        hex_word(nonce, &mut nonce_hex);
        let id = client.send_submit(
            &self.user,
            &Submit {
                job_id: &w.job_id,
                extranonce2: &w.en2_hex,
                ntime: &w.ntime_hex,
                nonce: std::str::from_utf8(&nonce_hex).expect("hex digits"),
                version_bits: None,
            },
        );
        self.pending.push_back((id, Instant::now()));
        true
    }

    fn take_notify(&mut self, n: &Notify, stats: &Stats, at: Instant) {
        match n.job(0, self.en1.len().max(1), self.en2_len) {
            Ok(j) => {
                if j.job.clean && self.working && self.work.is_some() {
                    self.note_clean(crate::work::job::prevhash_to_stratum(&j.job.prev_hash), stats, at);
                }
                let ntime_hex = format!("{:08x}", j.job.ntime);
                let en2 = vec![0u8; self.en2_len];
                self.work = Some(ConnWork {
                    job: j.job,
                    job_id: j.job_id,
                    ntime_hex,
                    root: [0; 32],
                    en2,
                    en2_hex: String::new(),
                    left_on_en2: 0,
                });
            }
            Err(e) => stats.note_error(format!("connection {}: unusable notify: {e}", self.idx)),
        }
    }

    /// Counts this session as working once it is authorized and has had a notify.
    fn check_working(&mut self, stats: &Stats) {
        if self.authorized && !self.working && (self.work.is_some() || (self.idle && self.notified)) {
            self.working = true;
            stats.working.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Stats {
    fn note_error(&self, e: String) {
        let mut f = self.first_error.lock().unwrap();
        if f.is_none() {
            *f = Some(e);
        }
    }
}

/// Eight lowercase hex digits of `v`.
fn hex_word(v: u32, out: &mut [u8; 8]) {
    const D: &[u8; 16] = b"0123456789abcdef";
    for (i, o) in out.iter_mut().enumerate() {
        *o = D[((v >> (28 - 4 * i)) & 15) as usize];
    }
}

/// Submit pacing for `--rate`: one share every `every`, per connection.
/// `--rate`: when a connection's next share is due (the rate spread evenly over the
/// submitting connections).
pub(crate) struct Pace {
    pub every: Duration,
    pub next: Instant,
}

impl Pace {
    /// The pace of one of `args.connections` submitting connections, if `--rate` is given.
    pub(crate) fn for_connection(args: &BenchArgs) -> Option<Pace> {
        (args.rate > 0).then(|| {
            let per_conn = (args.rate as f64 / args.connections.max(1) as f64).max(0.001);
            Pace { every: Duration::from_secs_f64(1.0 / per_conn), next: Instant::now() }
        })
    }

    /// Shares due now, at most `room` (missed ticks are caught up on, never more than `room`
    /// at once); the next tick is moved past now when the room ran out.
    pub(crate) fn due(&mut self, now: Instant, room: usize) -> usize {
        let mut n = 0;
        while self.next <= now && n < room {
            self.next += self.every;
            n += 1;
        }
        if self.next <= now {
            self.next = now + self.every;
        }
        n
    }
}

/// Phases the connections follow: load, stop submitting (finish what is outstanding), close.
const LOAD: u8 = 0;
const STOP: u8 = 1;
const CLOSE: u8 = 2;

async fn connection(
    idx: usize,
    idle: bool,
    addr: SocketAddr,
    args: Arc<BenchArgs>,
    tls: Option<Arc<rustls::ClientConfig>>,
    stats: Arc<Stats>,
    mut phase: watch::Receiver<u8>,
) {
    let conn = match tls {
        Some(config) => Client::connect_tls(&addr.to_string(), config).await,
        None => Client::connect(addr).await.map_err(anyhow::Error::from),
    };
    let mut client = match conn {
        Ok(c) => c,
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            stats.note_error(format!("connection {idx}: connect {addr}: {e:#}"));
            return;
        }
    };
    let mut c = Conn::new(idx, idle, &args);
    client.send_subscribe(concat!("ckpool-bench/", env!("CARGO_PKG_VERSION")), None);
    client.send_authorize(&c.user, "x");
    let mut pace = if idle { None } else { Pace::for_connection(&args) };
    loop {
        let now_phase = *phase.borrow_and_update();
        if now_phase == CLOSE || (now_phase == STOP && c.pending.is_empty()) {
            break;
        }
        let submitting = c.authorized && !c.idle && !stats.stop.load(Ordering::Relaxed);
        let pace_at = pace.as_ref().filter(|_| submitting).map(|p| p.next);
        tokio::select! {
            ev = client.next_event() => {
                let at = Instant::now();
                let mut next = Some(ev);
                // Every line already read, then one write for the submits they call for.
                let mut failed = None;
                while let Some(ev) = next {
                    match ev {
                        Ok(ev) => if let Err(why) = handle_event(&mut c, ev, &stats, at) {
                            stats.note_error(format!("connection {idx}: {why}"));
                            failed = Some(true);
                            break;
                        },
                        Err(e) => {
                            if !(matches!(e, ClientError::Closed) && stats.stop.load(Ordering::Relaxed)) {
                                stats.note_error(format!("connection {idx}: {e}"));
                            }
                            failed = Some(false);
                            break;
                        }
                    }
                    next = client.try_event();
                }
                match failed {
                    Some(true) => { stats.failed.fetch_add(1, Ordering::Relaxed); return }
                    Some(false) => break,
                    None => {}
                }
                if c.authorized && !c.idle && !stats.stop.load(Ordering::Relaxed) && pace.is_none() {
                    // Window mode: refill to the window (the first time, and one per answer).
                    while c.pending.len() < args.window.max(1) && c.push_submit(&mut client) {}
                }
            }
            _ = async { match pace_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                if let Some(p) = pace.as_mut() {
                    // Catch up on missed ticks, but never with more than 64 queued at once.
                    let now = Instant::now();
                    while p.next <= now && c.pending.len() < 64 {
                        if !c.push_submit(&mut client) { p.next = now + p.every; break; }
                        p.next += p.every;
                    }
                    if p.next <= now { p.next = now + p.every; }
                }
            }
            r = phase.changed() => if r.is_err() { break },
        }
    }
    if c.working {
        stats.working.fetch_sub(1, Ordering::Relaxed);
    }
    if !c.latencies.is_empty() {
        stats.latencies.lock().unwrap().extend_from_slice(&c.latencies);
    }
}

/// Handles one server line; `Err` ends the connection.
fn handle_event(c: &mut Conn, ev: Event<'_>, stats: &Stats, at: Instant) -> Result<(), String> {
    match ev {
        Event::Submitted { id, result } => {
            if let Some(pos) = c.pending.iter().position(|(i, _)| *i == id) {
                let (_, sent) = c.pending.remove(pos).expect("position is in range");
                c.latencies.push(at.saturating_duration_since(sent).as_micros().min(u32::MAX as u128) as u32);
            }
            stats.answered.fetch_add(1, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Err(r) => stats.count_reject(&r),
            }
        }
        Event::Notify(n) if c.idle => {
            if let Some((prev, clean)) = n.prevhash_clean() {
                if clean && c.working {
                    c.note_clean(prev.into_owned(), stats, at);
                }
            }
            c.notified = true;
            c.check_working(stats);
        }
        Event::Notify(n) => {
            c.take_notify(&n, stats, at);
            c.notified = true;
            c.check_working(stats);
        }
        Event::SetDifficulty(d) => c.target = d.to_target(),
        Event::Subscribed(Ok(s)) => (c.en1, c.en2_len) = (s.extranonce1, s.extranonce2_size),
        Event::Subscribed(Err(r)) => return Err(format!("subscribe refused: {r}")),
        Event::Authorized(Ok(())) => {
            c.authorized = true;
            // Some pools send the first notify before this answer: an idle session that has had
            // one is working now; a submitting one needs its job.
            c.check_working(stats);
        }
        Event::Authorized(Err(r)) => return Err(format!("authorize refused: {r}")),
        Event::NotJson { line, error } => return Err(format!("server sent non-JSON {line:?}: {error}")),
        _ => {}
    }
    Ok(())
}

impl Stats {
    /// Counts a refused share under its stratum code; ckpool's "reject-reason" texts carry no
    /// code, so the usual ones get theirs.
    fn count_reject(&self, r: &Refusal) {
        let code = r.code.unwrap_or_else(|| match &*r.message {
            "Above target" => 23,
            "Stale" | "Invalid JobID" => 21,
            "Duplicate" => 22,
            _ => -1,
        });
        let slot = code_slot(code);
        if self.rejected[slot].fetch_add(1, Ordering::Relaxed) == 0 {
            let mut reasons = self.reasons.lock().unwrap();
            if reasons[slot].is_none() {
                reasons[slot] =
                    Some(if slot == 6 { format!("code {code}: {}", r.message) } else { r.message.to_string() });
            }
        }
    }
}

/// A process's CPU time and memory, from /proc.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Usage {
    /// utime + stime, µs.
    pub cpu_us: u64,
    /// Resident memory, bytes (`VmRSS`): includes the pages of the binary's own code and of the
    /// libraries it has run so far, which grow as code runs for the first time.
    pub rss: u64,
    /// Resident anonymous memory, bytes (`RssAnon`): the heap, stacks and other private memory,
    /// without file-backed pages. What a connection costs shows here.
    pub anon: u64,
}

/// A `kB` field of /proc/PID/status, in bytes (0 when missing).
fn status_bytes(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU time and resident memory of a process.
pub(crate) fn proc_usage(pid: u32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("no process {pid}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let after = &stat[stat.rfind(')').context("odd /proc stat")? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(Usage {
        cpu_us: ticks * 1_000_000 / clock_ticks(),
        rss: status_bytes(&status, "VmRSS:"),
        anon: status_bytes(&status, "RssAnon:"),
    })
}

fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The TRIGGER lines: for each run of the trigger command (started at `trigger_ats`), the first
/// set of `arrivals` (sorted, one instant per connection) that began after it and before the next
/// run: when `what` reached the first, median, p99 and last connection.
pub(crate) fn report_triggers(cmd: &str, trigger_ats: &[Instant], arrivals: &[&[Instant]], what: &str, up: usize) {
    let mut lasts = Vec::new();
    for (i, &at) in trigger_ats.iter().enumerate() {
        let next = trigger_ats.get(i + 1).copied();
        match arrivals.iter().find(|v| v[0] >= at && next.is_none_or(|n| v[0] < n)) {
            Some(v) => {
                let rel = |q: f64| ms(quantile(v, q) - at);
                lasts.push(rel(1.0));
                println!(
                    "bench: TRIGGER `{cmd}` -> {what} at first {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, last {:.2} ms after the command's start ({}/{up} connections)",
                    rel(0.0),
                    rel(0.5),
                    rel(0.99),
                    rel(1.0),
                    v.len()
                );
            }
            None => println!("bench: TRIGGER `{cmd}` run {}: no {what} arrived after it", i + 1),
        }
    }
    summarize("TRIGGERS", "after the command's start, last connection", &mut lasts);
}

/// The SERVER lines from the pool's usage before the ramp, after it, and at the start and end
/// of the load. Memory per connection is given twice: all resident memory (`rss`), and the
/// anonymous part (`anon`: heap and stacks), which leaves out the binary's code pages that
/// grow as code runs for the first time (about 1–2 MB whatever the number of connections).
pub(crate) fn report_server(pid: u32, [b, r, c0, c1]: [Usage; 4], answered: u64, secs: f64, up: usize) {
    let cpu_us = c1.cpu_us.saturating_sub(c0.cpu_us);
    let per_share = if answered > 0 { format!("{:.2}", cpu_us as f64 / answered as f64) } else { "-".into() };
    println!(
        "bench: SERVER pid {pid}: cpu {per_share} us/share ({:.1} ms cpu over {answered} shares in {secs:.2} s = {:.0}% of a core)",
        cpu_us as f64 / 1000.0,
        cpu_us as f64 / 1e4 / secs
    );
    let per = |now: u64, then: u64| (now as i64 - then as i64) / up.max(1) as i64;
    println!(
        "bench: SERVER pid {pid}: rss {} KiB before, {} KiB with {up} connections up: {} bytes/connection (anon {} bytes/connection)",
        b.rss / 1024,
        r.rss / 1024,
        per(r.rss, b.rss),
        per(r.anon, b.anon)
    );
    println!(
        "bench: SERVER pid {pid}: rss {} KiB at the end of the load: {} bytes/connection (anon {} bytes/connection)",
        c1.rss / 1024,
        per(c1.rss, b.rss),
        per(c1.anon, b.anon)
    );
}

/// Prints the spread over blocks of one per-block delay (ms).
pub(crate) fn summarize(what: &str, label: &str, v: &mut [f64]) {
    if v.is_empty() {
        return;
    }
    v.sort_by(f64::total_cmp);
    println!(
        "bench: {what} over {} block(s), {label}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        v.len(),
        quantile(v, 0.5),
        quantile(v, 0.99),
        v[v.len() - 1]
    );
}

/// The value at quantile `q` of sorted `v`.
pub(crate) fn quantile<T: Copy>(v: &[T], q: f64) -> T {
    v[(((v.len() - 1) as f64) * q).round() as usize]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Block announcements heard on the node's ZMQ endpoint: when, and the new block's hash as a
/// stratum prevhash (what the clean notify for the next block carries).
type Announcements = Arc<Mutex<Vec<(std::time::Instant, String)>>>;

/// Listens to `endpoint` (loopback only) on a thread until the process ends.
fn listen_zmq(endpoint: &str) -> anyhow::Result<Announcements> {
    let hostport = endpoint.strip_prefix("tcp://").unwrap_or(endpoint);
    loopback_target(hostport).with_context(|| format!("--zmq {endpoint}"))?;
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::SUB).with_context(|| format!("--zmq {endpoint}: socket"))?;
    for topic in [&b"rawblock"[..], b"hashblock"] {
        sock.set_subscribe(topic).with_context(|| format!("--zmq {endpoint}: subscribe"))?;
    }
    sock.connect(endpoint).with_context(|| format!("--zmq {endpoint}: connect"))?;
    let heard: Announcements = Arc::default();
    let out = heard.clone();
    std::thread::Builder::new().name("bench-zmq".into()).spawn(move || {
        let _ctx = ctx;
        while let Ok(parts) = sock.recv_multipart(0) {
            let at = std::time::Instant::now();
            if let Some(hash) = crate::bitcoind::zmq::block_hash_of(&parts) {
                out.lock().unwrap().push((at, crate::work::job::prevhash_to_stratum(&hash)));
            }
        }
    })?;
    Ok(heard)
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let addr = loopback_target(&args.url)?;
    if args.connections == 0 && args.idle == 0 {
        bail!("nothing to do: --connections and --idle are both 0");
    }
    let nofile = raise_nofile_limit();
    let need = (args.connections + args.idle) as u64 + 64;
    if nofile > 0 && nofile < need {
        bail!("open-file limit is {nofile}, {need} needed for {} connections: raise it (ulimit -Hn)", need - 64);
    }
    if let Some(key) = &args.sv2 {
        let key = crate::sv2::keys::parse_public(key).context("--sv2")?;
        let extended = args.sv2_channel == "extended";
        let rt =
            tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
        return rt.block_on(super::bench_sv2::bench_sv2(args, addr, key, extended));
    }
    let heard = args.zmq.as_deref().map(listen_zmq).transpose()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads.max(1)).enable_all().build()?;
    rt.block_on(bench(args, addr, heard))
}

async fn bench(args: BenchArgs, addr: SocketAddr, heard: Option<Announcements>) -> anyhow::Result<()> {
    let tls_url = args.url.trim().starts_with("stratum+tls://");
    let tls = if args.tls || tls_url { Some(crate::tls::client_config(args.tlsca.as_deref())?) } else { None };
    let args = Arc::new(args);
    let stats = Arc::new(Stats::default());
    let total = args.connections + args.idle;
    let start = Instant::now();
    println!(
        "bench: {} submitting + {} idle connections to {addr}{}, {}, {} s",
        args.connections,
        args.idle,
        if tls.is_some() { " over TLS" } else { "" },
        if args.rate > 0 { format!("{} shares/s total", args.rate) } else { format!("window {}", args.window) },
        args.duration
    );
    let before = args.server_pid.map(proc_usage).transpose()?;
    let (phase_tx, phase_rx) = watch::channel(LOAD);
    let mut tasks = tokio::task::JoinSet::new();
    // Idle sessions first, then the submitting ones: the load then runs with all sessions up.
    for i in 0..total {
        let idle = i < args.idle;
        tasks.spawn(connection(i, idle, addr, args.clone(), tls.clone(), stats.clone(), phase_rx.clone()));
        if args.ramp > 0 && (i + 1) % 50 == 0 {
            let due = start + Duration::from_secs_f64((i + 1) as f64 / args.ramp as f64);
            tokio::time::sleep_until(due).await;
        }
    }
    // All connections working (or failed), bounded.
    let ramp_limit = Instant::now() + Duration::from_secs(15);
    loop {
        let (w, f) = (stats.working.load(Ordering::Relaxed), stats.failed.load(Ordering::Relaxed));
        if w + f >= total {
            break;
        }
        if Instant::now() > ramp_limit {
            println!("bench: only {w} of {total} connections working after the ramp; going on");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramped = Instant::now();
    let up = stats.working.load(Ordering::Relaxed);
    println!("bench: {up}/{total} connections working after {:.2} s", ms(ramped - start) / 1000.0);
    if let Some(e) = stats.first_error.lock().unwrap().clone() {
        println!("bench: first error: {e}");
    }
    if up == 0 {
        let _ = phase_tx.send(CLOSE);
        bail!("no connection reached work");
    }
    // Memory per connection: with every session up, before the load adds buffers.
    let after_ramp = match args.server_pid {
        Some(pid) => Some(proc_usage(pid)?),
        None => None,
    };

    // The load window.
    let (a0, acc0, rej0) =
        (stats.answered.load(Ordering::Relaxed), stats.accepted.load(Ordering::Relaxed), stats.snapshot());
    let cpu0 = args.server_pid.map(proc_usage).transpose()?;
    let t0 = Instant::now();
    let mut end = t0 + Duration::from_secs(args.duration);
    let mut trigger_ats: Vec<Instant> = Vec::new();
    let triggers = if args.trigger.is_some() { args.blocks.max(1) } else { 0 };
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let (mut last_acc, mut last_rej) = (0u64, stats.snapshot());
    let (mut last_ans, mut last_t) = (a0, t0);
    let mut trigger_tasks = Vec::new();
    let every = Duration::from_secs_f64(args.trigger_every.max(0.1));
    loop {
        let trigger_due =
            (trigger_ats.len() < triggers).then(|| t0 + Duration::from_secs(1) + every * trigger_ats.len() as u32);
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let ans = stats.answered.load(Ordering::Relaxed);
                let acc = stats.accepted.load(Ordering::Relaxed);
                let rej = stats.snapshot();
                let drej: [u64; CODES] = std::array::from_fn(|i| rej[i] - last_rej[i]);
                if !args.quiet {
                    println!(
                        "bench: t={:>5.1}s {:>9.0} answers/s, accepted {}, rejected {} [{}], {} working",
                        ms(now - t0) / 1000.0,
                        (ans - last_ans) as f64 / (now - last_t).as_secs_f64(),
                        acc - last_acc,
                        drej.iter().sum::<u64>(),
                        stats.reject_breakdown(&drej),
                        stats.working.load(Ordering::Relaxed),
                    );
                }
                (last_acc, last_rej, last_ans, last_t) = (acc, rej, ans, now);
                if now >= end { break; }
            }
            _ = async { match trigger_due { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                let cmd = args.trigger.clone().unwrap_or_default();
                trigger_ats.push(Instant::now());
                trigger_tasks.push(tokio::spawn(async move {
                    tokio::process::Command::new("sh").arg("-c").arg(&cmd)
                        .stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null())
                        .status().await
                }));
                // Leave time for the notify to reach everyone.
                end = end.max(Instant::now() + Duration::from_secs(3));
            }
            _ = tokio::time::sleep_until(end) => break,
        }
    }
    stats.stop.store(true, Ordering::Relaxed);
    let _ = phase_tx.send(STOP);
    let t1 = Instant::now();
    let (a1, acc1, rej1) =
        (stats.answered.load(Ordering::Relaxed), stats.accepted.load(Ordering::Relaxed), stats.snapshot());
    let cpu1 = args.server_pid.map(proc_usage).transpose()?;
    // Let outstanding submits be answered (bounded), then close everything.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    let _ = phase_tx.send(CLOSE);
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    let mut trigger_status = Vec::new();
    for t in trigger_tasks {
        trigger_status.push(tokio::time::timeout(Duration::from_secs(30), t).await);
    }

    // Report.
    let secs = (t1 - t0).as_secs_f64();
    let answered = a1 - a0;
    let acc = acc1 - acc0;
    let rej: [u64; CODES] = std::array::from_fn(|i| rej1[i] - rej0[i]);
    println!(
        "bench: RESULT {answered} answers in {secs:.2} s = {:.0} shares/s; accepted {acc}, rejected {} [{}]",
        answered as f64 / secs,
        rej.iter().sum::<u64>(),
        stats.reject_breakdown(&rej)
    );
    let all_rej = stats.snapshot();
    println!(
        "bench: TOTAL from the first connection: {} answers, accepted {}, rejected {} [{}]",
        stats.answered.load(Ordering::Relaxed),
        stats.accepted.load(Ordering::Relaxed),
        all_rej.iter().sum::<u64>(),
        stats.reject_breakdown(&all_rej)
    );
    let mut lat = std::mem::take(&mut *stats.latencies.lock().unwrap());
    if lat.is_empty() {
        println!("bench: LATENCY no submit answered");
    } else {
        lat.sort_unstable();
        println!(
            "bench: LATENCY submit->answer p50 {} us, p99 {} us, max {} us ({} answers)",
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            lat[lat.len() - 1],
            lat.len()
        );
    }
    let mut events: Vec<(String, Vec<Instant>)> = stats.notifies.lock().unwrap().drain().collect();
    for (_, v) in events.iter_mut() {
        v.sort_unstable();
    }
    events.sort_by_key(|(_, v)| v[0]);
    for (prev, v) in &events {
        let first = v[0];
        let rel = |q: f64| ms(quantile(v, q) - first);
        println!(
            "bench: NOTIFY clean prevhash ..{} at {:.3} s reached {}/{total} connections: first +0 ms, p50 +{:.2} ms, p99 +{:.2} ms, last +{:.2} ms",
            &prev[prev.len().saturating_sub(8)..],
            ms(first - start) / 1000.0,
            v.len(),
            rel(0.5),
            rel(0.99),
            rel(1.0)
        );
    }
    if let Some(cmd) = &args.trigger {
        for (i, st) in trigger_status.iter().enumerate() {
            if !matches!(st, Ok(Ok(Ok(s))) if s.success()) {
                println!("bench: trigger command run {} did not succeed: {st:?}", i + 1);
            }
        }
        let arrivals: Vec<&[Instant]> = events.iter().map(|(_, v)| v.as_slice()).collect();
        report_triggers(cmd, &trigger_ats, &arrivals, "clean notify", up);
    }
    if let Some(heard) = &heard {
        let heard = heard.lock().unwrap().clone();
        let (mut firsts, mut lasts, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        let followups: HashMap<String, Vec<Instant>> = stats.followups.lock().unwrap().drain().collect();
        let (mut full_firsts, mut full_lasts) = (Vec::new(), Vec::new());
        let mut seen = std::collections::HashSet::new();
        for (at, prev) in &heard {
            if !seen.insert(prev) {
                continue; // the same block announced as hashblock and rawblock
            }
            let at = Instant::from_std(*at);
            let Some((_, v)) = events.iter().find(|(p, _)| p == prev) else {
                println!(
                    "bench: ZMQ block ..{}: no clean notify for it reached any connection",
                    &prev[prev.len().saturating_sub(8)..]
                );
                continue;
            };
            if v.len() < up {
                println!(
                    "bench: ZMQ block ..{}: clean notify reached only {}/{up} connections",
                    &prev[prev.len().saturating_sub(8)..],
                    v.len()
                );
            }
            // Negative if the notify came first (it cannot, but clocks are read on two threads).
            let rel = |q: f64| quantile(v, q).checked_duration_since(at).map(ms).unwrap_or(0.0);
            println!(
                "bench: ZMQ block ..{} -> clean notify at first {:.2} ms, p50 {:.2} ms, p99 {:.2} ms, last {:.2} ms after the ZMQ message ({}/{up} connections)",
                &prev[prev.len().saturating_sub(8)..],
                rel(0.0),
                rel(0.5),
                rel(0.99),
                rel(1.0),
                v.len()
            );
            firsts.push(rel(0.0));
            p99s.push(rel(0.99));
            lasts.push(rel(1.0));
            if let Some(mut f) = followups.get(prev).cloned() {
                f.sort_unstable();
                let rel = |q: f64| quantile(&f, q).checked_duration_since(at).map(ms).unwrap_or(0.0);
                println!(
                    "bench: ZMQ block ..{} -> second clean notify (the full template after an empty job) at first {:.2} ms, last {:.2} ms ({}/{up} connections)",
                    &prev[prev.len().saturating_sub(8)..],
                    rel(0.0),
                    rel(1.0),
                    f.len()
                );
                full_firsts.push(rel(0.0));
                full_lasts.push(rel(1.0));
            }
        }
        summarize("ZMQ", "ZMQ message -> first connection", &mut firsts);
        summarize("ZMQ", "ZMQ message -> p99 connection", &mut p99s);
        summarize("ZMQ", "ZMQ message -> last connection", &mut lasts);
        if !full_firsts.is_empty() {
            summarize("ZMQ", "ZMQ message -> first connection's full template", &mut full_firsts);
            summarize("ZMQ", "ZMQ message -> last connection's full template", &mut full_lasts);
        }
    }
    if let (Some(pid), Some(b), Some(r), Some(c0), Some(c1)) = (args.server_pid, before, after_ramp, cpu0, cpu1) {
        report_server(pid, [b, r, c0, c1], answered, secs, up);
    }
    if let Some(e) = stats.first_error.lock().unwrap().clone() {
        println!("bench: first error: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ckpool (C) writes "id" last, sends its first notify before the authorize answer, and
    /// refuses shares with a "reject-reason" and a null "error".
    #[test]
    fn answers_in_ckpools_key_order() {
        use crate::sv1::server_msg::{event, Kind};
        use clap::Parser;
        #[derive(Parser)]
        struct A {
            #[command(flatten)]
            b: BenchArgs,
        }
        let args = A::parse_from(["x", "--url", "127.0.0.1:1"]).b;
        let stats = Stats::default();
        let at = Instant::now();
        let mut c = Conn::new(0, true, &args);
        let kind = |id| Some(if id == 2 { Kind::Authorize } else { Kind::Submit });
        let line = |c: &mut Conn, l: &str| handle_event(c, event(l.as_bytes(), kind), &stats, at);
        let notify = r#"{"params": ["1", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", "01000000010000", "00000000", [], "20000000", "207fffff", "504e86b9", true], "id": null, "method": "mining.notify"}"#;
        line(&mut c, notify).unwrap();
        assert!(!c.working);
        line(&mut c, r#"{"result": true, "error": null, "id": 2}"#).unwrap();
        assert!(c.authorized && c.working, "idle session works once authorized after its first notify");
        c.pending.push_back((10, at));
        c.pending.push_back((11, at));
        line(&mut c, r#"{"reject-reason":"Above target","result":false,"error":null,"id":10}"#).unwrap();
        line(&mut c, r#"{"result":true,"error":null,"id":11}"#).unwrap();
        assert!(line(&mut c, r#"{"result":false,"error":[24,"Unauthorized",null],"id":2}"#).is_err());
        assert_eq!(stats.answered.load(Ordering::Relaxed), 2);
        assert_eq!(stats.accepted.load(Ordering::Relaxed), 1);
        assert_eq!(stats.snapshot().iter().sum::<u64>(), 1);
        assert_eq!(stats.snapshot()[code_slot(23)], 1, "ckpool's Above target counts as low difficulty");
        assert!(c.pending.is_empty());
    }

    #[test]
    fn nonce_hex() {
        let mut out = [0u8; 8];
        for v in [0u32, 1, 0xdead_beef, u32::MAX] {
            hex_word(v, &mut out);
            assert_eq!(std::str::from_utf8(&out).unwrap(), format!("{v:08x}"));
        }
    }

    #[test]
    fn only_loopback_targets() {
        assert!(loopback_target("stratum+tcp://127.0.0.1:3333").is_ok());
        assert!(loopback_target("127.3.2.1:3333").is_ok());
        assert!(loopback_target("[::1]:3333").is_ok());
        for bad in ["stratum+tcp://192.0.2.1:3333", "10.0.0.1:3333", "[2001:db8::1]:3333"] {
            let e = loopback_target(bad).unwrap_err().to_string();
            assert!(e.contains("loopback"), "{bad}: {e}");
        }
    }

    #[test]
    fn pace_catches_up_within_its_room_and_moves_past_now() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut p = Pace { every: ms(10), next: t };
        // Ticks at 0, 10, 20 and 30 ms are due at 35 ms.
        assert_eq!(p.due(t + ms(35), 64), 4);
        assert_eq!(p.next, t + ms(40));
        assert_eq!(p.due(t + ms(35), 64), 0);
        // Only three fit: the rest are skipped, the next tick is one period after now.
        assert_eq!(p.due(t + ms(200), 3), 3);
        assert_eq!(p.next, t + ms(210));
        assert_eq!(p.due(t + ms(300), 0), 0);
        assert_eq!(p.next, t + ms(310));
    }

    #[test]
    fn proc_usage_reads_own_process() {
        let u = proc_usage(std::process::id()).unwrap();
        assert!(u.rss > 0, "VmRSS of a running process is positive");
        assert!(u.anon > 0 && u.anon <= u.rss, "RssAnon is part of VmRSS: {u:?}");
    }
}
