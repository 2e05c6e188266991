//! Stratum V2 Job Declaration with SRI's `jd_client_sv2` (the reference JD client, installed by
//! contrib/setup.sh) on a real Bitcoin Core: the JDC takes templates from Core over IPC, with
//! transactions of the test's in the mempool, declares them to a Job Declaration Server, mines
//! them on the pool's extended channel with SetCustomMiningJob, and serves SRI's translator, under
//! which `ckpool mine` (SV1) does the hashing. Core must accept a block with the declared
//! transactions whose coinbase pays the pool (the outputs the JDS gave with the token), not the
//! JDC's solo fallback address.
//!
//! - against SRI's pool_sv2 with its embedded JDS (`[jds]`): the reference chain, proving the
//!   harness;
//! - against our pool (`sv2url` + `sv2jdurl`);
//! - and the other way round: ckproxy declaring its node's templates (`jds` in its `proxy`
//!   entry) to SRI's pool_sv2 and its JDS.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::core_node::{regtest_key, spend, CoreNode, Utxo};
use common::sri::{JdcUpstream, SriJdc, SriPool, SriTranslator, JDC_SIGNATURE};
use common::{free_port, wait, Pool};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);
/// How many transactions of the test's wait in the mempool for the JDC's template.
const TXS: usize = 3;

/// The key whose coinbases fund the test's transactions.
const FUNDS: u8 = 60;

/// Core (IPC) with 100 + `TXS` blocks mined to the key `FUNDS`; returns it and the blocks' hashes.
async fn funded_node() -> (CoreNode, Vec<String>) {
    let node = CoreNode::start_ipc(&[]).await;
    let funded = node.derive_address(&format!("wpkh({})", regtest_key(FUNDS).to_wif())).await;
    // createNewBlock needs height > 16; a coinbase may be spent in a block 100 above its own, so
    // the first TXS ones in the next block.
    let hashes = node.generate_to(100 + TXS as u64, &funded).await;
    wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;
    (node, hashes)
}

/// Sends `TXS` transactions spending the coinbases of the first `blocks` (10 000 sat fee each)
/// into `node`'s mempool; returns their txids.
async fn fill_mempool(node: &CoreNode, blocks: &[String]) -> Vec<String> {
    let key = regtest_key(FUNDS);
    let to = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let mut txids = Vec::new();
    for h in &blocks[..TXS] {
        let coin = Utxo::coinbase_of(node, h).await;
        txids.push(spend(node, &key, &coin, &to, 10_000).await.txid);
    }
    let pool: Vec<String> = serde_json::from_value(node.call("getrawmempool", json!([])).await).unwrap();
    assert!(txids.iter().all(|t| pool.contains(t)), "{txids:?} not all in the mempool {pool:?}");
    txids
}

/// Core (IPC) with `TXS` transactions of the test's in its mempool; returns it and their txids.
async fn node_with_mempool() -> (CoreNode, Vec<String>) {
    let (node, blocks) = funded_node().await;
    let txids = fill_mempool(&node, &blocks).await;
    (node, txids)
}

/// A second Core (IPC, not peered: `-listen=0`, no `-connect`) given `from`'s chain block by block
/// (`submitblock`), so each node's mempool is its own.
async fn copy_of(from: &CoreNode, blocks: &[String]) -> CoreNode {
    let node = CoreNode::start_ipc(&[]).await;
    for h in blocks {
        let raw = from.call("getblock", json!([h, 0])).await;
        let r = node.call("submitblock", json!([raw])).await;
        assert!(r.is_null(), "submitblock {h}: {r}");
    }
    let (a, b) = (from.call("getbestblockhash", json!([])).await, node.call("getbestblockhash", json!([])).await);
    assert_eq!(a, b, "the copy's tip");
    wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;
    node
}

/// `ckpool mine` (one SV1 CPU thread) into `port`; killed and reaped on drop.
struct Miner(Child);

