//! The pool's Job Declaration server (`sv2jdurl`) on a real Bitcoin Core regtest node, driven by
//! the pool's own JD client and SV2 client (as a job-declaring proxy would): an honest
//! declaration with a mempool transaction is accepted, mined by SetCustomMiningJob on an
//! extended channel, and Core takes the block with the declared transaction and the pool's
//! payout; hostile declarations are each refused with the protocol's code and a log line while
//! the honest client keeps working: a reused token, a coinbase that pays someone else, an
//! unknown transaction never provided, an invalid transaction (provided, refused by the node),
//! a custom job on another previous block, a declaration flood. On bitcoin-node over IPC
//! (`ipcmining`): a transaction in the node's mempool but not in the pool's template is taken
//! from the mempool (no ProvideMissingTransactions), and the node's `checkBlock` refuses an
//! invalid transaction. With `ipcmining` set and the IPC link down, the RPC proposal checks the
//! declarations, and the log says so once.

mod common;

use std::time::Duration;

use binary_sv2::{Seq0255, B0255, B064K, U256};
use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::{Amount, ScriptBuf, Transaction, TxOut};
use ckpool::sv2::client::{self, Event, Sv2Client, REQUIRES_VERSION_ROLLING};
use ckpool::sv2::jd_client::{Declaration, JdClient, JdEvent, DECLARE_TX_DATA};
use ckpool::sv2::keys;
use ckpool::work::merkle;
use common::core_node::{regtest_key, spend, CoreNode, Utxo};
use common::declare::{coinbase, cut};
use common::Pool;
use mining_sv2::SetCustomMiningJob;
use parsers_sv2::{AnyMessage, Mining};
use serde_json::json;

const REQUIRES_WORK_SELECTION: u32 = 0b010;
const LIMIT: Duration = Duration::from_secs(30);

/// The address (`listening for ... on ADDR: stratum2+tcp://.../KEY`) a line of the pool's log names.
fn logged(pool: &Pool, what: &str) -> (std::net::SocketAddr, [u8; 32]) {
    let log = pool.log();
    let line = log.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} line in\n{log}"));
    let rest = line.split(what).nth(1).unwrap();
    let (addr, url) = rest.split_once(": ").unwrap();
    (addr.trim().parse().unwrap(), keys::parse_public(url.trim().rsplit('/').next().unwrap()).unwrap())
}

async fn jd_event(c: &mut JdClient, what: &str) -> JdEvent {
    tokio::time::timeout(LIMIT, c.next_event())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
        .unwrap_or_else(|e| panic!("JD connection failed waiting for {what}: {e}"))
}

async fn sv2_event(c: &mut Sv2Client, what: &str) -> Event {
    loop {
        let e = tokio::time::timeout(LIMIT, c.next_event())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}"))
            .unwrap_or_else(|e| panic!("SV2 connection failed waiting for {what}: {e}"));
        // The pool's own jobs and targets come meanwhile.
        if !matches!(e, Event::ExtendedJob(_) | Event::PrevHash { .. } | Event::Target { .. }) {
            return e;
        }
    }
}

/// What a declaring client needs of the node's next block.
struct Next {
    height: u32,
    version: u32,
    prev: [u8; 32],
    nbits: u32,
    curtime: u32,
    value: u64,
}

async fn next_block(node: &CoreNode) -> Next {
    let t = node.call("getblocktemplate", json!([{"rules": ["segwit"]}])).await;
    let mut prev: [u8; 32] = ckpool::hex::decode(t["previousblockhash"].as_str().unwrap()).unwrap().try_into().unwrap();
    prev.reverse();
    Next {
        height: t["height"].as_u64().unwrap() as u32,
        version: t["version"].as_u64().unwrap() as u32,
        prev,
        nbits: u32::from_str_radix(t["bits"].as_str().unwrap(), 16).unwrap(),
        curtime: t["curtime"].as_u64().unwrap() as u32,
        value: t["coinbasevalue"].as_u64().unwrap(),
    }
}

fn pays(script: &ScriptBuf, sat: u64) -> Vec<TxOut> {
    vec![TxOut { value: Amount::from_sat(sat), script_pubkey: script.clone() }]
}

