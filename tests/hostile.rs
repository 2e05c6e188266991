//! Issue 32: hostile miners on a real node. Each case says what it sends. In every case the
//! pool's resident memory and open descriptors (read from /proc) stay within a stated bound, an
//! honest miner connected throughout has its shares accepted (and at the end a block it finds is
//! accepted by the node), and no operator-log line can be forged by what miners send.

mod common;

use std::time::Duration;

use common::{pool_config, solve, solve_not_block, wait, Client, NodePair, Pool};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident memory the pool may gain during an attack (generous: a noisy machine, allocator
/// slack). An unbounded book or queue grows well past it under these floods.
const RSS_SLACK_KB: u64 = 96 * 1024;
/// Descriptors the pool may hold beyond its baseline plus the connections a case keeps open.
const FD_SLACK: usize = 64;

/// The pool's resident memory (kB) and open descriptors, from /proc.
fn usage(pool: &Pool) -> (u64, usize) {
    let pid = pool.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    (rss, fds)
}

/// Asserts the pool is within `base` plus the slack (and `held` connections the case keeps open).
fn assert_bounded(pool: &Pool, base: (u64, usize), held: usize, case: &str) {
    let (rss, fds) = usage(pool);
    println!("{case}: RSS {rss} kB (baseline {} kB), descriptors {fds} (baseline {})", base.0, base.1);
    assert!(rss <= base.0 + RSS_SLACK_KB, "{case}: RSS {rss} kB over {} + {RSS_SLACK_KB} kB", base.0);
    assert!(fds <= base.1 + held + FD_SLACK, "{case}: {fds} descriptors over {} + {held} + {FD_SLACK}", base.1);
}

/// Every operator-log line starts with its timestamp: nothing a miner sent began a line.
fn assert_log_unforged(pool: &Pool) {
    let log = pool.log();
    for l in log.lines() {
        assert!(l.as_bytes().first().is_some_and(u8::is_ascii_digit), "a log line not written by the pool: {l:?}");
        assert!(!l.contains('\u{2028}') && !l.contains('\u{2029}') && !l.contains('\r'), "raw separator in {l:?}");
        assert!(!l.chars().any(|c| c.is_control() && c != '\t'), "raw control character in {l:?}");
    }
}

/// A pool on `nodes.a` at a fixed difficulty below the network's (so that a share is not a
/// block unless the test asks for one), with `extra` keys.
async fn start_pool(nodes: &NodePair, extra: Value) -> Pool {
    let address = nodes.a.new_address().await;
    let mut cfg = pool_config(&nodes.a, &address).await;
    for k in ["mindiff", "startdiff", "maxdiff"] {
        cfg[k] = json!(1e-10);
    }
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    Pool::start(cfg, &[])
}

/// A miner that behaves: connected throughout, its shares must be accepted.
struct Honest {
    c: Client,
    en1: String,
    notify: Value,
    n: u64,
}

impl Honest {
    async fn connect(pool: &Pool) -> Honest {
        let mut c = Client::connect(&pool.addr()).await;
        let (en1, _) = c.handshake("honest.rig").await;
        let notify = c.notification("mining.notify").await;
        Honest { c, en1, notify, n: 0 }
    }

    /// The newest notify seen (lines that arrived meanwhile are read first).
    async fn catch_up(&mut self) {
        while let Some(v) = self.c.read_within(Duration::from_millis(5)).await {
            self.c.backlog.push(v);
        }
        for v in self.c.backlog.drain(..) {
            if v["method"] == "mining.notify" {
                self.notify = v;
            }
        }
    }

    /// One share that is not a block; asserts it is accepted.
    async fn share(&mut self, case: &str) {
        self.catch_up().await;
        self.n += 1;
        let s = solve_not_block(&self.notify, &self.en1, &format!("{:016x}", self.n), "1e-10").unwrap();
        let id = self.c.request("mining.submit", s).await;
        let r = self.c.reply(id).await;
        assert_eq!(r["result"], json!(true), "{case}: the honest miner's share: {r}");
    }

    /// A share that is a block; asserts the node takes it.
    async fn block(&mut self, nodes: &NodePair, case: &str) {
        self.catch_up().await;
        self.n += 1;
        let h0 = nodes.a.height().await;
        let s = solve(&self.notify, &self.en1, &format!("{:016x}", self.n), "1e-10", true).unwrap();
        let id = self.c.request("mining.submit", s).await;
        let r = self.c.reply(id).await;
        assert_eq!(r["result"], json!(true), "{case}: the honest miner's block: {r}");
        nodes.a.wait_height_above(h0, &format!("{case}: the honest miner's block")).await;
    }
}

/// Subscribes on a raw connection and returns it (for pipelined floods).
async fn raw_subscribed(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"hostile/1\"]}\n").await.unwrap();
    s
}

