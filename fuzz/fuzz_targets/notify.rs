//! An upstream pool's `mining.notify` params: `Job::from_notify`; a job it accepts writes
//! notify params that parse back to the same job, and a share on it is judged without panic.
#![no_main]
use ckpool::difficulty::Target;
use ckpool::share::{self, Submit};
use ckpool::work::Job;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    // A whole line or just its params.
    let params = if v.get("params").is_some() { &v["params"] } else { &v };
    let job = match Job::from_notify(1, params, 4, 8) {
        Ok(j) => j,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let p = job.notify_params();
    let back = Job::from_notify(1, &p, 4, 8).expect("a job's own notify parses");
    assert_eq!(back.notify_params(), p);
    assert_eq!(
        (back.prev_hash, &back.coinbase.coinb1, &back.coinbase.coinb2, &back.branches),
        (job.prev_hash, &job.coinbase.coinb1, &job.coinbase.coinb2, &job.branches)
    );
    assert_eq!((back.version, back.nbits, back.ntime, back.clean), (job.version, job.nbits, job.ntime, job.clean));
    let ntime = format!("{:08x}", job.ntime);
    let sub =
        Submit { job_id: "1", extranonce2: "0000000000000000", ntime: &ntime, nonce: "0000000", version_bits: None };
    let _ = share::check(&job, &[0; 4], &sub, 0x1fff_e000, &Target::MAX);
});
