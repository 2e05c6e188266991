//! Pool mode's PPLNS payees: the window of accepted shares per payout address (fed by the
//! statistics task, one tally per session batch), the snapshot each coinbase is built from, and
//! the credit of the miners a found block did not pay carried forward. The arithmetic is
//! `payout/pplns.rs` (pure); this is its shell: a lock, the address cache, a wake-up for the
//! template source and the log lines. docs/payout.md has the rules.
//!
//! What it keeps on disk under `logdir`, beside the share log: the carries and the found
//! blocks' windows (`journal.rs`), the window's snapshot a start reads (`snapshot.rs`); the
//! share log read back after it (`replay.rs`).

pub mod journal;
pub mod replay;
pub mod snapshot;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::{Network, ScriptBuf};
use tokio::sync::Notify;

use crate::config::Pplns;
use crate::difficulty::{Difficulty, SCALE};
use crate::payout::pplns::{Rules, Split, Window};
use crate::work::coinbase::PplnsPlan;
pub use journal::{read_carries, CARRY_FILE};
use journal::{BlockRecord, Carry};
pub use replay::{read_back, Bounds, Read};
use snapshot::Snapshot;

/// Now, as the share log writes a `createdate`.
fn now() -> (u64, u32) {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()))
}

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
    /// `logdir`, where carried credit and found blocks are recorded.
    journal: Option<PathBuf>,
    /// Held while the journals are written (appends and a compaction never interleave).
    writing: Arc<Mutex<()>>,
}

