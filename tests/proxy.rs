//! Proxy mode against this project's pool on a real regtest bitcoind pair: blocks through the
//! proxy, failover and return, stacking, many miners on one upstream, bad upstream input.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{pool_config, solve, wait, Client, NodePair, Pool};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn proxy_config(upstreams: &[&Pool], diff: f64) -> Value {
    json!({
        "proxy": upstreams.iter().enumerate().map(|(i, p)| json!({"url": p.addr(), "auth": format!("proxyuser.p{i}"), "pass": "x"})).collect::<Vec<_>>(),
        "btcaddress": "",
        "mindiff": diff,
        "startdiff": diff,
        "maxdiff": 0,
    })
}

fn forwarded_from(pool: &Pool, worker: &str) -> Vec<Value> {
    pool.share_lines().into_iter().filter(|l| l["workername"] == json!(worker)).collect()
}

/// Issue test 1: pool ← proxy ← miner: the miner's block-meeting share is a block the node
/// accepts, and the pool saw it as a share from the proxy with the miner's full extranonce2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_through_the_proxy() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let pool = Pool::start(pool_config(node, &address).await, &[]);
    let proxy = Pool::start_proxy(proxy_config(&[&pool], 0.0001));

    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, n2) = c.handshake("miner.a").await;
    assert_eq!((en1.len(), n2), (16, 4), "pool gives 4+8; proxy gives its miners 8+4");
    let notify = c.notification("mining.notify").await;
    let h = node.height().await;
    let s = solve(&notify, &en1, "0000abcd", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    node.wait_height_above(h, "block through proxy").await;
    pool.wait_blocks_log("proxyuser.p0");
    // Upstream accounting: the pool logged the share under the proxy's user with the full nonce2.
    let l = wait::until("the forwarded share in the pool's share log", Duration::from_secs(10), || {
        forwarded_from(&pool, "proxyuser.p0").into_iter().find(|l| l["result"] == json!(true))
    })
    .await;
    assert_eq!(l["nonce2"], json!(format!("{}0000abcd", &en1[8..])), "{l}");
    // The proxy's own view (issue 27): the height read from the upstream's coinbase names the
    // share log folder and the block line; the block counts as found in pool.status.
    let height = h + 1;
    let log = proxy.log();
    assert!(log.contains(&format!("at height {height} from miner.a")), "{log}");
    let mut proxy = proxy;
    proxy.stop().expect("proxy exits on SIGTERM");
    let folder = proxy.logdir.join(format!("{height:08x}"));
    assert!(folder.is_dir(), "no share log folder {}", folder.display());
    assert!(!proxy.logdir.join("00000000").exists(), "shares filed under height 0");
    let status = std::fs::read_to_string(proxy.logdir.join("pool/pool.status")).unwrap();
    let third: Value = serde_json::from_str(status.lines().nth(2).unwrap()).unwrap();
    assert_eq!(third["blocks_found"], json!(1), "{status}");
}

/// Issue test 2: two upstream pools; the first stops; miners keep getting work and accepted
/// shares through the second; the first returns and the proxy goes back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_return() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut first = Pool::start(pool_config(node, &address).await, &[]);
    let second = Pool::start(pool_config(node, &address).await, &[]);
    let proxy = Pool::start_proxy(proxy_config(&[&first, &second], 0.0001));

    let mut c = Client::connect(&proxy.addr()).await;
    let id = c.request("mining.extranonce.subscribe", json!([])).await;
    let (mut en1, _) = c.handshake("miner.f").await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let mut en2 = 0u32;
    let mut share_on = |c_en1: &str, n: &Value| {
        en2 += 1;
        solve(n, c_en1, &format!("{en2:08x}"), "0.0001", false).unwrap()
    };
    let h = node.height().await;
    let n = c.notification("mining.notify").await;
    let id = c.request("mining.submit", share_on(&en1, &n)).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    node.wait_height_above(h, "first share's block").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();

    // The first pool goes away: new extranonce1 from the second, then work, then accepted shares.
    first.stop();
    let x = c.skip_to("mining.set_extranonce").await;
    en1 = x["params"][0].as_str().unwrap().to_string();
    // Work on the current tip (the second pool may first send work from before the last block).
    let n = c.notify_on_tip(&tip).await;
    let h = node.height().await;
    let id = c.request("mining.submit", share_on(&en1, &n)).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r} {x} {n}\n{}", proxy.log());
    node.wait_height_above(h, "share through the second pool").await;
    wait::until("a forwarded share on the second pool", Duration::from_secs(10), || {
        !forwarded_from(&second, "proxyuser.p1").is_empty()
    })
    .await;

    // The first pool comes back: the proxy returns to it (it probes every 10 s).
    first.spawn(&[]);
    let x = c.skip_to("mining.set_extranonce").await;
    en1 = x["params"][0].as_str().unwrap().to_string();
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let n = c.notify_on_tip(&tip).await;
    let id = c.request("mining.submit", share_on(&en1, &n)).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    assert!(proxy.log().contains("primary is back"), "{}", proxy.log());
    wait::until("a forwarded share on the first pool after the return", Duration::from_secs(10), || {
        !forwarded_from(&first, "proxyuser.p0").is_empty()
    })
    .await;
}

