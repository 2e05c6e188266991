//! Template source: getblocktemplate on a new tip (ZMQ or polling) and every `update_interval`,
//! turned into jobs and published to every session. An RPC failure never stops the pool: miners
//! keep their last work and the log says what the node answered.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::bitcoind::ipc::IpcEvent;
use crate::bitcoind::zmq::NewBlock;
use crate::bitcoind::{Rpc, RpcError};
use crate::difficulty::Difficulty;
use crate::hex;
use crate::mining::Announcement;
use crate::mining::Work;
use crate::work::{coinbase, CoinbaseConfig, Job, Template};

/// Where a refresh's time went: waiting for the node's answers, and parsing them.
#[derive(Debug, Default)]
pub(super) struct Timing {
    pub(super) node: Duration,
    pub(super) parse: Duration,
}

/// Why a fresh template is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Start,
    NewBlock,
    Update,
    BlockFound,
    /// A template from the node's IPC mining interface (`ipcmining`).
    Ipc,
    /// The IPC link is down: getblocktemplate takes over.
    IpcLost,
}

/// How often the node's tip is polled: `blockpoll`, or at least every second alongside ZMQ (which
/// then only makes new blocks arrive sooner; polling carries on when the publisher is gone).
pub fn poll_interval(blockpoll: Duration, zmq: bool) -> Duration {
    if zmq {
        blockpoll.max(Duration::from_millis(1000))
    } else {
        blockpoll
    }
}

/// What to do with a template that does not build on the announced block `announced`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipCheck {
    /// The node's tip moved past the announcement and the template builds on that newest tip.
    Serve,
    /// As `Serve`, but the miners already work on that tip: nothing to send.
    Served,
    /// The tip moved past the announcement; the template lags the newest tip: wait for that one.
    Follow([u8; 32]),
    /// The announced block is the node's tip but its template lags: ask again shortly.
    Wait,
}

/// Decides on a template built on `template_prev` after `announced` was announced, given the
/// node's best block now and the tip the miners work on (`serving`). An announcement the tip has
/// already moved past never makes the pool wait for it.
pub fn on_other_tip(
    announced: [u8; 32],
    template_prev: [u8; 32],
    best: [u8; 32],
    serving: Option<[u8; 32]>,
) -> TipCheck {
    if best == announced {
        TipCheck::Wait
    } else if template_prev != best {
        TipCheck::Follow(best)
    } else if serving == Some(best) {
        TipCheck::Served
    } else {
        TipCheck::Serve
    }
}

/// The start's hint when the network's difficulty is below the miners' starting difficulty
/// (regtest, a young testnet with the guide's `startdiff 42`): a share then takes more work than
/// a block, so shares, and the blocks they carry, come rarely and nothing else says why.
pub fn low_network_note(network: Difficulty, mindiff: Difficulty, startdiff: Difficulty) -> Option<String> {
    (startdiff > network).then(|| {
        format!(
            "network difficulty {network} is below startdiff {startdiff} (mindiff {mindiff}): a share needs more \
             work than a block here, so miners' shares come rarely{}; set mindiff and startdiff at or below \
             {network} on regtest or a young testnet",
            if mindiff > network { " and vardiff cannot go below mindiff" } else { "" }
        )
    })
}

pub struct TemplateSource {
    pub rpc: Arc<Rpc>,
    pub coinbase: CoinbaseConfig,
    pub work: watch::Sender<Option<Arc<Work>>>,
    pub blockpoll: Duration,
    pub update_interval: Duration,
    /// Latest block height served, for status lines.
    pub height: watch::Sender<u32>,
    /// Solo mode: works carry their template (each address gets its own coinbase from it).
    pub solo: bool,
    /// A reload's new `btcsig` (SIGHUP): the next job carries it.
    pub live: Option<watch::Receiver<crate::reload::Live>>,
    /// PPLNS (`payout_scheme`): each coinbase pays the window's miners; a new one is built from
    /// the last template when the window has moved enough (no call to the node).
    pub payees: Option<Arc<super::pplns::Payees>>,
    /// Empty-first (`empty_first`): on a new tip, a coinbase-only job before the full template.
    pub empty_first: Option<super::tip::EmptyFirst>,
    /// The template the miners work on (PPLNS rebuilds its coinbase; empty-first takes the
    /// node's version, flags and rules from it).
    pub(super) last: Option<Arc<Template>>,
    /// The tip the miners have only an empty job on (the full template then goes out clean).
    empty_on: Option<[u8; 32]>,
    next_id: u64,
    /// When the new block the next refresh looks for was announced (ZMQ, poll, found block).
    announced: Option<Instant>,
    node_down: bool,
    warned_coinbase: bool,
    /// Templates come over IPC (`ipcmining`) now: getblocktemplate waits (pool/ipc_source.rs).
    pub(super) ipc_up: bool,
}

