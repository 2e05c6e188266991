//! Solo mode (ckpool `-B`, BTCSOLO): every username is the miner's own payout address, and a
//! block pays whoever found it (less an optional `donation` to `btcaddress`).
//!
//! The template source publishes one work per template with the template attached; each
//! address gets its own coinbase, built once per (template, address) and cached here, while the
//! template, merkle branches and previous block hash are shared. Sessions of one address share
//! its work, so a notify line is encoded once per address and template.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bitcoin::{Network, ScriptBuf};

use crate::mining::Work;
use crate::work::coinbase::{self, CoinbaseConfig};

/// Addresses whose work is kept per template; beyond it the oldest template's entries go first
/// (a bound on memory, not a limit on miners: a work is rebuilt in microseconds).
const CACHE_CAP: usize = 100_000;

/// The solo work source's shared state.
pub struct Solo {
    /// The node's network (None: a chain rust-bitcoin does not know; then only addresses the
    /// pool could parse at start are usable, which is none).
    network: Option<Network>,
    /// Coinbase settings shared by every address (btcsig, extranonce sizes, donation).
    base: CoinbaseConfig,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Solo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Solo").field("network", &self.network).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Cache {
    /// Work per (template's job id, payout script), for the current and the previous template.
    works: HashMap<(u64, ScriptBuf), Arc<Work>>,
    /// The newest template's job id seen.
    newest: u64,
    /// A template whose coinbase could not be built (logged once, not per session).
    failed: Option<u64>,
}

impl Solo {
    /// `base` is the pool's coinbase settings (its payout script is `btcaddress`, which receives
    /// the donation when `donation_bp` is above zero).
    pub fn new(network: Option<Network>, mut base: CoinbaseConfig, donation_bp: u32) -> Solo {
        base.donation = (donation_bp > 0).then(|| (base.payout_script.clone(), donation_bp));
        Solo { network, base, cache: Mutex::new(Cache::default()) }
    }

    /// The payout script of a solo username (the part before the first `.` or `_`), or why it
    /// cannot be paid.
    pub fn payout_script(&self, username: &str) -> Result<ScriptBuf, String> {
        super::username_script(username, self.network)
    }

    /// The work paying `script` for the template `base` was built from; None when `base` has no
    /// template (nothing to build from) or the coinbase cannot be built (logged).
    pub fn work_for(&self, base: &Arc<Work>, script: &ScriptBuf) -> Option<Arc<Work>> {
        let template = base.template.as_ref()?;
        let key = (base.job.id, script.clone());
        {
            let cache = self.lock();
            if let Some(w) = cache.works.get(&key) {
                return Some(w.clone());
            }
            if cache.failed == Some(key.0) {
                return None; // this template's coinbase failed for an address: logged once
            }
        }
        // Built outside the lock: other sessions' lookups do not wait for it.
        let cfg = CoinbaseConfig { payout_script: script.clone(), ..self.base.clone() };
        let built = coinbase::build(template, &cfg).map(|cb| Arc::new(Work::new(Arc::new(base.job.with_coinbase(cb)))));
        let mut cache = self.lock();
        let w = match built {
            Ok(w) => w,
            Err(e) => {
                if cache.failed != Some(key.0) {
                    cache.failed = Some(key.0);
                    tracing::error!(
                        "solo: cannot build a coinbase paying {script}: {e} (miners of that address get no new work)"
                    );
                }
                return None;
            }
        };
        if base.job.id > cache.newest {
            // A new template: entries older than the previous one go.
            let keep_from = cache.newest;
            cache.works.retain(|(id, _), _| *id >= keep_from);
            cache.newest = base.job.id;
        }
        if cache.works.len() >= CACHE_CAP {
            let oldest = cache.works.keys().map(|(id, _)| *id).min().unwrap_or(0);
            if oldest >= cache.newest {
                // Only the current template is cached and it is full: serve without caching.
                return Some(w);
            }
            cache.works.retain(|(id, _), _| *id != oldest);
        }
        // Another session may have built it meanwhile: keep the first (one duplicate set).
        Some(cache.works.entry(key).or_insert(w).clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}
