//! PPLNS in the coinbase (`payout_scheme: "pplns"`, docs/payout.md) on Bitcoin Core (regtest,
//! contrib/build-core.sh): four miners with different payout addresses (P2WPKH and P2TR) and
//! share difficulties submit shares; the blocks found pay each exactly the part worked out by
//! hand from those shares; a miner below the smallest output is carried and paid by the next
//! block; the window survives a restart of the pool.
//!
//! Each miner mines on its own listener whose difficulty is pinned (mindiff = startdiff =
//! maxdiff), so a share's weight is known: 1e-12 difficulty is one unit of the window. The
//! network difficulty of regtest is 465 units, the window (`pplns_window` 1) as long: the shares
//! here never fill it. The shares are below the network's difficulty, so none is a block until a
//! block-meeting share is solved on purpose.

mod common;

use std::time::Duration;

use bitcoin::key::Secp256k1;
use bitcoin::{CompressedPublicKey, ScriptBuf, Transaction};
use ckpool::sv2::client::{self as sv2client, Event, ExtendedJob, Sv2Client, REQUIRES_VERSION_ROLLING};
use common::core_node::{regtest_key, CoreNode};
use common::{solve, solve_not_block, Client, Pool};
use serde_json::{json, Value};

/// One miner: its payout script, its connection, its extranonce1, its difficulty and the
/// extranonce2 of its next share.
struct Miner {
    name: &'static str,
    script: ScriptBuf,
    client: Client,
    en1: String,
    diff: &'static str,
    next: u64,
}

impl Miner {
    async fn connect(name: &'static str, port: u16, address: &str, script: ScriptBuf, diff: &'static str) -> Miner {
        let mut client = Client::connect(&format!("127.0.0.1:{port}")).await;
        let (en1, _) = client.handshake(&format!("{address}.{name}")).await;
        Miner { name, script, client, en1, diff, next: 1 }
    }

    /// The newest notify (earlier ones skipped), reading for a moment.
    async fn newest_notify(&mut self) -> Value {
        let mut last = self.client.notification("mining.notify").await;
        while let Some(v) = self.client.read_within(Duration::from_millis(300)).await {
            if v["method"] == json!("mining.notify") {
                last = v;
            }
        }
        last
    }

    /// Submits `n` shares that are not blocks, each accepted.
    async fn shares(&mut self, n: usize) {
        for _ in 0..n {
            let notify = self.newest_notify().await;
            let en2 = format!("{:016x}", self.next);
            self.next += 1;
            let submit =
                solve_not_block(&notify, &self.en1, &en2, self.diff).expect("a share below the network target");
            let id = self.client.request("mining.submit", submit).await;
            let r = self.client.reply(id).await;
            assert_eq!(r["result"], json!(true), "{}: share refused: {r}", self.name);
        }
    }

    /// Reads notifies until one whose coinbase pays exactly `outputs` (then the witness
    /// commitment); returns it. Bounded: 60 notifies (the pool sends one a second here).
    async fn notify_paying(&mut self, outputs: &[(ScriptBuf, u64)], pool: &Pool) -> Value {
        let mut seen = Vec::new();
        for _ in 0..60 {
            let n = self.client.notification("mining.notify").await;
            let paid = coinbase_outputs(&n, &self.en1);
            if paid.len() == outputs.len() + 1 && paid[..outputs.len()] == *outputs {
                return n;
            }
            seen = paid;
        }
        panic!("{}: no notify paid {outputs:?}; the last paid {seen:?}\npool log:\n{}", self.name, pool.log());
    }

    /// Solves and submits a block-meeting share on `notify`; returns the block's hash once the
    /// node's tip is it.
    async fn find_block(&mut self, notify: &Value, node: &CoreNode, pool: &Pool) -> String {
        let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
        let en2 = format!("{:016x}", self.next);
        self.next += 1;
        let submit = solve(notify, &self.en1, &en2, self.diff, true).expect("a block-meeting share");
        let id = self.client.request("mining.submit", submit).await;
        let r = self.client.reply(id).await;
        assert_eq!(r["result"], json!(true), "{}: block share refused: {r}", self.name);
        node.wait_tip_not(&tip, Duration::from_secs(30), || format!("pool log:\n{}", pool.log())).await
    }
}

