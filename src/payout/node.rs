//! A small, self-contained JSON-RPC client (blocking HTTP/1.1 over `std::net::TcpStream`) and the
//! chain queries the payout needs: block headers (difficulty, time), subsidies and fees.
//!
//! Errors name the method and the node URL, never the password. Amounts are read from the raw
//! JSON text the node wrote (`serde_json::value::RawValue`), so no float is on the way to a satoshi.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::consensus::encode::deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::Value;

use super::exact::amount_from_json_text;

/// Why a call failed. The node URL shown never contains credentials.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("node {url}: {method}: {msg}")]
    Transport { url: String, method: String, msg: String },
    #[error(
        "node {url}: {method}: authentication refused (HTTP 401); check the RPC user and password or the cookie file"
    )]
    Unauthorized { url: String, method: String },
    #[error("node {url} does not have the RPC {method} (\"Method not found\")")]
    MethodNotFound { url: String, method: String },
    #[error("node {url}: {method} failed: {message} (code {code})")]
    Rpc { url: String, method: String, code: i64, message: String },
}

/// Where the node is and how to log in.
#[derive(Clone)]
pub struct RpcClient {
    host: String,
    port: u16,
    /// "Basic <base64(user:pass)>"
    auth_header: String,
    url: String,
    timeout: Duration,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RpcClient({})", self.url)
    }
}

