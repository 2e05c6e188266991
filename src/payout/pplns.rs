//! PPLNS in the coinbase: the window of the newest accepted share difficulty (a multiple of the
//! network's difficulty) and the split of a block's value among the window's payees. Pure: no
//! clock, no I/O; the pool's shell (`pool/pplns.rs`) feeds it and reads it.
//!
//! The rules (docs/payout.md says them for operators, with a worked example):
//!
//! * **Window.** Accepted shares count with the difficulty they were judged at, newest last. The
//!   window keeps the newest shares worth `window` difficulty units, in [`SLICES`] slices of
//!   `window / SLICES` each: a slice is dropped whole once the newer ones hold the full window,
//!   so the window holds between `window` and `window + window / SLICES` (plus one share).
//! * **Fee.** `floor(value × fee_bp / 10 000)` of the block's value (subsidy + fees) goes to the
//!   pool's address; the rest, `D`, is the miners'.
//! * **Parts.** Each payee's part is `floor(D × w / W)`, `w` its weight in the window, `W` the
//!   window's total. Payees are taken largest part first (ties: smaller script first) while the
//!   part is at least the smallest output and the output fits in the coinbase's byte budget and
//!   the most outputs; those taken are then paid `floor(D × w / W_paid)` (what the others would
//!   have had goes to those paid, in proportion), and the rounding remainder (less than one
//!   satoshi per payee) goes to the pool's address.
//! * **Carried.** A payee not paid by a block that is found keeps its credit: its whole weight
//!   moves to the newest end of the window ([`Window::carry`]), so it is not pushed out by the
//!   shares that follow, and a later block pays it once its part reaches the smallest output.

use std::collections::{BTreeMap, VecDeque};

use ruint::aliases::U256;

/// Slices a window is kept in (its granularity at the old end).
pub const SLICES: u128 = 256;

/// The window of newest shares, per payee `K` (a payout script in the pool).
#[derive(Debug, Clone)]
pub struct Window<K> {
    window: u128,
    slices: VecDeque<Slice<K>>,
    /// Each payee's weight over all slices, kept as slices come and go (a snapshot costs one
    /// entry per payee, not one per payee and slice).
    totals: BTreeMap<K, u128>,
    total: u128,
    /// Units added since [`Window::take_fresh`] was last called.
    fresh: u128,
}

#[derive(Debug, Clone)]
struct Slice<K> {
    entries: BTreeMap<K, u128>,
    sum: u128,
}

impl<K: Ord + Clone> Window<K> {
    /// An empty window of `window` difficulty units (at least 1).
    pub fn new(window: u128) -> Window<K> {
        Window { window: window.max(1), slices: VecDeque::new(), totals: BTreeMap::new(), total: 0, fresh: 0 }
    }

    /// The window's length in difficulty units.
    pub fn length(&self) -> u128 {
        self.window
    }

    /// Sum of the weights the window holds.
    pub fn total(&self) -> u128 {
        self.total
    }

    fn slice_len(&self) -> u128 {
        (self.window / SLICES).max(1)
    }

    /// A new length (the network's difficulty changed): older slices past it are dropped.
    pub fn set_length(&mut self, window: u128) {
        self.window = window.max(1);
        self.trim();
    }

    /// Counts an accepted share (or a batch of one payee's shares) of `weight` units.
    pub fn push(&mut self, payee: &K, weight: u128) {
        if weight == 0 {
            return;
        }
        let len = self.slice_len();
        self.add_newest(payee, weight, |s| s.sum >= len);
        add(&mut self.fresh, weight);
    }

    /// Adds `weight` to `payee` in the newest slice (a new one when there is none or `full`
    /// says the newest is full), then drops what the window no longer holds.
    fn add_newest(&mut self, payee: &K, weight: u128, full: impl Fn(&Slice<K>) -> bool) {
        if self.slices.back().is_none_or(full) {
            self.slices.push_back(Slice { entries: BTreeMap::new(), sum: 0 });
        }
        let newest = self.slices.back_mut().expect("a slice was just ensured");
        credit(&mut newest.entries, payee, weight);
        add(&mut newest.sum, weight);
        credit(&mut self.totals, payee, weight);
        add(&mut self.total, weight);
        self.trim();
    }

    fn trim(&mut self) {
        while let Some(oldest) = self.slices.front() {
            if self.total.saturating_sub(oldest.sum) < self.window {
                break;
            }
            self.total -= oldest.sum;
            let gone = self.slices.pop_front().expect("the oldest slice exists");
            for (k, w) in gone.entries {
                debit(&mut self.totals, &k, w);
            }
        }
    }

