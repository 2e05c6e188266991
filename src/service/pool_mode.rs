//! Pool mode's runner: node checked, template source started, miners served (SV1, SV2), blocks
//! submitted, the API started; then one shutdown order.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::sync::{mpsc, watch};

use super::events::{status_loop, Events, Options};
use super::frontend::FrontEnd;
use crate::bitcoind::{zmq, Rpc};
use crate::blocks;
use crate::config::Config;
use crate::pool::{network_of, payout_script, solo, templates, wait_for_node, zmq_published};
use crate::serve::SessionParams;
use crate::work::coinbase::CoinbaseConfig;

/// Runs pool mode until `shutdown` flips to true.
pub async fn run(
    cfg: Config,
    opts: Options,
    mut listeners: crate::sockets::Listeners,
    mut shutdown: watch::Receiver<bool>,
    events: Arc<dyn Events>,
) -> anyhow::Result<()> {
    cfg.require_pool()?;
    let rpc = Arc::new(Rpc::new(&cfg.btcd, Duration::from_secs(15)));
    // TLS listeners' certificate: a missing, unreadable or mismatched file stops the start here.
    let tls = crate::tls::TlsServer::from_config(&cfg)?;
    let api_listeners = listeners.take("apiurl");
    let listeners_sv2 = listeners.take("sv2url");
    let listeners_jd = listeners.take("sv2jdurl");
    let listeners =
        listeners.take("serverurl").into_iter().map(crate::sockets::to_tokio).collect::<anyhow::Result<Vec<_>>>()?;
    crate::serve::accept::log_listening(&listeners);
    let sv2 = crate::sv2::setup(&cfg, listeners_sv2, cfg.nonce1length, cfg.nonce2length)?;
    let (work_tx, work_rx) = watch::channel(None);
    let (height_tx, height_rx) = watch::channel(0u32);
    let (refresh_tx, refresh_rx) = mpsc::channel(4);
    let (block_tx, block_rx) = mpsc::channel(64);
    // The block task starts first: it reads blocks.log and resubmits what no node has while this
    // instance still waits for its node. Its statistics go through a channel of its own (handed
    // on to the statistics task once that runs), so it never waits on theirs.
    let (block_stats_tx, block_stats_rx) = mpsc::channel(16);
    // `ipcmining`: the IPC link's thread starts now (it connects on its own and says when it
    // cannot); its found-block channel goes to the block task, its templates to the source.
    let ipc = match &cfg.ipcmining {
        Some(m) => {
            let params = crate::bitcoind::ipc::IpcParams {
                path: m.path.clone(),
                fee_threshold: m.fee_threshold,
                update_interval: cfg.update_interval,
                empty_first: cfg.empty_first,
            };
            Some(
                crate::bitcoind::ipc::spawn(params, shutdown.clone())
                    .context("ipcmining: cannot start the IPC thread")?,
            )
        }
        None => None,
    };
    let (ipc_events, ipc_solutions) = match ipc {
        Some(l) => (Some(l.events), Some(l.solutions)),
        None => (None, None),
    };
    let submitter = blocks::BlockSubmitter {
        rpc: rpc.clone(),
        logdir: cfg.logdir.clone(),
        refresh: refresh_tx,
        stats: block_stats_tx,
        height: height_rx.clone(),
        shutdown: shutdown.clone(),
        takeover: opts.predecessor_gone.clone(),
        ipc: ipc_solutions,
    };
    let block_task = tokio::spawn(submitter.run(block_rx));
    events.status(&format!("starting: waiting for bitcoind {}", rpc.node_label(0)));
    wait_for_node(&rpc, &mut shutdown).await?;
    let (script, chain) = payout_script(&rpc, &cfg.btcaddress).await?;
    tracing::info!("bitcoind {} ({chain}); block rewards go to {}", rpc.node_label(0), cfg.btcaddress);

    let mut cb = CoinbaseConfig::new(script.clone(), &cfg.btcsig);
    cb.nonce1_len = cfg.nonce1length;
    cb.nonce2_len = cfg.nonce2length;

    if let Some(ep) = &cfg.zmqblock {
        zmq_published(&rpc, ep, templates::poll_interval(cfg.blockpoll, true)).await;
    }
    let zmq_rx = match &cfg.zmqblock {
        Some(ep) => match zmq::subscribe(ep, templates::poll_interval(cfg.blockpoll, true)) {
            Ok(rx) => Some(rx),
            Err(e) => {
                tracing::warn!("{e}; polling the node every {:?} instead", cfg.blockpoll);
                None
            }
        },
        None => None,
    };

    let solo = opts.btcsolo.then(|| {
        let bp = cfg.donation_bp;
        tracing::info!(
            "solo mode (-B): each username is its miner's payout address ({chain}); a block pays its finder{}",
            if bp > 0 {
                format!(", {}.{:02} % of it to {}", bp / 100, bp % 100, cfg.btcaddress)
            } else {
                String::new()
            }
        );
        Arc::new(solo::Solo::new(network_of(&chain), cb.clone(), bp))
    });
    let payees = match (&cfg.pplns, opts.btcsolo) {
        (Some(_), true) => bail!(
            "payout_scheme \"pplns\" and solo mode (-B) exclude each other: solo pays each block to its finder; \
             remove -B or the payout_scheme key"
        ),
        (Some(p), false) => {
            tracing::info!(
                "pplns: each block pays the miners of the last {} x network difficulty of shares by their payout \
                 address ({chain}); pool fee {}.{:02} % and the remainder to {}; smallest output {} sat, at most {} \
                 outputs in {} bytes of coinbase; the share log is written (-L implied: it is what the window is \
                 rebuilt from and audited with)",
                p.window,
                p.fee_bp / 100,
                p.fee_bp % 100,
                cfg.btcaddress,
                p.min_output,
                p.max_outputs,
                p.coinbase_max
            );
            Some(Arc::new(crate::pool::pplns::Payees::new(network_of(&chain), p.clone()).with_journal(&cfg.logdir)))
        }
        (None, _) => None,
    };
    let mut source =
        templates::TemplateSource::new(rpc.clone(), cb, work_tx, cfg.blockpoll, cfg.update_interval, height_tx);
    source.solo = solo.is_some();
    source.payees = payees.clone();
    source.live = opts.live.clone();
    source.empty_first = cfg.empty_first.then(|| crate::pool::tip::EmptyFirst::new(network_of(&chain), &chain));
    source.refresh(templates::Reason::Start, None).await;
    let netdiff = work_rx.borrow().as_ref().and_then(|w| crate::difficulty::Difficulty::from_compact(w.job.nbits));
    if let Some(network) = netdiff {
        // The lowest start any listener gives (serverurl entries may have their own).
        let lowest = (0..cfg.serverurl.len().max(1)).map(|i| cfg.listener(i)).min_by_key(|l| l.startdiff);
        let (min, start) = lowest.map_or((cfg.mindiff, cfg.startdiff), |l| (l.mindiff, l.startdiff));
        if let Some(note) = templates::low_network_note(network, min, start) {
            tracing::warn!("{note}");
        }
    }
    if let (Some(p), Some(network)) = (payees.clone(), netdiff) {
        let logdir = cfg.logdir.clone();
        let r = tokio::task::spawn_blocking(move || p.replay(&logdir, network)).await?;
        let from = match r.snapshot {
            Some(cut) => {
                format!("the snapshot of {} and the share log after it", crate::pool::pplns::journal::time_text(cut))
            }
            None => "the share log".to_string(),
        };
        tracing::info!(
            "pplns: window rebuilt from {from}: {} accepted share(s) replayed from {} file(s) ({} line(s)), {} payee(s), {} carried credit(s) put back",
            r.shares,
            r.files,
            r.lines,
            r.payees,
            r.carries
        );
        source.repay();
    }
    let template_task = tokio::spawn(source.run(zmq_rx, refresh_rx, ipc_events, shutdown.clone()));
    let snapshots = payees
        .clone()
        .map(|p| tokio::spawn(snapshot_task(p, cfg.logdir.clone(), shutdown.clone(), opts.predecessor_gone.clone())));

    // PPLNS pays by the share log: it is the record a restart rebuilds the window from and
    // anyone audits a coinbase with, so it is written whether or not -L was given.
    let log_shares = opts.log_shares || payees.is_some();
    let mut params = SessionParams::new(&cfg, opts.live.clone(), cfg.version_mask, cfg.nonce1length, log_shares);
    params.solo = solo;
    let payees_at_stop = payees.clone();
    params.payees = payees;
    // Job Declaration (`sv2jdurl`): declared coinbases pay the pool's address in full, which
    // neither solo mode nor PPLNS's payees in the coinbase can be.
    let jds = if cfg.sv2jdurl.is_empty() {
        None
    } else {
        if sv2.is_none() {
            bail!("sv2jdurl needs sv2url: a declared job is mined over a Stratum V2 mining connection; add an sv2url listener");
        }
        if params.solo.is_some() || params.payees.is_some() {
            bail!(
                "sv2jdurl (Job Declaration) works with the pool paying btcaddress: declared coinbases pay the pool's address in full; \
                 remove -B or payout_scheme \"pplns\", or sv2jdurl"
            );
        }
        let path = crate::sv2::authority_key_path(&cfg);
        let (key, _) = crate::sv2::keys::AuthorityKey::load_or_create(&path)?;
        let jd_listeners =
            listeners_jd.into_iter().map(crate::sockets::to_tokio).collect::<anyhow::Result<Vec<_>>>()?;
        params.declared = Some(Arc::new(crate::serve::declared::DeclaredJobs::default()));
        let jds = Arc::new(crate::sv2::jds::Jds::new(script.clone(), rpc.clone()));
        Some((crate::sv2::jds::JdsSetup { listeners: jd_listeners, key, cert_validity: cfg.sv2_cert_validity }, jds))
    };
    let mut fe =
        FrontEnd::new(&cfg, params, work_rx.clone(), block_tx, None, shutdown.clone(), opts.predecessor_gone.clone());
    tokio::spawn(blocks::forward_stats(block_stats_rx, fe.ctx.stats.clone()));
    let api = crate::api::Sources {
        mode: crate::api::Mode::Pool,
        ctx: fe.ctx.clone(),
        view: fe.view.clone(),
        logdir: cfg.logdir.clone(),
        rpc: Some(rpc.clone()),
        upstream: None,
    };
    crate::api::start(&cfg, api_listeners, api, shutdown.clone())?;
    fe.serve(listeners, tls, cfg.maxclients);
    if let Some(sv2) = sv2 {
        fe.serve_sv2(sv2, cfg.maxclients);
    }
    let jds_task = jds.map(|(setup, jds)| tokio::spawn(crate::sv2::jds::serve(fe.ctx.clone(), setup, jds)));

    // Ready once a job is being served.
    let mut w = work_rx.clone();
    loop {
        if w.borrow().is_some() {
            break;
        }
        tokio::select! {
            r = w.changed() => if r.is_err() { bail!("template source stopped before the first job") },
            _ = shutdown.changed() => break,
        }
    }
    if !*shutdown.borrow() {
        let summary = format!(
            "ckpool ready: serving height {} on {}",
            *height_rx.borrow(),
            cfg.serverurl.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
        );
        tracing::info!("{summary}");
        events.ready(&summary);
    }

    // Status line every minute until shutdown.
    let mut last = (0u64, 0u64);
    let (ctx, summary_rx) = (fe.ctx.clone(), fe.summary.clone());
    status_loop(shutdown, &*events, || {
        let c = &ctx.counters;
        let (acc, rej) = (c.accepted.load(Ordering::Relaxed), c.rejected.load(Ordering::Relaxed));
        let status = format!(
            "height {}, {} miners, shares/min accepted {} rejected {}, totals accepted {acc} rejected {rej}; {}",
            *height_rx.borrow(),
            c.connections.load(Ordering::Relaxed),
            acc - last.0,
            rej - last.1,
            *summary_rx.borrow()
        );
        last = (acc, rej);
        status
    })
    .await;
    drop(ctx);
    if let Some(t) = jds_task {
        let _ = t.await;
    }
    let writers = fe.stop_serving().await;
    // Sessions are gone: their channel senders are dropped, so the block submitter ends its
    // submissions in flight (a block no node took yet is submitted again at the next start) and
    // the share log writer drains everything queued, then both end.
    // The three are independent: waited for together, within one deadline (service.rs).
    let bounded = crate::service::DRAIN_AFTER_SESSIONS;
    let (blocks, _, _) = tokio::join!(
        tokio::time::timeout(bounded, block_task),
        tokio::time::timeout(bounded, template_task),
        writers.drain(bounded)
    );
    if blocks.is_err() {
        tracing::warn!("block submitter still busy after {bounded:?}; block hex files are in logdir/blocks");
    }
    // Every share is credited now (the statistics task has ended): the window's snapshot lets
    // the next start skip the share log.
    if let Some(t) = snapshots {
        let _ = t.await;
        save_snapshot(payees_at_stop.clone(), cfg.logdir.clone(), "at stop").await;
    }
    tracing::info!("ckpool stopped");
    Ok(())
}

