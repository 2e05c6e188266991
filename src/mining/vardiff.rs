//! Variable difficulty: each session's difficulty follows its miner's hashrate (pure: time is
//! passed in as microseconds since any fixed origin; no clock, no floats in a decision).
//!
//! The rule is ckpool's (`stratifier.c` `add_submit`):
//! * every accepted share adds its difficulty to a decaying average of difficulty-1 shares per
//!   second ("dsps") over 5 minutes, with ckpool's `decay_time`:
//!   `f ← (f + add/secs · p) / (1 + p)`, `p = 1 − e^(−secs/window)`; additions closer than 50 ms
//!   are batched as ckpool does;
//! * a retarget is considered once 72 shares (the retarget interval divided by the target share
//!   interval) or 240 s (the retarget interval) have passed since the last change, and only on a
//!   share judged at the current difficulty;
//!   (so a miner far too fast for its difficulty is retargeted after 72 shares, not 240 s);
//! * the average is divided by ckpool's young-session bias `1 − e^(−age/300 s)`, so a session
//!   a few seconds old is already measured right;
//! * when the 72 shares came in under half the retarget interval (the rate is at least twice
//!   too high), the 1-minute average decides instead (bias over 60 s), as later ckpool forks do:
//!   a hashrate step up is followed in seconds, while steady miners keep the quiet 5-minute one;
//! * nothing changes while the share rate is inside the band (½ .. 4⁄3 of the target rate:
//!   0.15 .. 0.4 shares/s by default); outside it the new difficulty is `dsps · target interval`
//!   (0.3 shares/s by default), rounded (to an integer at or above 1, else to 4 significant
//!   digits) and clamped.
//!
//! Beyond ckpool: a session that sends nothing for a retarget interval is checked on the decayed
//! rate (see [`Vardiff::on_idle`]), so a miner that went quiet, or started far too high, is lowered
//! without waiting for a share it cannot find; its rate is then measured afresh. ckpool's "own mindiff" variant (2.4 s target for
//! miners that suggested a difficulty) is not copied: a suggestion is a floor, nothing more.
//!
//! Arithmetic: rates are `u128` counts of 10^-12 difficulty per second; `e^(−x)` is computed in
//! Q62 fixed point by its Taylor series, so every decision is exact and reproducible.

use ruint::aliases::U256;

use crate::difficulty::{Difficulty, SCALE};

/// 1.0 in Q62 fixed point.
pub const ONE_Q: u128 = 1 << 62;
/// Microseconds per second.
pub const US: u64 = 1_000_000;
/// ckpool batches rate additions closer together than this (its `decay_client`).
const BATCH_US: u64 = 50_000;
/// ckpool's `sane_tdiff`: intervals are at least a millisecond.
const MIN_TDIFF_US: u64 = 1_000;
/// ckpool caps `secs/window` at 36 in `decay_time` and `time_bias`.
const MAX_EXP: u64 = 36;

/// `e^(−x)` for `x` in `[0, 1]` given in Q62, in Q62 (alternating Taylor series, 30 terms).
const fn exp_neg_unit(x: u128) -> u128 {
    let (mut term, mut pos, mut neg) = (ONE_Q, ONE_Q, 0u128);
    let mut k = 1u128;
    while k <= 30 {
        term = ((term * x) >> 62) / k;
        if term == 0 {
            break;
        }
        if k % 2 == 1 {
            neg += term;
        } else {
            pos += term;
        }
        k += 1;
    }
    pos - neg
}

/// e^(−1) in Q62.
const E_NEG1: u128 = exp_neg_unit(ONE_Q);

/// `e^(−num/den)` in Q62, with `num/den` capped at 36 as ckpool does. `den` must be non-zero.
pub fn exp_neg_q62(num: u64, den: u64) -> u128 {
    debug_assert!(den > 0);
    let (mut whole, mut rem) = (num / den, num % den);
    if whole >= MAX_EXP {
        whole = MAX_EXP;
        rem = 0;
    }
    let mut r = exp_neg_unit(((rem as u128) << 62) / den as u128);
    for _ in 0..whole {
        r = (r * E_NEG1) >> 62;
    }
    r
}

/// ckpool's `time_bias(age, window) = 1 − e^(−age/window)` in Q62 (never zero: age ≥ 1 ms).
pub fn time_bias_q62(age_us: u64, window_us: u64) -> u128 {
    (ONE_Q - exp_neg_q62(age_us.max(MIN_TDIFF_US), window_us)).max(1)
}

