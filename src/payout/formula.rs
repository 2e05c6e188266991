//! The formulas of the operator's guide, exactly.
//!
//! * Payout = [(H × T) / (D × 2^32)] × [(S + F) × B], in satoshis, floored once at the end.
//! * New difficulty = recent × target time / actual time, the actual time clamped to
//!   [target/4, target×4] and measured over B − 1 block intervals (the inherited off-by-one).
//! * Network hashrate = D × 2^32 / T.
//!
//! Every input is a [`Ratio`] whose parts fit 256 bits (the parsers and [`difficulty_from_nbits`]
//! guarantee it), so a product of the five factors of the payout formula fits 1024 bits.

use ruint::aliases::{U1024, U256};

use super::exact::Ratio;
use crate::difficulty::{diff1_target, Target};

/// 2^32: the expected number of hashes per unit of difficulty.
pub fn two_pow_32() -> Ratio {
    Ratio::integer(1u128 << 32)
}

/// The network difficulty `nbits` encodes, as the exact rational diff-1 target / target.
pub fn difficulty_from_nbits(nbits: u32) -> Option<Ratio> {
    let target = Target::from_compact(nbits)?;
    if target.as_u256().is_zero() {
        return None;
    }
    Ratio::from_u256(diff1_target(), target.as_u256()).map(Ratio::reduced)
}

/// Average fee per block: `total_sat / blocks` (kept as a fraction, never rounded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub total_sat: u128,
    pub blocks: u64,
}

impl Fees {
    /// A given average fee per block (offline mode).
    pub fn per_block(sat: u64) -> Fees {
        Fees { total_sat: sat as u128, blocks: 1 }
    }

    pub fn average(&self) -> Ratio {
        Ratio::new(U1024::from(self.total_sat), U1024::from(self.blocks.max(1))).expect("non-zero").reduced()
    }
}

/// What the payout formula takes.
#[derive(Debug, Clone, Copy)]
pub struct PayoutInput {
    /// H, hashes per second (> 0).
    pub hashrate: Ratio,
    /// T, target seconds per block (> 0).
    pub block_time: u64,
    /// D, the difficulty at the start of the next epoch (> 0).
    pub difficulty: Ratio,
    /// S, block subsidy in satoshis.
    pub subsidy_sat: u64,
    /// F, average fees per block over the paid period.
    pub fees: Fees,
    /// B, blocks per period (> 0).
    pub period: u64,
}

/// The result with its intermediate figures, so a customer can check it.
#[derive(Debug, Clone, Copy)]
pub struct Payout {
    /// (H × T) / (D × 2^32): the contract's expected share of one block.
    pub share_per_block: Ratio,
    /// share_per_block × B: the blocks the contract is expected to have found in the period.
    pub expected_blocks: Ratio,
    /// S + F in satoshis.
    pub reward_per_block_sat: Ratio,
    /// The exact payout in satoshis before rounding.
    pub exact_sat: Ratio,
    /// The payout, floored once: what is paid.
    pub sat: u128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormulaError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    #[error("the payout does not fit 128 bits of satoshis; check the inputs")]
    Overflow,
}

/// Payout = [(H × T) / (D × 2^32)] × [(S + F) × B], floored to a satoshi once at the end.
pub fn payout(input: &PayoutInput) -> Result<Payout, FormulaError> {
    if input.hashrate.is_zero() {
        return Err(FormulaError::Zero("hashrate"));
    }
    if input.difficulty.is_zero() {
        return Err(FormulaError::Zero("difficulty"));
    }
    if input.block_time == 0 {
        return Err(FormulaError::Zero("block time"));
    }
    if input.period == 0 {
        return Err(FormulaError::Zero("period"));
    }
    if input.fees.blocks == 0 {
        return Err(FormulaError::Zero("number of blocks the fees are averaged over"));
    }
    let of = |_| FormulaError::Overflow;
    let share_per_block = input
        .hashrate
        .checked_mul(&Ratio::integer(input.block_time as u128))
        .and_then(|x| x.checked_div(&input.difficulty.checked_mul(&two_pow_32())?))
        .ok_or(FormulaError::Overflow)?;
    let expected_blocks =
        share_per_block.checked_mul(&Ratio::integer(input.period as u128)).ok_or(FormulaError::Overflow)?;
    // S + F = (S·n + total) / n
    let n = input.fees.blocks as u128;
    let reward_num = (input.subsidy_sat as u128).checked_mul(n).and_then(|v| v.checked_add(input.fees.total_sat));
    let reward_num = reward_num.ok_or(FormulaError::Overflow)?;
    let reward = Ratio::new(U1024::from(reward_num), U1024::from(n)).expect("n > 0").reduced();
    let exact_sat = expected_blocks.checked_mul(&reward).ok_or(FormulaError::Overflow)?;
    let floor = exact_sat.floor();
    if floor > U1024::from(u128::MAX) {
        return Err(of(()));
    }
    Ok(Payout { share_per_block, expected_blocks, reward_per_block_sat: reward, exact_sat, sat: floor.to::<u128>() })
}

