//! Contract files, pro-rating, skipped first payouts and carried balances.
//!
//! A contract is active over the heights `[start, end)` (end exclusive); dates are turned into
//! heights by the caller (the first block whose time is at or after the date). Paying epoch `n`
//! pays each contract `payout(H) × active blocks in the epoch / B`, floored once per contract.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::exact::{parse_hashrate, Ratio};

/// A height or a moment (seconds since 1970, UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Height(u64),
    Time(i64),
}

/// One contract line, as written in the file.
#[derive(Debug, Clone)]
pub struct Contract {
    pub customer: String,
    pub hashrate_text: String,
    pub hashrate: Ratio,
    pub start: Point,
    pub end: Point,
}

/// A contract with its heights resolved.
#[derive(Debug, Clone)]
pub struct ResolvedContract {
    pub customer: String,
    pub hashrate_text: String,
    pub hashrate: Ratio,
    /// First active height.
    pub start: u64,
    /// First height no longer active.
    pub end: u64,
}

/// Parses "840000" as a height, or "2024-05-01", "2024-05-01T12:00:00Z", "2024-05-01 12:00" (UTC) as a time.
pub fn parse_point(what: &str, text: &str) -> Result<Point> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Point::Height(t.parse().map_err(|_| anyhow!("{what} {text:?}: height out of range"))?));
    }
    parse_utc(t).map(Point::Time).ok_or_else(|| {
        anyhow!("{what} {text:?} is neither a block height (an integer) nor a UTC date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)")
    })
}

fn parse_utc(t: &str) -> Option<i64> {
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = match t.split_once(['T', ' ']) {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (d.next()?.parse().ok()?, d.next()?.parse().ok()?, d.next()?.parse().ok()?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) || date.len() != 10 {
        return None;
    }
    let (mut hh, mut mm, mut ss) = (0i64, 0i64, 0i64);
    if let Some(tm) = time {
        let mut p = tm.split(':');
        hh = p.next()?.parse().ok()?;
        mm = p.next()?.parse().ok()?;
        ss = p.next().map(|s| s.parse().ok()).unwrap_or(Some(0))?;
        if p.next().is_some() || !(0..=23).contains(&hh) || !(0..=59).contains(&mm) || !(0..=60).contains(&ss) {
            return None;
        }
    }
    // days from civil (Howard Hinnant)
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

/// Reads contracts from CSV (header `customer,hashrate,start,end`) or JSON (an array of objects
/// with those keys); the format is chosen by the extension, `.json` or anything else for CSV.
pub fn read_contracts(path: &Path) -> Result<Vec<Contract>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read contracts file {}", path.display()))?;
    parse_contracts(&text, path)
}

/// Parses the text of a contracts file as [`read_contracts`] does (`path` chooses the format
/// with its extension and names the file in messages).
pub fn parse_contracts(text: &str, path: &Path) -> Result<Vec<Contract>> {
    let is_json =
        path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) || text.trim_start().starts_with('[');
    let rows: Vec<[String; 4]> = if is_json {
        let v: Value =
            serde_json::from_str(text).with_context(|| format!("contracts file {} is not JSON", path.display()))?;
        let arr = v.as_array().ok_or_else(|| anyhow!("contracts file {}: expected a JSON array", path.display()))?;
        arr.iter()
            .enumerate()
            .map(|(i, o)| {
                let get = |k: &str| match o.get(k) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(Value::Number(n)) => Ok(n.to_string()),
                    _ => Err(anyhow!("contracts file {}: entry {}: missing \"{k}\"", path.display(), i + 1)),
                };
                Ok([get("customer")?, get("hashrate")?, get("start")?, get("end")?])
            })
            .collect::<Result<_>>()?
    } else {
        let mut rows = Vec::new();
        let mut header_seen = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f: Vec<String> = line.split(',').map(|s| s.trim().trim_matches('"').to_string()).collect();
            if !header_seen && f.first().is_some_and(|c| c.eq_ignore_ascii_case("customer")) {
                header_seen = true;
                continue;
            }
            if f.len() != 4 {
                bail!(
                    "contracts file {} line {}: expected 4 fields customer,hashrate,start,end",
                    path.display(),
                    n + 1
                );
            }
            rows.push([f[0].clone(), f[1].clone(), f[2].clone(), f[3].clone()]);
        }
        rows
    };
    let mut out = Vec::new();
    for (i, [customer, hashrate, start, end]) in rows.into_iter().enumerate() {
        let ctx = || format!("contracts file {}, contract {} ({customer:?})", path.display(), i + 1);
        if customer.is_empty() {
            bail!("{}: empty customer name", ctx());
        }
        let h = parse_hashrate(&hashrate).with_context(ctx)?;
        let start = parse_point("start", &start).with_context(ctx)?;
        let end = parse_point("end", &end).with_context(ctx)?;
        out.push(Contract { customer, hashrate_text: hashrate, hashrate: h, start, end });
    }
    Ok(out)
}

