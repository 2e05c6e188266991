//! The file as serde reads it (ckpool's key names, every value through [`Field`]) and
//! [`RawConfig::validate`], which checks each value and the rules between them and makes the
//! [`Config`]. Every error names the file, the key, the value (passwords redacted) and the rule.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;

use super::{
    Btcd, Config, ConfigError, Listener, RpcAuth, Secret, Upstream, BTCD_KEYS, KNOWN_KEYS, PROXY_KEYS, SERVERURL_KEYS,
};
use crate::difficulty::{Difficulty, ParseDifficultyError};
use crate::mining::vardiff::VardiffParams;
use crate::proxy_protocol::Accept;

/// Parses and validates config text (`path` is used in messages).
pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    // Through a Value first: the first value of the text only, and a key written twice is
    // read as ckpool (jansson) reads it: the last one counts.
    let v = first_json_value(text, path)?;
    let Value::Object(obj) = &v else { return Err(ConfigError::NotObject { path: path.into() }) };
    let unknown = obj.keys().filter(|k| !KNOWN_KEYS.contains(&k.as_str())).cloned().collect();
    // Every key is read through `Field`, which takes any JSON value: this cannot fail on an object.
    let raw = RawConfig::deserialize(v).map_err(|e| ConfigError::Json {
        path: path.into(),
        why: without_position(&e),
        line: e.line(),
        column: e.column(),
    })?;
    let unknown: Vec<String> = unknown;
    raw.validate(path, unknown.clone()).map_err(|e| e.with_unknown(&unknown))
}

/// serde_json's message without its own " at line L column C" (the error adds the position once).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).map_or(text.clone(), str::to_string)
}

