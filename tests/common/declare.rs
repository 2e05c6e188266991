//! A job-declaring client's coinbase, built with rust-bitcoin apart from the pool's own code
//! (tests/jds.rs, benches/jds.rs): what a declaration's prefix and suffix are cut from.

use bitcoin::consensus::encode::serialize;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};
use ckpool::work::merkle;

/// A declared coinbase: height, a tag, the extranonce push and `en` zero bytes; witness
/// reserved value; `outputs` then the witness commitment of `wtxids`.
pub fn coinbase(height: u32, en: usize, mut outputs: Vec<TxOut>, wtxids: &[[u8; 32]]) -> Transaction {
    let mut script = bitcoin::script::Builder::new().push_int(height as i64).into_script().into_bytes();
    script.extend_from_slice(&[7, b'j', b'd', b'-', b't', b'e', b's', b't']);
    script.push(en as u8);
    script.resize(script.len() + en, 0);
    let mut leaves = vec![[0u8; 32]];
    leaves.extend_from_slice(wtxids);
    let root = merkle::root(&leaves);
    let commitment = merkle::sha256d(&[&root[..], &[0u8; 32][..]].concat());
    let mut cscript = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    cscript.extend_from_slice(&commitment);
    outputs.push(TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(cscript) });
    Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::from_bytes(script),
            sequence: Sequence::MAX,
            witness: Witness::from_slice(&[vec![0u8; 32]]),
        }],
        output: outputs,
    }
}

/// The declared prefix and suffix: the witness serialization cut around the extranonce.
pub fn cut(tx: &Transaction, en: usize) -> (Vec<u8>, Vec<u8>) {
    let b = serialize(tx);
    let end = 6 + 1 + 36 + 1 + tx.input[0].script_sig.len();
    (b[..end - en].to_vec(), b[end..].to_vec())
}
