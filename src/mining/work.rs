//! Work as the core sees it (a job, encoded once for SV1), and the effects that leave the core
//! for outputs: block candidates and shares for the upstream pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::difficulty::{Difficulty, Target};
use crate::work::{Job, Template};

/// Current work as every session sees it: the job and its `mining.notify` line encoded once.
#[derive(Debug)]
pub struct Work {
    pub job: Arc<Job>,
    /// The job's `mining.notify` params after the job id, encoded once: `","PREVHASH",...,"NTIME",`
    /// (each session writes the prefix, its own job id, this, and the clean_jobs flag).
    notify_rest: Arc<str>,
    /// Proxy mode: the upstream's extranonce1, which comes before each session's own
    /// extranonce1 bytes. Empty in pool mode.
    pub en1_prefix: Arc<[u8]>,
    /// Proxy mode: the upstream job this work re-issues.
    pub upstream: Option<UpstreamJob>,
    /// The job's network difficulty (from its nbits), computed once: vardiff's upper clamp.
    pub network_diff: Difficulty,
    /// Proxy mode: the BIP310 mask the upstream grants now (configure reply or its latest
    /// set_version_mask); sessions pass a change on to miners. `None` in pool mode.
    pub version_mask: Option<u32>,
    /// Solo mode: the template the job was built from, to build each address's coinbase.
    pub template: Option<Arc<Template>>,
    /// The new block this work builds on, as its source announced it (ZMQ message, the poll that
    /// saw the tip, the upstream's clean notify): shared by every work on that block, for the
    /// operator's latency figures. `None` before the first announcement.
    pub announcement: Option<Arc<Announcement>>,
}

/// The upstream side of a proxied job.
#[derive(Debug, Clone)]
pub struct UpstreamJob {
    /// The upstream's job id, used when forwarding shares.
    pub job_id: Arc<str>,
    /// The upstream difficulty in force when the job was issued: shares meeting it are forwarded.
    pub target: Target,
    pub difficulty: Difficulty,
    /// Which upstream session the job came from.
    pub generation: u64,
}

/// A local share that meets the upstream's difficulty, to submit upstream.
#[derive(Debug, Clone)]
pub struct UpstreamShare {
    pub job_id: Arc<str>,
    pub generation: u64,
    /// The session's extranonce1 bytes after the upstream's, then the miner's extranonce2: the
    /// upstream's extranonce2.
    pub extranonce2: String,
    pub ntime: String,
    pub nonce: String,
    pub version_bits: Option<String>,
    /// The header's whole version (Stratum V2 upstreams take it as it is).
    pub version: u32,
    pub workername: Arc<str>,
    pub difficulty: Difficulty,
}

/// A new block as a work source learnt of it, and how fast its work reached the miners.
#[derive(Debug)]
pub struct Announcement {
    /// When the source heard of the block, and when its first work was published.
    pub at: Instant,
    pub published: Instant,
    /// Nanoseconds from `at` to the first and last session queueing a clean notify on this
    /// block for a miner that had work before it ([`Announcement::note_notified`]).
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

impl Announcement {
    pub fn new(at: Instant, published: Instant) -> Announcement {
        Announcement { at, published, first_ns: AtomicU64::new(u64::MAX), last_ns: AtomicU64::new(0) }
    }

    /// A clean notify queued at `now` for a session whose previous notify was at `previous`:
    /// counted when that was before the announcement (a miner moved from the old block, not one
    /// that connected since). Two relaxed loads per miner per new block, an update when it moves.
    pub fn note_notified(&self, previous: Instant, now: Instant) {
        if previous > self.at {
            return;
        }
        let ns = now.saturating_duration_since(self.at).as_nanos().min(u64::MAX as u128) as u64;
        if ns < self.first_ns.load(Ordering::Relaxed) {
            self.first_ns.fetch_min(ns, Ordering::Relaxed);
        }
        if ns > self.last_ns.load(Ordering::Relaxed) {
            self.last_ns.fetch_max(ns, Ordering::Relaxed);
        }
    }

