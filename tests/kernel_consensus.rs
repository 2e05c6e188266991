//! Bitcoin Core's own consensus code (libbitcoinkernel, via the `bitcoinkernel` crate) judges
//! blocks the engine builds: a regtest chain is mined from genesis through the full pool path
//! (getblocktemplate JSON → `Template::from_gbt` → `coinbase::build` → `Job::new` →
//! `share::check` until a share is a block → `assemble_block`), paying every address type and
//! carrying transactions this test signs; then corrupted variants must be rejected.

use std::sync::{Arc, Mutex};

use bitcoin::consensus::encode::{deserialize, serialize};
use bitcoin::hashes::{sha256d, Hash};
use bitcoin::key::{CompressedPublicKey, Keypair, TapTweak};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::{
    absolute, transaction, Address, Amount, Network, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use bitcoinkernel::prelude::*;
use bitcoinkernel::{
    Block as KernelBlock, BlockValidationStateRef, ChainType, ChainstateManager, Context, ContextBuilder, Log, Logger,
    ProcessBlockResult, ValidationMode,
};
use ckpool::difficulty::Difficulty;
use ckpool::hex;
use ckpool::share::{self, Accepted, Submit, DEFAULT_VERSION_MASK};
use ckpool::work::coinbase::{self, script_for_address, CoinbaseConfig};
use ckpool::work::job::Job;
use ckpool::work::template::Template;
use serde_json::{json, Value};

const COINBASE_MATURITY: u32 = 100;
const FEE: u64 = 10_000;

/// Kernel log lines, to find the reason a block was refused.
static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The last block-checked verdict the kernel reported: (mode, result).
static CHECKED: Mutex<Option<String>> = Mutex::new(None);

struct CaptureLog;

impl Log for CaptureLog {
    fn log(&self, message: &str) {
        LOG.lock().unwrap().push(message.trim_end().to_string());
    }
}

fn log_mark() -> usize {
    LOG.lock().unwrap().len()
}

fn log_since(mark: usize) -> String {
    LOG.lock().unwrap()[mark..].join("\n")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    P2pkh,
    /// P2SH wrapping P2WPKH: a P2SH address this test can spend.
    P2shP2wpkh,
    P2wpkh,
    /// P2WSH of `<pubkey> OP_CHECKSIG`.
    P2wsh,
    P2tr,
}

const KINDS: [Kind; 5] = [Kind::P2pkh, Kind::P2shP2wpkh, Kind::P2wpkh, Kind::P2wsh, Kind::P2tr];

struct Key {
    kind: Kind,
    sk: SecretKey,
    pk: CompressedPublicKey,
    address: String,
    script_pubkey: ScriptBuf,
}

impl Key {
    fn new(secp: &Secp256k1<bitcoin::secp256k1::All>, kind: Kind, seed: u8) -> Key {
        let sk = SecretKey::from_slice(&[seed; 32]).unwrap();
        let pk = CompressedPublicKey(sk.public_key(secp));
        let address = match kind {
            Kind::P2pkh => Address::p2pkh(pk, Network::Regtest),
            Kind::P2shP2wpkh => Address::p2shwpkh(&pk, Network::Regtest),
            Kind::P2wpkh => Address::p2wpkh(&pk, Network::Regtest),
            Kind::P2wsh => Address::p2wsh(&Key::witness_script(&pk), Network::Regtest),
            Kind::P2tr => {
                let (xonly, _) = Keypair::from_secret_key(secp, &sk).x_only_public_key();
                Address::p2tr(secp, xonly, None, Network::Regtest)
            }
        };
        let script_pubkey = address.script_pubkey();
        Key { kind, sk, pk, address: address.to_string(), script_pubkey }
    }

    fn witness_script(pk: &CompressedPublicKey) -> ScriptBuf {
        Builder::new().push_key(&(*pk).into()).push_opcode(bitcoin::opcodes::all::OP_CHECKSIG).into_script()
    }
}

#[derive(Clone)]
struct Utxo {
    outpoint: OutPoint,
    txout: TxOut,
    key: usize,
    height: u32,
}

fn push(bytes: &[u8]) -> PushBytesBuf {
    PushBytesBuf::try_from(bytes.to_vec()).unwrap()
}

/// A transaction spending `utxo` (owned by `key`) to `to`, paying `FEE`, signed for its kind.
fn spend(secp: &Secp256k1<bitcoin::secp256k1::All>, key: &Key, utxo: &Utxo, to: &ScriptBuf) -> Transaction {
    let mut tx = Transaction {
        version: transaction::Version::TWO,
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: utxo.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: utxo.txout.value - Amount::from_sat(FEE), script_pubkey: to.clone() }],
    };
    let value = utxo.txout.value;
    let ecdsa = |digest: [u8; 32]| {
        let signature = secp.sign_ecdsa(&Message::from_digest(digest), &key.sk);
        bitcoin::ecdsa::Signature { signature, sighash_type: EcdsaSighashType::All }
    };
    let mut cache = SighashCache::new(tx.clone());
    match key.kind {
        Kind::P2pkh => {
            let h = cache.legacy_signature_hash(0, &key.script_pubkey, EcdsaSighashType::All.to_u32()).unwrap();
            let sig = ecdsa(h.to_byte_array());
            tx.input[0].script_sig =
                Builder::new().push_slice(push(&sig.to_vec())).push_key(&key.pk.into()).into_script();
        }
        Kind::P2wpkh => {
            let h = cache.p2wpkh_signature_hash(0, &key.script_pubkey, value, EcdsaSighashType::All).unwrap();
            tx.input[0].witness = Witness::p2wpkh(&ecdsa(h.to_byte_array()), &key.pk.0);
        }
        Kind::P2shP2wpkh => {
            let redeem = ScriptBuf::new_p2wpkh(&key.pk.wpubkey_hash());
            let h = cache.p2wpkh_signature_hash(0, &redeem, value, EcdsaSighashType::All).unwrap();
            tx.input[0].witness = Witness::p2wpkh(&ecdsa(h.to_byte_array()), &key.pk.0);
            tx.input[0].script_sig = Builder::new().push_slice(push(redeem.as_bytes())).into_script();
        }
        Kind::P2wsh => {
            let ws = Key::witness_script(&key.pk);
            let h = cache.p2wsh_signature_hash(0, &ws, value, EcdsaSighashType::All).unwrap();
            tx.input[0].witness = Witness::from_slice(&[ecdsa(h.to_byte_array()).to_vec(), ws.to_bytes()]);
        }
        Kind::P2tr => {
            let h = cache
                .taproot_key_spend_signature_hash(0, &Prevouts::All(&[&utxo.txout]), TapSighashType::Default)
                .unwrap();
            let tweaked = Keypair::from_secret_key(secp, &key.sk).tap_tweak(secp, None);
            let signature =
                secp.sign_schnorr_no_aux_rand(&Message::from_digest(h.to_byte_array()), &tweaked.to_keypair());
            tx.input[0].witness = Witness::p2tr_key_spend(&bitcoin::taproot::Signature {
                signature,
                sighash_type: TapSighashType::Default,
            });
        }
    }
    tx
}

