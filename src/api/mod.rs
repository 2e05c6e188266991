//! The operator's view over HTTP (`apiurl`, off by default): Prometheus metrics, a JSON API,
//! ckpool's statistics files as ckpool dashboards fetch them, and a dashboard page shipped in the
//! binary. Read-only, and nothing secret is ever shown (no RPC password, no credentials in URLs).
//!
//! It runs on its own thread with its own single-threaded runtime, so that no request (slow,
//! huge or many) takes time from the sessions' runtime; it reads what the pool keeps anyway
//! (lock-free counters, the statistics view, blocks.log) and never calls a node per request.
//! Connections are capped, headers bounded in size and time, requests rate limited
//! ([`server`]).

pub mod dashboard;
pub mod history;
pub mod json;
pub mod metrics;
pub mod server;
pub mod status;
pub mod stored;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::sync::watch;

use crate::bitcoind::Rpc;
use crate::config::Config;
use crate::log::stats::View;
use crate::mining::Announcement;
use crate::proxy::upstream::UpstreamCounters;
use crate::serve::ServerCtx;

/// Which face the process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pool,
    Proxy,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pool => "pool",
            Mode::Proxy => "proxy",
        }
    }
}

/// Proxy mode: the upstream client's counters and the `proxy` entries' host:port.
#[derive(Debug)]
pub struct Upstreams {
    pub counters: Arc<UpstreamCounters>,
    pub urls: Vec<String>,
}

/// What the API reads.
#[derive(Debug)]
pub struct Sources {
    pub mode: Mode,
    pub ctx: Arc<ServerCtx>,
    pub view: watch::Receiver<Arc<View>>,
    pub logdir: PathBuf,
    /// Pool mode: the nodes' RPC client (per-node call counts only; never called from here).
    pub rpc: Option<Arc<Rpc>>,
    pub upstream: Option<Upstreams>,
    /// Pool mode with `sv2jdurl`: the Job Declaration server's counts.
    pub jds: Option<Arc<crate::sv2::jds::JdsCounts>>,
}

/// The API's state, shared by its connections.
#[derive(Debug)]
pub struct Api {
    pub src: Sources,
    pub history: Mutex<history::History>,
    pub latency: metrics::Latency,
    pub served: AtomicU64,
    pub limited: AtomicU64,
    /// The history store (src/history), when one is kept: `/api/history?range=...` reads it.
    pub store: Option<crate::history::query::Reader>,
    blocks_cache: Mutex<Option<json::BlocksCache>>,
}

/// A host:port with any `user:pass@` part left out (for labels and pages).
pub fn without_userinfo(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.rsplit_once('@').map_or(rest, |(_, hp)| hp).trim_end_matches('/').to_string()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// How long after a new block's announcement its notify latency is settled (a fan-out still
/// going on then is counted as far as it got).
const SETTLE: Duration = Duration::from_secs(10);

impl Api {
    pub fn new(src: Sources, store: Option<crate::history::query::Reader>) -> Arc<Api> {
        Arc::new(Api {
            store,
            src,
            history: Mutex::new(history::History::default()),
            latency: metrics::Latency::default(),
            served: AtomicU64::new(0),
            limited: AtomicU64::new(0),
            blocks_cache: Mutex::new(None),
        })
    }

    /// Samples the accepted-difficulty counter into the chart's rings every 10 s.
    async fn sample_history(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(history::HOUR_STEP));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let units = self.src.ctx.counters.accepted_diff_units.load(Ordering::Relaxed);
                    self.history.lock().unwrap_or_else(|p| p.into_inner()).sample(unix_now(), units);
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Follows the published work's block announcements: a new block's template latency at
    /// once, its notify latency (first and last miner) when the next block comes or [`SETTLE`]
    /// after its announcement. Updates on the same block share the announcement, so a work the
    /// watch skipped still brings its block here.
    async fn watch_latency(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rx = self.src.ctx.work.clone();
        let mut pending: Option<Arc<Announcement>> = None;
        let mut last: Option<Arc<Announcement>> = None;
        loop {
            let settle = pending.as_ref().map(|a| tokio::time::Instant::from_std(a.at + SETTLE));
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return;
                    }
                    let a = rx.borrow_and_update().as_ref().and_then(|w| w.announcement.clone());
                    let Some(a) = a else { continue };
                    if last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &a)) {
                        continue;
                    }
                    if let Some(p) = pending.take() {
                        self.settle(&p);
                    }
                    self.latency.template.observe(a.published.saturating_duration_since(a.at));
                    last = Some(a.clone());
                    pending = Some(a);
                }
                _ = async { match settle { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    if let Some(p) = pending.take() {
                        self.settle(&p);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    fn settle(&self, a: &Announcement) {
        if let Some((first, last)) = a.notify_latency() {
            self.latency.first.observe(first);
            self.latency.last.observe(last);
        }
    }
}

/// The running API: its bound addresses.
#[derive(Debug)]
pub struct Handle {
    pub addrs: Vec<std::net::SocketAddr>,
}

/// Serves the API on `listeners` (bound, inherited or handed over for `cfg.apiurl`; none when
/// it is empty) on its own thread until `shutdown` flips.
pub fn start(
    cfg: &Config,
    listeners: Vec<std::net::TcpListener>,
    src: Sources,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Option<Handle>> {
    if cfg.apiurl.is_empty() || listeners.is_empty() {
        return Ok(None);
    }
    for l in &listeners {
        l.set_nonblocking(true).with_context(|| format!("apiurl {:?}", l.local_addr().ok()))?;
    }
    let addrs: Vec<_> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();
    for a in &addrs {
        if !a.ip().is_loopback() {
            tracing::warn!("the operator API listens on {a}, beyond loopback: it is read-only and shows no secret, but anyone who reaches it sees the pool's miners and figures");
        }
    }
    let store =
        crate::history::target(cfg).map(|t| crate::history::query::Reader::new(t, crate::history::instance(cfg)));
    let api = Api::new(src, store);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("the API's runtime")?;
    std::thread::Builder::new()
        .name("api".into())
        .spawn(move || {
            rt.block_on(async move {
                let tasks = vec![
                    tokio::spawn(api.clone().sample_history(shutdown.clone())),
                    tokio::spawn(api.clone().watch_latency(shutdown.clone())),
                ];
                let mut ls = Vec::new();
                for l in listeners {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => ls.push(l),
                        Err(e) => tracing::error!("API listener: {e}"),
                    }
                }
                server::serve(api, ls, shutdown).await;
                for t in tasks {
                    let _ = t.await;
                }
            })
        })
        .context("starting the API thread")?;
    for a in &addrs {
        tracing::info!("serving the operator API on {a} (metrics, JSON, dashboard)");
    }
    Ok(Some(Handle { addrs }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn userinfo_never_shown() {
        assert_eq!(super::without_userinfo("http://u:secret@127.0.0.1:8332/"), "127.0.0.1:8332");
        assert_eq!(super::without_userinfo("pool.example:3333"), "pool.example:3333");
        assert_eq!(super::without_userinfo("stratum+tcp://a:b@h:1"), "h:1");
    }
}
