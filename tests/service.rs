//! The Linux service suite (issue #7): the shipped systemd units, configs, logrotate file,
//! autossh tunnel unit and Debian package, checked with the real tools (systemd-analyze,
//! logrotate, sshd + autossh, dpkg) and the pool binary against a real regtest node pair.
//! Everything listens on 127.0.0.1; every wait has a deadline.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ckpool::bitcoind::{Rpc, RpcError};
use ckpool::config::{Config, RpcAuth, Secret};
use common::sshd::{children, Reaped, Sshd};
use common::{free_port, pool_config, solve, wait, Client, Node, NodePair, Pool};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ckpool");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Runs a command to completion; returns (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

fn unit_value<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).collect()
}

/// CI test 1: the units keep the guide's lines, pass `systemd-analyze verify`, and score "OK" or
/// better in `systemd-analyze security --offline=true`. The example configs parse and every key
/// they use is explained in the README.
#[test]
fn units_verify_and_score_and_configs_parse() {
    let pool = read("systemd/ckpool.service");
    let proxy = read("systemd/ckproxy.service");
    let ssh = read("systemd/stratssh@.service");
    // The guide's lines, unchanged.
    assert_eq!(unit_value(&pool, "ExecStart"), ["/usr/bin/ckpool --log-shares --killold --config /etc/ckpool.conf"]);
    assert_eq!(unit_value(&proxy, "ExecStart"), ["/usr/bin/ckproxy --log-shares --killold --config /etc/ckproxy.conf"]);
    for (u, name) in [(&pool, "ckpool"), (&proxy, "ckproxy")] {
        assert_eq!(unit_value(u, "PIDFile"), [format!("/tmp/{name}/main.pid").as_str()]);
        for (k, v) in [
            ("Type", "notify"),
            ("Restart", "always"),
            ("RestartSec", "30"),
            ("TimeoutStopSec", "30"),
            ("After", "network-online.target"),
            ("User", "ckpool"),
            ("Group", "ckpool"),
            ("ProtectSystem", "strict"),
            ("ReadWritePaths", "/var/log/stratum"),
            ("WantedBy", "multi-user.target"),
        ] {
            assert_eq!(unit_value(u, k), [v], "{name}.service {k}");
        }
        assert!(unit_value(u, "Wants").contains(&"bitcoind.service"), "{name}.service Wants=bitcoind.service");
        assert!(!unit_value(u, "WatchdogSec").is_empty(), "{name}.service WatchdogSec");
    }
    assert_eq!(
        unit_value(&ssh, "ExecStart"),
        ["/usr/bin/autossh -M 0 -NT -o ServerAliveInterval=30 -o ExitOnForwardFailure=yes -o \"ServerAliveCountMax 3\" \
          -i /root/.ssh/p2pkey -L 3334:localhost:3333 -p ${TARGET_PORT} p2p@${TARGET}"]
    );
    assert_eq!(unit_value(&ssh, "Before"), ["ckproxy.service"]);
    assert_eq!(unit_value(&ssh, "EnvironmentFile"), ["/etc/default/p2pssh@%i"]);

    // verify: /usr/bin/ckpool is not installed here, so ExecStart points at the built binary in
    // temporary copies (ckproxy through a symlink named ckproxy, as the package installs it);
    // the template is verified as the instance stratssh@example.service.
    let dir = tempfile::tempdir().unwrap();
    let proxy_link = dir.path().join("ckproxy");
    std::os::unix::fs::symlink(BIN, &proxy_link).unwrap();
    std::fs::write(dir.path().join("ckpool.service"), pool.replace("/usr/bin/ckpool ", &format!("{BIN} "))).unwrap();
    std::fs::write(
        dir.path().join("ckproxy.service"),
        proxy.replace("/usr/bin/ckproxy ", &format!("{} ", proxy_link.display())),
    )
    .unwrap();
    std::fs::write(dir.path().join("stratssh@.service"), &ssh).unwrap();
    assert!(Path::new("/usr/bin/autossh").exists(), "autossh missing: run contrib/setup.sh");
    let units: Vec<PathBuf> =
        ["ckpool.service", "ckproxy.service", "stratssh@example.service"].iter().map(|u| dir.path().join(u)).collect();
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").args(&units));
    println!("systemd-analyze verify {units:?}: ok={ok}\n{out}{err}");
    assert!(ok, "systemd-analyze verify failed:\n{out}{err}");
    for l in err.lines() {
        assert!(
            !["ckpool", "ckproxy", "stratssh", "autossh", ".service:"].iter().any(|w| l.contains(w)),
            "verify complains about our units: {l}"
        );
    }
    // The same check does look at ExecStart: the unmodified unit fails it while the binary is absent.
    if !Path::new("/usr/bin/ckpool").exists() {
        let raw = dir.path().join("raw");
        std::fs::create_dir(&raw).unwrap();
        std::fs::write(raw.join("ckpool.service"), &pool).unwrap();
        let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").arg(raw.join("ckpool.service")));
        assert!(!ok && (out + &err).contains("/usr/bin/ckpool"), "verify did not notice /usr/bin/ckpool missing");
    }

    // Security exposure, as `systemd-analyze security --offline=true <unit file>` prints it.
    for (unit, limit) in [("ckpool.service", 2.0), ("ckproxy.service", 2.0), ("stratssh@example.service", 5.0)] {
        let (ok, out, err) =
            run(Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(dir.path().join(unit)));
        assert!(ok, "systemd-analyze security {unit}: {err}");
        let line = out.lines().find(|l| l.contains("Overall exposure level")).expect("exposure line");
        println!("systemd-analyze security --offline=true {unit}: {line}");
        let score: f64 = line.split(": ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        let level = line.split(": ").nth(1).unwrap().split_whitespace().nth(1).unwrap();
        assert!(score <= limit, "{unit}: exposure {score} > {limit}");
        assert!(["PERFECT", "SAFE", "OK"].contains(&level) || unit.starts_with("stratssh"), "{unit}: {level}");
    }

    // The example configs: ckpool's JSON with the trailing comment text, valid for their mode,
    // and every key explained in the README.
    let readme = read("README.md");
    for (file, proxy_mode) in [("etc/ckpool.conf", false), ("etc/ckproxy.conf", true)] {
        let text = read(file);
        assert!(text.contains("}\nComments from here on are ignored."), "{file}");
        let cfg = Config::parse(&text, Path::new(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(cfg.unknown_keys.is_empty(), "{file}: {:?}", cfg.unknown_keys);
        if proxy_mode {
            cfg.require_proxy().unwrap();
        } else {
            cfg.require_pool().unwrap();
        }
        let mut stream = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
        let obj = stream.next().unwrap().unwrap();
        for key in obj.as_object().unwrap().keys() {
            assert!(readme.contains(&format!("| `{key}` |")), "README does not explain {file}'s key {key}");
        }
    }
}

/// Issue #18: the optional socket units (`ckpool.socket`, `ckproxy.socket`) pass
/// `systemd-analyze verify` beside their services, listen on the shipped configs' serverurl
/// (the pool takes an inherited socket by exact address), and leave the services' guide lines
/// alone, so operators who do not enable them see no change.
#[test]
fn socket_units_verify_and_match_the_shipped_configs() {
    let dir = tempfile::tempdir().unwrap();
    let proxy_link = dir.path().join("ckproxy");
    std::os::unix::fs::symlink(BIN, &proxy_link).unwrap();
    let mut units = Vec::new();
    for (name, bin) in [("ckpool", BIN.to_string()), ("ckproxy", proxy_link.display().to_string())] {
        let socket = read(&format!("systemd/{name}.socket"));
        let service = read(&format!("systemd/{name}.service"));
        assert_eq!(unit_value(&socket, "Service"), [format!("{name}.service").as_str()]);
        assert_eq!(unit_value(&socket, "WantedBy"), ["sockets.target"]);
        assert!(unit_value(&service, "Sockets").is_empty(), "{name}.service must not need the socket unit");
        assert!(unit_value(&service, "Requires").is_empty(), "{name}.service must not need the socket unit");
        // ListenStream= is a serverurl entry of the shipped config, exactly.
        let cfg = Config::parse(&read(&format!("etc/{name}.conf")), Path::new("conf")).unwrap();
        let listen = unit_value(&socket, "ListenStream");
        assert_eq!(listen.len(), 1, "{name}.socket: one ListenStream=");
        let addr: std::net::SocketAddr = listen[0].parse().unwrap();
        assert!(cfg.serverurl.contains(&addr), "{name}.socket listens on {addr}, not a serverurl of etc/{name}.conf");
        std::fs::write(dir.path().join(format!("{name}.socket")), &socket).unwrap();
        std::fs::write(
            dir.path().join(format!("{name}.service")),
            service.replace(&format!("/usr/bin/{name} "), &format!("{bin} ")),
        )
        .unwrap();
        units.push(dir.path().join(format!("{name}.socket")));
    }
    let (ok, out, err) = run(Command::new("systemd-analyze").arg("verify").args(&units));
    println!("systemd-analyze verify {units:?}: ok={ok}\n{out}{err}");
    assert!(ok, "systemd-analyze verify failed:\n{out}{err}");
    for l in err.lines() {
        assert!(
            !["ckpool", "ckproxy", ".socket:"].iter().any(|w| l.contains(w)),
            "verify complains about our units: {l}"
        );
    }
}

/// `ckpool rpcauth`: a real node started with the printed `-rpcauth=` lines accepts their
/// passwords (generated and given) and refuses a wrong one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpcauth_line_is_accepted_by_a_real_node() {
    let rpcauth = |args: &[&str]| -> (String, String) {
        let (ok, out, err) = run(Command::new(BIN).arg("rpcauth").args(args));
        assert!(ok, "ckpool rpcauth {args:?}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(lines[0], "String to be appended to bitcoin.conf:");
        assert_eq!(lines[2], "Your password:");
        (lines[1].to_string(), lines[3].to_string())
    };
    let (line_gen, pass_gen) = rpcauth(&["alice"]);
    let (line_given, pass_given) = rpcauth(&["bob", "correct horse battery staple"]);
    assert_eq!(pass_given, "correct horse battery staple");
    assert_eq!(pass_gen.len(), 43, "32 random bytes, URL-safe base64: {pass_gen}");
    for (line, user) in [(&line_gen, "alice"), (&line_given, "bob")] {
        let rest = line.strip_prefix(&format!("rpcauth={user}:")).unwrap_or_else(|| panic!("{line}"));
        let (salt, mac) = rest.split_once('$').unwrap();
        assert!(salt.len() == 32 && mac.len() == 64, "{line}");
        assert!(rest.chars().all(|c| c == '$' || c.is_ascii_hexdigit()), "{line}");
    }
    // Two runs never share a salt.
    assert_ne!(rpcauth(&["bob", "x"]).0, rpcauth(&["bob", "x"]).0);
    // A user name bitcoind would misread is refused.
    let (ok, _, err) = run(Command::new(BIN).args(["rpcauth", "a:b", "pw"]));
    assert!(!ok && err.contains("':'"), "{err}");

    let node = Node::start(&[&format!("-{line_gen}"), &format!("-{line_given}")]).await;
    let call = |user: &str, pass: &str| {
        let rpc = Rpc::single(
            &format!("http://127.0.0.1:{}/", node.rpc_port),
            RpcAuth::UserPass { user: user.into(), pass: Secret::new(pass) },
            Duration::from_secs(20),
        );
        async move { rpc.call("getblockchaininfo", json!([])).await }
    };
    call("alice", &pass_gen).await.expect("generated password accepted");
    call("bob", &pass_given).await.expect("given password accepted");
    for (user, pass) in [("alice", "wrong"), ("bob", pass_gen.as_str()), ("alice", pass_given.as_str())] {
        match call(user, pass).await {
            Err(RpcError::Unauthorized { .. }) => {}
            other => panic!("{user} with a wrong password: expected 401, got {other:?}"),
        }
    }
}

/// Collects sd-notify datagrams sent to a NOTIFY_SOCKET, with their arrival times.
struct NotifySocket {
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NotifySocket {
    fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, s) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = sock.recv(&mut buf) {
                    g.lock().unwrap().push((Instant::now(), String::from_utf8_lossy(&buf[..n]).into_owned()));
                }
            }
        });
        NotifySocket { path, got, stop, thread: Some(thread) }
    }

    fn messages(&self) -> Vec<(Instant, String)> {
        self.got.lock().unwrap().clone()
    }

    fn first(&self, field: &str) -> Option<(Instant, String)> {
        self.messages().into_iter().find(|(_, m)| m.lines().any(|l| l == field))
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// CI test 2: sd-notify as systemd sees it. The pool runs with NOTIFY_SOCKET, WATCHDOG_USEC and
/// WATCHDOG_PID (its own pid, as systemd sets it) against a node that cannot give templates yet
/// (no peer): no READY=1 while it waits and a miner gets no work; once the node has a peer,
/// READY=1 arrives with a STATUS= line and miners get notify; WATCHDOG=1 comes at half the
/// interval; SIGTERM gives STOPPING=1 and exit code 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_status_watchdog_stopping() {
    let b = Node::start(&[]).await;
    let a = Node::start(&[]).await;
    let address = a.new_address().await;
    let mut cfg = pool_config(&a, &address).await;
    cfg["update_interval"] = json!(1);
    let mut pool = Pool::prepare(cfg);
    let notify = NotifySocket::bind(pool.dir.path());
    const WATCHDOG_USEC: u64 = 1_000_000;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(BIN)
        .args(pool.args(&[]))
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", WATCHDOG_USEC.to_string());
    pool.spawn_command(cmd);

    // The pool is up and listening, but the node has no peer: getblocktemplate fails.
    pool.wait_log("listening for miners", Duration::from_secs(30));
    wait::blocking("a STATUS= line while starting", Duration::from_secs(30), || {
        notify.messages().iter().any(|(_, m)| m.contains("STATUS=starting"))
    });
    let mut early = Client::connect(&pool.addr()).await;
    early.handshake("early").await;
    let quiet_until = Instant::now() + Duration::from_secs(3);
    while let Some(line) = early.read_within(quiet_until.saturating_duration_since(Instant::now())).await {
        assert_ne!(line["method"], json!("mining.notify"), "work before the node can give templates: {line}");
        early.backlog.push(line);
    }
    assert!(notify.first("READY=1").is_none(), "READY=1 before any work: {:?}", notify.messages());

    a.connect_to(&b).await;
    let (_, ready) =
        wait::until_or("READY=1", Duration::from_secs(60), || notify.first("READY=1"), || pool.log()).await;
    assert!(ready.contains("STATUS=ckpool ready: serving height"), "{ready}");
    // Work is served: the waiting miner and a new one get a notify.
    let n = early.notification("mining.notify").await;
    let mut late = Client::connect(&pool.addr()).await;
    let (en1, _) = late.handshake("late").await;
    let n2 = late.notification("mining.notify").await;
    let share = solve(&n2, &en1, "0000000000000001", "0.0001", false).unwrap();
    let id = late.request("mining.submit", share).await;
    assert_eq!(late.reply(id).await["result"], json!(true));
    assert_eq!(n["params"][1], n2["params"][1]);

    // WATCHDOG=1 at WATCHDOG_USEC/2: the pool says the period it chose (no wall-clock band on a
    // shared machine), and the keepalives keep coming while it serves (the deadline only bounds
    // the wait).
    assert!(pool.log().contains("systemd watchdog: keepalive every 500ms"), "{}", pool.log());
    let pings = || notify.messages().iter().filter(|(_, m)| m.lines().any(|l| l == "WATCHDOG=1")).count();
    let seen = pings();
    wait::blocking("six more WATCHDOG=1 keepalives", Duration::from_secs(60), || pings() >= seen + 6);
    println!("{} WATCHDOG=1 pings (WATCHDOG_USEC {WATCHDOG_USEC})", pings());

    let status = pool.stop().expect("pool was running");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM: {status}");
    let stopping = notify.first("STOPPING=1").expect("STOPPING=1 after SIGTERM");
    assert!(stopping.1.contains("STATUS=stopping"), "{}", stopping.1);
    let msgs = notify.messages();
    println!("sd-notify messages: {}", msgs.len());
    for (_, m) in msgs.iter().filter(|(_, m)| !m.contains("WATCHDOG=1")) {
        println!("  {}", m.replace('\n', " | "));
    }
}

