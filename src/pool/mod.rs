//! Pool mode's work source: block templates from bitcoind (getblocktemplate, ZMQ or polling; or
//! Bitcoin Core's IPC mining interface, `ipc_source.rs`),
//! the payout script they pay, solo mode's per-address coinbases and PPLNS's payees.

mod ipc_source;
pub mod pplns;
pub mod solo;
pub mod templates;
pub mod tip;

use std::time::Duration;

use anyhow::{bail, Context};
use bitcoin::{Network, ScriptBuf};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::bitcoind::{zmq, Rpc, RpcError};
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

/// The payout script of a miner's username (its part before the first `.` or `_`) on `network`,
/// or why it cannot be paid: solo mode and PPLNS both pay miners by the address they authorize
/// with. `network` None: a chain whose addresses the pool cannot parse.
pub fn username_script(username: &str, network: Option<Network>) -> Result<ScriptBuf, String> {
    let address = username.split(['.', '_']).next().unwrap_or(username);
    let Some(network) = network else {
        return Err(format!("{address:?}: this node's chain has no address format the pool knows"));
    };
    script_for_address(address, network).map_err(|e| e.to_string())
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

/// What the node publishes over ZMQ: Core's `getzmqnotifications`, else Bitcoin SV's
/// `activezmqnotifications` (same list; see `zmq::published_at`). `node`: one btcd entry.
pub async fn zmq_publishers(rpc: &Rpc, node: Option<usize>) -> Result<Value, RpcError> {
    let mut last = None;
    for method in ["getzmqnotifications", "activezmqnotifications"] {
        let r = match node {
            Some(i) => rpc.call_node(i, method, json!([])).await,
            None => rpc.call(method, json!([])).await,
        };
        match r {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("two methods tried"))
}

/// Says at start when the node (asked with `getzmqnotifications`) publishes no blocks at
/// `zmqblock`: new blocks then reach miners only by polling every `polling`.
pub async fn zmq_published(rpc: &Rpc, ep: &str, polling: Duration) {
    match zmq_publishers(rpc, None).await {
        Ok(v) => {
            if let Err(listed) = zmq::published_at(&v, ep) {
                let listed = if listed.is_empty() { "nothing".to_string() } else { listed.join(", ") };
                tracing::warn!(
                    "zmqblock {ep}: bitcoind publishes no blocks there (it publishes: {listed}); \
                     new blocks are found by polling every {polling:?} until a publisher appears there"
                );
            }
        }
        Err(e) => tracing::debug!("zmqblock {ep}: the node does not list its publishers ({e})"),
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