impl Miner {
    fn start(port: u16, user: &str) -> Miner {
        let child = Command::new(env!("CARGO_BIN_EXE_ckpool"))
            .args(["mine", "-o", &format!("stratum+tcp://127.0.0.1:{port}"), "-u", user, "-p", "x", "-t", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Miner(child)
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (≤ `limit`) until every one of `txids` is in a block of Core's chain and returns that
/// block's hash (all of them must be in the same one); on timeout the panic shows `context()`.
async fn wait_confirmed(
    node: &CoreNode,
    txids: &[String],
    limit: Duration,
    context: impl FnOnce() -> String,
) -> String {
    let mined = || async {
        let mut blocks = Vec::new();
        for t in txids {
            let v = node.rpc.call("getrawtransaction", json!([t, true])).await.ok()?;
            blocks.push(v["blockhash"].as_str()?.to_string());
        }
        blocks.dedup();
        assert_eq!(blocks.len(), 1, "the declared transactions landed in different blocks: {blocks:?}");
        blocks.pop()
    };
    wait::until_async_or("the mempool transactions in a block of Core's chain", limit, mined, context).await
}

/// The block `hash` as Core has it: every txid in `txids` is in it, and its coinbase pays
/// `payout` (all of it, the subsidy plus the fees) and carries the JDC's signature.
async fn assert_declared_block(node: &CoreNode, hash: &str, txids: &[String], payout: &str) {
    let b = node.call("getblock", json!([hash, 2])).await;
    let ids: Vec<&str> = b["tx"].as_array().unwrap().iter().map(|t| t["txid"].as_str().unwrap()).collect();
    for t in txids {
        assert!(ids.contains(&t.as_str()), "block {hash} lacks {t}: {ids:?}");
    }
    let block = node.block(hash).await;
    let cb = &block.txdata[0];
    let script = ckpool::hex::decode(&node.script_hex(payout).await).unwrap();
    let paid: u64 = cb.output.iter().filter(|o| o.script_pubkey.as_bytes() == script).map(|o| o.value.to_sat()).sum();
    let total: u64 = cb.output.iter().map(|o| o.value.to_sat()).sum();
    // Regtest: 50 BTC below height 150, and TXS transactions of 10 000 sat fee each.
    assert_eq!(total, 50 * 100_000_000 + TXS as u64 * 10_000, "coinbase outputs {:?}", cb.output);
    assert_eq!(paid, total, "the coinbase does not pay all to {payout}: {:?}", cb.output);
    let sig = cb.input[0].script_sig.as_bytes();
    assert!(
        sig.windows(JDC_SIGNATURE.len()).any(|w| w == JDC_SIGNATURE.as_bytes()),
        "the coinbase was not built by the JDC: {:?}",
        cb.input[0].script_sig
    );
}

/// The JDC's side of every test: SRI's JDC with its templates from `node` declaring to `up` (its
/// solo fallback paying `solo_payout`, `reserved` its `reserved_downstream_rollable_extranonce_size`),
/// SRI's translator under it as `jdfarm.tproxy`, and `ckpool mine` under the translator. Field
/// order is drop order: the miner stops first.
struct JdMiners {
    _miner: Miner,
    _tproxy: SriTranslator,
    jdc: SriJdc,
}

fn start_jd_miners(node: &CoreNode, up: &JdcUpstream, solo_payout: &str, reserved: Option<u8>) -> JdMiners {
    let jdc = SriJdc::start(node, up, solo_payout, reserved, "debug");
    let tproxy = SriTranslator::start(&format!("127.0.0.1:{}", jdc.port), &jdc.key, "jdfarm.tproxy");
    JdMiners { _miner: Miner::start(tproxy.port, "sv1miner.rig"), _tproxy: tproxy, jdc }
}

/// The JDC's rollable reserve against our pool: SRI's default. Its pool channel asks
/// min_extranonce_size = 2 + max(reserve, the translator's 6) = 10, more than `nonce2length`;
/// our pool grants it on a work-selection connection (the channel mines declared jobs only).
const OUR_POOL_RESERVE: Option<u8> = None;

/// The JDC's upstream entry for SRI's pool and its JDS.
fn sri_upstream(sri: &SriPool) -> JdcUpstream {
    JdcUpstream {
        pool: format!("127.0.0.1:{}", sri.port),
        jds: format!("127.0.0.1:{}", sri.jds_port.expect("pool_sv2 started with its JDS")),
        authority_key: sri.key.clone(),
        user: "jdfarm".into(),
    }
}

/// Our pool in pool mode on `node`'s IPC templates paying `payout`, with its SV2 port (`sv2url`)
/// and its Job Declaration Server (`sv2jdurl`) on loopback ports and a key of the test's; returns
/// it, the JDC's upstream entry for it (the key as `ckpool sv2-key` prints it) and the key's dir.
fn start_our_pool(node: &CoreNode, payout: &str) -> (Pool, JdcUpstream, tempfile::TempDir) {
    let (sv2_port, jd_port) = (free_port(), free_port());
    let mut cfg = node.pool_config(payout);
    cfg["ipcmining"] = json!(node.ipc_socket().display().to_string());
    cfg["sv2url"] = json!(format!("127.0.0.1:{sv2_port}"));
    cfg["sv2jdurl"] = json!(format!("127.0.0.1:{jd_port}"));
    let keydir = tempfile::tempdir().unwrap();
    cfg["sv2_authority_key"] = json!(keydir.path().join("sv2_authority.key").display().to_string());
    let pool = Pool::start(cfg, &[]);
    let up = JdcUpstream {
        pool: format!("127.0.0.1:{sv2_port}"),
        jds: format!("127.0.0.1:{jd_port}"),
        authority_key: authority_key(&pool),
        user: "jdfarm".into(),
    };
    (pool, up, keydir)
}

/// The SRI processes print their logs when a test fails (drop while panicking).
fn sri_logs_follow() -> String {
    "(the logs of jd_client_sv2, translator_sv2 and pool_sv2, if any, follow)".to_string()
}

/// The reference chain: Core (IPC) → SRI's pool_sv2 with its JDS ← SRI's JDC (its own templates
/// from the same Core) ← SRI's translator ← `ckpool mine`. Core takes a block with the declared
/// transactions paying the SRI pool's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_jd_client_declares_to_sri_pool_jds_and_core_accepts_the_block() {
    let (node, txids) = node_with_mempool().await;
    let pool_payout = node.derive_address(&format!("wpkh({})", regtest_key(61).to_wif())).await;
    let solo_payout = node.derive_address(&format!("wpkh({})", regtest_key(62).to_wif())).await;
    let sri = SriPool::start_with_jds(&node, &pool_payout, "debug");
    let m = start_jd_miners(&node, &sri_upstream(&sri), &solo_payout, None);
    wait_steps(&m.jdc, &JD_STEPS, &sri_logs_follow);
    let hash = wait_confirmed(&node, &txids, Duration::from_secs(120), sri_logs_follow).await;
    assert_declared_block(&node, &hash, &txids, &pool_payout).await;
}

/// The JDS's node lacks the declared transactions: the JDC's templates come from a second Core
/// with them in its mempool (the same chain, not peered). SRI's JDS asks for all three
/// (ProvideMissingTransactions), the JDC sends them, the declaration succeeds, and the JDC's
/// node takes the block with them, paying the SRI pool. (SRI's JDS does not pass PushSolution on
/// to its node: bitcoin_core_sv2 0.6.0's `handle_push_solution` is a stub, so the pool's node
/// never gets that block.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_jds_asks_for_the_transactions_its_node_lacks_and_sri_jd_client_provides_them() {
    let (pool_node, blocks) = funded_node().await;
    let jdc_node = copy_of(&pool_node, &blocks).await;
    let txids = fill_mempool(&jdc_node, &blocks).await;
    let pool_payout = pool_node.derive_address(&format!("wpkh({})", regtest_key(65).to_wif())).await;
    let solo_payout = pool_node.derive_address(&format!("wpkh({})", regtest_key(66).to_wif())).await;
    let sri = SriPool::start_with_jds(&pool_node, &pool_payout, "debug");
    let m = start_jd_miners(&jdc_node, &sri_upstream(&sri), &solo_payout, None);
    wait_steps(&m.jdc, &[PROVIDED], &sri_logs_follow);
    assert!(sri.log().contains("Received: ProvideMissingTransactionsSuccess"), "{}", sri.log());
    wait_steps(&m.jdc, &JD_STEPS, &sri_logs_follow);
    let hash = wait_confirmed(&jdc_node, &txids, Duration::from_secs(120), sri_logs_follow).await;
    assert_declared_block(&jdc_node, &hash, &txids, &pool_payout).await;
}

/// Our pool with its SV2 port (`sv2url`) and its Job Declaration Server (`sv2jdurl`) on the IPC
/// node, SRI's JDC declaring to it: Core takes a block with the declared transactions paying the
/// pool's btcaddress, the pool records the block and the JDC's shares.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sri_jd_client_declares_jobs_to_our_pool_and_core_accepts_the_block() {
    let (node, txids) = node_with_mempool().await;
    let pool_payout = node.derive_address(&format!("wpkh({})", regtest_key(63).to_wif())).await;
    let solo_payout = node.derive_address(&format!("wpkh({})", regtest_key(64).to_wif())).await;
    let (pool, up, _keydir) = start_our_pool(&node, &pool_payout);
    let m = start_jd_miners(&node, &up, &solo_payout, OUR_POOL_RESERVE);
    // SRI's processes print their logs when the test fails; ours here.
    let context = || format!("pool log:\n{}", pool.log());
    wait_steps(&m.jdc, &JD_STEPS, &context);
    let hash = wait_confirmed(&node, &txids, Duration::from_secs(120), context).await;
    assert_declared_block(&node, &hash, &txids, &pool_payout).await;
    // The pool records the block, and the shares under the JDC's user.
    let blocks = pool.wait_blocks_log(&hash);
    assert!(blocks.contains("\"username\":\"jdfarm\""), "blocks.log names the JDC's channel user: {blocks}");
    // The JDC also pushes the block to the JDS (PushSolution): the same block, submitted once.
    wait::blocking_or(
        "the pushed solution to be seen as the block already submitted",
        Duration::from_secs(30),
        || pool.log().contains(&format!("block {hash} from")).then_some(()),
        || pool.log(),
    );
    let found = pool.log().lines().filter(|l| l.contains("BLOCK FOUND") && l.contains(&hash)).count();
    assert_eq!(found, 1, "one BLOCK FOUND for {hash}:\n{}", pool.log());
    let shares: Vec<Value> = pool.share_lines();
    let ours: Vec<&Value> =
        shares.iter().filter(|s| s["workername"].as_str().is_some_and(|w| w.starts_with("jdfarm"))).collect();
    assert!(ours.iter().any(|s| s["result"] == json!(true)), "no accepted share from the JDC: {shares:?}");
}

/// Our JDS's node lacks the declared transactions (the JDC's templates come from a second Core,
/// the same chain, not peered): our JDS asks for them (ProvideMissingTransactions), SRI's JDC
/// sends them, and our pool's own node takes the block found on the declared job, assembled from
/// them (the pool submits it, or the JDS on PushSolution), paying the pool's btcaddress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_jds_gets_the_transactions_its_node_lacks_from_sri_jd_client_and_our_node_takes_the_block() {
    let (pool_node, blocks) = funded_node().await;
    let jdc_node = copy_of(&pool_node, &blocks).await;
    let txids = fill_mempool(&jdc_node, &blocks).await;
    let pool_payout = pool_node.derive_address(&format!("wpkh({})", regtest_key(67).to_wif())).await;
    let solo_payout = pool_node.derive_address(&format!("wpkh({})", regtest_key(68).to_wif())).await;
    let (pool, up, _keydir) = start_our_pool(&pool_node, &pool_payout);
    let m = start_jd_miners(&jdc_node, &up, &solo_payout, OUR_POOL_RESERVE);
    let context = || format!("pool log:\n{}", pool.log());
    wait_steps(&m.jdc, &[JD_STEPS[0], PROVIDED], &context);
    wait_steps(&m.jdc, &JD_STEPS[1..], &context);
    let hash = wait_confirmed(&pool_node, &txids, Duration::from_secs(120), context).await;
    assert_declared_block(&pool_node, &hash, &txids, &pool_payout).await;
    pool.wait_blocks_log(&hash);
}

