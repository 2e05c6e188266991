//! `ckpool status [--config F]`: the dashboard's summary in the terminal. With `apiurl` set it
//! asks the running pool's API; otherwise it reads logdir's files (pool/pool.status, users/*,
//! blocks.log), as they were at the last statistics write.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

use crate::config::Config;

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Configuration file of the pool or proxy (default ckpool.conf)
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// What is printed, from either source.
#[derive(Debug, Default)]
pub struct Summary {
    pub source: String,
    pub mode: String,
    pub lastupdate: u64,
    /// (window, H/s display text).
    pub hashrate: Vec<(String, String)>,
    pub users: u64,
    pub workers: u64,
    pub idle: u64,
    pub accepted: String,
    pub rejected: String,
    pub bestshare: String,
    pub network: Option<String>,
    pub blocks: String,
    /// name, hashrate 5m, last share (unix), best share, user agent.
    pub worker_rows: Vec<[String; 5]>,
    /// height, status, confirmations, hash.
    pub block_rows: Vec<[String; 4]>,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn hs(v: &Value) -> String {
    format!("{}H/s", crate::log::stats::suffix_string(v.as_f64().unwrap_or(0.0)))
}

/// The summary from the API's documents (pure).
pub fn from_api(source: &str, pool: &Value, workers: &Value, blocks: &Value, network: &Value) -> Summary {
    let h = &pool["hashrate"];
    let b = &pool["blocks"];
    Summary {
        source: source.into(),
        mode: s(&pool["mode"]),
        lastupdate: pool["lastupdate"].as_u64().unwrap_or(0),
        hashrate: ["1m", "5m", "1hr", "1d"].iter().map(|w| (w.to_string(), hs(&h[*w]))).collect(),
        users: pool["users"].as_u64().unwrap_or(0),
        workers: pool["workers"].as_u64().unwrap_or(0),
        idle: pool["idle"].as_u64().unwrap_or(0),
        accepted: format!("{} shares, difficulty {}", s(&pool["shares"]["accepted"]), s(&pool["accepted"])),
        rejected: format!("{} shares, difficulty {}", s(&pool["shares"]["rejected"]), s(&pool["rejected"])),
        bestshare: s(&pool["bestshare"]),
        network: network["height"].as_u64().map(|height| {
            let etb = network["expected_block_seconds"].as_f64().map_or("-".into(), |x| format!("{x:.0} s"));
            format!("height {height}, difficulty {}, expected time to a block {etb}", s(&network["difficulty"]))
        }),
        blocks: format!(
            "found {}, accepted {}, confirmed {}, orphaned {}, matured {}",
            s(&b["found"]),
            s(&b["accepted"]),
            s(&b["confirmed"]),
            s(&b["orphaned"]),
            s(&b["matured"])
        ),
        worker_rows: workers["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| {
                [s(&w["name"]), hs(&w["hashrate"]["5m"]), s(&w["lastshare"]), s(&w["bestshare"]), s(&w["useragent"])]
            })
            .collect(),
        block_rows: blocks["blocks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| [s(&b["height"]), s(&b["status"]), s(&b["confirmations"]), s(&b["hash"])])
            .collect(),
    }
}

/// The summary from logdir's files (pure: their texts in).
pub fn from_files(source: &str, pool_status: &str, users: &[(String, String)], blocks_log: &str) -> Summary {
    let lines: Vec<Value> = pool_status.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let get = |i: usize, k: &str| lines.get(i).map(|l| l[k].clone()).unwrap_or(Value::Null);
    let mut worker_rows = Vec::new();
    for (_, text) in users {
        let Ok(u) = serde_json::from_str::<Value>(text) else { continue };
        for w in u["worker"].as_array().into_iter().flatten() {
            worker_rows.push([
                s(&w["workername"]),
                format!("{}H/s", s(&w["hashrate5m"])),
                s(&w["lastshare"]),
                s(&w["bestshare"]),
                "-".into(),
            ]);
        }
    }
    let blocks = crate::blocks::found::parse_blocks(blocks_log);
    let count = |k: &str| get(2, k).as_u64().unwrap_or(0);
    Summary {
        source: source.into(),
        mode: "files".into(),
        lastupdate: get(0, "lastupdate").as_u64().unwrap_or(0),
        hashrate: [("1m", "hashrate1m"), ("5m", "hashrate5m"), ("1hr", "hashrate1hr"), ("1d", "hashrate1d")]
            .iter()
            .map(|(w, k)| (w.to_string(), format!("{}H/s", s(&get(1, k)))))
            .collect(),
        users: get(0, "Users").as_u64().unwrap_or(0),
        workers: get(0, "Workers").as_u64().unwrap_or(0),
        idle: get(0, "Idle").as_u64().unwrap_or(0),
        accepted: format!("difficulty {}", s(&get(2, "accepted"))),
        rejected: format!("difficulty {}", s(&get(2, "rejected"))),
        bestshare: s(&get(2, "bestshare")),
        network: None,
        blocks: format!(
            "found {}, accepted {}, confirmed {}, orphaned {}, matured {}",
            count("blocks_found"),
            count("blocks_accepted"),
            count("blocks_confirmed"),
            count("blocks_orphaned"),
            count("blocks_matured")
        ),
        worker_rows,
        block_rows: blocks
            .iter()
            .map(|b| {
                let (status, conf) = crate::blocks::found::block_fate(b, None);
                [b.height.to_string(), status.to_string(), conf.to_string(), b.hash.clone()]
            })
            .collect(),
    }
}

/// Blocks listed (newest first); the rest are counted, and all are in blocks.log and /api/blocks.
const BLOCK_ROWS: usize = 10;

/// Seconds since 1970 as "YYYY-MM-DD HH:MM:SS UTC" ("-" for 0: never).
pub fn utc_text(secs: u64) -> String {
    if secs == 0 {
        return "-".into();
    }
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // civil from days (Howard Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A Unix-seconds field as UTC text (other text as it is).
fn when(v: &str) -> String {
    v.parse::<u64>().map_or(v.to_string(), utc_text)
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "ckpool-rs {} ({}), statistics of {}", self.mode, self.source, utc_text(self.lastupdate))?;
        let rates: Vec<String> = self.hashrate.iter().map(|(w, r)| format!("{w} {r}")).collect();
        writeln!(f, "hashrate    {}", rates.join(", "))?;
        writeln!(f, "workers     {} ({} idle), users {}", self.workers, self.idle, self.users)?;
        writeln!(f, "accepted    {}", self.accepted)?;
        writeln!(f, "rejected    {}", self.rejected)?;
        writeln!(f, "best share  {}", self.bestshare)?;
        if let Some(n) = &self.network {
            writeln!(f, "network     {n}")?;
        }
        writeln!(f, "blocks      {}", self.blocks)?;
        if !self.worker_rows.is_empty() {
            // The name column as wide as the longest name: the other columns stay aligned.
            let w = self.worker_rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0).max(6);
            let h = ["worker", "hashrate 5m", "last share", "best share"];
            writeln!(f, "\n{:<w$} {:>12} {:>23} {:>16}  agent", h[0], h[1], h[2], h[3])?;
            for r in &self.worker_rows {
                writeln!(f, "{:<w$} {:>12} {:>23} {:>16}  {}", r[0], r[1], when(&r[2]), r[3], r[4])?;
            }
        }
        if !self.block_rows.is_empty() {
            writeln!(f, "\n{:>8} {:<10} {:>13}  hash", "height", "status", "confirmations")?;
            for r in self.block_rows.iter().take(BLOCK_ROWS) {
                writeln!(f, "{:>8} {:<10} {:>13}  {}", r[0], r[1], r[2], r[3])?;
            }
            let more = self.block_rows.len().saturating_sub(BLOCK_ROWS);
            if more > 0 {
                writeln!(f, "... and {more} earlier block(s) (all of them: blocks.log in logdir, /api/blocks)")?;
            }
        }
        Ok(())
    }
}

