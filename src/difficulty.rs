//! Exact difficulty, target and nbits arithmetic.
//!
//! A [`Target`] is a 256-bit integer; a share or block is good when its hash, read as a
//! little-endian 256-bit number, is at most the target. A [`Difficulty`] is the pool-side
//! ("pdiff") measure `DIFF1 / target` with `DIFF1 = 0xFFFF · 2^208`, held as an exact decimal
//! fixed-point integer (units of 10^-12) so that fractional difficulties such as 0.00015 (what
//! small ESP32 miners suggest) or regtest's 4.66e-10 are represented and parsed without floats.
//! Floats appear only in [`Difficulty::as_f64`], for display.

use std::fmt;
use std::str::FromStr;

use ruint::aliases::{U256, U512};

/// Number of decimal places a [`Difficulty`] keeps.
pub const DECIMALS: u32 = 12;
/// 10^DECIMALS: one difficulty unit.
pub const SCALE: u128 = 1_000_000_000_000;

/// The difficulty-1 target, 0xFFFF · 2^208 (nbits 0x1d00ffff).
pub fn diff1_target() -> U256 {
    U256::from(0xFFFFu64) << 208
}

/// A 256-bit proof-of-work target.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target(U256);

impl Target {
    /// The easiest target: every hash meets it.
    pub const MAX: Target = Target(U256::MAX);

    pub fn from_u256(v: U256) -> Target {
        Target(v)
    }

    pub fn as_u256(&self) -> U256 {
        self.0
    }

    /// Decodes a compact `nbits` value as bitcoind does (`arith_uint256::SetCompact`).
    /// Returns `None` for negative or overflowing encodings, which no valid block carries.
    pub fn from_compact(nbits: u32) -> Option<Target> {
        let exponent = nbits >> 24;
        let mantissa = nbits & 0x007f_ffff;
        if nbits & 0x0080_0000 != 0 && mantissa != 0 {
            return None; // negative
        }
        let m = U256::from(mantissa);
        let value = if exponent <= 3 {
            m >> (8 * (3 - exponent) as usize)
        } else {
            let shift = 8 * (exponent - 3) as usize;
            if mantissa != 0 && (shift >= 256 || (m.bit_len() + shift) > 256) {
                return None; // overflow
            }
            m << shift
        };
        Some(Target(value))
    }

    /// Encodes as compact `nbits` (`arith_uint256::GetCompact`); precision is lost as in bitcoind.
    pub fn to_compact(&self) -> u32 {
        let mut size = self.0.bit_len().div_ceil(8) as u32;
        let mut compact: u32 = if size <= 3 {
            (self.0.as_limbs()[0] << (8 * (3 - size))) as u32
        } else {
            let shifted = self.0 >> (8 * (size - 3) as usize);
            shifted.as_limbs()[0] as u32
        };
        if compact & 0x0080_0000 != 0 {
            compact >>= 8;
            size += 1;
        }
        compact | (size << 24)
    }

    /// True when `hash` (the sha256d output, in the byte order it is computed in) meets the target.
    #[inline]
    pub fn is_met_by(&self, hash: &[u8; 32]) -> bool {
        U256::from_le_bytes(*hash) <= self.0
    }

    /// The target as 32 big-endian bytes (the display order of block explorers).
    pub fn to_be_bytes(&self) -> [u8; 32] {
        self.0.to_be_bytes()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({:064x})", self.0)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:064x}", self.0)
    }
}

/// A pool difficulty, exact to 12 decimal places. Zero means "no difficulty" (every hash passes).
/// Aligned to 8 bytes, not u128's 16: every miner's state holds several (its channel, each job
/// sent), and 16-byte alignment padded each `Option` and each struct around them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(C, packed(8))]
pub struct Difficulty(u128);

/// Why a difficulty text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDifficultyError {
    #[error("empty difficulty")]
    Empty,
    #[error("difficulty {0:?} is not a decimal number")]
    NotANumber(String),
    #[error("difficulty {0:?} is negative")]
    Negative(String),
    #[error("difficulty {0:?} is too large")]
    TooLarge(String),
    #[error("difficulty {0:?} has more than 12 decimal places of precision below 1e-12")]
    TooSmall(String),
}

impl Difficulty {
    pub const ZERO: Difficulty = Difficulty(0);
    pub const ONE: Difficulty = Difficulty(SCALE);
    pub const MAX: Difficulty = Difficulty(u128::MAX);