/// The pool's authority key as `ckpool sv2-key` prints it.
fn authority_key(pool: &Pool) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["sv2-key", "--config"])
        .arg(&pool.config_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("authority_pubkey ")).unwrap_or_else(|| panic!("{text}")).to_string()
}

/// The Job Declaration steps as the JDC logs them (`Received: <message>`), in order: the token
/// from the JDS (at start), the pool's channel (once a miner opens one downstream), the JDS's
/// answer to its declaration, the pool's answer to its SetCustomMiningJob.
const JD_STEPS: [(&str, &str); 4] = [
    ("the JDS's AllocateMiningJobToken.Success", "Received: AllocateMiningJobTokenSuccess"),
    ("the pool's OpenExtendedMiningChannel.Success", "Received: OpenExtendedMiningChannelSuccess"),
    ("the JDS's DeclareMiningJob.Success", "Received: DeclareMiningJobSuccess"),
    ("the pool's SetCustomMiningJob.Success", "Received: SetCustomMiningJobSuccess"),
];

/// The JDC's answer to the JDS's ProvideMissingTransactions.
const PROVIDED: (&str, &str) =
    ("the JDC's ProvideMissingTransactions.Success", "Successfully sent ProvideMissingTransactionsSuccess");

/// What the JDC logs when it gives up on its upstream (pool + JDS): solo mining at start, the
/// fallback after a DeclareMiningJob.Error or SetCustomMiningJob.Error ("Starting fallback
/// mechanism"), a SetupConnection.Error or OpenMiningChannel.Error ("preparing fallback"), a
/// connection lost ("attempting reconnection").
const GAVE_UP: [&str; 5] = [
    "falling back to solo mining",
    "Starting in solo mining mode",
    "Starting fallback mechanism",
    "preparing fallback",
    "attempting reconnection",
];

