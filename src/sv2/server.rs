//! Stratum V2 listeners: accept within `maxclients`, the Noise handshake under a deadline (one
//! log line when it fails), then one task per connection.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use noise_sv2::Responder;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::keys::AuthorityKey;
use super::session::Sv2Session;
use super::{transport, CLIENT_FRAME_LIMIT, HANDSHAKE_TIMEOUT};
use crate::serve::accept::accept_next;
use crate::serve::ServerCtx;

/// Accepts SV2 connections on every listener until shutdown, then waits (bounded) for them.
pub async fn serve(
    ctx: Arc<ServerCtx>,
    listeners: Vec<TcpListener>,
    key: AuthorityKey,
    cert_validity: Duration,
    maxclients: usize,
) {
    let limit = Arc::new(Semaphore::new(if maxclients == 0 { Semaphore::MAX_PERMITS } else { maxclients }));
    let key = Arc::new(key);
    let mut tasks = JoinSet::new();
    for l in listeners {
        tasks.spawn(accept_loop(ctx.clone(), l, limit.clone(), key.clone(), cert_validity));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(
    ctx: Arc<ServerCtx>,
    listener: TcpListener,
    limit: Arc<Semaphore>,
    key: Arc<AuthorityKey>,
    cert_validity: Duration,
) {
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Duration::from_millis(10);
    let mut conns = JoinSet::new();
    let local = format!("{local} (sv2)");
    // At the descriptor ceiling an SV2 miner is closed before the Noise handshake (no message
    // can reach it before one).
    while let Some((stream, peer, permit)) =
        accept_next(&listener, &limit, &mut shutdown, &mut backoff, &local, &|_, _| {}).await
    {
        let _ = stream.set_nodelay(true);
        // Banned addresses and the per-address limit (serve::guard): closed before the Noise
        // handshake (no message can reach the miner before one).
        let Ok(admitted) = ctx.guard.admit(peer.ip(), &local) else { continue };
        let (ctx, key) = (ctx.clone(), key.clone());
        conns.spawn(async move {
            let _permit = permit;
            let _admitted = admitted;
            let responder = match Responder::from_authority_kp(key.public(), key.secret(), cert_validity) {
                Ok(r) => r,
                Err(e) => return tracing::error!("sv2: cannot make a Noise responder from the authority key: {e:?}"),
            };
            let (rd, wr) = stream.into_split();
            // Boxed: the handshake's state is freed once done instead of sizing this task's
            // future for the connection's life (issue 31).
            let handshake = Box::pin(transport::accept(rd, wr, responder, HANDSHAKE_TIMEOUT, CLIENT_FRAME_LIMIT));
            let (rd, wr) = match handshake.await {
                Ok(halves) => halves,
                Err(e) => {
                    if ctx.guard.log(crate::log::ratelimit::LogKind::Refusal) {
                        tracing::warn!(peer = %peer, "sv2 handshake with {peer} failed: {}", crate::log::escape::Esc(&e.to_string()));
                    }
                    return;
                }
            };
            let id = ctx.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
            ctx.counters.connections.fetch_add(1, Ordering::Relaxed);
            Sv2Session::new(ctx.clone(), id, peer, crate::serve::enonce::random_start()).run(rd, wr).await;
            ctx.counters.connections.fetch_sub(1, Ordering::Relaxed);
        });
        while conns.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while conns.join_next().await.is_some() {} }).await;
}
