//! Coinbase construction: the transaction split around the extranonce slot as stratum sends it.
//!
//! ```text
//! coinb1 = version | 1 input | null prevout | scriptSig length | BIP34 height push
//!          | coinbaseaux flags push | push opcode for the extranonce slot
//! (extranonce1 | extranonce2)                      <- the miner's slot, nonce1len + nonce2len bytes
//! coinb2 = btcsig push | sequence | outputs (payout, witness commitment) | locktime
//! ```
//! coinb1 ‖ extranonce ‖ coinb2 is the non-witness serialization, whose hash is the txid the
//! merkle tree uses. When the template commits to witnesses, the block carries the same
//! transaction with the segwit marker and a witness of one 32-byte zero reserved value.

use std::collections::BTreeMap;
use std::sync::Arc;

use bitcoin::address::{Address, NetworkUnchecked};
use bitcoin::{Network, ScriptBuf};

use crate::payout::pplns::{self, Rules, Split};

use super::template::Template;

/// Consensus bounds of a coinbase scriptSig (bitcoind `bad-cb-length`).
pub const SCRIPTSIG_MIN: usize = 2;
pub const SCRIPTSIG_MAX: usize = 100;
/// NerdMiner firmware buffers 255 bytes of coinbase (NerdMiner#809).
pub const NERDMINER_COINBASE_MAX: usize = 255;
/// Stock Antminer firmware handles about 750 bytes of coinbase (DATUM `datum_stratum.h`).
pub const ANTMINER_COINBASE_MAX: usize = 750;

/// What the operator configures about the coinbase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoinbaseConfig {
    /// scriptPubKey receiving the whole coinbase value.
    pub payout_script: ScriptBuf,
    /// Pool signature text (ckpool's `btcsig`, e.g. "/mypool/").
    pub btcsig: Vec<u8>,
    /// ckpool's `nonce1length`: extranonce1 bytes (per session).
    pub nonce1_len: usize,
    /// ckpool's `nonce2length`: extranonce2 bytes (rolled by the miner).
    pub nonce2_len: usize,
    /// Solo mode's `donation`: this many hundredths of a percent of each block's value go to
    /// this script (`btcaddress`), the rest to `payout_script` (the finder). Exact satoshis.
    pub donation: Option<(ScriptBuf, u32)>,
    /// Pool mode's PPLNS: the window's weights the block's value is split by (`payout_script`,
    /// `btcaddress`, receives the fee and the remainder).
    pub pplns: Option<Arc<PplnsPlan>>,
}

/// What a PPLNS coinbase is built from: a snapshot of the window and the operator's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PplnsPlan {
    /// Each payout script's weight (difficulty units) in the window.
    pub weights: BTreeMap<ScriptBuf, u128>,
    /// Fee, smallest output and most outputs; `bytes` is worked out here from `coinbase_max`.
    pub rules: Rules,
    /// The coinbase's size bound in bytes (non-witness serialization).
    pub coinbase_max: usize,
    /// When the snapshot was taken (Unix seconds, nanoseconds): the shares the window held
    /// then are the share log's up to this moment (`ckpool pplns --height` audits by it).
    pub cut: (u64, u32),
    /// The window's length in difficulty units.
    pub window: u128,
}

/// Bytes an output paying `script` takes in a transaction.
pub fn output_size(script: &[u8]) -> usize {
    8 + varint_size(script.len() as u64) + script.len()
}

