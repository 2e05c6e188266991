//! Our handshake and cipher against known values and against SRI's `noise_sv2` (the reference
//! the pool's peers run), both roles.

use super::*;
use crate::sv2::keys::AuthorityKey;
use proptest::prelude::*;

/// A deterministic random source for both implementations: a SHA-256 counter stream, the same
/// bytes whatever sizes they are drawn in.
#[derive(Clone)]
struct TestRng {
    seed: u64,
    pos: u64,
}

impl TestRng {
    fn new(seed: u64) -> TestRng {
        TestRng { seed, pos: 0 }
    }

    fn bytes(&mut self, out: &mut [u8]) {
        for b in out {
            let block = sha256_of(&[&self.seed.to_le_bytes(), &(self.pos / 32).to_le_bytes()]);
            *b = block[(self.pos % 32) as usize];
            self.pos += 1;
        }
    }

    /// As our side's random source.
    fn fill(&mut self) -> impl FnMut(&mut [u8]) -> Result<(), NoiseError> + '_ {
        |b| {
            self.bytes(b);
            Ok(())
        }
    }
}

impl rand_core::RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.bytes(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for TestRng {}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

const NOW: u32 = 1_800_000_000;

fn authority() -> AuthorityKey {
    AuthorityKey::from_secret([0x11; 32]).unwrap()
}

/// Our responder ready for act 1.
fn our_responder(key: &AuthorityKey) -> Responder {
    Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(3600)).unwrap()
}

/// A message sealed by noise_sv2's engine.
fn sri_seal(engine: &mut noise_sv2::NoiseEngine, msg: &[u8]) -> Vec<u8> {
    let mut v = msg.to_vec();
    engine.encrypt(&mut v).unwrap();
    v
}

fn our_seal(enc: &mut Encryptor, msg: &[u8]) -> Vec<u8> {
    let mut v = msg.to_vec();
    v.resize(msg.len() + MAC_LEN, 0);
    enc.seal_in_place(&mut v).unwrap();
    v
}

fn our_open(dec: &mut Decryptor, sealed: &[u8]) -> Result<Vec<u8>, NoiseError> {
    let mut v = sealed.to_vec();
    dec.open_in_place(&mut v)?;
    v.truncate(sealed.len() - MAC_LEN);
    Ok(v)
}

fn sri_open(engine: &mut noise_sv2::NoiseEngine, sealed: &[u8]) -> Vec<u8> {
    let mut v = sealed.to_vec();
    engine.decrypt(&mut v).unwrap();
    v
}

/// noise_sv2's initiator (pinning `key`) against our responder: (SRI's engine, ours).
fn sri_initiator_with_ours(key: &AuthorityKey) -> (noise_sv2::NoiseEngine, Encryptor, Decryptor) {
    let mut sri = noise_sv2::Initiator::from_raw_k(*key.public()).unwrap();
    let act_1 = sri.step_0().unwrap();
    let (act_2, enc, dec) = our_responder(key).step_1(&act_1).unwrap();
    let engine = sri.step_2(act_2).unwrap();
    (engine, enc, dec)
}

/// noise_sv2's responder against our initiator pinning `pinned`, the certificate made at
/// `made` and checked at `now`.
fn ours_with_sri_responder(
    key: &AuthorityKey,
    pinned: &[u8; 32],
    made: u32,
    now: u32,
) -> (Result<(Encryptor, Decryptor), NoiseError>, noise_sv2::NoiseEngine) {
    let (act_1, sent) = Initiator::from_raw_k(*pinned).unwrap().step_0();
    let mut sri =
        noise_sv2::Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(3600)).unwrap();
    let (act_2, engine) = sri.step_1_with_now_rng(act_1, made, &mut TestRng::new(u64::from(made))).unwrap();
    (sent.step_2_with_now(&act_2, now), engine)
}

#[test]
fn the_protocol_name_hash_is_the_specs() {
    assert_eq!(sha256_of(&[PROTOCOL_NAME]), noise_sv2::NOISE_HASHED_PROTOCOL_NAME_CHACHA);
    assert_eq!(ACT_1_LEN, noise_sv2::ELLSWIFT_ENCODING_SIZE);
    assert_eq!(ACT_2_LEN, noise_sv2::INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE);
    assert_eq!(MAC_LEN, noise_sv2::AEAD_MAC_LEN);
}

