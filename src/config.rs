//! ckpool.conf / ckproxy.conf: ckpool's JSON keys with ckpool's meanings, checked before anything
//! starts. Text after the closing brace is ignored (the operator's guide ends its files with
//! "Comments from here on are ignored."). Unknown keys are reported by name; a bad value is an
//! error naming the key, the value and what is allowed.
//!
//! serde reads the file into `RawConfig` (ckpool's key names, each value typed through
//! `Field` so that a wrong type is our message, not serde's); `RawConfig::validate` checks
//! values and the rules between them and makes the [`Config`] the rest of the program uses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;

use crate::difficulty::{Difficulty, ParseDifficultyError};
use crate::stratum::vardiff::VardiffParams;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// host:port
    pub url: String,
    pub auth: String,
    pub pass: Secret,
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
    pub mindiff: Difficulty,
    pub startdiff: Difficulty,
    /// Zero: no maximum.
    pub maxdiff: Difficulty,
    pub zmqblock: Option<String>,
    pub logdir: PathBuf,
    pub blockpoll: Duration,
    pub update_interval: Duration,
    pub nonce1length: usize,
    pub nonce2length: usize,
    pub version_mask: u32,
    /// Zero: no limit.
    pub maxclients: usize,
    /// Vardiff's target share interval and retarget interval.
    pub vardiff: VardiffParams,
    /// How often logdir/pool/pool.status and logdir/users/* are rewritten.
    pub stats_interval: Duration,
    /// Keys present in the file that this program does not know.
    pub unknown_keys: Vec<String>,
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
}

/// Every top-level key the parser knows (anything else is reported as unknown). Each one is
/// documented in docs/configuration.md; a test keeps the two equal.
pub const KNOWN_KEYS: &[&str] = &[
    "btcd",
    "proxy",
    "btcaddress",
    "btcsig",
    "serverurl",
    "mindiff",
    "startdiff",
    "maxdiff",
    "zmqblock",
    "logdir",
    "blockpoll",
    "update_interval",
    "nonce1length",
    "nonce2length",
    "version_mask",
    "maxclients",
    // ckpool-rs keys (optional).
    "vardiff_target_interval",
    "vardiff_retarget_interval",
    "stats_interval",
    // ckpool keys accepted for compatibility; their features are not used here.
    "donation",
    "useragent",
    "redirecturl",
    "dropidle",
    "serverurls",
];

/// The keys of a `btcd` entry (anything else is reported as unknown, as `btcd[i].key`).
pub const BTCD_KEYS: &[&str] = &["url", "auth", "pass", "cookie", "notify"];

/// The keys of a `proxy` entry (anything else is reported as unknown, as `proxy[i].key`).
pub const PROXY_KEYS: &[&str] = &["url", "auth", "pass"];

/// Reads the first JSON value of `text`, ignoring whatever follows it.
fn first_json_value(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match stream.next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => {
            Err(ConfigError::Json { path: path.into(), why: e.to_string(), line: e.line(), column: e.column() })
        }
        None => Err(ConfigError::Json { path: path.into(), why: "empty file".into(), line: 1, column: 1 }),
    }
}

/// One key's value as the file wrote it, and the same value read as `T` when it has `T`'s JSON
/// type. Every key of the raw structs is read through this, so a value of the wrong type does not
/// stop serde with its own message (which names neither the key nor the rule): `validate()` names
/// the file, the key, the value and what is allowed.
struct Field<T> {
    json: Value,
    typed: Option<T>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let json = Value::deserialize(d)?;
        let typed = T::deserialize(&json).ok();
        Ok(Field { json, typed })
    }
}

/// A decimal key: a JSON number or a string, parsed exactly (never through a binary float).
#[derive(Deserialize)]
#[serde(untagged)]
enum Decimal {
    Number(serde_json::Number),
    Text(String),
}

impl Decimal {
    fn difficulty(&self) -> Result<Difficulty, ParseDifficultyError> {
        match self {
            Decimal::Number(n) => n.to_string().parse(),
            Decimal::Text(s) => s.trim().parse(),
        }
    }
}

/// `serverurl`: one `"address:port"` string or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum ServerUrls {
    One(String),
    Many(Vec<Field<String>>),
}

/// A config file as ckpool names its keys, each read through [`Field`]; [`RawConfig::validate`]
/// makes the [`Config`]. A key missing or `null` takes its default.
#[derive(Deserialize)]
struct RawConfig {
    btcd: Option<Field<Vec<Field<RawBtcd>>>>,
    proxy: Option<Field<Vec<Field<RawUpstream>>>>,
    btcaddress: Option<Field<String>>,
    btcsig: Option<Field<String>>,
    serverurl: Option<Field<ServerUrls>>,
    mindiff: Option<Field<Decimal>>,
    startdiff: Option<Field<Decimal>>,
    maxdiff: Option<Field<Decimal>>,
    zmqblock: Option<Field<String>>,
    logdir: Option<Field<String>>,
    blockpoll: Option<Field<u64>>,
    update_interval: Option<Field<u64>>,
    nonce1length: Option<Field<u64>>,
    nonce2length: Option<Field<u64>>,
    version_mask: Option<Field<String>>,
    maxclients: Option<Field<u64>>,
    vardiff_target_interval: Option<Field<Decimal>>,
    vardiff_retarget_interval: Option<Field<Decimal>>,
    stats_interval: Option<Field<u64>>,
    // ckpool keys accepted for compatibility: any value, not used (docs/configuration.md).
    #[allow(dead_code)]
    donation: Option<IgnoredAny>,
    #[allow(dead_code)]
    useragent: Option<IgnoredAny>,
    #[allow(dead_code)]
    redirecturl: Option<IgnoredAny>,
    #[allow(dead_code)]
    dropidle: Option<IgnoredAny>,
    #[allow(dead_code)]
    serverurls: Option<IgnoredAny>,
}

