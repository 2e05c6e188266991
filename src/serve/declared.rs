//! The jobs miners declared and the pool accepted (Stratum V2 Job Declaration), by token: the
//! Job Declaration server puts them here, a mining connection's SetCustomMiningJob takes them
//! up. Bounded: a job on a tip that has moved on is dropped at the next insert, and past
//! [`MAX_DECLARED`] jobs or [`MAX_DECLARED_BYTES`] of their transactions the oldest goes (a job
//! already set on a channel lives on there).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use crate::work::declared::DeclaredJob;

/// Declared jobs kept at once (every JDC declares one per template; a few hundred JDCs).
pub const MAX_DECLARED: usize = 4096;
/// Bytes of declared transactions (hex) kept at once: a full block's are about 8 MB.
pub const MAX_DECLARED_BYTES: usize = 256 << 20;

#[derive(Default, Debug)]
struct Inner {
    jobs: HashMap<u64, Arc<DeclaredJob>>,
    /// Tokens in the order they were put (the oldest goes first when full).
    order: VecDeque<u64>,
    /// The jobs' transactions' bytes.
    bytes: usize,
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
        let Inner { jobs, order, bytes } = &mut *g;
        if jobs.values().next().is_some_and(|j| j.tip.prev_hash != prev) {
            jobs.retain(|_, j| j.tip.prev_hash == prev);
            order.retain(|t| jobs.contains_key(t));
            *bytes = jobs.values().map(|j| j.txs_hex.len()).sum();
        }
        while !jobs.is_empty() && (jobs.len() >= MAX_DECLARED || *bytes + job.txs_hex.len() > MAX_DECLARED_BYTES) {
            let Some(old) = order.pop_front() else { break };
            if let Some(j) = jobs.remove(&old) {
                *bytes -= j.txs_hex.len();
            }
        }
        *bytes += job.txs_hex.len();
        if let Some(j) = jobs.insert(token, job) {
            *bytes -= j.txs_hex.len();
        } else {
            order.push_back(token);
        }
    }

    /// Forgets the job under `token` (its declarer has declared newer ones).
    pub fn remove(&self, token: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(j) = g.jobs.remove(&token) {
            g.bytes -= j.txs_hex.len();
            g.order.retain(|t| *t != token);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::difficulty::Target;
    use crate::work::declared::{DeclaredCoinbase, Tip};

    fn job(prev: u8, hex_len: usize) -> Arc<DeclaredJob> {
        let mut cb = vec![1, 0, 0, 0, 1];
        cb.extend_from_slice(&[0u8; 32]);
        cb.extend_from_slice(&[0xff; 4]);
        let (p, s) = (
            [&cb[..], &[4, 1, 1][..]].concat(),
            [&[0xff, 0xff, 0xff, 0xff, 1][..], &[0u8; 8][..], &[1, 0x51][..], &[0u8; 4][..]].concat(),
        );
        Arc::new(DeclaredJob {
            user: "u".into(),
            version: 0x2000_0000,
            tip: Tip {
                prev_hash: [prev; 32],
                height: 1,
                nbits: 0x207f_ffff,
                mintime: 0,
                target: Target::from_compact(0x207f_ffff).unwrap(),
            },
            coinbase: DeclaredCoinbase::from_declared(&p, &s).unwrap(),
            txids: Vec::new().into(),
            txs_hex: bytes::Bytes::from(vec![b'0'; hex_len]),
            paid: 0,
        })
    }

    #[test]
    fn bounded_by_tip_count_and_bytes() {
        let r = DeclaredJobs::default();
        r.insert(1, job(1, 10));
        r.insert(2, job(1, 10));
        assert_eq!(r.len(), 2);
        // A new block drops the last one's jobs.
        r.insert(3, job(2, 10));
        assert!(r.get(1).is_none() && r.get(2).is_none() && r.get(3).is_some());
        // Past the byte cap the oldest go.
        let half = MAX_DECLARED_BYTES / 2 + 1;
        r.insert(4, job(2, half));
        r.insert(5, job(2, half));
        assert!(r.get(3).is_none() && r.get(4).is_none() && r.get(5).is_some(), "{}", r.len());
        r.remove(5);
        assert!(r.is_empty());
        assert_eq!(r.inner.lock().unwrap().bytes, 0);
    }
}
