//! One Stratum V1 upstream session: subscribe, authorize, version rolling (BIP310); each notify
//! re-issued to local miners, their shares submitted and the upstream's verdicts counted.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use super::{End, UpstreamClient, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, OUT_CAP, PRIMARY_PROBE, SILENCE_LIMIT};
use crate::config::Upstream;
use crate::difficulty::Difficulty;
use crate::hex;
use crate::log::escape::Esc;
use crate::share::Submit;
use crate::sv1::client::{Client, ClientError};
use crate::sv1::server_msg::{Event, NotifyJob, Subscription};
use crate::work::coinbase::MAX_NONCE2_LEN;

const MAX_BAD_LINES: u32 = 50;

impl UpstreamClient {
    pub(super) async fn sv1_session(
        &mut self,
        addr: &str,
        entry: &Upstream,
        idx: usize,
        shutdown: &mut watch::Receiver<bool>,
    ) -> End {
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
                let made = |id, n1, n2| n.job(id, n1, n2).map(|NotifyJob { job, job_id }| (job, job_id));
                if let Err(e) = self.publish(&e1, s.en2_size, (d.to_target(), d), made) {
                    tracing::warn!("upstream {addr}: unusable notify: {e}");
                }
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
                if let Err(why) = self.miner_prefix(n, addr) {
                    return Some(End::Failed(why));
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
    use crate::mining::{UpstreamShare, Work};
    use tokio::sync::mpsc;

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
            version: 0x20000000,
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
}
