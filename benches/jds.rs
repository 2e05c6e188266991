//! Job Declaration: declaration → job usable, and the pool's CPU per declaration, on one Bitcoin
//! Core (bitcoin-node, built with IPC by contrib/build-core.sh) whose mempool holds the
//! transactions declared, for each way the JDS has the node check a declared block:
//! - `rpc`: `getblocktemplate` in proposal mode (the block's hex over JSON-RPC);
//! - `ipc`: `checkBlock` over Bitcoin Core's IPC mining interface (`ipcmining`).
//!
//! The pool runs with `sv2url` and `sv2jdurl`; the bench is the declaring proxy: the pool's own
//! JD client (`sv2::jd_client`) and SV2 client (one extended channel with work selection). For
//! each count of declared transactions (`JDS_TXS`, default `0,100,1000`: the first N of the
//! node's template, all in the pool's template too, so none is asked for), `JDS_DECLARATIONS`
//! declarations (default 20; a fresh JD connection every 20, the per-connection burst), each:
//! a token (not timed), DeclareMiningJob sent → DeclareMiningJob.Success received (the JDS's
//! checks and the node's), then SetCustomMiningJob sent → SetCustomMiningJob.Success (the job
//! usable on the channel); p50/p99 of both. The pool's CPU (utime + stime of /proc/PID/stat)
//! over the declarations' loop (tokens, declarations, custom jobs), divided by their count.
//!
//! Run: `cargo bench --bench jds` (release build; `JDS_MODES=ipc` for one mode).
//! Needs bitcoin-node (contrib/setup.sh); says so and stops without it. Loopback only.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::str::FromStr;
use std::time::{Duration, Instant};

use binary_sv2::{Seq0255, B0255, B064K, U256};
use bitcoin::consensus::encode::serialize;
use bitcoin::{Amount, ScriptBuf, TxOut};
use ckpool::sv2::client::{Event, Sv2Client, REQUIRES_VERSION_ROLLING};
use ckpool::sv2::jd_client::{Declaration, JdClient, JdEvent, DECLARE_TX_DATA};
use ckpool::sv2::keys;
use ckpool::work::merkle;
use common::core_node::{coins, regtest_key, CoreNode, Utxo};
use common::declare::{coinbase, cut};
use common::{wait, Pool};
use mining_sv2::SetCustomMiningJob;
use parsers_sv2::{AnyMessage, Mining};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);
const REQUIRES_WORK_SELECTION: u32 = 0b010;
/// Each chain of spends from one coinbase (the mempool's ancestor limit is 25).
const CHAIN: usize = 20;
/// Declarations per JD connection (the server's burst; the bench never waits for its refill).
const PER_CONNECTION: usize = 20;

fn env_num(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; a filter argument other than ours means another bench.
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"jds".contains(a.as_str())) {
        return;
    }
    let node = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest/core/bitcoin-node");
    if !node.exists() {
        println!("jds: no bitcoin-node at {} (run contrib/setup.sh); nothing measured", node.display());
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
}

async fn run() {
    let k = env_num("JDS_DECLARATIONS", 100).max(1);
    let sizes: Vec<usize> = std::env::var("JDS_TXS")
        .unwrap_or_else(|_| "0,100,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let modes = std::env::var("JDS_MODES").unwrap_or_else(|_| "rpc,ipc".into());
    let mempool = sizes.iter().copied().max().unwrap_or(0);

    let node = CoreNode::start_ipc(&["-maxmempool=1000"]).await;
    let key = regtest_key(35);
    let addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let pool_addr = node.derive_address(&format!("wpkh({})", regtest_key(36).to_wif())).await;
    let funding = node.generate_to(mempool.div_ceil(CHAIN).max(1) as u64, &addr).await;
    node.generate_to(101, &addr).await;
    fill_mempool(&node, &key, &addr, &funding, mempool).await;
    let info = node.call("getmempoolinfo", json!([])).await;
    println!(
        "jds: Bitcoin Core {} (bitcoin-node), mempool {} transactions, {} vbytes; {k} declarations per size, {} cores, load {}",
        node.call("getnetworkinfo", json!([])).await["subversion"].as_str().unwrap_or("?"),
        info["size"],
        info["bytes"],
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        load(),
    );
    wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;
    let pool_script = ScriptBuf::from_bytes(ckpool::hex::decode(&node.script_hex(&pool_addr).await).unwrap());

    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let mut cfg = node.pool_config(&pool_addr);
        cfg["sv2url"] = json!("127.0.0.1:0");
        cfg["sv2jdurl"] = json!("127.0.0.1:0");
        cfg["update_interval"] = json!(600);
        let keydir = tempfile::tempdir().unwrap();
        cfg["sv2_authority_key"] = json!(keydir.path().join("sv2_authority.key").display().to_string());
        match mode {
            "rpc" => {}
            "ipc" => {
                cfg["ipcmining"] = json!(node.ipc_socket().display().to_string());
                cfg["ipcfeethreshold"] = json!(1_000_000_000u64);
            }
            other => {
                println!("jds: unknown mode {other:?} (rpc, ipc)");
                continue;
            }
        }
        let mut pool = Pool::start(cfg, &[]);
        if mode == "ipc" {
            pool.wait_log("ipcmining: templates from Bitcoin Core's IPC mining interface", LIMIT);
        }
        pool.wait_log("new block template: height", LIMIT);
        let mut bench = Bench::connect(&pool, &pool_script).await;
        for &n in &sizes {
            bench.measure(mode, &node, &pool, n, k).await;
        }
        pool.stop();
        let kept = std::env::temp_dir().join(format!("jds-bench-{mode}.log"));
        if std::fs::write(&kept, pool.log()).is_ok() {
            println!("jds: {mode}: the pool's log is at {}", kept.display());
        }
    }
}

