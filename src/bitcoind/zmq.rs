//! ZMQ block announcements (`rawblock` or `hashblock`) on a named blocking thread, fed to the
//! runtime through a bounded channel. libzmq reconnects by itself when the node restarts; a
//! socket monitor tells the operator when the publisher goes away (the template source keeps
//! polling the node meanwhile) and when it is back.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::work::merkle::sha256d;

/// A new block the node announced: its hash in internal byte order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewBlock(pub [u8; 32]);

/// Subscribes to `endpoint` on a background thread; announcements arrive on the returned
/// receiver. The thread ends when the receiver is dropped. `polling` is how often the template
/// source polls the node's tip meanwhile (for the log line when the publisher is gone).
pub fn subscribe(endpoint: &str, polling: Duration) -> anyhow::Result<mpsc::Receiver<NewBlock>> {
    let ctx = zmq::Context::new();
    let sock = ctx.socket(zmq::SUB).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: cannot create socket: {e}"))?;
    for topic in [&b"rawblock"[..], b"hashblock"] {
        sock.set_subscribe(topic).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: subscribe: {e}"))?;
    }
    sock.set_reconnect_ivl(500).ok();
    sock.set_reconnect_ivl_max(5000).ok();
    sock.set_heartbeat_ivl(10_000).ok();
    sock.set_heartbeat_timeout(30_000).ok();
    // Connection events of the SUB socket, read on the same thread.
    let mon_ep = "inproc://zmq-blocks-monitor";
    let events = (zmq::SocketEvent::CONNECTED.to_raw() | zmq::SocketEvent::DISCONNECTED.to_raw()) as i32;
    sock.monitor(mon_ep, events).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: socket monitor: {e}"))?;
    let mon = ctx.socket(zmq::PAIR).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: monitor socket: {e}"))?;
    mon.connect(mon_ep).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: monitor connect: {e}"))?;
    sock.connect(endpoint).map_err(|e| anyhow::anyhow!("zmqblock {endpoint}: cannot connect: {e}"))?;
    let (tx, rx) = mpsc::channel(16);
    let ep = endpoint.to_string();
    std::thread::Builder::new()
        .name("zmq-blocks".into())
        .spawn(move || {
            let _ctx = ctx;
            tracing::info!("ZMQ: listening for new blocks on {ep}");
            let mut connected_once = false;
            loop {
                if tx.is_closed() {
                    return;
                }
                let mut items = [sock.as_poll_item(zmq::POLLIN), mon.as_poll_item(zmq::POLLIN)];
                if let Err(e) = zmq::poll(&mut items, 500) {
                    tracing::warn!("ZMQ {ep}: poll failed: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                if items[1].is_readable() {
                    if let Ok(parts) = mon.recv_multipart(zmq::DONTWAIT) {
                        match monitor_event(&parts) {
                            Some(e) if e == zmq::SocketEvent::CONNECTED.to_raw() => {
                                if connected_once {
                                    tracing::info!("ZMQ: publisher {ep} is back; new blocks announced again");
                                } else {
                                    tracing::info!("ZMQ: connected to {ep}");
                                }
                                connected_once = true;
                            }
                            Some(e) if e == zmq::SocketEvent::DISCONNECTED.to_raw() => tracing::warn!(
                                "ZMQ: publisher {ep} is gone; relying on polling the node every {polling:?} until it is back"
                            ),
                            _ => {}
                        }
                    }
                }
                if !items[0].is_readable() {
                    continue;
                }
                let parts = match sock.recv_multipart(zmq::DONTWAIT) {
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

/// The event number of a socket monitor message (first frame: u16 event, u32 value).
fn monitor_event(parts: &[Vec<u8>]) -> Option<u16> {
    let f = parts.first()?;
    (f.len() >= 2).then(|| u16::from_le_bytes([f[0], f[1]]))
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
