//! `ckpool pplns --config F`: what the next block's coinbase pays under PPLNS and how each part is
//! derived from the share log, so anyone can audit a coinbase against the shares (docs/payout.md).
//! It reads the window back exactly as the pool does at start (`pool/pplns/`: the snapshot and
//! the share log after it), asks the node for the template (the block's value and the network's
//! difficulty) and builds the coinbase with the pool's own builder. `--height H` audits a past
//! block instead (`pplns_block.rs`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bitcoin::{Address, Network, ScriptBuf};
use clap::Args;
use serde_json::{json, Value};

use crate::bitcoind::Rpc;
use crate::config::Config;
use crate::difficulty::Difficulty;
use crate::pool::pplns::{window_units, Payees};
use crate::pool::{network_of, payout_script};
use crate::work::coinbase::{self, CoinbaseConfig};
use crate::work::Template;

#[derive(Debug, Args)]
pub struct PplnsArgs {
    /// The pool's config: its btcd entries, btcaddress, btcsig, logdir (the share log) and the
    /// PPLNS keys
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Audit the block at this height instead (found by this pool): each output checked against
    /// the window rebuilt from the share log as it stood when the coinbase was built
    #[arg(long, value_name = "H")]
    pub height: Option<u32>,
}

pub fn run(args: PplnsArgs) -> Result<()> {
    let cfg = Config::load(&args.config)?;
    cfg.require_pool()?;
    let Some(rules) = cfg.pplns.clone() else {
        bail!("{}: no \"payout_scheme\": \"pplns\"; every block pays btcaddress", args.config.display());
    };
    if let Some(height) = args.height {
        if !super::pplns_block::audit(&cfg, &rules, height, args.json, address_of)? {
            bail!("block {height}: its coinbase does not match the window the share log gives");
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rpc = Rpc::new(&cfg.btcd, Duration::from_secs(30));
    let (script, chain, gbt) = rt.block_on(async {
        let (script, chain) = payout_script(&rpc, &cfg.btcaddress).await?;
        let gbt = rpc
            .call("getblocktemplate", json!([{"rules": ["segwit"]}]))
            .await
            .with_context(|| format!("getblocktemplate from {}", rpc.node_label(0)))?;
        anyhow::Ok((script, chain, gbt))
    })?;
    let template = Template::from_gbt(&gbt).context("the node's template")?;
    let network = network_of(&chain);
    let netdiff = Difficulty::from_compact(template.nbits).unwrap_or_default();
    let payees = Payees::new(network, rules.clone());
    let read = payees.replay(&cfg.logdir, netdiff);
    let plan = payees.plan(netdiff);
    let mut cb = CoinbaseConfig::new(script.clone(), &cfg.btcsig);
    cb.nonce1_len = cfg.nonce1length;
    cb.nonce2_len = cfg.nonce2length;
    cb.pplns = Some(plan.clone());
    let built = coinbase::build(&template, &cb).context("building the coinbase")?;
    let split = built.split.clone().expect("a PPLNS coinbase has its split");

    let name = |s: &ScriptBuf| address_of(s, network);
    let value = template.coinbase_value;
    let d = value - split.fee;
    let weight = |s: &ScriptBuf| plan.weights.get(s).copied().unwrap_or(0);
    let units = window_units(rules.window, netdiff);
    let unit = |w: u128| Difficulty::from_units(w).to_string();
    if args.json {
        let paid: Vec<Value> =
            split.paid.iter().map(|(s, v)| json!({"address": name(s), "weight": unit(weight(s)), "sat": v})).collect();
        let carried: Vec<Value> = split
            .carried
            .iter()
            .map(|s| json!({"address": name(s), "weight": unit(weight(s)), "would_be_sat": mul_div(d, weight(s), split.total)}))
            .collect();
        let out = json!({
            "height": template.height,
            "network_difficulty": netdiff.to_string(),
            "window": unit(units),
            "window_total": unit(split.total),
            "paid_total": unit(split.total_paid),
            "value": value,
            "fee": split.fee,
            "remainder": split.remainder,
            "pool": {"address": cfg.btcaddress, "sat": split.pool()},
            "paid": paid,
            "carried": carried,
            "share_log": {"files": read.files, "lines": read.lines, "shares": read.shares},
            "coinbase_bytes": built.size(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "next block: height {}, value {value} sat; network difficulty {netdiff}; window {} x {netdiff} = {}",
        template.height,
        rules.window,
        unit(units)
    );
    println!(
        "share log {}: {} accepted share(s) in {} file(s) read back; the window holds {} of difficulty",
        cfg.logdir.display(),
        read.shares,
        read.files,
        unit(split.total)
    );
    println!(
        "pool fee {}.{:02} % = floor({value} x {} / 10000) = {} sat; the miners' part D = {d} sat",
        rules.fee_bp / 100,
        rules.fee_bp % 100,
        rules.fee_bp,
        split.fee
    );
    println!("paid (floor(D x weight / {}), the weight of those paid):", unit(split.total_paid));
    for (s, v) in &split.paid {
        println!("  {:<64} weight {:>24}  {v:>16} sat", name(s), unit(weight(s)));
    }
    if !split.carried.is_empty() {
        println!(
            "carried (part floor(D x weight / {}) below {} sat, or no room among {} outputs in {} bytes):",
            unit(split.total),
            rules.min_output,
            rules.max_outputs,
            rules.coinbase_max
        );
        for s in &split.carried {
            println!(
                "  {:<64} weight {:>24}  {:>16} sat not paid by this block",
                name(s),
                unit(weight(s)),
                mul_div(d, weight(s), split.total)
            );
        }
    }
    println!(
        "pool {}: fee {} + remainder {} = {} sat; coinbase {} bytes (bound {})",
        cfg.btcaddress,
        split.fee,
        split.remainder,
        split.pool(),
        built.size(),
        rules.coinbase_max
    );
    Ok(())
}

fn mul_div(d: u64, w: u128, total: u128) -> u64 {
    if total == 0 {
        return 0;
    }
    (ruint::aliases::U256::from(d) * ruint::aliases::U256::from(w) / ruint::aliases::U256::from(total)).to::<u64>()
}

pub fn address_of(script: &ScriptBuf, network: Option<Network>) -> String {
    network
        .and_then(|n| Address::from_script(script, n).ok())
        .map_or_else(|| format!("script {}", crate::hex::encode(script.as_bytes())), |a| a.to_string())
}