fn authorized_lines(logdir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(logdir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("ckpool.log") {
            continue;
        }
        let text = if name.ends_with(".gz") {
            let (ok, o, err) = run(Command::new("gzip").arg("-dc").arg(e.path()));
            assert!(ok, "gzip -dc {name}: {err}");
            o
        } else {
            std::fs::read_to_string(e.path()).unwrap()
        };
        for l in text.lines().filter(|l| l.contains("miner authorized")) {
            out.push((name.clone(), l.to_string()));
        }
    }
    out
}

fn worker_of(line: &str) -> String {
    line.split_whitespace().find_map(|w| w.strip_prefix("worker=")).unwrap_or("").to_string()
}

/// CI test 3: the shipped logrotate file run by the real logrotate (`-f -s statefile`, twice)
/// while miners connect; paths rewritten to the test's logdir, the group to `nogroup`, the
/// postrotate to `kill -HUP <pool pid>`. The logdir is group-writable by a non-root group as
/// /var/log/stratum is, which logrotate accepts only thanks to the file's `su` line. No
/// "miner authorized" line is lost or doubled across ckpool.log, .1 and .2.gz, and the pool
/// writes to the new file after rotation.
///
/// Rotations and connections are synchronised, not timed: a group of miners connects before
/// each rotation (which starts once their lines are in ckpool.log) and one after both (once
/// the pool reopened the file: its SIGHUP line comes first in the new file), so each group's
/// lines must be in its own file; one more miner connects while each rotation runs, and its
/// line must be in one file or the other, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logrotate_with_the_shipped_file_loses_no_line() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let pool = Pool::start(pool_config(&nodes.a, &address).await, &[]);
    let logdir = pool.logdir.clone();
    let nogroup = 65534;
    std::os::unix::fs::chown(&logdir, Some(0), Some(nogroup)).unwrap();
    std::fs::set_permissions(&logdir, std::fs::Permissions::from_mode(0o770)).unwrap();

    let shipped = read("etc/logrotate.d/stratum");
    assert!(shipped.contains("postrotate") && shipped.contains("systemctl kill --signal=HUP"), "{shipped}");
    let conf = pool.dir.path().join("stratum.logrotate");
    let state = pool.dir.path().join("logrotate.state");
    std::fs::write(&conf, &shipped).unwrap();
    let (ok, _, err) = run(Command::new("sed")
        .arg("-i")
        .args([
            "-e",
            &format!("s#/var/log/stratum/#{}/#g", logdir.display()),
            "-e",
            "s#root ckpool#root nogroup#",
            "-e",
            &format!("s#^\\(\\s*\\)systemctl kill .*ckpool.service.*#\\1kill -HUP {}#", pool.pid()),
            "-e",
            "/systemctl kill .*ckproxy.service/d",
        ])
        .arg(&conf));
    assert!(ok, "{err}");
    let rewritten = std::fs::read_to_string(&conf).unwrap();
    println!("logrotate config used:\n{rewritten}");
    assert!(rewritten.contains(&format!("kill -HUP {}", pool.pid())) && !rewritten.contains("systemctl"));

    // Without `su`, logrotate refuses such a directory: the shipped line is needed.
    let no_su = pool.dir.path().join("no-su.logrotate");
    std::fs::write(&no_su, rewritten.lines().filter(|l| !l.trim().starts_with("su ")).collect::<Vec<_>>().join("\n"))
        .unwrap();
    let (_, o, e) = run(Command::new("logrotate").arg("-d").arg("-f").arg("-s").arg(&state).arg(&no_su));
    assert!((o + &e).contains("insecure permissions"), "logrotate accepted a group-writable dir without su");

    const GROUP: usize = 8;
    let addr = pool.addr();
    let current = || std::fs::read_to_string(logdir.join("ckpool.log")).unwrap_or_default();
    let group = |g: usize| (0..GROUP).map(move |i| format!("g{g}w{i}"));
    let mut _held = Vec::new();
    for g in 0..3 {
        for w in group(g) {
            let mut c = Client::connect(&addr).await;
            c.handshake(&w).await;
            _held.push(c);
        }
        wait::blocking(&format!("group {g}'s lines in ckpool.log"), Duration::from_secs(20), || {
            let text = current();
            let have: Vec<String> = text.lines().filter(|l| l.contains("miner authorized")).map(worker_of).collect();
            group(g).all(|w| have.contains(&w))
        });
        if g == 2 {
            break;
        }
        let racer = tokio::spawn({
            let addr = addr.clone();
            async move {
                let mut c = Client::connect(&addr).await;
                c.handshake(&format!("race{g}")).await;
                c
            }
        });
        let (c, s) = (conf.clone(), state.clone());
        let (ok, o, e) =
            tokio::task::spawn_blocking(move || run(Command::new("logrotate").arg("-f").arg("-s").arg(&s).arg(&c)))
                .await
                .unwrap();
        assert!(ok, "logrotate failed:\n{o}{e}");
        _held.push(racer.await.unwrap());
        wait::blocking(
            &format!("the pool to reopen ckpool.log after rotation {}", g + 1),
            Duration::from_secs(20),
            || current().contains("SIGHUP: reopening log files"),
        );
    }
    let mut files: Vec<String> =
        std::fs::read_dir(&logdir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    files.sort();
    println!("logdir after two rotations: {files:?}");
    for f in ["ckpool.log", "ckpool.log.1", "ckpool.log.2.gz"] {
        assert!(files.contains(&f.to_string()), "{f} missing: {files:?}");
    }

    // After rotation the pool writes to the new file (created 0660 by logrotate's `create`).
    let meta = std::fs::metadata(logdir.join("ckpool.log")).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, nogroup), "new ckpool.log mode/group");
    let mut after = Client::connect(&pool.addr()).await;
    after.handshake("after").await;
    wait::blocking("the new ckpool.log to get the next line", Duration::from_secs(20), || {
        std::fs::read_to_string(logdir.join("ckpool.log")).unwrap().contains("worker=after")
    });
    assert!(!std::fs::read_to_string(logdir.join("ckpool.log.1")).unwrap().contains("worker=after"));

    // Every authorize line exactly once, across the three files. The log is written in order, so
    // once the later miner's line is in, every earlier line is written (no timed settle).
    let lines: Vec<(String, String)> =
        authorized_lines(&logdir).into_iter().filter(|(_, l)| worker_of(l) != "after").collect();
    let mut workers: Vec<String> = lines.iter().map(|(_, l)| worker_of(l)).collect();
    workers.sort();
    let mut expected: Vec<String> = (0..3).flat_map(group).chain(["race0".into(), "race1".into()]).collect();
    expected.sort();
    assert_eq!(workers, expected, "lost or doubled lines: {lines:#?}");
    for (g, file) in ["ckpool.log.2.gz", "ckpool.log.1", "ckpool.log"].into_iter().enumerate() {
        for w in group(g) {
            assert!(lines.iter().any(|(f, l)| f == file && worker_of(l) == w), "{w} not in {file}: {lines:#?}");
        }
    }
    let per_file: HashMap<&str, usize> = lines.iter().fold(HashMap::new(), |mut m, (f, _)| {
        *m.entry(f.as_str()).or_default() += 1;
        m
    });
    println!("authorize lines per file: {per_file:?}");
}

