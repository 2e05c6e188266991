//! The SV2 upstream session against fake pools on loopback. Fakes because the faults are ones the
//! real pools cannot be made to produce on demand: refusing a share the proxy judged good
//! (`SubmitShares.Error`), and a batching pool (as SRI's pool_sv2) going silent for longer than
//! the silence limit with shares waiting; the rest of the path runs against the real pools in
//! tests/proxy_sv2.rs and tests/sri_pool.rs.

use std::time::Duration;

use crate::sv2::noise::Responder;
use binary_sv2::{Seq0255, Str0255, Sv2Option, B032, B064K, U256};
use common_messages_sv2::SetupConnectionSuccess;
use mining_sv2::{
    NewExtendedMiningJob, OpenExtendedMiningChannelSuccess, SetNewPrevHash, SubmitSharesError, SubmitSharesSuccess,
};
use parsers_sv2::{AnyMessage, CommonMessages, Mining};
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};

use super::super::UpstreamClient;
use crate::config::Upstream;
use crate::difficulty::Difficulty;
use crate::mining::{UpstreamShare, Work};
use crate::sv2::keys::AuthorityKey;
use crate::sv2::transport;

const PREV: [u8; 32] = [7u8; 32];

/// What the fake pool saw of a SubmitSharesExtended: channel, sequence, job, nonce, ntime,
/// version, extranonce.
type Seen = (u32, u32, u32, u32, u32, u32, Vec<u8>);

fn coinbase_parts() -> (Vec<u8>, Vec<u8>) {
    let coinb1 = crate::hex::decode(
        "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff1003a08601",
    )
    .unwrap();
    let coinb2 =
        crate::hex::decode("ffffffff0100f2052a010000001976a914000000000000000000000000000000000000000088ac00000000")
            .unwrap();
    (coinb1, coinb2)
}

/// The answer to OpenExtendedMiningChannel: channel 9 (prefix 01020304, 8 bytes to roll), job 7
/// as a future job and the SetNewPrevHash naming it.
fn channel_and_job<'a>(request_id: u32, coinb1: &'a [u8], coinb2: &'a [u8]) -> Vec<AnyMessage<'a>> {
    let ok = OpenExtendedMiningChannelSuccess {
        request_id,
        channel_id: 9,
        target: U256::new(&[0xff; 32]).unwrap(),
        extranonce_size: 8,
        extranonce_prefix: B032::new(&[1u8, 2, 3, 4][..]).unwrap(),
        group_channel_id: 1,
    };
    let job = NewExtendedMiningJob {
        channel_id: 9,
        job_id: 7,
        min_ntime: Sv2Option::new(None),
        version: 0x2000_0000,
        version_rolling_allowed: true,
        merkle_path: Seq0255::new(Vec::new()).unwrap(),
        coinbase_tx_prefix: B064K::new(coinb1).unwrap(),
        coinbase_tx_suffix: B064K::new(coinb2).unwrap(),
    };
    let prev = SetNewPrevHash {
        channel_id: 9,
        job_id: 7,
        prev_hash: U256::new(&PREV).unwrap(),
        min_ntime: 0x6500_0000,
        nbits: 0x207f_ffff,
    };
    vec![
        AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(ok)),
        AnyMessage::Mining(Mining::NewExtendedMiningJob(job)),
        AnyMessage::Mining(Mining::SetNewPrevHash(prev)),
    ]
}

