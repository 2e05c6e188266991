//! Listeners: accept miners on every `serverurl`, one task each, within `maxclients`.

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
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

/// Takes a free extranonce1 value (of `mask`+1) after `*next`, or None when every value is held
/// by a live session. Never loops more than once around the space, so it cannot spin while the
/// caller holds the lock on `set`.
pub fn take_en1(set: &mut HashSet<u64>, next: &mut u64, mask: u64) -> Option<u64> {
    if mask != u64::MAX && set.len() as u64 > mask {
        return None;
    }
    // At least one value is free: found within mask+1 steps.
    loop {
        *next = next.wrapping_add(1) & mask;
        if set.insert(*next) {
            return Some(*next);
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

    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, held: usize, nonce1_len: usize) {
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
            let _ = tokio::time::timeout(Duration::from_secs(10), answer_full(stream, held)).await;
        });
    }
}

/// Reads the miner's first request (at most 4 KB) and answers it: the pool is full.
async fn answer_full(stream: TcpStream, held: usize) {
    let (rd, mut wr) = stream.into_split();
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
        "error": [20, format!("server full: all {held} extranonce1 values are in use; try again later"), null],
    });
    let _ = wr.write_all(format!("{reply}\n").as_bytes()).await;
    let _ = wr.shutdown().await;
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
    let mut refused = Refusals::new(&local);
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
        // A fresh extranonce1 not held by a live session; none when the space is full.
        let taken = {
            let mut set = ctx.enonces.lock().unwrap_or_else(|p| p.into_inner());
            take_en1(&mut set, &mut next_en1, mask).ok_or(set.len())
        };
        let key = match taken {
            Ok(key) => key,
            Err(held) => {
                drop(permit);
                refused.refuse(stream, peer, held, ctx.params.nonce1_len);
                continue;
            }
        };
        let id = ctx.counters.sessions_total.fetch_add(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn en1_allocation_fills_the_space_then_refuses_without_spinning() {
        // A proxy with a 1-byte prefix: 256 values.
        let mut set = HashSet::new();
        let mut next = 77;
        let mut got: Vec<u64> = (0..256).map(|_| take_en1(&mut set, &mut next, 0xff).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..256).collect::<Vec<u64>>());
        assert_eq!(take_en1(&mut set, &mut next, 0xff), None);
        // One leaves: exactly that value comes back, wherever the cursor is.
        set.remove(&200);
        assert_eq!(take_en1(&mut set, &mut next, 0xff), Some(200));
        assert_eq!(take_en1(&mut set, &mut next, 0xff), None);
        // The full 8-byte space never reports full.
        let mut set = HashSet::from([u64::MAX, 0]);
        let mut next = u64::MAX - 1;
        assert_eq!(take_en1(&mut set, &mut next, u64::MAX), Some(1));
    }
}
