//! The per-connection path on real processes (regtest node pair, the pool and proxy binaries,
//! real HAProxy, Python's ssl module): TLS listeners, TLS upstreams with `tlsca`, the PROXY
//! protocol behind HAProxy, and each listener's own difficulties. Certificates are made at test
//! time (rcgen); nothing listens beyond 127.0.0.0/8.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ckpool::sv1::client::Client as Sv1Client;
use common::{free_port, pool_config, solve, wait, Client, NodePair, Pool};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem) under `dir`.
fn cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&c, ck.cert.pem()).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    (c, k)
}

/// A regtest node pair and the pool on it with `serverurl` as given and a fresh self-signed
/// certificate (`crt` and `key`, kept in `certs`) for its TLS listeners.
struct TlsPool {
    nodes: NodePair,
    certs: tempfile::TempDir,
    crt: PathBuf,
    key: PathBuf,
    pool: Pool,
}

impl TlsPool {
    async fn start(serverurl: Value) -> TlsPool {
        let nodes = NodePair::start().await;
        let address = nodes.a.new_address().await;
        let certs = tempfile::tempdir().unwrap();
        let (crt, key) = cert(certs.path(), "pool");
        let mut cfg = pool_config(&nodes.a, &address).await;
        cfg["serverurl"] = serverurl;
        cfg["tlscert"] = json!(crt);
        cfg["tlskey"] = json!(key);
        let pool = Pool::start(cfg, &[]);
        TlsPool { nodes, certs, crt, key, pool }
    }
}

/// The test client over TLS, trusting `ca`.
async fn tls_client(addr: &str, ca: &Path) -> Client {
    let config = ckpool::tls::client_config(Some(ca)).unwrap();
    let sv1 = Sv1Client::connect_tls(addr, config).await.unwrap_or_else(|e| panic!("TLS connect {addr}: {e:#}"));
    Client { sv1, backlog: Vec::new() }
}

/// Waits (≤ 20 s) until `log()` holds `needle`.
fn wait_for(what: &str, log: impl Fn() -> String, needle: &str) -> String {
    let cond = || Some(log()).filter(|t| t.contains(needle));
    wait::blocking_or(&format!("{what} to log {needle:?}"), Duration::from_secs(20), cond, &log)
}

/// A TLS miner mines blocks on the pool's TLS port (the project's client over rustls, and
/// Python's ssl module, OpenSSL, for the handshake and work); plain TCP to the TLS port is
/// refused with one log line and the pool goes on serving both ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_miner_and_plain_tcp_refused() {
    let TlsPool { nodes, certs, crt, key, pool } =
        TlsPool::start(json!(["127.0.0.1:0", "stratum+tls://127.0.0.1:0"])).await;
    let node = &nodes.a;
    let ports = pool.listener_ports();
    assert_eq!(ports.len(), 2, "{}", pool.log());
    let (plain, tls) = (format!("127.0.0.1:{}", ports[0]), format!("127.0.0.1:{}", ports[1]));
    assert!(pool.log().contains(&format!("listener {tls}: TLS")), "{}", pool.log());

    // A block through the TLS port.
    let mut c = tls_client(&tls, &crt).await;
    let (en1, _) = c.handshake("tls.miner").await;
    let n = c.notification("mining.notify").await;
    let h = node.height().await;
    let s = solve(&n, &en1, "00000000000000aa", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    node.wait_height_above(h, "block over TLS").await;
    pool.wait_blocks_log("tls.miner");

    // Plain TCP to the TLS port: a stratum line gets no stratum answer; the connection closes.
    let before = pool.log().matches("TLS handshake with").count();
    let mut raw = tokio::net::TcpStream::connect(&tls).await.unwrap();
    raw.write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n").await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), raw.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the TLS port kept a plain connection open");
    assert!(!String::from_utf8_lossy(&buf).contains("\"result\""), "a stratum answer in plain text: {buf:?}");
    let log = wait_for("pool", || pool.log(), "failed: received corrupt message");
    assert_eq!(log.matches("TLS handshake with").count(), before + 1, "one line for the refused connection:\n{log}");

    // The pool keeps serving: the TLS miner (connected before) and new miners on both ports.
    let mut p = Client::connect(&plain).await;
    p.handshake("plain.miner").await;
    p.notification("mining.notify").await;
    let mut t2 = tls_client(&tls, &crt).await;
    t2.handshake("tls.second").await;
    t2.notification("mining.notify").await;

    // `ckpool mine -o stratum+tls://` with --tlsca: accepted shares over TLS, then it stops.
    let mine = Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["mine", "-o", &format!("stratum+tls://{tls}"), "--tlsca", crt.to_str().unwrap()])
        .args(["-u", "mine.tls", "-t", "1", "-q", "--shares", "2", "--duration", "60"])
        .stdin(Stdio::null())
        .output()
        .expect("ckpool mine");
    assert!(mine.status.success(), "ckpool mine over TLS: {}", String::from_utf8_lossy(&mine.stderr));
    pool.wait_share_line("an accepted share from ckpool mine over TLS", |l| {
        l["workername"] == json!("mine.tls") && l["result"] == json!(true)
    });

    // OpenSSL as the client (Python's ssl module): handshake, subscribe, authorize, work.
    let script = r#"
