//! What a channel judged since it last reported: summed difficulties, counts and the best share.
//! The statistics task and the history store add these up per worker. Pure.

use crate::difficulty::Difficulty;

/// Shares a session judged since it last reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShareTally {
    /// Sum of the difficulties the accepted shares were judged at, and how many there were.
    pub accepted: Difficulty,
    pub accepted_n: u64,
    /// Sum of the difficulties the rejected shares were judged at, and how many there were.
    pub rejected: Difficulty,
    pub rejected_n: u64,
    /// The highest difficulty an accepted share's hash reached.
    pub best: Difficulty,
    /// The difficulty the last share was judged at (the worker's difficulty, as shown).
    pub last_diff: Difficulty,
}

impl ShareTally {
    /// Counts one share: `diff` is the difficulty it was judged at, `sdiff` what its hash reached.
    pub fn add(&mut self, diff: Difficulty, sdiff: Difficulty, accepted: bool) {
        self.last_diff = diff;
        if accepted {
            self.accepted = sum(self.accepted, diff);
            self.accepted_n += 1;
            self.best = self.best.max(sdiff);
        } else {
            self.rejected = sum(self.rejected, diff);
            self.rejected_n += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.accepted_n == 0 && self.rejected_n == 0
    }
}

fn sum(a: Difficulty, b: Difficulty) -> Difficulty {
    Difficulty::from_units(a.units().saturating_add(b.units()))
}