/// One `btcd` entry as written.
#[derive(Deserialize)]
struct RawBtcd {
    url: Option<Field<String>>,
    auth: Option<Field<String>>,
    pass: Option<Field<String>>,
    cookie: Option<Field<String>>,
    notify: Option<Field<bool>>,
}

/// One `proxy` entry as written: typed as strictly as a `btcd` entry.
#[derive(Deserialize)]
struct RawUpstream {
    url: Option<Field<String>>,
    auth: Option<Field<String>>,
    pass: Option<Field<String>>,
}

/// `(field, "its key")`: the key named in messages is the field's own name.
macro_rules! key {
    ($raw:ident . $field:ident) => {
        (&$raw.$field, stringify!($field))
    };
}

type Key<'a, T> = (&'a Option<Field<T>>, &'a str);

/// Builds the errors of one file: file, key, value (passwords redacted) and rule.
struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn err(&self, key: &str, value: &Value, allowed: impl Into<String>) -> ConfigError {
        let shown = if key.ends_with("pass") { "\"<redacted>\"".to_string() } else { value.to_string() };
        ConfigError::Key { path: self.path.into(), key: key.into(), value: shown, allowed: allowed.into() }
    }

    /// The typed value (`None`: key missing or null), or the error naming `key` and `rule`.
    fn typed<'f, T>(&self, (field, key): Key<'f, T>, rule: &str) -> Result<Option<&'f T>, ConfigError> {
        match field {
            None => Ok(None),
            Some(Field { typed: Some(t), .. }) => Ok(Some(t)),
            Some(Field { json, typed: None }) => Err(self.err(key, json, rule)),
        }
    }

    fn string(&self, k: Key<String>, default: &str) -> Result<String, ConfigError> {
        Ok(self.typed(k, "must be a string")?.map_or(default, String::as_str).to_string())
    }

    fn uint(&self, k: Key<u64>, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let rule = format!("must be a whole number from {min} to {max}");
        match self.typed(k, &rule)? {
            None => Ok(default),
            Some(n) if (min..=max).contains(n) => Ok(*n),
            Some(_) => Err(self.err(k.1, &k.0.as_ref().expect("typed").json, rule)),
        }
    }

    /// Seconds as an exact decimal ("3.333", "240"), returned in microseconds.
    fn seconds_us(&self, k: Key<Decimal>, default_us: u64, min_us: u64, max_us: u64) -> Result<u64, ConfigError> {
        // f64 only to show the range.
        let rule = format!("must be seconds from {} to {}", min_us as f64 / 1e6, max_us as f64 / 1e6);
        let Some(d) = self.typed(k, &rule)? else { return Ok(default_us) };
        let bad = || self.err(k.1, &k.0.as_ref().expect("typed").json, rule.as_str());
        // Difficulty is an exact 12-place decimal: reuse its parser; 10^-12 units / 10^6 = µs.
        let us = d.difficulty().map_err(|_| bad())?.units() / 1_000_000;
        if us < min_us as u128 || us > max_us as u128 {
            return Err(bad());
        }
        Ok(us as u64)
    }

    fn difficulty(&self, (field, key): Key<Decimal>, default: Difficulty) -> Result<Difficulty, ConfigError> {
        let rule = |e: ParseDifficultyError| format!("must be a difficulty >= 0, fractions allowed ({e})");
        match field {
            None => Ok(default),
            Some(Field { typed: Some(d), json }) => d.difficulty().map_err(|e| self.err(key, json, rule(e))),
            Some(Field { typed: None, json }) => {
                Err(self.err(key, json, rule(ParseDifficultyError::NotANumber(json.to_string()))))
            }
        }
    }

    /// The entries of `btcd` or `proxy`: each must be a JSON object; keys it has that `known`
    /// does not list go to `unknown` as `name[i].key`.
    fn entries<'f, T>(
        &self,
        k: Key<'f, Vec<Field<T>>>,
        known: &[&str],
        unknown: &mut Vec<String>,
    ) -> Result<Vec<&'f T>, ConfigError> {
        let name = k.1;
        let Some(entries) = self.typed(k, "must be an array of {\"url\", \"auth\", \"pass\"} objects")? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            // A derived struct would also take an array by position: only an object is an entry.
            match (&e.json, &e.typed) {
                (Value::Object(o), Some(t)) => {
                    unknown
                        .extend(o.keys().filter(|k| !known.contains(&k.as_str())).map(|k| format!("{name}[{i}].{k}")));
                    out.push(t);
                }
                _ => return Err(self.err(&format!("{name}[{i}]"), &e.json, "must be an object with url, auth, pass")),
            }
        }
        Ok(out)
    }
}

