//! The history store (issue #20) on the real regtest node pair and the pool binary:
//! the embedded SQLite store keeps the dashboard's chart across a restart and `ckpool payout
//! --measured` reads back the hashrate of shares of a known difficulty sent over a known window;
//! two pool instances and a proxy write to one real PostgreSQL (started here with initdb on a
//! loopback port) and either pool's API shows all of them; PostgreSQL stopped mid-run and started again: the miner's shares
//! go on being accepted, the history resumes without a gap, and the log says so once.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{pool_config, solve_not_block, wait, Client, NodePair, Pool};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn api_addr(pool: &Pool) -> String {
    let log = pool.log();
    log.lines()
        .rev()
        .find_map(|l| l.split_once("serving the operator API on ").map(|(_, a)| a.split_whitespace().next().unwrap()))
        .unwrap_or_else(|| panic!("no API line in the log:\n{log}"))
        .to_string()
}

async fn get_json(addr: &str, path: &str) -> Value {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await.expect("answer in 20 s").unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("HTTP head");
    let head = String::from_utf8_lossy(&buf[..at]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}\n{}", String::from_utf8_lossy(&buf[at + 4..]));
    serde_json::from_slice(&buf[at + 4..]).unwrap()
}

/// Waits (≤ 60 s) for `f` on `path`'s JSON.
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
    wait::until_async_or(&format!("{path} {what}"), Duration::from_secs(60), got, context).await
}

