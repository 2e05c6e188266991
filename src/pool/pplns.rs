//! Pool mode's PPLNS payees: the window of accepted shares per payout address (fed by the
//! statistics task, one tally per session batch), the snapshot each coinbase is built from, and
//! the credit of the miners a found block did not pay carried forward. The arithmetic is
//! `payout/pplns.rs` (pure); this is its shell: a lock, the address cache, a wake-up for the
//! template source and the log lines. docs/payout.md has the rules.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::{Network, ScriptBuf};
use tokio::sync::Notify;

use crate::config::Pplns;
use crate::difficulty::{Difficulty, SCALE};
use crate::log::sharelog::{parse_accepted, Accepted};
use crate::payout::pplns::{Rules, Split, Window};
use crate::work::coinbase::PplnsPlan;

/// A new coinbase is worth building once this fraction of the window (1/n) has arrived since
/// the last one: the per-share path never builds one, and a miner's part in the coinbase lags
/// its shares by at most this much.
const REBUILD_EVERY: u128 = 64;
/// Usernames whose payout script is remembered (parsed once); beyond it the cache starts again.
const SCRIPT_CACHE: usize = 100_000;

/// The PPLNS state the statistics task feeds and the template source reads.
pub struct Payees {
    network: Option<Network>,
    cfg: Pplns,
    state: Mutex<State>,
    /// The window moved enough for a new coinbase (the template source waits on it).
    changed: Notify,
    /// `logdir`, where carried credit is recorded.
    journal: Option<PathBuf>,
}

struct State {
    window: Window<ScriptBuf>,
    scripts: HashMap<Box<str>, Option<ScriptBuf>>,
    /// Units of the window a rebuild waits for (window / REBUILD_EVERY).
    step: u128,
}

impl std::fmt::Debug for Payees {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payees").field("network", &self.network).field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// The window's length in difficulty units: `multiple × network difficulty`, exact.
pub fn window_units(multiple: Difficulty, network: Difficulty) -> u128 {
    network.mul_ratio(multiple.units(), SCALE).map_or(u128::MAX, |d| d.units()).max(1)
}

impl Payees {
    /// Empty until shares arrive (or [`Payees::replay`] fills it at start); `network` is the
    /// node's chain (None: a chain whose addresses this pool cannot parse: every miner refused).
    pub fn new(network: Option<Network>, cfg: Pplns) -> Payees {
        let units = window_units(cfg.window, Difficulty::ONE);
        Payees {
            network,
            cfg,
            state: Mutex::new(State {
                window: Window::new(units),
                scripts: HashMap::new(),
                step: (units / REBUILD_EVERY).max(1),
            }),
            changed: Notify::new(),
            journal: None,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The payout script of a username (its part before the first `.` or `_`), or why it cannot
    /// be paid: a miner authorizes with its payout address, as in solo mode.
    pub fn payout_script(&self, username: &str) -> Result<ScriptBuf, String> {
        super::username_script(username, self.network)
    }

    /// Credits `user`'s accepted share difficulty to its payout script (a name that is no
    /// address was refused at authorize; it is skipped here too).
    pub fn credit(&self, user: &str, accepted: Difficulty) {
        if accepted.is_zero() {
            return;
        }
        let mut st = self.lock();
        let script = match st.scripts.get(user) {
            Some(s) => s.clone(),
            None => {
                let s = self.payout_script(user).ok();
                if st.scripts.len() >= SCRIPT_CACHE {
                    st.scripts.clear();
                }
                st.scripts.insert(user.into(), s.clone());
                s
            }
        };
        let Some(script) = script else { return };
        st.window.push(&script, accepted.units());
        let wake = st.window.fresh() >= st.step;
        drop(st);
        if wake {
            self.changed.notify_one();
        }
    }

    /// Waits until the window has moved enough for a new coinbase.
    pub async fn changed(&self) {
        self.changed.notified().await
    }

    /// The snapshot a coinbase for a template of `network` difficulty is built from (the
    /// window's length follows the network's difficulty).
    pub fn plan(&self, network: Difficulty) -> Arc<PplnsPlan> {
        let mut st = self.lock();
        let units = window_units(self.cfg.window, network);
        if units != st.window.length() {
            st.window.set_length(units);
            st.step = (units / REBUILD_EVERY).max(1);
        }
        st.window.take_fresh();
        Arc::new(PplnsPlan {
            weights: st.window.weights(),
            rules: Rules {
                fee_bp: self.cfg.fee_bp,
                min_output: self.cfg.min_output,
                max_outputs: self.cfg.max_outputs,
                bytes: 0,
            },
            coinbase_max: self.cfg.coinbase_max,
        })
    }

    /// A block was found on a coinbase that split its value as `split`: the payees it did not
    /// pay keep their credit (their weight moves to the newest end of the window). Returns how
    /// many were carried.
    /// The carries are appended to `logdir/pplns.carry` (off the caller's task), so that a
    /// restart puts the credit back where it was.
    pub fn block_found(&self, split: &Split<ScriptBuf>) -> usize {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let mut moved = Vec::new();
        {
            let mut st = self.lock();
            for payee in &split.carried {
                let w = st.window.carry(payee);
                if w > 0 {
                    moved.push(carry_line(at, payee, w));
                }
            }
        }
        let n = moved.len();
        if let (Some(logdir), false) = (self.journal.clone(), moved.is_empty()) {
            let write = move || {
                let path = logdir.join(CARRY_FILE);
                let res = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, moved.concat().as_bytes()));
                if let Err(e) = res {
                    tracing::error!(
                        "pplns: cannot record {} carried credit(s) in {}: {e}; a restart before the next block would not restore them",
                        moved.len(),
                        path.display()
                    );
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(write)),
                Err(_) => write(),
            }
        }
        n
    }