/// RFC 4231 test case 2: a key shorter than the block is zero-padded, as a 32-byte key with the
/// same leading bytes.
#[test]
fn hmac_matches_rfc_4231() {
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(b"Jefe");
    assert_eq!(
        hmac_sha256(&key, &[b"what do ya ", b"want for nothing?"]).to_vec(),
        hex("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    );
}

/// RFC 5869 test case 3 (SHA-256, empty salt and info: an empty salt is 32 zero bytes to HMAC):
/// the two outputs are the first 64 bytes of its OKM stream, whose first 42 the RFC gives.
#[test]
fn hkdf_matches_rfc_5869_and_rings_hkdf() {
    let (o1, o2) = hkdf_2(&[0; 32], &[0x0b; 22]);
    let okm = [o1, o2].concat();
    assert_eq!(
        okm[..42].to_vec(),
        hex("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8")
    );
    // And ring's own HKDF, salt = ck, info empty, 64 bytes.
    struct Len64;
    impl ring::hkdf::KeyType for Len64 {
        fn len(&self) -> usize {
            64
        }
    }
    let ck = sha256_of(&[b"some chaining key"]);
    let ikm = [7u8; 32];
    let mut expect = [0u8; 64];
    ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, &ck)
        .extract(&ikm)
        .expand(&[], Len64)
        .unwrap()
        .fill(&mut expect)
        .unwrap();
    let (o1, o2) = hkdf_2(&ck, &ikm);
    assert_eq!([o1, o2].concat(), expect.to_vec());
}

/// With the same random bytes, our acts are noise_sv2's byte for byte, and so are the session
/// keys each side derives (the same message seals to the same bytes, both directions).
#[test]
fn the_handshake_is_noise_sv2s_byte_for_byte_given_the_same_randomness() {
    let key = authority();
    // Act 1, both initiators from the same stream.
    let mut sri_i = noise_sv2::Initiator::from_raw_k_with_rng(*key.public(), &mut TestRng::new(1)).unwrap();
    let sri_act_1 = sri_i.step_0().unwrap();
    let mut r = TestRng::new(1);
    let (act_1, ours_i) = Initiator::with_random(*key.public(), &mut r.fill()).unwrap().step_0();
    assert_eq!(act_1, sri_act_1);

    // Act 2, both responders from the same streams (keys; then the signature's aux bytes).
    let mut sri_r = noise_sv2::Responder::from_authority_kp_with_rng(
        key.public(),
        key.secret(),
        Duration::from_secs(3600),
        &mut TestRng::new(2),
    )
    .unwrap();
    let (sri_act_2, mut sri_r_engine) = sri_r.step_1_with_now_rng(act_1, NOW, &mut TestRng::new(3)).unwrap();
    let mut r2 = TestRng::new(2);
    let ours_r = Responder::with_random(key.public(), key.secret(), Duration::from_secs(3600), &mut r2.fill()).unwrap();
    let mut r3 = TestRng::new(3);
    let (act_2, mut r_enc, mut r_dec) = ours_r.step_1_with(&act_1, NOW, &mut r3.fill()).unwrap();
    assert_eq!(act_2, sri_act_2);

    let mut sri_i_engine = sri_i.step_2_with_now(act_2, NOW).unwrap();
    let (mut i_enc, mut i_dec) = ours_i.step_2_with_now(&act_2, NOW).unwrap();
    for msg in [&b""[..], b"\x00\x00\x1b\x03\x00\x00", &[0x5a; 100]] {
        // Initiator to responder: same key, same nonce.
        let sealed = our_seal(&mut i_enc, msg);
        assert_eq!(sealed, sri_seal(&mut sri_i_engine, msg));
        assert_eq!(our_open(&mut r_dec, &sealed).unwrap(), msg);
        assert_eq!(sri_open(&mut sri_r_engine, &sealed), msg);
        // Responder to initiator.
        let sealed = our_seal(&mut r_enc, msg);
        assert_eq!(sealed, sri_seal(&mut sri_r_engine, msg));
        assert_eq!(our_open(&mut i_dec, &sealed).unwrap(), msg);
        assert_eq!(sri_open(&mut sri_i_engine, &sealed), msg);
    }
}

#[test]
fn our_responder_completes_with_noise_sv2s_initiator_and_messages_cross_both_ways() {
    let key = AuthorityKey::generate().unwrap();
    let (mut sri, mut enc, mut dec) = sri_initiator_with_ours(&key);
    for n in [0usize, 1, 6, 100, 4000] {
        let msg: Vec<u8> = (0..n).map(|i| i as u8).collect();
        assert_eq!(our_open(&mut dec, &sri_seal(&mut sri, &msg)).unwrap(), msg);
        assert_eq!(sri_open(&mut sri, &our_seal(&mut enc, &msg)), msg);
    }
}

#[test]
fn our_initiator_completes_with_noise_sv2s_responder_and_messages_cross_both_ways() {
    let key = AuthorityKey::generate().unwrap();
    let (ours, mut sri) = ours_with_sri_responder(&key, key.public(), unix_now(), unix_now());
    let (mut enc, mut dec) = ours.unwrap();
    for n in [0usize, 1, 6, 100, 4000] {
        let msg: Vec<u8> = (0..n).map(|i| (i * 3) as u8).collect();
        assert_eq!(our_open(&mut dec, &sri_seal(&mut sri, &msg)).unwrap(), msg);
        assert_eq!(sri_open(&mut sri, &our_seal(&mut enc, &msg)), msg);
    }
}

#[test]
fn our_initiator_refuses_a_pool_certified_by_another_key() {
    let key = AuthorityKey::generate().unwrap();
    let other = AuthorityKey::generate().unwrap();
    let (ours, _) = ours_with_sri_responder(&key, other.public(), NOW, NOW);
    let e = ours.expect_err("another authority key must be refused");
    assert_eq!(e, NoiseError::CertificateSignature);
    assert!(e.to_string().contains("not signed by the expected authority key"), "{e}");
    // Ours on both sides too.
    let (act_1, sent) = Initiator::from_raw_k(*other.public()).unwrap().step_0();
    let (act_2, _, _) = our_responder(&key).step_1(&act_1).unwrap();
    assert_eq!(sent.step_2(&act_2).err(), Some(NoiseError::CertificateSignature));
}

/// The window is [valid_from, not_valid_after] with 10 s of clock drift either side; outside
/// it the certificate is refused, whoever made it.
#[test]
fn a_certificate_outside_its_window_is_refused() {
    let key = authority();
    let window = |now: u32| NoiseError::CertificateWindow { valid_from: NOW, not_valid_after: NOW + 3600, now };
    for (now, ok) in [(NOW - 10, true), (NOW + 3610, true), (NOW - 11, false), (NOW + 3611, false), (0, false)] {
        let (sri_made, _) = ours_with_sri_responder(&key, key.public(), NOW, now);
        let (act_1, sent) = Initiator::from_raw_k(*key.public()).unwrap().step_0();
        let (act_2, _, _) = our_responder(&key).step_1_with(&act_1, NOW, &mut system_random).unwrap();
        let ours_made = sent.step_2_with_now(&act_2, now);
        for r in [sri_made, ours_made] {
            match (r, ok) {
                (Ok(_), true) => {}
                (Err(e), false) => {
                    assert_eq!(e, window(now));
                    assert!(e.to_string().contains("expired, not yet valid"), "{e}");
                }
                (r, _) => panic!("at {now}: {:?}", r.err()),
            }
        }
    }
    // A validity the u32 clock cannot hold ends at its last second instead of wrapping.
    let (act_1, sent) = Initiator::from_raw_k(*key.public()).unwrap().step_0();
    let r = Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(u64::MAX)).unwrap();
    let (act_2, _, _) = r.step_1_with(&act_1, NOW, &mut system_random).unwrap();
    assert!(sent.step_2_with_now(&act_2, u32::MAX).is_ok());
}

