//! SRI's `pool_sv2` (the Stratum V2 reference pool, built by contrib/setup.sh and linked at
//! .regtest/pool_sv2) on a Bitcoin Core's IPC socket, listening on a loopback port with its own
//! authority key: for tests/sri_pool.rs (ckproxy under it) and benches/sri_beside.rs (our SV2
//! beside it on one bench). Drop kills and reaps it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::core_node::CoreNode;
use super::{free_port, wait};

const LIMIT: Duration = Duration::from_secs(60);
/// What the pool writes into its coinbase scriptSig (SRI puts it as `Sv2/<signature>/`).
pub const SRI_SIGNATURE: &str = "sri-pool-under-ckproxy-test";

/// SRI's pool_sv2 as contrib/setup.sh installs it.
pub fn pool_sv2_bin() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".regtest/pool_sv2");
    assert!(
        p.exists(),
        "SRI's pool_sv2 is missing at {}: run `bash contrib/setup.sh` (it `cargo install`s pool_sv2 0.7.0 once \
         into ~/.cache/ckpool/pool_sv2-0.7.0)",
        p.display()
    );
    p
}

/// SRI's pool on `node`'s IPC socket, listening on a loopback port; Drop kills and reaps it.
pub struct SriPool {
    child: Option<Child>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The authority public key, SRI's base58check form (also ours).
    pub key: String,
}

impl SriPool {
    pub fn start(node: &CoreNode, payout: &str) -> SriPool {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let key = ckpool::sv2::keys::AuthorityKey::generate().unwrap();
        let config = format!(
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
        let path = dir.path().join("pool-config.toml");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("pool.log")).unwrap();
        let child = Command::new(pool_sv2_bin())
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pool_sv2");
        let mut pool = SriPool { child: Some(child), dir, port, key: key.public_string() };
        pool.wait_listening();
        pool
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pool.log")).unwrap_or_default()
    }

    /// Waits (≤ LIMIT) until the pool listens and has its first template from the node (it
    /// logs both; a connection before that is held until the template); panics with its log if
    /// it exits.
    pub fn wait_listening(&mut self) {
        let listening = format!("Starting downstream server at 127.0.0.1:{}", self.port);
        let log_path = self.dir.path().join("pool.log");
        let child = &mut self.child;
        wait::blocking_or(
            "pool_sv2 listening with a template from Core",
            LIMIT,
            || {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                    panic!("pool_sv2 exited ({status}); log:\n{log}");
                }
                log.contains(&listening) && log.contains("Required template data received")
            },
            || format!("log:\n{}", std::fs::read_to_string(&log_path).unwrap_or_default()),
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("stratum2+tcp://127.0.0.1:{}/{}", self.port, self.key)
    }
}

impl Drop for SriPool {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
