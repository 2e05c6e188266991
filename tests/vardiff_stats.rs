//! Vardiff and statistics on the real regtest node: a miner sending shares far faster than the
//! target rate is retargeted upward; pool.status and users/<name> carry ckpool's fields with
//! exactly the accepted difficulty the miner sent and its best share; a restarted pool keeps them.
//!
//! On regtest the network difficulty (nbits 207fffff) is 4.66e-10 and caps every session, so
//! the test works below it: mindiff and startdiff 1e-10, a target of 4 shares/s
//! (vardiff_target_interval 0.25 s). The miner sends each share as soon as the last is answered
//! (as fast as the loopback round trip allows), so any machine, however loaded, is far above the band's top
//! (5.33 shares/s at the target interval): the direction of the retarget does not depend on
//! how the shares are spaced in time. Where in the band vardiff settles for a given hashrate is
//! pure arithmetic on given times, shown by tests/vardiff_sim.rs. Each share is solved with
//! `solve` and most are blocks.

mod common;

use std::time::{Duration, Instant};

use ckpool::difficulty::Difficulty;
use common::{pool_config, solve, wait, Client, NodePair, Pool};
use serde_json::{json, Value};

const TARGET_INTERVAL_S: f64 = 0.25;

/// The pool's stratum client, keeping every line and the work in force.
struct Miner {
    c: Client,
    /// Every line received, in order (for the set_difficulty → notify order check).
    seen: Vec<Value>,
    work: Work,
}

impl Miner {
    async fn connect(addr: &str) -> Miner {
        let start = Difficulty::from_units(100);
        Miner {
            c: Client::connect(addr).await,
            seen: Vec::new(),
            work: Work { notify: None, diff: start, pending_diff: start },
        }
    }

    async fn request(&mut self, method: &str, params: Value) -> u64 {
        self.c.request(method, params).await
    }

    /// Next line within `limit` (None on timeout; nothing is lost to it).
    async fn next(&mut self, limit: Duration) -> Option<Value> {
        let v = self.c.read_within(limit).await?;
        self.work.take(&v);
        self.seen.push(v.clone());
        Some(v)
    }

    /// Reads until the reply to `id` (bounded by 20 s), returning it.
    async fn reply(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.next(left).await.unwrap_or_else(|| panic!("no reply to request {id} within 20 s"));
            if v["id"] == json!(id) {
                return v;
            }
        }
    }
}

/// The miner's view of its work: the latest notify and the difficulty in force for it.
struct Work {
    notify: Option<Value>,
    diff: Difficulty,
    pending_diff: Difficulty,
}

impl Work {
    fn take(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("mining.set_difficulty") => {
                self.pending_diff = v["params"][0].to_string().parse().unwrap();
            }
            Some("mining.notify") => {
                self.diff = self.pending_diff;
                self.notify = Some(v.clone());
            }
            _ => {}
        }
    }
}

fn pool_status_text(pool: &Pool) -> String {
    std::fs::read_to_string(pool.logdir.join("pool/pool.status")).expect("pool.status written")
}

fn read_pool_status(pool: &Pool) -> Vec<Value> {
    let text = pool_status_text(pool);
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("pool.status line {l:?}: {e}"))).collect()
}

fn user_text(pool: &Pool, user: &str) -> String {
    std::fs::read_to_string(pool.logdir.join("users").join(user)).expect("users file written")
}

fn read_user(pool: &Pool, user: &str) -> Value {
    let text = user_text(pool, user);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("users/{user} is not JSON: {e}\n{text}"))
}

/// Asserts that `text` is a JSON object whose own keys are exactly `want`, in that order.
fn assert_keys_in_order(text: &str, want: &[&str]) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let mut got: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut sorted = want.to_vec();
    sorted.sort();
    got.sort();
    assert_eq!(got, sorted, "keys of {text}");
    let mut at = 0;
    for k in want {
        let needle = format!("\"{k}\":");
        let i = text[at..].find(&needle).unwrap_or_else(|| panic!("{k} out of order in {text}"));
        at += i + needle.len();
    }
}

