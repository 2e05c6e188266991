//! ZMQ block announcements (`rawblock` or `hashblock`) on a named blocking thread, fed to the
//! runtime through a bounded channel. libzmq reconnects by itself when the node restarts.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::work::merkle::sha256d;

/// A new block the node announced: its hash in internal byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewBlock(pub [u8; 32]);

/// Subscribes to `endpoint` on a background thread; announcements arrive on the returned
/// receiver. The thread ends when the receiver is dropped.
pub fn subscribe(endpoint: &str) -> anyhow::Result<mpsc::Receiver<NewBlock>> {
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::SUB).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: cannot create socket: {e}"))?;
    for topic in [&b"rawblock"[..], b"hashblock"] {
        sock.set_subscribe(topic).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: subscribe: {e}"))?;
    }
    sock.set_rcvtimeo(500).ok();
    sock.set_reconnect_ivl(500).ok();
    sock.set_reconnect_ivl_max(5000).ok();
    sock.set_heartbeat_ivl(10_000).ok();
    sock.set_heartbeat_timeout(30_000).ok();
    sock.connect(endpoint).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: cannot connect: {e}"))?;
    let (tx, rx) = mpsc::channel(16);
    let ep = endpoint.to_string();
    std::thread::Builder::new()
        .name("zmq-blocks".into())
        .spawn(move || {
            let _ctx = ctx;
            tracing::info!("ZMQ: listening for new blocks on {ep}");
            loop {
                if tx.is_closed() {
                    return;
                }
                let parts = match sock.recv_multipart(0) {
                    Ok(p) => p,
                    Err(zmq::Error::EAGAIN) => continue,
                    Err(e) => {
                        tracing::warn!("ZMQ {ep}: receive failed: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                };
                let Some(hash) = block_hash_of(&parts) else { continue };
                if tx.blocking_send(NewBlock(hash)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the ZMQ thread: {e}"))?;
    Ok(rx)
}

/// The block hash a `rawblock` / `hashblock` message carries.
pub fn block_hash_of(parts: &[Vec<u8>]) -> Option<[u8; 32]> {
    let topic = parts.first()?;
    let body = parts.get(1)?;
    match topic.as_slice() {
        b"rawblock" if body.len() >= 80 => Some(sha256d(&body[..80])),
        b"hashblock" if body.len() == 32 => {
            let mut h = [0u8; 32];
            h.copy_from_slice(body);
            h.reverse(); // hashblock is sent in display order
            Some(h)
        }
        _ => None,
    }
}