/// A token from the server.
async fn token(jd: &mut JdClient, id: u32) -> (Vec<u8>, Vec<u8>) {
    jd.allocate("jd-test-user", id).await.unwrap();
    match jd_event(jd, "AllocateMiningJobToken.Success").await {
        JdEvent::Token { request_id, token, outputs } if request_id == id => (token, outputs),
        other => panic!("expected a token for {id}, got {other:?}"),
    }
}

fn refused(e: JdEvent, id: u32, code: &str) {
    match e {
        JdEvent::Refused { request_id, code: c, details } if request_id == id && c == code => {
            assert!(!details.is_empty(), "{code}: no details");
        }
        other => panic!("declaration {id}: expected {code}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_jobs_are_checked_mined_and_refused_with_codes_on_core() {
    let node = CoreNode::start(&[]).await;
    let key = regtest_key(31);
    let miner_addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let pool_addr = node.derive_address(&format!("wpkh({})", regtest_key(32).to_wif())).await;
    let hashes = node.generate_to(101, &miner_addr).await;

    let mut cfg = node.pool_config(&pool_addr);
    cfg["sv2url"] = json!("127.0.0.1:0");
    cfg["sv2jdurl"] = json!("127.0.0.1:0");
    cfg["update_interval"] = json!(1);
    cfg["apiurl"] = json!(["127.0.0.1:0"]);
    let keydir = tempfile::tempdir().unwrap();
    cfg["sv2_authority_key"] = json!(keydir.path().join("sv2_authority.key").display().to_string());
    let pool = Pool::start(cfg, &[]);
    let (sv2_addr, authority) = logged(&pool, "listening for Stratum V2 miners on ");
    let (jd_addr, jd_key) = logged(&pool, "listening for Stratum V2 job declarations on ");
    assert_eq!(authority, jd_key, "one authority key for both faces");
    let pool_script = ScriptBuf::from_bytes(ckpool::hex::decode(&node.script_hex(&pool_addr).await).unwrap());

    // A transaction in the mempool, which the pool's template picks up.
    let sent = spend(&node, &key, &Utxo::coinbase_of(&node, &hashes[0]).await, &miner_addr, 10_000).await;
    let raw = node.call("getrawtransaction", json!([sent.txid])).await;
    let tx: Transaction = deserialize(&ckpool::hex::decode(raw.as_str().unwrap()).unwrap()).unwrap();
    let wtxid = tx.compute_wtxid().to_byte_array();
    let txid = tx.compute_txid().to_byte_array();
    // The declaring proxy's mining connection: work selection, one extended channel.
    let mut miner = Sv2Client::connect(sv2_addr, &authority, REQUIRES_VERSION_ROLLING | REQUIRES_WORK_SELECTION)
        .await
        .expect("work selection is on with sv2jdurl");
    miner.open_extended("jd-test-user.proxy", 1e9, 8).await.unwrap();
    let (channel, prefix, rolled) = match sv2_event(&mut miner, "OpenExtendedMiningChannel.Success").await {
        Event::ExtendedOpened { channel, extranonce_prefix, extranonce_size, .. } => {
            (channel, extranonce_prefix, extranonce_size as usize)
        }
        other => panic!("expected an extended channel, got {other:?}"),
    };
    let en = prefix.len() + rolled;

    let mut jd = JdClient::connect(jd_addr, &authority, DECLARE_TX_DATA).await.unwrap();
    assert_eq!(jd_event(&mut jd, "SetupConnection.Success").await, JdEvent::SetupOk);
    let (tok, outputs) = token(&mut jd, 1).await;
    let offered: Vec<TxOut> = deserialize(&outputs).unwrap();
    assert_eq!(offered, vec![TxOut { value: Amount::ZERO, script_pubkey: pool_script.clone() }]);

    // Honest: the mempool transaction, everything to the pool.
    let next = next_block(&node).await;
    let cb = coinbase(next.height, en, pays(&pool_script, next.value), &[wtxid]);
    let (p, s) = cut(&cb, en);
    let wtxids = [wtxid];
    let d = Declaration {
        request_id: 1,
        token: &tok,
        version: next.version,
        coinbase_prefix: &p,
        coinbase_suffix: &s,
        wtxids: &wtxids,
    };
    jd.declare(&d).await.unwrap();
    let mut answer = jd_event(&mut jd, "DeclareMiningJob answer").await;
    if answer == (JdEvent::Missing { request_id: 1, positions: vec![0] }) {
        // The pool's template did not have it yet: provided, as a declaring proxy does.
        jd.provide(1, &[serialize(&tx)]).await.unwrap();
        answer = jd_event(&mut jd, "DeclareMiningJob answer").await;
    }
    let declared = match answer {
        JdEvent::Declared { request_id: 1, token } => token,
        other => panic!("the honest declaration was not accepted: {other:?}\n{}", pool.log()),
    };

    // Token reuse.
    jd.declare(&d).await.unwrap();
    refused(jd_event(&mut jd, "reuse answer").await, 1, "invalid-mining-job-token");

    // A coinbase paying someone else part of the block.
    let (tok2, _) = token(&mut jd, 2).await;
    let thief = ScriptBuf::from_bytes(vec![0x51]);
    let mut outs = pays(&pool_script, next.value - 1_000_000);
    outs.push(TxOut { value: Amount::from_sat(1_000_000), script_pubkey: thief });
    let bad = coinbase(next.height, en, outs, &[wtxid]);
    let (bp, bs) = cut(&bad, en);
    jd.declare(&Declaration {
        request_id: 2,
        token: &tok2,
        coinbase_prefix: &bp,
        coinbase_suffix: &bs,
        ..d.clone_with()
    })
    .await
    .unwrap();
    refused(jd_event(&mut jd, "thief answer").await, 2, "invalid-coinbase-tx");

    // An unknown transaction, asked for and never provided (the next declaration ends the wait).
    let (tok3, _) = token(&mut jd, 3).await;
    let unknown = [[0x5au8; 32]];
    jd.declare(&Declaration { request_id: 3, token: &tok3, wtxids: &unknown, ..d.clone_with() }).await.unwrap();
    assert_eq!(
        jd_event(&mut jd, "ProvideMissingTransactions").await,
        JdEvent::Missing { request_id: 3, positions: vec![0] }
    );

    // An invalid transaction: spends an output that does not exist; provided when asked, refused
    // by the node's check.
    let (tok4, _) = token(&mut jd, 4).await;
    let fake = Utxo { txid: "11".repeat(32), vout: 0, sat: 50_000, script_hex: node.script_hex(&miner_addr).await };
    let invalid = sign_only(&node, &key, &fake, &miner_addr, 1_000).await;
    let inv_wtxid = [invalid.compute_wtxid().to_byte_array()];
    let icb = coinbase(next.height, en, pays(&pool_script, next.value), &inv_wtxid);
    let (ip, is) = cut(&icb, en);
    jd.declare(&Declaration {
        request_id: 4,
        token: &tok4,
        coinbase_prefix: &ip,
        coinbase_suffix: &is,
        wtxids: &inv_wtxid,
        ..d.clone_with()
    })
    .await
    .unwrap();
    refused(jd_event(&mut jd, "the unknown transaction's end").await, 3, "missing-txs");
    assert_eq!(
        jd_event(&mut jd, "ProvideMissingTransactions").await,
        JdEvent::Missing { request_id: 4, positions: vec![0] }
    );
    jd.provide(4, &[serialize(&invalid)]).await.unwrap();
    refused(jd_event(&mut jd, "invalid transaction answer").await, 4, "invalid-job");

    // A custom job on another previous block.
    let head = &cb.input[0].script_sig.as_bytes()[..cb.input[0].script_sig.len() - en];
    let cb_outputs = serialize(&cb.output);
    let path = vec![U256::new(&txid[..]).unwrap()];
    macro_rules! custom {
        ($request_id:expr, $prev:expr) => {
            SetCustomMiningJob {
                channel_id: channel,
                request_id: $request_id,
                token: B0255::new(&declared[..]).unwrap(),
                version: next.version,
                prev_hash: U256::new(&$prev[..]).unwrap(),
                min_ntime: next.curtime,
                nbits: next.nbits,
                coinbase_tx_version: 2,
                coinbase_prefix: B0255::new(head).unwrap(),
                coinbase_tx_input_n_sequence: u32::MAX,
                coinbase_tx_outputs: B064K::new(&cb_outputs[..]).unwrap(),
                coinbase_tx_locktime: 0,
                merkle_path: Seq0255::new(path.clone()).unwrap(),
            }
        };
    }
    let stale = [9u8; 32];
    miner.send(AnyMessage::Mining(Mining::SetCustomMiningJob(custom!(10, stale)))).await.unwrap();
    match sv2_event(&mut miner, "SetCustomMiningJob.Error").await {
        Event::CustomJobRefused { request_id: 10, code, .. } => assert_eq!(code, "stale-chain-tip"),
        other => panic!("a custom job on another block: {other:?}"),
    }

    // The honest client keeps working: its declared job, mined; Core takes the block.
    miner.send(AnyMessage::Mining(Mining::SetCustomMiningJob(custom!(11, next.prev)))).await.unwrap();
    let job_id = match sv2_event(&mut miner, "SetCustomMiningJob.Success").await {
        Event::CustomJobSet { request_id: 11, job_id, .. } => job_id,
        other => panic!("the declared job was not taken: {other:?}\n{}", pool.log()),
    };
    let roll = vec![0x42u8; rolled];
    let mut mined = cb.clone();
    let mut sig = head.to_vec();
    sig.extend_from_slice(&prefix);
    sig.extend_from_slice(&roll);
    mined.input[0].script_sig = ScriptBuf::from_bytes(sig);
    let root = merkle::root_from_branches(&mined.compute_txid().to_byte_array(), &[txid]);
    let ntime = next.curtime;
    let target = ckpool::difficulty::Target::from_compact(next.nbits).unwrap();
    let nonce = (0..1_000_000u32)
        .find(|&n| {
            target.is_met_by(&merkle::sha256d_header(&client::header(
                next.version,
                &next.prev,
                &root,
                ntime,
                next.nbits,
                n,
            )))
        })
        .expect("a regtest nonce");
    miner.push_extended(channel, 1, job_id, nonce, ntime, next.version, &roll).unwrap();
    miner.flush().await.unwrap();
    node.wait_height(next.height as u64, LIMIT, || pool.log()).await;
    let best = node.call("getbestblockhash", json!([])).await;
    let block = node.block(best.as_str().unwrap()).await;
    assert_eq!(block.txdata.len(), 2, "the coinbase and the declared transaction");
    assert_eq!(block.txdata[1].compute_txid().to_byte_array(), txid);
    assert_eq!(block.txdata[0].output[0].script_pubkey, pool_script);
    assert_eq!(block.txdata[0].output[0].value.to_sat(), next.value);

    // A declaration flood on a connection of its own: past the burst, refused.
    let mut flood = JdClient::connect(jd_addr, &authority, DECLARE_TX_DATA).await.unwrap();
    assert_eq!(jd_event(&mut flood, "SetupConnection.Success").await, JdEvent::SetupOk);
    // A client holds at most 16 unused tokens: the 17th revokes the first.
    let (first, _) = token(&mut flood, 200).await;
    for id in 201..217u32 {
        token(&mut flood, id).await;
    }
    flood.declare(&Declaration { request_id: 200, token: &first, ..d.clone_with() }).await.unwrap();
    refused(jd_event(&mut flood, "a revoked token's answer").await, 200, "invalid-mining-job-token");
    let mut codes = Vec::new();
    for id in 100..122u32 {
        let (t, _) = token(&mut flood, id).await;
        flood
            .declare(&Declaration {
                request_id: id,
                token: &t,
                coinbase_prefix: &[1, 2, 3],
                coinbase_suffix: &[],
                wtxids: &[],
                ..d.clone_with()
            })
            .await
            .unwrap();
        match jd_event(&mut flood, "flood answer").await {
            JdEvent::Refused { code, .. } => codes.push(code),
            other => panic!("flood declaration {id}: {other:?}"),
        }
    }
    assert!(codes[..20].iter().all(|c| c == "invalid-coinbase-tx"), "{codes:?}");
    assert!(codes[20..].iter().all(|c| c == "rate-limited"), "{codes:?}");

    // Each refusal is one line in the operator log (the flood's past the log's own rate limit
    // are counted in its periodic "operator log: suppressed" line instead).
    let log = pool.log();
    for code in ["invalid-mining-job-token", "invalid-coinbase-tx", "missing-txs", "invalid-job", "stale-chain-tip"] {
        assert!(log.contains(&format!("({code})")), "no log line for {code}:\n{log}");
    }
    assert!(log.contains("jds: job 1 declared at height"), "{log}");

    // /metrics counts them: one accepted; the refusals by the code each client got.
    let metrics = metrics(&pool).await;
    let at = |k: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {k} in\n{metrics}"))
    };
    assert_eq!(at("ckpool_jds_declarations_total{result=\"accepted\"} "), 1);
    for (code, n) in [
        // The reused token, and the revoked one (the 17th token revokes the first).
        ("invalid-mining-job-token", 2),
        ("invalid-coinbase-tx", 1 + 20),
        ("missing-txs", 1),
        ("invalid-job", 1),
        ("rate-limited", 2),
    ] {
        assert_eq!(at(&format!("ckpool_jds_refused_total{{code=\"{code}\"}} ")), n, "{code}");
    }
    assert_eq!(at("ckpool_jds_declarations_total{result=\"refused\"} "), 2 + 21 + 1 + 1 + 2);
    assert_eq!(at("ckpool_jds_connections "), 2, "the honest and the flooding connection are open");
}

/// The pool's `/metrics` (its API address from the log), read over one HTTP/1.1 exchange.
async fn metrics(pool: &Pool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let log = pool.log();
    let addr = log
        .lines()
        .find_map(|l| l.split_once("serving the operator API on ").map(|(_, a)| a.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("no API line in the log:\n{log}"))
        .to_string();
    let mut s = tokio::time::timeout(LIMIT, tokio::net::TcpStream::connect(&addr)).await.unwrap().unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut body = String::new();
    tokio::time::timeout(LIMIT, s.read_to_string(&mut body)).await.unwrap().unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    body
}

/// With `ipcmining`, the JDS asks the node's mempool before the client, and checks blocks with
/// `checkBlock`: a transaction sent after the pool's template (no new template: a long update
/// interval and a fee threshold no transaction reaches) is declared and accepted without
/// ProvideMissingTransactions; an invalid one, which the node does not have, is asked for,
/// provided, and refused by `checkBlock` with invalid-job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ipc_the_nodes_mempool_supplies_transactions_and_check_block_refuses() {
    let node = CoreNode::start_ipc(&[]).await;
    let key = regtest_key(33);
    let miner_addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let pool_addr = node.derive_address(&format!("wpkh({})", regtest_key(34).to_wif())).await;
    let hashes = node.generate_to(101, &miner_addr).await;
    common::wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;

    let mut cfg = node.pool_config(&pool_addr);
    cfg["sv2url"] = json!("127.0.0.1:0");
    cfg["sv2jdurl"] = json!("127.0.0.1:0");
    cfg["ipcmining"] = json!(node.ipc_socket().display().to_string());
    // No template after the first one while the test runs: no fee rise reaches this threshold.
    cfg["ipcfeethreshold"] = json!(1_000_000_000u64);
    cfg["update_interval"] = json!(600);
    let keydir = tempfile::tempdir().unwrap();
    cfg["sv2_authority_key"] = json!(keydir.path().join("sv2_authority.key").display().to_string());
    let mut pool = Pool::start(cfg, &[]);
    pool.wait_log("ipcmining: templates from Bitcoin Core's IPC mining interface", LIMIT);
    let (jd_addr, authority) = logged(&pool, "listening for Stratum V2 job declarations on ");
    let pool_script = ScriptBuf::from_bytes(ckpool::hex::decode(&node.script_hex(&pool_addr).await).unwrap());
    let next = next_block(&node).await;
    let templates = |pool: &Pool| {
        let needle = format!("new block template: height {},", next.height);
        pool.log().lines().filter(|l| l.contains(&needle)).count()
    };
    common::wait::until("the first template's line", LIMIT, || templates(&pool) >= 1).await;
    let before = templates(&pool);

    // Sent after the pool's template: only the node's mempool has it.
    let sent = spend(&node, &key, &Utxo::coinbase_of(&node, &hashes[0]).await, &miner_addr, 10_000).await;
    let raw = node.call("getrawtransaction", json!([sent.txid])).await;
    let tx: Transaction = deserialize(&ckpool::hex::decode(raw.as_str().unwrap()).unwrap()).unwrap();
    let wtxid = [tx.compute_wtxid().to_byte_array()];

    let mut jd = JdClient::connect(jd_addr, &authority, DECLARE_TX_DATA).await.unwrap();
    assert_eq!(jd_event(&mut jd, "SetupConnection.Success").await, JdEvent::SetupOk);
    let en = 8;
    let (tok, _) = token(&mut jd, 1).await;
    let cb = coinbase(next.height, en, pays(&pool_script, next.value), &wtxid);
    let (p, s) = cut(&cb, en);
    let d = Declaration {
        request_id: 1,
        token: &tok,
        version: next.version,
        coinbase_prefix: &p,
        coinbase_suffix: &s,
        wtxids: &wtxid,
    };
    jd.declare(&d).await.unwrap();
    match jd_event(&mut jd, "DeclareMiningJob answer").await {
        JdEvent::Declared { request_id: 1, .. } => {}
        other => panic!(
            "the mempool transaction's declaration: expected Success, got {other:?}
{}",
            pool.log()
        ),
    }
    assert_eq!(templates(&pool), before, "the pool's template changed: the test would not show the mempool path");
    // The operator log is written beside the answer: waited for, not read at once.
    pool.wait_log("checked by the node (checkBlock over IPC)", LIMIT);

    // An invalid transaction (its input does not exist): not in the mempool, so asked for;
    // provided, and refused by checkBlock.
    let (tok2, _) = token(&mut jd, 2).await;
    let fake = Utxo { txid: "22".repeat(32), vout: 0, sat: 50_000, script_hex: node.script_hex(&miner_addr).await };
    let invalid = sign_only(&node, &key, &fake, &miner_addr, 1_000).await;
    let inv_wtxid = [invalid.compute_wtxid().to_byte_array()];
    let icb = coinbase(next.height, en, pays(&pool_script, next.value), &inv_wtxid);
    let (ip, is) = cut(&icb, en);
    jd.declare(&Declaration {
        request_id: 2,
        token: &tok2,
        coinbase_prefix: &ip,
        coinbase_suffix: &is,
        wtxids: &inv_wtxid,
        ..d.clone_with()
    })
    .await
    .unwrap();
    assert_eq!(
        jd_event(&mut jd, "ProvideMissingTransactions").await,
        JdEvent::Missing { request_id: 2, positions: vec![0] }
    );
    jd.provide(2, &[serialize(&invalid)]).await.unwrap();
    refused(jd_event(&mut jd, "invalid transaction answer").await, 2, "invalid-job");
    pool.wait_log("(invalid-job): the node refuses the block (checkBlock over IPC)", LIMIT);
}

/// With `ipcmining` set and no node on its socket (the link down from the start), a declaration
/// is checked by the getblocktemplate proposal instead, and the operator log says so in one line
/// however many declarations come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ipc_link_down_the_proposal_checks_and_the_log_says_so_once() {
    let node = CoreNode::start(&[]).await;
    let pool_addr = node.derive_address(&format!("wpkh({})", regtest_key(37).to_wif())).await;
    node.generate_to(101, &pool_addr).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = node.pool_config(&pool_addr);
    cfg["sv2url"] = json!("127.0.0.1:0");
    cfg["sv2jdurl"] = json!("127.0.0.1:0");
    cfg["ipcmining"] = json!(dir.path().join("no-node.sock").display().to_string());
    cfg["sv2_authority_key"] = json!(dir.path().join("sv2_authority.key").display().to_string());
    let mut pool = Pool::start(cfg, &[]);
    pool.wait_log("ipcmining: cannot use", LIMIT);
    pool.wait_log("new block template: height", LIMIT);
    let (jd_addr, authority) = logged(&pool, "listening for Stratum V2 job declarations on ");
    let pool_script = ScriptBuf::from_bytes(ckpool::hex::decode(&node.script_hex(&pool_addr).await).unwrap());

    let mut jd = JdClient::connect(jd_addr, &authority, DECLARE_TX_DATA).await.unwrap();
    assert_eq!(jd_event(&mut jd, "SetupConnection.Success").await, JdEvent::SetupOk);
    let next = next_block(&node).await;
    let cb = coinbase(next.height, 8, pays(&pool_script, next.value), &[]);
    let (p, s) = cut(&cb, 8);
    for id in 1..=3u32 {
        let (tok, _) = token(&mut jd, id).await;
        let d = Declaration {
            request_id: id,
            token: &tok,
            version: next.version,
            coinbase_prefix: &p,
            coinbase_suffix: &s,
            wtxids: &[],
        };
        jd.declare(&d).await.unwrap();
        match jd_event(&mut jd, "DeclareMiningJob answer").await {
            JdEvent::Declared { request_id, .. } if request_id == id => {}
            other => panic!("declaration {id} with the IPC link down: {other:?}\n{}", pool.log()),
        }
    }
    pool.wait_log_count("checked by the node (a getblocktemplate proposal)", 3, LIMIT);
    let log = pool.log();
    assert_eq!(log.matches("jds: checkBlock over IPC failed").count(), 1, "one line for the fallback:\n{log}");
}