import json, socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection((host, port), timeout=20) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as s:
        s.sendall(b'{"id":1,"method":"mining.subscribe","params":["python-ssl/1"]}\n'
                  b'{"id":2,"method":"mining.authorize","params":["py.worker","x"]}\n')
        f = s.makefile("rb")
        seen = {}
        while "mining.notify" not in seen or 2 not in seen:
            m = json.loads(f.readline())
            seen[m.get("method") or m.get("id")] = m
        print(s.version(), seen[1]["result"][2], seen["mining.set_difficulty"]["params"][0], seen[2]["result"])
"#;
    let out = Command::new("python3")
        .args(["-c", script, "127.0.0.1", &ports[1].to_string(), crt.to_str().unwrap()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python ssl client: {text} {}", String::from_utf8_lossy(&out.stderr));
    let f: Vec<&str> = text.split_whitespace().collect();
    assert!(f[0].starts_with("TLSv1."), "{text}");
    assert_eq!(&f[1..], ["8", "0.0001", "True"], "{text}");

    // SIGHUP (`systemctl reload`): a renewed certificate at the same paths serves new handshakes;
    // a client trusting only the old one is refused, one trusting the new one gets work.
    let old_ca = certs.path().join("old.crt");
    std::fs::copy(&crt, &old_ca).unwrap();
    let (crt2, key2) = cert(certs.path(), "renewed");
    std::fs::copy(&crt2, &crt).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pool.pid() as i32), nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_for("pool", || pool.log(), "TLS certificate reloaded from");
    // Refused in the handshake, for the certificate (rustls: UnknownIssuer or BadSignature).
    let refused = match Sv1Client::connect_tls(&tls, ckpool::tls::client_config(Some(&old_ca)).unwrap()).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("a client trusting only the old certificate completed a TLS handshake"),
    };
    assert!(refused.contains("TLS handshake with") && refused.contains("invalid peer certificate"), "{refused}");
    let mut t3 = tls_client(&tls, &crt2).await;
    t3.handshake("tls.renewed").await;
    t3.notification("mining.notify").await;
}

/// The pool's send queue to a connection (bytes its kernel holds unsent or unacknowledged),
/// from /proc/net/tcp: the socket on `pool_port` whose peer is `peer_port`, both on 127.0.0.1.
fn send_queue(pool_port: u16, peer_port: u16) -> Option<u64> {
    let (local, remote) = (format!("0100007F:{pool_port:04X}"), format!("0100007F:{peer_port:04X}"));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&remote.as_str()))
            .then(|| u64::from_str_radix(f.get(4)?.split(':').next()?, 16).ok())
            .flatten()
    })
}

