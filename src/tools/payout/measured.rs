//! `ckpool payout --contracts FILE --measured`: beside each contract's payout, the hashrate the
//! pool actually received from the contract's username (its `customer`) over the epoch, from the
//! history store's share difficulty sums, and its ratio to the contracted hashrate, so an
//! under-delivered contract shows before it is paid.
//!
//! Measured hashrate = difficulty sum × 2^32 / seconds, exact (a rational), shown floored to whole
//! H/s; the ratio measured / contracted is floored to 4 decimals. The window is widened to whole
//! minutes (the store keeps minute rows; hour rows after a week, so an epoch older than a week is
//! measured on whole hours).

use anyhow::{anyhow, bail, Context, Result};
use ruint::aliases::U1024;

use crate::config::Config;
use crate::history::query::{self, Query};
use crate::history::retention::{Sums, MINUTE};
use crate::history::{Store, Target};
use crate::payout::exact::Ratio;

/// One contract's measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured {
    pub from: i64,
    pub to: i64,
    pub sums: Sums,
    /// diff sum × 2^32 / seconds, exact.
    pub hashrate: Ratio,
    /// hashrate / contracted, exact.
    pub ratio: Ratio,
}

/// The window `[from, to)` widened to whole minutes.
pub fn window(from: i64, to: i64) -> (i64, i64) {
    (from.div_euclid(MINUTE) * MINUTE, (to + MINUTE - 1).div_euclid(MINUTE) * MINUTE)
}

/// Exact measured hashrate and ratio of `sums` over `[from, to)` against `contracted` (pure).
pub fn measure(sums: Sums, from: i64, to: i64, contracted: &Ratio) -> Result<Measured> {
    if to <= from {
        bail!("the measured window is empty ({from} .. {to})");
    }
    let secs = (to - from) as u128;
    let hashrate = Ratio::new(U1024::from(sums.acc) << 32, U1024::from(crate::difficulty::SCALE) * U1024::from(secs))
        .ok_or_else(|| anyhow!("empty window"))?
        .reduced();
    let ratio = hashrate.checked_div(contracted).ok_or_else(|| anyhow!("contract hashrate is zero"))?.reduced();
    Ok(Measured { from, to, sums, hashrate, ratio })
}

/// The history database `--history-db` names (a SQLite file, or a `postgresql://` / `host=`
/// connection string), else the one `--config` uses.
pub fn target(history_db: Option<&str>, config: Option<&std::path::Path>) -> Result<Target> {
    if let Some(db) = history_db {
        let is_pg = db.starts_with("postgres://") || db.starts_with("postgresql://") || db.contains("host=");
        return Ok(if is_pg { Target::Postgres(db.to_string()) } else { Target::Sqlite(db.into()) });
    }
    let path =
        config.ok_or_else(|| anyhow!("--measured needs the history store: give --config FILE or --history-db"))?;
    let cfg = Config::load(path)?;
    crate::history::target(&cfg).ok_or_else(|| {
        anyhow!("config {} keeps no history (\"history\": false and no \"dburl\"): nothing to measure", path.display())
    })
}

/// Reads one customer's sums over `[from, to)` (every instance, every worker of the username).
pub fn read(store: &mut Store, customer: &str, from: i64, to: i64) -> Result<Sums> {
    let q = Query { from, to, step: MINUTE, user: Some(customer.to_string()), ..Default::default() };
    query::total(store, &q).with_context(|| format!("reading {customer:?}'s shares from {}", store.target.show()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_is_exact() {
        // 600 shares of difficulty 1000 over 600 s: 1000 × 2^32 H/s = 4,294,967,296,000.
        let sums = Sums { acc: 600 * 1000 * crate::difficulty::SCALE, acc_n: 600, rej: 0, rej_n: 0 };
        let contracted = Ratio::integer(8_589_934_592_000); // twice that
        let m = measure(sums, 0, 600, &contracted).unwrap();
        assert_eq!(m.hashrate.floor(), U1024::from(4_294_967_296_000u128));
        assert_eq!(m.ratio.to_decimal(4), "0.5000");
        assert_eq!(window(61, 119), (60, 120));
        assert_eq!(window(60, 120), (60, 120));
        assert!(measure(sums, 5, 5, &contracted).is_err());
    }
}