/// Regtest block subsidy: 50 BTC halving every 150 blocks.
fn subsidy(height: u32) -> u64 {
    let halvings = height / 150;
    if halvings >= 64 {
        0
    } else {
        (50 * 100_000_000u64) >> halvings
    }
}

/// BIP141 commitment script for `txs` (after the coinbase), computed with rust-bitcoin: the witness
/// merkle root over wtxids with the coinbase's as zeros, hashed with a zero reserved value.
fn witness_commitment_script(txs: &[Transaction]) -> Vec<u8> {
    let hashes = std::iter::once(sha256d::Hash::all_zeros()).chain(txs.iter().map(|t| t.compute_wtxid().to_raw_hash()));
    let root = bitcoin::merkle_tree::calculate_root(hashes).unwrap();
    let mut buf = root.to_byte_array().to_vec();
    buf.extend_from_slice(&[0u8; 32]);
    let commitment = sha256d::Hash::hash(&buf);
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(commitment.as_byte_array());
    script
}

struct Node {
    _logger: Logger,
    _context: Arc<Context>,
    chainman: ChainstateManager,
    _dir: tempfile::TempDir,
}

struct Tip {
    height: u32,
    hash: [u8; 32],
    time: u32,
    median_time_past: u32,
}

impl Node {
    fn start() -> Node {
        let logger = Logger::new(CaptureLog).unwrap();
        let context = Arc::new(
            ContextBuilder::new()
                .chain_type(ChainType::Regtest)
                .with_block_checked_validation(|_block: KernelBlock, state: BlockValidationStateRef<'_>| {
                    *CHECKED.lock().unwrap() = Some(format!("{:?}/{:?}", state.mode(), state.result()));
                    if state.mode() != ValidationMode::Valid {
                        LOG.lock().unwrap().push(format!("block checked: {:?} {:?}", state.mode(), state.result()));
                    }
                })
                .build()
                .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let blocks = dir.path().join("blocks");
        std::fs::create_dir_all(&blocks).unwrap();
        let chainman =
            ChainstateManager::new(&context, dir.path().to_str().unwrap(), blocks.to_str().unwrap()).unwrap();
        Node { _logger: logger, _context: context, chainman, _dir: dir }
    }

