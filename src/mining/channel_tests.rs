//! The mining core with plain values: difficulty at issue, the stale window, duplicates, vardiff
//! steps, blocks and upstream shares — what the SV1 session tests covered, without a socket.

use std::sync::Arc;

use super::*;
use crate::difficulty::Difficulty;
use crate::mining::vardiff::{VardiffParams, US};
use crate::mining::{UpstreamJob, Work};
use crate::work::job::Job;
use crate::work::merkle::sha256d_header;

const EN1: [u8; 4] = [0, 0, 0, 7];

fn d(s: &str) -> Difficulty {
    s.parse().unwrap()
}

fn params() -> ChannelParams {
    ChannelParams {
        mindiff: d("0.00000001"),
        startdiff: d("0.000001"),
        maxdiff: Difficulty::ZERO,
        version_mask: 0x1fff_e000,
        vardiff: VardiffParams::default(),
    }
}

/// A job on `prev` (one byte repeated) with regtest's nbits (network difficulty ~4.7e-10).
fn work(id: u64, prev: u8, nbits: &str) -> Arc<Work> {
    let p = serde_json::json!([
        "1",
        format!("{:02x}", prev).repeat(32),
        "01000000010000",
        "00000000",
        ["aa".repeat(32)],
        "20000000",
        nbits,
        "504e86b9",
        true
    ]);
    Arc::new(Work::new(Arc::new(Job::from_notify(id, &p, 4, 4).unwrap())))
}

/// A submit on `local_id` whose hash reaches at least `min` and, when `below` is set, stays
/// under it (found by trying nonces; bounded).
fn solve(w: &Work, en1: &[u8], local_id: u64, en2: u32, min: Difficulty, below: Option<Difficulty>) -> Sub {
    let job = &w.job;
    let en2b = en2.to_be_bytes();
    let root = job.merkle_root(en1, &en2b);
    for nonce in 0..1_000_000u32 {
        let h = sha256d_header(&job.header(&root, job.version, job.ntime, nonce));
        let sd = Difficulty::from_hash(&h);
        if sd >= min && below.is_none_or(|b| sd < b) {
            return Sub {
                job_id: format!("{local_id:x}"),
                en2: format!("{en2:08x}"),
                ntime: format!("{:08x}", job.ntime),
                nonce: format!("{nonce:08x}"),
            };
        }
    }
    panic!("no nonce found in 1,000,000");
}

struct Sub {
    job_id: String,
    en2: String,
    ntime: String,
    nonce: String,
}

impl Sub {
    fn submit(&self) -> Submit<'_> {
        Submit {
            job_id: &self.job_id,
            extranonce2: &self.en2,
            ntime: &self.ntime,
            nonce: &self.nonce,
            version_bits: None,
        }
    }
}

fn issued(i: Issued) -> (u64, bool) {
    match i {
        Issued::Job { local_id, clean } => (local_id, clean),
        Issued::AlreadySent => panic!("expected a job"),
    }
}

/// An easy network (nbits of difficulty 1): shares at 0.001 are not blocks.
const MAINNETISH: &str = "1d00ffff";

#[test]
fn a_share_is_judged_at_the_difficulty_its_job_was_issued_at() {
    let mut c = Channel::new(params(), &EN1, 0);
    let w = work(1, 1, MAINNETISH);
    let (old_id, clean) = issued(c.issue(&w, false));
    assert!(clean, "first job on a block is clean");
    assert_eq!(c.issue(&w, false), Issued::AlreadySent, "same job, same difficulty: nothing to send");
    assert_eq!(c.suggest(d("0.0001"), 1), Some(d("0.0001")));
    assert_eq!(c.suggest(d("0.0001"), 2), None, "same wish again: no change");
    let (new_id, clean) = issued(c.issue(&w, true));
    assert_ne!(old_id, new_id, "a new difficulty goes out under a new job id");
    assert!(!clean, "same block: not clean");
    let mut fx = Effects::default();
    // A share at 1e-6..1e-4 on the old id is accepted at 1e-6; the same quality on the new id is low.
    let s = solve(&w, &EN1, old_id, 1, d("0.000001"), Some(d("0.0001")));
    let v = c.submit(&s.submit(), 10, false, &mut fx);
    assert_eq!(v, Verdict { result: Ok(()), diff: d("0.000001") });
    assert_eq!(fx.share.unwrap().diff, d("0.000001"));
    assert!(fx.block.is_none() && fx.upstream.is_none(), "not a block, no upstream");
    let s = solve(&w, &EN1, new_id, 2, d("0.000001"), Some(d("0.0001")));
    let v = c.submit(&s.submit(), 11, false, &mut fx);
    assert!(matches!(v.result, Err(Reject::LowDifficulty { .. })), "{v:?}");
    assert_eq!(v.diff, d("0.0001"));
    let rec = fx.share.unwrap();
    assert!(rec.hash.is_some() && rec.sdiff < d("0.0001") && rec.sdiff >= d("0.000001"), "{rec:?}");
    let t = c.take_tally();
    assert_eq!((t.accepted_n, t.rejected_n, t.accepted, t.rejected), (1, 1, d("0.000001"), d("0.0001")));
    assert!(c.take_tally().is_empty(), "the tally is taken once");
}

