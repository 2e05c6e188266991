//! Stratum V2's Noise handshake, `Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256` (sv2-spec
//! section 4, "Protocol Security"), both roles, and the transport cipher it hands out.
//!
//! Wire-compatible with SRI's `noise_sv2` 2.0 (the interop tests below run one against the
//! other). We carry our own because `noise_sv2` keeps its session keys private, so its cipher
//! (RustCrypto's portable ChaCha20-Poly1305) cannot be swapped; the one here is `ring`'s, which
//! seals a frame's 6-byte header in ~1,150 instructions instead of ~1,840 and a 100-byte payload
//! in ~1,420 instead of ~3,230 (docs/performance.md).
//!
//! The handshake (initiator `->` responder):
//! - act 1, `-> e`: the initiator's ephemeral key, ElligatorSwift-encoded (64 bytes);
//! - act 2, `<- e, ee, s, es, SIGNATURE_NOISE_MESSAGE`: the responder's ephemeral key (64), its
//!   static key sealed (80) and its certificate sealed (90): 234 bytes. The certificate is the
//!   authority key's Schnorr signature over the static key and a validity window; the initiator
//!   checks it against the authority key it pinned.
//!
//! Then `HKDF(ck, "")` gives two keys: the first seals what the initiator sends, the second what
//! the responder sends. Each direction's nonce is 4 zero bytes and a 64-bit little-endian
//! counter; the counter's last value (2^64 - 1) is never used.
//!
//! Secrets (ephemeral and static keys, chaining key, handshake hash, session keys) are wiped when
//! dropped or used up, as `noise_sv2` wipes its own; the copies `ring` makes for a message (its
//! key object, HMAC states) live on the stack for that call and are not wiped by `ring`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::secp256k1::ellswift::{ElligatorSwift, ElligatorSwiftParty};
use bitcoin::secp256k1::{schnorr, All, Keypair, Message, Parity, PublicKey, Secp256k1, SecretKey, XOnlyPublicKey};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use ring::hmac;
use zeroize::Zeroize;

use crate::hex;

/// The AEAD tag after each sealed message.
pub const MAC_LEN: usize = 16;
/// An ElligatorSwift-encoded public key.
const ELLSWIFT_LEN: usize = 64;
/// The certificate in clear: version (2), valid_from (4), not_valid_after (4), signature (64).
const CERT_LEN: usize = 74;
/// Act 1: the initiator's ephemeral key.
pub const ACT_1_LEN: usize = ELLSWIFT_LEN;
/// Act 2: ephemeral key, sealed static key, sealed certificate.
pub const ACT_2_LEN: usize = ELLSWIFT_LEN + (ELLSWIFT_LEN + MAC_LEN) + (CERT_LEN + MAC_LEN);
/// The only certificate format there is.
pub const CERTIFICATE_VERSION: u16 = 0;
const PROTOCOL_NAME: &[u8] = b"Noise_NX_Secp256k1+EllSwift_ChaChaPoly_SHA256";
/// Clock drift allowed either side of a certificate's window (as `noise_sv2`).
const CLOCK_LEEWAY: u32 = 10;
/// Draws of 32 random bytes before giving up on a valid secret key (each fails with
/// probability ~2^-128).
const KEY_DRAWS: usize = 8;

