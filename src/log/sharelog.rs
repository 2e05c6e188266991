//! Share log: one JSON line per share in ckpool's layout,
//! `logdir/<height as 8 hex>/<workinfoid as 16 hex>.sharelog`.
//!
//! Sessions format their line straight into one shared batch buffer (no allocation or channel
//! message per share); a dedicated thread swaps the batch out and writes it, one flush per batch,
//! so share replies never wait on the disk. When the disk falls behind by more than
//! [`SOFT_CAP`] bytes, a session answers its miner first and then waits for room before reading
//! more: nothing is dropped, and only the miners sending shares are slowed.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::difficulty::Difficulty;
use crate::hex;
use crate::jsonw::{push_json_str, push_u64};

/// Bytes of unwritten share lines above which sessions wait after replying (~40,000 shares).
pub const SOFT_CAP: usize = 16 << 20;

/// One share as ckpool's stratifier logs it, borrowed from the session that judged it.
#[derive(Debug, Clone, Copy)]
pub struct ShareLine<'a> {
    pub workinfoid: u64,
    pub clientid: u64,
    pub enonce1: &'a str,
    pub nonce2: &'a str,
    pub nonce: &'a str,
    pub ntime: &'a str,
    /// Difficulty the session was asked for.
    pub diff: Difficulty,
    /// Difficulty the share achieved.
    pub sdiff: Difficulty,
    /// The share's hash in internal byte order (written reversed, as displayed); `None` when the
    /// share could not be hashed (written as an empty string, as ckpool does).
    pub hash: Option<&'a [u8; 32]>,
    pub result: bool,
    pub reject_reason: Option<&'a str>,
    /// Unix time (seconds, nanoseconds).
    pub createdate: (u64, u32),
    pub workername: &'a str,
    pub username: &'a str,
    pub address: &'a str,
    pub agent: &'a str,
}

/// Appends one share line (with its newline) in ckpool's field names and order.
pub fn format_line(r: &ShareLine<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"workinfoid\":");
    push_u64(out, r.workinfoid);
    out.extend_from_slice(b",\"clientid\":");
    push_u64(out, r.clientid);
    out.extend_from_slice(b",\"enonce1\":");
    push_json_str(out, r.enonce1);
    out.extend_from_slice(b",\"nonce2\":");
    push_json_str(out, r.nonce2);
    out.extend_from_slice(b",\"nonce\":");
    push_json_str(out, r.nonce);
    out.extend_from_slice(b",\"ntime\":");
    push_json_str(out, r.ntime);
    out.extend_from_slice(b",\"diff\":");
    r.diff.write_decimal(out);
    out.extend_from_slice(b",\"sdiff\":");
    r.sdiff.write_decimal(out);
    out.extend_from_slice(b",\"hash\":\"");
    if let Some(h) = r.hash {
        hex::encode_rev_into(h, out);
    }
    out.extend_from_slice(if r.result { b"\",\"result\":true," } else { b"\",\"result\":false," });
    if let Some(reason) = r.reject_reason {
        out.extend_from_slice(b"\"reject-reason\":");
        push_json_str(out, reason);
        out.push(b',');
    }
    out.extend_from_slice(if r.result { b"\"errn\":0,\"createdate\":\"" } else { b"\"errn\":1,\"createdate\":\"" });
    push_u64(out, r.createdate.0);
    out.push(b',');
    push_u64(out, r.createdate.1 as u64);
    out.extend_from_slice(b"\",\"createby\":\"code\",\"createcode\":\"parse_submit\",\"workername\":");
    push_json_str(out, r.workername);
    out.extend_from_slice(b",\"username\":");
    push_json_str(out, r.username);
    out.extend_from_slice(b",\"address\":");
    push_json_str(out, r.address);
    out.extend_from_slice(b",\"agent\":");
    push_json_str(out, r.agent);
    out.extend_from_slice(b"}\n");
}

/// The file a share belongs in.
pub fn path_for(logdir: &Path, height: u32, workinfoid: u64) -> PathBuf {
    logdir.join(format!("{height:08x}")).join(format!("{workinfoid:016x}.sharelog"))
}

/// Which file a run of lines goes to, and where the run ends in the batch.
#[derive(Debug, Clone, Copy)]
struct Segment {
    height: u32,
    workinfoid: u64,
    end: usize,
}

#[derive(Default)]
struct Batch {
    buf: Vec<u8>,
    segments: Vec<Segment>,
    /// The writer is asleep waiting for lines (only then does an append wake it).
    writer_waiting: bool,
    /// Every handle is gone: the writer drains what is left and ends.
    closed: bool,
}

