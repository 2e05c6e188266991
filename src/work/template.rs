//! A bitcoind `getblocktemplate` result, checked and turned into plain data.

use std::borrow::Cow;
use std::sync::Arc;

use bitcoin::consensus::encode::deserialize;
use bytes::Bytes;
use serde::Deserialize;

use crate::difficulty::Target;
use crate::hex;

/// One transaction of the template (its bytes are in [`Template::txs_hex`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateTx {
    /// Non-witness txid, internal byte order: what the merkle tree hashes.
    pub txid: [u8; 32],
    pub fee: Option<u64>,
}

/// A block template, validated: every field the coinbase, job and block builder need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub height: u32,
    pub version: u32,
    /// Previous block hash, internal byte order (as in the header).
    pub prev_hash: [u8; 32],
    pub nbits: u32,
    pub curtime: u32,
    pub mintime: u32,
    pub coinbase_value: u64,
    /// `coinbaseaux.flags`, pushed into the coinbase scriptSig when present.
    pub coinbase_flags: Vec<u8>,
    pub transactions: Arc<[TemplateTx]>,
    /// The transactions' full serializations (with witness where they have one), in order, as
    /// the hex text the node sent (checked, lower case), one after the other: what follows the
    /// coinbase in a `submitblock`. Kept as text and shared (`Bytes`), so a found block's
    /// request is sent from it as it is, never decoded and encoded again.
    pub txs_hex: Bytes,
    /// `default_witness_commitment`: the commitment output's scriptPubKey.
    pub witness_commitment: Option<Vec<u8>>,
    pub target: Target,
    pub rules: Vec<String>,
    /// The node's id of this template when it came over IPC (`ipcmining`): a block found on it
    /// is also handed to the node by `submitSolution` on that template. None for GBT.
    pub ipc_template: Option<u64>,
}

/// Why a template was refused; names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("getblocktemplate result is not the expected object: {0}")]
    Shape(String),
    #[error("getblocktemplate field `{field}` is invalid: {why}")]
    Field { field: &'static str, why: String },
}

/// The template's fields as the node wrote them: hex strings borrowed from the reply (a
/// `Cow` falls back to a copy only for a string with JSON escapes).
#[derive(Deserialize)]
struct RawTx<'a> {
    #[serde(borrow)]
    data: Cow<'a, str>,
    #[serde(borrow, default)]
    txid: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    hash: Option<Cow<'a, str>>,
    fee: Option<i64>,
}

#[derive(Deserialize)]
struct RawTemplate<'a> {
    version: i64,
    #[serde(borrow)]
    previousblockhash: Cow<'a, str>,
    #[serde(borrow, default)]
    transactions: Vec<RawTx<'a>>,
    coinbasevalue: i64,
    #[serde(borrow)]
    bits: Cow<'a, str>,
    curtime: i64,
    #[serde(default)]
    mintime: Option<i64>,
    height: i64,
    #[serde(default)]
    coinbaseaux: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(borrow, default)]
    default_witness_commitment: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    target: Option<Cow<'a, str>>,
    #[serde(default)]
    rules: Vec<String>,
}

fn field(field: &'static str, why: impl ToString) -> TemplateError {
    TemplateError::Field { field, why: why.to_string() }
}

fn u32_field(name: &'static str, v: i64) -> Result<u32, TemplateError> {
    u32::try_from(v).map_err(|_| field(name, format!("{v} is out of range")))
}

impl Template {
    /// Parses the `result` of `getblocktemplate` (Bitcoin Core, Knots, and non-segwit forks).
    pub fn from_gbt(v: &serde_json::Value) -> Result<Template, TemplateError> {
        // Deserialized from the borrowed tree: no copy of a multi-megabyte template first.
        Template::from_raw(RawTemplate::deserialize(v).map_err(|e| TemplateError::Shape(e.to_string()))?)
    }

    /// Parses the `result` of `getblocktemplate` from its JSON text, as the node wrote it:
    /// no tree of values in between (a mainnet template is 1-2 MB of hex strings).
    pub fn from_gbt_json(text: &str) -> Result<Template, TemplateError> {
        Template::from_raw(serde_json::from_str(text).map_err(|e| TemplateError::Shape(e.to_string()))?)
    }

