//! The proxy's one upstream stratum session: subscribe, authorize, version rolling; upstream
//! jobs re-issued to local miners; forwarded shares and the upstream's verdicts; failover across
//! the `proxy` entries with backoff, and a return to the first entry when it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use crate::config::Upstream;
use crate::difficulty::Difficulty;
use crate::hex;
use crate::stratum::lines::{Line, LineReader};
use crate::stratum::{UpstreamJob, UpstreamShare, Work};
use crate::work::coinbase::MAX_NONCE2_LEN;
use crate::work::Job;

/// No line from the upstream for this long: it is dead (pools notify at least every ~60 s).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(150);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
const PRIMARY_PROBE: Duration = Duration::from_secs(10);
const MAX_BAD_LINES: u32 = 50;

/// Upstream verdict counters.
#[derive(Debug, Default)]
pub struct UpstreamCounters {
    pub forwarded: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
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

/// What one upstream line says, read from its JSON without any session state: the session
/// decides what to do with it (the pure part of the proxy's upstream parsing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamMsg {
    /// `mining.notify`: its params go to [`Job::from_notify`].
    Notify,
    /// `mining.set_difficulty`: `None` when the first param is not a difficulty above zero.
    SetDifficulty(Option<Difficulty>),
    /// `mining.set_extranonce`: extranonce1 and the extranonce2 size; `None` when malformed.
    SetExtranonce(Option<(Vec<u8>, usize)>),
    /// `client.reconnect`: `host:port` when both are given, else the same address.
    Reconnect(Option<String>),
    /// `mining.set_version_mask`: `None` when not a hex word.
    SetVersionMask(Option<u32>),
    /// Another method, ignored.
    Other(String),
    /// The answer to our configure (id 1): the mask granted, 0 when version rolling was refused.
    Configured(u32),
    /// The answer to our subscribe (id 2): extranonce1 and the extranonce2 size; `None` when
    /// refused or malformed.
    Subscribed(Option<(Vec<u8>, usize)>),
    /// The answer to our authorize (id 3).
    Authorized(bool),
    /// The answer to a forwarded share.
    ShareAnswer { id: u64, accepted: bool },
    /// Neither a method nor a numeric id.
    Unknown,
}

