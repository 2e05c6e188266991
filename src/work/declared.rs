//! A job a miner declared (Stratum V2 Job Declaration): its coinbase read from the declared
//! prefix and suffix or from a `SetCustomMiningJob`'s parts, checked against what the pool
//! requires of it (one null input, every satoshi to the pool's script, at least the subsidy and
//! the fees the pool knows of), and turned into a [`Job`] the mining core judges shares on and
//! a found block is assembled from. Pure: no clock, no socket.

use std::sync::Arc;

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::{Transaction, TxOut};
use bytes::Bytes;

use super::coinbase::Coinbase;
use super::merkle;
use super::template::{Template, TemplateTx};
use super::Job;
use crate::difficulty::Target;

/// SV2 carries at most 32 bytes of extranonce.
const MAX_EXTRANONCE: usize = 32;
/// Consensus: a coinbase scriptSig is 2..=100 bytes.
const SCRIPTSIG_MAX: usize = 100;

/// Why a declared coinbase is refused; `code()` is the SV2 error code the refusal carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinbaseRefusal {
    #[error("the coinbase does not decode as a transaction: {0}")]
    Decode(String),
    #[error("the coinbase must have exactly one input spending nothing (null outpoint); it has {0}")]
    Input(String),
    #[error("the extranonce space is {0} bytes; it must be 1..=32 and fit a 100-byte scriptSig")]
    Extranonce(usize),
    #[error("output {index} pays {value} sat to a script that is not the pool's ({script})")]
    NotThePool { index: usize, value: u64, script: String },
    #[error("the pool's outputs get {paid} sat; at least {required} sat (subsidy and known fees) are due")]
    Underpaid { paid: u64, required: u64 },
    #[error("the coinbase witness must be one 32-byte item (the witness reserved value)")]
    Witness,
}

impl CoinbaseRefusal {
    /// The Job Declaration error code (DeclareMiningJob.Error).
    pub fn code(&self) -> &'static str {
        match self {
            CoinbaseRefusal::Input(_) => "invalid-coinbase-tx-input",
            _ => "invalid-coinbase-tx",
        }
    }
}

/// A coinbase as a declared job carries it, with the extranonce left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredCoinbase {
    pub version: u32,
    /// The scriptSig's bytes before the extranonce (its height push, tags, the extranonce push).
    pub script_head: Vec<u8>,
    /// Bytes of extranonce that close the scriptSig (the channel's prefix and the miner's part).
    pub extranonce_len: usize,
    pub sequence: u32,
    /// The outputs as serialized in the transaction (count, then each).
    pub outputs: Vec<u8>,
    pub locktime: u32,
    /// Serialized with a witness (the 32-byte reserved value), as a segwit block's coinbase is.
    pub witness: bool,
}

/// Reads a CompactSize of one byte (what a scriptSig of at most 100 bytes has).
fn small_len(b: &[u8], at: usize) -> Option<usize> {
    b.get(at).filter(|&&n| n < 0xfd).map(|&n| n as usize)
}

impl DeclaredCoinbase {
    /// From DeclareMiningJob's `coinbase_tx_prefix` and `coinbase_tx_suffix`: the transaction
    /// (witness serialization when it has one, as SRI's client sends it) cut where the
    /// extranonce goes, which ends the scriptSig; the extranonce's length is what the scriptSig's
    /// length leaves after the prefix.
    pub fn from_declared(prefix: &[u8], suffix: &[u8]) -> Result<DeclaredCoinbase, CoinbaseRefusal> {
        // version (4), [marker 0, flag 1], input count, outpoint (36), scriptSig length.
        let segwit = prefix.get(4) == Some(&0) && prefix.get(5) == Some(&1);
        let count_at = if segwit { 6 } else { 4 };
        let len_at = count_at + 1 + 36;
        let script_len = small_len(prefix, len_at).ok_or_else(|| {
            CoinbaseRefusal::Decode(format!("the prefix ({} bytes) ends before the scriptSig", prefix.len()))
        })?;
        let head = prefix.len() - (len_at + 1);
        let extranonce_len = script_len.checked_sub(head).ok_or(CoinbaseRefusal::Extranonce(0))?;
        let mut full = Vec::with_capacity(prefix.len() + extranonce_len + suffix.len());
        full.extend_from_slice(prefix);
        full.resize(prefix.len() + extranonce_len, 0);
        full.extend_from_slice(suffix);
        let tx: Transaction = deserialize(&full).map_err(|e| CoinbaseRefusal::Decode(e.to_string()))?;
        let cb = DeclaredCoinbase::from_tx(&tx, prefix[len_at + 1..].to_vec(), extranonce_len)?;
        if segwit != cb.witness {
            return Err(CoinbaseRefusal::Witness);
        }
        Ok(cb)
    }

