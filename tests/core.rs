//! The pool against Bitcoin Core (regtest, built by contrib/build-core.sh from the source the
//! libbitcoinkernel-sys crate vendors): segwit blocks with signed P2WPKH spends from the mempool,
//! every payout address type the node knows, rpcauth made by `ckpool rpcauth`, cookie auth,
//! `ckpool check`/`payout`/`difficulty` against Core, and Core's error shapes.
//!
//! Core refuses `getblocktemplate` without the segwit rule ("getblocktemplate must be called with
//! the segwit rule set"), so every test here fails if the pool stopped asking for it: it would
//! never get work. This Core build has no ZMQ: the pool polls (`blockpoll` 100 ms).

mod common;

use std::process::Command;
use std::time::Duration;

use bitcoin::key::Secp256k1;
use bitcoin::{CompressedPublicKey, ScriptBuf};
use common::core_node::{regtest_key, spend, spend_with_descriptor, CoreAuth, CoreNode, Utxo};
use common::{solve, wait, Client, Pool};
use serde_json::{json, Value};

/// Mines one block through the pool's stratum port: subscribe, authorize, take the work on the
/// node's current tip, solve a block-meeting share, submit it, wait until the node's tip is it.
/// Returns the block's hash (display order).
async fn mine_block_through_pool(pool: &Pool, node: &CoreNode, worker: &str) -> String {
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake(worker).await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let notify = c.notify_on_tip(&tip).await;
    let submit = solve(&notify, &en1, "00000000000000a1", "0.0001", true).expect("a regtest block-meeting share");
    let id = c.request("mining.submit", submit).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "share refused: {r}\npool log:\n{}", pool.log());
    let best = node.wait_tip_not(&tip, Duration::from_secs(30), || format!("pool log:\n{}", pool.log())).await;
    let block = node.block(&best).await;
    let sig = block.txdata[0].input[0].script_sig.as_bytes();
    assert!(
        sig.windows(21).any(|w| w == b"/ckpool-rs-core-test/"),
        "the new tip {best} is not the pool's block; pool log:\n{}",
        pool.log()
    );
    best
}

/// Subsidy + fees of block `hash`, from the node's own accounting.
async fn reward_of(node: &CoreNode, hash: &str) -> u64 {
    let s = node.call("getblockstats", json!([hash, ["subsidy", "totalfee"]])).await;
    s["subsidy"].as_u64().unwrap() + s["totalfee"].as_u64().unwrap()
}

/// A chain of `n` signed P2WPKH→P2WPKH spends starting at `from`, `fee` sat each; returns the txids.
async fn spend_chain(
    node: &CoreNode,
    key: &bitcoin::PrivateKey,
    addr: &str,
    from: Utxo,
    n: usize,
    fee: u64,
) -> Vec<String> {
    let mut txids = Vec::new();
    let mut u = from;
    for _ in 0..n {
        u = spend(node, key, &u, addr, fee).await;
        txids.push(u.txid.clone());
    }
    txids
}