fn varint_size(n: u64) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x10000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Basis points (1/100 %) of a ckpool `donation` percent such as `0.5` or `2`: exact decimal,
/// at most two decimals, 0..=100 %.
pub fn donation_basis_points(percent: &str) -> Option<u32> {
    let (int, frac) = percent.trim().split_once('.').unwrap_or((percent.trim(), ""));
    if int.is_empty() && frac.is_empty()
        || frac.len() > 2
        || !(int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let whole: u32 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let cents: u32 = format!("{frac:0<2}").parse().ok()?;
    let bp = whole.checked_mul(100)?.checked_add(cents)?;
    (bp <= 10_000).then_some(bp)
}

/// Splits `value` between the finder and the donation: `floor(value * bp / 10000)` donated.
pub fn split_donation(value: u64, bp: u32) -> (u64, u64) {
    let donated = (value as u128 * bp.min(10_000) as u128 / 10_000) as u64;
    (value - donated, donated)
}

impl CoinbaseConfig {
    pub fn new(payout_script: ScriptBuf, btcsig: &str) -> CoinbaseConfig {
        CoinbaseConfig {
            payout_script,
            btcsig: btcsig.as_bytes().to_vec(),
            nonce1_len: 4,
            nonce2_len: 8,
            donation: None,
            pplns: None,
        }
    }
}

/// A coinbase ready for stratum: the two halves around the extranonce slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coinbase {
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub nonce1_len: usize,
    pub nonce2_len: usize,
    /// The block serializes this coinbase with a witness (32-byte zero reserved value).
    pub witness: bool,
    /// Operator-facing notes (btcsig truncated, coinbase above a firmware's buffer).
    pub warnings: Vec<String>,
    /// A PPLNS coinbase: how the block's value was split (who is paid, who is carried).
    pub split: Option<Arc<Split<ScriptBuf>>>,
    /// A PPLNS coinbase: the window's snapshot it was split by (journaled when a block is found).
    pub plan: Option<Arc<PplnsPlan>>,
}

/// Why a coinbase could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinbaseError {
    #[error("nonce1length {nonce1} + nonce2length {nonce2} must be 2..=75 bytes with nonce1length >= 1 and nonce2length 1..=16")]
    SlotSize { nonce1: usize, nonce2: usize },
    #[error("coinbase scriptSig would be {0} bytes even without btcsig; the limit is 100")]
    ScriptSigTooLong(usize),
    #[error("payout script is empty")]
    NoPayoutScript,
}

/// Maximum extranonce2 length this engine accepts (docs/firmware.md: miners above 8 break; 16 is a hard cap).
pub const MAX_NONCE2_LEN: usize = 16;

/// The serialized BIP34 height push (`CScript() << height` in bitcoind: OP_0, OP_1..OP_16, or minimal number).
pub fn bip34_height_push(height: u32) -> Vec<u8> {
    bitcoin::script::Builder::new().push_int(height as i64).into_script().into_bytes()
}

/// Pushes `data` (at most 255 bytes) with the shortest push opcode.
fn push_data(out: &mut Vec<u8>, data: &[u8]) {
    debug_assert!(data.len() <= 255);
    if data.len() > 75 {
        out.push(0x4c); // OP_PUSHDATA1
    }
    out.push(data.len() as u8);
    out.extend_from_slice(data);
}

fn write_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x10000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

fn write_output(out: &mut Vec<u8>, value: u64, script: &[u8]) {
    out.extend_from_slice(&value.to_le_bytes());
    write_varint(out, script.len() as u64);
    out.extend_from_slice(script);
}

