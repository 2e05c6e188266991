//! Interoperability with an independent stratum implementation: aiostratum-proxy 1.1 (PyPI, an
//! asyncio stratum proxy), chained with this project's pool and proxy on a real regtest bitcoind
//! pair. contrib/setup.sh installs it in a venv under .regtest/aiostratum; it is started through
//! contrib/interop/aiostratum_launch.py (a PyYAML 6 shim, aiostratum's code untouched) with its
//! base stratum classes (`aiostratum_proxy.protocols.stratum`, the SHA256d ones) on 127.0.0.1.
//!
//! What aiostratum does that needs care (read from its code, confirmed by these tests):
//! - it connects upstream only once a miner has connected, and authorizes upstream (with its own
//!   account) only when a miner authorizes; the pool starts work after that authorize, so the
//!   first miner gets set_difficulty + notify, but a miner joining later gets neither on
//!   subscribe: it waits for the pool's next broadcast (the pool's config here has
//!   `update_interval` 2) and never hears the difficulty until the pool changes it;
//! - it answers `mining.configure` with "method not found" (no version rolling) and replaces a
//!   pool's reject error with a bare `result: false`;
//! - with `max_workers` 256 or 65536 it splits the nonce space: miners get the pool's
//!   extranonce1 + a 1- or 2-byte tail and a smaller extranonce2, but its Bitcoin classes forward
//!   the miner's extranonce2 without putting the tail back in front (its Equihash classes do), so
//!   every share from a miner that honours what it was given is the wrong length upstream. That
//!   is aiostratum's bug; `max_workers: 1` (its "solo" mode, one nonce space, passed through
//!   unchanged) is what works, and the chains below use it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, pool_config, solve, wait, Client, Node, NodePair, Pool};
use serde_json::{json, Value};

/// The account aiostratum authorizes with upstream (it has a '.', so aiostratum does not append
/// the miner's worker suffix to it).
const AIO_ACCOUNT: &str = "aio.proxy";

/// The venv's python that contrib/setup.sh creates.
fn aio_python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = root.join(".regtest/aiostratum/bin/python");
    assert!(
        py.exists(),
        "aiostratum-proxy is missing (no {}): run `bash contrib/setup.sh` (the README's test command does)",
        py.display()
    );
    py
}

/// A running aiostratum-proxy; killed and reaped on Drop.
struct Aiostratum {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Aiostratum {
    /// Writes its YAML config (one proxy: listen on 127.0.0.1, one upstream `upstream`,
    /// `max_workers` 1, 256 or 65536) and starts it, waiting (≤ 30 s) until it is listening.
    fn start(upstream: &str, max_workers: u32) -> Aiostratum {
        let py = aio_python();
        let launcher = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/interop/aiostratum_launch.py");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let (host, up_port) = upstream.rsplit_once(':').unwrap();
        let config = format!(
            "proxies:\n\
             - name: interop\n  \
               max_workers: {max_workers}\n  \
               worker_class: aiostratum_proxy.protocols.stratum.StratumWorkerProtocol\n  \
               pool_class: aiostratum_proxy.protocols.stratum.StratumPoolProtocol\n  \
               listen:\n  \
               - host: 127.0.0.1\n    \
                 port: {port}\n  \
               pools:\n  \
               - name: upstream\n    \
                 host: {host}\n    \
                 port: {up_port}\n    \
                 account_name: {AIO_ACCOUNT}\n    \
                 account_password: x\n"
        );
        let config_path = dir.path().join("aiostratum.yaml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("aiostratum.log")).unwrap();
        let child = Command::new(py)
            .arg("-u")
            .arg(launcher)
            .arg("--config")
            .arg(&config_path)
            .arg("--loud")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start aiostratum-proxy");
        let mut aio = Aiostratum { child: Some(child), port, dir };
        let listening = || {
            if let Some(status) = aio.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("aiostratum-proxy exited ({status}) before listening; its log:\n{}", aio.log());
            }
            aio.log().contains("waiting for worker connections")
        };
        wait::blocking("aiostratum-proxy to listen", Duration::from_secs(30), listening);
        aio
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("aiostratum.log")).unwrap_or_default()
    }
}