    fn from_raw(raw: RawTemplate<'_>) -> Result<Template, TemplateError> {
        let height = u32_field("height", raw.height)?;
        let version = raw.version as u32; // bitcoind sends the signed int32 as a number
        if raw.version < i32::MIN as i64 || raw.version > u32::MAX as i64 {
            return Err(field("version", format!("{} is out of range", raw.version)));
        }
        let prev_hash = hex::decode_hash_rev(&raw.previousblockhash).map_err(|e| field("previousblockhash", e))?;
        let nbits = u32::from_str_radix(&raw.bits, 16).map_err(|e| field("bits", e))?;
        if raw.bits.len() != 8 {
            return Err(field("bits", format!("{:?} is not 8 hex digits", raw.bits)));
        }
        let compact_target =
            Target::from_compact(nbits).ok_or_else(|| field("bits", "negative or overflowing target"))?;
        let target = match &raw.target {
            Some(t) => {
                let mut be = [0u8; 32];
                hex::decode_into(t, &mut be).map_err(|e| field("target", e))?;
                Target::from_u256(ruint::aliases::U256::from_be_bytes(be))
            }
            None => compact_target,
        };
        let coinbase_value = u64::try_from(raw.coinbasevalue).map_err(|_| field("coinbasevalue", "negative"))?;
        if coinbase_value > 21_000_000 * 100_000_000 {
            return Err(field("coinbasevalue", format!("{coinbase_value} exceeds the money supply")));
        }
        let curtime = u32_field("curtime", raw.curtime)?;
        let mintime = match raw.mintime {
            Some(m) => u32_field("mintime", m)?,
            None => curtime,
        };
        let coinbase_flags = match raw.coinbaseaux.as_ref().and_then(|m| m.get("flags")) {
            Some(serde_json::Value::String(s)) => hex::decode(s).map_err(|e| field("coinbaseaux.flags", e))?,
            Some(other) => return Err(field("coinbaseaux.flags", format!("{other} is not a hex string"))),
            None => Vec::new(),
        };
        if coinbase_flags.len() > 40 {
            return Err(field(
                "coinbaseaux.flags",
                format!("{} bytes is too long for a coinbase", coinbase_flags.len()),
            ));
        }
        let witness_commitment = match raw.default_witness_commitment {
            Some(s) => Some(hex::decode(&s).map_err(|e| field("default_witness_commitment", e))?),
            None => None,
        };
        let mut transactions = Vec::with_capacity(raw.transactions.len());
        let mut txs_hex = Vec::with_capacity(raw.transactions.iter().map(|t| t.data.len()).sum());
        for (i, tx) in raw.transactions.into_iter().enumerate() {
            hex::append_lower(&tx.data, &mut txs_hex).map_err(|e| field("transactions", format!("#{i} data: {e}")))?;
            let txid = match tx.txid.as_deref() {
                Some(t) => hex::decode_hash_rev(t).map_err(|e| field("transactions", format!("#{i} txid: {e}")))?,
                None => {
                    let data = hex::decode(&tx.data).map_err(|e| field("transactions", format!("#{i} data: {e}")))?;
                    compute_txid(&data, tx.hash.as_deref()).map_err(|e| field("transactions", format!("#{i}: {e}")))?
                }
            };
            let fee = tx.fee.and_then(|f| u64::try_from(f).ok());
            transactions.push(TemplateTx { txid, fee });
        }
        Ok(Template {
            height,
            version,
            prev_hash,
            nbits,
            curtime,
            mintime,
            coinbase_value,
            coinbase_flags,
            transactions: transactions.into(),
            txs_hex: txs_hex.into(),
            witness_commitment,
            target,
            rules: raw.rules,
            ipc_template: None,
        })
    }

    /// True when blocks built on this template carry a witness commitment.
    pub fn has_witness_commitment(&self) -> bool {
        self.witness_commitment.is_some()
    }

    /// Sum of the template's transaction fees where the node reported them.
    pub fn total_fees(&self) -> u64 {
        self.transactions.iter().filter_map(|t| t.fee).sum()
    }
}