/// Builds the coinbase for `template` paying `template.coinbase_value` to the configured script.
pub fn build(template: &Template, cfg: &CoinbaseConfig) -> Result<Coinbase, CoinbaseError> {
    let slot = cfg.nonce1_len + cfg.nonce2_len;
    if cfg.nonce1_len == 0 || cfg.nonce2_len == 0 || cfg.nonce2_len > MAX_NONCE2_LEN || slot > 75 {
        return Err(CoinbaseError::SlotSize { nonce1: cfg.nonce1_len, nonce2: cfg.nonce2_len });
    }
    if cfg.payout_script.is_empty() {
        return Err(CoinbaseError::NoPayoutScript);
    }
    let mut warnings = Vec::new();

    // scriptSig before the slot: height, flags, slot push opcode.
    let mut sig_head = bip34_height_push(template.height);
    let mut flags = template.coinbase_flags.as_slice();
    if flags.len() > 40 {
        flags = &flags[..40];
    }
    if !flags.is_empty() {
        push_data(&mut sig_head, flags);
    }
    sig_head.push(slot as u8);
    let fixed = sig_head.len() + slot;
    if fixed > SCRIPTSIG_MAX {
        return Err(CoinbaseError::ScriptSigTooLong(fixed));
    }
    // btcsig after the slot, truncated to what the 100-byte limit leaves.
    let avail = SCRIPTSIG_MAX - fixed;
    // A push of up to 75 bytes costs one opcode byte; longer ones use OP_PUSHDATA1 (two bytes).
    let room = if avail <= 76 { avail.saturating_sub(1) } else { avail - 2 };
    let mut sig = cfg.btcsig.as_slice();
    if sig.len() > room {
        warnings.push(format!(
            "btcsig is {} bytes; truncated to {room} to keep the coinbase scriptSig within 100 bytes",
            sig.len()
        ));
        sig = &sig[..room];
    }
    let mut sig_tail = Vec::new();
    if !sig.is_empty() {
        push_data(&mut sig_tail, sig);
    }
    let script_len = fixed + sig_tail.len();
    debug_assert!((SCRIPTSIG_MIN..=SCRIPTSIG_MAX).contains(&script_len));

    let mut coinb1 = Vec::with_capacity(64);
    coinb1.extend_from_slice(&1u32.to_le_bytes()); // tx version
    coinb1.push(1); // one input
    coinb1.extend_from_slice(&[0u8; 32]);
    coinb1.extend_from_slice(&u32::MAX.to_le_bytes());
    write_varint(&mut coinb1, script_len as u64);
    coinb1.extend_from_slice(&sig_head);

    let mut coinb2 = Vec::with_capacity(128);
    coinb2.extend_from_slice(&sig_tail);
    coinb2.extend_from_slice(&u32::MAX.to_le_bytes()); // sequence
    let commitment_size = template.witness_commitment.as_ref().map_or(0, |c| output_size(c));
    let split = cfg.pplns.as_ref().map(|plan| {
        // Everything but the miners' outputs, with the pool's output counted even when it is
        // zero (then left out) and a one-byte output count (at most 252 outputs).
        let base =
            coinb1.len() + slot + coinb2.len() + 1 + output_size(cfg.payout_script.as_bytes()) + commitment_size + 4;
        let rules = Rules {
            bytes: plan.coinbase_max.saturating_sub(base),
            max_outputs: plan.rules.max_outputs.min(250),
            ..plan.rules
        };
        Arc::new(pplns::split(template.coinbase_value, &plan.weights, &rules, |s| output_size(s.as_bytes())))
    });
    if let Some(split) = &split {
        let pool = split.pool();
        let outputs = split.paid.len() as u64 + (pool > 0) as u64 + template.witness_commitment.is_some() as u64;
        write_varint(&mut coinb2, outputs);
        for (script, value) in &split.paid {
            write_output(&mut coinb2, *value, script.as_bytes());
        }
        if pool > 0 {
            write_output(&mut coinb2, pool, cfg.payout_script.as_bytes());
        }
    } else {
        let (finder, donated) = match &cfg.donation {
            Some((_, bp)) => split_donation(template.coinbase_value, *bp),
            None => (template.coinbase_value, 0),
        };
        let outputs = 1 + (donated > 0) as u64 + template.witness_commitment.is_some() as u64;
        write_varint(&mut coinb2, outputs);
        write_output(&mut coinb2, finder, cfg.payout_script.as_bytes());
        if let Some((script, _)) = cfg.donation.as_ref().filter(|_| donated > 0) {
            write_output(&mut coinb2, donated, script.as_bytes());
        }
    }
    if let Some(commitment) = &template.witness_commitment {
        write_output(&mut coinb2, 0, commitment);
    }
    coinb2.extend_from_slice(&0u32.to_le_bytes()); // locktime

    let size = coinb1.len() + slot + coinb2.len();
    if size > ANTMINER_COINBASE_MAX {
        warnings.push(format!("coinbase is {size} bytes: above the ~750 bytes stock Antminer firmware handles"));
    } else if size > NERDMINER_COINBASE_MAX {
        warnings.push(format!("coinbase is {size} bytes: above the 255 bytes NerdMiner firmware buffers"));
    }
    Ok(Coinbase {
        coinb1,
        coinb2,
        nonce1_len: cfg.nonce1_len,
        nonce2_len: cfg.nonce2_len,
        witness: template.witness_commitment.is_some(),
        warnings,
        split,
        plan: cfg.pplns.clone(),
    })
}

