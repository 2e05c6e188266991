//! The pool hashrate chart's data: two bounded rings of samples taken from the pool's accepted
//! difficulty counter (pure: the caller passes the time and the counter).
//!
//! The last hour is kept at 10-second resolution (360 points), the last day at 5-minute
//! resolution (288 points): about 10 KB in all, whatever the pool's size or uptime.

use std::collections::VecDeque;

use crate::difficulty::SCALE;

/// Seconds between samples of the hour ring, and its length.
pub const HOUR_STEP: u64 = 10;
pub const HOUR_POINTS: usize = 360;
/// Seconds between points of the day ring, and its length.
pub const DAY_STEP: u64 = 300;
pub const DAY_POINTS: usize = 288;

/// One point: unix seconds at its end, and the hashrate over its span (H/s).
pub type Point = (u64, f64);

#[derive(Debug, Default)]
pub struct History {
    /// The last sample: unix seconds and the counter (10^-12 difficulty units, wrapping).
    last: Option<(u64, u64)>,
    hour: VecDeque<Point>,
    day: VecDeque<Point>,
    /// The day point being filled: its start and the units accepted so far.
    day_open: Option<(u64, u64)>,
}

/// H/s of `units` (10^-12 difficulty-1 shares) accepted over `secs` seconds.
pub fn hashrate(units: u64, secs: u64) -> f64 {
    if secs == 0 {
        return 0.0;
    }
    units as f64 / SCALE as f64 * 4_294_967_296.0 / secs as f64
}

impl History {
    /// Takes a sample: `accepted_units` is the pool's accepted-difficulty counter, which wraps.
    pub fn sample(&mut self, unix: u64, accepted_units: u64) {
        let Some((t0, u0)) = self.last.replace((unix, accepted_units)) else {
            self.day_open = Some((unix, 0));
            return;
        };
        if unix <= t0 {
            return;
        }
        let units = accepted_units.wrapping_sub(u0);
        push(&mut self.hour, (unix, hashrate(units, unix - t0)), HOUR_POINTS);
        let (start, sum) = self.day_open.get_or_insert((t0, 0));
        *sum = sum.wrapping_add(units);
        if unix - *start >= DAY_STEP {
            let point = (unix, hashrate(*sum, unix - *start));
            self.day_open = Some((unix, 0));
            push(&mut self.day, point, DAY_POINTS);
        }
    }

    pub fn hour(&self) -> impl Iterator<Item = &Point> {
        self.hour.iter()
    }

    pub fn day(&self) -> impl Iterator<Item = &Point> {
        self.day.iter()
    }
}

fn push(ring: &mut VecDeque<Point>, p: Point, cap: usize) {
    if ring.len() == cap {
        ring.pop_front();
    }
    ring.push_back(p);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_are_bounded_and_rates_exact() {
        let mut h = History::default();
        h.sample(1000, 0);
        assert_eq!(h.hour().count(), 0);
        // One difficulty-1 share per second is 2^32 H/s.
        let per_step = SCALE as u64 * HOUR_STEP;
        let mut units = 0u64;
        for i in 1..=2000u64 {
            units = units.wrapping_add(per_step);
            h.sample(1000 + i * HOUR_STEP, units);
        }
        assert_eq!(h.hour().count(), HOUR_POINTS);
        assert!(h.hour().all(|&(_, r)| r == 4_294_967_296.0));
        // 2000 samples of 10 s = 20000 s = 66 full 5-minute points.
        assert_eq!(h.day().count(), 66);
        assert!(h.day().all(|&(_, r)| (r - 4_294_967_296.0).abs() < 1e-3));
        for i in 2001..=12000u64 {
            units = units.wrapping_add(per_step);
            h.sample(1000 + i * HOUR_STEP, units);
        }
        assert_eq!(h.day().count(), DAY_POINTS);
        let last = h.hour().last().unwrap().0;
        assert_eq!(last, 1000 + 12000 * HOUR_STEP);
    }

    #[test]
    fn counter_wrap_and_clock_steps() {
        let mut h = History::default();
        h.sample(100, u64::MAX - 5);
        h.sample(110, 4); // wrapped: 10 units
        assert_eq!(h.hour().next().unwrap().1, hashrate(10, 10));
        h.sample(105, 999); // clock went back: ignored, next sample measures from here
        assert_eq!(h.hour().count(), 1);
        h.sample(115, 999);
        assert_eq!(h.hour().last().unwrap().1, 0.0);
    }
}
