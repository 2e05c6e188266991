//! A job: everything a miner gets in `mining.notify`, plus what the pool needs to rebuild
//! the header of a submitted share and to assemble the block it may solve.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde_json::{json, Value};

use super::coinbase::{Coinbase, MAX_NONCE2_LEN};
use super::merkle;
use super::template::{Template, TemplateTx};
use crate::difficulty::Target;
use crate::hex;

/// Stratum work shared by every session (`Arc<Job>`).
#[derive(Debug)]
pub struct Job {
    pub id: u64,
    pub height: u32,
    pub version: u32,
    /// Previous block hash, internal byte order.
    pub prev_hash: [u8; 32],
    pub nbits: u32,
    pub ntime: u32,
    /// Earliest ntime a share may carry (template `mintime`).
    pub mintime: u32,
    pub coinbase: Coinbase,
    pub branches: Vec<[u8; 32]>,
    pub network_target: Target,
    /// The template's transactions; `None` for upstream jobs (proxy mode), which cannot be assembled.
    pub transactions: Option<Arc<[TemplateTx]>>,
    /// The template's transactions as hex, shared with it ([`Template::txs_hex`]; empty for
    /// upstream jobs).
    pub txs_hex: Bytes,
    pub coinbase_value: u64,
    pub clean: bool,
    /// The IPC template this job was made from ([`Template::ipc_template`]).
    pub ipc_template: Option<u64>,
    /// Shares already accepted on this job, by header hash (first 16 bytes).
    seen: Mutex<HashSet<u128>>,
}

/// What an upstream pool sends for a job, decoded (proxy mode).
#[derive(Debug, Clone)]
pub struct UpstreamParts {
    /// Previous block hash, internal byte order.
    pub prev_hash: [u8; 32],
    /// The coinbase before and after the extranonce (non-witness serialization).
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub branches: Vec<[u8; 32]>,
    pub version: u32,
    pub nbits: u32,
    pub ntime: u32,
    /// Work on the previous block must stop (a new block).
    pub clean: bool,
}

/// Why an upstream `mining.notify` could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("mining.notify params must be an array of 9 (got {0})")]
    Shape(String),
    #[error("mining.notify field {field} is invalid: {why}")]
    Field { field: &'static str, why: String },
}

/// Prevhash as stratum sends it: internal byte order with each 4-byte word reversed.
pub fn prevhash_to_stratum(prev_hash: &[u8; 32]) -> String {
    let mut swapped = [0u8; 32];
    for (dst, src) in swapped.chunks_exact_mut(4).zip(prev_hash.chunks_exact(4)) {
        dst.copy_from_slice(&[src[3], src[2], src[1], src[0]]);
    }
    hex::encode(&swapped)
}

/// Inverse of [`prevhash_to_stratum`].
pub fn prevhash_from_stratum(s: &str) -> Result<[u8; 32], hex::HexError> {
    let mut raw = [0u8; 32];
    hex::decode_into(s, &mut raw)?;
    for word in raw.chunks_exact_mut(4) {
        word.reverse();
    }
    Ok(raw)
}