/// A TLS miner that stops reading still gets its block to the node. It reads nothing after its
/// first notify and sends batches of requests (each answered) on a socket whose receive buffer
/// is 4 KB until the pool's send queue to it stops growing: the pool's write to it is then
/// pending. The block share it sends next is still read, handed to the block task and
/// accepted. (A TLS session that stopped reading while its write was pending failed this: the
/// block share was never read and the miner was dropped after 30 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_from_a_tls_miner_that_stopped_reading_is_accepted() {
    let TlsPool { nodes, certs: _certs, crt, pool, .. } = TlsPool::start(json!(["stratum+tls://127.0.0.1:0"])).await;
    let node = &nodes.a;
    let port = pool.listener_ports()[0];
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let tcp = sock.connect(format!("127.0.0.1:{port}").parse().unwrap()).await.unwrap();
    let peer = tcp.local_addr().unwrap().port();
    let config = ckpool::tls::client_config(Some(&crt)).unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let mut c = Client { sv1: Sv1Client::from_tls(tls), backlog: Vec::new() };
    let (en1, _) = c.handshake("tls.deaf").await;
    let n = c.notification("mining.notify").await;
    let block = solve(&n, &en1, "00000000000000bb", "0.0001", false).unwrap();
    let h = node.height().await;
    // From here on the client reads nothing. 1,000 requests a batch (about 40 KB of answers).
    let mut batch = String::new();
    for i in 0..1000 {
        batch.push_str(&format!("{{\"id\":{},\"method\":\"mining.extranonce.subscribe\",\"params\":[]}}\n", 100 + i));
    }
    let (mut last, mut pending) = (0, false);
    for _ in 0..200 {
        c.wr_bytes(batch.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let q = send_queue(port, peer).expect("the pool's socket in /proc/net/tcp");
        if q > 0 && q == last {
            pending = true;
            break;
        }
        last = q;
    }
    assert!(pending, "the pool's send queue to the miner never stopped growing ({last} bytes)");
    c.request("mining.submit", block).await;
    node.wait_height_above(h, "a block from a TLS miner that stopped reading").await;
    pool.wait_blocks_log("tls.deaf");
}

