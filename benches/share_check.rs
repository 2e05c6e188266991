//! The per-share and per-notify hot paths on a realistic mainnet-sized job: 13 merkle branches
//! (5,000 template transactions) and a segwit coinbase of about 200 bytes. Share validation,
//! submit parsing, share-log line formatting, notify serialization (once per job, and the
//! per-session line), merkle branch computation.
//!
//! Run: `cargo bench --bench share_check`

mod common;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

use std::sync::Arc;

use ckpool::difficulty::Difficulty;
use ckpool::log::sharelog::{format_line, ShareLine};
use ckpool::mining::Work;
use ckpool::share::{self, Submit, DEFAULT_VERSION_MASK};
use ckpool::sv1::proto::{parse_request, SubmitParams};
use ckpool::work::coinbase::{self, script_for_address, CoinbaseConfig};
use ckpool::work::job::Job;
use ckpool::work::merkle::{self, sha256d};
use serde_json::json;

fn txid(i: u32) -> [u8; 32] {
    sha256d(&i.to_le_bytes())
}

fn realistic_job() -> Job {
    let transactions: Vec<_> = (0..5_000u32)
        .map(|i| json!({ "data": "00", "txid": ckpool::hex::encode_rev(&txid(i)), "fee": 1000 }))
        .collect();
    let t = common::mainnet_template(transactions);
    let script = script_for_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", bitcoin::Network::Bitcoin).unwrap();
    let cb =
        coinbase::build(&t, &CoinbaseConfig::new(script, "/ckpool-rs benchmark pool signature, a typical length/"))
            .unwrap();
    let job = Job::new(0x1234, &t, cb, true);
    assert_eq!(job.branches.len(), 13);
    job
}

