//! Operator statistics as ckpool 0.9.9 writes them (`stratifier.c` `statsupdate`):
//! `logdir/pool/pool.status` (three JSON lines) and `logdir/users/<username>` (one indented JSON
//! object per user with a `worker` array), rewritten atomically every `stats_interval`.
//!
//! Sessions send [`StatEvent`]s over a bounded channel (a full channel slows that miner, no event
//! is dropped); one task owns the [`Book`] (pure: time passed in), renders the files and hands
//! them to a blocking writer. No lock is held across I/O.
//!
//! Hashrates are ckpool's decaying averages of difficulty-1 shares per second (the same exact
//! fixed-point `decay_time` vardiff uses) times 2^32, shown with ckpool's `suffix_string`.
//! Totals and best shares are exact difficulties; where ckpool writes an integer (`accepted`,
//! `rejected`, `shares`, `bestever`, the pool's `bestshare`) a fractional value is written as an
//! exact decimal number (`0.0003`), a whole one as an integer.

use std::sync::Arc;

use crate::difficulty::Difficulty;
use crate::mining::ShareTally;

mod book;
mod format;
mod takeover;
mod task;

pub use book::{Book, Summary, UserView, View, WorkerView};
pub use format::{fmt_g, json_real, suffix_string, write_atomic};
pub use task::{spawn, HistorySink, ShareSink, StatsTask};

/// Pool hashrate windows (s): 1m 5m 15m 1hr 6hr 1d 7d.
const POOL_WINDOWS: [u64; 7] = [60, 300, 900, 3600, 21600, 86400, 604800];
/// Pool shares-per-second windows (s): 1m 5m 15m 1h.
const SPS_WINDOWS: [u64; 4] = [60, 300, 900, 3600];
/// User and worker hashrate windows (s): 1m 5m 1hr 1d 7d.
const USER_WINDOWS: [u64; 5] = [60, 300, 3600, 86400, 604800];
const POOL_KEYS: [&str; 7] =
    ["hashrate1m", "hashrate5m", "hashrate15m", "hashrate1hr", "hashrate6hr", "hashrate1d", "hashrate7d"];
const USER_KEYS: [&str; 5] = ["hashrate1m", "hashrate5m", "hashrate1hr", "hashrate1d", "hashrate7d"];

/// What sessions (and the block submitter) report.
#[derive(Debug, Clone)]
pub enum StatEvent {
    /// A session authorized as `worker` of `user`.
    Authorized { user: Arc<str>, worker: Arc<str> },
    /// The user agent the session of `worker` subscribed with (for the operator's view).
    Agent { user: Arc<str>, worker: Arc<str>, agent: Arc<str> },
    /// A session of `worker` ended (or re-authorized under another name).
    Gone { user: Arc<str>, worker: Arc<str> },
    /// Shares of one worker judged together (a session reports once per batch of lines read).
    Shares { user: Arc<str>, worker: Arc<str>, tally: ShareTally },
    /// A node accepted a block the pool found: a new round begins (pool.status `diff`).
    BlockFound,
    /// The found blocks' tally (from blocks.log), shown as extra keys of pool.status' third line.
    Blocks(BlockCounts),
    /// Proxy mode: a miner's share met the network target and went to the upstream pool, which
    /// submits the block (counted as found; what became of it is the upstream's to say).
    BlockForwarded,
}

/// Found blocks by what became of them (a block counts in each stage it reached).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockCounts {
    pub found: u64,
    pub accepted: u64,
    pub rejected: u64,
    pub stale: u64,
    pub confirmed: u64,
    pub orphaned: u64,
    pub matured: u64,
}

/// A moment as the book sees it: monotonic microseconds (for decays) and unix seconds (shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub mono_us: u64,
    pub unix: u64,
}

pub(crate) fn add(a: Difficulty, b: Difficulty) -> Difficulty {
    Difficulty::from_units(a.units().saturating_add(b.units()))
}

#[cfg(test)]
mod tests {

    use serde_json::Value;

    use crate::difficulty::SCALE;
    use crate::mining::vardiff::US;

    use super::book::*;
    use super::format::*;
    use super::*;

