//! Vardiff simulations: Poisson miners from 10 kH/s to 1 PH/s (seeded xorshift), hashrate steps,
//! and property tests of the clamps. `cargo test --test vardiff_sim -- --nocapture` prints the
//! convergence table.

use ckpool::difficulty::{Difficulty, SCALE};
use ckpool::mining::vardiff::{Limits, Vardiff, VardiffParams, US};
use proptest::prelude::*;

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }
    /// Exponential waiting time (seconds) for events at `rate` per second.
    fn exp(&mut self, rate: f64) -> f64 {
        -self.unit().ln() / rate
    }
}

/// Difficulty-1 shares per second of a miner hashing `h` H/s, as vardiff's rate units.
fn rate_units(h: f64) -> u128 {
    (h / 4_294_967_296.0 * SCALE as f64) as u128
}

/// Expected shares per second of a `h` H/s miner at difficulty `d` (display only).
fn share_rate(h: f64, d: Difficulty) -> f64 {
    h / 4_294_967_296.0 / d.as_f64()
}

struct Phase {
    hashrate: f64,
    secs: u64,
}

struct PhaseResult {
    /// Difficulty changes in the phase until the first difficulty inside the band.
    retargets_to_band: usize,
    /// Seconds from the phase start until then.
    secs_to_band: f64,
    /// Changes after reaching the band.
    changes_after: usize,
    /// Every difficulty set after reaching the band kept the expected rate inside it.
    stayed_in_band: bool,
    /// Shares per second measured after reaching the band.
    measured_sps: f64,
    final_diff: Difficulty,
}

/// Runs a miner through `phases`. Shares arrive as a Poisson process at the difficulty in force;
/// the session sends work every 30 s, where the idle check runs. Every new difficulty is checked
/// against the limits.
fn simulate(phases: &[Phase], start: Difficulty, lim: &Limits, params: VardiffParams, seed: u64) -> Vec<PhaseResult> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v = Vardiff::new(params, 0);
    let mut cur = lim.clamp(start);
    let mut t = 0u64;
    let mut out = Vec::new();
    for ph in phases {
        let end = t + ph.secs * US;
        let phase_start = t;
        let mut changes = 0usize;
        let mut reached: Option<(usize, u64)> = None;
        let mut after = 0usize;
        let mut stayed = true;
        let mut shares_after = 0u64;
        if params.in_band(rate_units(ph.hashrate), cur) {
            reached = Some((0, t));
        }
        let mut next_share = t.saturating_add((rng.exp(share_rate(ph.hashrate, cur)) * 1e6) as u64);
        let mut next_work = (t / (30 * US) + 1) * 30 * US;
        while t < end {
            let change = if next_share <= next_work {
                t = next_share;
                if reached.is_some() {
                    shares_after += 1;
                }
                v.on_share(t, cur, cur, lim)
            } else {
                t = next_work;
                next_work += 30 * US;
                v.on_idle(t, cur, lim)
            };
            let changed = change.is_some();
            if let Some(r) = change {
                assert_clamped(r.new, lim);
                // SIMTRACE=1 prints every change (time, old -> new, the rate that decided, in band?).
                if std::env::var("SIMTRACE").is_ok() {
                    eprintln!(
                        "t={:.1} {} -> {} rate {:.3e} band {}",
                        t as f64 / 1e6,
                        cur,
                        r.new,
                        r.rate as f64 / 1e12,
                        params.in_band(rate_units(ph.hashrate), r.new)
                    );
                }
                cur = r.new;
                changes += 1;
                let ok = params.in_band(rate_units(ph.hashrate), cur);
                match reached {
                    None if ok => reached = Some((changes, t)),
                    None => {}
                    Some(_) => {
                        after += 1;
                        stayed &= ok;
                    }
                }
            }
            if changed || t >= next_share {
                // Memoryless: redraw at the difficulty now in force.
                next_share = t.saturating_add(((rng.exp(share_rate(ph.hashrate, cur)) * 1e6) as u64).max(1));
            }
        }
        let (n, at) = reached.unwrap_or((usize::MAX, end));
        let secs_after = (end - at) as f64 / 1e6;
        out.push(PhaseResult {
            retargets_to_band: n,
            secs_to_band: (at - phase_start) as f64 / 1e6,
            changes_after: after,
            stayed_in_band: stayed,
            measured_sps: if secs_after > 0.0 { shares_after as f64 / secs_after } else { 0.0 },
            final_diff: cur,
        });
    }
    out
}