/// Reads lines from `s` until `n` answers (lines with a non-null id) arrived; returns them.
async fn read_answers(s: &mut TcpStream, n: usize, buf: &mut Vec<u8>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 65536];
    // Bounded by the answers awaited and a deadline per read.
    while out.len() < n {
        let got = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk)).await.expect("answers in time");
        let got = got.unwrap();
        assert!(got > 0, "closed after {} of {n} answers", out.len());
        buf.extend_from_slice(&chunk[..got]);
        while let Some(at) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=at).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            if !v["id"].is_null() {
                out.push(v);
            }
        }
    }
    out
}

/// Case: a name flood over a few connections. Sends, on each of 4 connections, one subscribe and
/// then 5,000 authorizes under invented names (20,000 names), pipelined in batches of 500.
/// Each connection has its first 16 names taken and every later one refused; the pool's memory
/// does not grow with the names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_flood_over_a_few_connections() {
    let nodes = NodePair::start().await;
    let pool = start_pool(&nodes, json!({})).await;
    let mut honest = Honest::connect(&pool).await;
    honest.share("before").await;
    let base = usage(&pool);
    let addr = pool.addr();
    let mut floods = Vec::new();
    for c in 0..4 {
        let addr = addr.clone();
        floods.push(tokio::spawn(async move {
            let mut s = raw_subscribed(&addr).await;
            let mut buf = Vec::new();
            assert_eq!(read_answers(&mut s, 1, &mut buf).await[0]["id"], json!(1));
            let (mut accepted, mut refused) = (0, 0);
            for batch in 0..10 {
                let mut lines = String::new();
                for i in 0..500 {
                    let id = 2 + batch * 500 + i;
                    lines.push_str(&format!(
                        "{{\"id\":{id},\"method\":\"mining.authorize\",\"params\":[\"flood{c}x{id}.w\",\"x\"]}}\n"
                    ));
                }
                s.write_all(lines.as_bytes()).await.unwrap();
                for a in read_answers(&mut s, 500, &mut buf).await {
                    if a["result"] == json!(true) {
                        accepted += 1;
                    } else {
                        assert_eq!(a["error"][0], json!(24), "{a}");
                        refused += 1;
                    }
                }
            }
            (accepted, refused)
        }));
    }
    for f in floods {
        assert_eq!(f.await.unwrap(), (16, 4984), "16 names per connection, the rest refused");
    }
    honest.share("during").await;
    assert_bounded(&pool, base, 4, "name flood");
    assert!(pool.log().contains("refusing name"), "one operator line for the limit");
    honest.block(&nodes, "name flood").await;
    assert_log_unforged(&pool);
}

