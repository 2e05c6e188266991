//! Empty-first work on a new tip: one `getblockheader` for the new block, then the coinbase-only
//! template `work::empty` derives from it, so miners leave the old block before the node has
//! built its full template. Any work source with the tip's header facts can use
//! [`EmptyFirst::derive`]; [`EmptyFirst::template`] asks the node for them.

use bitcoin::Network;
use serde::Deserialize;
use serde_json::json;

use crate::bitcoind::Rpc;
use crate::hex;
use crate::work::empty::{self, Refusal, TipHeader};
use crate::work::Template;

/// The chain the node serves (`getblockchaininfo.chain` at start) and what was said about it.
#[derive(Debug)]
pub struct EmptyFirst {
    network: Option<Network>,
    chain: String,
    /// A refusal for good (the chain's rules) was logged at info once; none is tried since.
    told: bool,
}

/// The fields of `getblockheader HASH true` the empty template needs.
#[derive(Deserialize)]
struct Header {
    height: u32,
    bits: String,
    mediantime: u32,
    /// 1 for the node's tip; more for a block below it; -1 off the active chain.
    confirmations: i64,
}

impl EmptyFirst {
    pub fn new(network: Option<Network>, chain: &str) -> EmptyFirst {
        EmptyFirst { network, chain: chain.to_string(), told: false }
    }

    /// The empty template on `tip` from the node's header of it, or `None` (logged: at debug for
    /// this tip, at info once for a reason that will persist). Not made when the block is no
    /// longer the node's tip (a newer one follows: its own announcement comes).
    pub async fn template(&mut self, rpc: &Rpc, tip: [u8; 32], basis: &Template, now: u32) -> Option<Template> {
        if self.told {
            return None; // refused for good (the chain's rules): no call to the node per block
        }
        let hash = hex::encode_rev(&tip);
        let answer = rpc.call("getblockheader", json!([hash, true])).await.map_err(|e| e.to_string());
        let h = match answer.and_then(|v| Header::deserialize(&v).map_err(|e| format!("unexpected answer: {e}"))) {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!("empty-first: getblockheader {hash}: {e}; waiting for the full template");
                return None;
            }
        };
        if h.confirmations != 1 {
            tracing::debug!("empty-first: block {hash} is no longer the node's tip; waiting for the full template");
            return None;
        }
        let Some(bits) = u32::from_str_radix(&h.bits, 16).ok().filter(|_| h.bits.len() == 8) else {
            tracing::debug!("empty-first: block {hash}: bits {:?} unreadable; waiting for the full template", h.bits);
            return None;
        };
        let header = TipHeader { hash: tip, height: h.height, bits, mediantime: h.mediantime };
        self.derive(&header, basis, now)
    }

    /// The empty template on `tip` (header facts from any source), logged as [`EmptyFirst::template`].
    pub fn derive(&mut self, tip: &TipHeader, basis: &Template, now: u32) -> Option<Template> {
        if self.told {
            return None;
        }
        match empty::template(self.network, &self.chain, tip, basis, now) {
            Ok(t) => Some(t),
            Err(r) => {
                self.refused(&r, tip.height.saturating_add(1));
                None
            }
        }
    }

    fn refused(&mut self, r: &Refusal, height: u32) {
        if r.persists() {
            self.told = true;
            tracing::info!(
                "empty-first: no coinbase-only work on new blocks on this node ({r}); miners wait for the full template"
            );
        } else {
            tracing::debug!("empty-first: none for height {height} ({r}); waiting for the full template");
        }
    }
}
