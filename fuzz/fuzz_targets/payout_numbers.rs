//! What an operator types for `ckpool payout` / `ckpool difficulty`: decimals, hashrates,
//! amounts, heights and dates, nbits. Amounts print back to themselves; exact decimals too.
#![no_main]
use ckpool::tools::payout::parse_nbits;
use ckpool::payout::contracts::parse_point;
use ckpool::payout::exact::{
    amount_from_json_text, format_coins, format_hashrate, parse_amount, parse_decimal, parse_hashrate, parse_positive,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(r) = parse_decimal("value", text) {
        let shown = r.to_string();
        if !shown.ends_with('…') {
            assert_eq!(parse_decimal("value", &shown).expect("a shown decimal parses"), r, "{text:?} -> {shown}");
        }
        let _ = r.to_decimal(8);
    }
    if let Ok(r) = parse_positive("difficulty", text) {
        assert!(!r.is_zero());
    }
    match parse_hashrate(text) {
        Ok(h) => {
            assert!(!h.is_zero());
            let _ = format_hashrate(&h);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(sat) = parse_amount(text) {
        let coins = format_coins(sat as u128);
        assert_eq!(parse_amount(&coins), Ok(sat), "{text:?} -> {coins}");
        assert_eq!(parse_amount(&format!("{sat}sat")), Ok(sat));
    }
    let _ = amount_from_json_text(text);
    let _ = parse_point("start", text).map_err(|e| e.to_string());
    let _ = parse_nbits(text).map_err(|e| e.to_string());
});
