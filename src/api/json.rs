//! The JSON API's documents (docs/api.md): built from the statistics view, the current work,
//! the counters and blocks.log. Difficulties are exact decimal strings; hashrates are H/s
//! numbers (display figures, as ckpool's); times are unix seconds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::{history, Api};
use crate::blocks::found::{block_fate, parse_blocks, Block};
use crate::log::stats::{UserView, View, WorkerView};

/// blocks.log larger than this is read from its last this many bytes (whole lines).
const BLOCKS_LOG_MAX: u64 = 8 << 20;

const POOL_WINDOWS: [&str; 7] = ["1m", "5m", "15m", "1hr", "6hr", "1d", "7d"];
const USER_WINDOWS: [&str; 5] = ["1m", "5m", "1hr", "1d", "7d"];

fn windows<const N: usize>(keys: [&str; N], v: &[f64; N]) -> Value {
    Value::Object(keys.iter().zip(v).map(|(k, x)| (k.to_string(), json!(x))).collect())
}

/// blocks.log parsed once per change of its size or time.
#[derive(Debug)]
pub struct BlocksCache {
    stamp: (u64, Option<SystemTime>),
    blocks: Arc<Vec<Block>>,
}

fn read_blocks(api: &Api) -> Arc<Vec<Block>> {
    let path = api.src.logdir.join("blocks.log");
    let meta = std::fs::metadata(&path).ok();
    let stamp = meta.as_ref().map_or((0, None), |m| (m.len(), m.modified().ok()));
    let mut cache = api.blocks_cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = cache.as_ref().filter(|c| c.stamp == stamp) {
        return c.blocks.clone();
    }
    let text = read_tail(&path, BLOCKS_LOG_MAX).unwrap_or_default();
    let blocks = Arc::new(parse_blocks(&text));
    *cache = Some(BlocksCache { stamp, blocks: blocks.clone() });
    blocks
}

fn read_tail(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = Vec::new();
    if len > max {
        f.seek(SeekFrom::Start(len - max))?;
    }
    f.take(max).read_to_end(&mut buf)?;
    let mut text = String::from_utf8_lossy(&buf).into_owned();
    if len > max {
        // Drop the cut first line.
        text = text.split_once('\n').map(|(_, r)| r.to_string()).unwrap_or_default();
    }
    Ok(text)
}

/// The tip's height as the current work implies it (the height being mined, less one).
fn tip(api: &Api) -> Option<u64> {
    let w = api.src.ctx.work.borrow().clone()?;
    (api.src.mode == super::Mode::Pool && w.job.height > 0).then(|| w.job.height as u64 - 1)
}

pub fn blocks(api: &Api) -> Value {
    let tip = tip(api);
    let list: Vec<Value> = read_blocks(api)
        .iter()
        .map(|b| {
            let (status, confirmations) = block_fate(b, tip);
            json!({
                "height": b.height,
                "hash": b.hash,
                "workername": b.workername,
                "username": b.username,
                "diff": b.diff,
                "found": b.found,
                "status": status,
                "confirmations": confirmations,
                "recorded_confirmations": b.recorded_confirmations,
            })
        })
        .collect();
    json!({ "tip": tip, "blocks": list })
}

fn user_summary(u: &UserView) -> Value {
    json!({
        "name": u.name,
        "hashrate": windows(USER_WINDOWS, &u.hashrate),
        "lastshare": u.lastshare,
        "workers": u.workers,
        "shares": u.shares.to_string(),
        "bestshare": u.best.to_string(),
        "bestever": u.best_ever.to_string(),
        "authorised": u.authorised,
    })
}

fn worker(w: &WorkerView) -> Value {
    json!({
        "name": w.name,
        "hashrate": windows(USER_WINDOWS, &w.hashrate),
        "lastshare": w.lastshare,
        "shares": w.shares.to_string(),
        "bestshare": w.best.to_string(),
        "bestever": w.best_ever.to_string(),
        "connections": w.connections,
        "difficulty": w.diff.to_string(),
        "useragent": w.agent,
    })
}

pub fn users(view: &View) -> Value {
    json!({ "lastupdate": view.unix, "users": view.user_list.iter().map(user_summary).collect::<Vec<_>>() })
}

/// Workers listed by `/api/workers` at most (the most recent shares first).
const WORKERS_LISTED: usize = 1000;

/// Every worker of every user (live ones and those with a share), most recent share first.
pub fn workers(view: &View) -> Value {
    let mut all: Vec<(&UserView, &WorkerView)> =
        view.user_list.iter().flat_map(|u| u.worker.iter().map(move |w| (u, w))).collect();
    all.sort_by_key(|(_, w)| std::cmp::Reverse((w.connections > 0, w.lastshare)));
    let list: Vec<Value> = all
        .iter()
        .take(WORKERS_LISTED)
        .map(|(u, w)| {
            let mut v = worker(w);
            v["user"] = json!(u.name);
            v
        })
        .collect();
    json!({ "lastupdate": view.unix, "workers": list })
}

/// One user with its workers; `None` when the statistics do not know the name.
pub fn user(view: &View, name: &str) -> Option<Value> {
    let u = view.user_list.iter().find(|u| u.name == name)?;
    let mut v = user_summary(u);
    v["lastupdate"] = json!(view.unix);
    v["worker"] = Value::Array(u.worker.iter().map(worker).collect());
    Some(v)
}

