//! ckproxy with Stratum V2 upstreams (`stratum2+tcp://HOST:PORT/KEY`): this project's pool on a
//! real Bitcoin Core regtest node serves its `sv2url`; SV1 miners mine through the proxy.
//!
//! - Blocks from local miners, SV1 on serverurl and SV2 on the proxy's own sv2url, reach Core
//!   through the proxy's one extended channel; the pool logs the shares under the proxy's user,
//!   the proxy logs them per miner and counts the pool's SubmitShares.Success verdicts.
//! - Failover SV2 → SV1 when the SV2 pool stops, and back to SV2 when it returns.
//! - A url pinning another authority key: the handshake is refused with one clear line and the
//!   proxy serves from the next entry.

mod common;

use std::time::Duration;

use ckpool::sv2::client::{self as sv2client, Event, Sv2Client};
use common::core_node::{regtest_key, CoreNode};
use common::{free_port, solve, wait, Client, Pool};
use serde_json::{json, Value};

/// An SV2 listener on a fixed port (a restart keeps it) and an authority key of the test's own.
fn with_sv2(cfg: &mut Value) {
    cfg["sv2url"] = json!(format!("127.0.0.1:{}", free_port()));
    let keydir = tempfile::tempdir().unwrap().keep();
    cfg["sv2_authority_key"] = json!(keydir.join("sv2_authority.key").display().to_string());
}

/// The `stratum2+tcp://HOST:PORT/KEY` url a pool or proxy logged for its SV2 listener.
fn sv2_url_of(p: &Pool) -> String {
    let log = p.log();
    let line = log.lines().find(|l| l.contains("listening for Stratum V2 miners on")).expect("sv2 listening line");
    line.split_once(": stratum2+tcp://").map(|(_, u)| format!("stratum2+tcp://{}", u.trim())).unwrap()
}

/// The pool on `node` with an SV2 listener; returns it with the url `ckpool sv2-key` gives.
fn pool_with_sv2(node: &CoreNode, address: &str) -> (Pool, String) {
    let mut cfg = node.pool_config(address);
    with_sv2(&mut cfg);
    let pool = Pool::start(cfg, &[]);
    let url = sv2_url_of(&pool);
    (pool, url)
}

fn proxy_config(urls: &[String]) -> Value {
    json!({
        "proxy": urls.iter().enumerate().map(|(i, u)| json!({"url": u, "auth": format!("proxyuser.p{i}"), "pass": "x"})).collect::<Vec<_>>(),
        "btcaddress": "",
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "maxdiff": 0,
        "apiurl": "127.0.0.1:0",
    })
}

/// A Core node past its first block (out of initial block download) and a payout address.
async fn core(seed: u8) -> (CoreNode, String) {
    let node = CoreNode::start(&[]).await;
    let address = node.derive_address(&format!("wpkh({})", regtest_key(seed).to_wif())).await;
    node.generate_to(1, &address).await;
    (node, address)
}

fn lines_of(pool: &Pool, worker: &str) -> Vec<Value> {
    pool.share_lines().into_iter().filter(|l| l["workername"] == json!(worker)).collect()
}

/// A block from the miner on its work on Core's tip; waits until Core has it.
async fn mine_a_block(node: &CoreNode, c: &mut Client, en1: &str, en2: &str, context: &Pool) {
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let n = c.notify_on_tip(&tip).await;
    let h = node.height().await;
    let s = solve(&n, en1, en2, "0.0001", true).unwrap();
    let id = c.request("mining.submit", s).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}\n{}", context.log());
    node.wait_height(h + 1, Duration::from_secs(30), || context.log()).await;
}

