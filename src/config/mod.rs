//! ckpool.conf / ckproxy.conf: ckpool's JSON keys with ckpool's meanings, checked before anything
//! starts. Text after the closing brace is ignored (the operator's guide ends its files with
//! "Comments from here on are ignored."). Unknown keys are reported by name; a bad value is an
//! error naming the key, the value and what is allowed.
//!
//! `raw.rs`: serde reads the file into `RawConfig` (ckpool's key names, each value typed through
//! `Field` so that a wrong type is our message, not serde's); `RawConfig::validate` checks
//! values and the rules between them and makes the [`Config`] the rest of the program uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::difficulty::Difficulty;
use crate::mining::vardiff::VardiffParams;

pub mod authority;
pub mod dburl;
mod raw;
#[cfg(test)]
mod tests;
pub mod unknown;

pub(crate) use raw::normalize_rpc_url;
pub use unknown::{suggestion, unknown_key_note};

/// A secret that never prints (RPC and upstream passwords).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// How to authenticate to bitcoind.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum RpcAuth {
    /// rpcauth / rpcuser+rpcpassword: HTTP basic auth.
    UserPass { user: String, pass: Secret },
    /// A bitcoind `.cookie` file, read at each connection (it changes on every node restart).
    Cookie(PathBuf),
}

/// One `btcd` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Btcd {
    /// http://host:port/
    pub url: String,
    pub auth: RpcAuth,
    /// ckpool's `notify`: the node announces blocks itself (ckpool's blocknotify); informational here.
    pub notify: bool,
}

/// One `proxy` (upstream pool) entry.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Upstream {
    /// host:port
    pub url: String,
    pub auth: String,
    pub pass: Secret,
    /// `stratum+tls://`: the session runs over TLS.
    pub tls: bool,
    /// `tlsca`: PEM certificates to trust for this upstream (else the built-in webpki roots).
    pub tlsca: Option<PathBuf>,
    /// `stratum2+tcp://HOST:PORT/KEY`: the pool's authority public key (x-only); the session
    /// runs Stratum V2 over Noise NX and the pool's certificate must be signed by this key.
    pub authority: Option<[u8; 32]>,
    /// `jds`: the pool's Job Declaration server (`host:port`, a Stratum V2 entry only): the proxy
    /// declares jobs built from its own node (`btcd`) there and mines them on this upstream.
    pub jds: Option<String>,
}

impl Upstream {
    /// The entry as the operator knows it: `host:port`, with the scheme of a TLS or SV2 entry.
    pub fn display(&self) -> String {
        match (&self.authority, self.tls) {
            (Some(_), _) => format!("stratum2+tcp://{}", self.url),
            (None, true) => format!("stratum+tls://{}", self.url),
            (None, false) => self.url.clone(),
        }
    }
}

