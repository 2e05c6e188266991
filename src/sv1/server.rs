//! Listeners: accept miners on every `serverurl`, one task each, within `maxclients`. A
//! connection's path: accept → PROXY protocol header (listeners that ask for it: the miner's
//! own address replaces the load balancer's) → TLS handshake (TLS listeners) → extranonce1 →
//! session with the listener's difficulties. A failed header or handshake is one log line and
//! the connection is closed; nothing else is spent on it.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::lines::LineReader;
use super::session::Session;
use crate::config::Listener;
use crate::log::escape::Esc;
use crate::log::ratelimit::LogKind;
use crate::proxy_protocol::{self, Header};
use crate::serve::accept::accept_next;
use crate::serve::enonce::{mask_of, random_start, Full};
use crate::serve::ServerCtx;
use crate::tls::TlsServer;

/// A miner's connection: plain TCP, or TLS over TCP.
pub enum MinerStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl MinerStream {
    /// Reads what has arrived into `reader`. A plain socket is waited on for readiness and then
    /// read without blocking (an idle miner holds no read buffer); TLS reads through rustls.
    /// Cancel-safe. `Ok(0)`: closed; `WouldBlock`: spurious readiness.
    pub async fn read_into(&mut self, reader: &mut LineReader) -> std::io::Result<usize> {
        match self {
            MinerStream::Plain(s) => {
                // The socket's own reader waker slot (this task is its only reader), not
                // `readable()`'s waiter node: an idle session waits here, and the waiter node
                // with its nested futures was 150 bytes of every session's task.
                std::future::poll_fn(|cx| s.poll_read_ready(cx)).await?;
                reader.read_ready(s)
            }
            MinerStream::Tls(t) => match reader.read_some(t).await {
                // A client that closes without TLS close_notify has still just closed.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl AsyncRead for MinerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MinerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MinerStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MinerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MinerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MinerStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MinerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MinerStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MinerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MinerStream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Miners refused because the extranonce1 space is full: each gets an answer to its first request
/// saying so (error 20, then the connection closes), and the operator log gets one line per
/// 10 s with how many were refused, not one per connection.
struct Refusals {
    local: String,
    last_log: Option<Instant>,
    unlogged: u64,
    /// Bounds the answering tasks (each lives at most 10 s); beyond it a miner is just closed.
    answering: Arc<Semaphore>,
}

impl Refusals {
    fn new(local: &str) -> Refusals {
        Refusals { local: local.to_string(), last_log: None, unlogged: 0, answering: Arc::new(Semaphore::new(64)) }
    }

    /// Answers the miner's first request with `message` (error 20) and closes, within the bound
    /// on answering tasks; beyond it the miner is just closed.
    fn answer(&self, stream: MinerStream, message: String) {
        let Ok(permit) = self.answering.clone().try_acquire_owned() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(Duration::from_secs(10), answer_full(stream, message)).await;
        });
    }

    fn refuse(&mut self, stream: MinerStream, peer: SocketAddr, held: usize, nonce1_len: usize) {
        self.unlogged += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            tracing::warn!(
                "miner {peer} on {} refused: all {held} extranonce1 values of {nonce1_len} byte(s) are held by \
                 connected miners ({} refused since the last such line); lower maxclients or give this \
                 server a longer extranonce1 (nonce1length, or an upstream with more extranonce2)",
                self.local,
                self.unlogged
            );
            self.last_log = Some(Instant::now());
            self.unlogged = 0;
        }
        let Ok(permit) = self.answering.clone().try_acquire_owned() else { return };
        tokio::spawn(async move {
            let _permit = permit;
            let message = format!("server full: all {held} extranonce1 values are in use; try again later");
            let _ = tokio::time::timeout(Duration::from_secs(10), answer_full(stream, message)).await;
        });
    }
}

/// Reads the miner's first request (at most 4 KB) and answers it: the pool is full (`message`).
async fn answer_full(stream: MinerStream, message: String) {
    let (rd, mut wr) = tokio::io::split(stream);
    let mut line = String::new();
    let mut rd = BufReader::new(rd.take(4096));
    let _ = rd.read_line(&mut line).await;
    let id = serde_json::from_str::<serde_json::Value>(&line)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    let reply = serde_json::json!({
        "id": id,
        "result": null,
        "error": [20, message, null],
    });
    let _ = wr.write_all(format!("{reply}\n").as_bytes()).await;
    let _ = wr.shutdown().await;
}

/// Accepts miners until shutdown, then waits (bounded) for sessions to end. `options(i)` gives
/// the `i`-th listener's options (TLS, PROXY protocol, difficulties); `tls` serves the TLS ones.
pub async fn serve(
    ctx: Arc<ServerCtx>,
    listeners: Vec<TcpListener>,
    options: impl Fn(usize) -> Listener,
    tls: Option<Arc<TlsServer>>,
    maxclients: usize,
) {
    let limit = Arc::new(Semaphore::new(if maxclients == 0 { Semaphore::MAX_PERMITS } else { maxclients }));
    let mut tasks = JoinSet::new();
    for (i, l) in listeners.into_iter().enumerate() {
        let opts = options(i);
        let tls = match (opts.tls, &tls) {
            (false, _) => None,
            (true, Some(t)) => Some(t.clone()),
            (true, None) => {
                tracing::error!("listener {i} asks for TLS but no certificate is loaded: not serving it");
                continue;
            }
        };
        let run = ListenerRun::new(&ctx, opts, tls, l.local_addr().map(|a| a.to_string()).unwrap_or_default());
        if let Some(d) = run.describe() {
            tracing::info!("listener {}: {d}", run.local);
        }
        tasks.spawn(accept_loop(ctx.clone(), l, Arc::new(run), limit.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

/// What one listener's connections share.
struct ListenerRun {
    opts: Listener,
    tls: Option<Arc<TlsServer>>,
    local: String,
    /// Where the next extranonce1 search starts (moved under `ctx.enonces`' lock).
    next_en1: AtomicU64,
    mask: u64,
    refused: Mutex<Refusals>,
    /// The pool's limits and log rate limit (the context's).
    log: Arc<crate::serve::guard::Guard>,
}

impl ListenerRun {
    fn new(ctx: &ServerCtx, opts: Listener, tls: Option<Arc<TlsServer>>, local: String) -> ListenerRun {
        let n1 = ctx.params.nonce1_len;
        ListenerRun {
            opts,
            tls,
            next_en1: AtomicU64::new(random_start()),
            mask: mask_of(n1),
            refused: Mutex::new(Refusals::new(&local)),
            log: ctx.guard.clone(),
            local,
        }
    }

    /// Its options for the log, when it has any beyond a plain listener's.
    fn describe(&self) -> Option<String> {
        let o = &self.opts;
        let own_diff = o.own_diffs;
        if !o.tls && o.proxy_protocol.is_none() && !own_diff {
            return None;
        }
        let mut parts = Vec::new();
        if o.tls {
            parts.push("TLS".to_string());
        }
        if let Some(a) = o.proxy_protocol {
            parts.push(format!("PROXY protocol {} required", a.name()));
        }
        let max = if o.maxdiff.is_zero() { "none".to_string() } else { o.maxdiff.to_string() };
        parts.push(format!("mindiff {} startdiff {} maxdiff {max}", o.mindiff, o.startdiff));
        Some(parts.join(", "))
    }
}

async fn accept_loop(ctx: Arc<ServerCtx>, listener: TcpListener, run: Arc<ListenerRun>, limit: Arc<Semaphore>) {
    let local = run.local.clone();
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Duration::from_millis(10);
    let mut sessions = JoinSet::new();
    let plain = !run.opts.tls && run.opts.proxy_protocol.is_none();
    // At the descriptor ceiling a plain SV1 miner gets its first request answered ("server
    // full", error 20); TLS and PROXY-protocol miners are closed (no line can reach them first).
    let at_ceiling = move |stream: TcpStream, full: crate::fdlimit::Full| {
        let Some(answering) = full.answering().filter(|_| plain) else { return };
        let message = full.reply();
        tokio::spawn(async move {
            let _answering = answering;
            let answer = answer_full(MinerStream::Plain(stream), message);
            let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
        });
    };
    while let Some((stream, peer, permit)) =
        accept_next(&listener, &limit, &mut shutdown, &mut backoff, &local, &at_ceiling).await
    {
        let (ctx2, run2) = (ctx.clone(), run.clone());
        sessions.spawn(async move {
            // Boxed: a PROXY header read and a TLS handshake are large futures that a session's
            // task would otherwise carry (inline, for its whole life) after they are done.
            let Some((stream, peer)) = Box::pin(prelude(&run2, stream, peer)).await else { return };
            // Banned addresses and the per-address limit (serve::guard), on the miner's own
            // address (after any PROXY header).
            let _admitted = match ctx2.guard.admit(peer.ip(), &run2.local) {
                Ok(a) => a,
                Err(why) => {
                    drop(permit);
                    run2.refused.lock().unwrap_or_else(|p| p.into_inner()).answer(stream, why.message());
                    return;
                }
            };
            // A fresh extranonce1 not held by a live session; none when the space is full.
            let taken = {
                let mut next = run2.next_en1.load(Ordering::Relaxed);
                let r = ctx2.enonces.take(&mut next, run2.mask);
                run2.next_en1.store(next, Ordering::Relaxed);
                r
            };
            let key = match taken {
                Ok(key) => key,
                Err(Full { held }) => {
                    drop(permit);
                    let mut r = run2.refused.lock().unwrap_or_else(|p| p.into_inner());
                    r.refuse(stream, peer, held, ctx2.params.nonce1_len);
                    return;
                }
            };
            let id = ctx2.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
            let params = ctx2.params.channel_with(&run2.opts);
            let session = Box::new(Session::new(ctx2.clone(), id, peer, key, params));
            ctx2.counters.connections.fetch_add(1, Ordering::Relaxed);
            session.run(stream).await;
            ctx2.counters.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        while sessions.try_join_next().is_some() {}
    }
    // Shutdown: sessions see the same signal; give them a moment to flush.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while sessions.join_next().await.is_some() {} }).await;
}

/// The connection's way in before the session: its PROXY header (the miner's own address
/// becomes `peer`) and its TLS handshake, as the listener asks. `None`: refused (logged once).
async fn prelude(run: &ListenerRun, mut stream: TcpStream, peer: SocketAddr) -> Option<(MinerStream, SocketAddr)> {
    let _ = stream.set_nodelay(true);
    let mut peer = peer;
    if let Some(accept) = run.opts.proxy_protocol {
        match proxy_protocol::read_header(&mut stream, accept).await {
            Ok(Header::Proxy { src, dst, version }) => {
                tracing::debug!("PROXY v{version} on {}: client {src} (to {dst}) via {peer}", run.local);
                peer = src;
            }
            Ok(Header::Local { version }) => {
                tracing::debug!("PROXY v{version} on {}: LOCAL/UNKNOWN from {peer} (its own address stands)", run.local)
            }
            Err(e) => {
                if run.log.log(LogKind::Refusal) {
                    tracing::warn!(
                        "connection from {peer} on {} refused: PROXY protocol: {}",
                        run.local,
                        Esc(&e.to_string())
                    );
                }
                return None;
            }
        }
    }
    let stream = match &run.tls {
        None => MinerStream::Plain(stream),
        Some(tls) => match tls.accept(stream).await {
            Ok(t) => MinerStream::Tls(Box::new(t)),
            Err(e) => {
                if run.log.log(LogKind::Refusal) {
                    tracing::info!("TLS handshake with {peer} on {} failed: {}", run.local, Esc(&e.to_string()));
                }
                return None;
            }
        },
    };
    Some((stream, peer))
}
