//! `ckpool submitblock FILE|HASH [--config F]`: the operator submits a saved block by hand, to
//! every configured node once, and sees each node's answer. Exit code 0 when a node has the block
//! (accepted, "duplicate" or "inconclusive"), 1 otherwise. The outcome is appended to the
//! config's blocks.log, so the pool does not submit it again at its next start.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::consensus::encode::deserialize;
use clap::Args;
use serde_json::json;

use super::decide::{self, Answer};
use super::journal::{self, Meta};
use crate::bitcoind::Rpc;
use crate::config::Config;

#[derive(Debug, Clone, Args)]
pub struct SubmitblockArgs {
    /// A block hex file (as saved in logdir/blocks/) or a block hash found under logdir/blocks/
    #[arg(value_name = "FILE|HASH")]
    pub block: String,
    /// Configuration file (its btcd list and logdir; default ckpool.conf)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The hex file `block` names: an existing path, or `<logdir>/blocks/*-<hash>.hex`.
pub fn resolve(block: &str, logdir: &Path) -> anyhow::Result<PathBuf> {
    let p = Path::new(block);
    if p.is_file() {
        return Ok(p.to_path_buf());
    }
    let hash = block.to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{block:?} is neither a file nor a 64-digit block hash");
    }
    let dir = logdir.join("blocks");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in entries.flatten() {
        if journal::parse_hex_name(&e.file_name().to_string_lossy()).is_some_and(|(_, h)| h == hash) {
            return Ok(e.path());
        }
    }
    bail!("no saved block {hash} in {}", dir.display())
}

pub fn run(args: SubmitblockArgs) -> anyhow::Result<()> {
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from("ckpool.conf"));
    let cfg = Config::load(&config_path)?;
    let path = resolve(&args.block, &cfg.logdir)?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let block_hex = text.trim().to_string();
    let bytes = crate::hex::decode(&block_hex).with_context(|| format!("{}: not hex", path.display()))?;
    let block: bitcoin::Block =
        deserialize(&bytes).with_context(|| format!("{}: does not decode as a block", path.display()))?;
    let hash = block.block_hash().to_string();
    let named = path.file_name().and_then(|n| journal::parse_hex_name(&n.to_string_lossy()));
    let height = block.bip34_block_height().ok().or(named.map(|(h, _)| h)).unwrap_or(0);
    println!("block {hash} at height {height} from {}", path.display());

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let rpc = Rpc::new(&cfg.btcd, Duration::from_secs(30));
    let answers: Vec<(String, Answer)> = rt.block_on(async {
        let mut out = Vec::new();
        for i in 0..rpc.node_count() {
            let a = decide::classify(&rpc.call_node(i, "submitblock", json!([block_hex])).await);
            out.push((rpc.node_label(i).to_string(), a));
        }
        out
    });
    for (node, a) in &answers {
        println!("node {node}: {}", a.text());
    }
    let holders: Vec<&String> = answers.iter().filter(|(_, a)| a.has_block()).map(|(n, _)| n).collect();
    let refused = answers.iter().all(|(_, a)| matches!(a, Answer::Rejected(_)));
    // Record what is settled; a node that could not be reached leaves the block to the pool.
    let ledger = super::load_ledger(&cfg.logdir).0;
    let meta = ledger.get(&hash).map(|e| e.meta.clone()).unwrap_or_else(|| Meta {
        height,
        hash: hash.clone(),
        ..Meta::default()
    });
    let answers_json: Vec<_> = answers.iter().map(|(n, a)| json!({"node": n, "answer": a.text()})).collect();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let line = if !holders.is_empty() {
        Some(journal::line(
            &meta,
            "accepted",
            true,
            now,
            json!({"answers": answers_json, "nodes": holders, "source": "submitblock"}),
        ))
    } else if refused {
        Some(journal::line(&meta, "rejected", false, now, json!({"answers": answers_json, "source": "submitblock"})))
    } else {
        None
    };
    if let Some(line) = line {
        if let Err(e) = std::fs::create_dir_all(&cfg.logdir).and_then(|()| super::append_line(&cfg.logdir, &line)) {
            eprintln!("warning: could not append to {}: {e}", cfg.logdir.join("blocks.log").display());
        }
    }
    if holders.is_empty() {
        bail!("no node accepted block {hash}");
    }
    println!("block {hash}: accepted by {}", holders.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_a_file_or_a_saved_hash() {
        let dir = tempfile::tempdir().unwrap();
        let hash = "00".repeat(31) + "ab";
        std::fs::create_dir_all(dir.path().join("blocks")).unwrap();
        let file = dir.path().join("blocks").join(format!("00000007-{hash}.hex"));
        std::fs::write(&file, "00\n").unwrap();
        assert_eq!(resolve(file.to_str().unwrap(), dir.path()).unwrap(), file);
        assert_eq!(resolve(&hash.to_ascii_uppercase(), dir.path()).unwrap(), file);
        let other = "11".repeat(32);
        assert!(resolve(&other, dir.path()).unwrap_err().to_string().contains("no saved block"));
        assert!(resolve("nonsense", dir.path()).unwrap_err().to_string().contains("neither a file"));
    }
}
