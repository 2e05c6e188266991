//! Empty-first work on a new tip (issue 28, `empty_first`) on Bitcoin Core regtest
//! (contrib/build-core.sh; no ZMQ in that build, so the pool sees new blocks by polling every
//! 100 ms). The node's mempool holds three spends, so its full template has a merkle branch and
//! a coinbase-only job has none. A block made by the node without its mempool
//! (`generateblock ADDRESS []`) gives a new tip whose full template still has the spends.
//!
//! - SV1: the empty job (no branch, the subsidy only, the empty block's witness commitment, as
//!   Core's own template of an empty mempool has it) comes first on the new previous block, then
//!   the full one, both clean; a share on the empty job after the full one arrived is accepted;
//!   a block solved on it is accepted by Core. With `empty_first: false` the first job on the new
//!   block is the full one.
//! - Over ZMQ (Bitcoin SV's regtest node from tests/common/node.rs, no segwit; the tip poll once a
//!   minute, so only ZMQ brings the block): the empty job first, without a witness commitment,
//!   then the full one, both clean; a block on the empty job is taken by that node.
//! - PPLNS: the empty job's coinbase splits the subsidy (no fees) among the window's miners.
//! - SV2 in solo mode (`-B`): the empty job as a future job with SetNewPrevHash, then the full
//!   one active at once; the empty job pays the channel's own address the subsidy; a share and a
//!   block on it are accepted.

mod common;

use std::time::Duration;

use bitcoin::Transaction;
use ckpool::sv2::client::{self, Event, Sv2Client, REQUIRES_VERSION_ROLLING};
use ckpool::sv2::keys;
use ckpool::work::empty::empty_witness_commitment;
use common::core_node::{regtest_key, spend, CoreNode, Utxo};
use common::{solve, solve_not_block, Client, NodePair, Pool};
use serde_json::{json, Value};

/// Regtest's subsidy below height 150.
const SUBSIDY: u64 = 50 * 100_000_000;
/// The three spends' fees.
const FEES: u64 = 3 * 1_000;

/// A regtest node whose mempool holds three spends, and the address (key `seed`) they pay.
/// `check_commitment`: on the way, Core's own template of an empty mempool is checked to carry
/// the witness commitment the pool gives an empty job (Core then keeps that template for 5 s
/// on the same tip, so a pool started at once would not see the spends before a new block).
async fn node_with_mempool(seed: u8, check_commitment: bool) -> (CoreNode, String) {
    let node = CoreNode::start(&[]).await;
    let key = regtest_key(seed);
    let addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let funding = node.generate_to(1, &addr).await;
    node.generate_to(100, &addr).await;
    if check_commitment {
        let gbt = node.call("getblocktemplate", json!([{"rules": ["segwit"]}])).await;
        assert_eq!(gbt["transactions"], json!([]));
        assert_eq!(gbt["default_witness_commitment"], json!(ckpool::hex::encode(&empty_witness_commitment())));
    }
    let mut u = Utxo::coinbase_of(&node, &funding[0]).await;
    for _ in 0..3 {
        u = spend(&node, &key, &u, &addr, 1_000).await;
    }
    (node, addr)
}

/// A block on the node's tip without the mempool's transactions; its hash (display order).
async fn block_without_mempool(node: &CoreNode, addr: &str) -> String {
    let r = node.call("generateblock", json!([addr, []])).await;
    assert_eq!(node.call("getmempoolinfo", json!([])).await["size"], json!(3), "the spends stay in the mempool");
    r["hash"].as_str().unwrap().to_string()
}

/// The coinbase of an SV1 notify (extranonce2 zeros), decoded.
fn coinbase(notify: &Value, en1: &str) -> Transaction {
    let p = &notify["params"];
    let hex = format!("{}{en1}{}{}", p[2].as_str().unwrap(), "0".repeat(16), p[3].as_str().unwrap());
    bitcoin::consensus::encode::deserialize(&ckpool::hex::decode(&hex).unwrap()).unwrap()
}

fn value_of(tx: &Transaction) -> u64 {
    tx.output.iter().map(|o| o.value.to_sat()).sum()
}

fn prev_of(notify: &Value) -> String {
    ckpool::hex::encode_rev(&ckpool::work::job::prevhash_from_stratum(notify["params"][1].as_str().unwrap()).unwrap())
}

