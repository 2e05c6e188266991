//! A line from the upstream pool in proxy mode: `read_upstream` on its JSON, then what the
//! session does with a usable subscribe / set_extranonce answer (local extranonce sizes, a job
//! for them, a share judged on it) and with a notify.
#![no_main]
use ckpool::difficulty::Target;
use ckpool::proxy::upstream::{prefix_len_for, read_upstream, UpstreamMsg};
use ckpool::share::{self, Submit};
use ckpool::work::Job;
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

/// A notify as a regtest pool sends it.
fn notify() -> Value {
    json!(["1", "00".repeat(32), "01000000010000", "00000000", [], "20000000", "207fffff", "504e86b9", true])
}

/// A share on a proxied job for extranonce1 `en1` and a local extranonce2 of `en2_len` bytes.
fn share_on(params: &Value, en1_len: usize, en2_len: usize) {
    let Ok(job) = Job::from_notify(1, params, en1_len, en2_len) else { return };
    let en1 = vec![0u8; en1_len.min(64)];
    let en2 = "00".repeat(en2_len.min(64));
    let ntime = format!("{:08x}", job.ntime);
    let sub =
        Submit { job_id: "1", extranonce2: &en2, ntime: &ntime, nonce: "00000000", version_bits: Some("00002000") };
    let _ = share::check(&job, &en1, &sub, 0x1fff_e000, &Target::MAX);
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    match read_upstream(&v) {
        UpstreamMsg::Subscribed(Some((e, n))) | UpstreamMsg::SetExtranonce(Some((e, n))) => {
            let Some(p) = prefix_len_for(n) else { return };
            assert!(p >= 1 && p <= 4);
            if n <= p {
                return;
            }
            share_on(&notify(), e.len() + p, n - p);
        }
        UpstreamMsg::Notify => share_on(&v["params"], 8, 4),
        UpstreamMsg::SetDifficulty(Some(d)) => {
            assert!(!d.is_zero());
            let _ = d.to_target();
        }
        UpstreamMsg::Reconnect(Some(to)) => assert!(to.contains(':')),
        _ => {}
    }
});
