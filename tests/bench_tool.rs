//! `ckpool bench` against the real pool on a regtest node pair: the load it generates is judged
//! by the server (every unsolved share rebuilt, hashed and refused as low difficulty), and it
//! reports its figures; non-loopback targets are refused.

mod common;

use std::process::{Command, Output};

use common::{pool_config, wait, NodePair, Pool, RPC_PASS, RPC_USER};
use serde_json::json;

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckpool")).arg("bench").args(args).output().expect("run ckpool bench")
}

/// The first number after `key` in `line`.
fn number_after(line: &str, key: &str) -> f64 {
    let rest = &line[line.find(key).unwrap_or_else(|| panic!("no {key:?} in {line:?}")) + key.len()..];
    let num: String = rest.trim_start().chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '-').collect();
    num.parse().unwrap_or_else(|e| panic!("no number after {key:?} in {line:?}: {e}"))
}

fn line_with<'a>(out: &'a str, tag: &str) -> &'a str {
    out.lines().find(|l| l.contains(tag)).unwrap_or_else(|| panic!("no {tag} line in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_loads_the_pool_with_unsolved_shares() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    // Every bench share is unsolved (rejected): banning would close the bench's connections
    // after 500 of them. A check never reached keeps the counting on the share path.
    cfg["ban_check_shares"] = json!(1_000_000_000);
    let pool = Pool::start(cfg, &[]);
    let cli = common::node_bin().with_file_name("bitcoin-cli");
    let trigger = format!(
        "{} -regtest -rpcuser={RPC_USER} -rpcpassword={RPC_PASS} -rpcport={} generate 1",
        cli.display(),
        node.rpc_port
    );
    let height_before = node.height().await;
    let url = format!("stratum+tcp://{}", pool.addr());
    let pid = pool.pid().to_string();
    let out = tokio::task::spawn_blocking(move || {
        bench(&[
            "--url",
            &url,
            "--connections",
            "20",
            "--window",
            "4",
            "--duration",
            "2",
            "--idle",
            "5",
            "--server-pid",
            &pid,
            "--trigger",
            &trigger,
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stdout}\n{stderr}");

    // Every connection came up, shares were answered, all refused as low difficulty.
    assert!(stdout.contains("25/25 connections working"), "{stdout}");
    let result = line_with(&stdout, "RESULT");
    let answers = number_after(result, "RESULT");
    assert!(answers > 0.0, "{result}");
    assert_eq!(number_after(result, "accepted"), 0.0, "{result}");
    assert!(result.contains("Above target: "), "{result}");
    let above = number_after(result, "Above target:");
    // Shares outstanding when the block changed come back stale; everything else is low difficulty.
    assert!(above >= answers * 0.9, "{result}");
    // Every answer the bench counted was matched to the submit it answers (its latency taken).
    let latency = line_with(&stdout, "LATENCY");
    let total = line_with(&stdout, "TOTAL from the first connection");
    assert_eq!(number_after(latency, "us ("), number_after(total, "connection:"), "{latency}\n{total}");

    // The trigger's block reached every working connection as one clean notify.
    assert_eq!(node.height().await, height_before + 1);
    let trig = line_with(&stdout, "TRIGGER");
    assert!(trig.contains("(25/25 connections)"), "{trig}");
    assert!(number_after(trig, "first") <= number_after(trig, "last"), "{trig}");
    let notify = line_with(&stdout, "NOTIFY");
    assert!(notify.contains("reached 25/25 connections"), "{notify}");

    // Server figures from /proc.
    let server = line_with(&stdout, "us/share");
    // The pool hashed and logged every answered share: it spent CPU on them.
    assert!(number_after(server, "cpu") > 0.0, "{server}");
    let memory = line_with(&stdout, "bytes/connection");
    assert!(memory.contains("with 25 connections up"), "{stdout}");
    // Both all resident memory and its anonymous part (heap and stacks) are given per connection.
    assert!(memory.contains("(anon "), "{memory}");

    // The server's own record: every share hashed and logged as "Above target", none accepted.
    let all_logged = || Some(pool.share_lines()).filter(|s| s.len() as f64 >= answers);
    let shares = wait::blocking_or(
        &format!("{answers} share log lines"),
        std::time::Duration::from_secs(20),
        all_logged,
        || format!("{} share log lines", pool.share_lines().len()),
    );
    assert!(shares.iter().all(|s| s["result"] == json!(false)), "a bench share was accepted");
    let low: Vec<_> = shares.iter().filter(|s| s["reject-reason"] == json!("Above target")).collect();
    assert!(low.len() as f64 >= above, "{} logged Above target, bench saw {above}", low.len());
    // Hashed by the server: each low-difficulty reject carries the share's hash and difficulty.
    assert!(low.iter().all(|s| s["hash"].as_str().is_some_and(|h| h.len() == 64) && s["sdiff"].as_f64().is_some()));
    // Extranonce2 rolls and nonces differ.
    let en2s: std::collections::HashSet<_> = low.iter().map(|s| s["nonce2"].as_str().unwrap().to_string()).collect();
    assert!(en2s.len() > 20, "{} distinct extranonce2 values", en2s.len());
    assert!(low.iter().all(|s| s["nonce2"].as_str().unwrap().len() == 16));
}

/// `--accepted` against a PPLNS pool pinned at difficulty 1e-12: every share the bench sends is
/// accepted, and every one reaches the PPLNS window (the snapshot the clean stop writes holds
/// one unit per accepted share, for the bench's address).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_accepted_shares_reach_the_pplns_window() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    for k in ["mindiff", "startdiff", "maxdiff"] {
        cfg[k] = json!(0.000000000001);
    }
    cfg["payout_scheme"] = json!("pplns");
    cfg["pplns_window"] = json!(1_000_000);
    let mut pool = Pool::start(cfg, &[]);
    let url = format!("stratum+tcp://{}", pool.addr());
    let user = format!("{address}.bench");
    let out = tokio::task::spawn_blocking(move || {
        bench(&["--url", &url, "--connections", "5", "--window", "4", "--duration", "2", "--accepted", "-u", &user])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "bench failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let total = line_with(&stdout, "TOTAL from the first connection");
    let accepted = number_after(total, "accepted");
    assert!(accepted > 0.0, "{total}");
    assert_eq!(number_after(total, "connection:"), accepted, "every answer an acceptance: {total}");
    pool.stop();
    let snap = ckpool::pool::pplns::snapshot::read(&pool.logdir).unwrap().expect("a snapshot at the stop");
    let mut payees = std::collections::BTreeMap::new();
    for (k, w) in snap.slices.iter().flatten() {
        *payees.entry(k.clone()).or_insert(0u128) += w;
    }
    assert_eq!(payees.len(), 1, "{payees:?}");
    let units = *payees.values().next().unwrap() as f64;
    // Shares still outstanding when the bench stopped may be credited without an answer read.
    assert!(units >= accepted && units <= accepted + 20.0, "window {units} units, bench {total}");
}

#[test]
fn bench_refuses_non_loopback_targets() {
    for url in ["stratum+tcp://192.0.2.1:3333", "stratum+tcp://[2001:db8::1]:3333"] {
        let out = bench(&["--url", url, "--connections", "1", "--duration", "1"]);
        assert!(!out.status.success(), "{url} was not refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("only targets loopback addresses"), "{url}: {err}");
    }
}
