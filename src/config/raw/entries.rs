//! The entries of the lists (`serverurl`, `btcd`, `proxy`) and the address forms they take:
//! each entry checked on its own, its errors naming the list, the index and the rule.

use super::*;
use crate::config::authority;

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
pub(super) fn valid_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !s.contains(char::is_whitespace) && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

/// Microseconds as exact decimal seconds ("3.333333", "240").
pub(super) fn seconds_text(us: u64) -> String {
    let frac = format!("{:06}", us % 1_000_000);
    match frac.trim_end_matches('0') {
        "" => (us / 1_000_000).to_string(),
        f => format!("{}.{f}", us / 1_000_000),
    }
}

pub(super) fn parse_listen(s: &str) -> Option<SocketAddr> {
    use std::net::ToSocketAddrs;
    let s = s.trim().trim_start_matches("stratum+tcp://");
    s.parse().ok().or_else(|| s.to_socket_addrs().ok()?.next())
}

/// A Stratum V2 listen address: `address:port`, `stratum2+tcp://address:port`, or an address
/// alone (port 3336, SV2's usual).
pub(super) fn parse_sv2_listen(s: &str) -> Option<SocketAddr> {
    sv2_listen_or(s, 3336)
}

/// An `sv2jdurl` address (the Job Declaration server): as `sv2url`'s, port 3337 when left out.
pub(super) fn parse_sv2jd_listen(s: &str) -> Option<SocketAddr> {
    sv2_listen_or(s, 3337)
}

fn sv2_listen_or(s: &str, port: u16) -> Option<SocketAddr> {
    let s = s.trim().trim_start_matches("stratum2+tcp://").trim_end_matches('/');
    parse_listen(s).or_else(|| {
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = bare.parse().ok()?;
        Some(SocketAddr::new(ip, port))
    })
}

/// A `serverurl` address: `address:port`, `stratum+tcp://address:port`, or
/// `stratum+tls://address:port` (then `true`: a TLS listener).
pub(super) fn parse_server_url(s: &str) -> Option<(SocketAddr, bool)> {
    match s.trim().strip_prefix("stratum+tls://") {
        Some(rest) => parse_listen(rest).map(|a| (a, true)),
        None => parse_listen(s).map(|a| (a, false)),
    }
}

/// The difficulty rules between mindiff, startdiff and maxdiff; `key(name)` names each in errors
/// and `json(name)` gives the value as written.
pub(super) fn check_diffs(
    c: &Ctx,
    (mindiff, startdiff, maxdiff): (Difficulty, Difficulty, Difficulty),
    key: impl Fn(&str) -> String,
    json: impl Fn(&str) -> Value,
) -> Result<(), ConfigError> {
    if mindiff.is_zero() {
        return Err(c.err(&key("mindiff"), &json("mindiff"), "must be above 0 (fractions such as 0.001 are allowed)"));
    }
    if startdiff < mindiff {
        return Err(c.err(&key("startdiff"), &json("startdiff"), format!("must be at least mindiff ({mindiff})")));
    }
    if !maxdiff.is_zero() && maxdiff < startdiff {
        return Err(c.err(
            &key("maxdiff"),
            &json("maxdiff"),
            format!("must be 0 (no maximum) or at least startdiff ({startdiff})"),
        ));
    }
    Ok(())
}

