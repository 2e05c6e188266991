//! Operator statistics as ckpool 0.9.9 writes them (`stratifier.c` `statsupdate`):
//! `logdir/pool/pool.status` (three JSON lines) and `logdir/users/<username>` (one indented JSON
//! object per user with a `worker` array), rewritten atomically every `stats_interval`.
//!
//! Sessions send [`StatEvent`]s over a bounded channel (a full channel slows that miner, no event
//! is dropped); one task owns the [`Book`] (pure: time passed in), renders the files and hands
//! them to a blocking writer. No lock is held across I/O.
//!
//! Hashrates are ckpool's decaying averages of difficulty-1 shares per second (the same exact
//! fixed-point `decay_time` vardiff uses) times 2^32, shown with ckpool's `suffix_string`.
//! Totals and best shares are exact difficulties; where ckpool writes an integer (`accepted`,
//! `rejected`, `shares`, `bestever`, the pool's `bestshare`) a fractional value is written as an
//! exact decimal number (`0.0003`), a whole one as an integer.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::difficulty::{Difficulty, SCALE};
use crate::stratum::vardiff::{Meter, US};
use crate::stratum::Work;

/// Pool hashrate windows (s): 1m 5m 15m 1hr 6hr 1d 7d.
const POOL_WINDOWS: [u64; 7] = [60, 300, 900, 3600, 21600, 86400, 604800];
/// Pool shares-per-second windows (s): 1m 5m 15m 1h.
const SPS_WINDOWS: [u64; 4] = [60, 300, 900, 3600];
/// User and worker hashrate windows (s): 1m 5m 1hr 1d 7d.
const USER_WINDOWS: [u64; 5] = [60, 300, 3600, 86400, 604800];
const POOL_KEYS: [&str; 7] =
    ["hashrate1m", "hashrate5m", "hashrate15m", "hashrate1hr", "hashrate6hr", "hashrate1d", "hashrate7d"];
const USER_KEYS: [&str; 5] = ["hashrate1m", "hashrate5m", "hashrate1hr", "hashrate1d", "hashrate7d"];

/// What sessions (and the block submitter) report.
#[derive(Debug, Clone)]
pub enum StatEvent {
    /// A session authorized as `worker` of `user`.
    Authorized { user: Arc<str>, worker: Arc<str> },
    /// The user agent the session of `worker` subscribed with (for the operator's view).
    Agent { user: Arc<str>, worker: Arc<str>, agent: Arc<str> },
    /// A session of `worker` ended (or re-authorized under another name).
    Gone { user: Arc<str>, worker: Arc<str> },
    /// Shares of one worker judged together (a session reports once per batch of lines read).
    Shares { user: Arc<str>, worker: Arc<str>, tally: ShareTally },
    /// A node accepted a block the pool found: a new round begins (pool.status `diff`).
    BlockFound,
    /// The found blocks' tally (from blocks.log), shown as extra keys of pool.status' third line.
    Blocks(BlockCounts),
}

/// Found blocks by what became of them (a block counts in each stage it reached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    pub found: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub stale: u64,
    pub confirmed: u64,
    pub orphaned: u64,
    pub matured: u64,
}

/// Shares a session judged since it last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareTally {
    /// Sum of the difficulties the accepted shares were judged at, and how many there were.
    pub accepted: Difficulty,
    pub accepted_n: u64,
    /// Sum of the difficulties the rejected shares were judged at, and how many there were.
    pub rejected: Difficulty,
    pub rejected_n: u64,
    /// The highest difficulty an accepted share's hash reached.
    pub best: Difficulty,
    /// The difficulty the last share was judged at (the worker's difficulty, as shown).
    pub last_diff: Difficulty,
}

impl ShareTally {
    /// Counts one share: `diff` is the difficulty it was judged at, `sdiff` what its hash reached.
    pub fn add(&mut self, diff: Difficulty, sdiff: Difficulty, accepted: bool) {
        self.last_diff = diff;
        if accepted {
            self.accepted = add(self.accepted, diff);
            self.accepted_n += 1;
            self.best = self.best.max(sdiff);
        } else {
            self.rejected = add(self.rejected, diff);
            self.rejected_n += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.accepted_n == 0 && self.rejected_n == 0
    }
}

/// A moment as the book sees it: monotonic microseconds (for decays) and unix seconds (shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono_us: u64,
    pub unix: u64,
}

#[derive(Debug, Clone)]
struct WorkerStats {
    meter: Meter,
    lastshare: u64,
    last_share_mono: Option<u64>,
    shares: Difficulty,
    best: Difficulty,
    best_ever: Difficulty,
    live: u32,
    seen_this_run: bool,
    /// The user agent of its last session, and the difficulty of its last share (this run).
    agent: Arc<str>,
    diff: Difficulty,
}

