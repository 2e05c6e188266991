//! Process lifecycle for pool and proxy mode: config, logs, pid file (`--killold`), signals,
//! sd-notify, and the runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::cli::ServerArgs;
use crate::config::Config;
use crate::log::operator;

/// Shutdown budget, in the order things stop (SIGTERM → exit), adding up under systemd's
/// `TimeoutStopSec=30` (systemd/ckpool.service, ckproxy.service):
/// 1. sessions get 5 s to flush and end (stratum/server.rs);
/// 2. then the block submitter, the template source (or upstream session) and the share log /
///    stats writers, which all end on their own once the sessions are gone, are waited for
///    together, within [`DRAIN_AFTER_SESSIONS`] (one deadline, not one per task);
/// 3. [`STOP_LIMIT`] bounds the whole: past it the process exits anyway, 5 s before systemd's
///    SIGKILL.
pub const DRAIN_AFTER_SESSIONS: Duration = Duration::from_secs(15);
/// See [`DRAIN_AFTER_SESSIONS`]: 5 s + 15 s of work, 5 s to spare, under `TimeoutStopSec=30`.
pub const STOP_LIMIT: Duration = Duration::from_secs(25);

/// sd-notify bridge: READY=1 once work is served, STATUS= lines; no-ops outside systemd.
struct SystemdEvents;

impl crate::pool::Events for SystemdEvents {
    fn ready(&self, summary: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(summary)]);
    }
    fn status(&self, status: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(status)]);
    }
}

/// The pid file, removed when dropped.
pub struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn pid_alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

/// Takes the pid file in `sockdir`. With `killold`, a running instance is asked to stop
/// (SIGTERM, then SIGKILL after 10 s); without it, a running instance is an error.
pub fn take_pidfile(sockdir: &Path, killold: bool) -> anyhow::Result<PidFile> {
    std::fs::create_dir_all(sockdir).with_context(|| format!("cannot create socket dir {}", sockdir.display()))?;
    let path = sockdir.join("main.pid");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(pid) = text.trim().parse::<i32>() {
            if pid != std::process::id() as i32 && pid_alive(pid) {
                if !killold {
                    bail!(
                        "another instance is running (pid {pid}, pid file {}); stop it or start with --killold",
                        path.display()
                    );
                }
                tracing::warn!("--killold: stopping the running instance (pid {pid})");
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while pid_alive(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if pid_alive(pid) {
                    tracing::warn!("--killold: pid {pid} ignored SIGTERM for 10 s; sending SIGKILL");
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
    std::fs::write(&path, format!("{}\n", std::process::id()))
        .with_context(|| format!("cannot write pid file {}", path.display()))?;
    Ok(PidFile(path))
}

/// With `WatchdogSec=` (systemd sets WATCHDOG_USEC and WATCHDOG_PID), sends WATCHDOG=1 at half
/// the interval from a task of the runtime, so a runtime that stops making progress stops the
/// keepalives and systemd restarts the service.
fn spawn_watchdog() {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(1));
    tracing::info!("systemd watchdog: keepalive every {period:?}");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
    });
}

/// Runs pool or proxy mode until SIGTERM/SIGINT.
pub fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let name = args.name.clone().unwrap_or_else(|| if args.proxy { "ckproxy".into() } else { "ckpool".into() });
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from(format!("{name}.conf")));
    let mut cfg = Config::load(&config_path)?;
    if cfg.instance.is_empty() {
        cfg.instance = name.clone(); // the history rows' instance: the -n name unless "instance" is set
    }
    let log_path = cfg.logdir.join(format!("{name}.log"));
    let guard = operator::init(Some(&log_path), args.loglevel.as_deref(), args.quiet).with_context(|| {
        format!("cannot open the log file {} (check logdir and its permissions)", log_path.display())
    })?;
    tracing::info!("{name} {} starting with config {}", env!("CARGO_PKG_VERSION"), config_path.display());
    if !cfg.unknown_keys.is_empty() {
        tracing::warn!("config {}: unknown keys ignored: {}", config_path.display(), cfg.unknown_keys.join(", "));
    }
    let sockdir = args.sockdir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/{name}")));
    let _pid = take_pidfile(&sockdir, args.killold)?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ckpool")
        .build()
        .context("cannot start the runtime")?;
    let reopen = guard.as_ref().map(|g| g.reopen.clone());
    let result = rt.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let events: Arc<dyn crate::pool::Events> = Arc::new(SystemdEvents);
        let opts = crate::pool::Options { log_shares: args.log_shares, btcsolo: args.btcsolo };
        spawn_watchdog();
        let mut main = if args.proxy {
            tokio::spawn(crate::proxy::run(cfg, opts, stop_rx, events))
        } else {
            tokio::spawn(crate::pool::run(cfg, opts, stop_rx, events))
        };
        loop {
            tokio::select! {
                r = &mut main => return r.context("pool task")?,
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                _ = hup.recv() => {
                    // Flag first: this line is the first one in the reopened file.
                    if let Some(r) = &reopen { r.store(true, Ordering::Release); }
                    tracing::info!("SIGHUP: reopening log files");
                }
            }
        }
        let _ = sd_notify::notify(
            false,
            &[sd_notify::NotifyState::Stopping, sd_notify::NotifyState::Status("stopping: draining miners")],
        );
        let _ = stop_tx.send(true);
        match tokio::time::timeout(STOP_LIMIT, main).await {
            Ok(r) => r.context("pool task")?,
            Err(_) => {
                tracing::warn!("shutdown took over {} s; exiting anyway", STOP_LIMIT.as_secs());
                Ok(())
            }
        }
    });
    if let Err(e) = &result {
        tracing::error!("{e:#}");
    }
    drop(guard);
    result
}

#[cfg(test)]
mod shutdown_budget_tests {
    use super::*;

    /// The stop budget adds up: sessions (5 s) + the rest together + a margin fit under the
    /// units' TimeoutStopSec, so systemd never has to SIGKILL a pool that is flushing its share log.
    #[test]
    fn stop_budget_fits_the_units() {
        let sessions = Duration::from_secs(5);
        assert!(sessions + DRAIN_AFTER_SESSIONS < STOP_LIMIT);
        for unit in [include_str!("../systemd/ckpool.service"), include_str!("../systemd/ckproxy.service")] {
            let stop: u64 = unit
                .lines()
                .find_map(|l| l.strip_prefix("TimeoutStopSec="))
                .expect("TimeoutStopSec= in the unit")
                .trim()
                .parse()
                .expect("seconds");
            assert!(STOP_LIMIT + Duration::from_secs(5) <= Duration::from_secs(stop), "TimeoutStopSec={stop}");
        }
    }
}