    /// Announcement → first and last miner notified so far, if any miner was.
    pub fn notify_latency(&self) -> Option<(Duration, Duration)> {
        let first = self.first_ns.load(Ordering::Relaxed);
        (first != u64::MAX)
            .then(|| (Duration::from_nanos(first), Duration::from_nanos(self.last_ns.load(Ordering::Relaxed))))
    }
}

impl Work {
    /// Proxy-mode work: an upstream job re-issued under the upstream's extranonce1.
    pub fn proxied(job: Arc<Job>, en1_prefix: Arc<[u8]>, upstream: UpstreamJob) -> Work {
        Work { en1_prefix, upstream: Some(upstream), ..Work::new(job) }
    }

    pub fn new(job: Arc<Job>) -> Work {
        let params = job.notify_params();
        let mut rest = String::from("\",");
        for p in params.as_array().expect("notify params are an array")[1..8].iter() {
            rest.push_str(&p.to_string());
            rest.push(',');
        }
        let network_diff = Difficulty::from_target(&job.network_target);
        Work {
            job,
            notify_rest: rest.into(),
            en1_prefix: Arc::from(&[][..]),
            upstream: None,
            network_diff,
            version_mask: None,
            template: None,
            announcement: None,
        }
    }

    /// The block announcement this work belongs to (a new one, or the previous work's).
    pub fn with_announcement(mut self, a: Option<Arc<Announcement>>) -> Work {
        self.announcement = a;
        self
    }

    /// A session queued this work's clean notify at `now`; its previous notify was at `previous`.
    pub fn note_notified(&self, previous: Instant, now: Instant) {
        if let Some(a) = &self.announcement {
            a.note_notified(previous, now);
        }
    }

    /// Appends this job's `mining.notify` line under the session's `local_id`.
    pub fn push_notify(&self, out: &mut Vec<u8>, local_id: u64, clean: bool) {
        out.extend_from_slice(b"{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"");
        crate::hex::push_u64_hex(out, local_id);
        out.extend_from_slice(self.notify_rest.as_bytes());
        out.extend_from_slice(if clean { b"true]}\n" } else { b"false]}\n" });
    }
}

/// A share that meets the network target: a block to assemble and submit.
#[derive(Debug, Clone)]
pub struct BlockCandidate {
    pub job: Arc<Job>,
    pub en1: Vec<u8>,
    pub en2: Vec<u8>,
    pub header: [u8; 80],
    pub hash: [u8; 32],
    pub workername: Arc<str>,
    pub username: Arc<str>,
    pub difficulty: Difficulty,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notify latency counts only miners whose previous notify predates the announcement.
    #[test]
    fn notify_latency_first_and_last() {
        let p = serde_json::json!([
            "1",
            "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",
            "01000000010000",
            "00000000",
            [],
            "20000000",
            "207fffff",
            "504e86b9",
            true
        ]);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let a = Arc::new(Announcement::new(ms(10), ms(12)));
        let job = Arc::new(Job::from_notify(7, &p, 4, 4).unwrap());
        let w = Work::new(job.clone()).with_announcement(Some(a.clone()));
        // A template update on the same block shares the announcement.
        let update = Work::new(job).with_announcement(w.announcement.clone());
        assert_eq!(a.notify_latency(), None);
        w.note_notified(ms(5), ms(15));
        w.note_notified(ms(0), ms(40));
        update.note_notified(ms(9), ms(20));
        w.note_notified(ms(11), ms(90)); // connected after the announcement: not counted
        assert_eq!(a.notify_latency(), Some((Duration::from_millis(5), Duration::from_millis(30))));
        let plain = Work::new(w.job.clone());
        plain.note_notified(ms(0), ms(1));
        assert!(plain.announcement.is_none(), "no announcement, nothing measured");
    }
}