#[derive(Debug, Clone)]
struct UserStats {
    meter: Meter,
    lastshare: u64,
    shares: Difficulty,
    best: Difficulty,
    best_ever: Difficulty,
    authorised: u64,
    workers: BTreeMap<String, WorkerStats>,
}

impl WorkerStats {
    fn new(now: Now) -> WorkerStats {
        WorkerStats {
            meter: Meter::new(&USER_WINDOWS, now.mono_us),
            lastshare: 0,
            last_share_mono: None,
            shares: Difficulty::ZERO,
            best: Difficulty::ZERO,
            best_ever: Difficulty::ZERO,
            live: 0,
            seen_this_run: false,
            agent: "".into(),
            diff: Difficulty::ZERO,
        }
    }
}

impl UserStats {
    fn new(now: Now) -> UserStats {
        UserStats {
            meter: Meter::new(&USER_WINDOWS, now.mono_us),
            lastshare: 0,
            shares: Difficulty::ZERO,
            best: Difficulty::ZERO,
            best_ever: Difficulty::ZERO,
            authorised: 0,
            workers: BTreeMap::new(),
        }
    }
}

fn add(a: Difficulty, b: Difficulty) -> Difficulty {
    Difficulty::from_units(a.units().saturating_add(b.units()))
}

/// The pool's, users' and workers' figures.
#[derive(Debug, Clone)]
pub struct Book {
    started: Now,
    dsps: Meter,
    sps: Meter,
    accepted: Difficulty,
    rejected: Difficulty,
    best: Difficulty,
    /// Accepted difficulty since the last block found (pool.status `diff`, a percentage of the
    /// network difficulty as in ckpool).
    round: Difficulty,
    blocks: BlockCounts,
    users: BTreeMap<String, UserStats>,
}

/// The book as the operator's API shows it: hashrates in H/s (display only), exact totals.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// When it was taken (unix seconds) and seconds since the statistics began this run.
    pub unix: u64,
    pub runtime: u64,
    pub users: usize,
    pub workers: usize,
    pub idle: usize,
    pub disconnected: usize,
    /// 1m 5m 15m 1hr 6hr 1d 7d.
    pub hashrate: [f64; 7],
    /// Accepted shares per second: 1m 5m 15m 1h.
    pub sps: [f64; 4],
    pub accepted: Difficulty,
    pub rejected: Difficulty,
    pub best: Difficulty,
    /// Accepted difficulty since the last block found.
    pub round: Difficulty,
    pub network: Option<Difficulty>,
    pub blocks: BlockCounts,
    pub user_list: Vec<UserView>,
}

#[derive(Debug, Clone, Default)]
pub struct UserView {
    pub name: String,
    /// 1m 5m 1hr 1d 7d.
    pub hashrate: [f64; 5],
    pub lastshare: u64,
    /// Live connections of its workers.
    pub workers: u32,
    pub shares: Difficulty,
    pub best: Difficulty,
    pub best_ever: Difficulty,
    pub authorised: u64,
    pub worker: Vec<WorkerView>,
}

#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    pub name: String,
    /// 1m 5m 1hr 1d 7d.
    pub hashrate: [f64; 5],
    pub lastshare: u64,
    pub shares: Difficulty,
    pub best: Difficulty,
    pub best_ever: Difficulty,
    /// Live connections under this name.
    pub connections: u32,
    /// The difficulty of its last share this run (zero before one).
    pub diff: Difficulty,
    /// The user agent of its last session this run.
    pub agent: String,
}

/// A one-line view for the periodic status line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub hashrate1m: String,
    pub hashrate5m: String,
    pub users: usize,
    pub workers: usize,
    pub idle: usize,
    pub sps1m: f64,
    pub accepted: Difficulty,
    pub rejected: Difficulty,
    pub best: Difficulty,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hashrate 1m {}H/s 5m {}H/s, {} users, {} workers ({} idle), {} shares/s, accepted {} rejected {}, best share {}",
            self.hashrate1m,
            self.hashrate5m,
            self.users,
            self.workers,
            self.idle,
            fmt_g(self.sps1m, 3),
            self.accepted,
            self.rejected,
            self.best
        )
    }
}

impl Book {
    pub fn new(now: Now) -> Book {
        Book {
            started: now,
            dsps: Meter::new(&POOL_WINDOWS, now.mono_us),
            sps: Meter::new(&SPS_WINDOWS, now.mono_us),
            accepted: Difficulty::ZERO,
            rejected: Difficulty::ZERO,
            best: Difficulty::ZERO,
            round: Difficulty::ZERO,
            blocks: BlockCounts::default(),
            users: BTreeMap::new(),
        }
    }

