//! The txids of serialized transactions, by walking their bytes: no transaction is decoded into
//! inputs, outputs and scripts (no allocation per transaction). The txid is sha256d of the
//! serialization without witness data: version, the inputs and outputs as they lie, lock time;
//! a segwit transaction's marker, flag and witnesses are skipped (BIP144). What Core's own
//! decoding refuses (another flag than 1, a marker with no witness) is refused here too.
//!
//! Used for a template's transactions as a node's IPC `getBlock` sends them (`from_block.rs`):
//! thousands per template, on the way from a new tip to the miners' work.

use sha2::{Digest, Sha256};

/// Why the bytes are not that many transactions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("transaction {0} is cut short, or counts more than its bytes hold")]
    Short(usize),
    #[error("{0} bytes follow the last transaction")]
    Trailing(usize),
}

/// Reads a CompactSize at `at`; its value and the position after it.
fn compact(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    let (len, v) = match first {
        0xfd => (2, u64::from(u16::from_le_bytes(b.get(at + 1..at + 3)?.try_into().ok()?))),
        0xfe => (4, u64::from(u32::from_le_bytes(b.get(at + 1..at + 5)?.try_into().ok()?))),
        0xff => (8, u64::from_le_bytes(b.get(at + 1..at + 9)?.try_into().ok()?)),
        n => (0, u64::from(n)),
    };
    Some((v, at + 1 + len))
}

/// Skips `n` bytes from `at`, if they are there.
fn skip(b: &[u8], at: usize, n: u64) -> Option<usize> {
    let end = at.checked_add(usize::try_from(n).ok()?)?;
    (end <= b.len()).then_some(end)
}

/// One transaction from `at`: its txid and the position after it; `None` when the bytes end
/// before it does (or a count promises more than the bytes hold: refused before it is looped over).
fn one(b: &[u8], at: usize) -> Option<([u8; 32], usize)> {
    let version_end = skip(b, at, 4)?;
    // 0x00 where the input count is: the segwit marker, which must be followed by the flag 1
    // (Core refuses any other "optional data").
    let segwit = b.get(version_end) == Some(&0);
    if segwit && b.get(version_end + 1) != Some(&1) {
        return None;
    }
    let body = if segwit { version_end + 2 } else { version_end };
    let left = |p: usize| (b.len() - p) as u64;
    // Each input takes at least 41 bytes, each output 9, each witness item 1.
    let (inputs, mut p) = compact(b, body)?;
    if inputs.saturating_mul(41) > left(p) {
        return None;
    }
    for _ in 0..inputs {
        p = skip(b, p, 36)?;
        let (len, q) = compact(b, p)?;
        p = skip(b, skip(b, q, len)?, 4)?;
    }
    let (outputs, q) = compact(b, p)?;
    p = q;
    if outputs.saturating_mul(9) > left(p) {
        return None;
    }
    for _ in 0..outputs {
        let (len, q) = compact(b, skip(b, p, 8)?)?;
        p = skip(b, q, len)?;
    }
    let body_end = p;
    if segwit {
        // A marker with no witness at all is refused, as Core does ("superfluous witness record").
        let mut any = false;
        for _ in 0..inputs {
            let (items, q) = compact(b, p)?;
            any |= items > 0;
            p = q;
            if items > left(p) {
                return None;
            }
            for _ in 0..items {
                let (len, q) = compact(b, p)?;
                p = skip(b, q, len)?;
            }
        }
        if !any {
            return None;
        }
    }
    let end = skip(b, p, 4)?;
    let mut h = Sha256::new();
    h.update(&b[at..version_end]);
    h.update(&b[body..body_end]);
    h.update(&b[p..end]);
    Some((Sha256::digest(h.finalize()).into(), end))
}

/// The txids (internal byte order) of exactly `count` transactions filling `bytes`.
pub fn txids(bytes: &[u8], count: usize) -> Result<Vec<[u8; 32]>, WalkError> {
    Ok(walk(bytes, count)?.into_iter().map(|(txid, _)| txid).collect())
}

