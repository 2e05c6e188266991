//! Listeners: accept miners on every `serverurl`, one task each, within `maxclients`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::session::Session;
use super::ServerCtx;

/// Binds every address (with SO_REUSEADDR, so a restart does not wait for TIME_WAIT).
pub fn bind_all(addrs: &[SocketAddr]) -> anyhow::Result<Vec<TcpListener>> {
    addrs
        .iter()
        .map(|a| {
            let sock = if a.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
                .map_err(|e| anyhow::anyhow!("serverurl {a}: cannot create socket: {e}"))?;
            sock.set_reuseaddr(true).ok();
            sock.bind(*a).map_err(|e| {
                anyhow::anyhow!("serverurl {a}: cannot listen: {e} (another pool running? use --killold)")
            })?;
            sock.listen(1024).map_err(|e| anyhow::anyhow!("serverurl {a}: cannot listen: {e}"))
        })
        .collect()
}

/// One operator line per listener with the address it is bound to (a configured port 0 shows the
/// port the system chose; tests start the pool that way and read the port from this line).
pub fn log_listening(listeners: &[TcpListener]) {
    for l in listeners {
        match l.local_addr() {
            Ok(a) => tracing::info!("listening for miners on {a}"),
            Err(e) => tracing::warn!("listening for miners (address unknown: {e})"),
        }
    }
}

/// A random 64-bit start for extranonce1 allocation (distinct per run).
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

/// Accepts miners until shutdown, then waits (bounded) for sessions to end.
pub async fn serve(ctx: Arc<ServerCtx>, listeners: Vec<TcpListener>, maxclients: usize) {
    let limit = Arc::new(Semaphore::new(if maxclients == 0 { Semaphore::MAX_PERMITS } else { maxclients }));
    let mut tasks = JoinSet::new();
    for l in listeners {
        let ctx = ctx.clone();
        let limit = limit.clone();
        tasks.spawn(accept_loop(ctx, l, limit));
    }
    while tasks.join_next().await.is_some() {}
}

async fn accept_loop(ctx: Arc<ServerCtx>, listener: TcpListener, limit: Arc<Semaphore>) {
    let local = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut shutdown = ctx.shutdown.clone();
    let mut next_en1 = random_u64();
    let mask = if ctx.params.nonce1_len >= 8 { u64::MAX } else { (1u64 << (8 * ctx.params.nonce1_len)) - 1 };
    let mut backoff = Duration::from_millis(10);
    let mut sessions = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept on {local} failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let id = ctx.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
        // A fresh extranonce1 not held by a live session.
        let key = {
            let mut set = ctx.enonces.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                next_en1 = next_en1.wrapping_add(1) & mask;
                if set.insert(next_en1) {
                    break next_en1;
                }
            }
        };
        let session = Box::new(Session::new(ctx.clone(), id, peer, key));
        let ctx2 = ctx.clone();
        ctx2.counters.connections.fetch_add(1, Ordering::Relaxed);
        sessions.spawn(async move {
            session.run(stream).await;
            ctx2.counters.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
        while sessions.try_join_next().is_some() {}
    }
    // Shutdown: sessions see the same signal; give them a moment to flush.
    let _ = tokio::time::timeout(Duration::from_secs(5), async { while sessions.join_next().await.is_some() {} }).await;
}