/// Issue test 3: pool ← proxy ← proxy ← miner finds a block the node accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_proxies() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let pool = Pool::start(pool_config(node, &address).await, &[]);
    let p1 = Pool::start_proxy(proxy_config(&[&pool], 0.0001));
    let p2 = Pool::start_proxy(proxy_config(&[&p1], 0.0001));
    let mut c = Client::connect(&p2.addr()).await;
    let (en1, n2) = c.handshake("miner.s").await;
    assert_eq!((en1.len() / 2, n2), (10, 2), "4 (pool) + 4 (proxy 1) + 2 (proxy 2), 2 left to the miner");
    let n = c.notification("mining.notify").await;
    let h = node.height().await;
    let s = solve(&n, &en1, "00ff", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    node.wait_height_above(h, "stacked proxies").await;
    pool.wait_blocks_log("proxyuser.p0");
}

/// Issue test 4: 1,000 miners through one upstream connection: distinct extranonce1 each, and
/// no duplicate-share rejection anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_miners_one_upstream() {
    // 1,000 sockets here and in the proxy: raise the open-file limit to the hard limit.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard).unwrap();

    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["update_interval"] = json!(3600);
    let pool = Pool::start(cfg, &[]);
    let proxy = Pool::start_proxy(proxy_config(&[&pool], 0.000001));
    let addr = proxy.addr();
    let mut handles = Vec::new();
    for i in 0..1000u32 {
        let addr = addr.clone();
        handles.push(tokio::spawn(async move {
            let mut c = Client::connect(&addr).await;
            let (en1, _) = c.handshake(&format!("m.{i}")).await;
            (c, en1)
        }));
    }
    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.await.unwrap());
    }
    let en1s: HashSet<&String> = clients.iter().map(|(_, e)| e).collect();
    assert_eq!(en1s.len(), 1000, "every miner has its own extranonce1");
    assert_eq!(pool.log().matches("miner authorized").count(), 1, "the pool sees one miner: the proxy");

    // Each miner submits one share on its current job; replies are accepted or stale (a forwarded
    // share that is a regtest block moves the chain on), never duplicate.
    let mut tasks = Vec::new();
    for (mut c, en1) in clients {
        tasks.push(tokio::spawn(async move {
            let n = c.notification("mining.notify").await;
            let s = tokio::task::spawn_blocking(move || solve(&n, &en1, "00000001", "0.000001", false).unwrap())
                .await
                .unwrap();
            let id = c.request("mining.submit", s).await;
            c.reply(id).await
        }));
    }
    let (mut accepted, mut stale) = (0, 0);
    for t in tasks {
        let r = t.await.unwrap();
        if r["result"] == json!(true) {
            accepted += 1;
        } else {
            assert_eq!(r["error"][0], json!(21), "only stale rejects are expected: {r}");
            stale += 1;
        }
    }
    assert!(accepted > 0, "no share accepted ({stale} stale)");
    wait::until("a share forwarded to the pool", Duration::from_secs(15), || {
        !forwarded_from(&pool, "proxyuser.p0").is_empty()
    })
    .await;
    let dups = pool.share_lines().iter().filter(|l| l["reject-reason"] == json!("Duplicate")).count();
    assert_eq!(dups, 0, "duplicate rejections upstream");
    println!("1,000 miners: {accepted} accepted locally, {stale} stale");
}

