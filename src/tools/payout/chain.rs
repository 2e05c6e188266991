//! The chain queries the payout needs (block headers: difficulty and time; subsidies and fees),
//! through the pool's own RPC client ([`Rpc`]: cookie or user/password, failover over the
//! config's `btcd` entries). The command is synchronous: each call runs on a small runtime of its own.
//!
//! Amounts are read from the raw JSON text the node wrote ([`Rpc::call_raw`]), so no float is on
//! the way to a satoshi.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::consensus::encode::deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::bitcoind::{Rpc, RpcError};
use crate::payout::exact::amount_from_json_text;

/// An amount from `getblockstats`, exactly, in satoshis. Bitcoin Core (and its forks) write
/// satoshis as a JSON integer (`"totalfee": 14345`); Bitcoin SV writes coins with eight decimals
/// (`"totalfee": 0.00014345`, `0.00000000` for none). The text says which: a decimal point means coins.
pub fn stats_amount_sat(raw: &str) -> Result<u64, crate::payout::exact::ParseError> {
    let t = raw.trim();
    if t.contains(['.', 'e', 'E']) {
        amount_from_json_text(t)
    } else {
        crate::payout::exact::parse_amount(&format!("{t}sat"))
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 200 {
        format!("{}…", &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())])
    } else {
        s.to_string()
    }
}

/// Header fields the payout uses.
#[derive(Debug, Clone)]
pub struct Header {
    pub hash: String,
    pub height: u64,
    pub time: i64,
    pub bits: u32,
}

/// How block fees are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FeeSource {
    /// `getblockstats` when the node has it, else decoding blocks
    Auto,
    /// `getblockstats` totalfee
    Stats,
    /// decode `getblock <hash> 0` and sum inputs − outputs (inputs via `getrawtransaction`, needs -txindex)
    Decode,
}

/// Which blocks count as the pool's own.
#[derive(Debug, Clone, Default)]
pub struct OwnBlocks {
    /// Bytes that appear in the coinbase scriptSig (ckpool's `btcsig`).
    pub sig: Option<Vec<u8>>,
    /// scriptPubKey of the payout address (`btcaddress`).
    pub script: Option<Vec<u8>>,
}

impl OwnBlocks {
    pub fn new(btcsig: Option<&str>, btcaddress: Option<&str>) -> Result<OwnBlocks> {
        let script = match btcaddress {
            Some(a) => {
                let addr: bitcoin::Address<bitcoin::address::NetworkUnchecked> =
                    a.parse().with_context(|| format!("btcaddress {a:?} is not a valid address"))?;
                Some(addr.assume_checked().script_pubkey().to_bytes())
            }
            None => None,
        };
        let sig = btcsig.filter(|s| !s.is_empty()).map(|s| s.as_bytes().to_vec());
        if sig.is_none() && script.is_none() {
            bail!("--own-blocks needs btcsig or btcaddress (from --config, or --btcsig/--btcaddress)");
        }
        Ok(OwnBlocks { sig, script })
    }

    fn matches(&self, coinbase: &bitcoin::Transaction) -> bool {
        let script_sig = coinbase.input.first().map(|i| i.script_sig.as_bytes()).unwrap_or(&[]);
        let by_sig = self.sig.as_ref().is_some_and(|s| script_sig.windows(s.len()).any(|w| w == s.as_slice()));
        let by_addr =
            self.script.as_ref().is_some_and(|s| coinbase.output.iter().any(|o| o.script_pubkey.as_bytes() == s));
        by_sig || by_addr
    }
}

/// Chain queries over the pool's [`Rpc`].
pub struct Chain {
    rpc: Rpc,
    rt: tokio::runtime::Runtime,
    /// Whether `getblockstats` exists (learned on first use).
    has_stats: std::cell::Cell<Option<bool>>,
    prev_tx: std::cell::RefCell<HashMap<bitcoin::Txid, bitcoin::Transaction>>,
}

