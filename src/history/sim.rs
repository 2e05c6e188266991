//! `ckpool history-sim` (hidden): fills a history database with `days` of minute rows for
//! `workers` workers through the writer's own [`Store::write`], applies retention as the writer
//! would at the end, and reports the rows and the database's size (docs/performance.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use super::agg::{Batch, PoolRow, WorkerRow};
use super::retention::{self, Sums, MINUTE};
use super::store::{Store, Target, Val};

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// SQLite file to create (must not exist)
    #[arg(long, value_name = "FILE", conflicts_with = "dburl")]
    pub db: Option<PathBuf>,
    /// PostgreSQL connection string instead
    #[arg(long, value_name = "URL")]
    pub dburl: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub workers: u32,
    /// Days of minute rows to write (past 7, the oldest are folded into hours)
    #[arg(long, default_value_t = 8)]
    pub days: u32,
    /// Unix time of the first minute
    #[arg(long, default_value_t = 1_764_000_000)]
    pub start: i64,
}

/// What a simulation left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub minute_rows: i64,
    pub hour_rows: i64,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub folded: u64,
}

/// Writes the rows (one batch per minute, as the writer does with a 60 s `stats_interval`), then
/// retention at the end of the last minute.
pub fn simulate(target: &Target, workers: u32, days: u32, start: i64) -> Result<Report> {
    let mut s = Store::open(target)?;
    let names: Vec<(std::sync::Arc<str>, std::sync::Arc<str>)> =
        (0..workers).map(|i| (format!("user{}", i / 4).into(), format!("user{}.rig{}", i / 4, i % 4).into())).collect();
    let minutes = days as i64 * 1440;
    for m in 0..minutes {
        let ts = start + m * MINUTE;
        let mut b = Batch::default();
        let mut pool =
            PoolRow { ts, workers: workers as u64, netdiff: Some("83148355189239.77".into()), ..Default::default() };
        for (i, (u, w)) in names.iter().enumerate() {
            // ~100 TH/s at difficulty 65536: 23,283 difficulty a minute, a little different per worker
            let sums = Sums { acc: (1_396_983_862_000_000 + i as u128 * 1_000_003), acc_n: 21, rej: 0, rej_n: 0 };
            pool.sums.add(&sums);
            b.workers.push(WorkerRow { ts, user: u.clone(), worker: w.clone(), sums });
        }
        b.pool.push(pool);
        s.write("sim", &b, &[])?;
    }
    let bytes_before = s.size_bytes()?;
    let folded = s.retain("sim", retention::plan(start + minutes * MINUTE))?;
    if let Target::Sqlite(_) = target {
        s.exec("VACUUM", &[])?;
    }
    let count = |s: &mut Store, res: i64| -> Result<i64> {
        Ok(s.query("SELECT COUNT(*) FROM hist_worker WHERE res = ?", &[Val::I(res)])?[0][0].int())
    };
    Ok(Report {
        minute_rows: count(&mut s, MINUTE)?,
        hour_rows: count(&mut s, retention::HOUR)?,
        bytes_before,
        bytes_after: s.size_bytes()?,
        folded,
    })
}

pub fn run(args: SimArgs) -> Result<()> {
    let target = match (&args.db, &args.dburl) {
        (Some(p), None) => {
            if p.exists() {
                bail!("{} exists: give a new file", p.display());
            }
            Target::Sqlite(p.clone())
        }
        (None, Some(u)) => Target::Postgres(u.clone()),
        _ => bail!("give --db FILE or --dburl URL"),
    };
    let t = Instant::now();
    let r = simulate(&target, args.workers, args.days, args.start)?;
    println!(
        "{} workers, {} days of minute rows into {}: {:.1} s",
        args.workers,
        args.days,
        target.show(),
        t.elapsed().as_secs_f64()
    );
    println!("before retention: {} bytes ({:.1} MB)", r.bytes_before, r.bytes_before as f64 / 1e6);
    println!(
        "after retention: {} minute rows, {} hour rows ({} minute rows folded), {} bytes ({:.1} MB)",
        r.minute_rows,
        r.hour_rows,
        r.folded,
        r.bytes_after,
        r.bytes_after as f64 / 1e6
    );
    Ok(())
}