    fn worker_mut(&mut self, user: &str, worker: &str, now: Now) -> (&mut UserStats, bool) {
        let u = self.users.entry(user.to_string()).or_insert_with(|| UserStats::new(now));
        let new = !u.workers.contains_key(worker);
        if new {
            u.workers.insert(worker.to_string(), WorkerStats::new(now));
        }
        (u, new)
    }

    pub fn apply(&mut self, ev: &StatEvent, now: Now) {
        match ev {
            StatEvent::Authorized { user, worker } => {
                let (u, _) = self.worker_mut(user, worker, now);
                if u.authorised == 0 {
                    u.authorised = now.unix;
                }
                let w = u.workers.get_mut(&**worker).expect("inserted");
                w.live += 1;
                w.seen_this_run = true;
            }
            StatEvent::Agent { user, worker, agent } => {
                let (u, _) = self.worker_mut(user, worker, now);
                u.workers.get_mut(&**worker).expect("inserted").agent = agent.clone();
            }
            StatEvent::Gone { user, worker } => {
                if let Some(w) = self.users.get_mut(&**user).and_then(|u| u.workers.get_mut(&**worker)) {
                    w.live = w.live.saturating_sub(1);
                }
            }
            StatEvent::Shares { user, worker, tally } => {
                self.rejected = add(self.rejected, tally.rejected);
                if let Some(w) = self.users.get_mut(&**user).and_then(|u| u.workers.get_mut(&**worker)) {
                    w.diff = tally.last_diff;
                }
                if tally.accepted_n == 0 {
                    return;
                }
                let (diff, sdiff) = (&tally.accepted, &tally.best);
                self.accepted = add(self.accepted, *diff);
                self.round = add(self.round, *diff);
                self.best = self.best.max(*sdiff);
                self.dsps.add(now.mono_us, diff.units());
                self.sps.add(now.mono_us, SCALE * tally.accepted_n as u128);
                let (u, _) = self.worker_mut(user, worker, now);
                u.meter.add(now.mono_us, diff.units());
                u.lastshare = now.unix;
                u.shares = add(u.shares, *diff);
                u.best = u.best.max(*sdiff);
                u.best_ever = u.best_ever.max(*sdiff);
                let w = u.workers.get_mut(&**worker).expect("inserted");
                w.meter.add(now.mono_us, diff.units());
                w.lastshare = now.unix;
                w.last_share_mono = Some(now.mono_us);
                w.shares = add(w.shares, *diff);
                w.best = w.best.max(*sdiff);
                w.best_ever = w.best_ever.max(*sdiff);
            }
            StatEvent::BlockFound => self.round = Difficulty::ZERO,
            StatEvent::Blocks(c) => self.blocks = *c,
        }
    }

    /// Brings every average up to `now` (ckpool decays idle entries once a minute).
    pub fn decay_to(&mut self, now: Now) {
        self.dsps.flush(now.mono_us);
        self.sps.flush(now.mono_us);
        for u in self.users.values_mut() {
            u.meter.flush(now.mono_us);
            for w in u.workers.values_mut() {
                w.meter.flush(now.mono_us);
            }
        }
    }

    fn counts(&self, now: Now) -> (usize, usize, usize, usize) {
        let (mut users, mut workers, mut idle, mut disconnected) = (0, 0, 0, 0);
        for u in self.users.values() {
            let live: u32 = u.workers.values().map(|w| w.live).sum();
            if live > 0 {
                users += 1;
            }
            for w in u.workers.values() {
                workers += w.live as usize;
                if w.live > 0 && w.last_share_mono.is_none_or(|t| now.mono_us.saturating_sub(t) > 60 * US) {
                    idle += w.live as usize;
                }
                if w.live == 0 && w.seen_this_run {
                    disconnected += 1;
                }
            }
        }
        (users, workers, idle, disconnected)
    }

    pub fn summary(&self, now: Now) -> Summary {
        let (users, workers, idle, _) = self.counts(now);
        Summary {
            hashrate1m: suffix_string(hashrate(self.dsps.value(0))),
            hashrate5m: suffix_string(hashrate(self.dsps.value(1))),
            users,
            workers,
            idle,
            sps1m: self.sps.value(0) as f64 / SCALE as f64,
            accepted: self.accepted,
            rejected: self.rejected,
            best: self.best,
        }
    }

