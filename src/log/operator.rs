//! The operator log: `logdir/<name>.log` (and the terminal unless quiet), through a
//! non-blocking writer. SIGHUP makes the file be reopened (for logrotate) without losing a line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// Bytes of operator lines kept in memory while the log file cannot be written (a full disk):
/// written, in order, once it can be again.
pub const PENDING_CAP: usize = 1 << 20;

/// A log file that reopens itself at its path when asked (after logrotate moved it). Lines the
/// file refuses (ENOSPC) are kept (up to [`PENDING_CAP`]) and written before the next line once
/// the disk takes them; the first refusal is said on stderr (the journal under systemd).
#[derive(Clone)]
pub struct ReopenableFile {
    path: PathBuf,
    state: Arc<Mutex<FileState>>,
    reopen: Arc<AtomicBool>,
}

struct FileState {
    file: File,
    /// Bytes not written yet (the tail of a cut line first).
    pending: Vec<u8>,
    /// Lines left out because `pending` was full, since the trouble began.
    dropped: u64,
}

impl FileState {
    /// Writes `pending` as far as the file takes it.
    fn drain(&mut self, path: &Path) -> io::Result<()> {
        let mut done = 0;
        let res = loop {
            if done == self.pending.len() {
                break Ok(());
            }
            match self.file.write(&self.pending[done..]) {
                Ok(0) => break Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0 bytes")),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.pending.drain(..done);
        if res.is_ok() && self.dropped > 0 {
            let note =
                format!("(log {}: {} lines were lost while it could not be written)\n", path.display(), self.dropped);
            self.dropped = 0;
            let _ = self.file.write_all(note.as_bytes());
        }
        res
    }
}

impl ReopenableFile {
    pub fn open(path: &Path) -> io::Result<ReopenableFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ReopenableFile {
            path: path.into(),
            state: Arc::new(Mutex::new(FileState { file: f, pending: Vec::new(), dropped: 0 })),
            reopen: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A handle that requests a reopen before the next write.
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }
}

impl Write for ReopenableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.reopen.swap(false, Ordering::AcqRel) {
            match OpenOptions::new().create(true).append(true).open(&self.path) {
                Ok(nf) => st.file = nf,
                Err(e) => eprintln!("log {}: cannot reopen: {e}; still writing the old file", self.path.display()),
            }
        }
        let was_failing = !st.pending.is_empty();
        if st.pending.len() + buf.len() <= PENDING_CAP {
            st.pending.extend_from_slice(buf);
        } else {
            st.dropped += buf.iter().filter(|&&b| b == b'\n').count().max(1) as u64;
        }
        if let Err(e) = st.drain(&self.path) {
            if !was_failing {
                eprintln!(
                    "log {}: {e}; keeping up to {} KB of lines in memory until it can be written",
                    self.path.display(),
                    PENDING_CAP >> 10
                );
            }
        }
        // The line is kept or counted: the writer behind this never sees an error to drop it on.
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.pending.is_empty() {
            let _ = st.drain(&self.path);
        }
        st.file.flush()
    }
}

/// Maps ckpool's numeric -l levels (syslog: 3 error, 4 warning, 6 info, 7 debug) or a name.
pub fn level_filter(level: Option<&str>) -> String {
    match level.map(str::trim) {
        None | Some("") => "info".into(),
        Some(l) => match l.parse::<u8>() {
            Ok(0..=3) => "error".into(),
            Ok(4) => "warn".into(),
            Ok(5 | 6) => "info".into(),
            Ok(_) => "debug".into(),
            Err(_) => l.to_string(),
        },
    }
}

/// Replaces the running subscriber's level filter (installed by [`init`]).
type SetLevel = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;
static SET_LEVEL: std::sync::OnceLock<SetLevel> = std::sync::OnceLock::new();

/// Changes the operator log's level while running (SIGHUP with a new `loglevel`).
pub fn set_level(level: &str) -> Result<(), String> {
    let f = EnvFilter::try_new(level_filter(Some(level))).map_err(|e| e.to_string())?;
    match SET_LEVEL.get() {
        Some(set) => set(f),
        None => Err("the operator log is not installed".into()),
    }
}

/// Keeps the non-blocking writer flushing until dropped.
pub struct LogGuard {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    pub reopen: Arc<AtomicBool>,
}

/// Installs the global subscriber; `file` None logs to stderr only.
pub fn init(file: Option<&Path>, level: Option<&str>, quiet: bool) -> io::Result<Option<LogGuard>> {
    // rustls logs every handshake step at debug: the operator log keeps one line per event (our
    // own handshake failure line), so its messages come in at warn and above only.
    let filter = EnvFilter::try_new(format!("rustls=warn,{}", level_filter(level)))
        .unwrap_or_else(|_| EnvFilter::new("rustls=warn,info"));
    match file {
        Some(path) => {
            let f = ReopenableFile::open(path)?;
            let reopen = f.reopen_flag();
            let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(f);
            let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_target(false);
            if quiet {
                let b = builder.with_writer(nb).with_filter_reloading();
                let h = b.reload_handle();
                if b.try_init().is_ok() {
                    let _ = SET_LEVEL.set(Box::new(move |f| h.reload(f).map_err(|e| e.to_string())));
                }
            } else {
                let b = builder.with_writer(nb.and(io::stderr)).with_filter_reloading();
                let h = b.reload_handle();
                if b.try_init().is_ok() {
                    let _ = SET_LEVEL.set(Box::new(move |f| h.reload(f).map_err(|e| e.to_string())));
                }
            }
            Ok(Some(LogGuard { _guard: guard, reopen }))
        }
        None => {
            let _ =
                tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(io::stderr).try_init();
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines the file refuses (ENOSPC from /dev/full) are not errors to the writer and not lost:
    /// once the log is reopened on a file that takes them, they come first, in order.
    #[test]
    fn refused_lines_are_kept_and_written_when_the_file_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpool.log");
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        let mut f = ReopenableFile::open(&path).unwrap();
        for i in 0..3 {
            assert_eq!(f.write(format!("line {i}\n").as_bytes()).unwrap(), 7);
        }
        f.flush().unwrap(); // still refused by /dev/full: kept, and no error for the writer to drop them on
        std::fs::remove_file(&path).unwrap();
        f.reopen_flag().store(true, Ordering::Release);
        f.write_all(b"line 3\n").unwrap();
        f.flush().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "line 0\nline 1\nline 2\nline 3\n");
    }
}