/// A pool that opens channel 9 (prefix 01020304, 8 bytes to roll), sends job 7 as a future job
/// and the SetNewPrevHash naming it, refuses the first share and accepts the second.
async fn fake_pool(l: tokio::net::TcpListener, key: AuthorityKey, seen: mpsc::Sender<Seen>) {
    let (coinb1, coinb2) = coinbase_parts();
    let (s, _) = l.accept().await.unwrap();
    let (rd, wr) = s.into_split();
    let responder = Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(3600)).unwrap();
    let (mut rd, mut wr) = transport::accept(rd, wr, responder, Duration::from_secs(5), 1 << 16).await.unwrap();
    let mut shares = 0;
    while let Ok(mut f) = rd.read_frame().await {
        match f.message().unwrap() {
            AnyMessage::Common(CommonMessages::SetupConnection(_)) => {
                let ok = SetupConnectionSuccess { used_version: 2, flags: 0 };
                wr.push(AnyMessage::Common(CommonMessages::SetupConnectionSuccess(ok))).unwrap();
            }
            AnyMessage::Mining(Mining::OpenExtendedMiningChannel(m)) => {
                assert_eq!((m.user_identity.as_utf8_or_hex().as_str(), m.min_extranonce_size), ("up.user", 2));
                for msg in channel_and_job(m.request_id, &coinb1, &coinb2) {
                    wr.push(msg).unwrap();
                }
            }
            AnyMessage::Mining(Mining::SubmitSharesExtended(m)) => {
                let s = (m.channel_id, m.sequence_number, m.job_id, m.nonce, m.ntime, m.version);
                seen.send((s.0, s.1, s.2, s.3, s.4, s.5, m.extranonce.as_bytes().to_vec())).await.unwrap();
                shares += 1;
                if shares == 1 {
                    let e = SubmitSharesError {
                        channel_id: 9,
                        sequence_number: m.sequence_number,
                        error_code: Str0255::new(b"stale-share").unwrap(),
                    };
                    wr.push(AnyMessage::Mining(Mining::SubmitSharesError(e))).unwrap();
                } else {
                    let ok = SubmitSharesSuccess {
                        channel_id: 9,
                        last_sequence_number: m.sequence_number,
                        new_submits_accepted_count: 1,
                        new_shares_sum: 1,
                    };
                    wr.push(AnyMessage::Mining(Mining::SubmitSharesSuccess(ok))).unwrap();
                }
            }
            _ => {}
        }
        wr.flush().await.unwrap();
    }
}

/// The extended job and SetNewPrevHash become local work under the channel's prefix (miners get
/// 4 bytes of the 8), with BIP320 version rolling; a local share goes up as SubmitSharesExtended
/// with the miner's extranonce part and its whole version; a refusal and an acceptance are
/// counted.
#[tokio::test]
async fn jobs_become_work_and_shares_go_up_with_their_verdicts_counted() {
    let key = AuthorityKey::generate().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = l.local_addr().unwrap().to_string();
    let (seen_tx, mut seen_rx) = mpsc::channel(4);
    tokio::spawn(fake_pool(l, key.clone(), seen_tx));

    let (work_tx, mut work_rx) = watch::channel(None);
    let (share_tx, share_rx) = mpsc::channel(4);
    let (mask_tx, mask_rx) = watch::channel(0);
    let entry = Upstream {
        url,
        auth: "up.user".into(),
        pass: crate::config::Secret::new("x"),
        authority: Some(*key.public()),
        ..Upstream::default()
    };
    let client = UpstreamClient::new(vec![entry], 0x1fff_ffff, work_tx, share_rx, mask_tx);
    let counters = client.counters.clone();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(client.run(stop_rx));
    timeout(Duration::from_secs(10), work_rx.changed()).await.expect("work within 10 s").unwrap();
    let w: std::sync::Arc<Work> = work_rx.borrow_and_update().clone().unwrap();
    assert_eq!(&*w.en1_prefix, &[1, 2, 3, 4]);
    assert_eq!((w.job.coinbase.nonce1_len, w.job.coinbase.nonce2_len), (8, 4));
    assert_eq!((w.job.prev_hash, w.job.nbits, w.job.ntime, w.job.clean), (PREV, 0x207f_ffff, 0x6500_0000, true));
    assert_eq!(w.job.height, 100_000, "BIP34 height read from the coinbase prefix");
    assert_eq!((w.version_mask, *mask_rx.borrow()), (Some(0x1fff_e000), 0x1fff_e000));
    let up = w.upstream.clone().unwrap();
    assert_eq!((&*up.job_id, up.difficulty), ("7", Difficulty::from_target(&crate::difficulty::Target::MAX)));

    let deadline = Instant::now() + Duration::from_secs(10);
    for (i, en2) in ["0000000a0000002a", "0000000a0000002b"].into_iter().enumerate() {
        let share = UpstreamShare {
            job_id: up.job_id.clone(),
            generation: up.generation,
            extranonce2: en2.into(),
            ntime: "65000001".into(),
            nonce: "0000abcd".into(),
            version_bits: Some("00002000".into()),
            version: 0x2000_2000,
            workername: "local.w".into(),
            difficulty: Difficulty::ONE,
        };
        share_tx.send(share).await.unwrap();
        let seen = timeout(deadline - Instant::now(), seen_rx.recv()).await.expect("submit within 10 s").unwrap();
        let en = crate::hex::decode(en2).unwrap();
        assert_eq!(seen, (9, i as u32 + 1, 7, 0xabcd, 0x6500_0001, 0x2000_2000, en));
    }
    while counters.accepted.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the pool's verdicts were not counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((load(&counters.forwarded), load(&counters.rejected), load(&counters.accepted)), (2, 1, 1));
    assert_eq!(load(&counters.connected), 1);
    task.abort();
}

