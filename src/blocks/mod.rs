//! Found blocks: `submitblock` to every node at once, from memory, the moment a candidate
//! arrives (the request made from the hex the template's transactions are kept in: its cost
//! does not grow with the template); the hex is saved and fsynced and blocks.log is written
//! beside the submission, never before it, and our own checks run once it has ended
//! ([`beside`]). Submission goes on until one node takes the block, every node refuses it, or
//! another block takes its height ([`decide`]); a block a node took is followed to its fate:
//! confirmations, matured or orphaned ([`fate`]). Every event is an operator log line and a
//! `blocks.log` line ([`journal`]); a restart reads blocks.log and the saved hex back, submits
//! again what no node has, and keeps following the rest. No found block is lost: the task ends
//! only once every hex is on disk, and the shutdown waits for it.
//!
//! Shape: one task ([`BlockSubmitter::run`]) owns the ledger; each block being submitted is its
//! own task (`submit.rs`, at most [`MAX_SUBMITTING`]; more wait their turn), each save a blocking
//! task beside it, so no candidate waits for another's submission or fsync, and the share path
//! only ever hands a candidate over a channel. The statistics are told without waiting on their
//! channel ([`beside::News`]). Fates are polled on their own task at each new height the template
//! source serves (and every [`FOLLOW_EVERY`]). After a handover (`-H`) the new instance reads
//! blocks.log again once the old one has exited and takes over its blocks (`takeover`).
//! `manual.rs` is `ckpool submitblock`.