/// Normalizes a btcd url ("localhost:19332", "127.0.0.1:8332", "http://host:port") to http://host:port/.
pub(crate) fn normalize_rpc_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.starts_with("https://") || rest.is_empty() || rest.contains(char::is_whitespace) {
        return None;
    }
    let hostport = rest.trim_end_matches('/');
    valid_host_port(hostport).then(|| format!("http://{hostport}/"))
}

/// `host:port` with a host and a port from 1 to 65535.
fn valid_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !s.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Microseconds as exact decimal seconds ("3.333333", "240").
fn seconds_text(us: u64) -> String {
    let frac = format!("{:06}", us % 1_000_000);
    match frac.trim_end_matches('0') {
        "" => (us / 1_000_000).to_string(),
        f => format!("{}.{f}", us / 1_000_000),
    }
}

fn parse_listen(s: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let s = s.trim().trim_start_matches("stratum+tcp://");
    s.parse().ok().or_else(|| s.to_socket_addrs().ok()?.next())
}

impl RawBtcd {
    fn validate(&self, c: &Ctx, i: usize) -> Result<Btcd, ConfigError> {
        let key = |k: &str| format!("btcd[{i}].{k}");
        let s = |(f, k): Key<String>| c.string((f, &key(k)), "");
        let raw_url = s(key!(self.url))?;
        let url = normalize_rpc_url(&raw_url).ok_or_else(|| {
            c.err(&key("url"), &Value::String(raw_url.clone()), "must be host:port, e.g. \"localhost:8332\"")
        })?;
        let (cookie, user, pass) = (s(key!(self.cookie))?, s(key!(self.auth))?, s(key!(self.pass))?);
        let auth = if !cookie.is_empty() {
            RpcAuth::Cookie(PathBuf::from(cookie))
        } else if user.is_empty() {
            return Err(c.err(
                &key("auth"),
                &Value::String(user),
                "must name the RPC user (rpcauth) or give \"cookie\": \"/path/.cookie\"",
            ));
        } else {
            RpcAuth::UserPass { user, pass: Secret::new(pass) }
        };
        let notify = c.typed((&self.notify, &key("notify")), "must be true or false")?.copied().unwrap_or(false);
        Ok(Btcd { url, auth, notify })
    }
}

impl RawUpstream {
    fn validate(&self, c: &Ctx, i: usize) -> Result<Upstream, ConfigError> {
        let key = |k: &str| format!("proxy[{i}].{k}");
        let s = |(f, k): Key<String>| c.string((f, &key(k)), "");
        let raw_url = s(key!(self.url))?;
        let url = raw_url.trim_start_matches("stratum+tcp://").to_string();
        if !valid_host_port(&url) {
            return Err(c.err(&key("url"), &Value::String(raw_url), "must be host:port of the upstream pool"));
        }
        Ok(Upstream { url, auth: s(key!(self.auth))?, pass: Secret::new(s(key!(self.pass))?) })
    }
}