    fn tip(&self) -> Tip {
        let chain = self.chainman.active_chain();
        let tip = chain.tip();
        let mut times = Vec::new();
        let mut entry = Some(tip);
        while let Some(e) = entry {
            if times.len() == 11 {
                break;
            }
            times.push(e.header().timestamp());
            entry = e.prev();
        }
        times.sort_unstable();
        Tip {
            height: tip.height() as u32,
            hash: tip.block_hash().to_bytes(),
            time: tip.header().timestamp(),
            median_time_past: times[times.len() / 2],
        }
    }
}

/// What a node's getblocktemplate would return on `tip` with `txs`.
fn gbt(tip: &Tip, txs: &[Transaction], commit: bool) -> Value {
    let height = tip.height + 1;
    let transactions: Vec<Value> = txs
        .iter()
        .map(|t| {
            json!({
                "data": hex::encode(&serialize(t)),
                "txid": t.compute_txid().to_string(),
                "hash": t.compute_wtxid().to_string(),
                "fee": FEE,
            })
        })
        .collect();
    let mut v = json!({
        "version": 0x2000_0000,
        "previousblockhash": hex::encode_rev(&tip.hash),
        "transactions": transactions,
        "coinbaseaux": {},
        "coinbasevalue": subsidy(height) + FEE * txs.len() as u64,
        "bits": "207fffff",
        "curtime": (tip.median_time_past + 1).max(tip.time + 1),
        "mintime": tip.median_time_past + 1,
        "height": height,
        "rules": ["csv", "!segwit", "taproot"],
    });
    if commit {
        v["default_witness_commitment"] = hex::encode(&witness_commitment_script(txs)).into();
    }
    v
}

/// Mines `template` through the share path: difficulty-zero shares from nonce 0 until one is a block.
fn mine(template: &Value, payout: &Key, job_id: u64) -> (Vec<u8>, u32) {
    let t = Template::from_gbt(template).unwrap();
    let script = script_for_address(&payout.address, Network::Regtest).unwrap();
    assert_eq!(script, payout.script_pubkey, "{:?} address {}", payout.kind, payout.address);
    let cb = coinbase::build(&t, &CoinbaseConfig::new(script, "/ckpool-rs kernel test/")).unwrap();
    let job = Job::new(job_id, &t, cb, true);
    let en1 = (job_id as u32).to_be_bytes();
    let any = Difficulty::ZERO.to_target();
    let (id, en2, ntime) = (job.id_hex(), "00".repeat(job.coinbase.nonce2_len), format!("{:08x}", job.ntime));
    for nonce in 0u32.. {
        let nonce_hex = format!("{nonce:08x}");
        let sub = Submit { job_id: &id, extranonce2: &en2, ntime: &ntime, nonce: &nonce_hex, version_bits: None };
        let acc: Accepted = share::check(&job, &en1, &sub, DEFAULT_VERSION_MASK, &any)
            .unwrap_or_else(|e| panic!("difficulty 0 must accept every share: {e}"));
        if acc.block {
            return (job.assemble_block(&en1, acc.extranonce2(), &acc.header).unwrap(), nonce + 1);
        }
    }
    unreachable!()
}

