//! sha256d, stratum merkle branches and the merkle root a miner computes from them.

use sha2::{Digest, Sha256};

/// Double SHA-256, the hash of headers and transactions.
#[inline]
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    let first = Sha256::digest(data);
    Sha256::digest(first).into()
}

/// sha256d of two concatenated 32-byte nodes.
#[inline]
pub fn hash_pair(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(a);
    buf[32..].copy_from_slice(b);
    sha256d(&buf)
}

/// The stratum merkle branches for a block whose transactions after the coinbase have the
/// given txids (internal byte order). Branch `i` is the sibling the coinbase path meets at level `i`.
pub fn branches(txids: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let mut out = Vec::new();
    let mut level: Vec<[u8; 32]> = txids.to_vec();
    while !level.is_empty() {
        out.push(level[0]);
        // The coinbase side's node at the next level is unknown (it hashes level[0]);
        // pair up everything after it, duplicating an odd last node as bitcoind does.
        level = level[1..]
            .chunks(2)
            .map(|c| hash_pair(&c[0], c.get(1).unwrap_or(&c[0])))
            .collect();
    }
    out
}

/// Folds the coinbase txid up the branches to the merkle root.
#[inline]
pub fn root_from_branches(coinbase_txid: &[u8; 32], branches: &[[u8; 32]]) -> [u8; 32] {
    let mut h = *coinbase_txid;
    for b in branches {
        h = hash_pair(&h, b);
    }
    h
}

/// The full merkle root of a list of txids (the coinbase's included), as bitcoind computes it.
pub fn root(txids: &[[u8; 32]]) -> [u8; 32] {
    assert!(!txids.is_empty(), "a block has at least its coinbase");
    let mut level = txids.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|c| hash_pair(&c[0], c.get(1).unwrap_or(&c[0])))
            .collect();
    }
    level[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u8) -> [u8; 32] {
        sha256d(&[i])
    }

    #[test]
    fn branches_fold_to_full_root() {
        for n in 0..20u8 {
            let txids: Vec<_> = (1..=n).map(h).collect();
            let cb = h(0);
            let mut all = vec![cb];
            all.extend(&txids);
            assert_eq!(root_from_branches(&cb, &branches(&txids)), root(&all), "{n} transactions");
        }
    }

    #[test]
    fn sha256d_known() {
        // sha256d("") = 5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456
        assert_eq!(
            crate::hex::encode(&sha256d(b"")),
            "5df6e0e2761359d30a8275058e299fcc0381534545f55cf43e41983f5d4c9456"
        );
    }
}
