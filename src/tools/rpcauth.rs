//! `ckpool rpcauth USER [PASSWORD]`: the `rpcauth=` line for bitcoin.conf, as Bitcoin Core's
//! `share/rpcauth/rpcauth.py` makes it: `rpcauth=USER:SALT$HMAC` where SALT is 16 random bytes
//! in hex and HMAC is hex(HMAC-SHA256(key = SALT's hex text, message = password)). Without a
//! password, one is generated as rpcauth.py does (32 random bytes, URL-safe base64).

use std::io::Read;

use anyhow::{bail, Context};
use bitcoin::hashes::{hmac, sha256, Hash, HashEngine};
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct RpcauthArgs {
    /// RPC user name (the "auth" of a btcd entry in ckpool.conf)
    pub user: String,
    /// Password; a random one (32 bytes, URL-safe base64) is made when omitted
    pub password: Option<String>,
}

/// HMAC-SHA256 (RFC 2104), rust-bitcoin's.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut engine = hmac::HmacEngine::<sha256::Hash>::new(key);
    engine.input(msg);
    hmac::Hmac::<sha256::Hash>::from_engine(engine).to_byte_array()
}

/// The `rpcauth=` line for `user`, `password` and a salt (its hex text is the HMAC key).
pub fn rpcauth_line(user: &str, salt_hex: &str, password: &str) -> String {
    let mac = hmac_sha256(salt_hex.as_bytes(), password.as_bytes());
    format!("rpcauth={user}:{salt_hex}${}", crate::hex::encode(&mac))
}

/// URL-safe base64 without padding (Python's `secrets.token_urlsafe`).
pub fn base64_url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).context("cannot read /dev/urandom")?;
    Ok(b)
}

/// Checks the user name bitcoind would misread (`:` splits user from salt in the line).
pub fn check_user(user: &str) -> anyhow::Result<()> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        bail!("rpcauth: user name {user:?} must be non-empty, without ':' or control characters");
    }
    Ok(())
}

/// Prints what rpcauth.py prints: the line for bitcoin.conf, then the password.
pub fn run(args: RpcauthArgs) -> anyhow::Result<()> {
    check_user(&args.user)?;
    let password = match args.password {
        Some(p) => {
            if p.is_empty() || p.contains(['\n', '\r']) {
                bail!("rpcauth: the password must be non-empty and on one line");
            }
            p
        }
        None => base64_url(&random_bytes::<32>()?),
    };
    let salt = crate::hex::encode(&random_bytes::<16>()?);
    println!("String to be appended to bitcoin.conf:");
    println!("{}", rpcauth_line(&args.user, &salt, &password));
    println!("Your password:");
    println!("{password}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_rfc4231_vectors() {
        // RFC 4231 test cases 1, 2 and 6 (a key longer than the block).
        assert_eq!(
            crate::hex::encode(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            crate::hex::encode(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            crate::hex::encode(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn rpcauth_line_matches_python_hmac() {
        // python3 -c 'import hmac;print(hmac.new(b"cb77f0957de88ff388cf5ba3ff9e8b3b",
        //   b"pw","SHA256").hexdigest())'
        assert_eq!(
            rpcauth_line("satoshi", "cb77f0957de88ff388cf5ba3ff9e8b3b", "pw"),
            "rpcauth=satoshi:cb77f0957de88ff388cf5ba3ff9e8b3b$\
             33389511be68c58c43a4b1263950b08066260936bdb4b97a651bcc5cafdef9bc"
        );
    }

    #[test]
    fn base64_url_matches_python() {
        // base64.urlsafe_b64encode(...).rstrip(b"=")
        assert_eq!(base64_url(b""), "");
        assert_eq!(base64_url(b"f"), "Zg");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(&[0xfb, 0xff, 0xfe]), "-__-");
        assert_eq!(base64_url(&[0u8; 32]).len(), 43);
    }

    #[test]
    fn user_names_bitcoind_would_misread_are_refused() {
        assert!(check_user("satoshi").is_ok());
        assert!(check_user("a:b").is_err());
        assert!(check_user("").is_err());
    }
}