/// Checks resolved contracts: each ends after it starts, and no customer has two overlapping ones.
pub fn validate(contracts: &[ResolvedContract]) -> Result<()> {
    for c in contracts {
        if c.end <= c.start {
            bail!(
                "contract of {:?} ends (height {}) at or before it starts (height {}); the end must be after the start",
                c.customer,
                c.end,
                c.start
            );
        }
    }
    for (i, a) in contracts.iter().enumerate() {
        for b in &contracts[i + 1..] {
            if a.customer == b.customer && a.start < b.end && b.start < a.end {
                bail!(
                    "contracts of {:?} overlap: heights {}..{} and {}..{}; a customer's contracts must not overlap \
                     (add hashrate with a contract that starts where the other ends)",
                    a.customer,
                    a.start,
                    a.end,
                    b.start,
                    b.end
                );
            }
        }
    }
    Ok(())
}

/// Blocks of epoch `[first, last]` in which the contract is active.
pub fn active_blocks(c: &ResolvedContract, first: u64, last: u64) -> u64 {
    let lo = c.start.max(first);
    let hi = c.end.min(last + 1);
    hi.saturating_sub(lo)
}

/// Balances carried between epochs (the `--state` file).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct State {
    /// The last epoch paid; `None` before the first run.
    pub last_epoch: Option<u64>,
    /// Satoshis owed but not paid yet, by customer.
    pub balances: BTreeMap<String, u64>,
}

pub fn read_state(path: &Path) -> Result<State> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("state file {} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read state file {}", path.display())),
    }
}

/// Writes the state atomically: a temp file in the same directory, fsync, rename.
pub fn write_state(path: &Path, state: &State) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| anyhow!("state file {} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp{}", name.to_string_lossy(), std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(serde_json::to_string_pretty(state)?.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            d.sync_all().ok();
        }
        Ok(())
    })();
    if result.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    result.with_context(|| format!("cannot write state file {}", path.display()))
}

/// One customer's line for the epoch.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Line {
    pub customer: String,
    /// Blocks of the epoch the customer's contracts were active.
    pub active_blocks: u64,
    /// Earned this epoch (after pro-rating), satoshis.
    pub earned_sat: u64,
    /// True when this epoch is one of the contract's first `--skip-first` payouts.
    pub skipped: bool,
    /// Balance carried in from earlier epochs.
    pub carried_in_sat: u64,
    /// Paid now.
    pub paid_sat: u64,
    /// Carried to the next epoch (below `--min-payout`).
    pub carried_out_sat: u64,
}