    /// From a raw count of 10^-12 units.
    pub const fn from_units(units: u128) -> Difficulty {
        Difficulty(units)
    }

    /// The raw count of 10^-12 units.
    pub const fn units(self) -> u128 {
        self.0
    }

    pub fn from_integer(d: u64) -> Difficulty {
        Difficulty(d as u128 * SCALE)
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// The target a hash must meet to count at this difficulty: floor(DIFF1 / d).
    /// Difficulty zero maps to [`Target::MAX`].
    pub fn to_target(self) -> Target {
        if self.0 == 0 {
            return Target::MAX;
        }
        let num = U512::from(diff1_target()) * U512::from(SCALE);
        let q = num / U512::from(self.0);
        if q > U512::from(U256::MAX) {
            Target::MAX
        } else {
            Target(U256::from(q))
        }
    }

    /// The difficulty of a target: floor(DIFF1 / target) to 12 places, saturating at [`Difficulty::MAX`].
    pub fn from_target(target: &Target) -> Difficulty {
        Self::ratio_to_diff1(target.0)
    }

    /// The difficulty a hash achieves: DIFF1 / hash (hash read as little-endian), floored to 12 places.
    #[inline]
    pub fn from_hash(hash: &[u8; 32]) -> Difficulty {
        Self::ratio_to_diff1(U256::from_le_bytes(*hash))
    }

    /// The difficulty that `nbits` encodes (the network difficulty bitcoind reports).
    pub fn from_compact(nbits: u32) -> Option<Difficulty> {
        Target::from_compact(nbits).map(|t| Difficulty::from_target(&t))
    }

    fn ratio_to_diff1(denominator: U256) -> Difficulty {
        if denominator.is_zero() {
            return Difficulty::MAX;
        }
        let num = U512::from(diff1_target()) * U512::from(SCALE);
        let q = num / U512::from(denominator);
        if q > U512::from(u128::MAX) {
            Difficulty::MAX
        } else {
            Difficulty(q.to::<u128>())
        }
    }

    /// `self · num / den`, floored, saturating; `None` when `den` is zero.
    pub fn mul_ratio(self, num: u128, den: u128) -> Option<Difficulty> {
        if den == 0 {
            return None;
        }
        let v = U256::from(self.0) * U256::from(num) / U256::from(den);
        Some(if v > U256::from(u128::MAX) { Difficulty::MAX } else { Difficulty(v.to::<u128>()) })
    }

    /// Approximate value for display, logs and statistics only; never for a target decision.
    pub fn as_f64(self) -> f64 {
        (self.0 / SCALE) as f64 + (self.0 % SCALE) as f64 / SCALE as f64
    }

    /// Parses a JSON number as written (`1`, `42`, `0.00015`, `1e-4`), or a string holding one.
    /// Integers up to 2^64 - 1 are exact; other numbers are exact up to 15 significant digits (serde_json holds it as an f64: `86388558925171.011712694762` reads as
    /// `86388558925171.02`); strings are exact to 12 decimal places.
    pub fn from_json(v: &serde_json::Value) -> Result<Difficulty, ParseDifficultyError> {
        match v {
            serde_json::Value::Number(n) => n.to_string().parse(),
            serde_json::Value::String(s) => s.trim().parse(),
            other => Err(ParseDifficultyError::NotANumber(other.to_string())),
        }
    }
}

impl FromStr for Difficulty {
    type Err = ParseDifficultyError;