/// Segwit end to end: chains of signed P2WPKH spends in Core's mempool, a block found through
/// stratum carries all of them, Core accepts it, its coinbase has the witness commitment and the
/// reserved value, and pays the template's whole reward to the P2WPKH `btcaddress`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segwit_block_with_mempool_spends_is_accepted_by_core() {
    let node = CoreNode::start(&[]).await;
    let key = regtest_key(7);
    let addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    assert!(addr.starts_with("bcrt1q"), "{addr}");
    // 3 coinbases to our key, matured by 100 more blocks.
    let funding = node.generate_to(3, &addr).await;
    node.generate_to(100, &addr).await;
    let mut txids = Vec::new();
    for (i, h) in funding.iter().enumerate() {
        let u = Utxo::coinbase_of(&node, h).await;
        txids.extend(spend_chain(&node, &key, &addr, u, 8, 1_000 + i as u64 * 111).await);
    }
    let mempool = node.call("getrawmempool", json!([])).await;
    assert_eq!(mempool.as_array().unwrap().len(), 24, "{mempool}");
    let fees: u64 = 8 * (1_000 + 1_111 + 1_222);

    let pool = Pool::start(node.pool_config(&addr), &[]);
    let hash = mine_block_through_pool(&pool, &node, "segwit.worker").await;

    let block = node.block(&hash).await;
    // All 24 spends, in an order Core accepted (parents before children).
    let in_block: Vec<String> = block.txdata[1..].iter().map(|t| t.compute_txid().to_string()).collect();
    let mut sorted_in = in_block.clone();
    sorted_in.sort();
    let mut sorted_sent = txids.clone();
    sorted_sent.sort();
    assert_eq!(sorted_in, sorted_sent, "the block does not carry the mempool's spends");
    assert!(block.txdata[1..].iter().all(|t| !t.input[0].witness.is_empty()), "spends lost their witnesses");
    assert_eq!(node.call("getrawmempool", json!([])).await, json!([]));
    // Witness commitment: an OP_RETURN aa21a9ed output, the 32-byte zero reserved value as the
    // coinbase's witness, and rust-bitcoin agrees with the commitment (Core accepted it too).
    let cb = &block.txdata[0];
    let commitment =
        cb.output.iter().find(|o| o.script_pubkey.as_bytes().starts_with(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]));
    assert!(commitment.is_some(), "coinbase has no witness commitment: {cb:?}");
    assert_eq!(cb.input[0].witness.to_vec(), vec![vec![0u8; 32]], "coinbase witness reserved value");
    assert!(block.check_witness_commitment() && block.check_merkle_root());
    // The whole reward (subsidy + the 24 fees) to the P2WPKH script of our key.
    let secp = Secp256k1::new();
    let pk = CompressedPublicKey::from_private_key(&secp, &key).unwrap();
    assert_eq!(cb.output[0].script_pubkey, ScriptBuf::new_p2wpkh(&pk.wpubkey_hash()));
    assert_eq!(cb.output[0].value.to_sat(), 50 * 100_000_000 + fees);
    assert_eq!(cb.output[0].value.to_sat(), reward_of(&node, &hash).await);
    pool.wait_blocks_log(&hash);
}

/// `btcaddress` of each type Core knows (P2PKH, P2SH-P2WPKH, P2WPKH, P2TR): a block found through
/// the pool pays exactly the script of that key, computed here from the key by rust-bitcoin and
/// given by Core for the address. The taproot output is then spent with the key (key path),
/// which only works if the pool paid the tweaked output key of that address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_type_core_knows_is_paid() {
    let node = CoreNode::start(&[]).await;
    let secp = Secp256k1::new();
    let key = regtest_key(9);
    let pk = CompressedPublicKey::from_private_key(&secp, &key).unwrap();
    let (xonly, _) = pk.0.x_only_public_key();
    let wif = key.to_wif();
    let cases = [
        ("pkh", format!("pkh({wif})"), ScriptBuf::new_p2pkh(&key.public_key(&secp).pubkey_hash())),
        (
            "sh-wpkh",
            format!("sh(wpkh({wif}))"),
            ScriptBuf::new_p2sh(&ScriptBuf::new_p2wpkh(&pk.wpubkey_hash()).script_hash()),
        ),
        ("wpkh", format!("wpkh({wif})"), ScriptBuf::new_p2wpkh(&pk.wpubkey_hash())),
        ("tr", format!("tr({wif})"), ScriptBuf::new_p2tr(&secp, xonly, None)),
    ];
    // Leave the genesis-only state with a block to an unrelated key.
    let other = node.derive_address(&format!("wpkh({})", regtest_key(1).to_wif())).await;
    node.generate_to(1, &other).await;
    let mut tr_block = None;
    for (name, desc, script) in &cases {
        let addr = node.derive_address(desc).await;
        assert_eq!(node.script_hex(&addr).await, ckpool::hex::encode(script.as_bytes()), "{name}: {addr}");
        let pool = Pool::start(node.pool_config(&addr), &[]);
        let hash = mine_block_through_pool(&pool, &node, &format!("{name}.rig")).await;
        let block = node.block(&hash).await;
        let cb = &block.txdata[0];
        assert_eq!(&cb.output[0].script_pubkey, script, "{name}: coinbase pays the wrong script ({addr})");
        assert_eq!(cb.output[0].value.to_sat(), reward_of(&node, &hash).await, "{name}");
        if *name == "tr" {
            tr_block = Some((hash, addr));
        }
        drop(pool);
    }
    // Mature the taproot coinbase and spend it with the key alone.
    let (hash, tr_addr) = tr_block.unwrap();
    node.generate_to(100, &other).await;
    let u = Utxo::coinbase_of(&node, &hash).await;
    assert_eq!(u.script_hex, ckpool::hex::encode(cases[3].2.as_bytes()));
    let txid = spend_with_descriptor(&node, &cases[3].1, &u, &tr_addr, 2_000).await;
    let mempool = node.call("getrawmempool", json!([])).await;
    assert!(mempool.as_array().unwrap().iter().any(|t| t == txid.as_str()), "{mempool}");
}