fn bench(c: &mut Criterion) {
    let job = realistic_job();
    eprintln!("job: {} branches, coinbase {} bytes", job.branches.len(), job.coinbase.size());
    let en1 = [0xde, 0xad, 0xbe, 0xef];
    let id = job.id_hex();
    let ntime = format!("{:08x}", job.ntime);

    // Rejected share: full header rebuild and sha256d, then below the share target.
    let high = Difficulty::from_integer(1_000_000_000_000).to_target();
    let mut nonce = 0u32;
    c.bench_function("share_check/reject_low_difficulty", |b| {
        b.iter(|| {
            nonce = nonce.wrapping_add(1);
            let n = format!("{nonce:08x}");
            let sub = Submit {
                job_id: &id,
                extranonce2: "0000000000000001",
                ntime: &ntime,
                nonce: &n,
                version_bits: Some("00002000"),
            };
            let r = share::check(black_box(&job), &en1, &sub, DEFAULT_VERSION_MASK, &high);
            assert!(r.is_err());
            r
        })
    });

    // Accepted share: a new extranonce2 each time so none is a duplicate (the hex is made outside the timing).
    let any = Difficulty::ZERO.to_target();
    let mut counter = 0u64;
    c.bench_function("share_check/accept", |b| {
        b.iter_batched(
            || {
                counter += 1;
                format!("{counter:016x}")
            },
            |en2| {
                let sub = Submit {
                    job_id: &id,
                    extranonce2: &en2,
                    ntime: &ntime,
                    nonce: "00000000",
                    version_bits: Some("00002000"),
                };
                let r = share::check(black_box(&job), &en1, &sub, DEFAULT_VERSION_MASK, &any);
                assert!(r.is_ok());
                r
            },
            BatchSize::SmallInput,
        )
    });

    // Components, for reading the figures above: the coinbase txid folded up 13 branches, and one
    // SHA-256 compression (the share path runs 47 of them back to back: 5 for the coinbase, 3 per
    // branch, 3 for the header).
    c.bench_function("components/merkle_root_13_branches", |b| b.iter(|| black_box(&job).merkle_root(&en1, &[1u8; 8])));
    c.bench_function("components/sha256_compress_1_block", |b| {
        let mut state =
            [0x6a09e667u32, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
        let block = sha2::digest::generic_array::GenericArray::clone_from_slice(&[5u8; 64]);
        b.iter(|| {
            sha2::compress256(&mut state, std::slice::from_ref(black_box(&block)));
            state[0]
        })
    });

    // Notify serialization: once per job (the JSON params, encoded when the job is published),
    // then per session and notify only the session's id and the encoded tail are copied.
    c.bench_function("notify_params_to_string", |b| b.iter(|| black_box(&job).notify_params().to_string()));
    let work = Work::new(Arc::new(realistic_job()));
    let mut out = Vec::with_capacity(4096);
    c.bench_function("notify/per_session_line", |b| {
        b.iter(|| {
            out.clear();
            work.push_notify(&mut out, black_box(0x0012_3405), true);
            out.len()
        })
    });

    // Submit parsing: the line to the five strings the share check takes, borrowed.
    let submit = r#"{"id":4711,"method":"mining.submit","params":["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.rig1","123405","0000000000000001","65000000","1a2b3c4d","00002000"]}"#;
    c.bench_function("submit/parse", |b| {
        b.iter(|| {
            let r = parse_request(black_box(submit.as_bytes())).unwrap();
            let p = SubmitParams::parse(r.params).unwrap();
            p.str(4).map(str::len)
        })
    });

    // Share-log line, as a session appends it to the log's batch buffer.
    let hash = [0x5au8; 32];
    let line = ShareLine {
        workinfoid: 0x6552_3a1f_0000_0001,
        clientid: 4711,
        enonce1: "0a0b0c0d",
        nonce2: "0000000000000001",
        nonce: "1a2b3c4d",
        ntime: "65000000",
        diff: Difficulty::from_integer(42),
        sdiff: "0.000307".parse().unwrap(),
        hash: Some(&hash),
        result: false,
        reject_reason: Some("Above target"),
        createdate: (1_700_000_000, 123_456_789),
        workername: "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.rig1",
        username: "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
        address: "192.168.1.77",
        agent: "bitaxe/BM1370/v2.4.2",
    };
    let mut buf = Vec::with_capacity(1024);
    c.bench_function("sharelog/format_line", |b| {
        b.iter(|| {
            buf.clear();
            format_line(black_box(&line), &mut buf);
            buf.len()
        })
    });

    let txids: Vec<[u8; 32]> = (0..3_000u32).map(txid).collect();
    c.bench_function("merkle_branches_3000_txids", |b| b.iter(|| merkle::branches(black_box(&txids))));

    // A full template as a node sends it (3,000 transactions of 625 bytes, 1.9 MB of JSON, as
    // contrib/bench.sh's MEMPOOL=3000 node answers) to the work every session gets: the pool's
    // own share of "new block -> first notify" after the node has answered.
    let body = gbt_reply(3_000);
    let cb_cfg = ckpool::work::CoinbaseConfig::new(
        bitcoin::ScriptBuf::from_bytes(ckpool::hex::decode("0014751e76e8199196d454941c45d1b3a323f1433bd6").unwrap()),
        "/bench/",
    );
    c.bench_function("template/gbt_reply_3000_txs_to_work", |b| {
        b.iter(|| {
            let v = ckpool::bitcoind::rpc::parse_reply("node", "getblocktemplate", 200, black_box(&body)).unwrap();
            let t = ckpool::work::Template::from_gbt(&v).unwrap();
            let cb = ckpool::work::coinbase::build(&t, &cb_cfg).unwrap();
            let job = ckpool::work::Job::new(1, &t, cb, true);
            ckpool::mining::Work::new(std::sync::Arc::new(job))
        })
    });
    // The same from the result's JSON text (what the pool does): no tree of values in between.
    c.bench_function("template/gbt_text_3000_txs_to_work", |b| {
        b.iter(|| {
            #[derive(serde::Deserialize)]
            struct Reply<'a> {
                #[serde(borrow)]
                result: &'a serde_json::value::RawValue,
            }
            let r: Reply = serde_json::from_str(black_box(&body)).unwrap();
            let t = ckpool::work::Template::from_gbt_json(r.result.get()).unwrap();
            let cb = ckpool::work::coinbase::build(&t, &cb_cfg).unwrap();
            let job = ckpool::work::Job::new(1, &t, cb, true);
            ckpool::mining::Work::new(std::sync::Arc::new(job))
        })
    });
}

/// A getblocktemplate reply with `n` transactions (distinct txids, 625-byte bodies).
fn gbt_reply(n: u32) -> String {
    let txs: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "data": format!("{:08x}{}", i, "ab".repeat(621)),
                "txid": ckpool::hex::encode(&txid(i)),
                "hash": ckpool::hex::encode(&txid(i)),
                "depends": [],
                "fee": 500,
                "sigops": 1,
            })
        })
        .collect();
    serde_json::json!({"result": {
        "version": 536870912,
        "previousblockhash": "000000000000000000024bead8df69990852c202db0e0097c1a12ea637d7e96d",
        "transactions": txs,
        "coinbaseaux": {"flags": ""},
        "coinbasevalue": 625000000u64 + 500 * n as u64,
        "target": "00000000000000000004e0b10000000000000000000000000000000000000000",
        "mintime": 1700000000,
        "curtime": 1700000600,
        "bits": "17034219",
        "height": 820000,
        "rules": ["csv", "!segwit", "taproot"],
    }, "error": null, "id": "ckpool"})
    .to_string()
}

criterion_group!(benches, bench);
criterion_main!(benches);
