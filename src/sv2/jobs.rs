//! Pure translation between the mining core and Stratum V2's mining messages: job ids, targets,
//! a nominal hashrate's difficulty, and SV2's error codes for the core's verdicts. No I/O.

use std::collections::VecDeque;

use crate::difficulty::{Difficulty, Target};
use crate::share::Reject;

/// The SV2 job ids a channel was given and the mining core's local ids they stand for. SV2 ids
/// are 32-bit and per channel; the core's local ids are 64-bit (template id and difficulty
/// revision), so the face keeps the pairs of the jobs the core can still judge.
#[derive(Debug, Default)]
pub struct JobIds {
    last: u32,
    ids: VecDeque<(u32, u64)>,
}

/// What an SV2 job id names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRef {
    /// A job still remembered: the core's local id.
    Local(u64),
    /// A job this channel was given once, long gone: stale.
    Past,
    /// Never given to this channel.
    Unknown,
}

/// Pairs remembered per channel: the core keeps 16 jobs, plus the previous block's range.
const IDS_KEPT: usize = 64;

impl JobIds {
    /// A new SV2 id for the core's `local_id`.
    pub fn assign(&mut self, local_id: u64) -> u32 {
        // Ids start at 1 and wrap past u32::MAX back to 1 (a channel would need 4 billion jobs).
        self.last = self.last.checked_add(1).unwrap_or(1);
        if self.ids.len() == IDS_KEPT {
            self.ids.pop_front();
        }
        self.ids.push_back((self.last, local_id));
        self.last
    }

    pub fn lookup(&self, id: u32) -> JobRef {
        match self.ids.iter().rev().find(|(s, _)| *s == id) {
            Some(&(_, local)) => JobRef::Local(local),
            None if id != 0 && id <= self.last => JobRef::Past,
            None => JobRef::Unknown,
        }
    }
}

/// A target as SV2 carries it (U256, little-endian).
pub fn target_le(t: &Target) -> [u8; 32] {
    let mut b = t.to_be_bytes();
    b.reverse();
    b
}

/// The target an SV2 U256 carries.
pub fn target_from_le(le: &[u8; 32]) -> Target {
    let mut be = *le;
    be.reverse();
    Target::from_u256(ruint::aliases::U256::from_be_bytes(be))
}

/// The difficulty at which a miner of `hashrate` hashes per second finds one share every
/// `interval_us` microseconds: hashrate · interval / 2^32. `None` for a hashrate that is no
/// positive finite number (SV2 sends it as an f32; it is made an integer here, once).
pub fn hashrate_difficulty(hashrate: f32, interval_us: u64) -> Option<Difficulty> {
    if !hashrate.is_finite() || hashrate < 1.0 {
        return None;
    }
    let hps = hashrate as u128; // saturating cast
    Difficulty::ONE.mul_ratio(hps.saturating_mul(interval_us as u128), (1u128 << 32) * 1_000_000)
}

/// SV2's `SubmitShares.Error` code for the core's verdict.
pub fn reject_code(r: &Reject) -> &'static str {
    match r {
        Reject::Stale => "stale-share",
        Reject::UnknownJob => "invalid-job-id",
        Reject::Duplicate => "duplicate-share",
        Reject::LowDifficulty { .. } => "difficulty-too-low",
        Reject::BadExtranonce2Length { .. } => "bad-extranonce-size",
        Reject::VersionOutsideMask => "invalid-non-rollable-version-bit",
        Reject::NtimeOutOfRange | Reject::BadHex(_) => "invalid-share",
    }
}

/// The share weight SV2's `SubmitShares.Success` sums: the difficulty a share was judged at,
/// whole units, at least 1 (a share below difficulty 1 still counts as one).
pub fn share_weight(d: Difficulty) -> u64 {
    let whole = d.units() / Difficulty::ONE.units();
    whole.clamp(1, u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_map_back_and_age_out() {
        let mut ids = JobIds::default();
        let first = ids.assign(0x000a_bc00);
        assert_eq!(first, 1);
        assert_eq!(ids.lookup(first), JobRef::Local(0x000a_bc00));
        for i in 0..IDS_KEPT as u64 {
            ids.assign(i);
        }
        assert_eq!(ids.lookup(first), JobRef::Past, "aged out: stale, not unknown");
        assert_eq!(ids.lookup(ids.last), JobRef::Local(IDS_KEPT as u64 - 1));
        assert_eq!(ids.lookup(ids.last + 1), JobRef::Unknown);
        assert_eq!(ids.lookup(0), JobRef::Unknown);
    }

    #[test]
    fn targets_are_little_endian_both_ways() {
        let t = Difficulty::ONE.to_target();
        let le = target_le(&t);
        // Difficulty 1: 0x00000000ffff0000...; its little-endian form ends in 00 00 00 00 ff ff... reversed.
        assert_eq!(&le[26..32], &[0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(target_from_le(&le), t);
    }

    #[test]
    fn nominal_hashrate_gives_exact_difficulty() {
        // 2^32 hashes/s for 5 s: difficulty 5.
        assert_eq!(hashrate_difficulty(4_294_967_296.0, 5_000_000), Some(Difficulty::from_integer(5)));
        // 1 MH/s at one share per 3.33 s: 1e6·3.333333/2^32 = 0.000776102...
        let d = hashrate_difficulty(1_000_000.0, 3_333_333).unwrap();
        assert_eq!(d.units(), 1_000_000u128 * 3_333_333 * 1_000_000_000_000 / ((1u128 << 32) * 1_000_000));
        for bad in [0.0, -5.0, f32::NAN, f32::INFINITY, 0.5] {
            assert_eq!(hashrate_difficulty(bad, 3_333_333), None, "{bad}");
        }
    }

    #[test]
    fn every_verdict_has_an_sv2_code() {
        assert_eq!(reject_code(&Reject::Stale), "stale-share");
        assert_eq!(
            reject_code(&Reject::LowDifficulty { difficulty: Difficulty::ONE, hash: [0; 32] }),
            "difficulty-too-low"
        );
        assert_eq!(share_weight(Difficulty::from_units(1)), 1);
        assert_eq!(share_weight(Difficulty::from_integer(42)), 42);
    }
}
