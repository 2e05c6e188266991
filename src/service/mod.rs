//! Process lifecycle for pool and proxy mode: config, logs, pid file (`--killold`), signals,
//! sd-notify, and the runtime.

pub mod args;
pub mod events;
pub mod frontend;
pub mod pool_mode;
pub mod proxy_mode;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::log::operator;
use args::ServerArgs;

/// Shutdown budget, in the order things stop (SIGTERM → exit), adding up under systemd's
/// `TimeoutStopSec=30` (systemd/ckpool.service, ckproxy.service):
/// 1. sessions get 5 s to flush and end (sv1/server.rs, sv2/server.rs);
/// 2. then the block submitter, the template source (or upstream session) and the share log /
///    stats writers, which all end on their own once the sessions are gone, are waited for
///    together, within [`DRAIN_AFTER_SESSIONS`] (one deadline, not one per task);
/// 3. [`STOP_LIMIT`] bounds the whole: past it the process exits anyway, 5 s before systemd's
///    SIGKILL.
pub const DRAIN_AFTER_SESSIONS: Duration = Duration::from_secs(15);
/// See [`DRAIN_AFTER_SESSIONS`]: 5 s + 15 s of work, 5 s to spare, under `TimeoutStopSec=30`.
pub const STOP_LIMIT: Duration = Duration::from_secs(25);

/// sd-notify bridge: READY=1 once work is served, STATUS= lines; no-ops outside systemd. The
/// first READY also tells a handover's old instance to let go (`ready_tx`).
struct SystemdEvents {
    ready_tx: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl crate::service::events::Events for SystemdEvents {
    fn ready(&self, summary: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(summary)]);
        if let Some(tx) = self.ready_tx.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }
    fn status(&self, status: &str) {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(status)]);
    }
}

/// The pid file, removed when dropped (unless a newer instance, after a handover, wrote its own).
pub struct PidFile(PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.0).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Writes the pid file over the running instance's: after a handover, that one is leaving.
fn claim_pidfile(sockdir: &Path) -> anyhow::Result<()> {
    write_pidfile(&sockdir.join("main.pid"))
}

/// Writes our pid to `path`, never through a symlink (O_NOFOLLOW: a link planted there is an
/// error, not a file of someone else's overwritten).
fn write_pidfile(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot write pid file {} (a symlink is refused)", path.display()))?;
    f.write_all(format!("{}\n", std::process::id()).as_bytes())
        .with_context(|| format!("cannot write pid file {}", path.display()))
}

/// The listeners the config asks for, by key.
fn wanted(cfg: &Config) -> Vec<crate::sockets::Wanted> {
    let stratum = cfg.serverurl.iter().map(|&addr| crate::sockets::Wanted { key: "serverurl", addr });
    let sv2 = cfg.sv2url.iter().map(|&addr| crate::sockets::Wanted { key: "sv2url", addr });
    let jd = cfg.sv2jdurl.iter().map(|&addr| crate::sockets::Wanted { key: "sv2jdurl", addr });
    stratum
        .chain(sv2)
        .chain(jd)
        .chain(cfg.apiurl.iter().map(|&addr| crate::sockets::Wanted { key: "apiurl", addr }))
        .collect()
}

/// What the process needs descriptors for besides miners (crate::fdlimit).
fn fd_needs(cfg: &Config, proxy: bool) -> crate::fdlimit::Needs {
    let api = if cfg.apiurl.is_empty() { 0 } else { crate::api::server::MAX_CONNECTIONS as u64 };
    crate::fdlimit::Needs {
        listeners: wanted(cfg).len() as u64,
        nodes: cfg.btcd.len() as u64,
        zmq_nodes: u64::from(cfg.zmqblock.is_some()),
        upstreams: if proxy { cfg.proxy.len() as u64 } else { 0 },
        api_connections: api,
        history: cfg.history,
    }
}