/// Submits a block the kernel must connect; returns its coinbase for the wallet.
fn accept(node: &Node, block: &[u8], case: &str, tries: u32) -> Transaction {
    let before = node.tip();
    let mark = log_mark();
    let parsed: bitcoin::Block = deserialize(block).unwrap();
    let result = node.chainman.process_block(&KernelBlock::new(block).unwrap());
    let after = node.tip();
    assert_eq!(result, ProcessBlockResult::NewBlock, "{case}: kernel refused the block:\n{}", log_since(mark));
    assert_eq!(after.height, before.height + 1, "{case}: tip did not advance:\n{}", log_since(mark));
    assert_eq!(after.hash, *parsed.block_hash().as_byte_array(), "{case}: tip is not this block");
    println!(
        "ACCEPT {case}: height {} {} ({} txs, {} bytes, {tries} nonce tries)",
        after.height,
        parsed.block_hash(),
        parsed.txdata.len(),
        block.len()
    );
    parsed.txdata[0].clone()
}

/// Submits a block the kernel must refuse, for a reason whose log text contains `reason`.
fn reject(node: &Node, block: &[u8], case: &str, reason: &str) {
    let before = node.tip();
    let mark = log_mark();
    *CHECKED.lock().unwrap() = None;
    let result = node.chainman.process_block(&KernelBlock::new(block).unwrap());
    let after = node.tip();
    let log = log_since(mark);
    assert_eq!(after.hash, before.hash, "{case}: the kernel connected a corrupted block");
    let checked = CHECKED.lock().unwrap().clone().unwrap_or_default();
    assert!(
        result == ProcessBlockResult::Rejected || checked.starts_with("Invalid"),
        "{case}: not refused ({result:?}, checked {checked}):\n{log}"
    );
    assert!(log.contains(reason), "{case}: expected `{reason}` in the kernel's log:\n{log}");
    println!("REJECT {case}: {result:?}, block checked {checked}, reason {reason}");
}

