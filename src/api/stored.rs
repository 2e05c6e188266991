//! `/api/history?range=...`: the history store's series (src/history) for the dashboard's
//! day/week/month charts and for scripts: pool-wide or one user's or worker's hashrate over every
//! instance writing to the same database (or one), the network difficulty, found blocks.

use serde_json::{json, Value};

use super::server::{percent_decode, user_name_ok};
use super::Api;
use crate::history::query::{self, Query, MAX_POINTS, RANGES};

/// The parameters of `/api/history?...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub range: String,
    pub from: Option<i64>,
    pub to: Option<i64>,
    pub step: Option<i64>,
    pub user: Option<String>,
    pub worker: Option<String>,
    pub instance: Option<String>,
}

/// The largest `from`, `to` or `step` taken.
const MAX_SECONDS: i64 = 1 << 40;

/// Reads the query string; unknown parameters are refused by name.
pub fn parse(q: &str) -> Result<Params, String> {
    let mut p =
        Params { range: "day".into(), from: None, to: None, step: None, user: None, worker: None, instance: None };
    for pair in q.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(&v.replace('+', " ")).ok_or_else(|| format!("{k}: not percent-encoded UTF-8"))?;
        // Unix seconds and steps within 0..2^40 (past the year 36000): every sum and difference
        // of them below fits an i64.
        let int = |v: &str| {
            v.parse::<i64>()
                .ok()
                .filter(|n| (0..=MAX_SECONDS).contains(n))
                .ok_or_else(|| format!("{k}={v}: a whole number of seconds from 0 to {MAX_SECONDS}"))
        };
        let name = |v: String| if user_name_ok(&v) { Ok(v) } else { Err(format!("{k}: not a name")) };
        match k {
            "range" => {
                if !RANGES.iter().any(|r| r.0 == v) {
                    return Err(format!(
                        "range={v}: one of {}",
                        RANGES.iter().map(|r| r.0).collect::<Vec<_>>().join(", ")
                    ));
                }
                p.range = v;
            }
            "from" => p.from = Some(int(&v)?),
            "to" => p.to = Some(int(&v)?),
            "step" => {
                let s = int(&v)?;
                if s < 60 || s % 60 != 0 {
                    return Err(format!("step={v}: a multiple of 60 seconds"));
                }
                p.step = Some(s);
            }
            "user" => p.user = Some(name(v)?),
            "worker" => p.worker = Some(name(v)?),
            "instance" => p.instance = Some(name(v)?),
            _ => return Err(format!("unknown parameter {k:?}")),
        }
    }
    Ok(p)
}

/// The query `p` asks for at `now`.
pub fn query_of(p: &Params, now: i64) -> Result<Query, String> {
    let mut q = Query::range(&p.range, p.to.unwrap_or(now)).expect("checked range");
    if let Some(s) = p.step {
        q.step = s;
    }
    if let Some(t) = p.to {
        q.to = t;
    }
    if let Some(f) = p.from {
        q.from = f;
    } else if p.to.is_some() || p.step.is_some() {
        let span = RANGES.iter().find(|r| r.0 == p.range).expect("checked").1;
        q.from = q.to - span;
    }
    if q.to <= q.from {
        return Err("to must be after from".into());
    }
    if (q.to - q.from) / q.step > MAX_POINTS {
        return Err(format!("at most {MAX_POINTS} points: give a larger step"));
    }
    q.user = p.user.clone();
    q.worker = p.worker.clone();
    q.instance = p.instance.clone();
    Ok(q)
}

/// The stored history as JSON (`"store": null` and empty series when no store is kept; an
/// `"error"` when it cannot be read now).
pub fn history(api: &Api, p: &Params) -> Value {
    let now = super::unix_now() as i64;
    let q = match query_of(p, now) {
        Ok(q) => q,
        Err(e) => return json!({ "error": e }),
    };
    let mut out = json!({
        "range": p.range, "from": q.from, "to": q.to, "step": q.step,
        "user": q.user, "worker": q.worker, "instance": q.instance,
        "store": api.store.as_ref().map(|s| s.target.kind()),
        "this_instance": api.store.as_ref().map(|s| s.instance.clone()),
        "instances": [], "points": [], "network": [], "blocks": [],
    });
    let Some(store) = &api.store else { return out };
    let q2 = q.clone();
    let r = store.with(move |s| {
        let q = q2;
        let series = query::series(s, &q)?;
        let instances = query::instances(s, q.from, q.to)?;
        let per_worker = q.user.is_some() || q.worker.is_some();
        let network = if per_worker { Vec::new() } else { query::network(s, &q)? };
        let blocks = query::blocks(s, &q)?;
        Ok((series, instances, network, blocks))
    });
    match r {
        Ok((series, instances, network, blocks)) => {
            out["points"] = series
                .iter()
                .map(|(t, sums)| json!([t + q.step, query::hashrate(sums.acc, q.step), sums.acc_n, sums.rej_n]))
                .collect();
            out["instances"] = json!(instances);
            out["network"] = network.iter().map(|(t, d)| json!({ "time": t + q.step, "difficulty": d })).collect();
            out["blocks"] = blocks
                .iter()
                .map(|b| {
                    json!({
                        "instance": b.instance, "height": b.height, "hash": b.hash, "username": b.username,
                        "workername": b.workername, "found": b.found, "status": b.status,
                        "confirmations": b.confirmations,
                    })
                })
                .collect();
        }
        Err(e) => out["error"] = json!(format!("history store: {}", crate::history::store::why(&e))),
    }
    out
}

/// The last day of this instance's stored history, 5-minute points, for `/api/history`'s `day`
/// (so the chart survives a restart); `None` without a store or when it cannot be read.
pub fn day_points(api: &Api) -> Option<Vec<Value>> {
    let store = api.store.as_ref()?;
    let mut q = Query::range("day", super::unix_now() as i64)?;
    q.instance = Some(store.instance.clone());
    let q2 = q.clone();
    let series = store.with(move |s| query::series(s, &q2)).ok()?;
    Some(series.iter().map(|(t, sums)| json!([t + q.step, query::hashrate(sums.acc, q.step)])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_checked_by_name() {
        let p = parse("range=week&user=alice&worker=alice.rig%201").unwrap();
        assert_eq!(
            (p.range.as_str(), p.user.as_deref(), p.worker.as_deref()),
            ("week", Some("alice"), Some("alice.rig 1"))
        );
        assert!(parse("range=decade").unwrap_err().contains("one of hour, day, week, month, year"));
        assert!(parse("step=61").is_err());
        assert!(parse("user=..%2fx").is_err());
        assert!(parse("colour=red").unwrap_err().contains("colour"));
        let q = query_of(&parse("from=1000&to=4600&step=60").unwrap(), 0).unwrap();
        assert_eq!((q.from, q.to, q.step), (1000, 4600, 60));
        assert!(query_of(&parse("from=0&to=100000000&step=60").unwrap(), 0).is_err());
        // Extreme values are refused by name, never overflowed.
        for q in ["to=9223372036854775807", "from=-9223372036854775808&to=1", "step=9223372036854775800", "to=-1"] {
            assert!(parse(q).unwrap_err().contains("from 0 to 1099511627776"), "{q}");
        }
        let edge = parse("from=0&to=1099511627776&step=1099511627760").unwrap();
        assert_eq!(query_of(&edge, i64::MAX / 2).map(|q| q.to), Ok(1 << 40));
        let q = query_of(&parse("range=week").unwrap(), 1_764_000_100).unwrap();
        assert_eq!((q.step, q.to - q.from), (3600, 604_800));
    }
}
