//! Exact rationals and the parsers for what an operator types: decimal numbers, hashrates with
//! SI prefixes and coin amounts. Nothing here goes through `f64`.

use std::fmt;

use ruint::aliases::{U1024, U256};

/// Satoshis per coin.
pub const COIN: u64 = 100_000_000;

/// A non-negative rational number `num / den` with `den > 0`, in 1024-bit integers, so that
/// every product the payout formula needs fits without overflow (see [`super::formula`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ratio {
    num: U1024,
    den: U1024,
}

impl Ratio {
    /// `num / den`; `None` when `den` is zero.
    pub fn new(num: U1024, den: U1024) -> Option<Ratio> {
        if den.is_zero() {
            None
        } else {
            Some(Ratio { num, den })
        }
    }

    pub fn from_u256(num: U256, den: U256) -> Option<Ratio> {
        Ratio::new(U1024::from(num), U1024::from(den))
    }

    pub fn integer(v: u128) -> Ratio {
        Ratio { num: U1024::from(v), den: U1024::from(1u8) }
    }

    pub fn num(&self) -> U1024 {
        self.num
    }

    pub fn den(&self) -> U1024 {
        self.den
    }

    pub fn is_zero(&self) -> bool {
        self.num.is_zero()
    }

    /// Largest integer not above the value.
    pub fn floor(&self) -> U1024 {
        self.num / self.den
    }

    /// Exact product, reduced by the gcd; `None` on overflow of 1024 bits.
    pub fn checked_mul(&self, other: &Ratio) -> Option<Ratio> {
        let num = self.num.checked_mul(other.num)?;
        let den = self.den.checked_mul(other.den)?;
        Some(Ratio { num, den }.reduced())
    }

    /// Exact quotient; `None` when `other` is zero or on overflow.
    pub fn checked_div(&self, other: &Ratio) -> Option<Ratio> {
        if other.num.is_zero() {
            return None;
        }
        self.checked_mul(&Ratio { num: other.den, den: other.num })
    }

    /// The value with numerator and denominator divided by their gcd.
    pub fn reduced(self) -> Ratio {
        let g = self.num.gcd(self.den);
        if g.is_zero() || g == U1024::from(1u8) {
            self
        } else {
            Ratio { num: self.num / g, den: self.den / g }
        }
    }

    /// Decimal text floored to `places` digits after the point, trailing zeros kept
    /// (so a column of figures lines up): `Ratio(1/3).to_decimal(4) == "0.3333"`.
    pub fn to_decimal(&self, places: u32) -> String {
        let scale = U1024::from(10u8).pow(U1024::from(places));
        let scaled = self.num * scale / self.den; // num < 2^1024 / 10^places is checked below
        let int = scaled / scale;
        let frac = scaled % scale;
        if places == 0 {
            int.to_string()
        } else {
            format!("{int}.{:0>width$}", frac.to_string(), width = places as usize)
        }
    }

    /// Decimal text exact when the value has a terminating expansion of at most `max_places`
    /// digits, otherwise floored to `max_places` and suffixed with "…"; trailing zeros trimmed.
    pub fn to_decimal_trimmed(&self, max_places: u32) -> String {
        let s = self.to_decimal(max_places);
        let exact = {
            let scale = U1024::from(10u8).pow(U1024::from(max_places));
            (self.num * scale) % self.den == U1024::ZERO
        };
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        if exact {
            s
        } else {
            format!("{s}…")
        }
    }

    /// Approximate value, for display and for comparison with float calculations in tests only.
    pub fn to_f64_lossy(&self) -> f64 {
        self.to_decimal(20).parse().unwrap_or(f64::NAN)
    }

    /// `self < other`, exactly.
    pub fn lt(&self, other: &Ratio) -> bool {
        // cross-multiplication can exceed 1024 bits; compare in 2048.
        type U2048 = ruint::Uint<2048, 32>;
        U2048::from(self.num) * U2048::from(other.den) < U2048::from(other.num) * U2048::from(self.den)
    }
}

impl fmt::Debug for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.num, self.den)
    }
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_trimmed(12))
    }
}

/// Why a number typed by the operator was refused. Each message names the text and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{what} {text:?} is not a number; expected a decimal such as 42, 0.5 or 1.1e14")]
    NotANumber { what: &'static str, text: String },
    #[error("{what} {text:?} is negative; it must be greater than zero")]
    Negative { what: &'static str, text: String },
    #[error("{what} {text:?} is zero; it must be greater than zero")]
    Zero { what: &'static str, text: String },
    #[error("{what} {text:?} is out of range")]
    OutOfRange { what: &'static str, text: String },
    #[error(
        "hashrate {text:?} has an unknown unit {unit:?}; accepted: a number of H/s with an optional \
         SI prefix k/K, M, G, T, P or E and an optional \"H/s\" or \"H\" (\"110TH/s\", \"110 T\", \"1.1e14\")"
    )]
    UnknownHashUnit { text: String, unit: String },
    #[error(
        "amount {text:?} is not valid; write coins as a decimal with at most 8 places (\"3.125\") \
         or satoshis as an integer followed by \"sat\" (\"312500000sat\")"
    )]
    BadAmount { text: String },
}