/// Each of exactly `count` transactions filling `bytes`: its txid and where it ends (the next
/// one starts there). Its wtxid is sha256d of its bytes as they lie.
pub fn walk(bytes: &[u8], count: usize) -> Result<Vec<([u8; 32], usize)>, WalkError> {
    let mut out = Vec::with_capacity(count.min(bytes.len() / 60 + 1));
    let mut at = 0;
    for i in 0..count {
        let (txid, next) = one(bytes, at).ok_or(WalkError::Short(i))?;
        out.push((txid, next));
        at = next;
    }
    match bytes.len() - at {
        0 => Ok(out),
        n => Err(WalkError::Trailing(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::encode::serialize;
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

    fn tx(inputs: usize, outputs: usize, witness: bool, seed: u8) -> Transaction {
        Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::from_consensus(u32::from(seed) * 1000),
            input: (0..inputs)
                .map(|i| TxIn {
                    previous_output: OutPoint {
                        txid: bitcoin::Txid::from_byte_array([seed ^ i as u8; 32]),
                        vout: i as u32,
                    },
                    script_sig: ScriptBuf::from_bytes(vec![seed; (i * 7) % 300]),
                    sequence: Sequence(0xffff_fffe),
                    witness: if witness { Witness::from_slice(&[vec![seed; 72], vec![2; 33]]) } else { Witness::new() },
                })
                .collect(),
            output: (0..outputs)
                .map(|o| TxOut {
                    value: Amount::from_sat(1000 + o as u64),
                    script_pubkey: ScriptBuf::from_bytes(vec![0x51; o % 40]),
                })
                .collect(),
        }
    }

    /// Transactions of every shape: with and without witnesses, long scripts (a three-byte
    /// length), many inputs and outputs (253 and more: a three-byte count).
    fn shapes() -> Vec<Transaction> {
        vec![
            tx(1, 1, false, 1),
            tx(1, 2, true, 2),
            tx(3, 1, true, 3),
            tx(60, 300, false, 4),
            tx(260, 2, true, 5),
            tx(2, 0, false, 6),
        ]
    }

    #[test]
    fn txids_are_rust_bitcoins() {
        let txs = shapes();
        let bytes: Vec<u8> = txs.iter().flat_map(serialize).collect();
        let got = txids(&bytes, txs.len()).unwrap();
        let want: Vec<[u8; 32]> = txs.iter().map(|t| t.compute_txid().to_byte_array()).collect();
        assert_eq!(got, want);
        assert_eq!(txids(&[], 0).unwrap(), Vec::<[u8; 32]>::new());
    }

    #[test]
    fn bytes_that_are_not_the_transactions_are_refused() {
        let txs = shapes();
        let bytes: Vec<u8> = txs.iter().flat_map(serialize).collect();
        // Every cut is refused (never a panic), and a count too high or too low is named.
        for cut in 0..bytes.len() {
            assert!(txids(&bytes[..cut], txs.len()).is_err(), "cut at {cut}");
        }
        assert_eq!(txids(&bytes, txs.len() + 1), Err(WalkError::Short(txs.len())));
        assert!(matches!(txids(&bytes, txs.len() - 1), Err(WalkError::Trailing(_))));
        // An input count no bytes could hold.
        let mut huge = vec![2, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 0x7f];
        huge.extend_from_slice(&[0; 64]);
        assert!(txids(&huge, 1).is_err());
    }

    /// Any bytes and count: no panic; a walk that succeeds agrees with rust-bitcoin's decoding.
    #[test]
    fn arbitrary_bytes_never_panic() {
        use proptest::prelude::*;
        let mut runner = proptest::test_runner::TestRunner::default();
        let good: Vec<u8> = shapes().iter().flat_map(serialize).collect();
        let seeds = (
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..400),
                // Real transactions with bytes flipped.
                proptest::collection::vec((0..good.len(), any::<u8>()), 1..4).prop_map(move |flips| {
                    let mut b = good.clone();
                    for (at, v) in flips {
                        b[at] = v;
                    }
                    b
                }),
            ],
            0usize..8,
        );
        runner
            .run(&seeds, |(buf, count)| {
                if let Ok(ids) = txids(&buf, count) {
                    let mut at = 0;
                    for id in ids {
                        let (tx, n) = bitcoin::consensus::encode::deserialize_partial::<Transaction>(&buf[at..])
                            .map_err(|e| TestCaseError::fail(e.to_string()))?;
                        prop_assert_eq!(tx.compute_txid().to_byte_array(), id);
                        at += n;
                    }
                    prop_assert_eq!(at, buf.len());
                }
                Ok(())
            })
            .unwrap();
    }
}
