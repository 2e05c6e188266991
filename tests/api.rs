//! The operator's API on a real regtest node pair: after a known number of accepted and rejected
//! shares, /metrics parses as the exposition format and its counters equal them; ckpool's files
//! over HTTP are the files' bytes; the JSON API has the shape docs/api.md shows; the dashboard,
//! rendered by headless Chromium, shows the worker, the chart and the block; a hostile request
//! matrix leaves mining unaffected; `ckpool status` prints the same summary; proxy mode shows its
//! upstream and failovers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{pool_config, solve, solve_not_block, wait, Client, NodePair, Pool};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The API's address from the pool's log line.
fn api_addr(pool: &Pool) -> String {
    let log = pool.log();
    let a = log
        .lines()
        .rev()
        .find_map(|l| l.split_once("serving the operator API on ").map(|(_, a)| a.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("no API line in the log:\n{log}"));
    a.to_string()
}

/// One raw HTTP/1.1 exchange (`Connection: close`): status, head and body bytes. Bounded.
async fn http(addr: &str, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf))
        .await
        .expect("an answer within 20 s")
        .unwrap_or(0);
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or_else(|| panic!("no HTTP head in {buf:?}"));
    let head = String::from_utf8_lossy(&buf[..at]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap();
    (status, head, buf[at + 4..].to_vec())
}

async fn get(addr: &str, path: &str) -> (u16, Vec<u8>) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = http(addr, req.as_bytes()).await;
    (status, body)
}

async fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) = get(addr, path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e})"))
}

/// Fetches `path` while the file it serves holds still: the same bytes before and after the
/// request (the statistics writer rewrites it every second), then compares.
async fn same_as_file(addr: &str, path: &str, file: &Path) {
    for _ in 0..50 {
        let before = std::fs::read(file).unwrap();
        let (status, body) = get(addr, path).await;
        let after = std::fs::read(file).unwrap();
        if before == after {
            assert_eq!(status, 200, "{path}");
            assert_eq!(body, before, "{path} is not the bytes of {}", file.display());
            return;
        }
    }
    panic!("{} never held still for a request", file.display());
}

/// A parsed exposition: sample name with labels → value. Panics where the text breaks the
/// format: every sample belongs to a family declared by `# TYPE` before it, names and labels are
/// well formed, values are numbers, counters end in `_total`, and `# EOF` ends the text.
fn parse_exposition(text: &str) -> BTreeMap<String, f64> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "no # EOF at the end");
    assert!(text.ends_with("# EOF\n"));
    for l in &lines[..lines.len() - 1] {
        if let Some(rest) = l.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, what) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
            assert!(name_ok(name), "{l}");
            match kind {
                "TYPE" => {
                    assert!(["counter", "gauge", "histogram", "info", "unknown"].contains(&what), "{l}");
                    assert!(types.insert(name.to_string(), what.to_string()).is_none(), "family declared twice: {l}");
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown comment {l}"),
            }
            continue;
        }
        let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {l}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {l}")),
        };
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{l}");
        if let Some(labels) = series.strip_prefix(name).filter(|s| !s.is_empty()) {
            let inner = labels.strip_prefix('{').and_then(|s| s.strip_suffix('}')).unwrap_or_else(|| panic!("{l}"));
            for kv in inner.split("\",").filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label in {l}"));
                assert!(name_ok(k), "{l}");
                assert!(!v.trim_end_matches('"').contains('"'), "{l}");
            }
        }
        let family = types
            .keys()
            .filter(|f| name.starts_with(f.as_str()))
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample before its # TYPE: {l}"));
        let ty = &types[family];
        let suffix = &name[family.len()..];
        let allowed: &[&str] = match ty.as_str() {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "info" => &["_info"],
            _ => &[""],
        };
        assert!(allowed.contains(&suffix), "{l}: suffix {suffix:?} for a {ty}");
        assert!(samples.insert(series.to_string(), v).is_none(), "sample twice: {l}");
    }
    samples
}

/// Values docs/api.md says may be null (in its prose; its examples show them set), as
/// `path.key` the way [`same_shape`] names them.
const DOCUMENTED_NULLS: &[&str] = &[
    "/api/blocks.tip",                     // proxy mode
    "/api/network.expected_block_seconds", // while the pool's hashrate is 0
    "/api/network.upstream_difficulty",    // pool mode
    "/api/history.store",                  // no history store
    "/api/history?range=day.store",        // no history store
    "/api/history?range=day.user",         // pool-wide rows
];

