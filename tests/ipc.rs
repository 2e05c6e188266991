//! The pool on Bitcoin Core's IPC mining interface (`ipcmining`): bitcoin-node (built with IPC by
//! contrib/build-core.sh from the vendored Core source) started with `-ipcbind=unix`, the pool
//! pointed at its socket. Templates over IPC reach a miner; a block found through stratum is
//! accepted (and handed to the node by `submitSolution` too); a fee rise in the mempool reaches the
//! miner as a new job on the same block; the IPC link cut and restored while a miner works: the
//! pool serves from getblocktemplate meanwhile, says so, and goes back to IPC; empty-first over
//! IPC: the node's own coinbase-only template on a new tip ahead of the full one, and a block
//! mined on it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::core_node::{regtest_key, spend, CoreNode, Utxo};
use common::{solve, wait, Client, Pool};
use serde_json::{json, Value};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;

const LIMIT: Duration = Duration::from_secs(30);
const ON_IPC: &str = "ipcmining: templates from Bitcoin Core's IPC mining interface";

/// A node serving IPC, `n` blocks mined to a key of ours (createNewBlock needs height > 16; the
/// first coinbase is mature after 101). Returns the node, the address and the first block.
async fn ipc_node() -> (CoreNode, String, String) {
    let node = CoreNode::start_ipc(&[]).await;
    let key = regtest_key(21);
    let addr = node.derive_address(&format!("wpkh({})", key.to_wif())).await;
    let first = node.generate_to(101, &addr).await.remove(0);
    wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;
    (node, addr, first)
}

fn ipc_config(node: &CoreNode, addr: &str, socket: &Path) -> Value {
    let mut cfg = node.pool_config(addr);
    cfg["ipcmining"] = json!(socket.display().to_string());
    cfg["ipcfeethreshold"] = json!(1000);
    // Long enough that no job in these tests comes from the interval.
    cfg["update_interval"] = json!(600);
    cfg
}

/// The newest "new block template" line for `height`, with its reason.
fn template_line(pool: &Pool, height: u64) -> Option<String> {
    let needle = format!("new block template: height {height},");
    pool.log().lines().rev().find(|l| l.contains(&needle)).map(str::to_string)
}

/// Waits for the "new block template" line of `height` (the log is written beside the work).
async fn wait_template(pool: &Pool, height: u64) -> String {
    wait::until_or(
        &format!("the template line of height {height}"),
        LIMIT,
        || template_line(pool, height),
        || pool.log(),
    )
    .await
}

/// Templates over IPC reach a miner (a new tip announced by the node's waitNext, no polling),
/// and a block found through stratum on such a template is accepted by the node, which also got
/// it by `submitSolution`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipc_templates_reach_miners_and_a_found_block_is_accepted() {
    let (node, addr, _) = ipc_node().await;
    let mut pool = Pool::start(ipc_config(&node, &addr, &node.ipc_socket()), &[]);
    pool.wait_log(ON_IPC, LIMIT);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("ipc.worker").await;

    // A block mined by RPC: the pool hears of it from waitNext (GBT is idle while IPC serves).
    let tip = node.generate_to(1, &addr).await.remove(0);
    let notify = c.notify_on_tip(&tip).await;
    let line = wait_template(&pool, 103).await;
    assert!(line.contains("(Ipc;"), "the template did not come over IPC: {line}");

    let submit = solve(&notify, &en1, "00000000000000b2", "0.0001", true).expect("a regtest block-meeting share");
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true), "log:\n{}", pool.log());
    let best = node.wait_tip_not(&tip, LIMIT, || format!("pool log:\n{}", pool.log())).await;
    let block = node.block(&best).await;
    let sig = block.txdata[0].input[0].script_sig.as_bytes();
    assert!(sig.windows(21).any(|w| w == b"/ckpool-rs-core-test/"), "the new tip is not the pool's block");
    pool.wait_blocks_log(&best);
    pool.wait_log("ipcmining: submitSolution: the node took the block", LIMIT);
    // The next template, on the pool's own block, came over IPC as well.
    assert!(wait_template(&pool, 104).await.contains("(Ipc;"));
}