/// ckpool's `decay_time` on a rate `f` (10^-12 units per second): `add` units arrived over
/// `dt_us`. Returns the new rate, floored.
pub fn decay(f: u128, add: u128, dt_us: u64, window_us: u64) -> u128 {
    if dt_us == 0 {
        return f;
    }
    let p = ONE_Q - exp_neg_q62(dt_us, window_us);
    // f' = (f + add·10^6/dt · p/ONE) / (1 + p/ONE) = (f·ONE·dt + add·10^6·p) / (dt·(ONE + p))
    let num = U256::from(f) * U256::from(ONE_Q) * U256::from(dt_us) + U256::from(add) * U256::from(US) * U256::from(p);
    let den = U256::from(dt_us) * U256::from(ONE_Q + p);
    let v = num / den;
    if v > U256::from(u128::MAX) {
        u128::MAX
    } else {
        v.to::<u128>()
    }
}

/// Extra resolution a [`Meter`] keeps below one unit per second: a regtest miner at difficulty
/// 1e-10 adds a fraction of a 10^-12 unit per second at each share, which must not floor away.
const METER_SCALE: u128 = 1_000_000;

/// Decaying averages of an additive quantity per second over several windows (ckpool's
/// dsps1/dsps5/... family), with ckpool's 50 ms batching. Values are held in 10^-6 of the unit
/// added, per second.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meter<const N: usize> {
    /// Held inline: a channel's meter is part of every miner's state (two windows), and a
    /// heap block per window list would cost an idle miner more than the values themselves.
    windows_us: [u64; N],
    values: [u128; N],
    last_decay: u64,
    pending: u128,
}

impl<const N: usize> Meter<N> {
    /// A meter at zero whose clock starts at `now`; `windows_s` in seconds.
    pub fn new(windows_s: &[u64; N], now: u64) -> Meter<N> {
        Meter { windows_us: windows_s.map(|s| s * US), values: [0; N], last_decay: now, pending: 0 }
    }

    /// Adds `units` at `now` (ckpool `decay_client`: batched when under 50 ms since the last decay).
    pub fn add(&mut self, now: u64, units: u128) {
        let dt = now.saturating_sub(self.last_decay);
        if dt < BATCH_US {
            self.pending = self.pending.saturating_add(units);
            return;
        }
        self.apply(now, units);
    }

    /// Brings every window up to `now`, folding in anything batched (adds nothing else).
    pub fn flush(&mut self, now: u64) {
        if now > self.last_decay || self.pending > 0 {
            self.apply(now, 0);
        }
    }

    fn apply(&mut self, now: u64, units: u128) {
        let dt = now.saturating_sub(self.last_decay).max(MIN_TDIFF_US);
        let add = units.saturating_add(std::mem::take(&mut self.pending)).saturating_mul(METER_SCALE);
        for (v, w) in self.values.iter_mut().zip(&self.windows_us) {
            *v = decay(*v, add, dt, *w);
        }
        self.last_decay = self.last_decay.max(now);
    }

    /// Decays every window by `secs` of silence (ckpool's catch-up after a restart).
    pub fn decay_silence(&mut self, secs: u64) {
        for (v, w) in self.values.iter_mut().zip(&self.windows_us) {
            *v = decay(*v, 0, secs * US, *w);
        }
    }

    /// The current value of window `i`, units per second (floored).
    pub fn value(&self, i: usize) -> u128 {
        self.values[i] / METER_SCALE
    }

    /// Window `i` in 10^-6 units per second.
    pub fn value_fine(&self, i: usize) -> u128 {
        self.values[i]
    }

    /// Sets window `i` to `v` units per second (loading saved statistics).
    pub fn set(&mut self, i: usize, v: u128) {
        self.values[i] = v.saturating_mul(METER_SCALE);
    }
}

/// Vardiff settings (config keys `vardiff_target_interval`, `vardiff_retarget_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VardiffParams {
    /// Seconds between shares aimed at, in microseconds (ckpool: 3.33 s, 0.3 shares/s).
    pub target_interval_us: u64,
    /// Longest time between retarget checks, in microseconds (ckpool: 240 s).
    pub retarget_interval_us: u64,
}

impl Default for VardiffParams {
    fn default() -> Self {
        VardiffParams { target_interval_us: 3_333_333, retarget_interval_us: 240 * US }
    }
}

impl VardiffParams {
    /// Shares that trigger a check early: as many as the retarget interval should bring (72).
    pub fn retarget_shares(&self) -> u64 {
        (self.retarget_interval_us / self.target_interval_us.max(1)).max(1)
    }

