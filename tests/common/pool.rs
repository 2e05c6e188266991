//! The pool binary, run with a config written for the test: started on port 0 (its port read
//! from its log), stopped with SIGTERM, its logs and files read back.

use super::*;

/// The pool binary running with a config written for the test.
pub struct Pool {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub logdir: PathBuf,
    pub config_path: PathBuf,
    /// "ckpool" or "ckproxy": names the log file and the ready line.
    pub name: &'static str,
    /// The test wrote its own `serverurl` (several listeners): kept as written, never pinned.
    own_serverurl: bool,
}

impl Pool {
    /// Writes `config` (a JSON object; serverurl/logdir are filled in) and starts
    /// `ckpool --log-shares --killold --config FILE`, waiting (≤ 60 s) for "ckpool ready".
    pub fn start(config: Value, extra_args: &[&str]) -> Pool {
        Pool::start_as("ckpool", config, extra_args)
    }

    /// Proxy mode (`-p`): waits for "ckproxy ready".
    pub fn start_proxy(config: Value) -> Pool {
        Pool::start_as("ckproxy", config, &["-p"])
    }

    fn start_as(name: &'static str, config: Value, extra_args: &[&str]) -> Pool {
        let mut pool = Pool::prepare_as(name, config);
        pool.spawn(extra_args);
        pool
    }

    /// Writes the config (as `start`) without starting the pool: start it with `spawn_command`.
    pub fn prepare(config: Value) -> Pool {
        Pool::prepare_as("ckpool", config)
    }

    /// Proxy mode's `prepare` (the log is ckproxy.log; start it with `-p`).
    pub fn prepare_proxy(config: Value) -> Pool {
        Pool::prepare_as("ckproxy", config)
    }

    fn prepare_as(name: &'static str, mut config: Value) -> Pool {
        let dir = tempfile::tempdir().unwrap();
        // Port 0: the pool binds a port the system chooses and logs it ("listening for miners on
        // 127.0.0.1:PORT"); no port is picked here, dropped and raced for. `spawn` reads it back.
        let port = 0;
        let logdir = dir.path().join("logs");
        let own_serverurl = config.get("serverurl").is_some();
        if !own_serverurl {
            config["serverurl"] = json!([format!("127.0.0.1:{port}")]);
        }
        config["logdir"] = json!(logdir.display().to_string());
        let config_path = dir.path().join("ckpool.conf");
        std::fs::write(
            &config_path,
            format!("{}\nComments from here on are ignored.\n", serde_json::to_string_pretty(&config).unwrap()),
        )
        .unwrap();
        Pool { child: None, dir, port, logdir, config_path, name, own_serverurl }
    }

    /// The socket dir (pid file) the harness gives the pool.
    pub fn sockdir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The arguments `spawn` runs the binary with (after the binary's path).
    pub fn args(&self, extra_args: &[&str]) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = ["--log-shares", "--killold", "--config"].iter().map(Into::into).collect();
        a.push(self.config_path.clone().into());
        a.push("--sockdir".into());
        a.push(self.sockdir().into());
        a.extend(["-q", "-l", "7"].iter().map(Into::into));
        a.extend(extra_args.iter().map(Into::into));
        a
    }

    pub fn spawn(&mut self, extra_args: &[&str]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ckpool"));
        cmd.args(self.args(extra_args));
        // A restart appends to the same log: wait for one more ready line than there was.
        let ready = format!("{} ready", self.name);
        let before = self.log().matches(&ready).count();
        self.spawn_command(cmd);
        self.wait_log_count(&ready, before + 1, Duration::from_secs(60));
        self.pin_port();
    }

    /// The port the running pool logged it listens on (the last "listening for miners on" line).
    pub fn logged_port(&self) -> Option<u16> {
        let log = self.log();
        let line = log.lines().rev().find_map(|l| l.split_once("listening for miners on ").map(|(_, a)| a.trim()))?;
        line.rsplit_once(':').and_then(|(_, p)| p.parse().ok())
    }

