//! Stratum v1, the mining core's first face: listeners, one task per miner, and what they share.

pub mod frontend;
pub mod lines;
pub mod proto;
pub mod proxy_protocol;
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
use crate::share::Reject;
use vardiff::VardiffParams;

/// Why shares are rejected, as a bounded label set for the operator's metrics.
pub const REJECT_KINDS: [&str; 10] = [
    "stale",
    "duplicate",
    "low_difficulty",
    "unknown_job",
    "bad_extranonce2_length",
    "bad_hex",
    "ntime_out_of_range",
    "bad_version",
    "invalid_params",
    "other",
];

/// [`REJECT_KINDS`] indexes for submits the session could not read (no [`Reject`] applies).
pub const REJECT_INVALID_PARAMS: usize = 8;
pub const REJECT_BAD_VERSION: usize = 7;

/// The [`REJECT_KINDS`] index of a share check's verdict (by variant: no text compared).
pub fn reject_kind(r: &Reject) -> usize {
    match r {
        Reject::Stale => 0,
        Reject::Duplicate => 1,
        Reject::LowDifficulty { .. } => 2,
        Reject::UnknownJob => 3,
        Reject::BadExtranonce2Length { .. } => 4,
        Reject::BadHex(_) => 5,
        Reject::NtimeOutOfRange => 6,
        Reject::VersionOutsideMask => REJECT_BAD_VERSION,
    }
}

/// Pool-wide counters, updated lock-free by sessions.
#[derive(Debug, Default)]
pub struct Counters {
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// Rejected shares by [`REJECT_KINDS`] (their sum is `rejected`).
    pub rejected_by: [AtomicU64; REJECT_KINDS.len()],
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

    /// Counts a rejected share under its [`REJECT_KINDS`] index.
    pub fn add_rejected(&self, kind: usize) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.rejected_by[kind.min(REJECT_KINDS.len() - 1)].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason the share check replies has its own metrics label (none falls to "other").
    #[test]
    fn reject_reasons_have_labels() {
        use crate::share::Reject;
        for r in [
            Reject::UnknownJob,
            Reject::Stale,
            Reject::BadExtranonce2Length { expected: 4, got: 3 },
            Reject::BadHex("extranonce2"),
            Reject::BadHex("ntime"),
            Reject::BadHex("nonce"),
            Reject::NtimeOutOfRange,
            Reject::VersionOutsideMask,
            Reject::Duplicate,
            Reject::LowDifficulty { difficulty: Difficulty::ONE, hash: [0; 32] },
        ] {
            assert_ne!(REJECT_KINDS[reject_kind(&r)], "other", "{r:?}");
        }
        assert_eq!(REJECT_KINDS[REJECT_INVALID_PARAMS], "invalid_params");
        assert_eq!(REJECT_KINDS[REJECT_BAD_VERSION], "bad_version");
        let c = Counters::default();
        c.add_rejected(reject_kind(&Reject::Stale));
        c.add_rejected(reject_kind(&Reject::Duplicate));
        c.add_rejected(reject_kind(&Reject::Stale));
        assert_eq!(c.rejected.load(Ordering::Relaxed), 3);
        assert_eq!(c.rejected_by[0].load(Ordering::Relaxed), 2);
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
    /// Values a reload (SIGHUP) changed: difficulties and vardiff for sessions opened from then
    /// on (connected ones keep theirs). None: the values above, fixed.
    pub live: Option<watch::Receiver<crate::reload::Live>>,
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
    /// What a miner's channel is opened with on a listener with its own difficulties.
    pub fn channel_with(&self, l: &crate::config::Listener) -> ChannelParams {
        if !l.own_diffs {
            // The top-level difficulties, as a reload (SIGHUP) left them.
            return self.channel();
        }
        ChannelParams { mindiff: l.mindiff, startdiff: l.startdiff, maxdiff: l.maxdiff, ..self.channel() }
    }

    /// What each miner's mining-core channel is opened with.
    pub fn channel(&self) -> ChannelParams {
        let (mindiff, startdiff, maxdiff, vardiff) = match &self.live {
            Some(live) => {
                let l = live.borrow();
                (l.mindiff, l.startdiff, l.maxdiff, l.vardiff)
            }
            None => (self.mindiff, self.startdiff, self.maxdiff, self.vardiff),
        };
        ChannelParams { mindiff, startdiff, maxdiff, version_mask: self.version_mask, vardiff }
    }
}

impl ServerCtx {
    /// The current work's network difficulty: vardiff's upper clamp.
    pub fn network_diff(&self) -> Option<Difficulty> {
        self.work.borrow().as_ref().map(|w| w.network_diff)
    }
}