/// The outputs of the coinbase a notify describes (extranonce2 zero).
fn coinbase_outputs(notify: &Value, en1: &str) -> Vec<(ScriptBuf, u64)> {
    let p = &notify["params"];
    let hex = format!("{}{en1}{}{}", p[2].as_str().unwrap(), "0".repeat(16), p[3].as_str().unwrap());
    let tx: Transaction = bitcoin::consensus::encode::deserialize(&ckpool::hex::decode(&hex).unwrap()).unwrap();
    tx.output.iter().map(|o| (o.script_pubkey.clone(), o.value.to_sat())).collect()
}

/// A PPLNS pool on `node` paying `pool_addr`, with one listener per difficulty in `diffs`, each
/// pinned (mindiff = startdiff = maxdiff), and a window of one network difficulty.
fn pplns_config(node: &CoreNode, pool_addr: &str, diffs: &[&str]) -> Value {
    let mut cfg = node.pool_config(pool_addr);
    let pinned = |d: &str| {
        let d = d.parse::<f64>().unwrap();
        json!({"url": "127.0.0.1:0", "mindiff": d, "startdiff": d, "maxdiff": d})
    };
    cfg["serverurl"] = json!(diffs.iter().map(|d| pinned(d)).collect::<Vec<_>>());
    cfg["mindiff"] = json!(0.000000000001);
    cfg["startdiff"] = json!(0.000000000001);
    cfg["payout_scheme"] = json!("pplns");
    cfg["pplns_window"] = json!(1);
    cfg
}

