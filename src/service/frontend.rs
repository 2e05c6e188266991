//! One front end for pool and proxy mode: the share log writer and the statistics task under
//! `logdir`, the context every session shares, the listeners served on it, and one shutdown order
//! (sessions first, then whatever still holds their channels, then the writers drain).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::log::{sharelog, stats};
use crate::mining::{BlockCandidate, UpstreamShare, Work};
use crate::serve::{Counters, Enonces, ServerCtx, SessionParams};
use crate::sv1::server;

/// Queued statistics events before a session waits for the writer (never dropped).
const STATS_QUEUE: usize = 65_536;

/// The running front end: the shared context, the statistics summary for status lines, and the
/// tasks to stop in order.
pub struct FrontEnd {
    pub ctx: Arc<ServerCtx>,
    /// The last statistics summary (for the status line).
    pub summary: watch::Receiver<stats::Summary>,
    /// The statistics as the operator's API shows them (replaced at each statistics write).
    pub view: watch::Receiver<Arc<stats::View>>,
    server_task: Option<JoinHandle<()>>,
    sv2_task: Option<JoinHandle<()>>,
    writers: Writers,
    /// Each `serverurl` entry's options, index for index; a listener beyond them is plain.
    listeners: Vec<crate::config::Listener>,
    default_listener: crate::config::Listener,
    /// The TLS listeners' certificate (reloadable: [`FrontEnd::reload_tls`]).
    tls: Option<Arc<crate::tls::TlsServer>>,
}

/// The share log thread and statistics task, drained last.
pub struct Writers {
    share_thread: std::thread::JoinHandle<()>,
    stats_task: JoinHandle<()>,
}

impl FrontEnd {
    /// Starts the share log and statistics writers under `cfg.logdir` and builds the context on
    /// them. Nothing listens until `serve`. After a handover, `predecessor` flips once the old
    /// instance has exited: the statistics files are not written before.
    pub fn new(
        cfg: &Config,
        params: SessionParams,
        work: watch::Receiver<Option<Arc<Work>>>,
        blocks: mpsc::Sender<BlockCandidate>,
        upstream: Option<mpsc::Sender<UpstreamShare>>,
        shutdown: watch::Receiver<bool>,
        predecessor: Option<watch::Receiver<bool>>,
    ) -> FrontEnd {
        let (shares, share_thread) = sharelog::spawn(cfg.logdir.clone());
        let (summary_tx, summary) = watch::channel(stats::Summary::default());
        let (view_tx, view) = watch::channel(Arc::new(stats::View::default()));
        let (stats, stats_task) = stats::spawn(
            stats::StatsTask {
                logdir: cfg.logdir.clone(),
                interval: cfg.stats_interval,
                work: work.clone(),
                summary: summary_tx,
                view: view_tx,
                failing: false,
                live: Some(params.live.clone()),
                forget: cfg.limits.stats_forget,
                payees: params.payees.clone().map(|p| p as Arc<dyn crate::log::stats::ShareSink>),
                history: crate::history::start(cfg).map(|f| Box::new(f) as Box<dyn crate::log::stats::HistorySink>),
                predecessor,
            },
            STATS_QUEUE,
        );
        let guard = Arc::new(crate::serve::guard::Guard::new(&cfg.limits));
        let ctx = Arc::new(ServerCtx {
            params,
            work,
            shares,
            blocks,
            upstream,
            stats,
            counters: Counters::default(),
            enonces: Enonces::default(),
            guard: guard.clone(),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(crate::serve::guard::summarize(guard, shutdown));
        FrontEnd {
            ctx,
            summary,
            view,
            server_task: None,
            sv2_task: None,
            writers: Writers { share_thread, stats_task },
            listeners: cfg.listeners.clone(),
            default_listener: cfg.listener(usize::MAX),
            tls: None,
        }
    }

    /// Accepts miners on every listener (within `maxclients`, 0 = no limit) until shutdown;
    /// listener `i` gets the `i`-th `serverurl` entry's options, TLS ones `tls`'s certificate
    /// (loaded at start: [`crate::tls::TlsServer::from_config`]).
    pub fn serve(&mut self, listeners: Vec<TcpListener>, tls: Option<Arc<crate::tls::TlsServer>>, maxclients: usize) {
        self.tls = tls.clone();
        let (opts, default) = (self.listeners.clone(), self.default_listener.clone());
        let options = move |i: usize| opts.get(i).cloned().unwrap_or_else(|| default.clone());
        self.server_task = Some(tokio::spawn(server::serve(self.ctx.clone(), listeners, options, tls, maxclients)));
    }

    /// Reads the TLS listeners' `tlscert` / `tlskey` again (for SIGHUP): new handshakes use the
    /// new pair; on error the old one stays and the error says why. Without TLS listeners: Ok.
    pub fn reload_tls(&self) -> anyhow::Result<()> {
        self.tls.as_ref().map_or(Ok(()), |t| t.reload())
    }

    /// Accepts Stratum V2 connections on `sv2`'s listeners (within `maxclients` of their own).
    pub fn serve_sv2(&mut self, sv2: crate::sv2::Sv2Setup, maxclients: usize) {
        let task = crate::sv2::server::serve(self.ctx.clone(), sv2.listeners, sv2.key, sv2.cert_validity, maxclients);
        self.sv2_task = Some(tokio::spawn(task));
    }

    /// After shutdown flipped: waits for the listeners and sessions to end and drops the context,
    /// so the sessions' channels (blocks, upstream shares) close and their readers can finish.
    /// Returns the writers, to drain once those readers are done.
    pub async fn stop_serving(self) -> Writers {
        tracing::info!("shutting down: closing listeners and sessions");
        if let Some(t) = self.server_task {
            let _ = t.await;
        }
        if let Some(t) = self.sv2_task {
            let _ = t.await;
        }
        drop(self.ctx);
        self.writers
    }
}

impl Writers {
    /// Flushes everything queued for the share log and the statistics files (bounded).
    pub async fn drain(self, bounded: Duration) {
        crate::log::drain_writers(self.share_thread, self.stats_task, bounded).await;
    }
}