    /// From SetCustomMiningJob's parts: `script_head` is its `coinbase_prefix` (the scriptSig
    /// before the extranonce), `extranonce_len` the channel's full extranonce; the outputs as
    /// serialized (count, then each). `witness`: the block is segwit (its coinbase carries the
    /// reserved value).
    pub fn from_parts(
        version: u32,
        script_head: &[u8],
        extranonce_len: usize,
        sequence: u32,
        outputs: &[u8],
        locktime: u32,
    ) -> Result<DeclaredCoinbase, CoinbaseRefusal> {
        let mut tx = Vec::with_capacity(64 + script_head.len() + extranonce_len + outputs.len());
        tx.extend_from_slice(&version.to_le_bytes());
        tx.push(1);
        tx.extend_from_slice(&[0u8; 32]);
        tx.extend_from_slice(&u32::MAX.to_le_bytes());
        let script_len = script_head.len() + extranonce_len;
        if script_len > SCRIPTSIG_MAX || extranonce_len == 0 || extranonce_len > MAX_EXTRANONCE {
            return Err(CoinbaseRefusal::Extranonce(extranonce_len));
        }
        tx.push(script_len as u8);
        tx.extend_from_slice(script_head);
        tx.resize(tx.len() + extranonce_len, 0);
        tx.extend_from_slice(&sequence.to_le_bytes());
        tx.extend_from_slice(outputs);
        tx.extend_from_slice(&locktime.to_le_bytes());
        let parsed: Transaction = deserialize(&tx).map_err(|e| CoinbaseRefusal::Decode(e.to_string()))?;
        let mut cb = DeclaredCoinbase::from_tx(&parsed, script_head.to_vec(), extranonce_len)?;
        cb.witness = has_witness_commitment(&parsed.output);
        Ok(cb)
    }

    fn from_tx(
        tx: &Transaction,
        script_head: Vec<u8>,
        extranonce_len: usize,
    ) -> Result<DeclaredCoinbase, CoinbaseRefusal> {
        if tx.input.len() != 1 {
            return Err(CoinbaseRefusal::Input(format!("{} inputs", tx.input.len())));
        }
        let input = &tx.input[0];
        if !input.previous_output.is_null() {
            return Err(CoinbaseRefusal::Input(format!("it spends {}", input.previous_output)));
        }
        let script_len = input.script_sig.len();
        if extranonce_len == 0 || extranonce_len > MAX_EXTRANONCE || !(2..=SCRIPTSIG_MAX).contains(&script_len) {
            return Err(CoinbaseRefusal::Extranonce(extranonce_len));
        }
        let witness = !input.witness.is_empty();
        if witness && (input.witness.len() != 1 || input.witness.iter().next().map(<[u8]>::len) != Some(32)) {
            return Err(CoinbaseRefusal::Witness);
        }
        Ok(DeclaredCoinbase {
            version: tx.version.0 as u32,
            script_head,
            extranonce_len,
            sequence: input.sequence.0,
            outputs: serialize(&tx.output),
            locktime: tx.lock_time.to_consensus_u32(),
            witness,
        })
    }

