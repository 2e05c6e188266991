//! Stratum V2 listeners: accept within `maxclients`, the Noise handshake under a deadline (one
//! log line when it fails), then one task per connection, for either face that speaks SV2: the
//! mining connections (`sv2url`) and the Job Declaration server (`sv2jdurl`, `jds/`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::noise::{Authority, Responder};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::keys::AuthorityKey;
use super::session::Sv2Session;
use super::{transport, CLIENT_FRAME_LIMIT, HANDSHAKE_TIMEOUT};
use crate::serve::accept::accept_next;
use crate::serve::ServerCtx;

/// Accepts SV2 mining connections on every listener until shutdown, then waits (bounded) for them.
pub async fn serve(
    ctx: Arc<ServerCtx>,
    listeners: Vec<TcpListener>,
    key: AuthorityKey,
    cert_validity: Duration,
    maxclients: usize,
) {
    let face = |ctx: Arc<ServerCtx>, peer: SocketAddr, rd: Reader, wr: Writer| async move {
        let id = ctx.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        ctx.counters.connections.fetch_add(1, Ordering::Relaxed);
        Sv2Session::new(ctx.clone(), id, peer, crate::serve::enonce::random_start()).run(rd, wr).await;
        ctx.counters.connections.fetch_sub(1, Ordering::Relaxed);
    };
    let listen = Listen { key, cert_validity, maxclients, frame_limit: CLIENT_FRAME_LIMIT, label: "sv2" };
    serve_face(ctx, listeners, listen, face).await
}

/// The reading and writing halves of an accepted connection after its handshake.
pub type Reader = transport::FrameReader<OwnedReadHalf>;
pub type Writer = transport::FrameWriter<OwnedWriteHalf>;

/// How a face listens: its authority key and certificates, its connection limit (0: none), the
/// largest frame it reads, and its name in the log.
pub struct Listen {
    pub key: AuthorityKey,
    pub cert_validity: Duration,
    pub maxclients: usize,
    pub frame_limit: usize,
    pub label: &'static str,
}

/// Accepts connections for `face` (mining, job declaration) on every listener until shutdown:
/// admitted by the guard, the Noise handshake under a deadline, then `face` runs the connection.
pub async fn serve_face<F, Fut>(ctx: Arc<ServerCtx>, listeners: Vec<TcpListener>, listen: Listen, face: F)
where
    F: Fn(Arc<ServerCtx>, SocketAddr, Reader, Writer) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let maxclients = listen.maxclients;
    let limit = Arc::new(Semaphore::new(if maxclients == 0 { Semaphore::MAX_PERMITS } else { maxclients }));
    let listen = Arc::new(listen);
    let mut tasks = JoinSet::new();
    for l in listeners {
        tasks.spawn(accept_loop(ctx.clone(), l, limit.clone(), listen.clone(), face.clone()));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop<F, Fut>(
    ctx: Arc<ServerCtx>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    listen: Arc<Listen>,
    face: F,
) where
    F: Fn(Arc<ServerCtx>, SocketAddr, Reader, Writer) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Duration::from_millis(10);
    let mut conns = JoinSet::new();
    let label = listen.label;
    let local = format!("{local} ({label})");
    // The authority key pair once for every handshake on this listener.
    let authority = match Authority::new(listen.key.public(), listen.key.secret()) {
        Ok(a) => Arc::new(a),
        Err(e) => return tracing::error!("{local}: cannot certify Noise handshakes with the authority key: {e}"),
    };
    // At the descriptor ceiling an SV2 peer is closed before the Noise handshake (no message
    // can reach it before one).
    while let Some((stream, peer, permit)) =
        accept_next(&listener, &limit, &mut shutdown, &mut backoff, &local, &|_, _| {}).await
    {
        let _ = stream.set_nodelay(true);
        // Banned addresses and the per-address limit (serve::guard): closed before the Noise
        // handshake (no message can reach the peer before one).
        let Ok(admitted) = ctx.guard.admit(peer.ip(), &local) else { continue };
        let (ctx, listen, face, authority) = (ctx.clone(), listen.clone(), face.clone(), authority.clone());
        conns.spawn(async move {
            let _permit = permit;
            let _admitted = admitted;
            let responder = match Responder::new(&authority, listen.cert_validity) {
                Ok(r) => r,
                Err(e) => return tracing::error!("{label}: cannot make a Noise responder: {e}"),
            };
            drop(authority);
            let (rd, wr) = stream.into_split();
            // Boxed: the handshake's state is freed once done instead of sizing this task's
            // future for the connection's life (issue 31).
            let handshake = Box::pin(transport::accept(rd, wr, responder, HANDSHAKE_TIMEOUT, listen.frame_limit));
            let (rd, wr) = match handshake.await {
                Ok(halves) => halves,
                Err(e) => {
                    if ctx.guard.log(crate::log::ratelimit::LogKind::Refusal) {
                        tracing::warn!(peer = %peer, "{label} handshake with {peer} failed: {}", crate::log::escape::Esc(&e.to_string()));
                    }
                    return;
                }
            };
            drop(listen);
            face(ctx, peer, rd, wr).await;
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while conns.join_next().await.is_some() {} }).await;
}