    /// Is `rate` (10^-12 difficulty units per second) at `diff` inside the band, i.e. is
    /// rate/diff strictly between ½ and 4⁄3 shares per target interval?
    pub fn in_band(&self, rate: u128, diff: Difficulty) -> bool {
        // drr = rate/diff shares per second; drr·T > 1/2 and drr·T < 4/3, T = target_us/10^6.
        let rt = U256::from(rate) * U256::from(self.target_interval_us);
        let d = U256::from(diff.units()) * U256::from(US);
        rt * U256::from(2u8) > d && rt * U256::from(3u8) < d * U256::from(4u8)
    }

    /// The difficulty giving one share per target interval at `rate`: rate·T, before rounding.
    pub fn optimal(&self, rate: u128) -> Difficulty {
        Difficulty::ONE
            .mul_ratio(rate, SCALE)
            .and_then(|d| d.mul_ratio(self.target_interval_us as u128, US as u128))
            .unwrap_or(Difficulty::ZERO)
    }
}

/// What a difficulty may be for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub mindiff: Difficulty,
    /// Zero: no maximum.
    pub maxdiff: Difficulty,
    /// The miner's own suggestion (suggest_difficulty, configure, `d=`), a floor.
    pub suggested: Option<Difficulty>,
    /// The network difficulty of the current job (its nbits).
    pub network: Option<Difficulty>,
}

impl Limits {
    /// Clamps `d`: ≥ mindiff, ≥ suggestion, ≤ maxdiff (when set), ≤ network difficulty but never
    /// below mindiff. So: mindiff ≤ result ≤ max(network, mindiff), and ≤ maxdiff when set.
    pub fn clamp(&self, d: Difficulty) -> Difficulty {
        let mut d = d.max(self.mindiff);
        if let Some(s) = self.suggested {
            d = d.max(s);
        }
        if !self.maxdiff.is_zero() {
            d = d.min(self.maxdiff);
        }
        if let Some(n) = self.network {
            d = d.min(n);
        }
        d.max(self.mindiff)
    }
}

/// Rounds a new difficulty: to the nearest integer at or above 1 (ckpool's `lround`), else to
/// 4 significant digits (half up), never to zero.
pub fn round_difficulty(d: Difficulty) -> Difficulty {
    let u = d.units();
    if u >= SCALE {
        return Difficulty::from_units((u + SCALE / 2) / SCALE * SCALE);
    }
    let digits = if u == 0 { 1 } else { u.ilog10() + 1 };
    if digits <= 4 {
        return Difficulty::from_units(u.max(1));
    }
    let step = 10u128.pow(digits - 4);
    Difficulty::from_units(((u + step / 2) / step * step).max(1))
}

/// One session's vardiff state.
#[derive(Debug, Clone)]
pub struct Vardiff {
    params: VardiffParams,
    /// dsps over 60 s (index 0) and 300 s (index 1).
    meter: Meter<2>,
    created: u64,
    first_share: Option<u64>,
    last_share: Option<u64>,
    /// Last difficulty change (ckpool `ldc`).
    last_change: u64,
    /// Shares since the last difficulty change (ckpool `ssdc`).
    since_change: u64,
}

/// Why and how a difficulty changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retarget {
    pub new: Difficulty,
    /// The biased rate the decision used, 10^-12 difficulty units per second.
    pub rate: u128,
}

impl Vardiff {
    pub fn new(params: VardiffParams, now: u64) -> Vardiff {
        Vardiff {
            params,
            meter: Meter::new(&[60, 300], now),
            created: now,
            first_share: None,
            last_share: None,
            last_change: now,
            since_change: 0,
        }
    }

    pub fn params(&self) -> &VardiffParams {
        &self.params
    }

    /// The difficulty changed for another reason (a suggestion): restart the retarget clock.
    pub fn reset(&mut self, now: u64) {
        self.last_change = now;
        self.since_change = 0;
    }

    /// An accepted share judged at `share_diff` arrived at `now`; the session is at `current`.
    /// Returns the new difficulty when it should change.
    pub fn on_share(
        &mut self,
        now: u64,
        share_diff: Difficulty,
        current: Difficulty,
        lim: &Limits,
    ) -> Option<Retarget> {
        if self.first_share.is_none() {
            self.first_share = Some(now);
            self.last_change = now;
        }
        self.meter.add(now, share_diff.units());
        self.last_share = Some(now);
        self.since_change += 1;
        let elapsed = now.saturating_sub(self.last_change);
        let enough = self.since_change >= self.params.retarget_shares();
        if !enough && elapsed < self.params.retarget_interval_us {
            return None;
        }
        if share_diff != current {
            // Judged at an older difficulty: wait for shares at the current one (ckpool).
            self.since_change = 0;
            return None;
        }
        self.meter.flush(now);
        let fast = enough && elapsed < self.params.retarget_interval_us / 2;
        self.decide(now, current, lim, fast)
    }