/// The address (`listening for ... on ADDR: stratum2+tcp://.../KEY`) a line of the pool's log names.
fn logged(pool: &Pool, what: &str) -> (std::net::SocketAddr, [u8; 32]) {
    let log = pool.log();
    let line = log.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} line in\n{log}"));
    let rest = line.split(what).nth(1).unwrap();
    let (addr, url) = rest.split_once(": ").unwrap();
    (addr.trim().parse().unwrap(), keys::parse_public(url.trim().rsplit('/').next().unwrap()).unwrap())
}

/// The declaring proxy: its mining connection (one extended channel) and where it declares.
struct Bench {
    miner: Sv2Client,
    channel: u32,
    en: usize,
    jd_addr: std::net::SocketAddr,
    authority: [u8; 32],
    pool_script: ScriptBuf,
    next_id: u32,
}

impl Bench {
    async fn connect(pool: &Pool, pool_script: &ScriptBuf) -> Bench {
        let (sv2_addr, authority) = logged(pool, "listening for Stratum V2 miners on ");
        let (jd_addr, _) = logged(pool, "listening for Stratum V2 job declarations on ");
        let mut miner = Sv2Client::connect(sv2_addr, &authority, REQUIRES_VERSION_ROLLING | REQUIRES_WORK_SELECTION)
            .await
            .expect("work selection is on with sv2jdurl");
        miner.open_extended("jds-bench.proxy", 1e9, 8).await.unwrap();
        let (channel, en) = match sv2_event(&mut miner, "OpenExtendedMiningChannel.Success").await {
            Event::ExtendedOpened { channel, extranonce_prefix, extranonce_size, .. } => {
                (channel, extranonce_prefix.len() + extranonce_size as usize)
            }
            other => panic!("expected an extended channel, got {other:?}"),
        };
        Bench { miner, channel, en, jd_addr, authority, pool_script: pool_script.clone(), next_id: 1 }
    }

