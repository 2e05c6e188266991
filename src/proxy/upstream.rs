//! The proxy's one upstream stratum session: subscribe, authorize, version rolling; upstream
//! jobs re-issued to local miners; forwarded shares and the upstream's verdicts; failover across
//! the `proxy` entries with backoff, and a return to the first entry when it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use crate::config::Upstream;
use crate::difficulty::Difficulty;
use crate::hex;
use crate::log::escape::Esc;
use crate::mining::{UpstreamJob, UpstreamShare, Work};
use crate::share::Submit;
use crate::sv1::client::{Client, ClientError};
use crate::sv1::server_msg::{Event, Notify, NotifyJob, Subscription};
use crate::work::coinbase::MAX_NONCE2_LEN;

/// No line from the upstream for this long: it is dead (pools notify at least every ~60 s).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(150);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const PRIMARY_PROBE: Duration = Duration::from_secs(10);
const MAX_BAD_LINES: u32 = 50;

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
            let end = self.session(&addr, &entry, idx, &mut shutdown).await;
            self.counters.on_down(matches!(end, End::Primary) || matches!(end, End::Failed(_)) && n > 1);
            match end {
                End::Shutdown => return,
                End::Primary => {
                    tracing::info!("upstream {}: primary is back; switching to it", self.entries[0].url);
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
                    tracing::warn!("upstream {addr} ({}): {why}; next: {}", entry.auth, self.entries[next].url);
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

    async fn session(&mut self, addr: &str, entry: &Upstream, idx: usize, shutdown: &mut watch::Receiver<bool>) -> End {
        let mut up = if entry.tls {
            // stratum+tls://: a certificate the entry's tlsca (or the webpki roots) does not
            // vouch for makes this upstream dead, like a refused connection.
            let config = match crate::tls::client_config(entry.tlsca.as_deref()) {
                Ok(c) => c,
                Err(e) => return End::Failed(format!("{e:#}")),
            };
            match timeout(CONNECT_TIMEOUT + crate::tls::HANDSHAKE_TIMEOUT, Client::connect_tls(addr, config)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return End::Failed(format!("{e:#}")),
                Err(_) => return End::Failed(format!("no TLS connection within {CONNECT_TIMEOUT:?}")),
            }
        } else {
            match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => Client::new(s),
                Ok(Err(e)) => return End::Failed(format!("cannot connect: {e}")),
                Err(_) => return End::Failed(format!("no connection within {CONNECT_TIMEOUT:?}")),
            }
        };
        // Pipelined: a pool that ignores configure still answers the other two.
        up.send_configure(self.version_mask);
        up.send_subscribe(concat!("ckpool-rs-proxy/", env!("CARGO_PKG_VERSION")), None);
        up.send_authorize(&entry.auth, entry.pass.expose());
        let mut s = Session { en1: None, en2_size: 0, authorized: false, difficulty: None, pending: HashMap::new() };
        let mut bad_lines = 0u32;
        let mut last_line = Instant::now();
        let started = Instant::now();
        let mut probe = tokio::time::interval(PRIMARY_PROBE);
        probe.tick().await;
        self.generation += 1;
        loop {
            let limit =
                if s.authorized && s.en1.is_some() { last_line + SILENCE_LIMIT } else { started + HANDSHAKE_TIMEOUT };
            tokio::select! {
                ev = up.next_event() => {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(ClientError::TooLong(n)) => return End::Failed(format!("sent a line over {} KiB", n / 1024)),
                        Err(ClientError::Closed) => return End::Failed("closed the connection".into()),
                        Err(e) => return End::Failed(format!("read error: {e}")),
                    };
                    last_line = Instant::now();
                    if let Event::NotJson { line, error } = &ev {
                        bad_lines += 1;
                        tracing::warn!("upstream {addr}: unparseable line ({}): {}", Esc(&error.to_string()), Esc(&line.chars().take(120).collect::<String>()));
                        if bad_lines > MAX_BAD_LINES { return End::Failed(format!("{bad_lines} unparseable lines in a row")); }
                        continue;
                    }
                    bad_lines = 0;
                    if let Some(end) = self.on_event(ev, &mut s, addr, entry) {
                        return end;
                    }
                }
                share = self.shares.recv() => {
                    let Some(sh) = share else { return End::Shutdown };
                    if sh.generation != self.generation {
                        tracing::debug!("share from {} for a previous upstream session dropped as stale", Esc(&sh.workername));
                        continue;
                    }
                    if up.queued() >= OUT_CAP {
                        // The upstream does not read: what it has not taken is bounded; this
                        // share is counted and dropped (miners were answered long ago).
                        if self.counters.dropped.fetch_add(1, Ordering::Relaxed) % 1000 == 0 {
                            tracing::warn!("upstream {addr}: not reading ({} KiB queued); shares are dropped until it does", up.queued() >> 10);
                        }
                        continue;
                    }
                    let id = up.send_submit(&entry.auth, &Submit {
                        job_id: &sh.job_id,
                        extranonce2: &sh.extranonce2,
                        ntime: &sh.ntime,
                        nonce: &sh.nonce,
                        version_bits: sh.version_bits.as_deref(),
                    });
                    s.pending.insert(id, (sh.workername.clone(), sh.difficulty));
                    if s.pending.len() > 100_000 { s.pending.clear(); }
                    self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                _ = probe.tick(), if idx != 0 => {
                    if self.primary_answers().await {
                        // Shares queued for this upstream are still due to it: written before leaving.
                        let _ = timeout(Duration::from_secs(2), up.flush()).await;
                        return End::Primary;
                    }
                }
                _ = tokio::time::sleep_until(limit) => {
                    return End::Failed(if s.authorized { format!("silent for {SILENCE_LIMIT:?}") } else { "no subscribe/authorize answer within 15 s".into() });
                }
                _ = shutdown.changed() => {
                    let _ = timeout(Duration::from_secs(2), up.flush()).await;
                    return End::Shutdown;
                }
            }
        }
    }

    /// Whether the first entry takes connections again: a TCP connect, or for `stratum+tls://`
    /// a whole TLS handshake (a pool whose certificate is refused is not back).
    async fn primary_answers(&self) -> bool {
        let p = &self.entries[0];
        if !p.tls {
            return matches!(timeout(Duration::from_secs(3), TcpStream::connect(&p.url)).await, Ok(Ok(_)));
        }
        let Ok(config) = crate::tls::client_config(p.tlsca.as_deref()) else { return false };
        matches!(timeout(Duration::from_secs(5), crate::tls::connect(&p.url, config)).await, Ok(Ok(_)))
    }

    /// One upstream line; `Some` ends the session.
    fn on_event(&mut self, ev: Event<'_>, s: &mut Session, addr: &str, entry: &Upstream) -> Option<End> {
        match ev {
            Event::Notify(n) => {
                let Some(e1) = s.en1.clone() else {
                    tracing::debug!("upstream {addr}: notify before the subscribe answer ignored");
                    return None;
                };
                // Stratum's default difficulty is 1 until set_difficulty says otherwise.
                let d = *s.difficulty.get_or_insert(Difficulty::ONE);
                self.publish(&n, &e1, s.en2_size, d, addr);
            }
            Event::SetDifficulty(d) => {
                if s.difficulty != Some(d) {
                    tracing::info!("upstream {addr}: difficulty {d}");
                }
                s.difficulty = Some(d);
            }
            Event::SetExtranonce(Subscription { extranonce1: e, extranonce2_size: n })
                if self.prefix_len.is_some_and(|p| n > p && n - p <= MAX_NONCE2_LEN) =>
            {
                tracing::info!("upstream {addr}: new extranonce1 {} (extranonce2 {n} bytes)", hex::encode(&e));
                s.en1 = Some(e);
                s.en2_size = n;
                self.generation += 1;
            }
            Event::SetExtranonce(x) => {
                return Some(End::Failed(format!(
                    "unusable set_extranonce [{:?}, {}]",
                    hex::encode(&x.extranonce1),
                    x.extranonce2_size
                )))
            }
            Event::Malformed { method, params } if method == "mining.set_extranonce" => {
                return Some(End::Failed(format!("unusable set_extranonce {params}")))
            }
            Event::Malformed { method, params } => {
                tracing::warn!("upstream {addr}: ignoring {} {}", Esc(method.as_ref()), Esc(params))
            }
            Event::Reconnect(to) => return Some(End::Reconnect(to)),
            Event::SetVersionMask(m) => {
                self.mask = m & self.version_mask;
                tracing::info!(
                    "upstream {addr}: version mask now {m:08x} (miners get {:08x} from the next job)",
                    self.mask
                );
                self.granted_mask.send_replace(self.mask);
            }
            Event::Configured(m) => {
                self.mask = m & self.version_mask;
                self.granted_mask.send_replace(self.mask);
            }
            Event::Subscribed(Err(r)) => return Some(End::Failed(format!("subscribe refused or malformed: {r}"))),
            Event::Subscribed(Ok(Subscription { extranonce1: e, extranonce2_size: n })) => {
                let Some(p) = prefix_len_for(n) else {
                    return Some(End::Failed(format!("extranonce2 size {n} leaves no room for local miners")));
                };
                let p = *self.prefix_len.get_or_insert(p);
                if n <= p {
                    return Some(End::Failed(format!(
                        "extranonce2 size {n} is smaller than this proxy's {p}-byte miner prefix"
                    )));
                }
                if n - p > MAX_NONCE2_LEN {
                    return Some(End::Failed(format!("extranonce2 size {n} leaves local miners more than {MAX_NONCE2_LEN} bytes after a {p}-byte prefix")));
                }
                if n - p < 4 {
                    tracing::warn!("upstream {addr}: extranonce2 is {n} bytes; local miners get {} byte(s) of extranonce2 after a {p}-byte prefix", n - p);
                }
                s.en1 = Some(e);
                s.en2_size = n;
            }
            Event::Authorized(Err(r)) => {
                return Some(End::Failed(format!("authorize as {:?} refused: {r}", entry.auth)));
            }
            Event::Authorized(Ok(())) => {
                s.authorized = true;
                self.counters.on_connected(self.entries.iter().position(|e| e == entry).unwrap_or(0));
                tracing::info!("upstream {addr}: connected and authorized as {}", entry.auth);
            }
            Event::Submitted { id, result } => {
                if let Some((worker, d)) = s.pending.remove(&id) {
                    match result {
                        Ok(()) => self.counters.accepted.fetch_add(1, Ordering::Relaxed),
                        Err(r) => {
                            tracing::info!(
                                "upstream {addr} rejected a share from {} (difficulty {d}): {}",
                                Esc(&worker),
                                Esc(&r.to_string())
                            );
                            self.counters.rejected.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            }
            Event::ShowMessage(m) => tracing::info!("upstream {addr} says: {}", Esc(m.as_ref())),
            Event::Method { method, .. } => tracing::debug!("upstream {addr}: ignoring {}", Esc(method.as_ref())),
            Event::Replied { .. } | Event::Stray(_) | Event::NotJson { .. } => {
                tracing::debug!("upstream {addr}: ignoring {ev:?}")
            }
        }
        None
    }

    /// Re-issues an upstream notify to local miners, with the mask granted now.
    fn publish(&mut self, n: &Notify, en1: &[u8], en2_size: usize, difficulty: Difficulty, addr: &str) {
        let generation = self.generation;
        let Some(p) = self.prefix_len else { return };
        self.next_job += 1;
        match n.job(self.next_job, en1.len() + p, en2_size - p) {
            Ok(NotifyJob { job, job_id }) => {
                let up = UpstreamJob { job_id: job_id.into(), target: difficulty.to_target(), difficulty, generation };
                let announcement = match job.clean {
                    true => Some(Arc::new(crate::mining::Announcement::new(
                        std::time::Instant::now(),
                        std::time::Instant::now(),
                    ))),
                    false => self.work.borrow().as_ref().and_then(|w| w.announcement.clone()),
                };
                let mut work = Work::proxied(Arc::new(job), Arc::from(en1), up).with_announcement(announcement);
                work.version_mask = Some(self.mask);
                self.work.send_replace(Some(Arc::new(work)));
            }
            Err(e) => tracing::warn!("upstream {addr}: unusable notify: {e}"),
        }
    }
}

/// What one upstream session knows.
struct Session {
    en1: Option<Vec<u8>>,
    en2_size: usize,
    authorized: bool,
    difficulty: Option<Difficulty>,
    /// Forwarded shares awaiting the upstream's answer: who sent them, at what difficulty.
    pending: HashMap<u64, (Arc<str>, Difficulty)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask the upstream grants in its configure answer, then in `mining.set_version_mask`,
    /// reaches the published work (within the proxy's own mask); shares go up with the user and
    /// their answers are counted.
    #[tokio::test]
    async fn version_mask_follows_the_upstream() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = l.local_addr().unwrap().to_string();
        let (go_tx, mut go_rx) = mpsc::channel::<&'static str>(4);
        let (seen_tx, mut seen_rx) = mpsc::channel::<serde_json::Value>(16);
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            let notify = format!(
                r#"{{"id":null,"method":"mining.notify","params":["j1","{}","01000000010000","00000000",[],"20000000","207fffff","65000000",true]}}"#,
                "00".repeat(32)
            );
            loop {
                tokio::select! {
                    line = lines.next_line() => {
                        let Ok(Some(line)) = line else { return };
                        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                        let id = v["id"].clone();
                        let answer = match v["method"].as_str().unwrap() {
                            "mining.configure" => format!(r#"{{"id":{id},"result":{{"version-rolling":true,"version-rolling.mask":"00ffe000"}},"error":null}}"#),
                            "mining.subscribe" => format!(r#"{{"id":{id},"result":[[],"aabbccdd",8],"error":null}}"#),
                            "mining.authorize" => format!("{{\"id\":{id},\"result\":true,\"error\":null}}\n{notify}"),
                            _ => format!(r#"{{"id":{id},"result":null,"error":[23,"Low difficulty share",null]}}"#),
                        };
                        w.write_all(format!("{answer}\n").as_bytes()).await.unwrap();
                        let _ = seen_tx.send(v).await;
                    }
                    Some(m) = go_rx.recv() => {
                        let line = format!("{{\"id\":null,\"method\":\"mining.set_version_mask\",\"params\":[\"{m}\"]}}\n{notify}\n");
                        w.write_all(line.as_bytes()).await.unwrap();
                    }
                }
            }
        });
        let (work_tx, mut work_rx) = watch::channel(None);
        let (share_tx, share_rx) = mpsc::channel(4);
        let (mask_tx, mask_rx) = watch::channel(0);
        let entry =
            Upstream { url, auth: "up.user".into(), pass: crate::config::Secret::new("x"), ..Upstream::default() };
        let client = UpstreamClient::new(vec![entry], 0x1fffe000, work_tx, share_rx, mask_tx);
        let counters = client.counters.clone();
        let (_stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(client.run(stop_rx));
        let limit = Duration::from_secs(10);
        async fn next_work(rx: &mut watch::Receiver<Option<Arc<Work>>>) -> Arc<Work> {
            timeout(Duration::from_secs(10), rx.changed()).await.expect("work within 10 s").unwrap();
            rx.borrow_and_update().clone().expect("work")
        }
        let w = next_work(&mut work_rx).await;
        assert_eq!(w.version_mask, Some(0x00ffe000));
        assert_eq!(*mask_rx.borrow(), 0x00ffe000);
        go_tx.send("ffffffff").await.unwrap();
        let w = next_work(&mut work_rx).await;
        assert_eq!(w.version_mask, Some(0x1fffe000), "the upstream's new mask, within the proxy's");
        let up = w.upstream.as_ref().unwrap();
        let share = UpstreamShare {
            job_id: up.job_id.clone(),
            generation: up.generation,
            extranonce2: "0000000000000000".into(),
            ntime: "65000000".into(),
            nonce: "00000000".into(),
            version_bits: None,
            workername: "local.w".into(),
            difficulty: Difficulty::ONE,
        };
        share_tx.send(share).await.unwrap();
        let deadline = Instant::now() + limit;
        let submit = loop {
            let v = timeout(deadline - Instant::now(), seen_rx.recv()).await.expect("submit within 10 s").unwrap();
            if v["method"] == "mining.submit" {
                break v;
            }
        };
        assert_eq!(submit["params"], serde_json::json!(["up.user", "j1", "0000000000000000", "65000000", "00000000"]));
        while counters.rejected.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the upstream's answer was not counted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(counters.forwarded.load(Ordering::Relaxed), 1);
        task.abort();
    }

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
