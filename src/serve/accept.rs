//! The accept step both faces' listeners share: binding with SO_REUSEADDR, one line per listener,
//! and accepting within the connection limit with a backoff on accept errors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

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

/// What an accepted connection holds while it lives: its place within `maxclients` and its
/// descriptor (crate::fdlimit).
pub struct Held {
    _limit: tokio::sync::OwnedSemaphorePermit,
    _fd: crate::fdlimit::Slot,
}

/// The next connection on `listener` within `limit` and the process's descriptor budget (both
/// held while it lives); `None` at shutdown. A miner past the descriptor ceiling is logged (one
/// operator line a minute, crate::fdlimit) and handed to `at_ceiling`, which refuses it the way
/// its face can (SV1 answers the first request; SV2, TLS and PROXY-protocol listeners close).
/// An accept error (EMFILE and friends) is one log line and a doubling pause (≤ 1 s) instead of a
/// spin. Shared by the SV1 and SV2 listeners.
pub async fn accept_next(
    listener: &TcpListener,
    limit: &Arc<Semaphore>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    backoff: &mut Duration,
    local: &str,
    at_ceiling: &(dyn Fn(TcpStream, crate::fdlimit::Full) + Sync),
) -> Option<(TcpStream, SocketAddr, Held)> {
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => p.ok()?,
            _ = shutdown.changed() => return None,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                *backoff = Duration::from_millis(10);
                match crate::fdlimit::take_slot() {
                    Ok(fd) => return Some((stream, peer, Held { _limit: permit, _fd: fd })),
                    Err(full) => {
                        full.log(&peer, local);
                        at_ceiling(stream, full);
                    }
                }
            }
            Err(e) => {
                tracing::warn!("accept on {local} failed: {e}; retrying in {backoff:?}");
                tokio::time::sleep(*backoff).await;
                *backoff = (*backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}