/// What one `serverurl` entry asks of its listener (the address is `Config::serverurl` at the
/// same index). Difficulties not given in the entry are the top-level ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    /// `stratum+tls://` or `"tls": true`: TLS with `tlscert` / `tlskey`.
    pub tls: bool,
    /// `"proxy_protocol"`: every connection must start with a PROXY header of this version.
    pub proxy_protocol: Option<crate::proxy_protocol::Accept>,
    pub mindiff: Difficulty,
    pub startdiff: Difficulty,
    /// Zero: no maximum.
    pub maxdiff: Difficulty,
    /// The entry gives difficulties of its own; otherwise it follows the top-level ones,
    /// including a reload's (SIGHUP).
    pub own_diffs: bool,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub btcd: Vec<Btcd>,
    pub proxy: Vec<Upstream>,
    pub btcaddress: String,
    pub btcsig: String,
    pub serverurl: Vec<SocketAddr>,
    /// Each `serverurl` entry's options (TLS, PROXY protocol, difficulties), index for index.
    pub listeners: Vec<Listener>,
    /// PEM certificate chain and private key of the TLS listeners.
    pub tlscert: Option<PathBuf>,
    pub tlskey: Option<PathBuf>,
    /// The operator's HTTP API (metrics, JSON, ckpool's files, dashboard); empty: off.
    pub apiurl: Vec<SocketAddr>,
    /// Stratum V2 listeners (for miners in both modes); empty: off.
    pub sv2url: Vec<SocketAddr>,
    /// Stratum V2 Job Declaration server listeners (ckpool's `sv2jdurl`, pool mode); empty: off.
    pub sv2jdurl: Vec<SocketAddr>,
    /// The SV2 authority key file (created at first start); `None`: the default place.
    pub sv2_authority_key: Option<PathBuf>,
    /// ckpool's `sv2_static_key`: accepted; SRI's Noise responder certifies a fresh static key
    /// per connection, so there is nothing to keep (a line at start says so).
    pub sv2_static_key: Option<PathBuf>,
    /// How long each connection's certificate is valid from its handshake.
    pub sv2_cert_validity: Duration,
    pub mindiff: Difficulty,
    pub startdiff: Difficulty,
    /// Zero: no maximum.
    pub maxdiff: Difficulty,
    pub zmqblock: Option<String>,
    pub logdir: PathBuf,
    pub blockpoll: Duration,
    pub update_interval: Duration,
    /// `empty_first`: on a new block, a coinbase-only job at once, then the full template.
    pub empty_first: bool,
    pub nonce1length: usize,
    pub nonce2length: usize,
    pub version_mask: u32,
    /// Zero: no limit.
    pub maxclients: usize,
    /// What one miner or address may cost (docs/security.md).
    pub limits: Limits,
    /// Vardiff's target share interval and retarget interval.
    pub vardiff: VardiffParams,
    /// How often logdir/pool/pool.status and logdir/users/* are rewritten.
    pub stats_interval: Duration,
    /// The operator log's level (as `-l`, which wins when given); applied again on SIGHUP.
    pub loglevel: Option<String>,
    /// The history store (src/history): on (SQLite in logdir) unless `"history": false`.
    pub history: bool,
    /// PostgreSQL for the history store instead of SQLite (may hold a password: redacted).
    pub dburl: Option<Secret>,
    /// The name the history rows carry; empty: the `-n` name (ckpool, ckproxy).
    pub instance: String,
    /// Keys present in the file that this program does not know.
    pub unknown_keys: Vec<String>,
    /// ckpool's `donation` percent in basis points (1/100 %): in solo mode that share of each
    /// block goes to `btcaddress`.
    pub donation_bp: u32,
    /// Pool mode's PPLNS payouts in the coinbase (`payout_scheme: "pplns"`, docs/payout.md).
    pub pplns: Option<Pplns>,
    /// Templates from Bitcoin Core's IPC mining interface (`ipcmining`, docs/configuration.md).
    pub ipcmining: Option<IpcMining>,
}

/// Bitcoin Core's IPC mining interface: the node's unix socket (`bitcoin-node -ipcbind=unix`) and
/// the fee rise that makes a new template on the same block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpcMining {
    pub path: PathBuf,
    /// Satoshis the next block's fees must rise by before the node sends a new template.
    pub fee_threshold: u64,
}

/// PPLNS in the coinbase: each block pays the window's miners (docs/payout.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pplns {
    /// `pplns_window`: the window's length as a multiple of the network's difficulty (an exact
    /// decimal, held as a `Difficulty`).
    pub window: Difficulty,
    /// `pool_fee`: basis points (1/100 %) of each block's value to `btcaddress`.
    pub fee_bp: u32,
    /// `pplns_min_output`: the smallest output paid to a miner, in satoshis.
    pub min_output: u64,
    /// `pplns_max_outputs`: the most miner outputs in one coinbase.
    pub max_outputs: usize,
    /// `coinbase_max`: the coinbase's size bound in bytes.
    pub coinbase_max: usize,
}

/// Limits on what one miner or one address may cost the pool (docs/security.md). Zero turns each
/// one off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// ckpool's `dropidle`: a connection that sent no share for this long is dropped.
    pub dropidle: Duration,
    /// Connections one address may hold at once (zero: no limit, the default).
    pub maxclients_per_address: u32,
    /// Banning as NOMP does it: a connection's shares are checked once it sent this many...
    pub ban_check_shares: u32,
    /// ...and when more than this percent were invalid, it is closed and its address refused...
    pub ban_invalid_percent: u32,
    /// ...for this long.
    pub ban_time: Duration,
    /// `stats_forget`: a worker with no connection and no accepted share for this long leaves
    /// the statistics book (its user's file keeps it).
    pub stats_forget: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            dropidle: Duration::ZERO,
            maxclients_per_address: 0,
            ban_check_shares: 500,
            ban_invalid_percent: 50,
            ban_time: Duration::from_secs(600),
            stats_forget: Duration::from_secs(604_800),
        }
    }
}

/// What went wrong with a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid JSON: {why} (line {line}, column {column})")]
    Json { path: PathBuf, why: String, line: usize, column: usize },
    #[error("config file {path}: the top level must be a JSON object {{ ... }}")]
    NotObject { path: PathBuf },
    #[error("config file {path}: key \"{key}\" = {value}: {allowed}")]
    Key { path: PathBuf, key: String, value: String, allowed: String },
    /// An error in a file that also has unknown keys (often the misspelling behind the error).
    #[error("{error}; note: {notes}")]
    WithUnknown { error: Box<ConfigError>, notes: String },
}