/// Splits a systemd command line: whitespace-separated words, double quotes group a word.
fn split_command_line(s: &str) -> Vec<String> {
    let (mut words, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for ch in s.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// Connects through `addr` to the pool, mines one share and checks it is accepted.
async fn share_through(addr: &str, worker: &str, en2: &str) {
    let mut c = Client::connect(addr).await;
    let (en1, _) = c.handshake(worker).await;
    let n = c.notification("mining.notify").await;
    let share = solve(&n, &en1, en2, "0.0001", false).unwrap();
    let id = c.request("mining.submit", share).await;
    let r = c.reply(id).await;
    assert_eq!(r["result"], json!(true), "share through the tunnel: {r}");
}

/// CI test 4: the stratssh@ unit's autossh command line against a real sshd on loopback. A
/// stratum miner goes through the tunnel to the pool and gets a share accepted; the ssh
/// connection is then cut and autossh brings the tunnel back, and a new miner through it works.
/// Then ckproxy, as the guide runs it, reaches the pool through the tunnel (localhost:3334 in the
/// guide; the test's port here): a miner on the proxy gets a share accepted and forwarded; after
/// the ssh process is killed and autossh restores the tunnel, the proxy reconnects by itself and
/// the same miner, given a new extranonce1, gets shares accepted again.
///
/// What differs from production: ports, key and host come from the test (an env file in the
/// p2pssh@ format gives TARGET and TARGET_PORT), the login p2p exists for the test's sshd alone
/// (tests/common/sshd.rs), and ssh gets `-o UserKnownHostsFile=<test file> -o BatchMode=yes` so
/// the test never reads or writes root's own known_hosts. tests/systemd.rs runs the unit itself
/// under systemd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autossh_tunnel_carries_a_miner_and_recovers() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut pool = Pool::start(pool_config(&nodes.a, &address).await, &[]);
    // A real sshd on loopback (tests/common/sshd.rs), throwaway keys, the unit's login p2p.
    let sshd = Sshd::start("p2p");
    let ssh_port = sshd.port;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("known_hosts"), sshd.known_hosts_line()).unwrap();

    // The unit's ExecStart, expanded as systemd would with an env file in p2pssh@'s format.
    let unit = read("systemd/stratssh@.service");
    let exec = unit_value(&unit, "ExecStart")[0].to_string();
    let example = read("etc/default/p2pssh@example");
    assert!(
        example.lines().any(|l| l.starts_with("TARGET=")) && example.lines().any(|l| l.starts_with("TARGET_PORT="))
    );
    let env_file = format!("TARGET=127.0.0.1\nTARGET_PORT={ssh_port}\n");
    let mut line = exec.clone();
    for l in env_file.lines() {
        let (k, v) = l.split_once('=').unwrap();
        line = line.replace(&format!("${{{k}}}"), v);
    }
    let tunnel_port = free_port();
    let pool_port = pool.port;
    line = line
        .replace("/root/.ssh/p2pkey", &sshd.client_key().display().to_string())
        .replace("-L 3334:localhost:3333", &format!("-L {tunnel_port}:localhost:{pool_port}"))
        .replace("-NT ", &format!("-NT -o UserKnownHostsFile={} -o BatchMode=yes ", d.join("known_hosts").display()));
    assert!(!line.contains('$') && !line.contains("3334"), "{line}");
    let words = split_command_line(&line);
    assert!(words.contains(&"ServerAliveCountMax 3".to_string()), "{words:?}");
    println!("autossh command: {words:?}");
    let mut env_vars: Vec<(String, String)> = unit_value(&unit, "Environment")
        .iter()
        .map(|v| {
            let (k, v) = v.trim_matches('"').split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    env_vars.push(("AUTOSSH_LOGFILE".into(), d.join("autossh.log").display().to_string()));
    assert!(env_vars.iter().any(|(k, v)| k == "AUTOSSH_GATETIME" && v == "0"));
    let autossh = Reaped(
        Command::new(&words[0])
            .args(&words[1..])
            .envs(env_vars)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("autossh.stderr")).unwrap())
            .spawn()
            .expect("start autossh"),
    );
    let tunnel = format!("127.0.0.1:{tunnel_port}");
    let logs = || {
        let mut t = String::new();
        let _ = std::fs::File::open(d.join("autossh.log")).and_then(|mut h| h.read_to_string(&mut t));
        format!("--- sshd.log\n{}--- autossh.log\n{t}", sshd.log())
    };
    let tunnel_addr: std::net::SocketAddr = tunnel.parse().unwrap();
    let up = || std::net::TcpStream::connect_timeout(&tunnel_addr, Duration::from_millis(200)).is_ok();
    wait::blocking_or("the tunnel to come up", Duration::from_secs(30), up, logs);
    assert!(sshd.log().contains("Accepted publickey for p2p from 127.0.0.1"), "the unit's login:\n{}", logs());
    // On regtest every share is also a block: wait for the node to take it before going on, so
    // later work is not overtaken by this block.
    let h = nodes.a.height().await;
    share_through(&tunnel, "via-tunnel", "0000000000000001").await;
    pool.wait_log("worker=via-tunnel", Duration::from_secs(10));
    nodes.a.wait_height_above(h, "a block through the tunnel").await;

    // ckproxy through the tunnel, with a miner that takes set_extranonce.
    let proxy = Pool::start_proxy(json!({
        "proxy": [{"url": tunnel.clone(), "auth": "tunnelproxy.rig", "pass": "x"}],
        "mindiff": 0.0001, "startdiff": 0.0001,
    }));
    let mut pm = Client::connect(&proxy.addr()).await;
    let xs = pm.request("mining.extranonce.subscribe", json!([])).await;
    let (mut pen1, _) = pm.handshake("behind.proxy").await;
    assert_eq!(pm.reply(xs).await["result"], json!(true));
    // Work on the tip the tunnel's block made (the pool may still have been on the old one when
    // the proxy subscribed: a share on that work would be stale).
    let tip = nodes.a.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let n = pm.notify_on_tip(&tip).await;
    let id = pm.request("mining.submit", solve(&n, &pen1, "00000001", "0.0001", false).unwrap()).await;
    assert_eq!(pm.reply(id).await["result"], json!(true));
    wait::blocking("the pool to see the proxy's share", Duration::from_secs(20), || {
        pool.share_lines().iter().any(|l| l["workername"] == json!("tunnelproxy.rig") && l["result"] == json!(true))
    });

    // Kill the ssh process autossh runs (SIGKILL: no chance to clean up, as after a crash).
    let autossh_pid = autossh.0.id();
    let ssh_pids = children(autossh_pid);
    assert_eq!(ssh_pids.len(), 1, "autossh should run one ssh: {ssh_pids:?}");
    let old = ssh_pids[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    wait::blocking("autossh to start a new ssh", Duration::from_secs(30), || {
        let c = children(autossh_pid);
        !c.is_empty() && !c.contains(&old)
    });
    let new = children(autossh_pid)[0];
    println!("ssh pid {old} killed; autossh started ssh pid {new}");
    // The new ssh must have the forward up.
    let tunnel_ref = &tunnel;
    let restored = move || async move {
        matches!(
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(tunnel_ref)).await,
            Ok(Ok(_))
        )
    };
    wait::until_async_or("the tunnel to be restored", Duration::from_secs(30), restored, logs).await;
    let h = nodes.a.height().await;
    share_through(&tunnel, "via-tunnel-again", "0000000000000002").await;
    // The operator log is written by its own thread: give the line a moment.
    pool.wait_log("worker=via-tunnel-again", Duration::from_secs(10));
    nodes.a.wait_height_above(h, "a block through the tunnel").await;
    assert_eq!(children(autossh_pid), vec![new], "one ssh after the restart");

    // The proxy lost its upstream with the old ssh and came back through the new one by itself.
    let x = pm.skip_to("mining.set_extranonce").await;
    pen1 = x["params"][0].as_str().unwrap().to_string();
    let tip = nodes.a.call("getbestblockhash", json!([])).await.as_str().unwrap().to_string();
    let n = pm.notify_on_tip(&tip).await;
    let id = pm.request("mining.submit", solve(&n, &pen1, "00000002", "0.0001", false).unwrap()).await;
    let r = pm.reply(id).await;
    assert_eq!(r["result"], json!(true), "share through the proxy after the tunnel came back: {r}\n{}", proxy.log());
    let accepted_upstream = || {
        pool.share_lines()
            .iter()
            .filter(|l| l["workername"] == json!("tunnelproxy.rig") && l["result"] == json!(true))
            .count()
    };
    wait::blocking("the pool to see the proxy's share after the reconnect", Duration::from_secs(20), || {
        accepted_upstream() >= 2
    });
}

