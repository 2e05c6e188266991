//! ZMQ block announcements (`rawblock` or `hashblock`) on a named blocking thread, fed to the
//! runtime through a bounded channel. libzmq reconnects by itself when the node restarts; a
//! socket monitor tells the operator when the publisher goes away (the template source keeps
//! polling the node meanwhile) and when it is back.

use std::time::Duration;

use tokio::sync::mpsc;

use crate::work::merkle::sha256d;

/// How long the subscriber may wait for its first connection before the log says it is polling.
pub const NOT_CONNECTED_AFTER: Duration = Duration::from_secs(5);
/// Messages read from the socket per wake-up at most (the rest are read on the next one).
const DRAIN_MAX: usize = 256;

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
            // The blocks passed on lately: a node may publish one block's `hashblock` after the
            // next block's `rawblock`, and that block must not be announced a second time.
            let mut recent = Recent::default();
            let started = std::time::Instant::now();
            let mut told_unconnected = false;
            loop {
                if tx.is_closed() {
                    return;
                }
                if !connected_once && !told_unconnected && started.elapsed() >= NOT_CONNECTED_AFTER {
                    told_unconnected = true;
                    tracing::warn!(
                        "ZMQ: not connected to {ep} after {NOT_CONNECTED_AFTER:?} (is the node publishing there? \
                         `ckpool check` compares it with what the node publishes); polling the node every {polling:?} meanwhile"
                    );
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
                // Everything the publisher queued (a burst of blocks; `rawblock` and `hashblock`
                // of one block on one endpoint): only the newest block is passed on, once.
                let mut newest = None;
                for _ in 0..DRAIN_MAX {
                    match sock.recv_multipart(zmq::DONTWAIT) {
                        Ok(parts) => {
                            newest = block_hash_of(&parts).filter(|h| !recent.contains(h)).or(newest);
                        }
                        Err(zmq::Error::EAGAIN) => break,
                        Err(e) => {
                            tracing::warn!("ZMQ {ep}: receive failed: {e}; retrying");
                            std::thread::sleep(Duration::from_millis(500));
                            break;
                        }
                    }
                }
                let Some(hash) = newest else { continue };
                recent.push(hash);
                if tx.blocking_send(NewBlock(hash)).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| anyhow::anyhow!("cannot start the ZMQ thread: {e}"))?;
    Ok(rx)
}

/// Where a node publishes blocks, from its `getzmqnotifications` (Bitcoin SV:
/// `activezmqnotifications`) answer: `Ok` when a
/// `pubhashblock` or `pubrawblock` entry serves `endpoint` (same port; a node bound to
/// `0.0.0.0` or `*` serves every host), else `Err` listing what it does publish.
pub fn published_at(notifications: &serde_json::Value, endpoint: &str) -> Result<(), Vec<String>> {
    let entries = notifications.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut listed = Vec::new();
    for e in entries {
        // Core's `getzmqnotifications` names the kind "type"; Bitcoin SV's
        // `activezmqnotifications` names it "notification".
        let kind = e.get("type").or_else(|| e.get("notification")).and_then(|v| v.as_str()).unwrap_or("?");
        let address = e.get("address").and_then(|v| v.as_str()).unwrap_or("?");
        if matches!(kind, "pubhashblock" | "pubrawblock") && same_endpoint(address, endpoint) {
            return Ok(());
        }
        listed.push(format!("{kind} {address}"));
    }
    Err(listed)
}

/// `tcp://HOST:PORT` endpoints with the same port whose hosts agree (or one is a wildcard);
/// other transports by exact text.
fn same_endpoint(published: &str, wanted: &str) -> bool {
    let (Some(p), Some(w)) = (published.strip_prefix("tcp://"), wanted.strip_prefix("tcp://")) else {
        return published == wanted;
    };
    let (Some((ph, pp)), Some((wh, wp))) = (p.rsplit_once(':'), w.rsplit_once(':')) else { return false };
    let loopback = |h: &str| matches!(h, "127.0.0.1" | "localhost" | "[::1]");
    pp == wp && (ph == wh || matches!(ph, "0.0.0.0" | "*" | "[::]") || (loopback(ph) && loopback(wh)))
}

/// The event number of a socket monitor message (first frame: u16 event, u32 value).
fn monitor_event(parts: &[Vec<u8>]) -> Option<u16> {
    let f = parts.first()?;
    (f.len() >= 2).then(|| u16::from_le_bytes([f[0], f[1]]))
}
/// The last few block hashes passed on (a ring: no allocation per block).
#[derive(Default)]
struct Recent {
    hashes: [[u8; 32]; 16],
    next: usize,
    len: usize,
}

impl Recent {
    fn contains(&self, h: &[u8; 32]) -> bool {
        self.hashes[..self.len].contains(h)
    }

