//! Issue #25: descriptors for a farm. The pool binary runs with a low RLIMIT_NOFILE (set in the
//! child before exec, as `prlimit` or a unit's LimitNOFILE= would) against a real regtest node:
//! it raises its soft limit to the hard one and logs the miners it serves; miners past that are
//! refused with an answer and one operator line; a block found at the ceiling reaches the node;
//! a miner that leaves frees its place. Loopback only; every wait has a deadline.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{pool_config, solve, Client, NodePair, Pool};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(60);
/// Soft and hard RLIMIT_NOFILE the pool starts with: the soft one is raised to the hard one.
const SOFT: u64 = 200;
const HARD: u64 = 320;

/// Starts the pool binary (`proxy`: in proxy mode) with RLIMIT_NOFILE = SOFT:HARD set in the
/// child before exec.
fn start_limited(cfg: Value, proxy: bool) -> Pool {
    let (mut pool, args) = if proxy { (Pool::prepare_proxy(cfg), &["-p"][..]) } else { (Pool::prepare(cfg), &[][..]) };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckpool"));
    cmd.args(pool.args(args));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, SOFT, HARD)
                .map_err(std::io::Error::from)
        });
    }
    pool.spawn_command(cmd);
    pool.wait_log(&format!("{} ready", pool.name), LIMIT);
    pool
}