/// Waits (≤ LIMIT each) for every step in the JDC's log; panics naming the step it did not reach,
/// at once if the JDC gave up on its upstream, with `context()`.
fn wait_steps(jdc: &SriJdc, steps: &[(&str, &str)], context: &dyn Fn() -> String) {
    for (what, needle) in steps {
        let reached = wait::blocking_or(
            what,
            LIMIT,
            || {
                let log = jdc.log();
                if log.contains(needle) {
                    Some(true)
                } else {
                    GAVE_UP.iter().any(|g| log.contains(g)).then_some(false)
                }
            },
            context,
        );
        assert!(reached, "{what}: the JDC gave up on its upstream first\n{}", context());
    }
}

/// ckproxy as the JD client under SRI's pool_sv2 and its JDS: the proxy declares templates from
/// its own node (Core, the same node here) with the mempool transactions, sets them on its
/// channel, and `ckpool mine` under the proxy finds a block Core accepts, carrying the declared
/// transactions, the proxy's coinbase tag and SRI's payout for all of the block's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ckproxy_declares_to_sri_pool_jds_and_core_accepts_the_block() {
    let (node, txids) = node_with_mempool().await;
    let payout = node.derive_address(&format!("wpkh({})", regtest_key(65).to_wif())).await;
    let sri = SriPool::start_with_jds(&node, &payout, "info");
    let jds = sri.jds_port.expect("pool_sv2 started with its JDS");
    let btcd = node.pool_config(&payout)["btcd"].clone();
    let cfg = json!({
        "proxy": [{"url": format!("stratum2+tcp://127.0.0.1:{}/{}", sri.port, sri.key), "auth": "ckproxy", "pass": "x",
                   "jds": format!("127.0.0.1:{jds}")}],
        "btcd": btcd,
        "btcaddress": "",
        "btcsig": "/ckproxy-jd/",
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "maxdiff": 0,
    });
    let proxy = Pool::start_proxy(cfg);
    let context = || format!("proxy log:\n{}\n{}", proxy.log(), sri_logs_follow());
    wait::until_async_or(
        "the proxy mining a declared job",
        LIMIT,
        || async { proxy.log().contains("mining declared job") },
        context,
    )
    .await;
    let port: u16 = proxy.addr().rsplit(':').next().unwrap().parse().unwrap();
    let _miner = Miner::start(port, "rig.one");
    let hash = wait_confirmed(&node, &txids, LIMIT, context).await;
    let block = node.block(&hash).await;
    let cb = &block.txdata[0];
    let tag = b"/ckproxy-jd/";
    assert!(cb.input[0].script_sig.as_bytes().windows(tag.len()).any(|w| w == tag), "not the proxy's coinbase: {cb:?}");
    let script = ckpool::hex::decode(&node.script_hex(&payout).await).unwrap();
    let total: u64 = cb.output.iter().map(|o| o.value.to_sat()).sum();
    assert_eq!(total, 50 * 100_000_000 + TXS as u64 * 10_000, "{:?}", cb.output);
    assert_eq!(cb.output[0].script_pubkey.as_bytes(), &script[..], "SRI's payout: {:?}", cb.output);
    assert_eq!(cb.output[0].value.to_sat(), total);
}
