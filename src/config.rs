//! ckpool.conf / ckproxy.conf: ckpool's JSON keys with ckpool's meanings, checked before anything
//! starts. Text after the closing brace is ignored (the operator's guide ends its files with
//! "Comments from here on are ignored."). Unknown keys are reported by name; a bad value is an
//! error naming the key, the value and what is allowed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::difficulty::Difficulty;
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
    /// ckpool's `donation` percent in basis points (1/100 %): in solo mode that share of each
    /// block goes to `btcaddress`.
    pub donation_bp: u32,
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

struct Reader<'a> {
    path: &'a Path,
    obj: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, key: &str, value: &Value, allowed: impl Into<String>) -> ConfigError {
        let shown = if key.ends_with("pass") { "\"<redacted>\"".to_string() } else { value.to_string() };
        ConfigError::Key { path: self.path.into(), key: key.into(), value: shown, allowed: allowed.into() }
    }

    fn string(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default.into()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.err(key, v, "must be a string")),
        }
    }

    fn uint(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(self.err(key, v, format!("must be a whole number from {min} to {max}"))),
            },
        }
    }

    /// Seconds as an exact decimal ("3.333", "240"), returned in microseconds.
    fn seconds_us(&self, key: &str, default_us: u64, min_us: u64, max_us: u64) -> Result<u64, ConfigError> {
        let Some(v) = self.obj.get(key).filter(|v| !v.is_null()) else { return Ok(default_us) };
        let allowed = || format!("must be seconds from {} to {}", min_us as f64 / 1e6, max_us as f64 / 1e6);
        // Difficulty is an exact 12-place decimal: reuse its parser; 10^-12 units / 10^6 = µs.
        let d = Difficulty::from_json(v).map_err(|_| self.err(key, v, allowed()))?;
        let us = d.units() / 1_000_000;
        if us < min_us as u128 || us > max_us as u128 {
            return Err(self.err(key, v, allowed()));
        }
        Ok(us as u64)
    }

    fn difficulty(&self, key: &str, default: Difficulty) -> Result<Difficulty, ConfigError> {
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => Difficulty::from_json(v)
                .map_err(|e| self.err(key, v, format!("must be a difficulty >= 0, fractions allowed ({e})"))),
        }
    }
}

/// Normalizes a btcd url ("localhost:19332", "127.0.0.1:8332", "http://host:port") to http://host:port/.
fn normalize_rpc_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    if rest.starts_with("https://") || rest.is_empty() || rest.contains(char::is_whitespace) {
        return None;
    }
    let hostport = rest.trim_end_matches('/');
    let (host, port) = hostport.rsplit_once(':')?;
    if host.is_empty() || port.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
        return None;
    }
    Some(format!("http://{hostport}/"))
}