/// Why a handshake, or a message after it, failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoiseError {
    #[error("{0} failed authentication (altered in transit, or not from the peer of this handshake)")]
    Tampered(&'static str),
    #[error("message failed authentication (altered, cut or out of order)")]
    Open,
    #[error("nonce counter used up (2^64 - 1 messages one way): the connection must be closed")]
    NonceExhausted,
    #[error("a sealed message of {0} bytes is shorter than its {MAC_LEN}-byte tag")]
    Short(usize),
    #[error("message of {0} bytes could not be sealed")]
    Seal(usize),
    #[error("the pool's certificate has version {0}; only version {CERTIFICATE_VERSION} is known")]
    CertificateVersion(u16),
    #[error("the pool's certificate is valid from {valid_from} to {not_valid_after} (unix time), and now is {now} here: expired, not yet valid, or a clock is wrong")]
    CertificateWindow { valid_from: u32, not_valid_after: u32, now: u32 },
    #[error("the pool's certificate is not signed by the expected authority key")]
    CertificateSignature,
    #[error("authority key: {0}")]
    AuthorityKey(&'static str),
    #[error("the system's random source failed")]
    Random,
}

/// A source of random bytes (the system's; tests give fixed ones).
type Fill<'a> = &'a mut dyn FnMut(&mut [u8]) -> Result<(), NoiseError>;

fn system_random(buf: &mut [u8]) -> Result<(), NoiseError> {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new().fill(buf).map_err(|_| NoiseError::Random)
}

/// Unix time in seconds, as the certificate's u32 fields count it.
fn unix_now() -> u32 {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

fn sha256_of(parts: &[&[u8]]) -> [u8; 32] {
    let mut e = sha256::Hash::engine();
    for p in parts {
        e.input(p);
    }
    sha256::Hash::from_engine(e).to_byte_array()
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8; 32], data: &[&[u8]]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(&hmac::Key::new(hmac::HMAC_SHA256, key));
    for d in data {
        ctx.update(d);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// HKDF (RFC 5869) with an empty `info`, two outputs: the spec's `HKDF(ck, ikm)`.
fn hkdf_2(chaining_key: &[u8; 32], ikm: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut prk = hmac_sha256(chaining_key, &[ikm]);
    let out_1 = hmac_sha256(&prk, &[&[1]]);
    let out_2 = hmac_sha256(&prk, &[&out_1, &[2]]);
    prk.zeroize();
    (out_1, out_2)
}

/// A key pair whose public key has an even y (as `noise_sv2` makes them: the x-only key the
/// certificate signs is then the key itself).
fn even_keypair(secp: &Secp256k1<All>, fill: Fill) -> Result<Keypair, NoiseError> {
    let mut bytes = [0u8; 32];
    for _ in 0..KEY_DRAWS {
        fill(&mut bytes)?;
        if let Ok(mut sk) = SecretKey::from_slice(&bytes) {
            bytes.zeroize();
            if sk.public_key(secp).x_only_public_key().1 == Parity::Odd {
                sk = sk.negate();
            }
            let kp = Keypair::from_secret_key(secp, &sk);
            sk.non_secure_erase();
            return Ok(kp);
        }
    }
    bytes.zeroize();
    Err(NoiseError::Random)
}

/// The context blinded with fresh randomness (side channels of signing and ECDH). Drawn after
/// the keys, so that the keys are the first random bytes drawn, as `noise_sv2` draws them.
fn blinded(mut secp: Secp256k1<All>, fill: Fill) -> Result<Secp256k1<All>, NoiseError> {
    let mut seed = [0u8; 32];
    fill(&mut seed)?;
    secp.seeded_randomize(&seed);
    seed.zeroize();
    Ok(secp)
}

/// One direction's ChaCha20-Poly1305 key and nonce counter.
///
/// The key is kept as its 32 bytes and handed to `ring` for each message: a `ring` key object
/// is ~550 bytes (an enum sized for AES-GCM's tables), which would add ~1.1 KB to every idle
/// connection; making one for ChaCha20 is a copy of the key. Wiped when dropped.
struct CipherState {
    key: [u8; 32],
    n: u64,
}

impl CipherState {
    fn new(mut k: [u8; 32]) -> CipherState {
        let state = CipherState { key: k, n: 0 };
        k.zeroize();
        state
    }

    fn aead(&self) -> LessSafeKey {
        // `UnboundKey::new` fails only for a key of the wrong length; this one has 32 bytes.
        LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("ChaCha20-Poly1305 takes 32-byte keys"))
    }

    /// The nonce for this message; the last counter value is never used.
    fn nonce(&self) -> Result<Nonce, NoiseError> {
        if self.n == u64::MAX {
            return Err(NoiseError::NonceExhausted);
        }
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.n.to_le_bytes());
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Seals `sealed[..len - MAC_LEN]` in place and writes its tag into the last `MAC_LEN` bytes.
    fn seal(&mut self, ad: &[u8], sealed: &mut [u8]) -> Result<(), NoiseError> {
        let len = sealed.len().checked_sub(MAC_LEN).ok_or(NoiseError::Short(sealed.len()))?;
        let nonce = self.nonce()?;
        let (text, tag_room) = sealed.split_at_mut(len);
        let tag =
            self.aead().seal_in_place_separate_tag(nonce, Aad::from(ad), text).map_err(|_| NoiseError::Seal(len))?;
        tag_room.copy_from_slice(tag.as_ref());
        self.n += 1;
        Ok(())
    }

    /// Opens `sealed` in place: the plaintext is then its first `len - MAC_LEN` bytes. A message
    /// that fails does not move the counter (the spec's `DecryptWithAd`).
    fn open(&mut self, ad: &[u8], sealed: &mut [u8]) -> Result<(), NoiseError> {
        if sealed.len() < MAC_LEN {
            return Err(NoiseError::Short(sealed.len()));
        }
        let nonce = self.nonce()?;
        self.aead().open_in_place(nonce, Aad::from(ad), sealed).map_err(|_| NoiseError::Open)?;
        self.n += 1;
        Ok(())
    }
}

impl Drop for CipherState {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

/// The sending half of a session: seals each message in place.
pub struct Encryptor(CipherState);

/// The receiving half of a session: opens each message in place.
pub struct Decryptor(CipherState);

impl std::fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Encryptor(n={})", self.0.n)
    }
}

impl std::fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Decryptor(n={})", self.0.n)
    }
}