    /// Each payee's weight in the window.
    pub fn weights(&self) -> BTreeMap<K, u128> {
        self.totals.clone()
    }

    /// The weight of one payee.
    pub fn weight_of(&self, payee: &K) -> u128 {
        self.totals.get(payee).copied().unwrap_or(0)
    }

    /// Moves `payee`'s whole weight to the newest end of the window (a found block did not pay
    /// it) and returns that weight. The window's total is unchanged.
    pub fn carry(&mut self, payee: &K) -> u128 {
        let w = self.weight_of(payee);
        self.carry_as(payee, w);
        w
    }

    /// As [`Window::carry`], with the weight given (a replay of the journal at start: the
    /// weight it had when the block was found, which the share log read back may not reach).
    pub fn carry_as(&mut self, payee: &K, weight: u128) {
        for s in self.slices.iter_mut() {
            if let Some(w) = s.entries.remove(payee) {
                s.sum -= w;
                self.total -= w;
            }
        }
        self.slices.retain(|s| s.sum > 0);
        self.totals.remove(payee);
        if weight > 0 {
            self.add_newest(payee, weight, |_| false);
        }
    }

    /// Units pushed since the last call (what decides that a coinbase is worth rebuilding).
    pub fn take_fresh(&mut self) -> u128 {
        std::mem::take(&mut self.fresh)
    }

    /// Units pushed since the last [`Window::take_fresh`], without resetting.
    pub fn fresh(&self) -> u128 {
        self.fresh
    }

    /// The slices, oldest first, each as its payees' weights (what a snapshot of the window
    /// keeps: at most `SLICES + 1` slices, one entry per payee in each).
    pub fn slices(&self) -> Vec<Vec<(K, u128)>> {
        self.slices.iter().map(|s| s.entries.iter().map(|(k, w)| (k.clone(), *w)).collect()).collect()
    }

    /// A window of `window` units holding `slices` (oldest first, as [`Window::slices`] gave
    /// them); the sums and running totals are worked out again, and what a shorter window no
    /// longer holds is dropped.
    pub fn from_slices(window: u128, slices: Vec<Vec<(K, u128)>>) -> Window<K> {
        let mut win = Window::new(window);
        for entries in slices {
            let mut slice = Slice { entries: BTreeMap::new(), sum: 0 };
            for (k, w) in entries.into_iter().filter(|(_, w)| *w > 0) {
                credit(&mut win.totals, &k, w);
                add(&mut win.total, w);
                add(&mut slice.sum, w);
                credit(&mut slice.entries, &k, w);
            }
            if slice.sum > 0 {
                win.slices.push_back(slice);
            }
        }
        win.trim();
        win
    }
}

fn add(a: &mut u128, b: u128) {
    *a = a.saturating_add(b);
}

/// Takes `w` from `k`'s entry; an entry at zero is removed.
fn debit<K: Ord>(map: &mut BTreeMap<K, u128>, k: &K, w: u128) {
    if let Some(v) = map.get_mut(k) {
        *v = v.saturating_sub(w);
        if *v == 0 {
            map.remove(k);
        }
    }
}

/// Adds `w` to `k`'s entry, cloning the key only for a new entry.
fn credit<K: Ord + Clone>(map: &mut BTreeMap<K, u128>, k: &K, w: u128) {
    match map.get_mut(k) {
        Some(v) => add(v, w),
        None => {
            map.insert(k.clone(), w);
        }
    }
}

/// What bounds a block's payouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// The pool's fee in basis points (1/100 %) of the block's value.
    pub fee_bp: u32,
    /// The smallest output paid to a miner, in satoshis.
    pub min_output: u64,
    /// The most miner outputs in one coinbase.
    pub max_outputs: usize,
    /// Bytes the miners' outputs may take in the coinbase.
    pub bytes: usize,
}

/// A block's value split among the window's payees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split<K> {
    /// The miners paid, largest part first, with their satoshis.
    pub paid: Vec<(K, u64)>,
    /// The pool's fee.
    pub fee: u64,
    /// What rounding left over (less than one satoshi per payee).
    pub remainder: u64,
    /// Payees with weight in the window that this block does not pay (their credit is carried).
    pub carried: Vec<K>,
    /// The window's total weight, and that of the payees paid.
    pub total: u128,
    pub total_paid: u128,
}

impl<K> Split<K> {
    /// What the pool's address receives: the fee and the remainder.
    pub fn pool(&self) -> u64 {
        self.fee + self.remainder
    }
}

/// `floor(a × b / c)` exactly (`c` > 0).
fn mul_div(a: u64, b: u128, c: u128) -> u64 {
    let v = U256::from(a) * U256::from(b) / U256::from(c);
    // b ≤ c whenever this is called, so the result is at most `a`.
    v.to::<u64>()
}

