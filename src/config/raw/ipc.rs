//! `ipcmining` (ckpool 1.2's key: the path of Bitcoin Core's IPC unix socket) and
//! `ipcfeethreshold` (the fee rise, in satoshis, that makes the node send a new template).

use super::*;
use crate::config::IpcMining;

/// Default `ipcfeethreshold`: 10,000 sat (0.0001 BTC) more in fees makes a new template on the
/// same block; smaller rises wait for the next block or `update_interval`.
pub const DEFAULT_FEE_THRESHOLD: u64 = 10_000;

impl Ctx<'_> {
    pub(super) fn ipcmining(&self, r: &RawConfig) -> Result<Option<IpcMining>, ConfigError> {
        let path = self.string(key!(r.ipcmining), "")?;
        let fee_threshold = self.uint(key!(r.ipcfeethreshold), DEFAULT_FEE_THRESHOLD, 1, 2_100_000_000_000_000)?;
        if path.is_empty() {
            if r.ipcfeethreshold.is_some() {
                return Err(self.err(
                    "ipcfeethreshold",
                    &Value::Null,
                    "applies to \"ipcmining\" only; set that too, or remove this key",
                ));
            }
            return Ok(None);
        }
        // ckpool's form is a path; a `unix:` prefix as bitcoin-node's -ipcbind writes it is taken too.
        let path = path.strip_prefix("unix:").unwrap_or(&path);
        Ok(Some(IpcMining { path: PathBuf::from(path), fee_threshold }))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, IpcMining};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("t.conf")).map_err(|e| e.to_string())
    }

    #[test]
    fn ipcmining_is_a_socket_path_with_a_fee_threshold() {
        assert_eq!(parse("{}").unwrap().ipcmining, None, "GBT is the default");
        let c = parse(r#"{"ipcmining": "/var/lib/bitcoin/node.sock"}"#).unwrap();
        assert_eq!(c.ipcmining, Some(IpcMining { path: "/var/lib/bitcoin/node.sock".into(), fee_threshold: 10_000 }));
        let c = parse(r#"{"ipcmining": "unix:/n.sock", "ipcfeethreshold": 500}"#).unwrap();
        assert_eq!(c.ipcmining, Some(IpcMining { path: "/n.sock".into(), fee_threshold: 500 }));
        let e = parse(r#"{"ipcfeethreshold": 500}"#).unwrap_err();
        assert!(e.contains("ipcfeethreshold") && e.contains("applies to \"ipcmining\" only"), "{e}");
        let e = parse(r#"{"ipcmining": "/n.sock", "ipcfeethreshold": 0}"#).unwrap_err();
        assert!(e.contains("must be a whole number from 1"), "{e}");
    }
}
