//! `ckpool bench`'s hot-path readers of server lines (`fast_answer`, `fast_notify`), which skip
//! serde_json: never a panic, and an accepted answer carries the id a JSON parse reads.
//! (`ckpool mine` reads server lines with serde_json, `Job::from_notify` and
//! `Difficulty::from_json`: the notify and difficulty targets.)
#![no_main]
use ckpool::bench::{fast_answer, fast_notify, Answer};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let answer = fast_answer(text);
    let _ = fast_notify(text);
    // (A JSON parse keeps the last of repeated keys: compare single-id lines without escapes.)
    let one_id = text.matches("\"id\"").count() == 1 && !text.contains('\\');
    if let (Some(Answer::Ok(id)), Ok(v), true) = (answer, serde_json::from_str::<Value>(text), one_id) {
        assert_eq!(v["id"].as_u64(), Some(id), "{text}");
    }
});