    /// Everything the operator's API shows, as of `now` (after `decay_to(now)`).
    pub fn view(&self, now: Now, network: Option<Difficulty>) -> View {
        let (users, workers, idle, disconnected) = self.counts(now);
        let rate = |m: &Meter, i: usize| hashrate(m.value(i));
        let user_list = self
            .users
            .iter()
            .map(|(name, u)| UserView {
                name: name.clone(),
                hashrate: std::array::from_fn(|i| rate(&u.meter, i)),
                lastshare: u.lastshare,
                workers: u.workers.values().map(|w| w.live).sum(),
                shares: u.shares,
                best: u.best,
                best_ever: u.best_ever,
                authorised: u.authorised,
                worker: u
                    .workers
                    .iter()
                    .map(|(wname, w)| WorkerView {
                        name: wname.clone(),
                        hashrate: std::array::from_fn(|i| rate(&w.meter, i)),
                        lastshare: w.lastshare,
                        shares: w.shares,
                        best: w.best,
                        best_ever: w.best_ever,
                        connections: w.live,
                        diff: w.diff,
                        agent: w.agent.to_string(),
                    })
                    .collect(),
            })
            .collect();
        View {
            unix: now.unix,
            runtime: now.unix.saturating_sub(self.started.unix),
            users,
            workers,
            idle,
            disconnected,
            hashrate: std::array::from_fn(|i| rate(&self.dsps, i)),
            sps: std::array::from_fn(|i| self.sps.value(i) as f64 / SCALE as f64),
            accepted: self.accepted,
            rejected: self.rejected,
            best: self.best,
            round: self.round,
            network,
            blocks: self.blocks,
            user_list,
        }
    }

