//! Unit tests of the config reader: the guide's files, every key's rule and wrong-type message,
//! the key lists against serde's fields and docs/configuration.md.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{DeserializeOwned, Deserializer};

use super::raw::{RawBtcd, RawConfig, RawListenEntry, RawUpstream};
use super::*;
use crate::difficulty::Difficulty;
use crate::mining::vardiff::VardiffParams;

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

/// The rows of the tables of docs/configuration.md's section `title`: each key, after
/// checking that the row gives a type, a default and what the key does.
fn documented_keys(title: &str) -> Vec<&'static str> {
    let doc = include_str!("../../docs/configuration.md");
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
        ("dburl", r#"{"dburl": 1234}"#.into(), r#""dburl" = "<redacted>": must be a string"#),
        (
            "dburl",
            r#"{"dburl": "postgresql://u:1234@h:notaport/db"}"#.into(),
            r#""dburl" = "<redacted>": must be a PostgreSQL connection string, e.g. "postgresql://user:password@127.0.0.1:5432/ckpool""#,
        ),
        ("instance", r#"{"instance": ["a"]}"#.into(), r#""instance" = ["a"]: must be a string"#),
        (
            "donation",
            r#"{"donation": 0.125}"#.into(),
            r#""donation" = 0.125: must be a percent from 0 to 100 with at most two decimals"#,
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
