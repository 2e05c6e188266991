//! Work as the core sees it (a job, encoded once for SV1), and the effects that leave the core
//! for outputs: block candidates and shares for the upstream pool.

use std::sync::Arc;

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
    pub workername: Arc<str>,
    pub difficulty: Difficulty,
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
    use crate::stratum::proto;

    /// The composed notify line is the one the job's params give, for any id and flag.
    #[test]
    fn notify_line_matches_params() {
        let p = serde_json::json!([
            "1",
            "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",
            "01000000010000",
            "00000000",
            ["aa".repeat(32), "bb".repeat(32)],
            "20000000",
            "207fffff",
            "504e86b9",
            true
        ]);
        let job = Job::from_notify(7, &p, 4, 4).unwrap();
        let w = Work::new(Arc::new(job));
        for (id, clean) in [(0u64, true), (0x1a00, false), (u64::MAX, true)] {
            let mut out = Vec::new();
            w.push_notify(&mut out, id, clean);
            let mut params = w.job.notify_params();
            params[0] = serde_json::Value::String(format!("{id:x}"));
            params[8] = serde_json::Value::Bool(clean);
            assert_eq!(String::from_utf8(out).unwrap(), proto::notification_line("mining.notify", &params));
        }
    }
}