/// Accepted shares summed over a `/api/history?range=...` answer's points.
fn shares_in(v: &Value) -> u64 {
    v["points"].as_array().unwrap().iter().map(|p| p[2].as_u64().unwrap()).sum()
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Sends `n` accepted shares at difficulty 1e-10 (not blocks) with nonce2 from `from`.
async fn send_shares(c: &mut Client, work: &Value, en1: &str, from: u64, n: u64) {
    send_shares_n2(c, work, en1, from, n, 8).await
}

/// The same with an extranonce2 of `n2` bytes.
async fn send_shares_n2(c: &mut Client, work: &Value, en1: &str, from: u64, n: u64, n2: usize) {
    for i in from..from + n {
        let s = solve_not_block(work, en1, &format!("{i:0width$x}", width = 2 * n2), "1e-10").unwrap();
        let id = c.request("mining.submit", s).await;
        let r = c.reply(id).await;
        assert_eq!(r["result"], json!(true), "share {i}: {r}");
    }
}

fn pool_cfg(mut cfg: Value) -> Value {
    cfg["mindiff"] = json!(1e-10);
    cfg["startdiff"] = json!(1e-10);
    cfg["maxdiff"] = json!(1e-10);
    cfg["stats_interval"] = json!(1);
    cfg["apiurl"] = json!(["127.0.0.1:0"]);
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_keeps_the_chart_across_a_restart_and_measures_contracts() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut pool = Pool::start(pool_cfg(pool_config(&nodes.a, &address).await), &[]);
    assert!(pool.log().contains("history: keeping per-minute history in sqlite"), "{}", pool.log());
    let api = api_addr(&pool);

    // A known window: from the start of this minute; 30 shares of difficulty 1e-10.
    let from = unix_now() / 60 * 60;
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("carol.rig1").await;
    let work = c.notification("mining.notify").await;
    const N: u64 = 30;
    send_shares(&mut c, &work, &en1, 1, N).await;
    let v = wait_json(&api, "/api/history?range=hour&user=carol", "all 30 shares", |v| shares_in(v) == N).await;
    assert_eq!(v["store"], json!("sqlite"));
    assert_eq!(v["instances"], json!(["ckpool"]));
    // The end of the window: past the minute of the last share (it is in the store already).
    let to = (unix_now() / 60 + 1) * 60;
    drop(c);

    // Restart: the day chart comes back from the store at once.
    assert!(pool.stop().unwrap().success());
    assert!(pool.logdir.join("history.sqlite").exists());
    pool.spawn(&[]);
    let api = api_addr(&pool);
    let h = get_json(&api, "/api/history").await;
    assert_eq!(h["store"], json!("sqlite"));
    let day = h["day"].as_array().unwrap();
    assert!(day.iter().any(|p| p[1].as_f64().unwrap() > 0.0), "the day chart lost its points: {h}");
    let v = get_json(&api, "/api/history?range=day&user=carol&worker=carol.rig1").await;
    assert_eq!(shares_in(&v), N, "{v}");

    // payout --measured: the window's hashrate, derived here by hand:
    // 30 × 1e-10 difficulty × 2^32 / (to − from) s, against a 0.01 H/s contract.
    let dir = tempfile::tempdir().unwrap();
    let contracts = dir.path().join("contracts.csv");
    std::fs::write(&contracts, "customer,hashrate,start,end\ncarol,0.01,0,100\nnobody,0.01,0,100\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["payout", "--contracts"])
        .arg(&contracts)
        .args(["--epoch", "0", "--period", "10", "--difficulty", "1", "--subsidy", "50", "--fees", "0", "--measured"])
        .arg("--history-db")
        .arg(pool.logdir.join("history.sqlite"))
        .args(["--measured-from", &from.to_string(), "--measured-to", &to.to_string(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    let carol = j["contracts"].as_array().unwrap().iter().find(|c| c["customer"] == "carol").unwrap();
    let m = &carol["measured"];
    let secs = (to - from) as u128;
    assert_eq!(m["seconds"], json!(secs as u64));
    assert_eq!(m["shares"], json!(N));
    assert_eq!(m["difficulty"], json!("0.000000003"));
    // diff units (1e-12): 30 × 100 = 3000; H/s = 3000 × 2^32 / (1e12 × secs)
    let (num, den) = (3000u128 << 32, 1_000_000_000_000u128 * secs);
    assert_eq!(m["hashrate"], json!((num / den).to_string()));
    // ratio to 0.01 H/s, floored to 4 places: num × 100 × 10^4 / den
    let r = num * 100 * 10_000 / den;
    assert_eq!(m["ratio"], json!(format!("{}.{:04}", r / 10_000, r % 10_000)), "{m}");
    let nobody = j["contracts"].as_array().unwrap().iter().find(|c| c["customer"] == "nobody").unwrap();
    assert_eq!(nobody["measured"]["ratio"], json!("0.0000"));
    // The text output says it too.
    let out = Command::new(env!("CARGO_BIN_EXE_ckpool"))
        .args(["payout", "--contracts"])
        .arg(&contracts)
        .args(["--epoch", "0", "--period", "10", "--difficulty", "1", "--subsidy", "50", "--fees", "0", "--measured"])
        .arg("--history-db")
        .arg(pool.logdir.join("history.sqlite"))
        .args(["--measured-from", &from.to_string(), "--measured-to", &to.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("measured {} H/s from \"carol\"", num / den)), "{text}");
}

/// A PostgreSQL server of Debian's `postgresql` package on a loopback port, in a temp datadir;
/// as root it runs as the `postgres` user (postgres refuses root; setup.sh makes sure the user exists).
struct Postgres {
    child: Option<Child>,
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    /// Settings given to the server (`-c name=value`) besides the port and address.
    settings: Vec<String>,
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

fn pg_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join("initdb").exists()).collect())
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| panic!("PostgreSQL is missing: run `bash contrib/setup.sh` (Debian's postgresql)"))
}

impl Postgres {
    fn as_user(bin: &Path, tool: &str) -> Command {
        if is_root() {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=postgres", "--regid=postgres", "--init-groups", "--"]).arg(bin.join(tool));
            c
        } else {
            Command::new(bin.join(tool))
        }
    }

    fn start() -> Postgres {
        let mut pg = Postgres::init();
        pg.spawn();
        pg
    }

    /// A server with `ssl=on` and the certificate and key of `certs` (made by [`make_certs`]),
    /// copied into its directory and given to the server's user (postgres wants its key 0600).
    fn start_ssl(certs: &Path) -> Postgres {
        let mut pg = Postgres::init();
        for f in ["server.crt", "server.key"] {
            let to = pg.dir.path().join(f);
            std::fs::copy(certs.join(f), &to).unwrap();
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            if is_root() {
                let out = Command::new("chown").arg("postgres:postgres").arg(&to).output().unwrap();
                assert!(out.status.success(), "chown: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        let dir = pg.dir.path().display().to_string();
        pg.settings =
            vec!["ssl=on".into(), format!("ssl_cert_file={dir}/server.crt"), format!("ssl_key_file={dir}/server.key")];
        pg.spawn();
        pg
    }

    fn init() -> Postgres {
        let bin = pg_bin();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let id = |flag: &str| -> u32 {
                let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
                assert!(out.status.success(), "no user postgres: run `bash contrib/setup.sh`");
                String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
            };
            std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            std::os::unix::fs::chown(dir.path(), Some(id("-u")), Some(id("-g"))).unwrap();
        }
        let out = Postgres::as_user(&bin, "initdb")
            .args(["-D"])
            .arg(&data)
            .args(["-U", "ckpool", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        Postgres { child: None, bin, dir, port: common::free_port(), settings: Vec::new() }
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let child = Postgres::as_user(&self.bin, "postgres")
            .arg("-D")
            .arg(&data)
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(self.settings.iter().flat_map(|kv| ["-c", kv.as_str()]))
            .arg("-k")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let listening = || std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
        wait::blocking(&format!("postgres to listen on {}", self.port), Duration::from_secs(30), listening);
    }

    /// Fast shutdown (SIGINT) and wait.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    fn url(&self) -> String {
        format!("postgresql://ckpool:{PG_PASS}@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

const PG_PASS: &str = "pgsecret-do-not-log";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_postgres_and_ride_out_its_outage() {
    let mut pg = Postgres::start();
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut east_cfg = pool_cfg(pool_config(&nodes.a, &address).await);
    east_cfg["dburl"] = json!(pg.url());
    east_cfg["instance"] = json!("east");
    let mut west_cfg = east_cfg.clone();
    west_cfg["instance"] = json!("west");
    let mut east = Pool::start(east_cfg, &[]);
    let west = Pool::start(west_cfg, &[]);
    let (east_api, west_api) = (api_addr(&east), api_addr(&west));

    let mut a = Client::connect(&east.addr()).await;
    let (en1a, _) = a.handshake("alice.rig1").await;
    let work_a = a.notification("mining.notify").await;
    let mut b = Client::connect(&west.addr()).await;
    let (en1b, _) = b.handshake("bob.rig1").await;
    let work_b = b.notification("mining.notify").await;
    send_shares(&mut a, &work_a, &en1a, 1, 10).await;
    send_shares(&mut b, &work_b, &en1b, 1, 7).await;

    // Either instance's API shows both.
    for api in [&east_api, &west_api] {
        let v = wait_json(api, "/api/history?range=hour", "both instances", |v| {
            v["instances"] == json!(["east", "west"]) && shares_in(v) == 17
        })
        .await;
        assert_eq!(v["store"], json!("postgresql"));
        let bob = wait_json(api, "/api/history?range=hour&user=bob", "bob's 7", |v| shares_in(v) == 7).await;
        assert!(bob["points"][0][1].as_f64().unwrap() > 0.0, "{bob}");
        let west_only = get_json(api, "/api/history?range=hour&instance=west").await;
        assert_eq!(shares_in(&west_only), 7);
    }

    // PostgreSQL goes away: the miner is unaffected, the log says so once.
    pg.stop();
    east.wait_log("history: cannot write to postgresql://ckpool@127.0.0.1", Duration::from_secs(30));
    send_shares(&mut a, &work_a, &en1a, 100, 12).await;
    // Still away while the next flushes come: the shares wait in the writer's buffer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    send_shares(&mut a, &work_a, &en1a, 200, 3).await;
    pg.spawn();
    east.wait_log("history: writing to postgresql://ckpool@127.0.0.1", Duration::from_secs(30));
    let v = wait_json(&east_api, "/api/history?range=hour&user=alice", "alice's 25", |v| shares_in(v) == 25).await;
    assert_eq!(v["instances"].as_array().unwrap().len(), 2, "{v}");
    let log = east.log();
    assert_eq!(log.matches("history: cannot write to").count(), 1, "one line per outage:\n{log}");
    let back = log.lines().find(|l| l.contains("history: writing to postgresql")).unwrap();
    assert!(back.contains(", 0 rows dropped while it was away"), "{back}");
    // After the outage, new shares keep flowing into the store.
    send_shares(&mut a, &work_a, &en1a, 300, 2).await;
    wait_json(&west_api, "/api/history?range=hour&user=alice", "alice's 27 seen from west", |v| shares_in(v) == 27)
        .await;
    // A proxy instance writes to the same database: the pools' APIs show its miner too.
    let mut edge_cfg = json!({
        "proxy": [{"url": west.addr(), "auth": "proxyuser.edge", "pass": "x"}],
        "btcaddress": "",
        "dburl": pg.url(),
        "instance": "edge",
    });
    edge_cfg = pool_cfg(edge_cfg);
    let edge = Pool::start_proxy(edge_cfg);
    let mut d = Client::connect(&edge.addr()).await;
    let (en1d, n2d) = d.handshake("dave.rig1").await;
    let work_d = d.notification("mining.notify").await;
    send_shares_n2(&mut d, &work_d, &en1d, 1, 4, n2d).await;
    let v = wait_json(&east_api, "/api/history?range=hour&user=dave", "dave's 4 through the proxy", |v| {
        shares_in(v) == 4 && v["instances"] == json!(["east", "edge", "west"])
    })
    .await;
    assert_eq!(get_json(&east_api, "/api/history?range=hour&instance=edge&user=dave").await["points"], v["points"]);
    for l in [east.log(), west.log(), edge.log()] {
        assert!(!l.contains(PG_PASS), "the dburl password in the log");
    }
}

/// Runs openssl in `dir`; asserts it worked.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().expect("openssl (contrib/setup.sh)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Certificates made with openssl at test time: a CA (`ca.crt`), the server's certificate signed
/// by it for IP 127.0.0.1 only (`server.crt`, `server.key`), and an unrelated CA (`other.crt`).
fn make_certs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for name in ["ca", "other"] {
        let (key, crt, subj) = (format!("{name}.key"), format!("{name}.crt"), format!("/CN=test {name}"));
        let mut a = vec!["req", "-x509", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt];
        a.extend(ec);
        openssl(d, &a);
    }
    let mut a = vec!["req", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr"];
    a.extend(ec);
    openssl(d, &a);
    std::fs::write(d.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
    dir
}

/// Whether the store's own connection is encrypted, as the server sees it (pg_stat_ssl).
fn store_ssl(store: &mut ckpool::history::Store) -> bool {
    let r = store.query("SELECT CASE WHEN ssl THEN 1 ELSE 0 END FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]);
    r.unwrap()[0][0].int() == 1
}

/// `dburl`'s `sslmode` with libpq's meanings, on real servers (one with `ssl=on` and a
/// certificate openssl made, one without TLS), through the history store itself: each mode
/// connects or fails as libpq would, encrypted or not as the server sees it (pg_stat_ssl), and a
/// failure names the mode and why without the password.
#[test]
fn sslmode_as_libpq_means_it() {
    use ckpool::history::{Store, Target};
    let certs = make_certs();
    let c = certs.path().display().to_string();
    let tls = Postgres::start_ssl(certs.path());
    let plain = Postgres::start();
    let open = |url: String| Store::open(&Target::Postgres(url));
    let fails = |url: String, why: &str| {
        let e = open(url.clone()).map(|_| ()).expect_err(&url);
        let text = ckpool::history::store::why(&e);
        assert!(text.contains(why), "{url}: {text}");
        assert!(!text.contains(PG_PASS), "the password in {text}");
        text
    };
    // Encrypted without a root certificate: require, and prefer (the default) when offered.
    for mode in ["?sslmode=require", "?sslmode=prefer", ""] {
        assert!(store_ssl(&mut open(format!("{}{mode}", tls.url())).unwrap()), "{mode}: encrypted");
    }
    // Plain: disable, and allow when plain works; prefer against a server without TLS.
    for mode in ["disable", "allow"] {
        assert!(!store_ssl(&mut open(format!("{}?sslmode={mode}", tls.url())).unwrap()), "{mode}: plain");
    }
    assert!(!store_ssl(&mut open(format!("{}?sslmode=prefer", plain.url())).unwrap()), "prefer, no TLS offered");
    // require against a server without TLS fails, and says so.
    fails(format!("{}?sslmode=require", plain.url()), "server does not support TLS");
    // verify-full with the right root certificate; with another CA's it fails, naming why.
    let full = format!("{}?sslmode=verify-full&sslrootcert={c}/ca.crt", tls.url());
    assert!(store_ssl(&mut open(full).unwrap()), "verify-full");
    let wrong = fails(format!("{}?sslmode=verify-full&sslrootcert={c}/other.crt", tls.url()), "UnknownIssuer");
    assert!(wrong.contains("with sslmode=verify-full"), "{wrong}");
    // The certificate names 127.0.0.1, not "localhost": verify-ca connects, verify-full does not.
    let by_name = tls.url().replace("127.0.0.1", "localhost");
    assert!(store_ssl(&mut open(format!("{by_name}?sslmode=verify-ca&sslrootcert={c}/ca.crt")).unwrap()));
    fails(
        format!("{by_name}?sslmode=verify-full&sslrootcert={c}/ca.crt"),
        "certificate not valid for name \"localhost\"",
    );
    // require with a root certificate verifies as verify-ca (libpq).
    fails(format!("{}?sslmode=require&sslrootcert={c}/other.crt", tls.url()), "UnknownIssuer");
    // The key/value form reads the same parameters.
    let kv = format!(
        "host=127.0.0.1 port={} user=ckpool password={PG_PASS} dbname=postgres sslmode=verify-ca sslrootcert='{c}/ca.crt'",
        tls.port
    );
    assert!(store_ssl(&mut open(kv).unwrap()), "key/value verify-ca");
    // A root certificate file that is not there: an error, even where plain would do (prefer).
    fails(format!("{}?sslmode=verify-ca&sslrootcert={c}/missing.crt", tls.url()), "missing.crt: cannot read");
    fails(format!("{}?sslmode=prefer&sslrootcert={c}/missing.crt", plain.url()), "missing.crt: cannot read");
}

/// A pool whose `dburl` says `sslmode=require` writes its history rows over TLS: the server
/// shows the pool's connections (application_name ckpool-rs) encrypted. A pool with
/// `sslmode=verify-full` and the wrong root certificate says why in one clear line, without the
/// password, and its miner's shares are accepted all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_writes_history_over_tls() {
    let certs = make_certs();
    let pg = Postgres::start_ssl(certs.path());
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut cfg = pool_cfg(pool_config(&nodes.a, &address).await);
    cfg["dburl"] = json!(format!("{}?sslmode=require", pg.url()));
    cfg["instance"] = json!("tls");
    let pool = Pool::start(cfg.clone(), &[]);
    let api = api_addr(&pool);
    let mut a = Client::connect(&pool.addr()).await;
    let (en1, _) = a.handshake("alice.rig1").await;
    let work = a.notification("mining.notify").await;
    send_shares(&mut a, &work, &en1, 1, 5).await;
    let v = wait_json(&api, "/api/history?range=hour", "5 shares over TLS", |v| shares_in(v) == 5).await;
    assert_eq!(v["store"], json!("postgresql"));
    // On the server: every connection of the pool is encrypted.
    let url = format!("{}?sslmode=disable", pg.url());
    let rows = tokio::task::spawn_blocking(move || {
        let mut c = url.parse::<postgres::Config>().unwrap().connect(postgres::NoTls).unwrap();
        c.query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'ckpool-rs'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get::<_, bool>(0))
        .collect::<Vec<bool>>()
    })
    .await
    .unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|ssl| *ssl), "the pool's connections, ssl: {rows:?}");
    let log = pool.log();
    assert!(log.contains("sslmode=require: TLS, certificate not verified"), "{log}");

    // The wrong root certificate: one clear line, the shares still accepted.
    cfg["dburl"] = json!(format!("{}?sslmode=verify-full&sslrootcert={}/other.crt", pg.url(), certs.path().display()));
    cfg["instance"] = json!("wrong-root");
    let mut wrong = Pool::start(cfg, &[]);
    wrong.wait_log("history: cannot write to postgresql://ckpool@127.0.0.1", Duration::from_secs(30));
    let log = wrong.log();
    let line = log.lines().find(|l| l.contains("history: cannot write to")).unwrap();
    assert!(line.contains("with sslmode=verify-full") && line.contains("UnknownIssuer"), "{line}");
    let mut b = Client::connect(&wrong.addr()).await;
    let (en1b, _) = b.handshake("bob.rig1").await;
    let work_b = b.notification("mining.notify").await;
    send_shares(&mut b, &work_b, &en1b, 1, 2).await;
    for l in [pool.log(), wrong.log()] {
        assert!(!l.contains(PG_PASS), "the dburl password in the log");
    }
}