/// Splits `value` satoshis by `weights` under `rules`; `size` is the bytes a payee's output
/// takes in the coinbase (8-byte value, script length, script).
pub fn split<K: Ord + Clone>(
    value: u64,
    weights: &BTreeMap<K, u128>,
    rules: &Rules,
    size: impl Fn(&K) -> usize,
) -> Split<K> {
    let fee = (value as u128 * rules.fee_bp.min(10_000) as u128 / 10_000) as u64;
    let d = value - fee;
    let total = weights.values().fold(0u128, |a, w| a.saturating_add(*w));
    let mut out = Split { paid: Vec::new(), fee, remainder: d, carried: Vec::new(), total, total_paid: 0 };
    if total == 0 || d == 0 {
        out.carried = weights.iter().filter(|(_, w)| **w > 0).map(|(k, _)| k.clone()).collect();
        return out;
    }
    let mut order: Vec<(u64, &K, u128)> =
        weights.iter().filter(|(_, w)| **w > 0).map(|(k, w)| (mul_div(d, *w, total), k, *w)).collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut bytes = 0usize;
    let mut taken: Vec<(&K, u128)> = Vec::new();
    for (part, k, w) in &order {
        let s = size(k);
        if *part >= rules.min_output.max(1) && taken.len() < rules.max_outputs && bytes + s <= rules.bytes {
            bytes += s;
            taken.push((k, *w));
        } else {
            out.carried.push((*k).clone());
        }
    }
    out.carried.sort();
    let paid_w = taken.iter().fold(0u128, |a, (_, w)| a.saturating_add(*w));
    out.total_paid = paid_w;
    let mut given = 0u64;
    for (k, w) in taken {
        let part = mul_div(d, w, paid_w);
        given += part;
        out.paid.push((k.clone(), part));
    }
    out.remainder = d - given;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(fee_bp: u32, min_output: u64) -> Rules {
        Rules { fee_bp, min_output, max_outputs: 100, bytes: 10_000 }
    }

    fn w(pairs: &[(&'static str, u128)]) -> BTreeMap<&'static str, u128> {
        pairs.iter().copied().collect()
    }

    #[test]
    fn parts_are_floored_and_the_remainder_goes_to_the_pool() {
        // 50 BTC + 12,345 sat fees, 1 % fee, weights 1 : 2 : 3.
        let value = 5_000_012_345u64;
        let s = split(value, &w(&[("a", 1), ("b", 2), ("c", 3)]), &rules(100, 1), |_| 31);
        assert_eq!(s.fee, 50_000_123);
        let d = value - s.fee; // 4,950,012,222
        assert_eq!(s.paid, vec![("c", d * 3 / 6), ("b", d * 2 / 6), ("a", d / 6)]);
        assert_eq!(s.paid.iter().map(|p| p.1).sum::<u64>() + s.pool(), value);
        assert_eq!(s.remainder, d - (d * 3 / 6 + d * 2 / 6 + d / 6));
        assert!(s.carried.is_empty());
    }

    #[test]
    fn a_part_below_the_smallest_output_is_carried_and_the_rest_share_it() {
        // d = 1,000,000; parts 990,000 / 9,900 / 100; min 10,000: b and c carried.
        let s = split(1_000_000, &w(&[("a", 9_900), ("b", 99), ("c", 1)]), &rules(0, 10_000), |_| 31);
        assert_eq!(s.paid, vec![("a", 1_000_000)]);
        assert_eq!(s.carried, vec!["b", "c"]);
        assert_eq!(s.remainder, 0);
    }

    #[test]
    fn outputs_beyond_the_byte_budget_or_the_count_are_carried() {
        let weights = w(&[("a", 4), ("b", 3), ("c", 2), ("d", 1)]);
        let by_bytes =
            split(1_000_000, &weights, &Rules { fee_bp: 0, min_output: 1, max_outputs: 10, bytes: 70 }, |k| {
                if *k == "b" {
                    43
                } else {
                    31
                }
            });
        // a (31) fits, b (43) does not (74 > 70), c (31) does: 62.
        assert_eq!(by_bytes.paid.iter().map(|p| p.0).collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(by_bytes.carried, vec!["b", "d"]);
        assert_eq!(by_bytes.paid, vec![("a", 1_000_000 * 4 / 6), ("c", 1_000_000 * 2 / 6)]);
        let by_count =
            split(1_000_000, &weights, &Rules { fee_bp: 0, min_output: 1, max_outputs: 1, bytes: 1000 }, |_| 31);
        assert_eq!(by_count.paid, vec![("a", 1_000_000)]);
    }

    #[test]
    fn an_empty_window_pays_the_pool() {
        let s = split(625_000_000, &BTreeMap::<&str, u128>::new(), &rules(200, 1), |_| 31);
        assert!(s.paid.is_empty());
        assert_eq!(s.pool(), 625_000_000);
    }

    #[test]
    fn huge_weights_do_not_overflow() {
        let s = split(u64::MAX / 2, &w(&[("a", u128::MAX / 3), ("b", u128::MAX / 3)]), &rules(0, 1), |_| 31);
        assert_eq!(s.paid.len(), 2);
        assert_eq!(s.paid.iter().map(|p| p.1).sum::<u64>() + s.pool(), u64::MAX / 2);
    }

    #[test]
    fn the_window_drops_whole_slices_once_the_newer_ones_fill_it() {
        let mut win = Window::new(SLICES * 10); // slices of 10 units
        for _ in 0..SLICES {
            win.push(&"old", 10);
        }
        assert_eq!(win.total(), SLICES * 10);
        win.push(&"new", 10); // a new slice; the oldest is now past the window
        assert_eq!(win.total(), SLICES * 10);
        assert_eq!(win.weight_of(&"old"), (SLICES - 1) * 10);
        assert_eq!(win.weight_of(&"new"), 10);
        // Shares smaller than a slice fill the newest one before another begins.
        win.push(&"new", 3);
        win.push(&"new", 3);
        assert_eq!(win.weight_of(&"new"), 16);
        assert_eq!(win.take_fresh(), SLICES * 10 + 16);
        assert_eq!(win.take_fresh(), 0);
    }

    #[test]
    fn a_shorter_window_drops_old_slices_at_once() {
        let mut win = Window::new(1_000 * SLICES);
        for i in 0..100u32 {
            win.push(&i, 1_000);
        }
        win.set_length(10 * 1_000);
        assert_eq!(win.total(), 10 * 1_000);
        assert_eq!(win.weights().keys().copied().collect::<Vec<_>>(), (90..100).collect::<Vec<_>>());
    }

    #[test]
    fn the_running_totals_equal_the_slices() {
        let mut win = Window::new(SLICES * 50);
        for i in 0..5_000u32 {
            win.push(&(i % 17), (i % 7 + 1) as u128 * 3);
            if i % 500 == 499 {
                win.carry(&(i % 5));
            }
            if i == 2_500 {
                win.set_length(SLICES * 20);
            }
        }
        let mut by_slices = BTreeMap::new();
        for s in &win.slices {
            assert_eq!(s.sum, s.entries.values().sum::<u128>());
            for (k, w) in &s.entries {
                *by_slices.entry(*k).or_insert(0) += *w;
            }
        }
        assert_eq!(win.weights(), by_slices);
        assert_eq!(win.total(), by_slices.values().sum::<u128>());
    }

    #[test]
    fn a_window_rebuilt_from_its_slices_is_the_same() {
        let mut win = Window::new(SLICES * 50);
        for i in 0..3_000u32 {
            win.push(&(i % 13), (i % 5 + 1) as u128 * 7);
        }
        win.carry(&3);
        let again = Window::from_slices(win.length(), win.slices());
        assert_eq!(again.weights(), win.weights());
        assert_eq!((again.total(), again.slices()), (win.total(), win.slices()));
        // Pushing on goes the same way in both.
        let (mut a, mut b) = (win, again);
        for i in 0..500u32 {
            a.push(&(i % 3), 11);
            b.push(&(i % 3), 11);
        }
        assert_eq!(a.slices(), b.slices());
        // A shorter window keeps only what it holds.
        let short = Window::from_slices(SLICES * 10, a.slices());
        assert!(short.total() < a.total() && short.total() >= short.length());
    }

    #[test]
    fn carrying_moves_a_payee_to_the_newest_end() {
        let mut win = Window::new(SLICES * 10);
        win.push(&"small", 5);
        for _ in 0..SLICES - 1 {
            win.push(&"big", 10);
        }
        assert_eq!(win.carry(&"small"), 5);
        assert_eq!(win.total(), (SLICES - 1) * 10 + 5);
        // The big miner's next shares push out its own oldest slices, not the carried credit.
        for _ in 0..10 {
            win.push(&"big", 10);
        }
        assert_eq!(win.weight_of(&"small"), 5);
        assert!(win.total() >= win.length());
        // Replayed with the weight it had (the share log read back may hold less).
        win.carry_as(&"small", 7);
        assert_eq!(win.weight_of(&"small"), 7);
        win.carry_as(&"gone", 0);
        assert_eq!(win.weight_of(&"gone"), 0);
    }
}