    /// Decimal text with an optional fraction and exponent ("42", "0.00015", "1.5e3", "1E-4").
    /// Digits below 10^-12 are truncated; a non-zero value that truncates to zero is refused.
    fn from_str(text: &str) -> Result<Difficulty, ParseDifficultyError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(ParseDifficultyError::Empty);
        }
        let bad = || ParseDifficultyError::NotANumber(text.to_string());
        let s = match s.strip_prefix('+') {
            Some(rest) => rest,
            None if s.starts_with('-') => {
                let rest = &s[1..];
                // "-0" and "-0.0" are zero; anything else negative is refused.
                if rest.chars().all(|c| c == '0' || c == '.') && rest.contains('0') {
                    return Ok(Difficulty::ZERO);
                }
                return Err(ParseDifficultyError::Negative(text.to_string()));
            }
            None => s,
        };
        let (mantissa, exponent) = match s.find(['e', 'E']) {
            Some(i) => {
                let e: i32 = s[i + 1..].parse().map_err(|_| bad())?;
                (&s[..i], e)
            }
            None => (s, 0),
        };
        let (int_part, frac_part) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad());
        }
        if !int_part.bytes().all(|b| b.is_ascii_digit()) || !frac_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // value = digits · 10^(exponent - frac_len); units = value · 10^12
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let shift = exponent as i64 - frac_part.len() as i64 + DECIMALS as i64;
        if digits.is_empty() {
            return Ok(Difficulty::ZERO);
        }
        let too_large = || ParseDifficultyError::TooLarge(text.to_string());
        let units: u128 = if shift >= 0 {
            if digits.len() as i64 + shift > 39 {
                return Err(too_large());
            }
            let base: u128 = digits.parse().map_err(|_| too_large())?;
            let mul = 10u128.checked_pow(shift as u32).ok_or_else(too_large)?;
            base.checked_mul(mul).ok_or_else(too_large)?
        } else {
            let cut = (-shift) as usize;
            if cut >= digits.len() {
                0
            } else {
                digits[..digits.len() - cut].parse().map_err(|_| too_large())?
            }
        };
        if units == 0 {
            return Err(ParseDifficultyError::TooSmall(text.to_string()));
        }
        Ok(Difficulty(units))
    }
}

impl Difficulty {
    /// Appends the exact decimal (as [`Display`](fmt::Display) writes it) without allocating.
    pub fn write_decimal(&self, out: &mut Vec<u8>) {
        let mut buf = [0u8; 64];
        let n = self.decimal_into(&mut buf);
        out.extend_from_slice(&buf[..n]);
    }

    /// Writes the decimal into `buf`, returning its length (u128 integer part: at most 39 digits,
    /// then a point and at most 12 fraction digits).
    fn decimal_into(&self, buf: &mut [u8; 64]) -> usize {
        let mut int = self.0 / SCALE;
        let mut frac = (self.0 % SCALE) as u64;
        let mut digits = [0u8; 40];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (int % 10) as u8;
            int /= 10;
            if int == 0 {
                break;
            }
        }
        let mut n = digits.len() - i;
        buf[..n].copy_from_slice(&digits[i..]);
        if frac != 0 {
            let mut places = 12;
            while frac % 10 == 0 {
                frac /= 10;
                places -= 1;
            }
            buf[n] = b'.';
            for k in (0..places).rev() {
                buf[n + 1 + k] = b'0' + (frac % 10) as u8;
                frac /= 10;
            }
            n += 1 + places;
        }
        n
    }
}

impl fmt::Display for Difficulty {
    /// Exact decimal with trailing zeros trimmed: "42", "0.00015", "7.885791927".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        let n = self.decimal_into(&mut buf);
        f.write_str(std::str::from_utf8(&buf[..n]).expect("ascii digits"))
    }
}

impl fmt::Debug for Difficulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Difficulty({self})")
    }
}