/// The non-witness txid of a serialized transaction. Without a `txid` field, older nodes'
/// `hash` is the txid; otherwise decode the transaction and hash it without witness.
fn compute_txid(data: &[u8], hash: Option<&str>) -> Result<[u8; 32], String> {
    match deserialize::<bitcoin::Transaction>(data) {
        Ok(tx) => {
            let txid = tx.compute_txid();
            Ok(*bitcoin::hashes::Hash::as_byte_array(&txid))
        }
        Err(e) => match hash {
            // A chain whose transactions rust-bitcoin cannot decode (a fork's format): trust the node.
            Some(h) => hex::decode_hash_rev(h).map_err(|he| format!("undecodable ({e}) and bad hash ({he})")),
            None => Err(format!("undecodable transaction and no txid given: {e}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({
            "version": 536870912,
            "previousblockhash": "000000000000000000024bead8df69990852c202db0e0097c1a12ea637d7e96d",
            "transactions": [],
            "coinbaseaux": {},
            "coinbasevalue": 625000000,
            "target": "00000000000000000003a8f30000000000000000000000000000000000000000",
            "mintime": 1700000000,
            "curtime": 1700000500,
            "bits": "17034219",
            "height": 820000,
            "default_witness_commitment": "6a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf9",
            "rules": ["csv", "!segwit", "taproot"]
        })
    }

    /// The text parser and the value parser agree, escapes and errors included.
    #[test]
    fn text_and_value_parsers_agree() {
        let mut v = base();
        v["transactions"] = json!([{
            "data": "01000000000100000000000000000000000000",
            "txid": "aa".repeat(32),
            "hash": "aa".repeat(32),
            "fee": 250
        }]);
        v["coinbaseaux"] = json!({"flags": "062f503253482f"});
        let text = v.to_string();
        assert_eq!(Template::from_gbt_json(&text), Template::from_gbt(&v));
        assert_eq!(Template::from_gbt_json(&text).unwrap().total_fees(), 250);
        // A JSON escape inside a hex string (legal JSON, odd node): still read.
        let escaped = text.replace("\"bits\":\"17034219\"", "\"bits\":\"1703421\\u0039\"");
        assert_ne!(escaped, text);
        assert_eq!(Template::from_gbt_json(&escaped), Template::from_gbt(&v));
        let mut bad = base();
        bad["bits"] = json!(17034219);
        assert!(matches!(Template::from_gbt_json(&bad.to_string()), Err(TemplateError::Shape(_))));
        assert!(matches!(Template::from_gbt(&bad), Err(TemplateError::Shape(_))));
    }

    #[test]
    fn parses_core_template() {
        let t = Template::from_gbt(&base()).unwrap();
        assert_eq!(t.height, 820000);
        assert_eq!(t.version, 0x20000000);
        assert_eq!(t.nbits, 0x17034219);
        assert_eq!(t.prev_hash[31], 0x00);
        assert_eq!(t.prev_hash[0], 0x6d);
        assert!(t.has_witness_commitment());
        assert_eq!(t.mintime, 1700000000);
    }

    #[test]
    fn parses_template_without_segwit() {
        let mut v = base();
        let o = v.as_object_mut().unwrap();
        o.remove("default_witness_commitment");
        o.remove("rules");
        o.remove("target");
        o.remove("mintime");
        o.insert("coinbaseaux".into(), json!({"flags": "062f503253482f"}));
        let t = Template::from_gbt(&v).unwrap();
        assert!(!t.has_witness_commitment());
        assert_eq!(t.coinbase_flags, b"\x06/P2SH/");
        assert_eq!(t.mintime, t.curtime);
        assert_eq!(t.target, Target::from_compact(0x17034219).unwrap());
    }

    #[test]
    fn refuses_bad_fields_by_name() {
        for (k, v, name) in [
            ("bits", json!("zz"), "bits"),
            ("previousblockhash", json!("00"), "previousblockhash"),
            ("coinbasevalue", json!(-1), "coinbasevalue"),
            ("height", json!(-5), "height"),
        ] {
            let mut t = base();
            t[k] = v;
            let e = Template::from_gbt(&t).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
        assert!(matches!(Template::from_gbt(&json!("nope")), Err(TemplateError::Shape(_))));
    }

    /// The transactions' hex is kept in order, in lower case, one after the other; a data field
    /// that is not hex of whole bytes is refused by its index.
    #[test]
    fn transactions_kept_as_their_hex() {
        let mut v = base();
        let tx = |data: &str, n: u8| json!({"data": data, "txid": format!("{n:02x}").repeat(32), "fee": 1});
        v["transactions"] = json!([tx("00aa", 1), tx("BBcc01", 2)]);
        let t = Template::from_gbt(&v).unwrap();
        assert_eq!(t.txs_hex, &b"00aabbcc01"[..]);
        assert_eq!(t.transactions.len(), 2);
        for bad in ["abc", "zz"] {
            v["transactions"] = json!([tx("00", 1), tx(bad, 2)]);
            let e = Template::from_gbt(&v).unwrap_err().to_string();
            assert!(e.contains("#1 data"), "{e}");
        }
    }

    #[test]
    fn txid_computed_when_missing() {
        // A real legacy transaction (mainnet block 170's spend, f4184fc5...e9e16).
        let data = "0100000001c997a5e56e104102fa209c6a852dd90660a20b2d9c352423edce25857fcd3704000000004847304402204e45e16932b8af514961a1d3a1a25fdf3f4f7732e9d624c6c61548ab5fb8cd410220181522ec8eca07de4860a4acdd12909d831cc56cbbac4622082221a8768d1d0901ffffffff0200ca9a3b00000000434104ae1a62fe09c5f51b13905f07f06b99a2f7159b2225f374cd378d71302fa28414e7aab37397f554a7df5f142c21c1b7303b8a0626f1baded5c72a704f7e6cd84cac00286bee0000000043410411db93e1dcdb8a016b49840f8c53bc1eb68a382e97b1482ecad7b148a6909a5cb2e0eaddfb84ccf9744464f82e160bfa9b8b64f9d4c03f999b8643f656b412a3ac00000000";
        let mut v = base();
        v["transactions"] = json!([{ "data": data, "fee": 0 }]);
        let t = Template::from_gbt(&v).unwrap();
        assert_eq!(t.txs_hex, data.as_bytes(), "the node's hex kept as it is");
        assert_eq!(
            hex::encode_rev(&t.transactions[0].txid),
            "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16"
        );
    }
}