fn parse_listen(s: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let s = s.trim().trim_start_matches("stratum+tcp://");
    s.parse().ok().or_else(|| s.to_socket_addrs().ok()?.next())
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text (`path` is used in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let v = first_json_value(text, path)?;
        let obj = v.as_object().ok_or_else(|| ConfigError::NotObject { path: path.into() })?;
        let r = Reader { path, obj };

        let mut btcd = Vec::new();
        match obj.get("btcd") {
            None | Some(Value::Null) => {}
            Some(Value::Array(entries)) => {
                for (i, e) in entries.iter().enumerate() {
                    let key = |k: &str| format!("btcd[{i}].{k}");
                    let o = e
                        .as_object()
                        .ok_or_else(|| r.err(&format!("btcd[{i}]"), e, "must be an object with url, auth, pass"))?;
                    let s = |k: &str| -> Result<String, ConfigError> {
                        match o.get(k) {
                            None | Some(Value::Null) => Ok(String::new()),
                            Some(Value::String(s)) => Ok(s.clone()),
                            Some(v) => Err(r.err(&key(k), v, "must be a string")),
                        }
                    };
                    let raw_url = s("url")?;
                    let url = normalize_rpc_url(&raw_url).ok_or_else(|| {
                        r.err(
                            &key("url"),
                            &Value::String(raw_url.clone()),
                            "must be host:port, e.g. \"localhost:8332\"",
                        )
                    })?;
                    let cookie = s("cookie")?;
                    let auth = if !cookie.is_empty() {
                        RpcAuth::Cookie(PathBuf::from(cookie))
                    } else {
                        let user = s("auth")?;
                        let pass = s("pass")?;
                        if user.is_empty() {
                            return Err(r.err(
                                &key("auth"),
                                &Value::String(user),
                                "must name the RPC user (rpcauth) or give \"cookie\": \"/path/.cookie\"",
                            ));
                        }
                        RpcAuth::UserPass { user, pass: Secret::new(pass) }
                    };
                    let notify = match o.get("notify") {
                        None | Some(Value::Null) => false,
                        Some(Value::Bool(b)) => *b,
                        Some(v) => return Err(r.err(&key("notify"), v, "must be true or false")),
                    };
                    btcd.push(Btcd { url, auth, notify });
                }
            }
            Some(v) => return Err(r.err("btcd", v, "must be an array of {\"url\", \"auth\", \"pass\"} objects")),
        }

        let mut proxy = Vec::new();
        match obj.get("proxy") {
            None | Some(Value::Null) => {}
            Some(Value::Array(entries)) => {
                for (i, e) in entries.iter().enumerate() {
                    let o = e
                        .as_object()
                        .ok_or_else(|| r.err(&format!("proxy[{i}]"), e, "must be an object with url, auth, pass"))?;
                    let get = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    let url = get("url").trim_start_matches("stratum+tcp://").to_string();
                    if !url.contains(':') {
                        return Err(r.err(
                            &format!("proxy[{i}].url"),
                            &Value::String(url),
                            "must be host:port of the upstream pool",
                        ));
                    }
                    proxy.push(Upstream { url, auth: get("auth"), pass: Secret::new(get("pass")) });
                }
            }
            Some(v) => return Err(r.err("proxy", v, "must be an array of {\"url\", \"auth\", \"pass\"} objects")),
        }

        let serverurl = match obj.get("serverurl") {
            None | Some(Value::Null) => vec!["0.0.0.0:3333".parse().expect("literal")],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    u.as_str().and_then(parse_listen).ok_or_else(|| {
                        r.err(&format!("serverurl[{i}]"), u, "must be \"address:port\", e.g. \"0.0.0.0:3333\"")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(Value::String(s)) => {
                vec![parse_listen(s)
                    .ok_or_else(|| r.err("serverurl", &Value::String(s.clone()), "must be \"address:port\""))?]
            }
            Some(v) => return Err(r.err("serverurl", v, "must be an array of \"address:port\" strings")),
        };

        let mindiff = r.difficulty("mindiff", Difficulty::ONE)?;
        let startdiff = r.difficulty("startdiff", Difficulty::from_integer(42))?;
        let maxdiff = r.difficulty("maxdiff", Difficulty::ZERO)?;
        if mindiff.is_zero() {
            return Err(r.err("mindiff", &obj["mindiff"], "must be above 0 (fractions such as 0.001 are allowed)"));
        }
        if startdiff < mindiff {
            return Err(r.err(
                "startdiff",
                &obj.get("startdiff").cloned().unwrap_or(Value::Null),
                format!("must be at least mindiff ({mindiff})"),
            ));
        }
        if !maxdiff.is_zero() && maxdiff < startdiff {
            return Err(r.err(
                "maxdiff",
                &obj["maxdiff"],
                format!("must be 0 (no maximum) or at least startdiff ({startdiff})"),
            ));
        }

        let version_mask = match obj.get("version_mask") {
            None | Some(Value::Null) => 0x1fff_e000,
            Some(Value::String(s)) => u32::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|_| {
                r.err("version_mask", &Value::String(s.clone()), "must be a hex string such as \"1fffe000\"")
            })?,
            Some(v) => return Err(r.err("version_mask", v, "must be a hex string such as \"1fffe000\"")),
        };

        let zmq = r.string("zmqblock", "")?;
        let zmqblock = if zmq.is_empty() {
            None
        } else if zmq.starts_with("tcp://") || zmq.starts_with("ipc://") {
            Some(zmq)
        } else {
            return Err(r.err(
                "zmqblock",
                &Value::String(zmq),
                "must be a ZMQ endpoint such as \"tcp://127.0.0.1:28332\"",
            ));
        };

        let defaults = VardiffParams::default();
        let vardiff = VardiffParams {
            target_interval_us: r.seconds_us(
                "vardiff_target_interval",
                defaults.target_interval_us,
                10_000,
                3_600_000_000,
            )?,
            retarget_interval_us: r.seconds_us(
                "vardiff_retarget_interval",
                defaults.retarget_interval_us,
                100_000,
                86_400_000_000,
            )?,
        };
        if vardiff.retarget_interval_us < vardiff.target_interval_us {
            return Err(r.err(
                "vardiff_retarget_interval",
                &obj["vardiff_retarget_interval"],
                "must be at least vardiff_target_interval",
            ));
        }
        let unknown_keys = obj.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).cloned().collect();
        let donation_bp = match obj.get("donation") {
            None | Some(Value::Null) => 0,
            Some(v) => {
                let text = match v {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                crate::work::coinbase::donation_basis_points(&text)
                    .ok_or_else(|| r.err("donation", v, "must be a percent from 0 to 100 with at most two decimals"))?
            }
        };
        Ok(Config {
            path: path.into(),
            btcd,
            proxy,
            btcaddress: r.string("btcaddress", "")?.trim().to_string(),
            btcsig: r.string("btcsig", "")?,
            serverurl,
            mindiff,
            startdiff,
            maxdiff,
            zmqblock,
            logdir: PathBuf::from(r.string("logdir", "logs")?),
            blockpoll: Duration::from_millis(r.uint("blockpoll", 100, 1, 60_000)?),
            update_interval: Duration::from_secs(r.uint("update_interval", 30, 1, 3600)?),
            nonce1length: r.uint("nonce1length", 4, 2, 8)? as usize,
            nonce2length: r.uint("nonce2length", 8, 2, 8)? as usize,
            version_mask,
            maxclients: r.uint("maxclients", 0, 0, 10_000_000)? as usize,
            vardiff,
            stats_interval: Duration::from_secs(r.uint("stats_interval", 60, 1, 3600)?),
            unknown_keys,
            donation_bp,
        })
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

    /// docs/configuration.md documents exactly the keys the parser knows: every key of
    /// KNOWN_KEYS has a row in a table of its "Keys" section, and every row there names a known key.
    #[test]
    fn configuration_doc_and_known_keys_agree() {
        let doc = include_str!("../docs/configuration.md");
        let section = doc.split("\n## ").find(|s| s.starts_with("Keys\n")).expect("a \"## Keys\" section");
        let mut documented: Vec<&str> =
            section.lines().filter_map(|l| l.strip_prefix("| `")?.split_once("` |").map(|(k, _)| k)).collect();
        documented.sort();
        let mut known = KNOWN_KEYS.to_vec();
        known.sort();
        let undocumented: Vec<&&str> = known.iter().filter(|k| !documented.contains(k)).collect();
        let unknown: Vec<&&str> = documented.iter().filter(|k| !known.contains(k)).collect();
        assert!(undocumented.is_empty(), "keys the parser knows but docs/configuration.md does not: {undocumented:?}");
        assert!(unknown.is_empty(), "keys docs/configuration.md documents but the parser does not know: {unknown:?}");
        assert_eq!(documented.len(), known.len(), "a key documented twice");
        // Each row gives a type, a default and what it does.
        for l in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = l.split(" | ").collect();
            assert!(cells.len() >= 4 && cells[1..4].iter().all(|c| !c.trim().is_empty()), "{l}");
        }
        // A key unknown to the parser is reported, so the list above is the one the parser uses.
        let c = Config::parse("{\"not_a_key\": 1}", Path::new("t.conf")).unwrap();
        assert_eq!(c.unknown_keys, ["not_a_key"]);
    }
}
