//! Found blocks: the hex goes to disk first (so no found block can be lost), then `submitblock`
//! to every node until one takes it, every node refuses it, or another block takes its height
//! ([`decide`]); a block a node took is followed to its fate: confirmations, matured or orphaned
//! ([`fate`]). Every event is an operator log line and a `blocks.log` line ([`journal`]); a
//! restart reads blocks.log back, submits again what no node has, and keeps following the rest.
//!
//! Shape: one task ([`BlockSubmitter::run`]) owns the ledger and blocks.log; each block being
//! submitted is its own task (`submit.rs`, at most [`MAX_SUBMITTING`]; more wait their turn,
//! already on disk), so a block waiting for a node never holds up the next one, and the share
//! path only ever hands a candidate over a channel. Fates are polled on their own task at each
//! new height the template source serves (and every [`FOLLOW_EVERY`]). `manual.rs` is
//! `ckpool submitblock`.

pub mod decide;
pub mod fate;
pub mod found;
pub mod journal;
pub mod manual;
mod submit;

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::consensus::encode::deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::bitcoind::Rpc;
use crate::hex;
use crate::log::stats::StatEvent;
use crate::mining::BlockCandidate;
use decide::Outcome;
use fate::{Change, Stage};
use journal::{Ledger, Meta, State};
use submit::{submit_task, Ended, Note, Pending};

/// Blocks submitted at once; later ones wait (their hex is already on disk).
pub const MAX_SUBMITTING: usize = 32;
/// Fate polling when no new tip has been seen for this long.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(30);

pub struct BlockSubmitter {
    pub rpc: Arc<Rpc>,
    pub logdir: PathBuf,
    /// Asks the template source for fresh work after a block.
    pub refresh: mpsc::Sender<Option<[u8; 32]>>,
    /// Tells the statistics that a round ended, and the block counts.
    pub stats: mpsc::Sender<StatEvent>,
    /// The height being mined: changes with each new tip, when fates are looked at.
    pub height: watch::Receiver<u32>,
    /// Stops retrying (what no node has yet is submitted again at the next start).
    pub shutdown: watch::Receiver<bool>,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// `logdir/blocks/<height>-<hash>.hex`.
pub fn hex_path(logdir: &Path, height: u64, hash: &str) -> PathBuf {
    logdir.join("blocks").join(format!("{height:08}-{hash}.hex"))
}

/// Reads blocks.log and the saved hex files (blocking).
pub fn load_ledger(logdir: &Path) -> (Ledger, Vec<String>) {
    let path = logdir.join("blocks.log");
    let (mut ledger, mut notes) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (l, bad) = Ledger::parse(&text);
            (l, bad.into_iter().map(|b| format!("{}: {b}", path.display())).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Ledger::default(), Vec::new()),
        Err(e) => (Ledger::default(), vec![format!("cannot read {}: {e}", path.display())]),
    };
    if let Ok(dir) = std::fs::read_dir(logdir.join("blocks")) {
        for f in dir.flatten() {
            match journal::parse_hex_name(&f.file_name().to_string_lossy()) {
                Some((height, hash)) => ledger.add_saved(height, &hash),
                None => notes.push(format!("{}: not a <height>-<hash>.hex name, ignored", f.path().display())),
            }
        }
    }
    (ledger, notes)
}

/// Appends one line to logdir/blocks.log (blocking).
pub fn append_line(logdir: &Path, line: &Value) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(logdir.join("blocks.log"))?;
    f.write_all(format!("{line}\n").as_bytes())
}

