//! `ckpool pplns --height H`: audits a block this pool found under PPLNS. The window its coinbase
//! was split by is rebuilt from the share log up to the moment that window was taken (`cut`,
//! recorded in `logdir/pplns.blocks` when the block was found, with the carries in effect then),
//! split again with the pool's rules, and each expected output is checked against the block's
//! coinbase as the node has it. docs/payout.md ("Auditing a past block").

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bitcoin::{Network, ScriptBuf};
use serde_json::{json, Value};

use crate::bitcoind::Rpc;
use crate::config::{Config, Pplns};
use crate::difficulty::Difficulty;
use crate::payout::pplns::{split, Rules, Window};
use crate::pool::pplns::journal::{self, time_text};
use crate::pool::pplns::replay::{self, Bounds};
use crate::pool::{network_of, payout_script, username_script};
use crate::work::coinbase::output_size;

/// One output the audit expects or found.
struct Output {
    script: ScriptBuf,
    expected: Option<u64>,
    actual: Option<u64>,
}

/// Prints the audit of the block at `height`; `Ok(false)` when an output does not match.
pub fn audit(
    cfg: &Config,
    rules: &Pplns,
    height: u32,
    as_json: bool,
    name: impl Fn(&ScriptBuf, Option<Network>) -> String,
) -> Result<bool> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rpc = Rpc::new(&cfg.btcd, Duration::from_secs(30));
    let (pool_script, chain, hash, block) = rt.block_on(async {
        let (script, chain) = payout_script(&rpc, &cfg.btcaddress).await?;
        let hash = rpc.call("getblockhash", json!([height])).await.with_context(|| format!("getblockhash {height}"))?;
        let hash = hash.as_str().context("getblockhash: not a string")?.to_string();
        let hex = rpc.call("getblock", json!([hash, 0])).await.with_context(|| format!("getblock {hash}"))?;
        let bytes = crate::hex::decode(hex.as_str().context("getblock: not hex")?).context("getblock: not hex")?;
        let block: bitcoin::Block = bitcoin::consensus::encode::deserialize(&bytes).context("the node's block")?;
        anyhow::Ok((script, chain, hash, block))
    })?;
    let network = network_of(&chain);
    let Some(rec) = journal::find_block(&cfg.logdir, &hash) else {
        let in_blocks_log = std::fs::read_to_string(cfg.logdir.join("blocks.log")).is_ok_and(|t| t.contains(&hash));
        bail!(
            "block {height} ({hash}) is not in {}: {}",
            cfg.logdir.join(journal::BLOCKS_FILE).display(),
            if in_blocks_log {
                "blocks.log has it, found before PPLNS recorded its blocks or without PPLNS"
            } else {
                "this pool did not find it"
            }
        );
    };

    // The window as it stood at the cut: the share log up to it, the carries in effect then.
    let bounds = Bounds { until: Some(rec.cut), max_height: Some(height), after: None };
    let (shares, read) = replay::read_back(&cfg.logdir, rec.window, &bounds);
    let mut from_shares: BTreeMap<ScriptBuf, (u64, u128)> = BTreeMap::new();
    for a in &shares {
        if let Ok(s) = username_script(&a.username, network) {
            let e = from_shares.entry(s).or_default();
            e.0 += 1;
            e.1 += a.diff.units();
        }
    }
    let mut window = Window::new(rec.window);
    let counted = replay::rebuild(&mut window, shares, rec.carries.clone(), |u| username_script(u, network).ok());
    let derived = window.weights();

    // The block's value and the room its coinbase left for miners' outputs.
    let cb = block.txdata.first().context("a block without transactions")?;
    let value: u64 = cb.output.iter().map(|o| o.value.to_sat()).sum();
    let miner = |s: &ScriptBuf| *s != pool_script && !s.is_op_return();
    let miners_bytes: usize =
        cb.output.iter().filter(|o| miner(&o.script_pubkey)).map(|o| output_size(o.script_pubkey.as_bytes())).sum();
    let pool_absent = !cb.output.iter().any(|o| o.script_pubkey == pool_script);
    let base = cb.base_size() - miners_bytes + if pool_absent { output_size(pool_script.as_bytes()) } else { 0 };
    let rules = Rules {
        fee_bp: rules.fee_bp,
        min_output: rules.min_output,
        max_outputs: rules.max_outputs.min(250),
        bytes: rules.coinbase_max.saturating_sub(base),
    };
    let s = split(value, &derived, &rules, |k| output_size(k.as_bytes()));

    let mut outputs: Vec<Output> =
        s.paid.iter().map(|(k, v)| Output { script: k.clone(), expected: Some(*v), actual: None }).collect();
    if s.pool() > 0 {
        outputs.push(Output { script: pool_script.clone(), expected: Some(s.pool()), actual: None });
    }
    for o in cb.output.iter().filter(|o| !o.script_pubkey.is_op_return()) {
        match outputs.iter_mut().find(|e| e.script == o.script_pubkey && e.actual.is_none()) {
            Some(e) => e.actual = Some(o.value.to_sat()),
            None => {
                outputs.push(Output { script: o.script_pubkey.clone(), expected: None, actual: Some(o.value.to_sat()) })
            }
        }
    }
    let all_match = outputs.iter().all(|o| o.expected == o.actual);
    let unit = |w: u128| Difficulty::from_units(w).to_string();
    let addr = |k: &ScriptBuf| name(k, network);
    let mut payees: Vec<&ScriptBuf> = derived.keys().chain(rec.weights.keys()).collect();
    payees.sort();
    payees.dedup();
    let carried = |k: &ScriptBuf| rec.carries.iter().find(|c| c.script == *k).map(|c| c.weight);
    let sat = |v: Option<u64>| v.map_or(Value::Null, |v| json!(v));

    if as_json {
        let payees: Vec<Value> = payees
            .iter()
            .map(|k| {
                let (n, w) = from_shares.get(*k).copied().unwrap_or_default();
                let (d, r) = (derived.get(*k).copied().unwrap_or(0), rec.weights.get(*k).copied().unwrap_or(0));
                json!({
                    "address": addr(k),
                    "shares": n,
                    "share_weight": unit(w),
                    "carried_weight": carried(k).map(unit),
                    "weight": unit(d),
                    "recorded_weight": unit(r),
                    "weight_match": d == r,
                })
            })
            .collect();
        let outs: Vec<Value> = outputs
            .iter()
            .map(|o| json!({"address": addr(&o.script), "expected_sat": sat(o.expected), "actual_sat": sat(o.actual), "match": o.expected == o.actual}))
            .collect();
        let out = json!({
            "height": height,
            "hash": hash,
            "found": time_text(rec.found),
            "cut": time_text(rec.cut),
            "window": unit(rec.window),
            "window_total": unit(s.total),
            "paid_total": unit(s.total_paid),
            "value": value,
            "fee": s.fee,
            "remainder": s.remainder,
            "share_log": {"files": read.files, "lines": read.lines, "shares": counted.shares, "carries": counted.carries},
            "payees": payees,
            "outputs": outs,
            "match": all_match,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(all_match);
    }
    println!(
        "block {height} {hash}: found {}, its coinbase built from the window as of {} ({} of difficulty long)",
        time_text(rec.found),
        time_text(rec.cut),
        unit(rec.window)
    );
    println!(
        "share log {}: {} accepted share(s) up to then in {} file(s), {} carried credit(s) from pplns.blocks",
        cfg.logdir.display(),
        counted.shares,
        read.files,
        counted.carries
    );
    println!("payees (weight = shares in the window, a carry replacing what came before it):");
    for k in &payees {
        let (n, w) = from_shares.get(*k).copied().unwrap_or_default();
        let (d, r) = (derived.get(*k).copied().unwrap_or(0), rec.weights.get(*k).copied().unwrap_or(0));
        let carry = carried(k).map_or(String::new(), |c| format!(", carried {}", unit(c)));
        let check = if d == r { "= recorded".to_string() } else { format!("!= recorded {}", unit(r)) };
        println!("  {:<64} {n} share(s) of {}{carry}: weight {} {check}", addr(k), unit(w), unit(d));
    }
    println!(
        "value {value} sat; fee {} sat; D = {} sat split by floor(D x weight / {}); remainder {} sat",
        s.fee,
        value - s.fee,
        unit(s.total_paid),
        s.remainder
    );
    for o in &outputs {
        let text = |v: Option<u64>| v.map_or("-".to_string(), |v| format!("{v} sat"));
        let verdict = if o.expected == o.actual { "match" } else { "MISMATCH" };
        println!(
            "  {:<64} expected {:>18}  coinbase {:>18}  {verdict}",
            addr(&o.script),
            text(o.expected),
            text(o.actual)
        );
    }
    println!("{}", if all_match { "every output matches" } else { "the coinbase does not match the share log" });
    Ok(all_match)
}