impl ConfigError {
    /// This error with the file's unknown keys named (and what they probably meant).
    pub fn with_unknown(self, unknown: &[String]) -> ConfigError {
        if unknown.is_empty() {
            return self;
        }
        ConfigError::WithUnknown { error: Box::new(self), notes: unknown::notes(unknown) }
    }
}

/// Every top-level key the parser knows (anything else is reported as unknown). Each one is
/// documented in docs/configuration.md; a test keeps the two equal.
pub const KNOWN_KEYS: &[&str] = &[
    "btcd",
    "proxy",
    "btcaddress",
    "btcsig",
    "serverurl",
    "apiurl",
    "mindiff",
    "startdiff",
    "maxdiff",
    "zmqblock",
    "logdir",
    "blockpoll",
    "update_interval",
    "empty_first",
    "nonce1length",
    "nonce2length",
    "version_mask",
    "maxclients",
    // ckpool's, now with its meaning.
    "dropidle",
    // Stratum V2 (ckpool's names).
    "sv2url",
    "sv2jdurl",
    "sv2_authority_key",
    "sv2_static_key",
    // ckpool-rs keys (optional).
    "sv2_cert_validity",
    "vardiff_target_interval",
    "vardiff_retarget_interval",
    "stats_interval",
    "loglevel",
    "tlscert",
    "tlskey",
    "history",
    "dburl",
    "instance",
    "maxclients_per_address",
    "ban_check_shares",
    "ban_invalid_percent",
    "ban_time",
    "stats_forget",
    "payout_scheme",
    "pplns_window",
    "pool_fee",
    "pplns_min_output",
    "pplns_max_outputs",
    "coinbase_max",
    "ipcfeethreshold",
    // ckpool 1.2's Bitcoin Core IPC mining socket.
    "ipcmining",
    // ckpool keys accepted for compatibility; their features are not used here.
    "donation",
    "useragent",
    "redirecturl",
    "serverurls",
];

/// The keys of a `btcd` entry (anything else is reported as unknown, as `btcd[i].key`).
pub const BTCD_KEYS: &[&str] = &["url", "auth", "pass", "cookie", "notify"];

/// The keys of a `proxy` entry (anything else is reported as unknown, as `proxy[i].key`).
pub const PROXY_KEYS: &[&str] = &["url", "auth", "pass", "tlsca", "jds"];

/// The keys of a `serverurl` entry written as an object (anything else is reported as unknown,
/// as `serverurl[i].key`).
pub const SERVERURL_KEYS: &[&str] = &["url", "mindiff", "startdiff", "maxdiff", "tls", "proxy_protocol"];

impl Config {
    /// The options of the listener at `serverurl` index `i` (plain, top-level difficulties when
    /// the index has none: a socket handed over beyond the configured ones).
    pub fn listener(&self, i: usize) -> Listener {
        self.listeners.get(i).cloned().unwrap_or(Listener {
            tls: false,
            proxy_protocol: None,
            mindiff: self.mindiff,
            startdiff: self.startdiff,
            maxdiff: self.maxdiff,
            own_diffs: false,
        })
    }
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        raw::parse(text, path)
    }

    /// Checks what pool mode needs beyond the file's own consistency.
    pub fn require_pool(&self) -> Result<(), ConfigError> {
        self.require_pool_keys().map_err(|e| e.with_unknown(&self.unknown_keys))
    }

    fn require_pool_keys(&self) -> Result<(), ConfigError> {
        let path = self.path.clone();
        if self.btcd.is_empty() {
            return Err(ConfigError::Key {
                path,
                key: "btcd".into(),
                value: "[]".into(),
                allowed: "pool mode needs at least one bitcoind entry".into(),
            });
        }
        if self.btcaddress.is_empty() {
            return Err(ConfigError::Key {
                path,
                key: "btcaddress".into(),
                value: "\"\"".into(),
                allowed: "pool mode needs the address that receives block rewards".into(),
            });
        }
        Ok(())
    }

    /// Checks what proxy mode needs.
    pub fn require_proxy(&self) -> Result<(), ConfigError> {
        if self.proxy.is_empty() {
            return Err(ConfigError::Key {
                path: self.path.clone(),
                key: "proxy".into(),
                value: "[]".into(),
                allowed: "proxy mode needs at least one upstream {\"url\", \"auth\", \"pass\"}".into(),
            }
            .with_unknown(&self.unknown_keys));
        }
        Ok(())
    }
}
