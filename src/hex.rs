//! Hex encoding and decoding without allocation on the share path.

/// Why a hex field was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("odd number of hex digits")]
    OddLength,
    #[error("non-hex character")]
    BadChar,
    #[error("expected {expected} bytes of hex, got {got}")]
    WrongLength { expected: usize, got: usize },
}

#[inline]
fn nibble(c: u8) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HexError::BadChar),
    }
}

/// Decodes `s` into exactly `out.len()` bytes.
#[inline]
pub fn decode_into(s: &str, out: &mut [u8]) -> Result<(), HexError> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return Err(HexError::OddLength);
    }
    if b.len() / 2 != out.len() {
        return Err(HexError::WrongLength { expected: out.len(), got: b.len() / 2 });
    }
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

/// Decodes hex text of any even length.
pub fn decode(s: &str) -> Result<Vec<u8>, HexError> {
    if s.len() % 2 != 0 {
        return Err(HexError::OddLength);
    }
    let mut out = vec![0u8; s.len() / 2];
    decode_into(s, &mut out)?;
    Ok(out)
}

/// Checks that `s` is hex of whole bytes and appends it to `out` in lower case, as it is (no
/// decode and encode again): a template's transactions kept as the text `submitblock` sends.
pub fn append_lower(s: &str, out: &mut Vec<u8>) -> Result<(), HexError> {
    let b = s.as_bytes();
    if b.len() % 2 != 0 {
        return Err(HexError::OddLength);
    }
    let start = out.len();
    out.reserve(b.len());
    for &c in b {
        if let Err(e) = nibble(c) {
            out.truncate(start);
            return Err(e);
        }
        out.push(c.to_ascii_lowercase());
    }
    Ok(())
}

/// Decodes hex held as bytes (a request body's part) and appends the bytes to `out` (on an
/// error, what was decoded before it stays).
pub fn decode_append(hex: &[u8], out: &mut Vec<u8>) -> Result<(), HexError> {
    if hex.len() % 2 != 0 {
        return Err(HexError::OddLength);
    }
    out.reserve(hex.len() / 2);
    for pair in hex.chunks_exact(2) {
        out.push((nibble(pair[0])? << 4) | nibble(pair[1])?);
    }
    Ok(())
}

/// Parses up to 8 hex digits as a big-endian u32, left-padding short input with zeros
/// (NerdMiner drops a nonce's leading zero about once in 16 shares).
#[inline]
pub fn parse_u32_be(s: &str) -> Result<u32, HexError> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 8 {
        return Err(HexError::WrongLength { expected: 4, got: b.len().div_ceil(2) });
    }
    let mut v: u32 = 0;
    for &c in b {
        v = (v << 4) | nibble(c)? as u32;
    }
    Ok(v)
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends lower-case hex of `bytes` to `out`.
#[inline]
pub fn encode_to(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

/// Appends lower-case hex of `bytes` to a byte buffer, written in place (no per-character
/// push): for a whole block, on the way to `submitblock`.
pub fn encode_to_vec(bytes: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    for (pair, &b) in out[start..].chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[(b >> 4) as usize];
        pair[1] = DIGITS[(b & 15) as usize];
    }
}

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    encode_to(bytes, &mut s);
    s
}

/// Hex of `bytes` in reverse order: how txids and block hashes are displayed.
pub fn encode_rev(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes.iter().rev() {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Appends hex of `bytes` in reverse order (display order of hashes) to a byte buffer.
#[inline]
pub fn encode_rev_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() * 2);
    for &b in bytes.iter().rev() {
        out.push(DIGITS[(b >> 4) as usize]);
        out.push(DIGITS[(b & 15) as usize]);
    }
}

/// Appends `v` in lower-case hex without leading zeros ("0" for zero), as `{:x}` writes it.
pub fn push_u64_hex(out: &mut Vec<u8>, v: u64) {
    let digits = (16 - (v.leading_zeros() / 4) as usize).max(1);
    for i in (0..digits).rev() {
        out.push(DIGITS[((v >> (4 * i)) & 15) as usize]);
    }
}

/// Decodes display-order (reversed) hex of a 32-byte hash into internal byte order.
pub fn decode_hash_rev(s: &str) -> Result<[u8; 32], HexError> {
    let mut out = [0u8; 32];
    decode_into(s, &mut out)?;
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = decode("00ff10Ab").unwrap();
        assert_eq!(v, [0x00, 0xff, 0x10, 0xab]);
        assert_eq!(encode(&v), "00ff10ab");
        assert_eq!(encode_rev(&v), "ab10ff00");
        let mut kept = Vec::new();
        append_lower("00ff10Ab", &mut kept).unwrap();
        assert_eq!(kept, b"00ff10ab");
        assert_eq!(append_lower("0", &mut kept), Err(HexError::OddLength));
        assert_eq!(append_lower("000g", &mut kept), Err(HexError::BadChar));
        assert_eq!(kept, b"00ff10ab", "nothing of a refused text is kept");
        let mut back = Vec::new();
        decode_append(&kept[..8], &mut back).unwrap();
        assert_eq!(back, v);
        for n in [0u64, 1, 0xf, 0x10, 0x1a00, u64::MAX] {
            let mut out = Vec::new();
            push_u64_hex(&mut out, n);
            assert_eq!(out, format!("{n:x}").into_bytes());
        }
    }

    #[test]
    fn errors() {
        assert_eq!(decode("abc"), Err(HexError::OddLength));
        assert_eq!(decode("zz"), Err(HexError::BadChar));
        let mut out = [0u8; 4];
        assert_eq!(decode_into("0011", &mut out), Err(HexError::WrongLength { expected: 4, got: 2 }));
        assert_eq!(decode_into(" 0112233", &mut out), Err(HexError::BadChar));
    }

    #[test]
    fn short_u32_is_left_padded() {
        assert_eq!(parse_u32_be("b2957c02").unwrap(), 0xb2957c02);
        assert_eq!(parse_u32_be("2957c02").unwrap(), 0x02957c02);
        assert_eq!(parse_u32_be("0").unwrap(), 0);
        assert!(parse_u32_be("").is_err());
        assert!(parse_u32_be("123456789").is_err());
        assert_eq!(parse_u32_be("1234567g"), Err(HexError::BadChar));
    }
}