/// `live` has exactly the keys and JSON types of `doc` (recursively; array elements against the
/// example's first element). A live null matches a documented null, or a value listed in
/// [`DOCUMENTED_NULLS`]; any other null is a shape the documentation does not show.
fn same_shape(doc: &Value, live: &Value, at: &str) -> Result<(), String> {
    match (doc, live) {
        (Value::Null, Value::Null) => Ok(()),
        (_, Value::Null) if DOCUMENTED_NULLS.contains(&at) => Ok(()),
        (Value::Object(d), Value::Object(l)) => {
            let dk: BTreeSet<&String> = d.keys().collect();
            let lk: BTreeSet<&String> = l.keys().collect();
            if dk != lk {
                return Err(format!("{at}: documented keys {dk:?}, live keys {lk:?}"));
            }
            for k in dk {
                same_shape(&d[k], &l[k], &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(d), Value::Array(l)) => {
            let Some(first) = d.first() else { return Err(format!("{at}: the example's array is empty")) };
            for (i, x) in l.iter().enumerate() {
                same_shape(first, x, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(_), Value::Number(_))
        | (Value::String(_), Value::String(_))
        | (Value::Bool(_), Value::Bool(_)) => Ok(()),
        (d, l) => Err(format!("{at}: documented {d}, live {l}")),
    }
}

/// docs/api.md's examples: the path of each "### `GET /api/...`" heading → its JSON block.
fn documented_examples() -> BTreeMap<String, Value> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let mut out = BTreeMap::new();
    let mut path: Option<String> = None;
    let mut block: Option<String> = None;
    for l in doc.lines() {
        if let Some(b) = block.as_mut() {
            if l == "```" {
                let p = path.take().expect("a JSON block under an endpoint heading");
                let v = serde_json::from_str(b).unwrap_or_else(|e| panic!("docs/api.md, {p}: invalid JSON: {e}"));
                out.insert(p, v);
                block = None;
            } else {
                b.push_str(l);
                b.push('\n');
            }
        } else if let Some(p) = l.strip_prefix("### `GET ").and_then(|r| r.strip_suffix('`')) {
            path = Some(p.to_string());
        } else if l == "```json" && path.is_some() {
            block = Some(String::new());
        }
    }
    out
}

fn chromium() -> PathBuf {
    let p = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].iter().map(PathBuf::from).find(|p| p.exists());
    p.unwrap_or_else(|| panic!("chromium is missing: run `bash contrib/setup.sh` (Debian's chromium)"))
}

/// The dashboard's DOM after its scripts ran, and a phone-sized screenshot kept in target/.
fn render_dashboard(url: &str, shot: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut Command| {
        c.args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(["--virtual-time-budget=10000", "--run-all-compositor-stages-before-draw"]);
    };
    let mut c = Command::new(chromium());
    common(&mut c);
    let out = c.arg("--dump-dom").arg(url).output().unwrap();
    assert!(out.status.success(), "chromium --dump-dom failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut c = Command::new(chromium());
    common(&mut c);
    let shot_out =
        c.arg("--window-size=412,1400").arg(format!("--screenshot={}", shot.display())).arg(url).output().unwrap();
    assert!(shot_out.status.success(), "chromium --screenshot failed: {}", String::from_utf8_lossy(&shot_out.stderr));
    assert!(std::fs::metadata(shot).map(|m| m.len() > 1000).unwrap_or(false), "no screenshot at {}", shot.display());
    String::from_utf8(out.stdout).unwrap()
}

async fn submit(c: &mut Client, params: Value) -> Value {
    let id = c.request("mining.submit", params).await;
    c.reply(id).await
}

/// Waits (≤ 30 s) for `f` on `path`'s JSON.
async fn wait_json(addr: &str, path: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let (f, last) = (&f, &std::sync::Mutex::new(Value::Null));
    let got = move || async move {
        let v = get_json(addr, path).await;
        if f(&v) {
            return Some(v);
        }
        *last.lock().unwrap() = v;
        None
    };
    let context = || format!("last answer: {}", last.lock().unwrap());
    wait::until_async_or(&format!("{path} {what}"), Duration::from_secs(30), got, context).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_files_json_dashboard_and_hostile_clients() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["mindiff"] = json!(1e-10);
    cfg["startdiff"] = json!(1e-10);
    cfg["stats_interval"] = json!(1);
    cfg["apiurl"] = json!(["127.0.0.1:0"]);
    let pool = Pool::start(cfg, &[]);
    let api = api_addr(&pool);
    assert!(api.starts_with("127.0.0.1:"), "{api}");

    // One block, then five accepted shares that are not blocks, and four rejects.
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("alice.rig1").await;
    let first = c.notification("mining.notify").await;
    let h0 = node.height().await;
    let block = solve(&first, &en1, "00000000000000b1", "1e-10", true).unwrap();
    assert_eq!(submit(&mut c, block).await["result"], json!(true));
    node.wait_height_above(h0, "the block-meeting share").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    pool.wait_blocks_log(&tip);
    let work = c.notify_on_tip(&tip).await;
    let mut accepted = Vec::new();
    for i in 0..5 {
        let s = solve_not_block(&work, &en1, &format!("{:016x}", 0x100 + i), "1e-10").unwrap();
        assert_eq!(submit(&mut c, s.clone()).await["result"], json!(true));
        accepted.push(s);
    }
    let dup = submit(&mut c, accepted[0].clone()).await;
    assert_eq!(dup["error"][1], json!("Duplicate"), "{dup}");
    let mut unknown = accepted[1].clone();
    unknown[1] = json!("zz");
    assert_eq!(submit(&mut c, unknown).await["error"][1], json!("Invalid JobID"));
    assert_eq!(submit(&mut c, json!(["alice.rig1"])).await["error"][1], json!("Invalid params"));
    let stale = solve_not_block(&first, &en1, "00000000000000c1", "1e-10").unwrap();
    assert_eq!(submit(&mut c, stale).await["error"][1], json!("Stale"));

    // /metrics: the exposition format, counters equal to what was sent.
    let (status, body) = get(&api, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    let m = parse_exposition(&text);
    let at = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no {k} in\n{text}"));
    assert_eq!(at("ckpool_shares_total{result=\"accepted\"}"), 6.0);
    assert_eq!(at("ckpool_shares_total{result=\"rejected\"}"), 4.0);
    for (reason, n) in
        [("duplicate", 1.0), ("unknown_job", 1.0), ("invalid_params", 1.0), ("stale", 1.0), ("low_difficulty", 0.0)]
    {
        assert_eq!(at(&format!("ckpool_shares_rejected_total{{reason=\"{reason}\"}}")), n, "{reason}");
    }
    assert_eq!(at("ckpool_connections"), 1.0);
    // Six shares at 1e-10 each.
    assert!((at("ckpool_accepted_difficulty_total") - 6e-10).abs() < 1e-22, "{text}");
    let node_url = node.rpc_url();
    let node_hostport = node_url.trim_start_matches("http://").trim_end_matches('/');
    assert!(at(&format!("ckpool_rpc_calls_total{{node=\"0\",url=\"{node_hostport}\"}}")) >= 3.0, "{text}");
    assert!(!text.contains(common::RPC_PASS), "the RPC password in /metrics");
    // The node's announcement of the block reached the miner: one template and notify latency.
    let api_ref = &api;
    let observed = move || async move {
        let (_, body) = get(api_ref, "/metrics").await;
        let m = parse_exposition(&String::from_utf8(body).unwrap());
        m.get("ckpool_notify_latency_seconds_count{miner=\"last\"}").is_some_and(|n| *n >= 1.0).then_some(m)
    };
    let m = wait::until_async("a notify latency in /metrics", Duration::from_secs(30), observed).await;
    assert!(m["ckpool_template_latency_seconds_count"] >= 1.0);
    assert!(m["ckpool_notify_latency_seconds_sum{miner=\"first\"}"] > 0.0);

    // The statistics catch up (every second): the worker with its agent and difficulty.
    let user = wait_json(&api, "/api/users/alice", "six shares", |v| v["shares"] == json!("0.0000000006")).await;
    let w = &user["worker"][0];
    assert_eq!((w["name"].as_str(), w["useragent"].as_str()), (Some("alice.rig1"), Some("ckpool-test/1.0")), "{user}");
    assert_eq!(w["difficulty"], json!("0.0000000001"), "{user}");
    // Five more blocks on ours: the pool records 6 confirmations (a milestone) in blocks.log.
    node.call("generate", json!([5])).await;
    let new_tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    pool.wait_blocks_log("\"confirmations\":6");
    let work = c.notify_on_tip(&new_tip).await;
    let blocks = wait_json(&api, "/api/blocks", "the block", |v| v["blocks"][0]["hash"] == json!(tip)).await;
    let b = &blocks["blocks"][0];
    assert_eq!(
        (&b["status"], &b["confirmations"], &b["recorded_confirmations"]),
        (&json!("confirmed"), &json!(6), &json!(6)),
        "{blocks}"
    );
    assert_eq!(b["workername"], json!("alice.rig1"));

    // ckpool's files over HTTP, byte for byte; nothing outside logdir/users.
    same_as_file(&api, "/pool/pool.status", &pool.logdir.join("pool/pool.status")).await;
    same_as_file(&api, "/users/alice", &pool.logdir.join("users/alice")).await;
    for (path, want) in [
        ("/users/..", 400),
        ("/users/../pool/pool.status", 400),
        ("/users/%2e%2e%2fpool%2fpool.status", 400),
        ("/users/.%2e/ckpool.log", 400),
        ("/users/%2Fetc%2Fpasswd", 400),
        ("/users/nobody", 404),
        ("/pool/../ckpool.log", 404),
        ("/ckpool.log", 404),
        ("/api/users/..", 400),
        ("/api/users/nobody", 404),
    ] {
        let (status, body) = get(&api, path).await;
        assert_eq!(status, want, "{path}: {}", String::from_utf8_lossy(&body));
        assert!(!String::from_utf8_lossy(&body).contains("listening for miners"), "{path} served the log");
    }

    // The JSON API has the documented shapes.
    let examples = documented_examples();
    for path in [
        "/api/pool",
        "/api/users",
        "/api/users/<name>",
        "/api/workers",
        "/api/blocks",
        "/api/network",
        "/api/history",
        "/api/history?range=day",
        "/api/widget",
    ] {
        let doc = examples.get(path).unwrap_or_else(|| panic!("docs/api.md has no example for {path}"));
        let live_path = path.replace("<name>", "alice");
        let live = if path == "/api/history" {
            wait_json(&api, &live_path, "a chart point", |v| !v["hour"].as_array().unwrap().is_empty()).await
        } else if path == "/api/history?range=day" {
            // The history store (SQLite by default) has the shares and the block.
            wait_json(&api, &live_path, "stored points and the block", |v| {
                !v["points"].as_array().unwrap().is_empty() && !v["blocks"].as_array().unwrap().is_empty()
            })
            .await
        } else {
            get_json(&api, &live_path).await
        };
        same_shape(doc, &live, path).unwrap_or_else(|e| panic!("docs/api.md vs live {path}: {e}\nlive: {live}"));
    }
    assert_eq!(examples.len(), 9, "an example for an endpoint this test does not check: {:?}", examples.keys());
    let pool_json = get_json(&api, "/api/pool").await;
    assert_eq!(pool_json["shares"]["accepted"], json!(6));
    assert_eq!(pool_json["shares"]["rejected_by"]["stale"], json!(1));
    let net = get_json(&api, "/api/network").await;
    assert_eq!(net["height"], json!(node.height().await + 1), "{net}");
    let widget = get_json(&api, "/api/widget").await;
    assert_eq!(widget["type"], json!("four-stats"));
    assert_eq!(widget["items"][2], json!({"title": "Blocks", "text": "1", "subtext": ""}));

    // The dashboard in headless Chromium: the worker, the chart and the block.
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/api-dashboard.png");
    let dom = render_dashboard(&format!("http://{api}/"), &shot);
    assert!(dom.contains("data-loaded=\"1\""), "the page's scripts did not finish:\n{dom}");
    assert!(dom.contains("data-worker=\"alice.rig1\""), "no worker row:\n{dom}");
    assert!(dom.contains("ckpool-test/1.0"), "no user agent:\n{dom}");
    assert!(dom.contains(&format!("data-hash=\"{tip}\"")), "no block row:\n{dom}");
    let chart = dom.split("id=\"chart\"").nth(1).expect("the chart").split("</svg>").next().unwrap();
    assert!(chart.contains("class=\"line\""), "no hashrate line in the chart:\n{chart}");
    assert!(!chart.contains("data-points=\"0\""), "{chart}");

    // `ckpool status`: from the API, and from the files when no API is configured.
    let status_conf = pool.dir.path().join("status.conf");
    let mut sc: Value = serde_json::Deserializer::from_str(&std::fs::read_to_string(&pool.config_path).unwrap())
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap();
    sc["apiurl"] = json!([api]);
    std::fs::write(&status_conf, sc.to_string()).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_ckpool")).args(["status", "--config"]).arg(&status_conf).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("(http://{api})")), "{text}");
    assert!(text.contains("accepted    6 shares") && text.contains("rejected    4 shares"), "{text}");
    assert!(text.contains("alice.rig1") && text.contains(&tip), "{text}");
    sc.as_object_mut().unwrap().remove("apiurl");
    std::fs::write(&status_conf, sc.to_string()).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_ckpool")).args(["status", "--config"]).arg(&status_conf).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("found 1, accepted 1") && text.contains("alice.rig1") && text.contains(&tip), "{text}");

    hostile_matrix(&api, &mut c, &work, &en1).await;
}

/// The miner that must keep working while the API is under attack.
struct Miner<'a> {
    c: &'a mut Client,
    work: &'a Value,
    en1: &'a str,
    n: u64,
}

impl Miner<'_> {
    async fn share_ok(&mut self) {
        self.n += 1;
        let s = solve_not_block(self.work, self.en1, &format!("{:016x}", self.n), "1e-10").unwrap();
        let r = submit(self.c, s).await;
        assert_eq!(r["result"], json!(true), "mining affected: {r}");
    }
}

/// Huge headers, slowloris past the connection cap, bodies, 10,000 requests: each is refused or
/// bounded, and the miner's shares are accepted throughout.
async fn hostile_matrix(api: &str, c: &mut Client, work: &Value, en1: &str) {
    let mut miner = Miner { c, work, en1, n: 0x200 };

    // Headers past 16 KiB: refused (431) or the connection closed, never served.
    let mut req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    req.extend(std::iter::repeat_n(b'a', 1 << 20));
    req.extend_from_slice(b"\r\n\r\n");
    let mut s = TcpStream::connect(api).await.unwrap();
    let _ = s.write_all(&req).await; // the server may close before taking it all
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut answer)).await.expect("closed in time");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    miner.share_ok().await;

    // Slowloris: more connections than the cap, each holding half a request head.
    let mut held = Vec::new();
    for _ in 0..(ckpool::api::server::MAX_CONNECTIONS + 16) {
        let mut s = TcpStream::connect(api).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        held.push(s);
    }
    miner.share_ok().await;
    // Every one is closed by the server within the head timeout (with a 408 or nothing).
    let limit = ckpool::api::server::HEAD_TIMEOUT + Duration::from_secs(10);
    for mut s in held {
        let mut rest = Vec::new();
        let r = tokio::time::timeout(limit, s.read_to_end(&mut rest)).await;
        assert!(r.is_ok(), "a slow client kept its connection past {limit:?}");
        let t = String::from_utf8_lossy(&rest);
        assert!(t.is_empty() || t.starts_with("HTTP/1.1 408"), "{t}");
    }
    miner.share_ok().await;

    // A POST with a large body: refused without reading it.
    let (status, _, _) =
        http(api, b"POST /api/pool HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nConnection: close\r\n\r\nxxxx")
            .await;
    assert_eq!(status, 405);

    // 10,000 requests on 20 keep-alive connections: each answered 200 or 429 (rate limit).
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let api = api.to_string();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&api).await.unwrap();
            let mut counts = (0u32, 0u32);
            let mut buf = Vec::new();
            for _ in 0..500 {
                s.write_all(b"GET /api/pool HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
                // Read one response: head, then Content-Length bytes.
                loop {
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .expect("content-length");
                        if buf.len() >= at + 4 + len {
                            match head.split_whitespace().nth(1) {
                                Some("200") => counts.0 += 1,
                                Some("429") => counts.1 += 1,
                                other => panic!("unexpected status {other:?}"),
                            }
                            buf.drain(..at + 4 + len);
                            break;
                        }
                    }
                    let mut chunk = [0u8; 16384];
                    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk))
                        .await
                        .expect("an answer in time")
                        .unwrap();
                    assert!(n > 0, "connection closed mid-flood");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
            counts
        }));
    }
    miner.share_ok().await;
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (a, b) = t.await.unwrap();
        ok += a;
        limited += b;
    }
    // Each answered, served or refused by the rate limit (how many of each depends on this
    // machine's speed; the bucket's arithmetic is a unit test in src/api/server.rs).
    assert_eq!(ok + limited, 10_000);
    miner.share_ok().await;
    // The API itself recovers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, body) = get(api, "/metrics").await;
    let m = parse_exposition(&String::from_utf8(body).unwrap());
    assert!(m["ckpool_api_requests_total{outcome=\"limited\"}"] >= limited as f64);
    assert!(m["ckpool_api_requests_total{outcome=\"served\"}"] >= ok as f64);
    assert_eq!(m["ckpool_shares_total{result=\"accepted\"}"], 6.0 + 5.0);
}