#[test]
fn duplicates_and_the_stale_window() {
    let mut c = Channel::new(params(), &EN1, 0);
    let mut fx = Effects::default();
    // Three jobs on block 1, then one on block 2.
    let ids: Vec<u64> = (1..=3).map(|i| issued(c.issue(&work(i, 1, MAINNETISH), false)).0).collect();
    let w3 = work(3, 1, MAINNETISH);
    let on_last = solve(&w3, &EN1, ids[2], 5, d("0.000001"), Some(d("1")));
    assert_eq!(c.submit(&on_last.submit(), 1, false, &mut fx).result, Ok(()));
    assert_eq!(c.submit(&on_last.submit(), 2, false, &mut fx).result, Err(Reject::Duplicate));
    assert!(fx.share.is_some(), "a duplicate is logged against its job");
    let (new_id, clean) = issued(c.issue(&work(4, 2, MAINNETISH), false));
    assert!(clean, "a new block is clean");
    // The last job of block 1 is kept: a new share on it is stale, the old one still a duplicate.
    let late = solve(&w3, &EN1, ids[2], 6, d("0.000001"), Some(d("1")));
    assert_eq!(c.submit(&late.submit(), 3, false, &mut fx).result, Err(Reject::Stale));
    assert_eq!(fx.share.unwrap().workinfoid, 3);
    assert_eq!(c.submit(&on_last.submit(), 4, false, &mut fx).result, Err(Reject::Duplicate));
    // The earlier jobs of block 1 were dropped: stale, still logged against their job and height.
    let w1 = work(1, 1, MAINNETISH);
    let s = solve(&w1, &EN1, ids[0], 7, d("0.000001"), None);
    let v = c.submit(&s.submit(), 5, false, &mut fx);
    assert_eq!(v.result, Err(Reject::Stale));
    let rec = fx.share.unwrap();
    assert_eq!((rec.workinfoid, rec.diff, rec.hash), (1, d("0.000001"), None));
    // An id outside what this channel ever issued (past the last, before the first, not hex, too
    // long) is unknown: an invalid share. One within that range, not held, was ours: stale.
    let cases = [
        (format!("{:x}", new_id + 0x1000), Reject::UnknownJob),
        (format!("{:x}", ids[0] - 1), Reject::UnknownJob),
        ("ffffffffffffffff".into(), Reject::UnknownJob),
        ("1ffffffffffffffff".into(), Reject::UnknownJob),
        ("xyz".into(), Reject::UnknownJob),
        (format!("{:x}", ids[1] + 1), Reject::Stale),
    ];
    for (job_id, want) in cases {
        let sub =
            Submit { job_id: &job_id, extranonce2: "00000000", ntime: "504e86b9", nonce: "0", version_bits: None };
        assert_eq!(c.submit(&sub, 6, false, &mut fx).result, Err(want));
        assert!(fx.share.is_none(), "nothing to log against for {job_id}");
    }
    let t = c.take_tally();
    assert_eq!((t.accepted_n, t.rejected_n), (1, 10));
}

#[test]
fn bad_fields_are_rejected_with_their_reason() {
    let mut c = Channel::new(params(), &EN1, 0);
    let w = work(1, 1, MAINNETISH);
    let (id, _) = issued(c.issue(&w, false));
    let mut fx = Effects::default();
    let job_id = format!("{id:x}");
    let cases: [(&str, &str, &str, Option<&str>, Reject); 5] = [
        ("000000", "504e86b9", "0", None, Reject::BadExtranonce2Length { expected: 4, got: 3 }),
        ("0000000g", "504e86b9", "0", None, Reject::BadHex("extranonce2")),
        ("00000000", "00000001", "0", None, Reject::NtimeOutOfRange),
        ("00000000", "zz", "0", None, Reject::BadHex("ntime")),
        ("00000000", "504e86b9", "0", Some("e0000000"), Reject::VersionOutsideMask),
    ];
    for (en2, ntime, nonce, vb, want) in cases {
        let sub = Submit { job_id: &job_id, extranonce2: en2, ntime, nonce, version_bits: vb };
        assert_eq!(c.submit(&sub, 1, false, &mut fx).result, Err(want));
    }
    assert_eq!(c.negotiate_version_mask(0xffff_ffff), 0x1fff_e000, "the server's mask caps the miner's");
    assert_eq!(c.negotiate_version_mask(0x0000_6000), 0x0000_6000);
}

