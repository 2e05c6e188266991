//! `ckpool payout` and `ckpool difficulty`: mining-contract payouts, difficulty epochs and
//! network hashrate, exact (rational arithmetic, satoshis floored once), offline or from the node.
//!
//! The arithmetic is pure and lives in [`crate::payout`] (`exact`, `formula`, `contracts`); this is
//! the command-line face: arguments, the node's chain ([`chain`], through the pool's own
//! [`crate::bitcoind::Rpc`], so cookie auth and failover work as for the pool) and the printout.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use serde_json::json;

use crate::config::{Btcd, Config, RpcAuth, Secret};
use crate::payout::exact::Ratio;
use crate::payout::formula;

pub mod chain;
mod difficulty;
mod measured;
mod pay;

pub use chain::{Chain, FeeSource, OwnBlocks};
pub use difficulty::{run_difficulty, DifficultyArgs};
pub use pay::{run_payout, PayoutArgs, SubsidySource};

/// How to reach the node (node-aware mode). Without any of these the command is offline.
#[derive(Debug, Clone, Args, Default)]
pub struct NodeArgs {
    /// ckpool JSON config: its "btcd" entries (url, auth/pass or cookie; failover in order), and
    /// btcsig/btcaddress
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node RPC URL, "host:port" or "http://host:port"
    #[arg(long, value_name = "URL")]
    pub rpc_url: Option<String>,
    /// RPC user
    #[arg(long, value_name = "USER")]
    pub rpc_user: Option<String>,
    /// RPC password
    #[arg(long, value_name = "PASS")]
    pub rpc_pass: Option<String>,
    /// bitcoind cookie file (instead of --rpc-user/--rpc-pass)
    #[arg(long, value_name = "FILE")]
    pub rpc_cookie: Option<PathBuf>,
    /// Seconds to wait for each RPC reply
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub rpc_timeout: u64,
}

/// What a config file gives besides the nodes: the marks of the pool's own blocks.
#[derive(Debug, Clone, Default)]
pub struct PoolMarks {
    pub btcsig: Option<String>,
    pub btcaddress: Option<String>,
}

impl NodeArgs {
    fn is_set(&self) -> bool {
        self.config.is_some() || self.rpc_url.is_some() || self.rpc_cookie.is_some()
    }

    /// The nodes to ask and the config's btcsig/btcaddress; `None` in offline mode. Without
    /// `--rpc-*` flags: every `btcd` entry of the config, in failover order. With them: one node,
    /// the flags over the config's first entry (`--rpc-cookie` over user and password).
    pub fn nodes(&self) -> Result<Option<(Vec<Btcd>, PoolMarks)>> {
        if !self.is_set() {
            return Ok(None);
        }
        let cfg = self.config.as_deref().map(Config::load).transpose()?;
        if let Some(c) = &cfg {
            if !c.unknown_keys.is_empty() {
                eprintln!("warning: config {}: unknown keys ignored: {}", c.path.display(), c.unknown_keys.join(", "));
            }
        }
        let marks = cfg.as_ref().map_or_else(PoolMarks::default, |c| {
            let some = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
            PoolMarks { btcsig: some(&c.btcsig), btcaddress: some(&c.btcaddress) }
        });
        let first = cfg.as_ref().and_then(|c| c.btcd.first().cloned());
        let flags =
            self.rpc_url.is_some() || self.rpc_user.is_some() || self.rpc_pass.is_some() || self.rpc_cookie.is_some();
        if !flags {
            let btcd = cfg.map(|c| c.btcd).unwrap_or_default();
            if btcd.is_empty() {
                let path = self.config.as_deref().unwrap_or(std::path::Path::new("")).display();
                bail!("config {path} has no \"btcd\" entry (the node's url, auth, pass): add one or give --rpc-url");
            }
            return Ok(Some((btcd, marks)));
        }
        let url = match (&self.rpc_url, &first) {
            (Some(u), _) => rpc_url(u)?,
            (None, Some(b)) => b.url.clone(),
            (None, None) => bail!("no node URL: give --rpc-url (or --config with a btcd entry)"),
        };
        let auth = match (&self.rpc_cookie, first.map(|b| b.auth)) {
            (Some(c), _) => RpcAuth::Cookie(c.clone()),
            (None, Some(RpcAuth::Cookie(c))) if self.rpc_user.is_none() && self.rpc_pass.is_none() => {
                RpcAuth::Cookie(c)
            }
            (None, base) => {
                let (user, pass) = match base {
                    Some(RpcAuth::UserPass { user, pass }) => (user, pass),
                    _ => (String::new(), Secret::default()),
                };
                RpcAuth::UserPass {
                    user: self.rpc_user.clone().unwrap_or(user),
                    pass: self.rpc_pass.clone().map(Secret::new).unwrap_or(pass),
                }
            }
        };
        Ok(Some((vec![Btcd { url, auth, notify: false }], marks)))
    }

    /// The node's chain and the config's btcsig/btcaddress; `None` in offline mode.
    fn connect(&self) -> Result<Option<(Chain, PoolMarks)>> {
        let Some((btcd, marks)) = self.nodes()? else { return Ok(None) };
        let rpc = crate::bitcoind::Rpc::new(&btcd, Duration::from_secs(self.rpc_timeout.max(1)));
        Ok(Some((Chain::new(rpc)?, marks)))
    }
}