/// Proxy mode: the upstream in use and the failover from a dead first entry, in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_metrics_show_upstream_and_failover() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let pool = Pool::start(pool_config(node, &address).await, &[]);
    // A port nothing listens on, first in the list.
    let dead = format!("127.0.0.1:{}", common::free_port());
    let proxy = Pool::start_proxy(json!({
        "proxy": [
            {"url": dead, "auth": "proxyuser.dead", "pass": "x"},
            {"url": pool.addr(), "auth": "proxyuser.live", "pass": "x"},
        ],
        "btcaddress": "",
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "apiurl": "127.0.0.1:0",
    }));
    let api = api_addr(&proxy);
    let (_, body) = get(&api, "/metrics").await;
    let text = String::from_utf8(body).unwrap();
    let m = parse_exposition(&text);
    assert_eq!(m["ckpool_upstream_up"], 1.0, "{text}");
    assert_eq!(m[&format!("ckpool_upstream_connected{{upstream=\"0\",url=\"{dead}\"}}")], 0.0, "{text}");
    assert_eq!(m[&format!("ckpool_upstream_connected{{upstream=\"1\",url=\"{}\"}}", pool.addr())], 1.0, "{text}");
    assert!(m["ckpool_upstream_failovers_total"] >= 1.0, "{text}");
    assert!(!text.contains("ckpool_rpc_calls"), "no node in proxy mode: {text}");
    let p = get_json(&api, "/api/pool").await;
    assert_eq!(p["mode"], json!("proxy"));
}