/// SIGHUP: reads the config again and applies what can change while running (reload.rs);
/// `running` becomes the file's config for the keys applied. One line per outcome.
fn reload_config(path: &Path, running: &mut Config, live: &watch::Sender<crate::reload::Live>, args: &ServerArgs) {
    let new = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("SIGHUP: config not reloaded, keeping the running one: {e}");
            return;
        }
    };
    let mode_ok = if args.proxy { new.require_proxy() } else { new.require_pool() };
    if let Err(e) = mode_ok {
        tracing::error!("SIGHUP: config not reloaded, keeping the running one: {e}");
        return;
    }
    let btcsig = match (args.proxy, args.btcsolo) {
        (true, _) => crate::reload::Btcsig::Unused,
        (false, true) => crate::reload::Btcsig::Restart,
        (false, false) => crate::reload::Btcsig::Live,
    };
    let plan = crate::reload::plan(running, &new, btcsig);
    if !plan.restart.is_empty() {
        tracing::warn!(
            "SIGHUP: config {} changed keys that need a restart to apply (running values kept): {}",
            path.display(),
            plan.restart.join(", ")
        );
    }
    if plan.applied.is_empty() {
        tracing::info!("SIGHUP: config {} reloaded; nothing to apply", path.display());
        return;
    }
    let mut applied = plan.applied.clone();
    if applied.contains(&"loglevel") {
        if args.loglevel.is_some() {
            applied.retain(|k| *k != "loglevel");
            tracing::info!("SIGHUP: loglevel changed in the config, but -l on the command line wins");
        } else if let Err(e) = crate::log::operator::set_level(new.loglevel.as_deref().unwrap_or("info")) {
            tracing::warn!("SIGHUP: cannot change the log level: {e}");
        }
    }
    if applied.is_empty() {
        tracing::info!("SIGHUP: config {} reloaded; nothing to apply", path.display());
        return;
    }
    let mut next = crate::reload::Live::of(&new);
    if args.btcsolo {
        next.btcsig = live.borrow().btcsig.clone();
    }
    live.send_replace(next);
    running.mindiff = new.mindiff;
    running.startdiff = new.startdiff;
    running.maxdiff = new.maxdiff;
    running.vardiff = new.vardiff;
    running.stats_interval = new.stats_interval;
    running.loglevel = new.loglevel.clone();
    if !args.btcsolo {
        running.btcsig = new.btcsig.clone();
    }
    tracing::info!(
        "SIGHUP: config {} reloaded; applied {} (mindiff {}, startdiff {}, maxdiff {}; sessions opened from now on use them)",
        path.display(),
        applied.join(", "),
        running.mindiff,
        running.startdiff,
        running.maxdiff
    );
}

/// How long a new instance waits for the old one to exit after its release (its own stop is
/// bounded by [`STOP_LIMIT`]).
const PREDECESSOR_LIMIT: Duration = Duration::from_secs(STOP_LIMIT.as_secs() + 10);

/// Waits until process `pid` has exited (true) or [`PREDECESSOR_LIMIT`] has passed (false). It
/// is not our child: its exit is seen by probing it every 100 ms.
async fn predecessor_exit(pid: i32) -> bool {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + PREDECESSOR_LIMIT;
    while tokio::time::Instant::now() < deadline {
        tick.tick().await;
        if !pid_alive(pid) {
            return true;
        }
    }
    false
}

fn pid_alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None).is_ok()
}