    /// A check while no share arrives (run when the session sends work): after a retarget
    /// interval without shares or changes, the decayed rate decides.
    pub fn on_idle(&mut self, now: u64, current: Difficulty, lim: &Limits) -> Option<Retarget> {
        let quiet_since = self.last_share.unwrap_or(self.created).max(self.last_change);
        if now.saturating_sub(quiet_since) < self.params.retarget_interval_us {
            return None;
        }
        self.meter.flush(now);
        let r = self.decide(now, current, lim, false);
        if r.is_some() {
            // The miner went quiet (or started far too high): measure afresh from its next
            // share, young-session bias included, instead of climbing back through a stale average.
            self.meter = Meter::new(&[60, 300], now);
            self.created = now;
            self.first_share = None;
        }
        r
    }

    /// The biased rate estimate (10^-12 units per second): `dsps5 / time_bias(age, 300 s)`, or
    /// with `fast`, `dsps1 / time_bias(age, 60 s)`.
    pub fn rate(&self, now: u64, fast: bool) -> u128 {
        let (raw, window) =
            if fast { (self.meter.value_fine(0), 60 * US) } else { (self.meter.value_fine(1), 300 * US) };
        let age = now.saturating_sub(self.first_share.unwrap_or(self.created));
        let bias = time_bias_q62(age, window);
        let v = U256::from(raw) * U256::from(ONE_Q) / (U256::from(bias) * U256::from(METER_SCALE));
        if v > U256::from(u128::MAX) {
            u128::MAX
        } else {
            v.to::<u128>()
        }
    }