/// The `N` of the start line "... serves up to N miners".
fn ceiling(log: &str) -> u64 {
    let line =
        log.lines().find(|l| l.contains("descriptors: ")).unwrap_or_else(|| panic!("no descriptors line:\n{log}"));
    let (_, rest) = line.split_once("serves up to ").unwrap_or_else(|| panic!("no ceiling in {line}"));
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The pool process's open descriptors (/proc/PID/fd).
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A miner past the ceiling: its subscribe is answered with error 20 naming the ceiling, then
/// the connection closes.
async fn expect_refused(addr: &str, ceiling: u64) {
    let mut c = Client::connect(addr).await;
    let id = c.request("mining.subscribe", json!(["ckpool-test/1.0"])).await;
    let r = c.read().await.expect("an answer before the close");
    assert_eq!(r["id"], json!(id), "{r}");
    assert_eq!(r["error"][0], json!(20), "{r}");
    let msg = r["error"][1].as_str().unwrap();
    assert!(msg.contains(&format!("at most {ceiling} miners")), "{msg}");
    assert!(c.read().await.is_none(), "closed after the answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miners_past_the_descriptor_ceiling_are_refused_and_a_block_still_reaches_the_node() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut cfg = pool_config(&nodes.a, &address).await;
    cfg["apiurl"] = json!(["127.0.0.1:0"]);
    let pool = start_limited(cfg, false);
    let log = pool.log();
    assert!(log.contains(&format!("soft limit raised from {SOFT} to {HARD} (the hard limit)")), "{log}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pool.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(line.split_whitespace().skip(3).take(2).collect::<Vec<_>>(), [HARD.to_string(), HARD.to_string()]);
    let n = ceiling(&log);
    assert!(n > 50 && n < HARD, "ceiling {n} of {HARD}");

    // Exactly `n` miners are served.
    let addr = pool.addr();
    let mut miners = Vec::new();
    for i in 0..n {
        let mut c = Client::connect(&addr).await;
        let (en1, _) = c.handshake(&format!("farm.rig{i}")).await;
        miners.push((c, en1));
    }
    // The next ones are refused, with one operator line for all of them.
    for _ in 0..5 {
        expect_refused(&addr, n).await;
    }
    let refusals = |log: &str| log.lines().filter(|l| l.contains("the most the descriptor limit allows")).count();
    let deadline = Instant::now() + LIMIT;
    while refusals(&pool.log()) == 0 {
        assert!(Instant::now() < deadline, "no refusal line; log:\n{}", pool.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = pool.log();
    assert_eq!(refusals(&log), 1, "one line per minute, not one per miner:\n{log}");
    let line = log.lines().find(|l| l.contains("the most the descriptor limit allows")).unwrap();
    for part in
        [&format!("{n} miners connected"), &format!("RLIMIT_NOFILE {HARD}"), "LimitNOFILE=", "systemctl edit ckpool"]
    {
        assert!(line.contains(part), "{part} in {line}");
    }
    assert!(open_fds(pool.pid()) < HARD as usize, "descriptors kept in reserve at the ceiling");

    // At the ceiling, a miner finds a block: submitblock needs a new connection to the node, and
    // the block log its files; both come from the reserve.
    let height = nodes.a.height().await;
    let (c, en1) = &mut miners[0];
    let notify = c.notification("mining.notify").await;
    let submit = solve(&notify, en1, "0000000000000001", "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let deadline = Instant::now() + LIMIT;
    while nodes.a.height().await != height + 1 {
        assert!(Instant::now() < deadline, "the block did not reach the node; log:\n{}", pool.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    pool.wait_blocks_log("accepted");
    // The API still answers at the ceiling (its connections are reserved too).
    let log = pool.log();
    let api = log
        .lines()
        .find_map(|l| l.split_once("serving the operator API on ").map(|(_, a)| a.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("no API line in the log:\n{log}"));
    let answer = http_get(api, "/metrics").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A miner that leaves frees its place for the next one.
    drop(miners.pop());
    let deadline = Instant::now() + LIMIT;
    loop {
        let mut c = Client::connect(&addr).await;
        let id = c.request("mining.subscribe", json!(["ckpool-test/1.0"])).await;
        let r = c.read().await.expect("an answer");
        if r["id"] == json!(id) && r["error"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "no place freed: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(miners);
}

/// A plain HTTP/1.1 GET over loopback; the whole answer as text. Bounded.
async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await.expect("API answered").unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Proxy mode shares the accept step: at its own ceiling the proxy refuses with the same answer
/// and one line naming ckproxy's unit, and a block found through it still reaches the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_refuses_past_its_ceiling_and_still_forwards_a_block() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let pool = Pool::start(pool_config(&nodes.a, &address).await, &[]);
    let cfg = json!({
        "proxy": [{"url": pool.addr(), "auth": "proxyuser.p0", "pass": "x"}],
        "btcaddress": "",
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "maxdiff": 0,
    });
    let proxy = start_limited(cfg, true);
    let n = ceiling(&proxy.log());
    let addr = proxy.addr();
    let mut miners = Vec::new();
    for i in 0..n {
        let mut c = Client::connect(&addr).await;
        let (en1, _) = c.handshake(&format!("farm.rig{i}")).await;
        miners.push((c, en1));
    }
    expect_refused(&addr, n).await;
    expect_refused(&addr, n).await;
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = proxy.log();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("the most the descriptor limit allows")).collect();
        if let Some(l) = lines.first() {
            assert_eq!(lines.len(), 1, "{log}");
            assert!(l.contains("systemctl edit ckproxy"), "{l}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal line; log:\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let height = nodes.a.height().await;
    let (c, en1) = &mut miners[0];
    let notify = c.notification("mining.notify").await;
    let submit = solve(&notify, en1, "00000001", "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let deadline = Instant::now() + LIMIT;
    while nodes.a.height().await != height + 1 {
        assert!(Instant::now() < deadline, "the block did not reach the node; proxy log:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ceiling is one for the process: with every place taken by SV1 miners, an SV2 connection
/// is closed before its Noise handshake, and the refusal line names the SV2 listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sv2_miner_past_the_shared_ceiling_is_closed() {
    use ckpool::sv2::client::Sv2Client;
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut cfg = pool_config(&nodes.a, &address).await;
    cfg["sv2url"] = json!("127.0.0.1:0");
    let keydir = tempfile::tempdir().unwrap();
    cfg["sv2_authority_key"] = json!(keydir.path().join("sv2_authority.key").display().to_string());
    let pool = start_limited(cfg, false);
    let log = pool.log();
    let line = log.lines().find(|l| l.contains("listening for Stratum V2 miners on")).expect("sv2 listening line");
    let rest = line.split("listening for Stratum V2 miners on ").nth(1).unwrap();
    let (sv2_addr, url) = rest.split_once(": ").unwrap();
    let key = ckpool::sv2::keys::parse_public(url.trim().rsplit('/').next().unwrap()).unwrap();
    let sock: std::net::SocketAddr = sv2_addr.parse().unwrap();
    let n = ceiling(&log);
    let addr = pool.addr();
    let mut miners = Vec::new();
    for i in 0..n {
        let mut c = Client::connect(&addr).await;
        c.handshake(&format!("farm.rig{i}")).await;
        miners.push(c);
    }
    let r = tokio::time::timeout(Duration::from_secs(20), Sv2Client::handshake(sock, &key)).await.expect("bounded");
    assert!(r.is_err(), "an SV2 miner past the ceiling is closed");
    let deadline = Instant::now() + LIMIT;
    while !pool.log().lines().any(|l| l.contains("the most the descriptor limit allows") && l.contains("(sv2)")) {
        assert!(Instant::now() < deadline, "no refusal line for the SV2 listener; log:\n{}", pool.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A place freed by an SV1 miner serves an SV2 miner.
    drop(miners.pop());
    let deadline = Instant::now() + LIMIT;
    while tokio::time::timeout(Duration::from_secs(20), Sv2Client::handshake(sock, &key))
        .await
        .expect("bounded")
        .is_err()
    {
        assert!(Instant::now() < deadline, "no place freed for an SV2 miner; log:\n{}", pool.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(miners);
}
