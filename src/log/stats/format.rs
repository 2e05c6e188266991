//! ckpool's number formats (`%g`, `suffix_string`, its reals) and the atomic file write.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::difficulty::{Difficulty, SCALE};

/// Hash per second of a rate of 10^-12 difficulty-1 shares per second (display).
pub(super) fn hashrate(rate: u128) -> f64 {
    rate as f64 / SCALE as f64 * 4_294_967_296.0
}

/// A difficulty field as a previous run wrote it (exact decimal, integer or real).
pub(super) fn diff_field(v: &Value, key: &str) -> Difficulty {
    v.get(key).and_then(|x| Difficulty::from_json(x).ok()).unwrap_or(Difficulty::ZERO)
}

/// ckpool's `dsps_from_key`: "1.23T" → difficulty-1 shares per second, as 10^-12 units.
pub(super) fn dsps_from_key(v: &Value, key: &str) -> u128 {
    let Some(s) = v.get(key).and_then(Value::as_str) else { return 0 };
    let end =
        s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-' || c == '+')).unwrap_or(s.len());
    let Ok(mut x) = s[..end].parse::<f64>() else { return 0 };
    let mul = match s[end..].chars().next() {
        Some('K') => 1e3,
        Some('M') => 1e6,
        Some('G') => 1e9,
        Some('T') => 1e12,
        Some('P') => 1e15,
        Some('E') => 1e18,
        _ => 1.0,
    };
    x *= mul / 4_294_967_296.0 * SCALE as f64;
    if x.is_finite() && x > 0.0 {
        x as u128
    } else {
        0
    }
}

/// C's `printf("%.{prec}g", x)`.
pub fn fmt_g(x: f64, prec: usize) -> String {
    if x == 0.0 {
        return "0".into();
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let p = prec.max(1);
    let sci = format!("{:.*e}", p - 1, x);
    let (mant, exp) = sci.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent digits");
    let strip = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= p as i32 {
        format!("{}e{}{:02}", strip(mant), if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        strip(&format!("{:.*}", (p as i32 - 1 - exp) as usize, x))
    }
}

/// A real as jansson dumps it with `JSON_REAL_PRECISION(prec)`: `%.{prec}g`, ".0" added to
/// integral values, exponent without '+' or leading zeros.
pub fn json_real(x: f64, prec: usize) -> String {
    let mut s = fmt_g(x, prec);
    if !s.contains('.') && !s.contains('e') && !s.contains('n') && !s.contains('i') {
        s.push_str(".0");
    }
    if let Some(i) = s.find('e') {
        let (m, e) = s.split_at(i + 1);
        let neg = e.starts_with('-');
        let digits = e.trim_start_matches(['+', '-']).trim_start_matches('0');
        s = format!("{m}{}{}", if neg { "-" } else { "" }, if digits.is_empty() { "0" } else { digits });
    }
    s
}

/// A difficulty where ckpool writes a real: exact decimal, ".0" when whole.
pub(super) fn real_difficulty(d: Difficulty) -> String {
    let s = d.to_string();
    if s.contains('.') {
        s
    } else {
        s + ".0"
    }
}

pub(super) fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

/// ckpool's `suffix_string(val, buf, 16, 0)`: "%.3g" with K/M/G/T/P/E, or a truncated integer
/// below 1000.
pub fn suffix_string(val: f64) -> String {
    const UNITS: [(f64, &str); 6] = [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")];
    for (scale, suffix) in UNITS {
        if val >= scale {
            return format!("{}{suffix}", fmt_g(val / scale, 3));
        }
    }
    format!("{}", val.max(0.0) as u32)
}

/// Writes `text` to `path` atomically: a temporary file beside it, then rename.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let res = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        // A cut temporary file (ENOSPC) would only hold space the next write needs.
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// A user name that is safe as a file name under logdir/users.
pub(super) fn file_name_ok(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0']) && name.len() <= 200
}
