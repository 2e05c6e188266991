//! Solo mode (`-B`, ckpool's BTCSOLO) on a real regtest node pair (Bitcoin SV node: legacy
//! addresses): every username is its miner's payout address; each block pays its finder, less
//! the `donation` percent to `btcaddress`, in exact satoshis; a username that is no address of
//! the chain is refused with a reason and gets no work. Segwit and taproot finders on Bitcoin
//! Core are in tests/core.rs.

mod common;

use std::time::Duration;

use bitcoin::consensus::encode::deserialize;
use common::{pool_config, solve, wait, Client, Node, NodePair};
use serde_json::{json, Value};

/// The coinbase of the block `hash`: (value, scriptPubKey hex) per output.
async fn coinbase_outputs(node: &Node, hash: &str) -> Vec<(u64, String)> {
    let raw = node.call("getblock", json!([hash, 0])).await;
    let block: bitcoin::Block = deserialize(&ckpool::hex::decode(raw.as_str().unwrap()).unwrap()).unwrap();
    block.txdata[0].output.iter().map(|o| (o.value.to_sat(), ckpool::hex::encode(o.script_pubkey.as_bytes()))).collect()
}

async fn script_of(node: &Node, address: &str) -> String {
    node.call("validateaddress", json!([address])).await["scriptPubKey"].as_str().unwrap().to_string()
}

/// Mines one block through `c` (authorized as `user`) on the node's current tip; returns its hash.
async fn find_block(node: &Node, pool: &common::Pool, c: &mut Client, en1: &str, tip: &str, en2: &str) -> String {
    let n = c.notify_on_tip(tip).await;
    let h = node.height().await;
    let s = solve(&n, en1, en2, "0.0001", true).expect("a regtest block");
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let above = move || async move { node.height().await > h };
    wait::until_async_or("the solo block", Duration::from_secs(30), above, || format!("log:\n{}", pool.log())).await;
    node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solo_blocks_pay_their_finders_and_bad_addresses_get_no_work() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let pool_address = node.new_address().await;
    let (alice, bob) = (node.new_address().await, node.new_address().await);
    let mut cfg = pool_config(node, &pool_address).await;
    cfg["donation"] = json!(1.5);
    cfg["stats_interval"] = json!(1);
    let pool = common::Pool::start(cfg, &["-B"]);
    assert!(pool.log().contains("solo mode (-B)"), "{}", pool.log());

    let mut a = Client::connect(&pool.addr()).await;
    let (en1a, _) = a.handshake(&format!("{alice}.rig1")).await;
    let mut b = Client::connect(&pool.addr()).await;
    let (en1b, _) = b.handshake(&format!("{bob}_rig2")).await;
    // Same template, own coinbases: prevhash and branches shared, coinb2 (the payout) differs.
    let (na, nb) = (a.notification("mining.notify").await, b.notification("mining.notify").await);
    assert_eq!((&na["params"][1], &na["params"][4]), (&nb["params"][1], &nb["params"][4]));
    assert_ne!(na["params"][3], nb["params"][3], "each address has its own coinbase");
    a.backlog.push(na);
    b.backlog.push(nb);

    // Refused: a name that is no address of this chain gets false, a reason, and no work.
    let mut x = Client::connect(&pool.addr()).await;
    let id = x.request("mining.subscribe", json!(["test/1"])).await;
    x.reply(id).await;
    let id = x.request("mining.authorize", json!(["notanaddress.rig", "x"])).await;
    let msg = x.read().await.unwrap();
    assert_eq!(msg["method"], json!("client.show_message"), "{msg}");
    assert!(msg["params"][0].as_str().unwrap().contains("payout address"), "{msg}");
    let r = x.read().await.unwrap();
    assert_eq!((r["id"].clone(), r["result"].clone()), (json!(id), json!(false)), "{r}");
    let quiet = tokio::time::timeout(Duration::from_secs(1), x.read()).await;
    assert!(quiet.is_err(), "a refused solo worker must get no work: {quiet:?}");
    assert!(pool.log().contains("solo: refusing worker \"notanaddress.rig\""), "{}", pool.log());

    // Each finder is paid: alice on one block, bob on the next; 1.5 % to the pool's address.
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let (spk_pool, spk_alice, spk_bob) =
        (script_of(node, &pool_address).await, script_of(node, &alice).await, script_of(node, &bob).await);
    let mut tip = tip;
    for (c, en1, spk, who) in [(&mut a, &en1a, &spk_alice, &alice), (&mut b, &en1b, &spk_bob, &bob)] {
        let gbt = node.call("getblocktemplate", json!([])).await;
        let value = gbt["coinbasevalue"].as_u64().unwrap();
        let hash = find_block(node, &pool, c, en1, &tip, "0000000000000001").await;
        let outs = coinbase_outputs(node, &hash).await;
        let donated = value * 150 / 10_000;
        assert_eq!(outs, vec![(value - donated, spk.clone()), (donated, spk_pool.clone())], "block {hash} by {who}");
        let log = pool.wait_blocks_log(&hash);
        let line: Value = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .find(|v: &Value| v["hash"] == json!(hash))
            .unwrap();
        assert_eq!(line["username"], json!(who), "blocks.log names the finder's address: {line}");
        tip = hash;
    }
    // Statistics per address, as ckpool writes them (users/<address>).
    let written = || pool.logdir.join("users").join(&alice).exists() && pool.logdir.join("users").join(&bob).exists();
    wait::until("users/<address> for both finders", Duration::from_secs(20), written).await;
}

/// A miner that re-authorizes under another address gets work paying the new one, under new
/// job ids, and a share on it pays the new address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_authorize_switches_the_payout_address() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let pool_address = node.new_address().await;
    let (first, second) = (node.new_address().await, node.new_address().await);
    let pool = common::Pool::start(pool_config(node, &pool_address).await, &["-B"]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake(&first).await;
    let n1 = c.notification("mining.notify").await;
    let id = c.request("mining.authorize", json!([second, "x"])).await;
    let n2 = c.notification("mining.notify").await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    assert_ne!(n1["params"][0], n2["params"][0], "new job id");
    assert_ne!(n1["params"][3], n2["params"][3], "new payout");
    c.backlog.push(n2);
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let hash = find_block(node, &pool, &mut c, &en1, &tip, "0000000000000009").await;
    let outs = coinbase_outputs(node, &hash).await;
    assert_eq!(outs[0].1, script_of(node, &second).await);
    assert_eq!(outs.len(), 1, "no donation configured: one output");
}

/// A proxy below a solo pool: the proxy authorizes upstream with its own address, and a block
/// its miner finds pays the proxy's address (the proxy's miners mine to the proxy's username).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_below_a_solo_pool_mines_to_its_own_address() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let (pool_address, proxy_address) = (node.new_address().await, node.new_address().await);
    let pool = common::Pool::start(pool_config(node, &pool_address).await, &["-B"]);
    let proxy = common::Pool::start_proxy(json!({
        "proxy": [{"url": pool.addr(), "auth": format!("{proxy_address}.proxy"), "pass": "x"}],
        "mindiff": 0.0001, "startdiff": 0.0001,
    }));
    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, _) = c.handshake("anyname.worker").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let hash = find_block(node, &pool, &mut c, &en1, &tip, "0000beef").await;
    let outs = coinbase_outputs(node, &hash).await;
    assert_eq!(outs[0].1, script_of(node, &proxy_address).await, "the block pays the proxy's address");
    pool.wait_blocks_log(&proxy_address);
}
