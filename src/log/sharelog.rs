//! Share log: one JSON line per share in ckpool's layout,
//! `logdir/<height as 8 hex>/<workinfoid as 16 hex>.sharelog`.
//!
//! Sessions format their line straight into one shared batch buffer (no allocation or channel
//! message per share); a dedicated thread swaps the batch out and writes it, one flush per batch,
//! so share replies never wait on the disk. When the disk falls behind by more than
//! [`SOFT_CAP`] bytes, a session answers its miner first and then waits for room before reading
//! more: nothing is dropped, and only the miners sending shares are slowed.
//!
//! When a file cannot be written (ENOSPC, a failing disk), the writer keeps the unwritten lines
//! in memory (up to [`HELD_CAP`]), says so once in the operator log (file and error), retries
//! every second while miners keep being answered, and writes them in order once the disk takes
//! them again, saying so. Shares beyond [`HELD_CAP`] during one outage are counted and the count
//! is logged when writing resumes; at shutdown with the disk still failing, the number of
//! unwritten shares is logged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::difficulty::Difficulty;
use crate::hex;
use crate::jsonw::{push_json_str, push_u64};

mod read;
pub use read::{parse_accepted, Accepted};

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

    /// Bytes appended and not yet written (the operator's metrics).
    pub fn backlog_bytes(&self) -> usize {
        self.inner.lock().buf.len()
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

/// Bytes of share lines the writer holds in memory while their files cannot be written (a full
/// or failing disk), ~160,000 shares. Miners are answered meanwhile; lines beyond this are
/// counted and the count is logged, never dropped silently.
pub const HELD_CAP: usize = 64 << 20;

/// How often held lines are retried while their files cannot be written.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Lines that could not be written yet, in order, with the file each run belongs to.
#[derive(Default)]
struct Held {
    buf: Vec<u8>,
    segments: Vec<Segment>,
    /// Shares left out because `buf` was at [`HELD_CAP`], since the trouble began.
    dropped: u64,
    /// The error that started the trouble (for the line when it ends).
    since: Option<String>,
}

impl Held {
    /// Appends `buf[from..]` (cut at `segments`) within [`HELD_CAP`]; whole lines only.
    fn keep(&mut self, logdir: &Path, buf: &[u8], mut from: usize, segments: &[Segment]) {
        for s in segments {
            let part = &buf[from..s.end];
            from = s.end;
            if part.is_empty() {
                continue;
            }
            if self.buf.len() + part.len() > HELD_CAP {
                let lines = part.iter().filter(|&&b| b == b'\n').count() as u64;
                if self.dropped == 0 {
                    tracing::error!(
                        "share log: {} MB of shares held in memory while {} cannot be written; further shares are counted, not logged, until it can",
                        HELD_CAP >> 20,
                        logdir.display()
                    );
                }
                self.dropped += lines;
                continue;
            }
            self.buf.extend_from_slice(part);
            match self.segments.last_mut() {
                Some(l) if l.height == s.height && l.workinfoid == s.workinfoid => l.end = self.buf.len(),
                _ => self.segments.push(Segment { height: s.height, workinfoid: s.workinfoid, end: self.buf.len() }),
            }
        }
    }

    fn shares(&self) -> usize {
        self.buf.iter().filter(|&&b| b == b'\n').count()
    }
}

/// The file being appended to.
type Open = Option<((u32, u64), PathBuf, File)>;

/// The disk takes lines again: one line saying how many held shares were written, and how many
/// (beyond the memory cap) were not kept.
fn report_recovered(held: &mut Held, logdir: &Path, shares: usize) {
    let dropped = std::mem::take(&mut held.dropped);
    let since = held.since.take().unwrap_or_default();
    if dropped == 0 {
        tracing::warn!(
            "share log: writing again to {} after \"{since}\"; the {shares} shares held meanwhile are written, none lost",
            logdir.display()
        );
    } else {
        tracing::error!(
            "share log: writing again to {} after \"{since}\"; {shares} shares held meanwhile are written, {dropped} shares beyond the {} MB held were not logged",
            logdir.display(),
            HELD_CAP >> 20
        );
    }
}

fn write_loop(inner: &Inner, logdir: &Path) {
    let mut open: Open = None;
    let mut held = Held::default();
    let mut buf = Vec::new();
    let mut segments = Vec::new();
    loop {
        let closed;
        {
            let mut b = inner.lock();
            if held.buf.is_empty() {
                while b.buf.is_empty() && !b.closed {
                    b.writer_waiting = true;
                    b = inner.lines.wait(b).unwrap_or_else(|p| p.into_inner());
                }
            } else if !b.closed {
                // Lines are held for a disk that refused them: retry after a pause (at once when
                // the log is closing). New lines gather in the batch meanwhile.
                b = inner.lines.wait_timeout(b, RETRY_EVERY).unwrap_or_else(|p| p.into_inner()).0;
            }
            b.writer_waiting = false;
            closed = b.closed;
            if b.buf.is_empty() && held.buf.is_empty() && closed {
                break; // closed and drained
            }
            std::mem::swap(&mut b.buf, &mut buf);
            std::mem::swap(&mut b.segments, &mut segments);
        }
        inner.room.notify_waiters();
        let written = buf.len();
        // Held lines first (they are older), then the new batch; after a failure everything
        // later is held too, so each file keeps its lines in order.
        if !held.buf.is_empty() {
            let old = std::mem::take(&mut held.buf);
            let old_segments = std::mem::take(&mut held.segments);
            let failed = write_batch(&mut open, logdir, &old, &old_segments);
            if let Some((at, e)) = failed {
                held.keep(logdir, &old, at.1, &old_segments[at.0..]);
                held.keep(logdir, &buf, 0, &segments);
                if closed {
                    tracing::error!(
                        "share log: stopping with {} shares unwritten ({e}); {} more were counted but not kept",
                        held.shares(),
                        held.dropped
                    );
                    break;
                }
            } else {
                report_recovered(&mut held, logdir, old.iter().filter(|&&b| b == b'\n').count());
            }
        }
        if held.buf.is_empty() {
            if let Some(((si, from), e)) = write_batch(&mut open, logdir, &buf, &segments) {
                // `e` names the file and the error (e.g. "No space left on device").
                tracing::error!(
                    "share log {e}; shares are held in memory (up to {} MB) and written when it works again (retried every {RETRY_EVERY:?}); miners are answered meanwhile",
                    HELD_CAP >> 20
                );
                held.since = Some(e.to_string());
                held.keep(logdir, &buf, from, &segments[si..]);
                if closed {
                    tracing::error!("share log: stopping with {} shares unwritten ({e})", held.shares());
                    break;
                }
            }
        }
        buf.clear();
        segments.clear();
        if buf.capacity() > 2 * SOFT_CAP {
            buf = Vec::new();
        }
        // A small batch: let lines gather for a moment instead of waking per share.
        if written < 64 * 1024 && held.buf.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Writes a batch's segments to their files. On the first failure returns where the unwritten
/// part starts (segment index, byte offset in `buf`) and the error naming the file.
fn write_batch(open: &mut Open, logdir: &Path, buf: &[u8], segments: &[Segment]) -> Option<((usize, usize), String)> {
    let mut from = 0;
    for (i, s) in segments.iter().enumerate() {
        let key = (s.height, s.workinfoid);
        if let Err((done, e)) = write_segment(open, logdir, key, &buf[from..s.end]) {
            return Some(((i, from + done), e));
        }
        from = s.end;
    }
    None
}

/// Appends `lines` to the file for `key`, opening it when the job changed. On failure returns
/// how many bytes did reach the file (the rest is written later, completing any cut line) and
/// the error with the file's path; the file is closed so that the retry opens it afresh.
fn write_segment(open: &mut Open, logdir: &Path, key: (u32, u64), lines: &[u8]) -> Result<(), (usize, String)> {
    if open.as_ref().map(|(k, _, _)| *k != key).unwrap_or(true) {
        *open = None;
        let path = path_for(logdir, key.0, key.1);
        let f = open_append(&path).map_err(|e| (0, format!("{}: cannot open: {e}", path.display())))?;
        *open = Some((key, path, f));
    }
    let (_, path, f) = open.as_mut().expect("opened above");
    let mut done = 0;
    while done < lines.len() {
        match f.write(&lines[done..]) {
            Ok(0) => {
                let e = format!("{}: write returned 0 bytes", path.display());
                *open = None;
                return Err((done, e));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                let e = format!("{}: write failed: {e}", path.display());
                *open = None;
                return Err((done, e));
            }
        }
    }
    Ok(())
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

    /// A file that cannot be written (its height directory is blocked by a plain file, as a
    /// full disk refuses it) holds the lines; once it can be written, every line is there, in
    /// order, and nothing was written twice.
    #[test]
    fn held_lines_are_written_when_the_disk_takes_them_again() {
        let dir = std::env::temp_dir().join(format!("sharelog-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let blocker = dir.join(format!("{:08x}", 3));
        std::fs::write(&blocker, b"not a directory").unwrap();
        let (log, thread) = spawn(dir.clone());
        for i in 0..500u64 {
            let mut l = sample(true);
            l.clientid = i;
            assert!(!log.append(3, 30, &l));
        }
        // The writer takes the lines (the batch empties) and fails to write them: they are held.
        // A line appended after that is taken only once that failed round is over, at a retry
        // (held lines first). Both takes are waited for, bounded: no guessed sleep.
        let path = path_for(&dir, 3, 30);
        let taken = |what: &str| {
            let deadline = std::time::Instant::now() + RETRY_EVERY * 20;
            while log.backlog_bytes() > 0 {
                assert!(std::time::Instant::now() < deadline, "the writer did not take {what}");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        taken("the first 500 lines");
        let mut l = sample(true);
        l.clientid = 500;
        assert!(!log.append(3, 30, &l));
        taken("a line at its retry");
        std::fs::remove_file(&blocker).unwrap();
        for i in 501..1000u64 {
            let mut l = sample(true);
            l.clientid = i;
            assert!(!log.append(3, 30, &l));
        }
        drop(log);
        thread.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["clientid"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, (0..1000).collect::<Vec<u64>>());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