    /// Where carried credit is recorded (`logdir`); without it, nowhere (the audit tool).
    pub fn with_journal(mut self, logdir: &Path) -> Payees {
        self.journal = Some(logdir.to_path_buf());
        self
    }

    /// Fills the window from the share log under `logdir` (at start, before miners connect):
    /// the height directories newest first until they hold a full window for a network of
    /// `network` difficulty, their accepted shares in the order they were made. Blocking.
    pub fn replay(&self, logdir: &Path, network: Difficulty) -> Replayed {
        let units = window_units(self.cfg.window, network);
        let (shares, read) = read_back(logdir, units);
        let carries = read_carries(logdir);
        let mut st = self.lock();
        st.window.set_length(units);
        st.step = (units / REBUILD_EVERY).max(1);
        let mut out = Replayed { files: read.files, lines: read.lines, ..Replayed::default() };
        // Shares and carries in the order they happened: a carry puts the weight the payee had
        // then at that point (what came before it of that payee is replaced).
        let mut carries = carries.into_iter().peekable();
        for a in shares {
            while let Some((_, script, w)) = carries.next_if(|c| c.0 <= a.at) {
                st.window.carry_as(&script, w);
                out.carries += 1;
            }
            let script = match st.scripts.get(a.username.as_str()) {
                Some(s) => s.clone(),
                None => {
                    let s = self.payout_script(&a.username).ok();
                    st.scripts.insert(a.username.as_str().into(), s.clone());
                    s
                }
            };
            if let Some(script) = script {
                st.window.push(&script, a.diff.units());
                out.shares += 1;
            }
        }
        for (_, script, w) in carries {
            st.window.carry_as(&script, w);
            out.carries += 1;
        }
        out.weight = st.window.total();
        out.payees = st.window.weights().len();
        out
    }

    /// The window's weight of one payout script (for the operator's audit and the tests).
    pub fn weight_of(&self, script: &ScriptBuf) -> u128 {
        self.lock().window.weight_of(script)
    }
}

/// What [`Payees::replay`] read back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub files: u64,
    pub lines: u64,
    pub shares: u64,
    /// Carried credits put back (`logdir/pplns.carry`).
    pub carries: u64,
    pub weight: u128,
    pub payees: usize,
}

/// The journal of carried credit under `logdir`: one JSON line per payee a found block did not
/// pay, with the weight it had then.
pub const CARRY_FILE: &str = "pplns.carry";

fn carry_line(at: (u64, u32), script: &ScriptBuf, weight: u128) -> String {
    format!(
        "{{\"createdate\":\"{},{}\",\"script\":\"{}\",\"weight\":\"{weight}\"}}\n",
        at.0,
        at.1,
        crate::hex::encode(script.as_bytes())
    )
}

/// The journal's carries in order; for each payee only its last counts (it replaces what came
/// before), so the earlier ones are left out. A line that does not read is skipped.
pub fn read_carries(logdir: &Path) -> Vec<((u64, u32), ScriptBuf, u128)> {
    let Ok(text) = std::fs::read_to_string(logdir.join(CARRY_FILE)) else { return Vec::new() };
    let mut last: HashMap<ScriptBuf, ((u64, u32), u128)> = HashMap::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let at = v["createdate"]
            .as_str()
            .and_then(|s| s.split_once(','))
            .and_then(|(s, n)| Some((s.parse().ok()?, n.parse().ok()?)));
        let script = v["script"].as_str().and_then(|h| crate::hex::decode(h).ok()).map(ScriptBuf::from_bytes);
        let weight = v["weight"].as_str().and_then(|w| w.parse::<u128>().ok());
        if let (Some(at), Some(script), Some(weight)) = (at, script, weight) {
            last.insert(script, (at, weight));
        }
    }
    let mut out: Vec<_> = last.into_iter().map(|(s, (at, w))| (at, s, w)).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    out
}

/// Lines read back at most (a bound on the start's time and memory; the window is then
/// shorter than configured until new shares fill it, and the start says so).
const REPLAY_MAX_LINES: u64 = 20_000_000;

/// Share-log files and lines read back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    pub files: u64,
    pub lines: u64,
}

