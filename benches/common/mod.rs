//! What the benches share: a mainnet-shaped template (block 840,000's header fields, a segwit
//! commitment) around the transactions each bench needs.

use ckpool::work::template::Template;
use serde_json::{json, Value};

/// A template at height 840,000 holding `transactions` (GBT's transaction objects).
pub fn mainnet_template(transactions: Vec<Value>) -> Template {
    Template::from_gbt(&json!({
        "version": 0x2000_0000,
        "previousblockhash": "00000000000000000002a7c4c1e48d76c5a37902165a270156b7a8d72728a054",
        "transactions": transactions,
        "coinbaseaux": {},
        "coinbasevalue": 318_000_000u64,
        "bits": "17034219",
        "curtime": 1_713_571_767,
        "height": 840_000,
        "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
    }))
    .unwrap()
}
