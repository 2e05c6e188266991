//! The pool's Stratum V2 authority key: the secp256k1 key whose public half miners pin in the
//! URL (`stratum2+tcp://HOST:PORT/KEY`) and which certifies the Noise static key of every
//! connection.
//!
//! Files hold one line: the 32-byte secret in base58check (the form SRI's pool configs use, so
//! a key moves between the two). A missing file is created at first start with mode 0600; a file
//! that others can read is used and named in a warning. The public key is written the way SRI's
//! roles read `authority_pubkey` (`config::authority`, where a proxy's `stratum2+tcp://` url is
//! read with it).

use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use bitcoin::secp256k1::{Keypair, Secp256k1, SecretKey};

pub use crate::config::authority::{encode_public, parse_public};

/// The authority key pair.
#[derive(Clone)]
pub struct AuthorityKey {
    secret: [u8; 32],
    public: [u8; 32],
}

impl std::fmt::Debug for AuthorityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(f, "AuthorityKey({})", self.public_string())
    }
}

impl AuthorityKey {
    /// The key pair of a 32-byte secret; refused when it is not a valid secp256k1 secret.
    pub fn from_secret(secret: [u8; 32]) -> anyhow::Result<AuthorityKey> {
        let sk =
            SecretKey::from_slice(&secret).map_err(|e| anyhow::anyhow!("not a valid secp256k1 secret key: {e}"))?;
        let public = Keypair::from_secret_key(&Secp256k1::signing_only(), &sk).x_only_public_key().0.serialize();
        Ok(AuthorityKey { secret, public })
    }

    /// A fresh key from the system's random source.
    pub fn generate() -> anyhow::Result<AuthorityKey> {
        let mut f = std::fs::File::open("/dev/urandom").map_err(|e| anyhow::anyhow!("/dev/urandom: {e}"))?;
        loop {
            let mut secret = [0u8; 32];
            f.read_exact(&mut secret).map_err(|e| anyhow::anyhow!("/dev/urandom: {e}"))?;
            // All but ~2^-128 of 32-byte values are valid secrets.
            if let Ok(k) = AuthorityKey::from_secret(secret) {
                return Ok(k);
            }
        }
    }

    /// The secret in the file's form (base58check).
    pub fn secret_string(&self) -> String {
        bitcoin::base58::encode_check(&self.secret)
    }

    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The x-only public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The public key as miners and SRI's roles write it.
    pub fn public_string(&self) -> String {
        encode_public(&self.public)
    }

    /// Reads the key in `path`, or creates it there (mode 0600, parent directories made) when the
    /// file does not exist. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(AuthorityKey, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let key = parse_secret(text.trim())
                    .map_err(|e| anyhow::anyhow!("sv2_authority_key {}: {e}", path.display()))?;
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o077 != 0 {
                        tracing::warn!(
                            "sv2_authority_key {} can be read by other users (mode {:o}); chmod 600 it",
                            path.display(),
                            meta.permissions().mode() & 0o777
                        );
                    }
                }
                Ok((key, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = AuthorityKey::generate()?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| anyhow::anyhow!("sv2_authority_key: cannot create {}: {e}", dir.display()))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("sv2_authority_key: cannot create {}: {e}", path.display()))?;
                // Given away before the secret is written, through the descriptor opened: no
                // path is looked up again (a link swapped in meanwhile changes nothing).
                give_to_directory_owner(path, &f);
                writeln!(f, "{}", key.secret_string())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| anyhow::anyhow!("sv2_authority_key: cannot write {}: {e}", path.display()))?;
                Ok((key, true))
            }
            Err(e) => Err(anyhow::anyhow!("sv2_authority_key {}: cannot read: {e}", path.display())),
        }
    }
}

/// Made by root (`ckpool sv2-key` by hand) in a directory another user owns (the service's
/// /var/lib/ckpool): the file goes to that owner, so the service can read it.
fn give_to_directory_owner(path: &Path, file: &std::fs::File) {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Some(dir) =
        path.parent().and_then(|d| std::fs::metadata(if d.as_os_str().is_empty() { Path::new(".") } else { d }).ok())
    else {
        return;
    };
    if dir.uid() != 0 {
        let (uid, gid) = (nix::unistd::Uid::from_raw(dir.uid()), nix::unistd::Gid::from_raw(dir.gid()));
        if let Err(e) = nix::unistd::fchown(file, Some(uid), Some(gid)) {
            tracing::warn!("sv2_authority_key {}: cannot give it to the directory's owner: {e}", path.display());
        }
    }
}

/// A secret key in base58check (SRI's `authority_secret_key` form).
pub fn parse_secret(text: &str) -> anyhow::Result<AuthorityKey> {
    let bytes = bitcoin::base58::decode_check(text).map_err(|e| anyhow::anyhow!("not a base58check key: {e}"))?;
    let secret: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("key is {} bytes, expected 32", bytes.len()))?;
    AuthorityKey::from_secret(secret)
}

/// The URL a miner or proxy is given: `stratum2+tcp://HOST:PORT/KEY`.
pub fn url(host_port: &str, public: &[u8; 32]) -> String {
    format!("stratum2+tcp://{host_port}/{}", encode_public(public))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The key SRI's example configs pair with their pool's authority secret: our encoding must
    /// read and write it the same way.
    #[test]
    fn sri_example_key_pair_round_trips() {
        let secret = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";
        let public = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
        let key = parse_secret(secret).unwrap();
        assert_eq!(key.public_string(), public);
        assert_eq!(key.secret_string(), secret);
        assert_eq!(&parse_public(public).unwrap(), key.public());
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert!(parse_public("not-a-key").unwrap_err().to_string().contains("base58check"));
        let mut raw = [0u8; 34];
        raw[0] = 12;
        let wrong_version = bitcoin::base58::encode_check(&raw);
        assert!(parse_public(&wrong_version).unwrap_err().to_string().contains("version 12"));
        assert!(parse_secret(&bitcoin::base58::encode_check(&[0u8; 32])).is_err(), "zero is no secret");
    }

    #[test]
    fn created_file_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/authority.key");
        let (a, created) = AuthorityKey::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (b, created) = AuthorityKey::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public(), b.public());
        std::fs::write(&path, "garbage\n").unwrap();
        let e = AuthorityKey::load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("authority.key") && e.contains("base58check"), "{e}");
    }
}
