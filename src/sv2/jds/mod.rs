//! The Job Declaration server (`sv2jdurl`, pool mode): miners' proxies (SRI's jd_client_sv2,
//! a ckproxy with `jds`) declare the jobs they built from their own node; the pool checks each
//! one (its tip, its coinbase paying the pool, its transactions known or provided, the block
//! valid by the node) and gives a token its SV2 mining connection mines it under
//! (SetCustomMiningJob, `sv2/session/custom.rs`). Shares and blocks on declared jobs go through
//! the same mining core, share log, statistics and block submission as the pool's own.
//!
//! ```text
//!  mod.rs      the server: listeners, the pool's output, tokens, the node's check (IPC
//!              checkBlock, or the RPC proposal) and its mempool over IPC
//!  session.rs  one connection: setup, tokens, declarations, missing transactions, solutions
//!  known.rs    the transactions a declaration is resolved against (template, provided)
//!  limits.rs   what one connection may cost (pure)
//! ```

pub mod known;
pub mod limits;
pub mod session;

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::consensus::encode::serialize;
use bitcoin::{Amount, ScriptBuf, TxOut};
use serde_json::json;

use super::keys::AuthorityKey;
use super::server::{serve_face, Listen, Reader, Writer};
use crate::bitcoind::ipc::IpcAsk;
use crate::bitcoind::Rpc;
use crate::serve::ServerCtx;

/// What the node said of a declared job's block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeVerdict {
    /// Refused, with the node's reason (`bad-txns-...`, `inconclusive-not-best-prevblk`, ...).
    Invalid(String),
    /// No node could be asked.
    Unreachable(String),
}

/// How a declared job's block is checked by the node: with `ipcmining`, `checkBlock` over IPC
/// (no proof of work, merkle root checked); otherwise, and whenever the IPC link cannot answer,
/// `getblocktemplate` in proposal mode (BIP23: the same validity test, without proof of work).
/// Both give Core's reject reason, so a verdict means the same whichever path gave it.
pub struct NodeCheck {
    rpc: Arc<Rpc>,
    ipc: Option<IpcAsk>,
    /// The IPC path failed last time (one log line when it falls back, one when it is back).
    ipc_failing: AtomicBool,
}

/// Which path checked a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckPath {
    Ipc,
    Proposal,
}

impl CheckPath {
    pub fn name(self) -> &'static str {
        match self {
            CheckPath::Ipc => "checkBlock over IPC",
            CheckPath::Proposal => "a getblocktemplate proposal",
        }
    }
}

impl NodeCheck {
    pub fn new(rpc: Arc<Rpc>, ipc: Option<IpcAsk>) -> NodeCheck {
        NodeCheck { rpc, ipc, ipc_failing: AtomicBool::new(false) }
    }

    /// The IPC link, when the pool has one.
    pub fn ipc(&self) -> Option<&IpcAsk> {
        self.ipc.as_ref()
    }

    /// Checks `block` (serialized, with witnesses); says which path answered.
    pub async fn check(&self, block: &[u8]) -> (CheckPath, Result<(), NodeVerdict>) {
        if let Some(ipc) = &self.ipc {
            match ipc.check_block(block.to_vec()).await {
                Ok(c) => {
                    self.ipc_answered();
                    return (CheckPath::Ipc, if c.valid { Ok(()) } else { Err(NodeVerdict::Invalid(c.reason)) });
                }
                Err(why) => self.ipc_failed("checkBlock", &why),
            }
        }
        (CheckPath::Proposal, self.proposal(block).await)
    }

    async fn proposal(&self, block: &[u8]) -> Result<(), NodeVerdict> {
        let params = json!([{"mode": "proposal", "data": crate::hex::encode(block), "rules": ["segwit"]}]);
        match self.rpc.call("getblocktemplate", params).await {
            Ok(v) if v.is_null() => Ok(()),
            Ok(v) => Err(NodeVerdict::Invalid(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))),
            Err(e) => Err(NodeVerdict::Unreachable(e.to_string())),
        }
    }

    /// The node's mempool transactions by wtxid over IPC (empty where unknown); None without
    /// IPC or when the link cannot answer (the client is asked for all of them then).
    pub async fn mempool_txs(&self, wtxids: Vec<[u8; 32]>) -> Option<Vec<Vec<u8>>> {
        let ipc = self.ipc.as_ref()?;
        match ipc.txs_by_wtxid(wtxids).await {
            Ok(txs) => {
                self.ipc_answered();
                Some(txs)
            }
            Err(why) => {
                self.ipc_failed("getTransactionsByWitnessID", &why);
                None
            }
        }
    }

    fn ipc_answered(&self) {
        if self.ipc_failing.swap(false, Ordering::Relaxed) {
            tracing::info!("jds: the node answers over IPC again: declared blocks checked with checkBlock");
        }
    }

    fn ipc_failed(&self, what: &str, why: &str) {
        if !self.ipc_failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "jds: {what} over IPC failed ({}); declared blocks checked by getblocktemplate proposal (RPC) until IPC answers",
                crate::log::escape::Esc(why)
            );
        }
    }
}

