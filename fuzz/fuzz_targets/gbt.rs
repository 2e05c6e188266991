//! A node's getblocktemplate result: `Template::from_gbt`, then what the pool does with an
//! accepted template (coinbase, job, notify, block assembly) must not panic either.
#![no_main]
use ckpool::work::coinbase::{self, script_for_address, CoinbaseConfig};
use ckpool::work::{Job, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let t = match Template::from_gbt(&v) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(t.coinbase_flags.len() <= 40);
    assert!(t.coinbase_value <= 21_000_000 * 100_000_000);
    let script = script_for_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", bitcoin::Network::Bitcoin)
        .expect("a valid address");
    let Ok(cb) = coinbase::build(&t, &CoinbaseConfig::new(script, "/fuzz/")) else { return };
    let job = Job::new(1, &t, cb, true);
    let _ = job.notify_params();
    let root = job.merkle_root(&[1, 2, 3, 4], &[0; 8]);
    let header = job.header(&root, job.version, job.ntime, 0);
    let block = job.assemble_block(&[1, 2, 3, 4], &[0; 8], &header).expect("template jobs assemble");
    assert_eq!(&block[..80], &header[..]);
});