    fn push(&mut self, h: [u8; 32]) {
        self.hashes[self.next] = h;
        self.next = (self.next + 1) % self.hashes.len();
        self.len = (self.len + 1).min(self.hashes.len());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nodes_published_endpoints_are_matched_by_port_and_host() {
        let n = serde_json::json!([
            {"type": "pubhashblock", "address": "tcp://127.0.0.1:28332", "hwm": 1000},
            {"type": "pubrawtx", "address": "tcp://127.0.0.1:28333", "hwm": 1000}
        ]);
        assert_eq!(published_at(&n, "tcp://127.0.0.1:28332"), Ok(()));
        assert_eq!(published_at(&n, "tcp://localhost:28332"), Ok(()));
        let other = published_at(&n, "tcp://127.0.0.1:28333").unwrap_err();
        assert_eq!(other, ["pubhashblock tcp://127.0.0.1:28332", "pubrawtx tcp://127.0.0.1:28333"]);
        let any = serde_json::json!([{"type": "pubrawblock", "address": "tcp://0.0.0.0:28332"}]);
        assert_eq!(published_at(&any, "tcp://10.0.0.5:28332"), Ok(()));
        assert_eq!(published_at(&serde_json::json!([]), "tcp://127.0.0.1:28332"), Err(vec![]));
        let sv = serde_json::json!([{"notification": "pubrawblock", "address": "tcp://127.0.0.1:28332"}]);
        assert_eq!(published_at(&sv, "tcp://127.0.0.1:28332"), Ok(()));
    }

    fn hashblock(h: [u8; 32]) -> Vec<Vec<u8>> {
        let mut display = h;
        display.reverse();
        vec![b"hashblock".to_vec(), display.to_vec(), 0u32.to_le_bytes().to_vec()]
    }

    fn rawblock(header: &[u8; 80]) -> Vec<Vec<u8>> {
        vec![b"rawblock".to_vec(), header.to_vec(), 0u32.to_le_bytes().to_vec()]
    }

    /// A real libzmq publisher on loopback (as bitcoind's `-zmqpubrawblock` and
    /// `-zmqpubhashblock` on one endpoint): each block arrives as two messages, a burst as many;
    /// the subscriber passes each block on once, whatever order its two messages come in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rawblock_and_hashblock_of_one_block_count_once() {
        let ctx = zmq::Context::new();
        let publisher = ctx.socket(zmq::PUB).unwrap();
        publisher.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = publisher.get_last_endpoint().unwrap().unwrap();
        let mut rx = subscribe(&endpoint, Duration::from_secs(1)).unwrap();
        // PUB drops messages until the subscription has arrived: announce a warm-up block until
        // it is heard (bounded: 100 × 50 ms).
        let warm = [9u8; 32];
        let mut heard = false;
        for _ in 0..100 {
            publisher.send_multipart(hashblock(warm), 0).unwrap();
            if let Ok(Some(b)) = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await {
                assert_eq!(b, NewBlock(warm));
                heard = true;
                break;
            }
        }
        assert!(heard, "the subscriber never heard the publisher");
        while let Ok(b) = rx.try_recv() {
            assert_eq!(b, NewBlock(warm));
        }
        // Ten blocks, each as hashblock then rawblock (what bitcoind sends), as fast as possible;
        // then ten more whose hashblock comes after the next block's rawblock (a node whose
        // notifiers run apart).
        let mut hashes = Vec::new();
        let header = |i: u8| {
            let mut header = [0u8; 80];
            header[0] = i + 1;
            header
        };
        for i in 0..10u8 {
            let h = sha256d(&header(i));
            hashes.push(h);
            publisher.send_multipart(hashblock(h), 0).unwrap();
            publisher.send_multipart(rawblock(&header(i)), 0).unwrap();
        }

        let last = *hashes.last().unwrap();
        let mut got = Vec::new();
        while got.last() != Some(&last) {
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            let Ok(Some(NewBlock(h))) = b else { panic!("the last block never arrived; got {} so far", got.len()) };
            got.push(h);
        }
        // Ten more, each block's rawblock heard before the previous block's late hashblock is
        // sent: that late message must not announce the previous block again.
        for i in 10..20u8 {
            let h = sha256d(&header(i));
            publisher.send_multipart(rawblock(&header(i)), 0).unwrap();
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            assert_eq!(b.ok().flatten(), Some(NewBlock(h)), "block {i} passed on");
            publisher.send_multipart(hashblock(sha256d(&header(i - 1))), 0).unwrap();
            got.push(h);
        }
        // A last block: everything sent before it has been read by then.
        let end = [7u8; 32];
        publisher.send_multipart(hashblock(end), 0).unwrap();
        loop {
            let b = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
            let Ok(Some(NewBlock(h))) = b else { panic!("the last block never arrived") };
            if h == end {
                break;
            }
            got.push(h);
        }
        let mut unique = got.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), got.len(), "a block passed on twice");
        assert!(
            got.iter().all(|h| hashes.contains(h) || (10..20u8).any(|i| sha256d(&header(i)) == *h)),
            "only the published blocks"
        );
    }
}
