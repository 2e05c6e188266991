//! Stratum v1, the mining core's first face: listeners, one task per miner, and what they share.

pub mod frontend;
pub mod lines;
pub mod proto;
pub mod server;
pub mod session;

pub use crate::mining::vardiff;
pub use crate::mining::{BlockCandidate, UpstreamJob, UpstreamShare, Work};

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::difficulty::Difficulty;
use crate::log::stats::StatEvent;
use crate::mining::ChannelParams;
use vardiff::VardiffParams;

/// Pool-wide counters, updated lock-free by sessions.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// Accepted difficulty, in 10^-12 units, wrapping (rates are taken from differences).
    pub accepted_diff_units: AtomicU64,
    pub blocks: AtomicU64,
    pub connections: AtomicU64,
    pub sessions_total: AtomicU64,
}

impl Counters {
    pub fn add_accepted(&self, d: Difficulty) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.accepted_diff_units.fetch_add(d.units().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// Session parameters fixed at start.
#[derive(Debug, Clone)]
pub struct SessionParams {
    pub mindiff: Difficulty,
    pub startdiff: Difficulty,
    /// Zero: none.
    pub maxdiff: Difficulty,
    pub version_mask: u32,
    pub nonce1_len: usize,
    pub log_shares: bool,
    /// Seconds without any notify before the current job is re-sent (cgminer drops at 90 s).
    pub keepalive_secs: u64,
    /// Vardiff's target share interval and retarget interval.
    pub vardiff: VardiffParams,
    /// Solo mode (`-B`): usernames are payout addresses, each mining its own coinbase.
    pub solo: Option<Arc<crate::pool::solo::Solo>>,
}

/// What every session shares: parameters, the current work, and the outbound channels.
#[derive(Debug)]
pub struct ServerCtx {
    pub params: SessionParams,
    pub work: watch::Receiver<Option<Arc<Work>>>,
    /// The share log (written by its own thread).
    pub shares: crate::log::sharelog::ShareLog,
    pub blocks: mpsc::Sender<BlockCandidate>,
    /// Proxy mode: shares that meet the upstream difficulty.
    pub upstream: Option<mpsc::Sender<UpstreamShare>>,
    /// Statistics events (pool.status, users/): bounded, never dropped.
    pub stats: mpsc::Sender<StatEvent>,
    pub counters: Counters,
    /// extranonce1 values in use, so that resumed sessions never collide.
    pub enonces: Mutex<HashSet<u64>>,
    pub shutdown: watch::Receiver<bool>,
}

impl SessionParams {
    /// What each miner's mining-core channel is opened with.
    pub fn channel(&self) -> ChannelParams {
        ChannelParams {
            mindiff: self.mindiff,
            startdiff: self.startdiff,
            maxdiff: self.maxdiff,
            version_mask: self.version_mask,
            vardiff: self.vardiff,
        }
    }
}

impl ServerCtx {
    /// The current work's network difficulty: vardiff's upper clamp.
    pub fn network_diff(&self) -> Option<Difficulty> {
        self.work.borrow().as_ref().map(|w| w.network_diff)
    }
}
