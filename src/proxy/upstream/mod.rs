//! The proxy's one upstream session at a time: failover across the `proxy` entries (Stratum V1,
//! plain or TLS, and Stratum V2 mixed in one list) with backoff, and a return to the first entry
//! when it is back. Each session re-issues the upstream's jobs to local miners (their
//! extranonce1 a slice of the upstream's extranonce2 space) and forwards their shares.
//!
//! ```text
//!  mod.rs  the entries in turn, what both protocols share: counters, the miners' prefix, a job
//!          published as local work
//!  sv1.rs  one Stratum V1 session: subscribe, authorize, version rolling, notify, submit
//!  sv2.rs  one Stratum V2 session over Noise NX: one extended channel, its jobs, target and
//!          extranonce prefix followed, SubmitSharesExtended and its verdicts
//!  declare.rs  Job Declaration (an entry with `jds`): the own node's templates declared to the
//!          pool's server, set on the channel (SetCustomMiningJob), the pool's jobs the fallback
//! ```

mod declare;
mod sv1;
mod sv2;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::config::Upstream;
use crate::difficulty::{Difficulty, Target};
use crate::mining::{UpstreamJob, UpstreamShare, Work};
use crate::work::Job;

/// No line from the upstream for this long: it is dead (pools notify at least every ~60 s).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(150);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const PRIMARY_PROBE: Duration = Duration::from_secs(10);

/// Bytes queued for the upstream (shares it has not read) past which shares are dropped.
pub const OUT_CAP: usize = 1 << 20;

/// Upstream verdict counters.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    pub forwarded: AtomicU64,
    /// Shares not written because the upstream was not reading (its queue at [`OUT_CAP`]).
    pub dropped: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    /// Switches from one upstream entry to another (failover, or back to the primary).
    pub failovers: AtomicU64,
    /// 1 + the index of the `proxy` entry the proxy is connected and authorized to; 0: none.
    pub connected: AtomicU64,
}

impl UpstreamCounters {
    /// Connected and authorized to entry `idx`.
    pub fn on_connected(&self, idx: usize) {
        self.connected.store(idx as u64 + 1, Ordering::Relaxed);
    }