/// The accepted shares of the newest height directories (`logdir/<height as 8 hex>/`) until
/// their weight reaches `units`, oldest first.
pub fn read_back(logdir: &Path, units: u128) -> (Vec<Accepted>, Read) {
    let mut read = Read::default();
    let mut dirs: Vec<(u32, PathBuf)> = match std::fs::read_dir(logdir) {
        Ok(d) => d
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                (name.len() == 8).then(|| u32::from_str_radix(&name, 16).ok()).flatten().map(|h| (h, e.path()))
            })
            .collect(),
        Err(_) => return (Vec::new(), read),
    };
    dirs.sort_by_key(|d| std::cmp::Reverse(d.0));
    let mut out = Vec::new();
    let mut weight = 0u128;
    'dirs: for (_, dir) in dirs {
        let Ok(files) = std::fs::read_dir(&dir) else { continue };
        for f in files.flatten() {
            if f.path().extension().is_none_or(|e| e != "sharelog") {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(f.path()) else {
                tracing::warn!("pplns: cannot read {} back; its shares are not in the window", f.path().display());
                continue;
            };
            read.files += 1;
            for line in text.lines() {
                read.lines += 1;
                if let Some(a) = parse_accepted(line) {
                    weight = weight.saturating_add(a.diff.units());
                    out.push(a);
                }
                if read.lines >= REPLAY_MAX_LINES {
                    tracing::warn!(
                        "pplns: read {REPLAY_MAX_LINES} share-log lines back and stopped; the window holds what they hold"
                    );
                    break 'dirs;
                }
            }
        }
        if weight >= units {
            break;
        }
    }
    out.sort_by_key(|a| a.at);
    (out, read)
}

impl crate::log::stats::ShareSink for Payees {
    fn credit(&self, user: &str, accepted: Difficulty) {
        Payees::credit(self, user, accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Pplns {
        Pplns { window: Difficulty::from_integer(2), fee_bp: 0, min_output: 546, max_outputs: 100, coinbase_max: 750 }
    }

    const A: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

    #[test]
    fn shares_are_credited_to_the_address_before_the_worker_name() {
        let p = Payees::new(Some(Network::Regtest), cfg());
        let plan = p.plan(Difficulty::from_integer(1_000)); // window 2,000
        assert!(plan.weights.is_empty());
        p.credit(&format!("{A}.rig1"), Difficulty::from_integer(3));
        p.credit(&format!("{A}_rig2"), Difficulty::from_integer(4));
        p.credit("not-an-address", Difficulty::from_integer(5));
        let script = p.payout_script(A).unwrap();
        assert_eq!(p.weight_of(&script), Difficulty::from_integer(7).units());
        let plan = p.plan(Difficulty::from_integer(1_000));
        assert_eq!(plan.weights.len(), 1);
        assert!(p.payout_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2").is_err(), "mainnet address on regtest");
    }

    /// A carried payee whose shares are older than what the share log gives back keeps its
    /// credit after a restart: the journal puts its weight back where the carry left it.
    #[test]
    fn a_restart_puts_carried_credit_back() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path();
        let p = Payees::new(Some(Network::Regtest), cfg()).with_journal(logdir);
        let script = p.payout_script(A).unwrap();
        let line = |at: u64, diff: &str| {
            format!(
                "{{\"diff\":{diff},\"result\":true,\"createdate\":\"{at},0\",\"username\":\"{A}\",\"workername\":\"{A}.x\"}}\n"
            )
        };
        // The share log holds only a later share of the payee (the older ones were in files
        // since removed); the journal says it was carried with weight 5 before it.
        std::fs::create_dir_all(logdir.join("00000010")).unwrap();
        std::fs::write(logdir.join("00000010").join("0000000000000001.sharelog"), line(2_000_000_000, "2")).unwrap();
        std::fs::write(
            logdir.join(CARRY_FILE),
            carry_line((1_000_000_000, 0), &script, 3 * SCALE) + &carry_line((1_500_000_000, 0), &script, 5 * SCALE),
        )
        .unwrap();
        let r = p.replay(logdir, Difficulty::from_integer(1_000));
        assert_eq!((r.shares, r.carries), (1, 1), "only the payee's last carry counts");
        assert_eq!(p.weight_of(&script), 7 * SCALE);
        // A live carry is appended to the journal (no runtime here: written at once).
        let split =
            Split { paid: vec![], fee: 0, remainder: 0, carried: vec![script.clone()], total: 0, total_paid: 0 };
        assert_eq!(p.block_found(&split), 1);
        let again = read_carries(logdir);
        assert_eq!(again.len(), 1);
        assert_eq!((&again[0].1, again[0].2), (&script, 7 * SCALE));
    }

    #[test]
    fn the_window_follows_the_network_difficulty() {
        assert_eq!(window_units(Difficulty::from_integer(2), Difficulty::from_integer(1_000)), 2_000 * SCALE);
        let half: Difficulty = "0.5".parse().unwrap();
        let regtest: Difficulty = "0.000000000465".parse().unwrap();
        assert_eq!(window_units(half, regtest), 232);
        assert_eq!(window_units(half, Difficulty::ZERO), 1);
    }
}
