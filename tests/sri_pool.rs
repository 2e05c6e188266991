//! ckproxy under SRI's `pool_sv2` (the Stratum V2 reference pool, built by contrib/setup.sh and
//! linked at .regtest/pool_sv2) on Bitcoin Core's IPC mining interface: bitcoin-node with
//! `-ipcbind=unix` serves the pool's templates, the pool holds its own authority key and pays a
//! coinbase to an address of ours, ckproxy opens its extended channel with the url
//! `stratum2+tcp://127.0.0.1:PORT/KEY`, and an SV1 miner on the proxy finds a block: Core accepts
//! it with the pool's coinbase (its signature, its output), the pool counts the share as a block,
//! the proxy logs the miner's share and counts the pool's SubmitShares.Success.

mod common;

use std::time::Duration;

use common::core_node::{regtest_key, CoreNode};
use common::sri::{pool_sv2_bin, SriPool, SRI_SIGNATURE};
use common::{solve, solve_not_block, wait, Client, Pool};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);

/// Core (IPC) → SRI's pool_sv2 → (SV2) ckproxy → SV1 miner: the miner's block is accepted by
/// Core with the SRI pool's coinbase, and the share went upstream and was accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_through_ckproxy_under_sri_pool_sv2_on_core_ipc() {
    pool_sv2_bin();
    let node = CoreNode::start_ipc(&[]).await;
    let address = node.derive_address(&format!("wpkh({})", regtest_key(51).to_wif())).await;
    // createNewBlock needs height > 16; past 100 the first coinbase is mature.
    node.generate_to(101, &address).await;
    wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;
    let sri = SriPool::start(&node, &address);

    let proxy = Pool::start_proxy(json!({
        "proxy": [{"url": sri.url(), "auth": "proxyuser.sri", "pass": "x"}],
        "btcaddress": "",
        // Below regtest's network difficulty (~4.7e-10): shares that are not blocks exist.
        "mindiff": 1e-10,
        "startdiff": 1e-10,
        "maxdiff": 0,
        "apiurl": "127.0.0.1:0",
    }));
    let connected = "connected over Stratum V2 (pool's key checked), extended channel";
    wait::until_or(
        "the proxy's channel on pool_sv2",
        LIMIT,
        || proxy.log().contains(connected),
        || format!("proxy log:\n{}\npool_sv2 log:\n{}", proxy.log(), sri.log()),
    )
    .await;

    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, n2) = c.handshake("miner.sri").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let h = node.height().await;
    let notify = c.notify_on_tip(&tip).await;
    let en2 = format!("{:0width$x}", 0x5a1u32, width = n2 * 2);
    let s = solve(&notify, &en1, &en2, "1e-10", true).expect("a block-meeting share on regtest");
    let id = c.request("mining.submit", s).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}\nproxy log:\n{}", proxy.log());
    let context = || format!("proxy log:\n{}\npool_sv2 log:\n{}", proxy.log(), sri.log());
    node.wait_height(h + 1, LIMIT, context).await;

    // The block is the SRI pool's: its signature in the coinbase, the whole reward to its output.
    let best = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let block = node.block(&best).await;
    let cb = &block.txdata[0];
    let sig = cb.input[0].script_sig.as_bytes();
    assert!(
        sig.windows(SRI_SIGNATURE.len()).any(|w| w == SRI_SIGNATURE.as_bytes()),
        "the new tip's coinbase does not carry pool_sv2's signature: {:?}",
        cb.input[0].script_sig
    );
    let script = ckpool::hex::decode(&node.script_hex(&address).await).unwrap();
    let paid: u64 = cb.output.iter().filter(|o| o.script_pubkey.as_bytes() == script).map(|o| o.value.to_sat()).sum();
    // Regtest halves every 150 blocks: 50 BTC at this height, no fees (an empty mempool).
    assert_eq!(paid, 50 * 100_000_000, "the subsidy of height {} to pool_sv2's coinbase_reward_script", h + 1);

    // The share went upstream and pool_sv2 accepted it (a block: acknowledged at once).
    let accepted = wait::until_async("pool_sv2's SubmitShares.Success counted", LIMIT, || async {
        let a = proxy.upstream_shares("accepted").await;
        (a >= 1).then_some(a)
    })
    .await;
    assert_eq!(accepted, 1);
    assert_eq!(proxy.upstream_shares("forwarded").await, 1);
    assert_eq!(proxy.upstream_shares("rejected").await, 0);

    // Ten shares that are not blocks, on the pool's job on the new tip: pool_sv2 answers valid
    // shares in batches (share_batch_size 10), one SubmitShares.Success for the ten.
    let work = c.notify_on_tip(&best).await;
    for i in 0..10u32 {
        let en2 = format!("{:0width$x}", 0x100 + i, width = n2 * 2);
        let s = solve_not_block(&work, &en1, &en2, "1e-10").expect("a share below the network target");
        let id = c.request("mining.submit", s).await;
        assert_eq!(c.reply(id).await["result"], json!(true), "{}", proxy.log());
    }
    let accepted = wait::until_async("the batch's SubmitShares.Success counted", LIMIT, || async {
        let a = proxy.upstream_shares("accepted").await;
        (a >= 11).then_some(a)
    })
    .await;
    assert_eq!(accepted, 11, "{}", sri.log());
    assert_eq!(proxy.upstream_shares("forwarded").await, 11);
    assert_eq!(proxy.upstream_shares("rejected").await, 0);
    assert_eq!(node.height().await, h + 1, "no block from shares under the network target");

    let mine: Vec<Value> = proxy.share_lines().into_iter().filter(|l| l["workername"] == json!("miner.sri")).collect();
    assert!(mine.len() == 11 && mine.iter().all(|l| l["result"] == json!(true)), "{mine:?}");
    let sri_log = sri.log();
    assert!(!sri_log.contains("SubmitSharesError"), "pool_sv2 refused a share:\n{sri_log}");
}