    fn decide(&mut self, now: u64, current: Difficulty, lim: &Limits, fast: bool) -> Option<Retarget> {
        let rate = self.rate(now, fast);
        if self.params.in_band(rate, current) {
            return None;
        }
        let new = lim.clamp(round_difficulty(self.params.optimal(rate)));
        if new == current {
            return None;
        }
        self.since_change = 0;
        self.last_change = now;
        Some(Retarget { new, rate })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Difficulty {
        s.parse().unwrap()
    }

    #[test]
    fn exp_matches_known_values() {
        // e^-1 = 0.36787944117144233..., e^-0.5 = 0.6065306597126334...
        let e1 = exp_neg_q62(1, 1) as f64 / ONE_Q as f64;
        assert!((e1 - 0.367_879_441_171_442_33).abs() < 1e-15, "{e1}");
        let eh = exp_neg_q62(150, 300) as f64 / ONE_Q as f64;
        assert!((eh - 0.606_530_659_712_633_4).abs() < 1e-15, "{eh}");
        assert_eq!(exp_neg_q62(0, 300), ONE_Q);
        // Capped at 36 like ckpool: e^-36 = 2.319522830243569e-16.
        assert_eq!(exp_neg_q62(1000, 1), exp_neg_q62(36, 1));
        let e36 = exp_neg_q62(36, 1) as f64 / ONE_Q as f64;
        // Q62 resolves 2^-62 ≈ 2.2e-19, so e^-36 is within 1e-2 relative (it only ever ends a decay).
        assert!((e36 / 2.319_522_830_243_569e-16 - 1.0).abs() < 1e-2, "{e36}");
    }

    #[test]
    fn decay_matches_ckpool_formula() {
        // ckpool decay_time(f=0, fadd=10, fsecs=1, interval=300): p = 1-e^(-1/300),
        // f = (10 · p) / (1 + p) = 0.033222591... difficulty-1 shares per second.
        let f = decay(0, 10 * SCALE, US, 300 * US);
        let p = 1.0 - (-1.0f64 / 300.0).exp();
        let want = 10.0 * p / (1.0 + p);
        assert!((f as f64 / SCALE as f64 - want).abs() < 1e-11, "{f} vs {want}");
        // Steady input converges to the true rate: one difficulty-3 share per second.
        let mut m = Meter::new(&[60, 300], 0);
        for s in 1..=3600u64 {
            m.add(s * US, 3 * SCALE);
        }
        for i in 0..2 {
            let v = m.value(i) as f64 / SCALE as f64;
            assert!((v - 3.0).abs() < 0.03, "window {i}: {v}");
        }
    }

    #[test]
    fn tiny_rates_keep_their_precision() {
        // A regtest miner: difficulty 2.5e-10 every 0.2 s = 1.25e-9 difficulty-1 shares/s.
        let mut m = Meter::new(&[60, 300], 0);
        for i in 1..=600u64 {
            m.add(i * 200_000, 250);
        }
        // 120 s: the 60 s window is near the rate; the 300 s one is at 1 − e^(−0.4) of it.
        let v0 = m.value(0) as f64;
        let v1 = m.value(1) as f64;
        assert!((v0 / 1250.0 - (1.0 - (-2.0f64).exp())).abs() < 0.01, "{v0}");
        assert!((v1 / 1250.0 - (1.0 - (-0.4f64).exp())).abs() < 0.01, "{v1}");
    }

    #[test]
    fn rounding() {
        assert_eq!(round_difficulty(d("1234.5")), d("1235"));
        assert_eq!(round_difficulty(d("1234.4999")), d("1234"));
        assert_eq!(round_difficulty(d("1")), d("1"));
        assert_eq!(round_difficulty(d("0.99996")), d("1"));
        assert_eq!(round_difficulty(d("0.00123456")), d("0.001235"));
        assert_eq!(round_difficulty(d("0.000000000123")), d("0.000000000123"));
        assert_eq!(round_difficulty(Difficulty::ZERO), Difficulty::from_units(1));
    }

    #[test]
    fn clamp_order() {
        let lim = Limits { mindiff: d("1"), maxdiff: d("1000"), suggested: Some(d("50")), network: Some(d("500")) };
        assert_eq!(lim.clamp(d("0.5")), d("50"));
        assert_eq!(lim.clamp(d("700")), d("500"));
        // Regtest: the network difficulty is below mindiff; mindiff wins.
        let reg = Limits {
            mindiff: d("0.001"),
            maxdiff: Difficulty::ZERO,
            suggested: None,
            network: Some(d("0.000000000465")),
        };
        assert_eq!(reg.clamp(d("42")), d("0.001"));
    }

    #[test]
    fn band_is_015_to_04_by_default() {
        let p = VardiffParams::default();
        assert_eq!(p.retarget_shares(), 72);
        let one = Difficulty::ONE;
        // rate in difficulty-1 shares/s at difficulty 1 = shares per second.
        assert!(!p.in_band(SCALE * 15 / 100, one));
        assert!(p.in_band(SCALE * 1501 / 10000, one));
        assert!(p.in_band(SCALE * 39999 / 100000, one));
        // T = 3.333333 s: the upper edge is 4/(3T) = 0.40000004 shares/s.
        assert!(!p.in_band(SCALE * 400001 / 1000000, one));
        assert_eq!(p.optimal(3 * SCALE), d("9.999999"));
    }

    #[test]
    fn steady_miner_retargets_after_72_shares_then_holds() {
        // 10 difficulty-1 shares per second: the aim is difficulty 33.33 → 33.
        let p = VardiffParams::default();
        let lim = Limits { mindiff: d("1"), maxdiff: Difficulty::ZERO, suggested: None, network: None };
        let mut v = Vardiff::new(p, 0);
        let mut cur = d("1");
        let mut t = 0u64;
        let mut changes = vec![];
        for _ in 0..2000 {
            // deterministic arrivals at the expected spacing: diff/10 seconds
            t += (cur.units() * US as u128 / (10 * SCALE)) as u64;
            if let Some(r) = v.on_share(t, cur, cur, &lim) {
                changes.push((t, r.new));
                cur = r.new;
            }
        }
        assert_eq!(changes[0].0, 72 * 100_000, "first check after 72 shares");
        assert!(changes.len() <= 3, "{changes:?}");
        assert!(p.in_band(10 * SCALE, cur), "ends at {cur}");
    }

    #[test]
    fn idle_session_is_lowered_on_the_decayed_rate() {
        let p = VardiffParams::default();
        let lim = Limits { mindiff: d("0.001"), maxdiff: Difficulty::ZERO, suggested: None, network: None };
        let mut v = Vardiff::new(p, 0);
        // Nothing before the retarget interval.
        assert_eq!(v.on_idle(239 * US, d("42"), &lim), None);
        // No share at all in 240 s: down to mindiff.
        assert_eq!(v.on_idle(240 * US, d("42"), &lim).map(|r| r.new), Some(d("0.001")));
        // Not again until another interval passed.
        assert_eq!(v.on_idle(300 * US, d("0.001"), &lim), None);
    }
}