pub fn pool(api: &Api) -> Value {
    let view = api.src.view.borrow().clone();
    let c = &api.src.ctx.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let rejected_by: serde_json::Map<String, Value> =
        c.rejected_by().map(|(k, n)| (k.label().to_string(), json!(n))).collect();
    let b = view.blocks;
    json!({
        "mode": api.src.mode.name(),
        "version": env!("CARGO_PKG_VERSION"),
        "runtime": view.runtime,
        "lastupdate": view.unix,
        "users": view.users,
        "workers": view.workers,
        "idle": view.idle,
        "disconnected": view.disconnected,
        "connections": load(&c.connections),
        "hashrate": windows(POOL_WINDOWS, &view.hashrate),
        "sps": windows(["1m", "5m", "15m", "1h"], &view.sps.map(|x| (x * 1000.0).round() / 1000.0)),
        "accepted": view.accepted.to_string(),
        "rejected": view.rejected.to_string(),
        "bestshare": view.best.to_string(),
        "shares": { "accepted": load(&c.accepted), "rejected": load(&c.rejected), "rejected_by": rejected_by },
        "blocks": {
            "found": b.found, "accepted": b.accepted, "rejected": b.rejected, "stale": b.stale,
            "confirmed": b.confirmed, "orphaned": b.orphaned, "matured": b.matured,
        },
    })
}

/// Seconds to find a block at `hashrate` H/s with network difficulty `diff` (expected value).
pub fn expected_block_secs(diff: f64, hashrate: f64) -> Option<f64> {
    (hashrate > 0.0 && diff > 0.0).then(|| diff * 4_294_967_296.0 / hashrate)
}

pub fn network(api: &Api) -> Value {
    let view = api.src.view.borrow().clone();
    let work = api.src.ctx.work.borrow().clone();
    let (height, diff, prev, nbits, upstream_diff) = match &work {
        Some(w) => (
            Some(w.job.height),
            Some(w.network_diff),
            Some(crate::hex::encode_rev(&w.job.prev_hash)),
            Some(format!("{:08x}", w.job.nbits)),
            w.upstream.as_ref().map(|u| u.difficulty.to_string()),
        ),
        None => (None, None, None, None, None),
    };
    let d = diff.map(|d| d.as_f64()).unwrap_or(0.0);
    // The 1-hour average, or the 5-minute one while the pool has run less than an hour.
    let rate = if view.runtime >= 3600 { view.hashrate[3] } else { view.hashrate[1] };
    json!({
        "height": height,
        "prevhash": prev,
        "nbits": nbits,
        "difficulty": diff.map(|d| d.to_string()),
        "network_hashrate": d * 4_294_967_296.0 / 600.0,
        "pool_hashrate": rate,
        "expected_block_seconds": expected_block_secs(d, rate).map(|s| s.round()),
        "upstream_difficulty": upstream_diff,
    })
}

pub fn history(api: &Api) -> Value {
    let h = api.history.lock().unwrap_or_else(|p| p.into_inner());
    let pts =
        |it: &mut dyn Iterator<Item = &history::Point>| -> Vec<Value> { it.map(|(t, r)| json!([t, r])).collect() };
    let (hour, ring_day) = (pts(&mut h.hour()), pts(&mut h.day()));
    drop(h);
    // With a history store the day comes from it (this instance's rows), so it survives restarts.
    let day = super::stored::day_points(api).filter(|d| !d.is_empty()).unwrap_or(ring_day);
    json!({
        "hour_step": history::HOUR_STEP,
        "day_step": history::DAY_STEP,
        "hour": hour,
        "day": day,
        "store": api.store.as_ref().map(|s| s.target.kind()),
    })
}

/// A number with an SI suffix, for the widget ("1.23", "T").
fn si(x: f64) -> (String, &'static str) {
    for (scale, s) in [(1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")] {
        if x >= scale {
            return (format!("{:.2}", x / scale), s);
        }
    }
    (format!("{x:.0}"), "")
}

/// Umbrel's "four-stats" widget: hashrate, miners, blocks, best share.
pub fn widget(api: &Api) -> Value {
    let view = api.src.view.borrow().clone();
    let (rate, unit) = si(view.hashrate[1]);
    let (best, best_unit) = si(view.best.as_f64());
    json!({
        "type": "four-stats",
        "refresh": "30s",
        "link": "",
        "items": [
            { "title": "Hashrate", "text": rate, "subtext": format!("{unit}H/s") },
            { "title": "Miners", "text": view.workers.to_string(), "subtext": "" },
            { "title": "Blocks", "text": view.blocks.found.to_string(), "subtext": "" },
            { "title": "Best share", "text": best, "subtext": best_unit },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_time_to_block() {
        // Difficulty 1 at 2^32 H/s: one block a second on average.
        assert_eq!(expected_block_secs(1.0, 4_294_967_296.0), Some(1.0));
        assert_eq!(expected_block_secs(1.0, 0.0), None);
        assert_eq!(si(1.234e12), ("1.23".to_string(), "T"));
    }
}