    /// pool/pool.status: three lines as ckpool writes them.
    pub fn render_pool(&self, now: Now, network: Option<Difficulty>) -> String {
        let (users, workers, idle, disconnected) = self.counts(now);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{{\"runtime\": {}, \"lastupdate\": {}, \"Users\": {users}, \"Workers\": {workers}, \"Idle\": {idle}, \"Disconnected\": {disconnected}}}",
            now.unix.saturating_sub(self.started.unix),
            now.unix
        );
        let rates: Vec<String> = POOL_KEYS
            .iter()
            .enumerate()
            .map(|(i, k)| format!("\"{k}\": \"{}\"", suffix_string(hashrate(self.dsps.value(i)))))
            .collect();
        let _ = writeln!(s, "{{{}}}", rates.join(", "));
        // ckpool: round(accepted · 10000 / network_diff) / 100, a real with 3 digits.
        let percent = match network.filter(|n| !n.is_zero()) {
            Some(n) => (self.round.as_f64() * 10000.0 / n.as_f64()).round() / 100.0,
            None => 0.0,
        };
        let sps: Vec<String> = ["SPS1m", "SPS5m", "SPS15m", "SPS1h"]
            .iter()
            .enumerate()
            .map(|(i, k)| format!("\"{k}\": {}", json_real(self.sps.value(i) as f64 / SCALE as f64, 3)))
            .collect();
        // Block counts are extra keys after ckpool's (dashboards read keys by name).
        let b = &self.blocks;
        let _ = writeln!(
            s,
            "{{\"diff\": {}, \"accepted\": {}, \"rejected\": {}, \"bestshare\": {}, {}, \"blocks_found\": {}, \"blocks_accepted\": {}, \"blocks_rejected\": {}, \"blocks_stale\": {}, \"blocks_confirmed\": {}, \"blocks_orphaned\": {}, \"blocks_matured\": {}}}",
            json_real(percent, 3),
            self.accepted,
            self.rejected,
            self.best,
            sps.join(", "),
            b.found,
            b.accepted,
            b.rejected,
            b.stale,
            b.confirmed,
            b.orphaned,
            b.matured
        );
        s
    }

    /// users/<name> for every user with a share (ckpool skips the others), in name order.
    pub fn render_users(&self, now: Now) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, u) in &self.users {
            if u.lastshare == 0 {
                continue;
            }
            let live: u32 = u.workers.values().map(|w| w.live).sum();
            let mut fields: Vec<(&str, String)> = USER_KEYS
                .iter()
                .enumerate()
                .map(|(i, k)| (*k, format!("\"{}\"", suffix_string(hashrate(u.meter.value(i))))))
                .collect();
            fields.push(("lastshare", u.lastshare.to_string()));
            fields.push(("workers", live.to_string()));
            fields.push(("shares", u.shares.to_string()));
            fields.push(("bestshare", real_difficulty(u.best)));
            fields.push(("bestever", u.best_ever.to_string()));
            fields.push(("authorised", u.authorised.to_string()));
            let mut text = String::from("{\n");
            for (k, v) in &fields {
                let _ = writeln!(text, " \"{k}\": {v},");
            }
            let workers: Vec<String> = u
                .workers
                .iter()
                .filter(|(_, w)| w.lastshare == 0 || now.unix.saturating_sub(w.lastshare) <= 600_000)
                .map(|(wname, w)| {
                    let mut f: Vec<(&str, String)> = vec![("workername", json_string(wname))];
                    f.extend(
                        USER_KEYS
                            .iter()
                            .enumerate()
                            .map(|(i, k)| (*k, format!("\"{}\"", suffix_string(hashrate(w.meter.value(i)))))),
                    );
                    f.push(("lastshare", w.lastshare.to_string()));
                    f.push(("shares", w.shares.to_string()));
                    f.push(("bestshare", real_difficulty(w.best)));
                    f.push(("bestever", w.best_ever.to_string()));
                    let body: Vec<String> = f.iter().map(|(k, v)| format!("   \"{k}\": {v}")).collect();
                    format!("  {{\n{}\n  }}", body.join(",\n"))
                })
                .collect();
            if workers.is_empty() {
                text.push_str(" \"worker\": []\n}\n");
            } else {
                let _ = write!(text, " \"worker\": [\n{}\n ]\n}}\n", workers.join(",\n"));
            }
            out.push((name.clone(), text));
        }
        out
    }

    /// Loads what a previous run wrote (ckpool `read_poolstats`, `read_userstats`); missing or
    /// unreadable files are reported and skipped. Averages are decayed over the time the pool
    /// was down, as ckpool does. Returns the book and what was loaded, for the log.
    pub fn load(logdir: &Path, now: Now) -> (Book, String) {
        let mut book = Book::new(now);
        let mut notes = Vec::new();
        let mut downtime = 0u64;
        match std::fs::read_to_string(logdir.join("pool").join("pool.status")) {
            Ok(text) => {
                let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
                if lines.len() == 3 {
                    if let Some(last) = lines[0].get("lastupdate").and_then(Value::as_u64) {
                        downtime = now.unix.saturating_sub(last).saturating_sub(60);
                    }
                    for (i, k) in POOL_KEYS.iter().enumerate() {
                        book.dsps.set(i, dsps_from_key(&lines[1], k));
                    }
                    for (i, k) in ["SPS1m", "SPS5m", "SPS15m", "SPS1h"].iter().enumerate() {
                        let v = lines[2].get(*k).and_then(Value::as_f64).unwrap_or(0.0);
                        book.sps.set(i, (v.max(0.0) * SCALE as f64) as u128);
                    }
                    book.accepted = diff_field(&lines[2], "accepted");
                    book.rejected = diff_field(&lines[2], "rejected");
                    book.best = diff_field(&lines[2], "bestshare");
                    notes.push("pool.status".to_string());
                } else {
                    notes.push("pool.status unreadable (not three JSON lines), starting from zero".to_string());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => notes.push(format!("pool.status: {e}")),
        }
        let (mut nusers, mut nworkers) = (0, 0);
        if let Ok(dir) = std::fs::read_dir(logdir.join("users")) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                if name.ends_with(".tmp") || name.starts_with('.') {
                    continue;
                }
                let Some(v) =
                    std::fs::read_to_string(entry.path()).ok().and_then(|t| serde_json::from_str::<Value>(&t).ok())
                else {
                    notes.push(format!("users/{name} unreadable, skipped"));
                    continue;
                };
                let mut u = UserStats::new(now);
                for (i, k) in USER_KEYS.iter().enumerate() {
                    u.meter.set(i, dsps_from_key(&v, k));
                }
                u.lastshare = v.get("lastshare").and_then(Value::as_u64).unwrap_or(0);
                u.shares = diff_field(&v, "shares");
                u.best = diff_field(&v, "bestshare");
                u.best_ever = diff_field(&v, "bestever").max(u.best);
                u.authorised = v.get("authorised").and_then(Value::as_u64).unwrap_or(0);
                for w in v.get("worker").and_then(Value::as_array).into_iter().flatten() {
                    let Some(wname) = w.get("workername").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
                        continue;
                    };
                    let mut ws = WorkerStats::new(now);
                    for (i, k) in USER_KEYS.iter().enumerate() {
                        ws.meter.set(i, dsps_from_key(w, k));
                    }
                    ws.lastshare = w.get("lastshare").and_then(Value::as_u64).unwrap_or(0);
                    ws.shares = diff_field(w, "shares");
                    ws.best = diff_field(w, "bestshare");
                    ws.best_ever = diff_field(w, "bestever").max(ws.best);
                    if downtime > 60 {
                        ws.meter.decay_silence(downtime);
                    }
                    u.workers.insert(wname.to_string(), ws);
                    nworkers += 1;
                }
                if downtime > 60 {
                    u.meter.decay_silence(downtime);
                }
                book.users.insert(name, u);
                nusers += 1;
            }
        }
        if downtime > 60 {
            book.dsps.decay_silence(downtime);
            book.sps.decay_silence(downtime);
            notes.push(format!("decayed over {downtime} s down"));
        }
        let mut what = format!("{nusers} users and {nworkers} workers");
        if !notes.is_empty() {
            what.push_str(&format!(" ({})", notes.join("; ")));
        }
        (book, what)
    }
}

