//! The bounded in-memory aggregation (pure): share tallies summed per minute and worker (and per
//! minute for the pool), not a row per share. The statistics task feeds one; the writer keeps
//! another as its buffer while the database is away. Past `cap` distinct rows, new rows are
//! counted as dropped instead of kept, so memory stays bounded whatever the outage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::retention::{minute_of, Sums};
use crate::difficulty::Difficulty;
use crate::mining::ShareTally;

/// One worker's sums over one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    pub ts: i64,
    pub user: Arc<str>,
    pub worker: Arc<str>,
    pub sums: Sums,
}

/// The pool's sums over one minute, with the workers seen and the network difficulty then.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolRow {
    pub ts: i64,
    pub sums: Sums,
    pub workers: u64,
    /// Exact decimal text of the network difficulty of the work served.
    pub netdiff: Option<String>,
}

/// What the statistics task hands to the writer at each flush.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub workers: Vec<WorkerRow>,
    pub pool: Vec<PoolRow>,
    /// blocks.log changed: the writer reads it again and stores each block's fate.
    pub blocks_changed: bool,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.workers.len() + self.pool.len()
    }
}

/// Sums per (minute, user, worker) and per minute, at most `cap` rows.
#[derive(Debug)]
pub struct Agg {
    workers: HashMap<(i64, Arc<str>, Arc<str>), Sums>,
    pool: BTreeMap<i64, PoolRow>,
    blocks_changed: bool,
    cap: usize,
    /// Rows (or share tallies) not kept because the aggregation was full, since the last take.
    pub dropped: u64,
}

impl Agg {
    pub fn new(cap: usize) -> Agg {
        Agg { workers: HashMap::new(), pool: BTreeMap::new(), blocks_changed: false, cap, dropped: 0 }
    }

    pub fn rows(&self) -> usize {
        self.workers.len() + self.pool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows() == 0 && !self.blocks_changed
    }

    fn full(&self) -> bool {
        self.rows() >= self.cap
    }

    /// Adds a session's tally of shares judged at `unix` to its minute. `known`: the worker has
    /// had an accepted share; a name that never had one is summed in the pool's row only, so an
    /// invented name costs no row and never takes a real worker's place under the cap.
    pub fn shares(&mut self, unix: i64, user: &Arc<str>, worker: &Arc<str>, t: &ShareTally, known: bool) {
        let sums = Sums { acc: t.accepted.units(), acc_n: t.accepted_n, rej: t.rejected.units(), rej_n: t.rejected_n };
        let ts = minute_of(unix);
        if known {
            self.add_worker(ts, user, worker, &sums);
        }
        self.add_pool(&PoolRow { ts, sums, workers: 0, netdiff: None });
    }

    fn add_worker(&mut self, ts: i64, user: &Arc<str>, worker: &Arc<str>, sums: &Sums) {
        let key = (ts, user.clone(), worker.clone());
        if let Some(s) = self.workers.get_mut(&key) {
            s.add(sums);
        } else if self.full() {
            self.dropped += 1;
        } else {
            self.workers.insert(key, *sums);
        }
    }

    fn add_pool(&mut self, r: &PoolRow) {
        let full = self.full();
        match self.pool.get_mut(&r.ts) {
            Some(p) => {
                p.sums.add(&r.sums);
                p.workers = p.workers.max(r.workers);
                if r.netdiff.is_some() {
                    p.netdiff = r.netdiff.clone();
                }
            }
            None if full => self.dropped += 1,
            None => {
                self.pool.insert(r.ts, r.clone());
            }
        }
    }

    /// Notes the pool's state at `unix` (live workers, network difficulty) in its minute's row.
    pub fn pool_state(&mut self, unix: i64, workers: u64, netdiff: Option<Difficulty>) {
        let row =
            PoolRow { ts: minute_of(unix), sums: Sums::default(), workers, netdiff: netdiff.map(|d| d.to_string()) };
        self.add_pool(&row);
    }

    pub fn blocks_changed(&mut self) {
        self.blocks_changed = true;
    }

    /// Adds a batch (the writer's buffer while the database is away).
    pub fn merge(&mut self, b: Batch) {
        for w in &b.workers {
            self.add_worker(w.ts, &w.user, &w.worker, &w.sums);
        }
        for p in &b.pool {
            self.add_pool(p);
        }
        self.blocks_changed |= b.blocks_changed;
    }