impl Coinbase {
    /// Non-witness serialized size in bytes, the figure firmware limits are about.
    pub fn size(&self) -> usize {
        self.coinb1.len() + self.nonce1_len + self.nonce2_len + self.coinb2.len()
    }

    /// Writes the coinbase as the block carries it: with marker, flag and the 32-byte zero
    /// witness reserved value when `witness` is set.
    pub fn write_for_block(&self, en1: &[u8], en2: &[u8], out: &mut Vec<u8>) {
        if self.witness {
            out.extend_from_slice(&self.coinb1[..4]);
            out.extend_from_slice(&[0x00, 0x01]);
            out.extend_from_slice(&self.coinb1[4..]);
            out.extend_from_slice(en1);
            out.extend_from_slice(en2);
            let (body, locktime) = self.coinb2.split_at(self.coinb2.len() - 4);
            out.extend_from_slice(body);
            out.push(1); // one witness item
            out.push(32);
            out.extend_from_slice(&[0u8; 32]);
            out.extend_from_slice(locktime);
        } else {
            out.extend_from_slice(&self.coinb1);
            out.extend_from_slice(en1);
            out.extend_from_slice(en2);
            out.extend_from_slice(&self.coinb2);
        }
    }
}

/// Why an address could not be used for payouts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not a bitcoin address: {1}")]
    Parse(String, String),
    #[error("{0:?} is not an address for the node's network ({1})")]
    WrongNetwork(String, Network),
}