struct Inner {
    batch: Mutex<Batch>,
    /// Wakes the writer.
    lines: Condvar,
    /// Wakes sessions waiting for room.
    room: tokio::sync::Notify,
    handles: AtomicUsize,
    /// For the operator's message when the writer falls behind.
    logdir: PathBuf,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Batch> {
        self.batch.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle sessions log shares through. The writer thread ends once every handle is dropped
/// and everything appended is written.
pub struct ShareLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShareLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ShareLog")
    }
}

impl Clone for ShareLog {
    fn clone(&self) -> ShareLog {
        self.inner.handles.fetch_add(1, Ordering::Relaxed);
        ShareLog { inner: self.inner.clone() }
    }
}

impl Drop for ShareLog {
    fn drop(&mut self) {
        if self.inner.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.lock().closed = true;
            self.inner.lines.notify_one();
        }
    }
}

impl ShareLog {
    /// Appends one share's line for the file of (`height`, `workinfoid`). Never blocks on the
    /// disk; returns true when the unwritten backlog is over [`SOFT_CAP`]: the caller should
    /// reply to its miner and then [`ShareLog::wait_for_room`] before taking more shares.
    pub fn append(&self, height: u32, workinfoid: u64, line: &ShareLine<'_>) -> bool {
        let mut b = self.inner.lock();
        let before = b.buf.len();
        format_line(line, &mut b.buf);
        let end = b.buf.len();
        if before <= SOFT_CAP && end > SOFT_CAP {
            tracing::warn!(
                "share log is {} MB behind: is the disk under {} slow or full? Miners sending shares are slowed until it catches up; nothing is dropped",
                end >> 20,
                self.inner.logdir.display()
            );
        }
        match b.segments.last_mut() {
            Some(s) if s.height == height && s.workinfoid == workinfoid => s.end = end,
            _ => b.segments.push(Segment { height, workinfoid, end }),
        }
        let wake = std::mem::take(&mut b.writer_waiting);
        drop(b);
        if wake {
            self.inner.lines.notify_one();
        }
        end > SOFT_CAP
    }

    /// Returns once the unwritten backlog is under [`SOFT_CAP`].
    pub async fn wait_for_room(&self) {
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.inner.lock().buf.len() <= SOFT_CAP {
                return;
            }
            room.await;
        }
    }
}

/// Starts the writer thread.
pub fn spawn(logdir: PathBuf) -> (ShareLog, std::thread::JoinHandle<()>) {
    let inner = Arc::new(Inner {
        batch: Mutex::new(Batch::default()),
        lines: Condvar::new(),
        room: tokio::sync::Notify::new(),
        handles: AtomicUsize::new(1),
        logdir: logdir.clone(),
    });
    let writer = inner.clone();
    let handle = std::thread::Builder::new()
        .name("sharelog".into())
        .spawn(move || write_loop(&writer, &logdir))
        .expect("spawn share log thread");
    (ShareLog { inner }, handle)
}

