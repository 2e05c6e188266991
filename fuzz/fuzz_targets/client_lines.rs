//! A line from a stratum server as the one client reads it (`ckpool mine`, the proxy's
//! upstream, `ckpool bench`): `sv1::server_msg::event` for every kind of request, never a
//! panic; its serde-free shortcuts read what a JSON parse reads; then what the proxy does with a
//! usable subscribe / set_extranonce answer (local extranonce sizes, a job for them, a share
//! judged on it) and with a notify.
#![no_main]
use ckpool::difficulty::Target;
use ckpool::proxy::upstream::prefix_len_for;
use ckpool::share::{self, Submit};
use ckpool::sv1::server_msg::{event, parse, Event, Kind, ServerMsg, Subscription};
use ckpool::work::Job;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// A notify as a regtest pool sends it.
fn notify() -> Value {
    json!(["1", "00".repeat(32), "01000000010000", "00000000", [], "20000000", "207fffff", "504e86b9", true])
}

/// A share on a proxied job for extranonce1 `en1` and a local extranonce2 of `en2_len` bytes.
fn share_on(job: &Job, en1_len: usize, en2_len: usize) {
    let en1 = vec![0u8; en1_len.min(64)];
    let en2 = "00".repeat(en2_len.min(64));
    let ntime = format!("{:08x}", job.ntime);
    let sub =
        Submit { job_id: "1", extranonce2: &en2, ntime: &ntime, nonce: "00000000", version_bits: Some("00002000") };
    let _ = share::check(job, &en1, &sub, 0x1fff_e000, &Target::MAX);
}

fuzz_target!(|data: &[u8]| {
    for kind in [Kind::Configure, Kind::Subscribe, Kind::Authorize, Kind::Submit, Kind::Other] {
        match event(data, |_| Some(kind)) {
            Event::Subscribed(Ok(Subscription { extranonce1: e, extranonce2_size: n }))
            | Event::SetExtranonce(Subscription { extranonce1: e, extranonce2_size: n }) => {
                let Some(p) = prefix_len_for(n) else { continue };
                assert!((1..=4).contains(&p));
                if n <= p {
                    continue;
                }
                if let Ok(job) = Job::from_notify(1, &notify(), e.len() + p, n - p) {
                    share_on(&job, e.len() + p, n - p);
                }
            }
            Event::Notify(n) => {
                let _ = n.prevhash_clean();
                if let Ok(j) = n.job(1, 8, 4) {
                    share_on(&j.job, 8, 4);
                }
            }
            Event::SetDifficulty(d) => {
                assert!(!d.is_zero());
                let _ = d.to_target();
            }
            Event::Reconnect(Some(to)) => assert!(to.contains(':')),
            _ => {}
        }
    }
    // The shortcuts against a JSON parse (which keeps the last of repeated keys: compare
    // single-key lines without escapes).
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(v) = serde_json::from_str::<Value>(text) else { return };
    let single = ["\"id\"", "\"method\"", "\"params\"", "\"result\"", "\"error\""].iter().all(|k| text.matches(k).count() <= 1);
    if !single || text.contains('\\') {
        return;
    }
    match parse(data) {
        Ok(ServerMsg::Method { method, params }) => {
            assert_eq!(v["method"].as_str(), Some(&*method), "{text}");
            let p: Value = serde_json::from_str(params).expect("params are one JSON value");
            assert_eq!(p, v.get("params").cloned().unwrap_or(Value::Null), "{text}");
        }
        Ok(ServerMsg::Reply { id, result }) => {
            assert_eq!(v["id"].as_u64(), Some(id), "{text}");
            let refused = !v["error"].is_null() || v["result"] == json!(false) || v["result"].is_null();
            assert_eq!(result.is_err(), refused, "{text}");
        }
        Ok(ServerMsg::Stray(_)) => assert!(v["id"].as_u64().is_none() && !v["method"].is_string(), "{text}"),
        Err(_) => {}
    }
});