fn as_diff(v: &Value) -> Difficulty {
    v.to_string().parse().unwrap_or_else(|e| panic!("{v} is not a difficulty: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vardiff_raises_a_fast_miner_and_stats_files_match_the_shares() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["mindiff"] = json!(0.0000000001);
    cfg["startdiff"] = json!(0.0000000001);
    cfg["vardiff_target_interval"] = json!(TARGET_INTERVAL_S);
    cfg["vardiff_retarget_interval"] = json!(2);
    cfg["stats_interval"] = json!(1);
    cfg["update_interval"] = json!(3600);
    let mut pool = Pool::start(cfg, &[]);

    let mut m = Miner::connect(&pool.addr()).await;
    let id = m.request("mining.subscribe", json!(["vardiff-test/1.0"])).await;
    let r = m.reply(id).await;
    let en1 = r["result"][1].as_str().unwrap().to_string();
    let id = m.request("mining.authorize", json!(["carol.rig7", "x"])).await;
    assert_eq!(m.reply(id).await["result"], json!(true));

    let start = Difficulty::from_units(100); // 1e-10, the start difficulty
    let mut sent_total = Difficulty::ZERO;
    let (mut accepted, mut rejected) = (0u32, 0u32);
    let mut en2 = 0u64;
    let mut diffs_used = Vec::new();
    // The miner runs until what the test checks has happened (the difficulty retargeted at least
    // once and in force, 20 shares accepted); the deadline and the count only bound that wait
    // on a slow machine, they are not what is measured.
    let give_up = Instant::now() + Duration::from_secs(300);
    for sent in 0.. {
        let set_difficulties = m.seen.iter().filter(|v| v["method"] == "mining.set_difficulty").count();
        if set_difficulties >= 2 && accepted >= 20 && m.work.diff > start {
            break;
        }
        assert!(
            Instant::now() < give_up && sent < 100_000,
            "vardiff did not raise the difficulty of a miner sending {sent} shares back to back within 300 s: \
             difficulty {}, {accepted} accepted; log:\n{}",
            m.work.diff,
            pool.log()
        );
        // Take every line already here; wait (bounded) for the first notify.
        // Everything already sent (a zero timeout still takes what is there), and a notify.
        while m.next(Duration::ZERO).await.is_some() {}
        while m.work.notify.is_none() {
            m.next(Duration::from_secs(20)).await.expect("a notify within 20 s");
        }
        let notify = m.work.notify.clone().expect("notify");
        en2 += 1;
        let diff = m.work.diff;
        let submit = solve(&notify, &en1, &format!("{en2:016x}"), &diff.to_string(), false).expect("share");
        let id = m.request("mining.submit", submit).await;
        let reply = m.reply(id).await;
        if reply["result"] == json!(true) {
            accepted += 1;
            sent_total = Difficulty::from_units(sent_total.units() + diff.units());
            diffs_used.push(diff);
        } else {
            // Only a share on a job a block just replaced may be refused.
            assert_eq!(reply["error"][0], json!(21), "unexpected reject: {reply}");
            rejected += 1;
        }
    }
    // Read what is left so the order check sees everything: the session answers requests in
    // order, so once this reply is in, every set_difficulty and notify before it is too.
    let id = m.request("mining.extranonce.subscribe", json!([])).await;
    m.reply(id).await;

    // Vardiff: it moved up, every change was set_difficulty then a notify with a new job id, and
    // no difficulty passed the network's (the cap on regtest).
    let mut job_ids = std::collections::HashSet::new();
    let mut changes = 0;
    let lines: Vec<&Value> = m.seen.iter().filter(|v| v["method"].is_string()).collect();
    for (i, v) in lines.iter().enumerate() {
        if v["method"] == "mining.set_difficulty" {
            changes += 1;
            let next = lines.get(i + 1).unwrap_or_else(|| panic!("set_difficulty {v} is the last line"));
            assert_eq!(next["method"], "mining.notify", "set_difficulty must be followed by a notify");
            assert!(!job_ids.contains(&next["params"][0]), "notify after set_difficulty reuses a job id: {next}");
        }
        if v["method"] == "mining.notify" {
            job_ids.insert(v["params"][0].clone());
        }
    }
    let last = m.work.diff;
    println!(
        "vardiff on regtest: {accepted} accepted, {rejected} stale, {} set_difficulty, difficulties used {:?}, final {last}",
        changes,
        diffs_used.iter().map(|d| d.to_string()).collect::<std::collections::BTreeSet<_>>(),
    );
    for l in pool.log().lines().filter(|l| l.contains("vardiff:")) {
        println!("{l}");
    }
    assert!(changes >= 2, "the start difficulty and at least one retarget");
    assert!(last > start, "the difficulty rose from {start}");
    let network = Difficulty::from_compact(0x207f_ffff).unwrap();
    assert!(diffs_used.iter().all(|d| *d <= network), "a difficulty above the network's {network}: {diffs_used:?}");
    assert!(accepted >= 20, "{accepted} accepted");

    // SIGTERM: the stats are written one last time.
    pool.stop().expect("pool stops");
    let shares = pool.share_lines();
    let good: Vec<&Value> = shares.iter().filter(|l| l["result"] == json!(true)).collect();
    assert_eq!(good.len() as u32, accepted);
    let log_total =
        good.iter().fold(Difficulty::ZERO, |a, l| Difficulty::from_units(a.units() + as_diff(&l["diff"]).units()));
    assert_eq!(log_total, sent_total, "share log diff total");
    let best = good.iter().map(|l| l["sdiff"].as_f64().unwrap()).fold(0.0, f64::max);

    let status_text = pool_status_text(&pool);
    let status_lines: Vec<&str> = status_text.lines().collect();
    assert_eq!(status_lines.len(), 3, "{status_text}");
    assert_keys_in_order(status_lines[0], &["runtime", "lastupdate", "Users", "Workers", "Idle", "Disconnected"]);
    assert_keys_in_order(
        status_lines[1],
        &["hashrate1m", "hashrate5m", "hashrate15m", "hashrate1hr", "hashrate6hr", "hashrate1d", "hashrate7d"],
    );
    assert_keys_in_order(
        status_lines[2],
        &[
            "diff",
            "accepted",
            "rejected",
            "bestshare",
            "SPS1m",
            "SPS5m",
            "SPS15m",
            "SPS1h",
            // ckpool's keys first, then the found blocks' counts (extra keys, issue #14).
            "blocks_found",
            "blocks_accepted",
            "blocks_rejected",
            "blocks_stale",
            "blocks_confirmed",
            "blocks_orphaned",
            "blocks_matured",
        ],
    );
    let status = read_pool_status(&pool);
    assert!(status[1]["hashrate1m"].is_string());
    assert_eq!(as_diff(&status[2]["accepted"]), sent_total, "pool.status accepted");
    assert_eq!(status[2]["bestshare"].as_f64().unwrap(), best, "pool.status bestshare");
    assert!(status[2]["SPS1m"].as_f64().unwrap() > 0.0);

    let text = user_text(&pool, "carol");
    let user = read_user(&pool, "carol");
    let w = &user["worker"][0];
    let (head, worker_text) = text.split_once("\"worker\":").expect("worker array");
    assert_keys_in_order(
        &format!("{head}\"worker\": []}}"),
        &[
            "hashrate1m",
            "hashrate5m",
            "hashrate1hr",
            "hashrate1d",
            "hashrate7d",
            "lastshare",
            "workers",
            "shares",
            "bestshare",
            "bestever",
            "authorised",
            "worker",
        ],
    );
    let wtext =
        worker_text.trim().trim_start_matches('[').trim_end().trim_end_matches('}').trim_end().trim_end_matches(']');
    assert_keys_in_order(
        wtext,
        &[
            "workername",
            "hashrate1m",
            "hashrate5m",
            "hashrate1hr",
            "hashrate1d",
            "hashrate7d",
            "lastshare",
            "shares",
            "bestshare",
            "bestever",
        ],
    );
    assert_eq!(as_diff(&user["shares"]), sent_total, "users/carol shares");
    assert_eq!(user["bestever"].as_f64().unwrap(), best);
    assert_eq!(user["bestshare"].as_f64().unwrap(), best);
    assert_eq!(w["workername"], "carol.rig7");
    assert_eq!(as_diff(&w["shares"]), sent_total);
    assert_eq!(w["bestever"].as_f64().unwrap(), best);
    // The finder's user is in blocks.log.
    let blocks = std::fs::read_to_string(pool.logdir.join("blocks.log")).expect("blocks.log");
    assert!(blocks.lines().any(|l| serde_json::from_str::<Value>(l).unwrap()["username"] == "carol"), "{blocks}");

    // Restart: best-ever figures and users' totals are loaded back and written again.
    let before = std::fs::metadata(pool.logdir.join("users/carol")).unwrap().modified().unwrap();
    pool.spawn(&[]);
    let rewritten = || {
        pool.log().matches("ckpool ready").count() >= 2
            && std::fs::metadata(pool.logdir.join("users/carol")).unwrap().modified().unwrap() > before
    };
    wait::until_or("the restarted pool to rewrite users/carol", Duration::from_secs(60), rewritten, || pool.log())
        .await;
    assert!(pool.log().contains("stats: loaded 1 users and 1 workers"), "{}", pool.log());
    pool.stop().expect("pool stops");
    let status = read_pool_status(&pool);
    assert_eq!(as_diff(&status[2]["accepted"]), sent_total, "accepted after restart");
    assert_eq!(status[2]["bestshare"].as_f64().unwrap(), best, "bestshare after restart");
    let user = read_user(&pool, "carol");
    assert_eq!(as_diff(&user["shares"]), sent_total, "shares after restart");
    assert_eq!(user["bestever"].as_f64().unwrap(), best, "bestever after restart");
    assert_eq!(user["worker"][0]["bestever"].as_f64().unwrap(), best);
    assert_eq!(as_diff(&user["worker"][0]["shares"]), sent_total);
}