fn write_loop(inner: &Inner, logdir: &Path) {
    let mut open: Option<((u32, u64), PathBuf, BufWriter<File>)> = None;
    let mut buf = Vec::new();
    let mut segments = Vec::new();
    loop {
        {
            let mut b = inner.lock();
            while b.buf.is_empty() && !b.closed {
                b.writer_waiting = true;
                b = inner.lines.wait(b).unwrap_or_else(|p| p.into_inner());
            }
            b.writer_waiting = false;
            if b.buf.is_empty() {
                break; // closed and drained
            }
            std::mem::swap(&mut b.buf, &mut buf);
            std::mem::swap(&mut b.segments, &mut segments);
        }
        inner.room.notify_waiters();
        let written = buf.len();
        let mut from = 0;
        for s in segments.drain(..) {
            write_segment(&mut open, logdir, (s.height, s.workinfoid), &buf[from..s.end]);
            from = s.end;
        }
        if let Some((_, p, w)) = open.as_mut() {
            if let Err(e) = w.flush() {
                tracing::error!("share log {}: flush failed: {e}", p.display());
            }
        }
        buf.clear();
        if buf.capacity() > 2 * SOFT_CAP {
            buf = Vec::new();
        }
        // A small batch: let lines gather for a moment instead of waking per share.
        if written < 64 * 1024 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    if let Some((_, _, mut w)) = open.take() {
        let _ = w.flush();
    }
}

/// Writes `lines` (whole lines) to the file for `key`, opening it when the job changed. A file
/// that cannot be opened sends its lines to the pool log instead: no share is lost.
fn write_segment(
    open: &mut Option<((u32, u64), PathBuf, BufWriter<File>)>,
    logdir: &Path,
    key: (u32, u64),
    lines: &[u8],
) {
    if open.as_ref().map(|(k, _, _)| *k != key).unwrap_or(true) {
        if let Some((_, p, mut w)) = open.take() {
            if let Err(e) = w.flush() {
                tracing::error!("share log {}: flush failed: {e}", p.display());
            }
        }
        let path = path_for(logdir, key.0, key.1);
        match open_append(&path) {
            Ok(f) => *open = Some((key, path, BufWriter::with_capacity(64 * 1024, f))),
            Err(e) => {
                tracing::error!("share log {}: {e}; shares kept in the pool log instead", path.display());
                for l in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    tracing::info!("share: {}", String::from_utf8_lossy(l));
                }
                return;
            }
        }
    }
    if let Some((_, p, w)) = open.as_mut() {
        if let Err(e) = w.write_all(lines) {
            tracing::error!("share log {}: write failed: {e}", p.display());
        }
    }
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

    fn sample(result: bool) -> ShareLine<'static> {
        static HASH: [u8; 32] = [0xab; 32];
        ShareLine {
            workinfoid: 0x1234,
            clientid: 7,
            enonce1: "0a0b0c0d",
            nonce2: "00000001",
            nonce: "deadbeef",
            ntime: "5f5e1000",
            diff: "42".parse().unwrap(),
            sdiff: "0.00015".parse().unwrap(),
            hash: Some(&HASH),
            result,
            reject_reason: (!result).then_some("Above \"target\""),
            createdate: (1_700_000_000, 5),
            workername: "bc1qxyz.rig1",
            username: "bc1qxyz",
            address: "127.0.0.1",
            agent: "cgminer/4.12\n",
        }
    }

    /// The line is the JSON object ckpool writes, every field with its value and type.
    #[test]
    fn line_parses_as_ckpools_fields() {
        for result in [true, false] {
            let mut out = Vec::new();
            format_line(&sample(result), &mut out);
            assert_eq!(out.last(), Some(&b'\n'));
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            // Field order as ckpool writes it: each key's position in the text.
            let text = std::str::from_utf8(&out).unwrap();
            let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
            keys.sort_by_key(|k| text.find(&format!("\"{k}\":")).unwrap());
            let mut want = vec!["workinfoid", "clientid", "enonce1", "nonce2", "nonce", "ntime", "diff", "sdiff"];
            want.extend(["hash", "result"]);
            if !result {
                want.push("reject-reason");
            }
            want.extend(["errn", "createdate", "createby", "createcode", "workername", "username", "address", "agent"]);
            assert_eq!(keys, want);
            assert_eq!(v["workinfoid"], 0x1234);
            assert_eq!(v["diff"], 42);
            assert_eq!(v["sdiff"].as_f64(), Some(0.00015));
            assert_eq!(v["hash"], "ab".repeat(32));
            assert_eq!(v["result"], result);
            assert_eq!(v["errn"], if result { 0 } else { 1 });
            assert_eq!(v["createdate"], "1700000000,5");
            assert_eq!(v["agent"], "cgminer/4.12\n");
            if !result {
                assert_eq!(v["reject-reason"], "Above \"target\"");
            }
        }
    }

    /// Lines for two jobs land in their two files, in order, and all of them are written before
    /// the writer ends.
    #[test]
    fn lines_reach_their_files() {
        let dir = std::env::temp_dir().join(format!("sharelog-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (log, thread) = spawn(dir.clone());
        let log2 = log.clone();
        for i in 0..1000u64 {
            let mut l = sample(i % 3 != 0);
            l.clientid = i;
            let (h, w) = if i % 2 == 0 { (1, 10) } else { (2, 20) };
            l.workinfoid = w;
            let over = if i % 5 == 0 { &log2 } else { &log }.append(h, w, &l);
            assert!(!over);
        }
        drop(log);
        drop(log2);
        thread.join().unwrap();
        for (h, w, parity) in [(1u32, 10u64, 0u64), (2, 20, 1)] {
            let text = std::fs::read_to_string(path_for(&dir, h, w)).unwrap();
            let ids: Vec<u64> = text
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["clientid"].as_u64().unwrap())
                .collect();
            let want: Vec<u64> = (0..1000).filter(|i| i % 2 == parity).collect();
            assert_eq!(ids, want);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