impl RawListenEntry {
    /// The entry's address and options; difficulties it does not give are `top`'s.
    pub(super) fn validate(
        &self,
        c: &Ctx,
        i: usize,
        top: (Difficulty, Difficulty, Difficulty),
    ) -> Result<(SocketAddr, Listener), ConfigError> {
        let key = |k: &str| format!("serverurl[{i}].{k}");
        let raw_url = c.string((&self.url, &key("url")), "")?;
        let (addr, tls_url) = parse_server_url(&raw_url).ok_or_else(|| {
            c.err(
                &key("url"),
                &Value::String(raw_url.clone()),
                "must be \"address:port\" (or stratum+tcp:// / stratum+tls://address:port)",
            )
        })?;
        let tls = match c.typed((&self.tls, &key("tls")), "must be true or false")? {
            Some(false) if tls_url => {
                return Err(c.err(&key("tls"), &Value::Bool(false), "contradicts the stratum+tls:// url"))
            }
            Some(t) => *t || tls_url,
            None => tls_url,
        };
        let proxy_protocol = match &self.proxy_protocol {
            None => None,
            Some(f) => match &f.json {
                Value::Null | Value::Bool(false) => None,
                Value::Bool(true) => Some(Accept::Any),
                Value::String(v) if v == "any" => Some(Accept::Any),
                Value::String(v) if v == "v1" => Some(Accept::V1),
                Value::String(v) if v == "v2" => Some(Accept::V2),
                Value::Number(n) if n.as_u64() == Some(1) => Some(Accept::V1),
                Value::Number(n) if n.as_u64() == Some(2) => Some(Accept::V2),
                other => {
                    return Err(c.err(
                        &key("proxy_protocol"),
                        other,
                        "must be \"v1\", \"v2\", \"any\" (or true: either version) or false",
                    ))
                }
            },
        };
        let d = |(f, k): Key<Decimal>, default| c.difficulty((f, &key(k)), default);
        let diffs = (d(key!(self.mindiff), top.0)?, d(key!(self.startdiff), top.1)?, d(key!(self.maxdiff), top.2)?);
        let json = |k: &str| {
            let f = match k {
                "mindiff" => &self.mindiff,
                "startdiff" => &self.startdiff,
                _ => &self.maxdiff,
            };
            // A value not written here is the top-level one: say so.
            f.as_ref().map_or_else(|| Value::String(format!("{k} (top-level)")), |f| f.json.clone())
        };
        check_diffs(c, diffs, key, json)?;
        let own_diffs = self.mindiff.is_some() || self.startdiff.is_some() || self.maxdiff.is_some();
        Ok((addr, Listener { tls, proxy_protocol, mindiff: diffs.0, startdiff: diffs.1, maxdiff: diffs.2, own_diffs }))
    }
}

impl RawBtcd {
    pub(super) fn validate(&self, c: &Ctx, i: usize) -> Result<Btcd, ConfigError> {
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
    pub(super) fn validate(&self, c: &Ctx, i: usize) -> Result<Upstream, ConfigError> {
        let key = |k: &str| format!("proxy[{i}].{k}");
        let s = |(f, k): Key<String>| c.string((f, &key(k)), "");
        let raw_url = s(key!(self.url))?;
        let bad_url = |why: String| c.err(&key("url"), &Value::String(raw_url.clone()), why);
        let (url, tls, authority) = if let Some((host_port, pubkey)) = authority::split_sv2_url(&raw_url) {
            const FORM: &str =
                "stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY (the url `ckpool sv2-key` prints on the pool)";
            if !valid_host_port(host_port) {
                return Err(bad_url(format!("must be {FORM}: no host:port")));
            }
            if pubkey.is_empty() {
                return Err(bad_url(format!("must be {FORM}: the pool's authority public key is missing")));
            }
            let k = authority::parse_public(pubkey)
                .map_err(|e| bad_url(format!("must be {FORM}: the authority public key is unreadable ({e})")))?;
            (host_port.to_string(), false, Some(k))
        } else {
            let (url, tls) = match raw_url.strip_prefix("stratum+tls://") {
                Some(rest) => (rest.trim_end_matches('/').to_string(), true),
                None => (raw_url.trim_start_matches("stratum+tcp://").to_string(), false),
            };
            if !valid_host_port(&url) {
                return Err(bad_url("must be host:port of the upstream pool (or stratum+tls://host:port, or stratum2+tcp://host:port/AUTHORITY_PUBKEY)".into()));
            }
            (url, tls, None)
        };
        let tlsca = s(key!(self.tlsca))?;
        if !tlsca.is_empty() && !tls {
            return Err(c.err(&key("tlsca"), &Value::String(tlsca), "is for a stratum+tls:// url only"));
        }
        let jds = s(key!(self.jds))?.trim().to_string();
        if !jds.is_empty() {
            let jds_addr = jds.trim_start_matches("stratum2+tcp://").trim_end_matches('/');
            if authority.is_none() {
                return Err(c.err(&key("jds"), &Value::String(jds.clone()), "is for a stratum2+tcp:// url only (the Job Declaration server speaks with the pool's authority key)"));
            }
            if !valid_host_port(jds_addr) {
                return Err(c.err(
                    &key("jds"),
                    &Value::String(jds.clone()),
                    "must be host:port of the pool's Job Declaration server (its sv2jdurl, port 3337 by default)",
                ));
            }
        }
        Ok(Upstream {
            jds: (!jds.is_empty()).then(|| jds.trim_start_matches("stratum2+tcp://").trim_end_matches('/').to_string()),
            url,
            auth: s(key!(self.auth))?,
            pass: Secret::new(s(key!(self.pass))?),
            tls,
            tlsca: (!tlsca.is_empty()).then(|| PathBuf::from(tlsca)),
            authority,
        })
    }
}