impl serde::Serialize for Difficulty {
    /// As a JSON number, so that tools reading ckpool's files see a number where ckpool wrote one.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.as_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_difficulty_is_sixteen_bytes_aligned_to_eight() {
        // Every miner's channel and each job it was sent hold several (docs/performance.md).
        assert_eq!((std::mem::size_of::<Difficulty>(), std::mem::align_of::<Difficulty>()), (16, 8));
        assert_eq!(std::mem::size_of::<Option<Difficulty>>(), 24);
    }

    #[test]
    fn diff1_is_nbits_1d00ffff() {
        let t = Target::from_compact(0x1d00ffff).unwrap();
        assert_eq!(t.as_u256(), diff1_target());
        assert_eq!(Difficulty::from_target(&t), Difficulty::ONE);
        assert_eq!(Difficulty::ONE.to_target(), t);
        assert_eq!(t.to_compact(), 0x1d00ffff);
    }

    #[test]
    fn regtest_nbits() {
        // regtest powLimit 0x7fffff << 232 (nbits 207fffff): difficulty 4.656542373906925e-10
        let t = Target::from_compact(0x207fffff).unwrap();
        assert_eq!(t.as_u256(), U256::from(0x7fffffu64) << 232);
        assert_eq!(t.to_compact(), 0x207fffff);
        let d = Difficulty::from_target(&t);
        assert_eq!(d.units(), 465); // 4.65654e-10 · 10^12, floored
    }

    #[test]
    fn mainnet_difficulty_from_nbits() {
        // Block 100000: nbits 1b04864c, difficulty 14484.1623612254 (bitcoind getblock, rounded).
        // Exactly: 0xffff·2^208 / (0x04864c·2^192) = 4294901760 / 296524 = 14484.16236122539824…
        let d = Difficulty::from_compact(0x1b04864c).unwrap();
        assert_eq!(d.to_string(), "14484.162361225398");
    }

    #[test]
    fn compact_edge_cases() {
        assert_eq!(Target::from_compact(0x01003456).unwrap().as_u256(), U256::ZERO);
        assert_eq!(Target::from_compact(0x01123456).unwrap().as_u256(), U256::from(0x12u64));
        assert_eq!(Target::from_compact(0x04923456), None); // negative
        assert_eq!(Target::from_compact(0xff123456), None); // overflow
        assert_eq!(Target::from_compact(0x05009234).unwrap().as_u256(), U256::from(0x92340000u64));
        assert_eq!(Target::from_u256(U256::from(0x80u64)).to_compact(), 0x02008000);
    }

    #[test]
    fn parse_and_display() {
        for (text, units, shown) in [
            ("42", 42 * SCALE, "42"),
            ("0.00015", 150_000_000, "0.00015"),
            ("1e-4", 100_000_000, "0.0001"),
            ("1.5E3", 1500 * SCALE, "1500"),
            ("0.000000000001", 1, "0.000000000001"),
            ("+7", 7 * SCALE, "7"),
            ("0", 0, "0"),
            ("-0", 0, "0"),
        ] {
            let d: Difficulty = text.parse().unwrap();
            assert_eq!(d.units(), units, "{text}");
            assert_eq!(d.to_string(), shown, "{text}");
        }
        assert!(matches!("-1".parse::<Difficulty>(), Err(ParseDifficultyError::Negative(_))));
        assert!(matches!("abc".parse::<Difficulty>(), Err(ParseDifficultyError::NotANumber(_))));
        assert!(matches!("1e-13".parse::<Difficulty>(), Err(ParseDifficultyError::TooSmall(_))));
        assert!(matches!("1e40".parse::<Difficulty>(), Err(ParseDifficultyError::TooLarge(_))));
        assert!(matches!("".parse::<Difficulty>(), Err(ParseDifficultyError::Empty)));
        assert!(matches!("1.2.3".parse::<Difficulty>(), Err(ParseDifficultyError::NotANumber(_))));
        let j: serde_json::Value = serde_json::from_str("[0.0001, 1000, \"0.5\"]").unwrap();
        assert_eq!(Difficulty::from_json(&j[0]).unwrap().to_string(), "0.0001");
        assert_eq!(Difficulty::from_json(&j[1]).unwrap(), Difficulty::from_integer(1000));
        assert_eq!(Difficulty::from_json(&j[2]).unwrap().to_string(), "0.5");
    }

    /// Found by fuzzing (fuzz/fuzz_targets/difficulty.rs): a JSON number is read through f64, so
    /// `from_json` is exact to 15 significant digits (what its documentation now says); a
    /// string carries all 12 decimal places.
    #[test]
    fn json_numbers_exact_to_15_significant_digits() {
        let j: serde_json::Value = serde_json::from_str(
            "[86388558925171.011712694762, \"86388558925171.011712694762\", 123456789.012345, 18446744073709551615]",
        )
        .unwrap();
        assert_eq!(Difficulty::from_json(&j[0]).unwrap().to_string(), "86388558925171.02");
        assert_eq!(Difficulty::from_json(&j[1]).unwrap().to_string(), "86388558925171.011712694762");
        assert_eq!(Difficulty::from_json(&j[2]).unwrap().to_string(), "123456789.012345");
        assert_eq!(Difficulty::from_json(&j[3]).unwrap(), Difficulty::from_integer(u64::MAX));
    }

    #[test]
    fn fractional_target_is_easier() {
        let half: Difficulty = "0.5".parse().unwrap();
        assert_eq!(half.to_target().as_u256(), diff1_target() * U256::from(2u64));
        assert_eq!(Difficulty::ZERO.to_target(), Target::MAX);
    }
}