/// `floor(d × w / total)`, as docs/payout.md says.
fn part(d: u64, w: u128, total: u128) -> u64 {
    (d as u128 * w / total) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pplns_pays_each_miner_its_part_of_the_window_exactly() {
    let node = CoreNode::start(&[]).await;
    let secp = Secp256k1::new();
    let wpkh = |n: u8| {
        ScriptBuf::new_p2wpkh(&CompressedPublicKey::from_private_key(&secp, &regtest_key(n)).unwrap().wpubkey_hash())
    };
    let pool_addr = node.derive_address(&format!("wpkh({})", regtest_key(20).to_wif())).await;
    let pool_script = wpkh(20);
    node.generate_to(1, &pool_addr).await;

    let tr_key = regtest_key(22);
    let (xonly, _) = CompressedPublicKey::from_private_key(&secp, &tr_key).unwrap().0.x_only_public_key();
    let addr = |desc: String| {
        let node = &node;
        async move { node.derive_address(&desc).await }
    };
    let (a_addr, b_addr, c_addr, d_addr) = (
        addr(format!("wpkh({})", regtest_key(21).to_wif())).await,
        addr(format!("tr({})", tr_key.to_wif())).await,
        addr(format!("wpkh({})", regtest_key(23).to_wif())).await,
        addr(format!("wpkh({})", regtest_key(24).to_wif())).await,
    );
    let b_script = ScriptBuf::new_p2tr(&secp, xonly, None);

    // Difficulty units (1e-12) per share: A 30, B 20, C 10, D 1.
    let diffs = ["0.00000000003", "0.00000000002", "0.00000000001", "0.000000000001"];
    let mut cfg = pplns_config(&node, &pool_addr, &diffs);
    cfg["pool_fee"] = json!(1);
    cfg["pplns_min_output"] = json!(100_000_000u64);
    // A template a second: the coinbase follows the window within a second whatever the
    // rebuild threshold does.
    cfg["update_interval"] = json!(1);
    let mut pool = Pool::start(cfg, &[]);
    let ports = pool.listener_ports();
    assert_eq!(ports.len(), 4, "{}", pool.log());
    let mut a = Miner::connect("a", ports[0], &a_addr, wpkh(21), diffs[0]).await;
    let mut b = Miner::connect("b", ports[1], &b_addr, b_script.clone(), diffs[1]).await;
    let mut c = Miner::connect("c", ports[2], &c_addr, wpkh(23), diffs[2]).await;
    let mut d = Miner::connect("d", ports[3], &d_addr, wpkh(24), diffs[3]).await;

    // A username that is no address of this chain is refused.
    let mut bad = Client::connect(&format!("127.0.0.1:{}", ports[0])).await;
    bad.request("mining.subscribe", json!(["t/1"])).await;
    let id = bad.request("mining.authorize", json!(["not-an-address.rig", "x"])).await;
    assert_eq!(bad.reply(id).await["result"], json!(false));

    // D first: the coinbase awaited below pays the same with or without D (it is carried), so
    // D's share must be in the window before the others' shares that coinbase depends on.
    d.shares(1).await; // 1
    a.shares(2).await; // 60
    b.shares(2).await; // 40
    c.shares(3).await; // 30

    // Block 1: value 50 BTC, 1 % fee; D's part, floor(49.5e8 / 131) = 37,786,259 sat, is below
    // the smallest output (1 BTC): D is carried and A, B, C share the block by 60 : 40 : 30.
    let value = 5_000_000_000u64;
    let fee = value / 100;
    let dd = value - fee;
    assert!(part(dd, 1, 131) < 100_000_000);
    let (pa, pb, pc) = (part(dd, 60, 130), part(dd, 40, 130), part(dd, 30, 130));
    assert_eq!((pa, pb, pc), (2_284_615_384, 1_523_076_923, 1_142_307_692), "docs/payout.md's example");
    let pool_part = value - pa - pb - pc;
    assert_eq!(pool_part, 50_000_001, "the fee and a remainder of one satoshi");
    let expect1 =
        vec![(a.script.clone(), pa), (b.script.clone(), pb), (c.script.clone(), pc), (pool_script.clone(), pool_part)];
    let notify = a.notify_paying(&expect1, &pool).await;
    let hash1 = a.find_block(&notify, &node, &pool).await;
    let cb = &node.block(&hash1).await.txdata[0];
    let outs: Vec<(ScriptBuf, u64)> = cb.output.iter().map(|o| (o.script_pubkey.clone(), o.value.to_sat())).collect();
    assert_eq!(outs[..4], expect1[..], "block 1's coinbase");
    assert!(outs[4].0.as_bytes().starts_with(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]), "witness commitment");
    pool.wait_log("pplns: 1 miner(s) this block does not pay keep their credit", Duration::from_secs(10));

    // D mines 3 more units and C one more share (10): the window is A 90 (its block share
    // counts), B 40, C 40, D 4 (its carried unit and three new ones): D's part is now above the
    // smallest output and block 2 pays all four.
    d.shares(3).await;
    c.shares(1).await;
    let total = 90 + 40 + 40 + 4;
    let parts = [part(dd, 90, total), part(dd, 40, total), part(dd, 40, total), part(dd, 4, total)];
    assert!(parts[3] >= 100_000_000);
    let paid: u64 = parts.iter().sum();
    // Equal parts (B and C) in the order of their scripts.
    let (first, second) = if b.script < c.script { (&b.script, &c.script) } else { (&c.script, &b.script) };
    let expect2 = vec![
        (a.script.clone(), parts[0]),
        (first.clone(), parts[1]),
        (second.clone(), parts[2]),
        (d.script.clone(), parts[3]),
        (pool_script.clone(), value - paid),
    ];
    let notify = c.notify_paying(&expect2, &pool).await;
    let hash2 = c.find_block(&notify, &node, &pool).await;
    let cb = &node.block(&hash2).await.txdata[0];
    let outs: Vec<(ScriptBuf, u64)> = cb.output.iter().map(|o| (o.script_pubkey.clone(), o.value.to_sat())).collect();
    assert_eq!(outs[..5], expect2[..], "block 2's coinbase pays the carried miner");
    assert_eq!(outs.iter().map(|o| o.1).sum::<u64>(), value);

    // The window survives a restart: rebuilt from the share log (C's block share counts: 50).
    drop((a, b, d));
    drop(c);
    pool.stop();
    // `ckpool pplns` derives the same parts from the share log (the pool stopped: nothing moves).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["pplns", "--json", "-c", pool.config_path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sats: Vec<u64> = audit["paid"].as_array().unwrap().iter().map(|p| p["sat"].as_u64().unwrap()).collect();
    let (t, dd3) = (90 + 40 + 50 + 4, dd);
    assert_eq!(sats, vec![part(dd3, 90, t), part(dd3, 50, t), part(dd3, 40, t), part(dd3, 4, t)], "{audit}");
    assert_eq!(audit["paid"][3]["address"], json!(d_addr), "{audit}");
    assert_eq!(audit["window_total"], json!("0.000000000184"), "{audit}");
    // The window was read from the snapshot written at the stop.
    assert!(pool.log().contains("pplns: window snapshot (at stop) written"), "{}", pool.log());

    // `ckpool pplns --height`: each found block's coinbase checked against the window rebuilt
    // from the share log as it stood when that coinbase was built (and the carries then).
    let audit_block = |height: u64| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckpool"))
            .args(["pplns", "--json", "--height", &height.to_string(), "-c", pool.config_path.to_str().unwrap()])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let height_of = |hash: &str| {
        let node = &node;
        let hash = hash.to_string();
        async move { node.call("getblock", json!([hash, 1])).await["height"].as_u64().unwrap() }
    };
    let (h1, h2) = (height_of(&hash1).await, height_of(&hash2).await);
    let (ok, out, err) = audit_block(h1);
    assert!(ok, "{out}\n{err}");
    let a1: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&a1["hash"], &a1["match"]), (&json!(hash1), &json!(true)), "{a1}");
    let expected: Vec<u64> =
        a1["outputs"].as_array().unwrap().iter().map(|o| o["expected_sat"].as_u64().unwrap()).collect();
    assert_eq!(expected, vec![pa, pb, pc, pool_part], "{a1}");
    let d1 = a1["payees"].as_array().unwrap().iter().find(|p| p["address"] == json!(d_addr)).unwrap();
    assert_eq!(
        (&d1["shares"], &d1["weight"], &d1["weight_match"]),
        (&json!(1), &json!("0.000000000001"), &json!(true))
    );
    let (ok, out, err) = audit_block(h2);
    assert!(ok, "{out}\n{err}");
    let a2: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(a2["match"], json!(true), "{a2}");
    assert_eq!(a2["outputs"].as_array().unwrap().len(), 5, "{a2}");
    // D's carried unit (block 1) and its three new shares; every weight as the pool recorded it.
    let d2 = a2["payees"].as_array().unwrap().iter().find(|p| p["address"] == json!(d_addr)).unwrap();
    assert_eq!((&d2["carried_weight"], &d2["weight"]), (&json!("0.000000000001"), &json!("0.000000000004")), "{a2}");
    assert!(a2["payees"].as_array().unwrap().iter().all(|p| p["weight_match"] == json!(true)), "{a2}");
    // A share the pool never credited, written into the share log at block 2's cut (A's: A was
    // never carried): the audit no longer matches the coinbase and says so (exit status 1,
    // MISMATCH per output).
    let forged = format!(
        "{{\"diff\":0.00000000005,\"result\":true,\"createdate\":\"{}\",\"username\":\"{a_addr}\",\"workername\":\"{a_addr}.x\"}}\n",
        a2["cut"].as_str().unwrap()
    );
    let forged_file = pool.logdir.join(format!("{h2:08x}")).join("forged.sharelog");
    std::fs::write(&forged_file, forged).unwrap();
    let (ok, out, _) = audit_block(h2);
    assert!(!ok, "{out}");
    let bad: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(bad["match"], json!(false), "{bad}");
    let a3 = bad["payees"].as_array().unwrap().iter().find(|p| p["address"] == json!(a_addr)).unwrap();
    assert_eq!((&a3["weight"], &a3["weight_match"]), (&json!("0.00000000014"), &json!(false)), "{bad}");
    assert!(bad["outputs"].as_array().unwrap().iter().any(|o| o["match"] == json!(false)), "{bad}");
    std::fs::remove_file(&forged_file).unwrap();
    // A block this pool did not find is not audited as if it had.
    let (ok, _, err) = audit_block(h1 - 1);
    assert!(!ok && err.contains("this pool did not find it"), "{err}");
    pool.spawn(&[]);
    pool.wait_log("pplns: window rebuilt from the snapshot of", Duration::from_secs(10));
    let ports = pool.listener_ports();
    let mut a = Miner::connect("a", ports[ports.len() - 4], &a_addr, wpkh(21), diffs[0]).await;
    let total = 90 + 40 + 50 + 4;
    let parts = [part(dd, 90, total), part(dd, 50, total), part(dd, 40, total), part(dd, 4, total)];
    let paid: u64 = parts.iter().sum();
    let expect3 = vec![
        (a.script.clone(), parts[0]),
        (wpkh(23), parts[1]),
        (b_script, parts[2]),
        (wpkh(24), parts[3]),
        (pool_script, value - paid),
    ];
    a.notify_paying(&expect3, &pool).await;
}