/// The codes a declaration is refused with (SV2's, as the client gets them): the label set of
/// the refusals by code in `/metrics`, fixed.
pub const REFUSAL_CODES: [&str; 8] = [
    "invalid-mining-job-token",
    "rate-limited",
    "invalid-coinbase-tx",
    "invalid-coinbase-tx-input",
    "missing-txs",
    "invalid-job",
    "stale-chain-tip",
    "internal-error",
];

/// Declarations accepted and refused since start, and connections open (the operator's API
/// shows them: `/metrics`).
#[derive(Debug, Default)]
pub struct JdsCounts {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    /// Connections open now.
    pub connections: AtomicU64,
    /// Refusals by code, in [`REFUSAL_CODES`]' order (a code not in it counts in `refused` only).
    pub refused_by: [AtomicU64; REFUSAL_CODES.len()],
}

impl JdsCounts {
    /// Counts a refusal with `code`.
    pub fn refusal(&self, code: &str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = REFUSAL_CODES.iter().position(|c| *c == code) {
            self.refused_by[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Refusals by code.
    pub fn refused_by(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        REFUSAL_CODES.iter().zip(&self.refused_by).map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
    }
}

/// The server's shared part.
pub struct Jds {
    /// The pool's payout script: every satoshi of a declared coinbase goes to it.
    pub pool_script: Vec<u8>,
    /// AllocateMiningJobToken.Success's `coinbase_outputs`: the pool's output, value 0 (the
    /// client puts the block's whole value in it).
    pub outputs: Vec<u8>,
    pub check: NodeCheck,
    pub counts: Arc<JdsCounts>,
    /// Tokens: a keyed hash (SipHash, random key) of a counter, so none can be guessed.
    minter: std::collections::hash_map::RandomState,
    minted: AtomicU64,
    ids: AtomicU64,
}

impl Jds {
    pub fn new(pool_script: ScriptBuf, rpc: Arc<Rpc>, ipc: Option<IpcAsk>) -> Jds {
        let outputs = serialize(&vec![TxOut { value: Amount::ZERO, script_pubkey: pool_script.clone() }]);
        Jds {
            pool_script: pool_script.into_bytes(),
            outputs,
            check: NodeCheck::new(rpc, ipc),
            counts: Arc::new(JdsCounts::default()),
            minter: std::collections::hash_map::RandomState::new(),
            minted: AtomicU64::new(0),
            ids: AtomicU64::new(0),
        }
    }

    /// A fresh token.
    pub fn mint(&self) -> u64 {
        let mut h = self.minter.build_hasher();
        h.write_u64(self.minted.fetch_add(1, Ordering::Relaxed));
        h.finish()
    }
}

/// The server's listeners, with the key they speak with.
pub struct JdsSetup {
    pub listeners: Vec<tokio::net::TcpListener>,
    pub key: AuthorityKey,
    pub cert_validity: Duration,
}

/// Serves Job Declaration connections until shutdown.
pub async fn serve(ctx: Arc<ServerCtx>, setup: JdsSetup, jds: Arc<Jds>) {
    for l in &setup.listeners {
        if let Ok(a) = l.local_addr() {
            tracing::info!("listening for Stratum V2 job declarations on {a}: {}", super::url_for(&a, &setup.key));
        }
    }
    let face = move |ctx: Arc<ServerCtx>, peer: SocketAddr, rd: Reader, wr: Writer| {
        let jds = jds.clone();
        async move {
            let id = jds.ids.fetch_add(1, Ordering::Relaxed);
            jds.counts.connections.fetch_add(1, Ordering::Relaxed);
            session::JdsSession::new(jds.clone(), ctx, peer, id).run(rd, wr).await;
            jds.counts.connections.fetch_sub(1, Ordering::Relaxed);
        }
    };
    let listen = Listen {
        key: setup.key,
        cert_validity: setup.cert_validity,
        maxclients: limits::MAX_CONNECTIONS,
        frame_limit: limits::JDS_FRAME_LIMIT,
        label: "jds",
    };
    serve_face(ctx, setup.listeners, listen, face).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_by_code_and_in_total() {
        let c = JdsCounts::default();
        c.refusal("missing-txs");
        c.refusal("missing-txs");
        c.refusal("stale-chain-tip");
        c.refusal("some-new-code");
        assert_eq!(c.refused.load(Ordering::Relaxed), 4);
        let by: std::collections::HashMap<_, _> = c.refused_by().collect();
        assert_eq!(by["missing-txs"], 2);
        assert_eq!(by["stale-chain-tip"], 1);
        assert_eq!(by["invalid-job"], 0);
        assert_eq!(by.len(), REFUSAL_CODES.len());
    }
}