    /// The session ended; `switched`: the next attempt goes to another entry.
    pub fn on_down(&self, switched: bool) {
        self.connected.store(0, Ordering::Relaxed);
        if switched {
            self.failovers.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// How many bytes of the upstream's extranonce2 each local miner gets as its own extranonce1:
/// 4 when the upstream gives 8 (4 left to the miner), fewer for smaller upstream spaces.
pub fn prefix_len_for(upstream_en2: usize) -> Option<usize> {
    match upstream_en2 {
        0 | 1 => None,
        2 => Some(1),
        n => Some((n - 2).min(4)),
    }
}

pub struct UpstreamClient {
    pub entries: Vec<Upstream>,
    pub version_mask: u32,
    pub work: watch::Sender<Option<Arc<Work>>>,
    pub shares: mpsc::Receiver<UpstreamShare>,
    pub counters: Arc<UpstreamCounters>,
    /// Decided by the first upstream session and kept for the proxy's life.
    pub prefix_len: Option<usize>,
    /// The version mask the upstream granted (0 = none).
    pub granted_mask: watch::Sender<u32>,
    /// How long a Stratum V2 upstream may stay silent while it owes a share verdict
    /// ([`SILENCE_LIMIT`]; tests shorten it).
    pub silence_limit: Duration,
    /// Job Declaration (entries with `jds`): the proxy's own node, the tag its coinbases carry
    /// (`btcsig`), how often it looks for a new block and refreshes the declared job.
    pub node: Option<Arc<crate::bitcoind::Rpc>>,
    pub btcsig: String,
    pub blockpoll: Duration,
    pub update_interval: Duration,
    /// The same, as published with each job.
    mask: u32,
    next_job: u64,
    generation: u64,
}

enum End {
    Shutdown,
    /// The session failed; try the next entry.
    Failed(String),
    /// The primary entry answers again; go back to it.
    Primary,
    /// The upstream asked us to reconnect (client.reconnect), possibly elsewhere.
    Reconnect(Option<String>),
}

impl UpstreamClient {
    pub fn new(
        entries: Vec<Upstream>,
        version_mask: u32,
        work: watch::Sender<Option<Arc<Work>>>,
        shares: mpsc::Receiver<UpstreamShare>,
        granted_mask: watch::Sender<u32>,
    ) -> UpstreamClient {
        UpstreamClient {
            entries,
            version_mask,
            work,
            shares,
            counters: Arc::default(),
            prefix_len: None,
            granted_mask,
            silence_limit: SILENCE_LIMIT,
            node: None,
            btcsig: String::new(),
            blockpoll: Duration::from_millis(500),
            update_interval: Duration::from_secs(30),
            mask: 0,
            next_job: 0,
            generation: 0,
        }
    }

    /// Runs until shutdown, cycling through the entries on failure.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let n = self.entries.len();
        let mut idx = 0usize;
        let mut failures_in_row = 0u32;
        let mut override_addr: Option<String> = None;
        loop {
            let entry = self.entries[idx].clone();
            let addr = override_addr.take().unwrap_or_else(|| entry.url.clone());
            self.generation += 1;
            let end = match entry.authority {
                Some(key) => self.sv2_session(&addr, &entry, &key, idx, &mut shutdown).await,
                None => self.sv1_session(&addr, &entry, idx, &mut shutdown).await,
            };
            self.counters.on_down(matches!(end, End::Primary) || matches!(end, End::Failed(_)) && n > 1);
            match end {
                End::Shutdown => return,
                End::Primary => {
                    tracing::info!("upstream {}: primary is back; switching to it", self.entries[0].display());
                    idx = 0;
                    failures_in_row = 0;
                }
                End::Reconnect(to) => {
                    tracing::info!(
                        "upstream {addr}: asked us to reconnect{}",
                        to.as_deref().map(|t| format!(" to {t}")).unwrap_or_default()
                    );
                    override_addr = to;
                }
                End::Failed(why) => {
                    failures_in_row += 1;
                    let next = (idx + 1) % n;
                    tracing::warn!(
                        "upstream {} ({}): {why}; next: {}",
                        Upstream { url: addr.clone(), ..entry.clone() }.display(),
                        entry.auth,
                        self.entries[next].display()
                    );
                    idx = next;
                    // Back off once every entry has failed in a row.
                    if failures_in_row as usize >= n {
                        let delay = Duration::from_millis(500 * (1u64 << (failures_in_row as usize / n).min(6)));
                        tokio::select! {
                            _ = tokio::time::sleep(delay.min(Duration::from_secs(30))) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                }
            }
        }
    }

    /// Whether the first entry takes connections again: a TCP connect, for `stratum+tls://`
    /// a whole TLS handshake (a pool whose certificate is refused is not back), for
    /// `stratum2+tcp://` a whole Noise handshake (nor is one whose key is not the entry's).
    async fn primary_answers(&self) -> bool {
        let p = &self.entries[0];
        if let Some(key) = &p.authority {
            return timeout(Duration::from_secs(5), sv2::handshake(&p.url, key)).await.is_ok_and(|r| r.is_ok());
        }
        if !p.tls {
            return matches!(timeout(Duration::from_secs(3), TcpStream::connect(&p.url)).await, Ok(Ok(_)));
        }
        let Ok(config) = crate::tls::client_config(p.tlsca.as_deref()) else { return false };
        matches!(timeout(Duration::from_secs(5), crate::tls::connect(&p.url, config)).await, Ok(Ok(_)))
    }

    /// The miners' prefix for an upstream extranonce2 of `n` bytes (decided by the first
    /// session, kept after), or why the space is unusable.
    fn miner_prefix(&mut self, n: usize, addr: &str) -> Result<usize, String> {
        use crate::work::coinbase::MAX_NONCE2_LEN;
        let Some(p) = prefix_len_for(n) else {
            return Err(format!("extranonce2 size {n} leaves no room for local miners"));
        };
        let p = *self.prefix_len.get_or_insert(p);
        if n <= p {
            return Err(format!("extranonce2 size {n} is smaller than this proxy's {p}-byte miner prefix"));
        }
        if n - p > MAX_NONCE2_LEN {
            return Err(format!(
                "extranonce2 size {n} leaves local miners more than {MAX_NONCE2_LEN} bytes after a {p}-byte prefix"
            ));
        }
        if n - p < 4 {
            tracing::warn!(
                "upstream {addr}: extranonce2 is {n} bytes; local miners get {} byte(s) of extranonce2 after a {p}-byte prefix",
                n - p
            );
        }
        Ok(p)
    }

    /// Publishes an upstream job as local work (shares meeting `target` are forwarded): `make` builds it for the miners' extranonce
    /// sizes (their extranonce1: `en1` then `prefix_len` bytes of their own) under the next local
    /// job id; `job_id` is the upstream's, for forwarded shares. Nothing is published before
    /// the first session has fixed the miners' prefix.
    fn publish(
        &mut self,
        en1: &[u8],
        en2_size: usize,
        (target, difficulty): (Target, Difficulty),
        make: impl FnOnce(u64, usize, usize) -> Result<(Job, String), crate::work::job::NotifyError>,
    ) -> Result<(), crate::work::job::NotifyError> {
        let generation = self.generation;
        let Some(p) = self.prefix_len else { return Ok(()) };
        self.next_job += 1;
        let (job, job_id) = make(self.next_job, en1.len() + p, en2_size - p)?;
        let up = UpstreamJob { job_id: job_id.into(), target, difficulty, generation };
        let announcement = match job.clean {
            true => {
                Some(Arc::new(crate::mining::Announcement::new(std::time::Instant::now(), std::time::Instant::now())))
            }
            false => self.work.borrow().as_ref().and_then(|w| w.announcement.clone()),
        };
        let mut work = Work::proxied(Arc::new(job), Arc::from(en1), up).with_announcement(announcement);
        work.version_mask = Some(self.mask);
        self.work.send_replace(Some(Arc::new(work)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_sizes() {
        assert_eq!(prefix_len_for(8), Some(4));
        assert_eq!(prefix_len_for(4), Some(2));
        assert_eq!(prefix_len_for(3), Some(1));
        assert_eq!(prefix_len_for(2), Some(1));
        assert_eq!(prefix_len_for(1), None);
        assert_eq!(prefix_len_for(16), Some(4));
    }
}