    async fn measure(&mut self, mode: &str, node: &CoreNode, pool: &Pool, n: usize, k: usize) {
        let t = node.call("getblocktemplate", json!([{"rules": ["segwit"]}])).await;
        let txs = t["transactions"].as_array().unwrap();
        if txs.len() < n {
            println!("jds: {mode}: the node's template has {} transactions, fewer than {n}; skipped", txs.len());
            return;
        }
        let id32 = |v: &Value| -> [u8; 32] {
            let mut b: [u8; 32] = ckpool::hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap();
            b.reverse();
            b
        };
        let all_fees: u64 = txs.iter().map(|x| x["fee"].as_u64().unwrap()).sum();
        let subsidy = t["coinbasevalue"].as_u64().unwrap() - all_fees;
        let chosen = &txs[..n];
        let wtxids: Vec<[u8; 32]> = chosen.iter().map(|x| id32(&x["hash"])).collect();
        let txids: Vec<[u8; 32]> = chosen.iter().map(|x| id32(&x["txid"])).collect();
        let value = subsidy + chosen.iter().map(|x| x["fee"].as_u64().unwrap()).sum::<u64>();
        let height = t["height"].as_u64().unwrap() as u32;
        let version = t["version"].as_u64().unwrap() as u32;
        let nbits = u32::from_str_radix(t["bits"].as_str().unwrap(), 16).unwrap();
        let curtime = t["curtime"].as_u64().unwrap() as u32;
        let prev = id32(&t["previousblockhash"]);
        let en = self.en;
        let cb = coinbase(
            height,
            en,
            vec![TxOut { value: Amount::from_sat(value), script_pubkey: self.pool_script.clone() }],
            &wtxids,
        );
        let (prefix, suffix) = cut(&cb, en);
        let head = cb.input[0].script_sig.as_bytes()[..cb.input[0].script_sig.len() - en].to_vec();
        let outputs = serialize(&cb.output);
        let branches = merkle::branches(&txids);
        let path: Vec<U256> = branches.iter().map(|b| U256::new(&b[..]).unwrap()).collect();

        let pid = pool.pid();
        let mut declared = Vec::with_capacity(k);
        let mut usable = Vec::with_capacity(k);
        let mut jd: Option<JdClient> = None;
        let mut cpu_ticks = 0u64;
        for i in 0..k {
            if i % PER_CONNECTION == 0 {
                let mut c = JdClient::connect(self.jd_addr, &self.authority, DECLARE_TX_DATA).await.unwrap();
                assert_eq!(jd_event(&mut c, "SetupConnection.Success").await, JdEvent::SetupOk);
                jd = Some(c);
            }
            let c = jd.as_mut().unwrap();
            let id = self.next_id;
            self.next_id += 1;
            let before = cpu(pid);
            c.allocate("jds-bench", id).await.unwrap();
            let token = match jd_event(c, "AllocateMiningJobToken.Success").await {
                JdEvent::Token { request_id, token, .. } if request_id == id => token,
                other => panic!("expected a token for {id}, got {other:?}"),
            };
            let d = Declaration {
                request_id: id,
                token: &token,
                version,
                coinbase_prefix: &prefix,
                coinbase_suffix: &suffix,
                wtxids: &wtxids,
            };
            let t0 = Instant::now();
            c.declare(&d).await.unwrap();
            let job_token = match jd_event(c, "DeclareMiningJob answer").await {
                JdEvent::Declared { request_id, token } if request_id == id => token,
                other => panic!("declaration {id} ({n} transactions) not accepted: {other:?}\n{}", pool.log()),
            };
            let t1 = Instant::now();
            declared.push(t1 - t0);
            let job = SetCustomMiningJob {
                channel_id: self.channel,
                request_id: id,
                token: B0255::new(&job_token[..]).unwrap(),
                version,
                prev_hash: U256::new(&prev[..]).unwrap(),
                min_ntime: curtime,
                nbits,
                coinbase_tx_version: 2,
                coinbase_prefix: B0255::new(&head[..]).unwrap(),
                coinbase_tx_input_n_sequence: u32::MAX,
                coinbase_tx_outputs: B064K::new(&outputs[..]).unwrap(),
                coinbase_tx_locktime: 0,
                merkle_path: Seq0255::new(path.clone()).unwrap(),
            };
            self.miner.send(AnyMessage::Mining(Mining::SetCustomMiningJob(job))).await.unwrap();
            match sv2_event(&mut self.miner, "SetCustomMiningJob.Success").await {
                Event::CustomJobSet { request_id, .. } if request_id == id => {}
                other => panic!("custom job {id} not taken: {other:?}\n{}", pool.log()),
            }
            usable.push(t1.elapsed());
            cpu_ticks += cpu(pid).saturating_sub(before);
        }
        let tick_us = 1_000_000 / clock_ticks();
        println!(
            "jds: {mode:>3}: {n:>4} transactions: DeclareMiningJob -> Success {}; Success -> SetCustomMiningJob.Success {}; pool CPU {} us per declaration ({k} declarations, {} ticks; load {})",
            pcts(&mut declared),
            pcts(&mut usable),
            cpu_ticks * tick_us / k as u64,
            cpu_ticks,
            load(),
        );
    }
}

fn pcts(v: &mut [Duration]) -> String {
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    format!("p50 {:.2} ms, p99 {:.2} ms", q(0.5).as_secs_f64() * 1e3, q(0.99).as_secs_f64() * 1e3)
}

/// The process's utime + stime, in clock ticks.
fn cpu(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn clock_ticks() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().map(|v| v as u64).unwrap_or(100)
}

async fn jd_event(c: &mut JdClient, what: &str) -> JdEvent {
    tokio::time::timeout(LIMIT, c.next_event())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
        .unwrap_or_else(|e| panic!("JD connection failed waiting for {what}: {e}"))
}

async fn sv2_event(c: &mut Sv2Client, what: &str) -> Event {
    // Bounded: the pool's own jobs and targets come meanwhile, a few per template.
    for _ in 0..1000 {
        let e = tokio::time::timeout(LIMIT, c.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
            .unwrap_or_else(|e| panic!("SV2 connection failed waiting for {what}: {e}"));
        if !matches!(e, Event::ExtendedJob(_) | Event::PrevHash { .. } | Event::Target { .. }) {
            return e;
        }
    }
    panic!("no {what} in 1000 messages")
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
