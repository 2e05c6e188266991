//! PPLNS's journals under `logdir`, beside the share log they complete:
//!
//! * `pplns.carry`: one JSON line per payee a found block did not pay, with the weight it had
//!   then (moved to the newest end of the window). Only each payee's newest carry counts: it
//!   replaces what came before. The file is rewritten (compacted) from the payees still carried
//!   in the window when one of them has left the window or when it holds far more lines than
//!   payees.
//! * `pplns.blocks`: one JSON line per block found under PPLNS: its height and hash, the moment
//!   the window's snapshot its coinbase was built from was taken (`cut`), the window's length,
//!   the weights the coinbase was split by, and the carries in effect then. `ckpool pplns
//!   --height` rebuilds the window from the share log up to `cut` and these carries, and checks
//!   the block's coinbase against it.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use bitcoin::ScriptBuf;
use serde_json::{json, Value};

use crate::hex;

/// The journal of carried credit under `logdir`.
pub const CARRY_FILE: &str = "pplns.carry";
/// The record of each block found under PPLNS under `logdir`.
pub const BLOCKS_FILE: &str = "pplns.blocks";
/// `pplns.carry` is compacted once it holds more lines than this many per payee carried (and
/// this many in all at least).
pub const COMPACT_LINES: u64 = 1_000;

/// One carry: when, whom, the weight moved to the newest end of the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carry {
    pub at: (u64, u32),
    pub script: ScriptBuf,
    pub weight: u128,
}

/// `(seconds, nanoseconds)` as the share log writes a `createdate`.
pub fn time_text(at: (u64, u32)) -> String {
    format!("{},{}", at.0, at.1)
}

/// A `createdate`-style time read back.
pub fn parse_time(s: &str) -> Option<(u64, u32)> {
    let (s, n) = s.split_once(',')?;
    Some((s.parse().ok()?, n.parse().ok()?))
}

pub fn carry_line(c: &Carry) -> String {
    format!(
        "{{\"createdate\":\"{}\",\"script\":\"{}\",\"weight\":\"{}\"}}\n",
        time_text(c.at),
        hex::encode(c.script.as_bytes()),
        c.weight
    )
}

fn carry_of(v: &Value) -> Option<Carry> {
    Some(Carry {
        at: parse_time(v["createdate"].as_str()?)?,
        script: ScriptBuf::from_bytes(hex::decode(v["script"].as_str()?).ok()?),
        weight: v["weight"].as_str()?.parse().ok()?,
    })
}

/// The journal's carries, each payee's newest only (by time; the lines of two writers may land
/// out of order), oldest first; and the lines the file holds. A line that does not read is
/// skipped.
pub fn read_carries(logdir: &Path) -> (Vec<Carry>, u64) {
    let Ok(text) = std::fs::read_to_string(logdir.join(CARRY_FILE)) else { return (Vec::new(), 0) };
    let mut last: HashMap<ScriptBuf, Carry> = HashMap::new();
    let mut lines = 0;
    for line in text.lines() {
        lines += 1;
        let Some(c) = serde_json::from_str::<Value>(line).ok().as_ref().and_then(carry_of) else { continue };
        if last.get(&c.script).is_none_or(|old| old.at <= c.at) {
            last.insert(c.script.clone(), c);
        }
    }
    (sorted(last.into_values().collect()), lines)
}

/// Oldest first; equal times by script.
pub fn sorted(mut carries: Vec<Carry>) -> Vec<Carry> {
    carries.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.script.cmp(&b.script)));
    carries
}

/// Appends `carries` to the journal.
pub fn append_carries(logdir: &Path, carries: &[Carry]) -> std::io::Result<()> {
    let text: String = carries.iter().map(carry_line).collect();
    append(&logdir.join(CARRY_FILE), &text)
}

/// Replaces the journal with `carries` (compaction): a temporary file, synced, renamed over it.
pub fn rewrite_carries(logdir: &Path, carries: &[Carry]) -> std::io::Result<()> {
    let text: String = sorted(carries.to_vec()).iter().map(carry_line).collect();
    write_durable(&logdir.join(CARRY_FILE), text.as_bytes())
}

/// Whether the journal is worth rewriting: it has `lines` lines for `live` payees carried.
pub fn needs_compaction(lines: u64, live: usize) -> bool {
    lines > COMPACT_LINES.max(2 * live as u64)
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(text.as_bytes())
}

