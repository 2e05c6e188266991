//! The IPC link's thread: connect to the node's socket, take templates (`createNewBlock`, then
//! `waitNext` in a loop), hand found blocks back (`submitSolution`), and after a loss reconnect
//! with backoff. One log line when the link goes down (or cannot be made), one when it is back.
//!
//! Empty-first (`empty_first`): a second `waitNext` waits, on its own server thread, on a
//! coinbase-only template (`createNewBlock` without the mempool, and no fee threshold, so it
//! builds nothing until the tip moves). On a new tip the node wakes both waits: the empty one is
//! a coinbase and a header (well under a millisecond) and goes out first, unless the full one's
//! assembly took the node's lock first; then the empty one, which builds on a tip the miners
//! already have, is dropped here. Every field of it is the node's own (time, bits, version), so
//! nothing is derived.
//!
//! Questions from the Job Declaration server (`checkBlock`, `getTransactionsByWitnessID`) run on
//! a server thread of their own (`ckpool-jds`, so a pending `waitNext` never holds them up), a
//! few at a time; while the link is down each is answered at once with an error, so the asker
//! takes its RPC path.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use super::schema::init_capnp::init;
use super::schema::mining_capnp::{block_template, mining};
use super::schema::proxy_capnp::thread;
use super::{solution_parts, BlockCheck, IpcEvent, IpcParams, IpcRequest, Solution};
use crate::work::Template;

/// Reconnection backoff: from 1 s, doubling, at most 30 s.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Templates kept for `submitSolution` (a block found on a job a few templates old still goes).
const KEEP_TEMPLATES: usize = 8;
/// The empty-first wait's timeout: it is renewed when it passes (it builds nothing meanwhile).
const EMPTY_WAIT_MS: f64 = 3_600_000.0;
/// Questions sent to the node and not yet answered, at most (more wait in the channel).
const ASKS_IN_FLIGHT: usize = 4;

type WaitNext = capnp::capability::Promise<
    capnp::capability::Response<super::schema::mining_capnp::block_template::wait_next_results::Owned>,
    capnp::Error,
>;

/// `waitNext` on `t`: a new tip, fees up by `fee_threshold`, or `timeout_ms` passed.
fn wait_next(t: &block_template::Client, on: &thread::Client, timeout_ms: f64, fee_threshold: i64) -> WaitNext {
    let mut req = t.wait_next_request();
    let mut p = req.get();
    p.reborrow().init_context().set_thread(on.clone());
    let mut o = p.init_options();
    o.set_timeout(timeout_ms);
    o.set_fee_threshold(fee_threshold);
    req.send().promise
}

/// The empty-first wait: the coinbase-only template on the current tip and its pending `waitNext`.
struct EmptyWait {
    on: thread::Client,
    template: block_template::Client,
    wait: WaitNext,
}

impl EmptyWait {
    async fn start(mining: &mining::Client, on: thread::Client) -> anyhow::Result<EmptyWait> {
        let template = create(mining, &on, false).await?;
        let wait = wait_next(&template, &on, EMPTY_WAIT_MS, i64::MAX);
        Ok(EmptyWait { on, template, wait })
    }
}

/// The empty wait's answer, or never when empty-first is off.
async fn empty_answer(
    empty: &mut Option<EmptyWait>,
) -> Result<
    capnp::capability::Response<super::schema::mining_capnp::block_template::wait_next_results::Owned>,
    capnp::Error,
> {
    match empty {
        Some(e) => (&mut e.wait).await,
        None => std::future::pending().await,
    }
}

pub(super) fn run_thread(
    params: IpcParams,
    events: mpsc::Sender<IpcEvent>,
    solutions: mpsc::Receiver<Solution>,
    asks: mpsc::Receiver<IpcRequest>,
    shutdown: watch::Receiver<bool>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("ipcmining: cannot start the IPC thread's runtime: {e}; templates from getblocktemplate");
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(params, events, solutions, asks, shutdown));
}

/// How a session ended without an error.
enum Ended {
    /// Shutdown, or the pool stopped listening.
    Stop,
}

