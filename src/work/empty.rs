//! The coinbase-only template a new tip allows before the node's full template exists: built
//! from the new block's header facts and the chain's consensus rules, or refused where a rule
//! cannot be applied from those facts alone. Pure: the caller passes the tip, the last full
//! template (what the node said about version, coinbase flags and segwit) and the time.
//!
//! What each field is and why it is safe:
//! - previous block: the tip; height: the tip's + 1 (BIP34 puts it in the coinbase).
//! - nBits: regtest never retargets and every block is at the proof-of-work limit, so the tip's
//!   bits (0x207fffff) are the next block's; refused when the tip's bits are anything else.
//!   Mainnet and signet: the tip's bits, except at a retarget height (a multiple of 2016), which
//!   needs the period's first block's time: refused. Testnet3 and testnet4 allow min-difficulty
//!   blocks by the clock: refused. A main or signet node whose templates carry no segwit rule
//!   is a fork with its own difficulty rules: refused. Any other chain: refused.
//! - time: at least the tip's median time past + 1 (consensus), else now.
//! - version: the last full template's (the node's own versionbits choice; deployments change
//!   state only at period boundaries, and no deployment makes a version invalid); the tip's
//!   version may carry a miner's rolled bits.
//! - value: the subsidy at the new height (halving every 150 blocks on regtest, 210,000
//!   elsewhere); no transactions, so no fees.
//! - witness commitment: when the node's templates commit to witnesses, the commitment of a
//!   block whose only transaction is the coinbase (witness root 0, reserved value 0), as the
//!   node's own template of an empty mempool carries it; otherwise none.

use std::sync::Arc;

use bitcoin::Network;
use bytes::Bytes;

use super::merkle::sha256d;
use super::template::Template;
use crate::difficulty::Target;

/// The new tip as its header says (any work source can give these).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TipHeader {
    /// The tip's hash, internal byte order (the next block's previous block hash).
    pub hash: [u8; 32],
    pub height: u32,
    pub bits: u32,
    /// The tip's median time past (median of its own and its ten predecessors' times).
    pub mediantime: u32,
}

/// Why no empty template is made for a tip.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("chain {0:?}: its difficulty rules are not derived here")]
    Chain(String),
    #[error("testnet's min-difficulty rule depends on the block's time")]
    Testnet,
    #[error("the node's templates carry no segwit rule: a fork whose difficulty rules are its own")]
    Fork,
    #[error("height {0} is a retarget height: its bits need the node")]
    Retarget(u32),
    #[error("regtest tip with bits {0:08x}, not the proof-of-work limit 207fffff")]
    RegtestBits(u32),
    #[error("the tip's bits {0:08x} are no valid target")]
    Bits(u32),
    #[error("the tip's height or median time is at its end")]
    Overflow,
}

impl Refusal {
    /// True when every later tip will be refused for the same reason (the chain's rules).
    pub fn persists(&self) -> bool {
        matches!(self, Refusal::Chain(_) | Refusal::Testnet | Refusal::Fork)
    }
}

/// Blocks between retargets on mainnet, testnet and signet.
pub const RETARGET_INTERVAL: u32 = 2016;
/// Regtest's proof-of-work limit as compact bits.
pub const REGTEST_BITS: u32 = 0x207f_ffff;
const COIN: u64 = 100_000_000;

/// Blocks between subsidy halvings.
pub fn halving_interval(network: Network) -> u32 {
    if network == Network::Regtest {
        150
    } else {
        210_000
    }
}

/// The block subsidy at `height`: 50 BTC halved every `interval` blocks, zero from the 64th
/// halving on (Core's `GetBlockSubsidy`).
pub fn subsidy(height: u32, interval: u32) -> u64 {
    let halvings = height / interval.max(1);
    if halvings >= 64 {
        0
    } else {
        (50 * COIN) >> halvings
    }
}

