//! What keeps anonymous miners from exhausting the pool, for both faces: the operator log's rate
//! limit (crate::log::ratelimit), shared here so that every session reaches it through its
//! context.

use crate::log::ratelimit::{LogGate, LogKind};

/// The policy both faces consult (one per front end).
#[derive(Debug, Default)]
pub struct Guard {
    /// Repeated per-connection operator lines, rate-limited per kind.
    pub log: LogGate,
}

impl Guard {
    /// Whether a line of `kind` may be written now (else it is counted for the summary).
    pub fn log(&self, kind: LogKind) -> bool {
        self.log.allow(kind)
    }
}

/// Once a minute until shutdown: one line with what the rate limit suppressed, if anything.
pub async fn summarize(guard: std::sync::Arc<Guard>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_micros(crate::log::ratelimit::WINDOW_US));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if let Some(line) = guard.log.take_summary() {
            tracing::warn!("{line}");
        }
    }
    if let Some(line) = guard.log.take_summary() {
        tracing::warn!("{line}");
    }
}
