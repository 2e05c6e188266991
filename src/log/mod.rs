//! What the pool writes for operators: the operator log and the share log.

pub mod operator;
pub mod sharelog;
pub mod stats;

/// At shutdown, once every session is gone: waits (bounded) for the share log writer to drain
/// and for the stats task to write its files one last time, saying so if either is slow.
pub async fn drain_writers(
    share_thread: std::thread::JoinHandle<()>,
    stats_task: tokio::task::JoinHandle<()>,
    bounded: std::time::Duration,
) {
    if tokio::time::timeout(bounded, tokio::task::spawn_blocking(move || share_thread.join())).await.is_err() {
        tracing::warn!("share log writer still flushing after {bounded:?}");
    }
    if tokio::time::timeout(bounded, stats_task).await.is_err() {
        tracing::warn!("stats files still being written after {bounded:?}");
    }
}
