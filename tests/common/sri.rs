//! SRI's Stratum V2 reference roles, built by contrib/setup.sh and linked in .regtest/, each on
//! loopback ports with its log in a temp dir (shown when a test fails); Drop kills and reaps:
//! - [`SriPool`]: `pool_sv2` on a Bitcoin Core's IPC socket with its own authority key, optionally
//!   with its embedded Job Declaration Server (`[jds]`): tests/sri_pool.rs (ckproxy under it),
//!   benches/sri_beside.rs (our SV2 beside it), tests/jd.rs (SRI's JDC against it).
//! - [`SriJdc`]: `jd_client_sv2`, the Job Declaration client: templates from its own Core over
//!   IPC, jobs declared to a JDS and mined on the pool's extended channel with SetCustomMiningJob,
//!   SV2 miners served downstream (tests/jd.rs).
//! - [`SriTranslator`]: `translator_sv2`, SV1 miners onto an SV2 upstream (tests/jd.rs).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ckpool::sv2::keys::AuthorityKey;

use super::core_node::CoreNode;
use super::{free_port, wait};

const LIMIT: Duration = Duration::from_secs(60);
/// What the pool writes into its coinbase scriptSig (SRI puts it as `Sv2/<signature>/`).
pub const SRI_SIGNATURE: &str = "sri-pool-under-ckproxy-test";

/// One of SRI's binaries as contrib/setup.sh installs it (`.regtest/NAME`).
fn sri_bin(name: &str, version: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest").join(name);
    assert!(
        p.exists(),
        "SRI's {name} is missing at {}: run `bash contrib/setup.sh` (it `cargo install`s {name} {version} once \
         into ~/.cache/ckpool/{name}-{version})",
        p.display()
    );
    p
}

/// SRI's pool_sv2 as contrib/setup.sh installs it.
pub fn pool_sv2_bin() -> PathBuf {
    sri_bin("pool_sv2", "0.7.0")
}

/// SRI's jd_client_sv2 as contrib/setup.sh installs it.
pub fn jd_client_bin() -> PathBuf {
    sri_bin("jd_client_sv2", "0.6.0")
}

/// SRI's translator_sv2 as contrib/setup.sh installs it.
pub fn translator_bin() -> PathBuf {
    sri_bin("translator_sv2", "0.6.0")
}

/// A running SRI binary: its log file in a temp dir (stdout and stderr), killed and reaped on
/// drop, the log printed to stderr when the test is failing (a panic while it runs).
struct Running {
    name: &'static str,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Running {
    /// Writes `config` to the temp dir and starts `bin` on it (`flag PATH`) with `RUST_LOG=log_level`.
    fn spawn(name: &'static str, bin: &Path, flag: &str, config: &str, log_level: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        let child = Command::new(bin)
            .arg(flag)
            .arg(&path)
            .env("RUST_LOG", log_level)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Running { name, child: Some(child), dir }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.name))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Waits (≤ `limit`) until the log has every one of `needles`; panics with the log if the
    /// process exits or the time is up.
    fn wait_log(&mut self, what: &str, needles: &[&str], limit: Duration) {
        let name = self.name;
        let log_path = self.log_path();
        let child = &mut self.child;
        wait::blocking_or(
            what,
            limit,
            || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("{name} exited ({status}); log:\n{log}");
                }
                needles.iter().all(|n| log.contains(n))
            },
            || format!("{name} log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default()),
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- {} log ({}) ---\n{}", self.name, self.dir.path().display(), self.log());
        }
    }
}

/// SRI's pool on `node`'s IPC socket, listening on a loopback port; Drop kills and reaps it.
pub struct SriPool {
    proc: Running,
    pub port: u16,
    /// The port of its embedded Job Declaration Server ([`SriPool::start_with_jds`]).
    pub jds_port: Option<u16>,
    /// The authority public key, SRI's base58check form (also ours).
    pub key: String,
}

impl SriPool {
    pub fn start(node: &CoreNode, payout: &str) -> SriPool {
        SriPool::launch(node, payout, false, "info")
    }

