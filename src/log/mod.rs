//! What the pool writes for operators: the operator log and the share log.

pub mod escape;
pub mod operator;
pub mod ratelimit;
pub mod sharelog;
pub mod stats;

/// At shutdown, once every session is gone: waits for the share log writer to drain and for the
/// stats task to write its files one last time, both within `bounded` in all (one deadline),
/// saying so if either is slow.
pub async fn drain_writers(
    share_thread: std::thread::JoinHandle<()>,
    stats_task: tokio::task::JoinHandle<()>,
    bounded: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + bounded;
    let share = tokio::time::timeout_at(deadline, tokio::task::spawn_blocking(move || share_thread.join()));
    let (share, stats) = tokio::join!(share, tokio::time::timeout_at(deadline, stats_task));
    if share.is_err() {
        tracing::warn!("share log writer still flushing after {bounded:?}");
    }
    if stats.is_err() {
        tracing::warn!("stats files still being written after {bounded:?}");
    }
}
