//! Property tests of the engine's arithmetic, block assembly and input handling.

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use ckpool::difficulty::{Difficulty, Target};
use ckpool::hex;
use ckpool::share::{self, Submit};
use ckpool::work::coinbase::{self, script_for_address, CoinbaseConfig};
use ckpool::work::job::Job;
use ckpool::work::template::Template;
use proptest::prelude::*;
use ruint::aliases::U256;
use serde_json::json;

fn config() -> ProptestConfig {
    ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
}

/// 256-bit values spread over every magnitude: random bytes shifted right by 0..=256 bits.
fn any_u256() -> impl Strategy<Value = U256> {
    (any::<[u8; 32]>(), 0usize..=256).prop_map(|(b, shift)| U256::from_be_bytes(b) >> shift)
}

/// A dummy transaction: 1..4 inputs with random prevouts and scriptSigs, optionally witnesses.
fn dummy_tx(witness: bool) -> impl Strategy<Value = Transaction> {
    let input = (
        any::<[u8; 32]>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..30),
        proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..4),
        any::<u32>(),
    );
    let output = (0u64..=21_000_000 * 100_000_000, proptest::collection::vec(any::<u8>(), 0..40));
    (
        proptest::collection::vec(input, 1..4),
        proptest::collection::vec(output, 1..4),
        any::<u32>(),
        prop_oneof![Just(1i32), Just(2i32)],
    )
        .prop_map(move |(ins, outs, lock, version)| Transaction {
            version: transaction::Version(version),
            lock_time: absolute::LockTime::from_consensus(lock),
            input: ins
                .into_iter()
                .map(|(txid, vout, sig, wit, seq)| TxIn {
                    previous_output: OutPoint { txid: Txid::from_byte_array(txid), vout },
                    script_sig: ScriptBuf::from_bytes(sig),
                    sequence: Sequence(seq),
                    witness: if witness { Witness::from_slice(&wit) } else { Witness::new() },
                })
                .collect(),
            output: outs
                .into_iter()
                .map(|(v, s)| TxOut { value: Amount::from_sat(v), script_pubkey: ScriptBuf::from_bytes(s) })
                .collect(),
        })
}

/// BIP141 commitment script for `txs` after the coinbase, computed with rust-bitcoin.
fn witness_commitment_script(txs: &[Transaction]) -> Vec<u8> {
    let hashes = std::iter::once(sha256d::Hash::all_zeros()).chain(txs.iter().map(|t| t.compute_wtxid().to_raw_hash()));
    let root = bitcoin::merkle_tree::calculate_root(hashes).unwrap();
    let mut buf = root.to_byte_array().to_vec();
    buf.extend_from_slice(&[0u8; 32]);
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(sha256d::Hash::hash(&buf).as_byte_array());
    script
}

/// A fixed job for the never-panics property.
fn fixed_job() -> Job {
    let t = Template::from_gbt(&json!({
        "version": 0x2000_0000,
        "previousblockhash": "00000000000000000002a7c4c1e48d76c5a37902165a270156b7a8d72728a054",
        "coinbasevalue": 312_500_000u64,
        "bits": "17034219",
        "curtime": 1_700_000_000,
        "height": 840_000,
        "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
    }))
    .unwrap();
    let script = script_for_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", bitcoin::Network::Bitcoin).unwrap();
    Job::new(7, &t, coinbase::build(&t, &CoinbaseConfig::new(script, "/prop/")).unwrap(), true)
}

