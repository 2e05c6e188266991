//! Retention and downsampling, pure: the caller passes the time.
//!
//! Minute rows are kept for a week; older ones are folded into hour rows (sums added, counts
//! added), and hour rows are kept for a year. Folding happens on whole hours only: the hour that
//! holds the one-week cutoff keeps its minute rows until it is entirely older than the cutoff, so
//! an hour row is never half made of minutes still stored.

use std::collections::BTreeMap;

/// Seconds in a minute row and in an hour row.
pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;
/// How long minute rows are kept before being folded into hours.
pub const MINUTE_KEEP: i64 = 7 * 86_400;
/// How long hour rows are kept.
pub const HOUR_KEEP: i64 = 365 * 86_400;

/// The start of the minute holding `unix`.
pub fn minute_of(unix: i64) -> i64 {
    unix.div_euclid(MINUTE) * MINUTE
}

/// The start of the hour holding `unix`.
pub fn hour_of(unix: i64) -> i64 {
    unix.div_euclid(HOUR) * HOUR
}

/// What retention does at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Minute rows starting before this (an hour boundary) are folded into hour rows.
    pub fold_before: i64,
    /// Rows starting before this are deleted.
    pub drop_before: i64,
}

/// Retention's plan at `now` (unix seconds).
pub fn plan(now: i64) -> Plan {
    Plan { fold_before: hour_of(now - MINUTE_KEEP), drop_before: now - HOUR_KEEP }
}

/// Difficulty sums of one row: accepted and rejected, in 10^-12 difficulty units, and counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sums {
    pub acc: u128,
    pub acc_n: u64,
    pub rej: u128,
    pub rej_n: u64,
}

impl Sums {
    pub fn add(&mut self, o: &Sums) {
        self.acc = self.acc.saturating_add(o.acc);
        self.acc_n = self.acc_n.saturating_add(o.acc_n);
        self.rej = self.rej.saturating_add(o.rej);
        self.rej_n = self.rej_n.saturating_add(o.rej_n);
    }

    pub fn is_empty(&self) -> bool {
        self.acc_n == 0 && self.rej_n == 0
    }
}

/// A stored row: its resolution ([`MINUTE`] or [`HOUR`]), its start, a key (worker, or pool) and
/// its sums. The reference model of what the store's tables hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<K> {
    pub res: i64,
    pub ts: i64,
    pub key: K,
    pub sums: Sums,
}

/// Applies `plan` to `rows`: minute rows before `fold_before` become (or are added to) hour rows,
/// then rows before `drop_before` go. The result is ordered by (res, ts, key).
pub fn apply<K: Ord + Clone>(rows: Vec<Row<K>>, plan: Plan) -> Vec<Row<K>> {
    let mut out: BTreeMap<(i64, i64, K), Sums> = BTreeMap::new();
    for r in rows {
        let (res, ts) = if r.res == MINUTE && r.ts < plan.fold_before { (HOUR, hour_of(r.ts)) } else { (r.res, r.ts) };
        out.entry((res, ts, r.key)).or_default().add(&r.sums);
    }
    out.into_iter()
        .filter(|((_, ts, _), _)| *ts >= plan.drop_before)
        .map(|((res, ts, key), sums)| Row { res, ts, key, sums })
        .collect()
}