impl Drop for Aiostratum {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `ckpool mine` as a child process; killed and reaped on Drop.
struct Miner(Child);

impl Miner {
    fn start(url: &str, user: &str, out: &Path) -> Miner {
        let f = std::fs::File::create(out).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ckpool"))
            .args(["mine", "-o", &format!("stratum+tcp://{url}"), "-u", user, "-p", "x", "-t", "1", "-P"])
            .args(["--duration", "90"])
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start ckpool mine");
        Miner(child)
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test pool's config: a notify at least every 2 s, since aiostratum gives a miner that
/// joins later nothing until the pool's next broadcast.
async fn interop_pool_config(node: &Node) -> Value {
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["update_interval"] = json!(2);
    cfg
}

fn proxy_config(upstream: &str, diff: f64) -> Value {
    json!({
        "proxy": [{"url": upstream, "auth": "ckproxy.user", "pass": "x"}],
        "btcaddress": "",
        "mindiff": diff,
        "startdiff": diff,
        "maxdiff": 0,
    })
}

async fn wait_height_above(node: &Node, h: u64, what: &str, context: &dyn Fn() -> String) {
    let what = format!("{what}: node height above {h}");
    wait::until_async_or(&what, Duration::from_secs(45), move || async move { node.height().await > h }, context).await;
}

/// Share log lines of `pool` written for `worker`, waiting (≤ 10 s) until one satisfies `pred`.
async fn wait_share_line(pool: &Pool, worker: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let found = || pool.share_lines().into_iter().find(|l| l["workername"] == json!(worker) && pred(l));
    let context = || format!("its share lines: {:?}", pool.share_lines());
    wait::until_or(&format!("such a share from {worker} in the pool's log"), Duration::from_secs(10), found, context)
        .await
}

/// (a) this project's pool ← aiostratum-proxy ← this project's stratum client: the client uses
/// the extranonce1 and extranonce2 size aiostratum gives it; its share is accepted and, on
/// regtest, is a block the node takes. A second miner joining later gets no job on subscribe
/// (aiostratum sends none) but the pool's next broadcast, and mines on it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_aiostratum_client_block() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let pool = Pool::start(interop_pool_config(node).await, &[]);
    let aio = Aiostratum::start(&pool.addr(), 1);
    let ctx = || format!("aiostratum log:\n{}\npool log:\n{}", aio.log(), pool.log());

    let mut c = Client::connect(&aio.addr()).await;
    let (en1, n2) = c.handshake("miner.one").await;
    // Solo mode: the pool's own extranonce1 (4 bytes) and extranonce2 size (8) pass through.
    assert_eq!((en1.len() / 2, n2), (4, 8), "{}", ctx());
    // The upstream authorize made the pool start work; aiostratum relayed it to this miner.
    let d = c.notification("mining.set_difficulty").await;
    assert_eq!(d["params"], json!([0.0001]));
    let notify = c.notification("mining.notify").await;
    let h = node.height().await;
    let en2 = format!("{:0width$x}", 0xa1u32, width = n2 * 2);
    let s = solve(&notify, &en1, &en2, "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "share through aiostratum: {r}\n{}", ctx());
    wait_height_above(node, h, "block through aiostratum", &ctx).await;
    // The block is credited to aiostratum's account.
    pool.wait_blocks_log(AIO_ACCOUNT);
    let line = wait_share_line(&pool, AIO_ACCOUNT, |l| l["result"] == json!(true)).await;
    assert_eq!(line["nonce2"], json!(en2), "{line}");
    assert_eq!(pool.log().matches("miner authorized").count(), 1, "the pool sees one miner: aiostratum");

    // A second miner: aiostratum answers subscribe and authorize (its upstream account is
    // already authorized) and sends nothing else, so this miner waits for the pool's next
    // broadcast, which comes on the tip after the first block.
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let mut c2 = Client::connect(&aio.addr()).await;
    let (en1b, n2b) = c2.handshake("miner.two").await;
    assert_eq!((&en1b, n2b), (&en1, n2), "solo mode: one nonce space shared by every miner");
    let started = Instant::now();
    let n = c2.notify_on_tip(&tip).await;
    assert!(
        !c2.backlog.iter().any(|v| v["method"] == json!("mining.set_difficulty")),
        "aiostratum does not repeat the difficulty to a miner joining later: {:?}",
        c2.backlog
    );
    println!("second miner's first job on the new tip after {:?}", started.elapsed());
    let h = node.height().await;
    let en2 = format!("{:0width$x}", 0xb2u32, width = n2 * 2);
    let s = solve(&n, &en1b, &en2, "0.0001", false).unwrap();
    let id = c2.request("mining.submit", s).await;
    let r = c2.reply(id).await;
    assert_eq!(r["result"], json!(true), "second miner's share: {r}\n{}", ctx());
    wait_height_above(node, h, "second miner's block through aiostratum", &ctx).await;
}

/// (a) with this project's CPU miner binary: pool ← aiostratum-proxy ← `ckpool mine` finds
/// blocks the node accepts. (aiostratum refuses its mining.configure, so it mines without
/// version rolling.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_aiostratum_ckpool_mine_blocks() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let pool = Pool::start(interop_pool_config(node).await, &[]);
    let aio = Aiostratum::start(&pool.addr(), 1);
    let h = node.height().await;
    let out = aio.dir.path().join("mine.out");
    let _miner = Miner::start(&aio.addr(), "miner.cpu", &out);
    let ctx = || {
        format!(
            "miner output:\n{}\naiostratum log:\n{}\npool log:\n{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            aio.log(),
            pool.log()
        )
    };
    wait_height_above(node, h + 1, "two blocks from ckpool mine through aiostratum", &ctx).await;
    let accepted = pool.share_lines().iter().filter(|l| l["result"] == json!(true)).count();
    assert!(accepted >= 2, "the pool accepted {accepted} shares\n{}", ctx());
    let mine = std::fs::read_to_string(&out).unwrap();
    assert!(mine.contains("\"mining.configure\""), "the miner asked for version rolling:\n{mine}");
    assert!(
        mine.contains("handle_mining_configure` not found"),
        "aiostratum answers mining.configure with method-not-found:\n{mine}"
    );
    // Every share at the pool difficulty is a block here, so a share found on the old tip before
    // the next block's notify reaches the miner is stale; anything else would be an interop fault.
    assert!(
        pool.share_lines().iter().all(|l| l["reject-reason"].is_null() || l["reject-reason"] == json!("Stale")),
        "only stale rejects are expected: {:?}",
        pool.share_lines()
    );
}

/// aiostratum's nonce-space split (`max_workers` 256): the miner is given extranonce1 = pool's +
/// a 1-byte tail and one byte less of extranonce2, and honours it; aiostratum forwards its
/// extranonce2 without the tail, so the pool gets 7 bytes where its job has 8 and rejects the
/// share. That is aiostratum's bug (its Bitcoin stratum classes lack what its Equihash classes
/// do: prepend the tail). The same solved share with the tail put back in front, as aiostratum
/// should have sent it, is accepted and is a block: the miner's work and the pool were right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiostratum_nonce_split_loses_its_tail() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let pool = Pool::start(interop_pool_config(node).await, &[]);
    let aio = Aiostratum::start(&pool.addr(), 256);
    let ctx = || format!("aiostratum log:\n{}\npool log:\n{}", aio.log(), pool.log());