/// CI test 6: `--killold`. A second instance with it takes over from the first (which drains and
/// exits 0); without it, the second refuses with a clear message and a non-zero exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killold_takes_over_and_refuses_without_it() {
    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let mut first = Pool::start(pool_config(&nodes.a, &address).await, &[]);
    let pidfile = first.sockdir().join("main.pid");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), first.pid().to_string());

    // Without --killold: refused, the first keeps serving.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&first.config_path)
        .arg("--sockdir")
        .arg(first.sockdir())
        .arg("-q")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "second instance without --killold started");
    assert!(
        err.contains("another instance is running")
            && err.contains(&first.pid().to_string())
            && err.contains("--killold"),
        "unclear refusal: {err}"
    );
    assert!(first.try_wait().is_none(), "the first instance died");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), first.pid().to_string());
    let mut c = Client::connect(&first.addr()).await;
    c.handshake("still-first").await;
    c.notification("mining.notify").await;

    // With --killold (the unit's command line): the first exits cleanly, the second serves.
    let mut second = Pool::prepare(json!({}));
    second.port = first.port;
    second.logdir = first.logdir.clone();
    let mut cmd = Command::new(BIN);
    cmd.args(first.args(&[]));
    second.spawn_command(cmd);
    let status =
        wait::blocking("the first instance to exit after --killold", Duration::from_secs(30), || first.try_wait());
    assert_eq!(status.code(), Some(0), "first instance exit after --killold's SIGTERM: {status}");
    wait::blocking("the second instance to be ready", Duration::from_secs(60), || {
        first.log().matches("ckpool ready").count() == 2
    });
    assert!(second.try_wait().is_none(), "second instance exited");
    assert_eq!(std::fs::read_to_string(&pidfile).unwrap().trim(), second.pid().to_string());
    assert!(first.log().contains("--killold: stopping the running instance"));
    let mut c = Client::connect(&second.addr()).await;
    let (en1, _) = c.handshake("second").await;
    let n = c.notification("mining.notify").await;
    let share = solve(&n, &en1, "0000000000000003", "0.0001", false).unwrap();
    let id = c.request("mining.submit", share).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    assert_eq!(second.stop().and_then(|s| s.code()), Some(0));
}

