//! `ckpool payout`: one contract or a contracts file, for one difficulty epoch.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::json;

use super::chain::{Chain, FeeSource, OwnBlocks};
use super::{check_common, parse_nbits, ratio_json, show_exact, NodeArgs, PoolMarks, Sourced};
use crate::payout::contracts::{self, Point, ResolvedContract};
use crate::payout::exact::{format_coins, format_hashrate, parse_amount, parse_hashrate, parse_positive, Ratio};
use crate::payout::formula::{self, Fees, PayoutInput};

/// Where the subsidy comes from in node-aware mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubsidySource {
    /// The halving schedule at the height of the first block of the next epoch
    Schedule,
    /// That block's coinbase value minus its fees, as the node paid it
    Coinbase,
}

/// Mining-contract payout: Payout = [(H × T) / (D × 2^32)] × [(S + F) × B].
///
/// Amounts (--subsidy, --fees, --min-payout, --initial-subsidy) are coins as a plain decimal with
/// at most 8 places ("3.125") or satoshis as an integer with the suffix "sat" ("312500000sat").
/// Hashrates are H/s with an optional SI prefix k/K, M, G, T, P, E and optional "H/s":
/// "110TH/s", "110 T", "1.1e14" (an "e" followed by digits is an exponent; a final "E" is exa).
///
/// Offline: give --hashrate, --difficulty (or --nbits), --subsidy and --fees.
/// With a node (--config or --rpc-url): D is read from the first block of the epoch after the paid
/// one, S from the subsidy schedule at that height, F as the average fee per block of the paid
/// epoch; a value given on the command line replaces the node's.
#[derive(Debug, Clone, Args)]
pub struct PayoutArgs {
    /// H: contract hashrate ("110TH/s", "110 T", "1.1e14")
    #[arg(long, value_name = "RATE", allow_hyphen_values = true)]
    pub hashrate: Option<String>,
    /// D: difficulty at the start of the next epoch (exact decimal, "83148355189239.77")
    #[arg(long, value_name = "D", conflicts_with = "nbits", allow_hyphen_values = true)]
    pub difficulty: Option<String>,
    /// D as compact nbits in hex ("17034219"): D = diff-1 target / target, exactly
    #[arg(long, value_name = "HEX")]
    pub nbits: Option<String>,
    /// S: block subsidy ("3.125" coins or "312500000sat")
    #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
    pub subsidy: Option<String>,
    /// F: average fees per block over the paid period ("0.25" coins or "25000000sat")
    #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
    pub fees: Option<String>,
    /// T: target seconds per block
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub block_time: u64,
    /// B: blocks per difficulty period
    #[arg(long, value_name = "BLOCKS", default_value_t = 2016)]
    pub period: u64,
    /// Epoch to pay (heights N·B .. N·B+B−1); default: the latest completed one
    #[arg(long, value_name = "N")]
    pub epoch: Option<u64>,
    /// Blocks between subsidy halvings
    #[arg(long, value_name = "BLOCKS", default_value_t = 210_000)]
    pub halving_interval: u64,
    /// Subsidy of the first blocks, before any halving
    #[arg(long, value_name = "AMOUNT", default_value = "50")]
    pub initial_subsidy: String,
    /// Where S comes from with a node
    #[arg(long, value_enum, default_value_t = SubsidySource::Schedule)]
    pub subsidy_source: SubsidySource,
    /// Where block fees come from with a node
    #[arg(long, value_enum, default_value_t = FeeSource::Auto)]
    pub fee_source: FeeSource,
    /// Average fees only over blocks this pool mined (btcsig in the coinbase or paying btcaddress)
    #[arg(long)]
    pub own_blocks: bool,
    /// Coinbase signature identifying the pool's blocks (default: btcsig from --config)
    #[arg(long, value_name = "TEXT")]
    pub btcsig: Option<String>,
    /// Pool payout address identifying the pool's blocks (default: btcaddress from --config)
    #[arg(long, value_name = "ADDRESS")]
    pub btcaddress: Option<String>,
    /// Contracts file (CSV "customer,hashrate,start,end" or JSON array); start/end are heights or
    /// UTC dates (dates need a node), end exclusive. Pays every contract for the epoch.
    #[arg(long, value_name = "FILE")]
    pub contracts: Option<PathBuf>,
    /// Skip the first N payouts of each contract (the epoch it starts in counts as the first)
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub skip_first: u64,
    /// Carry balances below this amount to the next epoch (needs --state)
    #[arg(long, value_name = "AMOUNT", allow_hyphen_values = true)]
    pub min_payout: Option<String>,
    /// Balances file (JSON), updated atomically; an epoch already in it is refused
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// With --contracts: beside each payout, the hashrate the pool received from the contract's
    /// username (its customer) over the epoch, from the history store, and its ratio to the contract's
    #[arg(long, requires = "contracts")]
    pub measured: bool,
    /// History database for --measured: a SQLite file or a PostgreSQL connection string
    /// (default: the one --config keeps, logdir/history.sqlite or its dburl)
    #[arg(long, value_name = "FILE|URL", requires = "measured")]
    pub history_db: Option<String>,
    /// Start of the measured window: unix seconds or a UTC date (default: the time of the block
    /// before the epoch's first, from the node)
    #[arg(long, value_name = "TIME", requires = "measured")]
    pub measured_from: Option<String>,
    /// End of the measured window: unix seconds or a UTC date (default: the time of the epoch's last block)
    #[arg(long, value_name = "TIME", requires = "measured")]
    pub measured_to: Option<String>,
    /// Machine-readable output
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Difficulty epoch, projected next difficulty and network hashrate.
///
/// Offline: --difficulty (or --nbits), --height (the tip) and --elapsed (seconds from the first
/// Runs `ckpool payout`.
pub fn run_payout(args: PayoutArgs) -> Result<()> {
    check_common(args.block_time, args.period)?;
    let initial = parse_amount(&args.initial_subsidy).context("--initial-subsidy")?;
    if args.halving_interval == 0 {
        bail!("--halving-interval 0: must be at least 1 block");
    }
    let min_payout = args.min_payout.as_deref().map(parse_amount).transpose().context("--min-payout")?;
    if min_payout.is_some() && args.state.is_none() {
        bail!("--min-payout needs --state FILE to carry balances between epochs");
    }
    if args.contracts.is_none() && args.hashrate.is_none() {
        bail!("give --hashrate (one contract) or --contracts FILE");
    }
    let hashrate = args.hashrate.as_deref().map(parse_hashrate).transpose().context("--hashrate")?;
    let given_d = match (&args.difficulty, &args.nbits) {
        (Some(d), _) => Some(Sourced { value: parse_positive("difficulty", d)?, source: "given".into() }),
        (None, Some(n)) => {
            let (bits, d) = parse_nbits(n)?;
            Some(Sourced { value: d, source: format!("given nbits {bits:08x}") })
        }
        _ => None,
    };
    let given_s = args.subsidy.as_deref().map(parse_amount).transpose().context("--subsidy")?;
    let given_f = args.fees.as_deref().map(parse_amount).transpose().context("--fees")?;

    let node = args.node.connect()?;
    let epoch_info; // (epoch, first, last, next height)
    let (difficulty, subsidy, fees) = match &node {
        None => {
            let missing: Vec<&str> = [
                (given_d.is_none(), "--difficulty or --nbits"),
                (given_s.is_none(), "--subsidy"),
                (given_f.is_none(), "--fees"),
            ]
            .iter()
            .filter(|(m, _)| *m)
            .map(|(_, n)| *n)
            .collect();
            if !missing.is_empty() {
                bail!("offline mode needs {} (or give a node with --config / --rpc-url)", missing.join(", "));
            }
            if args.own_blocks {
                bail!("--own-blocks needs a node (--config or --rpc-url)");
            }
            epoch_info = args.epoch.map(|e| {
                let (f, l) = formula::epoch_bounds(e, args.period).unwrap_or((0, 0));
                (e, f, l, l + 1)
            });
            let s = given_s.unwrap_or(0);
            (
                given_d.unwrap(),
                Sourced { value: s, source: "given".into() },
                Sourced { value: Fees::per_block(given_f.unwrap_or(0)), source: "given".into() },
            )
        }
        Some((chain, marks)) => {
            let (epoch, first, last, next) = node_epoch(&args, chain)?;
            epoch_info = Some((epoch, first, last, next));
            let next_header = chain.header_at(next)?;
            let d = match given_d {
                Some(d) => d,
                None => Sourced {
                    value: formula::difficulty_from_nbits(next_header.bits)
                        .ok_or_else(|| anyhow!("block {next} has invalid nbits {:08x}", next_header.bits))?,
                    source: format!("nbits {:08x} of block {next}", next_header.bits),
                },
            };
            let s = match (given_s, args.subsidy_source) {
                (Some(s), _) => Sourced { value: s, source: "given".into() },
                (None, SubsidySource::Schedule) => Sourced {
                    value: formula::subsidy_at(next, args.halving_interval, initial),
                    source: format!("schedule at height {next}, halving every {}", args.halving_interval),
                },
                (None, SubsidySource::Coinbase) => Sourced {
                    value: chain.subsidy_from_coinbase(&next_header.hash, args.fee_source)?,
                    source: format!("coinbase of block {next} minus its fees"),
                },
            };
            let f = match given_f {
                Some(f) => Sourced { value: Fees::per_block(f), source: "given".into() },
                None => epoch_fees(&args, chain, marks, epoch, first, last)?,
            };
            (d, s, f)
        }
    };

    match &args.contracts {
        None => pay_one(&args, hashrate.expect("checked"), difficulty, subsidy, fees, epoch_info),
        Some(path) => {
            let (epoch, first, last, _) = epoch_info
                .ok_or_else(|| anyhow!("--contracts needs --epoch N (or a node to find the latest completed epoch)"))?;
            pay_contracts(
                &args,
                path,
                node.as_ref().map(|(c, _)| c),
                difficulty,
                subsidy,
                fees,
                epoch,
                first,
                last,
                min_payout,
            )
        }
    }
}

/// The epoch to pay with a node: `--epoch` or the latest completed one, checked against the
/// tip. Returns (epoch, first height, last height, height whose nbits give D).
fn node_epoch(args: &PayoutArgs, chain: &Chain) -> Result<(u64, u64, u64, u64)> {
    let tip = chain.height()?;
    let epoch = match args.epoch {
        Some(e) => e,
        None => {
            if tip < args.period {
                bail!(
                    "no completed epoch yet: the tip is height {tip} and the first block of epoch 1 is height {}",
                    args.period
                );
            }
            tip / args.period - 1
        }
    };
    let (first, last) =
        formula::epoch_bounds(epoch, args.period).ok_or_else(|| anyhow!("--epoch {epoch} is out of range"))?;
    let next = last + 1;
    if next > tip {
        bail!(
            "--epoch {epoch} is not complete: its difficulty comes from height {next} (first block of epoch {}), \
             but the node's tip is height {tip}; the latest completed epoch is {}",
            epoch + 1,
            if tip >= args.period { (tip / args.period - 1).to_string() } else { "none yet".into() }
        );
    }
    Ok((epoch, first, last, next))
}

/// F from the node: the fees of the epoch's blocks (all, or the pool's own with --own-blocks),
/// exact in satoshis, with the number of blocks they average over.
fn epoch_fees(
    args: &PayoutArgs,
    chain: &Chain,
    marks: &PoolMarks,
    epoch: u64,
    first: u64,
    last: u64,
) -> Result<Sourced<Fees>> {
    let own = if args.own_blocks {
        Some(OwnBlocks::new(
            args.btcsig.as_deref().or(marks.btcsig.as_deref()),
            args.btcaddress.as_deref().or(marks.btcaddress.as_deref()),
        )?)
    } else {
        None
    };
    let mut total: u128 = 0;
    let mut blocks = 0u64;
    for h in first..=last {
        let hash = chain.hash_at(h)?;
        if let Some(own) = &own {
            if !chain.is_own(&hash, own)? {
                continue;
            }
        }
        total += chain.block_fees(&hash, args.fee_source)?;
        blocks += 1;
    }
    if blocks == 0 {
        bail!(
            "no block in epoch {epoch} (heights {first}..={last}) was mined by this pool \
             (btcsig/btcaddress); cannot average its fees — give --fees or drop --own-blocks"
        );
    }
    let how = match args.fee_source {
        FeeSource::Stats => "getblockstats",
        FeeSource::Decode => "decoded blocks",
        FeeSource::Auto => "node",
    };
    let whose = if own.is_some() { "own blocks" } else { "all blocks" };
    Ok(Sourced {
        value: Fees { total_sat: total, blocks },
        source: format!("{how}, {whose} of heights {first}..={last}"),
    })
}

fn pay_one(
    args: &PayoutArgs,
    hashrate: Ratio,
    d: Sourced<Ratio>,
    s: Sourced<u64>,
    f: Sourced<Fees>,
    epoch: Option<(u64, u64, u64, u64)>,
) -> Result<()> {
    let input = PayoutInput {
        hashrate,
        block_time: args.block_time,
        difficulty: d.value,
        subsidy_sat: s.value,
        fees: f.value,
        period: args.period,
    };
    let p = formula::payout(&input)?;
    let avg = f.value.average();
    if args.json {
        let out = json!({
            "epoch": epoch.map(|e| json!({"epoch": e.0, "first_height": e.1, "last_height": e.2, "difficulty_height": e.3})),
            "hashrate_hs": ratio_json(&hashrate),
            "block_time": args.block_time,
            "difficulty": ratio_json(&d.value),
            "difficulty_source": d.source,
            "subsidy_sat": s.value,
            "subsidy_source": s.source,
            "fees_total_sat": f.value.total_sat.to_string(),
            "fees_blocks": f.value.blocks,
            "fees_avg_sat": ratio_json(&avg),
            "fees_source": f.source,
            "period": args.period,
            "share_per_block": ratio_json(&p.share_per_block),
            "expected_blocks": ratio_json(&p.expected_blocks),
            "payout_exact_sat": ratio_json(&p.exact_sat),
            "payout_sat": p.sat.to_string(),
            "payout_coins": format_coins(p.sat),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    if let Some((e, first, last, next)) = epoch {
        println!("Epoch {e}: heights {first}..={last}; difficulty from height {next}");
    }
    println!("Payout = [(H × T) / (D × 2^32)] × [(S + F) × B]");
    println!("  H  hashrate              {} ({} H/s)", format_hashrate(&hashrate), hashrate.to_decimal_trimmed(6));
    println!("  T  target block time     {} s", args.block_time);
    println!("  D  difficulty            {}  [{}]", show_exact(&d.value), d.source);
    println!("  S  block subsidy         {} ({} sat)  [{}]", format_coins(s.value as u128), s.value, s.source);
    println!(
        "  F  average fees / block  {} sat = {} sat over {} block(s)  [{}]",
        avg.to_decimal_trimmed(8),
        f.value.total_sat,
        f.value.blocks,
        f.source
    );
    println!("  B  blocks per period     {}", args.period);
    println!("  (H × T) / (D × 2^32)    = {} blocks per block", p.share_per_block.to_decimal_trimmed(12));
    println!("  expected blocks (× B)   = {}", p.expected_blocks.to_decimal_trimmed(12));
    println!("  (S + F) per block       = {} sat", p.reward_per_block_sat.to_decimal_trimmed(8));
    println!("  exact payout            = {} sat (floored once)", p.exact_sat.to_decimal_trimmed(8));
    println!("Payout: {} coins ({} sat)", format_coins(p.sat), p.sat);
    Ok(())
}

/// First height whose block time is at or after `t` (binary search over headers).
fn height_at_time(chain: &Chain, t: i64) -> Result<u64> {
    let tip = chain.height()?;
    if chain.header_at(tip)?.time < t {
        return Ok(tip + 1); // not reached yet
    }
    let (mut lo, mut hi) = (0u64, tip);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if chain.header_at(mid)?.time >= t {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(lo)
}

#[allow(clippy::too_many_arguments)]
fn pay_contracts(
    args: &PayoutArgs,
    path: &std::path::Path,
    chain: Option<&Chain>,
    d: Sourced<Ratio>,
    s: Sourced<u64>,
    f: Sourced<Fees>,
    epoch: u64,
    first: u64,
    last: u64,
    min_payout: Option<u64>,
) -> Result<()> {
    let raw = contracts::read_contracts(path)?;
    let mut resolved = Vec::new();
    for c in raw {
        let resolve = |p: Point, what: &str| -> Result<u64> {
            match p {
                Point::Height(h) => Ok(h),
                Point::Time(t) => match chain {
                    Some(ch) => height_at_time(ch, t),
                    None => bail!(
                        "contract of {:?}: {what} is a date; dates need a node (--config or --rpc-url), offline give heights",
                        c.customer
                    ),
                },
            }
        };
        let start = resolve(c.start, "start")?;
        let end = resolve(c.end, "end")?;
        resolved.push(ResolvedContract {
            customer: c.customer.clone(),
            hashrate_text: c.hashrate_text.clone(),
            hashrate: c.hashrate,
            start,
            end,
        });
    }
    contracts::validate(&resolved)?;
    let mut earned = Vec::new();
    let mut details = Vec::new();
    for c in &resolved {
        let active = contracts::active_blocks(c, first, last);
        if active == 0 {
            continue;
        }
        let p = formula::payout(&PayoutInput {
            hashrate: c.hashrate,
            block_time: args.block_time,
            difficulty: d.value,
            subsidy_sat: s.value,
            fees: f.value,
            period: args.period,
        })?;
        // pro-rate: exact payout × active / B, floored once
        let prorated = p
            .exact_sat
            .checked_mul(
                &Ratio::new(ruint::aliases::U1024::from(active), ruint::aliases::U1024::from(args.period))
                    .expect("period > 0"),
            )
            .ok_or_else(|| anyhow!("payout overflow"))?;
        let sat = u64::try_from(prorated.floor()).map_err(|_| anyhow!("payout of {:?} overflows", c.customer))?;
        let start_epoch = c.start / args.period;
        let index = epoch - start_epoch.min(epoch); // 0 = the epoch the contract started in
        let skipped = index < args.skip_first;
        earned.push((c.customer.clone(), active, sat, skipped));
        details.push(json!({
            "customer": c.customer, "hashrate": c.hashrate_text, "start": c.start, "end": c.end,
            "active_blocks": active, "expected_blocks": p.expected_blocks.to_decimal_trimmed(12),
            "full_epoch_sat": p.sat.to_string(), "earned_sat": sat, "payout_index": index + 1, "skipped": skipped,
        }));
    }
    if args.measured {
        measure_contracts(args, chain, first, last, &resolved, &mut details)?;
    }
    let state = match &args.state {
        Some(p) => contracts::read_state(p)?,
        None => contracts::State::default(),
    };
    let (lines, next_state) = contracts::settle(&state, epoch, &earned, min_payout.unwrap_or(0))?;
    if let Some(p) = &args.state {
        contracts::write_state(p, &next_state)?;
    }
    let total_paid: u64 = lines.iter().map(|l| l.paid_sat).sum();
    if args.json {
        let out = json!({
            "epoch": epoch, "first_height": first, "last_height": last,
            "difficulty": ratio_json(&d.value), "difficulty_source": d.source,
            "subsidy_sat": s.value, "fees_total_sat": f.value.total_sat.to_string(), "fees_blocks": f.value.blocks,
            "fees_avg_sat": ratio_json(&f.value.average()),
            "block_time": args.block_time, "period": args.period,
            "contracts": details, "customers": lines, "total_paid_sat": total_paid,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("Epoch {epoch}: heights {first}..={last}, B = {}, T = {} s", args.period, args.block_time);
    println!("  D = {}  [{}]", d.value.to_decimal_trimmed(12), d.source);
    println!("  S = {} sat  [{}]", s.value, s.source);
    println!("  F = {} sat/block  [{}]", f.value.average().to_decimal_trimmed(8), f.source);
    for dt in &details {
        println!(
            "  contract {} {} heights {}..{}: active {} block(s), payout #{}{}, earned {} sat",
            dt["customer"],
            dt["hashrate"].as_str().unwrap_or(""),
            dt["start"],
            dt["end"],
            dt["active_blocks"],
            dt["payout_index"],
            if dt["skipped"].as_bool() == Some(true) { " (skipped)" } else { "" },
            dt["earned_sat"]
        );
        if let Some(m) = dt.get("measured") {
            println!(
                "    measured {} H/s from {:?} over {} s ({} .. {}): {} of the contract's {} H/s; difficulty {} in {} shares",
                m["hashrate"].as_str().unwrap_or(""),
                dt["customer"].as_str().unwrap_or(""),
                m["seconds"],
                m["from"],
                m["to"],
                m["ratio"].as_str().unwrap_or(""),
                m["contracted"].as_str().unwrap_or(""),
                m["difficulty"].as_str().unwrap_or(""),
                m["shares"],
            );
        }
    }
    println!("{:<20} {:>16} {:>16} {:>16} {:>16}", "customer", "earned sat", "carried in", "paid sat", "carried out");
    for l in &lines {
        println!(
            "{:<20} {:>16} {:>16} {:>16} {:>16}",
            l.customer, l.earned_sat, l.carried_in_sat, l.paid_sat, l.carried_out_sat
        );
    }
    println!("Total paid: {} coins ({} sat)", format_coins(total_paid as u128), total_paid);
    Ok(())
}

/// A time given as unix seconds or a UTC date.
fn parse_time(what: &str, text: &str) -> Result<i64> {
    if let Ok(t) = text.trim().parse::<i64>() {
        if t > 100_000_000 {
            return Ok(t);
        }
    }
    match contracts::parse_point(what, text)? {
        Point::Time(t) => Ok(t),
        Point::Height(_) => bail!("{what} {text:?}: give unix seconds or a UTC date"),
    }
}

/// `--measured`: adds each contract's measured hashrate (exact) and ratio to its details.
fn measure_contracts(
    args: &PayoutArgs,
    chain: Option<&Chain>,
    first: u64,
    last: u64,
    resolved: &[ResolvedContract],
    details: &mut [serde_json::Value],
) -> Result<()> {
    use super::measured;
    let from = match (&args.measured_from, chain) {
        (Some(t), _) => parse_time("--measured-from", t)?,
        (None, Some(ch)) => ch.header_at(first.saturating_sub(1))?.time,
        (None, None) => bail!("--measured without a node needs --measured-from and --measured-to"),
    };
    let to = match (&args.measured_to, chain) {
        (Some(t), _) => parse_time("--measured-to", t)?,
        (None, Some(ch)) => ch.header_at(last)?.time,
        (None, None) => bail!("--measured without a node needs --measured-from and --measured-to"),
    };
    let (from, to) = measured::window(from, to);
    let target = measured::target(args.history_db.as_deref(), args.node.config.as_deref())?;
    let mut store = crate::history::Store::open(&target)?;
    for dt in details.iter_mut() {
        let customer = dt["customer"].as_str().unwrap_or("").to_string();
        let c = resolved.iter().find(|c| c.customer == customer).expect("details come from resolved contracts");
        let sums = measured::read(&mut store, &customer, from, to)?;
        let m = measured::measure(sums, from, to, &c.hashrate)?;
        dt["measured"] = json!({
            "from": m.from, "to": m.to, "seconds": m.to - m.from,
            "difficulty": crate::difficulty::Difficulty::from_units(m.sums.acc).to_string(),
            "shares": m.sums.acc_n,
            "hashrate": m.hashrate.floor().to_string(),
            "hashrate_exact": ratio_json(&m.hashrate),
            "contracted": c.hashrate.to_decimal_trimmed(6),
            "ratio": m.ratio.to_decimal(4),
        });
    }
    Ok(())
}