    let mut c = Client::connect(&aio.addr()).await;
    let (en1, n2) = c.handshake("miner.split").await;
    assert_eq!((en1.len() / 2, n2), (5, 7), "aiostratum gives 4 (pool) + 1 (its tail) and 8 - 1: {en1} {n2}");
    let tail = en1[8..].to_string();
    let notify = c.notification("mining.notify").await;
    let h = node.height().await;
    let en2 = format!("{:0width$x}", 0xc3u32, width = n2 * 2);
    let s = solve(&notify, &en1, &en2, "0.0001", false).unwrap();
    let id = c.request("mining.submit", s.clone()).await;
    let r = c.reply(id).await;
    assert_eq!(
        r["result"],
        json!(false),
        "aiostratum 1.1 bug: its Bitcoin classes forward the miner's {n2}-byte extranonce2 without its tail \
         {tail}, so the pool must reject it (if this share was accepted, aiostratum has been fixed): {r}\n{}",
        ctx()
    );
    let rejected = wait_share_line(&pool, AIO_ACCOUNT, |l| l["result"] == json!(false)).await;
    assert_eq!(rejected["nonce2"], json!(en2), "the pool got the miner's extranonce2 without the tail: {rejected}");
    assert_eq!(
        rejected["reject-reason"],
        json!(format!("Invalid nonce2 length: expected {} bytes, got {n2}", n2 + 1)),
        "{rejected}"
    );
    assert_eq!(node.height().await, h, "a rejected share is no block");