/// Hash per second of a rate of 10^-12 difficulty-1 shares per second (display).
fn hashrate(rate: u128) -> f64 {
    rate as f64 / SCALE as f64 * 4_294_967_296.0
}

/// A difficulty field as a previous run wrote it (exact decimal, integer or real).
fn diff_field(v: &Value, key: &str) -> Difficulty {
    v.get(key).and_then(|x| Difficulty::from_json(x).ok()).unwrap_or(Difficulty::ZERO)
}

/// ckpool's `dsps_from_key`: "1.23T" → difficulty-1 shares per second, as 10^-12 units.
fn dsps_from_key(v: &Value, key: &str) -> u128 {
    let Some(s) = v.get(key).and_then(Value::as_str) else { return 0 };
    let end =
        s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-' || c == '+')).unwrap_or(s.len());
    let Ok(mut x) = s[..end].parse::<f64>() else { return 0 };
    let mul = match s[end..].chars().next() {
        Some('K') => 1e3,
        Some('M') => 1e6,
        Some('G') => 1e9,
        Some('T') => 1e12,
        Some('P') => 1e15,
        Some('E') => 1e18,
        _ => 1.0,
    };
    x *= mul / 4_294_967_296.0 * SCALE as f64;
    if x.is_finite() && x > 0.0 {
        x as u128
    } else {
        0
    }
}

/// C's `printf("%.{prec}g", x)`.
pub fn fmt_g(x: f64, prec: usize) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let p = prec.max(1);
    let sci = format!("{:.*e}", p - 1, x);
    let (mant, exp) = sci.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent digits");
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= p as i32 {
        format!("{}e{}{:02}", strip(mant), if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        strip(&format!("{:.*}", (p as i32 - 1 - exp) as usize, x))
    }
}

/// A real as jansson dumps it with `JSON_REAL_PRECISION(prec)`: `%.{prec}g`, ".0" added to
/// integral values, exponent without '+' or leading zeros.
pub fn json_real(x: f64, prec: usize) -> String {
    let mut s = fmt_g(x, prec);
    if !s.contains('.') && !s.contains('e') && !s.contains('n') && !s.contains('i') {
        s.push_str(".0");
    }
    if let Some(i) = s.find('e') {
        let (m, e) = s.split_at(i + 1);
        let neg = e.starts_with('-');
        let digits = e.trim_start_matches(['+', '-']).trim_start_matches('0');
        s = format!("{m}{}{}", if neg { "-" } else { "" }, if digits.is_empty() { "0" } else { digits });
    }
    s
}

