//! A node's getblocktemplate result: `Template::from_gbt`, then what the pool does with an
//! accepted template (coinbase, job, notify, block assembly) must not panic either, and the
//! block it assembles is the template's block by rust-bitcoin's reading: the transaction count,
//! a coinbase carrying the template's witness commitment, the template's transactions byte for
//! byte after it, the header's merkle root over their txids; and where the template's
//! transactions match their txids and commitment, `check_merkle_root` and
//! `check_witness_commitment` on the whole block.
#![no_main]
use bitcoin::consensus::encode::{deserialize, deserialize_partial, VarInt};
use bitcoin::hashes::Hash;
use bitcoin::{Block, Transaction, Txid};
use ckpool::work::coinbase::{self, script_for_address, CoinbaseConfig};
use ckpool::work::{Job, Template};
use libfuzzer_sys::fuzz_target;

/// Checks `block` (assembled from `t`'s job with `header`) against the template.
fn check_block(t: &Template, header: &[u8; 80], block: &[u8]) {
    assert_eq!(&block[..80], &header[..]);
    let (count, n) = deserialize_partial::<VarInt>(&block[80..]).expect("a transaction count");
    assert_eq!(count.0, t.transactions.len() as u64 + 1, "transaction count");
    let (cb, used) = deserialize_partial::<Transaction>(&block[80 + n..]).expect("our coinbase parses");
    assert!(cb.is_coinbase(), "{cb:?}");
    if let Some(c) = &t.witness_commitment {
        assert!(cb.output.iter().any(|o| o.script_pubkey.as_bytes() == &c[..]), "no witness commitment output");
        assert_eq!(cb.input[0].witness.len(), 1, "the witness reserved value");
    }
    let rest = ckpool::hex::decode(std::str::from_utf8(&t.txs_hex).expect("kept as hex")).expect("kept as hex");
    assert!(block[80 + n + used..] == rest[..], "the template's transactions, in order, after the coinbase");
    let ids = std::iter::once(cb.compute_txid()).chain(t.transactions.iter().map(|x| Txid::from_byte_array(x.txid)));
    let root = bitcoin::merkle_tree::calculate_root(ids).expect("at least the coinbase");
    assert_eq!(&header[36..68], &root.to_byte_array()[..], "merkle root");
    // The whole block, when the template's transaction bytes are transactions.
    let Ok(b) = deserialize::<Block>(block) else { return };
    assert_eq!(b.txdata.len(), t.transactions.len() + 1);
    if b.txdata[1..].iter().zip(t.transactions.iter()).all(|(tx, x)| tx.compute_txid().to_byte_array() == x.txid) {
        assert!(b.check_merkle_root(), "rust-bitcoin's merkle root differs from the header's");
    }
    // A template whose commitment is the one its transactions make: the block must check.
    if let (Some(c), Some(root)) = (&t.witness_commitment, b.witness_root()) {
        let want = Block::compute_witness_commitment(&root, &[0u8; 32]);
        if c.len() == 38 && c[..6] == [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed] && c[6..] == want.to_byte_array()[..] {
            assert!(b.check_witness_commitment(), "the witness commitment does not check");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let t = match Template::from_gbt(&v) {
        Ok(t) => t,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(t.coinbase_flags.len() <= 40);
    assert!(t.coinbase_value <= 21_000_000 * 100_000_000);
    let script = script_for_address("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", bitcoin::Network::Bitcoin)
        .expect("a valid address");
    let Ok(cb) = coinbase::build(&t, &CoinbaseConfig::new(script, "/fuzz/")) else { return };
    let job = Job::new(1, &t, cb, true);
    let _ = job.notify_params();
    let root = job.merkle_root(&[1, 2, 3, 4], &[0; 8]);
    let header = job.header(&root, job.version, job.ntime, 0);
    let block = job.assemble_block(&[1, 2, 3, 4], &[0; 8], &header).expect("template jobs assemble");
    check_block(&t, &header, &block);
});