/// Settles an epoch: `earned` holds (customer, active blocks, earned sat, skipped) per contract.
/// Balances below `min_payout` are carried. Refuses an epoch at or before the state's last one.
pub fn settle(
    state: &State,
    epoch: u64,
    earned: &[(String, u64, u64, bool)],
    min_payout: u64,
) -> Result<(Vec<Line>, State)> {
    if let Some(last) = state.last_epoch {
        if epoch <= last {
            bail!("epoch {epoch} was already paid (the state file records epoch {last} as the last paid); nothing written");
        }
    }
    let mut by_customer: BTreeMap<String, Line> = BTreeMap::new();
    for (customer, active, sat, skipped) in earned {
        let line = by_customer.entry(customer.clone()).or_insert_with(|| Line {
            customer: customer.clone(),
            active_blocks: 0,
            earned_sat: 0,
            skipped: false,
            carried_in_sat: 0,
            paid_sat: 0,
            carried_out_sat: 0,
        });
        line.active_blocks += active;
        line.skipped |= *skipped;
        if !skipped {
            line.earned_sat = line.earned_sat.checked_add(*sat).ok_or_else(|| anyhow!("payout overflow"))?;
        }
    }
    let mut next = State { last_epoch: Some(epoch), balances: BTreeMap::new() };
    // customers with a balance but no active contract this epoch keep it (or are paid if above min)
    for (customer, bal) in &state.balances {
        by_customer.entry(customer.clone()).or_insert_with(|| Line {
            customer: customer.clone(),
            active_blocks: 0,
            earned_sat: 0,
            skipped: false,
            carried_in_sat: *bal,
            paid_sat: 0,
            carried_out_sat: 0,
        });
    }
    let mut lines = Vec::new();
    for (customer, mut line) in by_customer {
        line.carried_in_sat = state.balances.get(&customer).copied().unwrap_or(0);
        let owed = line.carried_in_sat + line.earned_sat;
        if owed >= min_payout && owed > 0 {
            line.paid_sat = owed;
        } else {
            line.carried_out_sat = owed;
            if owed > 0 {
                next.balances.insert(customer.clone(), owed);
            }
        }
        lines.push(line);
    }
    Ok((lines, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(customer: &str, start: u64, end: u64) -> ResolvedContract {
        ResolvedContract {
            customer: customer.into(),
            hashrate_text: "1T".into(),
            hashrate: parse_hashrate("1T").unwrap(),
            start,
            end,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_utc("1970-01-01"), Some(0));
        assert_eq!(parse_utc("2009-01-03T18:15:05Z"), Some(1231006505)); // genesis block time
        assert_eq!(parse_utc("2024-02-29 00:00"), Some(1709164800));
        assert_eq!(parse_point("start", "840000").unwrap(), Point::Height(840000));
        assert!(parse_point("start", "2024-13-01").is_err());
        assert!(parse_point("start", "yesterday").is_err());
        // A negative hour, minute or second was let through, and i64::MIN hours overflowed.
        for t in ["2024-05-01T-9223372036854775808:00", "2024-05-01 -1:00", "2024-05-01T00:-5", "2024-05-01T00:00:-1"] {
            assert!(parse_point("start", t).is_err(), "{t}");
        }
    }

    #[test]
    fn pro_rating_overlap() {
        // epoch 1 of B = 10: heights 10..=19
        assert_eq!(active_blocks(&rc("a", 0, 100), 10, 19), 10);
        assert_eq!(active_blocks(&rc("a", 15, 100), 10, 19), 5); // started inside: 15..=19
        assert_eq!(active_blocks(&rc("a", 0, 13), 10, 19), 3); // ended inside: 10, 11, 12
        assert_eq!(active_blocks(&rc("a", 12, 14), 10, 19), 2);
        assert_eq!(active_blocks(&rc("a", 20, 30), 10, 19), 0);
    }

    #[test]
    fn validation_errors() {
        assert!(validate(&[rc("a", 0, 10), rc("a", 10, 20), rc("b", 5, 15)]).is_ok());
        let e = validate(&[rc("a", 0, 10), rc("a", 9, 20)]).unwrap_err().to_string();
        assert!(e.contains("overlap") && e.contains("\"a\""), "{e}");
        let e = validate(&[rc("a", 10, 10)]).unwrap_err().to_string();
        assert!(e.contains("at or before it starts"), "{e}");
    }

    #[test]
    fn settle_carries_and_refuses_repeats() {
        let s0 = State::default();
        let earned = vec![("a".to_string(), 10, 700, false), ("b".to_string(), 10, 2000, false)];
        let (lines, s1) = settle(&s0, 5, &earned, 1000).unwrap();
        assert_eq!(lines[0].carried_out_sat, 700);
        assert_eq!(lines[1].paid_sat, 2000);
        assert_eq!(s1.balances.get("a"), Some(&700));
        // next epoch: a earns 400 → 1100 ≥ 1000 → paid, balance cleared
        let (lines, s2) = settle(&s1, 6, &[("a".to_string(), 10, 400, false)], 1000).unwrap();
        assert_eq!((lines[0].carried_in_sat, lines[0].paid_sat), (700, 1100));
        assert!(s2.balances.is_empty());
        // the same epoch twice is refused
        assert!(settle(&s2, 6, &earned, 1000).unwrap_err().to_string().contains("already paid"));
        // skipped payouts earn nothing
        let (lines, _) = settle(&s2, 7, &[("c".to_string(), 10, 500, true)], 0).unwrap();
        assert_eq!((lines[0].earned_sat, lines[0].paid_sat, lines[0].skipped), (0, 0, true));
    }

    #[test]
    fn state_written_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("balances.json");
        let mut s = State { last_epoch: Some(3), ..Default::default() };
        s.balances.insert("a".into(), 5);
        write_state(&p, &s).unwrap();
        assert_eq!(read_state(&p).unwrap(), s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left behind");
    }
}