/// Solo mode (`-B`) on Core: a P2WPKH finder and a taproot finder each mine a block paying their
/// own address, 2 % of it to the pool's address, exact to the satoshi of Core's own accounting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_segwit_and_taproot_finders_are_paid_on_core() {
    let node = CoreNode::start(&[]).await;
    let secp = Secp256k1::new();
    let wpkh = |n: u8| {
        let k = regtest_key(n);
        (
            format!("wpkh({})", k.to_wif()),
            ScriptBuf::new_p2wpkh(&CompressedPublicKey::from_private_key(&secp, &k).unwrap().wpubkey_hash()),
        )
    };
    let tr_key = regtest_key(22);
    let (xonly, _) = CompressedPublicKey::from_private_key(&secp, &tr_key).unwrap().0.x_only_public_key();
    let (pool_desc, pool_script) = wpkh(20);
    let pool_addr = node.derive_address(&pool_desc).await;
    node.generate_to(1, &pool_addr).await;
    let mut cfg = node.pool_config(&pool_addr);
    cfg["donation"] = json!(2);
    let pool = Pool::start(cfg, &["-B"]);
    let finders = [wpkh(21), (format!("tr({})", tr_key.to_wif()), ScriptBuf::new_p2tr(&secp, xonly, None))];
    for (desc, script) in finders {
        let addr = node.derive_address(&desc).await;
        let hash = mine_block_through_pool(&pool, &node, &format!("{addr}.rig")).await;
        let cb = &node.block(&hash).await.txdata[0];
        let reward = reward_of(&node, &hash).await;
        let donated = reward * 200 / 10_000;
        assert_eq!(
            (&cb.output[0].script_pubkey, cb.output[0].value.to_sat()),
            (&script, reward - donated),
            "{desc}: the finder {addr}"
        );
        assert_eq!(
            (&cb.output[1].script_pubkey, cb.output[1].value.to_sat()),
            (&pool_script, donated),
            "{desc}: donation"
        );
        assert!(
            cb.output[2].script_pubkey.as_bytes().starts_with(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]),
            "witness commitment"
        );
    }
}

