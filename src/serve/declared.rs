//! The jobs miners declared and the pool accepted (Stratum V2 Job Declaration), by token: the
//! Job Declaration server puts them here, a mining connection's SetCustomMiningJob takes them
//! up. Bounded: a job on a tip that has moved on is dropped at the next insert, and past
//! [`MAX_DECLARED`] the oldest goes.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::work::declared::DeclaredJob;

/// Declared jobs kept at once (every JDC declares one per template; a few hundred JDCs).
pub const MAX_DECLARED: usize = 4096;

#[derive(Default, Debug)]
struct Inner {
    jobs: HashMap<u64, Arc<DeclaredJob>>,
    /// Tokens in the order they were put (the oldest goes first when full).
    order: VecDeque<u64>,
}

#[derive(Default, Debug)]
pub struct DeclaredJobs {
    inner: Mutex<Inner>,
}

impl DeclaredJobs {
    /// Keeps `job` under `token`; jobs on another previous block than `job`'s are dropped first.
    pub fn insert(&self, token: u64, job: Arc<DeclaredJob>) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let prev = job.tip.prev_hash;
        let Inner { jobs, order } = &mut *g;
        if jobs.values().next().is_some_and(|j| j.tip.prev_hash != prev) {
            jobs.retain(|_, j| j.tip.prev_hash == prev);
            order.retain(|t| jobs.contains_key(t));
        }
        while jobs.len() >= MAX_DECLARED {
            let Some(old) = order.pop_front() else { break };
            jobs.remove(&old);
        }
        if jobs.insert(token, job).is_none() {
            order.push_back(token);
        }
    }

    pub fn get(&self, token: u64) -> Option<Arc<DeclaredJob>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).jobs.get(&token).cloned()
    }

    /// The jobs declared under `tokens` on the previous block `prev` (a PushSolution names no token).
    pub fn on_tip(&self, tokens: &[u64], prev: &[u8; 32]) -> Vec<Arc<DeclaredJob>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        tokens.iter().filter_map(|t| g.jobs.get(t)).filter(|j| j.tip.prev_hash == *prev).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