trait CloneWith<'a> {
    fn clone_with(&self) -> Declaration<'a>;
}

impl<'a> CloneWith<'a> for Declaration<'a> {
    fn clone_with(&self) -> Declaration<'a> {
        Declaration {
            request_id: self.request_id,
            token: self.token,
            version: self.version,
            coinbase_prefix: self.coinbase_prefix,
            coinbase_suffix: self.coinbase_suffix,
            wtxids: self.wtxids,
        }
    }
}

/// A transaction spending `input` with `key`, signed by the node but not sent.
async fn sign_only(node: &CoreNode, key: &bitcoin::PrivateKey, input: &Utxo, to: &str, fee: u64) -> Transaction {
    let out = common::core_node::coins(input.sat - fee);
    let raw = node
        .call(
            "createrawtransaction",
            json!([[{"txid": input.txid, "vout": input.vout}], {to: out.parse::<serde_json::Value>().unwrap()}]),
        )
        .await;
    let prev = json!([{"txid": input.txid, "vout": input.vout, "scriptPubKey": input.script_hex,
        "amount": common::core_node::coins(input.sat).parse::<serde_json::Value>().unwrap()}]);
    let signed = node.call("signrawtransactionwithkey", json!([raw, [key.to_wif()], prev])).await;
    assert_eq!(signed["complete"], json!(true), "{signed}");
    deserialize(&ckpool::hex::decode(signed["hex"].as_str().unwrap()).unwrap()).unwrap()
}

