//! Public share vectors the code did not produce: each rebuilds a header from stratum fields and
//! checks the hash and the difficulty against the value its source publishes.

use ckpool::difficulty::{Difficulty, Target};
use ckpool::hex;
use ckpool::share::{self, Reject, Submit, DEFAULT_VERSION_MASK};
use ckpool::work::job::{prevhash_from_stratum, Job};
use ckpool::work::merkle::sha256d;
use serde_json::json;

/// slush's stratum protocol documentation (testnet example), as quoted in shared issue #2.
fn slush_notify(version: &str) -> serde_json::Value {
    json!([
        "bf",
        "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008",
        "072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000",
        [],
        version,
        "1c2ac4af",
        "504e86b9",
        false
    ])
}

fn assert_close(d: Difficulty, expected: f64, tolerance: f64) {
    assert!((d.as_f64() - expected).abs() <= tolerance, "difficulty {d} expected about {expected}");
}

#[test]
fn slush_documentation_share() {
    let job = Job::from_notify(0xbf, &slush_notify("00000002"), 4, 4).unwrap();
    let en1 = hex::decode("08000002").unwrap();
    let sub =
        Submit { job_id: "bf", extranonce2: "00000001", ntime: "504e86ed", nonce: "b2957c02", version_bits: None };
    let ok = share::check(&job, &en1, &sub, DEFAULT_VERSION_MASK, &Difficulty::ONE.to_target()).unwrap();
    assert_eq!(hex::encode_rev(&ok.hash), "000000002076870fe65a2b6eeed84fa892c0db924f1482243a6247d931dcab32");
    assert_close(ok.difficulty, 7.8858, 0.0001);
    // nbits 1c2ac4af is difficulty ~5.98 (testnet then), so this share was also a block.
    assert!(ok.block);
    // The same share again is a duplicate on this job.
    assert_eq!(
        share::check(&job, &en1, &sub, DEFAULT_VERSION_MASK, &Difficulty::ONE.to_target()),
        Err(Reject::Duplicate)
    );
}

#[test]
fn cpu_miner_share_below_difficulty_one() {
    // Same job and extranonce1 with header version 0x20000000: a share a real CPU miner found.
    let job = Job::from_notify(0xbf, &slush_notify("20000000"), 4, 4).unwrap();
    let en1 = hex::decode("08000002").unwrap();
    let sub =
        Submit { job_id: "bf", extranonce2: "00000000", ntime: "504e86b9", nonce: "4df02400", version_bits: None };
    let target: Target = "0.0003".parse::<Difficulty>().unwrap().to_target();
    let ok = share::check(&job, &en1, &sub, DEFAULT_VERSION_MASK, &target).unwrap();
    assert_eq!(hex::encode_rev(&ok.hash), "00000cbe3a3617201079b2e90e28c0273c7d118fe5014e258fca478326f8e411");
    assert_close(ok.difficulty, 0.000307, 0.0000005);
    assert!(!ok.block);
    // At difficulty 0.001 the same share is too weak, and says how weak.
    let job = Job::from_notify(0xbf, &slush_notify("20000000"), 4, 4).unwrap();
    match share::check(&job, &en1, &sub, DEFAULT_VERSION_MASK, &"0.001".parse::<Difficulty>().unwrap().to_target()) {
        Err(Reject::LowDifficulty { difficulty, .. }) => assert_close(difficulty, 0.000307, 0.0000005),
        other => panic!("expected low difficulty, got {other:?}"),
    }
}

/// bitaxeorg/ESP-Miner, components/stratum/test/test_mining.c, TEST_CASE "Test nonce diff checking":
/// prev_block_hash d02b10fc…0000 (as in notify), version 0x20000004, nbits 0x1705ae3a,
/// ntime 0x646ff1a9, merkle root 6d0359c4…cdd9, nonce 0x276E8947 → (int)diff == 18.
#[test]
fn esp_miner_nonce_diff_checking() {
    let prev = prevhash_from_stratum("d02b10fc0d4711eae1a805af50a8a83312a2215e00017f2b0000000000000000").unwrap();
    let mut root = [0u8; 32];
    hex::decode_into("6d0359c451434605c52a5a9ce074340be47c2c63840731f9edf1db3f26b1cdd9", &mut root).unwrap();
    let mut header = [0u8; 80];
    header[0..4].copy_from_slice(&0x20000004u32.to_le_bytes());
    header[4..36].copy_from_slice(&prev);
    header[36..68].copy_from_slice(&root);
    header[68..72].copy_from_slice(&0x646ff1a9u32.to_le_bytes());
    header[72..76].copy_from_slice(&0x1705ae3au32.to_le_bytes());
    header[76..80].copy_from_slice(&0x276e8947u32.to_le_bytes());
    let hash = sha256d(&header);
    assert_eq!(hex::encode_rev(&hash), "000000000e30101020e2ec8c9302a9ee56b2b2bef354b63489a0801f5789ed19");
    let d = Difficulty::from_hash(&hash);
    assert_eq!(d.units() / 1_000_000_000_000, 18);
    assert_close(d, 18.04, 0.005);
}