impl RpcClient {
    /// `url` is "host:port" (as in ckpool.conf) or "http://host:port[/]".
    pub fn new(url: &str, user: &str, pass: &str, timeout: Duration) -> Result<RpcClient> {
        let rest = url.trim().trim_start_matches("http://");
        if rest.starts_with("https://") || url.trim().starts_with("https://") {
            bail!("node URL {url:?}: https is not supported; bitcoind serves RPC over plain http");
        }
        let hostport = rest.split('/').next().unwrap_or("");
        let hostport = hostport.rsplit('@').next().unwrap_or(hostport); // never keep userinfo
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| anyhow!("node URL {hostport:?}: bad port {p:?}"))?),
            None => (hostport, 8332),
        };
        if host.is_empty() {
            bail!("node URL {url:?} has no host; expected host:port such as 127.0.0.1:8332");
        }
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Ok(RpcClient {
            url: format!("http://{hostport}"),
            auth_header: format!("Basic {}", base64(format!("{user}:{pass}").as_bytes())),
            host,
            port,
            timeout,
        })
    }

    /// Reads bitcoind's cookie file ("__cookie__:<password>").
    pub fn with_cookie(url: &str, cookie: &Path, timeout: Duration) -> Result<RpcClient> {
        let text = std::fs::read_to_string(cookie)
            .with_context(|| format!("cannot read the RPC cookie file {}", cookie.display()))?;
        let (user, pass) = text
            .trim()
            .split_once(':')
            .ok_or_else(|| anyhow!("cookie file {} is not \"user:password\"", cookie.display()))?;
        RpcClient::new(url, user, pass, timeout)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method`, returning the raw JSON text of `result`.
    pub fn call_raw(&self, method: &str, params: &[Value]) -> Result<Box<RawValue>, RpcError> {
        let transport = |msg: String| RpcError::Transport { url: self.url.clone(), method: method.to_string(), msg };
        let body = serde_json::json!({"jsonrpc": "1.0", "id": "ckpool-payout", "method": method, "params": params});
        let body = body.to_string();
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| transport(format!("cannot resolve: {e}")))?
            .next()
            .ok_or_else(|| transport("no address".into()))?;
        let mut stream =
            TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| transport(format!("cannot connect: {e}")))?;
        stream.set_read_timeout(Some(self.timeout)).ok();
        stream.set_write_timeout(Some(self.timeout)).ok();
        let request = format!(
            "POST / HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            self.host,
            self.port,
            self.auth_header,
            body.len(),
            body
        );
        stream.write_all(request.as_bytes()).map_err(|e| transport(format!("cannot send: {e}")))?;
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).map_err(|e| transport(format!("no reply: {e}")))?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| transport(format!("not an HTTP reply: {:?}", status_line.trim())))?;
        let mut content_length = None;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| transport(format!("reading headers: {e}")))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                if k == "content-length" {
                    content_length = v.parse::<usize>().ok();
                } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        if status == 401 || status == 403 {
            return Err(RpcError::Unauthorized { url: self.url.clone(), method: method.to_string() });
        }
        let mut data = Vec::new();
        if chunked {
            loop {
                let mut size_line = String::new();
                reader.read_line(&mut size_line).map_err(|e| transport(format!("reading body: {e}")))?;
                let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| transport("bad chunked encoding".into()))?;
                if size == 0 {
                    break;
                }
                let start = data.len();
                data.resize(start + size, 0);
                reader.read_exact(&mut data[start..]).map_err(|e| transport(format!("reading body: {e}")))?;
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf).map_err(|e| transport(format!("reading body: {e}")))?;
            }
        } else if let Some(n) = content_length {
            data.resize(n, 0);
            reader.read_exact(&mut data).map_err(|e| transport(format!("reading body: {e}")))?;
        } else {
            reader.read_to_end(&mut data).map_err(|e| transport(format!("reading body: {e}")))?;
        }
        #[derive(serde::Deserialize)]
        struct Reply {
            result: Option<Box<RawValue>>,
            error: Option<Value>,
        }
        let reply: Reply = serde_json::from_slice(&data)
            .map_err(|e| transport(format!("HTTP {status}, not a JSON-RPC reply ({e})")))?;
        if let Some(err) = reply.error.filter(|e| !e.is_null()) {
            let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
            let message = err.get("message").and_then(Value::as_str).unwrap_or("").to_string();
            if code == -32601 {
                return Err(RpcError::MethodNotFound { url: self.url.clone(), method: method.to_string() });
            }
            return Err(RpcError::Rpc { url: self.url.clone(), method: method.to_string(), code, message });
        }
        reply.result.ok_or_else(|| transport(format!("HTTP {status} without a result")))
    }

    /// Calls `method` and decodes the result.
    pub fn call<T: DeserializeOwned>(&self, method: &str, params: &[Value]) -> Result<T> {
        let raw = self.call_raw(method, params)?;
        serde_json::from_str(raw.get())
            .with_context(|| format!("node {}: {method}: unexpected reply {}", self.url, truncate(raw.get())))
    }
}

/// An amount from `getblockstats`, exactly, in satoshis. Bitcoin Core (and its forks) write
/// satoshis as a JSON integer (`"totalfee": 14345`); Bitcoin SV writes coins with eight decimals
/// (`"totalfee": 0.00014345`, `0.00000000` for none). The text says which: a decimal point means coins.
pub fn stats_amount_sat(raw: &str) -> Result<u64, crate::payout::exact::ParseError> {
    let t = raw.trim();
    if t.contains(['.', 'e', 'E']) {
        amount_from_json_text(t)
    } else {
        crate::payout::exact::parse_amount(&format!("{t}sat"))
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 200 {
        format!("{}…", &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s.to_string()
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// What the payout needs from ckpool.conf.
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    pub url: String,
    pub auth: String,
    pub pass: String,
    pub btcsig: Option<String>,
    pub btcaddress: Option<String>,
}

/// Reads a ckpool JSON config: the first `btcd` entry's `url`, `auth`, `pass`, and `btcsig`,
/// `btcaddress`. Text after the closing brace of the JSON value is ignored (as ckpool does).
pub fn read_config(path: &Path) -> Result<PoolConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read config {}", path.display()))?;
    let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
    let v = stream
        .next()
        .ok_or_else(|| anyhow!("config {} is empty", path.display()))?
        .with_context(|| format!("config {} is not JSON", path.display()))?;
    let btcd = v
        .get("btcd")
        .and_then(|b| b.as_array().and_then(|a| a.first().cloned()).or_else(|| b.is_object().then(|| b.clone())))
        .ok_or_else(|| anyhow!("config {} has no \"btcd\" entry (the node's url, auth, pass)", path.display()))?;
    let field = |k: &str| btcd.get(k).and_then(Value::as_str).map(str::to_string);
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string).filter(|s| !s.is_empty());
    Ok(PoolConfig {
        url: field("url").ok_or_else(|| anyhow!("config {}: btcd entry has no \"url\"", path.display()))?,
        auth: field("auth").unwrap_or_default(),
        pass: field("pass").unwrap_or_default(),
        btcsig: s("btcsig"),
        btcaddress: s("btcaddress"),
    })
}

/// Header fields the payout uses.
#[derive(Debug, Clone)]
pub struct Header {
    pub hash: String,
    pub height: u64,
    pub time: i64,
    pub bits: u32,
}

/// How block fees are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeeSource {
    /// `getblockstats` when the node has it, else decoding blocks
    Auto,
    /// `getblockstats` totalfee
    Stats,
    /// decode `getblock <hash> 0` and sum inputs − outputs (inputs via `getrawtransaction`, needs -txindex)
    Decode,
}

/// Which blocks count as the pool's own.
#[derive(Debug, Clone, Default)]
pub struct OwnBlocks {
    /// Bytes that appear in the coinbase scriptSig (ckpool's `btcsig`).
    pub sig: Option<Vec<u8>>,
    /// scriptPubKey of the payout address (`btcaddress`).
    pub script: Option<Vec<u8>>,
}

impl OwnBlocks {
    pub fn new(btcsig: Option<&str>, btcaddress: Option<&str>) -> Result<OwnBlocks> {
        let script = match btcaddress {
            Some(a) => {
                let addr: bitcoin::Address<bitcoin::address::NetworkUnchecked> =
                    a.parse().with_context(|| format!("btcaddress {a:?} is not a valid address"))?;
                Some(addr.assume_checked().script_pubkey().to_bytes())
            }
            None => None,
        };
        let sig = btcsig.filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec());
        if sig.is_none() && script.is_none() {
            bail!("--own-blocks needs btcsig or btcaddress (from --config, or --btcsig/--btcaddress)");
        }
        Ok(OwnBlocks { sig, script })
    }

    fn matches(&self, coinbase: &bitcoin::Transaction) -> bool {
        let script_sig = coinbase.input.first().map(|i| i.script_sig.as_bytes()).unwrap_or(&[]);
        let by_sig = self.sig.as_ref().is_some_and(|s| script_sig.windows(s.len()).any(|w| w == s.as_slice()));
        let by_addr =
            self.script.as_ref().is_some_and(|s| coinbase.output.iter().any(|o| o.script_pubkey.as_bytes() == s));
        by_sig || by_addr
    }
}

/// Chain queries over an [`RpcClient`].
pub struct Chain {
    pub rpc: RpcClient,
    /// Whether `getblockstats` exists (learned on first use).
    has_stats: std::cell::Cell<Option<bool>>,
    prev_tx: std::cell::RefCell<HashMap<bitcoin::Txid, bitcoin::Transaction>>,
}

impl Chain {
    pub fn new(rpc: RpcClient) -> Chain {
        Chain { rpc, has_stats: Default::default(), prev_tx: Default::default() }
    }

    pub fn height(&self) -> Result<u64> {
        self.rpc.call("getblockcount", &[])
    }

    pub fn header_at(&self, height: u64) -> Result<Header> {
        let hash: String = self.rpc.call("getblockhash", &[height.into()])?;
        #[derive(serde::Deserialize)]
        struct H {
            hash: String,
            height: u64,
            time: i64,
            bits: String,
        }
        let h: H = self.rpc.call("getblockheader", &[hash.into(), true.into()])?;
        let bits = u32::from_str_radix(&h.bits, 16)
            .map_err(|_| anyhow!("node {}: getblockheader: bad bits {:?}", self.rpc.url(), h.bits))?;
        Ok(Header { hash: h.hash, height: h.height, time: h.time, bits })
    }

    pub fn block(&self, hash: &str) -> Result<bitcoin::Block> {
        let hex: String = self.rpc.call("getblock", &[hash.into(), 0.into()])?;
        let bytes = crate::hex::decode(&hex).map_err(|e| anyhow!("node {}: getblock {hash}: {e:?}", self.rpc.url()))?;
        deserialize(&bytes)
            .with_context(|| format!("node {}: getblock {hash}: cannot decode the block", self.rpc.url()))
    }

    /// Total fees of a block in satoshis.
    pub fn block_fees(&self, hash: &str, source: FeeSource) -> Result<u128> {
        let use_stats = match source {
            FeeSource::Stats => true,
            FeeSource::Decode => false,
            FeeSource::Auto => self.has_stats.get() != Some(false),
        };
        if use_stats {
            let params = [Value::from(hash), serde_json::json!(["totalfee"])];
            match self.rpc.call_raw("getblockstats", &params) {
                Ok(raw) => {
                    self.has_stats.set(Some(true));
                    let map: HashMap<String, Box<RawValue>> = serde_json::from_str(raw.get())
                        .with_context(|| format!("node {}: getblockstats: not an object", self.rpc.url()))?;
                    let fee = map
                        .get("totalfee")
                        .ok_or_else(|| anyhow!("node {}: getblockstats {hash}: no totalfee", self.rpc.url()))?;
                    return Ok(stats_amount_sat(fee.get())
                        .with_context(|| format!("node {}: getblockstats: totalfee {}", self.rpc.url(), fee.get()))?
                        as u128);
                }
                Err(RpcError::MethodNotFound { .. }) if source == FeeSource::Auto => self.has_stats.set(Some(false)),
                Err(e) => return Err(e.into()),
            }
        }
        let block = self.block(hash)?;
        self.fees_by_decoding(&block)
    }

    /// Σ inputs − Σ outputs over the non-coinbase transactions; input values via `getrawtransaction`.
    pub fn fees_by_decoding(&self, block: &bitcoin::Block) -> Result<u128> {
        let mut total: i128 = 0;
        for tx in block.txdata.iter().skip(1) {
            for input in &tx.input {
                let prev = input.previous_output;
                let value = self.prev_output_value(prev.txid, prev.vout)?;
                total += value as i128;
            }
            for output in &tx.output {
                total -= output.value.to_sat() as i128;
            }
        }
        // Transactions spending outputs created in the same block are covered: their parents are
        // found through getrawtransaction as well.
        u128::try_from(total).map_err(|_| anyhow!("block {}: outputs exceed inputs", block.block_hash()))
    }

    fn prev_output_value(&self, txid: bitcoin::Txid, vout: u32) -> Result<u64> {
        if let Some(tx) = self.prev_tx.borrow().get(&txid) {
            return tx
                .output
                .get(vout as usize)
                .map(|o| o.value.to_sat())
                .ok_or_else(|| anyhow!("transaction {txid} has no output {vout}"));
        }
        let hex: String = self
            .rpc
            .call("getrawtransaction", &[txid.to_string().into(), 0.into()])
            .context("looking up an input's value (the node needs -txindex=1 for this)")?;
        let bytes = crate::hex::decode(&hex).map_err(|e| anyhow!("getrawtransaction {txid}: {e:?}"))?;
        let tx: bitcoin::Transaction =
            deserialize(&bytes).with_context(|| format!("cannot decode transaction {txid}"))?;
        let value = tx.output.get(vout as usize).map(|o| o.value.to_sat());
        self.prev_tx.borrow_mut().insert(txid, tx);
        value.ok_or_else(|| anyhow!("transaction {txid} has no output {vout}"))
    }

    /// Whether the block at `hash` was mined by this pool.
    pub fn is_own(&self, hash: &str, own: &OwnBlocks) -> Result<bool> {
        let block = self.block(hash)?;
        Ok(block.txdata.first().is_some_and(|cb| own.matches(cb)))
    }

    /// The node's subsidy for a block: its coinbase value minus its fees.
    pub fn subsidy_from_coinbase(&self, hash: &str, source: FeeSource) -> Result<u64> {
        let block = self.block(hash)?;
        let cb: u64 = block.txdata.first().map(|t| t.output.iter().map(|o| o.value.to_sat()).sum()).unwrap_or(0);
        let fees = self.block_fees(hash, source)?;
        (cb as u128)
            .checked_sub(fees)
            .map(|v| v as u64)
            .ok_or_else(|| anyhow!("block {hash}: coinbase {cb} sat is less than its fees {fees} sat"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getblockstats_amounts_of_both_node_families() {
        // Bitcoin Core: integer satoshis; Bitcoin SV: coins with 8 decimals (both seen live).
        assert_eq!(stats_amount_sat("14345").unwrap(), 14_345);
        assert_eq!(stats_amount_sat("0").unwrap(), 0);
        assert_eq!(stats_amount_sat("5000000000").unwrap(), 5_000_000_000);
        assert_eq!(stats_amount_sat("0.00014345").unwrap(), 14_345);
        assert_eq!(stats_amount_sat("0.00000000").unwrap(), 0);
        assert_eq!(stats_amount_sat("50.00000000").unwrap(), 5_000_000_000);
        assert!(stats_amount_sat("-1").is_err());
        assert!(stats_amount_sat("0.000000001").is_err());
        assert!(stats_amount_sat("\"x\"").is_err());
    }

    #[test]
    fn base64_basic_auth() {
        assert_eq!(base64(b"u:p"), "dTpw");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }

    #[test]
    fn url_never_shows_credentials() {
        let c = RpcClient::new("http://u:secret@127.0.0.1:18443/", "u", "secret", Duration::from_secs(1)).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:18443");
        assert!(!format!("{c:?}").contains("secret"));
        let c = RpcClient::new("127.0.0.1:8332", "u", "p", Duration::from_secs(1)).unwrap();
        assert_eq!(c.url(), "http://127.0.0.1:8332");
        assert!(RpcClient::new("https://x:1", "u", "p", Duration::from_secs(1)).is_err());
    }

    #[test]
    fn unreachable_node_error_names_method_and_url_not_password() {
        // Port 1 on loopback: nothing listens there.
        let c = RpcClient::new("127.0.0.1:1", "u", "hunter2", Duration::from_secs(2)).unwrap();
        let e = c.call_raw("getblockcount", &[]).unwrap_err().to_string();
        assert!(e.contains("getblockcount") && e.contains("127.0.0.1:1"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn config_first_value_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ckpool.conf");
        std::fs::write(
            &p,
            r#"{"btcd": [{"url": "127.0.0.1:8332", "auth": "user", "pass": "pw", "notify": true},
                         {"url": "10.0.0.2:8332", "auth": "b", "pass": "c"}],
                "btcaddress": "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "btcsig": "/mypool/"}
               trailing notes { not json"#,
        )
        .unwrap();
        let c = read_config(&p).unwrap();
        assert_eq!((c.url.as_str(), c.auth.as_str(), c.pass.as_str()), ("127.0.0.1:8332", "user", "pw"));
        assert_eq!(c.btcsig.as_deref(), Some("/mypool/"));
        assert_eq!(c.btcaddress.as_deref(), Some("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"));
        std::fs::write(&p, r#"{"btcaddress": "x"}"#).unwrap();
        assert!(read_config(&p).unwrap_err().to_string().contains("btcd"));
    }
}
