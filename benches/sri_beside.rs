//! Our Stratum V2 beside SRI's `pool_sv2` (issue 31), on one bench: the same Bitcoin Core
//! (bitcoin-node with IPC, regtest), the same load generator (`ckpool bench --sv2 KEY`), one
//! pool after the other:
//! - CPU per share and shares/s: 20 extended channels × 16 pipelined shares for 10 s;
//! - memory per idle channel: 1,000 connections.
//!
//! Both pools take their templates over IPC from the same node. The bench's shares are unsolved,
//! so each is rebuilt and hashed by the pool and refused (or, where a pool's channel target is
//! easier than the bench can miss, counted). The figures are the bench's own `bench: RESULT` and
//! `bench: SERVER` lines, printed under each pool's name.
//!
//! Run: `cargo bench --bench sri_beside` (release). Needs bitcoin-node and pool_sv2
//! (contrib/setup.sh); says so and stops without them.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::core_node::{regtest_key, CoreNode};
use common::sri::SriPool;
use common::{wait, Pool};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);

fn main() {
    if std::env::args().skip(1).any(|a| !a.starts_with('-') && !"sri_beside".contains(a.as_str())) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest");
    for bin in ["core/bitcoin-node", "pool_sv2"] {
        if !root.join(bin).exists() {
            println!("sri_beside: no {} (run contrib/setup.sh); nothing measured", root.join(bin).display());
            return;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(run());
}

/// Runs `ckpool bench` against `addr` with `key`, measuring `pid`; prints its figure lines.
fn bench(who: &str, addr: &str, key: &str, pid: u32, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["bench", "--url", addr, "--sv2", key, "--server-pid", &pid.to_string(), "-q"])
        .args(args)
        .output()
        .expect("run ckpool bench");
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().filter(|l| l.contains("RESULT") || l.contains("SERVER")) {
        println!("sri_beside: {who}: {} -> {line}", args.join(" "));
    }
    if !out.status.success() {
        println!("sri_beside: {who}: bench failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
}

async fn run() {
    let node = CoreNode::start_ipc(&[]).await;
    let address = node.derive_address(&format!("wpkh({})", regtest_key(61).to_wif())).await;
    node.generate_to(101, &address).await;
    wait::until("the IPC socket", LIMIT, || node.ipc_socket().exists()).await;
    println!(
        "sri_beside: {} cores, load {}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    let share_args: &[&str] = &["--connections", "20", "--window", "16", "--duration", "10"];
    let idle_args: &[&str] = &["--connections", "0", "--idle", "1000", "--duration", "2"];

    {
        let sri = SriPool::start(&node, &address);
        let addr = format!("127.0.0.1:{}", sri.port);
        bench("SRI pool_sv2 0.7.0", &addr, &sri.key, sri.pid(), share_args);
        bench("SRI pool_sv2 0.7.0", &addr, &sri.key, sri.pid(), idle_args);
    }

    let mut cfg = node.pool_config(&address);
    cfg["ipcmining"] = json!(node.ipc_socket().display().to_string());
    cfg["sv2url"] = json!("127.0.0.1:0");
    let keydir = tempfile::tempdir().unwrap();
    cfg["sv2_authority_key"] = json!(keydir.path().join("authority.key").display().to_string());
    // As contrib/bench.sh: every bench share is unsolved; banning's check is set beyond reach.
    cfg["ban_check_shares"] = json!(1_000_000_000u64);
    cfg["mindiff"] = json!(1);
    cfg["startdiff"] = json!(42);
    for args in [share_args, idle_args] {
        // A fresh pool for each figure, as contrib/bench.sh does.
        let pool = Pool::start(cfg.clone(), &[]);
        let log = pool.log();
        let line = log.lines().find(|l| l.contains("listening for Stratum V2 miners on")).expect("the SV2 line");
        let rest = line.split("listening for Stratum V2 miners on ").nth(1).unwrap();
        let (addr, url) = rest.split_once(": ").unwrap();
        let key = url.trim().rsplit('/').next().unwrap();
        bench("ckpool-rs", addr, key, pool.pid(), args);
    }
}