/// Pool ← (SV2) proxy ← SV1 and SV2 miners: the miners' blocks are accepted by Core; the pool
/// logged the shares under the proxy's user with each miner's part of the extranonce, the proxy
/// logged them under the miners' names, and the pool's verdicts were counted. The pool sees one
/// channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_through_an_sv2_upstream() {
    let (node, address) = core(41).await;
    let (pool, url) = pool_with_sv2(&node, &address);
    let mut cfg = proxy_config(&[url]);
    with_sv2(&mut cfg);
    let proxy = Pool::start_proxy(cfg);
    let log = proxy.log();
    assert!(log.contains("connected over Stratum V2 (pool's key checked), extended channel"), "{log}");

    // An SV1 miner.
    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, n2) = c.handshake("miner.a").await;
    assert_eq!((en1.len(), n2), (16, 4), "the channel's 4+8: the proxy gives its miners 8+4");
    for (i, en2) in ["0000abcd", "0000abce"].iter().enumerate() {
        mine_a_block(&node, &mut c, &en1, en2, &proxy).await;
        pool.wait_blocks_log("proxyuser.p0");
        let want = format!("{}{en2}", &en1[8..]);
        let l = wait::until("the share in the pool's share log", Duration::from_secs(10), || {
            lines_of(&pool, "proxyuser.p0")
                .into_iter()
                .find(|l| l["result"] == json!(true) && l["nonce2"] == json!(want))
        })
        .await;
        assert_eq!(l["workername"], json!("proxyuser.p0"), "{l}");
        let mine = wait::until("the share in the proxy's share log", Duration::from_secs(10), || {
            let lines = lines_of(&proxy, "miner.a");
            (lines.len() > i).then_some(lines)
        })
        .await;
        assert!(mine.iter().all(|l| l["result"] == json!(true)), "{mine:?}");
    }

    // An SV2 miner on the proxy's own sv2url: an extended channel under the same upstream prefix.
    let purl = sv2_url_of(&proxy);
    let (host, key) = purl.trim_start_matches("stratum2+tcp://").split_once('/').unwrap();
    let key = ckpool::sv2::keys::parse_public(key).unwrap();
    let mut m = Sv2Client::connect(host.parse().unwrap(), &key, 0).await.unwrap();
    m.open_extended("miner.sv2", 1.0e6, 4).await.unwrap();
    let (channel, prefix, size) = match next(&mut m).await {
        Event::ExtendedOpened { channel, extranonce_prefix, extranonce_size, .. } => {
            (channel, extranonce_prefix, extranonce_size)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!((prefix.len(), size), (8, 4), "8 bytes of prefix, 4 to roll, as an SV1 miner");
    assert_eq!(ckpool::hex::encode(&prefix[..4]), en1[..8], "the pool's prefix first");
    let en2 = [0, 0, 0x5e, 0x02];
    mine_an_sv2_block(&node, &mut m, channel, &prefix, &en2, &proxy).await;
    let want = format!("{}{}", ckpool::hex::encode(&prefix[4..]), ckpool::hex::encode(&en2));
    wait::until("the SV2 miner's share in the pool's share log", Duration::from_secs(10), || {
        lines_of(&pool, "proxyuser.p0").into_iter().find(|l| l["result"] == json!(true) && l["nonce2"] == json!(want))
    })
    .await;
    wait::until("the SV2 miner's share in the proxy's share log", Duration::from_secs(10), || {
        lines_of(&proxy, "miner.sv2").into_iter().find(|l| l["result"] == json!(true))
    })
    .await;

    let accepted = wait::until_async("the pool's verdicts counted", Duration::from_secs(10), || async {
        let a = proxy.upstream_shares("accepted").await;
        (a >= 3).then_some(a)
    })
    .await;
    assert_eq!(accepted, 3);
    assert_eq!(proxy.upstream_shares("forwarded").await, 3);
    assert_eq!(proxy.upstream_shares("rejected").await, 0);
    assert_eq!(pool.log().matches("sv2 extended channel opened").count(), 1, "one channel for the proxy");
}

/// A block from an SV2 miner on the job a SetNewPrevHash on Core's tip activates; waits until
/// Core has it.
async fn mine_an_sv2_block(
    node: &CoreNode,
    m: &mut Sv2Client,
    channel: u32,
    prefix: &[u8],
    en2: &[u8],
    context: &Pool,
) {
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let mut future = std::collections::HashMap::new();
    let (job, prev_hash, ntime, nbits) = loop {
        match next(m).await {
            Event::ExtendedJob(j) => {
                future.insert(j.job_id, j);
            }
            Event::PrevHash { job_id, prev_hash, min_ntime, nbits, .. }
                if future.contains_key(&job_id) && ckpool::hex::encode_rev(&prev_hash) == tip =>
            {
                break (future.remove(&job_id).unwrap(), prev_hash, min_ntime, nbits);
            }
            _ => {}
        }
    };
    let mut extranonce = prefix.to_vec();
    extranonce.extend_from_slice(en2);
    let root = job.merkle_root(&extranonce);
    let target = ckpool::difficulty::Target::from_compact(nbits).unwrap();
    let nonce = (0..50_000_000u32)
        .find(|&n| {
            target.is_met_by(&ckpool::work::merkle::sha256d(&sv2client::header(
                job.version,
                &prev_hash,
                &root,
                ntime,
                nbits,
                n,
            )))
        })
        .expect("a block nonce");
    let h = node.height().await;
    m.push_extended(channel, 1, job.job_id, nonce, ntime, job.version, en2).unwrap();
    m.flush().await.unwrap();
    loop {
        match next(m).await {
            Event::Accepted { .. } => break,
            Event::Rejected { code, .. } => panic!("refused: {code}\n{}", context.log()),
            _ => {}
        }
    }
    node.wait_height(h + 1, Duration::from_secs(30), || context.log()).await;
}

async fn next(c: &mut Sv2Client) -> Event {
    tokio::time::timeout(Duration::from_secs(20), c.next_event()).await.expect("an SV2 message within 20 s").unwrap()
}

/// Two entries, SV2 then SV1: the SV2 pool stops, miners get work and accepted shares through the
/// SV1 pool; the SV2 pool returns and the proxy goes back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_from_sv2_to_sv1_and_back() {
    let (node, address) = core(42).await;
    let (mut first, url) = pool_with_sv2(&node, &address);
    let second = Pool::start(node.pool_config(&address), &[]);
    let mut cfg = proxy_config(&[url, second.addr()]);
    with_sv2(&mut cfg);
    let proxy = Pool::start_proxy(cfg);

    let mut c = Client::connect(&proxy.addr()).await;
    let id = c.request("mining.extranonce.subscribe", json!([])).await;
    let (en1, _) = c.handshake("miner.f").await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    // An SV2 miner below the proxy too.
    let purl = sv2_url_of(&proxy);
    let (host, key) = purl.trim_start_matches("stratum2+tcp://").split_once('/').unwrap();
    let key = ckpool::sv2::keys::parse_public(key).unwrap();
    let mut m = Sv2Client::connect(host.parse().unwrap(), &key, 0).await.unwrap();
    m.open_extended("miner.f2", 1.0e6, 4).await.unwrap();
    let Event::ExtendedOpened { channel, extranonce_prefix: old_prefix, .. } = next(&mut m).await else {
        panic!("no channel")
    };
    mine_a_block(&node, &mut c, &en1, "00000001", &proxy).await;
    wait::until("a share on the SV2 pool", Duration::from_secs(10), || !lines_of(&first, "proxyuser.p0").is_empty())
        .await;

    first.stop();
    let x = c.skip_to("mining.set_extranonce").await;
    let en1 = x["params"][0].as_str().unwrap().to_string();
    mine_a_block(&node, &mut c, &en1, "00000002", &proxy).await;
    wait::until("a share on the SV1 pool", Duration::from_secs(10), || !lines_of(&second, "proxyuser.p1").is_empty())
        .await;
    // The SV2 miner is told the new upstream's prefix (its own bytes kept) and mines on it.
    let prefix = loop {
        if let Event::ExtranoncePrefix { channel: ch, prefix } = next(&mut m).await {
            assert_eq!(ch, channel);
            break prefix;
        }
    };
    assert_eq!(ckpool::hex::encode(&prefix[..4]), en1[..8], "the SV1 pool's extranonce1 first");
    assert_eq!(prefix[4..], old_prefix[4..], "the miner's own bytes kept");
    mine_an_sv2_block(&node, &mut m, channel, &prefix, &[0, 0, 0, 9], &proxy).await;
    let want = format!("{}00000009", ckpool::hex::encode(&prefix[4..]));
    wait::until("the SV2 miner's share on the SV1 pool", Duration::from_secs(10), || {
        lines_of(&second, "proxyuser.p1").into_iter().find(|l| l["nonce2"] == json!(want))
    })
    .await;

    // The SV2 pool returns (same port, same key): the proxy's probe finds it within 10 s.
    let before = lines_of(&first, "proxyuser.p0").len();
    first.spawn(&[]);
    let x = c.skip_to("mining.set_extranonce").await;
    let en1 = x["params"][0].as_str().unwrap().to_string();
    assert!(proxy.log().contains("primary is back"), "{}", proxy.log());
    mine_a_block(&node, &mut c, &en1, "00000003", &proxy).await;
    wait::until("a share on the SV2 pool after the return", Duration::from_secs(10), || {
        lines_of(&first, "proxyuser.p0").len() > before
    })
    .await;
}

