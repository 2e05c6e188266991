//! Pool mode's work source: block templates from bitcoind (getblocktemplate, ZMQ or polling),
//! the payout script they pay, and solo mode's per-address coinbases.

pub mod solo;
pub mod templates;

use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::{Network, ScriptBuf};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::bitcoind::{Rpc, RpcError};
use crate::work::coinbase::script_for_address;

/// The node's network name from `getblockchaininfo.chain`.
pub fn network_of(chain: &str) -> Option<Network> {
    match chain {
        "main" => Some(Network::Bitcoin),
        "test" | "testnet3" => Some(Network::Testnet),
        "testnet4" => Some(Network::Testnet4),
        "signet" => Some(Network::Signet),
        "regtest" => Some(Network::Regtest),
        _ => None,
    }
}

/// Resolves `btcaddress` to the payout script, checking it against the node. A fork's address
/// format rust-bitcoin does not parse is taken from the node's own `validateaddress` answer.
pub async fn payout_script(rpc: &Rpc, address: &str) -> anyhow::Result<(ScriptBuf, String)> {
    let info = rpc.call("getblockchaininfo", json!([])).await?;
    let chain = info.get("chain").and_then(Value::as_str).unwrap_or("").to_string();
    let network = network_of(&chain);
    let local = network.map(|n| script_for_address(address, n));
    let node = rpc.call("validateaddress", json!([address])).await;
    match (&local, &node) {
        (Some(Ok(script)), Ok(v)) => {
            if v.get("isvalid") == Some(&Value::Bool(false)) {
                bail!("btcaddress {address:?} is refused by the node ({chain}): validateaddress says isvalid=false");
            }
            Ok((script.clone(), chain))
        }
        (Some(Ok(script)), Err(_)) => Ok((script.clone(), chain)),
        (_, Ok(v)) if v.get("isvalid") == Some(&Value::Bool(true)) => {
            let spk =
                v.get("scriptPubKey").and_then(Value::as_str).and_then(|h| crate::hex::decode(h).ok()).with_context(
                    || format!("btcaddress {address:?}: the node accepts it but gives no scriptPubKey"),
                )?;
            Ok((ScriptBuf::from_bytes(spk), chain))
        }
        (Some(Err(e)), _) => bail!("btcaddress: {e}; set an address of the node's network ({chain})"),
        _ => bail!("btcaddress {address:?} is not valid for the node's network ({chain})"),
    }
}

/// Waits until the node answers (warming up, unreachable), logging what it says, or shutdown.
pub async fn wait_for_node(rpc: &Rpc, shutdown: &mut watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(250);
    let mut last_msg = String::new();
    loop {
        match rpc.call("getblockchaininfo", json!([])).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let msg = e.to_string();
                if msg != last_msg {
                    if matches!(e, RpcError::Unauthorized { .. }) {
                        bail!("{e}");
                    }
                    tracing::warn!("waiting for bitcoind: {msg}");
                    last_msg = msg;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => bail!("shutdown while waiting for bitcoind"),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