/// A fault-injecting upstream (a fake is needed here: no real pool sends these): the first
/// never answers subscribe; the second sends garbage, a notify with wrong types and
/// set_difficulty 0 before a valid job. The proxy must log, fail over and serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_upstream_input_is_survived() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s); // accept and say nothing
        }
    });
    let noisy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let noisy_addr = noisy.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = noisy.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut lines = BufReader::new(r).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let v: Value = serde_json::from_str(&l).unwrap();
                    let reply = match v["method"].as_str() {
                        Some("mining.subscribe") => {
                            json!({"id": v["id"], "result": [[["mining.notify", "1"]], "aabbccdd", 8], "error": null})
                        }
                        Some("mining.authorize") => json!({"id": v["id"], "result": true, "error": null}),
                        Some("mining.configure") => {
                            json!({"id": v["id"], "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "error": null})
                        }
                        _ => json!({"id": v["id"], "result": true, "error": null}),
                    };
                    let mut out = format!("{reply}\n");
                    if v["method"] == "mining.authorize" {
                        out.push_str("this is not json\n");
                        out.push_str("{\"id\":null,\"method\":\"mining.notify\",\"params\":[1,2,3]}\n");
                        out.push_str("{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[0]}\n");
                        out.push_str(&format!(
                            "{}\n",
                            json!({"id": null, "method": "mining.set_difficulty", "params": [0.5]})
                        ));
                        out.push_str(&format!("{}\n", json!({"id": null, "method": "mining.notify", "params": [
                            "j1", "00".repeat(32), "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff1003a08601",
                            "ffffffff0100f2052a010000001976a914000000000000000000000000000000000000000088ac00000000", [], "20000000", "207fffff", "6b000000", true
                        ]})));
                    }
                    if w.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let cfg = json!({
        "proxy": [{"url": silent_addr, "auth": "u", "pass": "x"}, {"url": noisy_addr, "auth": "u", "pass": "x"}],
        "mindiff": 0.0001, "startdiff": 0.0001,
    });
    let proxy = Pool::start_proxy(cfg);
    let log = proxy.log();
    assert!(log.contains("no subscribe/authorize answer"), "{log}");
    assert!(log.contains("unparseable line"), "{log}");
    assert!(log.contains("unusable notify"), "{log}");
    assert!(log.contains("ignoring mining.set_difficulty [0]"), "{log}");
    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, _) = c.handshake("m").await;
    assert!(en1.starts_with("aabbccdd"));
    let n = c.notification("mining.notify").await;
    let s = solve(&n, &en1, "00000001", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
}

/// More miners than extranonce1 values: an upstream with 3 bytes of extranonce2 leaves the proxy
/// a 1-byte prefix, 256 miners. The 257th is answered "server full" (error 20) and closed, the
/// operator log says why; the first 256 keep mining and a new block reaches them; when one
/// leaves, its value serves the next miner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_miners_than_extranonce_values_are_refused_clearly() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["nonce2length"] = json!(3);
    let pool = Pool::start(cfg, &[]);
    // Difficulty below regtest's network difficulty, so a share need not be a block.
    let mut proxy = Pool::start_proxy(proxy_config(&[&pool], 1e-10));

    let mut miners = Vec::new();
    let mut en1s = HashSet::new();
    for i in 0..256 {
        let mut c = Client::connect(&proxy.addr()).await;
        let (en1, n2) = c.handshake(&format!("m.{i}")).await;
        assert_eq!(n2, 2, "1-byte prefix, 2 bytes left to the miner");
        assert!(en1s.insert(en1.clone()), "extranonce1 {en1} given twice");
        miners.push((c, en1));
    }
    // The 257th: a clear answer to its subscribe, then the connection closes.
    let mut extra = Client::connect(&proxy.addr()).await;
    let id = extra.request("mining.subscribe", json!(["late/1.0"])).await;
    let r = extra.reply(id).await;
    assert_eq!(r["error"][0], json!(20), "{r}");
    assert!(r["error"][1].as_str().unwrap().contains("server full"), "{r}");
    assert!(extra.read().await.is_none(), "the refused miner's connection stays open");
    proxy.wait_log("refused: all 256 extranonce1 values of 1 byte(s) are held", Duration::from_secs(10));

    // The first and the last miner still mine, and a new block reaches them.
    let h = node.call("generate", json!([1])).await[0].as_str().unwrap().to_string();
    for k in [0, 255] {
        let (c, en1) = &mut miners[k];
        let n = c.notify_on_tip(&h).await;
        let s = common::solve_not_block(&n, en1, &format!("{:04x}", k), "0.0000000001").unwrap();
        let id = c.request("mining.submit", s).await;
        assert_eq!(c.reply(id).await["result"], json!(true), "miner {k}");
    }
    // One leaves: the next miner gets its value.
    let (gone, gone_en1) = miners.remove(17);
    drop(gone);
    let addr = &proxy.addr();
    let r =
        wait::until_async("the freed extranonce1 to serve a new miner", Duration::from_secs(20), move || async move {
            let mut c = Client::connect(addr).await;
            let id = c.request("mining.subscribe", json!(["next/1.0"])).await;
            Some(c.reply(id).await).filter(|r| r["error"].is_null())
        })
        .await;
    assert_eq!(r["result"][1], json!(gone_en1), "the freed value is the only one left");
}

