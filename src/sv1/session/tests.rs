//! One SV1 session against a client over a loopback socket in this process, with the test rig's
//! context (`serve::testing`): what reaches the miner and what reaches the outputs, and in
//! which order.

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::Session;
use crate::log::stats::StatEvent;
use crate::serve::enonce::mask_of;
use crate::serve::testing::{rig, solve, Rig};
use crate::serve::RejectKind;
use crate::sv1::server::MinerStream;

struct Miner {
    lines: Lines<BufReader<OwnedReadHalf>>,
    wr: OwnedWriteHalf,
    en1: Vec<u8>,
    notify: Value,
}

impl Miner {
    async fn send(&mut self, v: Value) {
        self.wr.write_all(format!("{v}\n").as_bytes()).await.unwrap();
    }

    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(10), self.lines.next_line()).await;
        let line = line.expect("a line within 10 s").unwrap().expect("the session closed");
        serde_json::from_str(&line).unwrap()
    }

    /// The answer to request `id` (notifications before it are kept: the newest notify).
    async fn answer(&mut self, id: u64) -> Value {
        loop {
            let v = self.next().await;
            if v["method"] == json!("mining.notify") {
                self.notify = v;
            } else if v["id"] == json!(id) {
                return v;
            }
        }
    }

    /// A submit of the current job with `en2` and a nonce that is a block or not.
    fn share(&self, id: u64, en2: u32, block: bool) -> Value {
        let en2b = en2.to_be_bytes();
        let nonce = solve(&self.en1, &en2b, block);
        let p = &self.notify["params"];
        json!({"id": id, "method": "mining.submit",
               "params": ["alice.rig", p[0], crate::hex::encode(&en2b), p[7], format!("{nonce:08x}")]})
    }
}

/// A session on the rig, and a miner subscribed and authorized as `alice.rig`.
async fn connect(rig: &Rig) -> (Miner, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, peer) = listener.accept().await.unwrap();
    let key = rig.ctx.enonces.take(&mut 0, mask_of(rig.ctx.params.nonce1_len)).unwrap();
    let session = Box::new(Session::new(rig.ctx.clone(), 1, peer, key, rig.ctx.params.channel()));
    let task = tokio::spawn(session.run(MinerStream::Plain(server)));
    let (rd, wr) = client.into_split();
    let mut m = Miner { lines: BufReader::new(rd).lines(), wr, en1: Vec::new(), notify: Value::Null };
    m.send(json!({"id": 1, "method": "mining.subscribe", "params": ["unit/1"]})).await;
    let sub = m.answer(1).await;
    m.en1 = crate::hex::decode(sub["result"][1].as_str().unwrap()).unwrap();
    assert_eq!(sub["result"][2], json!(4), "{sub}");
    m.send(json!({"id": 2, "method": "mining.authorize", "params": ["alice.rig", "x"]})).await;
    assert_eq!(m.answer(2).await["result"], json!(true));
    assert!(m.notify.is_object(), "work before the authorize answer");
    (m, task)
}

/// A block-meeting share: the candidate is with the block task by the time the miner reads its
/// answer; a duplicate and a job it never sent are refused and counted by kind; the session's tally
/// and its end reach the statistics.
#[tokio::test]
async fn a_found_block_leaves_before_the_answer() {
    let mut rig = rig(4);
    let (mut m, task) = connect(&rig).await;
    let share = m.share(3, 1, true);
    m.send(share.clone()).await;
    assert_eq!(m.answer(3).await, json!({"id": 3, "result": true, "error": null}));
    let cand = rig.blocks.try_recv().expect("the candidate left before the answer was written");
    assert_eq!(&*cand.workername, "alice.rig");
    let mut dup = share;
    dup["id"] = json!(4);
    m.send(dup).await;
    assert_eq!(m.answer(4).await["error"][0], json!(22), "a duplicate");
    m.send(json!({"id": 5, "method": "mining.submit", "params": ["alice.rig", "ffff", "00000002", "504e86b9", "00000000"]}))
        .await;
    // A job id this session never sent (past the last it issued) is an invalid share, not a
    // stale one: code 21 as ckpool answers it, counted as unknown_job (and by banning).
    assert_eq!(m.answer(5).await["error"], json!([21, "Invalid JobID", null]), "an unknown job");
    assert_eq!(rig.ctx.counters.accepted.load(Ordering::Relaxed), 1);
    let by: Vec<_> = rig.ctx.counters.rejected_by().filter(|(_, n)| *n > 0).collect();
    assert_eq!(by, [(RejectKind::Duplicate, 1), (RejectKind::UnknownJob, 1)]);
    assert!(rig.blocks.try_recv().is_err(), "one block, once");

    drop(m);
    tokio::time::timeout(Duration::from_secs(10), task).await.expect("the session ends").unwrap();
    let mut events = Vec::new();
    while let Ok(ev) = rig.stats.try_recv() {
        events.push(ev);
    }
    // Tallies leave once per batch of lines: summed here.
    let counted = events.iter().fold((0, 0), |(a, r), ev| match ev {
        StatEvent::Shares { worker, tally, .. } if &**worker == "alice.rig" => {
            (a + tally.accepted_n, r + tally.rejected_n)
        }
        _ => (a, r),
    });
    assert_eq!(counted, (1, 2), "{events:?}");
    assert!(matches!(events.last(), Some(StatEvent::Gone { .. })), "{events:?}");
    assert_eq!(rig.ctx.enonces.held(), 0, "the extranonce1 given back");
}

/// With the block queue full the miner still has its answer at once, and the second block is
/// not lost: it reaches the block task as soon as there is room.
#[tokio::test]
async fn a_full_block_queue_holds_no_answer_and_loses_no_block() {
    let mut rig = rig(1);
    let (mut m, _task) = connect(&rig).await;
    for (id, en2) in [(3u64, 1u32), (4, 2)] {
        let share = m.share(id, en2, true);
        m.send(share).await;
        assert_eq!(m.answer(id).await["result"], json!(true), "share {id} answered");
    }
    let first = rig.blocks.recv().await.unwrap();
    let second =
        tokio::time::timeout(Duration::from_secs(10), rig.blocks.recv()).await.expect("the queued block").unwrap();
    assert_ne!(first.hash, second.hash);
    assert_eq!(rig.ctx.counters.accepted.load(Ordering::Relaxed), 2);
}
