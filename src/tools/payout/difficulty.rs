//! `ckpool difficulty`: the epoch, the projected next difficulty and the network hashrate.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::json;

use super::{check_common, parse_nbits, ratio_json, show_exact, NodeArgs};
use crate::payout::exact::{format_hashrate, parse_positive};
use crate::payout::formula;

/// block of the tip's epoch to the tip). With a node (--config or --rpc-url) all three are read.
#[derive(Debug, Clone, Args)]
pub struct DifficultyArgs {
    /// Current difficulty (exact decimal)
    #[arg(long, value_name = "D", conflicts_with = "nbits", allow_hyphen_values = true)]
    pub difficulty: Option<String>,
    /// Current difficulty as compact nbits in hex
    #[arg(long, value_name = "HEX")]
    pub nbits: Option<String>,
    /// Tip height
    #[arg(long, value_name = "HEIGHT")]
    pub height: Option<u64>,
    /// Seconds from the first block of the current epoch to the tip
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub elapsed: Option<i64>,
    /// T: target seconds per block
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub block_time: u64,
    /// B: blocks per difficulty period
    #[arg(long, value_name = "BLOCKS", default_value_t = 2016)]
    pub period: u64,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Runs `ckpool difficulty`.
pub fn run_difficulty(args: DifficultyArgs) -> Result<()> {
    check_common(args.block_time, args.period)?;
    let (d, d_source, height, elapsed, first_time) = match args.node.connect()? {
        None => {
            let (d, src) = match (&args.difficulty, &args.nbits) {
                (Some(d), _) => (parse_positive("difficulty", d)?, "given".to_string()),
                (None, Some(n)) => {
                    let (bits, d) = parse_nbits(n)?;
                    (d, format!("given nbits {bits:08x}"))
                }
                _ => bail!("offline mode needs --difficulty or --nbits, --height and --elapsed (or a node)"),
            };
            let height = args.height.ok_or_else(|| anyhow!("offline mode needs --height (the tip height)"))?;
            let elapsed = args.elapsed.ok_or_else(|| {
                anyhow!("offline mode needs --elapsed (seconds from the epoch's first block to the tip)")
            })?;
            (d, src, height, elapsed, None)
        }
        Some((chain, _)) => {
            let height = match args.height {
                Some(h) => {
                    let tip = chain.height()?;
                    if h > tip {
                        bail!("--height {h} is in the future: the node's tip is height {tip}");
                    }
                    h
                }
                None => chain.height()?,
            };
            let tip = chain.header_at(height)?;
            let first = chain.header_at(height - height % args.period)?;
            let d = formula::difficulty_from_nbits(tip.bits)
                .ok_or_else(|| anyhow!("block {height} has invalid nbits {:08x}", tip.bits))?;
            (d, format!("nbits {:08x} of block {height}", tip.bits), height, tip.time - first.time, Some(first.time))
        }
    };
    let epoch = height / args.period;
    let first = epoch * args.period;
    let intervals = height - first;
    let hashrate = formula::network_hashrate(&d, args.block_time).ok_or_else(|| anyhow!("overflow"))?;
    let projection = formula::project_retarget(&d, args.period, args.block_time, intervals, elapsed);
    let next_hashrate = projection.as_ref().and_then(|r| formula::network_hashrate(&r.new_difficulty, args.block_time));
    if args.json {
        let out = json!({
            "height": height, "epoch": epoch, "epoch_first_height": first, "epoch_first_time": first_time,
            "blocks_into_epoch": intervals + 1, "intervals_measured": intervals,
            "blocks_left": args.period - intervals - 1, "next_epoch_height": first + args.period,
            "elapsed": elapsed, "block_time": args.block_time, "period": args.period,
            "difficulty": ratio_json(&d), "difficulty_source": d_source,
            "network_hashrate_hs": ratio_json(&hashrate),
            "projection": projection.map(|r| json!({
                "target_timespan": r.target_timespan,
                "projected_actual": ratio_json(&r.actual),
                "used_actual": ratio_json(&r.used),
                "clamp": r.clamp,
                "next_difficulty": ratio_json(&r.new_difficulty),
                "next_network_hashrate_hs": next_hashrate.as_ref().map(ratio_json),
            })),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "Height {height}: epoch {epoch} (heights {first}..={}), block {} of {}",
        first + args.period - 1,
        intervals + 1,
        args.period
    );
    println!("  difficulty          {}  [{d_source}]", show_exact(&d));
    println!("  network hashrate    {} (D × 2^32 / {} s)", format_hashrate(&hashrate), args.block_time);
    match projection {
        None => println!("  projected next difficulty: needs at least two blocks of the epoch (one interval)"),
        Some(r) => {
            println!(
                "  elapsed             {elapsed} s over {intervals} interval(s); projected over {} intervals: {} s \
                 (target {} s = {} × {} s)",
                args.period - 1,
                r.actual.to_decimal_trimmed(2),
                r.target_timespan,
                args.period,
                args.block_time
            );
            let clamp = match r.clamp {
                formula::Clamp::None => "not clamped".to_string(),
                formula::Clamp::MaxIncrease => {
                    format!("clamped to target/4 = {} s (at most ×4)", r.used.to_decimal_trimmed(2))
                }
                formula::Clamp::MaxDecrease => {
                    format!("clamped to target×4 = {} s (at least ÷4)", r.used.to_decimal_trimmed(2))
                }
            };
            println!("  projected next difficulty {}  ({clamp})", r.new_difficulty.to_decimal_trimmed(12));
            if let Some(h) = next_hashrate {
                println!("  projected network hashrate {}", format_hashrate(&h));
            }
        }
    }
    Ok(())
}