/// Case: many short connections, each with a new name. Sends 1,500 times: connect, subscribe,
/// authorize as a new name, close. A name without an accepted share is forgotten with its
/// connection: the pool's memory stays within the bound and the connect lines are rate-limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_short_connections_each_with_a_new_name() {
    let nodes = NodePair::start().await;
    let pool = start_pool(&nodes, json!({"stats_interval": 1})).await;
    let mut honest = Honest::connect(&pool).await;
    honest.share("before").await;
    let base = usage(&pool);
    let addr = pool.addr();
    for i in 0..1500 {
        let mut s = raw_subscribed(&addr).await;
        s.write_all(
            format!("{{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"short{i}\",\"x\"]}}\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        let answers = read_answers(&mut s, 2, &mut buf).await;
        assert_eq!(answers[1]["result"], json!(true), "{answers:?}");
        if i % 300 == 0 {
            honest.share("during").await;
        }
    }
    honest.share("after").await;
    assert_bounded(&pool, base, 0, "short connections");
    // At most 100 "miner authorized" lines a minute: the rest is one summary line later.
    let authorized = pool.log().matches("miner authorized").count();
    assert!(authorized <= 2 * 100 + 1, "{authorized} connect lines for 1,500 connections");
    honest.block(&nodes, "short connections").await;
    assert_log_unforged(&pool);
}

/// Sends, after a handshake as `name`, up to 60 submits whose params `submit(i, job)` makes on
/// the job it was sent; returns the answers to them before the pool closed the connection.
async fn spam_until_closed(pool: &Pool, name: &str, submit: impl Fn(u32, &Value) -> Value) -> Vec<Value> {
    let mut spam = Client::connect(&pool.addr()).await;
    spam.handshake(name).await;
    let job = spam.notification("mining.notify").await["params"][0].clone();
    for i in 0..60u32 {
        let req = json!({"id": 100 + i, "method": "mining.submit", "params": submit(i, &job)});
        if !spam.send_raw_to_closing(&req.to_string()).await {
            break;
        }
    }
    let mut answers = Vec::new();
    while let Some(v) = spam.read().await {
        if v["id"].as_u64().is_some_and(|id| id >= 100) {
            answers.push(v);
        }
    }
    answers
}

/// Waits until a connection from the spammers' address is served again (after `ban_time`).
async fn wait_let_back(pool: &Pool) {
    wait::until_async("the address to be let back after ban_time", Duration::from_secs(20), || async {
        let mut c = Client::connect(&pool.addr()).await;
        let id = c.request("mining.subscribe", json!([])).await;
        c.reply(id).await["error"].is_null()
    })
    .await;
}

/// Case: an invalid-share spammer. Sends, after its handshake, 60 submits on the current job with
/// an extranonce2 of the wrong length (invalid). With `ban_check_shares` 50 and `ban_time` 3 s,
/// the connection is closed at the 50th, a new connection from its address is answered "banned"
/// and closed, and one after the ban time is served again. Then a second spammer sends 60
/// submits naming job ids the pool never issued ("ffff", "deadbeef", ids past any issued):
/// answered 21 "Invalid JobID" (unknown, not stale: a stale share would not count toward the
/// ban) and banned at the 50th just the same. The metrics count both bans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_share_spammer_is_banned_then_let_back() {
    let nodes = NodePair::start().await;
    let pool = start_pool(&nodes, json!({"ban_check_shares": 50, "ban_time": 3, "apiurl": ["127.0.0.1:0"]})).await;
    let mut honest = Honest::connect(&pool).await;
    honest.share("before").await;
    let base = usage(&pool);
    // A current job with a one-byte extranonce2: invalid (the pool gives 8 bytes).
    let answers =
        spam_until_closed(&pool, "spammer", |i, job| json!(["spammer", job, "00", "5f5e1000", format!("{i:08x}")]))
            .await;
    assert!(answers.iter().all(|v| v["error"][0] == json!(20)), "{answers:?}");
    assert_eq!(answers.len(), 50, "answered up to the check, then closed");
    honest.share("after the ban").await;
    // Refused while banned: the first request is answered with the reason.
    let mut again = Client::connect(&pool.addr()).await;
    let id = again.request("mining.subscribe", json!([])).await;
    let r = again.reply(id).await;
    assert!(r["error"][1].as_str().unwrap().starts_with("banned"), "{r}");
    assert!(again.read().await.is_none(), "closed after the answer");
    wait_let_back(&pool).await;
    // Invented job ids with a well-formed share: unknown jobs, invalid, banned as well.
    let invented = |i: u32| match i % 3 {
        0 => "ffff".to_string(),
        1 => "deadbeef".to_string(),
        _ => format!("{:x}", u64::MAX - u64::from(i)),
    };
    let answers = spam_until_closed(&pool, "jobfaker", |i, _| {
        json!(["jobfaker", invented(i), "0000000000000000", "5f5e1000", format!("{i:08x}")])
    })
    .await;
    assert!(answers.iter().all(|v| v["error"] == json!([21, "Invalid JobID", null])), "{answers:?}");
    assert_eq!(answers.len(), 50, "invented job ids count toward the ban");
    honest.share("after the second ban").await;
    wait_let_back(&pool).await;
    let log = pool.log();
    let api = log
        .lines()
        .rev()
        .find_map(|l| l.split_once("serving the operator API on ").map(|(_, a)| a.split_whitespace().next().unwrap()))
        .expect("API line")
        .to_string();
    let mut s = TcpStream::connect(&api).await.unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut body)).await.unwrap().unwrap();
    assert!(body.contains("ckpool_connections_dropped_total{reason=\"banned\"} 2"), "{body}");
    assert!(body.contains("ckpool_shares_rejected_total{reason=\"unknown_job\"} 50"), "{body}");
    assert!(body.contains("ckpool_shares_rejected_total{reason=\"stale\"} 0"), "{body}");
    assert!(!body.contains("ckpool_connections_refused_total{reason=\"banned\"} 0"), "{body}");
    assert!(log.contains("dropping miner: banned for 3 s"), "{log}");
    assert_bounded(&pool, base, 1, "invalid-share spammer");
    honest.block(&nodes, "invalid-share spammer").await;
    assert_log_unforged(&pool);
}