/// The hours whose minute rows a fold at `plan` turns into an hour row, given the oldest minute
/// row's start: `[first, fold_before)` in steps of an hour (empty when nothing is old enough).
pub fn fold_hours(oldest_minute: i64, plan: Plan) -> impl Iterator<Item = i64> {
    let first = hour_of(oldest_minute);
    (0..).map(move |i| first + i * HOUR).take_while(move |h| *h < plan.fold_before)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_764_000_000; // 2025-11-24T16:00:00Z, an hour boundary

    fn s(acc: u128) -> Sums {
        Sums { acc, acc_n: 1, rej: 0, rej_n: 0 }
    }

    #[test]
    fn minutes_and_hours_align() {
        assert_eq!(T0 % HOUR, 0);
        assert_eq!(minute_of(T0 + 59), T0);
        assert_eq!(minute_of(T0 + 60), T0 + 60);
        assert_eq!(hour_of(T0 + 3599), T0);
        assert_eq!(minute_of(-1), -60);
    }

    #[test]
    fn plan_folds_whole_hours_a_week_back() {
        let now = T0 + MINUTE_KEEP + 1800; // half an hour past a week after T0
        let p = plan(now);
        assert_eq!(p.fold_before, T0);
        assert_eq!(p.drop_before, now - HOUR_KEEP);
        let p = plan(T0 + MINUTE_KEEP + HOUR);
        assert_eq!(p.fold_before, T0 + HOUR);
    }

    #[test]
    fn apply_folds_sums_exactly_and_keeps_recent_minutes() {
        // Two workers, one row a minute for 3 hours starting at T0, each minute 1e-12 × (i + 1).
        let mut rows = Vec::new();
        for i in 0..180i64 {
            for w in ["a", "b"] {
                rows.push(Row { res: MINUTE, ts: T0 + i * MINUTE, key: w, sums: s(i as u128 + 1) });
            }
        }
        // Fold at 1.5 hours past a week after T0 + 1 h: hours T0 and T0+1h fold, T0+2h stays.
        let now = T0 + 2 * HOUR + MINUTE_KEEP + 1800;
        let p = plan(now);
        assert_eq!(p.fold_before, T0 + 2 * HOUR);
        let out = apply(rows, p);
        let hours: Vec<_> = out.iter().filter(|r| r.res == HOUR).collect();
        assert_eq!(hours.len(), 4);
        // hour 0: sum 1..=60 = 1830; hour 1: sum 61..=120 = 5430; 60 shares each.
        assert_eq!(
            hours[0],
            &Row { res: HOUR, ts: T0, key: "a", sums: Sums { acc: 1830, acc_n: 60, rej: 0, rej_n: 0 } }
        );
        assert_eq!(hours[2].sums.acc, 5430);
        assert_eq!(hours[2].ts, T0 + HOUR);
        let minutes = out.iter().filter(|r| r.res == MINUTE).count();
        assert_eq!(minutes, 2 * 60);
        assert!(out.iter().filter(|r| r.res == MINUTE).all(|r| r.ts >= T0 + 2 * HOUR));
        // Nothing lost: the totals are equal.
        let total: u128 = out.iter().map(|r| r.sums.acc).sum();
        assert_eq!(total, 2 * (1..=180u128).sum::<u128>());
    }

    #[test]
    fn apply_adds_to_existing_hour_rows_and_drops_after_a_year() {
        let rows = vec![
            Row { res: HOUR, ts: T0, key: "a", sums: s(100) },
            Row { res: MINUTE, ts: T0 + 120, key: "a", sums: s(5) },
            Row { res: HOUR, ts: T0 - HOUR_KEEP, key: "a", sums: s(7) },
        ];
        let now = T0 + MINUTE_KEEP + 2 * HOUR;
        let out = apply(rows, plan(now));
        assert_eq!(out, vec![Row { res: HOUR, ts: T0, key: "a", sums: Sums { acc: 105, acc_n: 2, rej: 0, rej_n: 0 } }]);
        // Applying the same plan again changes nothing (idempotent).
        assert_eq!(apply(out.clone(), plan(now)), out);
    }

    #[test]
    fn fold_hours_cover_what_is_old_enough() {
        let p = Plan { fold_before: T0 + 3 * HOUR, drop_before: 0 };
        assert_eq!(fold_hours(T0 + 100, p).collect::<Vec<_>>(), vec![T0, T0 + HOUR, T0 + 2 * HOUR]);
        assert_eq!(fold_hours(T0 + 3 * HOUR, p).count(), 0);
    }
}
