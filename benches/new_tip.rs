//! New tip → miners' work on it, on one Bitcoin Core (bitcoin-node, built with IPC by
//! contrib/build-core.sh) whose mempool holds 3,000 transactions, for each way the pool takes its
//! templates:
//! - `gbt`: getblocktemplate, the new tip found by polling `getbestblockhash` every `blockpoll`
//!   (this Core has no ZMQ: the vendored source tree lacks it; `NEW_TIP_POLL_MS`, default 5), with
//!   empty-first work;
//! - `gbt-full`: the same without empty-first (`empty_first: false`): miners wait for the full
//!   template;
//! - `ipc`: Bitcoin Core's IPC mining interface (`ipcmining`): the node's `waitNext` answers on the
//!   new tip with the full template.
//!
//! A block is made by `generateblock ADDRESS []` (coinbase only, so the mempool stays full); the
//! times are from the node's answer to it (the block is connected and its tip announced by
//! then). For each block: when the first and the last of the miners (`NEW_TIP_MINERS`, default
//! 1,000 idle SV1 connections) got a clean notify on the new tip, and when the first and the last
//! got the full template (a notify with merkle branches); p50/p99 over `NEW_TIP_BLOCKS` blocks
//! (default 20). The `gbt` lines add the node's own getblocktemplate time, from the pool's log.
//!
//! Run: `cargo bench --bench new_tip` (release build; `NEW_TIP_MODES=ipc` for one mode).
//! Needs bitcoin-node (contrib/setup.sh); says so and stops without it.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::core_node::{coins, regtest_key, CoreNode, Utxo};
use common::{wait, Pool};
use serde_json::{json, Value};
use std::str::FromStr;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(60);
/// Each chain of spends from one coinbase (the mempool's ancestor limit is 25).
const CHAIN: usize = 20;

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; a filter argument other than ours means another bench.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"new_tip".contains(a.as_str())) {
        return;
    }
    let node = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest/core/bitcoin-node");
    if !node.exists() {
        println!("new_tip: no bitcoin-node at {} (run contrib/setup.sh); nothing measured", node.display());
        return;
    }
    raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn run() {
    let miners = env_num("NEW_TIP_MINERS", 1000);
    let blocks = env_num("NEW_TIP_BLOCKS", 20);
    let mempool = env_num("NEW_TIP_MEMPOOL", 3000);
    let poll_ms = env_num("NEW_TIP_POLL_MS", 5);
    let modes = std::env::var("NEW_TIP_MODES").unwrap_or_else(|_| "gbt,gbt-full,ipc".into());

    let node = CoreNode::start_ipc(&["-maxmempool=1000"]).await;
    let key = regtest_key(33);
    let addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let chains = mempool.div_ceil(CHAIN);
    let funding = node.generate_to(chains as u64, &addr).await;
    node.generate_to(101, &addr).await;
    let t = Instant::now();
    fill_mempool(&node, &key, &addr, &funding, mempool).await;
    let info = node.call("getmempoolinfo", json!([])).await;
    println!(
        "new_tip: Bitcoin Core {} (bitcoin-node), mempool {} transactions, {} vbytes (filled in {:.1} s); {miners} miners, {blocks} blocks per mode, {} cores, load {}",
        node.call("getnetworkinfo", json!([])).await["subversion"].as_str().unwrap_or("?"),
        info["size"],
        info["bytes"],
        t.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" "),
    );
    wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;

    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let mut cfg = node.pool_config(&addr);
        cfg["update_interval"] = json!(600);
        cfg["mindiff"] = json!(1);
        cfg["startdiff"] = json!(1);
        match mode {
            "gbt" => cfg["blockpoll"] = json!(poll_ms),
            "gbt-full" => {
                cfg["blockpoll"] = json!(poll_ms);
                cfg["empty_first"] = json!(false);
            }
            "ipc" => {
                cfg["ipcmining"] = json!(node.ipc_socket().display().to_string());
            }
            other => {
                println!("new_tip: unknown mode {other:?} (gbt, gbt-full, ipc)");
                continue;
            }
        }
        let mut pool = Pool::start(cfg, &[]);
        if mode == "ipc" {
            pool.wait_log("ipcmining: templates from Bitcoin Core's IPC mining interface", LIMIT);
        }
        measure(mode, &node, &addr, &pool, miners, blocks).await;
        pool.stop();
        // The pool's log (debug level: each template's timing) for a closer look.
        let kept = std::env::temp_dir().join(format!("new_tip-{mode}.log"));
        if std::fs::write(&kept, pool.log()).is_ok() {
            println!("new_tip: {mode}: the pool's log is at {}", kept.display());
        }
    }
}

/// `mempool` spends in chains of [`CHAIN`] from the coinbases of `funding`, signed by the node.
async fn fill_mempool(node: &CoreNode, key: &bitcoin::PrivateKey, addr: &str, funding: &[String], mempool: usize) {
    let script = node.script_hex(addr).await;
    let mut made = 0;
    for hash in funding {
        let mut u = Utxo::coinbase_of(node, hash).await;
        for _ in 0..CHAIN {
            if made == mempool {
                return;
            }
            // Fees differ along the chains, as a real mempool's do.
            let fee = 1_000 + (made as u64 % 97) * 37;
            let out = u.sat - fee;
            let raw = node
                .call(
                    "createrawtransaction",
                    json!([[{"txid": u.txid, "vout": u.vout}], {addr: Value::from_str(&coins(out)).unwrap()}]),
                )
                .await;
            let prev = json!([{"txid": u.txid, "vout": u.vout, "scriptPubKey": u.script_hex, "amount": Value::from_str(&coins(u.sat)).unwrap()}]);
            let signed = node.call("signrawtransactionwithkey", json!([raw, [key.to_wif()], prev])).await;
            let txid = node.call("sendrawtransaction", json!([signed["hex"]])).await;
            u = Utxo { txid: txid.as_str().unwrap().to_string(), vout: 0, sat: out, script_hex: script.clone() };
            made += 1;
        }
    }
}

