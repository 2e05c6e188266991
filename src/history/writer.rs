//! The history writer: a named thread that owns the database connection. Batches come from the
//! statistics task over a bounded channel (never waited on: a full channel counts the batch as
//! dropped); while the database is away they wait in a bounded [`Agg`], merged per minute and
//! worker, and the operator log gets one line when writing fails and one when it works again,
//! with the rows it then wrote and how many it dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::agg::{Agg, Batch};
use super::retention;
use super::store::{why, BlockRow, Store, Target};

/// Rows held while the database is away (merged per minute and worker: 1,000 workers for ~3 h).
pub const HOLD_ROWS: usize = 200_000;
/// How often a database that failed is tried again.
const RETRY: Duration = Duration::from_secs(2);
/// How often retention runs.
const RETAIN_EVERY: Duration = Duration::from_secs(3600);

pub(super) struct Writer {
    pub target: Target,
    pub instance: String,
    pub logdir: PathBuf,
    pub rx: Receiver<Batch>,
    /// Batches the statistics task could not hand over (channel full), counted in rows.
    pub lost: Arc<AtomicU64>,
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// An outage being counted: since when, and the first error.
struct Outage {
    since: Instant,
}

impl Writer {
    pub(super) fn run(self) {
        let mut held = Agg::new(HOLD_ROWS);
        let mut store: Option<Store> = None;
        let mut outage: Option<Outage> = None;
        let mut last_try: Option<Instant> = None;
        let mut last_retain: Option<Instant> = None;
        let mut open = true;
        while open {
            match self.rx.recv_timeout(RETRY) {
                Ok(b) => {
                    held.merge(b);
                    // Take whatever else is queued before writing.
                    while let Ok(b) = self.rx.try_recv() {
                        held.merge(b);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            if held.is_empty() && store.is_some() && last_retain.is_some_and(|t| t.elapsed() < RETAIN_EVERY) {
                continue;
            }
            if store.is_none() {
                // While failing, try again every RETRY (and once more at shutdown).
                if open && last_try.is_some_and(|t| t.elapsed() < RETRY) {
                    continue;
                }
                last_try = Some(Instant::now());
                match Store::open(&self.target) {
                    Ok(s) => store = Some(s),
                    Err(e) => {
                        self.failed(&mut outage, &e, &held);
                        continue;
                    }
                }
            }
            let s = store.as_mut().expect("opened");
            let batch = held.take();
            let blocks = if batch.blocks_changed { self.blocks() } else { Vec::new() };
            match s.write(&self.instance, &batch, &blocks) {
                Ok(()) => {
                    if let Some(o) = outage.take() {
                        let dropped = held.dropped + self.lost.swap(0, Ordering::Relaxed);
                        held.dropped = 0;
                        tracing::warn!(
                            "history: writing to {} again after {} s; {} held rows written, {} rows dropped while it was away",
                            self.target.show(),
                            o.since.elapsed().as_secs(),
                            batch.rows(),
                            dropped
                        );
                    } else {
                        let lost = self.lost.swap(0, Ordering::Relaxed) + std::mem::take(&mut held.dropped);
                        if lost > 0 {
                            tracing::warn!("history: {lost} rows dropped (the writer fell behind)");
                        }
                    }
                }
                Err(e) => {
                    held.merge(batch);
                    store = None;
                    last_try = Some(Instant::now());
                    self.failed(&mut outage, &e, &held);
                    continue;
                }
            }
            if last_retain.is_none_or(|t| t.elapsed() >= RETAIN_EVERY) && open {
                last_retain = Some(Instant::now());
                match s.retain(&self.instance, retention::plan(unix_now())) {
                    Ok(n) if n > 0 => tracing::info!("history: {n} minute rows older than a week folded into hours"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("history: retention in {} failed: {}", self.target.show(), why(&e)),
                }
            }
        }
        if outage.is_some() {
            let n = held.rows() as u64 + held.dropped + self.lost.load(Ordering::Relaxed);
            tracing::error!("history: stopping with {} unreachable; {n} rows not written", self.target.show());
        }
    }

    /// One line per outage: the first failure says what and why; later ones are silent.
    fn failed(&self, outage: &mut Option<Outage>, e: &anyhow::Error, held: &Agg) {
        if outage.is_none() {
            *outage = Some(Outage { since: Instant::now() });
            tracing::error!(
                "history: cannot write to {}: {}; holding up to {HOLD_ROWS} rows ({} now) and trying again every {} s",
                self.target.show(),
                why(e),
                held.rows(),
                RETRY.as_secs()
            );
        }
    }

    /// The found blocks of blocks.log with their fate, as rows of this instance.
    fn blocks(&self) -> Vec<BlockRow> {
        let text = std::fs::read_to_string(self.logdir.join("blocks.log")).unwrap_or_default();
        crate::blocks::found::parse_blocks(&text)
            .iter()
            .map(|b| {
                let (status, confirmations) = crate::blocks::found::block_fate(b, None);
                BlockRow {
                    instance: self.instance.clone(),
                    hash: b.hash.clone(),
                    height: b.height as i64,
                    username: b.username.clone(),
                    workername: b.workername.clone(),
                    found: b.found as i64,
                    status: status.to_string(),
                    confirmations: confirmations as i64,
                }
            })
            .collect()
    }
}
