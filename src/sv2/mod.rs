//! Stratum V2, the mining core's second face (`sv2url`, in pool and proxy mode): Noise-encrypted
//! connections from SV2 miners (standard channels) and proxies or translators (extended
//! channels), whose shares go through the same mining core, share log, statistics, vardiff and
//! block path as SV1.
//!
//! ```text
//!  keys.rs       the authority key (file, 0600), its public form and the stratum2+tcp:// URL
//!  noise.rs      the Noise NX handshake (both roles, the authority's certificate) and its cipher (ring)
//!  transport.rs  the handshake over a socket, then bounded frames sealed and opened in place
//!  hot.rs        the share path's messages by hand: SubmitShares.Extended in, .Success/.Error out
//!  server.rs     listeners: accept, handshake under a deadline, one task per connection
//!  session.rs    one connection: SetupConnection, channels, jobs, targets, shares
//!  jobs.rs       pure: job ids, targets, hashrate -> difficulty, SV2 error codes
//!  client.rs     an SV2 client (initiator): `ckpool bench --sv2`, the proxy's SV2 upstream, the tests
//!  jds/          the Job Declaration server (`sv2jdurl`): tokens, declarations checked by the node
//!  jd_client.rs  a Job Declaration client: the tests, a declaring proxy
//! ```
//!
//! The wire is SRI's (`framing_sv2`, `parsers_sv2`, `mining_sv2`, ...) but for the Noise layer,
//! ours and wire-compatible with SRI's `noise_sv2` (tested against it) for `ring`'s faster cipher;
//! the mining logic is ours (`crate::mining`). SRI's `channels_sv2` server channels are not used: they would
//! judge shares a second way beside the core's.

pub mod client;
pub mod hot;
pub mod jd_client;
pub mod jds;
pub mod jobs;
pub mod keys;
pub mod noise;
pub mod server;
pub mod session;
pub mod transport;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;

/// Largest frame the pool reads from a miner (its biggest message, SetupConnection, is ~1.3 KB).
pub const CLIENT_FRAME_LIMIT: usize = 16 * 1024;
/// Largest frame a client reads from a pool (a job carries up to 64 KiB of coinbase).
pub const POOL_FRAME_LIMIT: usize = 1 << 20;
/// Time for each handshake message.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// SV2 carries at most 32 bytes of extranonce.
pub const MAX_EXTRANONCE: usize = 32;

/// The package's state directory (the unit's `StateDirectory=ckpool`).
const PACKAGE_STATE_DIR: &str = "/var/lib/ckpool";

/// Where the authority key lives: `sv2_authority_key`, else systemd's state directory
/// (`StateDirectory=ckpool`), else /var/lib/ckpool when it exists (the package made it, so
/// `ckpool sv2-key` run by hand finds the service's key), else logdir.
pub fn authority_key_path(cfg: &Config) -> PathBuf {
    if let Some(p) = &cfg.sv2_authority_key {
        return p.clone();
    }
    match std::env::var("STATE_DIRECTORY").ok().and_then(|d| d.split(':').next().map(PathBuf::from)) {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("sv2_authority.key"),
        _ if std::path::Path::new(PACKAGE_STATE_DIR).is_dir() => {
            PathBuf::from(PACKAGE_STATE_DIR).join("sv2_authority.key")
        }
        _ => cfg.logdir.join("sv2_authority.key"),
    }
}

/// The URL miners are given for `addr` (an unspecified address is shown as given: the operator
/// puts the host's public name there).
pub fn url_for(addr: &SocketAddr, key: &keys::AuthorityKey) -> String {
    keys::url(&addr.to_string(), key.public())
}

/// What the pool serves SV2 with: bound listeners and the authority key.
pub struct Sv2Setup {
    pub listeners: Vec<tokio::net::TcpListener>,
    pub key: keys::AuthorityKey,
    pub cert_validity: Duration,
}

/// Checks the SV2 keys of `cfg`, loads or creates the authority key and takes the `sv2url`
/// listeners (bound, inherited from systemd or handed over: `crate::sockets`). `None` when SV2
/// is off. Called inside the runtime.
pub fn setup(
    cfg: &Config,
    sockets: Vec<std::net::TcpListener>,
    nonce1_len: usize,
    nonce2_len: usize,
) -> anyhow::Result<Option<Sv2Setup>> {
    if cfg.sv2url.is_empty() {
        return Ok(None);
    }
    if cfg.version_mask != 0x1fff_e000 {
        tracing::warn!(
            "sv2: version_mask {:08x} is not BIP320's 1fffe000, which SV2 miners roll whenever version rolling is allowed; their shares rolling other bits are refused",
            cfg.version_mask
        );
    }
    if nonce1_len + nonce2_len > MAX_EXTRANONCE {
        anyhow::bail!(
            "sv2url: nonce1length {nonce1_len} + nonce2length {nonce2_len} is over Stratum V2's {MAX_EXTRANONCE}-byte extranonce; lower them"
        );
    }
    let path = authority_key_path(cfg);
    let (key, created) = keys::AuthorityKey::load_or_create(&path)?;
    if created {
        tracing::info!("sv2: created authority key {} (keep it: miners pin its public key)", path.display());
    }
    if let Some(p) = &cfg.sv2_static_key {
        tracing::info!(
            "sv2: sv2_static_key {} is not used: every connection gets a fresh static key certified by the authority key",
            p.display()
        );
    }
    let mut listeners = Vec::with_capacity(sockets.len());
    for l in sockets {
        let l = crate::sockets::to_tokio(l)?;
        let bound = l.local_addr()?;
        tracing::info!("listening for Stratum V2 miners on {bound}: {}", url_for(&bound, &key));
        listeners.push(l);
    }
    Ok(Some(Sv2Setup { listeners, key, cert_validity: cfg.sv2_cert_validity }))
}

/// `ckpool sv2-key --config F`: the authority public key and the URL of each `sv2url`.
#[derive(Debug, Clone, clap::Args)]
pub struct Sv2KeyArgs {
    /// Configuration file (its sv2_authority_key, or the default place, is read or created)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: PathBuf,
}

pub fn run_sv2_key(args: Sv2KeyArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    let path = authority_key_path(&cfg);
    let (key, created) = keys::AuthorityKey::load_or_create(&path)?;
    if created {
        eprintln!("created {} (mode 0600)", path.display());
    }
    println!("authority_pubkey {}", key.public_string());
    for a in &cfg.sv2url {
        println!("url {}", url_for(a, &key));
    }
    if cfg.sv2url.is_empty() {
        eprintln!("note: {} has no sv2url; the pool serves no Stratum V2 until one is set", args.config.display());
    }
    Ok(())
}