/// bitaxeorg/ESP-Miner, components/stratum/test/test_mining.c, TEST_CASE "Test nonce diff checking 2":
/// a 13-branch mainnet job (coinbase from slush pool), extranonce1 01000000, extranonce2 00000000,
/// nonce 0x0a029ed1 → merkle root 5bdc1968…78eb and (int)diff == 683.
#[test]
fn esp_miner_nonce_diff_checking_2() {
    let branches = [
        "2b77d9e413e8121cd7a17ff46029591051d0922bd90b2b2a38811af1cb57a2b2",
        "5c8874cef00f3a233939516950e160949ef327891c9090467cead995441d22c5",
        "2d91ff8e19ac5fa69a40081f26c5852d366d608b04d2efe0d5b65d111d0d8074",
        "0ae96f609ad2264112a0b2dfb65624bedbcea3b036a59c0173394bba3a74e887",
        "e62172e63973d69574a82828aeb5711fc5ff97946db10fc7ec32830b24df7bde",
        "adb49456453aab49549a9eb46bb26787fb538e0a5f656992275194c04651ec97",
        "a7bc56d04d2672a8683892d6c8d376c73d250a4871fdf6f57019bcc737d6d2c2",
        "d94eceb8182b4f418cd071e93ec2a8993a0898d4c93bc33d9302f60dbbd0ed10",
        "5ad7788b8c66f8f50d332b88a80077ce10e54281ca472b4ed9bbbbcb6cf99083",
        "9f9d784b33df1b3ed3edb4211afc0dc1909af9758c6f8267e469f5148ed04809",
        "48fd17affa76b23e6fb2257df30374da839d6cb264656a82e34b350722b05123",
        "c4f5ab01913fc186d550c1a28f3f3e9ffaca2016b961a6a751f8cca0089df924",
        "cff737e1d00176dd6bbfa73071adbb370f227cfb5fba186562e4060fcec877e1",
    ];
    let notify = json!([
        "1",
        "0c859545a3498373a57452fac22eb7113df2a465000543520000000000000000",
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4b0389130cfabe6d6d5cbab26a2599e92916edec5657a94a0708ddb970f5c45b5d12905085617eff8e",
        "31650707758de07b010000000000001cfd7038212f736c7573682f000000000379ad0c2a000000001976a9147c154ed1dc59609e3d26abb2df2ea3d587cd8c4188ac00000000000000002c6a4c2952534b424c4f434b3ae725d3994b811572c1f345deb98b56b465ef8e153ecbbd27fa37bf1b005161380000000000000000266a24aa21a9ed63b06a7946b190a3fda1d76165b25c9b883bcc6621b040773050ee2a1bb18f1800000000",
        branches,
        "20000004",
        "1705ae3a",
        "647025b5",
        true
    ]);
    let job = Job::from_notify(1, &notify, 4, 4).unwrap();
    let en1 = hex::decode("01000000").unwrap();
    let en2 = hex::decode("00000000").unwrap();
    assert_eq!(
        hex::encode(&job.merkle_root(&en1, &en2)),
        "5bdc1968499c3393873edf8e07a1c3a50a97fc3a9d1a376bbf77087dd63778eb"
    );
    let sub = Submit { job_id: "1", extranonce2: "00000000", ntime: "647025b5", nonce: "0a029ed1", version_bits: None };
    let ok = share::check(&job, &en1, &sub, DEFAULT_VERSION_MASK, &Difficulty::from_integer(500).to_target()).unwrap();
    assert_eq!(hex::encode_rev(&ok.hash), "00000000005fe144efbc66241c0094b8fdc2702b7729226fdfed70ca8094c0b5");
    assert_eq!(ok.difficulty.units() / 1_000_000_000_000, 683);
    assert_close(ok.difficulty, 683.51, 0.005);
    assert!(!ok.block);
}

