//! Unit tests of the config reader: the guide's files, every key's rule and wrong-type message,
//! the key lists against serde's fields and docs/configuration.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::difficulty::Difficulty;
use crate::mining::vardiff::VardiffParams;

mod keys;

/// The operator guide's /etc/ckpool.conf, as its heredoc writes it (tabs, trailing comment).
pub const GUIDE_CKPOOL_CONF: &str = "{\n\"btcd\" : [\n\t{\n\t\"url\" : \"localhost:19332\",\n\t\"auth\" : \"satoshi\",\n\t\"pass\" : \"s3cretPassw0rd\",\n\t\"notify\" : true\n\t}\n],\n\"btcaddress\" : \"mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn\",\n\"btcsig\" : \"\",\n\"serverurl\" : [\n\t\"0.0.0.0:3333\"\n],\n\"mindiff\" : 1,\n\"startdiff\" : 42,\n\"maxdiff\" : 0,\n\"zmqblock\" : \"tcp://127.0.0.1:28332\",\n\"logdir\" : \"/var/log/stratum\"\n}\nComments from here on are ignored.\n";

#[test]
fn vardiff_and_stats_keys() {
    let c = Config::parse(GUIDE_CKPOOL_CONF, Path::new("a.conf")).unwrap();
    assert_eq!(c.vardiff, VardiffParams::default());
    assert_eq!(c.stats_interval, Duration::from_secs(60));
    let text = r#"{"vardiff_target_interval": 0.25, "vardiff_retarget_interval": 2, "stats_interval": 1}"#;
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

/// `empty_first`: on unless set false; anything but a boolean names the key.
#[test]
fn empty_first_is_on_unless_turned_off() {
    assert!(Config::parse(GUIDE_CKPOOL_CONF, Path::new("a.conf")).unwrap().empty_first);
    assert!(!Config::parse(r#"{"empty_first": false}"#, Path::new("a.conf")).unwrap().empty_first);
    assert!(Config::parse(r#"{"empty_first": true}"#, Path::new("a.conf")).unwrap().empty_first);
    let e = Config::parse(r#"{"empty_first": "no"}"#, Path::new("a.conf")).unwrap_err().to_string();
    assert!(e.contains("empty_first") && e.contains("true or false"), "{e}");
}

#[test]
fn guide_config_parses() {
    let c = Config::parse(GUIDE_CKPOOL_CONF, Path::new("/etc/ckpool.conf")).unwrap();
    assert_eq!(c.btcd.len(), 1);
    assert_eq!(c.btcd[0].url, "http://localhost:19332/");
    assert!(c.btcd[0].notify);
    assert_eq!(c.serverurl, vec!["0.0.0.0:3333".parse().unwrap()]);
    assert!(c.apiurl.is_empty(), "the API is off unless configured");
    let api = Config::parse(r#"{"apiurl": "127.0.0.1:3380"}"#, Path::new("x")).unwrap();
    assert_eq!(api.apiurl, vec!["127.0.0.1:3380".parse().unwrap()]);
    let api = Config::parse(r#"{"apiurl": ["127.0.0.1:3380", "[::1]:3381"]}"#, Path::new("x")).unwrap();
    assert_eq!(api.apiurl.len(), 2);
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
        (r#"{"apiurl": ["nope"]}"#, "apiurl[0]"),
        (r#"{"apiurl": 4028}"#, "\"apiurl\" = 4028"),
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

/// Decimal keys take JSON numbers, as ckpool reads them: a number written as a string is a wrong
/// type that stops the start, naming the key and the fix (it used to be read as the number).
#[test]
fn numbers_written_as_strings_are_refused() {
    let p = Path::new("t.conf");
    for (text, key) in [
        (r#"{"startdiff": "42"}"#, "startdiff"),
        (r#"{"mindiff": "1"}"#, "mindiff"),
        (r#"{"maxdiff": "0"}"#, "maxdiff"),
        (r#"{"vardiff_retarget_interval": "2"}"#, "vardiff_retarget_interval"),
        (r#"{"donation": "0.5"}"#, "donation"),
        (r#"{"serverurl": [{"url": "0.0.0.0:2", "startdiff": "42"}]}"#, "serverurl[0].startdiff"),
    ] {
        let e = Config::parse(text, p).unwrap_err().to_string();
        assert!(e.contains(&format!("\"{key}\" = \"")), "{text}: {e}");
        assert!(e.contains("a JSON number, without quotes"), "{text}: {e}");
    }
}

/// An error caused by a misspelled key names the misspelling and the key meant.
#[test]
fn errors_name_the_unknown_keys_behind_them() {
    let p = Path::new("t.conf");
    let e = Config::parse(r#"{"mindif": 0.5, "startdiff": 0.5}"#, p).unwrap_err().to_string();
    assert!(e.contains("must be at least mindiff (1)"), "{e}");
    assert!(e.contains("unknown key \"mindif\" is ignored (did you mean \"mindiff\"?)"), "{e}");
    let c = Config::parse(r#"{"btcd": [{"url": "h:1", "auth": "u"}], "btcadress": "x"}"#, p).unwrap();
    let e = c.require_pool().unwrap_err().to_string();
    assert!(e.contains("btcaddress") && e.contains("did you mean \"btcaddress\"?"), "{e}");
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
    let e =
        Config::parse(r#"{"btcd": [{"url": "h:1", "auth": "u", "pass": 5}]}"#, Path::new("x")).unwrap_err().to_string();
    assert!(e.contains("redacted") && !e.contains(" 5"), "{e}");
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
        Upstream {
            url: "pool.example:3333".into(),
            auth: "addr.worker".into(),
            pass: Secret::new("x"),
            ..Upstream::default()
        }
    );
    assert_eq!(c.proxy[1], Upstream { url: "[::1]:3334".into(), ..Upstream::default() });
    c.require_proxy().unwrap();
    for url in ["pool.example", "pool.example:0", "pool.example:x", "pool.example:3333/", ":3333", "pool example:1", ""]
    {
        let e = parse(&format!(r#"{{"proxy": [{{"url": "{url}"}}]}}"#)).unwrap_err().to_string();
        assert_eq!(
            e,
            format!("config file p.conf: key \"proxy[0].url\" = \"{url}\": must be host:port of the upstream pool (or stratum+tls://host:port, or stratum2+tcp://host:port/AUTHORITY_PUBKEY)")
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
    let c =
        Config::parse(r#"{"vardiff_target_interval": 300, "vardiff_retarget_interval": 300}"#, Path::new("x")).unwrap();
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

/// `serverurl` entries as objects: each listener's own difficulties, TLS and PROXY protocol,
/// the rest inherited; errors name the entry and key; plain strings as before.
#[test]
fn serverurl_entries_as_objects() {
    use crate::proxy_protocol::Accept;
    let text = r#"{"mindiff": 2, "startdiff": 42, "maxdiff": 0,
        "serverurl": ["0.0.0.0:3333",
            {"url": "0.0.0.0:3334", "mindiff": 10000, "startdiff": 20000, "maxdiff": 0, "tls": true, "proxy_protocol": "v2"},
            "stratum+tls://127.0.0.1:3443",
            {"url": "stratum+tcp://127.0.0.1:3335", "startdiff": 0.5, "mindiff": 0.001, "proxy_protocol": true, "colour": 1}],
        "tlscert": "/etc/ckpool/cert.pem", "tlskey": "/etc/ckpool/key.pem"}"#;
    let c = Config::parse(text, Path::new("x")).unwrap();
    assert_eq!(c.serverurl.len(), 4);
    assert_eq!(c.serverurl[1], "0.0.0.0:3334".parse().unwrap());
    assert_eq!(c.listeners.len(), 4);
    let d = |s: &str| s.parse::<Difficulty>().unwrap();
    assert_eq!(
        c.listeners[0],
        Listener {
            tls: false,
            proxy_protocol: None,
            mindiff: d("2"),
            startdiff: d("42"),
            maxdiff: Difficulty::ZERO,
            own_diffs: false
        }
    );
    assert_eq!(
        c.listeners[1],
        Listener {
            tls: true,
            proxy_protocol: Some(Accept::V2),
            mindiff: d("10000"),
            startdiff: d("20000"),
            maxdiff: Difficulty::ZERO,
            own_diffs: true
        }
    );
    assert!(c.listeners[2].tls && c.listeners[2].startdiff == d("42"));
    assert_eq!((c.listeners[3].proxy_protocol, c.listeners[3].startdiff), (Some(Accept::Any), d("0.5")));
    assert_eq!(c.unknown_keys, ["serverurl[3].colour"]);
    assert_eq!(c.tlscert.as_deref(), Some(Path::new("/etc/ckpool/cert.pem")));
    assert_eq!(c.listener(7), c.listeners[0], "a listener beyond the entries is plain, top-level difficulties");
    // The guide's plain string entries: plain listeners with the top-level difficulties.
    let g = Config::parse(GUIDE_CKPOOL_CONF, Path::new("x")).unwrap();
    assert_eq!(g.listeners, vec![g.listener(9)]);
    assert!(!g.listeners[0].tls && g.listeners[0].proxy_protocol.is_none() && g.tlscert.is_none());

    let p = Path::new("t.conf");
    for (text, message) in [
        (
            r#"{"serverurl": [{"url": "0.0.0.0:1", "mindiff": 100}]}"#,
            r#""serverurl[0].startdiff" = "startdiff (top-level)": must be at least mindiff (100)"#,
        ),
        (
            r#"{"serverurl": ["0.0.0.0:1", {"url": "0.0.0.0:2", "mindiff": 0}]}"#,
            r#""serverurl[1].mindiff" = 0: must be above 0"#,
        ),
        (
            r#"{"serverurl": [{"url": "0.0.0.0:2", "startdiff": 50, "maxdiff": 10}]}"#,
            r#""serverurl[0].maxdiff" = 10: must be 0 (no maximum) or at least startdiff (50)"#,
        ),
        (
            r#"{"serverurl": [{"url": "0.0.0.0:2", "startdiff": "x"}]}"#,
            r#""serverurl[0].startdiff" = "x": must be a difficulty"#,
        ),
        (r#"{"serverurl": [{"mindiff": 1}]}"#, r#""serverurl[0].url" = "": must be "address:port""#),
        (r#"{"serverurl": [{"url": "nope"}]}"#, r#""serverurl[0].url" = "nope""#),
        (r#"{"serverurl": [{"url": 3333}]}"#, r#""serverurl[0].url" = 3333: must be a string"#),
        (
            r#"{"serverurl": [{"url": "0.0.0.0:2", "tls": "yes"}]}"#,
            r#""serverurl[0].tls" = "yes": must be true or false"#,
        ),
        (
            r#"{"serverurl": [{"url": "stratum+tls://0.0.0.0:2", "tls": false}]}"#,
            r#""serverurl[0].tls" = false: contradicts the stratum+tls:// url"#,
        ),
        (
            r#"{"serverurl": [{"url": "0.0.0.0:2", "proxy_protocol": "v3"}]}"#,
            r#""serverurl[0].proxy_protocol" = "v3": must be "v1", "v2", "any" (or true: either version) or false"#,
        ),
        (r#"{"serverurl": [["0.0.0.0:2"]]}"#, r#""serverurl[0]" = ["0.0.0.0:2"]: must be "address:port" or an object"#),
        (
            r#"{"serverurl": ["0.0.0.0:1", {"url": "0.0.0.0:2", "tls": true}]}"#,
            r#""tlscert" = null: serverurl[1] is a TLS listener: give the PEM file path in "tlscert""#,
        ),
        (
            r#"{"serverurl": "stratum+tls://0.0.0.0:2", "tlscert": "c.pem"}"#,
            r#""tlskey" = null: serverurl[0] is a TLS listener: give the PEM file path in "tlskey""#,
        ),
    ] {
        let e = Config::parse(text, p).unwrap_err().to_string();
        assert!(e.contains(message), "{text}:\n{e}\nwanted: {message}");
    }
}

/// A `proxy` entry's `stratum+tls://` url and `tlsca`.
#[test]
fn proxy_entries_with_tls() {
    let text = r#"{"proxy": [
        {"url": "stratum+tls://pool.example.org:3443", "auth": "a", "pass": "x", "tlsca": "/etc/ckpool/pool-ca.pem"},
        {"url": "stratum+tls://127.0.0.1:3443/", "auth": "a", "pass": "x"},
        {"url": "stratum+tcp://127.0.0.1:3333", "auth": "a", "pass": "x"}]}"#;
    let c = Config::parse(text, Path::new("x")).unwrap();
    assert_eq!(c.proxy[0].url, "pool.example.org:3443");
    assert!(c.proxy[0].tls);
    assert_eq!(c.proxy[0].tlsca.as_deref(), Some(Path::new("/etc/ckpool/pool-ca.pem")));
    assert_eq!((c.proxy[1].url.as_str(), c.proxy[1].tls, c.proxy[1].tlsca.is_none()), ("127.0.0.1:3443", true, true));
    assert!(!c.proxy[2].tls);
    for (text, message) in [
        (
            r#"{"proxy": [{"url": "127.0.0.1:3333", "tlsca": "ca.pem"}]}"#,
            r#""proxy[0].tlsca" = "ca.pem": is for a stratum+tls:// url only"#,
        ),
        (
            r#"{"proxy": [{"url": "stratum+tls://127.0.0.1:3333", "tlsca": 5}]}"#,
            r#""proxy[0].tlsca" = 5: must be a string"#,
        ),
        (
            r#"{"proxy": [{"url": "stratum+tls://nohost"}]}"#,
            r#""proxy[0].url" = "stratum+tls://nohost": must be host:port"#,
        ),
    ] {
        let e = Config::parse(text, Path::new("t.conf")).unwrap_err().to_string();
        assert!(e.contains(message), "{text}:\n{e}");
    }
}

/// A `proxy` entry's `stratum2+tcp://HOST:PORT/KEY` url: Stratum V2 to the pool whose authority
/// key is KEY; a missing or unreadable key stops the start, saying the form and where it comes from.
#[test]
fn proxy_entries_with_jds() {
    let key = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
    let text = format!(
        r#"{{"proxy": [{{"url": "stratum2+tcp://pool.example.org:3336/{key}", "jds": "pool.example.org:3337"}}]}}"#
    );
    let c = Config::parse(&text, Path::new("x")).unwrap();
    assert_eq!(c.proxy[0].jds.as_deref(), Some("pool.example.org:3337"));
    for (entry, why) in [
        (
            r#"{"url": "pool.example.org:3333", "jds": "pool.example.org:3337"}"#.to_string(),
            "is for a stratum2+tcp:// url only",
        ),
        (
            format!(r#"{{"url": "stratum2+tcp://p:3336/{key}", "jds": "nowhere"}}"#),
            "must be host:port of the pool's Job Declaration server",
        ),
    ] {
        let e = Config::parse(&format!(r#"{{"proxy": [{entry}]}}"#), Path::new("t.conf")).unwrap_err();
        assert!(e.to_string().contains("proxy[0].jds") && e.to_string().contains(why), "{entry}: {e}");
    }
}

#[test]
fn proxy_entries_with_sv2_urls() {
    // SRI's example authority key (sv2/keys.rs reads its secret half the same way).
    let key = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
    let text = format!(
        r#"{{"proxy": [{{"url": "stratum2+tcp://pool.example.org:3336/{key}", "auth": "a", "pass": "x"}},
            {{"url": "127.0.0.1:3333", "auth": "a"}}]}}"#
    );
    let c = Config::parse(&text, Path::new("x")).unwrap();
    assert_eq!(c.proxy[0].url, "pool.example.org:3336");
    assert_eq!(c.proxy[0].authority, Some(crate::config::authority::parse_public(key).unwrap()));
    assert!(!c.proxy[0].tls);
    assert_eq!(c.proxy[0].display(), "stratum2+tcp://pool.example.org:3336");
    assert_eq!((c.proxy[1].authority, c.proxy[1].display()), (None, "127.0.0.1:3333".to_string()));
    let form = "must be stratum2+tcp://HOST:PORT/AUTHORITY_PUBKEY (the url `ckpool sv2-key` prints on the pool)";
    for (url, message) in [
        (
            "stratum2+tcp://pool.example.org:3336".to_string(),
            format!("{form}: the pool's authority public key is missing"),
        ),
        (
            "stratum2+tcp://pool.example.org:3336/".to_string(),
            format!("{form}: the pool's authority public key is missing"),
        ),
        (format!("stratum2+tcp://pool.example.org/{key}"), format!("{form}: no host:port")),
        (
            "stratum2+tcp://pool.example.org:3336/notakey".to_string(),
            format!("{form}: the authority public key is unreadable (not a base58check key"),
        ),
    ] {
        let e = Config::parse(&format!(r#"{{"proxy": [{{"url": "{url}"}}]}}"#), Path::new("t.conf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!(r#""proxy[0].url" = "{url}": {message}"#)), "{url}:\n{e}");
    }
    let e = Config::parse(
        &format!(r#"{{"proxy": [{{"url": "stratum2+tcp://h:1/{key}", "tlsca": "ca.pem"}}]}}"#),
        Path::new("t.conf"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is for a stratum+tls:// url only"), "{e}");
}

#[test]
fn sv2url_takes_addresses_with_or_without_port() {
    let c = Config::parse(r#"{"sv2url": "0.0.0.0"}"#, Path::new("x")).unwrap();
    assert_eq!(c.sv2url, vec!["0.0.0.0:3336".parse().unwrap()]);
    let c = Config::parse(r#"{"sv2url": ["stratum2+tcp://127.0.0.1:4444", "[::1]"]}"#, Path::new("x")).unwrap();
    assert_eq!(c.sv2url, vec!["127.0.0.1:4444".parse().unwrap(), "[::1]:3336".parse().unwrap()]);
    assert!(Config::parse("{}", Path::new("x")).unwrap().sv2url.is_empty(), "off unless configured");
    assert_eq!(Config::parse("{}", Path::new("x")).unwrap().sv2_cert_validity, std::time::Duration::from_secs(3600));
}

/// The JSON error gives the position once ("at line 2 column 1 (line 2, column 1)" before).
#[test]
fn json_errors_give_the_position_once() {
    let e = Config::parse("{\"btcd\": [\n", Path::new("t.conf")).unwrap_err().to_string();
    assert_eq!(e.matches("line 2").count(), 1, "{e}");
    assert!(e.contains("(line 2, column 0)") || e.contains("(line 2, column 1)"), "{e}");
}