/// Case: idle connections past `dropidle`. Sends: 20 connections that subscribe and authorize
/// and then send nothing, and 20 that only connect. With `dropidle` 4 s, every one of them is
/// closed by the pool; the honest miner, sharing every second, stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_dropidle() {
    let nodes = NodePair::start().await;
    let pool = start_pool(&nodes, json!({"dropidle": 4})).await;
    let mut honest = Honest::connect(&pool).await;
    honest.share("before").await;
    let base = usage(&pool);
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut c = Client::connect(&pool.addr()).await;
        c.handshake(&format!("idle{i}")).await;
        idle.push(c);
    }
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(pool.addr()).await.unwrap());
    }
    assert_bounded(&pool, base, 40, "idle connections");
    // The honest miner shares every second while the idle ones wait.
    for _ in 0..6 {
        honest.share("while others idle").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for mut c in idle {
        // Its work (a few lines), then the close: at most 100 lines, each within 10 s.
        let mut lines = 0;
        while lines < 100 && c.read_within(Duration::from_secs(10)).await.is_some() {
            lines += 1;
        }
        assert!(lines < 100, "an idle miner was not closed");
    }
    for mut s in silent {
        let mut b = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await.expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "the pool closes a silent connection");
    }
    wait::until("the pool to close the idle connections", Duration::from_secs(20), || {
        pool.log().matches("(dropidle)").count() >= 40
    })
    .await;
    honest.share("after").await;
    assert_bounded(&pool, base, 0, "after dropidle");
    honest.block(&nodes, "dropidle").await;
    assert_log_unforged(&pool);
}