impl BlockSubmitter {
    /// Submits and follows blocks until the candidate channel closes (all sessions gone) and the
    /// submissions in flight have ended.
    pub async fn run(mut self, mut rx: mpsc::Receiver<BlockCandidate>) {
        let logdir = self.logdir.clone();
        let (mut ledger, problems) =
            tokio::task::spawn_blocking(move || load_ledger(&logdir)).await.unwrap_or_default();
        for p in problems {
            tracing::warn!("blocks: {p}");
        }
        let mut queue = VecDeque::new();
        for meta in ledger.pending() {
            let path = hex_path(&self.logdir, meta.height, &meta.hash);
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    tracing::warn!(
                        "block {} at height {}: found earlier, no node has it on record: submitting it again",
                        meta.hash,
                        meta.height
                    );
                    queue.push_back(Pending { meta, hex: text.trim().into(), resumed: true });
                }
                Err(e) => tracing::error!(
                    "block {} at height {}: cannot read {} to submit it again: {e}",
                    meta.hash,
                    meta.height,
                    path.display()
                ),
            }
        }
        let followed = ledger.followed().len();
        if followed > 0 {
            tracing::info!("blocks: following {followed} found block(s) to maturity");
        }
        let _ = self.stats.send(StatEvent::Blocks(ledger.counts())).await;

        let origin = tokio::time::Instant::now();
        let (note_tx, mut notes) = mpsc::channel(MAX_SUBMITTING);
        let mut tasks: JoinSet<Ended> = JoinSet::new();
        let mut closed = false;
        let mut poll: Option<tokio::task::JoinHandle<Vec<(Meta, Change)>>> = None;
        let mut follow_tick = tokio::time::interval(FOLLOW_EVERY);
        follow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut height_open = true;
        let mut want_poll = true;
        loop {
            while tasks.len() < MAX_SUBMITTING {
                let Some(p) = queue.pop_front() else { break };
                tasks.spawn(submit_task(
                    self.rpc.clone(),
                    self.logdir.clone(),
                    p,
                    self.shutdown.clone(),
                    note_tx.clone(),
                    origin,
                ));
            }
            if closed && tasks.is_empty() && queue.is_empty() {
                break;
            }
            if want_poll && poll.is_none() && !*self.shutdown.borrow() && !ledger.followed().is_empty() {
                want_poll = false;
                poll = Some(tokio::spawn(poll_fates(self.rpc.clone(), ledger.followed())));
            }
            tokio::select! {
                c = rx.recv(), if !closed => match c {
                    Some(c) => {
                        if let Some(p) = self.found(c).await {
                            if tasks.len() >= MAX_SUBMITTING {
                                tracing::warn!(
                                    "block {}: {MAX_SUBMITTING} blocks are being submitted; it waits its turn (saved on disk)",
                                    p.meta.hash
                                );
                            }
                            queue.push_back(p);
                        }
                    }
                    None => closed = true,
                },
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => match ended {
                    Ok(e) => self.ended(&mut ledger, e).await,
                    Err(e) => tracing::error!("blocks: a submission task failed: {e}; its hex stays in logdir/blocks"),
                },
                Some(Note::Retrying { meta, answers }) = notes.recv() => {
                    self.record(&mut ledger, &meta, State::Pending, "retrying", json!({"answers": answers_json(&answers)})).await;
                }
                r = async { poll.as_mut().expect("guarded").await }, if poll.is_some() => {
                    poll = None;
                    for (meta, change) in r.unwrap_or_default() {
                        self.fate_changed(&mut ledger, &meta, change).await;
                    }
                }
                r = self.height.changed(), if height_open => {
                    height_open = r.is_ok();
                    want_poll = true;
                }
                _ = follow_tick.tick() => want_poll = true,
            }
        }
    }

    /// A session found a block: assemble, save, check, log. `None` when it cannot be assembled.
    async fn found(&self, c: BlockCandidate) -> Option<Pending> {
        let hash = hex::encode_rev(&c.hash);
        let Some(block) = c.job.assemble_block(&c.en1, &c.en2, &c.header) else {
            tracing::error!("block {hash} solved on work without transactions; cannot assemble");
            return None;
        };
        let block_hex: Arc<str> = hex::encode(&block).into();
        let height = u64::from(c.job.height);
        // 1. Disk first.
        let path = hex_path(&self.logdir, height, &hash);
        let saved = tokio::task::spawn_blocking({
            let path = path.clone();
            let data = block_hex.clone();
            move || -> std::io::Result<()> {
                std::fs::create_dir_all(path.parent().expect("under logdir/blocks"))?;
                let mut f = std::fs::File::create(&path)?;
                f.write_all(data.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()
            }
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("could not save block {hash} to {}: {e}; submitting anyway", path.display()),
            Err(e) => tracing::error!("could not save block {hash}: {e}; submitting anyway"),
        }
        // 2. Our own consensus sanity checks (the node is the judge; this is for the log).
        match deserialize::<bitcoin::Block>(&block) {
            Ok(b) => {
                if !b.check_merkle_root() {
                    tracing::error!("block {hash}: merkle root check FAILED before submission");
                }
                if c.job.coinbase.witness && !b.check_witness_commitment() {
                    tracing::error!("block {hash}: witness commitment check FAILED before submission");
                }
            }
            Err(e) => tracing::warn!("block {hash}: does not decode as a bitcoin block ({e})"),
        }
        tracing::info!(
            "BLOCK FOUND: height {height} hash {hash} by {} (share difficulty {}); submitting to {} node(s)",
            c.workername,
            c.difficulty,
            self.rpc.node_count()
        );
        let meta = Meta {
            height,
            hash,
            workername: c.workername.to_string(),
            username: c.username.to_string(),
            diff: c.difficulty.as_f64(),
            workinfoid: c.job.id,
        };
        Some(Pending { meta, hex: block_hex, resumed: false })
    }

    /// A submission ended: record it, fresh work, statistics.
    async fn ended(&self, ledger: &mut Ledger, e: Ended) {
        let Some(outcome) = e.outcome else { return };
        let answers = answers_json(&e.answers);
        let (state, extra) = match &outcome {
            Outcome::Accepted { nodes } => (State::Fate(Stage::Accepted), json!({"answers": answers, "nodes": nodes})),
            Outcome::Rejected { reasons } => (State::Rejected, json!({"answers": answers, "reasons": reasons})),
            Outcome::Stale { by, tip } => (State::Stale, json!({"answers": answers, "by": by, "tip": tip})),
        };
        let accepted = matches!(outcome, Outcome::Accepted { .. });
        // Fresh work on top of our block when a node took it, else whatever the node has.
        let tip = if accepted { hex::decode_hash_rev(&e.meta.hash).ok() } else { None };
        let _ = self.refresh.try_send(tip);
        if accepted {
            let _ = self.stats.send(StatEvent::BlockFound).await;
        }
        self.record(ledger, &e.meta, state, outcome.word(), extra).await;
    }

    async fn fate_changed(&self, ledger: &mut Ledger, meta: &Meta, change: Change) {
        let (word, extra) = match &change {
            Change::Confirmed { confirmations } => {
                tracing::info!("block {} at height {}: {confirmations} confirmation(s)", meta.hash, meta.height);
                ("confirmed", json!({"confirmations": confirmations}))
            }
            Change::Matured { confirmations } => {
                tracing::info!(
                    "block {} at height {}: matured ({confirmations} confirmations); no longer followed",
                    meta.hash,
                    meta.height
                );
                ("matured", json!({"confirmations": confirmations}))
            }
            Change::Orphaned { by } => {
                tracing::error!(
                    "block {} at height {}: ORPHANED: the node's chain has block {by} at that height",
                    meta.hash,
                    meta.height
                );
                ("orphaned", json!({"by": by}))
            }
        };
        self.record(ledger, meta, State::Fate(change.stage()), word, extra).await;
    }

    /// Appends the line, updates the ledger and the statistics' counts.
    async fn record(&self, ledger: &mut Ledger, meta: &Meta, state: State, word: &str, extra: Value) {
        let accepted = matches!(state, State::Fate(_));
        let line = journal::line(meta, word, accepted, unix_now(), extra);
        ledger.set(meta.clone(), state);
        let logdir = self.logdir.clone();
        match tokio::task::spawn_blocking(move || append_line(&logdir, &line)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("could not append to {}: {e}", self.logdir.join("blocks.log").display()),
            Err(e) => tracing::error!("could not append to blocks.log: {e}"),
        }
        let _ = self.stats.send(StatEvent::Blocks(ledger.counts())).await;
    }
}

fn answers_json(answers: &[(String, String)]) -> Value {
    answers.iter().map(|(n, a)| json!({"node": n, "answer": a})).collect()
}

/// Asks the node (failover order) about each followed block; the changes to record.
async fn poll_fates(rpc: Arc<Rpc>, followed: Vec<(Meta, Stage)>) -> Vec<(Meta, Change)> {
    let tip = match rpc.call("getblockcount", json!([])).await {
        Ok(v) => v.as_u64(),
        Err(e) => {
            tracing::debug!("blocks: cannot follow found blocks now: {e}");
            None
        }
    };
    let Some(tip) = tip else { return Vec::new() };
    let mut out = Vec::new();
    for (meta, stage) in followed {
        if tip < meta.height {
            continue;
        }
        let at = match rpc.call("getblockhash", json!([meta.height])).await {
            Ok(v) => v.as_str().map(String::from),
            Err(e) => {
                tracing::debug!("blocks: getblockhash {}: {e}", meta.height);
                continue;
            }
        };
        if let Some(change) = fate::observe(stage, meta.height, &meta.hash, tip, at.as_deref()) {
            out.push((meta, change));
        }
    }
    out
}