    // The same share with aiostratum's tail in front of the extranonce2: what it should forward.
    let mut fixed = s;
    fixed[2] = json!(format!("{tail}{en2}"));
    let id = c.request("mining.submit", fixed).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "the miner's share with the tail restored: {r}\n{}", ctx());
    wait_height_above(node, h, "the restored share's block", &ctx).await;
}

/// (b) pool ← this project's proxy (ckproxy mode) ← aiostratum-proxy ← this project's client:
/// aiostratum as a downstream of our proxy; the miner's share is a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_ckproxy_aiostratum_client_block() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let pool = Pool::start(interop_pool_config(node).await, &[]);
    let proxy = Pool::start_proxy(proxy_config(&pool.addr(), 0.0001));
    let aio = Aiostratum::start(&proxy.addr(), 1);
    let ctx = || format!("aiostratum log:\n{}\nproxy log:\n{}\npool log:\n{}", aio.log(), proxy.log(), pool.log());

    let mut c = Client::connect(&aio.addr()).await;
    let (en1, n2) = c.handshake("miner.b1").await;
    assert_eq!((en1.len() / 2, n2), (8, 4), "our proxy gives 4 + 4 and keeps 4 of extranonce2 for the miner");
    let notify = c.notification("mining.notify").await;
    let h = node.height().await;
    let s = solve(&notify, &en1, "0000b1b1", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}\n{}", ctx());
    wait_height_above(node, h, "block through ckproxy ← aiostratum", &ctx).await;
    // Upstream of our proxy: the share under the proxy's account, extranonce2 = its prefix + the miner's.
    let line = wait_share_line(&pool, "ckproxy.user", |l| l["result"] == json!(true)).await;
    assert_eq!(line["nonce2"], json!(format!("{}0000b1b1", &en1[8..])), "{line}");
}

/// (b) pool ← aiostratum-proxy ← this project's proxy (ckproxy mode) ← this project's client:
/// our proxy's upstream is aiostratum (which refuses its mining.configure); the share is a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_aiostratum_ckproxy_client_block() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let pool = Pool::start(interop_pool_config(node).await, &[]);
    let aio = Aiostratum::start(&pool.addr(), 1);
    let proxy = Pool::start_proxy(proxy_config(&aio.addr(), 0.0001));
    let ctx = || format!("aiostratum log:\n{}\nproxy log:\n{}\npool log:\n{}", aio.log(), proxy.log(), pool.log());

    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, n2) = c.handshake("miner.b2").await;
    assert_eq!((en1.len() / 2, n2), (8, 4), "the pool's 4 bytes through aiostratum + our proxy's 4");
    let notify = c.notification("mining.notify").await;
    let h = node.height().await;
    let s = solve(&notify, &en1, "0000b2b2", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "{r}\n{}", ctx());
    wait_height_above(node, h, "block through aiostratum ← ckproxy", &ctx).await;
    // aiostratum replaced our proxy's account with its own upstream.
    let line = wait_share_line(&pool, AIO_ACCOUNT, |l| l["result"] == json!(true)).await;
    assert_eq!(line["nonce2"], json!(format!("{}0000b2b2", &en1[8..])), "{line}");
}