impl TemplateSource {
    pub fn new(
        rpc: Arc<Rpc>,
        coinbase: CoinbaseConfig,
        work: watch::Sender<Option<Arc<Work>>>,
        blockpoll: Duration,
        update_interval: Duration,
        height: watch::Sender<u32>,
    ) -> TemplateSource {
        // Job ids grow across restarts (ckpool's workinfoid is time-based too).
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        TemplateSource {
            rpc,
            coinbase,
            work,
            blockpoll,
            update_interval,
            height,
            next_id: secs << 8,
            announced: None,
            node_down: false,
            warned_coinbase: false,
            solo: false,
            live: None,
            payees: None,
            empty_first: None,
            last: None,
            empty_on: None,
            ipc_up: false,
        }
    }

    /// One getblocktemplate, parsed; adds the time spent waiting for the node and parsing.
    async fn fetch(&mut self, timing: &mut Timing) -> Option<Template> {
        let t0 = Instant::now();
        // The result's JSON text, parsed straight into the template (no tree of values).
        let gbt = self.rpc.call_raw("getblocktemplate", json!([{"rules": ["segwit"]}])).await;
        let t1 = Instant::now();
        timing.node += t1 - t0;
        let gbt = match gbt {
            Ok(v) => v,
            Err(e) => {
                self.node_trouble(&e);
                return None;
            }
        };
        let parsed = Template::from_gbt_json(gbt.get());
        timing.parse += t1.elapsed();
        match parsed {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!("bitcoind sent a template this pool cannot use: {e}; miners keep their last work");
                None
            }
        }
    }

    /// Fetches a template and publishes a job; false when the node could not serve one.
    /// With `tip`, the template must build on that block: a node may announce a block before
    /// its template follows (Bitcoin SV's journaling assembler does), so it is asked again for
    /// up to two seconds rather than sending miners work on the old tip. When the node's tip has
    /// already moved past `tip` (a burst of blocks), the newest tip wins: a template on it is
    /// served at once, and one on a tip the miners already have is not sent again.
    pub async fn refresh(&mut self, reason: Reason, tip: Option<[u8; 32]>) -> bool {
        let announced = self.announced.take().or_else(|| tip.map(|_| Instant::now()));
        let mut want = tip;
        let mut attempts = 0;
        let mut timing = Timing::default();
        let started = Instant::now();
        let template = loop {
            let Some(t) = self.fetch(&mut timing).await else { return false };
            let Some(h) = want else { break t };
            if t.prev_hash == h {
                break t;
            }
            // Not on the announced block: is that block still the node's tip?
            let Some(best) = self.best_hash().await else { return false };
            // An empty job is not the template on that tip: it never makes the full one "served".
            let serving = self.work.borrow().as_ref().map(|w| w.job.prev_hash).filter(|p| self.empty_on != Some(*p));
            match on_other_tip(h, t.prev_hash, best, serving) {
                TipCheck::Serve => break t,
                TipCheck::Served => {
                    tracing::debug!("block {} already superseded; miners are on the tip", hex::encode_rev(&h));
                    return true;
                }
                TipCheck::Follow(newest) => want = Some(newest),
                TipCheck::Wait if attempts < 40 => {}
                TipCheck::Wait => {
                    tracing::warn!(
                        "bitcoind announced block {} but its template still builds on {}",
                        hex::encode_rev(&h),
                        hex::encode_rev(&t.prev_hash)
                    );
                    break t;
                }
            }
            // Bounded: at most 40 waits, whichever tip is followed.
            if attempts >= 40 {
                break t;
            }
            attempts += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if self.node_down {
            tracing::info!("bitcoind answering again: height {}", template.height);
            self.node_down = false;
        }
        self.publish_logged(template, reason, announced, started, &timing, attempts)
    }

    /// [`TemplateSource::publish`] with its operator log line: for a new block, the time from
    /// the announcement (or tick, `started`) to work published, the node's part and ours; false
    /// when no coinbase could be built.
    pub(super) fn publish_logged(
        &mut self,
        template: Template,
        reason: Reason,
        announced: Option<Instant>,
        started: Instant,
        timing: &Timing,
        attempts: u32,
    ) -> bool {
        let height = template.height;
        let ntx = template.transactions.len();
        let prev = template.prev_hash;
        let Some(new_block) = self.publish(template, announced, false) else { return false };
        let netdiff = self.work.borrow().as_ref().map(|w| w.network_diff).unwrap_or_default();
        // From the announcement (or tick) to work published: the node's share, ours, and waits.
        let total = started.elapsed();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let own = total.saturating_sub(timing.node);
        if new_block {
            tracing::info!(
                "new block template: height {height}, prev {}, {ntx} transactions, network difficulty {netdiff} ({reason:?}; work out {:.1} ms after: node {:.1} ms, parse {:.1} ms, rest {:.1} ms, {attempts} template(s) on the old tip)",
                hex::encode_rev(&prev),
                ms(total), ms(timing.node), ms(timing.parse), ms(own.saturating_sub(timing.parse)),
            );
        } else {
            tracing::debug!("template update: height {height}, {ntx} transactions, work out in {:.1} ms", ms(total));
        }
        true
    }

    /// Publishes a job for `template` to every session; `Some(new_block)` once sent (`None`: no
    /// coinbase could be built, logged). A new previous block, or the full template after an
    /// empty job on the same one, goes out clean (every miner switches).
    pub(super) fn publish(&mut self, template: Template, announced: Option<Instant>, empty: bool) -> Option<bool> {
        let netdiff = Difficulty::from_compact(template.nbits).unwrap_or_default();
        if let Some(p) = &self.payees {
            self.coinbase.pplns = Some(p.plan(netdiff));
        }
        let cb = match coinbase::build(&template, &self.coinbase) {
            Ok(cb) => cb,
            Err(e) => {
                tracing::error!("cannot build a coinbase: {e}");
                return None;
            }
        };
        if !self.warned_coinbase {
            self.warned_coinbase = true;
            for w in &cb.warnings {
                tracing::warn!("{w}");
            }
            tracing::info!("coinbase is {} bytes (NerdMiner buffers 255, stock Antminer ~750)", cb.size());
        }
        let prev_changed = self.work.borrow().as_ref().is_none_or(|w| w.job.prev_hash != template.prev_hash);
        let after_empty = !empty && self.empty_on == Some(template.prev_hash);
        self.empty_on = empty.then_some(template.prev_hash);
        self.next_id += 1;
        let job = Job::new(self.next_id, &template, cb, prev_changed || after_empty);
        let height = template.height;
        // A new block gets a new announcement; an update on the same block keeps the block's.
        let announcement = match announced.filter(|_| prev_changed) {
            Some(at) => Some(Arc::new(Announcement::new(at, Instant::now()))),
            None if prev_changed => None,
            None => self.work.borrow().as_ref().and_then(|w| w.announcement.clone()),
        };
        let mut work = Work::new(Arc::new(job)).with_announcement(announcement);
        let template = Arc::new(template);
        if self.solo {
            // Each address's coinbase is built from the template (pool/solo.rs).
            work.template = Some(template.clone());
        }
        self.last = Some(template);
        self.work.send_replace(Some(Arc::new(work)));
        self.height.send_replace(height);
        Some(prev_changed || after_empty)
    }

    /// Empty-first: on the new tip `tip`, a coinbase-only job at once, before the full template
    /// (which follows clean). Nothing when it is off, the miners are already on `tip`, no full
    /// template was served yet (the node's version and rules come from it), templates come over
    /// IPC, or the tip's facts do not give the next block's fields safely (`pool/tip.rs` logs why).
    async fn send_empty(&mut self, tip: [u8; 32]) {
        // Over IPC the node sends its own empty template (pool/ipc_source.rs); a header call now
        // would wait for the node's lock behind the full template's assembly.
        if self.ipc_up {
            return;
        }
        let (Some(ef), Some(basis)) = (self.empty_first.as_mut(), self.last.clone()) else { return };
        if self.work.borrow().as_ref().is_some_and(|w| w.job.prev_hash == tip) {
            return;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let Some(t) = ef.template(&self.rpc, tip, &basis, u32::try_from(now).unwrap_or(u32::MAX)).await else {
            return;
        };
        let (height, value) = (t.height, t.coinbase_value);
        let announced = self.announced.unwrap_or_else(Instant::now);
        if self.publish(t, Some(announced), true).is_some() {
            tracing::debug!(
                "empty-first: coinbase-only job on {} (height {height}, {value} sat) out {:.2} ms after the announcement",
                hex::encode_rev(&tip),
                announced.elapsed().as_secs_f64() * 1e3
            );
        }
    }

    /// PPLNS: the same template with a coinbase paying the window as it is now (the shares
    /// that arrived since the last one), sent as an update (miners keep their current jobs).
    pub fn repay(&mut self) {
        let (Some(p), Some(template)) = (&self.payees, self.last.clone()) else { return };
        let Some(current) = self.work.borrow().clone() else { return };
        if current.job.prev_hash != template.prev_hash {
            return;
        }
        let netdiff = Difficulty::from_compact(template.nbits).unwrap_or_default();
        self.coinbase.pplns = Some(p.plan(netdiff));
        let cb = match coinbase::build(&template, &self.coinbase) {
            Ok(cb) => cb,
            Err(e) => {
                tracing::error!("cannot build a coinbase paying the PPLNS window: {e}; miners keep their last work");
                return;
            }
        };
        if let Some(split) = &cb.split {
            tracing::debug!(
                "pplns: new coinbase paying {} miner(s), {} carried, {} sat to the pool",
                split.paid.len(),
                split.carried.len(),
                split.pool()
            );
        }
        self.next_id += 1;
        let job = Job::new(self.next_id, &template, cb, false);
        let work = Work::new(Arc::new(job)).with_announcement(current.announcement.clone());
        self.work.send_replace(Some(Arc::new(work)));
    }

    fn node_trouble(&mut self, e: &RpcError) {
        if !self.node_down {
            tracing::error!("getblocktemplate failed: {e}; miners keep their last work until the node answers");
            self.node_down = true;
        } else {
            tracing::debug!("getblocktemplate still failing: {e}");
        }
    }

    /// The node's best block hash (internal order).
    async fn best_hash(&mut self) -> Option<[u8; 32]> {
        match self.rpc.call("getbestblockhash", json!([])).await {
            Ok(v) => v.as_str().and_then(|s| hex::decode_hash_rev(s).ok()),
            Err(e) => {
                self.node_trouble(&e);
                None
            }
        }
    }

    /// Runs until `shutdown` flips: ZMQ announcements, tip polling, periodic updates, and
    /// refresh requests (after a found block).
    pub async fn run(
        mut self,
        mut zmq: Option<mpsc::Receiver<NewBlock>>,
        mut refresh: mpsc::Receiver<Option<[u8; 32]>>,
        mut ipc: Option<mpsc::Receiver<IpcEvent>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let poll_every = poll_interval(self.blockpoll, zmq.is_some());
        let mut poll = tokio::time::interval(poll_every);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut update = tokio::time::interval(self.update_interval);
        update.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        update.reset();
        let mut retry = false;
        loop {
            tokio::select! {
                ev = async { match zmq.as_mut() { Some(z) => z.recv().await, None => std::future::pending().await } } => {
                    match ev {
                        Some(first) => {
                            // Announcements queued meanwhile: the newest wins, older ones cost nothing.
                            let NewBlock(hash) = zmq.as_mut().map_or(first, |z| newest(first, z));
                            self.announced = Some(Instant::now());
                            let known = self.work.borrow().as_ref().is_some_and(|w| w.job.prev_hash == hash);
                            // Logged even when polling was first: the announcement itself arrived.
                            tracing::debug!("ZMQ: new block {}", hex::encode_rev(&hash));
                            if !known {
                                self.send_empty(hash).await;
                            }
                            // Over IPC the node's waitNext answers on the new tip by itself.
                            if !known && !self.ipc_up {
                                retry = !self.refresh(Reason::NewBlock, Some(hash)).await;
                                update.reset();
                            }
                        }
                        None => {
                            tracing::warn!("ZMQ thread ended; relying on polling every {:?}", self.blockpoll);
                            zmq = None;
                        }
                    }
                }
                _ = poll.tick(), if !self.ipc_up => {
                    let current = self.work.borrow().as_ref().map(|w| w.job.prev_hash);
                    if retry || current.is_none() {
                        retry = !self.refresh(Reason::Start, None).await;
                    } else if let Some(best) = self.best_hash().await {
                        if Some(best) != current {
                            self.announced = Some(Instant::now());
                            self.send_empty(best).await;
                            retry = !self.refresh(Reason::NewBlock, Some(best)).await;
                            update.reset();
                        }
                    }
                }
                _ = update.tick(), if !self.ipc_up => {
                    retry = !self.refresh(Reason::Update, None).await;
                }
                r = refresh.recv() => {
                    let Some(tip) = r else { break };
                    let tip = newest(tip, &mut refresh);
                    if let Some(t) = tip {
                        self.send_empty(t).await;
                    }
                    // Over IPC the node's waitNext answers on the new tip by itself.
                    if !self.ipc_up {
                        retry = !self.refresh(Reason::BlockFound, tip).await;
                        update.reset();
                    }
                }
                changed = async { match self.live.as_mut() { Some(l) => l.changed().await, None => std::future::pending().await } } => {
                    if changed.is_err() {
                        self.live = None;
                        continue;
                    }
                    let Some(sig) = self.live.as_mut().map(|l| l.borrow_and_update().btcsig.clone().into_bytes()) else {
                        continue;
                    };
                    if sig != self.coinbase.btcsig && !self.solo {
                        self.coinbase.btcsig = sig;
                        self.warned_coinbase = false;
                        if self.ipc_up {
                            self.republish();
                        } else {
                            retry = !self.refresh(Reason::Update, None).await;
                            update.reset();
                        }
                    }
                }
                _ = async { match self.payees.clone() { Some(p) => p.changed().await, None => std::future::pending().await } } => {
                    self.repay();
                }
                ev = async { match ipc.as_mut() { Some(i) => i.recv().await, None => std::future::pending().await } } => {
                    match ev {
                        Some(ev) => {
                            if self.on_ipc(ev).await {
                                update.reset();
                                retry = false;
                            }
                        }
                        None => {
                            ipc = None;
                            self.ipc_up = false;
                        }
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// The last of `first` and whatever is already queued behind it (a burst of blocks announced
/// while a template was being fetched): only the newest tip is worth a template.
fn newest<T>(first: T, rx: &mut mpsc::Receiver<T>) -> T {
    let mut last = first;
    // Bounded by the channel's capacity plus what arrives while draining; stop at 64 anyway.
    for _ in 0..64 {
        match rx.try_recv() {
            Ok(v) => last = v,
            Err(_) => break,
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 32] = [1; 32];
    const B: [u8; 32] = [2; 32];
    const C: [u8; 32] = [3; 32];

    #[test]
    fn a_network_below_startdiff_is_said() {
        let d = |s: &str| s.parse::<Difficulty>().unwrap();
        let note = low_network_note(d("0.000000000465"), d("1"), d("42")).unwrap();
        assert!(note.contains("below startdiff 42") && note.contains("vardiff cannot go below mindiff"), "{note}");
        assert!(!low_network_note(d("0.05"), d("0.001"), d("0.1")).unwrap().contains("vardiff cannot"));
        assert_eq!(low_network_note(d("100000"), d("1"), d("42")), None);
        assert_eq!(low_network_note(d("42"), d("1"), d("42")), None);
    }

    #[test]
    fn an_announcement_the_tip_moved_past_costs_no_wait() {
        // A announced, the node is already on B and its template builds on B: served now.
        assert_eq!(on_other_tip(A, B, B, Some(A)), TipCheck::Serve);
        // ... and when the miners already work on B, nothing is sent again.
        assert_eq!(on_other_tip(A, B, B, Some(B)), TipCheck::Served);
        // The template lags the newest tip C: follow C, not A.
        assert_eq!(on_other_tip(A, B, C, Some(B)), TipCheck::Follow(C));
        // A is the tip but the template still builds on its parent: the one case to wait.
        assert_eq!(on_other_tip(A, B, A, Some(B)), TipCheck::Wait);
    }

    #[tokio::test]
    async fn the_newest_queued_announcement_wins() {
        let (tx, mut rx) = mpsc::channel(16);
        for h in [A, B, C] {
            tx.send(NewBlock(h)).await.unwrap();
        }
        let first = rx.recv().await.unwrap();
        assert_eq!(newest(first, &mut rx), NewBlock(C));
        assert!(rx.try_recv().is_err(), "the queue is drained");
        // Nothing queued: the first is the newest.
        tx.send(NewBlock(A)).await.unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(newest(first, &mut rx), NewBlock(A));
    }
}