/// Parses a non-negative decimal ("42", "0.5", "1.1e14", "1E-3") exactly into a [`Ratio`]
/// whose denominator is a power of ten. `what` names the input in error messages.
pub fn parse_decimal(what: &'static str, text: &str) -> Result<Ratio, ParseError> {
    let s = text.trim();
    let nan = || ParseError::NotANumber { what, text: text.to_string() };
    if s.is_empty() {
        return Err(nan());
    }
    let s = if let Some(rest) = s.strip_prefix('-') {
        // a well-formed negative number is reported as negative, anything else as not a number
        parse_decimal(what, rest)?;
        return Err(ParseError::Negative { what, text: text.to_string() });
    } else {
        s.strip_prefix('+').unwrap_or(s)
    };
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => {
            let e: i32 = s[i + 1..].parse().map_err(|_| nan())?;
            (&s[..i], e)
        }
        None => (s, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(nan());
    }
    let range = || ParseError::OutOfRange { what, text: text.to_string() };
    let digits = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    // 78 digits hold any value below 2^256 (which has 78), so a value's own decimal parses back.
    if digits.len() > 78 || !(-200..=200).contains(&exponent) {
        return Err(range());
    }
    if digits.is_empty() {
        return Ok(Ratio::integer(0));
    }
    let pow10 = exponent as i64 - frac_part.len() as i64;
    // 10^300 < 2^1024; any power beyond it (a long fraction) would wrap in U1024 (to a zero
    // denominator from 10^1024 on). An in-range value never needs more than 10^155.
    if pow10.unsigned_abs() > 300 {
        return Err(range());
    }
    let mut num = U1024::ZERO;
    for b in digits.bytes() {
        num = num * U1024::from(10u8) + U1024::from(b - b'0');
    }
    let ten = U1024::from(10u8);
    let (num, den) = if pow10 >= 0 {
        (num * ten.pow(U1024::from(pow10 as u64)), U1024::from(1u8))
    } else {
        (num, ten.pow(U1024::from((-pow10) as u64)))
    };
    let r = Ratio { num, den }.reduced();
    // every input fits 256 bits, so the products in the payout formula fit 1024 (see formula.rs)
    if r.num.bit_len() > 256 || r.den.bit_len() > 256 {
        return Err(range());
    }
    Ok(r)
}

/// Like [`parse_decimal`] but refuses zero.
pub fn parse_positive(what: &'static str, text: &str) -> Result<Ratio, ParseError> {
    let r = parse_decimal(what, text)?;
    if r.is_zero() {
        return Err(ParseError::Zero { what, text: text.to_string() });
    }
    Ok(r)
}

/// Parses a hashrate in H/s: a decimal, an optional SI prefix (k/K = 10^3, M = 10^6, G = 10^9,
/// T = 10^12, P = 10^15, E = 10^18) and an optional unit "H/s" or "H" (case of the "h" and "/s"
/// does not matter), spaces allowed between: "110TH/s", "110 TH/s", "110T", "1.1e14".
/// An "e"/"E" followed by digits is an exponent; a final "E" is exa. Zero is refused.
pub fn parse_hashrate(text: &str) -> Result<Ratio, ParseError> {
    let s = text.trim();
    let mut body = s;
    for unit in ["h/s", "hs", "h"] {
        // Compared as bytes: the text may end in a multi-byte character, where a str slice would
        // panic; a match is ASCII, so cutting it off leaves a char boundary.
        if body.len() >= unit.len() && body.as_bytes()[body.len() - unit.len()..].eq_ignore_ascii_case(unit.as_bytes())
        {
            body = body[..body.len() - unit.len()].trim_end();
            break;
        }
    }
    let (number, exp) = match body.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let exp = match c {
                'k' | 'K' => 3,
                'M' => 6,
                'G' | 'g' => 9,
                'T' | 't' => 12,
                'P' | 'p' => 15,
                'E' => 18,
                _ => {
                    let unit = s[body.len() - 1..].to_string();
                    return Err(ParseError::UnknownHashUnit { text: text.to_string(), unit });
                }
            };
            (body[..body.len() - 1].trim_end(), exp)
        }
        _ => (body, 0),
    };
    if number.is_empty() || number.ends_with(['e', 'E']) {
        let unit = s[number.len().min(s.len())..].to_string();
        return Err(ParseError::UnknownHashUnit { text: text.to_string(), unit });
    }
    let value = match parse_decimal("hashrate", number) {
        Ok(v) => v,
        Err(ParseError::NotANumber { .. }) => {
            // report the trailing letters as the unit when the number itself is fine up to them
            let split = number.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E');
            return Err(match split {
                Some(i) if parse_decimal("hashrate", number[..i].trim()).is_ok() => {
                    ParseError::UnknownHashUnit { text: text.to_string(), unit: s[i..].to_string() }
                }
                _ => ParseError::NotANumber { what: "hashrate", text: text.to_string() },
            });
        }
        Err(ParseError::Negative { .. }) => {
            return Err(ParseError::Negative { what: "hashrate", text: text.to_string() })
        }
        Err(e) => return Err(e),
    };
    let value = Ratio { num: value.num * U1024::from(10u8).pow(U1024::from(exp)), den: value.den }.reduced();
    if value.is_zero() {
        return Err(ParseError::Zero { what: "hashrate", text: text.to_string() });
    }
    Ok(value)
}

