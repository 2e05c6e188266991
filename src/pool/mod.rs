//! Pool mode: bitcoind templates in, miners served, shares logged, blocks submitted.

pub mod blocks;
pub mod solo;
pub mod templates;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::{Network, ScriptBuf};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use crate::bitcoind::{zmq, Rpc, RpcError};
use crate::config::Config;
use crate::stratum::frontend::FrontEnd;
use crate::stratum::{server, SessionParams};
use crate::work::coinbase::{script_for_address, CoinbaseConfig};

/// Runtime options from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub log_shares: bool,
    /// Solo mining (`-B`): usernames are payout addresses.
    pub btcsolo: bool,
    /// What a reload (SIGHUP) changes while running (service.rs); None: fixed at start.
    pub live: Option<watch::Receiver<crate::reload::Live>>,
}

/// Lifecycle events for the service shell (sd-notify, tests).
pub trait Events: Send + Sync + 'static {
    /// The first job is being served.
    fn ready(&self, _summary: &str) {}
    /// A periodic status line.
    fn status(&self, _status: &str) {}
}

impl Events for () {}

/// Logs (and sends to systemd) `status()` every minute until `shutdown` flips.
pub async fn status_loop(mut shutdown: watch::Receiver<bool>, events: &dyn Events, mut status: impl FnMut() -> String) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let line = status();
                tracing::info!("status: {line}");
                events.status(&line);
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// The node's network name from `getblockchaininfo.chain`.
pub fn network_of(chain: &str) -> Option<Network> {
    match chain {
        "main" => Some(Network::Bitcoin),
        "test" | "testnet3" => Some(Network::Testnet),
        "testnet4" => Some(Network::Testnet4),
        "signet" => Some(Network::Signet),
        "regtest" => Some(Network::Regtest),
        _ => None,
    }
}

/// Resolves `btcaddress` to the payout script, checking it against the node. A fork's address
/// format rust-bitcoin does not parse is taken from the node's own `validateaddress` answer.
pub async fn payout_script(rpc: &Rpc, address: &str) -> anyhow::Result<(ScriptBuf, String)> {
    let info = rpc.call("getblockchaininfo", json!([])).await?;
    let chain = info.get("chain").and_then(Value::as_str).unwrap_or("").to_string();
    let network = network_of(&chain);
    let local = network.map(|n| script_for_address(address, n));
    let node = rpc.call("validateaddress", json!([address])).await;
    match (&local, &node) {
        (Some(Ok(script)), Ok(v)) => {
            if v.get("isvalid") == Some(&Value::Bool(false)) {
                bail!("btcaddress {address:?} is refused by the node ({chain}): validateaddress says isvalid=false");
            }
            Ok((script.clone(), chain))
        }
        (Some(Ok(script)), Err(_)) => Ok((script.clone(), chain)),
        (_, Ok(v)) if v.get("isvalid") == Some(&Value::Bool(true)) => {
            let spk =
                v.get("scriptPubKey").and_then(Value::as_str).and_then(|h| crate::hex::decode(h).ok()).with_context(
                    || format!("btcaddress {address:?}: the node accepts it but gives no scriptPubKey"),
                )?;
            Ok((ScriptBuf::from_bytes(spk), chain))
        }
        (Some(Err(e)), _) => bail!("btcaddress: {e}; set an address of the node's network ({chain})"),
        _ => bail!("btcaddress {address:?} is not valid for the node's network ({chain})"),
    }
}

/// What the node publishes over ZMQ: Core's `getzmqnotifications`, else Bitcoin SV's
/// `activezmqnotifications` (same list; see `zmq::published_at`). `node`: one btcd entry.
pub async fn zmq_publishers(rpc: &Rpc, node: Option<usize>) -> Result<Value, RpcError> {
    let mut last = None;
    for method in ["getzmqnotifications", "activezmqnotifications"] {
        let r = match node {
            Some(i) => rpc.call_node(i, method, json!([])).await,
            None => rpc.call(method, json!([])).await,
        };
        match r {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("two methods tried"))
}

/// Says at start when the node (asked with `getzmqnotifications`) publishes no blocks at
/// `zmqblock`: new blocks then reach miners only by polling every `polling`.
async fn zmq_published(rpc: &Rpc, ep: &str, polling: Duration) {
    match zmq_publishers(rpc, None).await {
        Ok(v) => {
            if let Err(listed) = zmq::published_at(&v, ep) {
                let listed = if listed.is_empty() { "nothing".to_string() } else { listed.join(", ") };
                tracing::warn!(
                    "zmqblock {ep}: bitcoind publishes no blocks there (it publishes: {listed}); \
                     new blocks are found by polling every {polling:?} until a publisher appears there"
                );
            }
        }
        Err(e) => tracing::debug!("zmqblock {ep}: the node does not list its publishers ({e})"),
    }
}

/// Waits until the node answers (warming up, unreachable), logging what it says, or shutdown.
async fn wait_for_node(rpc: &Rpc, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(250);
    let mut last_msg = String::new();
    loop {
        match rpc.call("getblockchaininfo", json!([])).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let msg = e.to_string();
                if msg != last_msg {
                    if matches!(e, RpcError::Unauthorized { .. }) {
                        bail!("{e}");
                    }
                    tracing::warn!("waiting for bitcoind: {msg}");
                    last_msg = msg;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => bail!("shutdown while waiting for bitcoind"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

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
    let listeners =
        listeners.take("serverurl").into_iter().map(crate::sockets::to_tokio).collect::<anyhow::Result<Vec<_>>>()?;
    server::log_listening(&listeners);
    let sv2 = crate::sv2::setup(&cfg, listeners_sv2, cfg.nonce1length, cfg.nonce2length)?;
    events.status(&format!("starting: waiting for bitcoind {}", rpc.node_label(0)));
    wait_for_node(&rpc, &mut shutdown).await?;
    let (script, chain) = payout_script(&rpc, &cfg.btcaddress).await?;
    tracing::info!("bitcoind {} ({chain}); block rewards go to {}", rpc.node_label(0), cfg.btcaddress);

    let mut cb = CoinbaseConfig::new(script, &cfg.btcsig);
    cb.nonce1_len = cfg.nonce1length;
    cb.nonce2_len = cfg.nonce2length;

    let (work_tx, work_rx) = watch::channel(None);
    let (height_tx, height_rx) = watch::channel(0u32);
    let (refresh_tx, refresh_rx) = mpsc::channel(4);
    let (block_tx, block_rx) = mpsc::channel(64);

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
    let mut source =
        templates::TemplateSource::new(rpc.clone(), cb, work_tx, cfg.blockpoll, cfg.update_interval, height_tx);
    source.solo = solo.is_some();
    source.live = opts.live.clone();
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
    let template_task = tokio::spawn(source.run(zmq_rx, refresh_rx, shutdown.clone()));

    let mut params = SessionParams::from_config(&cfg, cfg.version_mask, cfg.nonce1length, opts.log_shares);
    params.solo = solo;
    params.live = opts.live.clone();
    let mut fe = FrontEnd::new(&cfg, params, work_rx.clone(), block_tx, None, shutdown.clone());
    let submitter = blocks::BlockSubmitter {
        rpc: rpc.clone(),
        logdir: cfg.logdir.clone(),
        refresh: refresh_tx,
        stats: fe.ctx.stats.clone(),
        height: height_rx.clone(),
        shutdown: shutdown.clone(),
    };
    let block_task = tokio::spawn(submitter.run(block_rx));
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
    tracing::info!("ckpool stopped");
    Ok(())
}