/// Takes the pid file in `sockdir`. With `killold`, a running instance is asked to stop
/// (SIGTERM, then SIGKILL after 10 s); without it, a running instance is an error.
pub fn take_pidfile(sockdir: &Path, killold: bool) -> anyhow::Result<PidFile> {
    crate::sockets::dir::prepare(sockdir)?;
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
    write_pidfile(&path)?;
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

/// Runs pool or proxy mode until SIGTERM/SIGINT (or until a new instance took over, `-H`).
pub fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    // First, before any thread starts: sockets systemd passed (the environment is edited).
    let (listen_fds, listen_note) = crate::sockets::systemd::listen_fds();
    let name = args.name.clone().unwrap_or_else(|| if args.proxy { "ckproxy".into() } else { "ckpool".into() });
    let config_path = args.config.clone().unwrap_or_else(|| PathBuf::from(format!("{name}.conf")));
    let mut cfg = Config::load(&config_path)?;
    if cfg.instance.is_empty() {
        cfg.instance = name.clone(); // the history rows' instance: the -n name unless "instance" is set
    }
    let log_path = cfg.logdir.join(format!("{name}.log"));
    let level = args.loglevel.as_deref().or(cfg.loglevel.as_deref());
    let guard = operator::init(Some(&log_path), level, args.quiet).with_context(|| {
        format!("cannot open the log file {} (check logdir and its permissions)", log_path.display())
    })?;
    tracing::info!("{name} {} starting with config {}", env!("CARGO_PKG_VERSION"), config_path.display());
    if !cfg.unknown_keys.is_empty() {
        tracing::warn!("config {}: {}", config_path.display(), crate::config::unknown::notes(&cfg.unknown_keys));
    }
    if let Some(note) = listen_note {
        tracing::warn!("{note}");
    }
    // Descriptors: the soft limit up to the hard one, a reserve kept, the miners' ceiling logged.
    crate::fdlimit::install(&fd_needs(&cfg, args.proxy), if args.proxy { "ckproxy" } else { "ckpool" });
    let sockdir = args.sockdir.clone().unwrap_or_else(|| PathBuf::from(format!("/tmp/{name}")));
    crate::sockets::dir::prepare(&sockdir)?;
    let taken = if args.handover {
        match crate::sockets::handover::request(&sockdir, crate::sockets::handover::TIMEOUT) {
            Ok(Some(t)) => Some(t),
            Ok(None) => {
                tracing::info!("handover (-H): no instance is running in {}; binding the listeners", sockdir.display());
                None
            }
            Err(e) if args.killold => {
                tracing::error!("{e:#}; --killold: stopping it instead");
                None
            }
            Err(e) => return Err(e.context("start with --killold to stop it instead")),
        }
    } else {
        None
    };
    // During a handover the old instance keeps the pid file (and its handover socket) until it
    // lets go: if this one fails before it is ready, the old one still runs and is still found.
    let _pid = match &taken {
        Some(_) => PidFile(sockdir.join("main.pid")),
        None => take_pidfile(&sockdir, args.killold)?,
    };

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

        // Listeners: systemd's, the old instance's, the rest bound (sockets/).
        let systemd = crate::sockets::systemd::take(&listen_fds);
        let (handed, release) = match taken {
            Some(t) => {
                let (s, r) = t.split();
                (s, Some(r))
            }
            None => (Vec::new(), None),
        };
        let old_pid = release.as_ref().map(|r| r.old_pid);
        let listeners = crate::sockets::assemble(&wanted(&cfg), systemd, handed, old_pid)?;
        // This instance's own handover socket, for the next one (-H): at once, or after a
        // handover once the old instance let go (its socket stays until then).
        let (released_tx, mut released_rx) = mpsc::channel::<i32>(1);
        let dups = listeners.duplicates()?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (dir, stop) = (sockdir.clone(), stop_rx.clone());
        // After a handover: flips once the old instance has exited (its blocks and statistics
        // files are this instance's from then on).
        let (gone_tx, gone_rx) = watch::channel(false);
        let predecessor_gone = release.is_some().then_some(gone_rx);
        tokio::spawn(async move {
            if let Some(rel) = release {
                if ready_rx.await.is_err() {
                    return;
                }
                let pid = rel.old_pid;
                match tokio::task::spawn_blocking(move || rel.release()).await {
                    Ok(Ok(())) => {
                        tracing::info!("handover: the old instance (pid {pid}) stopped accepting and is exiting")
                    }
                    Ok(Err(e)) => tracing::warn!("{e:#}"),
                    Err(e) => tracing::warn!("handover: release task: {e}"),
                }
                if let Err(e) = claim_pidfile(&dir) {
                    tracing::warn!("{e:#}");
                }
                tokio::spawn(async move {
                    if predecessor_exit(pid).await {
                        tracing::info!("handover: the old instance (pid {pid}) has exited; its found blocks and statistics files are this instance's now");
                    } else {
                        tracing::warn!("handover: the old instance (pid {pid}) still runs {PREDECESSOR_LIMIT:?} after its release; taking over its found blocks and statistics files anyway");
                    }
                    let _ = gone_tx.send(true);
                });
            }
            match crate::sockets::handover::bind(&dir) {
                Ok(server) => server.run(dups, released_tx, stop).await,
                Err(e) => tracing::warn!("{e:#}; a new instance cannot take over with -H"),
            }
        });

        let events: Arc<dyn crate::service::events::Events> =
            Arc::new(SystemdEvents { ready_tx: std::sync::Mutex::new(Some(ready_tx)) });
        let (live_tx, live_rx) = watch::channel(crate::reload::Live::of(&cfg));
        let mut running = cfg.clone();
        let opts =
            crate::service::events::Options { log_shares: args.log_shares, btcsolo: args.btcsolo, live: Some(live_rx), predecessor_gone };
        spawn_watchdog();
        let mut main = if args.proxy {
            tokio::spawn(proxy_mode::run(cfg, opts, listeners, stop_rx, events))
        } else {
            tokio::spawn(pool_mode::run(cfg, opts, listeners, stop_rx, events))
        };
        loop {
            tokio::select! {
                r = &mut main => return r.context("pool task")?,
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
                Some(pid) = released_rx.recv() => {
                    tracing::info!("handover: stopping; pid {pid} accepts the miners now");
                    break;
                }
                _ = hup.recv() => {
                    // Flag first: this line is the first one in the reopened file.
                    if let Some(r) = &reopen { r.store(true, Ordering::Release); }
                    tracing::info!("SIGHUP: reopening log files");
                    reload_config(&config_path, &mut running, &live_tx, &args);
                    crate::tls::reload_all();
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
        for unit in [include_str!("../../systemd/ckpool.service"), include_str!("../../systemd/ckproxy.service")] {
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