#[test]
fn nerdminer_short_nonce_and_version_rolling() {
    // NerdMiner drops the nonce's leading zero about once in 16 shares: "a029ed1" is 0x0a029ed1.
    let notify = slush_notify("20000000");
    let en1 = hex::decode("08000002").unwrap();
    let target = Difficulty::ZERO.to_target();
    let job = Job::from_notify(1, &notify, 4, 4).unwrap();
    let padded =
        Submit { job_id: "1", extranonce2: "00000000", ntime: "504e86b9", nonce: "0a029ed1", version_bits: None };
    let short = Submit { nonce: "a029ed1", ..padded };
    let a = share::check(&job, &en1, &short, DEFAULT_VERSION_MASK, &target).unwrap();
    let job2 = Job::from_notify(1, &notify, 4, 4).unwrap();
    let b = share::check(&job2, &en1, &padded, DEFAULT_VERSION_MASK, &target).unwrap();
    assert_eq!(a.hash, b.hash);

    // Version bits: rolled bits alone, or the full rolled version, give the same header.
    let job = Job::from_notify(1, &notify, 4, 4).unwrap();
    let bits = Submit { version_bits: Some("00a00000"), ..padded };
    let r = share::check(&job, &en1, &bits, DEFAULT_VERSION_MASK, &target).unwrap();
    assert_eq!(r.version, 0x20a00000);
    let job = Job::from_notify(1, &notify, 4, 4).unwrap();
    let full = Submit { version_bits: Some("20a00000"), ..padded };
    assert_eq!(share::check(&job, &en1, &full, DEFAULT_VERSION_MASK, &target).unwrap().hash, r.hash);
    // Bits outside the negotiated mask are refused.
    let outside = Submit { version_bits: Some("00000001"), ..padded };
    assert_eq!(share::check(&job, &en1, &outside, DEFAULT_VERSION_MASK, &target), Err(Reject::VersionOutsideMask));
}

#[test]
fn malformed_submits_get_precise_reasons() {
    let job = Job::from_notify(1, &slush_notify("20000000"), 4, 4).unwrap();
    let en1 = hex::decode("08000002").unwrap();
    let t = Difficulty::ZERO.to_target();
    let ok = Submit { job_id: "1", extranonce2: "00000000", ntime: "504e86b9", nonce: "4df02400", version_bits: None };
    let cases: Vec<(Submit, Reject)> = vec![
        (Submit { extranonce2: "000000", ..ok }, Reject::BadExtranonce2Length { expected: 4, got: 3 }),
        (Submit { extranonce2: "0000000000", ..ok }, Reject::BadExtranonce2Length { expected: 4, got: 5 }),
        // NerdMiner#763: a space-padded extranonce2
        (Submit { extranonce2: "   00001", ..ok }, Reject::BadHex("extranonce2")),
        (Submit { ntime: "zz", ..ok }, Reject::BadHex("ntime")),
        (Submit { nonce: "", ..ok }, Reject::BadHex("nonce")),
        (Submit { nonce: "123456789", ..ok }, Reject::BadHex("nonce")),
        (Submit { ntime: "504e86b8", ..ok }, Reject::NtimeOutOfRange),
        (Submit { ntime: "504ea212", ..ok }, Reject::NtimeOutOfRange),
        (Submit { version_bits: Some("xyz"), ..ok }, Reject::BadHex("version bits")),
    ];
    for (sub, want) in cases {
        assert_eq!(share::check(&job, &en1, &sub, DEFAULT_VERSION_MASK, &t), Err(want), "{sub:?}");
    }
    // ntime may roll forward within the window.
    let rolled = Submit { ntime: "504ea211", ..ok }; // 0x504e86b9 + 7000
    assert!(share::check(&job, &en1, &rolled, DEFAULT_VERSION_MASK, &t).is_ok());
    assert_eq!(Reject::Stale.code(), 21);
    assert_eq!(Reject::Duplicate.code(), 22);
    assert_eq!(Reject::LowDifficulty { difficulty: Difficulty::ZERO, hash: [0; 32] }.code(), 23);
    assert_eq!(Reject::NtimeOutOfRange.code(), 20);
}