/// An upstream that narrows its version mask mid-session (BIP310 allows it; this project's pool
/// never does, so a fake upstream sends it): after the first forwarded share it sends
/// `mining.set_version_mask ["0000e000"]` and a new job. The miner that negotiated version rolling
/// is told before that job; a share on the new job rolling bits outside the new mask is
/// refused, one inside it accepted and forwarded with its bits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_version_mask_change_reaches_miners() {
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap().to_string();
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::channel::<Value>(16);
    tokio::spawn(async move {
        let notify = |id: &str| {
            json!({"id": null, "method": "mining.notify", "params": [
                id, "00".repeat(32), "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff1003a08601",
                "ffffffff0100f2052a010000001976a914000000000000000000000000000000000000000088ac00000000", [], "20000000", "1d00ffff", "6b000000", true
            ]})
        };
        let (s, _) = upstream.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        let mut narrowed = false;
        while let Ok(Some(l)) = lines.next_line().await {
            let v: Value = serde_json::from_str(&l).unwrap();
            let mut out = String::new();
            match v["method"].as_str() {
                Some("mining.configure") => out.push_str(&format!("{}\n", json!({"id": v["id"], "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "error": null}))),
                Some("mining.subscribe") => out.push_str(&format!("{}\n", json!({"id": v["id"], "result": [[["mining.notify", "1"]], "aabbccdd", 8], "error": null}))),
                Some("mining.authorize") => {
                    out.push_str(&format!("{}\n", json!({"id": v["id"], "result": true, "error": null})));
                    out.push_str(&format!("{}\n", json!({"id": null, "method": "mining.set_difficulty", "params": [0.0001]})));
                    out.push_str(&format!("{}\n", notify("j1")));
                }
                Some("mining.submit") => {
                    out.push_str(&format!("{}\n", json!({"id": v["id"], "result": true, "error": null})));
                    let _ = seen_tx.send(v["params"].clone()).await;
                    if !narrowed {
                        narrowed = true;
                        out.push_str(&format!("{}\n", json!({"id": null, "method": "mining.set_version_mask", "params": ["0000e000"]})));
                        out.push_str(&format!("{}\n", notify("j2")));
                    }
                }
                _ => out.push_str(&format!("{}\n", json!({"id": v["id"], "result": true, "error": null}))),
            }
            if w.write_all(out.as_bytes()).await.is_err() {
                return;
            }
        }
    });
    let cfg = json!({"proxy": [{"url": up_addr, "auth": "u", "pass": "x"}], "mindiff": 0.0001, "startdiff": 0.0001});
    let proxy = Pool::start_proxy(cfg);
    let mut c = Client::connect(&proxy.addr()).await;
    let id = c.request("mining.configure", json!([["version-rolling"], {"version-rolling.mask": "ffffffff"}])).await;
    assert_eq!(c.reply(id).await["result"]["version-rolling.mask"], json!("1fffe000"));
    let (en1, _) = c.handshake("m").await;
    let n1 = c.notification("mining.notify").await;
    // A plain share on j1 reaches the upstream, which then narrows its mask.
    let s = solve(&n1, &en1, "00000001", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    tokio::time::timeout(Duration::from_secs(20), seen_rx.recv()).await.expect("share forwarded").unwrap();
    let m = c.notification("mining.set_version_mask").await;
    assert_eq!(m["params"], json!(["0000e000"]), "{m}");
    let n2 = c.skip_to("mining.notify").await;
    assert_ne!(n2["params"][0], n1["params"][0], "a new job after the mask change");
    for (bits, accepted) in [(0x0020_0000u32, false), (0x0000_4000, true)] {
        let s = solve_rolled(&n2, &en1, "00000002", bits);
        let id = c.request("mining.submit", s).await;
        let r = c.reply(id).await;
        if accepted {
            assert_eq!(r["result"], json!(true), "bits {bits:08x} inside the new mask: {r}");
        } else {
            assert_eq!(r["error"][1], json!("Invalid version mask"), "bits {bits:08x} outside the new mask: {r}");
        }
    }
    let fwd =
        tokio::time::timeout(Duration::from_secs(20), seen_rx.recv()).await.expect("second share forwarded").unwrap();
    assert_eq!(fwd[5], json!("00004000"), "forwarded with its rolled bits: {fwd}");
}

/// A share on `notify` at difficulty 0.0001 with `bits` rolled into the version.
fn solve_rolled(notify: &Value, en1: &str, en2: &str, bits: u32) -> Value {
    use ckpool::difficulty::Difficulty;
    use ckpool::work::job::Job;
    let p = &notify["params"];
    let job = Job::from_notify(1, p, en1.len() / 2, en2.len() / 2).unwrap();
    let root = job.merkle_root(&ckpool::hex::decode(en1).unwrap(), &ckpool::hex::decode(en2).unwrap());
    let target = "0.0001".parse::<Difficulty>().unwrap().to_target();
    let nonce = (0u32..1 << 26)
        .find(|&n| {
            target.is_met_by(&ckpool::work::merkle::sha256d(&job.header(&root, job.version | bits, job.ntime, n)))
        })
        .expect("a nonce within 2^26");
    json!(["m", p[0], en2, format!("{:08x}", job.ntime), format!("{nonce:08x}"), format!("{bits:08x}")])
}