/// Writes `bytes` to `path` atomically and durably: a temporary file beside it, synced, renamed
/// over it, the directory synced. A reader sees the old file or the new one, never a part.
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().and_then(|d| std::fs::File::open(d).ok()) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// What `pplns.blocks` records of a block found under PPLNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRecord {
    pub height: u32,
    /// The block's hash as the node shows it (byte-reversed hex).
    pub hash: String,
    /// When the block was found.
    pub found: (u64, u32),
    /// When the window's snapshot the coinbase was built from was taken.
    pub cut: (u64, u32),
    /// The window's length in difficulty units.
    pub window: u128,
    /// The weights the coinbase was split by.
    pub weights: BTreeMap<ScriptBuf, u128>,
    /// The carries in effect at `cut` (each payee's newest).
    pub carries: Vec<Carry>,
}

pub fn block_line(r: &BlockRecord) -> String {
    let weights: serde_json::Map<String, Value> =
        r.weights.iter().map(|(s, w)| (hex::encode(s.as_bytes()), json!(w.to_string()))).collect();
    let carries: Vec<Value> = r
        .carries
        .iter()
        .map(|c| json!({"createdate": time_text(c.at), "script": hex::encode(c.script.as_bytes()), "weight": c.weight.to_string()}))
        .collect();
    let v = json!({
        "height": r.height,
        "hash": r.hash,
        "createdate": time_text(r.found),
        "cut": time_text(r.cut),
        "window": r.window.to_string(),
        "weights": weights,
        "carries": carries,
    });
    format!("{v}\n")
}

fn block_of(v: &Value) -> Option<BlockRecord> {
    let mut weights = BTreeMap::new();
    for (s, w) in v["weights"].as_object()? {
        weights.insert(ScriptBuf::from_bytes(hex::decode(s).ok()?), w.as_str()?.parse().ok()?);
    }
    let carries = v["carries"].as_array()?.iter().map(carry_of).collect::<Option<Vec<_>>>()?;
    Some(BlockRecord {
        height: v["height"].as_u64()? as u32,
        hash: v["hash"].as_str()?.to_string(),
        found: parse_time(v["createdate"].as_str()?)?,
        cut: parse_time(v["cut"].as_str()?)?,
        window: v["window"].as_str()?.parse().ok()?,
        weights,
        carries,
    })
}

pub fn append_block(logdir: &Path, r: &BlockRecord) -> std::io::Result<()> {
    append(&logdir.join(BLOCKS_FILE), &block_line(r))
}

/// The record of the block with `hash`, if this pool found it under PPLNS.
pub fn find_block(logdir: &Path, hash: &str) -> Option<BlockRecord> {
    let text = std::fs::read_to_string(logdir.join(BLOCKS_FILE)).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| block_of(&v))
        .find(|r| r.hash == hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carry(at: u64, byte: u8, weight: u128) -> Carry {
        Carry { at: (at, 0), script: ScriptBuf::from_bytes(vec![0x51, byte]), weight }
    }

    #[test]
    fn the_newest_carry_of_each_payee_counts_whatever_the_line_order() {
        let dir = tempfile::tempdir().unwrap();
        append_carries(dir.path(), &[carry(10, 1, 5), carry(30, 2, 7)]).unwrap();
        // An older line written after a newer one (two writers) does not win.
        append_carries(dir.path(), &[carry(20, 1, 9), carry(5, 2, 1)]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join(CARRY_FILE))
            .unwrap()
            .write_all(b"{\"torn\n")
            .unwrap();
        let (c, lines) = read_carries(dir.path());
        assert_eq!(c, vec![carry(20, 1, 9), carry(30, 2, 7)]);
        assert_eq!(lines, 5);
    }

    #[test]
    fn compaction_rewrites_the_journal_to_one_line_per_payee() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..COMPACT_LINES + 1 {
            append_carries(dir.path(), &[carry(i, (i % 3) as u8, i as u128)]).unwrap();
        }
        let (live, lines) = read_carries(dir.path());
        assert_eq!((live.len(), lines), (3, COMPACT_LINES + 1));
        assert!(needs_compaction(lines, live.len()));
        rewrite_carries(dir.path(), &live).unwrap();
        assert_eq!(read_carries(dir.path()), (live, 3));
        assert!(!dir.path().join("pplns.carry.tmp").exists());
        assert!(!needs_compaction(3, 3));
    }

    #[test]
    fn a_block_record_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let r = BlockRecord {
            height: 7,
            hash: "00ab".into(),
            found: (100, 5),
            cut: (99, 1),
            window: 465,
            weights: [(ScriptBuf::from_bytes(vec![0x51]), 30u128)].into_iter().collect(),
            carries: vec![carry(50, 1, 3)],
        };
        append_block(dir.path(), &BlockRecord { hash: "00cd".into(), ..r.clone() }).unwrap();
        append_block(dir.path(), &r).unwrap();
        assert_eq!(find_block(dir.path(), "00ab"), Some(r));
        assert_eq!(find_block(dir.path(), "00ef"), None);
    }
}
