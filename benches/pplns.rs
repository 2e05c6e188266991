//! PPLNS's costs (issue 30, docs/performance.md): a coinbase rebuilt from the window with 100 and
//! 1,000 payees (the snapshot of the window's weights, the split, the coinbase bytes), and a
//! tally credited to the window (what the statistics task does per session batch).
//!
//! Run: `cargo bench --bench pplns` (release) or `cargo test --bench pplns` (once, test profile).

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use bitcoin::ScriptBuf;
use criterion::{criterion_group, criterion_main, Criterion};

use ckpool::payout::pplns::{Rules, Window, SLICES};
use ckpool::work::coinbase::{self, CoinbaseConfig, PplnsPlan};
use ckpool::work::template::Template;

fn payee(i: u32) -> ScriptBuf {
    let mut b = vec![0x00, 0x14];
    b.extend_from_slice(&[0u8; 16]);
    b.extend_from_slice(&i.to_le_bytes());
    ScriptBuf::from_bytes(b)
}

/// A window holding `payees` miners' shares, each in several slices (shares over time).
fn window(payees: u32) -> Window<ScriptBuf> {
    let mut w = Window::new(SLICES * 1_000_000);
    for round in 0..20u32 {
        for i in 0..payees {
            w.push(&payee(i), 1_000 + ((i * 7 + round) % 13) as u128 * 100);
        }
    }
    w
}

fn template() -> Template {
    common::mainnet_template(Vec::new())
}

fn rebuild(c: &mut Criterion) {
    let t = template();
    for n in [100u32, 1_000] {
        let w = window(n);
        let base = CoinbaseConfig::new(payee(u32::MAX), "/ckpool-rs/");
        c.bench_function(&format!("pplns coinbase rebuild, {n} payees (snapshot + split + build)"), |b| {
            b.iter(|| {
                let weights: BTreeMap<ScriptBuf, u128> = w.weights();
                let plan = PplnsPlan {
                    weights,
                    rules: Rules { fee_bp: 100, min_output: 10_000, max_outputs: 100, bytes: 0 },
                    coinbase_max: 750,
                    cut: (0, 0),
                    window: w.length(),
                };
                let cfg = CoinbaseConfig { pplns: Some(Arc::new(plan)), ..base.clone() };
                black_box(coinbase::build(&t, &cfg).unwrap())
            })
        });
    }
    let mut w = window(1_000);
    let who = payee(17);
    c.bench_function("pplns window credit (one tally, 1,000 payees in the window)", |b| {
        b.iter(|| w.push(black_box(&who), black_box(1_000)))
    });
}

criterion_group!(benches, rebuild);
criterion_main!(benches);