/// Any bit of act 2 changed is refused with an error naming the part, never a panic; act 1
/// changed gives the initiator an act 2 it refuses.
#[test]
fn a_tampered_handshake_is_refused() {
    let key = authority();
    for i in (0..ACT_2_LEN).step_by(7).chain([ACT_2_LEN - 1]) {
        let (act_1, sent) = Initiator::from_raw_k(*key.public()).unwrap().step_0();
        let (mut act_2, _, _) = our_responder(&key).step_1_with(&act_1, NOW, &mut system_random).unwrap();
        act_2[i] ^= 0x20;
        let e = sent.step_2_with_now(&act_2, NOW).err().unwrap_or_else(|| panic!("byte {i} changed was accepted"));
        // A changed ephemeral key changes the keys that open the static key: refused there.
        let part = if i < 2 * ELLSWIFT_LEN + MAC_LEN { "the pool's static key" } else { "the pool's certificate" };
        assert_eq!(e, NoiseError::Tampered(part), "byte {i}");
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }
    // Act 1 changed on the way: our responder cannot tell (it is clear text), SRI's initiator
    // then refuses what comes back.
    let mut sri = noise_sv2::Initiator::from_raw_k(*key.public()).unwrap();
    let mut act_1 = sri.step_0().unwrap();
    act_1[5] ^= 1;
    let (act_2, _, _) = our_responder(&key).step_1(&act_1).unwrap();
    assert!(sri.step_2(act_2).is_err());
}

