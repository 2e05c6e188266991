//! What the service shell tells the running mode, and what the mode tells it back: the command
//! line's runtime options, lifecycle events (sd-notify, tests) and the periodic status line.

use std::time::Duration;

use tokio::sync::watch;

/// Runtime options from the command line.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub log_shares: bool,
    /// Solo mining (`-B`): usernames are payout addresses.
    pub btcsolo: bool,
    /// What a reload (SIGHUP) changes while running (service.rs); None: fixed at start.
    pub live: Option<watch::Receiver<crate::reload::Live>>,
    /// After a handover (`-H`): true once the old instance has exited. Until then it may still
    /// write the statistics files and blocks.log; this instance takes them over after.
    pub predecessor_gone: Option<watch::Receiver<bool>>,
}

/// Lifecycle events for the service shell (sd-notify, tests).
pub trait Events: Send + Sync + 'static {
    /// The first job is being served.
    fn ready(&self, _summary: &str) {}
    /// A periodic status line.
    fn status(&self, _status: &str) {}
}

impl Events for () {}

/// Logs (and sends to systemd) `status()` every minute until `shutdown` flips.
pub async fn status_loop(mut shutdown: watch::Receiver<bool>, events: &dyn Events, mut status: impl FnMut() -> String) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let line = status();
                tracing::info!("status: {line}");
                events.status(&line);
            }
            _ = shutdown.changed() => return,
        }
    }
}