/// Parses an amount: coins as a plain decimal with at most 8 places ("3.125", "0.00001"), or
/// satoshis as an integer with a "sat"/"sats" suffix ("312500000sat", "1000 sats"). Returns satoshis.
pub fn parse_amount(text: &str) -> Result<u64, ParseError> {
    let s = text.trim();
    let bad = || ParseError::BadAmount { text: text.to_string() };
    if s.starts_with('-') {
        return Err(ParseError::Negative { what: "amount", text: text.to_string() });
    }
    let lower = s.to_ascii_lowercase();
    if let Some(n) = lower.strip_suffix("sats").or_else(|| lower.strip_suffix("sat")) {
        let n = n.trim();
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        return n.parse::<u64>().map_err(|_| ParseError::OutOfRange { what: "amount", text: text.to_string() });
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') || s.matches('.').count() > 1 {
        return Err(bad());
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty()) || frac.len() > 8 {
        return Err(bad());
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().map_err(|_| bad())? };
    let frac: u64 = format!("{frac:0<8}").parse().map_err(|_| bad())?;
    int.checked_mul(COIN)
        .and_then(|v| v.checked_add(frac))
        .ok_or(ParseError::OutOfRange { what: "amount", text: text.to_string() })
}

/// Parses a JSON amount exactly as the node wrote it (its raw text, e.g. `0.00001920`), in coins.
pub fn amount_from_json_text(raw: &str) -> Result<u64, ParseError> {
    let r = parse_decimal("amount", raw.trim().trim_matches('"'))?;
    let sat = r.checked_mul(&Ratio::integer(COIN as u128)).ok_or(ParseError::BadAmount { text: raw.to_string() })?;
    if sat.den != U1024::from(1u8) || sat.num > U1024::from(u64::MAX) {
        return Err(ParseError::BadAmount { text: raw.to_string() });
    }
    Ok(sat.num.to::<u64>())
}

/// Satoshis as coins with 8 decimals: 312500000 → "3.12500000".
pub fn format_coins(sat: u128) -> String {
    format!("{}.{:08}", sat / COIN as u128, sat % COIN as u128)
}