impl Job {
    /// A job for `template` with its coinbase.
    pub fn new(id: u64, template: &Template, coinbase: Coinbase, clean: bool) -> Job {
        let txids: Vec<[u8; 32]> = template.transactions.iter().map(|t| t.txid).collect();
        Job {
            id,
            height: template.height,
            version: template.version,
            prev_hash: template.prev_hash,
            nbits: template.nbits,
            ntime: template.curtime.max(template.mintime),
            mintime: template.mintime,
            coinbase,
            branches: merkle::branches(&txids),
            network_target: template.target,
            transactions: Some(template.transactions.clone()),
            txs_hex: template.txs_hex.clone(),
            coinbase_value: template.coinbase_value,
            clean,
            ipc_template: template.ipc_template,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// The same job with another coinbase (solo mode: one per payout address); the merkle
    /// branches, transactions and header fields are shared, the duplicate set is its own.
    pub fn with_coinbase(&self, coinbase: Coinbase) -> Job {
        Job {
            id: self.id,
            height: self.height,
            version: self.version,
            prev_hash: self.prev_hash,
            nbits: self.nbits,
            ntime: self.ntime,
            mintime: self.mintime,
            coinbase,
            branches: self.branches.clone(),
            network_target: self.network_target,
            transactions: self.transactions.clone(),
            txs_hex: self.txs_hex.clone(),
            coinbase_value: self.coinbase_value,
            clean: self.clean,
            ipc_template: self.ipc_template,
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// A job from an upstream pool's `mining.notify` params (proxy mode), for a session whose
    /// extranonce1 is `nonce1_len` bytes and extranonce2 `nonce2_len` bytes.
    /// An extranonce2 above [`MAX_NONCE2_LEN`] bytes (a pool's subscribe answer says how long)
    /// is refused: no share could be judged on the job.
    pub fn from_notify(id: u64, params: &Value, nonce1_len: usize, nonce2_len: usize) -> Result<Job, NotifyError> {
        let p = params.as_array().filter(|a| a.len() >= 9).ok_or_else(|| NotifyError::Shape(params.to_string()))?;
        let s = |i: usize, field: &'static str| -> Result<&str, NotifyError> {
            p[i].as_str().ok_or_else(|| NotifyError::Field { field, why: format!("{} is not a string", p[i]) })
        };
        let bad = |field: &'static str, e: hex::HexError| NotifyError::Field { field, why: e.to_string() };
        let prev_hash = prevhash_from_stratum(s(1, "prevhash")?).map_err(|e| bad("prevhash", e))?;
        let coinb1 = hex::decode(s(2, "coinb1")?).map_err(|e| bad("coinb1", e))?;
        let coinb2 = hex::decode(s(3, "coinb2")?).map_err(|e| bad("coinb2", e))?;
        let branches = p[4]
            .as_array()
            .ok_or_else(|| NotifyError::Field { field: "merkle_branch", why: "not an array".into() })?
            .iter()
            .map(|b| {
                let mut h = [0u8; 32];
                let t = b.as_str().ok_or(hex::HexError::BadChar)?;
                hex::decode_into(t, &mut h).map(|_| h)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad("merkle_branch", e))?;
        let word = |i: usize, field: &'static str| -> Result<u32, NotifyError> {
            let t = s(i, field)?;
            if t.len() != 8 {
                return Err(NotifyError::Field { field, why: format!("{t:?} is not 8 hex digits") });
            }
            hex::parse_u32_be(t).map_err(|e| bad(field, e))
        };
        let version = word(5, "version")?;
        let nbits = word(6, "nbits")?;
        let ntime = word(7, "ntime")?;
        let clean = p[8].as_bool().unwrap_or(false);
        let parts = UpstreamParts { prev_hash, coinb1, coinb2, branches, version, nbits, ntime, clean };
        Job::upstream(id, parts, nonce1_len, nonce2_len)
    }

    /// A job from an upstream pool's parts (proxy mode: a `mining.notify`, or a Stratum V2
    /// extended job with the SetNewPrevHash it builds on), for a session whose extranonce1 is
    /// `nonce1_len` bytes and extranonce2 `nonce2_len` bytes.
    pub fn upstream(id: u64, parts: UpstreamParts, nonce1_len: usize, nonce2_len: usize) -> Result<Job, NotifyError> {
        if nonce2_len > MAX_NONCE2_LEN {
            return Err(NotifyError::Field {
                field: "extranonce2 size",
                why: format!("{nonce2_len} bytes is more than {MAX_NONCE2_LEN}"),
            });
        }
        let UpstreamParts { prev_hash, coinb1, coinb2, branches, version, nbits, ntime, clean } = parts;
        if coinb1.len() < 5 || coinb2.len() < 4 {
            return Err(NotifyError::Field { field: "coinb1/coinb2", why: "too short for a transaction".into() });
        }
        let network_target = Target::from_compact(nbits)
            .ok_or_else(|| NotifyError::Field { field: "nbits", why: "negative or overflowing target".into() })?;
        Ok(Job {
            id,
            // The upstream's coinbase says the height (BIP34): share log folders and block lines
            // name it as the pool's own do.
            height: bip34_height(&coinb1).unwrap_or(0),
            version,
            prev_hash,
            nbits,
            ntime,
            mintime: ntime,
            coinbase: Coinbase {
                coinb1,
                coinb2,
                nonce1_len,
                nonce2_len,
                witness: false,
                warnings: Vec::new(),
                split: None,
                plan: None,
            },
            branches,
            network_target,
            transactions: None,
            txs_hex: Bytes::new(),
            coinbase_value: 0,
            clean,
            ipc_template: None,
            seen: Mutex::new(HashSet::new()),
        })
    }

    /// The job id as sent to miners.
    pub fn id_hex(&self) -> String {
        format!("{:x}", self.id)
    }

    /// The nine `mining.notify` params.
    pub fn notify_params(&self) -> Value {
        json!([
            self.id_hex(),
            prevhash_to_stratum(&self.prev_hash),
            hex::encode(&self.coinbase.coinb1),
            hex::encode(&self.coinbase.coinb2),
            self.branches.iter().map(|b| hex::encode(b)).collect::<Vec<_>>(),
            format!("{:08x}", self.version),
            format!("{:08x}", self.nbits),
            format!("{:08x}", self.ntime),
            self.clean,
        ])
    }

    /// The coinbase txid (non-witness) for a session's extranonces.
    #[inline]
    pub fn coinbase_txid(&self, en1: &[u8], en2: &[u8]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(&self.coinbase.coinb1);
        h.update(en1);
        h.update(en2);
        h.update(&self.coinbase.coinb2);
        Sha256::digest(h.finalize()).into()
    }

    #[inline]
    pub fn merkle_root(&self, en1: &[u8], en2: &[u8]) -> [u8; 32] {
        merkle::root_from_branches(&self.coinbase_txid(en1, en2), &self.branches)
    }

    /// The 80-byte header for a share.
    #[inline]
    pub fn header(&self, merkle_root: &[u8; 32], version: u32, ntime: u32, nonce: u32) -> [u8; 80] {
        let mut h = [0u8; 80];
        h[0..4].copy_from_slice(&version.to_le_bytes());
        h[4..36].copy_from_slice(&self.prev_hash);
        h[36..68].copy_from_slice(merkle_root);
        h[68..72].copy_from_slice(&ntime.to_le_bytes());
        h[72..76].copy_from_slice(&self.nbits.to_le_bytes());
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        h
    }

    /// A block in two parts for `submitblock`: its first bytes (header, transaction count,
    /// coinbase), small and made here, and the hex of the rest (the template's transactions, as
    /// kept: shared, not copied). `None` for jobs without transactions (upstream work).
    pub fn block_parts(&self, en1: &[u8], en2: &[u8], header: &[u8; 80]) -> Option<(Vec<u8>, Bytes)> {
        let txs = self.transactions.as_ref()?;
        let mut out = Vec::with_capacity(80 + 9 + self.coinbase.size() + 40);
        out.extend_from_slice(header);
        let n = txs.len() as u64 + 1;
        match n {
            0..=0xfc => out.push(n as u8),
            0xfd..=0xffff => {
                out.push(0xfd);
                out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            _ => {
                out.push(0xfe);
                out.extend_from_slice(&(n as u32).to_le_bytes());
            }
        }
        self.coinbase.write_for_block(en1, en2, &mut out);
        Some((out, self.txs_hex.clone()))
    }

    /// The full block's bytes ([`Job::block_parts`] with the transactions decoded): for checks
    /// and tests; `None` for jobs without transactions (upstream work).
    pub fn assemble_block(&self, en1: &[u8], en2: &[u8], header: &[u8; 80]) -> Option<Vec<u8>> {
        let (mut out, txs_hex) = self.block_parts(en1, en2, header)?;
        hex::decode_append(&txs_hex, &mut out).expect("a template's transactions are checked hex");
        Some(out)
    }

    /// Records an accepted share's hash; false when the same share was already accepted on this job.
    pub fn mark_seen(&self, hash: &[u8; 32]) -> bool {
        let key = u128::from_le_bytes(hash[..16].try_into().expect("16 bytes"));
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(key)
    }

    /// Number of distinct share hashes this job has taken (accepted, or valid but late).
    pub fn seen_count(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The block height a coinbase's first part carries (BIP34: the scriptSig starts with it), read
/// from stratum's `coinb1` (version, one input, its outpoint, the scriptSig's length, then the
/// height push: OP_0, OP_1..OP_16, or 1 to 4 little-endian bytes). None when it is not there.
pub fn bip34_height(coinb1: &[u8]) -> Option<u32> {
    // version (4), input count 1, outpoint (36), scriptSig length (< 0xfd: one byte)
    if coinb1.get(4) != Some(&1) || coinb1.get(41).is_none_or(|&l| l >= 0xfd) {
        return None;
    }
    match *coinb1.get(42)? {
        0x00 => Some(0),
        op @ 0x51..=0x60 => Some(u32::from(op - 0x50)),
        n @ 1..=4 => {
            let bytes = coinb1.get(43..43 + n as usize)?;
            // Minimal push of a positive number: the top byte's sign bit is clear.
            if bytes.last().is_some_and(|b| b & 0x80 != 0) {
                return None;
            }
            Some(bytes.iter().rev().fold(0u32, |h, b| (h << 8) | u32::from(*b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A proxy reads the height from the upstream's coinb1, for every encoding BIP34 uses.
    #[test]
    fn bip34_height_from_coinb1() {
        for h in [0u32, 1, 16, 17, 127, 128, 255, 256, 32_767, 32_768, 840_000, 16_777_216] {
            let push = crate::work::coinbase::bip34_height_push(h);
            let mut coinb1 = vec![2, 0, 0, 0, 1];
            coinb1.extend([0u8; 32]);
            coinb1.extend([0xff; 4]);
            coinb1.push((push.len() + 8) as u8);
            coinb1.extend(&push);
            coinb1.extend(b"/pool/");
            assert_eq!(bip34_height(&coinb1), Some(h), "height {h}: push {push:02x?}");
        }
        assert_eq!(bip34_height(&[1, 0, 0, 0, 2]), None);
        assert_eq!(bip34_height(&[]), None);
    }

    #[test]
    fn prevhash_swap_round_trips() {
        let s = "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000";
        let raw = prevhash_from_stratum(s).unwrap();
        assert_eq!(prevhash_to_stratum(&raw), s);
        // display order (reversed internal) starts with the zero word
        assert!(hex::encode_rev(&raw).starts_with("00000000440b921e"));
    }

    #[test]
    fn notify_shape_errors() {
        assert!(matches!(Job::from_notify(1, &json!([1, 2]), 4, 4), Err(NotifyError::Shape(_))));
        let mut p =
            json!(["1", "00".repeat(32), "01000000010000", "00000000", [], "20000000", "207fffff", "504e86b9", true]);
        assert!(Job::from_notify(1, &p, 4, 4).is_ok());
        p[6] = json!(12);
        assert!(matches!(Job::from_notify(1, &p, 4, 4), Err(NotifyError::Field { field: "nbits", .. })));
        p[6] = json!("207fffff");
        p[4] = json!(["zz"]);
        assert!(matches!(Job::from_notify(1, &p, 4, 4), Err(NotifyError::Field { field: "merkle_branch", .. })));
    }

    /// Found by fuzzing (the upstream target, now `client_lines`): an upstream subscribe answer with an
    /// extranonce2 size of 2^64 - 1 made a proxied job on which the share check overflowed
    /// (`expected * 2`); `ckpool mine` and `ckpool bench` allocated that many bytes per job.
    #[test]
    fn notify_refuses_extranonce2_beyond_max() {
        let p =
            json!(["1", "00".repeat(32), "01000000010000", "00000000", [], "20000000", "207fffff", "504e86b9", true]);
        assert!(Job::from_notify(1, &p, 4, MAX_NONCE2_LEN).is_ok());
        for n2 in [MAX_NONCE2_LEN + 1, usize::MAX / 2 + 1, usize::MAX] {
            let e = Job::from_notify(1, &p, 8, n2).unwrap_err();
            assert!(matches!(e, NotifyError::Field { field: "extranonce2 size", .. }), "{e}");
        }
    }
}
