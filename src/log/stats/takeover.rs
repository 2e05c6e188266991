//! After a handover (`-H`) the statistics files pass from the old instance to the new one. The
//! new instance writes none of them until the old one has exited (the two never both rewrite
//! `pool.status` or `users/*`); then it reads the files the old one left and keeps its totals,
//! adding what it counted itself since it started ([`Book::take_over`]). Pure.

use super::add;
use super::book::Book;
use crate::difficulty::Difficulty;

/// What was added to `start` to make `now` (zero when it went down: a round that restarted).
fn since(now: Difficulty, start: Difficulty) -> Difficulty {
    Difficulty::from_units(now.units().saturating_sub(start.units()))
}

impl Book {
    /// `self` is the book loaded when this instance started (`start`) plus what this instance
    /// counted since; `last` is what the files say now that the old instance has exited. Totals
    /// become the old instance's last ones plus this instance's own, bests the larger; a user or
    /// worker only the old instance knew is taken as it left it. Rates (hashrate, shares per
    /// second) stay this instance's: they already carry the loaded averages.
    pub fn take_over(&mut self, start: &Book, last: Book) {
        self.accepted = add(last.accepted, since(self.accepted, start.accepted));
        self.rejected = add(last.rejected, since(self.rejected, start.rejected));
        self.best = self.best.max(last.best);
        // A block found here since (round reset) starts the round from this instance's count.
        if self.round >= start.round {
            self.round = add(last.round, since(self.round, start.round));
        }
        for (name, lu) in last.users {
            let Some(u) = self.users.get_mut(&name) else {
                self.users.insert(name, lu);
                continue;
            };
            let su = start.users.get(&name);
            u.shares = add(lu.shares, since(u.shares, su.map_or(Difficulty::ZERO, |s| s.shares)));
            u.best = u.best.max(lu.best);
            u.best_ever = u.best_ever.max(lu.best_ever);
            u.lastshare = u.lastshare.max(lu.lastshare);
            if u.authorised == 0 || (lu.authorised != 0 && lu.authorised < u.authorised) {
                u.authorised = lu.authorised;
            }
            for (wname, lw) in lu.workers {
                let Some(w) = u.workers.get_mut(&wname) else {
                    u.workers.insert(wname, lw);
                    continue;
                };
                let sw = su.and_then(|s| s.workers.get(&wname));
                w.shares = add(lw.shares, since(w.shares, sw.map_or(Difficulty::ZERO, |s| s.shares)));
                w.best = w.best.max(lw.best);
                w.best_ever = w.best_ever.max(lw.best_ever);
                w.lastshare = w.lastshare.max(lw.lastshare);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Now, StatEvent};
    use super::*;
    use crate::mining::ShareTally;

    fn at(s: u64) -> Now {
        Now { mono_us: s * 1_000_000, unix: 1_700_000_000 + s }
    }

    fn share(user: &str, worker: &str, diff: u64, sdiff: u64) -> StatEvent {
        let mut tally = ShareTally::default();
        tally.add(Difficulty::from_integer(diff), Difficulty::from_integer(sdiff), true);
        StatEvent::Shares { user: user.into(), worker: worker.into(), tally }
    }

    fn auth(user: &str, worker: &str) -> StatEvent {
        StatEvent::Authorized { user: user.into(), worker: worker.into() }
    }

    /// The old instance's shares during the overlap and the new instance's own both count; a
    /// user only the old one saw is kept; bests are the larger.
    #[test]
    fn totals_are_the_old_instances_last_plus_our_own() {
        let mut start = Book::new(at(0));
        start.apply(&auth("alice", "alice.1"), at(0));
        start.apply(&share("alice", "alice.1", 10, 50), at(1));
        // The old instance goes on: alice +5, carol appears.
        let mut last = start.clone();
        last.apply(&share("alice", "alice.1", 5, 70), at(2));
        last.apply(&auth("carol", "carol.1"), at(2));
        last.apply(&share("carol", "carol.1", 3, 3), at(2));
        // This instance, from the files at start: alice +7 on another worker.
        let mut ours = start.clone();
        ours.apply(&auth("alice", "alice.2"), at(3));
        ours.apply(&share("alice", "alice.2", 7, 20), at(3));
        ours.take_over(&start, last);
        let d = Difficulty::from_integer;
        assert_eq!(ours.accepted, d(10 + 5 + 3 + 7));
        assert_eq!(ours.best, d(70));
        let alice = &ours.users["alice"];
        assert_eq!((alice.shares, alice.best_ever), (d(22), d(70)));
        assert_eq!(alice.workers["alice.1"].shares, d(15));
        assert_eq!(alice.workers["alice.2"].shares, d(7));
        assert_eq!(ours.users["carol"].shares, d(3));
    }
}
