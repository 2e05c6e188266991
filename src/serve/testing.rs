//! A serving context for unit tests of the faces' sessions: a real share log in a temporary
//! directory, the block and statistics queues held by the test, and one job on a regtest-like
//! network (nbits 207fffff: about every other hash is a block).

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::{Counters, Enonces, ServerCtx, SessionParams};
use crate::config::Config;
use crate::log::stats::StatEvent;
use crate::mining::{BlockCandidate, Work};
use crate::work::job::Job;

/// What a test holds of the context it gives a session.
pub struct Rig {
    pub ctx: Arc<ServerCtx>,
    pub work: watch::Sender<Option<Arc<Work>>>,
    pub blocks: mpsc::Receiver<BlockCandidate>,
    pub stats: mpsc::Receiver<StatEvent>,
    pub shutdown: watch::Sender<bool>,
    pub dir: tempfile::TempDir,
}

/// The notify params of the rig's job (extranonce1 4 bytes, extranonce2 4 bytes).
pub fn notify_params() -> Value {
    json!([
        "1",
        "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000",
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0d03",
        "0000000000000000000000",
        [],
        "20000000",
        "207fffff",
        "504e86b9",
        true
    ])
}

/// A context with shares judged at difficulty 1e-8 (any hash meets it) and a block queue of
/// `block_capacity`.
pub fn rig(block_capacity: usize) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = json!({
        "btcd": [{"url": "127.0.0.1:1", "auth": "u", "pass": "p"}],
        "btcaddress": "x",
        "mindiff": 0.00000001,
        "startdiff": 0.00000001,
        "logdir": dir.path().display().to_string(),
    })
    .to_string();
    let cfg = Config::parse(&text, Path::new("test.conf")).expect("test config");
    let params = SessionParams::new(&cfg, None, 0x1fffe000, 4, true);
    let (shares, _writer) = crate::log::sharelog::spawn(dir.path().to_path_buf());
    let job = Job::from_notify(1, &notify_params(), 4, 4).expect("test job");
    let (work, work_rx) = watch::channel(Some(Arc::new(Work::new(Arc::new(job)))));
    let (blocks_tx, blocks) = mpsc::channel(block_capacity);
    let (stats_tx, stats) = mpsc::channel(256);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ctx = Arc::new(ServerCtx {
        params,
        work: work_rx,
        shares,
        blocks: blocks_tx,
        upstream: None,
        stats: stats_tx,
        counters: Counters::default(),
        enonces: Enonces::default(),
        guard: Arc::new(super::guard::Guard::new(&cfg.limits)),
        shutdown: shutdown_rx,
    });
    Rig { ctx, work, blocks, stats, shutdown, dir }
}

/// A nonce for `en1`/`en2` on the rig's job whose hash is a block (`block`) or is not.
pub fn solve(en1: &[u8], en2: &[u8], block: bool) -> u32 {
    let job = Job::from_notify(1, &notify_params(), en1.len(), en2.len()).expect("test job");
    let root = job.merkle_root(en1, en2);
    (0u32..1 << 16)
        .find(|&n| {
            let h = crate::work::merkle::sha256d(&job.header(&root, job.version, job.ntime, n));
            job.network_target.is_met_by(&h) == block
        })
        .expect("a nonce within 65,536")
}