/// `sv2jdurl` where it cannot work stops the start with a line naming what to change: without
/// `sv2url`, with solo mode (-B), with PPLNS payouts, and in proxy mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv2jdurl_where_it_cannot_work_stops_the_start() {
    let node = CoreNode::start(&[]).await;
    let addr = node.derive_address(&format!("wpkh({})", regtest_key(33).to_wif())).await;
    node.generate_to(1, &addr).await;
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("sv2_authority.key").display().to_string();
    let base = || {
        let mut cfg = node.pool_config(&addr);
        cfg["sv2jdurl"] = json!("127.0.0.1:0");
        cfg["sv2_authority_key"] = json!(key);
        cfg
    };
    let mut with_sv2 = base();
    with_sv2["sv2url"] = json!("127.0.0.1:0");
    let mut pplns = with_sv2.clone();
    pplns["payout_scheme"] = json!("pplns");
    let mut proxy = with_sv2.clone();
    proxy["proxy"] = json!([{"url": "127.0.0.1:1", "auth": "a", "pass": "x"}]);
    let cases: [(serde_json::Value, &[&str], &str); 4] = [
        (base(), &[], "sv2jdurl needs sv2url"),
        (with_sv2.clone(), &["-B"], "sv2jdurl (Job Declaration) works with the pool paying btcaddress"),
        (pplns, &[], "sv2jdurl (Job Declaration) works with the pool paying btcaddress"),
        (proxy, &["-p"], "sv2jdurl is the pool's Job Declaration server (pool mode)"),
    ];
    for (cfg, extra, why) in cases {
        let pool = Pool::prepare(cfg);
        let out = tokio::time::timeout(
            LIMIT,
            tokio::process::Command::new(env!("CARGO_BIN_EXE_ckpool")).args(pool.args(extra)).output(),
        )
        .await
        .expect("the start ends")
        .unwrap();
        assert!(!out.status.success(), "{extra:?}: started");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), pool.log());
        assert!(text.contains(why), "{extra:?}: expected {why:?} in\n{text}");
    }
}