/// Reads one upstream line's JSON.
pub fn read_upstream(v: &Value) -> UpstreamMsg {
    match v.get("method").and_then(Value::as_str) {
        Some("mining.notify") => UpstreamMsg::Notify,
        Some("mining.set_difficulty") => {
            UpstreamMsg::SetDifficulty(match v["params"].get(0).map(Difficulty::from_json) {
                Some(Ok(d)) if !d.is_zero() => Some(d),
                _ => None,
            })
        }
        Some("mining.set_extranonce") => {
            let e = v["params"].get(0).and_then(Value::as_str).and_then(|s| hex::decode(s).ok());
            let n = v["params"].get(1).and_then(Value::as_u64).map(|n| n as usize);
            UpstreamMsg::SetExtranonce(e.zip(n))
        }
        Some("client.reconnect") => {
            let host = v["params"].get(0).and_then(Value::as_str).filter(|h| !h.is_empty());
            let port = v["params"].get(1).and_then(|p| p.as_u64().or_else(|| p.as_str().and_then(|s| s.parse().ok())));
            UpstreamMsg::Reconnect(match (host, port) {
                (Some(h), Some(p)) => Some(format!("{h}:{p}")),
                _ => None,
            })
        }
        Some("mining.set_version_mask") => UpstreamMsg::SetVersionMask(
            v["params"].get(0).and_then(Value::as_str).and_then(|m| hex::parse_u32_be(m).ok()),
        ),
        Some(other) => UpstreamMsg::Other(other.to_string()),
        None => match v.get("id").and_then(Value::as_u64) {
            Some(1) => {
                let m =
                    v["result"]["version-rolling.mask"].as_str().and_then(|m| hex::parse_u32_be(m).ok()).unwrap_or(0);
                UpstreamMsg::Configured(if v["result"]["version-rolling"] == json!(true) { m } else { 0 })
            }
            Some(2) => {
                let e = v["result"].get(1).and_then(Value::as_str).and_then(|s| hex::decode(s).ok());
                let n = v["result"].get(2).and_then(Value::as_u64).map(|n| n as usize);
                UpstreamMsg::Subscribed(e.zip(n))
            }
            Some(3) => UpstreamMsg::Authorized(v["result"] == json!(true)),
            Some(id) => UpstreamMsg::ShareAnswer { id, accepted: v["result"] == json!(true) },
            None => UpstreamMsg::Unknown,
        },
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
        let stream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return End::Failed(format!("cannot connect: {e}")),
            Err(_) => return End::Failed(format!("no connection within {CONNECT_TIMEOUT:?}")),
        };
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let mut reader = LineReader::new(64 * 1024);
        let hello = format!(
            "{}\n{}\n{}\n",
            json!({"id": 1, "method": "mining.configure", "params": [["version-rolling"], {"version-rolling.mask": format!("{:08x}", self.version_mask), "version-rolling.min-bit-count": 2}]}),
            json!({"id": 2, "method": "mining.subscribe", "params": [concat!("ckpool-rs-proxy/", env!("CARGO_PKG_VERSION"))]}),
            json!({"id": 3, "method": "mining.authorize", "params": [entry.auth, entry.pass.expose()]}),
        );
        if let Err(e) = wr.write_all(hello.as_bytes()).await {
            return End::Failed(format!("write failed: {e}"));
        }
        let mut en1: Option<Vec<u8>> = None;
        let mut en2_size = 0usize;
        let mut authorized = false;
        let mut difficulty: Option<Difficulty> = None;
        let mut pending: HashMap<u64, (Arc<str>, Difficulty)> = HashMap::new();
        let mut next_id = 10u64;
        let mut bad_lines = 0u32;
        let mut last_line = Instant::now();
        let started = Instant::now();
        let mut probe = tokio::time::interval(PRIMARY_PROBE);
        probe.tick().await;
        self.generation += 1;
        let mut out = String::new();
        loop {
            let limit =
                if authorized && en1.is_some() { last_line + SILENCE_LIMIT } else { started + HANDSHAKE_TIMEOUT };
            tokio::select! {
                line = reader.next_line(&mut rd) => {
                    let l = match line {
                        Ok(Line::Data(l)) => reader.line(l),
                        Ok(Line::TooLong) => return End::Failed("sent a line over 64 KiB".into()),
                        Ok(Line::Eof) => return End::Failed("closed the connection".into()),
                        Err(e) => return End::Failed(format!("read error: {e}")),
                    };
                    last_line = Instant::now();
                    let v: Value = match serde_json::from_slice(l) {
                        Ok(v) => { bad_lines = 0; v }
                        Err(e) => {
                            bad_lines += 1;
                            tracing::warn!("upstream {addr}: unparseable line ({e}): {}", String::from_utf8_lossy(&l[..l.len().min(120)]));
                            if bad_lines > MAX_BAD_LINES { return End::Failed(format!("{bad_lines} unparseable lines in a row")); }
                            continue;
                        }
                    };
                    match read_upstream(&v) {
                        UpstreamMsg::Notify => {
                            let Some(e1) = en1.clone() else {
                                tracing::debug!("upstream {addr}: notify before the subscribe answer ignored");
                                continue;
                            };
                            // Stratum's default difficulty is 1 until set_difficulty says otherwise.
                            let d = *difficulty.get_or_insert(Difficulty::ONE);
                            self.publish(&v["params"], &e1, en2_size, d, addr);
                        }
                        UpstreamMsg::SetDifficulty(Some(d)) => {
                            if difficulty != Some(d) { tracing::info!("upstream {addr}: difficulty {d}"); }
                            difficulty = Some(d);
                        }
                        UpstreamMsg::SetDifficulty(None) => tracing::warn!("upstream {addr}: ignoring set_difficulty {}", v["params"]),
                        UpstreamMsg::SetExtranonce(Some((e, n))) if self.prefix_len.is_some_and(|p| n > p && n - p <= MAX_NONCE2_LEN) => {
                            tracing::info!("upstream {addr}: new extranonce1 {} (extranonce2 {n} bytes)", hex::encode(&e));
                            en1 = Some(e);
                            en2_size = n;
                            self.generation += 1;
                        }
                        UpstreamMsg::SetExtranonce(_) => return End::Failed(format!("unusable set_extranonce {}", v["params"])),
                        UpstreamMsg::Reconnect(to) => return End::Reconnect(to),
                        UpstreamMsg::SetVersionMask(m) => match m {
                            Some(m) => {
                                tracing::info!("upstream {addr}: version mask now {m:08x} (miners get {:08x} from the next job)", m & self.version_mask);
                                self.granted_mask.send_replace(m & self.version_mask);
                            }
                            None => tracing::warn!("upstream {addr}: ignoring set_version_mask {}", v["params"]),
                        },
                        UpstreamMsg::Other(other) => tracing::debug!("upstream {addr}: ignoring {other}"),
                        UpstreamMsg::Configured(m) => {
                            self.granted_mask.send_replace(m & self.version_mask);
                        }
                        UpstreamMsg::Subscribed(sub) => {
                            let Some((e, n)) = sub else {
                                return End::Failed(format!("subscribe refused or malformed: {}", v));
                            };
                            let Some(p) = prefix_len_for(n) else {
                                return End::Failed(format!("extranonce2 size {n} leaves no room for local miners"));
                            };
                            let p = *self.prefix_len.get_or_insert(p);
                            if n <= p {
                                return End::Failed(format!("extranonce2 size {n} is smaller than this proxy's {p}-byte miner prefix"));
                            }
                            if n - p > MAX_NONCE2_LEN {
                                return End::Failed(format!("extranonce2 size {n} leaves local miners more than {MAX_NONCE2_LEN} bytes after a {p}-byte prefix"));
                            }
                            if n - p < 4 {
                                tracing::warn!("upstream {addr}: extranonce2 is {n} bytes; local miners get {} byte(s) of extranonce2 after a {p}-byte prefix", n - p);
                            }
                            en1 = Some(e);
                            en2_size = n;
                        }
                        UpstreamMsg::Authorized(ok) => {
                            if !ok {
                                return End::Failed(format!("authorize as {:?} refused: {}", entry.auth, v["error"]));
                            }
                            authorized = true;
                            tracing::info!("upstream {addr}: connected and authorized as {}", entry.auth);
                        }
                        UpstreamMsg::ShareAnswer { id, accepted } => {
                            if let Some((worker, d)) = pending.remove(&id) {
                                if accepted {
                                    self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                                    tracing::info!("upstream {addr} rejected a share from {worker} (difficulty {d}): {}", v["error"]);
                                }
                            }
                        }
                        UpstreamMsg::Unknown => tracing::debug!("upstream {addr}: ignoring {v}"),
                    }
                }
                share = self.shares.recv() => {
                    let Some(s) = share else { return End::Shutdown };
                    if s.generation != self.generation {
                        tracing::debug!("share from {} for a previous upstream session dropped as stale", s.workername);
                        continue;
                    }
                    next_id += 1;
                    let mut params = vec![json!(entry.auth), json!(&*s.job_id), json!(s.extranonce2), json!(s.ntime), json!(s.nonce)];
                    if let Some(b) = &s.version_bits { params.push(json!(b)); }
                    out.push_str(&json!({"id": next_id, "method": "mining.submit", "params": params}).to_string());
                    out.push('\n');
                    pending.insert(next_id, (s.workername.clone(), s.difficulty));
                    if pending.len() > 100_000 { pending.clear(); }
                    self.counters.forwarded.fetch_add(1, Ordering::Relaxed);
                }
                _ = probe.tick(), if idx != 0 => {
                    if let Ok(Ok(_)) = timeout(Duration::from_secs(3), TcpStream::connect(&self.entries[0].url)).await {
                        return End::Primary;
                    }
                }
                _ = tokio::time::sleep_until(limit) => {
                    return End::Failed(if authorized { format!("silent for {SILENCE_LIMIT:?}") } else { "no subscribe/authorize answer within 15 s".into() });
                }
                _ = shutdown.changed() => return End::Shutdown,
            }
            if !out.is_empty() {
                if let Err(e) = wr.write_all(out.as_bytes()).await {
                    return End::Failed(format!("write failed: {e}"));
                }
                out.clear();
            }
        }
    }

    /// Re-issues an upstream notify to local miners.
    fn publish(&mut self, params: &Value, en1: &[u8], en2_size: usize, difficulty: Difficulty, addr: &str) {
        let generation = self.generation;
        let Some(p) = self.prefix_len else { return };
        let Some(job_id) = params.get(0).and_then(Value::as_str) else {
            tracing::warn!("upstream {addr}: unusable notify (job id is not a string): {params}");
            return;
        };
        self.next_job += 1;
        match Job::from_notify(self.next_job, params, en1.len() + p, en2_size - p) {
            Ok(job) => {
                let up = UpstreamJob { job_id: job_id.into(), target: difficulty.to_target(), difficulty, generation };
                let mut work = Work::proxied(Arc::new(job), Arc::from(en1), up);
                work.version_mask = Some(*self.granted_mask.borrow());
                self.work.send_replace(Some(Arc::new(work)));
            }
            Err(e) => tracing::warn!("upstream {addr}: unusable notify: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_lines_read() {
        let r = |line: &str| read_upstream(&serde_json::from_str(line).unwrap());
        assert_eq!(
            r(r#"{"id":2,"result":[[["mining.notify","1"]],"08000001",8],"error":null}"#),
            UpstreamMsg::Subscribed(Some((vec![8, 0, 0, 1], 8)))
        );
        assert_eq!(r(r#"{"id":2,"result":null,"error":[20,"no",null]}"#), UpstreamMsg::Subscribed(None));
        assert_eq!(
            r(r#"{"id":1,"result":{"version-rolling":true,"version-rolling.mask":"1fffe000"},"error":null}"#),
            UpstreamMsg::Configured(0x1fffe000)
        );
        assert_eq!(r(r#"{"id":3,"result":true,"error":null}"#), UpstreamMsg::Authorized(true));
        assert_eq!(r(r#"{"id":12,"result":false}"#), UpstreamMsg::ShareAnswer { id: 12, accepted: false });
        assert_eq!(
            r(r#"{"id":null,"method":"mining.set_difficulty","params":[0.0001]}"#),
            UpstreamMsg::SetDifficulty(Some("0.0001".parse().unwrap()))
        );
        assert_eq!(r(r#"{"id":null,"method":"mining.set_difficulty","params":[0]}"#), UpstreamMsg::SetDifficulty(None));
        assert_eq!(
            r(r#"{"id":null,"method":"client.reconnect","params":["h","3334",0]}"#),
            UpstreamMsg::Reconnect(Some("h:3334".into()))
        );
        assert_eq!(r(r#"{"id":null,"method":"mining.notify","params":[]}"#), UpstreamMsg::Notify);
        assert_eq!(
            r(r#"{"id":null,"method":"client.show_message","params":["hi"]}"#),
            UpstreamMsg::Other("client.show_message".into())
        );
        assert_eq!(r(r#"{"id":"x","result":true}"#), UpstreamMsg::Unknown);
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
