//! Bitcoin Core as a regtest node: bitcoind built by contrib/build-core.sh from the source the
//! libbitcoinkernel-sys crate vendors (segwit, taproot, descriptors; no wallet, no ZMQ, so the
//! pool polls). Free loopback port, temp datadir, RPC wait with a deadline; Drop kills and reaps.
//! Keys and spends are made without a wallet: descriptor RPCs and `signrawtransactionwithkey`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use bitcoin::{Amount, Denomination, Network, PrivateKey};
use ckpool::bitcoind::Rpc;
use ckpool::config::{RpcAuth, Secret};
use serde_json::{json, Value};

use super::{free_port, stop_node, wait_for_rpc};

/// The Core bitcoind that contrib/setup.sh builds (linked at .regtest/core).
pub fn core_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest/core/bitcoind");
    assert!(
        p.exists(),
        "Bitcoin Core's bitcoind is missing at {}: run `bash contrib/setup.sh` (the README's test command does; \
         it builds it once from the vendored source, about 5 minutes)",
        p.display()
    );
    p
}

/// Bitcoin Core's multiprocess node with the IPC mining interface (`-ipcbind=unix`), built beside
/// bitcoind by contrib/build-core.sh.
pub fn node_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest/core/bitcoin-node");
    assert!(
        p.exists(),
        "Bitcoin Core's bitcoin-node is missing at {}: run `bash contrib/setup.sh` (contrib/build-core.sh builds it \
         with IPC once, beside bitcoind)",
        p.display()
    );
    p
}

/// How the pool and the tests log in to the node.
#[derive(Clone, Debug)]
pub enum CoreAuth {
    /// `-rpcauth=` made by `ckpool rpcauth USER PASSWORD` (the operator guide's path).
    Rpcauth { user: String, pass: String },
    /// No credentials configured: bitcoind writes `.cookie` in its datadir.
    Cookie,
}

pub const CORE_USER: &str = "ckpool";
pub const CORE_PASS: &str = "core-regtest-pass-for-tests";