/// The next block's bits on `network` (`None`: a chain rust-bitcoin does not name, given as
/// `chain`), or why they cannot be derived from the tip alone. `segwit`: the node's templates
/// carry the segwit rule.
pub fn next_bits(network: Option<Network>, chain: &str, tip: &TipHeader, segwit: bool) -> Result<u32, Refusal> {
    let height = tip.height.checked_add(1).ok_or(Refusal::Overflow)?;
    match network {
        Some(Network::Regtest) if tip.bits == REGTEST_BITS => Ok(tip.bits),
        Some(Network::Regtest) => Err(Refusal::RegtestBits(tip.bits)),
        Some(Network::Bitcoin | Network::Signet) if !segwit => Err(Refusal::Fork),
        Some(Network::Bitcoin | Network::Signet) if height % RETARGET_INTERVAL == 0 => Err(Refusal::Retarget(height)),
        Some(Network::Bitcoin | Network::Signet) => Ok(tip.bits),
        Some(Network::Testnet | Network::Testnet4) => Err(Refusal::Testnet),
        _ => Err(Refusal::Chain(chain.to_string())),
    }
}

/// The witness commitment output script of a block whose only transaction is its coinbase:
/// `OP_RETURN` push of `aa21a9ed` ‖ sha256d(witness root ‖ reserved value), both all zeros (the
/// coinbase's wtxid counts as zero, and the root of one leaf is the leaf).
pub fn empty_witness_commitment() -> Vec<u8> {
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(&sha256d(&[0u8; 64]));
    script
}