struct State {
    window: Window<ScriptBuf>,
    scripts: HashMap<Box<str>, Option<ScriptBuf>>,
    /// Units of the window a rebuild waits for (window / REBUILD_EVERY).
    step: u128,
    /// Each payee still carried in the window: its newest carry (what `pplns.carry` compacts to).
    carries: HashMap<ScriptBuf, Carry>,
    /// Lines `pplns.carry` holds.
    carry_lines: u64,
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
                carries: HashMap::new(),
                carry_lines: 0,
            }),
            changed: Notify::new(),
            journal: None,
            writing: Arc::new(Mutex::new(())),
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
            cut: now(),
            window: st.window.length(),
        })
    }

    /// A block was found at `height` (`hash` in header byte order) on a coinbase that split its
    /// value as `split` by `plan`: the payees it did not pay keep their credit (their weight
    /// moves to the newest end of the window). Returns how many were carried.
    /// Off the caller's task, the carries are appended to `logdir/pplns.carry` (compacted when a
    /// carried payee has left the window or the file holds far more lines than payees) and the
    /// block's window to `logdir/pplns.blocks`, so that a restart puts the credit back and
    /// `ckpool pplns --height` can audit the block.
    pub fn block_found(
        &self,
        split: &Split<ScriptBuf>,
        plan: Option<&PplnsPlan>,
        height: u32,
        hash: &[u8; 32],
    ) -> usize {
        let at = now();
        let (moved, rewrite, record) = {
            let mut st = self.lock();
            let record = plan.map(|p| BlockRecord {
                height,
                hash: crate::hex::encode_rev(hash),
                found: at,
                cut: p.cut,
                window: p.window,
                weights: p.weights.clone(),
                carries: journal::sorted(
                    st.carries
                        .values()
                        .filter(|c| c.at <= p.cut && p.weights.contains_key(&c.script))
                        .cloned()
                        .collect(),
                ),
            });
            let mut moved = Vec::new();
            for payee in &split.carried {
                let weight = st.window.carry(payee);
                if weight > 0 {
                    let c = Carry { at, script: payee.clone(), weight };
                    st.carries.insert(payee.clone(), c.clone());
                    moved.push(c);
                }
            }
            st.carry_lines += moved.len() as u64;
            let rewrite = st.compaction();
            (moved, rewrite, record)
        };
        let n = moved.len();
        if let Some(logdir) = self.journal.clone() {
            let writing = self.writing.clone();
            let write = move || {
                let _held = writing.lock().unwrap_or_else(|p| p.into_inner());
                let path = logdir.join(CARRY_FILE);
                let res = match &rewrite {
                    Some(live) => journal::rewrite_carries(&logdir, live),
                    None if moved.is_empty() => Ok(()),
                    None => journal::append_carries(&logdir, &moved),
                };
                match (res, &rewrite) {
                    (Err(e), _) => tracing::error!(
                        "pplns: cannot record {} carried credit(s) in {}: {e}; a restart before the next block would not restore them",
                        moved.len(),
                        path.display()
                    ),
                    (Ok(()), Some(live)) => {
                        tracing::info!("pplns: {} compacted to the {} payee(s) still carried in the window", path.display(), live.len())
                    }
                    (Ok(()), None) => {}
                }
                if let Some(r) = record {
                    if let Err(e) = journal::append_block(&logdir, &r) {
                        tracing::error!(
                            "pplns: cannot record block {} in {}: {e}; `ckpool pplns --height {}` cannot audit it",
                            r.hash,
                            logdir.join(journal::BLOCKS_FILE).display(),
                            r.height
                        );
                    }
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

    /// Fills the window at start (before miners connect), for a network of `network`
    /// difficulty: from the snapshot `logdir/pplns.window` and the share log's lines after it,
    /// or, without a usable snapshot (the start says why), from the share log's height
    /// directories newest first until they hold a full window; then the carries of
    /// `logdir/pplns.carry` made after that. Blocking.
    pub fn replay(&self, logdir: &Path, network: Difficulty) -> Replayed {
        let units = window_units(self.cfg.window, network);
        let (carries, lines) = read_carries(logdir);
        let snap = match snapshot::read(logdir) {
            Ok(s) => s,
            Err(why) => {
                tracing::warn!(
                    "pplns: the window's snapshot {} is not used ({why}); the window is rebuilt from the share log",
                    logdir.join(snapshot::SNAPSHOT_FILE).display()
                );
                None
            }
        };
        let cut = snap.as_ref().map(|s| s.cut);
        let (shares, read) = read_back(logdir, units, &Bounds { after: cut, ..Bounds::default() });
        let mut st = self.lock();
        let st = &mut *st;
        st.window = match snap {
            Some(s) => Window::from_slices(s.window, s.slices),
            None => Window::new(units),
        };
        st.window.set_length(units);
        st.step = (units / REBUILD_EVERY).max(1);
        let after: Vec<Carry> = carries.iter().filter(|c| cut.is_none_or(|t| c.at > t)).cloned().collect();
        let scripts = &mut st.scripts;
        let network = self.network;
        let counted = replay::rebuild(&mut st.window, shares, after, |user| {
            scripts.entry(user.into()).or_insert_with(|| super::username_script(user, network).ok()).clone()
        });
        st.carries = carries.into_iter().map(|c| (c.script.clone(), c)).collect();
        st.carry_lines = lines;
        let rewrite = st.compaction();
        if let Some(live) = rewrite.filter(|_| self.journal.is_some()) {
            let _held = self.writing.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = journal::rewrite_carries(logdir, &live) {
                tracing::error!("pplns: cannot compact {}: {e}", logdir.join(CARRY_FILE).display());
            }
        }
        Replayed {
            files: read.files,
            lines: read.lines,
            shares: counted.shares,
            carries: counted.carries,
            weight: st.window.total(),
            payees: st.window.weights().len(),
            snapshot: cut,
        }
    }

    /// Writes the window's snapshot under `logdir` (periodically and at a clean stop, once the
    /// statistics task has credited every share). Blocking. Returns the payees and slices kept.
    pub fn save_snapshot(&self, logdir: &Path) -> std::io::Result<(usize, usize)> {
        let s = {
            let st = self.lock();
            Snapshot { window: st.window.length(), cut: now(), slices: st.window.slices() }
        };
        let payees = s.slices.iter().flatten().map(|(k, _)| k).collect::<std::collections::BTreeSet<_>>().len();
        let _held = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        snapshot::write(logdir, &s)?;
        Ok((payees, s.slices.len()))
    }

    /// The window's weight of one payout script (for the operator's audit and the tests).
    pub fn weight_of(&self, script: &ScriptBuf) -> u128 {
        self.lock().window.weight_of(script)
    }
}

impl State {
    /// Forgets the carries of payees that have left the window; the journal's content when it
    /// is worth rewriting (one has left, or it holds far more lines than payees carried).
    fn compaction(&mut self) -> Option<Vec<Carry>> {
        let before = self.carries.len();
        let window = &self.window;
        self.carries.retain(|s, _| window.weight_of(s) > 0);
        let gone = self.carries.len() < before;
        if !gone && !journal::needs_compaction(self.carry_lines, self.carries.len()) {
            return None;
        }
        self.carry_lines = self.carries.len() as u64;
        Some(self.carries.values().cloned().collect())
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
    /// The cut of the snapshot the window started from (None: none was used).
    pub snapshot: Option<(u64, u32)>,
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

    /// A second regtest address (P2WSH of OP_TRUE).
    fn b_addr() -> String {
        bitcoin::Address::p2wsh(&ScriptBuf::from_bytes(vec![0x51]), Network::Regtest).to_string()
    }

    /// A share-log line of `user` at `at` seconds.
    fn line(user: &str, at: u64, diff: &str) -> String {
        format!(
            "{{\"diff\":{diff},\"result\":true,\"createdate\":\"{at},0\",\"username\":\"{user}\",\"workername\":\"{user}.x\"}}\n"
        )
    }

    fn share_log(logdir: &Path, height: u32, lines: &str) {
        let dir = logdir.join(format!("{height:08x}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0000000000000001.sharelog"), lines).unwrap();
    }

    fn carried(script: &ScriptBuf) -> Split<ScriptBuf> {
        Split { paid: vec![], fee: 0, remainder: 0, carried: vec![script.clone()], total: 0, total_paid: 0 }
    }

    fn carry(at: u64, script: &ScriptBuf, weight: u128) -> Carry {
        Carry { at: (at, 0), script: script.clone(), weight }
    }

    /// A carried payee whose shares are older than what the share log gives back keeps its
    /// credit after a restart: the journal puts its weight back where the carry left it.
    #[test]
    fn a_restart_puts_carried_credit_back() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path();
        let p = Payees::new(Some(Network::Regtest), cfg()).with_journal(logdir);
        let script = p.payout_script(A).unwrap();
        // The share log holds only a later share of the payee (the older ones were in files
        // since removed); the journal says it was carried with weight 5 before it.
        share_log(logdir, 0x10, &line(A, 2_000_000_000, "2"));
        journal::append_carries(
            logdir,
            &[carry(1_000_000_000, &script, 3 * SCALE), carry(1_500_000_000, &script, 5 * SCALE)],
        )
        .unwrap();
        let r = p.replay(logdir, Difficulty::from_integer(1_000));
        assert_eq!((r.shares, r.carries, r.snapshot), (1, 1, None), "only the payee's last carry counts");
        assert_eq!(p.weight_of(&script), 7 * SCALE);
        // A live carry is appended to the journal (no runtime here: written at once).
        assert_eq!(p.block_found(&carried(&script), None, 1, &[0; 32]), 1);
        let (again, _) = read_carries(logdir);
        assert_eq!(again.len(), 1);
        assert_eq!((&again[0].script, again[0].weight), (&script, 7 * SCALE));
    }

    /// `pplns.carry` is rewritten to the payees still carried in the window once one has left
    /// it; the block's window is recorded in `pplns.blocks`.
    #[test]
    fn the_carry_journal_is_compacted_when_a_carried_payee_leaves_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path();
        let p = Payees::new(Some(Network::Regtest), cfg()).with_journal(logdir);
        let a = p.payout_script(A).unwrap();
        let network = Difficulty::from_integer(1_000); // window 2,000
        p.plan(network);
        p.credit(A, Difficulty::from_integer(7));
        p.credit(&b_addr(), Difficulty::from_integer(100));
        for _ in 0..3 {
            assert_eq!(p.block_found(&carried(&a), None, 1, &[0; 32]), 1);
        }
        let (c, lines) = read_carries(logdir);
        assert_eq!((c.len(), lines), (1, 3), "appended while A is in the window");
        // B's shares fill the window twice over: A's carried weight leaves it.
        for _ in 0..40 {
            p.credit(&b_addr(), Difficulty::from_integer(100));
        }
        assert_eq!(p.weight_of(&a), 0);
        let plan = p.plan(network);
        assert_eq!(p.block_found(&carried(&a), Some(&plan), 2, &[7; 32]), 0);
        assert_eq!(read_carries(logdir), (vec![], 0), "rewritten without A");
        let rec = journal::find_block(logdir, &crate::hex::encode_rev(&[7; 32])).unwrap();
        assert_eq!((rec.height, rec.cut, rec.weights.clone()), (2, plan.cut, plan.weights.clone()));
        assert!(rec.carries.is_empty(), "A's carry had left the window");
        // Many carries of payees still in the window: compacted past the size bound.
        p.credit(A, Difficulty::from_integer(1));
        for _ in 0..journal::COMPACT_LINES + 1 {
            p.block_found(&carried(&a), None, 3, &[0; 32]);
        }
        let (c, lines) = read_carries(logdir);
        assert_eq!(c.len(), 1);
        assert!(lines < 10, "{lines} lines");
    }

    /// A start reads the snapshot and only the share-log lines after it; a corrupt snapshot is
    /// set aside and the share log read back instead.
    #[test]
    fn a_start_reads_the_snapshot_then_the_share_log_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path();
        let network = Difficulty::from_integer(1_000);
        let p = Payees::new(Some(Network::Regtest), cfg()).with_journal(logdir);
        let (a, b) = (p.payout_script(A).unwrap(), p.payout_script(&b_addr()).unwrap());
        // The share log has A 3 + B 4 before the snapshot; the window (credited live) agrees.
        let before = now().0 - 100;
        share_log(logdir, 0x10, &(line(A, before, "3") + &line(&b_addr(), before, "4")));
        p.plan(network);
        p.credit(A, Difficulty::from_integer(3));
        p.credit(&b_addr(), Difficulty::from_integer(4));
        p.save_snapshot(logdir).unwrap();
        // A later share of A (after the snapshot) is in a newer height's file.
        share_log(logdir, 0x11, &line(A, now().0 + 100, "5"));
        let q = Payees::new(Some(Network::Regtest), cfg()).with_journal(logdir);
        let r = q.replay(logdir, network);
        assert!(r.snapshot.is_some());
        assert_eq!(r.shares, 1, "only the share after the snapshot is replayed");
        assert_eq!((q.weight_of(&a), q.weight_of(&b)), (8 * SCALE, 4 * SCALE));
        // Corrupt: the share log is read back whole, with the same result.
        let path = logdir.join(snapshot::SNAPSHOT_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 3;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let q = Payees::new(Some(Network::Regtest), cfg());
        let r = q.replay(logdir, network);
        assert_eq!((r.snapshot, r.shares), (None, 3));
        assert_eq!((q.weight_of(&a), q.weight_of(&b)), (8 * SCALE, 4 * SCALE));
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