fn ckpool(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ckpool")).args(args).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn ckpool_json(args: &[&str]) -> Value {
    let (ok, out) = ckpool(args);
    assert!(ok, "ckpool {args:?} failed: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn write_config(dir: &std::path::Path, name: &str, cfg: &Value) -> String {
    let path = dir.join(name);
    // `check` binds the listening ports: a port the system picks, never the default 3333.
    let mut cfg = cfg.clone();
    if cfg.get("serverurl").is_none() {
        cfg["serverurl"] = serde_json::json!(["127.0.0.1:0"]);
    }
    let cfg = &cfg;
    std::fs::write(
        &path,
        format!("{}\nComments from here on are ignored.\n", serde_json::to_string_pretty(cfg).unwrap()),
    )
    .unwrap();
    path.display().to_string()
}

/// `ckpool check` against Core with cookie auth and with rpcauth; `ckpool payout` and
/// `ckpool difficulty` in node-aware mode against Core, with fees from segwit spends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_payout_and_difficulty_against_core() {
    let dir = tempfile::tempdir().unwrap();
    // Cookie auth: no rpcauth line on the node, the pool reads its .cookie.
    let cookie_node = CoreNode::start_with(CoreAuth::Cookie, &[]).await;
    let addr = cookie_node.derive_address(&format!("wpkh({})", regtest_key(3).to_wif())).await;
    let conf = write_config(dir.path(), "cookie.conf", &cookie_node.pool_config(&addr));
    let (ok, out) = ckpool(&["check", "--config", &conf]);
    assert!(ok, "{out}");
    assert!(out.contains("chain regtest") && out.contains(&format!("btcaddress {addr} is valid on regtest")), "{out}");
    assert!(out.contains("all checks passed"), "{out}");
    // The pool itself on cookie auth: ready means it fetched a segwit template.
    let pool = Pool::start(cookie_node.pool_config(&addr), &[]);
    assert!(pool.log().contains("(regtest)"), "{}", pool.log());
    drop(pool);
    // `ckpool payout` on cookie auth, through the config's cookie entry and through --rpc-url
    // with --rpc-cookie: epoch 1 (heights 10..=19) of empty blocks, F = 0, D from block 20.
    cookie_node.generate_to(20, &addr).await;
    assert_eq!(cookie_node.height().await, 20);
    let cookie_cfg = cookie_node.pool_config(&addr);
    let (url, cookie) =
        (cookie_cfg["btcd"][0]["url"].as_str().unwrap(), cookie_cfg["btcd"][0]["cookie"].as_str().unwrap());
    let empty_epoch = 6000 * (10 * 5_000_000_000u128) * 8_388_607 / (10 * 65535 * 256);
    let common = ["--period", "10", "--hashrate", "1 H/s", "--halving-interval", "150", "--epoch", "1", "--json"];
    for node_args in [vec!["--config", conf.as_str()], vec!["--rpc-url", url, "--rpc-cookie", cookie]] {
        let mut args = vec!["payout"];
        args.extend(node_args.iter().chain(common.iter()));
        let out = ckpool_json(&args);
        assert_eq!(out["fees_total_sat"], "0", "{node_args:?}: {out}");
        assert_eq!(out["subsidy_sat"], 5_000_000_000u64, "{node_args:?}");
        assert_eq!(out["payout_sat"], empty_epoch.to_string(), "{node_args:?}: {out}");
    }
    let d = ckpool_json(&["difficulty", "--rpc-url", url, "--rpc-cookie", cookie, "--period", "10", "--json"]);
    assert_eq!(d["height"], 20, "{d}");
    drop(cookie_node);

    // rpcauth: heights 0..=119; our key's coinbases at 1..=10; spends mined in blocks 111 and 115.
    let node = CoreNode::start(&[]).await;
    let key = regtest_key(4);
    let pool_addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let other = node.derive_address(&format!("wpkh({})", regtest_key(5).to_wif())).await;
    let funding = node.generate_to(10, &pool_addr).await;
    node.generate_to(100, &other).await; // 11..=110
    let a = Utxo::coinbase_of(&node, &funding[0]).await;
    let b = Utxo::coinbase_of(&node, &funding[1]).await;
    spend_chain(&node, &key, &pool_addr, a, 2, 1_000).await;
    spend(&node, &key, &b, &pool_addr, 2_345).await;
    node.generate_to(1, &pool_addr).await; // 111: fees 4 345
    node.generate_to(3, &other).await; // 112..=114
    let c = Utxo::coinbase_of(&node, &funding[2]).await;
    spend(&node, &key, &c, &other, 10_000).await;
    node.generate_to(1, &other).await; // 115: fees 10 000
    node.generate_to(5, &other).await; // 116..=120
    assert_eq!(node.height().await, 120);
    let mut cfg = node.pool_config(&pool_addr);
    cfg["btcsig"] = json!("/not-in-any-coinbase/");
    let conf = write_config(dir.path(), "rpcauth.conf", &cfg);
    let (ok, out) = ckpool(&["check", "--config", &conf]);
    assert!(ok && out.contains("all checks passed"), "{out}");

    // payout = H·T·B·(S + F) / (D·2^32) with H = 1 H/s, T = 600, B = 10, regtest D =
    // 65535/(8388607·2^24), S = 50 coins, F = (4 345 + 10 000)/10 (see tests/payout.rs):
    let fees = 14_345u128;
    let expected = 6000 * (10 * 5_000_000_000u128 + fees) * 8_388_607 / (10 * 65535 * 256);
    // Epoch 11 (heights 110..=119) at 1 H/s, regtest's 150-block halving interval.
    let payout = |extra: &[&str]| {
        let mut args =
            vec!["payout", "--config", &conf, "--period", "10", "--hashrate", "1 H/s", "--halving-interval", "150"];
        args.extend(["--epoch", "11", "--json"]);
        args.extend(extra);
        ckpool_json(&args)
    };
    for source in ["stats", "decode"] {
        let out = payout(&["--fee-source", source]);
        assert_eq!(out["fees_total_sat"], fees.to_string(), "{source}: {out}");
        assert_eq!(out["subsidy_sat"], 5_000_000_000u64, "{source}");
        assert_eq!(out["payout_sat"], expected.to_string(), "{source}: {out}");
    }
    // Own blocks only (coinbase pays btcaddress): 111 is ours, 115 is not.
    let own = payout(&["--own-blocks"]);
    assert_eq!(own["fees_blocks"], 1, "{own}");
    assert_eq!(own["fees_total_sat"], "4345", "{own}");
    let d = ckpool_json(&["difficulty", "--config", &conf, "--period", "10", "--height", "119", "--json"]);
    assert_eq!(d["height"], 119);
    assert_eq!(d["intervals_measured"], 9, "{d}");
    let t = |h: u64| {
        let node = &node;
        async move {
            let hash = node.call("getblockhash", json!([h])).await;
            node.call("getblockheader", json!([hash])).await["time"].as_i64().unwrap()
        }
    };
    assert_eq!(d["elapsed"], t(119).await - t(110).await);
}