    fn at(s: u64) -> Now {
        Now { mono_us: s * US, unix: 1_700_000_000 + s }
    }

    fn share(user: &str, worker: &str, diff: &str, sdiff: &str, accepted: bool) -> StatEvent {
        let mut tally = ShareTally::default();
        tally.add(diff.parse().unwrap(), sdiff.parse().unwrap(), accepted);
        StatEvent::Shares { user: user.into(), worker: worker.into(), tally }
    }

    #[test]
    fn printf_g_and_suffixes_match_c() {
        for (x, p, want) in [
            (1.0, 3, "1"),
            (1.2345, 3, "1.23"),
            (999.6, 3, "1e+03"),
            (0.0001234, 3, "0.000123"),
            (0.00001234, 3, "1.23e-05"),
            (12345.0, 3, "1.23e+04"),
            (0.5, 3, "0.5"),
        ] {
            assert_eq!(fmt_g(x, p), want, "{x}");
        }
        assert_eq!(json_real(0.0, 3), "0.0");
        assert_eq!(json_real(12345.0, 3), "1.23e4");
        assert_eq!(json_real(0.00001234, 3), "1.23e-5");
        assert_eq!(json_real(0.3, 3), "0.3");
        assert_eq!(suffix_string(0.0), "0");
        assert_eq!(suffix_string(999.9), "999");
        assert_eq!(suffix_string(1234.0), "1.23K");
        assert_eq!(suffix_string(1.23e12), "1.23T");
        assert_eq!(suffix_string(4.5e15), "4.5P");
        let v = serde_json::json!({"h": "1.23T"});
        let back = dsps_from_key(&v, "h") as f64 / SCALE as f64 * 4_294_967_296.0;
        assert!((back / 1.23e12 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn files_have_ckpools_fields_in_order() {
        let mut b = Book::new(at(0));
        b.apply(&StatEvent::Authorized { user: "alice".into(), worker: "alice.rig1".into() }, at(0));
        b.apply(&share("alice", "alice.rig1", "0.0001", "0.0123", true), at(1));
        b.apply(&share("alice", "alice.rig1", "0.0001", "0.05", true), at(2));
        b.apply(&share("alice", "alice.rig1", "0.0001", "0.00001", false), at(3));
        b.decay_to(at(60));
        let pool = b.render_pool(at(60), Some("0.001".parse().unwrap()));
        let lines: Vec<&str> = pool.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("{\"runtime\": 60, \"lastupdate\": 1700000060, \"Users\": 1, \"Workers\": 1, \"Idle\": 0, \"Disconnected\": 0}"), "{}", lines[0]);
        let l1: Value = serde_json::from_str(lines[1]).unwrap();
        let keys: Vec<&String> = l1.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 7);
        assert!(lines[1].starts_with("{\"hashrate1m\": \""));
        assert!(
            lines[2].starts_with(
                "{\"diff\": 20.0, \"accepted\": 0.0002, \"rejected\": 0.0001, \"bestshare\": 0.05, \"SPS1m\": "
            ),
            "{}",
            lines[2]
        );
        // Block counts: extra keys after ckpool's, the line stays one JSON object.
        let counts =
            BlockCounts { found: 3, accepted: 2, rejected: 0, stale: 1, confirmed: 2, orphaned: 1, matured: 1 };
        b.apply(&StatEvent::Blocks(counts), at(60));
        let l2: Value = serde_json::from_str(b.render_pool(at(60), None).lines().nth(2).unwrap()).unwrap();
        assert_eq!((l2["blocks_found"].as_u64(), l2["blocks_orphaned"].as_u64()), (Some(3), Some(1)), "{l2}");
        assert_eq!((l2["blocks_matured"].as_u64(), l2["blocks_stale"].as_u64()), (Some(1), Some(1)), "{l2}");
        let users = b.render_users(at(60));
        assert_eq!(users.len(), 1);
        let (name, text) = &users[0];
        assert_eq!(name, "alice");
        assert!(text.starts_with("{\n \"hashrate1m\": \""), "{text}");
        let v: Value = serde_json::from_str(text).unwrap();
        let order: Vec<&str> = text.lines().filter_map(|l| l.trim().strip_prefix('"')?.split('"').next()).collect();
        assert_eq!(
            &order[..12],
            [
                "hashrate1m",
                "hashrate5m",
                "hashrate1hr",
                "hashrate1d",
                "hashrate7d",
                "lastshare",
                "workers",
                "shares",
                "bestshare",
                "bestever",
                "authorised",
                "worker"
            ]
        );
        assert_eq!(v["shares"].to_string(), "0.0002");
        assert_eq!(v["bestever"].to_string(), "0.05");
        assert_eq!(v["lastshare"], 1_700_000_002u64);
        assert_eq!(v["authorised"], 1_700_000_000u64);
        assert_eq!(v["worker"][0]["workername"], "alice.rig1");
        assert_eq!(v["worker"][0]["bestshare"].to_string(), "0.05");
        let s = b.summary(at(60));
        assert_eq!((s.users, s.workers, s.accepted.to_string()), (1, 1, "0.0002".to_string()));
        assert!(s.to_string().contains("accepted 0.0002 rejected 0.0001"), "{s}");
    }

    #[test]
    fn saved_files_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Book::new(at(0));
        b.apply(&StatEvent::Authorized { user: "bob".into(), worker: "bob".into() }, at(0));
        for i in 1..=50 {
            b.apply(&share("bob", "bob", "2", if i == 7 { "123.5" } else { "3" }, true), at(i));
        }
        b.decay_to(at(60));
        write_atomic(&dir.path().join("pool/pool.status"), &b.render_pool(at(60), None)).unwrap();
        for (n, t) in b.render_users(at(60)) {
            write_atomic(&dir.path().join("users").join(n), &t).unwrap();
        }
        let (l, what) = Book::load(dir.path(), at(90));
        assert!(what.starts_with("1 users and 1 workers"), "{what}");
        assert_eq!(l.accepted, Difficulty::from_integer(100));
        assert_eq!(l.best, "123.5".parse().unwrap());
        let u = &l.users["bob"];
        assert_eq!((u.shares, u.best_ever), (Difficulty::from_integer(100), "123.5".parse().unwrap()));
        let ratio = u.meter.value(0) as f64 / b.users["bob"].meter.value(0) as f64;
        assert!((ratio - 1.0).abs() < 0.01, "hashrate survives within display precision: {ratio}");
    }