pub mod beside;
pub mod decide;
pub mod fate;
pub mod found;
pub mod journal;
pub mod manual;
mod submit;

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::bitcoind::{Rpc, SubmitBody};
use crate::hex;
use crate::log::stats::StatEvent;
use crate::mining::BlockCandidate;
use beside::{Journal, News};
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
    /// Tells the statistics that a round ended, and the block counts (never waited on:
    /// [`beside::News`]; `forward_stats` hands them on).
    pub stats: mpsc::Sender<StatEvent>,
    /// The height being mined: changes with each new tip, when fates are looked at.
    pub height: watch::Receiver<u32>,
    /// Stops retrying (what no node has yet is submitted again at the next start).
    pub shutdown: watch::Receiver<bool>,
    /// After a handover (`-H`): true once the old instance has exited; blocks.log is read again
    /// then and the old instance's blocks are taken over.
    pub takeover: Option<watch::Receiver<bool>>,
    /// `ipcmining`: a block found on an IPC template also goes to that node by `submitSolution`
    /// (the link's thread sends it; the node judges it like `submitblock`).
    pub ipc: Option<mpsc::Sender<crate::bitcoind::ipc::Solution>>,
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
    /// Submits and follows blocks until the candidate channel closes (all sessions gone), the
    /// submissions in flight have ended and every found block's hex is on disk.
    pub async fn run(mut self, mut rx: mpsc::Receiver<BlockCandidate>) {
        let logdir = self.logdir.clone();
        let (mut ledger, problems) =
            tokio::task::spawn_blocking(move || load_ledger(&logdir)).await.unwrap_or_default();
        for p in problems {
            tracing::warn!("blocks: {p}");
        }
        let mut s = Run {
            queue: VecDeque::new(),
            submitting: HashSet::new(),
            to_check: HashMap::new(),
            news: News::default(),
            journal: Journal::spawn(self.logdir.clone()),
        };
        self.resume(&ledger, &mut s, "found earlier, no node has it on record").await;
        let followed = ledger.followed().len();
        if followed > 0 {
            tracing::info!("blocks: following {followed} found block(s) to maturity");
        }
        s.news.counts(ledger.counts());
        let stats = self.stats.clone();

        let origin = tokio::time::Instant::now();
        let (note_tx, mut notes) = mpsc::channel(MAX_SUBMITTING);
        let mut tasks: JoinSet<Ended> = JoinSet::new();
        let mut saves: JoinSet<()> = JoinSet::new();
        let mut closed = false;
        let mut poll: Option<tokio::task::JoinHandle<Vec<(Meta, Change)>>> = None;
        let mut reread: Option<tokio::task::JoinHandle<(Ledger, Vec<String>)>> = None;
        let mut takeover = self.takeover.take();
        let mut follow_tick = tokio::time::interval(FOLLOW_EVERY);
        follow_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut height_open = true;
        let mut want_poll = true;
        loop {
            s.news.try_send(&stats);
            let submit = |tasks: &mut JoinSet<Ended>, p: Pending| {
                tasks.spawn(submit_task(
                    self.rpc.clone(),
                    self.logdir.clone(),
                    p,
                    self.shutdown.clone(),
                    note_tx.clone(),
                    origin,
                ))
            };
            while tasks.len() < MAX_SUBMITTING {
                let Some(p) = s.queue.pop_front() else { break };
                submit(&mut tasks, p);
            }
            if closed && tasks.is_empty() && s.queue.is_empty() && saves.is_empty() && reread.is_none() {
                break;
            }
            if want_poll && poll.is_none() && !*self.shutdown.borrow() && !ledger.followed().is_empty() {
                want_poll = false;
                poll = Some(tokio::spawn(poll_fates(self.rpc.clone(), ledger.followed())));
            }
            tokio::select! {
                biased;
                c = rx.recv(), if !closed => match c {
                    Some(c) => {
                        let known = hex::encode_rev(&c.hash);
                        if s.submitting.contains(&known) || ledger.get(&known).is_some() {
                            // The same block by a second path (a job-declaring client's
                            // PushSolution beside its share): one submission, one record.
                            tracing::info!("block {known} from {} again: already submitted, not twice", c.workername);
                            continue;
                        }
                        let Some((p, witness)) = self.found(c) else { continue };
                        let (hash, height, body) = (p.meta.hash.clone(), p.meta.height, p.body.clone());
                        // Submission first, from memory; the save beside it, the checks once it
                        // has ended.
                        s.submitting.insert(hash.clone());
                        if tasks.len() < MAX_SUBMITTING {
                            submit(&mut tasks, p);
                        } else {
                            tracing::warn!("block {hash}: {MAX_SUBMITTING} blocks are being submitted; it waits its turn");
                            s.queue.push_back(p);
                        }
                        let path = hex_path(&self.logdir, height, &hash);
                        s.to_check.insert(hash.clone(), (body.clone(), witness));
                        saves.spawn(beside::save_once_sent(path, body, hash));
                    }
                    None => closed = true,
                },
                Some(ended) = tasks.join_next(), if !tasks.is_empty() => match ended {
                    Ok(e) => {
                        s.submitting.remove(&e.meta.hash);
                        if let Some((body, witness)) = s.to_check.remove(&e.meta.hash) {
                            let hash = e.meta.hash.clone();
                            saves.spawn_blocking(move || beside::check(&body.block_hex(), witness, &hash));
                        }
                        self.ended(&mut ledger, &mut s, e).await
                    }
                    Err(e) => tracing::error!("blocks: a submission task failed: {e}; its hex stays in logdir/blocks"),
                },
                Some(r) = saves.join_next(), if !saves.is_empty() => {
                    if let Err(e) = r {
                        tracing::error!("blocks: saving or checking a block's hex failed: {e}");
                    }
                }
                Some(Note::Retrying { meta, answers }) = notes.recv() => {
                    self.record(&mut ledger, &mut s, &meta, State::Pending, "retrying", json!({"answers": answers_json(&answers)})).await;
                }
                r = async { poll.as_mut().expect("guarded").await }, if poll.is_some() => {
                    poll = None;
                    for (meta, change) in r.unwrap_or_default() {
                        self.fate_changed(&mut ledger, &mut s, &meta, change).await;
                    }
                }
                gone = async { takeover.as_mut().expect("guarded").wait_for(|g| *g).await.is_ok() }, if takeover.is_some() => {
                    takeover = None;
                    if gone {
                        let logdir = self.logdir.clone();
                        reread = Some(tokio::task::spawn_blocking(move || load_ledger(&logdir)));
                    }
                }
                r = async { reread.as_mut().expect("guarded").await }, if reread.is_some() => {
                    reread = None;
                    let (theirs, problems) = r.unwrap_or_default();
                    for p in problems {
                        tracing::warn!("blocks: {p}");
                    }
                    self.take_over(&mut ledger, &mut s, theirs).await;
                    want_poll = true;
                }
                r = stats.reserve(), if !s.news.is_empty() => {
                    match (r, s.news.take_next()) {
                        (Ok(permit), Some(ev)) => permit.send(ev),
                        (Err(_), _) => s.news = News::default(), // the statistics are gone: shutdown
                        _ => {}
                    }
                }
                r = self.height.changed(), if height_open => {
                    height_open = r.is_ok();
                    want_poll = true;
                }
                _ = follow_tick.tick() => want_poll = true,
            }
        }
        s.journal.finish().await;
        s.news.send_all(&stats).await;
    }

    /// Queues the ledger's blocks that no node has for submission (their hex read back from
    /// logdir/blocks), except those being submitted already.
    async fn resume(&self, ledger: &Ledger, s: &mut Run, why: &str) {
        for meta in ledger.pending() {
            if s.submitting.contains(&meta.hash) {
                continue;
            }
            let path = hex_path(&self.logdir, meta.height, &meta.hash);
            match tokio::fs::read_to_string(&path).await {
                Ok(text) => {
                    tracing::warn!("block {} at height {}: {why}: submitting it again", meta.hash, meta.height);
                    s.submitting.insert(meta.hash.clone());
                    let body = SubmitBody::of_hex(text.trim());
                    s.queue.push_back(Pending { meta, body, resumed: true });
                }
                Err(e) => tracing::error!(
                    "block {} at height {}: cannot read {} to submit it again: {e}",
                    meta.hash,
                    meta.height,
                    path.display()
                ),
            }
        }
    }

    /// After a handover, once the old instance has exited: what its blocks.log says is folded
    /// into ours; its blocks no node has are submitted, the rest followed.
    async fn take_over(&self, ledger: &mut Ledger, s: &mut Run, theirs: Ledger) {
        let mut new = 0;
        for e in theirs.entries() {
            if ledger.get(&e.meta.hash).is_none() {
                new += 1;
            }
            ledger.set(e.meta.clone(), e.state);
            if e.max_confirmations > 0 {
                ledger.set(e.meta.clone(), State::Fate(Stage::Confirmed(e.max_confirmations)));
            }
        }
        tracing::info!(
            "blocks: the old instance has exited; blocks.log read again: {new} block(s) it found taken over, {} followed",
            ledger.followed().len()
        );
        self.resume(ledger, s, "found by the old instance, no node has it on record").await;
        s.news.counts(ledger.counts());
    }

    /// A session found a block: its `submitblock` request made, nothing else (no I/O): the hex
    /// of the block's first bytes (header, transaction count, coinbase) written, the template's
    /// transactions' hex taken as it is kept (shared), so the cost does not grow with the
    /// template. Returns the submission and whether its coinbase has a witness commitment;
    /// `None` when it cannot be assembled.
    fn found(&self, c: BlockCandidate) -> Option<(Pending, bool)> {
        let hash = hex::encode_rev(&c.hash);
        let Some((first, txs_hex)) = c.job.block_parts(&c.en1, &c.en2, &c.header) else {
            tracing::error!("block {hash} solved on work without transactions; cannot assemble");
            return None;
        };
        if let (Some(template), Some(ipc)) = (c.job.ipc_template, &self.ipc) {
            // A few hundred bytes handed to the IPC thread; never waited on.
            let first = bytes::Bytes::copy_from_slice(&first);
            if ipc.try_send(crate::bitcoind::ipc::Solution { template, first }).is_err() {
                tracing::warn!("ipcmining: the IPC link is busy or gone; block {hash} goes by submitblock only");
            }
        }
        let body = SubmitBody::of_block(&first, txs_hex);
        let height = u64::from(c.job.height);
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
        Some((Pending { meta, body, resumed: false }, c.job.coinbase.witness))
    }

    /// A submission ended: record it, fresh work, statistics.
    async fn ended(&self, ledger: &mut Ledger, s: &mut Run, e: Ended) {
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
            s.news.round_ended();
        }
        self.record(ledger, s, &e.meta, state, outcome.word(), extra).await;
    }

    async fn fate_changed(&self, ledger: &mut Ledger, s: &mut Run, meta: &Meta, change: Change) {
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
        self.record(ledger, s, meta, State::Fate(change.stage()), word, extra).await;
    }

    /// Queues the line for blocks.log, updates the ledger and the statistics' counts.
    async fn record(&self, ledger: &mut Ledger, s: &mut Run, meta: &Meta, state: State, word: &str, extra: Value) {
        let accepted = matches!(state, State::Fate(_));
        let line = journal::line(meta, word, accepted, unix_now(), extra);
        ledger.set(meta.clone(), state);
        s.journal.append(line).await;
        s.news.counts(ledger.counts());
    }
}

/// The block task's state besides the ledger.
struct Run {
    /// Blocks waiting for a submission slot.
    queue: VecDeque<Pending>,
    /// Hashes queued or being submitted (a block read back again is not submitted twice).
    submitting: HashSet<String>,
    /// Found here and being submitted: checked (`beside::check`) once its submission ends.
    to_check: HashMap<String, (SubmitBody, bool)>,
    /// What the statistics are still to be told.
    news: News,
    journal: Journal,
}

/// Hands the block task's statistics events to the statistics task, in order, waiting for room
/// there (the block task itself never waits on it); ends when the block task has ended.
pub async fn forward_stats(mut rx: mpsc::Receiver<StatEvent>, to: mpsc::Sender<StatEvent>) {
    while let Some(ev) = rx.recv().await {
        if to.send(ev).await.is_err() {
            return;
        }
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