/// After a restart the API has the totals at once (issue 27): the blocks found and the miners
/// connected, long before the first statistics write (`stats_interval` here: an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_has_the_totals_right_after_a_restart() {
    let nodes = NodePair::start().await;
    let node = &nodes.a;
    let address = node.new_address().await;
    let mut cfg = pool_config(node, &address).await;
    cfg["stats_interval"] = json!(3600);
    cfg["apiurl"] = json!(["127.0.0.1:0"]);
    let mut pool = Pool::start(cfg, &[]);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("restart.rig").await;
    let n = c.notification("mining.notify").await;
    let h0 = node.height().await;
    let block = solve(&n, &en1, "00000000000000d1", "0.0001", true).unwrap();
    assert_eq!(submit(&mut c, block).await["result"], json!(true));
    node.wait_height_above(h0, "the block found before the restart").await;
    let tip = node.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    pool.wait_blocks_log(&tip);
    drop(c);
    pool.stop().expect("pool exits on SIGTERM");

    pool.spawn(&[]);
    let api = api_addr(&pool);
    let mut c = Client::connect(&pool.addr()).await;
    c.handshake("restart.rig").await;
    // Polled for up to 30 s, an hour before the first write: only the fix makes it.
    let v =
        wait_json(&api, "/api/pool", "the totals", |v| v["blocks"]["found"] == json!(1) && v["workers"] == json!(1))
            .await;
    assert_eq!(v["users"], json!(1), "{v}");
}