/// Expands a systemd system call group (`@name`) or name to system call names, as
/// `systemd-analyze syscall-filter` lists them (nested groups resolved).
fn syscall_set(entry: &str, cache: &mut HashMap<String, Vec<String>>) -> Vec<String> {
    if !entry.starts_with('@') {
        return vec![entry.to_string()];
    }
    if let Some(v) = cache.get(entry) {
        return v.clone();
    }
    let (ok, out, err) = run(Command::new("systemd-analyze").args(["syscall-filter", entry]));
    assert!(ok, "systemd-analyze syscall-filter {entry}: {err}");
    let mut names = Vec::new();
    for l in out.lines().skip(1).map(str::trim) {
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        names.extend(syscall_set(l, cache));
    }
    cache.insert(entry.to_string(), names.clone());
    names
}

/// The unit's sandbox does not break the pool: the pool runs under strace (start, a miner with
/// an accepted share, SIGHUP, SIGTERM) and every system call it makes is allowed by the unit's
/// `SystemCallFilter=` lines and every socket it opens is of a family in
/// `RestrictAddressFamilies=`, no memory mapping is both writable and executable
/// (`MemoryDenyWriteExecute=`), nothing is written outside the log and socket dirs
/// (`ProtectSystem=strict`, `ReadWritePaths=`, `PrivateTmp=`), and only per-process /proc and
/// pseudo devices are opened (`ProcSubset=pid`, `PrivateDevices=`). (systemd is not PID 1 here, so the unit cannot be started for
/// real; this checks the filters the unit declares against what the program does.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_sandbox_allows_what_the_pool_does() {
    let unit = read("systemd/ckpool.service");
    let mut cache = HashMap::new();
    let mut allowed: std::collections::HashSet<String> = std::collections::HashSet::new();
    for v in unit_value(&unit, "SystemCallFilter") {
        let (deny, list) = match v.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, v),
        };
        for e in list.split_whitespace() {
            for name in syscall_set(e, &mut cache) {
                if deny {
                    allowed.remove(&name);
                } else {
                    allowed.insert(name);
                }
            }
        }
    }
    // systemd always lets these through (the process must be able to exit).
    for n in ["execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"] {
        allowed.insert(n.to_string());
    }
    assert!(allowed.contains("epoll_wait") && !allowed.contains("setrlimit") && !allowed.contains("chown"));
    let families: Vec<&str> = unit_value(&unit, "RestrictAddressFamilies")[0].split_whitespace().collect();

    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    // With the operator API on, as the shipped ckpool.conf has it.
    let mut config = pool_config(&nodes.a, &address).await;
    config["apiurl"] = json!(["127.0.0.1:0"]);
    let mut pool = Pool::prepare(config);
    let trace = pool.dir.path().join("strace.out");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-s", "4096", "-o"]).arg(&trace).arg("--").arg(BIN).args(pool.args(&[]));
    pool.spawn_command(cmd);
    pool.wait_log("ckpool ready", Duration::from_secs(90));
    let tracee = children(pool.pid());
    assert_eq!(tracee.len(), 1, "strace runs one ckpool: {tracee:?}");
    let tracee = nix::unistd::Pid::from_raw(tracee[0] as i32);
    let mut c = Client::connect(&pool.addr()).await;
    let (en1, _) = c.handshake("traced").await;
    let n = c.notification("mining.notify").await;
    let share = solve(&n, &en1, "0000000000000001", "0.0001", false).unwrap();
    let id = c.request("mining.submit", share).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let log = pool.log();
    let api = log.lines().find_map(|l| l.split_once("serving the operator API on ")).expect("the API's line").1;
    let api = api.split_whitespace().next().unwrap().to_string();
    let mut s = std::net::TcpStream::connect(&api).unwrap();
    std::io::Write::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("ckpool_shares_total"), "{answer}");
    nix::sys::signal::kill(tracee, nix::sys::signal::Signal::SIGHUP).unwrap();
    pool.wait_log("SIGHUP: reopening", Duration::from_secs(20));
    drop(c);
    nix::sys::signal::kill(tracee, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait::blocking("the traced pool to exit", Duration::from_secs(60), || pool.try_wait().is_some());
    assert!(pool.log().contains("ckpool stopped"), "{}", pool.log());

    let text = std::fs::read_to_string(&trace).unwrap();
    let writable = [pool.logdir.display().to_string(), pool.sockdir().display().to_string()];
    let mut paths: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut used: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut socket_families: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for l in text.lines() {
        let rest = l.split_once(' ').map(|(_, r)| r.trim_start()).unwrap_or("");
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let after = &rest[name.len()..];
        if name.is_empty() || !(after.starts_with('(') || after.starts_with(" resumed")) {
            continue;
        }
        if let Some(args) = after.strip_prefix("(").filter(|_| name == "socket" || name == "socketpair") {
            socket_families.insert(args.split(',').next().unwrap().trim().to_string());
        }
        // MemoryDenyWriteExecute=: no writable+executable mapping, no mapping made executable later.
        let wx = (name == "mmap" && after.contains("PROT_WRITE") && after.contains("PROT_EXEC"))
            || (name.ends_with("mprotect") && after.contains("PROT_EXEC"));
        assert!(!wx, "MemoryDenyWriteExecute= would refuse: {l}");
        // ProtectSystem=strict + ReadWritePaths=/var/log/stratum (here: the logdir) + PrivateTmp
        // (the sockdir): nothing is written elsewhere. ProcSubset=pid: only per-process /proc.
        // PrivateDevices: only the pseudo devices.
        let path = after.split('"').nth(1).unwrap_or("");
        let writes = match name.as_str() {
            "openat" | "open" | "creat" => {
                ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"].iter().any(|f| after.contains(f))
            }
            "mkdir" | "mkdirat" | "unlink" | "unlinkat" | "rename" | "renameat" | "renameat2" | "rmdir" => true,
            _ => false,
        };
        let path_call = matches!(name.as_str(), "openat" | "open" | "creat" | "statx" | "newfstatat" | "access");
        if !path.is_empty() && (writes || path_call) {
            if writes && !path.starts_with(writable[0].as_str()) && !path.starts_with(writable[1].as_str()) {
                assert!(path.starts_with("/dev/null"), "writes outside ReadWritePaths/private /tmp: {l}");
            }
            if let Some(p) = path.strip_prefix("/proc/") {
                let first = p.split('/').next().unwrap();
                // glibc's malloc reads overcommit_memory and copes when it is missing.
                assert!(
                    first == "self"
                        || first == "thread-self"
                        || first.chars().all(|c| c.is_ascii_digit())
                        || path == "/proc/sys/vm/overcommit_memory",
                    "ProcSubset=pid hides {path}: {l}"
                );
            }
            if let Some(dev) = path.strip_prefix("/dev/") {
                assert!(
                    ["null", "zero", "full", "random", "urandom", "tty", "pts", "shm"]
                        .iter()
                        .any(|d| dev.starts_with(d)),
                    "PrivateDevices= hides {path}: {l}"
                );
            }
            if writes || ["/proc/", "/dev/", "/sys/"].iter().any(|p| path.starts_with(p)) {
                paths.insert(format!("{name} {path}"));
            }
        }
        used.insert(name);
    }
    assert!(used.len() > 20 && (used.contains("accept4") || used.contains("accept")), "trace parse: {used:?}");
    println!("system calls used by the pool: {used:?}");
    println!("socket families: {socket_families:?}");
    println!("writes and /proc, /dev, /sys accesses: {paths:#?}");
    let denied: Vec<&String> = used.iter().filter(|n| !allowed.contains(*n)).collect();
    assert!(denied.is_empty(), "system calls the unit's SystemCallFilter= would refuse: {denied:?}");
    for f in &socket_families {
        assert!(families.contains(&f.as_str()), "socket family {f} not in RestrictAddressFamilies={families:?}");
    }
}
