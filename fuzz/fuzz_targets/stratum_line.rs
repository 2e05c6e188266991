//! A miner's line: `parse_request`, then the borrowed submit params, the params tree and
//! suggest_difficulty's shapes. The submit parser must read what serde_json reads
//! (as tests/properties.rs checks on generated params), and an echoed id stays valid JSON.
#![no_main]
use ckpool::sv1::proto::{
    id_text, parse_request, push_error, push_result, suggested_difficulty, wants_reply, Param, SubmitParams,
    SUBMIT_PARAMS,
};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = parse_request(data) else { return };
    assert!(!req.method.is_empty());
    let _ = wants_reply(req.id);
    let id = id_text(req.id);
    let mut out = Vec::new();
    push_result(&mut out, id, "true");
    push_error(&mut out, id, 21, "Stale \"job\"\n");
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        // The id is echoed verbatim: JSON by grammar (a number beyond f64, such as 6666e6666,
        // is still JSON, which a tree parse refuses), and the same value where a tree holds it.
        serde_json::from_slice::<&serde_json::value::RawValue>(line).expect("replies are JSON");
        if let (Ok(v), Ok(want)) = (serde_json::from_slice::<Value>(line), serde_json::from_str::<Value>(id)) {
            assert_eq!(v["id"], want);
        }
    }
    let params = req.params_value();
    let _ = suggested_difficulty(&params);
    let sub = SubmitParams::parse(req.params);
    // Compare only where serde_json builds the tree (it refuses numbers out of f64 range).
    let Some(tree) = req.params.and_then(|p| serde_json::from_str::<Value>(p.get()).ok()) else { return };
    match (&tree, sub) {
        (Value::Array(a), Some(p)) => {
            for i in 0..SUBMIT_PARAMS + 2 {
                let want = a.get(i).filter(|_| i < SUBMIT_PARAMS);
                match (want, p.get(i)) {
                    (None, None) => {}
                    (Some(Value::String(s)), Some(Param::Str(got))) => assert_eq!(s, &**got),
                    (Some(Value::Null), Some(Param::Null)) => {}
                    (Some(v), Some(Param::Other)) => assert!(!v.is_string() && !v.is_null(), "{v}"),
                    (w, g) => panic!("param {i}: serde_json reads {w:?}, the submit parser {g:?}"),
                }
            }
        }
        (Value::Array(_), None) => panic!("an array of params refused by the submit parser"),
        (other, Some(_)) => panic!("submit params accepted from a non-array {other}"),
        (_, None) => {}
    }
});
