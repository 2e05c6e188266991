//! Issue #25: the package under a real systemd. A minimal Debian (contrib/rootfs.sh: debootstrap,
//! cached in ~/.cache/ckpool/rootfs-bookworm) boots under `systemd-nspawn -b` with systemd as its
//! PID 1, sharing the host's network, so the harness's regtest nodes on 127.0.0.1 serve it. Our
//! .deb is installed with `apt-get install` as a user would, and the service is driven with
//! `systemctl` only (`nsenter` runs it inside). The container mounts its own /tmp: files for it
//! go under its /root. The guide's tunnel unit (stratssh@) forwards fixed ports, 3334 to the
//! upstream's 3333: the test uses them (they must be free here) and a real sshd on the host
//! (tests/common/sshd.rs) as the upstream's.
//!
//! Skips (passing, with a line saying why) when not root, when systemd-nspawn or the rootfs is
//! missing (contrib/setup.sh installs both), or when nspawn cannot boot a systemd here.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::package::{build_deb, run};
use common::sshd::Sshd;
use common::{solve, wait, Client, NodePair, RPC_PASS, RPC_USER};
use serde_json::{json, Value};

const BOOT_LIMIT: Duration = Duration::from_secs(90);
const LIMIT: Duration = Duration::from_secs(60);
/// Idle miners held at once under the unit (at most what its descriptor limit serves): far
/// past systemd's default soft limit of 1024.
const FARM: usize = 10_000;
/// The guide's ports, fixed in the tunnel unit (`-L 3334:localhost:3333`): the upstream pool's
/// stratum port on the sshd's side, and the tunnel's local end, ckproxy's upstream.
const GUIDE_POOL_PORT: u16 = 3333;
const GUIDE_TUNNEL_PORT: u16 = 3334;

fn rootfs() -> PathBuf {
    match std::env::var_os("CKPOOL_ROOTFS") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/ckpool/rootfs-bookworm"),
    }
}

fn skip(why: &str) {
    eprintln!("SKIPPED tests/systemd.rs: {why}");
}

/// A booted container: the nspawn process, its root (a copy of the cached rootfs), and the pid
/// (on the host) of its systemd. Dropping it powers it off (bounded), then kills what is left.
struct Container {
    nspawn: Child,
    init: u32,
    dir: tempfile::TempDir,
}