/// The scriptPubKey of an address (P2PKH, P2SH, P2WPKH, P2WSH, P2TR), checked against `network`.
pub fn script_for_address(address: &str, network: Network) -> Result<ScriptBuf, AddressError> {
    let unchecked: Address<NetworkUnchecked> = address
        .trim()
        .parse()
        .map_err(|e: bitcoin::address::ParseError| AddressError::Parse(address.into(), e.to_string()))?;
    let checked =
        unchecked.require_network(network).map_err(|_| AddressError::WrongNetwork(address.into(), network))?;
    Ok(checked.script_pubkey())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::encode::deserialize;
    use bitcoin::Transaction;

    #[test]
    fn donation_is_exact() {
        assert_eq!(donation_basis_points("0"), Some(0));
        assert_eq!(donation_basis_points("0.5"), Some(50));
        assert_eq!(donation_basis_points("2"), Some(200));
        assert_eq!(donation_basis_points("1.25"), Some(125));
        assert_eq!(donation_basis_points(".5"), Some(50));
        assert_eq!(donation_basis_points("100"), Some(10_000));
        for bad in ["100.01", "1.255", "-1", "1e2", "", ".", "abc", "0x10"] {
            assert_eq!(donation_basis_points(bad), None, "{bad}");
        }
        assert_eq!(split_donation(312_500_000, 50), (310_937_500, 1_562_500));
        assert_eq!(split_donation(5_000_000_001, 150), (4_925_000_001, 75_000_000));
        assert_eq!(split_donation(999, 1), (999, 0), "rounds the donation down, never the finder");
        assert_eq!(split_donation(21_000_000 * 100_000_000, 10_000), (0, 21_000_000 * 100_000_000));
    }

    #[test]
    fn a_donation_is_a_second_output_paying_exact_satoshis() {
        let t = template(true);
        let mut cfg = CoinbaseConfig::new(ScriptBuf::from_bytes(vec![0x51]), "/x/");
        cfg.donation = Some((ScriptBuf::from_bytes(vec![0x52]), 150));
        let cb = build(&t, &cfg).unwrap();
        let mut raw = cb.coinb1.clone();
        raw.extend_from_slice(&[0u8; 12]);
        raw.extend_from_slice(&cb.coinb2);
        let tx: Transaction = deserialize(&raw).unwrap();
        let outs: Vec<(u64, Vec<u8>)> =
            tx.output.iter().map(|o| (o.value.to_sat(), o.script_pubkey.to_bytes())).collect();
        assert_eq!(outs.len(), 3, "finder, donation, witness commitment");
        assert_eq!((outs[0].0, outs[1].0, outs[2].0), (307_812_500, 4_687_500, 0));
        assert_eq!((outs[0].1.as_slice(), outs[1].1.as_slice()), (&[0x51][..], &[0x52][..]));
        // A donation that rounds to nothing adds no output.
        cfg.donation = Some((ScriptBuf::from_bytes(vec![0x52]), 0));
        let cb = build(&t, &cfg).unwrap();
        let mut raw = cb.coinb1.clone();
        raw.extend_from_slice(&[0u8; 12]);
        raw.extend_from_slice(&cb.coinb2);
        assert_eq!(deserialize::<Transaction>(&raw).unwrap().output.len(), 2);
    }

    #[test]
    fn a_pplns_coinbase_pays_the_window_within_its_byte_bound() {
        let t = template(true);
        let mut c = cfg("/x/");
        let payee = |i: u8| ScriptBuf::from_bytes([&[0x00, 0x14][..], &[i; 20][..]].concat()); // P2WPKH
        let weights: BTreeMap<ScriptBuf, u128> = (1..=40u8).map(|i| (payee(i), i as u128)).collect();
        let rules = Rules { fee_bp: 100, min_output: 1, max_outputs: 200, bytes: 0 };
        c.pplns =
            Some(Arc::new(PplnsPlan { weights, rules, coinbase_max: ANTMINER_COINBASE_MAX, cut: (0, 0), window: 1 }));
        let cb = build(&t, &c).unwrap();
        assert!(cb.size() <= ANTMINER_COINBASE_MAX, "{}", cb.size());
        let split = cb.split.clone().unwrap();
        let mut raw = cb.coinb1.clone();
        raw.extend_from_slice(&[0u8; 12]);
        raw.extend_from_slice(&cb.coinb2);
        let tx: Transaction = deserialize(&raw).unwrap();
        // The largest parts are paid, each one output; the rest is carried; the pool's output
        // holds the fee and the remainder; the witness commitment comes last.
        let n = split.paid.len();
        assert!((15..40).contains(&n) && split.carried.len() == 40 - n, "{n}");
        for (i, (script, value)) in split.paid.iter().enumerate() {
            assert_eq!((&tx.output[i].script_pubkey, tx.output[i].value.to_sat()), (script, *value));
        }
        assert_eq!(split.paid[0].0, payee(40));
        assert_eq!(tx.output[n].script_pubkey, c.payout_script);
        assert_eq!(tx.output[n].value.to_sat(), split.pool());
        assert_eq!(tx.output.len(), n + 2);
        let total: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(total, 312_500_000, "every satoshi of the value is paid");
        assert_eq!(split.fee, 3_125_000);
        // One more output would not have fitted.
        assert!(cb.size() + output_size(payee(1).as_bytes()) > ANTMINER_COINBASE_MAX);
    }

    fn template(commit: bool) -> Template {
        let mut v = serde_json::json!({
            "version": 536870912,
            "previousblockhash": "0000000000000000000000000000000000000000000000000000000000000000",
            "coinbasevalue": 312_500_000u64,
            "bits": "207fffff",
            "curtime": 1700000000,
            "height": 300,
        });
        if commit {
            v["default_witness_commitment"] =
                "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9".into();
        }
        Template::from_gbt(&v).unwrap()
    }

    fn cfg(sig: &str) -> CoinbaseConfig {
        let script = script_for_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", Network::Regtest).unwrap();
        CoinbaseConfig::new(script, sig)
    }

    #[test]
    fn decodes_as_a_coinbase_paying_the_value() {
        for commit in [false, true] {
            let t = template(commit);
            let cb = build(&t, &cfg("/ckpool-rs/")).unwrap();
            let mut raw = cb.coinb1.clone();
            raw.extend_from_slice(&[0xaa; 12]);
            raw.extend_from_slice(&cb.coinb2);
            let tx: Transaction = deserialize(&raw).unwrap();
            assert!(tx.is_coinbase());
            assert_eq!(tx.output[0].value.to_sat(), 312_500_000);
            assert_eq!(tx.output.len(), 1 + commit as usize);
            let sig = tx.input[0].script_sig.as_bytes();
            assert_eq!(&sig[..3], &[0x02, 0x2c, 0x01]); // BIP34: push 2 bytes, 300 LE
            assert!(sig.windows(11).any(|w| w == b"/ckpool-rs/"));
            assert_eq!(tx.input[0].previous_output, bitcoin::OutPoint::null());
            let mut block_form = Vec::new();
            cb.write_for_block(&[0xaa; 4], &[0xaa; 8], &mut block_form);
            let wtx: Transaction = deserialize(&block_form).unwrap();
            assert_eq!(wtx.compute_txid(), tx.compute_txid());
            assert_eq!(wtx.input[0].witness.len(), commit as usize);
            assert!(cb.size() < NERDMINER_COINBASE_MAX, "{}", cb.size());
        }
    }

    #[test]
    fn bip34_small_heights_use_opcodes() {
        assert_eq!(bip34_height_push(0), vec![0x00]);
        assert_eq!(bip34_height_push(1), vec![0x51]);
        assert_eq!(bip34_height_push(16), vec![0x60]);
        assert_eq!(bip34_height_push(17), vec![0x01, 0x11]);
        assert_eq!(bip34_height_push(128), vec![0x02, 0x80, 0x00]);
        assert_eq!(bip34_height_push(840_000), vec![0x03, 0x40, 0xd1, 0x0c]);
    }

    #[test]
    fn long_btcsig_is_truncated_within_consensus() {
        let long = "x".repeat(200);
        let cb = build(&template(true), &cfg(&long)).unwrap();
        assert!(cb.warnings.iter().any(|w| w.contains("truncated")));
        let mut raw = cb.coinb1.clone();
        raw.extend_from_slice(&[0u8; 12]);
        raw.extend_from_slice(&cb.coinb2);
        let tx: Transaction = deserialize(&raw).unwrap();
        assert!(tx.input[0].script_sig.len() <= SCRIPTSIG_MAX);
        assert_eq!(tx.input[0].script_sig.len(), SCRIPTSIG_MAX);
    }

    #[test]
    fn slot_sizes_are_checked() {
        let mut c = cfg("");
        c.nonce2_len = 0;
        assert!(matches!(build(&template(false), &c), Err(CoinbaseError::SlotSize { .. })));
        c.nonce2_len = 17;
        assert!(build(&template(false), &c).is_err());
        c.nonce2_len = 8;
        c.nonce1_len = 70;
        assert!(build(&template(false), &c).is_err());
    }

    #[test]
    fn every_address_type() {
        for (addr, net, prefix) in [
            ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", Network::Bitcoin, &[0x76u8, 0xa9][..]),
            ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", Network::Bitcoin, &[0xa9][..]),
            ("bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq", Network::Bitcoin, &[0x00, 0x14][..]),
            ("bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3", Network::Bitcoin, &[0x00, 0x20][..]),
            ("bc1p5d7rjq7g6rdk2yhzks9smlaqtedr4dekq08ge8ztwac72sfr9rusxg3297", Network::Bitcoin, &[0x51, 0x20][..]),
            ("mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn", Network::Regtest, &[0x76, 0xa9][..]),
        ] {
            let s = script_for_address(addr, net).unwrap();
            assert!(s.as_bytes().starts_with(prefix), "{addr}");
        }
        assert!(matches!(
            script_for_address("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", Network::Regtest),
            Err(AddressError::WrongNetwork(..))
        ));
        assert!(matches!(script_for_address("nonsense", Network::Bitcoin), Err(AddressError::Parse(..))));
    }
}
