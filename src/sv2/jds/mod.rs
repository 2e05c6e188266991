//! The Job Declaration server (`sv2jdurl`, pool mode): miners' proxies (SRI's jd_client_sv2,
//! a ckproxy with `jds`) declare the jobs they built from their own node; the pool checks each
//! one (its tip, its coinbase paying the pool, its transactions known or provided, the block
//! valid by the node) and gives a token its SV2 mining connection mines it under
//! (SetCustomMiningJob, `sv2/session/custom.rs`). Shares and blocks on declared jobs go through
//! the same mining core, share log, statistics and block submission as the pool's own.
//!
//! ```text
//!  mod.rs      the server: listeners, the pool's output, tokens, the node's check
//!  session.rs  one connection: setup, tokens, declarations, missing transactions, solutions
//!  known.rs    the transactions a declaration is resolved against (template, provided)
//!  limits.rs   what one connection may cost (pure)
//! ```

pub mod known;
pub mod limits;
pub mod session;

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::consensus::encode::serialize;
use bitcoin::{Amount, ScriptBuf, TxOut};
use serde_json::json;

use super::keys::AuthorityKey;
use super::server::{serve_face, Listen, Reader, Writer};
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

/// How a declared job's block is checked by the node: `getblocktemplate` in proposal mode
/// (BIP23: the node runs its block validity test without proof of work).
pub struct NodeCheck {
    rpc: Arc<Rpc>,
}

impl NodeCheck {
    pub fn new(rpc: Arc<Rpc>) -> NodeCheck {
        NodeCheck { rpc }
    }

    pub async fn check(&self, block: &[u8]) -> Result<(), NodeVerdict> {
        let params = json!([{"mode": "proposal", "data": crate::hex::encode(block), "rules": ["segwit"]}]);
        match self.rpc.call("getblocktemplate", params).await {
            Ok(v) if v.is_null() => Ok(()),
            Ok(v) => Err(NodeVerdict::Invalid(v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))),
            Err(e) => Err(NodeVerdict::Unreachable(e.to_string())),
        }
    }
}

/// Declarations accepted and refused since start (the operator's API shows them).
#[derive(Debug, Default)]
pub struct JdsCounts {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub connections: AtomicU64,
}

/// The server's shared part.
pub struct Jds {
    /// The pool's payout script: every satoshi of a declared coinbase goes to it.
    pub pool_script: Vec<u8>,
    /// AllocateMiningJobToken.Success's `coinbase_outputs`: the pool's output, value 0 (the
    /// client puts the block's whole value in it).
    pub outputs: Vec<u8>,
    pub check: NodeCheck,
    pub counts: JdsCounts,
    /// Tokens: a keyed hash (SipHash, random key) of a counter, so none can be guessed.
    minter: std::collections::hash_map::RandomState,
    minted: AtomicU64,
    ids: AtomicU64,
}

impl Jds {
    pub fn new(pool_script: ScriptBuf, rpc: Arc<Rpc>) -> Jds {
        let outputs = serialize(&vec![TxOut { value: Amount::ZERO, script_pubkey: pool_script.clone() }]);
        Jds {
            pool_script: pool_script.into_bytes(),
            outputs,
            check: NodeCheck::new(rpc),
            counts: JdsCounts::default(),
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