/// The `rpcauth=` line of `ckpool rpcauth USER PASS` (second line of its output).
pub fn rpcauth_line(user: &str, pass: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ckpool")).args(["rpcauth", user, pass]).output().unwrap();
    assert!(out.status.success(), "ckpool rpcauth: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find(|l| l.starts_with("rpcauth=")).unwrap_or_else(|| panic!("no rpcauth= line in {text}")).to_string()
}

pub struct CoreNode {
    child: Option<Child>,
    pub datadir: tempfile::TempDir,
    pub rpc_port: u16,
    pub auth: CoreAuth,
    pub rpc: Rpc,
    rpcauth: Option<String>,
    extra: Vec<String>,
    /// bitcoin-node serving IPC on `<datadir>/regtest/node.sock` rather than bitcoind.
    ipc: bool,
}

impl CoreNode {
    /// A node with an rpcauth line made by `ckpool rpcauth`.
    pub async fn start(extra: &[&str]) -> CoreNode {
        let auth = CoreAuth::Rpcauth { user: CORE_USER.into(), pass: CORE_PASS.into() };
        CoreNode::start_with(auth, extra).await
    }

    /// bitcoin-node with `-ipcbind=unix` (the IPC mining interface on [`CoreNode::ipc_socket`])
    /// besides RPC, with an rpcauth line.
    pub async fn start_ipc(extra: &[&str]) -> CoreNode {
        let auth = CoreAuth::Rpcauth { user: CORE_USER.into(), pass: CORE_PASS.into() };
        CoreNode::launch(auth, extra, true).await
    }

    pub async fn start_with(auth: CoreAuth, extra: &[&str]) -> CoreNode {
        CoreNode::launch(auth, extra, false).await
    }

    async fn launch(auth: CoreAuth, extra: &[&str], ipc: bool) -> CoreNode {
        let datadir = tempfile::tempdir().unwrap();
        let rpc_port = free_port();
        let rpc_auth = match &auth {
            CoreAuth::Rpcauth { user, pass } => RpcAuth::UserPass { user: user.clone(), pass: Secret::new(pass) },
            CoreAuth::Cookie => RpcAuth::Cookie(datadir.path().join("regtest").join(".cookie")),
        };
        let rpcauth = match &auth {
            CoreAuth::Rpcauth { user, pass } => Some(rpcauth_line(user, pass)),
            CoreAuth::Cookie => None,
        };
        let mut node = CoreNode {
            child: None,
            datadir,
            rpc_port,
            rpc: Rpc::single(&format!("http://127.0.0.1:{rpc_port}/"), rpc_auth, Duration::from_secs(30)),
            auth,
            rpcauth,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            ipc,
        };
        node.spawn().await;
        node
    }

    pub fn rpc_url(&self) -> String {
        format!("127.0.0.1:{}", self.rpc_port)
    }

    /// The IPC socket of a node started by [`CoreNode::start_ipc`] (`-ipcbind=unix`: the network's
    /// data directory, `node.sock`).
    pub fn ipc_socket(&self) -> PathBuf {
        self.datadir.path().join("regtest").join("node.sock")
    }

    pub fn cookie_path(&self) -> PathBuf {
        self.datadir.path().join("regtest").join(".cookie")
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec![
            "-regtest".to_string(),
            "-server=1".into(),
            "-listen=0".into(),
            "-rpcbind=127.0.0.1".into(),
            "-rpcallowip=127.0.0.1".into(),
            format!("-rpcport={}", self.rpc_port),
            "-dnsseed=0".into(),
            "-fixedseeds=0".into(),
            "-discover=0".into(),
            "-txindex=1".into(),
            "-printtoconsole=0".into(),
            format!("-datadir={}", self.datadir.path().display()),
        ];
        if let Some(line) = &self.rpcauth {
            a.push(format!("-{line}"));
        }
        if self.ipc {
            a.push("-ipcbind=unix".into());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    async fn spawn(&mut self) {
        let child = Command::new(if self.ipc { node_bin() } else { core_bin() })
            .args(self.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // Core says why it refuses to start on stderr, before debug.log exists.
            .stderr(std::fs::File::create(self.datadir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("start Bitcoin Core regtest bitcoind");
        self.child = Some(child);
        let child = self.child.as_mut().unwrap();
        wait_for_rpc(&self.rpc, child, "Bitcoin Core", self.datadir.path()).await;
    }

    /// Stops the node (RPC stop, then kill after 30 s) and waits for it to exit.
    pub async fn stop(&mut self) {
        stop_node(&self.rpc, self.child.take()).await;
    }

    /// Starts the node again on the same port and datadir.
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub async fn call(&self, method: &str, params: Value) -> Value {
        self.rpc.call(method, params).await.unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Waits (≤ `limit`) until the node's height is at least `h`; on timeout the panic shows
    /// `context()` (the pool's log).
    pub async fn wait_height(&self, h: u64, limit: Duration, context: impl FnOnce() -> String) {
        let reached = move || async move { self.height().await >= h };
        super::wait::until_async_or(&format!("the node at height {h}"), limit, reached, context).await;
    }

    /// Waits (≤ `limit`) until the node's tip is not `old` (display order) and returns it;
    /// on timeout the panic shows `context()` (the pool's log).
    pub async fn wait_tip_not(&self, old: &str, limit: Duration, context: impl FnOnce() -> String) -> String {
        let moved = move || async move {
            let best = self.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
            (best != old).then_some(best)
        };
        super::wait::until_async_or(&format!("the tip to move from {old}"), limit, moved, context).await
    }

    pub async fn height(&self) -> u64 {
        self.call("getblockcount", json!([])).await.as_u64().unwrap()
    }

    /// Mines `n` blocks paying `address` by RPC; returns their hashes.
    pub async fn generate_to(&self, n: u64, address: &str) -> Vec<String> {
        let v = self.call("generatetoaddress", json!([n, address])).await;
        v.as_array().unwrap().iter().map(|h| h.as_str().unwrap().to_string()).collect()
    }

    /// The pool config for this node: rpcauth or cookie, polling (no ZMQ in this build).
    pub fn pool_config(&self, btcaddress: &str) -> Value {
        let btcd = match &self.auth {
            CoreAuth::Rpcauth { user, pass } => {
                json!({"url": self.rpc_url(), "auth": user, "pass": pass, "notify": true})
            }
            CoreAuth::Cookie => {
                json!({"url": self.rpc_url(), "cookie": self.cookie_path().display().to_string(), "notify": true})
            }
        };
        json!({
            "btcd": [btcd],
            "btcaddress": btcaddress,
            "btcsig": "/ckpool-rs-core-test/",
            "mindiff": 0.0001,
            "startdiff": 0.0001,
            "maxdiff": 0,
            "blockpoll": 100,
        })
    }

    /// Descriptor with its checksum, from the node (`getdescriptorinfo`).
    pub async fn with_checksum(&self, desc: &str) -> String {
        let info = self.call("getdescriptorinfo", json!([desc])).await;
        format!("{desc}#{}", info["checksum"].as_str().unwrap())
    }

    /// The address of a single-key descriptor such as `wpkh(WIF)`, derived by the node.
    pub async fn derive_address(&self, desc: &str) -> String {
        let d = self.with_checksum(desc).await;
        let v = self.call("deriveaddresses", json!([d])).await;
        v[0].as_str().unwrap().to_string()
    }

    /// The scriptPubKey (hex) the node gives for `address`.
    pub async fn script_hex(&self, address: &str) -> String {
        let v = self.call("validateaddress", json!([address])).await;
        assert_eq!(v["isvalid"], json!(true), "{address}: {v}");
        v["scriptPubKey"].as_str().unwrap().to_string()
    }

    /// Block `hash` decoded by rust-bitcoin from the node's raw bytes.
    pub async fn block(&self, hash: &str) -> bitcoin::Block {
        let raw = self.call("getblock", json!([hash, 0])).await;
        bitcoin::consensus::encode::deserialize(&ckpool::hex::decode(raw.as_str().unwrap()).unwrap()).unwrap()
    }
}

impl Drop for CoreNode {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A deterministic regtest key (`seed` 1..=255) as WIF.
pub fn regtest_key(seed: u8) -> PrivateKey {
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&[seed; 32]).unwrap();
    PrivateKey::new(sk, Network::Regtest)
}

/// An amount the node printed (a JSON number in coins), exactly.
pub fn sats(v: &Value) -> u64 {
    Amount::from_str_in(&v.to_string(), Denomination::Bitcoin).unwrap_or_else(|e| panic!("amount {v}: {e}")).to_sat()
}

/// Coins as the exact decimal text RPCs take.
pub fn coins(sat: u64) -> String {
    format!("{}.{:08}", sat / 100_000_000, sat % 100_000_000)
}

/// An unspent output the tests spend.
#[derive(Clone, Debug)]
pub struct Utxo {
    pub txid: String,
    pub vout: u32,
    pub sat: u64,
    pub script_hex: String,
}

impl Utxo {
    /// Output 0 of block `hash`'s coinbase.
    pub async fn coinbase_of(node: &CoreNode, hash: &str) -> Utxo {
        let b = node.call("getblock", json!([hash, 2])).await;
        let cb = &b["tx"][0];
        Utxo {
            txid: cb["txid"].as_str().unwrap().to_string(),
            vout: 0,
            sat: sats(&cb["vout"][0]["value"]),
            script_hex: cb["vout"][0]["scriptPubKey"]["hex"].as_str().unwrap().to_string(),
        }
    }
}

/// Spends `input` (held by `key`) to `to`, paying `fee_sat`; signed by the node with
/// `signrawtransactionwithkey` (no wallet) and sent. Returns the new output and the txid.
pub async fn spend(node: &CoreNode, key: &PrivateKey, input: &Utxo, to: &str, fee_sat: u64) -> Utxo {
    let out_sat = input.sat - fee_sat;
    let raw = node
        .call(
            "createrawtransaction",
            json!([[{"txid": input.txid, "vout": input.vout}], {to: Value::from_str(&coins(out_sat)).unwrap()}]),
        )
        .await;
    let prev = json!([{
        "txid": input.txid,
        "vout": input.vout,
        "scriptPubKey": input.script_hex,
        "amount": Value::from_str(&coins(input.sat)).unwrap(),
    }]);
    let signed = node.call("signrawtransactionwithkey", json!([raw, [key.to_wif()], prev])).await;
    assert_eq!(signed["complete"], json!(true), "signing failed: {signed}");
    let txid = node.call("sendrawtransaction", json!([signed["hex"]])).await;
    Utxo { txid: txid.as_str().unwrap().to_string(), vout: 0, sat: out_sat, script_hex: node.script_hex(to).await }
}

/// Spends `input` to `to` through PSBT RPCs, signed by the node from a private descriptor such as
/// `tr(WIF)` (`descriptorprocesspsbt`: no wallet; this is the path that signs taproot key spends,
/// which `signrawtransactionwithkey` cannot). Returns the sent txid.
pub async fn spend_with_descriptor(node: &CoreNode, desc: &str, input: &Utxo, to: &str, fee_sat: u64) -> String {
    let out_sat = input.sat - fee_sat;
    let psbt = node
        .call(
            "createpsbt",
            json!([[{"txid": input.txid, "vout": input.vout}], {to: Value::from_str(&coins(out_sat)).unwrap()}]),
        )
        .await;
    let psbt = node.call("utxoupdatepsbt", json!([psbt])).await;
    let desc = node.with_checksum(desc).await;
    let done = node.call("descriptorprocesspsbt", json!([psbt, [desc]])).await;
    assert_eq!(done["complete"], json!(true), "signing with {desc} failed: {done}");
    node.call("sendrawtransaction", json!([done["hex"]])).await.as_str().unwrap().to_string()
}
