//! The stats task: applies events, rewrites the files every interval, publishes the summary.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use crate::mining::Work;

use super::book::*;
use super::format::*;
use super::*;

pub(super) fn now(mono_origin: tokio::time::Instant) -> Now {
    Now {
        mono_us: mono_origin.elapsed().as_micros() as u64,
        unix: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
    }
}

/// How soon a change of who is connected, or of the found blocks, reaches the API's view.
const VIEW_REFRESH: Duration = Duration::from_secs(1);

/// Whether an event changes the counts the API shows (miners, users, blocks); shares do not
/// count here: their tallies reach the view at each write.
fn changes_counts(ev: &StatEvent) -> bool {
    !matches!(ev, StatEvent::Shares { .. } | StatEvent::Agent { .. })
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
    /// A reload's new `stats_interval` (SIGHUP).
    pub live: Option<tokio::sync::watch::Receiver<crate::reload::Live>>,
    /// The history store's feed (`history::Feed`): tallies summed per minute, handed over at
    /// each write.
    pub history: Option<Box<dyn HistorySink>>,
    /// After a handover (`-H`): true once the old instance has exited. Until then the files are
    /// the old instance's: nothing is written; then they are read again and taken over
    /// ([`Book::take_over`]).
    pub predecessor: Option<watch::Receiver<bool>>,
    /// `stats_forget`: a worker with no connection and no accepted share for this long is
    /// forgotten (zero: never).
    pub forget: Duration,
    /// PPLNS (`pool/pplns.rs`): every tally's accepted difficulty is credited to its user.
    pub payees: Option<Arc<dyn ShareSink>>,
}

/// Where the statistics task hands each user's accepted share difficulty (implemented by the
/// PPLNS payees; a trait so that the statistics do not depend on the work source).
pub trait ShareSink: Send + Sync {
    fn credit(&self, user: &str, accepted: crate::difficulty::Difficulty);
}

/// Where the statistics task hands what the history store keeps (implemented by
/// `history::Feed`; a trait so that the statistics do not depend on the store).
pub trait HistorySink: Send {
    /// A session's tally, judged at `unix`; `known`: the worker has had an accepted share (a
    /// name that never had one costs no per-worker row).
    fn shares(&mut self, unix: u64, user: &Arc<str>, worker: &Arc<str>, t: &crate::mining::ShareTally, known: bool);
    /// blocks.log changed (a block found or its fate moved on).
    fn blocks_changed(&mut self);
    /// Hands what was summed to the store (never waits): called at each statistics write.
    fn flush(&mut self, unix: u64, workers: u64, netdiff: Option<crate::difficulty::Difficulty>);
    /// Closes the feed and waits for the store's last write (blocking: call off the runtime).
    fn finish(self: Box<Self>);
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
    pub(super) async fn run(mut self, mut book: Book, mut rx: mpsc::Receiver<StatEvent>, origin: tokio::time::Instant) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // What the files of the last run said, for the operator's API until the first write.
        let network = self.work.borrow().as_ref().map(|w| w.network_diff);
        self.view.send_replace(Arc::new(book.view(now(origin), network)));
        let mut batch = Vec::with_capacity(256);
        // Miners coming and going and found blocks reach the API within a second, not at the next
        // write (a restarted pool showed zeros until then); share tallies wait for the write.
        let mut view_tick = tokio::time::interval(VIEW_REFRESH);
        view_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut view_stale = false;
        // The files as they were when this instance started, while the old instance still has them.
        let mut start = self.predecessor.is_some().then(|| book.clone());
        let mut held = start.is_some();
        loop {
            tokio::select! {
                gone = async { self.predecessor.as_mut().expect("guarded").wait_for(|g| *g).await.is_ok() }, if self.predecessor.is_some() => {
                    self.predecessor = None;
                    if let (true, Some(start)) = (gone, start.take()) {
                        let (logdir, t) = (self.logdir.clone(), now(origin));
                        match tokio::task::spawn_blocking(move || Book::load(&logdir, t)).await {
                            Ok((last, what)) => {
                                book.take_over(&start, last);
                                tracing::info!("stats: the old instance has exited; its files taken over ({what})");
                            }
                            Err(e) => tracing::error!("stats: reading the old instance's files failed: {e}"),
                        }
                        held = false;
                        self.write(&mut book, now(origin)).await;
                    }
                }
                _ = view_tick.tick(), if view_stale => {
                    view_stale = false;
                    let network = self.work.borrow().as_ref().map(|w| w.network_diff);
                    self.view.send_replace(Arc::new(book.view(now(origin), network)));
                }
                n = rx.recv_many(&mut batch, 1024) => {
                    if n == 0 {
                        break;
                    }
                    let t = now(origin);
                    view_stale |= batch.iter().any(changes_counts);
                    for ev in batch.drain(..) {
                        if let (Some(p), StatEvent::Shares { user, tally, .. }) = (&self.payees, &ev) {
                            p.credit(user, tally.accepted);
                        }
                        if let Some(h) = self.history.as_mut() {
                            match &ev {
                                StatEvent::Shares { user, worker, tally } => {
                                    let known = tally.accepted_n > 0 || book.has_shared(user, worker);
                                    h.shares(t.unix, user, worker, tally, known)
                                }
                                StatEvent::Blocks(_) => h.blocks_changed(),
                                _ => {}
                            }
                        }
                        book.apply(&ev, t);
                    }
                }
                _ = tick.tick() => if !held { self.write(&mut book, now(origin)).await },
                changed = async { match self.live.as_mut() { Some(l) => l.changed().await, None => std::future::pending().await } } => {
                    if changed.is_err() {
                        self.live = None;
                        continue;
                    }
                    let interval = self.live.as_mut().map_or(self.interval, |l| l.borrow_and_update().stats_interval);
                    if interval != self.interval {
                        self.interval = interval;
                        tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
            }
        }
        if held {
            tracing::warn!("stats: stopping before the old instance exited; its files are left as it writes them");
        } else {
            self.write(&mut book, now(origin)).await;
        }
        if let Some(h) = self.history.take() {
            let _ = tokio::task::spawn_blocking(move || h.finish()).await;
        }
    }

    pub(super) async fn write(&mut self, book: &mut Book, t: Now) {
        book.forget(t, self.forget.as_secs());
        book.decay_to(t);
        let network = self.work.borrow().as_ref().map(|w| w.network_diff);
        let mut files = vec![(self.logdir.join("pool").join("pool.status"), book.render_pool(t, network))];
        for (name, text) in book.render_users(t) {
            if file_name_ok(&name) {
                files.push((self.logdir.join("users").join(&name), text));
            }
        }
        let summary = book.summary(t);
        if let Some(h) = self.history.as_mut() {
            h.flush(t.unix, summary.workers as u64, network);
        }
        let _ = self.summary.send(summary);
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
