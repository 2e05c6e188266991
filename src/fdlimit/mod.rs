//! Descriptors for a farm. Every miner holds a socket, and so do the node connections (a found
//! block's `submitblock`), the share log, block files, the API and the history store. At start
//! the soft RLIMIT_NOFILE is raised to the hard limit ([`sys`]); a reserve is kept for everything
//! but miners ([`plan`]); miners beyond the rest are refused with a clear answer and one
//! operator line per minute naming the limit and what to change, so a limit reached never
//! starves the pool's own files and connections.
//!
//! The budget is one per process (descriptors are a per-process resource), installed once by
//! `service.rs`; without it (a pool embedded in a test) no miner is counted.

pub mod plan;
pub mod sys;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use plan::{Needs, Plan};

/// How often the refusal line may be written.
pub const REFUSAL_LINE_EVERY: Duration = Duration::from_secs(60);

/// The process's miner descriptors.
pub struct Budget {
    plan: Plan,
    unit: &'static str,
    miners: Arc<Semaphore>,
    answering: Arc<Semaphore>,
    throttle: Mutex<plan::Throttle>,
}

static BUDGET: OnceLock<Budget> = OnceLock::new();

/// Raises the soft limit, plans the reserve for `needs`, logs the ceiling (one line) and
/// installs the budget the listeners draw from. `unit` names the service in the advice.
pub fn install(needs: &Needs, unit: &'static str) -> Plan {
    let (before, soft, hard, err) = sys::raise_soft_limit();
    if let Some(e) = err {
        tracing::warn!("{e:#}; serving within the soft limit");
    }
    let p = plan::plan(before, soft, hard, plan::reserve(needs));
    if p.miners == 0 {
        tracing::error!("{}", p.describe(unit));
    } else if p.miners < 1000 {
        tracing::warn!("{}", p.describe(unit));
    } else {
        tracing::info!("{}", p.describe(unit));
    }
    let miners = Arc::new(Semaphore::new((p.miners as usize).min(Semaphore::MAX_PERMITS)));
    let answering = Arc::new(Semaphore::new(plan::per::ANSWERING as usize));
    let throttle = Mutex::new(plan::Throttle::new(REFUSAL_LINE_EVERY));
    let _ = BUDGET.set(Budget { plan: p, unit, miners, answering, throttle });
    p
}

/// A miner's descriptor, given back when dropped.
pub struct Slot(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

/// The descriptor budget is spent: the miner is refused.
pub struct Full(&'static Budget);

/// A descriptor for a miner just accepted, or [`Full`] at the ceiling.
pub fn take_slot() -> Result<Slot, Full> {
    match BUDGET.get() {
        None => Ok(Slot(None)),
        Some(b) => b.miners.clone().try_acquire_owned().map(|p| Slot(Some(p))).map_err(|_| Full(b)),
    }
}

impl Full {
    /// Notes the refusal; the operator line at most once per [`REFUSAL_LINE_EVERY`].
    pub fn log(&self, peer: &std::net::SocketAddr, local: &str) {
        let due = self.0.throttle.lock().unwrap_or_else(|p| p.into_inner()).note(Instant::now());
        if let Some(n) = due {
            tracing::warn!("{}", self.0.plan.refusal_line(self.0.unit, &peer.to_string(), local, n));
        }
    }

    /// A permit to answer the refused miner (its connection held until then), if one is free.
    pub fn answering(&self) -> Option<OwnedSemaphorePermit> {
        self.0.answering.clone().try_acquire_owned().ok()
    }

    /// What the refused miner is told.
    pub fn reply(&self) -> String {
        self.0.plan.refusal_reply()
    }
}