    /// The pool with its embedded JDS (`[jds]`, on another loopback port, the same authority key;
    /// AllocateMiningJobToken.Success gives `payout` as the coinbase output), logging at
    /// `log_level` (`RUST_LOG`: "debug" shows every JD message).
    pub fn start_with_jds(node: &CoreNode, payout: &str, log_level: &str) -> SriPool {
        SriPool::launch(node, payout, true, log_level)
    }

    fn launch(node: &CoreNode, payout: &str, jds: bool, log_level: &str) -> SriPool {
        let port = free_port();
        let jds_port = jds.then(free_port);
        let key = AuthorityKey::generate().unwrap();
        let mut config = format!(
            r#"listen_address = "127.0.0.1:{port}"
authority_public_key = "{public}"
authority_secret_key = "{secret}"
cert_validity_sec = 3600
coinbase_reward_script = "addr({payout})"
server_id = 1
pool_signature = "{SRI_SIGNATURE}"
shares_per_minute = 6.0
share_batch_size = 10

[template_provider_type.BitcoinCoreIpc]
version = 31
network = "regtest"
data_dir = "{datadir}"
fee_threshold = 100
min_interval = 5
"#,
            public = key.public_string(),
            secret = key.secret_string(),
            datadir = node.datadir.path().display(),
        );
        if let Some(p) = jds_port {
            config.push_str(&format!("\n[jds]\nlisten_address = \"127.0.0.1:{p}\"\n"));
        }
        let proc = Running::spawn("pool_sv2", &pool_sv2_bin(), "--config", &config, log_level);
        let mut pool = SriPool { proc, port, jds_port, key: key.public_string() };
        pool.wait_listening();
        pool
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// Waits (≤ LIMIT) until the pool listens (and its JDS, if any) and has its first template
    /// from the node (it logs both; a connection before that is held until the template); panics
    /// with its log if it exits.
    pub fn wait_listening(&mut self) {
        let listening = format!("Starting downstream server at 127.0.0.1:{}", self.port);
        let jds = self.jds_port.map(|p| format!("Starting downstream server at 127.0.0.1:{p}"));
        let mut needles = vec![listening.as_str(), "Required template data received"];
        needles.extend(jds.as_deref());
        self.proc.wait_log("pool_sv2 listening with a template from Core", &needles, LIMIT);
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn url(&self) -> String {
        format!("stratum2+tcp://127.0.0.1:{}/{}", self.port, self.key)
    }
}

/// Where SRI's JDC goes upstream: the pool's mining port and its JDS, both under one authority
/// key, as one `[[upstreams]]` entry.
#[derive(Clone, Debug)]
pub struct JdcUpstream {
    /// The pool's SV2 mining listener (`127.0.0.1:PORT`).
    pub pool: String,
    /// The JDS listener (`127.0.0.1:PORT`).
    pub jds: String,
    /// The authority public key of both (base58check).
    pub authority_key: String,
    /// The user its one extended channel on the pool opens as.
    pub user: String,
}

/// SRI's jd_client_sv2 in full-template mode on `node`'s IPC templates, declaring to one
/// upstream, listening for SV2 miners on a loopback port with a key of its own; Drop kills and
/// reaps it.
pub struct SriJdc {
    proc: Running,
    pub port: u16,
    /// Its own authority public key (what its downstream miners pin).
    pub key: String,
}

/// What the JDC writes into its coinbase scriptSig.
pub const JDC_SIGNATURE: &str = "sri-jdc-test";

impl SriJdc {
    /// Starts the JDC. `solo_payout` is its `coinbase_reward_script`, used only when it falls back
    /// to solo mining (every upstream refused or gone). `reserved_rollable` sets
    /// `reserved_downstream_rollable_extranonce_size` (None: SRI's default, 8): the JDC opens its
    /// pool channel asking `min_extranonce_size` = 2 (its local prefix) + max(this, what its first
    /// downstream asks). `log_level` is `RUST_LOG` ("debug" logs every message it sends and gets).
    pub fn start(
        node: &CoreNode,
        up: &JdcUpstream,
        solo_payout: &str,
        reserved_rollable: Option<u8>,
        log_level: &str,
    ) -> SriJdc {
        let port = free_port();
        let key = AuthorityKey::generate().unwrap();
        let (pool_host, pool_port) = up.pool.rsplit_once(':').expect("pool as host:port");
        let (jds_host, jds_port) = up.jds.rsplit_once(':').expect("jds as host:port");
        let reserved = reserved_rollable
            .map(|n| format!("reserved_downstream_rollable_extranonce_size = {n}\n"))
            .unwrap_or_default();
        let config = format!(
            r#"listening_address = "127.0.0.1:{port}"
max_supported_version = 2
min_supported_version = 2
authority_public_key = "{public}"
authority_secret_key = "{secret}"
cert_validity_sec = 3600
shares_per_minute = 6.0
share_batch_size = 10
mode = "FULLTEMPLATE"
jdc_signature = "{JDC_SIGNATURE}"
coinbase_reward_script = "addr({solo_payout})"
supported_extensions = []
{reserved}
[[upstreams]]
authority_pubkey = "{authority}"
pool_address = "{pool_host}"
pool_port = {pool_port}
jds_address = "{jds_host}"
jds_port = {jds_port}
user_identity = "{user}"

[template_provider_type.BitcoinCoreIpc]
version = 31
network = "regtest"
data_dir = "{datadir}"
fee_threshold = 100
min_interval = 5
"#,
            public = key.public_string(),
            secret = key.secret_string(),
            authority = up.authority_key,
            user = up.user,
            datadir = node.datadir.path().display(),
        );
        let proc = Running::spawn("jd_client_sv2", &jd_client_bin(), "--config", &config, log_level);
        let mut jdc = SriJdc { proc, port, key: key.public_string() };
        let listening = format!("Starting downstream server at 127.0.0.1:{port}");
        jdc.proc.wait_log("jd_client_sv2 listening for miners", &[listening.as_str()], LIMIT);
        jdc
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// SRI's translator_sv2: SV1 miners on a loopback port, one aggregated extended channel on an SV2
/// upstream; Drop kills and reaps it.
pub struct SriTranslator {
    proc: Running,
    pub port: u16,
}

impl SriTranslator {
    /// Upstream `host:port` with authority `key`, opening its channel as `user`.
    pub fn start(upstream: &str, key: &str, user: &str) -> SriTranslator {
        let port = free_port();
        let (host, up_port) = upstream.rsplit_once(':').expect("upstream as host:port");
        let config = format!(
            r#"downstream_address = "127.0.0.1"
downstream_port = {port}
max_supported_version = 2
min_supported_version = 2
downstream_extranonce2_size = 4
verify_payout = false
aggregate_channels = true
supported_extensions = []

[downstream_difficulty_config]
min_individual_miner_hashrate = 2_000_000.0
shares_per_minute = 60.0
enable_vardiff = true
job_keepalive_interval_secs = 60

[[upstreams]]
address = "{host}"
port = {up_port}
authority_pubkey = "{key}"
user_identity = "{user}"
"#
        );
        let mut t =
            SriTranslator { proc: Running::spawn("translator_sv2", &translator_bin(), "-c", &config, "info"), port };
        t.wait_listening();
        t
    }

    /// Waits (≤ LIMIT) until its SV1 port takes connections; panics with its log if it exits.
    fn wait_listening(&mut self) {
        let port = self.port;
        let log_path = self.proc.log_path();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let child = &mut self.proc.child;
        wait::blocking_or(
            "translator_sv2 listening for SV1 miners",
            LIMIT,
            || {
                if let Some(s) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("translator_sv2 exited ({s}); log:\n{}", read(&log_path));
                }
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            },
            || format!("translator_sv2 log:\n{}", read(&log_path)),
        );
    }

    pub fn log(&self) -> String {
        self.proc.log()
    }
}
