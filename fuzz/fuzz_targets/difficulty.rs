//! Difficulty text (config, suggest_difficulty, set_difficulty, `ckpool difficulty`):
//! `Difficulty::from_str` and `from_json`. Whatever parses displays as a number that parses to
//! itself, as JSON too, and its target maps back within one unit.
#![no_main]
use ckpool::difficulty::Difficulty;
use ckpool::sv1::proto::suggested_difficulty;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(d) = text.parse::<Difficulty>() {
        let shown = d.to_string();
        assert_eq!(shown.parse::<Difficulty>(), Ok(d), "{text:?} -> {shown}");
        let mut w = Vec::new();
        d.write_decimal(&mut w);
        assert_eq!(w, shown.as_bytes());
        assert_eq!(Difficulty::from_json(&Value::String(text.to_string())), Ok(d));
        // A JSON number is read through f64 (serde_json without arbitrary_precision): exact up
        // to 15 significant digits, which is what from_json promises.
        let significant = shown.trim_start_matches(['0', '.']).bytes().filter(u8::is_ascii_digit).count();
        let exact = significant <= 15 || shown.parse::<u64>().is_ok();
        if let (Ok(n), true) = (serde_json::from_str::<Value>(&shown), exact) {
            assert_eq!(Difficulty::from_json(&n), Ok(d), "{shown} as a JSON number");
        }
        if d.units() >= 233 {
            let back = Difficulty::from_target(&d.to_target());
            assert!(back.units().abs_diff(d.units()) <= 1, "{d} -> {back}");
        }
        let _ = d.as_f64();
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let _ = Difficulty::from_json(&v);
        let _ = suggested_difficulty(&v);
    }
});