impl Encryptor {
    /// Seals the plaintext in `sealed[..sealed.len() - MAC_LEN]` in place, its tag written into
    /// the last [`MAC_LEN`] bytes.
    pub fn seal_in_place(&mut self, sealed: &mut [u8]) -> Result<(), NoiseError> {
        self.0.seal(&[], sealed)
    }
}

impl Decryptor {
    /// Opens a sealed message (ciphertext and tag) in place: its plaintext is then
    /// `sealed[..sealed.len() - MAC_LEN]`.
    pub fn open_in_place(&mut self, sealed: &mut [u8]) -> Result<(), NoiseError> {
        self.0.open(&[], sealed)
    }
}

/// The handshake's running state: `h`, `ck` and the handshake key `k` (sv2-spec 4.4).
struct SymmetricState {
    h: [u8; 32],
    ck: [u8; 32],
    k: Option<CipherState>,
}

impl SymmetricState {
    fn new() -> SymmetricState {
        let ck = sha256_of(&[PROTOCOL_NAME]);
        SymmetricState { h: sha256_of(&[&ck]), ck, k: None }
    }

    fn mix_hash(&mut self, data: &[u8]) {
        self.h = sha256_of(&[&self.h, data]);
    }

    fn mix_key(&mut self, ikm: &[u8]) {
        let (mut ck, mut temp_k) = hkdf_2(&self.ck, ikm);
        self.ck = ck;
        self.k = Some(CipherState::new(temp_k));
        ck.zeroize();
        temp_k.zeroize();
    }

    /// Seals `buf[..len - MAC_LEN]` with `h` as associated data (keyed state; every sealed
    /// part of act 2 is), then mixes the ciphertext into `h`.
    fn encrypt_and_hash(&mut self, buf: &mut [u8]) -> Result<(), NoiseError> {
        let k = self.k.as_mut().ok_or(NoiseError::Seal(buf.len()))?;
        k.seal(&self.h, buf)?;
        self.mix_hash(buf);
        Ok(())
    }

    /// Opens `buf` with `h` as associated data and mixes the ciphertext into `h`; `what` names
    /// the part in the error.
    fn decrypt_and_hash(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), NoiseError> {
        let next_h = sha256_of(&[&self.h, buf]);
        let k = self.k.as_mut().ok_or(NoiseError::Tampered(what))?;
        k.open(&self.h, buf).map_err(|_| NoiseError::Tampered(what))?;
        self.h = next_h;
        Ok(())
    }

    /// The two transport ciphers: (initiator to responder, responder to initiator).
    fn split(&self) -> (CipherState, CipherState) {
        let (mut k1, mut k2) = hkdf_2(&self.ck, &[]);
        let halves = (CipherState::new(k1), CipherState::new(k2));
        k1.zeroize();
        k2.zeroize();
        halves
    }
}

impl Drop for SymmetricState {
    fn drop(&mut self) {
        self.h.zeroize();
        self.ck.zeroize();
    }
}

/// The BIP324 ElligatorSwift ECDH (the spec's `ECDH(k, rk)`), its output to be wiped by the
/// caller once mixed in.
fn ecdh(ours: ElligatorSwift, theirs: ElligatorSwift, secret: SecretKey, initiator: bool) -> [u8; 32] {
    let (a, b, party) =
        if initiator { (ours, theirs, ElligatorSwiftParty::A) } else { (theirs, ours, ElligatorSwiftParty::B) };
    ElligatorSwift::shared_secret(a, b, secret, party, None).to_secret_bytes()
}