    /// The coinbase a declaring proxy builds for `template`: the height, `tag` (cut to what
    /// fits) and the extranonce closing the scriptSig; the template's whole value to
    /// `pool_script` (the server's output), then its witness commitment.
    pub fn for_template(
        template: &Template,
        pool_script: &[u8],
        tag: &[u8],
        extranonce_len: usize,
    ) -> DeclaredCoinbase {
        let mut head = super::coinbase::bip34_height_push(template.height);
        let room = SCRIPTSIG_MAX.saturating_sub(head.len() + 2 + extranonce_len).min(75);
        let tag = &tag[..tag.len().min(room)];
        if !tag.is_empty() {
            head.push(tag.len() as u8);
            head.extend_from_slice(tag);
        }
        head.push(extranonce_len as u8);
        let mut outputs = vec![TxOut {
            value: bitcoin::Amount::from_sat(template.coinbase_value),
            script_pubkey: bitcoin::ScriptBuf::from_bytes(pool_script.to_vec()),
        }];
        if let Some(c) = &template.witness_commitment {
            outputs
                .push(TxOut { value: bitcoin::Amount::ZERO, script_pubkey: bitcoin::ScriptBuf::from_bytes(c.clone()) });
        }
        DeclaredCoinbase {
            version: 2,
            script_head: head,
            extranonce_len,
            sequence: u32::MAX,
            outputs: serialize(&outputs),
            locktime: 0,
            witness: template.witness_commitment.is_some(),
        }
    }

    /// DeclareMiningJob's `coinbase_tx_prefix` and `coinbase_tx_suffix`: the serialization
    /// (with the witness when it has one) before and after the extranonce.
    pub fn declared_parts(&self) -> (Vec<u8>, Vec<u8>) {
        let mut prefix = Vec::with_capacity(48 + self.script_head.len());
        prefix.extend_from_slice(&self.version.to_le_bytes());
        if self.witness {
            prefix.extend_from_slice(&[0, 1]);
        }
        prefix.push(1);
        prefix.extend_from_slice(&[0u8; 32]);
        prefix.extend_from_slice(&u32::MAX.to_le_bytes());
        prefix.push((self.script_head.len() + self.extranonce_len) as u8);
        prefix.extend_from_slice(&self.script_head);
        let mut suffix = Vec::with_capacity(44 + self.outputs.len());
        suffix.extend_from_slice(&self.sequence.to_le_bytes());
        suffix.extend_from_slice(&self.outputs);
        if self.witness {
            suffix.extend_from_slice(&[1, 32]);
            suffix.extend_from_slice(&[0u8; 32]);
        }
        suffix.extend_from_slice(&self.locktime.to_le_bytes());
        (prefix, suffix)
    }

    /// The outputs, decoded.
    pub fn decoded_outputs(&self) -> Vec<TxOut> {
        deserialize(&self.outputs).expect("checked when read")
    }

    /// Checks that every output with value pays `pool_script`, and that it gets at least
    /// `required` sat. Zero-value outputs (the witness commitment, data) may say anything.
    pub fn check_pays(&self, pool_script: &[u8], required: u64) -> Result<u64, CoinbaseRefusal> {
        let mut paid = 0u64;
        for (index, out) in self.decoded_outputs().iter().enumerate() {
            let value = out.value.to_sat();
            if value == 0 {
                continue;
            }
            if out.script_pubkey.as_bytes() != pool_script {
                return Err(CoinbaseRefusal::NotThePool {
                    index,
                    value,
                    script: crate::hex::encode(out.script_pubkey.as_bytes()),
                });
            }
            paid = paid.saturating_add(value);
        }
        if paid < required {
            return Err(CoinbaseRefusal::Underpaid { paid, required });
        }
        Ok(paid)
    }

    /// The stratum coinbase for a channel whose extranonce is `nonce1_len` bytes of its own
    /// prefix then `nonce2_len` of the miner's (together [`DeclaredCoinbase::extranonce_len`]).
    pub fn coinbase(&self, nonce1_len: usize, nonce2_len: usize) -> Coinbase {
        debug_assert_eq!(nonce1_len + nonce2_len, self.extranonce_len);
        let mut coinb1 = Vec::with_capacity(42 + self.script_head.len());
        coinb1.extend_from_slice(&self.version.to_le_bytes());
        coinb1.push(1);
        coinb1.extend_from_slice(&[0u8; 32]);
        coinb1.extend_from_slice(&u32::MAX.to_le_bytes());
        coinb1.push((self.script_head.len() + self.extranonce_len) as u8);
        coinb1.extend_from_slice(&self.script_head);
        let mut coinb2 = Vec::with_capacity(8 + self.outputs.len());
        coinb2.extend_from_slice(&self.sequence.to_le_bytes());
        coinb2.extend_from_slice(&self.outputs);
        coinb2.extend_from_slice(&self.locktime.to_le_bytes());
        Coinbase {
            coinb1,
            coinb2,
            nonce1_len,
            nonce2_len,
            witness: self.witness,
            warnings: Vec::new(),
            split: None,
            plan: None,
        }
    }
}

