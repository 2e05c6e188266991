//! The keys the parser knows, the keys docs/configuration.md documents and the fields of the
//! raw structs agree; and a value of the wrong type is named by key and rule for every key.

use std::path::Path;

use serde::de::{DeserializeOwned, Deserializer};

use super::super::raw::{RawBtcd, RawConfig, RawListenEntry, RawUpstream};
use super::super::*;

/// The rows of the tables of docs/configuration.md's section `title`: each key, after
/// checking that the row gives a type, a default and what the key does.
fn documented_keys(title: &str) -> Vec<&'static str> {
    let doc = include_str!("../../../docs/configuration.md");
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
    same_keys(
        "serverurl entry",
        (doc, &documented_keys("Keys of a `serverurl` entry")),
        ("SERVERURL_KEYS", SERVERURL_KEYS),
    );
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
    same_keys("serverurl entry", (serde, &fields_of::<RawListenEntry>()), ("SERVERURL_KEYS", SERVERURL_KEYS));
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
        ("btcd[0].pass", format!(r#"{{{b}, "pass": 1234}}]}}"#), r#""btcd[0].pass" = "<redacted>": must be a string"#),
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
        ("proxy[0]", r#"{"proxy": ["h:1"]}"#.into(), r#""proxy[0]" = "h:1": must be an object with url, auth, pass"#),
        ("proxy[0].url", r#"{"proxy": [{"url": 3333}]}"#.into(), r#""proxy[0].url" = 3333: must be a string"#),
        (
            "proxy[0].jds",
            r#"{"proxy": [{"url": "p:1", "jds": 3337}]}"#.into(),
            r#""proxy[0].jds" = 3337: must be a string"#,
        ),
        ("proxy[0].auth", format!(r#"{{{p}, "auth": ["w"]}}]}}"#), r#""proxy[0].auth" = ["w"]: must be a string"#),
        (
            "proxy[0].pass",
            format!(r#"{{{p}, "pass": 1234}}]}}"#),
            r#""proxy[0].pass" = "<redacted>": must be a string"#,
        ),
        (
            "proxy[0].tlsca",
            r#"{"proxy": [{"url": "stratum+tls://h:1", "tlsca": 5}]}"#.into(),
            r#""proxy[0].tlsca" = 5: must be a string"#,
        ),
        (
            "serverurl[0].url",
            r#"{"serverurl": [{"url": 3333}]}"#.into(),
            r#""serverurl[0].url" = 3333: must be a string"#,
        ),
        (
            "serverurl[0].mindiff",
            r#"{"serverurl": [{"url": "127.0.0.1:1", "mindiff": true}]}"#.into(),
            r#""serverurl[0].mindiff" = true: must be a difficulty >= 0, fractions allowed (difficulty "true" is not a decimal number)"#,
        ),
        (
            "serverurl[0].startdiff",
            r#"{"serverurl": [{"url": "127.0.0.1:1", "startdiff": [1]}]}"#.into(),
            r#""serverurl[0].startdiff" = [1]: must be a difficulty >= 0, fractions allowed (difficulty "[1]" is not a decimal number)"#,
        ),
        (
            "serverurl[0].maxdiff",
            r#"{"serverurl": [{"url": "127.0.0.1:1", "maxdiff": {}}]}"#.into(),
            r#""serverurl[0].maxdiff" = {}: must be a difficulty >= 0, fractions allowed (difficulty "{}" is not a decimal number)"#,
        ),
        (
            "serverurl[0].tls",
            r#"{"serverurl": [{"url": "127.0.0.1:1", "tls": 1}]}"#.into(),
            r#""serverurl[0].tls" = 1: must be true or false"#,
        ),
        (
            "serverurl[0].proxy_protocol",
            r#"{"serverurl": [{"url": "127.0.0.1:1", "proxy_protocol": [2]}]}"#.into(),
            r#""serverurl[0].proxy_protocol" = [2]: must be "v1", "v2", "any" (or true: either version) or false"#,
        ),
        ("btcaddress", r#"{"btcaddress": 1}"#.into(), r#""btcaddress" = 1: must be a string"#),
        ("btcsig", r#"{"btcsig": ["/x/"]}"#.into(), r#""btcsig" = ["/x/"]: must be a string"#),
        (
            "serverurl",
            r#"{"serverurl": 3333}"#.into(),
            r#""serverurl" = 3333: must be an array of "address:port" strings or objects"#,
        ),
        (
            "serverurl[1]",
            r#"{"serverurl": ["127.0.0.1:3333", 3334]}"#.into(),
            r#""serverurl[1]" = 3334: must be "address:port" or an object {"url": "address:port", ...}"#,
        ),
        (
            "tlscert",
            r#"{"serverurl": ["stratum+tls://127.0.0.1:3333"], "tlscert": ["a.pem"]}"#.into(),
            r#""tlscert" = ["a.pem"]: must be a string"#,
        ),
        (
            "tlskey",
            r#"{"serverurl": ["stratum+tls://127.0.0.1:3333"], "tlscert": "a.pem", "tlskey": 1}"#.into(),
            r#""tlskey" = 1: must be a string"#,
        ),
        ("apiurl", r#"{"apiurl": 3380}"#.into(), r#""apiurl" = 3380: must be "address:port" or an array of them"#),
        (
            "apiurl[1]",
            r#"{"apiurl": ["127.0.0.1:3380", 3381]}"#.into(),
            r#""apiurl[1]" = 3381: must be "address:port", e.g. "127.0.0.1:3380""#,
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
        ("ipcmining", r#"{"ipcmining": 1}"#.into(), r#""ipcmining" = 1: must be a string"#),
        (
            "ipcfeethreshold",
            r#"{"ipcmining": "/n.sock", "ipcfeethreshold": -1}"#.into(),
            r#""ipcfeethreshold" = -1: must be a whole number from 1 to 2100000000000000"#,
        ),
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
        ("dropidle", r#"{"dropidle": "60"}"#.into(), r#""dropidle" = "60": must be a whole number from 0 to 31536000"#),
        (
            "maxclients_per_address",
            r#"{"maxclients_per_address": -1}"#.into(),
            r#""maxclients_per_address" = -1: must be a whole number from 0 to 10000000"#,
        ),
        (
            "ban_check_shares",
            r#"{"ban_check_shares": 1.5}"#.into(),
            r#""ban_check_shares" = 1.5: must be a whole number from 0 to 1000000000"#,
        ),
        (
            "ban_invalid_percent",
            r#"{"ban_invalid_percent": 101}"#.into(),
            r#""ban_invalid_percent" = 101: must be a whole number from 1 to 100"#,
        ),
        ("ban_time", r#"{"ban_time": true}"#.into(), r#""ban_time" = true: must be a whole number from 0 to 31536000"#),
        (
            "stats_forget",
            r#"{"stats_forget": "1d"}"#.into(),
            r#""stats_forget" = "1d": must be a whole number from 0 to 315360000"#,
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
        ("loglevel", r#"{"loglevel": 7}"#.into(), r#""loglevel" = 7: must be a string"#),
        (
            "loglevel",
            r#"{"loglevel": "verbose"}"#.into(),
            r#""loglevel" = "verbose": must be 0-7 (ckpool's -l: 3 error, 4 warning, 6 info, 7 debug) or error/warn/info/debug/trace"#,
        ),
        ("sv2url", r#"{"sv2url": 3336}"#.into(), r#""sv2url" = 3336: must be "address:port" or an array of them"#),
        (
            "sv2jdurl",
            r#"{"sv2jdurl": 3337}"#.into(),
            r#""sv2jdurl" = 3337: must be "address:port" or an array of them"#,
        ),
        (
            "sv2url",
            r#"{"sv2url": "nowhere:port"}"#.into(),
            r#""sv2url" = "nowhere:port": must be "address:port" (port 3336 when left out), e.g. "0.0.0.0:3336""#,
        ),
        ("sv2_authority_key", r#"{"sv2_authority_key": 1}"#.into(), r#""sv2_authority_key" = 1: must be a string"#),
        ("sv2_static_key", r#"{"sv2_static_key": true}"#.into(), r#""sv2_static_key" = true: must be a string"#),
        (
            "sv2_cert_validity",
            r#"{"sv2_cert_validity": 10}"#.into(),
            r#""sv2_cert_validity" = 10: must be a whole number from 60 to 31536000"#,
        ),
        ("history", r#"{"history": "yes"}"#.into(), r#""history" = "yes": must be true or false"#),
        ("empty_first", r#"{"empty_first": 1}"#.into(), r#""empty_first" = 1: must be true or false"#),
        ("dburl", r#"{"dburl": 1234}"#.into(), r#""dburl" = "<redacted>": must be a string"#),
        (
            "dburl",
            r#"{"dburl": "postgresql://u:1234@h:notaport/db"}"#.into(),
            r#""dburl" = "<redacted>": must be a PostgreSQL connection string, e.g. "postgresql://user:password@127.0.0.1:5432/ckpool""#,
        ),
        (
            "dburl",
            r#"{"dburl": "postgresql://u:1234@h/db?sslmode=verify"}"#.into(),
            r#""dburl" = "<redacted>": sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full (not "verify")"#,
        ),
        (
            "dburl",
            r#"{"dburl": "host=h password=1234 sslmode=verify-full"}"#.into(),
            r#""dburl" = "<redacted>": sslmode=verify-full needs sslrootcert=PATH (the PEM file of the certificate authority to verify the server against)"#,
        ),
        ("instance", r#"{"instance": ["a"]}"#.into(), r#""instance" = ["a"]: must be a string"#),
        (
            "donation",
            r#"{"donation": 0.125}"#.into(),
            r#""donation" = 0.125: must be a percent from 0 to 100 with at most two decimals"#,
        ),
        ("payout_scheme", r#"{"payout_scheme": 1}"#.into(), r#""payout_scheme" = 1: must be a string"#),
        (
            "pplns_window",
            r#"{"payout_scheme": "pplns", "pplns_window": "2"}"#.into(),
            r#""pplns_window" = "2": must be a multiple of the network difficulty, such as 2 or 0.5; a JSON number, without quotes (`2`, not `"2"`)"#,
        ),
        (
            "pool_fee",
            r#"{"payout_scheme": "pplns", "pool_fee": "1"}"#.into(),
            r#""pool_fee" = "1": must be a percent such as 1 or 0.5; a JSON number, without quotes (`1`, not `"1"`)"#,
        ),
        (
            "pplns_min_output",
            r#"{"payout_scheme": "pplns", "pplns_min_output": 1.5}"#.into(),
            r#""pplns_min_output" = 1.5: must be a whole number from 546 to 2100000000000000"#,
        ),
        (
            "pplns_max_outputs",
            r#"{"payout_scheme": "pplns", "pplns_max_outputs": "x"}"#.into(),
            r#""pplns_max_outputs" = "x": must be a whole number from 1 to 250"#,
        ),
        (
            "coinbase_max",
            r#"{"payout_scheme": "pplns", "coinbase_max": -1}"#.into(),
            r#""coinbase_max" = -1: must be a whole number from 200 to 100000"#,
        ),
    ];
    for (key, text, message) in cases {
        let e = Config::parse(text, Path::new("t.conf")).unwrap_err();
        assert!(matches!(&e, ConfigError::Key { key: k, .. } if k == key), "{text}: {e:?}");
        assert_eq!(e.to_string(), format!("config file t.conf: key {message}"), "{text}");
        assert!(!e.to_string().contains("1234"), "a password shown: {e}");
    }
    // Every key serde reads has a case (the compatibility keys take any value).
    let compat = ["useragent", "redirecturl", "serverurls"];
    let named: Vec<&str> = cases.iter().map(|c| c.0).collect();
    for k in KNOWN_KEYS.iter().filter(|k| !compat.contains(k)) {
        assert!(named.contains(k), "no wrong-type case for {k}");
    }
    for (entry, keys) in [("btcd[0]", BTCD_KEYS), ("proxy[0]", PROXY_KEYS), ("serverurl[0]", SERVERURL_KEYS)] {
        for k in keys {
            assert!(named.contains(&format!("{entry}.{k}").as_str()), "no wrong-type case for {entry}.{k}");
        }
    }
    for k in compat {
        let c = Config::parse(&format!("{{\"{k}\": [{{\"any\": true}}]}}"), Path::new("t.conf")).unwrap();
        assert!(c.unknown_keys.is_empty(), "{k}");
    }
}

/// `payout_scheme: "pplns"` and its bounds (docs/payout.md); the PPLNS keys without the scheme,
/// or out of range, stop the start naming the key.
#[test]
fn pplns_keys() {
    let p = Path::new("t.conf");
    assert_eq!(Config::parse("{}", p).unwrap().pplns, None);
    let c = Config::parse(r#"{"payout_scheme": "pplns"}"#, p).unwrap().pplns.unwrap();
    assert_eq!(
        (c.window, c.fee_bp, c.min_output, c.max_outputs, c.coinbase_max),
        (Difficulty::from_integer(2), 0, 10_000, 100, 750)
    );
    let c = Config::parse(
        r#"{"payout_scheme": "pplns", "pplns_window": 0.5, "pool_fee": 1.25, "pplns_min_output": 546, "pplns_max_outputs": 10, "coinbase_max": 400}"#,
        p,
    )
    .unwrap()
    .pplns
    .unwrap();
    assert_eq!(
        (c.window.to_string().as_str(), c.fee_bp, c.min_output, c.max_outputs, c.coinbase_max),
        ("0.5", 125, 546, 10, 400)
    );
    for (text, needle) in [
        (r#"{"pool_fee": 1}"#, "\"pool_fee\""),
        (r#"{"payout_scheme": "pps"}"#, "must be \"pplns\""),
        (r#"{"payout_scheme": "pplns", "pplns_window": 0}"#, "\"pplns_window\""),
        (r#"{"payout_scheme": "pplns", "pool_fee": 100.5}"#, "\"pool_fee\""),
        (r#"{"payout_scheme": "pplns", "pplns_min_output": 1}"#, "\"pplns_min_output\""),
        (r#"{"payout_scheme": "pplns", "pplns_max_outputs": 0}"#, "\"pplns_max_outputs\""),
        (r#"{"payout_scheme": "pplns", "coinbase_max": 100}"#, "\"coinbase_max\""),
    ] {
        let e = Config::parse(text, p).unwrap_err().to_string();
        assert!(e.contains(needle), "{text}: {e}");
    }
}