async fn fetch(client: &reqwest::Client, base: &str, path: &str) -> anyhow::Result<Value> {
    let url = format!("{base}{path}");
    let r = client.get(&url).send().await.with_context(|| format!("cannot reach the pool's API at {url}"))?;
    if !r.status().is_success() {
        bail!("{url}: HTTP {}", r.status());
    }
    r.json().await.with_context(|| format!("{url}: not JSON"))
}

pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let path = args.config.unwrap_or_else(|| PathBuf::from("ckpool.conf"));
    let cfg = Config::load(&path)?;
    let summary = if let Some(addr) = cfg.apiurl.first() {
        // A wildcard listen address is reached on loopback.
        let mut addr = *addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
        }
        let base = format!("http://{addr}");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
            let (p, w, b, n) = tokio::try_join!(
                fetch(&client, &base, "/api/pool"),
                fetch(&client, &base, "/api/workers"),
                fetch(&client, &base, "/api/blocks"),
                fetch(&client, &base, "/api/network"),
            )?;
            anyhow::Ok(from_api(&base, &p, &w, &b, &n))
        })?
    } else {
        let dir = &cfg.logdir;
        let pool_path = dir.join("pool").join("pool.status");
        let pool = std::fs::read_to_string(&pool_path)
            .with_context(|| format!("no API configured (apiurl) and cannot read {}", pool_path.display()))?;
        let mut users = Vec::new();
        if let Ok(d) = std::fs::read_dir(dir.join("users")) {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.ends_with(".tmp") || name.starts_with('.') {
                    continue;
                }
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    users.push((name, t));
                }
            }
        }
        users.sort();
        let blocks = std::fs::read_to_string(dir.join("blocks.log")).unwrap_or_default();
        from_files(&dir.display().to_string(), &pool, &users, &blocks)
    };
    print!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_summary() {
        let pool = "{\"runtime\": 60, \"lastupdate\": 1700000060, \"Users\": 1, \"Workers\": 2, \"Idle\": 1, \"Disconnected\": 0}\n{\"hashrate1m\": \"1.23T\", \"hashrate5m\": \"1T\", \"hashrate15m\": \"0\", \"hashrate1hr\": \"0\", \"hashrate6hr\": \"0\", \"hashrate1d\": \"0\", \"hashrate7d\": \"0\"}\n{\"diff\": 0.0, \"accepted\": 42, \"rejected\": 1, \"bestshare\": 77, \"SPS1m\": 0.1, \"blocks_found\": 3, \"blocks_confirmed\": 2}\n";
        let user = "{\n \"hashrate1m\": \"1T\",\n \"worker\": [\n  {\n   \"workername\": \"alice.rig\",\n   \"hashrate5m\": \"2G\",\n   \"lastshare\": 5,\n   \"bestshare\": 9.0\n  }\n ]\n}\n";
        let s = from_files("logs", pool, &[("alice".into(), user.into())], "").to_string();
        assert!(s.contains("hashrate    1m 1.23TH/s, 5m 1TH/s"), "{s}");
        assert!(s.contains("workers     2 (1 idle), users 1"), "{s}");
        assert!(s.contains("accepted    difficulty 42"), "{s}");
        assert!(s.contains("found 3, accepted 0, confirmed 2"), "{s}");
        assert!(s.contains("alice.rig") && s.contains("2GH/s"), "{s}");
        assert!(s.contains("statistics of 2023-11-14 22:14:20 UTC"), "{s}");
        assert!(s.contains("1970-01-01 00:00:05 UTC"), "last share as a date: {s}");
    }

    /// Long worker names keep the columns aligned; only the newest blocks are listed; times are
    /// dates (raw Unix seconds before).
    #[test]
    fn columns_align_and_blocks_are_capped() {
        let mut sum = Summary::default();
        let long = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq.a-very-long-rig-name-01";
        sum.worker_rows.push([long.into(), "1GH/s".into(), "1700000000".into(), "5".into(), "cgminer".into()]);
        sum.worker_rows.push(["w".into(), "2GH/s".into(), "0".into(), "6".into(), "bmminer".into()]);
        sum.block_rows =
            (0..25).rev().map(|h| [h.to_string(), "accepted".into(), "1".into(), format!("{h:064x}")]).collect();
        let text = sum.to_string();
        let rows: Vec<&str> = text.lines().filter(|l| l.ends_with("cgminer") || l.ends_with("bmminer")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert_eq!(rows[0].find("1GH/s").map(|i| i + 5), rows[1].find("2GH/s").map(|i| i + 5), "{text}");
        assert!(rows[0].contains("2023-11-14 22:13:20 UTC"), "{text}");
        assert_eq!(text.lines().filter(|l| l.contains(" accepted ")).count(), BLOCK_ROWS, "{text}");
        assert!(text.contains("... and 15 earlier block(s)"), "{text}");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