#[test]
fn vardiff_raises_a_fast_miner_and_the_next_job_has_a_new_id() {
    let mut p = params();
    p.startdiff = d("0.00000001");
    let mut c = Channel::new(p, &EN1, 0);
    let w = work(1, 1, MAINNETISH);
    let (id, _) = issued(c.issue(&w, false));
    let mut fx = Effects::default();
    // 72 shares in 7.2 s: ten a second where 0.3 is the aim.
    let mut retarget = None;
    for i in 0..72u32 {
        let s = solve(&w, &EN1, id, 100 + i, d("0.00000001"), Some(d("1")));
        let v = c.submit(&s.submit(), (i as u64 + 1) * US / 10, false, &mut fx);
        assert_eq!(v.result, Ok(()), "share {i}");
        if let Some(r) = fx.retarget {
            retarget = Some((i, r));
            break;
        }
    }
    let (at, r) = retarget.expect("72 fast shares must retarget");
    assert_eq!(at, 71, "the check comes at the 72nd share");
    // 10 shares/s at 1e-8 aimed at 0.3/s (ckpool's 1-minute rule for a fast climb), 4 digits.
    assert_eq!((r.new, c.difficulty()), (d("0.0000003372"), r.new), "{r:?}");
    let (new_id, _) = issued(c.issue(&w, true));
    assert_ne!(new_id & 0xff, id & 0xff, "new difficulty revision in the id");
    // The network difficulty of the share's job caps a retarget: nbits 20004c2c is difficulty
    // ~0.0000002003 (the rate asks for 0.000000337).
    let tiny = work(2, 1, "20004c2c");
    let cap = tiny.network_diff;
    assert!(cap > d("0.0000002") && cap < d("0.000000201"), "{cap}");
    let mut c = Channel::new(p, &EN1, 0);
    let (id, _) = issued(c.issue(&tiny, false));
    for i in 0..72u32 {
        let s = solve(&tiny, &EN1, id, 500 + i, d("0.00000001"), Some(d("1")));
        assert_eq!(c.submit(&s.submit(), (i as u64 + 1) * US / 10, false, &mut fx).result, Ok(()));
    }
    assert_eq!(c.difficulty(), cap);
    // A quiet miner is lowered at the next work after a retarget interval; never under mindiff.
    assert_eq!(c.idle_check(10 * US, None), None, "not quiet long enough");
    let r = c.idle_check(10 * US + 240 * US, None).expect("quiet for 240 s");
    assert_eq!(r.new, d("0.00000001"));
}

#[test]
fn a_block_candidate_names_its_finder_and_an_upstream_share_carries_the_extranonce() {
    let mut c = Channel::new(params(), &EN1, 0);
    c.set_identity("alice".into(), "alice.rig1".into());
    let job = work(9, 1, "207fffff").job.clone();
    let up =
        UpstreamJob { job_id: "up-7".into(), target: d("0.002").to_target(), difficulty: d("0.002"), generation: 3 };
    let w = Arc::new(Work::proxied(job, Arc::from(&[0xab, 0xcd][..]), up));
    c.set_prefix(&[0xab, 0xcd]);
    assert_eq!(c.en1(), &[0xab, 0xcd, 0, 0, 0, 7]);
    let (id, _) = issued(c.issue(&w, false));
    let mut fx = Effects::default();
    let network = Difficulty::from_target(&w.job.network_target);
    let s = solve(&w, c.en1(), id, 42, network, None);
    let v = c.submit(&s.submit(), 1, true, &mut fx);
    assert_eq!(v.result, Ok(()));
    let b = fx.block.take().expect("a block");
    assert_eq!((&*b.username, &*b.workername, b.en1.as_slice()), ("alice", "alice.rig1", c.en1()));
    assert_eq!(b.en2, 42u32.to_be_bytes());
    let u = fx.upstream.take().expect("a block-meeting share goes upstream");
    assert_eq!((&*u.job_id, u.generation, u.extranonce2.as_str()), ("up-7", 3, "000000070000002a"));
    assert_eq!(u.version_bits, None);
    // Without an upstream, nothing goes up.
    let s = solve(&w, c.en1(), id, 43, network, None);
    c.submit(&s.submit(), 2, false, &mut fx);
    assert!(fx.block.is_some() && fx.upstream.is_none());
}