/// Case: a miner that never reads while work is sent. Sends: a handshake, then 400,000
/// `mining.extranonce.subscribe` requests with ids (each answered) without reading a byte, on a
/// socket whose receive buffer is 4 KB. The pool stops reading it once its answers cannot be
/// written, and drops it after 30 s without write progress; its memory stays bounded meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miner_that_never_reads_is_dropped() {
    let nodes = NodePair::start().await;
    let pool = start_pool(&nodes, json!({})).await;
    let mut honest = Honest::connect(&pool).await;
    honest.share("before").await;
    let base = usage(&pool);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut s = sock.connect(pool.addr().parse().unwrap()).await.unwrap();
    let flood = tokio::spawn(async move {
        let hello = "{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n\
                     {\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"deaf\",\"x\"]}\n";
        let _ = s.write_all(hello.as_bytes()).await;
        let mut batch = String::new();
        for i in 0..1000 {
            batch
                .push_str(&format!("{{\"id\":{},\"method\":\"mining.extranonce.subscribe\",\"params\":[]}}\n", 10 + i));
        }
        for _ in 0..400 {
            // Blocks once the pool stops reading; ends with an error once it closes.
            match tokio::time::timeout(Duration::from_secs(60), s.write_all(batch.as_bytes())).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        s
    });
    // The honest miner shares every 2 s until the pool dropped the deaf one (45 rounds at most).
    let mut shared = 0;
    while shared < 45 && !pool.log().contains("not reading (no write progress in 30 s)") {
        honest.share("while a miner does not read").await;
        shared += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(pool.log().contains("not reading (no write progress in 30 s)"), "the deaf miner was not dropped");
    assert!(shared > 1);
    assert_bounded(&pool, base, 1, "a miner that does not read");
    drop(flood.await.unwrap());
    honest.block(&nodes, "never reads").await;
    assert_log_unforged(&pool);
}

/// Case: log-forging strings in every miner-supplied field. Sends, at debug level, CR, LF,
/// U+2028/2029, NEL, ESC, NUL and a whole fake log line in the user agent, the username, the
/// password, the submit's worker and job id, a method name, a suggest_difficulty value and an
/// unparseable line. No line of the operator log starts with what a miner sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_forging_strings_in_every_field() {
    let nodes = NodePair::start().await;
    let pool = start_pool(&nodes, json!({"loglevel": "debug"})).await;
    let mut honest = Honest::connect(&pool).await;
    let base = usage(&pool);
    let forged = |tag: &str| {
        format!(
            "x\n2026-01-01T00:00:00.000000Z  WARN FORGED {tag}\r\n\u{2028}FORGED\u{2029}FORGED\u{85}\u{1b}[31m\u{0}"
        )
    };
    let mut c = Client::connect(&pool.addr()).await;
    let id = c.request("mining.subscribe", json!([forged("agent")])).await;
    c.reply(id).await;
    let id = c.request("mining.authorize", json!([forged("user"), forged("password")])).await;
    c.reply(id).await;
    for (method, params) in [
        ("mining.submit".to_string(), json!([forged("worker"), forged("job"), "00", "00", "00"])),
        (forged("method"), json!([])),
    ] {
        let id = c.request(&method, params).await;
        c.reply(id).await;
    }
    // Not answered (a wish); logged at debug.
    c.request("mining.suggest_difficulty", json!([forged("difficulty")])).await;
    c.send_raw(&format!("{{\"id\": 9, \"method\": {}", json!(forged("unparseable")))).await;
    c.read().await;
    // A second name (logged on authorize) and an SV1 disconnect (logged with the worker).
    let id = c.request("mining.authorize", json!([forged("second"), "x"])).await;
    c.reply(id).await;
    drop(c);
    wait::until("the forged miner's lines in the log", Duration::from_secs(20), || {
        pool.log().contains("miner disconnected")
    })
    .await;
    let log = pool.log();
    assert!(log.contains("\\n2026-01-01T00:00:00.000000Z  WARN FORGED user\\r\\n\\u{2028}FORGED"), "{log}");
    assert!(log.contains("FORGED agent"), "the agent is logged (escaped)");
    assert!(log.lines().all(|l| !l.starts_with("2026-01-01T00:00:00.000000Z")));
    honest.share("after").await;
    assert_bounded(&pool, base, 0, "log forging");
    honest.block(&nodes, "log forging").await;
    assert_log_unforged(&pool);
}

/// Case: a flood of connects. Sends 600 connections at once that send nothing and stay, then 600
/// that connect and close at once, with `maxclients` 400: the pool holds at most 400 of them,
/// stays within the descriptor and memory bounds, and serves the honest miner throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connects() {
    let nodes = NodePair::start().await;
    let pool = start_pool(&nodes, json!({"maxclients": 400})).await;
    let mut honest = Honest::connect(&pool).await;
    honest.share("before").await;
    let base = usage(&pool);
    let addr = pool.addr();
    let mut held = Vec::new();
    for _ in 0..600 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await {
            held.push(s);
        }
    }
    for _ in 0..600 {
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr)).await {
            drop(s);
        }
    }
    honest.share("during").await;
    assert_bounded(&pool, base, 400, "connect flood");
    drop(held);
    honest.share("after").await;
    honest.block(&nodes, "connect flood").await;
    assert_log_unforged(&pool);
}