/// Network hashrate = D × 2^32 / T, in H/s.
pub fn network_hashrate(difficulty: &Ratio, block_time: u64) -> Option<Ratio> {
    difficulty.checked_mul(&two_pow_32())?.checked_div(&Ratio::integer(block_time as u128))
}

/// Block subsidy at `height`: `initial_sat` halved every `halving_interval` blocks.
pub fn subsidy_at(height: u64, halving_interval: u64, initial_sat: u64) -> u64 {
    let halvings = height / halving_interval.max(1);
    if halvings >= 64 {
        0
    } else {
        initial_sat >> halvings
    }
}

/// Epoch `n` covers heights `n·B ..= n·B + B − 1`; returns (first, last).
pub fn epoch_bounds(epoch: u64, period: u64) -> Option<(u64, u64)> {
    let first = epoch.checked_mul(period)?;
    Some((first, first.checked_add(period - 1)?))
}

/// Which way the retarget was clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Clamp {
    /// Not clamped.
    None,
    /// Blocks came more than 4× too fast: actual time raised to target/4 (difficulty × 4 at most).
    MaxIncrease,
    /// Blocks came more than 4× too slow: actual time cut to target×4 (difficulty ÷ 4 at most).
    MaxDecrease,
}

/// A (projected) difficulty adjustment.
#[derive(Debug, Clone, Copy)]
pub struct Retarget {
    /// B × T seconds.
    pub target_timespan: u64,
    /// Actual seconds over the B − 1 intervals (projected when the epoch is not complete).
    pub actual: Ratio,
    /// The actual time after the clamps, as the node uses it.
    pub used: Ratio,
    pub clamp: Clamp,
    /// recent × target_timespan / used.
    pub new_difficulty: Ratio,
}

/// New difficulty = recent × (B·T) / actual, with `actual` clamped to [⌊B·T/4⌋, B·T·4] as
/// bitcoind does (`nActualTimespan` clamps in `CalculateNextWorkRequired`).
pub fn retarget(recent: &Ratio, period: u64, block_time: u64, actual: Ratio) -> Option<Retarget> {
    let timespan = period.checked_mul(block_time)?;
    let lo = Ratio::integer((timespan / 4) as u128);
    let hi = Ratio::integer(timespan as u128 * 4);
    let (used, clamp) = if actual.lt(&lo) {
        (lo, Clamp::MaxIncrease)
    } else if hi.lt(&actual) {
        (hi, Clamp::MaxDecrease)
    } else {
        (actual, Clamp::None)
    };
    let new_difficulty = recent.checked_mul(&Ratio::integer(timespan as u128))?.checked_div(&used)?;
    Some(Retarget { target_timespan: timespan, actual, used, clamp, new_difficulty })
}

/// Projects the retarget from an epoch in progress: `intervals` block intervals (tip height −
/// first height of the epoch) took `elapsed` seconds, so the B − 1 intervals the node will
/// measure are projected to take `elapsed × (B − 1) / intervals`. With `intervals == B − 1`
/// (the last block of the epoch is the tip) this is exactly the node's adjustment.
/// `None` when there is no interval yet (`intervals == 0`) or `period < 2`.
pub fn project_retarget(
    recent: &Ratio,
    period: u64,
    block_time: u64,
    intervals: u64,
    elapsed: i64,
) -> Option<Retarget> {
    if intervals == 0 || period < 2 {
        return None;
    }
    let elapsed = elapsed.max(0) as u128; // time running backwards clamps like a very short epoch
    let actual = Ratio::new(U1024::from(elapsed * (period as u128 - 1)), U1024::from(intervals))?.reduced();
    retarget(recent, period, block_time, actual)
}