/// Two listeners with their own difficulties: a miner on each starts at its listener's
/// startdiff, and a suggestion below a listener's mindiff is raised to that mindiff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_has_its_own_difficulty() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["serverurl"] = json!([
        "127.0.0.1:0",
        {"url": "127.0.0.1:0", "mindiff": 512, "startdiff": 2048, "maxdiff": 4096},
    ]);
    let pool = Pool::start(cfg, &[]);
    let ports = pool.listener_ports();
    assert_eq!(ports.len(), 2, "{}", pool.log());
    assert!(pool.log().contains("mindiff 512 startdiff 2048 maxdiff 4096"), "{}", pool.log());
    let diff_of = |n: &Value| n["params"][0].as_f64().unwrap();

    let mut low = Client::connect(&format!("127.0.0.1:{}", ports[0])).await;
    low.handshake("low.w").await;
    assert_eq!(diff_of(&low.notification("mining.set_difficulty").await), 0.0001);
    let mut high = Client::connect(&format!("127.0.0.1:{}", ports[1])).await;
    high.handshake("high.w").await;
    assert_eq!(diff_of(&high.notification("mining.set_difficulty").await), 2048.0);
    // A suggestion is kept within the listener's mindiff..maxdiff.
    let mut sugg = Client::connect(&format!("127.0.0.1:{}", ports[1])).await;
    sugg.send_raw(r#"{"id":null,"method":"mining.suggest_difficulty","params":[1]}"#).await;
    sugg.handshake("sugg.w").await;
    assert_eq!(diff_of(&sugg.notification("mining.set_difficulty").await), 512.0);
    let mut over = Client::connect(&format!("127.0.0.1:{}", ports[1])).await;
    over.send_raw(r#"{"id":null,"method":"mining.suggest_difficulty","params":[100000]}"#).await;
    over.handshake("over.w").await;
    assert_eq!(diff_of(&over.notification("mining.set_difficulty").await), 4096.0);
    // The low listener's miner mines at its own difficulty: a share at 0.0001 is accepted, and
    // the share log records it at that difficulty.
    let mut c = Client::connect(&format!("127.0.0.1:{}", ports[0])).await;
    let (en1, _) = c.handshake("low.share").await;
    let n = c.notification("mining.notify").await;
    let s = solve(&n, &en1, "0000000000000001", "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let line = pool.wait_share_line("low.share", |l| l["workername"] == json!("low.share"));
    assert_eq!(line["diff"], json!(0.0001), "{line}");
}

/// ckproxy with a `stratum+tls://` upstream: the first entry's `tlsca` is the wrong CA (refused
/// with the certificate error in the log: a dead upstream), the second's is the pool's own
/// certificate: the proxy fails over to it and a miner's block-meeting share becomes a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_tls_upstream_with_tlsca_and_failover() {
    let TlsPool { nodes, certs, crt, pool, .. } = TlsPool::start(json!(["stratum+tls://127.0.0.1:0"])).await;
    let node = &nodes.a;
    let (wrong, _) = cert(certs.path(), "other");
    let url = format!("stratum+tls://127.0.0.1:{}", pool.listener_ports()[0]);
    let proxy = Pool::start_proxy(json!({
        "proxy": [
            {"url": url, "auth": "proxyuser.p0", "pass": "x", "tlsca": wrong},
            {"url": url, "auth": "proxyuser.p1", "pass": "x", "tlsca": crt},
        ],
        "btcaddress": "",
        "mindiff": 0.0001,
        "startdiff": 0.0001,
    }));
    let log = proxy.log();
    assert!(log.contains("(proxyuser.p0): TLS handshake with 127.0.0.1"), "{log}");
    // rustls's reason (UnknownIssuer, or BadSignature for a CA of the same name as the pool's).
    assert!(log.contains("failed: invalid peer certificate: "), "{log}");
    assert!(log.contains("connected and authorized as proxyuser.p1"), "{log}");

    let mut c = Client::connect(&proxy.addr()).await;
    let (en1, n2) = c.handshake("miner.tls").await;
    let n = c.notification("mining.notify").await;
    let h = node.height().await;
    let s = solve(&n, &en1, &format!("{:0w$x}", 7, w = 2 * n2), "0.0001", false).unwrap();
    let id = c.request("mining.submit", s).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    node.wait_height_above(h, "block through a TLS upstream").await;
    pool.wait_blocks_log("proxyuser.p1");
    // The primary's certificate is still refused: the proxy stays on the second entry.
    assert!(!proxy.log().contains("primary is back"), "{}", proxy.log());
}

/// HAProxy (the real one) in front of the pool: `send-proxy-v2` and `send-proxy` (v1) carry
/// the miner's address (127.0.0.5 / 127.0.0.6, not HAProxy's 127.0.0.1) into the pool's log and
/// share log, also on a TLS listener behind it (127.0.0.7, TLS passed through); haproxy's health checks (a v2 LOCAL header) are served; a connection without a
/// header on a PROXY port is refused with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_send_proxy_v2_and_v1() {
    let TlsPool { nodes, certs: _certs, crt, pool, .. } = TlsPool::start(json!([
        {"url": "127.0.0.1:0", "proxy_protocol": "v2"},
        {"url": "127.0.0.1:0", "proxy_protocol": "v1"},
        {"url": "stratum+tls://127.0.0.1:0", "proxy_protocol": "v2"},
    ]))
    .await;
    let node = &nodes.a;
    let ports = pool.listener_ports();
    let (f2, f1, f3) = (free_port(), free_port(), free_port());
    let hcfg = pool.dir.path().join("haproxy.cfg");
    std::fs::write(
        &hcfg,
        format!(
            "global\n  maxconn 100\n\
             defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
             frontend v2\n  bind 127.0.0.1:{f2}\n  default_backend pool_v2\n\
             backend pool_v2\n  server pool 127.0.0.1:{} send-proxy-v2 check check-send-proxy inter 500ms\n\
             frontend v1\n  bind 127.0.0.1:{f1}\n  default_backend pool_v1\n\
             backend pool_v1\n  server pool 127.0.0.1:{} send-proxy\n\
             frontend tls\n  bind 127.0.0.1:{f3}\n  default_backend pool_tls\n\
             backend pool_tls\n  server pool 127.0.0.1:{} send-proxy-v2\n",
            ports[0], ports[1], ports[2]
        ),
    )
    .unwrap();
    let _haproxy = HaProxy::start(&hcfg, &[f2, f1, f3]);

    // The third: TLS passed through haproxy (TCP mode), the PROXY header before the handshake.
    for (front, client_ip, worker, tls) in
        [(f2, "127.0.0.5", "via.v2", false), (f1, "127.0.0.6", "via.v1", false), (f3, "127.0.0.7", "via.tls", true)]
    {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{client_ip}:0").parse().unwrap()).unwrap();
        let stream = sock.connect(format!("127.0.0.1:{front}").parse().unwrap()).await.unwrap();
        let sv1 = if tls {
            let config = ckpool::tls::client_config(Some(&crt)).unwrap();
            let name = ckpool::tls::server_name("127.0.0.1:0").unwrap();
            Sv1Client::from_tls(tokio_rustls::TlsConnector::from(config).connect(name, stream).await.unwrap())
        } else {
            Sv1Client::new(stream)
        };
        let mut c = Client { sv1, backlog: Vec::new() };
        let (en1, _) = c.handshake(worker).await;
        // Work on the current tip (the first miner's share was a block).
        let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
        let n = c.notify_on_tip(&tip).await;
        let h = node.height().await;
        let s = solve(&n, &en1, "00000000000000bb", "0.0001", false).unwrap();
        let id = c.request("mining.submit", s).await;
        let r = c.reply(id).await;
        assert_eq!(r["result"], json!(true), "{r}");
        node.wait_height_above(h, worker).await;
        // The operator log's authorize line and the share log carry the miner's own address.
        let log = wait_for("pool", || pool.log(), worker);
        let line = log.lines().find(|l| l.contains("miner authorized") && l.contains(worker)).unwrap();
        assert!(line.contains(&format!("peer={client_ip}:")), "{line}");
        let share = pool.wait_share_line(worker, |l| l["workername"] == json!(worker));
        assert_eq!(share["address"], json!(client_ip), "{share}");
    }
    // haproxy's health checks (every 500 ms) reach the v2 port with a LOCAL header and are
    // served (logged at debug: the pool runs with -l 7); none was refused.
    let log =
        wait_for("pool", || pool.log(), &format!("PROXY v2 on 127.0.0.1:{}: LOCAL/UNKNOWN from 127.0.0.1:", ports[0]));
    assert!(!log.contains("refused: PROXY protocol"), "{log}");
    // Straight to a PROXY port without a header: refused, one line.
    let mut direct = Client::connect(&format!("127.0.0.1:{}", ports[0])).await;
    direct.send_raw(r#"{"id":1,"method":"mining.subscribe","params":[]}"#).await;
    assert_eq!(direct.read_within(Duration::from_secs(20)).await, None, "no answer without a header");
    wait_for("pool", || pool.log(), "refused: PROXY protocol: no PROXY protocol header");
}

/// haproxy in the foreground (`-db`), killed and reaped on drop.
struct HaProxy(Child);

impl HaProxy {
    fn start(cfg: &Path, ports: &[u16]) -> HaProxy {
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("haproxy (Debian package haproxy; run `bash contrib/setup.sh`)");
        let mut h = HaProxy(child);
        for p in ports {
            wait::blocking(&format!("haproxy to listen on {p}"), Duration::from_secs(20), || {
                if let Some(s) = h.0.try_wait().unwrap() {
                    panic!("haproxy exited ({s}) before listening on {p}");
                }
                std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok()
            });
        }
        h
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