/// More payees than fit: with `coinbase_max` 230 bytes, two P2WPKH outputs fit beside the pool's
/// output and the witness commitment. The two largest parts are paid, by their weights among
/// themselves, the third is carried, and Core accepts the block, whose coinbase stays in bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_with_more_payees_than_fit_pays_the_largest_within_the_bound() {
    let node = CoreNode::start(&[]).await;
    let secp = Secp256k1::new();
    let wpkh = |n: u8| {
        ScriptBuf::new_p2wpkh(&CompressedPublicKey::from_private_key(&secp, &regtest_key(n)).unwrap().wpubkey_hash())
    };
    let pool_addr = node.derive_address(&format!("wpkh({})", regtest_key(30).to_wif())).await;
    node.generate_to(1, &pool_addr).await;
    let mut addrs = Vec::new();
    for k in [31u8, 32, 33] {
        addrs.push(node.derive_address(&format!("wpkh({})", regtest_key(k).to_wif())).await);
    }
    let diffs = ["0.00000000003", "0.00000000002", "0.00000000001"];
    let mut cfg = pplns_config(&node, &pool_addr, &diffs);
    cfg["pplns_min_output"] = json!(546);
    cfg["coinbase_max"] = json!(230);
    cfg["pool_fee"] = json!(1);
    cfg["update_interval"] = json!(1);
    let mut pool = Pool::start(cfg, &[]);
    let ports = pool.listener_ports();
    let mut a = Miner::connect("a", ports[0], &addrs[0], wpkh(31), diffs[0]).await;
    let mut b = Miner::connect("b", ports[1], &addrs[1], wpkh(32), diffs[1]).await;
    let mut c = Miner::connect("c", ports[2], &addrs[2], wpkh(33), diffs[2]).await;
    c.shares(1).await; // 10: the smallest part, carried
    a.shares(1).await; // 30
    b.shares(1).await; // 20
    let value = 5_000_000_000u64;
    let dd = value - value / 100;
    let (pa, pb) = (part(dd, 30, 50), part(dd, 20, 50));
    let expect = vec![(a.script.clone(), pa), (b.script.clone(), pb), (wpkh(30), value - pa - pb)];
    let notify = a.notify_paying(&expect, &pool).await;
    let hash = a.find_block(&notify, &node, &pool).await;
    let block = node.block(&hash).await;
    let cb = &block.txdata[0];
    assert!(cb.base_size() <= 230, "coinbase of {} bytes", cb.base_size());
    let outs: Vec<(ScriptBuf, u64)> = cb.output.iter().map(|o| (o.script_pubkey.clone(), o.value.to_sat())).collect();
    assert_eq!(outs[..3], expect[..], "the two largest parts, the pool's output");
    assert_eq!(outs.len(), 4, "and the witness commitment");
    pool.wait_log("pplns: 1 miner(s) this block does not pay keep their credit", Duration::from_secs(10));
    drop(c);
}

