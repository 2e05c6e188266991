//! The window's snapshot, `logdir/pplns.window`: what a start reads instead of the whole share
//! log. Its size is bounded by the window's slices (at most 257), one entry per payee in each,
//! whatever the share rate. Written periodically and at a clean stop, atomically (a temporary
//! file, synced, renamed); read back only when its version and checksum hold, else the start
//! falls back to reading the share log.
//!
//! ```text
//! {"version":1,"window":"465","cut":"1700000000,5","slices":2,"sha256":"<hex of what follows>"}
//! {"0014…":"30","5120…":"20"}      one line per slice, oldest first: script hex -> weight
//! {"0014…":"10"}
//! ```

use std::path::Path;

use bitcoin::ScriptBuf;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::journal::{parse_time, time_text, write_durable};
use crate::hex;

pub const SNAPSHOT_FILE: &str = "pplns.window";
pub const VERSION: u64 = 1;
/// A snapshot larger than this is not read (a window of 257 slices of ~100,000 payees each).
const MAX_BYTES: u64 = 4 << 30;

/// A window as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The window's length in difficulty units when it was taken.
    pub window: u128,
    /// When it was taken: the share log's lines after this are replayed over it.
    pub cut: (u64, u32),
    /// Oldest first.
    pub slices: Vec<Vec<(ScriptBuf, u128)>>,
}

/// The snapshot's text.
pub fn encode(s: &Snapshot) -> Vec<u8> {
    let mut body = String::new();
    for slice in &s.slices {
        let m: serde_json::Map<String, Value> =
            slice.iter().map(|(k, w)| (hex::encode(k.as_bytes()), json!(w.to_string()))).collect();
        body.push_str(&Value::Object(m).to_string());
        body.push('\n');
    }
    let head = json!({
        "version": VERSION,
        "window": s.window.to_string(),
        "cut": time_text(s.cut),
        "slices": s.slices.len(),
        "sha256": hex::encode(&Sha256::digest(body.as_bytes())),
    });
    format!("{head}\n{body}").into_bytes()
}

/// Reads a snapshot's text; `Err` says why it cannot be used.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let (head, body) = text.split_once('\n').ok_or("no header line")?;
    let head: Value = serde_json::from_str(head).map_err(|e| format!("header: {e}"))?;
    match head["version"].as_u64() {
        Some(VERSION) => {}
        v => return Err(format!("version {v:?}, this pool reads {VERSION}")),
    }
    if head["sha256"].as_str() != Some(&hex::encode(&Sha256::digest(body.as_bytes()))) {
        return Err("checksum does not match (a cut or altered file)".into());
    }
    let window = head["window"].as_str().and_then(|w| w.parse().ok()).ok_or("no window length")?;
    let cut = head["cut"].as_str().and_then(parse_time).ok_or("no cut time")?;
    let n = head["slices"].as_u64().ok_or("no slice count")?;
    let mut slices = Vec::new();
    for line in body.lines() {
        let v: serde_json::Map<String, Value> = serde_json::from_str(line).map_err(|e| format!("slice: {e}"))?;
        let mut slice = Vec::with_capacity(v.len());
        for (k, w) in v {
            let script = hex::decode(&k).map_err(|_| "a script that is not hex")?;
            let w = w.as_str().and_then(|w| w.parse().ok()).ok_or("a weight that is not a number")?;
            slice.push((ScriptBuf::from_bytes(script), w));
        }
        slices.push(slice);
    }
    if slices.len() as u64 != n {
        return Err(format!("{} slices, the header says {n}", slices.len()));
    }
    Ok(Snapshot { window, cut, slices })
}

/// Writes the snapshot under `logdir`, atomically.
pub fn write(logdir: &Path, s: &Snapshot) -> std::io::Result<()> {
    write_durable(&logdir.join(SNAPSHOT_FILE), &encode(s))
}

/// The snapshot under `logdir`: `Ok(None)` when there is none, `Err` when there is one that
/// cannot be used (and why).
pub fn read(logdir: &Path) -> Result<Option<Snapshot>, String> {
    let path = logdir.join(SNAPSHOT_FILE);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
        Ok(m) if m.len() > MAX_BYTES => return Err(format!("{} bytes, more than {MAX_BYTES}", m.len())),
        Ok(_) => {}
    }
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    decode(&bytes).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        let k = |b: u8| ScriptBuf::from_bytes(vec![0x51, b]);
        Snapshot { window: 465, cut: (1_700_000_000, 5), slices: vec![vec![(k(1), 30), (k(2), 20)], vec![(k(1), 10)]] }
    }

    #[test]
    fn a_snapshot_reads_back_and_a_damaged_one_says_why() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), Ok(None));
        write(dir.path(), &snap()).unwrap();
        assert_eq!(read(dir.path()), Ok(Some(snap())));
        let text = encode(&snap());
        let cut = &text[..text.len() - 5];
        assert!(decode(cut).unwrap_err().contains("checksum"));
        let altered = String::from_utf8(text.clone()).unwrap().replace("\"30\"", "\"31\"");
        assert!(decode(altered.as_bytes()).unwrap_err().contains("checksum"));
        let old = String::from_utf8(text).unwrap().replacen("\"version\":1", "\"version\":0", 1);
        assert!(decode(old.as_bytes()).unwrap_err().contains("version"));
        assert!(decode(b"garbage").is_err());
    }
}