    /// Everything aggregated, as a batch; the aggregation starts empty (the dropped count stays).
    pub fn take(&mut self) -> Batch {
        let mut workers: Vec<WorkerRow> =
            self.workers.drain().map(|((ts, user, worker), sums)| WorkerRow { ts, user, worker, sums }).collect();
        workers.sort_by(|a, b| (a.ts, &a.user, &a.worker).cmp(&(b.ts, &b.user, &b.worker)));
        let pool = std::mem::take(&mut self.pool).into_values().collect();
        Batch { workers, pool, blocks_changed: std::mem::take(&mut self.blocks_changed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(acc: &str, n: u64) -> ShareTally {
        let mut t = ShareTally::default();
        for _ in 0..n {
            t.add(acc.parse().unwrap(), acc.parse().unwrap(), true);
        }
        t
    }

    #[test]
    fn sums_per_minute_and_worker() {
        let (u, w1, w2): (Arc<str>, Arc<str>, Arc<str>) = ("alice".into(), "alice.1".into(), "alice.2".into());
        let mut a = Agg::new(100);
        a.shares(1_000_000_000, &u, &w1, &tally("0.5", 2), true);
        a.shares(1_000_000_019, &u, &w1, &tally("0.25", 1), true);
        a.shares(1_000_000_020, &u, &w1, &tally("2", 1), true); // next minute (1_000_000_020 is a minute start)
        a.shares(1_000_000_001, &u, &w2, &tally("0.000000000001", 3), true);
        a.pool_state(1_000_000_005, 2, Some("0.000000000465".parse().unwrap()));
        let b = a.take();
        assert!(a.is_empty());
        assert_eq!(b.workers.len(), 3);
        assert_eq!(b.workers[0].ts, 999_999_960);
        assert_eq!((b.workers[0].sums.acc, b.workers[0].sums.acc_n), (1_250_000_000_000, 3));
        assert_eq!((b.workers[1].sums.acc, b.workers[1].worker.as_ref()), (3, "alice.2"));
        assert_eq!(b.pool.len(), 2);
        assert_eq!(b.pool[0].sums.acc, 1_250_000_000_003);
        assert_eq!((b.pool[0].workers, b.pool[0].netdiff.as_deref()), (2, Some("0.000000000465")));
        assert_eq!(b.pool[1].sums.acc, 2_000_000_000_000);
    }

    /// Rejected shares of names that never had an accepted share (a name flood) add to the
    /// pool's row only: a full aggregation still takes the real worker's row.
    #[test]
    fn names_without_an_accepted_share_cost_no_row() {
        let u: Arc<str> = "u".into();
        let mut a = Agg::new(3);
        let mut rejected = ShareTally::default();
        rejected.add("1".parse().unwrap(), "0".parse().unwrap(), false);
        for i in 0..10_000 {
            let w: Arc<str> = format!("invented{i}").into();
            a.shares(600, &u, &w, &rejected, false);
        }
        assert_eq!((a.rows(), a.dropped), (1, 0));
        let real: Arc<str> = "u.rig".into();
        a.shares(601, &u, &real, &tally("1", 1), true);
        let b = a.take();
        assert_eq!(b.workers.len(), 1);
        assert_eq!(&*b.workers[0].worker, "u.rig");
        assert_eq!((b.pool[0].sums.rej_n, b.pool[0].sums.acc_n), (10_000, 1));
    }

    #[test]
    fn bounded_and_counts_what_it_drops() {
        let u: Arc<str> = "u".into();
        let mut a = Agg::new(4);
        for i in 0..10i64 {
            let w: Arc<str> = format!("w{i}").into();
            a.shares(600, &u, &w, &tally("1", 1), true);
        }
        // 1 pool row + 3 worker rows fit; the 7 other workers are dropped, the pool row still sums all.
        assert_eq!(a.rows(), 4);
        assert_eq!(a.dropped, 7);
        let b = a.take();
        assert_eq!(b.pool[0].sums.acc_n, 10);
        // A batch merged into a full buffer is counted too.
        let mut buf = Agg::new(2);
        buf.merge(b);
        assert_eq!((buf.rows(), buf.dropped), (2, 2));
    }
}