fn assert_clamped(d: Difficulty, lim: &Limits) {
    assert!(d >= lim.mindiff, "{d} below mindiff {}", lim.mindiff);
    if !lim.maxdiff.is_zero() {
        assert!(d <= lim.maxdiff.max(lim.mindiff), "{d} above maxdiff {}", lim.maxdiff);
    }
    if let Some(n) = lim.network {
        assert!(d <= n.max(lim.mindiff), "{d} above network {n} (mindiff {})", lim.mindiff);
    }
}

fn d(s: &str) -> Difficulty {
    s.parse().unwrap()
}

const SEEDS: u64 = 12;
const HASHRATES: [(f64, &str); 6] =
    [(1e4, "10 kH/s"), (1e6, "1 MH/s"), (1e9, "1 GH/s"), (1e12, "1 TH/s"), (1e14, "100 TH/s"), (1e15, "1 PH/s")];

/// Every miner from 10 kH/s to 1 PH/s, starting at ckpool's default startdiff 42, reaches the
/// band within 4 retargets and 20 minutes, every later difficulty keeps it inside the band, at
/// most 4 more changes happen in 6 hours, and the measured share rate is inside the band.
#[test]
fn miners_from_10khs_to_1phs_converge_and_stay_in_band() {
    let params = VardiffParams::default();
    let lim = Limits { mindiff: d("0.000001"), maxdiff: Difficulty::ZERO, suggested: None, network: None };
    println!(
        "\nvardiff convergence: start at difficulty 42, target 0.3 shares/s, band 0.15..0.4, {SEEDS} seeds, 6 h each"
    );
    println!(
        "{:>9} | {:>14} | {:>17} | {:>15} | {:>17} | {:>12}",
        "hashrate", "final diff", "retargets to band", "time to band", "changes after/6h", "shares/s"
    );
    println!("{:>9} | {:>14} | {:>17} | {:>15} | {:>17} | {:>12}", "", "", "(max)", "(max)", "(max)", "(mean)");
    for (h, name) in HASHRATES {
        let mut worst_n = 0;
        let mut worst_t: f64 = 0.0;
        let mut worst_after = 0;
        let mut sps = 0.0;
        let mut last = Difficulty::ZERO;
        for seed in 0..SEEDS {
            let r = simulate(&[Phase { hashrate: h, secs: 6 * 3600 }], d("42"), &lim, params, seed).remove(0);
            assert!(r.retargets_to_band <= 4, "{name} seed {seed}: {} retargets to the band", r.retargets_to_band);
            assert!(r.secs_to_band <= 1200.0, "{name} seed {seed}: {} s to the band", r.secs_to_band);
            assert!(r.stayed_in_band, "{name} seed {seed}: left the band after converging");
            assert!(r.changes_after <= 4, "{name} seed {seed}: {} changes after converging", r.changes_after);
            assert!((0.15..0.4).contains(&r.measured_sps), "{name} seed {seed}: {} shares/s", r.measured_sps);
            worst_n = worst_n.max(r.retargets_to_band);
            worst_t = worst_t.max(r.secs_to_band);
            worst_after = worst_after.max(r.changes_after);
            sps += r.measured_sps / SEEDS as f64;
            last = r.final_diff;
        }
        println!(
            "{name:>9} | {:>14} | {worst_n:>17} | {:>13.1} s | {worst_after:>17} | {sps:>12.3}",
            last.to_string(),
            worst_t
        );
    }
}

/// Hashrate steps ×10 up and ÷100 down are followed: the band is reached again within 8
/// retargets and 45 minutes of each step (the 5-minute average lags, as in ckpool), and held.
#[test]
fn hashrate_steps_are_followed() {
    let params = VardiffParams::default();
    let lim = Limits { mindiff: d("1"), maxdiff: Difficulty::ZERO, suggested: None, network: None };
    println!("\nvardiff steps (1 TH/s → 10 TH/s → 100 GH/s), {SEEDS} seeds");
    println!("{:>10} | {:>17} | {:>15}", "step", "retargets (max)", "time (max)");
    let phases = [
        Phase { hashrate: 1e12, secs: 3 * 3600 },
        Phase { hashrate: 1e13, secs: 3 * 3600 },
        Phase { hashrate: 1e11, secs: 3 * 3600 },
    ];
    let mut worst = [(0usize, 0f64); 3];
    for seed in 0..SEEDS {
        let rs = simulate(&phases, d("42"), &lim, params, 1000 + seed);
        for (i, r) in rs.iter().enumerate() {
            assert!(r.retargets_to_band <= 8, "phase {i} seed {seed}: {} retargets", r.retargets_to_band);
            assert!(r.secs_to_band <= 2700.0, "phase {i} seed {seed}: {} s", r.secs_to_band);
            assert!(r.stayed_in_band, "phase {i} seed {seed}: left the band");
            worst[i] = (worst[i].0.max(r.retargets_to_band), worst[i].1.max(r.secs_to_band));
        }
    }
    for (i, name) in ["start", "x10 up", "/100 down"].iter().enumerate() {
        println!("{name:>10} | {:>17} | {:>13.1} s", worst[i].0, worst[i].1);
    }
}

