//! Proxy mode (ckproxy): one upstream stratum session, many local miners (SV1 on serverurl, SV2
//! on sv2url) below it, each with its own extranonce1 slice of the upstream's extranonce2 space,
//! its own difficulty and its own statistics. Shares meeting the upstream difficulty are forwarded; every miner gets its
//! local verdict at once.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::bail;
use tokio::sync::{mpsc, watch};

use super::events::{Events, Options};
use super::frontend::FrontEnd;
use crate::config::Config;
use crate::proxy::upstream;
use crate::serve::SessionParams;

/// Runs proxy mode until `shutdown` flips to true.
pub async fn run(
    cfg: Config,
    opts: Options,
    mut listeners: crate::sockets::Listeners,
    mut shutdown: watch::Receiver<bool>,
    events: Arc<dyn Events>,
) -> anyhow::Result<()> {
    cfg.require_proxy()?;
    // TLS listeners' certificate: a missing, unreadable or mismatched file stops the start here.
    let tls = crate::tls::TlsServer::from_config(&cfg)?;
    let api_listeners = listeners.take("apiurl");
    let listeners_sv2 = listeners.take("sv2url");
    if !cfg.sv2jdurl.is_empty() {
        bail!(
            "sv2jdurl is the pool's Job Declaration server (pool mode); a proxy does not serve one: remove it from {}",
            cfg.path.display()
        );
    }
    let listeners =
        listeners.take("serverurl").into_iter().map(crate::sockets::to_tokio).collect::<anyhow::Result<Vec<_>>>()?;
    crate::serve::accept::log_listening(&listeners);
    // Job Declaration (a `proxy` entry with `jds`): templates come from the proxy's own node.
    let declaring = cfg.proxy.iter().any(|p| p.jds.is_some());
    let node = match (declaring, cfg.btcd.is_empty()) {
        (true, true) => bail!(
            "a proxy entry has jds (Job Declaration) but there is no btcd entry: the proxy declares jobs built from its own node; add one"
        ),
        (true, false) => Some(Arc::new(crate::bitcoind::Rpc::new(&cfg.btcd, std::time::Duration::from_secs(15)))),
        (false, false) => {
            tracing::info!(
                "proxy mode: btcd entries are not used without jds (an upstream job carries no transactions to assemble a block from)"
            );
            None
        }
        (false, true) => None,
    };
    let (work_tx, work_rx) = watch::channel(None);
    let (mask_tx, mask_rx) = watch::channel(0u32);
    let (up_tx, up_rx) = mpsc::channel(65_536);
    let mut client = upstream::UpstreamClient::new(cfg.proxy.clone(), cfg.version_mask, work_tx, up_rx, mask_tx);
    client.node = node.clone();
    client.btcsig = cfg.btcsig.clone();
    client.blockpoll = cfg.blockpoll;
    client.update_interval = cfg.update_interval;
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
    // SV2 miners (sv2url) get the same extranonce layout as SV1 ones.
    let sv2 = crate::sv2::setup(&cfg, listeners_sv2, first.job.coinbase.nonce1_len, first.job.coinbase.nonce2_len)?;
    let granted = *mask_rx.borrow();
    let (block_tx, mut block_rx) = mpsc::channel::<crate::mining::BlockCandidate>(64);
    let params = SessionParams::new(&cfg, opts.live.clone(), granted, prefix_len, opts.log_shares);
    let mut fe = FrontEnd::new(
        &cfg,
        params,
        work_rx.clone(),
        block_tx,
        Some(up_tx),
        shutdown.clone(),
        opts.predecessor_gone.clone(),
    );
    // A block-meeting share is also an upstream share; it is logged here for the operator and
    // counted as a found block (status, API).
    let stats = fe.ctx.stats.clone();
    let blocks_task = tokio::spawn(async move {
        while let Some(b) = block_rx.recv().await {
            tracing::info!(
                "block-meeting share {} at height {} from {}: forwarded to the upstream pool, which submits the block",
                crate::hex::encode_rev(&b.hash),
                b.job.height,
                b.workername
            );
            // A declared job's block has its transactions here: the own node gets it too.
            if let (Some(rpc), Some(block)) = (&node, b.job.assemble_block(&b.en1, &b.en2, &b.header)) {
                match rpc.call("submitblock", serde_json::json!([crate::hex::encode(&block)])).await {
                    Ok(v) if v.is_null() => tracing::info!(
                        "block {} submitted to this proxy's node: accepted",
                        crate::hex::encode_rev(&b.hash)
                    ),
                    Ok(v) => {
                        tracing::info!("block {} submitted to this proxy's node: {v}", crate::hex::encode_rev(&b.hash))
                    }
                    Err(e) => tracing::warn!(
                        "block {} not submitted to this proxy's node: {e} (the upstream pool has it)",
                        crate::hex::encode_rev(&b.hash)
                    ),
                }
            }
            let _ = stats.send(crate::log::stats::StatEvent::BlockForwarded).await;
        }
    });
    let api = crate::api::Sources {
        mode: crate::api::Mode::Proxy,
        ctx: fe.ctx.clone(),
        view: fe.view.clone(),
        logdir: cfg.logdir.clone(),
        rpc: None,
        upstream: Some(crate::api::Upstreams {
            counters: up_counters.clone(),
            urls: cfg.proxy.iter().map(|p| crate::api::without_userinfo(&p.url)).collect(),
        }),
        jds: None,
    };
    crate::api::start(&cfg, api_listeners, api, shutdown.clone())?;
    fe.serve(listeners, tls, cfg.maxclients);
    if let Some(sv2) = sv2 {
        fe.serve_sv2(sv2, cfg.maxclients);
    }
    let summary = format!(
        "ckproxy ready: upstream job received, miners get {prefix_len}+{} extranonce bytes, serving on {}",
        first.job.coinbase.nonce2_len,
        cfg.serverurl.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
    );
    tracing::info!("{summary}");
    events.ready(&summary);

    let (ctx, summary_rx) = (fe.ctx.clone(), fe.summary.clone());
    crate::service::events::status_loop(shutdown, &*events, || {
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
    drop(ctx);
    let writers = fe.stop_serving().await;
    // The three are independent: waited for together, within one deadline (service.rs).
    let bounded = crate::service::DRAIN_AFTER_SESSIONS;
    let _ = tokio::join!(
        tokio::time::timeout(bounded, upstream_task),
        tokio::time::timeout(bounded, blocks_task),
        writers.drain(bounded)
    );
    tracing::info!("ckproxy stopped");
    Ok(())
}