fn core_pool_config(node: &CoreNode, addr: &str, empty_first: bool) -> Value {
    let mut cfg = node.pool_config(addr);
    // Below regtest's network difficulty (4.66e-10): a share need not be a block.
    cfg["mindiff"] = json!(1e-10);
    cfg["startdiff"] = json!(1e-10);
    cfg["empty_first"] = json!(empty_first);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tip_gets_an_empty_job_then_the_full_one_and_the_empty_job_mines() {
    let (node, addr) = node_with_mempool(41, false).await;
    let mut pool = Pool::start(core_pool_config(&node, &addr, true), &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("newtip.sv1").await;
    let tip0 = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let first = c.notify_on_tip(&tip0).await;
    assert_ne!(first["params"][4], json!([]), "the full template has the mempool's spends");

    let tip1 = block_without_mempool(&node, &addr).await;
    let empty = c.notify_on_tip(&tip1).await;
    let log = || format!("pool log:\n{}", pool.log());
    assert_eq!(empty["params"][4], json!([]), "the first job on the new block is coinbase-only; {}", log());
    assert_eq!(empty["params"][8], json!(true), "clean_jobs");
    let cb = coinbase(&empty, &en1);
    assert_eq!(value_of(&cb), SUBSIDY, "the subsidy, no fees");
    assert!(cb.output.iter().any(|o| o.script_pubkey.as_bytes() == empty_witness_commitment()), "{cb:?}");
    let full = c.notification("mining.notify").await;
    assert_eq!(prev_of(&full), tip1);
    assert_ne!(full["params"][4], json!([]), "then the full template; {}", log());
    assert_eq!(full["params"][8], json!(true), "the full template goes out clean too");
    assert_eq!(value_of(&coinbase(&full, &en1)), SUBSIDY + FEES);

    // The empty job still takes shares once the full one is out: same previous block.
    let share = solve_not_block(&empty, &en1, "00000000000000e1", "1e-10").expect("a share");
    let id = c.request("mining.submit", share).await;
    assert_eq!(c.reply(id).await["result"], json!(true), "share on the empty job; {}", log());
    // A block solved on it is a block Core takes: one transaction, the subsidy, on tip1.
    let block = solve(&empty, &en1, "00000000000000e2", "1", true).expect("a block");
    let id = c.request("mining.submit", block).await;
    assert_eq!(c.reply(id).await["result"], json!(true), "block on the empty job; {}", log());
    let best = node.wait_tip_not(&tip1, Duration::from_secs(30), log).await;
    let b = node.block(&best).await;
    assert_eq!(b.header.prev_blockhash.to_string(), tip1);
    assert_eq!(b.txdata.len(), 1, "coinbase only");
    assert_eq!(value_of(&b.txdata[0]), SUBSIDY);
    assert!(b.check_merkle_root() && b.check_witness_commitment());
    assert!(b.txdata[0].input[0].script_sig.as_bytes().windows(21).any(|w| w == b"/ckpool-rs-core-test/"));
    pool.wait_blocks_log(&best);
    // The operator log's line for the empty job (written by the log's own thread).
    pool.wait_log(&format!("empty-first: coinbase-only job on {tip1} (height"), Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_empty_first_off_the_first_job_on_a_new_tip_is_the_full_one() {
    let (node, addr) = node_with_mempool(42, true).await;
    let pool = Pool::start(core_pool_config(&node, &addr, false), &[]);
    let mut c = Client::connect(&pool.addr()).await;
    c.handshake("newtip.off").await;
    let tip1 = block_without_mempool(&node, &addr).await;
    let first = c.notify_on_tip(&tip1).await;
    assert_ne!(first["params"][4], json!([]), "no empty job; pool log:\n{}", pool.log());
    assert_eq!(first["params"][8], json!(true));
    assert!(!pool.log().contains("empty-first"), "{}", pool.log());
}

async fn expect_event(c: &mut Sv2Client, what: &str) -> Event {
    tokio::time::timeout(Duration::from_secs(20), c.next_event())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 20 s"))
        .unwrap_or_else(|e| panic!("connection failed waiting for {what}: {e}"))
}

/// The next job on channel events, skipping anything else (a target change).
async fn next_job(c: &mut Sv2Client) -> client::ExtendedJob {
    for _ in 0..10 {
        if let Event::ExtendedJob(j) = expect_event(c, "a job").await {
            return j;
        }
    }
    panic!("no job in 10 events")
}

/// A nonce whose header hash meets `share` and, as `block` says, the network target or not.
fn nonce_for(hdr: impl Fn(u32) -> [u8; 80], share: &ckpool::difficulty::Target, nbits: u32, block: bool) -> u32 {
    let network = ckpool::difficulty::Target::from_compact(nbits).unwrap();
    (0..50_000_000u32)
        .find(|&n| {
            let h = ckpool::work::merkle::sha256d_header(&hdr(n));
            share.is_met_by(&h) && network.is_met_by(&h) == block
        })
        .expect("a nonce")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv2_solo_gets_the_empty_job_as_a_future_job_and_mines_on_it() {
    let (node, pool_addr) = node_with_mempool(43, false).await;
    let finder = node.derive_address(&format!("tr({})", regtest_key(44).to_wif())).await;
    let mut cfg = core_pool_config(&node, &pool_addr, true);
    cfg["sv2url"] = json!("127.0.0.1:0");
    let keydir = tempfile::tempdir().unwrap();
    cfg["sv2_authority_key"] = json!(keydir.path().join("k").display().to_string());
    let pool = Pool::start(cfg, &["-B"]);
    let log = pool.log();
    let line = log.lines().find(|l| l.contains("listening for Stratum V2 miners on")).unwrap();
    let rest = line.split("listening for Stratum V2 miners on ").nth(1).unwrap();
    let (addr, url) = rest.split_once(": ").unwrap();
    let key = keys::parse_public(url.trim().rsplit('/').next().unwrap()).unwrap();
    let log = || format!("pool log:\n{}", pool.log());

    let mut c = Sv2Client::connect(addr.parse().unwrap(), &key, REQUIRES_VERSION_ROLLING).await.unwrap();
    // A nominal hashrate below 1 H/s: the channel starts at startdiff (below the network's).
    c.open_extended(&format!("{finder}.rig"), 0.5, 8).await.unwrap();
    let Event::ExtendedOpened { channel, target, extranonce_prefix, .. } = expect_event(&mut c, "channel").await else {
        panic!("no channel")
    };
    let share_target = ckpool::sv2::jobs::target_from_le(&target);
    let first = next_job(&mut c).await;
    assert!(!first.merkle_path.is_empty(), "the full template has the mempool's spends");
    assert!(matches!(expect_event(&mut c, "prevhash").await, Event::PrevHash { .. }));

    let tip1 = block_without_mempool(&node, &pool_addr).await;
    let empty = next_job(&mut c).await;
    assert_eq!(empty.min_ntime, None, "a future job; {}", log());
    assert!(empty.merkle_path.is_empty(), "coinbase-only; {}", log());
    let Event::PrevHash { job_id, prev_hash, min_ntime, nbits, .. } = expect_event(&mut c, "prevhash").await else {
        panic!("no SetNewPrevHash after the empty job; {}", log())
    };
    assert_eq!(job_id, empty.job_id, "SetNewPrevHash activates the empty job");
    assert_eq!(ckpool::hex::encode_rev(&prev_hash), tip1);
    let full = next_job(&mut c).await;
    assert!(full.min_ntime.is_some(), "the full template is active at once");
    assert!(!full.merkle_path.is_empty());

    // The empty job pays the channel's address the subsidy (solo).
    let mut extranonce = extranonce_prefix.clone();
    extranonce.extend_from_slice(&[0u8; 8]);
    let tx = [empty.coinbase_prefix.clone(), extranonce.clone(), empty.coinbase_suffix.clone()].concat();
    let cb: Transaction = bitcoin::consensus::encode::deserialize(&tx).unwrap();
    let finder_spk = node.script_hex(&finder).await;
    assert_eq!(ckpool::hex::encode(cb.output[0].script_pubkey.as_bytes()), finder_spk);
    assert_eq!(value_of(&cb), SUBSIDY);

    // A share, then a block, on the empty job after the full one arrived.
    let en2 = [0u8; 8];
    let root = empty.merkle_root(&extranonce);
    let hdr = |n| client::header(empty.version, &prev_hash, &root, min_ntime, nbits, n);
    for (seq, block) in [(1, false), (2, true)] {
        let nonce = nonce_for(hdr, &share_target, nbits, block);
        c.push_extended(channel, seq, empty.job_id, nonce, min_ntime, empty.version, &en2).unwrap();
        c.flush().await.unwrap();
        let answer = loop {
            if let e @ (Event::Accepted { .. } | Event::Rejected { .. }) = expect_event(&mut c, "share answer").await {
                break e;
            }
        };
        assert!(matches!(answer, Event::Accepted { last_seq, .. } if last_seq == seq), "{answer:?}; {}", log());
    }
    let best = node.wait_tip_not(&tip1, Duration::from_secs(30), log).await;
    let b = node.block(&best).await;
    assert_eq!((b.header.prev_blockhash.to_string(), b.txdata.len()), (tip1, 1));
    assert_eq!(ckpool::hex::encode(b.txdata[0].output[0].script_pubkey.as_bytes()), finder_spk);
    assert_eq!(value_of(&b.txdata[0]), SUBSIDY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_zmq_a_node_without_segwit_gets_the_empty_job_first() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = common::pool_config(node, &address).await;
    cfg["blockpoll"] = json!(60_000);
    cfg["update_interval"] = json!(3600);
    let mut pool = Pool::start(cfg, &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("newtip.zmq").await;
    c.notification("mining.notify").await;
    let tip1 = node.call("generate", json!([1])).await[0].as_str().unwrap().to_string();
    let empty = c.notify_on_tip(&tip1).await;
    let full = c.notification("mining.notify").await;
    let log = || format!("pool log:\n{}", pool.log());
    assert_eq!(prev_of(&full), tip1, "{}", log());
    assert_ne!(empty["params"][0], full["params"][0], "two jobs on the new block; {}", log());
    assert_eq!((&empty["params"][8], &full["params"][8]), (&json!(true), &json!(true)), "both clean");
    let (cb_empty, cb_full) = (coinbase(&empty, &en1), coinbase(&full, &en1));
    let commits =
        |tx: &Transaction| tx.output.iter().any(|o| o.script_pubkey.as_bytes().starts_with(&[0x6a, 0x24, 0xaa]));
    assert!(!commits(&cb_empty) && !commits(&cb_full), "no witness commitment on a node without segwit");
    assert_eq!(value_of(&cb_empty), value_of(&cb_full), "an empty mempool: the subsidy either way");
    let h0 = node.height().await;
    let block = solve(&empty, &en1, "00000000000000e3", "1", true).expect("a block");
    let id = c.request("mining.submit", block).await;
    assert_eq!(c.reply(id).await["result"], json!(true), "{}", log());
    node.wait_height_above(h0, "the block solved on the empty job").await;
    pool.wait_log(&format!("ZMQ: new block {tip1}"), Duration::from_secs(10));
    pool.wait_log(&format!("empty-first: coinbase-only job on {tip1} (height"), Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pplns_pays_the_window_from_the_subsidy_on_the_empty_job() {
    let (node, pool_addr) = node_with_mempool(45, false).await;
    let miner = node.derive_address(&format!("wpkh({})", regtest_key(46).to_wif())).await;
    let miner_spk = ckpool::hex::decode(&node.script_hex(&miner).await).unwrap();
    let mut cfg = core_pool_config(&node, &pool_addr, true);
    cfg["payout_scheme"] = json!("pplns");
    cfg["pplns_window"] = json!(1);
    cfg["pool_fee"] = json!(1);
    let pool = Pool::start(cfg, &[]);
    let log = || format!("pool log:\n{}", pool.log());
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake(&format!("{miner}.rig")).await;
    let mut work = c.notification("mining.notify").await;
    for i in 0..3 {
        let share = solve_not_block(&work, &en1, &format!("{:016x}", 0xa0 + i), "1e-10").expect("a share");
        let id = c.request("mining.submit", share).await;
        assert_eq!(c.reply(id).await["result"], json!(true), "{}", log());
    }
    // The window holds the miner's shares once a coinbase pays it (an update on the same block).
    let pays_miner = |tx: &Transaction| tx.output.iter().any(|o| o.script_pubkey.as_bytes() == miner_spk);
    for _ in 0..60 {
        if pays_miner(&coinbase(&work, &en1)) {
            break;
        }
        work = c.notification("mining.notify").await;
    }
    assert!(pays_miner(&coinbase(&work, &en1)), "no coinbase paid the miner; {}", log());

    let tip1 = block_without_mempool(&node, &pool_addr).await;
    let empty = c.notify_on_tip(&tip1).await;
    assert_eq!(empty["params"][4], json!([]), "{}", log());
    let cb = coinbase(&empty, &en1);
    assert!(pays_miner(&cb), "the empty job pays the window; {cb:?}");
    assert_eq!(value_of(&cb), SUBSIDY, "the subsidy split, no fees");
    let full = c.notification("mining.notify").await;
    assert_eq!((prev_of(&full), value_of(&coinbase(&full, &en1))), (tip1, SUBSIDY + FEES));
}