/// Arbitrary text, hex-looking text of any length, and well-formed 4-byte hex words.
fn submit_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[0-9a-fA-F]{0,20}", "[0-9a-f]{8}", "[0-9a-f]{16}", ".{0,20}"]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn compact_round_trips(v in any_u256()) {
        let compact = Target::from_u256(v).to_compact();
        let t = Target::from_compact(compact).expect("to_compact output decodes");
        prop_assert_eq!(t.to_compact(), compact);
        // Compact keeps the top 23 bits: never above the original, and exact when it fits.
        prop_assert!(t.as_u256() <= v);
        if v.bit_len() <= 23 {
            prop_assert_eq!(t.as_u256(), v);
        }
    }

    #[test]
    fn difficulty_target_difficulty_within_one_unit(units in prop_oneof![233u128..1_000_000, 233u128..=u128::MAX]) {
        // Below 233 units (2.33e-10) the target would exceed 2^256 - 1 and saturates at Target::MAX.
        let d = Difficulty::from_units(units);
        let back = Difficulty::from_target(&d.to_target());
        prop_assert!(back.units().abs_diff(units) <= 1, "{} -> {:?} -> {}", d, d.to_target(), back);
        // Display is exact and parses back to the same difficulty.
        prop_assert_eq!(d.to_string().parse::<Difficulty>().unwrap(), d);
    }

    #[test]
    fn assembled_blocks_pass_merkle_and_witness_checks(
        with_witness in any::<bool>(),
        txs in proptest::collection::vec(any::<bool>(), 0..40)
            .prop_flat_map(|w| w.into_iter().map(dummy_tx).collect::<Vec<_>>()),
        height in 0u32..10_000_000,
        give_txid in any::<bool>(),
        en1 in any::<[u8; 4]>(),
        en2 in any::<[u8; 8]>(),
        nonce in any::<u32>(),
        flags in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        // Without a commitment a block may not carry witnesses: strip them.
        let txs: Vec<Transaction> = txs
            .into_iter()
            .map(|mut t| {
                if !with_witness {
                    t.input.iter_mut().for_each(|i| i.witness.clear());
                }
                t
            })
            .collect();
        let transactions: Vec<_> = txs
            .iter()
            .map(|t| {
                let mut j = json!({ "data": hex::encode(&serialize(t)), "fee": 0 });
                if give_txid {
                    j["txid"] = t.compute_txid().to_string().into();
                }
                j
            })
            .collect();
        let mut gbt = json!({
            "version": 0x2000_0000,
            "previousblockhash": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
            "transactions": transactions,
            "coinbaseaux": { "flags": hex::encode(&flags) },
            "coinbasevalue": 5_000_000_000u64,
            "bits": "207fffff",
            "curtime": 1_700_000_000,
            "height": height,
        });
        if with_witness {
            gbt["default_witness_commitment"] = hex::encode(&witness_commitment_script(&txs)).into();
        }
        let t = Template::from_gbt(&gbt).unwrap();
        let script = script_for_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", bitcoin::Network::Regtest).unwrap();
        let cb = coinbase::build(&t, &CoinbaseConfig::new(script, "/prop/")).unwrap();
        let job = Job::new(1, &t, cb, true);
        let root = job.merkle_root(&en1, &en2);
        let header = job.header(&root, job.version, job.ntime, nonce);
        let raw = job.assemble_block(&en1, &en2, &header).unwrap();
        let block: bitcoin::Block = deserialize(&raw).unwrap();
        prop_assert_eq!(block.txdata.len(), txs.len() + 1);
        prop_assert_eq!(&block.txdata[1..], &txs[..]);
        prop_assert!(block.check_merkle_root());
        prop_assert!(block.check_witness_commitment());
        prop_assert_eq!(block.bip34_block_height().unwrap(), height as u64);
        prop_assert_eq!(block.txdata[0].input[0].witness.len(), with_witness as usize);
        prop_assert_eq!(serialize(&block), raw);
    }

    #[test]
    fn share_check_never_panics(
        job_id in submit_text(),
        extranonce2 in submit_text(),
        ntime in prop_oneof![submit_text(), (1_700_000_000u32..=1_700_007_001).prop_map(|n| format!("{n:08x}"))],
        nonce in submit_text(),
        version_bits in proptest::option::of(submit_text()),
        mask in any::<u32>(),
        en1 in proptest::collection::vec(any::<u8>(), 0..9),
        target in any_u256(),
    ) {
        let job = fixed_job();
        let sub = Submit {
            job_id: &job_id,
            extranonce2: &extranonce2,
            ntime: &ntime,
            nonce: &nonce,
            version_bits: version_bits.as_deref(),
        };
        match share::check(&job, &en1, &sub, mask, &Target::from_u256(target)) {
            // Whatever is accepted really meets the target it was judged against (or the network's).
            Ok(acc) => prop_assert!(
                Target::from_u256(target).is_met_by(&acc.hash) || job.network_target.is_met_by(&acc.hash)
            ),
            Err(e) => prop_assert!((20..=23).contains(&e.code())),
        }
    }

    #[test]
    fn difficulty_from_str_never_panics(
        s in prop_oneof![
            any::<String>(),
            "[-+]?[0-9]{0,45}(\\.[0-9]{0,45})?([eE][-+]?[0-9]{0,12})?",
            "[-+.0-9eE ]{0,30}",
        ]
    ) {
        if let Ok(d) = s.parse::<Difficulty>() {
            // Whatever parses displays as a number that parses to itself.
            prop_assert_eq!(d.to_string().parse::<Difficulty>().unwrap(), d);
        }
    }
}

/// One JSON value a miner might put in a submit's params: strings (with escapes and any
/// characters), null, numbers, booleans, nested arrays and objects.
fn any_param() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        any::<String>().prop_map(serde_json::Value::String),
        "[0-9a-f]{0,16}".prop_map(serde_json::Value::String),
        Just(serde_json::Value::Null),
        any::<i64>().prop_map(|n| json!(n)),
        any::<bool>().prop_map(|b| json!(b)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec(("[a-z]{1,4}", inner), 0..3)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    /// The borrowed submit parser reads what a full JSON parse reads: for every param, the same
    /// string, null, or "something else"; params beyond the sixth are skipped; the id and
    /// method are the same.
    #[test]
    fn submit_params_agree_with_serde_json(
        params in proptest::collection::vec(any_param(), 0..9),
        id in prop_oneof![Just(json!(7)), Just(json!("x\"y")), Just(serde_json::Value::Null)],
    ) {
        use ckpool::sv1::proto::{parse_request, Param, SubmitParams, SUBMIT_PARAMS};
        let line = json!({"id": id, "method": "mining.submit", "params": params}).to_string();
        let req = parse_request(line.as_bytes()).unwrap();
        prop_assert_eq!(&*req.method, "mining.submit");
        prop_assert_eq!(ckpool::sv1::proto::id_text(req.id), id.to_string());
        let p = SubmitParams::parse(req.params).unwrap();
        for i in 0..SUBMIT_PARAMS + 2 {
            let want = params.get(i).filter(|_| i < SUBMIT_PARAMS);
            match (want, p.get(i)) {
                (None, None) => {}
                (Some(serde_json::Value::String(s)), Some(Param::Str(got))) => prop_assert_eq!(s, &**got),
                (Some(serde_json::Value::Null), Some(Param::Null)) => {}
                (Some(v), Some(Param::Other)) => prop_assert!(!v.is_string() && !v.is_null(), "{v}"),
                (w, g) => prop_assert!(false, "param {i}: want {w:?}, got {g:?}"),
            }
        }
    }

    /// Any bytes: the request parser answers (a request or an error), never panics, and a
    /// submit's params parse or are refused.
    #[test]
    fn any_line_parses_or_is_refused(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(req) = ckpool::sv1::proto::parse_request(&line) {
            let _ = ckpool::sv1::proto::SubmitParams::parse(req.params);
            let _ = req.params_value();
        }
    }
}
