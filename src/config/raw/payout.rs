//! The payout keys of pool mode: `payout_scheme` and what PPLNS is bounded by (docs/payout.md).

use super::*;
use crate::config::Pplns;
use crate::work::coinbase::ANTMINER_COINBASE_MAX;

impl Ctx<'_> {
    /// `payout_scheme` ("pplns", or absent/empty: every block pays `btcaddress`) and the PPLNS
    /// keys, which are refused without it (a fee configured for nothing is a mistake).
    pub(super) fn pplns(&self, r: &RawConfig) -> Result<Option<Pplns>, ConfigError> {
        let scheme = self.string(key!(r.payout_scheme), "")?;
        match scheme.trim() {
            "pplns" => {}
            "" => {
                let given = [
                    ("pplns_window", r.pplns_window.is_some()),
                    ("pool_fee", r.pool_fee.is_some()),
                    ("pplns_min_output", r.pplns_min_output.is_some()),
                    ("pplns_max_outputs", r.pplns_max_outputs.is_some()),
                    ("coinbase_max", r.coinbase_max.is_some()),
                ];
                if let Some((k, _)) = given.iter().find(|(_, g)| *g) {
                    return Err(self.err(
                        k,
                        &Value::Null,
                        "applies to \"payout_scheme\": \"pplns\" only; set that too, or remove this key",
                    ));
                }
                return Ok(None);
            }
            other => {
                return Err(self.err(
                    "payout_scheme",
                    &Value::String(other.into()),
                    "must be \"pplns\" (miners paid in the coinbase) or absent (every block pays btcaddress)",
                ))
            }
        }
        let window = match &r.pplns_window {
            None => Difficulty::from_integer(2),
            Some(Field { typed: Some(d), json }) => {
                let rule = "must be a multiple of the network difficulty above 0 and at most 1000000000000000";
                let d = d.difficulty().map_err(|_| self.err("pplns_window", json, rule))?;
                if d.is_zero() || d > Difficulty::from_integer(1_000_000_000_000_000) {
                    return Err(self.err("pplns_window", json, rule));
                }
                d
            }
            Some(Field { typed: None, json }) => {
                return Err(self.err(
                    "pplns_window",
                    json,
                    decimal_rule("must be a multiple of the network difficulty, such as 2 or 0.5", json),
                ))
            }
        };
        let fee_bp = match &r.pool_fee {
            None => 0,
            Some(Field { typed: Some(d), json }) => crate::work::coinbase::donation_basis_points(&d.0.to_string())
                .ok_or_else(|| {
                    self.err("pool_fee", json, "must be a percent from 0 to 100 with at most two decimals")
                })?,
            Some(Field { typed: None, json }) => {
                return Err(self.err("pool_fee", json, decimal_rule("must be a percent such as 1 or 0.5", json)))
            }
        };
        Ok(Some(Pplns {
            window,
            fee_bp,
            // Below 546 satoshis an output is dust to Bitcoin Core's relay policy (a coinbase is
            // not relayed, but its spender is).
            min_output: self.uint(key!(r.pplns_min_output), 10_000, 546, 2_100_000_000_000_000)?,
            max_outputs: self.uint(key!(r.pplns_max_outputs), 100, 1, 250)? as usize,
            coinbase_max: self.uint(key!(r.coinbase_max), ANTMINER_COINBASE_MAX as u64, 200, 100_000)? as usize,
        }))
    }
}