/// The `nbits` bitcoind would set after an epoch whose B − 1 intervals took `actual_secs`:
/// new target = old target × clamped actual / (B·T), capped at `pow_limit`, in compact form.
pub fn retarget_nbits(old_nbits: u32, actual_secs: i64, period: u64, block_time: u64, pow_limit: U256) -> Option<u32> {
    let timespan = period.checked_mul(block_time)? as i64;
    let actual = actual_secs.clamp(timespan / 4, timespan * 4);
    let old = ruint::aliases::U512::from(Target::from_compact(old_nbits)?.as_u256());
    let new = old * ruint::aliases::U512::from(actual as u64) / ruint::aliases::U512::from(timespan as u64);
    let new = if new > ruint::aliases::U512::from(pow_limit) { pow_limit } else { U256::from(new) };
    Some(Target::from_u256(new).to_compact())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payout::exact::{parse_decimal, parse_hashrate};

    fn dec(s: &str) -> Ratio {
        parse_decimal("test", s).unwrap()
    }

    #[test]
    fn payout_worked_example() {
        // H = 110 TH/s, T = 600, D = 100 000 000 000 000 (1e14), S = 3.125 coins, F = 0.25 coins, B = 2016.
        // (H·T)/(D·2^32) = 110e12·600 / (1e14·4 294 967 296) = 66e15 / 429 496 729 600e12
        //                = 660 / 4 294 967 296 = 165 / 1 073 741 824 (≈ 1.5367e-7 blocks per block).
        // expected blocks = 165 · 2016 / 1 073 741 824 = 332 640 / 1 073 741 824 = 10 395 / 33 554 432.
        // (S+F)·B in sat = (312 500 000 + 25 000 000) · 2016 = 680 400 000 000.
        // payout = 165 · 680 400 000 000 / 1 073 741 824 = 112 266 000 000 000 / 1 073 741 824
        //        = 104 555 remainder 923 591 680 (1 073 741 824 · 104 555 = 112 265 076 408 320)
        //        → 104 555 sat = 0.00104555 coins.
        let p = payout(&PayoutInput {
            hashrate: parse_hashrate("110TH/s").unwrap(),
            block_time: 600,
            difficulty: dec("1e14"),
            subsidy_sat: 312_500_000,
            fees: Fees::per_block(25_000_000),
            period: 2016,
        })
        .unwrap();
        assert_eq!(p.share_per_block, dec("165").checked_div(&dec("1073741824")).unwrap());
        assert_eq!(p.expected_blocks, dec("10395").checked_div(&dec("33554432")).unwrap());
        assert_eq!(p.exact_sat, dec("112266000000000").checked_div(&dec("1073741824")).unwrap());
        assert_eq!(p.sat, 104_555);
    }

    #[test]
    fn payout_where_floats_round_to_another_satoshi() {
        // H = 107 374 182 400 000 H/s (= 25 000 · 2^32), T = 600, D = 125e12, S = 3.125, F = 0.375, B = 2016.
        // (H·T)/(D·2^32) = 25 000 · 600 / 125e12 = 1.5e7 / 1.25e14 = 3 / 25 000 000 exactly;
        // (S+F)·B = 350 000 000 · 2016 = 705 600 000 000 sat; × 3 / 25 000 000 = 28 224 · 3 = 84 672 sat exactly.
        // In f64, (H·T)/(D·2^32) = 1.2e-7 is not representable and the product comes out
        // as 84671.99999999999, which floors to 84 671: one satoshi short.
        let (h, t, d, s, f, b) = (107_374_182_400_000f64, 600f64, 125e12f64, 312_500_000f64, 37_500_000f64, 2016f64);
        let float = (h * t) / (d * 2f64.powi(32)) * ((s + f) * b);
        assert_eq!(float.floor(), 84_671.0, "float path: {float}");
        let p = payout(&PayoutInput {
            hashrate: dec("107374182400000"),
            block_time: 600,
            difficulty: dec("125e12"),
            subsidy_sat: 312_500_000,
            fees: Fees::per_block(37_500_000),
            period: 2016,
        })
        .unwrap();
        assert_eq!(p.exact_sat, Ratio::integer(84_672));
        assert_eq!(p.sat, 84_672);
    }

    #[test]
    fn fractional_average_fee_is_not_rounded_early() {
        // F = 3 sat over 2 blocks = 1.5 sat/block. H·T/(D·2^32) with H = 2^32, T = 1, D = 1 → 1 per block.
        // payout = 1 · (S + 1.5) · B = (10 + 1.5) · 2 = 23 sat; rounding F down first would give 22.
        let p = payout(&PayoutInput {
            hashrate: Ratio::integer(1 << 32),
            block_time: 1,
            difficulty: Ratio::integer(1),
            subsidy_sat: 10,
            fees: Fees { total_sat: 3, blocks: 2 },
            period: 2,
        })
        .unwrap();
        assert_eq!(p.sat, 23);
        assert_eq!(p.reward_per_block_sat, dec("11.5"));
    }

    #[test]
    fn payout_refuses_zero_inputs() {
        let ok = PayoutInput {
            hashrate: Ratio::integer(1),
            block_time: 600,
            difficulty: Ratio::integer(1),
            subsidy_sat: 1,
            fees: Fees::per_block(0),
            period: 10,
        };
        assert!(payout(&ok).is_ok());
        assert_eq!(payout(&PayoutInput { period: 0, ..ok }).unwrap_err(), FormulaError::Zero("period"));
        assert_eq!(payout(&PayoutInput { block_time: 0, ..ok }).unwrap_err(), FormulaError::Zero("block time"));
        let zero = Ratio::integer(0);
        assert_eq!(payout(&PayoutInput { hashrate: zero, ..ok }).unwrap_err(), FormulaError::Zero("hashrate"));
        assert_eq!(payout(&PayoutInput { difficulty: zero, ..ok }).unwrap_err(), FormulaError::Zero("difficulty"));
    }

    #[test]
    fn difficulty_from_nbits_is_exact() {
        // 0x1d00ffff: target = diff-1 target → 1.
        assert_eq!(difficulty_from_nbits(0x1d00ffff).unwrap(), Ratio::integer(1));
        // block 100000, nbits 1b04864c: 0xffff·2^208 / (0x04864c·2^192) = 0xffff·2^16 / 0x04864c
        // = 4294901760 / 296524 = 1073725440 / 74131 = 14484.16236122539828…
        let d = difficulty_from_nbits(0x1b04864c).unwrap();
        assert_eq!(d, dec("1073725440").checked_div(&dec("74131")).unwrap());
        assert_eq!(d.to_decimal(8), "14484.16236122");
        // regtest 207fffff: 0xffff·2^208 / (0x7fffff·2^232) = 65535 / (8388607 · 2^24)
        let r = difficulty_from_nbits(0x207fffff).unwrap();
        assert_eq!(r, dec("65535").checked_div(&dec("140737471578112")).unwrap()); // 8388607·16777216
        assert!(difficulty_from_nbits(0x01003456).is_none()); // zero target
    }

    #[test]
    fn network_hashrate_example() {
        // D = 1, T = 600: 2^32 / 600 = 4294967296 / 600 = 7158278.826666… H/s
        let h = network_hashrate(&Ratio::integer(1), 600).unwrap();
        assert_eq!(h.to_decimal(4), "7158278.8266");
        // D = 1e14, T = 600: 1e14 · 4294967296 / 600 = 715 827 882 666 666 666 666.66… H/s ≈ 715.8 EH/s
        let h = network_hashrate(&dec("1e14"), 600).unwrap();
        assert_eq!(h.floor().to_string(), "715827882666666666666");
    }

    #[test]
    fn subsidy_schedule() {
        assert_eq!(subsidy_at(0, 210_000, 50 * 100_000_000), 5_000_000_000);
        assert_eq!(subsidy_at(209_999, 210_000, 5_000_000_000), 5_000_000_000);
        assert_eq!(subsidy_at(210_000, 210_000, 5_000_000_000), 2_500_000_000);
        assert_eq!(subsidy_at(840_000, 210_000, 5_000_000_000), 312_500_000); // fourth halving: 3.125
        assert_eq!(subsidy_at(150, 150, 5_000_000_000), 2_500_000_000); // regtest interval
        assert_eq!(subsidy_at(64 * 210_000, 210_000, 5_000_000_000), 0);
        assert_eq!(epoch_bounds(3, 2016), Some((6048, 8063)));
    }

    #[test]
    fn retarget_unclamped() {
        // recent D = 1000, B = 2016, T = 600 → target timespan 1 209 600 s. Actual 1 512 000 s (25% slow):
        // new D = 1000 · 1 209 600 / 1 512 000 = 800.
        let r = retarget(&Ratio::integer(1000), 2016, 600, Ratio::integer(1_512_000)).unwrap();
        assert_eq!(r.clamp, Clamp::None);
        assert_eq!(r.new_difficulty, Ratio::integer(800));
    }

    #[test]
    fn retarget_clamps() {
        // Too fast: 100 000 s < 1 209 600 / 4 = 302 400 → used 302 400 → D × 4 = 4000 (not 12 096).
        let r = retarget(&Ratio::integer(1000), 2016, 600, Ratio::integer(100_000)).unwrap();
        assert_eq!(r.clamp, Clamp::MaxIncrease);
        assert_eq!(r.used, Ratio::integer(302_400));
        assert_eq!(r.new_difficulty, Ratio::integer(4000));
        // Too slow: 10 000 000 s > 4 · 1 209 600 = 4 838 400 → D / 4 = 250 (not 120.96).
        let r = retarget(&Ratio::integer(1000), 2016, 600, Ratio::integer(10_000_000)).unwrap();
        assert_eq!(r.clamp, Clamp::MaxDecrease);
        assert_eq!(r.new_difficulty, Ratio::integer(250));
        // Exactly at the bound is not clamped.
        let r = retarget(&Ratio::integer(1000), 2016, 600, Ratio::integer(302_400)).unwrap();
        assert_eq!(r.clamp, Clamp::None);
        assert_eq!(r.new_difficulty, Ratio::integer(4000));
    }

    #[test]
    fn the_2015_interval_rule() {
        // Every block exactly 600 s apart. The node measures time(last) − time(first) of the epoch:
        // 2015 intervals = 1 209 000 s, against a target of 2016 · 600 = 1 209 600 s, so even a
        // perfectly on-time epoch raises the difficulty by 2016/2015: 1000 → 1000·2016/2015 = 1000.4962…
        let r = project_retarget(&Ratio::integer(1000), 2016, 600, 2015, 2015 * 600).unwrap();
        assert_eq!(r.actual, Ratio::integer(1_209_000));
        assert_eq!(r.new_difficulty, dec("2016000").checked_div(&dec("2015")).unwrap());
        assert_eq!(r.new_difficulty.to_decimal(6), "1000.496277");
        // Projection halfway: 1007 intervals took 1007·600 s → projected 2015·600 s → same result.
        let half = project_retarget(&Ratio::integer(1000), 2016, 600, 1007, 1007 * 600).unwrap();
        assert_eq!(half.new_difficulty, r.new_difficulty);
        // Projection: 10 intervals in 3000 s (300 s/block) → 2015 · 300 = 604 500 s → D · 1 209 600 / 604 500
        // = 1000 · 2.00099… = 2000.99255…; exactly 1 209 600 000 / 604 500 = 2 419 200 / 1209.
        let fast = project_retarget(&Ratio::integer(1000), 2016, 600, 10, 3000).unwrap();
        assert_eq!(fast.new_difficulty, dec("2419200").checked_div(&dec("1209")).unwrap());
        assert!(project_retarget(&Ratio::integer(1000), 2016, 600, 0, 0).is_none());
        // Time running backwards clamps to the maximum increase.
        let back = project_retarget(&Ratio::integer(1000), 2016, 600, 5, -100).unwrap();
        assert_eq!(back.clamp, Clamp::MaxIncrease);
    }

    #[test]
    fn retarget_nbits_as_the_node() {
        // Old target diff-1 (1d00ffff), epoch twice as slow: 2 419 200 s (within 4 · 1 209 600, not clamped)
        // → new target = 0xffff·2^208 · 2 = 0x1fffe·2^208 → compact 1d01fffe; difficulty 1/2.
        let pow_limit = U256::MAX >> 1; // regtest-like: far above both results
        assert_eq!(retarget_nbits(0x1d00ffff, 2_419_200, 2016, 600, pow_limit), Some(0x1d01fffe));
        // Twice as fast: target / 2 = 0x7fff8·2^204 → compact 1c7fff80.
        assert_eq!(retarget_nbits(0x1d00ffff, 604_800, 2016, 600, pow_limit), Some(0x1c7fff80));
        // Capped at the pow limit: the mainnet limit is the diff-1 target itself.
        assert_eq!(retarget_nbits(0x1d00ffff, 2_419_200, 2016, 600, diff1_target()), Some(0x1d00ffff));
    }
}
