//! The responder's certificate (SIGNATURE_NOISE_MESSAGE) and the authority key pair that signs
//! it.

use super::*;

/// SIGNATURE_NOISE_MESSAGE: the responder's certificate, signed by the authority key over
/// `SHA-256(version || valid_from || not_valid_after || static x-only key)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Certificate {
    pub(super) version: u16,
    pub(super) valid_from: u32,
    pub(super) not_valid_after: u32,
    pub(super) signature: [u8; 64],
}

impl Certificate {
    pub(super) fn signed_message(
        version: u16,
        valid_from: u32,
        not_valid_after: u32,
        static_key: &XOnlyPublicKey,
    ) -> Message {
        Message::from_digest(sha256_of(&[
            &version.to_le_bytes(),
            &valid_from.to_le_bytes(),
            &not_valid_after.to_le_bytes(),
            &static_key.serialize(),
        ]))
    }

    pub(super) fn sign(
        secp: &Secp256k1<All>,
        authority: &Keypair,
        static_key: &XOnlyPublicKey,
        valid_from: u32,
        not_valid_after: u32,
        aux: &[u8; 32],
    ) -> Certificate {
        let m = Certificate::signed_message(CERTIFICATE_VERSION, valid_from, not_valid_after, static_key);
        let signature = secp.sign_schnorr_with_aux_rand(&m, authority, aux).serialize();
        Certificate { version: CERTIFICATE_VERSION, valid_from, not_valid_after, signature }
    }

    pub(super) fn to_bytes(self) -> [u8; CERT_LEN] {
        let mut b = [0u8; CERT_LEN];
        b[..2].copy_from_slice(&self.version.to_le_bytes());
        b[2..6].copy_from_slice(&self.valid_from.to_le_bytes());
        b[6..10].copy_from_slice(&self.not_valid_after.to_le_bytes());
        b[10..].copy_from_slice(&self.signature);
        b
    }

    pub(super) fn from_bytes(b: &[u8; CERT_LEN]) -> Certificate {
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&b[10..]);
        Certificate {
            version: u16::from_le_bytes([b[0], b[1]]),
            valid_from: u32::from_le_bytes([b[2], b[3], b[4], b[5]]),
            not_valid_after: u32::from_le_bytes([b[6], b[7], b[8], b[9]]),
            signature,
        }
    }

    /// Accepted when of the known version, within its window (give or take [`CLOCK_LEEWAY`])
    /// at `now`, and signed by `authority` over `static_key`.
    pub(super) fn verify(
        &self,
        secp: &Secp256k1<All>,
        static_key: &XOnlyPublicKey,
        authority: &XOnlyPublicKey,
        now: u32,
    ) -> Result<(), NoiseError> {
        if self.version != CERTIFICATE_VERSION {
            return Err(NoiseError::CertificateVersion(self.version));
        }
        if self.valid_from.saturating_sub(CLOCK_LEEWAY) > now || self.not_valid_after.saturating_add(CLOCK_LEEWAY) < now
        {
            return Err(NoiseError::CertificateWindow {
                valid_from: self.valid_from,
                not_valid_after: self.not_valid_after,
                now,
            });
        }
        let m = Certificate::signed_message(self.version, self.valid_from, self.not_valid_after, static_key);
        let sig = schnorr::Signature::from_slice(&self.signature).map_err(|_| NoiseError::CertificateSignature)?;
        secp.verify_schnorr(&sig, &m, authority).map_err(|_| NoiseError::CertificateSignature)
    }
}

/// The pool's authority key pair, its public half checked against its secret once: a listener
/// builds it at start and hands it to the responder of every connection. Wiped when dropped.
pub struct Authority(pub(super) Keypair);

impl Authority {
    /// The key pair of `secret`, refused when `public` is not its x-only public key.
    pub fn new(public: &[u8; 32], secret: &[u8; 32]) -> Result<Authority, NoiseError> {
        let sk =
            SecretKey::from_slice(secret).map_err(|_| NoiseError::AuthorityKey("not a valid secp256k1 secret key"))?;
        let kp = Keypair::from_secret_key(&Secp256k1::signing_only(), &sk);
        if kp.x_only_public_key().0.serialize() != *public {
            return Err(NoiseError::AuthorityKey("the public key is not the secret key's"));
        }
        Ok(Authority(kp))
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        self.0.non_secure_erase();
    }
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "Authority({})", hex::encode(&self.0.x_only_public_key().0.serialize()))
    }
}