/// A difficulty where ckpool writes a real: exact decimal, ".0" when whole.
fn real_difficulty(d: Difficulty) -> String {
    let s = d.to_string();
    if s.contains('.') {
        s
    } else {
        s + ".0"
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

/// ckpool's `suffix_string(val, buf, 16, 0)`: "%.3g" with K/M/G/T/P/E, or a truncated integer
/// below 1000.
pub fn suffix_string(val: f64) -> String {
    const UNITS: [(f64, &str); 6] = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")];
    for (scale, suffix) in UNITS {
        if val >= scale {
            return format!("{}{suffix}", fmt_g(val / scale, 3));
        }
    }
    format!("{}", val.max(0.0) as u32)
}

/// Writes `text` to `path` atomically: a temporary file beside it, then rename.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let res = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        // A cut temporary file (ENOSPC) would only hold space the next write needs.
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A user name that is safe as a file name under logdir/users.
fn file_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name.len() <= 200
}

fn now(mono_origin: tokio::time::Instant) -> Now {
    Now {
        mono_us: mono_origin.elapsed().as_micros() as u64,
        unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    }
}

/// The stats task: applies events, rewrites the files every `interval` and once more when every
/// sender is gone (shutdown), and publishes a [`Summary`] for the status line.
pub struct StatsTask {
    pub logdir: PathBuf,
    pub interval: Duration,
    pub work: watch::Receiver<Option<Arc<Work>>>,
    pub summary: watch::Sender<Summary>,
    /// The operator's API view, replaced at each write (every `interval`).
    pub view: watch::Sender<Arc<View>>,
    /// The last write failed (for one log line per change, not one per interval).
    pub failing: bool,
}

/// Loads the saved statistics and starts the task. Returns the event sender and the task.
pub fn spawn(task: StatsTask, capacity: usize) -> (mpsc::Sender<StatEvent>, tokio::task::JoinHandle<()>) {
    let origin = tokio::time::Instant::now();
    let (book, loaded) = Book::load(&task.logdir, now(origin));
    tracing::info!("stats: loaded {loaded} from {}", task.logdir.display());
    let (tx, rx) = mpsc::channel(capacity);
    (tx, tokio::spawn(task.run(book, rx, origin)))
}

impl StatsTask {
    async fn run(mut self, mut book: Book, mut rx: mpsc::Receiver<StatEvent>, origin: tokio::time::Instant) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // What the files of the last run said, for the operator's API until the first write.
        let network = self.work.borrow().as_ref().map(|w| w.network_diff);
        self.view.send_replace(Arc::new(book.view(now(origin), network)));
        let mut batch = Vec::with_capacity(256);
        loop {
            tokio::select! {
                n = rx.recv_many(&mut batch, 1024) => {
                    if n == 0 {
                        break;
                    }
                    let t = now(origin);
                    for ev in batch.drain(..) {
                        book.apply(&ev, t);
                    }
                }
                _ = tick.tick() => self.write(&mut book, now(origin)).await,
            }
        }
        self.write(&mut book, now(origin)).await;
    }

    async fn write(&mut self, book: &mut Book, t: Now) {
        book.decay_to(t);
        let network = self.work.borrow().as_ref().map(|w| w.network_diff);
        let mut files = vec![(self.logdir.join("pool").join("pool.status"), book.render_pool(t, network))];
        for (name, text) in book.render_users(t) {
            if file_name_ok(&name) {
                files.push((self.logdir.join("users").join(&name), text));
            }
        }
        let _ = self.summary.send(book.summary(t));
        self.view.send_replace(Arc::new(book.view(t, network)));
        let res = tokio::task::spawn_blocking(move || {
            let mut errors = Vec::new();
            for (path, text) in files {
                if let Err(e) = write_atomic(&path, &text) {
                    errors.push(format!("{}: {e}", path.display()));
                }
            }
            errors
        })
        .await;
        // One line when writing starts failing and one when it works again, not one per interval;
        // the totals stay in memory meanwhile and the next good write carries them.
        let failure = match res {
            Ok(errors) if errors.is_empty() => None,
            Ok(errors) => Some(format!("could not write {}", errors.join("; "))),
            Err(e) => Some(format!("writer failed: {e}")),
        };
        match (failure, self.failing) {
            (None, true) => {
                tracing::warn!("stats: writing {} again; the files carry every total", self.logdir.display());
                self.failing = false;
            }
            (Some(f), false) => {
                tracing::error!("stats: {f}; totals are kept in memory and written when it works again");
                self.failing = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Now {
        Now { mono_us: s * US, unix: 1_700_000_000 + s }
    }

    fn share(user: &str, worker: &str, diff: &str, sdiff: &str, accepted: bool) -> StatEvent {
        let mut tally = ShareTally::default();
        tally.add(diff.parse().unwrap(), sdiff.parse().unwrap(), accepted);
        StatEvent::Shares { user: user.into(), worker: worker.into(), tally }
    }

    #[test]
    fn printf_g_and_suffixes_match_c() {
        for (x, p, want) in [
            (1.0, 3, "1"),
            (1.2345, 3, "1.23"),
            (999.6, 3, "1e+03"),
            (0.0001234, 3, "0.000123"),
            (0.00001234, 3, "1.23e-05"),
            (12345.0, 3, "1.23e+04"),
            (0.5, 3, "0.5"),
        ] {
            assert_eq!(fmt_g(x, p), want, "{x}");
        }
        assert_eq!(json_real(0.0, 3), "0.0");
        assert_eq!(json_real(12345.0, 3), "1.23e4");
        assert_eq!(json_real(0.00001234, 3), "1.23e-5");
        assert_eq!(json_real(0.3, 3), "0.3");
        assert_eq!(suffix_string(0.0), "0");
        assert_eq!(suffix_string(999.9), "999");
        assert_eq!(suffix_string(1234.0), "1.23K");
        assert_eq!(suffix_string(1.23e12), "1.23T");
        assert_eq!(suffix_string(4.5e15), "4.5P");
        let v = serde_json::json!({"h": "1.23T"});
        let back = dsps_from_key(&v, "h") as f64 / SCALE as f64 * 4_294_967_296.0;
        assert!((back / 1.23e12 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn files_have_ckpools_fields_in_order() {
        let mut b = Book::new(at(0));
        b.apply(&StatEvent::Authorized { user: "alice".into(), worker: "alice.rig1".into() }, at(0));
        b.apply(&share("alice", "alice.rig1", "0.0001", "0.0123", true), at(1));
        b.apply(&share("alice", "alice.rig1", "0.0001", "0.05", true), at(2));
        b.apply(&share("alice", "alice.rig1", "0.0001", "0.00001", false), at(3));
        b.decay_to(at(60));
        let pool = b.render_pool(at(60), Some("0.001".parse().unwrap()));
        let lines: Vec<&str> = pool.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("{\"runtime\": 60, \"lastupdate\": 1700000060, \"Users\": 1, \"Workers\": 1, \"Idle\": 0, \"Disconnected\": 0}"), "{}", lines[0]);
        let l1: Value = serde_json::from_str(lines[1]).unwrap();
        let keys: Vec<&String> = l1.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 7);
        assert!(lines[1].starts_with("{\"hashrate1m\": \""));
        assert!(
            lines[2].starts_with(
                "{\"diff\": 20.0, \"accepted\": 0.0002, \"rejected\": 0.0001, \"bestshare\": 0.05, \"SPS1m\": "
            ),
            "{}",
            lines[2]
        );
        // Block counts: extra keys after ckpool's, the line stays one JSON object.
        let counts =
            BlockCounts { found: 3, accepted: 2, rejected: 0, stale: 1, confirmed: 2, orphaned: 1, matured: 1 };
        b.apply(&StatEvent::Blocks(counts), at(60));
        let l2: Value = serde_json::from_str(b.render_pool(at(60), None).lines().nth(2).unwrap()).unwrap();
        assert_eq!((l2["blocks_found"].as_u64(), l2["blocks_orphaned"].as_u64()), (Some(3), Some(1)), "{l2}");
        assert_eq!((l2["blocks_matured"].as_u64(), l2["blocks_stale"].as_u64()), (Some(1), Some(1)), "{l2}");
        let users = b.render_users(at(60));
        assert_eq!(users.len(), 1);
        let (name, text) = &users[0];
        assert_eq!(name, "alice");
        assert!(text.starts_with("{\n \"hashrate1m\": \""), "{text}");
        let v: Value = serde_json::from_str(text).unwrap();
        let order: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix('"')?.split('"').next()).collect();
        assert_eq!(
            &order[..12],
            [
                "hashrate1m",
                "hashrate5m",
                "hashrate1hr",
                "hashrate1d",
                "hashrate7d",
                "lastshare",
                "workers",
                "shares",
                "bestshare",
                "bestever",
                "authorised",
                "worker"
            ]
        );
        assert_eq!(v["shares"].to_string(), "0.0002");
        assert_eq!(v["bestever"].to_string(), "0.05");
        assert_eq!(v["lastshare"], 1_700_000_002u64);
        assert_eq!(v["authorised"], 1_700_000_000u64);
        assert_eq!(v["worker"][0]["workername"], "alice.rig1");
        assert_eq!(v["worker"][0]["bestshare"].to_string(), "0.05");
        let s = b.summary(at(60));
        assert_eq!((s.users, s.workers, s.accepted.to_string()), (1, 1, "0.0002".to_string()));
        assert!(s.to_string().contains("accepted 0.0002 rejected 0.0001"), "{s}");
    }

    #[test]
    fn saved_files_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Book::new(at(0));
        b.apply(&StatEvent::Authorized { user: "bob".into(), worker: "bob".into() }, at(0));
        for i in 1..=50 {
            b.apply(&share("bob", "bob", "2", if i == 7 { "123.5" } else { "3" }, true), at(i));
        }
        b.decay_to(at(60));
        write_atomic(&dir.path().join("pool/pool.status"), &b.render_pool(at(60), None)).unwrap();
        for (n, t) in b.render_users(at(60)) {
            write_atomic(&dir.path().join("users").join(n), &t).unwrap();
        }
        let (l, what) = Book::load(dir.path(), at(90));
        assert!(what.starts_with("1 users and 1 workers"), "{what}");
        assert_eq!(l.accepted, Difficulty::from_integer(100));
        assert_eq!(l.best, "123.5".parse().unwrap());
        let u = &l.users["bob"];
        assert_eq!((u.shares, u.best_ever), (Difficulty::from_integer(100), "123.5".parse().unwrap()));
        let ratio = u.meter.value(0) as f64 / b.users["bob"].meter.value(0) as f64;
        assert!((ratio - 1.0).abs() < 0.01, "hashrate survives within display precision: {ratio}");
    }
}