impl RawConfig {
    /// Checks every key and the rules between keys; `unknown` is the file's unknown keys.
    fn validate(self, path: &Path, mut unknown_keys: Vec<String>) -> Result<Config, ConfigError> {
        let c = Ctx { path };
        let r = &self;
        let btcd = c
            .entries(key!(r.btcd), BTCD_KEYS, &mut unknown_keys)?
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.validate(&c, i))
            .collect::<Result<Vec<_>, _>>()?;
        let proxy = c
            .entries(key!(r.proxy), PROXY_KEYS, &mut unknown_keys)?
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.validate(&c, i))
            .collect::<Result<Vec<_>, _>>()?;

        let serverurl = match c.typed(key!(r.serverurl), "must be an array of \"address:port\" strings")? {
            None => vec!["0.0.0.0:3333".parse().expect("literal")],
            Some(ServerUrls::Many(a)) if !a.is_empty() => a
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    u.typed.as_deref().and_then(parse_listen).ok_or_else(|| {
                        c.err(&format!("serverurl[{i}]"), &u.json, "must be \"address:port\", e.g. \"0.0.0.0:3333\"")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(ServerUrls::One(s)) => vec![parse_listen(s)
                .ok_or_else(|| c.err("serverurl", &Value::String(s.clone()), "must be \"address:port\""))?],
            Some(ServerUrls::Many(_)) => {
                return Err(c.err("serverurl", &Value::Array(vec![]), "must be an array of \"address:port\" strings"))
            }
        };

        let json = |f: &Option<Field<Decimal>>| f.as_ref().map_or(Value::Null, |f| f.json.clone());
        let mindiff = c.difficulty(key!(r.mindiff), Difficulty::ONE)?;
        let startdiff = c.difficulty(key!(r.startdiff), Difficulty::from_integer(42))?;
        let maxdiff = c.difficulty(key!(r.maxdiff), Difficulty::ZERO)?;
        if mindiff.is_zero() {
            return Err(c.err("mindiff", &json(&r.mindiff), "must be above 0 (fractions such as 0.001 are allowed)"));
        }
        if startdiff < mindiff {
            return Err(c.err("startdiff", &json(&r.startdiff), format!("must be at least mindiff ({mindiff})")));
        }
        if !maxdiff.is_zero() && maxdiff < startdiff {
            return Err(c.err(
                "maxdiff",
                &json(&r.maxdiff),
                format!("must be 0 (no maximum) or at least startdiff ({startdiff})"),
            ));
        }

        const MASK_RULE: &str = "must be a hex string such as \"1fffe000\"";
        let version_mask = match c.typed(key!(r.version_mask), MASK_RULE)? {
            None => 0x1fff_e000,
            Some(s) => u32::from_str_radix(s.trim_start_matches("0x"), 16)
                .map_err(|_| c.err("version_mask", &Value::String(s.clone()), MASK_RULE))?,
        };

        let zmq = c.string(key!(r.zmqblock), "")?;
        let zmqblock = if zmq.is_empty() {
            None
        } else if zmq.starts_with("tcp://") || zmq.starts_with("ipc://") {
            Some(zmq)
        } else {
            return Err(c.err(
                "zmqblock",
                &Value::String(zmq),
                "must be a ZMQ endpoint such as \"tcp://127.0.0.1:28332\"",
            ));
        };

        let defaults = VardiffParams::default();
        let vardiff = VardiffParams {
            target_interval_us: c.seconds_us(
                key!(r.vardiff_target_interval),
                defaults.target_interval_us,
                10_000,
                3_600_000_000,
            )?,
            retarget_interval_us: c.seconds_us(
                key!(r.vardiff_retarget_interval),
                defaults.retarget_interval_us,
                100_000,
                86_400_000_000,
            )?,
        };
        if vardiff.retarget_interval_us < vardiff.target_interval_us {
            let mut rule = "must be at least vardiff_target_interval".to_string();
            if r.vardiff_retarget_interval.is_none() {
                // Not set: say what the default is (the rule alone would puzzle).
                rule += &format!(
                    " ({} s); not set, it is {} s",
                    seconds_text(vardiff.target_interval_us),
                    seconds_text(vardiff.retarget_interval_us)
                );
            }
            return Err(c.err("vardiff_retarget_interval", &json(&r.vardiff_retarget_interval), rule));
        }
        Ok(Config {
            path: path.into(),
            btcd,
            proxy,
            btcaddress: c.string(key!(r.btcaddress), "")?.trim().to_string(),
            btcsig: c.string(key!(r.btcsig), "")?,
            serverurl,
            mindiff,
            startdiff,
            maxdiff,
            zmqblock,
            logdir: PathBuf::from(c.string(key!(r.logdir), "logs")?),
            blockpoll: Duration::from_millis(c.uint(key!(r.blockpoll), 100, 1, 60_000)?),
            update_interval: Duration::from_secs(c.uint(key!(r.update_interval), 30, 1, 3600)?),
            nonce1length: c.uint(key!(r.nonce1length), 4, 2, 8)? as usize,
            nonce2length: c.uint(key!(r.nonce2length), 8, 2, 8)? as usize,
            version_mask,
            maxclients: c.uint(key!(r.maxclients), 0, 0, 10_000_000)? as usize,
            vardiff,
            stats_interval: Duration::from_secs(c.uint(key!(r.stats_interval), 60, 1, 3600)?),
            unknown_keys,
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
        // Through a Value first: the first value of the text only, and a key written twice is
        // read as ckpool (jansson) reads it: the last one counts.
        let v = first_json_value(text, path)?;
        let Value::Object(obj) = &v else { return Err(ConfigError::NotObject { path: path.into() }) };
        let unknown = obj.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).cloned().collect();
        // Every key is read through `Field`, which takes any JSON value: this cannot fail on an object.
        let raw = RawConfig::deserialize(v).map_err(|e| ConfigError::Json {
            path: path.into(),
            why: e.to_string(),
            line: e.line(),
            column: e.column(),
        })?;
        raw.validate(path, unknown)
    }

    /// Checks what pool mode needs beyond the file's own consistency.
    pub fn require_pool(&self) -> Result<(), ConfigError> {
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
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator guide's /etc/ckpool.conf, as its heredoc writes it (tabs, trailing comment).
    pub const GUIDE_CKPOOL_CONF: &str = "{\n\"btcd\" : [\n\t{\n\t\"url\" : \"localhost:19332\",\n\t\"auth\" : \"satoshi\",\n\t\"pass\" : \"s3cretPassw0rd\",\n\t\"notify\" : true\n\t}\n],\n\"btcaddress\" : \"mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn\",\n\"btcsig\" : \"\",\n\"serverurl\" : [\n\t\"0.0.0.0:3333\"\n],\n\"mindiff\" : 1,\n\"startdiff\" : 42,\n\"maxdiff\" : 0,\n\"zmqblock\" : \"tcp://127.0.0.1:28332\",\n\"logdir\" : \"/var/log/stratum\"\n}\nComments from here on are ignored.\n";

    #[test]
    fn vardiff_and_stats_keys() {
        let c = Config::parse(GUIDE_CKPOOL_CONF, Path::new("a.conf")).unwrap();
        assert_eq!(c.vardiff, VardiffParams::default());
        assert_eq!(c.stats_interval, Duration::from_secs(60));
        let text = r#"{"vardiff_target_interval": 0.25, "vardiff_retarget_interval": "2", "stats_interval": 1}"#;
        let c = Config::parse(text, Path::new("a.conf")).unwrap();
        assert_eq!(c.vardiff.target_interval_us, 250_000);
        assert_eq!(c.vardiff.retarget_interval_us, 2_000_000);
        assert_eq!(c.vardiff.retarget_shares(), 8);
        assert_eq!(c.stats_interval, Duration::from_secs(1));
        assert!(c.unknown_keys.is_empty());
        for bad in [
            r#"{"vardiff_target_interval": 0}"#,
            r#"{"vardiff_target_interval": "x"}"#,
            r#"{"vardiff_target_interval": 10, "vardiff_retarget_interval": 5}"#,
            r#"{"stats_interval": 0}"#,
        ] {
            let e = Config::parse(bad, Path::new("a.conf")).unwrap_err().to_string();
            assert!(e.contains("vardiff_") || e.contains("stats_interval"), "{bad}: {e}");
        }
    }

    #[test]
    fn guide_config_parses() {
        let c = Config::parse(GUIDE_CKPOOL_CONF, Path::new("/etc/ckpool.conf")).unwrap();
        assert_eq!(c.btcd.len(), 1);
        assert_eq!(c.btcd[0].url, "http://localhost:19332/");
        assert!(c.btcd[0].notify);
        assert_eq!(c.serverurl, vec!["0.0.0.0:3333".parse().unwrap()]);
        assert_eq!(c.startdiff, Difficulty::from_integer(42));
        assert!(c.maxdiff.is_zero());
        assert_eq!(c.zmqblock.as_deref(), Some("tcp://127.0.0.1:28332"));
        assert_eq!(c.logdir, PathBuf::from("/var/log/stratum"));
        assert_eq!((c.nonce1length, c.nonce2length, c.version_mask), (4, 8, 0x1fffe000));
        assert!(c.unknown_keys.is_empty());
        c.require_pool().unwrap();
        // The password never appears in Debug output.
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cretPassw0rd"), "{dbg}");
    }

    #[test]
    fn errors_name_key_value_and_rule() {
        let p = Path::new("t.conf");
        for (text, needle) in [
            (r#"{"mindiff": -1}"#, "\"mindiff\" = -1"),
            (r#"{"mindiff": "x"}"#, "mindiff"),
            (r#"{"startdiff": 0.5}"#, "must be at least mindiff (1)"),
            (r#"{"maxdiff": 10, "startdiff": 42}"#, "maxdiff"),
            (r#"{"nonce2length": 9}"#, "from 2 to 8"),
            (r#"{"serverurl": ["nope"]}"#, "serverurl[0]"),
            (r#"{"btcd": [{"url": "localhost", "auth": "a", "pass": "b"}]}"#, "btcd[0].url"),
            (r#"{"version_mask": "xyz"}"#, "version_mask"),
            (r#"{"zmqblock": "127.0.0.1:28332"}"#, "zmqblock"),
            (r#"[1]"#, "top level"),
            (r#"{"btcd": "#, "not valid JSON"),
        ] {
            let e = Config::parse(text, p).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn fractional_difficulties_and_unknown_keys() {
        let c = Config::parse(r#"{"mindiff": 0.0001, "startdiff": 0.001, "frobnicate": 1}"#, Path::new("x")).unwrap();
        assert_eq!(c.mindiff.to_string(), "0.0001");
        assert_eq!(c.startdiff.to_string(), "0.001");
        assert_eq!(c.unknown_keys, vec!["frobnicate".to_string()]);
    }

    #[test]
    fn password_not_in_error() {
        let e = Config::parse(r#"{"btcd": [{"url": "h:1", "auth": "u", "pass": 5}]}"#, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("redacted") && !e.contains(" 5"), "{e}");
    }

    /// The rows of the tables of docs/configuration.md's section `title`: each key, after
    /// checking that the row gives a type, a default and what the key does.
    fn documented_keys(title: &str) -> Vec<&'static str> {
        let doc = include_str!("../docs/configuration.md");
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{title}\n")))
            .unwrap_or_else(|| panic!("a \"## {title}\" section"));
        let mut keys = Vec::new();
        for l in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = l.split(" | ").collect();
            assert!(cells.len() >= 4 && cells[1..4].iter().all(|c| !c.trim().is_empty()), "{l}");
            keys.push(l.strip_prefix("| `").and_then(|r| r.split_once("` |")).expect("a key cell").0);
        }
        keys
    }

    /// Asserts that the lists `a` and `b` (named in the message) hold the same keys, once each.
    fn same_keys(what: &str, (a_name, a): (&str, &[&str]), (b_name, b): (&str, &[&str])) {
        let (mut a, mut b) = (a.to_vec(), b.to_vec());
        a.sort();
        b.sort();
        let only_a: Vec<&&str> = a.iter().filter(|x| !b.contains(x)).collect();
        let only_b: Vec<&&str> = b.iter().filter(|x| !a.contains(x)).collect();
        assert!(only_a.is_empty(), "{what}: keys in {a_name} but not in {b_name}: {only_a:?}");
        assert!(only_b.is_empty(), "{what}: keys in {b_name} but not in {a_name}: {only_b:?}");
        assert_eq!(a.len(), b.len(), "{what}: a key listed twice");
    }

    /// docs/configuration.md documents exactly the keys the parser knows: every key of
    /// KNOWN_KEYS has a row in a table of its "Keys" section, and every row there names a known key;
    /// likewise for the keys of a `btcd` and a `proxy` entry.
    #[test]
    fn configuration_doc_and_known_keys_agree() {
        let doc = "docs/configuration.md";
        same_keys("top level", (doc, &documented_keys("Keys")), ("KNOWN_KEYS", KNOWN_KEYS));
        same_keys("btcd entry", (doc, &documented_keys("Keys of a `btcd` entry")), ("BTCD_KEYS", BTCD_KEYS));
        same_keys("proxy entry", (doc, &documented_keys("Keys of a `proxy` entry")), ("PROXY_KEYS", PROXY_KEYS));
        // A key unknown to the parser is reported, so the list above is the one the parser uses.
        let c = Config::parse("{\"not_a_key\": 1}", Path::new("t.conf")).unwrap();
        assert_eq!(c.unknown_keys, ["not_a_key"]);
    }

    /// The field names serde derive reads for `T` (the list it passes to `deserialize_struct`).
    fn fields_of<T: DeserializeOwned>() -> Vec<&'static str> {
        use serde::de::{Error, Visitor};
        struct Probe<'a>(&'a mut Vec<&'static str>);
        impl<'de> Deserializer<'de> for Probe<'_> {
            type Error = serde::de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0.extend(fields);
                Err(Error::custom("fields recorded"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
                option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
            }
        }
        let mut fields = Vec::new();
        let _ = T::deserialize(Probe(&mut fields));
        assert!(!fields.is_empty(), "{} is not a struct", std::any::type_name::<T>());
        fields
    }

    /// KNOWN_KEYS (which decides what is unknown), BTCD_KEYS and PROXY_KEYS are exactly the
    /// fields serde reads: a key cannot be read without being known, nor known without being read.
    #[test]
    fn known_keys_are_the_raw_structs_fields() {
        let serde = "the fields serde reads";
        same_keys("top level", (serde, &fields_of::<RawConfig>()), ("KNOWN_KEYS", KNOWN_KEYS));
        same_keys("btcd entry", (serde, &fields_of::<RawBtcd>()), ("BTCD_KEYS", BTCD_KEYS));
        same_keys("proxy entry", (serde, &fields_of::<RawUpstream>()), ("PROXY_KEYS", PROXY_KEYS));
    }

    /// A value of the wrong type is our message (file, key, value, rule), not serde's: one case
    /// for every typed key, and every key the parser reads has a case here.
    #[test]
    fn wrong_types_are_named_by_key_and_rule() {
        let b = r#""btcd": [{"url": "h:1", "auth": "u""#;
        let p = r#""proxy": [{"url": "h:1""#;
        let cases: &[(&str, String, &str)] = &[
            (
                "btcd",
                r#"{"btcd": {"url": "h:1"}}"#.into(),
                r#""btcd" = {"url":"h:1"}: must be an array of {"url", "auth", "pass"} objects"#,
            ),
            (
                "btcd[0]",
                r#"{"btcd": [["h:1", "u", "p"]]}"#.into(),
                r#""btcd[0]" = ["h:1","u","p"]: must be an object with url, auth, pass"#,
            ),
            (
                "btcd[0].url",
                r#"{"btcd": [{"url": 8332, "auth": "u"}]}"#.into(),
                r#""btcd[0].url" = 8332: must be a string"#,
            ),
            (
                "btcd[0].auth",
                r#"{"btcd": [{"url": "h:1", "auth": true}]}"#.into(),
                r#""btcd[0].auth" = true: must be a string"#,
            ),
            (
                "btcd[0].pass",
                format!(r#"{{{b}, "pass": 1234}}]}}"#),
                r#""btcd[0].pass" = "<redacted>": must be a string"#,
            ),
            (
                "btcd[0].cookie",
                format!(r#"{{{b}, "cookie": ["/c"]}}]}}"#),
                r#""btcd[0].cookie" = ["/c"]: must be a string"#,
            ),
            (
                "btcd[0].notify",
                format!(r#"{{{b}, "notify": "yes"}}]}}"#),
                r#""btcd[0].notify" = "yes": must be true or false"#,
            ),
            (
                "proxy",
                r#"{"proxy": "h:1"}"#.into(),
                r#""proxy" = "h:1": must be an array of {"url", "auth", "pass"} objects"#,
            ),
            (
                "proxy[0]",
                r#"{"proxy": ["h:1"]}"#.into(),
                r#""proxy[0]" = "h:1": must be an object with url, auth, pass"#,
            ),
            ("proxy[0].url", r#"{"proxy": [{"url": 3333}]}"#.into(), r#""proxy[0].url" = 3333: must be a string"#),
            ("proxy[0].auth", format!(r#"{{{p}, "auth": ["w"]}}]}}"#), r#""proxy[0].auth" = ["w"]: must be a string"#),
            (
                "proxy[0].pass",
                format!(r#"{{{p}, "pass": 1234}}]}}"#),
                r#""proxy[0].pass" = "<redacted>": must be a string"#,
            ),
            ("btcaddress", r#"{"btcaddress": 1}"#.into(), r#""btcaddress" = 1: must be a string"#),
            ("btcsig", r#"{"btcsig": ["/x/"]}"#.into(), r#""btcsig" = ["/x/"]: must be a string"#),
            (
                "serverurl",
                r#"{"serverurl": 3333}"#.into(),
                r#""serverurl" = 3333: must be an array of "address:port" strings"#,
            ),
            (
                "serverurl[1]",
                r#"{"serverurl": ["127.0.0.1:3333", 3334]}"#.into(),
                r#""serverurl[1]" = 3334: must be "address:port", e.g. "0.0.0.0:3333""#,
            ),
            (
                "mindiff",
                r#"{"mindiff": true}"#.into(),
                r#""mindiff" = true: must be a difficulty >= 0, fractions allowed (difficulty "true" is not a decimal number)"#,
            ),
            (
                "startdiff",
                r#"{"startdiff": [42]}"#.into(),
                r#""startdiff" = [42]: must be a difficulty >= 0, fractions allowed (difficulty "[42]" is not a decimal number)"#,
            ),
            (
                "maxdiff",
                r#"{"maxdiff": {}}"#.into(),
                r#""maxdiff" = {}: must be a difficulty >= 0, fractions allowed (difficulty "{}" is not a decimal number)"#,
            ),
            ("zmqblock", r#"{"zmqblock": 28332}"#.into(), r#""zmqblock" = 28332: must be a string"#),
            ("logdir", r#"{"logdir": false}"#.into(), r#""logdir" = false: must be a string"#),
            (
                "blockpoll",
                r#"{"blockpoll": "100"}"#.into(),
                r#""blockpoll" = "100": must be a whole number from 1 to 60000"#,
            ),
            (
                "update_interval",
                r#"{"update_interval": 1.5}"#.into(),
                r#""update_interval" = 1.5: must be a whole number from 1 to 3600"#,
            ),
            (
                "nonce1length",
                r#"{"nonce1length": -4}"#.into(),
                r#""nonce1length" = -4: must be a whole number from 2 to 8"#,
            ),
            (
                "nonce2length",
                r#"{"nonce2length": "8"}"#.into(),
                r#""nonce2length" = "8": must be a whole number from 2 to 8"#,
            ),
            (
                "version_mask",
                r#"{"version_mask": 536862720}"#.into(),
                r#""version_mask" = 536862720: must be a hex string such as "1fffe000""#,
            ),
            (
                "maxclients",
                r#"{"maxclients": true}"#.into(),
                r#""maxclients" = true: must be a whole number from 0 to 10000000"#,
            ),
            (
                "vardiff_target_interval",
                r#"{"vardiff_target_interval": []}"#.into(),
                r#""vardiff_target_interval" = []: must be seconds from 0.01 to 3600"#,
            ),
            (
                "vardiff_retarget_interval",
                r#"{"vardiff_retarget_interval": false}"#.into(),
                r#""vardiff_retarget_interval" = false: must be seconds from 0.1 to 86400"#,
            ),
            (
                "stats_interval",
                r#"{"stats_interval": "60"}"#.into(),
                r#""stats_interval" = "60": must be a whole number from 1 to 3600"#,
            ),
        ];
        for (key, text, message) in cases {
            let e = Config::parse(text, Path::new("t.conf")).unwrap_err();
            assert!(matches!(&e, ConfigError::Key { key: k, .. } if k == key), "{text}: {e:?}");
            assert_eq!(e.to_string(), format!("config file t.conf: key {message}"), "{text}");
            assert!(!e.to_string().contains("1234"), "a password shown: {e}");
        }
        // Every key serde reads has a case (the compatibility keys take any value).
        let compat = ["donation", "useragent", "redirecturl", "dropidle", "serverurls"];
        let named: Vec<&str> = cases.iter().map(|c| c.0).collect();
        for k in KNOWN_KEYS.iter().filter(|k| !compat.contains(k)) {
            assert!(named.contains(k), "no wrong-type case for {k}");
        }
        for (entry, keys) in [("btcd[0]", BTCD_KEYS), ("proxy[0]", PROXY_KEYS)] {
            for k in keys {
                assert!(named.contains(&format!("{entry}.{k}").as_str()), "no wrong-type case for {entry}.{k}");
            }
        }
        for k in compat {
            let c = Config::parse(&format!("{{\"{k}\": [{{\"any\": true}}]}}"), Path::new("t.conf")).unwrap();
            assert!(c.unknown_keys.is_empty(), "{k}");
        }
    }

    /// `proxy[i]` is read as strictly as `btcd[i]`: types, a real host:port, unknown keys named.
    #[test]
    fn proxy_entries_are_strict() {
        let parse = |text: &str| Config::parse(text, Path::new("p.conf"));
        let c = parse(
            r#"{"proxy": [{"url": "stratum+tcp://pool.example:3333", "auth": "addr.worker", "pass": "x"},
                                    {"url": "[::1]:3334"}]}"#,
        )
        .unwrap();
        assert_eq!(
            c.proxy[0],
            Upstream { url: "pool.example:3333".into(), auth: "addr.worker".into(), pass: Secret::new("x") }
        );
        assert_eq!(c.proxy[1], Upstream { url: "[::1]:3334".into(), auth: String::new(), pass: Secret::new("") });
        c.require_proxy().unwrap();
        for url in
            ["pool.example", "pool.example:0", "pool.example:x", "pool.example:3333/", ":3333", "pool example:1", ""]
        {
            let e = parse(&format!(r#"{{"proxy": [{{"url": "{url}"}}]}}"#)).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("config file p.conf: key \"proxy[0].url\" = \"{url}\": must be host:port of the upstream pool")
            );
        }
        // A missing url is an empty one.
        let e = parse(r#"{"proxy": [{"auth": "w"}]}"#).unwrap_err().to_string();
        assert!(e.contains(r#""proxy[0].url" = """#), "{e}");
        // Unknown keys inside entries are named with their entry, after the top-level ones.
        let c = parse(
            r#"{"zz": 1, "btcd": [{"url": "h:1", "auth": "u", "notfy": true}],
                "proxy": [{"url": "h:2"}, {"url": "h:3", "user": "w", "password": "p"}]}"#,
        )
        .unwrap();
        assert_eq!(c.unknown_keys, ["zz", "btcd[0].notfy", "proxy[1].password", "proxy[1].user"]);
    }

    /// null is "not set" for every key, as in ckpool; the result is the defaults of `{}`.
    #[test]
    fn null_means_default_for_every_key() {
        let all_null =
            format!("{{{}}}", KNOWN_KEYS.iter().map(|k| format!("\"{k}\": null")).collect::<Vec<_>>().join(", "));
        let a = Config::parse(&all_null, Path::new("x")).unwrap();
        let b = Config::parse("{}", Path::new("x")).unwrap();
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        let c = Config::parse(
            r#"{"btcd": [{"url": "h:1", "auth": "u", "pass": null, "cookie": null, "notify": null}]}"#,
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.btcd[0].auth, RpcAuth::UserPass { user: "u".into(), pass: Secret::new("") });
        assert!(!c.btcd[0].notify);
    }

    /// A target interval above the default retarget interval, the latter not set: a clear error
    /// (an older reader panicked here, looking the missing key up).
    #[test]
    fn vardiff_target_above_default_retarget() {
        let e = Config::parse(r#"{"vardiff_target_interval": 300}"#, Path::new("x")).unwrap_err().to_string();
        assert_eq!(
            e,
            "config file x: key \"vardiff_retarget_interval\" = null: must be at least vardiff_target_interval \
             (300 s); not set, it is 240 s"
        );
        let e = Config::parse(r#"{"vardiff_target_interval": 2.5, "vardiff_retarget_interval": 2.25}"#, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("= 2.25: must be at least vardiff_target_interval"), "{e}");
        let c = Config::parse(r#"{"vardiff_target_interval": 300, "vardiff_retarget_interval": 300}"#, Path::new("x"))
            .unwrap();
        assert_eq!(c.vardiff.retarget_interval_us, 300_000_000);
    }

    /// The operator's files as the guide writes them (shared/seeds/004): pool and proxy.
    #[test]
    fn guide_proxy_config_parses() {
        let text = "{\n\"btcd\" : [\n\t{\n\t\"url\" : \"localhost:19332\",\n\t\"auth\" : \"satoshi\",\n\t\"pass\" : \"s3cretPassw0rd\",\n\t\"notify\" : true\n\t}\n],\n\"proxy\" : [\n\t{\n\t\"url\" : \"localhost:3334\",\n\t\"auth\" : \"mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn.me@example.org\",\n\t\"pass\" : \"x\"\n\t}\n],\n\"btcaddress\" : \"\",\n\"serverurl\" : [\n\t\"0.0.0.0:3333\"\n],\n\"mindiff\" : 1,\n\"startdiff\" : 42,\n\"maxdiff\" : 0,\n\"zmqblock\" : \"tcp://127.0.0.1:28332\",\n\"logdir\" : \"/var/log/stratum\"\n}\nComments from here on are ignored.\n";
        let c = Config::parse(text, Path::new("/etc/ckproxy.conf")).unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        c.require_proxy().unwrap();
        assert_eq!(c.proxy[0].url, "localhost:3334");
        assert_eq!(c.proxy[0].auth, "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn.me@example.org");
    }
}
