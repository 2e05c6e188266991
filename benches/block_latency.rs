//! A found block's way out: candidate handed to the block task → first (and last) byte of its
//! `submitblock` request on the node's socket, p50/p99, for an empty template and for a
//! 3,000-transaction one (about 1.2 MB). The node is a loopback listener in this process that
//! notes when each request's first byte arrives and answers `null` (accepted). The block task
//! saves and fsyncs each block's hex in a temporary directory as the pool does; run the whole
//! under `strace -f -e trace=fsync -e inject=fsync:delay_exit=200000` to make every fsync take
//! 200 ms and see that it does not show in the figure.
//!
//! One block at a time, 50 ms apart (`BLOCK_GAP_MS` sets another gap), so that each figure is a
//! block's own way out and not the previous block's save and checks on the same two cores.
//!
//! Run: `cargo bench --bench block_latency` (or, in the test profile the tests build anyway,
//! `cargo test --release --bench block_latency`; `cargo test --bench block_latency` too).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ckpool::bitcoind::Rpc;
use ckpool::blocks::BlockSubmitter;
use ckpool::config::{RpcAuth, Secret};
use ckpool::difficulty::Difficulty;
use ckpool::mining::BlockCandidate;
use ckpool::work::coinbase::{self, script_for_address, CoinbaseConfig};
use ckpool::work::job::Job;
use ckpool::work::merkle::sha256d;
use serde_json::json;
use tokio::sync::{mpsc, watch};

const ROUNDS: usize = 200;

fn job(txs: u32) -> Arc<Job> {
    // 400-byte transactions (their bytes need not be valid: the listener is not a node).
    let data = "ab".repeat(400);
    let transactions: Vec<_> = (0..txs)
        .map(|i| json!({ "data": data, "txid": ckpool::hex::encode_rev(&sha256d(&i.to_le_bytes())), "fee": 1000 }))
        .collect();
    let t = common::mainnet_template(transactions);
    let script = script_for_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", bitcoin::Network::Bitcoin).unwrap();
    let cb = coinbase::build(&t, &CoinbaseConfig::new(script, "/ckpool-rs bench/")).unwrap();
    Arc::new(Job::new(1, &t, cb, true))
}

/// The "node": notes each request's first byte, reads it whole, answers null; sends the times of
/// the first and the last byte of each `submitblock` on `firsts`.
fn node(firsts: std::sync::mpsc::Sender<(Instant, Instant)>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let firsts = firsts.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let mut req = Vec::new();
                    let n = match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let first = Instant::now();
                    req.extend_from_slice(&buf[..n]);
                    let head_end = loop {
                        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        let n = s.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                    };
                    let head = String::from_utf8_lossy(&req[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                        .unwrap_or(0);
                    while req.len() < head_end + len {
                        let n = s.read(&mut buf).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        req.extend_from_slice(&buf[..n]);
                    }
                    // Only submitblock counts (fates are followed with other calls).
                    let last = Instant::now();
                    if req[head_end..].windows(11).any(|w| w == b"submitblock") {
                        let _ = firsts.send((first, last));
                    }
                    let body = r#"{"result":null,"error":null,"id":"ckpool"}"#;
                    let _ = write!(
                        s,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                }
            });
        }
    });
    format!("http://{addr}/")
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn main() {
    // Between two blocks: 50 ms (a 3,000-transaction block's save and checks end within it here);
    // `BLOCK_GAP_MS=5` for the figures taken with 5 ms before.
    let gap = Duration::from_millis(std::env::var("BLOCK_GAP_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(50));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    for txs in [0u32, 3_000] {
        let job = job(txs);
        let (ftx, frx) = std::sync::mpsc::channel();
        let url = node(ftx);
        let dir = tempfile::tempdir().unwrap();
        let rpc = Arc::new(Rpc::single(
            &url,
            RpcAuth::UserPass { user: "u".into(), pass: Secret::new("p") },
            Duration::from_secs(15),
        ));
        let lat = rt.block_on(async {
            let (refresh, mut refresh_rx) = mpsc::channel(4);
            let (stats, mut stats_rx) = mpsc::channel(16);
            let (_h_tx, height) = watch::channel(0u32);
            let (_s_tx, shutdown) = watch::channel(false);
            tokio::spawn(async move { while refresh_rx.recv().await.is_some() {} });
            tokio::spawn(async move { while stats_rx.recv().await.is_some() {} });
            let (tx, rx) = mpsc::channel(64);
            let sub = BlockSubmitter {
                rpc,
                logdir: dir.path().to_path_buf(),
                refresh,
                stats,
                height,
                shutdown,
                takeover: None,
                ipc: None,
            };
            let task = tokio::spawn(sub.run(rx));
            let lat = Arc::new(Mutex::new((Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS))));
            for i in 0..ROUNDS + 5 {
                let mut hash = [0u8; 32];
                hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let c = BlockCandidate {
                    job: job.clone(),
                    en1: vec![0; 4],
                    en2: vec![0; 8],
                    header: [0; 80],
                    hash,
                    workername: "bench.1".into(),
                    username: "bench".into(),
                    difficulty: Difficulty::ONE,
                };
                let t0 = Instant::now();
                tx.send(c).await.unwrap();
                let (first, last) = tokio::task::block_in_place(|| frx.recv_timeout(Duration::from_secs(30)).unwrap());
                if i >= 5 {
                    let mut l = lat.lock().unwrap();
                    l.0.push(first.saturating_duration_since(t0));
                    l.1.push(last.saturating_duration_since(t0));
                }
                // Found blocks are minutes apart: one at a time, this one's save and checks
                // done before the next (unless a gap is asked for).
                tokio::time::sleep(gap).await;
            }
            drop(tx);
            let _ = task.await;
            let v = lat.lock().unwrap().clone();
            v
        });
        for (mut lat, which) in [(lat.0, "first"), (lat.1, "last")] {
            lat.sort();
            println!(
                "block_latency: {txs:>5} transactions: candidate -> {which} submitblock byte p50 {:?} p99 {:?} max {:?} ({ROUNDS} blocks)",
                pct(&lat, 50),
                pct(&lat, 99),
                lat[lat.len() - 1]
            );
        }
    }
}
