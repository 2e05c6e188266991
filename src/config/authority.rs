//! The Stratum V2 authority public key as URLs and configs carry it: base58check of a 2-byte
//! little-endian version (1) and the 32-byte x-only key, the way SRI's roles read
//! `authority_pubkey`. Here because a `proxy` entry's `stratum2+tcp://HOST:PORT/KEY` url is
//! checked at start; `sv2::keys` (the pool's own key) writes it with the same functions. Pure.

/// Version of the public-key encoding (SRI's `Secp256k1PublicKey`).
const PUBKEY_VERSION: u16 = 1;

/// The public key as SRI's roles write it: base58check(version LE ‖ x-only key).
pub fn encode_public(public: &[u8; 32]) -> String {
    let mut raw = [0u8; 34];
    raw[..2].copy_from_slice(&PUBKEY_VERSION.to_le_bytes());
    raw[2..].copy_from_slice(public);
    bitcoin::base58::encode_check(&raw)
}

/// Reads a public key written by [`encode_public`] (an `authority_pubkey`, or the key part of a
/// `stratum2+tcp://` URL).
pub fn parse_public(text: &str) -> anyhow::Result<[u8; 32]> {
    let raw = bitcoin::base58::decode_check(text).map_err(|e| anyhow::anyhow!("not a base58check key: {e}"))?;
    if raw.len() != 34 {
        anyhow::bail!("public key is {} bytes, expected 34 (version and x-only key)", raw.len());
    }
    let version = u16::from_le_bytes([raw[0], raw[1]]);
    if version != PUBKEY_VERSION {
        anyhow::bail!("public key version {version}, expected {PUBKEY_VERSION}");
    }
    let key: [u8; 32] = raw[2..].try_into().expect("34 - 2 bytes");
    bitcoin::secp256k1::XOnlyPublicKey::from_slice(&key)
        .map_err(|e| anyhow::anyhow!("not a secp256k1 x-only key: {e}"))?;
    Ok(key)
}

/// A `stratum2+tcp://HOST:PORT/KEY` url split: `Some((host:port, key text))` when `url` has the
/// scheme (the key part may be empty: the caller says what is missing), `None` otherwise.
pub fn split_sv2_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.trim().strip_prefix("stratum2+tcp://")?;
    Some(rest.split_once('/').unwrap_or((rest, "")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sv2_urls_split_into_address_and_key() {
        assert_eq!(split_sv2_url("stratum2+tcp://pool.example:3336/9auq"), Some(("pool.example:3336", "9auq")));
        assert_eq!(split_sv2_url("stratum2+tcp://[::1]:3336/"), Some(("[::1]:3336", "")));
        assert_eq!(split_sv2_url("stratum2+tcp://127.0.0.1:3336"), Some(("127.0.0.1:3336", "")));
        assert_eq!(split_sv2_url("stratum+tcp://127.0.0.1:3333"), None);
    }
}