/// Core's error shapes: a wrong password stops the start with a clear line (never the password);
/// with miners connected, Core stopped and started again (its RPC refuses, then warms up): the
/// miners keep their connection, a block found while Core is down reaches Core when it is back,
/// they get work on the next block, and a block they find on it is accepted.
/// Fault injected: the node process is stopped by RPC `stop` and started again on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_errors_are_clear_and_miners_survive_a_node_restart() {
    let mut node = CoreNode::start(&[]).await;
    let addr = node.derive_address(&format!("wpkh({})", regtest_key(6).to_wif())).await;
    node.generate_to(1, &addr).await;

    // Wrong password: Core answers HTTP 401 with an empty body.
    let mut cfg = node.pool_config(&addr);
    cfg["btcd"][0]["pass"] = json!("not-the-password-xyz");
    let mut bad = Pool::prepare(cfg);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckpool"));
    cmd.args(bad.args(&[]));
    bad.spawn_command(cmd);
    let log_path = bad.log_path();
    let status = wait::blocking_or(
        "the pool with a wrong password to stop",
        Duration::from_secs(30),
        || bad.try_wait(),
        || std::fs::read_to_string(&log_path).unwrap_or_default(),
    );
    assert!(!status.success());
    let log = bad.log();
    assert!(log.contains("authentication refused") && log.contains("HTTP 401"), "{log}");
    assert!(!log.contains("not-the-password-xyz"), "the password leaked into the log: {log}");

    let mut pool = Pool::start(node.pool_config(&addr), &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("restart.rig").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let work = c.notify_on_tip(&tip).await;
    let node_height_before_stop = node.height().await;
    node.stop().await;
    pool.wait_log("getblocktemplate failed", Duration::from_secs(20));
    // The miner is still served while the node is away: a share on an unknown job is answered.
    let id = c
        .request("mining.submit", json!(["restart.rig", "ffffffff", "0000000000000000", "00000000", "00000000"]))
        .await;
    let r = c.reply(id).await;
    assert_eq!(r["error"][0], json!(21), "unknown job answered as job-not-found: {r}");
    // A block found while Core is down: the miner gets its answer at once; the block is kept and
    // reaches Core's chain once Core is back.
    let submit = solve(&work, &en1, "00000000000000a9", "0.0001", true).unwrap();
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let tip_height = node_height_before_stop;
    node.restart().await;
    pool.wait_log("bitcoind answering again", Duration::from_secs(30));
    // By height, not "tip changed": a Core just started has been seen to answer with the
    // genesis block as its tip for a moment (once, under load) before its chain was loaded.
    let node_ref = &node;
    let above = move || async move { node_ref.height().await > tip_height };
    wait::until_async_or("the block found while Core was down to reach it", Duration::from_secs(60), above, || {
        format!("log:\n{}", pool.log())
    })
    .await;
    let ours = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let b = node.block(&ours).await;
    assert_eq!(b.header.prev_blockhash.to_string(), tip);
    assert!(b.txdata[0].input[0].script_sig.as_bytes().windows(21).any(|w| w == b"/ckpool-rs-core-test/"));
    // A block by RPC reaches the connected miner as work on the new tip.
    let h = node.generate_to(1, &addr).await.remove(0);
    let n = c.notify_on_tip(&h).await;
    assert_eq!(n["params"][8], json!(true));
    // And a block the miner finds on it is accepted.
    let submit = solve(&n, &en1, "00000000000000b2", "0.0001", true).unwrap();
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let found = node.wait_tip_not(&h, Duration::from_secs(30), || format!("log:\n{}", pool.log())).await;
    // Both blocks the pool found are recorded accepted in blocks.log.
    for hash in [&ours, &found] {
        let accepted = || {
            let text = std::fs::read_to_string(pool.logdir.join("blocks.log")).unwrap_or_default();
            text.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|l| l["hash"] == json!(hash) && l["outcome"] == json!("accepted"))
        };
        wait::until_or(
            &format!("an accepted line for {hash} in blocks.log"),
            Duration::from_secs(30),
            accepted,
            || std::fs::read_to_string(pool.logdir.join("blocks.log")).unwrap_or_default(),
        )
        .await;
    }
    pool.stop();
}