/// The pool's side: answers act 1 with act 2, certifying a static key made for this connection
/// with the authority key.
pub struct Responder {
    secp: Secp256k1<All>,
    sym: SymmetricState,
    e: Keypair,
    s: Keypair,
    authority: Keypair,
    /// Seconds the certificate is valid for, from the handshake on.
    cert_validity: u32,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

impl Responder {
    /// A responder for one connection, with fresh ephemeral and static keys, certifying them
    /// with the authority key pair (`public` is checked against `secret`) for `cert_validity`.
    pub fn from_authority_kp(
        public: &[u8; 32],
        secret: &[u8; 32],
        cert_validity: Duration,
    ) -> Result<Responder, NoiseError> {
        Responder::with_random(public, secret, cert_validity, &mut system_random)
    }

    /// A responder certifying with `authority`, checked once by the listener that holds it.
    pub fn new(authority: &Authority, cert_validity: Duration) -> Result<Responder, NoiseError> {
        Responder::with_authority(authority, cert_validity, &mut system_random)
    }

    fn with_random(
        public: &[u8; 32],
        secret: &[u8; 32],
        cert_validity: Duration,
        fill: Fill,
    ) -> Result<Responder, NoiseError> {
        Responder::with_authority(&Authority::new(public, secret)?, cert_validity, fill)
    }

    fn with_authority(authority: &Authority, cert_validity: Duration, fill: Fill) -> Result<Responder, NoiseError> {
        let secp = Secp256k1::new();
        let e = even_keypair(&secp, fill)?;
        let s = even_keypair(&secp, fill)?;
        let secp = blinded(secp, fill)?;
        let cert_validity = u32::try_from(cert_validity.as_secs()).unwrap_or(u32::MAX);
        Ok(Responder { secp, sym: SymmetricState::new(), e, s, authority: authority.0, cert_validity })
    }

    /// Reads act 1 and answers it: act 2 to send, and the session's halves.
    pub fn step_1(self, act_1: &[u8; ACT_1_LEN]) -> Result<([u8; ACT_2_LEN], Encryptor, Decryptor), NoiseError> {
        self.step_1_with(act_1, unix_now(), &mut system_random)
    }

    fn step_1_with(
        mut self,
        act_1: &[u8; ACT_1_LEN],
        now: u32,
        fill: Fill,
    ) -> Result<([u8; ACT_2_LEN], Encryptor, Decryptor), NoiseError> {
        // -> e
        self.sym.mix_hash(act_1);
        self.sym.mix_hash(&[]);
        let re = ElligatorSwift::from_array(*act_1);
        // <- e, ee
        let mut out = [0u8; ACT_2_LEN];
        let e = ElligatorSwift::from_pubkey(self.e.public_key());
        out[..ELLSWIFT_LEN].copy_from_slice(&e.to_array());
        self.sym.mix_hash(&out[..ELLSWIFT_LEN]);
        let mut shared = ecdh(e, re, self.e.secret_key(), false);
        self.sym.mix_key(&shared);
        shared.zeroize();
        // s, es
        let s = ElligatorSwift::from_pubkey(self.s.public_key());
        let (_, rest) = out.split_at_mut(ELLSWIFT_LEN);
        let (sealed_s, sealed_cert) = rest.split_at_mut(ELLSWIFT_LEN + MAC_LEN);
        sealed_s[..ELLSWIFT_LEN].copy_from_slice(&s.to_array());
        self.sym.encrypt_and_hash(sealed_s)?;
        let mut shared = ecdh(s, re, self.s.secret_key(), false);
        self.sym.mix_key(&shared);
        shared.zeroize();
        // SIGNATURE_NOISE_MESSAGE
        let mut aux = [0u8; 32];
        fill(&mut aux)?;
        let static_key = self.s.x_only_public_key().0;
        let not_valid_after = now.saturating_add(self.cert_validity);
        let cert = Certificate::sign(&self.secp, &self.authority, &static_key, now, not_valid_after, &aux);
        aux.zeroize();
        sealed_cert[..CERT_LEN].copy_from_slice(&cert.to_bytes());
        self.sym.encrypt_and_hash(sealed_cert)?;
        let (c1, c2) = self.sym.split();
        Ok((out, Encryptor(c2), Decryptor(c1)))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.e.non_secure_erase();
        self.s.non_secure_erase();
        self.authority.non_secure_erase();
    }
}

/// The client's side: sends act 1, then checks act 2's certificate against the pinned authority
/// key.
pub struct Initiator {
    secp: Secp256k1<All>,
    sym: SymmetricState,
    e: Keypair,
    authority: XOnlyPublicKey,
}

/// An initiator that has sent act 1 and waits for act 2.
pub struct InitiatorSent(Initiator);

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Initiator")
    }
}