/// A url whose key is not the pool's: the Noise handshake is refused with one line saying what
/// (the certificate), which entry and key, and what to do; the proxy serves from the next entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_authority_key_is_refused_and_the_next_entry_serves() {
    let (node, address) = core(43).await;
    let (pool, url) = pool_with_sv2(&node, &address);
    let second = Pool::start(node.pool_config(&address), &[]);
    let other = ckpool::sv2::keys::AuthorityKey::generate().unwrap().public_string();
    let (base, _) = url.rsplit_once('/').unwrap();
    let wrong = format!("{base}/{other}");
    let proxy = Pool::start_proxy(proxy_config(&[wrong, second.addr()]));
    let log = proxy.log();
    let line = log.lines().find(|l| l.contains("Noise handshake refused")).unwrap_or_else(|| panic!("{log}"));
    for part in [
        &format!("upstream {base} (proxyuser.p0)") as &str,
        "not signed by the expected authority key",
        &format!("proxy[0].url pins authority key {other}"),
        "put the key `ckpool sv2-key` prints on the pool",
        &format!("next: {}", second.addr()),
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, _) = c.handshake("miner.w").await;
    mine_a_block(&node, &mut c, &en1, "00000001", &proxy).await;
    wait::until("a share on the SV1 pool", Duration::from_secs(10), || !lines_of(&second, "proxyuser.p1").is_empty())
        .await;
    assert!(lines_of(&pool, "proxyuser.p0").is_empty(), "nothing reached the pool the key does not match");

    // `ckproxy check` says the same of each entry (its listener is taken by the running proxy).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["check", "--proxy", "--config"])
        .arg(&proxy.config_path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let key_line = out.lines().find(|l| l.starts_with("FAILED: proxy[0]")).unwrap_or_else(|| panic!("{out}"));
    assert!(key_line.contains("not signed by the expected authority key"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("ok: proxy[1]")), "{out}");
    let mut right = proxy_config(&[url]);
    right["serverurl"] = json!(["127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckproxy.conf");
    std::fs::write(&path, right.to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["check", "--proxy", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains("answers: Stratum V2, the pool's key checked, extended channel opened for proxyuser.p0 (extranonce 4+8 bytes)"),
        "{out}"
    );
}

/// Job Declaration from the proxy (a `proxy` entry with `jds`): the proxy declares templates
/// from its own node (Core, here the pool's node too) with a mempool transaction to the pool's
/// JDS, sets them on its channel and gives them to its SV1 miner; Core takes the block, which
/// carries the proxy's coinbase tag, the declared transaction and the pool's full payout. With
/// the JDS gone (another entry's `jds` on a closed port) the proxy says so and mines the pool's
/// jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_declares_its_nodes_jobs_and_falls_back_to_the_pools() {
    use bitcoin::hashes::Hash;
    let node = CoreNode::start(&[]).await;
    let key = regtest_key(43);
    let spender = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let address = node.derive_address(&format!("wpkh({})", regtest_key(44).to_wif())).await;
    let hashes = node.generate_to(101, &spender).await;
    let mut cfg = node.pool_config(&address);
    with_sv2(&mut cfg);
    cfg["sv2jdurl"] = json!(format!("127.0.0.1:{}", free_port()));
    let jds = cfg["sv2jdurl"].as_str().unwrap().to_string();
    let pool = Pool::start(cfg.clone(), &[]);
    let url = sv2_url_of(&pool);
    let utxo = common::core_node::Utxo::coinbase_of(&node, &hashes[0]).await;
    let sent = common::core_node::spend(&node, &key, &utxo, &spender, 20_000).await;
    // Core keeps a template for 5 s while only the mempool changes: wait until it has the spend.
    let has_it = || async {
        let t = node.call("getblocktemplate", json!([{"rules": ["segwit"]}])).await;
        t["transactions"].as_array().unwrap().iter().any(|x| x["txid"] == json!(sent.txid))
    };
    wait::until_async_or("the node's template to hold the spend", Duration::from_secs(30), has_it, || pool.log()).await;

    let mut pcfg = proxy_config(std::slice::from_ref(&url));
    pcfg["proxy"][0]["jds"] = json!(jds);
    pcfg["btcd"] = cfg["btcd"].clone();
    pcfg["btcsig"] = json!("/jd-proxy/");
    pcfg["update_interval"] = json!(1);
    let proxy = Pool::start_proxy(pcfg);
    wait::until("the proxy mining a declared job", Duration::from_secs(30), || {
        proxy.log().contains("mining declared job").then_some(())
    })
    .await;
    // A miner that connects now gets the declared job.
    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, _) = c.handshake("miner.jd").await;
    mine_a_block(&node, &mut c, &en1, "0000abcd", &proxy).await;
    let best = node.call("getbestblockhash", json!([])).await;
    let block = node.block(best.as_str().unwrap()).await;
    let cb = &block.txdata[0];
    let tag = b"/jd-proxy/";
    assert!(cb.input[0].script_sig.as_bytes().windows(tag.len()).any(|w| w == tag), "the proxy's coinbase: {cb:?}");
    assert_eq!(cb.output[0].script_pubkey.to_hex_string(), node.script_hex(&address).await, "the pool is paid");
    let txids: Vec<String> = block.txdata.iter().map(|t| t.compute_txid().to_string()).collect();
    assert!(txids.contains(&sent.txid), "the declared transaction is in the block: {txids:?}\n{}", proxy.log());
    assert!(block.txdata[1..].iter().all(|t| t.compute_txid().to_byte_array() != [0; 32]));
    let plog = pool.log();
    assert!(plog.contains("jds: job") && plog.contains("mining a declared job"), "{plog}");
    pool.wait_blocks_log("proxyuser.p0");
    drop(c);
    drop(proxy);

    // The JDS gone: the pool's jobs, and a line saying so.
    let mut pcfg = proxy_config(&[url]);
    pcfg["proxy"][0]["jds"] = json!(format!("127.0.0.1:{}", free_port()));
    pcfg["btcd"] = cfg["btcd"].clone();
    pcfg["btcsig"] = json!("/jd-proxy/");
    let proxy = Pool::start_proxy(pcfg);
    let log = proxy.log();
    assert!(log.contains("Job Declaration server") && log.contains("mining the pool's jobs"), "{log}");
    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, _) = c.handshake("miner.fallback").await;
    mine_a_block(&node, &mut c, &en1, "0000abce", &proxy).await;
    let best = node.call("getbestblockhash", json!([])).await;
    let cb = node.block(best.as_str().unwrap()).await.txdata[0].clone();
    assert!(!cb.input[0].script_sig.as_bytes().windows(tag.len()).any(|w| w == tag), "the pool's own coinbase");
}