/// Core answers JSON-RPC 1.0 requests in the legacy shape (`result` and `error` both present,
/// HTTP 500/404 on error) and 2.0 requests in the strict one (only one of them, HTTP 200 on
/// error); Core's plain-text HTTP errors have no JSON at all. The pool's reply parser takes every
/// shape from the live node: results as results, errors with Core's code and message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_reply_shapes_json_rpc_1_and_2() {
    use ckpool::bitcoind::rpc::parse_reply;
    use ckpool::bitcoind::RpcError;
    let node = CoreNode::start(&[]).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/", node.rpc_url());
    let raw = |version: &'static str, method: &'static str, params: Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let body = json!({"jsonrpc": version, "id": "t", "method": method, "params": params});
            let r = http
                .post(&url)
                .basic_auth(common::core_node::CORE_USER, Some(common::core_node::CORE_PASS))
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };
    for version in ["1.0", "2.0"] {
        let (status, text) = raw(version, "getblockcount", json!([])).await;
        assert_eq!(parse_reply("core", "getblockcount", status, &text).unwrap(), json!(0), "{version}: {text}");
        let (status, text) = raw(version, "getblockcount", json!([])).await;
        if version == "2.0" {
            assert!(!text.contains("\"error\""), "a 2.0 success carries no error member: {text}");
        }
        assert!(parse_reply("core", "getblockcount", status, &text).is_ok());
        // An unknown method: -32601, whatever the HTTP status.
        let (status, text) = raw(version, "no_such_method", json!([])).await;
        match parse_reply("core", "no_such_method", status, &text) {
            Err(RpcError::Node { code: -32601, message, .. }) => assert!(message.contains("not found"), "{message}"),
            other => panic!("{version}: HTTP {status} {text} parsed as {other:?}"),
        }
        // Bad parameters: Core's -8 / -1 family, message kept for the log.
        let (status, text) = raw(version, "getblockhash", json!([999_999])).await;
        match parse_reply("core", "getblockhash", status, &text) {
            Err(RpcError::Node { code: -8, message, .. }) => assert!(message.contains("out of range"), "{message}"),
            other => panic!("{version}: HTTP {status} {text} parsed as {other:?}"),
        }
        // The template without the segwit rule is refused: what the pool must never send.
        let (status, text) = raw(version, "getblocktemplate", json!([{}])).await;
        match parse_reply("core", "getblocktemplate", status, &text) {
            Err(RpcError::Node { code: -8, message, .. }) => assert!(message.contains("segwit"), "{message}"),
            other => panic!("{version}: HTTP {status} {text} parsed as {other:?}"),
        }
    }
    // Not JSON-RPC at all: a GET is refused with a plain HTTP status.
    let r = http
        .get(&url)
        .basic_auth(common::core_node::CORE_USER, Some(common::core_node::CORE_PASS))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert!(matches!(parse_reply("core", "GET", status, &text), Err(RpcError::Http { .. })), "HTTP {status} {text:?}");
}