impl Container {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Copies the rootfs and boots it; Err says why it cannot boot here.
    fn boot(rootfs: &Path) -> Result<Container, String> {
        let dir = tempfile::Builder::new().prefix("ckpool-nspawn").tempdir_in("/var/tmp").unwrap();
        let root = dir.path().join("root");
        let (ok, _, err) = run(Command::new("cp").arg("-a").arg(rootfs).arg(&root));
        assert!(ok, "copy of the rootfs: {err}");
        let console = std::fs::File::create(dir.path().join("console.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .args(["--register=no", "--keep-unit", "--console=pipe", "-b", "-D"])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .map_err(|e| format!("cannot run systemd-nspawn: {e}"))?;
        let mut c = Container { nspawn, init: 0, dir };
        let deadline = Instant::now() + BOOT_LIMIT;
        // The container's PID 1: the systemd among nspawn's descendants.
        while c.init == 0 {
            if let Some(s) = c.nspawn.try_wait().unwrap() {
                return Err(format!("systemd-nspawn exited ({s}): {}", c.console()));
            }
            c.init = descendants(c.nspawn.id()).into_iter().find(|p| comm(*p) == "systemd").unwrap_or(0);
            if Instant::now() > deadline {
                return Err(format!("no systemd started within {BOOT_LIMIT:?}: {}", c.console()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let (_, state, _) = c.sh("systemctl is-system-running");
            match state.trim() {
                "running" => break,
                "degraded" => {
                    eprintln!("container degraded: {}", c.sh("systemctl --failed --no-pager").1);
                    break;
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(format!("systemd did not finish booting within {BOOT_LIMIT:?} (state {state:?})"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(c)
    }

    fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// `sh -c script` inside the container (all its namespaces): (success, stdout, stderr).
    fn sh(&self, script: &str) -> (bool, String, String) {
        run(Command::new("nsenter").args(["-t", &self.init.to_string(), "-a", "/bin/sh", "-c", script]))
    }

    /// `sh -c script` inside; panics with its output (and the service's journal) if it fails.
    fn must(&self, script: &str) -> String {
        let (ok, out, err) = self.sh(script);
        assert!(ok, "in the container: {script}\n{out}{err}\njournal:\n{}", self.journal());
        out
    }

    fn journal(&self) -> String {
        self.sh("journalctl --no-pager -n 80 -u ckpool -u ckproxy -u 'stratssh@*'").1
    }

    /// Waits until `systemctl is-active UNIT` says `state`.
    fn wait_active(&self, unit: &str, state: &str) {
        let deadline = Instant::now() + LIMIT;
        loop {
            let (_, s, _) = self.sh(&format!("systemctl is-active {unit}"));
            if s.trim() == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{unit} not {state} within {LIMIT:?} ({s:?}); journal:\n{}",
                self.journal()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The text of a file inside the container (read from the host through its root).
    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root().join(path.trim_start_matches('/'))).unwrap_or_default()
    }

    /// Waits until the container's file `path` contains `needle`; returns its text.
    fn wait_file(&self, path: &str, needle: &str) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let text = self.read(path);
            if text.contains(needle) {
                return text;
            }
            assert!(Instant::now() < deadline, "{path} never had {needle:?}:\n{text}\njournal:\n{}", self.journal());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.sh("systemctl poweroff");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.nspawn.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if self.nspawn.try_wait().ok().flatten().is_none() {
            // SIGKILL to the namespace's init ends every process in it; then nspawn exits.
            if self.init != 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.init as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
    }
}

/// Every descendant of `pid` (through /proc/PID/task/*/children).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                out.push(k);
                todo.push(k);
            }
        }
    }
    out
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// The pool config for the service: the host's regtest node, its loopback stratum ports.
fn service_config(node: &common::Node, address: &str, serverurl: &[String], startdiff: &str) -> String {
    let cfg = json!({
        "btcd": [{"url": node.rpc_url(), "auth": RPC_USER, "pass": RPC_PASS, "notify": true}],
        "btcaddress": address,
        "btcsig": "/ckpool-rs-systemd/",
        "serverurl": serverurl,
        "mindiff": 0.0001,
        "startdiff": startdiff.parse::<f64>().unwrap(),
        "maxdiff": 0,
        "zmqblock": node.zmq_url(),
        "blockpoll": 100,
        "logdir": "/var/log/stratum",
    });
    format!("{}\nComments from here on are ignored.\n", serde_json::to_string_pretty(&cfg).unwrap())
}

/// The first set_difficulty a new miner on `addr` is sent.
async fn first_difficulty(addr: &str) -> Value {
    let mut c = Client::connect(addr).await;
    c.handshake("farm.probe").await;
    c.notification("mining.set_difficulty").await["params"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_package_runs_under_a_real_systemd() {
    if !nix::unistd::geteuid().is_root() {
        return skip("not root (systemd-nspawn needs root)");
    }
    if !run(Command::new("systemd-nspawn").arg("--version")).0 {
        return skip("systemd-nspawn missing (bash contrib/setup.sh installs systemd-container)");
    }
    let rootfs = rootfs();
    if !rootfs.join(".complete").exists() {
        return skip(&format!("no Debian rootfs at {} (bash contrib/setup.sh makes it)", rootfs.display()));
    }
    assert!(
        rootfs.join("usr/bin/autossh").exists(),
        "the rootfs at {} has no autossh (made before the tunnel step): `bash contrib/setup.sh` makes it anew",
        rootfs.display()
    );
    // The tunnel unit's ports are the guide's, fixed: nothing else may hold them here.
    for p in [GUIDE_POOL_PORT, GUIDE_TUNNEL_PORT] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "127.0.0.1:{p} is taken on this machine; the tunnel unit (stratssh@) uses it: stop what listens there"
        );
    }
    let out = tempfile::tempdir().unwrap();
    let deb = build_deb(out.path(), &[]);
    let ct = match Container::boot(&rootfs) {
        Ok(c) => c,
        Err(why) => return skip(&format!("systemd-nspawn cannot boot a systemd on this machine: {why}")),
    };

    // apt-get install of the .deb, as a user would (its dependencies are in the rootfs).
    std::fs::copy(&deb, ct.root().join("root/ckpool.deb")).unwrap();
    ct.must("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /root/ckpool.deb");

    let nodes = NodePair::start().await;
    let address = nodes.a.new_address().await;
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    // The pool also listens on the guide's stratum port, 127.0.0.1:3333: the tunnel unit's fixed
    // forward (`-L 3334:localhost:3333`) reaches it there from the sshd's side.
    let serverurl = [addr.clone(), format!("127.0.0.1:{GUIDE_POOL_PORT}")];
    // The operator's edit of the shipped config (the file keeps its owner and mode).
    let conf = ct.root().join("etc/ckpool.conf");
    std::fs::write(&conf, service_config(&nodes.a, &address, &serverurl, "0.0001")).unwrap();

    // enable --now reaches active (Type=notify: READY=1 once work is served).
    ct.must("systemctl enable ckpool --now");
    ct.wait_active("ckpool", "active");
    assert_eq!(ct.must("systemctl is-enabled ckpool").trim(), "enabled");
    let status = ct.must("systemctl status ckpool --no-pager");
    assert!(status.lines().any(|l| l.trim_start().starts_with("Status: \"")), "STATUS= line:\n{status}");

    // The unit's descriptor limit is in force, and the pool logs the miners it serves.
    let pid = ct.must("systemctl show -p MainPID --value ckpool").trim().to_string();
    let limits = ct.must(&format!("cat /proc/{pid}/limits"));
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let f: Vec<u64> = line.split_whitespace().skip(3).take(2).map(|v| v.parse().unwrap()).collect();
    let init_hard = std::fs::read_to_string(format!("/proc/{}/limits", ct.init)).unwrap();
    let init_hard: u64 = init_hard
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap();
    println!("ckpool under systemd: {line}; the container's PID 1 hard limit {init_hard}");
    assert_eq!(f[0], f[1], "soft limit raised to the hard one: {line}");
    assert!(f[0] == 65536 || (f[0] >= init_hard.min(65536) && f[0] > 1024), "LimitNOFILE=65536 in force: {line}");
    let log = ct.wait_file("/var/log/stratum/ckpool.log", "serves up to");
    let dline = log.lines().find(|l| l.contains("descriptors: ")).unwrap();
    assert!(dline.contains(&format!("soft limit {}", f[0])), "{dline}");

    // A miner on the host mines a block the node accepts.
    let height = nodes.a.height().await;
    let mut c = Client::connect(&addr).await;
    let (en1, _) = c.handshake("farm.rig1").await;
    assert_eq!(c.notification("mining.set_difficulty").await["params"][0], json!(0.0001));
    let notify = c.notification("mining.notify").await;
    let submit = solve(&notify, &en1, "0000000000000001", "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let deadline = Instant::now() + LIMIT;
    while nodes.a.height().await != height + 1 {
        assert!(Instant::now() < deadline, "the block did not reach the node; journal:\n{}", ct.journal());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A farm under the unit: far more miners than systemd's default soft limit (1024) would let
    // in (10,000, or what the machine's hard limit allows), each receiving the next block's work,
    // and a block found by one more miner accepted. RSS growth per idle miner and new block →
    // last miner's notify are printed (figures, not asserted; the notify time is an upper bound:
    // the test reads the miners one after another).
    let served: usize =
        dline.split_once("serves up to ").unwrap().1.split_whitespace().next().unwrap().parse().unwrap();
    // The test's own sockets: its soft limit raised to its hard one (as tests/proxy.rs does).
    let own = {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard).unwrap();
        hard.min(65_536) as usize
    };
    let farm_size = FARM.min(served - 16).min(own.saturating_sub(256));
    assert!(
        farm_size > 1024,
        "a farm past systemd's default soft limit: {farm_size} (pool serves {served}, test has {own})"
    );
    let rss = |ct: &Container| -> u64 {
        let status = ct.must(&format!("cat /proc/{pid}/status"));
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024
    };
    let before = rss(&ct);
    let mut farm = Vec::new();
    for i in 0..farm_size {
        let mut m = Client::connect(&addr).await;
        m.handshake(&format!("farm.idle{i}")).await;
        m.skip_to("mining.notify").await;
        farm.push(m);
    }
    let after = rss(&ct);
    println!(
        "under the unit: {farm_size} idle miners, RSS {before} -> {after} bytes, {} bytes per idle miner",
        after.saturating_sub(before) / farm_size as u64
    );
    let t0 = Instant::now();
    let tip = nodes.a.call("generate", json!([1])).await[0].as_str().unwrap().to_string();
    for m in farm.iter_mut() {
        m.notify_on_tip(&tip).await;
    }
    println!("under the unit: generate 1 -> notify read from all {farm_size} miners: {:?}", t0.elapsed());
    let height = nodes.a.height().await;
    let mut c = Client::connect(&addr).await;
    let (en1, _) = c.handshake("farm.finder").await;
    let notify = c.notify_on_tip(&tip).await;
    let submit = solve(&notify, &en1, "0000000000000002", "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let deadline = Instant::now() + LIMIT;
    while nodes.a.height().await != height + 1 {
        assert!(Instant::now() < deadline, "the farm's block did not reach the node; journal:\n{}", ct.journal());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(farm);

    // systemctl reload applies a changed difficulty to new miners.
    std::fs::write(&conf, service_config(&nodes.a, &address, &serverurl, "0.0002")).unwrap();
    ct.must("systemctl reload ckpool");
    ct.wait_file("/var/log/stratum/ckpool.log", "applied startdiff");
    assert_eq!(first_difficulty(&addr).await, json!(0.0002));
    ct.wait_active("ckpool", "active");
    assert_eq!(ct.must("systemctl show -p MainPID --value ckpool").trim(), pid, "reload keeps the process");

    // The sandbox holds, checked from inside the service's own mount namespace: the system is
    // read-only, the log directory writable, /tmp private to the service.
    let inside = |script: &str| ct.sh(&format!("nsenter -t {pid} -m /bin/sh -c '{script}'"));
    let (ok, _, err) = inside("echo x > /etc/ckpool-probe");
    assert!(!ok && err.contains("Read-only file system"), "/etc writable from the service: {err}");
    let (ok, _, err) = inside("echo x > /usr/ckpool-probe");
    assert!(!ok && err.contains("Read-only file system"), "/usr writable from the service: {err}");
    let (ok, _, err) = inside("echo x > /var/log/stratum/probe && rm /var/log/stratum/probe");
    assert!(ok, "logdir not writable from the service: {err}");
    let (ok, _, err) = inside("echo x > /tmp/ckpool-private-probe");
    assert!(ok, "the service's /tmp: {err}");
    assert!(!ct.sh("test -e /tmp/ckpool-private-probe").0, "the service's /tmp is the machine's");
    assert!(ct.read("/tmp/ckpool-private-probe").is_empty(), "the service's /tmp is the rootfs's");

    // logrotate -f with the shipped file: the old log moves to ckpool.log.1 and the service
    // writes a fresh ckpool.log (postrotate's SIGHUP), the same process still serving.
    ct.must("logrotate -f /etc/logrotate.d/stratum");
    let rotated = ct.read("/var/log/stratum/ckpool.log.1");
    assert!(rotated.contains("serves up to") && rotated.contains("applied startdiff"), "rotated log:\n{rotated}");
    let fresh = ct.wait_file("/var/log/stratum/ckpool.log", "SIGHUP: reopening log files");
    assert!(!fresh.contains("serves up to"), "a fresh file:\n{fresh}");
    assert_eq!(first_difficulty(&addr).await, json!(0.0002));
    assert_eq!(ct.must("systemctl show -p MainPID --value ckpool").trim(), pid);

    // systemctl restart: a new process, active again, serving; the miners come back.
    ct.must("systemctl restart ckpool");
    ct.wait_active("ckpool", "active");
    let pid2 = ct.must("systemctl show -p MainPID --value ckpool").trim().to_string();
    assert_ne!(pid2, pid, "restart makes a new process");
    let deadline = Instant::now() + LIMIT;
    while tokio::net::TcpStream::connect(&addr).await.is_err() {
        assert!(Instant::now() < deadline, "not listening after restart; journal:\n{}", ct.journal());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first_difficulty(&addr).await, json!(0.0002));

    // A hung process (SIGSTOP) is killed by the watchdog and restarted. The unit's times
    // (WatchdogSec=30, RestartSec=30, TimeoutAbortSec = TimeoutStopSec=30) are shortened by a
    // drop-in, as `systemctl edit ckpool` would write it, so the test waits seconds, not 90 s.
    let dropin = ct.root().join("etc/systemd/system/ckpool.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(dropin.join("watchdog-test.conf"), "[Service]\nWatchdogSec=3\nRestartSec=1\nTimeoutAbortSec=2\n")
        .unwrap();
    ct.must("systemctl daemon-reload && systemctl restart ckpool");
    ct.wait_active("ckpool", "active");
    let hung = ct.must("systemctl show -p MainPID --value ckpool").trim().to_string();
    ct.must(&format!("kill -STOP {hung}"));
    let deadline = Instant::now() + LIMIT;
    loop {
        let now = ct.sh("systemctl show -p MainPID --value ckpool").1.trim().to_string();
        let active = ct.sh("systemctl is-active ckpool").1.trim() == "active";
        if active && now != hung && now != "0" {
            break;
        }
        assert!(Instant::now() < deadline, "the hung pool was not restarted; journal:\n{}", ct.journal());
        std::thread::sleep(Duration::from_millis(200));
    }
    let journal = ct.journal();
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    assert_eq!(first_difficulty(&addr).await, json!(0.0002));

    // The guide's tunnel under its unit: `systemctl enable --now stratssh@upstream` carries
    // ckproxy's upstream to a real sshd on the host (tests/common/sshd.rs; its login p2p exists
    // for that sshd alone). The unit forwards localhost:3334 to the sshd side's localhost:3333,
    // where the pool listens too. The operator's steps on the proxy machine, as the unit expects
    // them: the key in /root/.ssh/p2pkey, the upstream's host key in root's known_hosts, and
    // /etc/default/p2pssh@upstream with TARGET and TARGET_PORT.
    let tunnel_started = Instant::now();
    let sshd = Sshd::start("p2p");
    let dot_ssh = ct.root().join("root/.ssh");
    std::fs::create_dir_all(&dot_ssh).unwrap();
    std::fs::set_permissions(&dot_ssh, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    std::fs::copy(sshd.client_key(), dot_ssh.join("p2pkey")).unwrap();
    std::fs::set_permissions(dot_ssh.join("p2pkey"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(dot_ssh.join("known_hosts"), sshd.known_hosts_line()).unwrap();
    std::fs::write(
        ct.root().join("etc/default/p2pssh@upstream"),
        format!("TARGET=127.0.0.1\nTARGET_PORT={}\n", sshd.port),
    )
    .unwrap();
    ct.must("systemctl enable --now stratssh@upstream");
    ct.wait_active("stratssh@upstream", "active");
    assert_eq!(ct.must("systemctl is-enabled stratssh@upstream").trim(), "enabled");
    let tunnel_end: std::net::SocketAddr = format!("127.0.0.1:{GUIDE_TUNNEL_PORT}").parse().unwrap();
    let tunnel_logs = || format!("sshd:\n{}\njournal:\n{}", sshd.log(), ct.journal());
    wait::blocking_or(
        "the tunnel's local end (127.0.0.1:3334) to accept",
        LIMIT,
        || std::net::TcpStream::connect_timeout(&tunnel_end, Duration::from_millis(200)).is_ok(),
        tunnel_logs,
    );
    // It is the unit's ssh that logged in, as p2p with the key: autossh (the unit's main
    // process) runs one ssh, and the sshd accepted p2p's key.
    let autossh = ct.must("systemctl show -p MainPID --value stratssh@upstream").trim().to_string();
    let ssh = ct.must(&format!("cat /proc/{autossh}/comm; cat /proc/{autossh}/task/{autossh}/children"));
    assert!(ssh.starts_with("autossh\n") && ssh.lines().nth(1).is_some_and(|k| !k.trim().is_empty()), "{ssh}");
    let kid = ssh.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(ct.must(&format!("cat /proc/{kid}/comm")).trim(), "ssh");
    assert!(sshd.log().contains("Accepted publickey for p2p from 127.0.0.1"), "{}", tunnel_logs());

    // ckproxy under its own unit with the guide's upstream, "localhost:3334": a miner on the host
    // mines through ckproxy -> the tunnel -> the pool, and the node accepts the block.
    let port2 = common::free_port();
    let addr2 = format!("127.0.0.1:{port2}");
    let proxy_conf = json!({
        "proxy": [{"url": format!("localhost:{GUIDE_TUNNEL_PORT}"), "auth": "proxyuser.p0", "pass": "x"}],
        "btcaddress": "",
        "serverurl": [addr2],
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "maxdiff": 0,
        "logdir": "/var/log/stratum",
    });
    std::fs::write(
        ct.root().join("etc/ckproxy.conf"),
        format!("{}\nComments from here on are ignored.\n", serde_json::to_string_pretty(&proxy_conf).unwrap()),
    )
    .unwrap();
    ct.must("systemctl enable ckproxy --now");
    ct.wait_active("ckproxy", "active");
    ct.wait_file("/var/log/stratum/ckproxy.log", "serves up to");
    // The pool's miner is the proxy, come through the tunnel.
    ct.wait_file("/var/log/stratum/ckpool.log", "worker=proxyuser.p0");
    let height = nodes.a.height().await;
    let mut c = Client::connect(&addr2).await;
    let (en1, en2_size) = c.handshake("farm.viaproxy").await;
    let notify = c.notification("mining.notify").await;
    let submit = solve(&notify, &en1, &"0".repeat(2 * en2_size), "0.0001", true).expect("regtest share");
    let id = c.request("mining.submit", submit).await;
    assert_eq!(c.reply(id).await["result"], json!(true));
    let deadline = Instant::now() + LIMIT;
    while nodes.a.height().await <= height {
        assert!(Instant::now() < deadline, "the proxy's block did not reach the node; journal:\n{}", ct.journal());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The way it took, from the sockets: ckproxy is connected to the tunnel's local end, and
    // something (the sshd's forward; nothing else uses the port) to the pool's port 3333.
    let to_tunnel = ct.must(&format!("ss -Htnp state established '( dport = :{GUIDE_TUNNEL_PORT} )'"));
    assert!(to_tunnel.contains("\"ckproxy\""), "ckproxy's upstream is not the tunnel:\n{to_tunnel}");
    let to_pool = ct.must(&format!("ss -Htn state established '( dport = :{GUIDE_POOL_PORT} )'"));
    assert!(!to_pool.trim().is_empty(), "nothing connected to the pool's port 3333");
    ct.must("systemctl stop ckproxy");
    // autossh ended by a signal from outside systemd (it exits 1, which the unit counts as a
    // clean exit) is started again after RestartSec=5, and the tunnel comes back.
    ct.must(&format!("kill -TERM {autossh}"));
    wait::blocking_or(
        "stratssh@upstream to run a new autossh",
        LIMIT,
        || {
            let now = ct.sh("systemctl show -p MainPID --value stratssh@upstream").1.trim().to_string();
            now != autossh && now != "0" && ct.sh("systemctl is-active stratssh@upstream").1.trim() == "active"
        },
        tunnel_logs,
    );
    wait::blocking_or(
        "the tunnel's local end to accept again",
        LIMIT,
        || std::net::TcpStream::connect_timeout(&tunnel_end, Duration::from_millis(200)).is_ok(),
        tunnel_logs,
    );
    // `systemctl disable --now` leaves it inactive, not failed, and closes its local end; the
    // sshd goes after it.
    ct.must("systemctl disable --now stratssh@upstream");
    ct.wait_active("stratssh@upstream", "inactive");
    assert!(std::net::TcpStream::connect_timeout(&tunnel_end, Duration::from_millis(500)).is_err());
    drop(sshd);
    println!("the tunnel and ckproxy steps: {:?}", tunnel_started.elapsed());

    // With ckpool.socket enabled (its ListenStream= set to the config's serverurl by a drop-in,
    // as `systemctl edit ckpool.socket` would), `systemctl restart ckpool` refuses no miner: a
    // prober on the host connects and subscribes throughout, and every attempt is answered.
    let sockdrop = ct.root().join("etc/systemd/system/ckpool.socket.d");
    std::fs::create_dir_all(&sockdrop).unwrap();
    std::fs::write(sockdrop.join("port.conf"), format!("[Socket]\nListenStream=\nListenStream={addr}\n")).unwrap();
    ct.must("systemctl daemon-reload && systemctl stop ckpool && systemctl enable --now ckpool.socket && systemctl start ckpool");
    ct.wait_active("ckpool", "active");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = tokio::spawn(probe(addr.clone(), stop.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old_pid = ct.must("systemctl show -p MainPID --value ckpool").trim().to_string();
    ct.must("systemctl restart ckpool");
    ct.wait_active("ckpool", "active");
    assert_ne!(ct.must("systemctl show -p MainPID --value ckpool").trim(), old_pid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (answered, refused) = prober.await.unwrap();
    println!("socket-activated restart: {answered} probes answered, {refused} refused");
    assert_eq!(refused, 0, "a miner refused during the restart ({answered} answered)");
    assert!(answered >= 2, "the prober ran across the restart");

    // Upgrade to a newer revision: the edited /etc/ckpool.conf is kept, the service restarted.
    let edited = ct.read("/etc/ckpool.conf");
    let before = ct.must("systemctl show -p MainPID --value ckpool").trim().to_string();
    let out2 = tempfile::tempdir().unwrap();
    let deb2 = build_deb(out2.path(), &["--deb-revision", "99"]);
    std::fs::copy(&deb2, ct.root().join("root/ckpool-new.deb")).unwrap();
    ct.must("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /root/ckpool-new.deb");
    assert!(ct.must("dpkg-query -W -f '${Version}' ckpool").ends_with("-99"));
    assert_eq!(ct.read("/etc/ckpool.conf"), edited, "the operator's config kept");
    ct.wait_active("ckpool", "active");
    let after = ct.must("systemctl show -p MainPID --value ckpool").trim().to_string();
    assert_ne!(after, before, "the upgrade restarted the service");
    assert_eq!(first_difficulty(&addr).await, json!(0.0002));

    ct.must("systemctl stop ckpool");
    ct.wait_active("ckpool", "inactive");

    // Purge removes what the package made (configs, units, state); the logs stay.
    ct.must("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ckpool");
    for gone in [
        "/etc/ckpool.conf",
        "/etc/ckproxy.conf",
        "/usr/lib/systemd/system/ckpool.service",
        "/usr/bin/ckpool",
        "/var/lib/ckpool",
    ] {
        assert!(!ct.sh(&format!("test -e {gone}")).0, "{gone} left after purge");
    }
    assert!(ct.sh("test -e /var/log/stratum/ckpool.log").0, "logs are kept");
}

/// Connects and subscribes to `addr` again and again until `stop` (at most 5,000 times): how many
/// got their subscribe answered, and how many were refused, reset or left unanswered (20 s).
async fn probe(addr: String, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> (u32, u32) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (mut answered, mut refused) = (0, 0);
    for _ in 0..5_000 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            s.write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"probe/1\"]}\n").await.ok()?;
            let mut line = String::new();
            BufReader::new(s).read_line(&mut line).await.ok()?;
            let v: Value = serde_json::from_str(&line).ok()?;
            (v["id"] == json!(1) && v["error"].is_null()).then_some(())
        };
        match tokio::time::timeout(Duration::from_secs(20), attempt).await {
            Ok(Some(())) => answered += 1,
            _ => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (answered, refused)
}
