//! What runs beside a found block's submission, never before it: the hex saved and fsynced
//! ([`save`]), blocks.log's lines appended in order on their own task ([`Journal`]), and the
//! statistics told without the block task ever waiting on their channel ([`News`]); and after
//! it, once the nodes have answered, our own merkle and witness checks for the log ([`check`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bitcoin::consensus::encode::deserialize;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::bitcoind::SubmitBody;
use crate::log::stats::{BlockCounts, StatEvent};

/// Lines queued for blocks.log before the block task waits for the disk (a line is written per
/// submission round or fate change: this is never reached but on a stalled disk).
const JOURNAL_QUEUE: usize = 1024;

/// How long the save of a found block waits for its first request to have left before it
/// starts anyway (a node that does not read).
pub const SAVE_AFTER: Duration = Duration::from_millis(20);

/// Saves a found block's hex ([`save`]) once its first `submitblock` request has handed its
/// bytes to the connection ([`SubmitBody::sent`]) or after [`SAVE_AFTER`], whichever is first:
/// writing the block's file does not compete with the request for the CPU before the node has
/// it, and a node that does not read delays the save by no more than that. The block task ends
/// only once this has ended, so the hex is on disk before the pool could be stopped cleanly.
pub async fn save_once_sent(path: PathBuf, body: SubmitBody, hash: String) {
    let sent = body.sent();
    let _ = tokio::time::timeout(SAVE_AFTER, sent.notified()).await;
    let saved = tokio::task::spawn_blocking(move || save(path, &body.block_hex(), &hash)).await;
    if let Err(e) = saved {
        tracing::error!("blocks: saving a block's hex failed: {e}");
    }
}

/// Saves a found block's hex to `path` (created, written part by part, fsynced). Blocking: runs
/// beside the submission, which has already started from memory.
pub fn save(path: PathBuf, hex: &[Bytes], hash: &str) {
    let saved = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(path.parent().expect("under logdir/blocks"))?;
        let mut f = std::fs::File::create(&path)?;
        for part in hex {
            f.write_all(part)?;
        }
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    if let Err(e) = saved {
        tracing::error!("block {hash}: could not save it to {}: {e} (its submission goes on)", path.display());
    }
}

/// Decodes a found block's hex and runs the merkle root and (for a segwit coinbase) the witness
/// commitment checks. Blocking, and run once the nodes have answered, not beside the first
/// request (it is the CPU of a whole block): the node is the judge; the checks only say in the
/// log when our assembly is wrong.
pub fn check(hex: &[Bytes], witness: bool, hash: &str) {
    let mut block = Vec::with_capacity(hex.iter().map(|p| p.len() / 2).sum());
    if let Some(e) = hex.iter().find_map(|p| crate::hex::decode_append(p, &mut block).err()) {
        tracing::warn!("block {hash}: its hex does not decode ({e})");
        return;
    }
    match deserialize::<bitcoin::Block>(&block) {
        Ok(b) => {
            if !b.check_merkle_root() {
                tracing::error!("block {hash}: merkle root check FAILED (submitted anyway: the node judges)");
            }
            if witness && !b.check_witness_commitment() {
                tracing::error!("block {hash}: witness commitment check FAILED (submitted anyway: the node judges)");
            }
        }
        Err(e) => tracing::warn!("block {hash}: does not decode as a bitcoin block ({e})"),
    }
}

/// blocks.log's writer: lines appended in the order given, on a task of its own, so the block
/// task never waits for the disk (only for room when [`JOURNAL_QUEUE`] lines are waiting).
pub struct Journal {
    tx: mpsc::Sender<Value>,
    task: JoinHandle<()>,
}

impl Journal {
    pub fn spawn(logdir: PathBuf) -> Journal {
        let (tx, mut rx) = mpsc::channel::<Value>(JOURNAL_QUEUE);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(64);
            while rx.recv_many(&mut batch, 64).await > 0 {
                let lines = std::mem::take(&mut batch);
                let dir = logdir.clone();
                let r = tokio::task::spawn_blocking(move || append_lines(&dir, &lines)).await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!("could not append to {}: {e}", logdir.join("blocks.log").display()),
                    Err(e) => tracing::error!("could not append to blocks.log: {e}"),
                }
            }
        });
        Journal { tx, task }
    }

    /// Queues one line (waits only when [`JOURNAL_QUEUE`] lines are queued).
    pub async fn append(&self, line: Value) {
        if self.tx.send(line).await.is_err() {
            tracing::error!("blocks.log writer is gone; a line was not written");
        }
    }

    /// Writes what is queued and ends.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

