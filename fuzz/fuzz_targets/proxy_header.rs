//! A connection's first bytes on a PROXY-protocol listener: `proxy_protocol::parse`
//! never panics; a complete header's length is within the bytes given and the bounds; parsing
//! a prefix of the bytes never gives a different header (more bytes only complete one).
#![no_main]
use ckpool::proxy_protocol::{parse, ParseError, V1_MAX, V2_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Ok((header, len)) => {
            assert!(len <= data.len() && len <= V1_MAX.max(V2_MAX));
            // The same header from exactly its bytes, and only Incomplete before them.
            assert_eq!(parse(&data[..len]), Ok((header, len)));
            for cut in 0..len {
                if let Ok(x) = parse(&data[..cut]) {
                    panic!("a header from {cut} of {len} bytes: {x:?}");
                }
            }
        }
        Err(ParseError::Incomplete { need }) => assert!(need >= 1),
        Err(_) => {}
    }
});
