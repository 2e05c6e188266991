//! Real blocks rebuilt through the engine: each fixture block (tests/data/README.md) is turned
//! into the getblocktemplate the node would have given, its real coinbase is split around an
//! extranonce slot as stratum would send it, and the job must rebuild the very same header and
//! the very same block bytes.

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::{Block, Transaction};
use ckpool::hex;
use ckpool::work::coinbase::Coinbase;
use ckpool::work::job::Job;
use ckpool::work::merkle::sha256d;
use ckpool::work::template::Template;
use serde_json::json;

const WITNESS_MAGIC: [u8; 6] = [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    if name.ends_with(".hex") {
        hex::decode(std::str::from_utf8(&raw).unwrap().trim()).unwrap()
    } else {
        raw
    }
}

/// The transaction without its witness: what the txid hashes.
fn without_witness(tx: &Transaction) -> Vec<u8> {
    let mut stripped = tx.clone();
    for input in &mut stripped.input {
        input.witness.clear();
    }
    serialize(&stripped)
}

/// The witness commitment script of a coinbase: the last output starting with the magic (BIP141).
fn commitment_script(coinbase: &Transaction) -> Option<Vec<u8>> {
    coinbase
        .output
        .iter()
        .rev()
        .find(|o| o.script_pubkey.len() >= 38 && o.script_pubkey.as_bytes()[..6] == WITNESS_MAGIC)
        .map(|o| o.script_pubkey.to_bytes())
}

struct Rebuilt {
    txs: usize,
    witness: bool,
    height: u64,
    slot: (usize, usize),
}

fn rebuild(name: &str, expected_hash: Option<&str>) -> Rebuilt {
    let bytes = fixture(name);
    let block: Block = deserialize(&bytes).unwrap();
    let hash = block.block_hash();
    if let Some(h) = expected_hash {
        assert_eq!(hash.to_string(), h, "{name}: fixture is not the block its name says");
    }
    assert!(block.check_merkle_root(), "{name}: fixture merkle root");
    let coinbase = &block.txdata[0];
    assert!(coinbase.is_coinbase());

    // The getblocktemplate the node would have returned for this block.
    let height = if block.header.version.to_consensus() >= 2 { block.bip34_block_height().unwrap_or(0) } else { 0 };
    let coinbase_value: u64 = coinbase.output.iter().map(|o| o.value.to_sat()).sum();
    let commitment = commitment_script(coinbase);
    let transactions: Vec<_> = block.txdata[1..]
        .iter()
        .map(|tx| {
            json!({
                "data": hex::encode(&serialize(tx)),
                "txid": tx.compute_txid().to_string(),
                "hash": tx.compute_wtxid().to_string(),
            })
        })
        .collect();
    let mut gbt = json!({
        "version": block.header.version.to_consensus(),
        "previousblockhash": block.header.prev_blockhash.to_string(),
        "transactions": transactions,
        "coinbasevalue": coinbase_value,
        "bits": format!("{:08x}", block.header.bits.to_consensus()),
        "curtime": block.header.time,
        "height": height,
    });
    if let Some(c) = &commitment {
        gbt["default_witness_commitment"] = hex::encode(c).into();
    }
    let template = Template::from_gbt(&gbt).unwrap();
    assert_eq!(template.transactions.len(), block.txdata.len() - 1);
    assert_eq!(template.witness_commitment, commitment);
    assert_eq!(template.coinbase_value, coinbase_value);

    // The block's real coinbase split around an extranonce slot inside its scriptSig: 4 + 4 bytes
    // where the scriptSig has room (skipping its first byte, a push opcode); old coinbases with a
    // shorter scriptSig (block 13b8a's is 7 bytes) get the widest 4 + n slot that fits.
    let cb_base = without_witness(coinbase);
    let script_len = coinbase.input[0].script_sig.len();
    assert!(script_len < 0xfd);
    let script_start = 4 + 1 + 36 + 1; // version, input count, null prevout, scriptSig length
    assert_eq!(&cb_base[script_start..script_start + script_len], coinbase.input[0].script_sig.as_bytes());
    let (n1, n2) = if script_len >= 9 { (4, 4) } else { (4, script_len - 5) };
    assert!(n2 >= 1, "{name}: scriptSig of {script_len} bytes is too short for any slot");
    let offset = script_start + 1;
    let (en1, en2) = (&cb_base[offset..offset + n1], &cb_base[offset + n1..offset + n1 + n2]);
    let has_witness = !coinbase.input[0].witness.is_empty();
    if has_witness {
        let items: Vec<&[u8]> = coinbase.input[0].witness.iter().collect();
        assert_eq!(items, vec![&[0u8; 32][..]], "{name}: coinbase witness is not the 32-byte zero reserved value");
    }
    let cb = Coinbase {
        coinb1: cb_base[..offset].to_vec(),
        coinb2: cb_base[offset + n1 + n2..].to_vec(),
        nonce1_len: n1,
        nonce2_len: n2,
        witness: has_witness,
        warnings: Vec::new(),
        split: None,
        plan: None,
    };
    let job = Job::new(1, &template, cb, true);
    assert_eq!(job.coinbase_txid(en1, en2), *coinbase.compute_txid().as_byte_array());

    let root = job.merkle_root(en1, en2);
    assert_eq!(root, *block.header.merkle_root.as_byte_array(), "{name}: merkle root");
    let header = job.header(&root, block.header.version.to_consensus() as u32, block.header.time, block.header.nonce);
    assert_eq!(header.to_vec(), serialize(&block.header), "{name}: header bytes");
    assert_eq!(sha256d(&header), *hash.as_byte_array(), "{name}: header hash");

    let assembled = job.assemble_block(en1, en2, &header).unwrap();
    assert_eq!(assembled.len(), bytes.len(), "{name}: block size");
    assert!(assembled == bytes, "{name}: assembled block differs from the original");
    let again: Block = deserialize(&assembled).unwrap();
    assert!(again.check_merkle_root(), "{name}: check_merkle_root");
    assert!(again.check_witness_commitment(), "{name}: check_witness_commitment");
    assert_eq!(again.block_hash(), hash);
    Rebuilt { txs: block.txdata.len(), witness: has_witness, height, slot: (n1, n2) }
}

#[test]
fn pre_segwit_mainnet_block() {
    let r = rebuild("mainnet_block_13b8a.hex", None);
    assert!(!r.witness);
    println!(
        "mainnet_block_13b8a: {} transactions, no witness, {}+{} byte slot, rebuilt byte for byte",
        r.txs, r.slot.0, r.slot.1
    );
}

#[test]
fn segwit_mainnet_block() {
    let r = rebuild(
        "mainnet_block_000000000000000000000c835b2adcaedc20fdf6ee440009c249452c726dafae.raw",
        Some("000000000000000000000c835b2adcaedc20fdf6ee440009c249452c726dafae"),
    );
    assert!(r.witness);
    assert_eq!(r.slot, (4, 4));
    assert!(r.height > 481_824, "segwit activated at 481824; got {}", r.height);
    println!("mainnet segwit block at height {}: {} transactions, rebuilt byte for byte", r.height, r.txs);
}

#[test]
fn segwit_testnet_block() {
    let r = rebuild(
        "testnet_block_000000000000045e0b1660b6445b5e5c5ab63c9a4f956be7e1e69be04fa4497b.raw",
        Some("000000000000045e0b1660b6445b5e5c5ab63c9a4f956be7e1e69be04fa4497b"),
    );
    assert!(r.witness);
    assert_eq!(r.slot, (4, 4));
    println!("testnet segwit block at height {}: {} transactions, rebuilt byte for byte", r.height, r.txs);
}