/// A pool that acknowledges valid shares in batches of 3, as SRI's pool_sv2 does (its
/// `share_batch_size`), for its first 6 shares; after those it reads and never answers.
async fn batching_pool(l: tokio::net::TcpListener, key: AuthorityKey) {
    let (coinb1, coinb2) = coinbase_parts();
    let (s, _) = l.accept().await.unwrap();
    let (rd, wr) = s.into_split();
    let responder = Responder::from_authority_kp(key.public(), key.secret(), Duration::from_secs(3600)).unwrap();
    let (mut rd, mut wr) = transport::accept(rd, wr, responder, Duration::from_secs(5), 1 << 16).await.unwrap();
    let mut shares = 0;
    while let Ok(mut f) = rd.read_frame().await {
        match f.message().unwrap() {
            AnyMessage::Common(CommonMessages::SetupConnection(_)) => {
                let ok = SetupConnectionSuccess { used_version: 2, flags: 0 };
                wr.push(AnyMessage::Common(CommonMessages::SetupConnectionSuccess(ok))).unwrap();
            }
            AnyMessage::Mining(Mining::OpenExtendedMiningChannel(m)) => {
                for msg in channel_and_job(m.request_id, &coinb1, &coinb2) {
                    wr.push(msg).unwrap();
                }
            }
            AnyMessage::Mining(Mining::SubmitSharesExtended(m)) => {
                shares += 1;
                if shares % 3 == 0 && shares <= 6 {
                    let ok = SubmitSharesSuccess {
                        channel_id: 9,
                        last_sequence_number: m.sequence_number,
                        new_submits_accepted_count: 3,
                        new_shares_sum: 3,
                    };
                    wr.push(AnyMessage::Mining(Mining::SubmitSharesSuccess(ok))).unwrap();
                }
            }
            _ => {}
        }
        wr.flush().await.unwrap();
    }
}

/// A pool that answers shares in batches is not given up while fewer shares than its batch wait
/// for a verdict, however long (here 2.5 times the silence limit); once a whole batch waits
/// unanswered for the limit, it is.
#[tokio::test]
async fn a_pool_answering_in_batches_is_kept_until_a_whole_batch_waits() {
    let key = AuthorityKey::generate().unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = l.local_addr().unwrap().to_string();
    tokio::spawn(batching_pool(l, key.clone()));
    let (work_tx, mut work_rx) = watch::channel(None);
    let (share_tx, share_rx) = mpsc::channel(16);
    let (mask_tx, _mask_rx) = watch::channel(0);
    let entry = Upstream {
        url,
        auth: "up.user".into(),
        pass: crate::config::Secret::new("x"),
        authority: Some(*key.public()),
        ..Upstream::default()
    };
    let mut client = UpstreamClient::new(vec![entry], 0x1fff_ffff, work_tx, share_rx, mask_tx);
    let limit = Duration::from_secs(1);
    client.silence_limit = limit;
    let counters = client.counters.clone();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(client.run(stop_rx));
    timeout(Duration::from_secs(10), work_rx.changed()).await.expect("work within 10 s").unwrap();
    let up = work_rx.borrow_and_update().clone().unwrap().upstream.clone().unwrap();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let send = |i: u32| {
        let share = UpstreamShare {
            job_id: up.job_id.clone(),
            generation: up.generation,
            extranonce2: format!("{i:016x}"),
            ntime: "65000001".into(),
            nonce: "0000abcd".into(),
            version_bits: None,
            version: 0x2000_0000,
            workername: "local.w".into(),
            difficulty: Difficulty::ONE,
        };
        let tx = share_tx.clone();
        async move { tx.send(share).await.unwrap() }
    };

    // The first batch: three shares, one answer for the three; the proxy learns the batch.
    for i in 0..3 {
        send(i).await;
    }
    wait_for("the first batch's verdict", || load(&counters.accepted) == 3).await;
    // Two shares, then silence for 2.5 times the limit: the pool owes nothing yet.
    for i in 3..5 {
        send(i).await;
    }
    tokio::time::sleep(limit * 5 / 2).await;
    assert_eq!((load(&counters.forwarded), load(&counters.connected)), (5, 1), "the session is still up");
    send(5).await;
    wait_for("the second batch's verdict", || load(&counters.accepted) == 6).await;
    // A whole batch unanswered for the limit: the pool is given up.
    for i in 6..9 {
        send(i).await;
    }
    wait_for("the session given up", || load(&counters.connected) == 0).await;
    assert_eq!(load(&counters.forwarded), 9);
    task.abort();
}

/// Waits (≤ 10 s, polling every 10 ms) until `cond` holds.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