impl Initiator {
    /// An initiator with a fresh ephemeral key that accepts only a pool certified by `authority`
    /// (x-only public key).
    pub fn from_raw_k(authority: [u8; 32]) -> Result<Initiator, NoiseError> {
        Initiator::with_random(authority, &mut system_random)
    }

    fn with_random(authority: [u8; 32], fill: Fill) -> Result<Initiator, NoiseError> {
        let authority = XOnlyPublicKey::from_slice(&authority)
            .map_err(|_| NoiseError::AuthorityKey("the pinned key is not a valid x-only public key"))?;
        let secp = Secp256k1::new();
        let e = even_keypair(&secp, fill)?;
        let secp = blinded(secp, fill)?;
        Ok(Initiator { secp, sym: SymmetricState::new(), e, authority })
    }

    /// Act 1, `-> e`.
    pub fn step_0(mut self) -> ([u8; ACT_1_LEN], InitiatorSent) {
        let e = ElligatorSwift::from_pubkey(self.e.public_key()).to_array();
        self.sym.mix_hash(&e);
        self.sym.mix_hash(&[]);
        (e, InitiatorSent(self))
    }
}

impl InitiatorSent {
    /// Reads act 2 and checks the certificate: the session's halves.
    pub fn step_2(self, act_2: &[u8; ACT_2_LEN]) -> Result<(Encryptor, Decryptor), NoiseError> {
        self.step_2_with_now(act_2, unix_now())
    }

    fn step_2_with_now(self, act_2: &[u8; ACT_2_LEN], now: u32) -> Result<(Encryptor, Decryptor), NoiseError> {
        let mut i = self.0;
        let ours = ElligatorSwift::from_pubkey(i.e.public_key());
        let mut msg = *act_2;
        let (re, rest) = msg.split_at_mut(ELLSWIFT_LEN);
        let (sealed_s, sealed_cert) = rest.split_at_mut(ELLSWIFT_LEN + MAC_LEN);
        // <- e, ee
        i.sym.mix_hash(re);
        let mut re_bytes = [0u8; ELLSWIFT_LEN];
        re_bytes.copy_from_slice(re);
        let mut shared = ecdh(ours, ElligatorSwift::from_array(re_bytes), i.e.secret_key(), true);
        i.sym.mix_key(&shared);
        shared.zeroize();
        // s, es
        i.sym.decrypt_and_hash(sealed_s, "the pool's static key")?;
        let mut rs_bytes = [0u8; ELLSWIFT_LEN];
        rs_bytes.copy_from_slice(&sealed_s[..ELLSWIFT_LEN]);
        let rs = ElligatorSwift::from_array(rs_bytes);
        let mut shared = ecdh(ours, rs, i.e.secret_key(), true);
        i.sym.mix_key(&shared);
        shared.zeroize();
        // SIGNATURE_NOISE_MESSAGE
        i.sym.decrypt_and_hash(sealed_cert, "the pool's certificate")?;
        let mut cert_bytes = [0u8; CERT_LEN];
        cert_bytes.copy_from_slice(&sealed_cert[..CERT_LEN]);
        let cert = Certificate::from_bytes(&cert_bytes);
        let static_key = PublicKey::from_ellswift(rs).x_only_public_key().0;
        cert.verify(&i.secp, &static_key, &i.authority, now)?;
        let (c1, c2) = i.sym.split();
        Ok((Encryptor(c1), Decryptor(c2)))
    }
}

impl Drop for Initiator {
    fn drop(&mut self) {
        self.e.non_secure_erase();
    }
}

mod certificate;
pub use certificate::Authority;
use certificate::Certificate;

#[cfg(test)]
mod tests;
