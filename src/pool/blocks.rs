//! Block submission: the block's hex goes to disk first (so no found block can be lost), then
//! `submitblock` to every node at once; each node's answer is logged and recorded.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bitcoin::consensus::encode::deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::bitcoind::Rpc;
use crate::hex;
use crate::stratum::BlockCandidate;

pub struct BlockSubmitter {
    pub rpc: Arc<Rpc>,
    pub logdir: PathBuf,
    /// Asks the template source for fresh work after a block.
    pub refresh: mpsc::Sender<Option<[u8; 32]>>,
    /// Tells the statistics that a round ended.
    pub stats: mpsc::Sender<crate::log::stats::StatEvent>,
}

/// What happened to one found block.
#[derive(Debug, Clone)]
pub struct BlockOutcome {
    pub height: u32,
    pub hash: String,
    pub accepted_by: Vec<String>,
    pub answers: Vec<(String, String)>,
}

impl BlockSubmitter {
    /// Submits every candidate until the channel closes (all sessions gone).
    pub async fn run(self, mut rx: mpsc::Receiver<BlockCandidate>) {
        while let Some(c) = rx.recv().await {
            self.submit(c).await;
        }
    }

    pub async fn submit(&self, c: BlockCandidate) -> Option<BlockOutcome> {
        let hash = hex::encode_rev(&c.hash);
        let Some(block) = c.job.assemble_block(&c.en1, &c.en2, &c.header) else {
            tracing::error!("block {hash} solved on work without transactions; cannot assemble");
            return None;
        };
        let block_hex = hex::encode(&block);
        // 1. Disk first.
        let dir = self.logdir.join("blocks");
        let path = dir.join(format!("{:08}-{hash}.hex", c.job.height));
        let saved = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let path = path.clone();
            let data = block_hex.clone();
            move || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                let mut f = std::fs::File::create(&path)?;
                f.write_all(data.as_bytes())?;
                f.write_all(b"\n")?;
                f.sync_all()
            }
        })
        .await;
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("could not save block {hash} to {}: {e}; submitting anyway", path.display()),
            Err(e) => tracing::error!("could not save block {hash}: {e}; submitting anyway"),
        }
        // 2. Our own consensus sanity checks (the node is the judge; this is for the log).
        match deserialize::<bitcoin::Block>(&block) {
            Ok(b) => {
                if !b.check_merkle_root() {
                    tracing::error!("block {hash}: merkle root check FAILED before submission");
                }
                if c.job.coinbase.witness && !b.check_witness_commitment() {
                    tracing::error!("block {hash}: witness commitment check FAILED before submission");
                }
            }
            Err(e) => tracing::warn!("block {hash}: does not decode as a bitcoin block ({e})"),
        }
        tracing::info!(
            "BLOCK FOUND: height {} hash {hash} by {} (share difficulty {}); submitting to {} node(s)",
            c.job.height,
            c.workername,
            c.difficulty,
            self.rpc.node_count()
        );
        // 3. Every node at once.
        let answers = self.rpc.submit_block_everywhere(&block_hex).await;
        let mut accepted_by = Vec::new();
        let mut shown = Vec::new();
        for (node, answer) in answers {
            let text = match &answer {
                Ok(Value::Null) => {
                    accepted_by.push(node.clone());
                    "accepted".to_string()
                }
                Ok(Value::String(s)) if s == "duplicate" || s == "inconclusive" => s.clone(),
                Ok(v) => format!("rejected: {v}"),
                Err(e) => format!("error: {e}"),
            };
            if text == "accepted" || text == "duplicate" || text == "inconclusive" {
                tracing::info!("block {hash} at height {}: node {node}: {text}", c.job.height);
            } else {
                tracing::error!(
                    "block {hash} at height {}: node {node}: {text} (hex kept in {})",
                    c.job.height,
                    path.display()
                );
            }
            shown.push((node, text));
        }
        // Fresh work on top of our block when a node took it, else whatever the node has.
        let _ = self.refresh.try_send(if accepted_by.is_empty() { None } else { Some(c.hash) });
        if !accepted_by.is_empty() {
            let _ = self.stats.send(crate::log::stats::StatEvent::BlockFound).await;
        }
        let outcome = BlockOutcome { height: c.job.height, hash, accepted_by, answers: shown };
        self.record(&c, &outcome).await;
        Some(outcome)
    }

    /// Appends one JSON line to logdir/blocks.log: the operator's "did we find one?" record.
    async fn record(&self, c: &BlockCandidate, o: &BlockOutcome) {
        let line = json!({
            "height": o.height,
            "hash": o.hash,
            "workername": &*c.workername,
            "username": &*c.username,
            "diff": c.difficulty.as_f64(),
            "workinfoid": c.job.id,
            "createdate": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "answers": o.answers.iter().map(|(n, a)| json!({"node": n, "answer": a})).collect::<Vec<_>>(),
            "accepted": !o.accepted_by.is_empty(),
        })
        .to_string();
        let path = self.logdir.join("blocks.log");
        let res = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            f.write_all(line.as_bytes())?;
            f.write_all(b"\n")
        })
        .await;
        if let Ok(Err(e)) = res {
            tracing::error!("could not append to blocks.log: {e}");
        }
    }
}
