//! The statistics book: pool, users and workers, their decaying rates and totals (pure: time
//! passed in), rendered as ckpool's files and as the API's view.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::difficulty::{Difficulty, SCALE};
use crate::mining::vardiff::{Meter, US};

use super::format::*;
use super::*;

#[derive(Debug, Clone)]
pub(super) struct WorkerStats {
    pub(super) meter: Meter<{ USER_WINDOWS.len() }>,
    pub(super) lastshare: u64,
    pub(super) last_share_mono: Option<u64>,
    pub(super) shares: Difficulty,
    pub(super) best: Difficulty,
    pub(super) best_ever: Difficulty,
    pub(super) live: u32,
    pub(super) seen_this_run: bool,
    /// The user agent of its last session, and the difficulty of its last share (this run).
    pub(super) agent: Arc<str>,
    pub(super) diff: Difficulty,
}

#[derive(Debug, Clone)]
pub(super) struct UserStats {
    pub(super) meter: Meter<{ USER_WINDOWS.len() }>,
    pub(super) lastshare: u64,
    pub(super) shares: Difficulty,
    pub(super) best: Difficulty,
    pub(super) best_ever: Difficulty,
    pub(super) authorised: u64,
    pub(super) workers: BTreeMap<String, WorkerStats>,
}

impl WorkerStats {
    pub(super) fn new(now: Now) -> WorkerStats {
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
    pub(super) fn new(now: Now) -> UserStats {
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

/// The pool's, users' and workers' figures.
#[derive(Debug, Clone)]
pub struct Book {
    pub(super) started: Now,
    pub(super) dsps: Meter<{ POOL_WINDOWS.len() }>,
    pub(super) sps: Meter<{ SPS_WINDOWS.len() }>,
    pub(super) accepted: Difficulty,
    pub(super) rejected: Difficulty,
    pub(super) best: Difficulty,
    /// Accepted difficulty since the last block found (pool.status `diff`, a percentage of the
    /// network difficulty as in ckpool).
    pub(super) round: Difficulty,
    pub(super) blocks: BlockCounts,
    pub(super) users: BTreeMap<String, UserStats>,
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

    pub(super) fn worker_mut(&mut self, user: &str, worker: &str, now: Now) -> (&mut UserStats, bool) {
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
                let Some(u) = self.users.get_mut(&**user) else { return };
                let Some(w) = u.workers.get_mut(&**worker) else { return };
                w.live = w.live.saturating_sub(1);
                // A name that never had an accepted share costs nothing once its last
                // connection is gone: whatever a miner invents, the book holds only live names
                // and names with shares.
                if w.live == 0 && w.lastshare == 0 {
                    u.workers.remove(&**worker);
                    if u.workers.is_empty() && u.lastshare == 0 {
                        self.users.remove(&**user);
                    }
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
            StatEvent::BlockForwarded => self.blocks.found += 1,
        }
    }

    /// Whether `worker` of `user` ever had an accepted share (this run or one the files recall).
    pub fn has_shared(&self, user: &str, worker: &str) -> bool {
        self.users.get(user).and_then(|u| u.workers.get(worker)).is_some_and(|w| w.lastshare != 0)
    }

    /// Forgets workers with no connection and no accepted share for `after_secs` (and users left
    /// with no worker); 0 keeps them all. What must survive is in the users/* files, which
    /// stay as last written. Returns how many workers were forgotten.
    pub fn forget(&mut self, now: Now, after_secs: u64) -> usize {
        if after_secs == 0 {
            return 0;
        }
        let stale = |lastshare: u64| lastshare == 0 || now.unix.saturating_sub(lastshare) >= after_secs;
        let mut forgotten = 0;
        self.users.retain(|_, u| {
            let before = u.workers.len();
            u.workers.retain(|_, w| w.live > 0 || !stale(w.lastshare));
            forgotten += before - u.workers.len();
            !u.workers.is_empty() || !stale(u.lastshare)
        });
        forgotten
    }

    /// Users and workers held (the book's size).
    pub fn size(&self) -> (usize, usize) {
        (self.users.len(), self.users.values().map(|u| u.workers.len()).sum())
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

    pub(super) fn counts(&self, now: Now) -> (usize, usize, usize, usize) {
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
        let user_list = self
            .users
            .iter()
            .map(|(name, u)| UserView {
                name: name.clone(),
                hashrate: std::array::from_fn(|i| hashrate(u.meter.value(i))),
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
                        hashrate: std::array::from_fn(|i| hashrate(w.meter.value(i))),
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
            hashrate: std::array::from_fn(|i| hashrate(self.dsps.value(i))),
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
                    // The blocks' tally until the block journal reports (a proxy has none: its
                    // forwarded blocks are counted on from here).
                    let n = |k: &str| lines[2].get(k).and_then(Value::as_u64).unwrap_or(0);
                    book.blocks = BlockCounts {
                        found: n("blocks_found"),
                        accepted: n("blocks_accepted"),
                        rejected: n("blocks_rejected"),
                        stale: n("blocks_stale"),
                        confirmed: n("blocks_confirmed"),
                        orphaned: n("blocks_orphaned"),
                        matured: n("blocks_matured"),
                    };
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