#[test]
fn a_tampered_or_cut_message_is_refused_and_the_next_good_one_opens() {
    let key = authority();
    let (mut sri, _, mut dec) = sri_initiator_with_ours(&key);
    let sealed = sri_seal(&mut sri, b"SubmitSharesStandard");
    for i in [0, 5, sealed.len() - 1] {
        let mut bad = sealed.clone();
        bad[i] ^= 1;
        assert_eq!(our_open(&mut dec, &bad), Err(NoiseError::Open));
    }
    assert_eq!(our_open(&mut dec, &sealed[..MAC_LEN]), Err(NoiseError::Open));
    assert_eq!(our_open(&mut dec, &sealed[..3]), Err(NoiseError::Short(3)));
    // Failures did not move the counter: the genuine message still opens.
    assert_eq!(our_open(&mut dec, &sealed).unwrap(), b"SubmitSharesStandard");
    // Replayed, it no longer does (the counter moved on).
    assert_eq!(our_open(&mut dec, &sealed), Err(NoiseError::Open));
}

/// The counter's last value is never used: sealing and opening stop there.
#[test]
fn the_nonce_counter_is_refused_at_its_end() {
    let key = authority();
    let (act_1, sent) = Initiator::from_raw_k(*key.public()).unwrap().step_0();
    let (act_2, _, mut dec) = our_responder(&key).step_1(&act_1).unwrap();
    let (mut enc, _) = sent.step_2(&act_2).unwrap();
    enc.0.n = u64::MAX - 1;
    dec.0.n = u64::MAX - 1;
    let sealed = our_seal(&mut enc, b"last");
    assert_eq!(our_open(&mut dec, &sealed).unwrap(), b"last");
    let mut buf = [0u8; 4 + MAC_LEN];
    assert_eq!(enc.seal_in_place(&mut buf), Err(NoiseError::NonceExhausted));
    assert_eq!(dec.open_in_place(&mut sealed.clone()), Err(NoiseError::NonceExhausted));
    assert_eq!(enc.seal_in_place(&mut [0u8; 3]), Err(NoiseError::Short(3)));
}

#[test]
fn a_mismatched_or_invalid_authority_key_is_refused() {
    let key = authority();
    let other = AuthorityKey::generate().unwrap();
    let e = Responder::from_authority_kp(other.public(), key.secret(), Duration::from_secs(60)).err();
    assert_eq!(e, Some(NoiseError::AuthorityKey("the public key is not the secret key's")));
    assert!(Responder::from_authority_kp(key.public(), &[0; 32], Duration::from_secs(60)).is_err());
    // Not an x coordinate (above the field's size).
    assert!(Initiator::from_raw_k([0xff; 32]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Messages sealed by noise_sv2's engine open with ours and the reverse, in any order and
    /// size, the counters of both moving in step.
    #[test]
    fn seal_and_open_round_trip_against_noise_sv2(
        msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..700)), 1..12)
    ) {
        let key = authority();
        let (mut sri, mut enc, mut dec) = sri_initiator_with_ours(&key);
        for (ours_first, msg) in msgs {
            if ours_first {
                prop_assert_eq!(sri_open(&mut sri, &our_seal(&mut enc, &msg)), msg.clone());
            } else {
                prop_assert_eq!(our_open(&mut dec, &sri_seal(&mut sri, &msg)).unwrap(), msg.clone());
            }
        }
    }
}
