//! A template from a block the node assembled (Bitcoin Core's IPC mining interface:
//! `BlockTemplate.getBlock` and `getTxFees`), into the same [`Template`] a `getblocktemplate`
//! answer makes, so the coinbase builder, jobs and the block path do not know the difference.
//!
//! What the block says: the header (version, previous block, nBits, time), the height (the
//! coinbase's BIP34 push), the coinbase value (the node's coinbase pays the whole reward:
//! subsidy and fees) and the witness commitment (its output, when present). The node gives no
//! `mintime` over IPC: the header's time is used, which the node set at or after the median
//! time past + 1, so it is a valid lower bound. The transactions after the coinbase are kept as
//! the hex of the very bytes the node sent, as GBT's are; their txids come from walking those
//! bytes (`tx_walk`), so a 3,000-transaction template is not decoded transaction by transaction.

use bitcoin::consensus::encode::deserialize_partial;
use bitcoin::hashes::Hash;

use super::job::bip34_height;
use super::template::{Template, TemplateError, TemplateTx};
use super::tx_walk;
use crate::difficulty::Target;
use crate::hex;

/// The witness commitment output's script starts so (BIP141).
const COMMITMENT_PREFIX: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

fn field(field: &'static str, why: impl ToString) -> TemplateError {
    TemplateError::Field { field, why: why.to_string() }
}