#[test]
fn a_new_upstream_drops_every_job_and_late_shares_stay_logged() {
    let mut c = Channel::new(params(), &EN1, 0);
    c.set_prefix(&[1]);
    let w = work(1, 1, MAINNETISH);
    let (id, _) = issued(c.issue(&w, false));
    c.switch_prefix(&[2, 2]);
    assert_eq!(c.en1(), &[2, 2, 0, 0, 0, 7]);
    assert_eq!(c.own_en1(), &EN1);
    let mut fx = Effects::default();
    let s = solve(&w, &[1, 0, 0, 0, 7], id, 1, d("0.000001"), None);
    assert_eq!(c.submit(&s.submit(), 1, false, &mut fx).result, Err(Reject::Stale));
    assert_eq!(fx.share.map(|r| r.workinfoid), Some(1));
    // The same work re-issued after the switch is a new job for this channel.
    assert!(matches!(c.issue(&w, false), Issued::Job { .. }));
    c.set_own_en1(&[9, 9, 9, 9]);
    assert_eq!(c.en1(), &[2, 2, 9, 9, 9, 9]);
}

#[test]
fn start_difficulty_from_the_password_is_a_floor_within_limits() {
    let mut p = params();
    p.maxdiff = d("100");
    let mut c = Channel::new(p, &EN1, 0);
    assert_eq!(c.difficulty(), d("0.000001"));
    c.ask_start_difficulty(d("1000"));
    assert_eq!(c.difficulty(), d("100"), "maxdiff caps the wish");
    c.ask_start_difficulty(d("0.000000001"));
    assert_eq!(c.difficulty(), d("0.00000001"), "mindiff floors it");
    assert_eq!(c.limits(None).suggested, Some(d("0.000000001")));
}

#[test]
fn an_upstream_mask_change_holds_for_jobs_sent_after_it() {
    let mut c = Channel::new(params(), &EN1, 0);
    assert!(!c.negotiated_version_rolling());
    assert_eq!(c.negotiate_version_mask(0xffff_ffff), 0x1fff_e000);
    let old = work(1, 1, MAINNETISH);
    let (old_id, _) = issued(c.issue(&old, false));
    assert_eq!(c.allow_version_mask(0x1fff_e000), None, "same grant: nothing to tell");
    assert_eq!(c.allow_version_mask(0x0000_e000), Some(0x0000_e000));
    let new = work(2, 1, MAINNETISH);
    let (new_id, _) = issued(c.issue(&new, false));
    let mut fx = Effects::default();
    // Bits 0x00200000: inside the old mask, outside the new one.
    let with_bits = |w: &Work, id: u64, en2: u32| {
        let job = &w.job;
        let root = job.merkle_root(&EN1, &en2.to_be_bytes());
        let version = job.version | 0x0020_0000;
        let nonce = (0..1_000_000u32)
            .find(|&n| {
                Difficulty::from_hash(&sha256d_header(&job.header(&root, version, job.ntime, n))) >= d("0.000001")
            })
            .unwrap();
        (format!("{id:x}"), format!("{en2:08x}"), format!("{nonce:08x}"))
    };
    let (j, e, n) = with_bits(&old, old_id, 1);
    let sub = Submit { job_id: &j, extranonce2: &e, ntime: "504e86b9", nonce: &n, version_bits: Some("00200000") };
    assert_eq!(c.submit(&sub, 1, false, &mut fx).result, Ok(()), "a job sent before the change keeps the old mask");
    let (j, e, n) = with_bits(&new, new_id, 2);
    let sub = Submit { job_id: &j, extranonce2: &e, ntime: "504e86b9", nonce: &n, version_bits: Some("00200000") };
    assert_eq!(c.submit(&sub, 2, false, &mut fx).result, Err(Reject::VersionOutsideMask));
    // A miner that never negotiated rolls within whatever is granted.
    let mut q = Channel::new(params(), &EN1, 0);
    assert_eq!(q.allow_version_mask(0x0000_e000), Some(0x0000_e000));
    assert_eq!(q.version_mask(), 0x0000_e000);
}

#[test]
fn an_idle_miner_holds_one_job_slot_and_jobs_still_grow_to_the_window() {
    // Memory per idle miner (docs/performance.md): the first job takes one slot, not four.
    let mut c = Channel::new(params(), &EN1, 0);
    c.issue(&work(1, 1, "207fffff"), false);
    assert_eq!((c.jobs.len(), c.jobs.capacity()), (1, 1));
    for id in 2..=40 {
        c.issue(&work(id, 1, "207fffff"), false);
    }
    assert_eq!(c.jobs.len(), JOBS_KEPT);
}
