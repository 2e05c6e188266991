//! One Noise seal of N bytes: ours (`sv2::noise`, ring's ChaCha20-Poly1305) beside SRI's
//! `noise_sv2` (RustCrypto's, with the portable Poly1305 of `.cargo/config.toml`), both ends of
//! one handshake between SRI's initiator and our responder.
//!
//! ```sh
//! cargo bench --locked --bench noise_seal          # ns per seal, 6 / 100 / 1,000 bytes, both
//! # instructions per seal, reproducible on a shared machine: the slope between two counts
//! SEAL_WITH=ours SEAL_LEN=6 SEAL_N=1000 valgrind --tool=callgrind target/release/deps/noise_seal-HASH
//! SEAL_WITH=ours SEAL_LEN=6 SEAL_N=3000 valgrind --tool=callgrind target/release/deps/noise_seal-HASH
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use ckpool::sv2::keys::AuthorityKey;
use ckpool::sv2::noise::{Encryptor, Responder, MAC_LEN};

/// SRI's sending half and ours, from one handshake.
fn pair() -> (noise_sv2::NoiseEngine, Encryptor) {
    let key = AuthorityKey::from_secret([0x11; 32]).expect("a valid secret key");
    let mut sri = noise_sv2::Initiator::from_raw_k(*key.public()).expect("a valid public key");
    let act_1 = sri.step_0().expect("act 1");
    let responder = Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(3600))
        .expect("the key pair matches");
    let (act_2, ours, _) = responder.step_1(&act_1).expect("act 2");
    (sri.step_2(act_2).expect("SRI's initiator accepts our act 2"), ours)
}

/// `n` seals of `len` bytes with SRI's cipher or ours.
fn seal(with_sri: bool, len: usize, n: usize) {
    let (mut sri, mut ours) = pair();
    let mut buf = vec![0u8; len + MAC_LEN];
    for _ in 0..n {
        if with_sri {
            buf.truncate(len);
            sri.encrypt(&mut buf).expect("seal");
        } else {
            ours.seal_in_place(&mut buf).expect("seal");
        }
        black_box(&mut buf);
    }
}

fn main() {
    let var = |k: &str| std::env::var(k).ok();
    if let Some(n) = var("SEAL_N") {
        // For callgrind: one run of n seals, nothing printed.
        let n = n.parse().expect("SEAL_N is a count");
        let len = var("SEAL_LEN").map(|l| l.parse().expect("SEAL_LEN is a size")).unwrap_or(6);
        seal(var("SEAL_WITH").as_deref() == Some("sri"), len, n);
        return;
    }
    const N: usize = 200_000;
    for len in [6, 100, 1_000] {
        let mut line = format!("noise_seal: {len} bytes:");
        for (name, with_sri) in [("ours (ring)", false), ("noise_sv2", true)] {
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                seal(with_sri, len, N);
                best = best.min(t.elapsed().as_nanos() as f64 / N as f64);
            }
            line.push_str(&format!(" {name} {best:.0} ns per seal (best of 3 × {N});"));
        }
        println!("{line}");
    }
}