/// A rate in H/s with an SI prefix for display ("110 TH/s", "1.5 EH/s"); exact digits, floored.
pub fn format_hashrate(h: &Ratio) -> String {
    let prefixes = [(18u32, "E"), (15, "P"), (12, "T"), (9, "G"), (6, "M"), (3, "k")];
    for (exp, p) in prefixes {
        let unit = Ratio::integer(10u128.pow(exp));
        if !h.lt(&unit) {
            let v = h.checked_div(&unit).expect("non-zero unit");
            return format!("{} {p}H/s", v.to_decimal_trimmed(6));
        }
    }
    format!("{} H/s", h.to_decimal_trimmed(6))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: u128, d: u128) -> Ratio {
        Ratio::new(U1024::from(n), U1024::from(d)).unwrap().reduced()
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(parse_decimal("x", "42").unwrap(), r(42, 1));
        assert_eq!(parse_decimal("x", "0.1").unwrap(), r(1, 10));
        assert_eq!(parse_decimal("x", "1.1e14").unwrap(), r(110_000_000_000_000, 1));
        assert_eq!(parse_decimal("x", "1E-3").unwrap(), r(1, 1000));
        assert_eq!(parse_decimal("x", "+.5").unwrap(), r(1, 2));
        assert!(matches!(parse_decimal("x", "-1"), Err(ParseError::Negative { .. })));
        assert!(matches!(parse_decimal("x", "1.2.3"), Err(ParseError::NotANumber { .. })));
        assert!(matches!(parse_decimal("x", ""), Err(ParseError::NotANumber { .. })));
        assert!(matches!(parse_positive("x", "0.000"), Err(ParseError::Zero { .. })));
    }

    #[test]
    fn hashrates_with_si_prefixes() {
        let th110 = r(110_000_000_000_000, 1);
        for t in ["110TH/s", "110 TH/s", "110T", "110 T", "1.1e14", "110th/s", "0.11 PH/s", "110000 GH"] {
            assert_eq!(parse_hashrate(t).unwrap(), th110, "{t}");
        }
        assert_eq!(parse_hashrate("1E").unwrap(), r(1_000_000_000_000_000_000, 1));
        assert_eq!(parse_hashrate("2.5kH/s").unwrap(), r(2500, 1));
        assert_eq!(parse_hashrate("0.5").unwrap(), r(1, 2));
        assert!(matches!(parse_hashrate("110 XH/s"), Err(ParseError::UnknownHashUnit { .. })));
        assert!(matches!(parse_hashrate("110 mH/s"), Err(ParseError::UnknownHashUnit { .. })));
        assert!(matches!(parse_hashrate("110 TB/s"), Err(ParseError::UnknownHashUnit { .. })));
        assert!(matches!(parse_hashrate("0 TH/s"), Err(ParseError::Zero { .. })));
        assert!(matches!(parse_hashrate("-5T"), Err(ParseError::Negative { .. })));
        assert!(matches!(parse_hashrate("TH/s"), Err(ParseError::UnknownHashUnit { .. })));
    }

    #[test]
    fn decimals_found_by_fuzzing() {
        // fuzz/fuzz_targets/payout_numbers.rs: 4E76 parsed but its own 77-digit decimal did not.
        let r = parse_decimal("value", "4E76").unwrap();
        assert_eq!(parse_decimal("value", &r.to_string()).unwrap(), r);
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935"; // 2^256 - 1
        assert_eq!(parse_decimal("value", max).unwrap().to_string(), max);
        // A fraction past 1024 digits made a zero denominator (10^1024 wraps in U1024), and
        // displaying the value divided by zero.
        let zeros = "0".repeat(1100);
        assert!(parse_decimal("value", &format!("0.{zeros}")).unwrap().is_zero());
        assert_eq!(parse_decimal("value", &format!("0.{zeros}")).unwrap().to_string(), "0");
        assert!(matches!(parse_decimal("value", &format!("0.{zeros}1")), Err(ParseError::OutOfRange { .. })));
        assert!(matches!(parse_decimal("value", &format!("1{zeros}")), Err(ParseError::OutOfRange { .. })));
        assert!(matches!(parse_hashrate(&format!("0.{zeros}1 TH/s")), Err(ParseError::OutOfRange { .. })));
    }

    #[test]
    fn hashrate_ending_in_multibyte_char_is_refused() {
        // Found by fuzzing (fuzz/fuzz_targets/payout_numbers.rs): a unit check sliced inside 'Я'.
        for text in ["\u{42f}H.", "\u{42f}", "110 T\u{6cc}", "5\u{1f600}h", "é"] {
            assert!(parse_hashrate(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn amounts_in_coins_or_satoshis() {
        assert_eq!(parse_amount("3.125").unwrap(), 312_500_000);
        assert_eq!(parse_amount("312500000sat").unwrap(), 312_500_000);
        assert_eq!(parse_amount("1000 sats").unwrap(), 1000);
        assert_eq!(parse_amount("0.00000001").unwrap(), 1);
        assert_eq!(parse_amount("50").unwrap(), 5_000_000_000);
        assert!(parse_amount("0.000000001").is_err()); // 9 places: below a satoshi
        assert!(parse_amount("1.5sat").is_err());
        assert!(parse_amount("3.125e0").is_err());
        assert!(matches!(parse_amount("-1"), Err(ParseError::Negative { .. })));
        assert_eq!(amount_from_json_text("0.00001920").unwrap(), 1920);
        assert_eq!(amount_from_json_text("1.92e-5").unwrap(), 1920);
        assert!(amount_from_json_text("0.000000015").is_err());
    }

    #[test]
    fn display() {
        assert_eq!(r(1, 3).to_decimal(4), "0.3333");
        assert_eq!(r(1, 3).to_decimal_trimmed(4), "0.3333…");
        assert_eq!(r(5, 2).to_decimal_trimmed(4), "2.5");
        assert_eq!(format_coins(312_500_000), "3.12500000");
        assert_eq!(format_hashrate(&r(110_000_000_000_000, 1)), "110 TH/s");
        assert_eq!(format_hashrate(&r(1, 2)), "0.5 H/s");
    }
}
