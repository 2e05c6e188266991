//! The operator log: `logdir/<name>.log` (and the terminal unless quiet), through a
//! non-blocking writer. SIGHUP makes the file be reopened (for logrotate) without losing a line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::EnvFilter;

/// A log file that reopens itself at its path when asked (after logrotate moved it).
#[derive(Clone)]
pub struct ReopenableFile {
    path: PathBuf,
    file: Arc<Mutex<File>>,
    reopen: Arc<AtomicBool>,
}

impl ReopenableFile {
    pub fn open(path: &Path) -> io::Result<ReopenableFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let f = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(ReopenableFile {
            path: path.into(),
            file: Arc::new(Mutex::new(f)),
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
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if self.reopen.swap(false, Ordering::AcqRel) {
            if let Ok(nf) = OpenOptions::new().create(true).append(true).open(&self.path) {
                *f = nf;
            }
        }
        f.write_all(buf)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.lock().unwrap_or_else(|p| p.into_inner()).flush()
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

/// Keeps the non-blocking writer flushing until dropped.
pub struct LogGuard {
    _guard: tracing_appender::non_blocking::WorkerGuard,
    pub reopen: Arc<AtomicBool>,
}

/// Installs the global subscriber; `file` None logs to stderr only.
pub fn init(file: Option<&Path>, level: Option<&str>, quiet: bool) -> io::Result<Option<LogGuard>> {
    let filter = EnvFilter::try_new(level_filter(level)).unwrap_or_else(|_| EnvFilter::new("info"));
    match file {
        Some(path) => {
            let f = ReopenableFile::open(path)?;
            let reopen = f.reopen_flag();
            let (nb, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(f);
            let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_target(false);
            if quiet {
                let _ = builder.with_writer(nb).try_init();
            } else {
                let _ = builder.with_writer(nb.and(io::stderr)).try_init();
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