/// Reads the first JSON value of `text`, ignoring whatever follows it.
fn first_json_value(text: &str, path: &Path) -> Result<Value, ConfigError> {
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match stream.next() {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => {
            Err(ConfigError::Json { path: path.into(), why: without_position(&e), line: e.line(), column: e.column() })
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

/// A decimal key: a JSON number (as ckpool reads it; a string such as `"42"` is a wrong type and
/// stops the start), parsed by `Difficulty`'s exact decimal parser from the number's text.
/// serde_json holds a number as an f64 (no `arbitrary_precision`) and prints back its shortest
/// text, so it is exact up to 15 significant digits, as `Difficulty::from_json` documents.
#[derive(Deserialize)]
struct Decimal(serde_json::Number);

impl Decimal {
    fn difficulty(&self) -> Result<Difficulty, ParseDifficultyError> {
        self.0.to_string().parse()
    }
}

/// The rule a decimal key broke, with the fix when the value was written as a string.
fn decimal_rule(rule: &str, json: &Value) -> String {
    match json {
        Value::String(t) => format!("{rule}; a JSON number, without quotes (`{}`, not `\"{}\"`)", t.trim(), t),
        _ => rule.to_string(),
    }
}

/// `serverurl`: one `"address:port"` string or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum ServerUrls {
    One(String),
    Many(Vec<Field<String>>),
}

/// `serverurl`: one `"address:port"` string, or an array of strings and objects
/// (`{"url": ..., "mindiff": ..., "tls": true, ...}`).
#[derive(Deserialize)]
#[serde(untagged)]
enum ServerEntries {
    One(String),
    Many(Vec<Field<RawListen>>),
}

/// One `serverurl` entry: a string, or an object with the listener's own options.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawListen {
    Url(String),
    Entry(Box<RawListenEntry>),
}

/// A `serverurl` entry written as an object.
#[derive(Deserialize)]
pub(super) struct RawListenEntry {
    url: Option<Field<String>>,
    mindiff: Option<Field<Decimal>>,
    startdiff: Option<Field<Decimal>>,
    maxdiff: Option<Field<Decimal>>,
    tls: Option<Field<bool>>,
    proxy_protocol: Option<Field<Value>>,
}

/// A config file as ckpool names its keys, each read through [`Field`]; [`RawConfig::validate`]
/// makes the [`Config`]. A key missing or `null` takes its default.
#[derive(Deserialize)]
pub(super) struct RawConfig {
    btcd: Option<Field<Vec<Field<RawBtcd>>>>,
    proxy: Option<Field<Vec<Field<RawUpstream>>>>,
    btcaddress: Option<Field<String>>,
    btcsig: Option<Field<String>>,
    serverurl: Option<Field<ServerEntries>>,
    apiurl: Option<Field<ServerUrls>>,
    sv2url: Option<Field<ServerUrls>>,
    sv2jdurl: Option<Field<ServerUrls>>,
    sv2_authority_key: Option<Field<String>>,
    sv2_static_key: Option<Field<String>>,
    sv2_cert_validity: Option<Field<u64>>,
    mindiff: Option<Field<Decimal>>,
    startdiff: Option<Field<Decimal>>,
    maxdiff: Option<Field<Decimal>>,
    zmqblock: Option<Field<String>>,
    logdir: Option<Field<String>>,
    blockpoll: Option<Field<u64>>,
    update_interval: Option<Field<u64>>,
    empty_first: Option<Field<bool>>,
    nonce1length: Option<Field<u64>>,
    nonce2length: Option<Field<u64>>,
    version_mask: Option<Field<String>>,
    maxclients: Option<Field<u64>>,
    dropidle: Option<Field<u64>>,
    maxclients_per_address: Option<Field<u64>>,
    ban_check_shares: Option<Field<u64>>,
    ban_invalid_percent: Option<Field<u64>>,
    ban_time: Option<Field<u64>>,
    stats_forget: Option<Field<u64>>,
    vardiff_target_interval: Option<Field<Decimal>>,
    vardiff_retarget_interval: Option<Field<Decimal>>,
    stats_interval: Option<Field<u64>>,
    loglevel: Option<Field<String>>,
    history: Option<Field<bool>>,
    dburl: Option<Field<String>>,
    instance: Option<Field<String>>,
    donation: Option<Field<Decimal>>,
    payout_scheme: Option<Field<String>>,
    pplns_window: Option<Field<Decimal>>,
    pool_fee: Option<Field<Decimal>>,
    pplns_min_output: Option<Field<u64>>,
    pplns_max_outputs: Option<Field<u64>>,
    coinbase_max: Option<Field<u64>>,
    ipcmining: Option<Field<String>>,
    ipcfeethreshold: Option<Field<u64>>,
    tlscert: Option<Field<String>>,
    tlskey: Option<Field<String>>,
    // ckpool keys accepted for compatibility: any value, not used (docs/configuration.md).
    #[allow(dead_code)]
    useragent: Option<IgnoredAny>,
    #[allow(dead_code)]
    redirecturl: Option<IgnoredAny>,
    #[allow(dead_code)]
    serverurls: Option<IgnoredAny>,
}

/// One `btcd` entry as written.
#[derive(Deserialize)]
pub(super) struct RawBtcd {
    url: Option<Field<String>>,
    auth: Option<Field<String>>,
    pass: Option<Field<String>>,
    cookie: Option<Field<String>>,
    notify: Option<Field<bool>>,
}

/// One `proxy` entry as written: typed as strictly as a `btcd` entry.
#[derive(Deserialize)]
pub(super) struct RawUpstream {
    url: Option<Field<String>>,
    auth: Option<Field<String>>,
    pass: Option<Field<String>>,
    tlsca: Option<Field<String>>,
    jds: Option<Field<String>>,
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
        let shown =
            if key.ends_with("pass") || key == "dburl" { "\"<redacted>\"".to_string() } else { value.to_string() };
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
        let rule = k.0.as_ref().map_or(rule.clone(), |f| decimal_rule(&rule, &f.json));
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
                Err(self.err(key, json, decimal_rule(&rule(ParseDifficultyError::NotANumber(json.to_string())), json)))
            }
        }
    }

    /// A key of listen addresses that is off unless given: one string or an array, each read by
    /// `parse` (an empty string: off); each bad entry is named with its index and `rule`.
    fn optional_listeners(
        &self,
        (field, key): Key<ServerUrls>,
        rule: &str,
        parse: fn(&str) -> Option<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, ConfigError> {
        match self.typed((field, key), "must be \"address:port\" or an array of them")? {
            None => Ok(Vec::new()),
            Some(ServerUrls::Many(a)) => a
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    u.typed.as_deref().and_then(parse).ok_or_else(|| self.err(&format!("{key}[{i}]"), &u.json, rule))
                })
                .collect(),
            Some(ServerUrls::One(s)) if s.is_empty() => Ok(Vec::new()),
            Some(ServerUrls::One(s)) => {
                Ok(vec![parse(s).ok_or_else(|| self.err(key, &Value::String(s.clone()), rule))?])
            }
        }
    }

    /// ckpool's `donation` percent (solo mode), in basis points: exact, at most two decimals.
    fn donation(&self, (field, key): Key<Decimal>) -> Result<u32, ConfigError> {
        let rule = "must be a percent from 0 to 100 with at most two decimals";
        match field {
            None => Ok(0),
            Some(Field { typed: Some(d), json }) => {
                crate::work::coinbase::donation_basis_points(&d.0.to_string()).ok_or_else(|| self.err(key, json, rule))
            }
            Some(Field { typed: None, json }) => Err(self.err(key, json, decimal_rule(rule, json))),
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

        // The operator's API and Stratum V2: off unless given (an empty string or list: off too);
        // an SV2 address without a port takes 3336.
        let apiurl =
            c.optional_listeners(key!(r.apiurl), "must be \"address:port\", e.g. \"127.0.0.1:3380\"", parse_listen)?;
        let sv2url = c.optional_listeners(
            key!(r.sv2url),
            "must be \"address:port\" (port 3336 when left out), e.g. \"0.0.0.0:3336\"",
            parse_sv2_listen,
        )?;
        let sv2jdurl = c.optional_listeners(
            key!(r.sv2jdurl),
            "must be \"address:port\" (port 3337 when left out), e.g. \"0.0.0.0:3337\"",
            parse_sv2jd_listen,
        )?;
        let path_key = |k: Key<String>| -> Result<Option<PathBuf>, ConfigError> {
            Ok(Some(c.string(k, "")?).filter(|s| !s.is_empty()).map(PathBuf::from))
        };
        let sv2_authority_key = path_key(key!(r.sv2_authority_key))?;
        let sv2_static_key = path_key(key!(r.sv2_static_key))?;

        let json = |f: &Option<Field<Decimal>>| f.as_ref().map_or(Value::Null, |f| f.json.clone());
        let mindiff = c.difficulty(key!(r.mindiff), Difficulty::ONE)?;
        let startdiff = c.difficulty(key!(r.startdiff), Difficulty::from_integer(42))?;
        let maxdiff = c.difficulty(key!(r.maxdiff), Difficulty::ZERO)?;
        check_diffs(&c, (mindiff, startdiff, maxdiff), str::to_string, |k| match k {
            "mindiff" => json(&r.mindiff),
            "startdiff" => json(&r.startdiff),
            _ => json(&r.maxdiff),
        })?;

        let top = (mindiff, startdiff, maxdiff);
        let plain = |tls| Listener { tls, proxy_protocol: None, mindiff, startdiff, maxdiff, own_diffs: false };
        let url_rule = "must be \"address:port\", e.g. \"0.0.0.0:3333\" (or stratum+tls://address:port)";
        let (serverurl, listeners): (Vec<SocketAddr>, Vec<Listener>) =
            match c.typed(key!(r.serverurl), "must be an array of \"address:port\" strings or objects")? {
                None => (vec!["0.0.0.0:3333".parse().expect("literal")], vec![plain(false)]),
                Some(ServerEntries::Many(a)) if !a.is_empty() => a
                    .iter()
                    .enumerate()
                    .map(|(i, u)| match (&u.typed, &u.json) {
                        (Some(RawListen::Url(s)), _) => parse_server_url(s)
                            .map(|(a, tls)| (a, plain(tls)))
                            .ok_or_else(|| c.err(&format!("serverurl[{i}]"), &u.json, url_rule)),
                        (Some(RawListen::Entry(e)), Value::Object(o)) => {
                            unknown_keys.extend(
                                o.keys()
                                    .filter(|k| !SERVERURL_KEYS.contains(&k.as_str()))
                                    .map(|k| format!("serverurl[{i}].{k}")),
                            );
                            e.validate(&c, i, top)
                        }
                        _ => Err(c.err(
                            &format!("serverurl[{i}]"),
                            &u.json,
                            "must be \"address:port\" or an object {\"url\": \"address:port\", ...}",
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .unzip(),
                Some(ServerEntries::One(s)) => {
                    let (a, tls) =
                        parse_server_url(s).ok_or_else(|| c.err("serverurl", &Value::String(s.clone()), url_rule))?;
                    (vec![a], vec![plain(tls)])
                }
                Some(ServerEntries::Many(_)) => {
                    return Err(c.err(
                        "serverurl",
                        &Value::Array(vec![]),
                        "must be an array of \"address:port\" strings or objects",
                    ))
                }
            };
        let path_of = |k: Key<String>| -> Result<Option<PathBuf>, ConfigError> {
            let p = c.string(k, "")?;
            Ok((!p.is_empty()).then(|| PathBuf::from(p)))
        };
        let (tlscert, tlskey) = (path_of(key!(r.tlscert))?, path_of(key!(r.tlskey))?);
        if let Some(i) = listeners.iter().position(|l| l.tls) {
            for (k, v) in [("tlscert", &tlscert), ("tlskey", &tlskey)] {
                if v.is_none() {
                    return Err(c.err(
                        k,
                        &Value::Null,
                        format!("serverurl[{i}] is a TLS listener: give the PEM file path in \"{k}\""),
                    ));
                }
            }
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
        // The history store (src/history): embedded SQLite unless `"history": false`; PostgreSQL
        // when `dburl` is set.
        let history = match c.typed(key!(r.history), "must be true or false")? {
            Some(b) => *b,
            None => true,
        };
        let dburl = c.string(key!(r.dburl), "")?;
        if !dburl.is_empty() {
            // libpq's sslmode and sslrootcert are read here; the rest by the client crate.
            let url = super::dburl::DbUrl::parse(&dburl).map_err(|why| c.err("dburl", &Value::Null, why))?;
            if url.rest.parse::<postgres::Config>().is_err() {
                return Err(c.err(
                    "dburl",
                    &Value::Null,
                    "must be a PostgreSQL connection string, e.g. \"postgresql://user:password@127.0.0.1:5432/ckpool\"",
                ));
            }
        }
        let empty_first = c.typed(key!(r.empty_first), "must be true or false")?.is_none_or(|b| *b);
        let instance = c.string(key!(r.instance), "")?;
        if instance.len() > 100 || instance.contains(['\n', '\0']) {
            return Err(c.err("instance", &Value::String(instance), "must be a name of at most 100 bytes"));
        }
        Ok(Config {
            path: path.into(),
            history,
            dburl: (!dburl.is_empty()).then(|| Secret::new(dburl)),
            instance,
            btcd,
            proxy,
            btcaddress: c.string(key!(r.btcaddress), "")?.trim().to_string(),
            btcsig: c.string(key!(r.btcsig), "")?,
            serverurl,
            listeners,
            tlscert,
            tlskey,
            apiurl,
            sv2url,
            sv2jdurl,
            sv2_authority_key,
            sv2_static_key,
            sv2_cert_validity: Duration::from_secs(c.uint(key!(r.sv2_cert_validity), 3600, 60, 31_536_000)?),
            mindiff,
            startdiff,
            maxdiff,
            zmqblock,
            logdir: PathBuf::from(c.string(key!(r.logdir), "logs")?),
            blockpoll: Duration::from_millis(c.uint(key!(r.blockpoll), 100, 1, 60_000)?),
            update_interval: Duration::from_secs(c.uint(key!(r.update_interval), 30, 1, 3600)?),
            empty_first,
            nonce1length: c.uint(key!(r.nonce1length), 4, 2, 8)? as usize,
            nonce2length: c.uint(key!(r.nonce2length), 8, 2, 8)? as usize,
            version_mask,
            maxclients: c.uint(key!(r.maxclients), 0, 0, 10_000_000)? as usize,
            limits: crate::config::Limits {
                dropidle: Duration::from_secs(c.uint(key!(r.dropidle), 0, 0, 31_536_000)?),
                maxclients_per_address: c.uint(key!(r.maxclients_per_address), 0, 0, 10_000_000)? as u32,
                ban_check_shares: c.uint(key!(r.ban_check_shares), 500, 0, 1_000_000_000)? as u32,
                ban_invalid_percent: c.uint(key!(r.ban_invalid_percent), 50, 1, 100)? as u32,
                ban_time: Duration::from_secs(c.uint(key!(r.ban_time), 600, 0, 31_536_000)?),
                stats_forget: Duration::from_secs(c.uint(key!(r.stats_forget), 604_800, 0, 315_360_000)?),
            },
            vardiff,
            stats_interval: Duration::from_secs(c.uint(key!(r.stats_interval), 60, 1, 3600)?),
            loglevel: match c.string(key!(r.loglevel), "")?.trim() {
                "" => None,
                l if level_is_valid(l) => Some(l.to_string()),
                l => {
                    return Err(c.err(
                        "loglevel",
                        &Value::String(l.into()),
                        "must be 0-7 (ckpool's -l: 3 error, 4 warning, 6 info, 7 debug) or error/warn/info/debug/trace",
                    ))
                }
            },
            donation_bp: c.donation(key!(r.donation))?,
            pplns: c.pplns(r)?,
            ipcmining: c.ipcmining(r)?,
            unknown_keys,
        })
    }
}

/// A level `-l` or the config's `loglevel` may give: ckpool's 0-7 or a level name.
fn level_is_valid(level: &str) -> bool {
    let l = level.trim();
    l.parse::<u8>().is_ok_and(|n| n <= 7) || ["error", "warn", "info", "debug", "trace"].contains(&l)
}

mod entries;
mod ipc;
mod payout;
pub(crate) use entries::normalize_rpc_url;
use entries::*;
