//! `systemctl reload` (SIGHUP): besides reopening the log files, the config file is read again
//! and the keys that are safe to change while miners are connected are applied at once:
//!
//! * `mindiff`, `startdiff`, `maxdiff`, `vardiff_target_interval`, `vardiff_retarget_interval`:
//!   sessions that connect from now on use the new values; connected sessions keep the ones
//!   they started with (a miner's difficulty never jumps under it; they get the new ones when
//!   they reconnect).
//! * `btcsig` (pool mode; solo mode needs a restart, the proxy does not use it): the next
//!   template's coinbase carries the new signature; a fresh job is sent at once.
//! * `stats_interval`: the statistics files are rewritten on the new interval.
//! * `loglevel`: the operator log's level (unless `-l` is given, which wins).
//!
//! Every other key that changed is named in one log line as needing a restart. A file that does
//! not parse is one error line, and the running configuration stays.

use std::time::Duration;

use crate::config::Config;
use crate::difficulty::Difficulty;
use crate::mining::vardiff::VardiffParams;

/// The values a reload can change while running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub mindiff: Difficulty,
    pub startdiff: Difficulty,
    pub maxdiff: Difficulty,
    pub vardiff: VardiffParams,
    pub btcsig: String,
    pub stats_interval: Duration,
}

impl Live {
    pub fn of(cfg: &Config) -> Live {
        Live {
            mindiff: cfg.mindiff,
            startdiff: cfg.startdiff,
            maxdiff: cfg.maxdiff,
            vardiff: cfg.vardiff,
            btcsig: cfg.btcsig.clone(),
            stats_interval: cfg.stats_interval,
        }
    }
}

/// What a new config changes: keys applied now, keys that need a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub applied: Vec<&'static str>,
    pub restart: Vec<&'static str>,
}

/// How the running mode uses `btcsig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Btcsig {
    /// Pool mode: the next template's coinbase takes it.
    Live,
    /// Solo mode: part of each address's cached coinbase; a restart applies it.
    Restart,
    /// Proxy mode: the upstream builds the coinbase; not used.
    Unused,
}

/// Compares the running config with the file's new one, key by key.
pub fn plan(old: &Config, new: &Config, btcsig: Btcsig) -> Plan {
    let mut p = Plan::default();
    let mut key = |name: &'static str, changed: bool, live: bool| {
        if changed {
            if live {
                p.applied.push(name)
            } else {
                p.restart.push(name)
            }
        }
    };
    key("mindiff", old.mindiff != new.mindiff, true);
    key("startdiff", old.startdiff != new.startdiff, true);
    key("maxdiff", old.maxdiff != new.maxdiff, true);
    key("vardiff_target_interval", old.vardiff.target_interval_us != new.vardiff.target_interval_us, true);
    key("vardiff_retarget_interval", old.vardiff.retarget_interval_us != new.vardiff.retarget_interval_us, true);
    if btcsig != Btcsig::Unused {
        key("btcsig", old.btcsig != new.btcsig, btcsig == Btcsig::Live);
    }
    key("stats_interval", old.stats_interval != new.stats_interval, true);
    key("loglevel", old.loglevel != new.loglevel, true);
    key("btcd", old.btcd != new.btcd, false);
    key("proxy", old.proxy != new.proxy, false);
    key("btcaddress", old.btcaddress != new.btcaddress, false);
    key("serverurl", old.serverurl != new.serverurl, false);
    key("apiurl", old.apiurl != new.apiurl, false);
    key("sv2url", old.sv2url != new.sv2url, false);
    key("sv2jdurl", old.sv2jdurl != new.sv2jdurl, false);
    key("sv2_authority_key", old.sv2_authority_key != new.sv2_authority_key, false);
    key("sv2_cert_validity", old.sv2_cert_validity != new.sv2_cert_validity, false);
    key("zmqblock", old.zmqblock != new.zmqblock, false);
    key("logdir", old.logdir != new.logdir, false);
    key("blockpoll", old.blockpoll != new.blockpoll, false);
    key("update_interval", old.update_interval != new.update_interval, false);
    key("nonce1length", old.nonce1length != new.nonce1length, false);
    key("nonce2length", old.nonce2length != new.nonce2length, false);
    key("version_mask", old.version_mask != new.version_mask, false);
    key("maxclients", old.maxclients != new.maxclients, false);
    key("donation", old.donation_bp != new.donation_bp, false);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cfg(text: &str) -> Config {
        Config::parse(text, Path::new("t.conf")).unwrap()
    }

    #[test]
    fn plan_splits_live_keys_from_restart_keys() {
        let old = cfg(r#"{"mindiff": 1, "startdiff": 42, "btcsig": "/a/", "serverurl": ["0.0.0.0:3333"]}"#);
        assert_eq!(plan(&old, &old, Btcsig::Live), Plan::default());
        let new = cfg(r#"{"mindiff": 2, "startdiff": 64, "maxdiff": 1000, "btcsig": "/b/", "stats_interval": 5,
                "loglevel": "debug", "serverurl": ["0.0.0.0:3334"], "logdir": "/x", "maxclients": 10}"#);
        let p = plan(&old, &new, Btcsig::Live);
        assert_eq!(p.applied, ["mindiff", "startdiff", "maxdiff", "btcsig", "stats_interval", "loglevel"]);
        assert_eq!(p.restart, ["serverurl", "logdir", "maxclients"]);
        // Solo mode caches each address's coinbase: btcsig waits for a restart there.
        let p = plan(&old, &new, Btcsig::Restart);
        assert!(p.restart.contains(&"btcsig") && !p.applied.contains(&"btcsig"));
        // The proxy does not build coinbases: btcsig is neither applied nor waiting.
        let p = plan(&old, &new, Btcsig::Unused);
        assert!(!p.restart.contains(&"btcsig") && !p.applied.contains(&"btcsig"));
        assert_eq!(Live::of(&new).startdiff, Difficulty::from_integer(64));
    }
}