/// A clean notify's arrival at miner `idx`, and whether it is a full template (merkle branches).
type Arrival = (usize, Instant, bool);

/// One idle SV1 miner: subscribes, authorizes, and reports every clean notify until the end.
async fn miner(addr: String, idx: usize, tx: mpsc::Sender<Arrival>) {
    let Ok(s) = TcpStream::connect(&addr).await else { return };
    let (r, mut w) = s.into_split();
    let hello = format!(
        "{{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"new_tip-bench\"]}}\n{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"bench.{idx}\",\"x\"]}}\n"
    );
    if w.write_all(hello.as_bytes()).await.is_err() {
        return;
    }
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let at = Instant::now();
        if !line.contains("mining.notify") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
        let p = &v["params"];
        if p[8] == json!(true) {
            let full = p[4].as_array().is_some_and(|b| !b.is_empty());
            if tx.send((idx, at, full)).await.is_err() {
                return;
            }
        }
    }
    drop(w);
}

fn ms(d: f64) -> String {
    format!("{d:.2}")
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().saturating_sub(1)) as f64 * q).round() as usize).copied().unwrap_or(f64::NAN)
}

async fn measure(mode: &str, node: &CoreNode, addr: &str, pool: &Pool, miners: usize, blocks: usize) {
    let (tx, mut rx) = mpsc::channel::<Arrival>(miners * 8);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..miners {
        tasks.spawn(miner(pool.addr(), i, tx.clone()));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(tx);
    // Every miner holds its first job (the pool's current work) before the first block.
    let mut ready = std::collections::HashSet::new();
    let deadline = Instant::now() + LIMIT;
    while ready.len() < miners && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), rx.recv()).await {
            Ok(Some((i, _, _))) => {
                ready.insert(i);
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    if ready.len() < miners {
        println!("new_tip: {mode}: only {}/{miners} miners got work; measuring with those", ready.len());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while rx.try_recv().is_ok() {}

    let (mut first, mut last, mut full_first, mut full_last, mut rpc) = (vec![], vec![], vec![], vec![], vec![]);
    let mut missing = 0usize;
    for _ in 0..blocks {
        let t_req = Instant::now();
        node.call("generateblock", json!([addr, []])).await;
        let t_ans = Instant::now();
        rpc.push((t_ans - t_req).as_secs_f64() * 1e3);
        // Arrivals for 1.5 s (bounded: the channel, and the time).
        let until = t_req + Duration::from_millis(1500);
        let mut any: HashMap<usize, Instant> = HashMap::new();
        let mut full: HashMap<usize, Instant> = HashMap::new();
        while let Ok(Some((i, at, is_full))) = tokio::time::timeout_at(until.into(), rx.recv()).await {
            any.entry(i).or_insert(at);
            if is_full {
                full.entry(i).or_insert(at);
            }
        }
        let rel = |at: &Instant| at.saturating_duration_since(t_ans).as_secs_f64() * 1e3;
        missing += ready.len().saturating_sub(full.len());
        if let (Some(a), Some(b)) = (any.values().min(), any.values().max()) {
            first.push(rel(a));
            last.push(rel(b));
        }
        if let (Some(a), Some(b)) = (full.values().min(), full.values().max()) {
            full_first.push(rel(a));
            full_last.push(rel(b));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tasks.abort_all();
    let line = |what: &str, v: &mut Vec<f64>| {
        format!("{what} p50 {} ms, p99 {} ms", ms(quantile(v, 0.5)), ms(quantile(v, 0.99)))
    };
    println!(
        "new_tip: {mode}: work on the new tip: {}; {}. Full template: {}; {}. ({} blocks, {} miners; {missing} full-template arrivals missed; generateblock answered in p50 {} ms)",
        line("first miner", &mut first),
        line("last miner", &mut last),
        line("first miner", &mut full_first),
        line("last miner", &mut full_last),
        first.len(),
        ready.len(),
        ms(quantile(&mut rpc, 0.5)),
    );
    if mode.starts_with("gbt") {
        // The pool's own account: "... work out X ms after: node Y ms, ..." per new block.
        let mut node_ms: Vec<f64> = pool
            .log()
            .lines()
            .filter(|l| l.contains("new block template") && l.contains("(NewBlock;"))
            .filter_map(|l| l.split("node ").nth(1)?.split(' ').next()?.parse().ok())
            .collect();
        if !node_ms.is_empty() {
            println!(
                "new_tip: {mode}: the node's getblocktemplate on a new tip: p50 {} ms, p99 {} ms ({} templates)",
                ms(quantile(&mut node_ms, 0.5)),
                ms(quantile(&mut node_ms, 0.99)),
                node_ms.len()
            );
        }
    }
}