/// Whether the outputs carry a BIP141 witness commitment (OP_RETURN 0xaa21a9ed...).
fn has_witness_commitment(outputs: &[TxOut]) -> bool {
    outputs.iter().any(|o| {
        let s = o.script_pubkey.as_bytes();
        s.len() >= 38 && s[..6] == [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]
    })
}

/// The chain position a declaration is checked against and mined on: the pool's tip when the
/// job was declared (DeclareMiningJob carries none of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    pub prev_hash: [u8; 32],
    pub height: u32,
    pub nbits: u32,
    pub mintime: u32,
    pub target: Target,
}

/// A declared job the pool accepted: everything a `SetCustomMiningJob` is compared with, a
/// share on it judged by, and its block assembled from.
#[derive(Debug)]
pub struct DeclaredJob {
    /// Who declared it (the JDC's user identifier, as its token was allocated to).
    pub user: Arc<str>,
    pub version: u32,
    pub tip: Tip,
    pub coinbase: DeclaredCoinbase,
    /// The block's other transactions: txids in order, and their serializations as hex.
    pub txids: Arc<[TemplateTx]>,
    pub txs_hex: Bytes,
    /// What the coinbase pays the pool.
    pub paid: u64,
}

impl DeclaredJob {
    /// The merkle branch of the coinbase (what SetCustomMiningJob's `merkle_path` must be).
    pub fn branches(&self) -> Vec<[u8; 32]> {
        let txids: Vec<[u8; 32]> = self.txids.iter().map(|t| t.txid).collect();
        merkle::branches(&txids)
    }

    /// The job the mining core judges shares on, for a channel whose extranonce prefix is
    /// `nonce1_len` bytes (the miner rolls the rest), issued at `ntime`.
    pub fn job(&self, id: u64, nonce1_len: usize, ntime: u32) -> Job {
        let template = Template {
            height: self.tip.height,
            version: self.version,
            prev_hash: self.tip.prev_hash,
            nbits: self.tip.nbits,
            curtime: ntime,
            mintime: self.tip.mintime,
            coinbase_value: self.paid,
            coinbase_flags: Vec::new(),
            transactions: self.txids.clone(),
            txs_hex: self.txs_hex.clone(),
            witness_commitment: None,
            target: self.tip.target,
            rules: Vec::new(),
            ipc_template: None,
        };
        let n1 = nonce1_len.min(self.coinbase.extranonce_len);
        Job::new(id, &template, self.coinbase.coinbase(n1, self.coinbase.extranonce_len - n1), true)
    }

    /// The block as a node is asked to check it (`getblocktemplate` proposal, IPC `checkBlock`):
    /// the extranonce zeros, nonce 0, the proof of work not checked.
    pub fn proposal(&self, ntime: u32) -> Vec<u8> {
        let job = self.job(0, self.coinbase.extranonce_len, ntime);
        let zeros = [0u8; MAX_EXTRANONCE];
        let en1 = &zeros[..self.coinbase.extranonce_len];
        let root = job.merkle_root(en1, &[]);
        let header = job.header(&root, self.version, ntime.max(self.tip.mintime), 0);
        job.assemble_block(en1, &[], &header).expect("a declared job has its transactions")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, TxIn, Witness};

    fn pool_script() -> ScriptBuf {
        ScriptBuf::from_bytes([&[0x00, 0x14][..], &[7u8; 20]].concat())
    }