/// A transaction paying more than `ipcfeethreshold` enters the mempool: the node's waitNext
/// answers with a template that carries it, and the miner gets a new job on the same block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fee_rise_reaches_miners_as_a_new_job_without_a_new_block() {
    let (node, addr, first) = ipc_node().await;
    let mut pool = Pool::start(ipc_config(&node, &addr, &node.ipc_socket()), &[]);
    pool.wait_log(ON_IPC, LIMIT);
    let mut c = Client::connect(&pool.addr()).await;
    c.handshake("fees.worker").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let before = c.notify_on_tip(&tip).await;
    assert_eq!(before["params"][4], json!([]), "the mempool is empty: no merkle branch");

    // 50,000 sat of fees against a threshold of 1,000.
    let u = Utxo::coinbase_of(&node, &first).await;
    let sent = spend(&node, &regtest_key(21), &u, &addr, 50_000).await;
    // The next notifies, until one carries a transaction (bounded by LIMIT as a whole).
    let after = tokio::time::timeout(LIMIT, async {
        loop {
            let n = c.notification("mining.notify").await;
            if n["params"][4] != json!([]) {
                break n;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no job carrying the spend within {LIMIT:?}; log:\n{}", pool.log()));
    assert_eq!(after["params"][1], before["params"][1], "same previous block");
    assert_eq!(after["params"][8], json!(false), "a fee update does not make miners drop their work");
    assert_ne!(after["params"][0], before["params"][0], "a new job");
    let branch = after["params"][4].as_array().unwrap();
    assert_eq!(branch.len(), 1, "one transaction besides the coinbase");
    let txid = ckpool::hex::decode(branch[0].as_str().unwrap()).unwrap();
    assert_eq!(ckpool::hex::encode_rev(&txid), sent.txid, "the branch is the spend");
    assert_eq!(node.call("getbestblockhash", json!([])).await.as_str().unwrap(), tip, "no new block");
}

/// Forwards a unix socket to the node's IPC socket: the one fault the real node cannot produce
/// while its RPC stays up (the IPC connection gone, getblocktemplate still answering). `cut`
/// drops every forwarded connection and removes the socket; `restore` listens again.
struct IpcCut {
    path: PathBuf,
    target: PathBuf,
    conns: Option<JoinSet<()>>,
}

impl IpcCut {
    fn new(path: PathBuf, target: PathBuf) -> IpcCut {
        let mut cut = IpcCut { path, target, conns: None };
        cut.restore();
        cut
    }

    fn restore(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        let target = self.target.clone();
        let mut set = JoinSet::new();
        set.spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((mut a, _)) = listener.accept().await {
                let target = target.clone();
                conns.spawn(async move {
                    if let Ok(mut b) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                    }
                });
            }
        });
        self.conns = Some(set);
    }

    fn cut(&mut self) {
        // Dropping the set aborts the accept loop, which drops (aborts) every forwarding task.
        self.conns = None;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The IPC link lost while a miner works: one log line, getblocktemplate serves at once (a new
/// block meanwhile reaches the miner by polling), the link comes back by itself (a log line)
/// and templates come over IPC again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_ipc_falls_back_to_getblocktemplate_and_returns() {
    let (node, addr, _) = ipc_node().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cut = IpcCut::new(dir.path().join("ipc.sock"), node.ipc_socket());
    let mut pool = Pool::start(ipc_config(&node, &addr, &cut.path), &[]);
    pool.wait_log(ON_IPC, LIMIT);
    let mut c = Client::connect(&pool.addr()).await;
    c.handshake("cut.worker").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    c.notify_on_tip(&tip).await;

    cut.cut();
    pool.wait_log("ipcmining: connection to", LIMIT);
    assert!(pool.log().contains("templates from getblocktemplate until it is back"), "{}", pool.log());
    // A block while IPC is down reaches the miner through getblocktemplate (polling).
    let tip = node.generate_to(1, &addr).await.remove(0);
    c.notify_on_tip(&tip).await;
    let line = wait_template(&pool, 103).await;
    assert!(!line.contains("(Ipc;"), "IPC was down, yet: {line}");

    cut.restore();
    pool.wait_log_count(ON_IPC, 2, Duration::from_secs(60));
    let tip = node.generate_to(1, &addr).await.remove(0);
    c.notify_on_tip(&tip).await;
    assert!(wait_template(&pool, 104).await.contains("(Ipc;"), "back on IPC; log:\n{}", pool.log());
}

/// Empty-first over IPC: on a new tip the node wakes two waits of the pool's, the full
/// template's and one on a coinbase-only template (`createNewBlock` without the mempool). The
/// empty one costs the node a coinbase and a header and reaches the miner first, unless the full
/// one's assembly took the node's lock first (then the late empty template is dropped). With
/// spends in the mempool, over up to 10 blocks: every first job on a new tip builds on it and
/// is clean; when it is the empty one the full template follows, clean too; at least one block
/// gets the empty job first, and a block solved on it is accepted (by submitblock and by
/// submitSolution on the node's own empty template).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_ipc_the_nodes_empty_template_comes_first_and_mines() {
    let (node, addr, first) = ipc_node().await;
    let key = regtest_key(21);
    let mut u = Utxo::coinbase_of(&node, &first).await;
    for _ in 0..3 {
        u = spend(&node, &key, &u, &addr, 1_000).await;
    }
    let mut pool = Pool::start(ipc_config(&node, &addr, &node.ipc_socket()), &[]);
    pool.wait_log(ON_IPC, LIMIT);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("ipc.empty").await;
    let log = |pool: &Pool| format!("pool log:\n{}", pool.log());
    let mut found = None;
    let mut full_first = 0;
    for _ in 0..10 {
        // A block without the mempool's spends: they stay for the next full template.
        let tip = node.call("generateblock", json!([addr, []])).await["hash"].as_str().unwrap().to_string();
        let n = c.notify_on_tip(&tip).await;
        assert_eq!(n["params"][8], json!(true), "the first job on a new tip is clean; {}", log(&pool));
        if n["params"][4] != json!([]) {
            full_first += 1;
            continue;
        }
        let full = c.notify_on_tip(&tip).await;
        assert_ne!(full["params"][4], json!([]), "the full template follows the empty one; {}", log(&pool));
        assert_eq!(full["params"][8], json!(true), "and goes out clean");
        found = Some((tip, n));
        break;
    }
    let (tip, empty) = found
        .unwrap_or_else(|| panic!("the full template beat the empty one on all {full_first} blocks; {}", log(&pool)));
    pool.wait_log("empty-first: the node's coinbase-only template on", LIMIT);

    let block = solve(&empty, &en1, "00000000000000e3", "0.0001", true).expect("a regtest block on the empty job");
    let id = c.request("mining.submit", block).await;
    assert_eq!(c.reply(id).await["result"], json!(true), "{}", log(&pool));
    let best = node.wait_tip_not(&tip, LIMIT, || log(&pool)).await;
    let b = node.block(&best).await;
    assert_eq!(b.header.prev_blockhash.to_string(), tip);
    assert_eq!(b.txdata.len(), 1, "coinbase only");
    assert!(b.check_merkle_root() && b.check_witness_commitment());
    pool.wait_blocks_log(&best);
    pool.wait_log("ipcmining: submitSolution: the node took the block", LIMIT);
}