    /// A flood of invented names (each authorized, never an accepted share, then gone) leaves
    /// nothing in the book; a worker with shares stays while connected and for `stats_forget`
    /// after, then goes (its user too once it has no worker).
    #[test]
    fn the_book_forgets_what_no_one_needs() {
        let mut b = Book::new(at(0));
        b.apply(&StatEvent::Authorized { user: "real".into(), worker: "real.rig".into() }, at(0));
        b.apply(&share("real", "real.rig", "1", "2", true), at(1));
        for i in 0..20_000 {
            let (u, w): (Arc<str>, Arc<str>) = (format!("x{i}").into(), format!("x{i}.w").into());
            b.apply(&StatEvent::Agent { user: u.clone(), worker: w.clone(), agent: "a".into() }, at(2));
            b.apply(&StatEvent::Authorized { user: u.clone(), worker: w.clone() }, at(2));
            b.apply(&share(&u, &w, "1", "0", false), at(2));
            b.apply(&StatEvent::Gone { user: u, worker: w }, at(2));
        }
        assert_eq!(b.size(), (1, 1), "invented names are gone with their connection");
        assert!(b.has_shared("real", "real.rig") && !b.has_shared("x1", "x1.w"));
        // Connected: kept however old its last share.
        assert_eq!(b.forget(at(1_000_000), 3600), 0);
        b.apply(&StatEvent::Gone { user: "real".into(), worker: "real.rig".into() }, at(1_000_000));
        assert_eq!(b.size(), (1, 1), "a worker with shares outlives its connection");
        assert_eq!(b.forget(at(1_000_000), 0), 0, "0: never forgotten");
        assert_eq!(b.forget(at(3_000), 3600), 0, "not yet");
        assert_eq!(b.forget(at(3_601), 3600), 1);
        assert_eq!(b.size(), (0, 0));
    }
}