async fn run(
    params: IpcParams,
    events: mpsc::Sender<IpcEvent>,
    mut solutions: mpsc::Receiver<Solution>,
    mut asks: mpsc::Receiver<IpcRequest>,
    mut shutdown: watch::Receiver<bool>,
) {
    let path = params.path.display().to_string();
    let mut backoff = BACKOFF_FIRST;
    // None before the first attempt; Some(true) while templates come; Some(false) while down.
    let mut up: Option<bool> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let mut served = false;
        let res = session(&params, &events, &mut solutions, &mut asks, &mut shutdown, &mut served).await;
        if served {
            backoff = BACKOFF_FIRST;
            up = Some(true);
        }
        match res {
            Ok(Ended::Stop) => return,
            Err(e) => {
                match up {
                    Some(true) => tracing::warn!(
                        "ipcmining: connection to {path} lost: {e:#}; templates from getblocktemplate until it is back (retrying every {}-{} s)",
                        BACKOFF_FIRST.as_secs(),
                        BACKOFF_MAX.as_secs()
                    ),
                    None => tracing::warn!(
                        "ipcmining: cannot use {path}: {e:#}; templates from getblocktemplate until it answers (retrying every {}-{} s)",
                        BACKOFF_FIRST.as_secs(),
                        BACKOFF_MAX.as_secs()
                    ),
                    Some(false) => tracing::debug!("ipcmining: {path} still unavailable: {e:#}"),
                }
                if up != Some(false) && events.send(IpcEvent::Down).await.is_err() {
                    return;
                }
                up = Some(false);
            }
        }
        // Down: questions are answered at once (the asker takes its RPC path).
        let retry = tokio::time::sleep(backoff);
        tokio::pin!(retry);
        loop {
            tokio::select! {
                _ = &mut retry => break,
                q = asks.recv() => match q {
                    Some(q) => refuse_ask(q, "the IPC link is down"),
                    None => return,
                },
                _ = shutdown.changed() => return,
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One connection: templates until it fails (an error) or the pool stops (`Ended::Stop`).
/// `served` is set once a template reached the pool.
async fn session(
    params: &IpcParams,
    events: &mpsc::Sender<IpcEvent>,
    solutions: &mut mpsc::Receiver<Solution>,
    asks: &mut mpsc::Receiver<IpcRequest>,
    shutdown: &mut watch::Receiver<bool>,
    served: &mut bool,
) -> anyhow::Result<Ended> {
    let path = params.path.display().to_string();
    let stream = UnixStream::connect(&params.path).await.with_context(|| format!("connect to {path}"))?;
    let (r, w) = stream.into_split();
    let network = twoparty::VatNetwork::new(r.compat(), w.compat_write(), Side::Client, Default::default());
    let mut rpc = RpcSystem::new(Box::new(network), None);
    let init: init::Client = rpc.bootstrap(Side::Server);
    // The RPC system ends (with the connection's error) when the node goes away.
    let (lost_tx, mut lost) = tokio::sync::oneshot::channel::<String>();
    tokio::task::spawn_local(async move {
        let why = match rpc.await {
            Ok(()) => "the node closed the connection".to_string(),
            Err(e) => e.to_string(),
        };
        let _ = lost_tx.send(why);
    });

    // libmultiprocess: a server thread per caller thread; waits on one, submissions on another.
    let tm = init.construct_request().send().promise.await.context("construct")?;
    let thread_map = tm.get()?.get_thread_map()?;
    let wait_thread = make_thread(&thread_map, "ckpool-wait").await?;
    let submit_thread = make_thread(&thread_map, "ckpool-submit").await?;
    let ask_thread = make_thread(&thread_map, "ckpool-jds").await?;
    let in_flight = std::rc::Rc::new(std::cell::Cell::new(0usize));
    let mut req = init.make_mining_request();
    req.get().init_context().set_thread(wait_thread.clone());
    let mining: mining::Client = req.send().promise.await.context("makeMining")?.get()?.get_result()?;

    let mut next_id: u64 = 0;
    let mut kept: VecDeque<(u64, block_template::Client)> = VecDeque::new();
    let mut current = create(&mining, &wait_thread, true).await?;
    let mut empty = match params.empty_first {
        true => Some(EmptyWait::start(&mining, make_thread(&thread_map, "ckpool-empty").await?).await?),
        false => None,
    };
    // The previous block of the last full template sent: an empty one on it is late.
    let mut full_prev: Option<[u8; 32]> = None;
    // One of the two at a time: the full template being read (an empty one can go out
    // meanwhile), or the node's waitNext on the last one read.
    next_id += 1;
    let mut reading: Option<Reading> = Some(Reading::start(&current, &wait_thread, next_id));
    let mut wait: Option<WaitNext> = None;
    loop {
        tokio::select! {
            t = async { reading.as_mut().map(|r| &mut r.read).expect("guarded").await }, if reading.is_some() => {
                let Some(Reading { id, since, .. }) = reading.take() else { continue };
                let template = t?;
                tracing::debug!(
                    "ipcmining: template {id} (height {}, {} transactions) read in {:.2} ms",
                    template.height,
                    template.transactions.len(),
                    since.elapsed().as_secs_f64() * 1e3
                );
                if !*served {
                    tracing::info!(
                        "ipcmining: templates from Bitcoin Core's IPC mining interface at {path} (height {}, {} transactions)",
                        template.height,
                        template.transactions.len()
                    );
                }
                keep(&mut kept, id, current.clone());
                full_prev = Some(template.prev_hash);
                if events.send(IpcEvent::Template(Box::new(template))).await.is_err() {
                    return Ok(Ended::Stop);
                }
                *served = true;
                // waitNext: a new tip, fees up by the threshold, or the update interval's timeout.
                wait = Some(wait_next(
                    &current,
                    &wait_thread,
                    params.update_interval.as_secs_f64() * 1e3,
                    i64::try_from(params.fee_threshold).unwrap_or(i64::MAX),
                ));
            }
            r = async { wait.as_mut().expect("guarded").await }, if wait.is_some() => {
                wait = None;
                let r = r.context("waitNext")?;
                let r = r.get()?;
                current = if r.has_result() {
                    r.get_result()?
                } else {
                    // The interval passed with no new tip and no fee rise: a fresh template
                    // anyway (time and transactions), as getblocktemplate's update would give.
                    create(&mining, &wait_thread, true).await?
                };
                next_id += 1;
                reading = Some(Reading::start(&current, &wait_thread, next_id));
            }
            r = empty_answer(&mut empty) => {
                let r = r.context("waitNext (empty-first)")?;
                let Some(e) = empty.as_mut() else { continue };
                let r = r.get()?;
                if r.has_result() {
                    let since = Instant::now();
                    e.template = r.get_result()?;
                    next_id += 1;
                    let t = Reading::start(&e.template, &e.on, next_id).read.await?;
                    // Late (the full template on that tip went out first): not sent.
                    let late = full_prev == Some(t.prev_hash);
                    tracing::debug!(
                        "ipcmining: empty template {next_id} (height {}) read in {:.2} ms{}",
                        t.height,
                        since.elapsed().as_secs_f64() * 1e3,
                        if late { ", after the full one: not sent" } else { "" }
                    );
                    if !late {
                        keep(&mut kept, next_id, e.template.clone());
                        if events.send(IpcEvent::Empty(Box::new(t))).await.is_err() {
                            return Ok(Ended::Stop);
                        }
                    }
                }
                e.wait = wait_next(&e.template, &e.on, EMPTY_WAIT_MS, i64::MAX);
            }
            q = asks.recv(), if in_flight.get() < ASKS_IN_FLIGHT => match q {
                Some(q) => answer(&mining, &ask_thread, &in_flight, q),
                None => return Ok(Ended::Stop),
            },
            s = solutions.recv() => match s {
                Some(s) => submit(&kept, &submit_thread, s),
                None => return Ok(Ended::Stop),
            },
            why = &mut lost => anyhow::bail!("{}", why.unwrap_or_else(|_| "connection ended".into())),
            _ = shutdown.changed() => return Ok(Ended::Stop),
        }
    }
}

/// Holds `t` (id `id`) for `submitSolution`, dropping the oldest beyond [`KEEP_TEMPLATES`].
fn keep(kept: &mut VecDeque<(u64, block_template::Client)>, id: u64, t: block_template::Client) {
    kept.push_back((id, t));
    while kept.len() > KEEP_TEMPLATES {
        kept.pop_front();
    }
}

async fn make_thread(
    map: &super::schema::proxy_capnp::thread_map::Client,
    name: &str,
) -> anyhow::Result<thread::Client> {
    let mut req = map.make_thread_request();
    req.get().set_name(name);
    Ok(req.send().promise.await.context("makeThread")?.get()?.get_result()?)
}

/// `createNewBlock` with the mempool (or without: coinbase only), without the cooldown (the
/// pool wants work now).
async fn create(
    mining: &mining::Client,
    on: &thread::Client,
    use_mempool: bool,
) -> anyhow::Result<block_template::Client> {
    let mut req = mining.create_new_block_request();
    {
        let mut p = req.get();
        p.reborrow().init_context().set_thread(on.clone());
        p.reborrow().init_options().set_use_mempool(use_mempool);
        p.set_cooldown(false);
    }
    let resp = req.send().promise.await.context("createNewBlock")?;
    Ok(resp.get()?.get_result()?)
}

/// A template being read: `getBlock` and `getTxFees` sent together, then parsed.
struct Reading {
    id: u64,
    since: Instant,
    read: std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Template>>>>,
}

impl Reading {
    fn start(t: &block_template::Client, on: &thread::Client, id: u64) -> Reading {
        let mut req = t.get_block_request();
        req.get().init_context().set_thread(on.clone());
        let block = req.send().promise;
        let mut req = t.get_tx_fees_request();
        req.get().init_context().set_thread(on.clone());
        let fees = req.send().promise;
        let read = Box::pin(async move {
            let (block, fees) = (block.await.context("getBlock")?, fees.await.context("getTxFees")?);
            let fees: Vec<i64> = fees.get()?.get_result()?.iter().collect();
            let block = block.get()?.get_result()?;
            Template::from_block(block, &fees, id).context("the node's template")
        });
        Reading { id, since: Instant::now(), read }
    }
}

/// `submitSolution` on the template the block was found on, without waiting here: the answer
/// is logged when it comes (the block task has sent `submitblock` to every node already).
fn submit(kept: &VecDeque<(u64, block_template::Client)>, on: &thread::Client, s: Solution) {
    let Some((_, t)) = kept.iter().find(|(id, _)| *id == s.template) else {
        tracing::info!("ipcmining: the block's template is no longer held; submitblock carries it");
        return;
    };
    let Some((version, time, nonce, coinbase)) = solution_parts(&s.first) else {
        tracing::warn!("ipcmining: a found block's first bytes cannot be read; submitblock carries it");
        return;
    };
    let mut req = t.submit_solution_request();
    {
        let mut p = req.get();
        p.reborrow().init_context().set_thread(on.clone());
        p.set_version(version);
        p.set_timestamp(time);
        p.set_nonce(nonce);
        p.set_coinbase(coinbase);
    }
    let promise = req.send().promise;
    tokio::task::spawn_local(async move {
        match promise.await {
            Ok(r) => match r.get().map(|r| r.get_result()) {
                Ok(true) => tracing::info!("ipcmining: submitSolution: the node took the block"),
                Ok(false) => tracing::warn!(
                    "ipcmining: submitSolution: the node refused the block (submitblock's answers say why)"
                ),
                Err(e) => tracing::warn!("ipcmining: submitSolution: unreadable answer: {e}"),
            },
            Err(e) => tracing::warn!("ipcmining: submitSolution failed: {e}"),
        }
    });
}

/// Answers `q` with `why` (the link is down).
fn refuse_ask(q: IpcRequest, why: &str) {
    match q {
        IpcRequest::CheckBlock { reply, .. } => drop(reply.send(Err(why.to_string()))),
        IpcRequest::TxsByWtxid { reply, .. } => drop(reply.send(Err(why.to_string()))),
    }
}

/// Sends `q` to the node on `on` and answers it when the node does, without waiting here.
fn answer(
    mining: &mining::Client,
    on: &thread::Client,
    in_flight: &std::rc::Rc<std::cell::Cell<usize>>,
    q: IpcRequest,
) {
    in_flight.set(in_flight.get() + 1);
    let done = DoneGuard(in_flight.clone());
    match q {
        IpcRequest::CheckBlock { block, reply } => {
            let mut req = mining.check_block_request();
            {
                let mut p = req.get();
                p.reborrow().init_context().set_thread(on.clone());
                p.set_block(&block);
                let mut o = p.init_options();
                o.set_check_merkle_root(true);
                o.set_check_pow(false);
            }
            let promise = req.send().promise;
            tokio::task::spawn_local(async move {
                let _done = done;
                let r = async {
                    let r = promise.await.map_err(|e| format!("checkBlock: {e}"))?;
                    let r = r.get().map_err(|e| format!("checkBlock: {e}"))?;
                    let text = |t: capnp::Result<capnp::text::Reader<'_>>| {
                        t.ok().and_then(|t| t.to_string().ok()).unwrap_or_default()
                    };
                    Ok(BlockCheck { valid: r.get_result(), reason: text(r.get_reason()), debug: text(r.get_debug()) })
                }
                .await;
                let _ = reply.send(r);
            });
        }
        IpcRequest::TxsByWtxid { wtxids, reply } => {
            let mut req = mining.get_transactions_by_witness_i_d_request();
            {
                let mut p = req.get();
                p.reborrow().init_context().set_thread(on.clone());
                let mut list = p.init_wtxids(wtxids.len() as u32);
                for (i, w) in wtxids.iter().enumerate() {
                    list.set(i as u32, &w[..]);
                }
            }
            let promise = req.send().promise;
            tokio::task::spawn_local(async move {
                let _done = done;
                let r = async {
                    let r = promise.await.map_err(|e| format!("getTransactionsByWitnessID: {e}"))?;
                    let list =
                        r.get().and_then(|r| r.get_result()).map_err(|e| format!("getTransactionsByWitnessID: {e}"))?;
                    let mut txs = Vec::with_capacity(list.len() as usize);
                    for d in list.iter() {
                        txs.push(d.map_err(|e| format!("getTransactionsByWitnessID: {e}"))?.to_vec());
                    }
                    Ok(txs)
                }
                .await;
                let _ = reply.send(r);
            });
        }
    }
}

/// Counts a question as answered when dropped (answered, failed, or the connection gone).
struct DoneGuard(std::rc::Rc<std::cell::Cell<usize>>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}
