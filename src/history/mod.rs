//! History that outlives a restart (issue #20): per-minute share difficulty sums per worker (and
//! so per user), the pool's sums with its workers and the network difficulty, and found blocks
//! with their fate, in SQLite (`logdir/history.sqlite`, the default) or PostgreSQL (`dburl`,
//! shared by several pool and proxy instances, each row tagged with its `instance`).
//!
//! Off the share path: the statistics task, which already receives every session's tallies,
//! adds them to a bounded [`agg::Agg`] and hands it over at each statistics write
//! (`stats_interval`, 60 s by default) with `try_send`; the [`writer`] thread owns the database.
//! A database outage never slows a miner: rows wait in a bounded buffer, and the operator log
//! says when writing failed, when it works again and how many rows were dropped meanwhile.
//!
//! Retention ([`retention`], pure): minute rows for a week, then hour rows for a year.
//! Reading ([`query`]): the API's `/api/history?range=...` and `ckpool payout --measured`.

pub mod agg;
mod pgtls;
pub mod query;
pub mod retention;
pub mod sim;
pub mod store;
mod target;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use crate::config::Config;
use crate::difficulty::Difficulty;
use crate::mining::ShareTally;
pub use store::{Store, Target};

/// Distinct rows the statistics task aggregates between two flushes (a minute of 100,000
/// workers); past it, tallies are counted as dropped.
const AGG_ROWS: usize = 100_000;
/// Batches queued for the writer.
const QUEUE: usize = 8;
/// The SQLite file's name in logdir.
pub const SQLITE_FILE: &str = "history.sqlite";

/// Where `cfg` keeps its history: PostgreSQL with `dburl`, else SQLite in logdir unless
/// `"history": false`.
pub fn target(cfg: &Config) -> Option<Target> {
    match &cfg.dburl {
        Some(url) => Some(Target::Postgres(url.expose().to_string())),
        None if cfg.history => Some(Target::Sqlite(cfg.logdir.join(SQLITE_FILE))),
        None => None,
    }
}

/// The instance name rows carry: `instance`, else the `-n` name the service put there.
pub fn instance(cfg: &Config) -> String {
    if cfg.instance.is_empty() {
        "ckpool".into()
    } else {
        cfg.instance.clone()
    }
}

/// The statistics task's side: the aggregation and the writer's queue.
pub struct Feed {
    agg: agg::Agg,
    tx: Option<SyncSender<agg::Batch>>,
    lost: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Feed({} rows)", self.agg.rows())
    }
}

/// Starts the writer thread for `cfg` (nothing when history is off). A database that cannot be
/// opened now is an outage like any other: logged, retried, miners unaffected.
pub fn start(cfg: &Config) -> Option<Feed> {
    let target = target(cfg)?;
    let instance = instance(cfg);
    let (tx, rx) = sync_channel(QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    let w = writer::Writer {
        target: target.clone(),
        instance: instance.clone(),
        logdir: cfg.logdir.clone(),
        rx,
        lost: lost.clone(),
    };
    let thread = match std::thread::Builder::new().name("history".into()).spawn(move || w.run()) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("history: cannot start its writer thread: {e}; no history is kept");
            return None;
        }
    };
    let tls = target.tls().map(|t| format!(" ({t})")).unwrap_or_default();
    tracing::info!("history: keeping per-minute history in {}{tls} as instance {instance:?}", target.show());
    let mut agg = agg::Agg::new(AGG_ROWS);
    agg.blocks_changed();
    Some(Feed { agg, tx: Some(tx), lost, thread: Some(thread) })
}

impl crate::log::stats::HistorySink for Feed {
    fn shares(&mut self, unix: u64, user: &Arc<str>, worker: &Arc<str>, t: &ShareTally, known: bool) {
        self.agg.shares(unix as i64, user, worker, t, known);
    }

    fn blocks_changed(&mut self) {
        self.agg.blocks_changed();
    }

    fn flush(&mut self, unix: u64, workers: u64, netdiff: Option<Difficulty>) {
        self.agg.pool_state(unix as i64, workers, netdiff);
        let dropped = std::mem::take(&mut self.agg.dropped);
        self.lost.fetch_add(dropped, Ordering::Relaxed);
        let batch = self.agg.take();
        let Some(tx) = &self.tx else { return };
        match tx.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(b)) | Err(TrySendError::Disconnected(b)) => {
                self.lost.fetch_add(b.rows() as u64, Ordering::Relaxed);
            }
        }
    }

    fn finish(mut self: Box<Self>) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
