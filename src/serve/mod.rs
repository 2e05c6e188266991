//! The serving layer both faces sit on: listeners and the accept step, the extranonce1 space,
//! the context and parameters every session shares, and the pool-wide counters. Neither face is
//! named here: `service::frontend` starts the outputs and serves SV1 and SV2 on this layer.

pub mod accept;
pub mod counters;
pub mod declared;
pub mod enonce;
pub mod guard;
pub mod outbox;
#[cfg(test)]
pub mod testing;

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::difficulty::Difficulty;
use crate::log::stats::StatEvent;
use crate::mining::{BlockCandidate, ChannelParams, UpstreamShare, Work};
use crate::reload::Live;

pub use counters::{Counters, RejectKind};
pub use enonce::Enonces;

/// What every session is opened with. The difficulties and vardiff come from one place, `live`:
/// the config's values at start, and a reload's (SIGHUP) for sessions opened from then on.
#[derive(Debug, Clone)]
pub struct SessionParams {
    pub version_mask: u32,
    pub nonce1_len: usize,
    pub log_shares: bool,
    /// Seconds without any notify before the current job is re-sent (cgminer drops at 90 s).
    pub keepalive_secs: u64,
    /// Solo mode (`-B`): usernames are payout addresses, each mining its own coinbase.
    pub solo: Option<Arc<crate::pool::solo::Solo>>,
    /// PPLNS (`payout_scheme`): usernames are payout addresses, paid in the coinbase by share.
    pub payees: Option<Arc<crate::pool::pplns::Payees>>,
    /// Job Declaration on (`sv2jdurl`): the jobs miners declared, which SV2 extended channels
    /// of a connection that asked for work selection may mine (SetCustomMiningJob).
    pub declared: Option<Arc<declared::DeclaredJobs>>,
    /// The reloadable values (difficulties, vardiff); connected sessions keep what they opened with.
    pub live: watch::Receiver<Live>,
}

impl SessionParams {
    /// The parameters of `cfg` with what the mode decides: the version mask it grants and the
    /// extranonce1 bytes it owns. `live` is the reload's channel when there is one; without it
    /// the config's values hold for the whole run.
    pub fn new(
        cfg: &Config,
        live: Option<watch::Receiver<Live>>,
        version_mask: u32,
        nonce1_len: usize,
        log_shares: bool,
    ) -> SessionParams {
        SessionParams {
            version_mask,
            nonce1_len,
            log_shares,
            keepalive_secs: 55,
            solo: None,
            payees: None,
            declared: None,
            live: live.unwrap_or_else(|| watch::channel(Live::of(cfg)).1),
        }
    }

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
        let l = self.live.borrow();
        ChannelParams {
            mindiff: l.mindiff,
            startdiff: l.startdiff,
            maxdiff: l.maxdiff,
            version_mask: self.version_mask,
            vardiff: l.vardiff,
        }
    }
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
    /// extranonce1 values in use (SV1 sessions and SV2 channels), so that none ever collide.
    pub enonces: Enonces,
    /// Limits on what one miner or address may cost, and the operator log's rate limit.
    pub guard: Arc<guard::Guard>,
    pub shutdown: watch::Receiver<bool>,
}

impl ServerCtx {
    /// The current work's network difficulty: vardiff's upper clamp.
    pub fn network_diff(&self) -> Option<Difficulty> {
        self.work.borrow().as_ref().map(|w| w.network_diff)
    }
}
