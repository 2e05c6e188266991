//! Proxy mode (ckproxy): one upstream stratum session, many local miners below it, each with
//! its own extranonce1 slice of the upstream's extranonce2 space, its own difficulty and its
//! own statistics. Shares meeting the upstream difficulty are forwarded; every miner gets its
//! local verdict at once.

pub mod upstream;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::bail;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::log::{sharelog, stats};
use crate::pool::{Events, Options};
use crate::stratum::{server, Counters, ServerCtx, SessionParams};

/// Runs proxy mode until `shutdown` flips to true.
pub async fn run(
    cfg: Config,
    opts: Options,
    mut shutdown: watch::Receiver<bool>,
    events: Arc<dyn Events>,
) -> anyhow::Result<()> {
    cfg.require_proxy()?;
    let listeners = server::bind_all(&cfg.serverurl)?;
    server::log_listening(&listeners);
    if !cfg.btcd.is_empty() {
        tracing::info!(
            "proxy mode: btcd entries are not used (an upstream job carries no transactions to assemble a block from)"
        );
    }
    let (work_tx, work_rx) = watch::channel(None);
    let (mask_tx, mask_rx) = watch::channel(0u32);
    let (up_tx, up_rx) = mpsc::channel(65_536);
    let client = upstream::UpstreamClient::new(cfg.proxy.clone(), cfg.version_mask, work_tx, up_rx, mask_tx);
    let up_counters = client.counters.clone();
    let upstream_task = tokio::spawn(client.run(shutdown.clone()));

    // Serve once the first upstream job is here: it fixes the miners' extranonce layout.
    let mut w = work_rx.clone();
    let first = loop {
        if let Some(work) = w.borrow_and_update().clone() {
            break work;
        }
        tokio::select! {
            r = w.changed() => if r.is_err() { bail!("upstream task ended before the first job") },
            _ = shutdown.changed() => return Ok(()),
        }
    };
    let prefix_len = first.job.coinbase.nonce1_len - first.en1_prefix.len();
    let granted = *mask_rx.borrow();
    let (share_tx, share_thread) = sharelog::spawn(cfg.logdir.clone());
    let (block_tx, mut block_rx) = mpsc::channel::<crate::stratum::BlockCandidate>(64);
    let (summary_tx, summary_rx) = watch::channel(stats::Summary::default());
    let (stats_tx, stats_task) = stats::spawn(
        stats::StatsTask {
            logdir: cfg.logdir.clone(),
            interval: cfg.stats_interval,
            work: work_rx.clone(),
            summary: summary_tx,
            failing: false,
        },
        65_536,
    );
    let ctx = Arc::new(ServerCtx {
        params: SessionParams {
            mindiff: cfg.mindiff,
            startdiff: cfg.startdiff,
            maxdiff: cfg.maxdiff,
            version_mask: granted,
            nonce1_len: prefix_len,
            log_shares: opts.log_shares,
            keepalive_secs: 55,
            vardiff: cfg.vardiff,
        },
        work: work_rx.clone(),
        shares: share_tx,
        blocks: block_tx,
        upstream: Some(up_tx),
        stats: stats_tx,
        counters: Counters::default(),
        enonces: Mutex::new(HashSet::new()),
        shutdown: shutdown.clone(),
    });
    // A block-meeting share is also an upstream share; it is logged here for the operator.
    let blocks_task = tokio::spawn(async move {
        while let Some(b) = block_rx.recv().await {
            tracing::info!(
                "block-meeting share {} from {}: forwarded to the upstream pool, which submits the block",
                crate::hex::encode_rev(&b.hash),
                b.workername
            );
        }
    });
    let server_task = tokio::spawn(server::serve(ctx.clone(), listeners, cfg.maxclients));
    let summary = format!(
        "ckproxy ready: upstream job received, miners get {prefix_len}+{} extranonce bytes, serving on {}",
        first.job.coinbase.nonce2_len,
        cfg.serverurl.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
    );
    tracing::info!("{summary}");
    events.ready(&summary);

    crate::pool::status_loop(shutdown, &*events, || {
        let c = &ctx.counters;
        format!(
            "{} miners, local accepted {} rejected {}, upstream forwarded {} accepted {} rejected {}; {}",
            c.connections.load(Ordering::Relaxed),
            c.accepted.load(Ordering::Relaxed),
            c.rejected.load(Ordering::Relaxed),
            up_counters.forwarded.load(Ordering::Relaxed),
            up_counters.accepted.load(Ordering::Relaxed),
            up_counters.rejected.load(Ordering::Relaxed),
            *summary_rx.borrow(),
        )
    })
    .await;
    tracing::info!("shutting down: closing listeners and sessions");
    let _ = server_task.await;
    drop(ctx);
    let bounded = Duration::from_secs(15);
    let _ = tokio::time::timeout(bounded, upstream_task).await;
    let _ = tokio::time::timeout(bounded, blocks_task).await;
    crate::log::drain_writers(share_thread, stats_task, bounded).await;
    tracing::info!("ckproxy stopped");
    Ok(())
}