    /// The ports of every listener, in `serverurl` order (the "listening for miners on" lines of
    /// a pool started once).
    pub fn listener_ports(&self) -> Vec<u16> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("listening for miners on ").map(|(_, a)| a.trim()))
            .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
            .collect()
    }

    /// After the first start on port 0: remembers the chosen port and writes it into the config,
    /// so a restart (and anything configured with `addr()`, such as a proxy) keeps it.
    fn pin_port(&mut self) {
        if self.port != 0 || self.own_serverurl {
            return;
        }
        let port =
            self.logged_port().unwrap_or_else(|| panic!("no \"listening for miners on\" line; log:\n{}", self.log()));
        self.port = port;
        let text = std::fs::read_to_string(&self.config_path).unwrap();
        let mut config: Value = serde_json::Deserializer::from_str(&text).into_iter::<Value>().next().unwrap().unwrap();
        config["serverurl"] = json!([format!("127.0.0.1:{port}")]);
        std::fs::write(&self.config_path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
    }

    /// Starts the pool with `cmd` (stdio set here) without waiting for it to be ready.
    pub fn spawn_command(&mut self, mut cmd: Command) {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        self.child = Some(cmd.spawn().expect("start ckpool"));
    }

    /// The exit status if the pool has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn log_path(&self) -> PathBuf {
        self.logdir.join(format!("{}.log", self.name))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the operator log contains `needle`.
    pub fn wait_log(&mut self, needle: &str, limit: Duration) {
        self.wait_log_count(needle, 1, limit);
    }

    /// Waits until the operator log contains `needle` at least `n` times; panics at once if the
    /// process exits first.
    pub fn wait_log_count(&mut self, needle: &str, n: usize, limit: Duration) {
        let what = format!("{} to log {needle:?} {n} time(s)", self.name);
        let log_path = self.log_path();
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let child = &mut self.child;
        wait::blocking_or(
            &what,
            limit,
            || {
                if log().matches(needle).count() >= n {
                    return true;
                }
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("ckpool exited ({status}) before logging {needle:?}; log:\n{}", log());
                }
                false
            },
            || format!("log:\n{}", log()),
        );
    }

    /// The miners' address: the pinned port, or the one the pool logged (started with
    /// `spawn_command`, after its "listening for miners" line).
    pub fn addr(&self) -> String {
        let port = if self.port != 0 {
            self.port
        } else {
            self.logged_port().unwrap_or_else(|| panic!("the pool has not logged its port yet; log:\n{}", self.log()))
        };
        format!("127.0.0.1:{port}")
    }

    /// `ckpool_upstream_shares_total{result="RESULT"}` from a proxy's /metrics (the operator
    /// API's address as its log gives it; 0 when the series is absent).
    pub async fn upstream_shares(&self, result: &str) -> u64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let log = self.log();
        let api = log
            .lines()
            .rev()
            .find_map(|l| {
                l.split_once("serving the operator API on ").map(|(_, a)| a.split_whitespace().next().unwrap())
            })
            .unwrap_or_else(|| panic!("no API line in the log:\n{log}"))
            .to_string();
        let mut s = tokio::net::TcpStream::connect(&api).await.unwrap();
        s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut body)).await.unwrap().unwrap();
        let name = format!("ckpool_upstream_shares_total{{result=\"{result}\"}} ");
        body.lines().find_map(|l| l.strip_prefix(&name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait (≤ 30 s); returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL (no chance to flush or clean up) and reap: the pid file stays behind.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits (≤ 30 s) until logdir/blocks.log contains `needle` and returns its text: the node
    /// can take a block before the pool has written the outcome line.
    pub fn wait_blocks_log(&self, needle: &str) -> String {
        let read = || std::fs::read_to_string(self.logdir.join("blocks.log")).unwrap_or_default();
        wait::blocking_or(
            &format!("{needle:?} in blocks.log"),
            Duration::from_secs(30),
            || Some(read()).filter(|t| t.contains(needle)),
            || format!("blocks.log:\n{}\nlog:\n{}", read(), self.log()),
        )
    }

    /// Waits (≤ 20 s) for a share log line `pred` accepts and returns it; `what` names it.
    pub fn wait_share_line(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let found = || self.share_lines().into_iter().find(|l| pred(l));
        let context = || format!("share lines: {:?}", self.share_lines());
        wait::blocking_or(&format!("a share line for {what}"), Duration::from_secs(20), found, context)
    }

    /// All share log lines written so far.
    pub fn share_lines(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let Ok(dirs) = std::fs::read_dir(&self.logdir) else { return out };
        for d in dirs.flatten() {
            if !d.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(d.path()).unwrap().flatten() {
                if f.path().extension().is_some_and(|e| e == "sharelog") {
                    for line in std::fs::read_to_string(f.path()).unwrap().lines() {
                        out.push(serde_json::from_str(line).expect("share log line is JSON"));
                    }
                }
            }
        }
        out
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The pool config a test starts from: the node's RPC and ZMQ, a fresh payout address.
pub async fn pool_config(node: &Node, address: &str) -> Value {
    json!({
        "btcd": [{"url": node.rpc_url(), "auth": RPC_USER, "pass": RPC_PASS, "notify": true}],
        "btcaddress": address,
        "btcsig": "/ckpool-rs-test/",
        "mindiff": 0.0001,
        "startdiff": 0.0001,
        "maxdiff": 0,
        "zmqblock": node.zmq_url(),
        "blockpoll": 100,
    })
}