/// A miner over Stratum V2 (`sv2url`): one connection, one channel (extended or standard), the
/// newest job and prevhash it was sent.
struct Sv2Miner {
    c: Sv2Client,
    channel: u32,
    /// The channel's target (little-endian, as SV2 sends it).
    target: [u8; 32],
    prefix: Vec<u8>,
    /// Extended: the newest job; standard: `None` (its jobs come as `std_job`).
    job: Option<ExtendedJob>,
    std_job: Option<(u32, u32, [u8; 32])>,
    /// prev hash, its min ntime, nbits.
    prev: Option<([u8; 32], u32, u32)>,
    seq: u32,
    nonce: u32,
    /// The pool's log, shown when a message does not come.
    log: std::path::PathBuf,
}

const EN2: usize = 8;

impl Sv2Miner {
    async fn open(pool: &Pool, sock: std::net::SocketAddr, key: &[u8; 32], user: &str, extended: bool) -> Sv2Miner {
        let mut c = Sv2Client::connect(sock, key, REQUIRES_VERSION_ROLLING).await.unwrap();
        let rid = if extended {
            c.open_extended(user, 0.5, EN2 as u16).await.unwrap()
        } else {
            c.open_standard(user, 0.5, [0xff; 32]).await.unwrap()
        };
        let mut m = Sv2Miner {
            c,
            channel: 0,
            target: [0; 32],
            prefix: vec![],
            job: None,
            std_job: None,
            prev: None,
            seq: 0,
            nonce: 0,
            log: pool.log_path(),
        };
        let mut seen = Vec::new();
        for _ in 0..20 {
            let ev = m.event().await;
            seen.push(format!("{ev:?}"));
            match ev {
                Event::ExtendedOpened { request_id, channel, target, extranonce_prefix, .. }
                | Event::StandardOpened { request_id, channel, target, extranonce_prefix }
                    if request_id == rid =>
                {
                    (m.channel, m.target, m.prefix) = (channel, target, extranonce_prefix)
                }
                _ => {}
            }
            if m.channel != 0 && m.prev.is_some() && (m.job.is_some() || m.std_job.is_some()) {
                return m;
            }
        }
        panic!("{user}: no channel, job and prevhash: {seen:?}");
    }

