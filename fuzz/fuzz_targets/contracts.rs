//! A contracts file (CSV or JSON, chosen by the first input byte's parity as the extension
//! would be): `parse_contracts`; each contract's hashrate text parses to its hashrate, and
//! contracts given as heights go through validation and pro-rating.
#![no_main]
use std::path::Path;

use ckpool::payout::contracts::{active_blocks, parse_contracts, validate, Point, ResolvedContract};
use ckpool::payout::exact::parse_hashrate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let path = Path::new(if first & 1 == 0 { "contracts.csv" } else { "contracts.json" });
    let contracts = match parse_contracts(text, path) {
        Ok(c) => c,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    let mut resolved = Vec::new();
    for c in &contracts {
        assert!(!c.customer.is_empty());
        assert_eq!(parse_hashrate(&c.hashrate_text).expect("its own hashrate text"), c.hashrate);
        if let (Point::Height(start), Point::Height(end)) = (c.start, c.end) {
            resolved.push(ResolvedContract {
                customer: c.customer.clone(),
                hashrate_text: c.hashrate_text.clone(),
                hashrate: c.hashrate,
                start,
                end,
            });
        }
    }
    if validate(&resolved).is_ok() {
        for c in &resolved {
            let n = active_blocks(c, 864_864, 866_879);
            assert!(n <= 2016);
        }
    }
});