/// How often the PPLNS window's snapshot is written while the pool runs (a start after a crash
/// reads it and the share log after it).
const SNAPSHOT_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// Writes the PPLNS window's snapshot every [`SNAPSHOT_EVERY`] until shutdown, and once the old
/// instance of a handover (`-H`) has exited (its stop wrote its own snapshot, which this
/// instance's window replaces).
async fn snapshot_task(
    p: Arc<crate::pool::pplns::Payees>,
    logdir: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
    mut predecessor: Option<watch::Receiver<bool>>,
) {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => save_snapshot(Some(p.clone()), logdir.clone(), "periodic").await,
            gone = async { predecessor.as_mut().expect("guarded").wait_for(|g| *g).await.is_ok() }, if predecessor.is_some() => {
                predecessor = None;
                if gone {
                    save_snapshot(Some(p.clone()), logdir.clone(), "the old instance has exited").await;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn save_snapshot(p: Option<Arc<crate::pool::pplns::Payees>>, logdir: std::path::PathBuf, when: &str) {
    let Some(p) = p else { return };
    let path = logdir.join(crate::pool::pplns::snapshot::SNAPSHOT_FILE);
    match tokio::task::spawn_blocking(move || p.save_snapshot(&logdir)).await {
        Ok(Ok((payees, slices))) => {
            tracing::info!(
                "pplns: window snapshot ({when}) written to {}: {payees} payee(s) in {slices} slice(s)",
                path.display()
            )
        }
        Ok(Err(e)) => tracing::error!("pplns: cannot write the window snapshot {}: {e}", path.display()),
        Err(e) => tracing::error!("pplns: window snapshot task failed: {e}"),
    }
}