/// Appends lines to logdir/blocks.log in one write (blocking).
pub fn append_lines(logdir: &Path, lines: &[Value]) -> std::io::Result<()> {
    let mut text = String::new();
    for l in lines {
        text.push_str(&l.to_string());
        text.push('\n');
    }
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(logdir.join("blocks.log"))?;
    f.write_all(text.as_bytes())
}

/// What the statistics are still to be told, coalesced so that it stays small however long
/// their channel is full: the number of blocks a node took (each ends a round) and the newest
/// block counts. Sent without waiting ([`News::try_send`]); what does not fit is sent when the
/// channel has room again (the block task's loop waits for that beside its other work).
#[derive(Debug, Default, PartialEq)]
pub struct News {
    rounds_ended: u32,
    counts: Option<BlockCounts>,
}

impl News {
    /// A node took one of our blocks: the round ends.
    pub fn round_ended(&mut self) {
        self.rounds_ended += 1;
    }

    /// The block counts as blocks.log now says (replaces older counts not yet sent).
    pub fn counts(&mut self, c: BlockCounts) {
        self.counts = Some(c);
    }

    pub fn is_empty(&self) -> bool {
        self.rounds_ended == 0 && self.counts.is_none()
    }

    /// The next event to send: rounds ended first, then the counts.
    pub fn take_next(&mut self) -> Option<StatEvent> {
        if self.rounds_ended > 0 {
            self.rounds_ended -= 1;
            return Some(StatEvent::BlockFound);
        }
        self.counts.take().map(StatEvent::Blocks)
    }

    /// Puts an event that could not be sent back at the front.
    fn put_back(&mut self, ev: StatEvent) {
        match ev {
            StatEvent::BlockFound => self.rounds_ended += 1,
            StatEvent::Blocks(c) => {
                self.counts.get_or_insert(c);
            }
            _ => {}
        }
    }

    /// Sends what fits without waiting; the rest stays (a closed channel drops it: shutdown).
    pub fn try_send(&mut self, tx: &mpsc::Sender<StatEvent>) {
        while let Some(ev) = self.take_next() {
            match tx.try_send(ev) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(ev)) => {
                    self.put_back(ev);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    *self = News::default();
                    return;
                }
            }
        }
    }

    /// Sends everything, waiting for room (at the end of the block task).
    pub async fn send_all(&mut self, tx: &mpsc::Sender<StatEvent>) {
        while let Some(ev) = self.take_next() {
            if tx.send(ev).await.is_err() {
                *self = News::default();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full statistics channel: nothing waits, nothing is lost; the newest counts win and every
    /// round end arrives, in order, once there is room.
    #[tokio::test]
    async fn news_coalesce_while_the_channel_is_full() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.try_send(StatEvent::BlockForwarded).unwrap(); // full
        let mut n = News::default();
        let c = |found| BlockCounts { found, ..BlockCounts::default() };
        n.round_ended();
        n.counts(c(1));
        n.round_ended();
        n.counts(c(2));
        n.try_send(&tx);
        assert_eq!(n, News { rounds_ended: 2, counts: Some(c(2)) });
        rx.recv().await.unwrap();
        n.try_send(&tx);
        assert!(matches!(rx.recv().await, Some(StatEvent::BlockFound)));
        let rest = async {
            n.send_all(&tx).await;
        };
        let got = async {
            let mut v = Vec::new();
            for _ in 0..2 {
                v.push(rx.recv().await.unwrap());
            }
            v
        };
        let ((), v) = tokio::join!(rest, got);
        assert!(matches!(v[0], StatEvent::BlockFound));
        assert!(matches!(v[1], StatEvent::Blocks(b) if b == c(2)));
        assert!(n.is_empty());
    }

    #[test]
    fn lines_appended_in_order() {
        let dir = tempfile::tempdir().unwrap();
        append_lines(dir.path(), &[serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]).unwrap();
        append_lines(dir.path(), &[serde_json::json!({"c": 3})]).unwrap();
        let text = std::fs::read_to_string(dir.path().join("blocks.log")).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n");
    }
}