impl Chain {
    pub fn new(rpc: Rpc) -> Result<Chain> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime for RPC calls")?;
        Ok(Chain { rpc, rt, has_stats: Default::default(), prev_tx: Default::default() })
    }

    /// host:port of the node answering, for messages.
    fn node(&self) -> &str {
        self.rpc.current_label()
    }

    /// Calls `method`; the result's JSON text as the node wrote it.
    pub fn call_raw(&self, method: &str, params: Value) -> Result<Box<RawValue>, RpcError> {
        self.rt.block_on(self.rpc.call_raw(method, params))
    }

    /// Calls `method` and decodes the result.
    pub fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T> {
        let raw = self.call_raw(method, params)?;
        serde_json::from_str(raw.get())
            .with_context(|| format!("bitcoind {}: {method}: unexpected reply {}", self.node(), truncate(raw.get())))
    }

    pub fn height(&self) -> Result<u64> {
        self.call("getblockcount", json!([]))
    }

    pub fn hash_at(&self, height: u64) -> Result<String> {
        self.call("getblockhash", json!([height]))
    }

    pub fn header_at(&self, height: u64) -> Result<Header> {
        let hash = self.hash_at(height)?;
        #[derive(serde::Deserialize)]
        struct H {
            hash: String,
            height: u64,
            time: i64,
            bits: String,
        }
        let h: H = self.call("getblockheader", json!([hash, true]))?;
        let bits = u32::from_str_radix(&h.bits, 16)
            .map_err(|_| anyhow!("bitcoind {}: getblockheader: bad bits {:?}", self.node(), h.bits))?;
        Ok(Header { hash: h.hash, height: h.height, time: h.time, bits })
    }

    pub fn block(&self, hash: &str) -> Result<bitcoin::Block> {
        let hex: String = self.call("getblock", json!([hash, 0]))?;
        let bytes =
            crate::hex::decode(&hex).map_err(|e| anyhow!("bitcoind {}: getblock {hash}: {e:?}", self.node()))?;
        deserialize(&bytes)
            .with_context(|| format!("bitcoind {}: getblock {hash}: cannot decode the block", self.node()))
    }

    /// Total fees of a block in satoshis.
    pub fn block_fees(&self, hash: &str, source: FeeSource) -> Result<u128> {
        let use_stats = match source {
            FeeSource::Stats => true,
            FeeSource::Decode => false,
            FeeSource::Auto => self.has_stats.get() != Some(false),
        };
        if use_stats {
            match self.call_raw("getblockstats", json!([hash, ["totalfee"]])) {
                Ok(raw) => {
                    self.has_stats.set(Some(true));
                    let map: HashMap<String, Box<RawValue>> = serde_json::from_str(raw.get())
                        .with_context(|| format!("bitcoind {}: getblockstats: not an object", self.node()))?;
                    let fee = map
                        .get("totalfee")
                        .ok_or_else(|| anyhow!("bitcoind {}: getblockstats {hash}: no totalfee", self.node()))?;
                    return Ok(stats_amount_sat(fee.get())
                        .with_context(|| format!("bitcoind {}: getblockstats: totalfee {}", self.node(), fee.get()))?
                        as u128);
                }
                // RPC_METHOD_NOT_FOUND: a node without getblockstats.
                Err(RpcError::Node { code: -32601, .. }) if source == FeeSource::Auto => {
                    self.has_stats.set(Some(false))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let block = self.block(hash)?;
        self.fees_by_decoding(&block)
    }

    /// Σ inputs − Σ outputs over the non-coinbase transactions; input values via `getrawtransaction`.
    pub fn fees_by_decoding(&self, block: &bitcoin::Block) -> Result<u128> {
        let mut total: i128 = 0;
        for tx in block.txdata.iter().skip(1) {
            for input in &tx.input {
                let prev = input.previous_output;
                let value = self.prev_output_value(prev.txid, prev.vout)?;
                total += value as i128;
            }
            for output in &tx.output {
                total -= output.value.to_sat() as i128;
            }
        }
        // Transactions spending outputs created in the same block are covered: their parents are
        // found through getrawtransaction as well.
        u128::try_from(total).map_err(|_| anyhow!("block {}: outputs exceed inputs", block.block_hash()))
    }

    fn prev_output_value(&self, txid: bitcoin::Txid, vout: u32) -> Result<u64> {
        if let Some(tx) = self.prev_tx.borrow().get(&txid) {
            return tx
                .output
                .get(vout as usize)
                .map(|o| o.value.to_sat())
                .ok_or_else(|| anyhow!("transaction {txid} has no output {vout}"));
        }
        let hex: String = self
            .call("getrawtransaction", json!([txid.to_string(), 0]))
            .context("looking up an input's value (the node needs -txindex=1 for this)")?;
        let bytes = crate::hex::decode(&hex).map_err(|e| anyhow!("getrawtransaction {txid}: {e:?}"))?;
        let tx: bitcoin::Transaction =
            deserialize(&bytes).with_context(|| format!("cannot decode transaction {txid}"))?;
        let value = tx.output.get(vout as usize).map(|o| o.value.to_sat());
        self.prev_tx.borrow_mut().insert(txid, tx);
        value.ok_or_else(|| anyhow!("transaction {txid} has no output {vout}"))
    }

    /// Whether the block at `hash` was mined by this pool.
    pub fn is_own(&self, hash: &str, own: &OwnBlocks) -> Result<bool> {
        let block = self.block(hash)?;
        Ok(block.txdata.first().is_some_and(|cb| own.matches(cb)))
    }

    /// The node's subsidy for a block: its coinbase value minus its fees.
    pub fn subsidy_from_coinbase(&self, hash: &str, source: FeeSource) -> Result<u64> {
        let block = self.block(hash)?;
        let cb: u64 = block.txdata.first().map(|t| t.output.iter().map(|o| o.value.to_sat()).sum()).unwrap_or(0);
        let fees = self.block_fees(hash, source)?;
        (cb as u128)
            .checked_sub(fees)
            .map(|v| v as u64)
            .ok_or_else(|| anyhow!("block {hash}: coinbase {cb} sat is less than its fees {fees} sat"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getblockstats_amounts_of_both_node_families() {
        // Bitcoin Core: integer satoshis; Bitcoin SV: coins with 8 decimals (both seen live).
        assert_eq!(stats_amount_sat("14345").unwrap(), 14_345);
        assert_eq!(stats_amount_sat("0").unwrap(), 0);
        assert_eq!(stats_amount_sat("5000000000").unwrap(), 5_000_000_000);
        assert_eq!(stats_amount_sat("0.00014345").unwrap(), 14_345);
        assert_eq!(stats_amount_sat("0.00000000").unwrap(), 0);
        assert_eq!(stats_amount_sat("50.00000000").unwrap(), 5_000_000_000);
        // Beyond f64's 15-16 digits: still exact.
        assert_eq!(stats_amount_sat("20999999.99999999").unwrap(), 2_099_999_999_999_999);
        assert!(stats_amount_sat("-1").is_err());
        assert!(stats_amount_sat("0.000000001").is_err());
        assert!(stats_amount_sat("\"x\"").is_err());
    }

    #[test]
    fn unreachable_node_error_names_the_node_not_the_password() {
        use crate::config::{RpcAuth, Secret};
        // Port 1 on loopback: nothing listens there.
        let auth = RpcAuth::UserPass { user: "u".into(), pass: Secret::new("hunter2") };
        let chain = Chain::new(Rpc::single("http://127.0.0.1:1/", auth, std::time::Duration::from_secs(2))).unwrap();
        let e = format!("{:#}", chain.height().unwrap_err());
        assert!(e.contains("127.0.0.1:1") && e.contains("cannot connect"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