    /// The next event (≤ 20 s), jobs and prevhashes kept.
    async fn event(&mut self) -> Event {
        let ev = tokio::time::timeout(Duration::from_secs(20), self.c.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no sv2 message within 20 s on channel {}; pool log:\n{}",
                    self.channel,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                )
            })
            .expect("the sv2 connection");
        match &ev {
            Event::ExtendedJob(j) => self.job = Some(j.clone()),
            Event::StandardJob { job_id, version, merkle_root, .. } => {
                self.std_job = Some((*job_id, *version, *merkle_root))
            }
            Event::PrevHash { prev_hash, min_ntime, nbits, .. } => self.prev = Some((*prev_hash, *min_ntime, *nbits)),
            _ => {}
        }
        ev
    }

    /// Solves and submits one share on the newest job: a block (`block`) or a share that is not
    /// one. Waits for its answer and returns it.
    async fn submit(&mut self, block: bool) -> Event {
        let (prev, ntime, nbits) = self.prev.unwrap();
        self.seq += 1;
        let en2 = (self.seq as u64).to_be_bytes();
        let (job_id, version, root, ntime) = match &self.job {
            Some(j) => {
                let mut en = self.prefix.clone();
                en.extend_from_slice(&en2);
                (j.job_id, j.version, j.merkle_root(&en), j.min_ntime.unwrap_or(ntime))
            }
            None => {
                let (id, v, root) = self.std_job.unwrap();
                (id, v, root, ntime)
            }
        };
        let share = ckpool::sv2::jobs::target_from_le(&self.target);
        let net = ckpool::difficulty::Target::from_compact(nbits).unwrap();
        // From past the last nonce: a standard channel has no extranonce to roll.
        let nonce = (self.nonce..self.nonce + 50_000_000)
            .find(|n| {
                let h =
                    ckpool::work::merkle::sha256d_header(&sv2client::header(version, &prev, &root, ntime, nbits, *n));
                share.is_met_by(&h) && net.is_met_by(&h) == block
            })
            .unwrap_or_else(|| {
                panic!("no nonce: target {} nbits {nbits:08x} block {block}", ckpool::hex::encode(&self.target))
            });
        self.nonce = nonce + 1;
        if self.job.is_some() {
            self.c.push_extended(self.channel, self.seq, job_id, nonce, ntime, version, &en2).unwrap();
        } else {
            self.c.push_standard(self.channel, self.seq, job_id, nonce, ntime, version).unwrap();
        }
        self.c.flush().await.unwrap();
        for _ in 0..50 {
            match self.event().await {
                ev @ Event::Accepted { last_seq, .. } if last_seq == self.seq => return ev,
                ev @ Event::Rejected { seq, .. } if seq == self.seq => return ev,
                _ => {}
            }
        }
        panic!("no answer to share {}", self.seq);
    }

    /// Reads until a job whose coinbase pays exactly `outputs` (then the witness commitment).
    /// Bounded: 60 messages (a template a second here).
    async fn job_paying(&mut self, outputs: &[(ScriptBuf, u64)], pool: &Pool) {
        let mut seen = Vec::new();
        for _ in 0..60 {
            if let Some(j) = &self.job {
                let mut tx = j.coinbase_prefix.clone();
                tx.extend_from_slice(&self.prefix);
                tx.extend_from_slice(&[0; EN2]);
                tx.extend_from_slice(&j.coinbase_suffix);
                let tx: Transaction = bitcoin::consensus::encode::deserialize(&tx).unwrap();
                let paid: Vec<(ScriptBuf, u64)> =
                    tx.output.iter().map(|o| (o.script_pubkey.clone(), o.value.to_sat())).collect();
                if paid.len() == outputs.len() + 1 && paid[..outputs.len()] == *outputs {
                    return;
                }
                seen = paid;
            }
            self.event().await;
        }
        panic!("no sv2 job paid {outputs:?}; the last paid {seen:?}\npool log:\n{}", pool.log());
    }
}