/// The coinbase-only template on `tip`, from the last full template `basis` (the node's version,
/// coinbase flags, rules and whether it commits to witnesses) at `now` (Unix seconds).
pub fn template(
    network: Option<Network>,
    chain: &str,
    tip: &TipHeader,
    basis: &Template,
    now: u32,
) -> Result<Template, Refusal> {
    let segwit = basis.rules.iter().any(|r| r.trim_start_matches('!') == "segwit");
    let nbits = next_bits(network, chain, tip, segwit)?;
    let target = Target::from_compact(nbits).ok_or(Refusal::Bits(nbits))?;
    let height = tip.height.checked_add(1).ok_or(Refusal::Overflow)?;
    let mintime = tip.mediantime.checked_add(1).ok_or(Refusal::Overflow)?;
    let interval = halving_interval(network.unwrap_or(Network::Bitcoin));
    Ok(Template {
        height,
        version: basis.version,
        prev_hash: tip.hash,
        nbits,
        curtime: now.max(mintime),
        mintime,
        coinbase_value: subsidy(height, interval),
        coinbase_flags: basis.coinbase_flags.clone(),
        transactions: Arc::from(Vec::new()),
        txs_hex: Bytes::new(),
        witness_commitment: basis.witness_commitment.is_some().then(empty_witness_commitment),
        target,
        rules: basis.rules.clone(),
        // Built here, not by the node: a block on it goes out by submitblock alone.
        ipc_template: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hex;
    use crate::work::{coinbase, CoinbaseConfig, Job};

    fn tip(height: u32, bits: u32) -> TipHeader {
        TipHeader { hash: [7; 32], height, bits, mediantime: 1_700_000_000 }
    }

    /// A full template as Core's getblocktemplate gives it on regtest (segwit, commitment).
    fn basis() -> Template {
        Template::from_gbt(&serde_json::json!({
            "version": 0x2000_0000,
            "previousblockhash": "11".repeat(32),
            "transactions": [],
            "coinbasevalue": 5_000_000_000u64 + 1234,
            "bits": "207fffff",
            "curtime": 1_700_000_100,
            "mintime": 1_700_000_001,
            "height": 101,
            "default_witness_commitment": "6a24aa21a9ed".to_string() + &"ab".repeat(32),
            "rules": ["csv", "!segwit", "taproot"]
        }))
        .unwrap()
    }

    #[test]
    fn subsidy_halves_exactly_and_ends() {
        assert_eq!(subsidy(0, 150), 5_000_000_000);
        assert_eq!(subsidy(149, 150), 5_000_000_000);
        assert_eq!(subsidy(150, 150), 2_500_000_000);
        assert_eq!(subsidy(300, 150), 1_250_000_000);
        // Mainnet: block 840,000 (fourth halving) pays 3.125 BTC, 839,999 still 6.25.
        assert_eq!(subsidy(839_999, 210_000), 625_000_000);
        assert_eq!(subsidy(840_000, 210_000), 312_500_000);
        // The 32nd halving leaves 1 sat (5e9 >> 32), the 33rd none, and from the 64th the shift is not taken.
        assert_eq!(subsidy(32 * 210_000, 210_000), 1);
        assert_eq!(subsidy(33 * 210_000, 210_000), 0);
        assert_eq!(subsidy(64 * 150, 150), 0);
        assert_eq!(subsidy(u32::MAX, 150), 0);
        assert_eq!(halving_interval(Network::Regtest), 150);
        assert_eq!(halving_interval(Network::Signet), 210_000);
    }

    #[test]
    fn bits_are_derived_only_where_the_rules_allow() {
        let main = Some(Network::Bitcoin);
        // Mainnet: the tip's bits, except when the next height retargets.
        assert_eq!(next_bits(main, "main", &tip(840_000, 0x1703_4219), true), Ok(0x1703_4219));
        assert_eq!(
            next_bits(main, "main", &tip(2016 * 417 - 1, 0x1703_4219), true),
            Err(Refusal::Retarget(2016 * 417))
        );
        assert_eq!(next_bits(main, "main", &tip(2016 * 417, 0x1703_4219), true), Ok(0x1703_4219));
        assert_eq!(next_bits(Some(Network::Signet), "signet", &tip(100, 0x1e03_77ae), true), Ok(0x1e03_77ae));
        // A main chain without segwit (a fork with its own difficulty algorithm): refused.
        assert_eq!(next_bits(main, "main", &tip(100, 0x1800_0000), false), Err(Refusal::Fork));
        // Regtest: unchanged at the limit, at a 2016 multiple too (no retargeting); other bits refused.
        assert_eq!(next_bits(Some(Network::Regtest), "regtest", &tip(2015, REGTEST_BITS), false), Ok(REGTEST_BITS));
        assert_eq!(
            next_bits(Some(Network::Regtest), "regtest", &tip(5, 0x1d00_ffff), true),
            Err(Refusal::RegtestBits(0x1d00_ffff))
        );
        // Testnets and unknown chains: refused for good.
        for (n, c) in [(Some(Network::Testnet), "test"), (Some(Network::Testnet4), "testnet4"), (None, "stn")] {
            let r = next_bits(n, c, &tip(100, 0x1d00_ffff), true).unwrap_err();
            assert!(r.persists(), "{r}");
        }
        assert!(!Refusal::Retarget(2016).persists());
        assert_eq!(next_bits(main, "main", &tip(u32::MAX, 0x1703_4219), true), Err(Refusal::Overflow));
    }

    /// sha256d of 64 zero bytes, as Core's regtest getblocktemplate gives it with an empty
    /// mempool (`default_witness_commitment`); tests/newtip.rs checks it against the node.
    #[test]
    fn the_empty_blocks_witness_commitment() {
        assert_eq!(
            hex::encode(&empty_witness_commitment()),
            "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9"
        );
    }

    /// The template's fields, and a block built from its job that rust-bitcoin finds consistent:
    /// merkle root, witness commitment, BIP34 height, subsidy only.
    #[test]
    fn a_coinbase_only_template_makes_a_consistent_block() {
        let b = basis();
        let t = template(Some(Network::Regtest), "regtest", &tip(149, REGTEST_BITS), &b, 1_600_000_000).unwrap();
        assert_eq!((t.height, t.prev_hash, t.nbits, t.version), (150, [7; 32], REGTEST_BITS, 0x2000_0000));
        assert_eq!((t.mintime, t.curtime), (1_700_000_001, 1_700_000_001), "a clock behind the median time");
        assert_eq!(t.coinbase_value, 2_500_000_000, "height 150 is regtest's first halving");
        assert!(t.transactions.is_empty() && t.txs_hex.is_empty());
        let later = template(Some(Network::Regtest), "regtest", &tip(149, REGTEST_BITS), &b, 1_800_000_000).unwrap();
        assert_eq!(later.curtime, 1_800_000_000);

        let script = bitcoin::ScriptBuf::from_bytes(vec![0x51]);
        let cb = coinbase::build(&t, &CoinbaseConfig::new(script, "/t/")).unwrap();
        let job = Job::new(1, &t, cb, true);
        assert!(job.branches.is_empty(), "no transaction, no merkle branch");
        let (en1, en2) = ([1, 2, 3, 4], [0; 8]);
        let root = job.merkle_root(&en1, &en2);
        let header = job.header(&root, job.version, job.ntime, 0);
        let raw = job.assemble_block(&en1, &en2, &header).unwrap();
        let block: bitcoin::Block = bitcoin::consensus::encode::deserialize(&raw).unwrap();
        assert_eq!(block.txdata.len(), 1);
        assert!(block.check_merkle_root() && block.check_witness_commitment());
        assert_eq!(block.bip34_block_height(), Ok(150));
        assert_eq!(block.txdata[0].output.iter().map(|o| o.value.to_sat()).sum::<u64>(), 2_500_000_000);

        // A node without segwit (Bitcoin SV's regtest): no commitment, a plain coinbase.
        let mut plain = b.clone();
        plain.rules.clear();
        plain.witness_commitment = None;
        let t = template(Some(Network::Regtest), "regtest", &tip(10, REGTEST_BITS), &plain, 0).unwrap();
        assert!(t.witness_commitment.is_none());
        assert_eq!(t.coinbase_value, 5_000_000_000);
    }

    /// PPLNS on an empty job: the window splits the subsidy, exactly, and nothing else.
    #[test]
    fn pplns_splits_the_subsidy_only() {
        use crate::payout::pplns::Rules;
        use crate::work::coinbase::PplnsPlan;
        use std::collections::BTreeMap;
        let t = template(Some(Network::Regtest), "regtest", &tip(200, REGTEST_BITS), &basis(), 0).unwrap();
        assert_eq!(t.coinbase_value, 2_500_000_000);
        let payee = |i: u8| bitcoin::ScriptBuf::from_bytes([&[0x00, 0x14][..], &[i; 20][..]].concat());
        let weights: BTreeMap<_, u128> = [(payee(1), 3), (payee(2), 1)].into_iter().collect();
        let rules = Rules { fee_bp: 100, min_output: 1, max_outputs: 10, bytes: 0 };
        let mut cfg = CoinbaseConfig::new(payee(9), "/t/");
        cfg.pplns = Some(Arc::new(PplnsPlan { weights, rules, coinbase_max: 750, cut: (0, 0), window: 1 }));
        let cb = coinbase::build(&t, &cfg).unwrap();
        let raw = [cb.coinb1.clone(), vec![0u8; 12], cb.coinb2.clone()].concat();
        let tx: bitcoin::Transaction = bitcoin::consensus::encode::deserialize(&raw).unwrap();
        let paid: Vec<(Vec<u8>, u64)> =
            tx.output.iter().map(|o| (o.script_pubkey.to_bytes(), o.value.to_sat())).collect();
        // 1 % fee: 25,000,000 to the pool; 2,475,000,000 split 3:1.
        assert_eq!(paid[0], (payee(1).to_bytes(), 1_856_250_000));
        assert_eq!(paid[1], (payee(2).to_bytes(), 618_750_000));
        assert_eq!(paid[2], (payee(9).to_bytes(), 25_000_000));
        assert_eq!(paid[3], (empty_witness_commitment(), 0));
        assert_eq!(paid.iter().map(|p| p.1).sum::<u64>(), t.coinbase_value);
    }
}
