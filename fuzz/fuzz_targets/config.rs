//! Config text: `Config::parse` on any text, which must not depend on what follows the first
//! JSON value (ckpool's files carry comments after the closing brace).
//! Inputs naming a `serverurl` that is not a literal address are skipped: those go to the OS
//! resolver (getaddrinfo), which is not ours to fuzz and would make every run a DNS query.
#![no_main]
use std::net::SocketAddr;
use std::path::Path;

use ckpool::config::Config;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn needs_resolver(v: &Value) -> bool {
    let literal = |s: &str| s.trim().trim_start_matches("stratum+tcp://").parse::<SocketAddr>().is_ok();
    match v.get("serverurl") {
        Some(Value::String(s)) => !literal(s),
        Some(Value::Array(a)) => a.iter().any(|u| u.as_str().is_some_and(|s| !literal(s))),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.conf");
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    let Some(Ok(first)) = stream.next() else {
        let e = Config::parse(text, path).expect_err("no JSON value, no config");
        let _ = e.to_string();
        return;
    };
    if needs_resolver(&first) {
        return;
    }
    let end = stream.byte_offset();
    let a = Config::parse(text, path);
    let b = Config::parse(&format!("{}\nComments from here on are ignored: {{ \"mindiff\": 0 }}", &text[..end]), path);
    assert_eq!(format!("{a:?}"), format!("{b:?}"), "text after the first value changed the result");
    match a {
        Ok(c) => {
            let _ = c.require_pool();
            let _ = c.require_proxy();
            assert!(!c.mindiff.is_zero() && c.startdiff >= c.mindiff);
            assert!(c.maxdiff.is_zero() || c.maxdiff >= c.startdiff);
            assert!((2..=8).contains(&c.nonce1length) && (2..=8).contains(&c.nonce2length));
            assert!(c.vardiff.retarget_interval_us >= c.vardiff.target_interval_us);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