/// Each payout username's accepted share difficulty in the share log, in 1e-12 units.
fn share_log_weights(pool: &Pool) -> std::collections::BTreeMap<String, u128> {
    let mut out = std::collections::BTreeMap::new();
    for d in std::fs::read_dir(&pool.logdir).unwrap().flatten().filter(|d| d.path().is_dir()) {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            if f.path().extension().is_some_and(|e| e == "sharelog") {
                for line in std::fs::read_to_string(f.path()).unwrap().lines() {
                    if let Some(a) = ckpool::log::sharelog::parse_accepted(line) {
                        *out.entry(a.username).or_insert(0) += a.diff.units();
                    }
                }
            }
        }
    }
    out
}

/// PPLNS payees mining over Stratum V2 (an extended and a standard channel, each on its own
/// connection) are paid in the block's coinbase exactly as the share log says: the weights are
/// summed from the share-log lines, the parts worked out by hand, and the block Core accepts
/// (found on the extended channel's job) pays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sv2_payees_are_paid_as_the_share_log_says() {
    let node = CoreNode::start(&[]).await;
    let secp = Secp256k1::new();
    let pool_addr = node.derive_address(&format!("wpkh({})", regtest_key(40).to_wif())).await;
    let pool_script =
        ScriptBuf::new_p2wpkh(&CompressedPublicKey::from_private_key(&secp, &regtest_key(40)).unwrap().wpubkey_hash());
    node.generate_to(1, &pool_addr).await;
    let p_addr = node.derive_address(&format!("wpkh({})", regtest_key(41).to_wif())).await;
    let q_addr = node.derive_address(&format!("tr({})", regtest_key(42).to_wif())).await;
    let p_script =
        ScriptBuf::new_p2wpkh(&CompressedPublicKey::from_private_key(&secp, &regtest_key(41)).unwrap().wpubkey_hash());
    let (xonly, _) = CompressedPublicKey::from_private_key(&secp, &regtest_key(42)).unwrap().0.x_only_public_key();
    let q_script = ScriptBuf::new_p2tr(&secp, xonly, None);

    // The miners give no usable nominal hashrate (below 1 H/s): their channels start below
    // regtest's network difficulty. A window of 100 network difficulties holds every share.
    let mut cfg = pplns_config(&node, &pool_addr, &["0.00000000001"]);
    cfg["pplns_window"] = json!(100);
    cfg["pool_fee"] = json!(1);
    cfg["update_interval"] = json!(1);
    cfg["sv2url"] = json!("127.0.0.1:0");
    let keydir = tempfile::tempdir().unwrap();
    cfg["sv2_authority_key"] = json!(keydir.path().join("sv2.key").display().to_string());
    let pool = Pool::start(cfg, &[]);
    let log = pool.log();
    let line = log.lines().find(|l| l.contains("listening for Stratum V2 miners on")).expect("sv2 listening line");
    let (addr, url) = line.split("listening for Stratum V2 miners on ").nth(1).unwrap().split_once(": ").unwrap();
    let key = ckpool::sv2::keys::parse_public(url.trim().rsplit('/').next().unwrap()).unwrap();
    let sock: std::net::SocketAddr = addr.parse().unwrap();

    let mut p = Sv2Miner::open(&pool, sock, &key, &format!("{p_addr}.ext"), true).await;
    let mut q = Sv2Miner::open(&pool, sock, &key, &format!("{q_addr}.std"), false).await;
    for first in [true, true, true, false, false] {
        let ev = if first { p.submit(false).await } else { q.submit(false).await };
        assert!(matches!(ev, Event::Accepted { .. }), "{ev:?}\n{}", pool.log());
    }
    // The weights as the share log records them (3 and 2 shares at the channels' difficulty).
    let both = || Some(share_log_weights(&pool)).filter(|w| w.contains_key(&p_addr) && w.contains_key(&q_addr));
    let w = common::wait::until("the five shares in the share log", Duration::from_secs(20), both).await;
    assert_eq!(w[&p_addr] * 2, w[&q_addr] * 3, "both channels at one difficulty: {w:?}");
    let value = 5_000_000_000u64;
    let dd = value - value / 100;
    let total = w[&p_addr] + w[&q_addr];
    let (pp, pq) = (part(dd, w[&p_addr], total), part(dd, w[&q_addr], total));
    let expect = vec![(p_script.clone(), pp), (q_script.clone(), pq), (pool_script, value - pp - pq)];
    p.job_paying(&expect, &pool).await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    assert!(matches!(p.submit(true).await, Event::Accepted { .. }), "{}", pool.log());
    let hash = node.wait_tip_not(&tip, Duration::from_secs(30), || format!("pool log:\n{}", pool.log())).await;
    let cb = &node.block(&hash).await.txdata[0];
    let outs: Vec<(ScriptBuf, u64)> = cb.output.iter().map(|o| (o.script_pubkey.clone(), o.value.to_sat())).collect();
    assert_eq!(outs[..3], expect[..], "the block's coinbase pays the SV2 payees by the share log");
    assert_eq!(outs.iter().map(|o| o.1).sum::<u64>(), value);
}