impl Template {
    /// Reads a serialized block template (`block`, the node's own coinbase first) and the fees
    /// of its transactions after the coinbase (`fees`, in order; a list one longer is taken as
    /// starting with the coinbase's entry, as older nodes sent it). `ipc_template` is the id the
    /// IPC link gave the node's template object.
    pub fn from_block(block: &[u8], fees: &[i64], ipc_template: u64) -> Result<Template, TemplateError> {
        // The header and the coinbase decoded; the other transactions only walked for their
        // txids (`tx_walk`): a full template is thousands of them.
        let (header, at) = deserialize_partial::<bitcoin::block::Header>(block).map_err(|e| field("block", e))?;
        let h = &header;
        let (count, n) = deserialize_partial::<bitcoin::VarInt>(&block[at..]).map_err(|e| field("block", e))?;
        if count.0 == 0 {
            return Err(field("block", "no coinbase transaction"));
        }
        let (coinbase, m) =
            deserialize_partial::<bitcoin::Transaction>(&block[at + n..]).map_err(|e| field("block", e))?;
        let coinbase = &coinbase;
        if !coinbase.is_coinbase() {
            return Err(field("block", "the first transaction is not a coinbase"));
        }
        let script_sig = coinbase.input[0].script_sig.as_bytes();
        // bip34_height reads a coinbase's first bytes: version, one input, the outpoint, the push.
        let mut first = vec![0u8, 0, 0, 0, 1];
        first.extend_from_slice(&[0u8; 36]);
        first.push(u8::try_from(script_sig.len()).map_err(|_| field("coinbase", "scriptSig too long"))?);
        first.extend_from_slice(script_sig);
        let height = bip34_height(&first).ok_or_else(|| field("coinbase", "no BIP34 height push"))?;
        let coinbase_value = coinbase.output.iter().try_fold(0u64, |sum, o| sum.checked_add(o.value.to_sat()));
        let coinbase_value = coinbase_value
            .filter(|v| *v <= 21_000_000 * 100_000_000)
            .ok_or_else(|| field("coinbase", "outputs exceed the money supply"))?;
        let witness_commitment = coinbase
            .output
            .iter()
            .rev()
            .map(|o| o.script_pubkey.as_bytes())
            .find(|s| s.len() >= 38 && s.starts_with(&COMMITMENT_PREFIX))
            .map(<[u8]>::to_vec);
        let nbits = h.bits.to_consensus();
        let target = Target::from_compact(nbits).ok_or_else(|| field("bits", "negative or overflowing target"))?;
        // The transactions' bytes as the node sent them: after the header, the count and the coinbase.
        let txs = &block[at + n + m..];
        let rest = usize::try_from(count.0 - 1).map_err(|_| field("block", "transaction count"))?;
        let txids = tx_walk::txids(txs, rest).map_err(|e| field("block", e))?;
        let fees = match fees.len() {
            n if n == rest => fees,
            n if n == rest + 1 => &fees[1..],
            n => return Err(field("fees", format!("{n} fees for {rest} transactions"))),
        };
        let transactions: Vec<TemplateTx> =
            txids.into_iter().zip(fees).map(|(txid, fee)| TemplateTx { txid, fee: u64::try_from(*fee).ok() }).collect();
        Ok(Template {
            height,
            version: h.version.to_consensus() as u32,
            prev_hash: h.prev_blockhash.to_byte_array(),
            nbits,
            curtime: h.time,
            mintime: h.time,
            coinbase_value,
            coinbase_flags: Vec::new(),
            transactions: transactions.into(),
            txs_hex: hex::encode(txs).into_bytes().into(),
            rules: if witness_commitment.is_some() { vec!["segwit".into()] } else { Vec::new() },
            witness_commitment,
            target,
            ipc_template: Some(ipc_template),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::block::{Header, Version};
    use bitcoin::consensus::encode::serialize;
    use bitcoin::transaction::{self, OutPoint, Sequence, TxIn, TxOut};
    use bitcoin::{Amount, Block, BlockHash, CompactTarget, ScriptBuf, Transaction, TxMerkleNode, Witness};

    fn tx(script_sig: ScriptBuf, prev: OutPoint, outs: Vec<TxOut>, witness: Witness) -> Transaction {
        Transaction {
            version: transaction::Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn { previous_output: prev, script_sig, sequence: Sequence::MAX, witness }],
            output: outs,
        }
    }

    /// A block as Bitcoin Core's `createNewBlock` makes one: coinbase with the BIP34 height, the
    /// whole reward to one output, the witness commitment, a reserved value; then two
    /// transactions, one with a witness.
    fn core_block(height_push: &[u8]) -> (Block, Vec<u8>) {
        let commitment = {
            let mut s = COMMITMENT_PREFIX.to_vec();
            s.extend_from_slice(&[7u8; 32]);
            ScriptBuf::from_bytes(s)
        };
        let coinbase = tx(
            ScriptBuf::from_bytes(height_push.to_vec()),
            OutPoint::null(),
            vec![
                TxOut { value: Amount::from_sat(5_000_012_345), script_pubkey: ScriptBuf::from_bytes(vec![0x51]) },
                TxOut { value: Amount::ZERO, script_pubkey: commitment },
            ],
            Witness::from_slice(&[[0u8; 32]]),
        );
        let prev = |n| OutPoint { txid: bitcoin::Txid::from_byte_array([n; 32]), vout: 0 };
        let out = vec![TxOut { value: Amount::from_sat(1000), script_pubkey: ScriptBuf::from_bytes(vec![0x51]) }];
        let a = tx(ScriptBuf::new(), prev(1), out.clone(), Witness::from_slice(&[[1u8; 72]]));
        let b = tx(ScriptBuf::from_bytes(vec![0x51]), prev(2), out, Witness::new());
        let block = Block {
            header: Header {
                version: Version::from_consensus(0x2000_0000),
                prev_blockhash: BlockHash::from_byte_array([9; 32]),
                merkle_root: TxMerkleNode::all_zeros(),
                time: 1_700_000_000,
                bits: CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata: vec![coinbase, a, b],
        };
        let bytes = serialize(&block);
        (block, bytes)
    }

    #[test]
    fn a_core_block_becomes_the_template_gbt_would_give() {
        let (block, bytes) = core_block(&[0x02, 0xe8, 0x03]); // height 1000
        let t = Template::from_block(&bytes, &[300, 200], 7).unwrap();
        assert_eq!(t.height, 1000);
        assert_eq!(t.version, 0x2000_0000);
        assert_eq!(t.prev_hash, [9; 32]);
        assert_eq!(t.nbits, 0x207f_ffff);
        assert_eq!((t.curtime, t.mintime), (1_700_000_000, 1_700_000_000));
        assert_eq!(t.coinbase_value, 5_000_012_345);
        assert_eq!(t.total_fees(), 500);
        assert_eq!(t.witness_commitment.as_deref().map(|c| c.len()), Some(38));
        assert_eq!(t.ipc_template, Some(7));
        let txids: Vec<_> = block.txdata[1..].iter().map(|tx| tx.compute_txid().to_byte_array()).collect();
        assert_eq!(t.transactions.iter().map(|x| x.txid).collect::<Vec<_>>(), txids);
        // The hex is the two transactions' bytes as they were (the witness kept).
        let expect: String = block.txdata[1..].iter().map(|tx| hex::encode(&serialize(tx))).collect();
        assert_eq!(std::str::from_utf8(&t.txs_hex).unwrap(), expect);
        // A fee list that starts with the coinbase's entry is read too.
        assert_eq!(Template::from_block(&bytes, &[-500, 300, 200], 7).unwrap().total_fees(), 500);
    }

    #[test]
    fn what_cannot_be_a_template_is_refused() {
        let (_, bytes) = core_block(&[0x02, 0xe8, 0x03]);
        assert!(Template::from_block(&bytes, &[1], 1).is_err(), "fees do not match the transactions");
        assert!(Template::from_block(&bytes[..100], &[1, 2], 1).is_err(), "truncated");
        let (_, no_height) = core_block(&[0x6a]);
        assert!(Template::from_block(&no_height, &[1, 2], 1).is_err(), "no BIP34 push");
    }
}