/// A miner that stops for an hour is lowered by the idle check, not left at a difficulty it
/// cannot meet, and climbs back when it resumes.
#[test]
fn quiet_miner_is_lowered_and_recovers() {
    let params = VardiffParams::default();
    let lim = Limits { mindiff: d("1"), maxdiff: Difficulty::ZERO, suggested: None, network: None };
    let phases = [
        Phase { hashrate: 1e13, secs: 3600 },
        Phase { hashrate: 1e-3, secs: 3600 },
        Phase { hashrate: 1e13, secs: 3600 },
    ];
    let rs = simulate(&phases, d("42"), &lim, params, 7);
    assert!(rs[0].final_diff > d("1000"), "{}", rs[0].final_diff);
    // ckpool's decay divides a silent average by at most 2 per check, so an hour of silence
    // ends far down (the first check already lowers), not necessarily at mindiff.
    assert!(rs[1].final_diff < Difficulty::from_units(rs[0].final_diff.units() / 100), "{}", rs[1].final_diff);
    println!("after an idle hour: {} retargets, {:.1} s back to the band", rs[2].retargets_to_band, rs[2].secs_to_band);
    assert!(rs[2].retargets_to_band <= 10 && rs[2].stayed_in_band);
}

fn diff_strategy() -> impl Strategy<Value = Difficulty> {
    (1u128..=1_000_000_000_000_000_000u128).prop_map(Difficulty::from_units)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the limits, hashrate and arrivals, every difficulty vardiff picks respects them.
    #[test]
    fn clamps_always_hold(
        mindiff in diff_strategy(),
        maxdiff_mul in prop::option::of(1u128..1000),
        suggested in prop::option::of(diff_strategy()),
        network in prop::option::of(diff_strategy()),
        hashrate_exp in 3.0f64..16.0,
        seed in any::<u64>(),
    ) {
        let maxdiff = maxdiff_mul.map(|m| Difficulty::from_units(mindiff.units().saturating_mul(m))).unwrap_or(Difficulty::ZERO);
        let lim = Limits { mindiff, maxdiff, suggested, network };
        let h = 10f64.powf(hashrate_exp);
        let params = VardiffParams { target_interval_us: 3_333_333, retarget_interval_us: 240 * US };
        // simulate() asserts the clamps on every change.
        let rs = simulate(&[Phase { hashrate: h, secs: 1800 }, Phase { hashrate: h / 50.0, secs: 1800 }], d("42"), &lim, params, seed);
        for r in rs {
            assert_clamped(r.final_diff, &lim);
            if let Some(s) = suggested {
                let cap = if maxdiff.is_zero() { Difficulty::MAX } else { maxdiff };
                let cap = cap.min(network.map(|n| n.max(mindiff)).unwrap_or(Difficulty::MAX));
                prop_assert!(r.final_diff >= s.min(cap), "{} below suggestion {}", r.final_diff, s);
            }
        }
    }

    /// The clamp alone: mindiff ≤ result ≤ max(network, mindiff), ≤ maxdiff when set (maxdiff ≥ mindiff).
    #[test]
    fn clamp_bounds(want in diff_strategy(), mindiff in diff_strategy(), network in diff_strategy(), extra in 0u128..1_000_000) {
        let maxdiff = Difficulty::from_units(mindiff.units() + extra);
        let lim = Limits { mindiff, maxdiff, suggested: None, network: Some(network) };
        let got = lim.clamp(want);
        prop_assert!(got >= mindiff);
        prop_assert!(got <= maxdiff);
        prop_assert!(got <= network.max(mindiff));
        if want >= mindiff && want <= maxdiff && want <= network { prop_assert_eq!(got, want); }
    }
}