#[test]
fn kernel_accepts_engine_blocks_and_rejects_corrupted_ones() {
    let secp = Secp256k1::new();
    let keys: Vec<Key> = KINDS.iter().enumerate().map(|(i, &k)| Key::new(&secp, k, i as u8 + 1)).collect();
    let dest = Key::new(&secp, Kind::P2wpkh, 0x77);
    let node = Node::start();
    assert_eq!(node.tip().height, 0);
    let mut job_id = 0u64;
    let mut wallet: Vec<Utxo> = Vec::new();

    // Coinbase-only blocks, paying each address type in turn, until the first coinbases mature.
    // Block 1 has no witness commitment (allowed without witness transactions); the rest carry one.
    let total_tries_start = std::time::Instant::now();
    let mut tries_sum = 0;
    for i in 0..(COINBASE_MATURITY + 5) {
        let tip = node.tip();
        let key_index = i as usize % keys.len();
        job_id += 1;
        let commit = i != 0;
        let (block, tries) = mine(&gbt(&tip, &[], commit), &keys[key_index], job_id);
        tries_sum += tries;
        let kind = keys[key_index].kind;
        let case = format!("coinbase-only to {kind:?}{}", if commit { "" } else { " without witness commitment" });
        let cb = if i < 6 || i % 25 == 0 {
            accept(&node, &block, &case, tries)
        } else {
            // Quiet for the bulk of the run; the same checks.
            let before = node.tip().height;
            let parsed: bitcoin::Block = deserialize(&block).unwrap();
            assert_eq!(node.chainman.process_block(&KernelBlock::new(&block).unwrap()), ProcessBlockResult::NewBlock);
            assert_eq!(node.tip().height, before + 1, "{case}");
            parsed.txdata[0].clone()
        };
        assert_eq!(cb.output[0].script_pubkey, keys[key_index].script_pubkey);
        assert_eq!(cb.input[0].witness.len(), commit as usize);
        wallet.push(Utxo {
            outpoint: OutPoint { txid: cb.compute_txid(), vout: 0 },
            txout: cb.output[0].clone(),
            key: key_index,
            height: tip.height + 1,
        });
    }
    println!(
        "{} coinbase-only blocks, every payout type accepted ({} nonce tries, {:.1}s)",
        COINBASE_MATURITY + 5,
        tries_sum,
        total_tries_start.elapsed().as_secs_f64()
    );

    let mut mature = |kind: Kind, next_height: u32| -> Utxo {
        let i = wallet
            .iter()
            .position(|u| keys[u.key].kind == kind && next_height - u.height >= COINBASE_MATURITY)
            .unwrap_or_else(|| panic!("no mature {kind:?} coinbase"));
        wallet.remove(i)
    };

    // A block spending a P2WPKH and a legacy P2PKH coinbase.
    let tip = node.tip();
    let h = tip.height + 1;
    let txs = vec![
        spend(&secp, &keys[2], &mature(Kind::P2wpkh, h), &dest.script_pubkey),
        spend(&secp, &keys[0], &mature(Kind::P2pkh, h), &dest.script_pubkey),
    ];
    assert!(txs[0].compute_wtxid().to_raw_hash() != txs[0].compute_txid().to_raw_hash());
    let good = gbt(&tip, &txs, true);

    // Corrupted variants of that block, each solved through the same share path: the kernel must refuse them.
    {
        let mut t = good.clone();
        let mut c = hex::decode(t["default_witness_commitment"].as_str().unwrap()).unwrap();
        *c.last_mut().unwrap() ^= 0x01;
        t["default_witness_commitment"] = hex::encode(&c).into();
        job_id += 1;
        reject(&node, &mine(&t, &keys[2], job_id).0, "witness commitment off by one byte", "bad-witness-merkle-match");

        let mut t = good.clone();
        t["height"] = (h + 1).into();
        job_id += 1;
        reject(&node, &mine(&t, &keys[2], job_id).0, "BIP34 height one too high", "bad-cb-height");

        let mut t = good.clone();
        t["coinbasevalue"] = (t["coinbasevalue"].as_u64().unwrap() + 1).into();
        job_id += 1;
        reject(&node, &mine(&t, &keys[2], job_id).0, "coinbase pays subsidy + fees + 1 sat", "bad-cb-amount");

        let mut t = good.clone();
        for (tx, j) in txs.iter().zip(t["transactions"].as_array_mut().unwrap()) {
            j["txid"] = tx.compute_wtxid().to_string().into();
        }
        job_id += 1;
        reject(&node, &mine(&t, &keys[2], job_id).0, "merkle root from wtxids", "bad-txnmrklroot");
    }
    job_id += 1;
    let (block, tries) = mine(&good, &keys[2], job_id);
    let cb = accept(&node, &block, "P2WPKH + P2PKH spends", tries);
    assert_eq!(cb.output.len(), 2, "payout and witness commitment");
    assert_eq!(cb.output[0].value.to_sat(), subsidy(h) + 2 * FEE);

    // A block spending P2TR (key path), P2SH-P2WPKH and P2WSH coinbases, plus a child of one of them.
    let tip = node.tip();
    let h = tip.height + 1;
    let mut txs = vec![
        spend(&secp, &keys[4], &mature(Kind::P2tr, h), &dest.script_pubkey),
        spend(&secp, &keys[1], &mature(Kind::P2shP2wpkh, h), &dest.script_pubkey),
        spend(&secp, &keys[3], &mature(Kind::P2wsh, h), &keys[4].script_pubkey),
    ];
    let parent = Utxo {
        outpoint: OutPoint { txid: txs[2].compute_txid(), vout: 0 },
        txout: txs[2].output[0].clone(),
        key: 4,
        height: h,
    };
    txs.push(spend(&secp, &keys[4], &parent, &dest.script_pubkey));
    job_id += 1;
    let (block, tries) = mine(&gbt(&tip, &txs, true), &keys[4], job_id);
    accept(&node, &block, "P2TR key-path + P2SH-P2WPKH + P2WSH spends + in-block child", tries);

    // And coinbase-only blocks keep going on top, with the maturing P2SH payouts.
    for _ in 0..3 {
        let tip = node.tip();
        job_id += 1;
        let (block, tries) = mine(&gbt(&tip, &[], true), &keys[1], job_id);
        accept(&node, &block, "coinbase-only to P2shP2wpkh after spends", tries);
    }
    println!("final tip height {}", node.tip().height);
}
