//! sha256d, stratum merkle branches and the merkle root a miner computes from them.

use sha2::{Digest, Sha256};

/// Double SHA-256, the hash of headers and transactions.
#[inline]
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    let first = Sha256::digest(data);
    Sha256::digest(first).into()
}

/// SHA-256 initial state.
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// The padding block that ends a 64-byte message (0x80, zeros, bit length 512).
const PAD_64: [u8; 64] = {
    let mut p = [0u8; 64];
    p[0] = 0x80;
    p[62] = 0x02;
    p
};

#[inline(always)]
fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    use sha2::digest::generic_array::GenericArray;
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// The second SHA-256 of sha256d: one block holding the 32-byte first digest and its padding.
#[inline(always)]
fn second_hash(first: &[u32; 8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    for (dst, w) in block.chunks_exact_mut(4).zip(first) {
        dst.copy_from_slice(&w.to_be_bytes());
    }
    block[32] = 0x80;
    block[62] = 0x01; // bit length 256
    let mut state = H0;
    compress(&mut state, &block);
    let mut out = [0u8; 32];
    for (dst, w) in out.chunks_exact_mut(4).zip(&state) {
        dst.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// sha256d of two concatenated 32-byte nodes: three compressions with fixed padding, no buffering.
#[inline]
pub fn hash_pair(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(a);
    block[32..].copy_from_slice(b);
    let mut state = H0;
    compress(&mut state, &block);
    compress(&mut state, &PAD_64);
    second_hash(&state)
}

/// sha256d of an 80-byte block header (the share path's hash), with fixed padding.
#[inline]
pub fn sha256d_header(header: &[u8; 80]) -> [u8; 32] {
    let mut state = H0;
    compress(&mut state, header[..64].try_into().expect("64 bytes"));
    let mut tail = [0u8; 64];
    tail[..16].copy_from_slice(&header[64..]);
    tail[16] = 0x80;
    tail[62] = 0x02; // bit length 640 = 0x280
    tail[63] = 0x80;
    compress(&mut state, &tail);
    second_hash(&state)
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
        level = level[1..].chunks(2).map(|c| hash_pair(&c[0], c.get(1).unwrap_or(&c[0]))).collect();
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
        level = level.chunks(2).map(|c| hash_pair(&c[0], c.get(1).unwrap_or(&c[0]))).collect();
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
    fn fixed_padding_paths_match_sha256d() {
        for i in 0..50u8 {
            let (a, b) = (h(i), h(i.wrapping_add(100)));
            let mut cat = a.to_vec();
            cat.extend_from_slice(&b);
            assert_eq!(hash_pair(&a, &b), sha256d(&cat));
            let mut header = [0u8; 80];
            for (j, byte) in header.iter_mut().enumerate() {
                *byte = (j as u8).wrapping_mul(31).wrapping_add(i);
            }
            assert_eq!(sha256d_header(&header), sha256d(&header));
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