    fn coinbase_tx(outputs: Vec<TxOut>, witness: bool, en: usize) -> Transaction {
        let mut script = vec![0x03, 0x65, 0x00, 0x00, 0x04, b'j', b'd', b'c', b'!', en as u8];
        script.resize(script.len() + en, 0);
        Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(script),
                sequence: Sequence(0xffff_fffe),
                witness: if witness { Witness::from_slice(&[vec![0u8; 32]]) } else { Witness::new() },
            }],
            output: outputs,
        }
    }

    fn commitment() -> TxOut {
        let mut s = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        s.extend_from_slice(&[9u8; 32]);
        TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(s) }
    }

    /// Cuts a serialized coinbase where its extranonce (the scriptSig's last `en` bytes) lies.
    fn cut(tx: &Transaction, en: usize) -> (Vec<u8>, Vec<u8>) {
        let b = serialize(tx);
        let segwit = !tx.input[0].witness.is_empty();
        let script_end = (if segwit { 6 } else { 4 }) + 1 + 36 + 1 + tx.input[0].script_sig.len();
        (b[..script_end - en].to_vec(), b[script_end..].to_vec())
    }

    #[test]
    fn a_declared_coinbase_is_read_and_gives_the_same_txid_as_rust_bitcoin() {
        for witness in [true, false] {
            let outs =
                vec![TxOut { value: Amount::from_sat(5_000_000_000), script_pubkey: pool_script() }, commitment()];
            let tx = coinbase_tx(outs, witness, 16);
            let (prefix, suffix) = cut(&tx, 16);
            let cb = DeclaredCoinbase::from_declared(&prefix, &suffix).unwrap();
            assert_eq!(cb.extranonce_len, 16);
            assert_eq!(cb.witness, witness);
            assert_eq!(cb.check_pays(pool_script().as_bytes(), 5_000_000_000), Ok(5_000_000_000));
            let coinbase = cb.coinbase(4, 12);
            let job_txid = {
                let mut h = coinbase.coinb1.clone();
                h.extend_from_slice(&[0u8; 16]);
                h.extend_from_slice(&coinbase.coinb2);
                merkle::sha256d(&h)
            };
            assert_eq!(job_txid, tx.compute_txid().to_byte_array_le());
            let mut block_form = Vec::new();
            coinbase.write_for_block(&[0u8; 4], &[0u8; 12], &mut block_form);
            assert_eq!(block_form, serialize(&tx), "the block carries the declared serialization");
        }
    }

    trait LeBytes {
        fn to_byte_array_le(&self) -> [u8; 32];
    }
    impl LeBytes for bitcoin::Txid {
        fn to_byte_array_le(&self) -> [u8; 32] {
            use bitcoin::hashes::Hash;
            self.to_byte_array()
        }
    }

    #[test]
    fn set_custom_mining_job_parts_match_the_declaration() {
        let outs = vec![TxOut { value: Amount::from_sat(625_000_000), script_pubkey: pool_script() }, commitment()];
        let tx = coinbase_tx(outs.clone(), true, 8);
        let (prefix, suffix) = cut(&tx, 8);
        let declared = DeclaredCoinbase::from_declared(&prefix, &suffix).unwrap();
        let head = &tx.input[0].script_sig.as_bytes()[..tx.input[0].script_sig.len() - 8];
        let custom = DeclaredCoinbase::from_parts(2, head, 8, 0xffff_fffe, &serialize(&outs), 0).unwrap();
        assert_eq!(custom, declared);
        // Another extranonce size, or another output, is another coinbase.
        let other = DeclaredCoinbase::from_parts(2, head, 12, 0xffff_fffe, &serialize(&outs), 0).unwrap();
        assert_ne!(other, declared);
    }

    #[test]
    fn refusals_name_what_is_wrong() {
        let thief = ScriptBuf::from_bytes(vec![0x51]);
        let outs = vec![
            TxOut { value: Amount::from_sat(600_000_000), script_pubkey: pool_script() },
            TxOut { value: Amount::from_sat(25_000_000), script_pubkey: thief },
        ];
        let (p, s) = cut(&coinbase_tx(outs, true, 8), 8);
        let cb = DeclaredCoinbase::from_declared(&p, &s).unwrap();
        let e = cb.check_pays(pool_script().as_bytes(), 0).unwrap_err();
        assert!(matches!(e, CoinbaseRefusal::NotThePool { index: 1, value: 25_000_000, .. }), "{e}");
        assert_eq!(e.code(), "invalid-coinbase-tx");

        let outs = vec![TxOut { value: Amount::from_sat(100), script_pubkey: pool_script() }];
        let (p, s) = cut(&coinbase_tx(outs, false, 8), 8);
        let cb = DeclaredCoinbase::from_declared(&p, &s).unwrap();
        assert_eq!(
            cb.check_pays(pool_script().as_bytes(), 101),
            Err(CoinbaseRefusal::Underpaid { paid: 100, required: 101 })
        );

        // An input spending a real outpoint.
        let mut tx = coinbase_tx(vec![TxOut { value: Amount::from_sat(1), script_pubkey: pool_script() }], false, 8);
        tx.input[0].previous_output.vout = 0;
        let (p, s) = cut(&tx, 8);
        let e = DeclaredCoinbase::from_declared(&p, &s).unwrap_err();
        assert_eq!(e.code(), "invalid-coinbase-tx-input");

        // Garbage and truncation.
        assert!(DeclaredCoinbase::from_declared(&[1, 2, 3], &[]).is_err());
        let (p, s) = cut(&coinbase_tx(vec![commitment()], true, 8), 8);
        assert!(DeclaredCoinbase::from_declared(&p, &s[..s.len() - 1]).is_err());
        assert!(DeclaredCoinbase::from_declared(&p[..43], &s).is_err(), "the prefix ends before the scriptSig");
        // A prefix one byte shorter is read as a longer extranonce: the same transaction.
        assert_eq!(DeclaredCoinbase::from_declared(&p[..p.len() - 1], &s).unwrap().extranonce_len, 9);
        let mut longer = s.clone();
        longer.push(0);
        assert!(DeclaredCoinbase::from_declared(&p, &longer).is_err(), "trailing bytes");
    }

    #[test]
    fn a_proxys_coinbase_reads_back_as_declared() {
        let t = crate::work::Template {
            height: 700_000,
            version: 0x2000_0000,
            prev_hash: [1; 32],
            nbits: 0x1703_0ecd,
            curtime: 0,
            mintime: 0,
            coinbase_value: 625_000_000,
            coinbase_flags: Vec::new(),
            transactions: Vec::new().into(),
            txs_hex: Bytes::new(),
            witness_commitment: Some(commitment().script_pubkey.into_bytes()),
            target: Target::from_compact(0x1703_0ecd).unwrap(),
            rules: Vec::new(),
            ipc_template: None,
        };
        let cb = DeclaredCoinbase::for_template(&t, pool_script().as_bytes(), &[b'x'; 200], 12);
        let (p, s) = cb.declared_parts();
        assert_eq!(DeclaredCoinbase::from_declared(&p, &s).unwrap(), cb);
        assert_eq!(cb.check_pays(pool_script().as_bytes(), 625_000_000), Ok(625_000_000));
        let custom = DeclaredCoinbase::from_parts(2, &cb.script_head, 12, u32::MAX, &cb.outputs, 0).unwrap();
        assert_eq!(custom, cb, "SetCustomMiningJob's parts give the same coinbase");
        assert!(cb.script_head.len() + 12 <= 100, "the tag is cut to fit the scriptSig");
    }

    #[test]
    fn a_declared_jobs_proposal_is_a_block_rust_bitcoin_reads() {
        let outs = vec![TxOut { value: Amount::from_sat(5_000_000_000), script_pubkey: pool_script() }];
        let cbtx = coinbase_tx(outs, false, 8);
        let (p, s) = cut(&cbtx, 8);
        let other = coinbase_tx(vec![TxOut { value: Amount::from_sat(5), script_pubkey: pool_script() }], false, 3);
        let other_hex = crate::hex::encode(&serialize(&other));
        use bitcoin::hashes::Hash;
        let job = DeclaredJob {
            user: "jdc".into(),
            version: 0x2000_0000,
            tip: Tip {
                prev_hash: [3u8; 32],
                height: 101,
                nbits: 0x207f_ffff,
                mintime: 1000,
                target: Target::from_compact(0x207f_ffff).unwrap(),
            },
            coinbase: DeclaredCoinbase::from_declared(&p, &s).unwrap(),
            txids: vec![TemplateTx { txid: other.compute_txid().to_byte_array(), fee: None }].into(),
            txs_hex: Bytes::from(other_hex.into_bytes()),
            paid: 5_000_000_000,
        };
        let block: bitcoin::Block = deserialize(&job.proposal(1234)).unwrap();
        assert_eq!(block.txdata.len(), 2);
        assert_eq!(block.txdata[0], cbtx);
        assert!(block.check_merkle_root());
        assert_eq!(block.header.time, 1234);
        assert_eq!(job.job(5, 4, 1234).branches, job.branches());
    }
}
