//! Share log: one JSON line per share in ckpool's layout,
//! `logdir/<height as 8 hex>/<workinfoid as 16 hex>.sharelog`, written on a dedicated thread in
//! batches (one flush per batch) so that share replies never wait on the disk.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;

use crate::stratum::ShareRecord;

/// Formats one share as ckpool writes it (field names and order of ckpool's stratifier).
pub fn format_line(r: &ShareRecord, out: &mut String) {
    let q = JsonStr;
    let _ = write!(
        out,
        "{{\"workinfoid\":{},\"clientid\":{},\"enonce1\":{},\"nonce2\":{},\"nonce\":{},\"ntime\":{},\"diff\":{},\"sdiff\":{},\"hash\":{},\"result\":{},",
        r.workinfoid,
        r.clientid,
        q(&r.enonce1),
        q(&r.nonce2),
        q(&r.nonce),
        q(&r.ntime),
        r.diff,
        r.sdiff,
        q(&r.hash),
        r.result,
    );
    if let Some(reason) = &r.reject_reason {
        let _ = write!(out, "\"reject-reason\":{},", q(reason));
    }
    let _ = write!(
        out,
        "\"errn\":{},\"createdate\":\"{},{}\",\"createby\":\"code\",\"createcode\":\"parse_submit\",\"workername\":{},\"username\":{},\"address\":{},\"agent\":{}}}",
        if r.result { 0 } else { 1 },
        r.createdate.0,
        r.createdate.1,
        q(&r.workername),
        q(&r.username),
        q(&r.address),
        q(&r.agent),
    );
    out.push('\n');
}

/// A string written as a JSON string literal, escaped as serde_json does, without allocating.
struct JsonStr<'a>(&'a str);

impl std::fmt::Display for JsonStr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        f.write_char('"')?;
        let s = self.0;
        let mut from = 0;
        for (i, b) in s.bytes().enumerate() {
            let esc: &str = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            f.write_str(&s[from..i])?;
            if esc.is_empty() {
                let u = [b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]];
                f.write_str(std::str::from_utf8(&u).expect("ascii"))?;
            } else {
                f.write_str(esc)?;
            }
            from = i + 1;
        }
        f.write_str(&s[from..])?;
        f.write_char('"')
    }
}

/// The file a share belongs in.
pub fn path_for(logdir: &Path, height: u32, workinfoid: u64) -> PathBuf {
    logdir.join(format!("{height:08x}")).join(format!("{workinfoid:016x}.sharelog"))
}

/// Starts the writer thread; it ends when every sender is dropped, after writing everything.
pub fn spawn(logdir: PathBuf, capacity: usize) -> (mpsc::Sender<ShareRecord>, std::thread::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<ShareRecord>(capacity);
    let handle = std::thread::Builder::new()
        .name("sharelog".into())
        .spawn(move || {
            let mut open: Option<((u32, u64), PathBuf, BufWriter<File>)> = None;
            let mut batch = Vec::with_capacity(256);
            let mut line = String::with_capacity(512);
            loop {
                batch.clear();
                // Block for the first, then take whatever else is queued.
                match rx.blocking_recv() {
                    Some(r) => batch.push(r),
                    None => break,
                }
                while batch.len() < 4096 {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                for r in &batch {
                    // The file changes with the job: compare the key, build the path only then.
                    let key = (r.height, r.workinfoid);
                    if open.as_ref().map(|(k, _, _)| *k != key).unwrap_or(true) {
                        let path = path_for(&logdir, r.height, r.workinfoid);
                        if let Some((_, _, mut w)) = open.take() {
                            let _ = w.flush();
                        }
                        match open_append(&path) {
                            Ok(f) => open = Some((key, path.clone(), BufWriter::with_capacity(64 * 1024, f))),
                            Err(e) => {
                                tracing::error!(
                                    "share log {}: {e}; share kept in the pool log instead",
                                    path.display()
                                );
                                line.clear();
                                format_line(r, &mut line);
                                tracing::info!("share: {}", line.trim_end());
                                continue;
                            }
                        }
                    }
                    line.clear();
                    format_line(r, &mut line);
                    if let Some((_, p, w)) = open.as_mut() {
                        if let Err(e) = w.write_all(line.as_bytes()) {
                            tracing::error!("share log {}: write failed: {e}", p.display());
                        }
                    }
                }
                if let Some((_, p, w)) = open.as_mut() {
                    if let Err(e) = w.flush() {
                        tracing::error!("share log {}: flush failed: {e}", p.display());
                    }
                }
            }
            if let Some((_, _, mut w)) = open.take() {
                let _ = w.flush();
            }
        })
        .expect("spawn share log thread");
    (tx, handle)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_as_serde_json() {
        for s in ["", "plain", "quote\"back\\slash", "nl\ncr\rtab\tbs\u{8}ff\u{c}", "\u{1}\u{1f}x", "ünï\u{7f}€"] {
            let ours = JsonStr(s).to_string();
            assert_eq!(ours, serde_json::to_string(s).unwrap(), "{s:?}");
            assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), s);
        }
    }
}