/// `--rpc-url` as the RPC client wants it (`http://host:port/`): "host:port", "host" (port 8332),
/// "http://host:port/path"; credentials in the URL are dropped (they would show in messages).
pub fn rpc_url(text: &str) -> Result<String> {
    let t = text.trim();
    if t.starts_with("https://") {
        bail!("node URL {t:?}: https is not supported; bitcoind serves RPC over plain http");
    }
    let rest = t.strip_prefix("http://").unwrap_or(t);
    let hostport = rest.split('/').next().unwrap_or("");
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    let with_port = if hostport.rsplit_once(':').is_some_and(|(_, p)| !p.ends_with(']')) {
        hostport.to_string()
    } else {
        format!("{hostport}:8332")
    };
    crate::config::normalize_rpc_url(&with_port)
        .ok_or_else(|| anyhow!("node URL {hostport:?}: expected host:port such as 127.0.0.1:8332"))
}

/// Parses `--nbits` (hex, optional `0x`): the compact target and the difficulty it encodes.
pub fn parse_nbits(text: &str) -> Result<(u32, Ratio)> {
    let t = text.trim().trim_start_matches("0x");
    let bits = u32::from_str_radix(t, 16)
        .map_err(|_| anyhow!("nbits {text:?} is not 8 hex digits such as 1d00ffff or 17034219"))?;
    let d = formula::difficulty_from_nbits(bits)
        .ok_or_else(|| anyhow!("nbits {text:?} encodes a zero, negative or overflowing target"))?;
    Ok((bits, d))
}

fn check_common(block_time: u64, period: u64) -> Result<()> {
    if block_time == 0 {
        bail!("--block-time 0: the target time per block must be at least 1 second");
    }
    if period == 0 {
        bail!("--period 0: the number of blocks per period must be at least 1");
    }
    Ok(())
}

/// Decimal, plus the exact fraction when the decimal does not terminate within 12 places.
fn show_exact(r: &Ratio) -> String {
    let s = r.to_decimal_trimmed(12);
    if s.ends_with('…') {
        format!("{s} (= {}/{})", r.num(), r.den())
    } else {
        s
    }
}

fn ratio_json(r: &Ratio) -> serde_json::Value {
    json!({"num": r.num().to_string(), "den": r.den().to_string(), "decimal": r.to_decimal_trimmed(12)})
}

/// Where each input came from, for the printout.
struct Sourced<T> {
    value: T,
    source: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_url_never_keeps_credentials() {
        assert_eq!(rpc_url("http://u:secret@127.0.0.1:18443/").unwrap(), "http://127.0.0.1:18443/");
        assert_eq!(rpc_url("127.0.0.1:8332").unwrap(), "http://127.0.0.1:8332/");
        assert_eq!(rpc_url(" node.lan ").unwrap(), "http://node.lan:8332/");
        assert_eq!(rpc_url("[::1]").unwrap(), "http://[::1]:8332/");
        assert_eq!(rpc_url("http://[::1]:18443/wallet/x").unwrap(), "http://[::1]:18443/");
        for bad in ["https://x:1", "", ":8332", "h:0", "h:99999"] {
            assert!(rpc_url(bad).is_err(), "{bad}");
        }
    }

    fn args(v: &[&str]) -> NodeArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            node: NodeArgs,
        }
        <P as clap::Parser>::parse_from(std::iter::once("x").chain(v.iter().copied())).node
    }

    /// Which nodes and which credentials: the config's entries, or one node with the flags over
    /// the config's first entry.
    #[test]
    fn nodes_from_config_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("c.conf");
        std::fs::write(
            &conf,
            r#"{"btcd": [{"url": "127.0.0.1:1", "cookie": "/var/lib/bitcoind/.cookie"},
                         {"url": "10.0.0.2:8332", "auth": "b", "pass": "c"}],
                "btcsig": "/pool/", "btcaddress": ""} notes"#,
        )
        .unwrap();
        let c = conf.to_str().unwrap();
        assert!(args(&[]).nodes().unwrap().is_none());
        let (btcd, marks) = args(&["--config", c]).nodes().unwrap().unwrap();
        assert_eq!(btcd.len(), 2);
        assert_eq!(btcd[0].auth, RpcAuth::Cookie("/var/lib/bitcoind/.cookie".into()));
        assert_eq!((marks.btcsig.as_deref(), marks.btcaddress), (Some("/pool/"), None));
        // --rpc-url alone keeps the first entry's cookie; --rpc-user replaces it.
        let (btcd, _) = args(&["--config", c, "--rpc-url", "127.0.0.1:2"]).nodes().unwrap().unwrap();
        assert_eq!((btcd.len(), btcd[0].url.as_str()), (1, "http://127.0.0.1:2/"));
        assert_eq!(btcd[0].auth, RpcAuth::Cookie("/var/lib/bitcoind/.cookie".into()));
        let (btcd, _) = args(&["--config", c, "--rpc-user", "u", "--rpc-pass", "p"]).nodes().unwrap().unwrap();
        assert_eq!(btcd[0].url, "http://127.0.0.1:1/");
        assert_eq!(btcd[0].auth, RpcAuth::UserPass { user: "u".into(), pass: Secret::new("p") });
        let (btcd, _) = args(&["--rpc-url", "h:3", "--rpc-cookie", "/c"]).nodes().unwrap().unwrap();
        assert_eq!(btcd[0].auth, RpcAuth::Cookie("/c".into()));
        // A config the pool would refuse is refused here too, by key.
        std::fs::write(&conf, r#"{"btcd": [{"url": "127.0.0.1:1", "auth": "u", "pass": 5}]}"#).unwrap();
        let e = args(&["--config", c]).nodes().unwrap_err().to_string();
        assert!(e.contains("btcd[0].pass") && !e.contains("= 5"), "{e}");
        std::fs::write(&conf, r#"{"btcaddress": "x"}"#).unwrap();
        assert!(args(&["--config", c]).nodes().unwrap_err().to_string().contains("\"btcd\""));
    }
}
